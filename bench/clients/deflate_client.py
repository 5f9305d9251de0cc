"""permessage-deflate load client for bench/test_deflate.py: the same code against every server.

    python bench/clients/deflate_client.py echo --port PORT [--conns 64] [--inflight 16] \
        [--size 1024] [--duration 3] [--warmup 0.5] [--live] [--server-pid PID]
    python bench/clients/deflate_client.py hold --port PORT [--stages 50,500] [--messages 4] \
        [--size 1024]

A raw RFC 6455 + RFC 7692 client on asyncio Protocols (uvloop when installed), written for
this benchmark (bench/loadgen.c does not speak permessage-deflate). Every connection offers
what Chromium offers, ``Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits``,
checks the 101 (status, ``Sec-WebSocket-Accept``, the extension agreed) and then sends text
messages of --size bytes of JSON-like, repetitive ASCII (8 distinct payloads in turn, so an echo
of the wrong message is caught). Every echo is inflated when it arrives compressed (RSV1; one
zlib decompressobj per connection: the server keeps its context) and compared byte for byte.

What the client sends, compressed when the server agreed: by default each of the 8 payloads
is compressed on its own (no back-reference into earlier messages: valid whatever was agreed,
the server's inflater just keeps a window it does not need), once, before the run, within the
client_max_window_bits the server set, and masked with a key of its own; so the client does
no deflate work while measuring and is not what limits a server. ``--live`` compresses every
message as it is sent instead, with one compressobj per connection keeping its context (what
a browser does) and a fresh mask.

``echo``: N connections (at most 64 connecting at once), each keeping K messages in flight and
answering every echo with the next message; counted: echoes received during --duration seconds
after --warmup seconds. Then no new message is sent, what is in flight is received (bounded),
every connection is closed (close handshake, bounded). One JSON line: msgs/s, MB/s (payload
bytes), latency percentiles (send to echo), this process's and the server's CPU (over the
measurement), the wire bytes per payload byte in each direction, how many echoes arrived
compressed, and the extension each server agreed.

``hold`` (memory benchmark): for each stage, opens that many more connections, sends --messages
messages on each (all at once) and waits for every echo; prints one JSON line per stage, then
waits for a line on stdin (at most 120 s) before the next stage. After the last stage's line
and one more stdin line, closes everything and prints a final line.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import os
import random
import sys
import time
import zlib
from typing import Any, Deque, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Meter, emit, fail, percentiles, versions  # noqa: E402

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OFFER = "permessage-deflate; client_max_window_bits"   # what Chromium sends
DISTINCT = 8
MAX_MSGS = 20_000_000
MAX_FRAME = 64 * 1024 * 1024
OPEN_TIMEOUT = 30.0
DRAIN_TIMEOUT = 5.0
CLOSE_TIMEOUT = 5.0
STDIN_TIMEOUT = 120.0
TAIL = b"\x00\x00\xff\xff"


def json_payloads(size: int) -> List[bytes]:
    """DISTINCT payloads of exactly ``size`` ASCII bytes: a JSON array of records (cut at
    ``size``), the kind of text an API or a chat sends, which deflate shrinks 4-8x."""
    out: List[bytes] = []
    for i in range(DISTINCT):
        rng = random.Random(1000 + i)
        parts: List[str] = []
        total = 0
        seq = i * 100_000
        while total < size + 1:
            uid = rng.randrange(1, 5000)
            rec = (f'{{"seq":{seq},"user":"user{uid}","room":"room{uid % 17}",'
                   f'"status":"{rng.choice(("online", "away", "busy", "offline"))}",'
                   f'"score":{rng.random():.4f},"tags":["alpha","beta","{rng.choice("xyz")}"],'
                   f'"text":"hello from user{uid}"}}')
            parts.append(rec)
            total += len(rec) + 1
            seq += 1
        out.append(("[" + ",".join(parts))[:size].encode("ascii"))
    if size >= 16 and len(set(out)) != DISTINCT:
        raise RuntimeError("payloads are not distinct")
    return out


def _mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if not n:
        return data
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def client_frame(payload: bytes, opcode: int, rsv1: bool, key: Optional[bytes] = None) -> bytes:
    """One masked client frame, FIN set."""
    key = key if key is not None else os.urandom(4)
    n = len(payload)
    b0 = 0x80 | (0x40 if rsv1 else 0) | opcode
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + key + _mask(payload, key)


def deflate_once(payload: bytes, wbits: int) -> bytes:
    """``payload`` compressed as one message with a fresh compressor (RFC 7692: a sync flush,
    its trailing 00 00 ff ff removed), window ``wbits`` (9..15)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -wbits, 8)
    data = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(TAIL)
    return data[:-4]


def parse_extensions(value: str) -> Tuple[str, Dict[str, Optional[str]]]:
    """The agreed extension's name and parameters (a single extension expected)."""
    value = value.strip()
    if not value:
        return "", {}
    if "," in value:
        raise ValueError(f"more than one extension agreed: {value!r}")
    items = [x.strip() for x in value.split(";")]
    params: Dict[str, Optional[str]] = {}
    for item in items[1:]:
        k, eq, v = item.partition("=")
        params[k.strip().lower()] = v.strip().strip('"') if eq else None
    return items[0].lower(), params


class Run:
    """State shared by every connection: phase, counters, samples, payloads, frames."""

    def __init__(self, args: Any) -> None:
        self.args = args
        self.payloads = json_payloads(args.size)
        self.phase = 0          # 0 opening/warm-up, 1 measuring, 2 stopping
        self.count = 0
        self.warm = 0
        self.after = 0
        self.samples: List[int] = []
        self.errors: List[str] = []
        self.wire_in = 0        # server -> client frame payload bytes while measuring
        self.raw_in = 0         # the same messages' inflated bytes
        self.wire_out = 0
        self.raw_out = 0
        self.compressed_in = 0  # echoes (any phase) that arrived with RSV1
        self.plain_in = 0
        self.extensions: "collections.Counter[str]" = collections.Counter()
        self._frames: Dict[Tuple[int, bool], List[Tuple[bytes, int]]] = {}

    def frames(self, wbits: int, compressed: bool) -> List[Tuple[bytes, int]]:
        """(frame, payload bytes on the wire) per payload, made once per window size."""
        k = (wbits, compressed)
        if k not in self._frames:
            out = []
            for p in self.payloads:
                body = deflate_once(p, wbits) if compressed else p
                out.append((client_frame(body, 1, compressed), len(body)))
            self._frames[k] = out
        return self._frames[k]


class Conn(asyncio.Protocol):
    def __init__(self, run: Run, host: str, port: int) -> None:
        self.run = run
        self.host, self.port = host, port
        self.tr: Any = None
        self.buf = b""
        self.ws = False
        self.key = base64.b64encode(os.urandom(16))
        loop = asyncio.get_running_loop()
        self.opened: "asyncio.Future[None]" = loop.create_future()
        self.lost: "asyncio.Future[None]" = loop.create_future()
        self.idle: "asyncio.Future[None]" = loop.create_future()  # hold mode: echoes all in
        self.dec: Any = None
        self.enc: Any = None
        self.frames: List[Tuple[bytes, int]] = []
        self.compressed = False
        self.wbits = 15
        self.dq: Deque[int] = collections.deque()
        self.sent = 0
        self.got = 0
        self.frag: List[bytes] = []
        self.frag_rsv1 = False
        self.close_sent = False
        self.close_got = False
        self.extension = ""
        self.want_echoes = 0   # hold mode: resolve idle at this many echoes

    # ------------------------------------------------------------------ transport
    def connection_made(self, transport: Any) -> None:
        self.tr = transport
        transport.write(
            b"GET / HTTP/1.1\r\nHost: " + f"{self.host}:{self.port}".encode() +
            b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " +
            self.key + b"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: " +
            OFFER.encode() + b"\r\n\r\n")

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during the handshake: {exc}"))
        if not self.lost.done():
            self.lost.set_result(None)
        if not self.idle.done():
            if self.want_echoes and self.got < self.want_echoes:
                self.idle.set_exception(ConnectionError("connection lost"))
            else:
                self.idle.cancel()
        if not self.close_got and self.run.phase < 2 and not self.close_sent:
            self.run.errors.append(f"connection lost before the close handshake: {exc}")

    def fail(self, msg: str) -> None:
        self.run.errors.append(msg)
        if not self.opened.done():
            self.opened.set_exception(RuntimeError(msg))
        if self.tr is not None:
            self.tr.abort()

    def _handshake(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 16384:
                self.fail("101 response headers too long")
            return
        head = self.buf[:end].decode("latin-1").split("\r\n")
        self.buf = self.buf[end + 4:]
        if not head[0].startswith("HTTP/1.1 101"):
            return self.fail(f"handshake answered {head[0]!r}")
        hdrs: Dict[str, str] = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            hdrs[k] = (hdrs[k] + ", " + v.strip()) if k in hdrs else v.strip()
        accept = base64.b64encode(hashlib.sha1(self.key + GUID).digest()).decode()
        if hdrs.get("sec-websocket-accept") != accept:
            return self.fail("bad Sec-WebSocket-Accept")
        self.extension = hdrs.get("sec-websocket-extensions", "")
        try:
            name, params = parse_extensions(self.extension)
        except ValueError as e:
            return self.fail(str(e))
        if name and name != "permessage-deflate":
            return self.fail(f"unexpected extension {self.extension!r}")
        self.compressed = name == "permessage-deflate"
        if self.compressed:
            cmwb = params.get("client_max_window_bits")
            self.wbits = int(cmwb) if cmwb else 15
            self.dec = zlib.decompressobj(-15)
        # zlib cannot compress within a window of 8 (256 bytes): then send uncompressed
        compress = self.compressed and self.wbits >= 9
        if compress and self.run.args.live:
            self.enc = zlib.compressobj(6, zlib.DEFLATED, -self.wbits, 8)
        self.frames = self.run.frames(self.wbits, compress)
        self.run.extensions[self.extension] += 1
        self.ws = True
        self.opened.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.ws:
            self.buf = data
            self._handshake()
            if not self.ws:
                return
            data, self.buf = self.buf, b""
        run = self.run
        n = len(data)
        p = 0
        out: List[bytes] = []
        while n - p >= 2:
            b0 = data[p]
            b1 = data[p + 1]
            ln = b1 & 0x7F
            h = 2
            if ln == 126:
                if n - p < 4:
                    break
                ln = int.from_bytes(data[p + 2:p + 4], "big")
                h = 4
            elif ln == 127:
                if n - p < 10:
                    break
                ln = int.from_bytes(data[p + 2:p + 10], "big")
                h = 10
            if b1 & 0x80:
                return self.fail("the server masked a frame")
            if ln > MAX_FRAME:
                return self.fail(f"a {ln}-byte frame")
            if n - p < h + ln:
                break
            payload = data[p + h:p + h + ln]
            p += h + ln
            op = b0 & 0x0F
            if op >= 8:
                if op == 8:
                    self.close_got = True
                    if not self.close_sent:
                        self.close_sent = True
                        out.append(client_frame(payload[:2], 8, False))
                elif op == 9:
                    out.append(client_frame(payload, 10, False))
                continue
            if op != 0:
                self.frag_rsv1 = bool(b0 & 0x40)
            if not b0 & 0x80:
                self.frag.append(payload)
                continue
            if self.frag:
                self.frag.append(payload)
                payload = b"".join(self.frag)
                self.frag = []
            wire = len(payload)
            if self.frag_rsv1:
                if not self.compressed:
                    return self.fail("RSV1 set without permessage-deflate")
                payload = self.dec.decompress(payload + TAIL)
                run.compressed_in += 1
            else:
                run.plain_in += 1
            t1 = time.perf_counter_ns()
            k = self.got
            if payload != run.payloads[k & 7]:
                return self.fail(f"echo {k} differs from what was sent ({len(payload)} bytes)")
            self.got = k + 1
            t0 = self.dq.popleft()
            ph = run.phase
            if ph == 1:
                run.samples.append(t1 - t0)
                run.count += 1
                run.wire_in += wire
                run.raw_in += len(payload)
                if run.count >= MAX_MSGS:
                    run.phase = 2
            elif ph == 0:
                run.warm += 1
            else:
                run.after += 1
            if self.want_echoes:
                if self.got >= self.want_echoes and not self.idle.done():
                    self.idle.set_result(None)
                continue
            if run.phase < 2:
                out.append(self.next_frame())
        if p < n:
            self.buf = data[p:]
        if out:
            self.tr.write(b"".join(out))

    def next_frame(self) -> bytes:
        s = self.sent
        self.sent = s + 1
        self.dq.append(time.perf_counter_ns())
        run = self.run
        if self.enc is not None:
            p = run.payloads[s & 7]
            body = self.enc.compress(p) + self.enc.flush(zlib.Z_SYNC_FLUSH)
            body = body[:-4]
            frame = client_frame(body, 1, True)
            wire = len(body)
        else:
            frame, wire = self.frames[s & 7]
        if run.phase == 1:
            run.wire_out += wire
            run.raw_out += len(run.payloads[s & 7])
        return frame

    def send_messages(self, k: int) -> None:
        self.tr.write(b"".join(self.next_frame() for _ in range(k)))

    async def close(self) -> bool:
        if self.tr is None or self.tr.is_closing():
            return self.close_got
        if not self.close_sent:
            self.close_sent = True
            self.tr.write(client_frame((1000).to_bytes(2, "big"), 8, False))
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            self.tr.abort()
        return self.close_got


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio default loop"
    uvloop.install()
    return f"uvloop {getattr(uvloop, '__version__', '?')}"


async def open_conns(run: Run, count: int) -> List[Conn]:
    loop = asyncio.get_running_loop()
    a = run.args
    sem = asyncio.Semaphore(64)

    async def one() -> Conn:
        async with sem:
            _, c = await loop.create_connection(lambda: Conn(run, a.host, a.port), a.host,
                                                a.port)
            await c.opened
            return c

    return list(await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))),
                                       OPEN_TIMEOUT))


def check(run: Run) -> None:
    if run.errors:
        fail("; ".join(sorted(set(run.errors))[:3]))


async def echo_main(run: Run) -> Dict[str, Any]:
    a = run.args
    t0 = time.perf_counter()
    conns = await open_conns(run, a.conns)
    open_s = time.perf_counter() - t0
    check(run)
    for c in conns:
        c.send_messages(a.inflight)
    meter = Meter(a.server_pid)
    await asyncio.sleep(a.warmup)
    check(run)
    meter.start()
    run.phase = 1
    end = time.perf_counter() + a.duration
    while run.phase == 1 and not run.errors:
        left = end - time.perf_counter()
        if left <= 0:
            break
        await asyncio.sleep(min(0.05, left))
    run.phase = 2
    meter.stop()
    check(run)
    deadline = time.perf_counter() + DRAIN_TIMEOUT
    while any(c.dq for c in conns) and time.perf_counter() < deadline and not run.errors:
        await asyncio.sleep(0.01)
    check(run)
    closed = sum(await asyncio.gather(*(c.close() for c in conns)))
    wall = meter.wall if meter.wall > 0 else 1e-9
    doc: Dict[str, Any] = {
        "size": a.size, "opcode": "text", "conns": a.conns, "inflight": a.inflight,
        "duration_s": a.duration, "msgs": run.count, "warmup_msgs": run.warm,
        "drained_msgs": run.after,
        "msgs_per_s": round(run.count / wall, 1),
        "mb_per_s": round(run.count * a.size / wall / 1e6, 3),
        "wire_in_ratio": round(run.wire_in / run.raw_in, 4) if run.raw_in else None,
        "wire_out_ratio": round(run.wire_out / run.raw_out, 4) if run.raw_out else None,
        "compressed_echoes": run.compressed_in, "plain_echoes": run.plain_in,
        "extensions": dict(run.extensions), "open_s": round(open_s, 3),
        "closed_cleanly": closed, "client_compresses": "live (context kept)" if a.live
        else "each message on its own, precomputed",
    }
    doc.update(percentiles(run.samples))
    doc.update(meter.report(run.count))
    return doc


async def _stdin_line() -> str:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), STDIN_TIMEOUT)


async def hold_main(run: Run) -> Dict[str, Any]:
    a = run.args
    stages = [int(x) for x in a.stages.split(",") if x.strip()]
    conns: List[Conn] = []
    for i, count in enumerate(stages):
        new = await open_conns(run, count)
        check(run)
        for c in new:
            c.want_echoes = a.messages
            c.send_messages(a.messages)
        await asyncio.wait_for(asyncio.gather(*(c.idle for c in new)), OPEN_TIMEOUT)
        check(run)
        conns += new
        emit({"stage": i + 1, "conns": len(conns), "messages_each": a.messages,
              "compressed_echoes": run.compressed_in, "plain_echoes": run.plain_in,
              "extensions": dict(run.extensions)})
        await _stdin_line()
    closed = sum(await asyncio.gather(*(c.close() for c in conns)))
    return {"stage": "closed", "conns": len(conns), "closed_cleanly": closed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("echo", "hold"))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--size", type=int, default=1024, help="payload bytes (default 1024)")
    ap.add_argument("--conns", type=int, default=64, help="echo: connections (default 64)")
    ap.add_argument("--inflight", type=int, default=16,
                    help="echo: messages in flight per connection (default 16)")
    ap.add_argument("--duration", type=float, default=3.0, help="echo: seconds measured")
    ap.add_argument("--warmup", type=float, default=0.5, help="echo: seconds of warm-up")
    ap.add_argument("--server-pid", type=int, default=0,
                    help="echo: measure this process's CPU over the measurement too")
    ap.add_argument("--live", action="store_true",
                    help="compress every message as it is sent, context kept (default: "
                         "each message compressed on its own, once, before the run)")
    ap.add_argument("--stages", default="50,500",
                    help="hold: connections opened per stage (default 50,500)")
    ap.add_argument("--messages", type=int, default=4,
                    help="hold: messages sent (and echoed) on each connection (default 4)")
    args = ap.parse_args()
    if args.size < 1 or args.conns < 1 or args.inflight < 1 or args.messages < 1:
        fail("--size, --conns, --inflight and --messages must be at least 1")
    loop_name = _install_uvloop()
    run = Run(args)
    doc = asyncio.run(echo_main(run) if args.mode == "echo" else hold_main(run))
    doc["detail"] = {"loop": loop_name, "python": sys.version.split()[0],
                     "zlib": zlib.ZLIB_RUNTIME_VERSION, "versions": versions("uvloop")}
    emit(doc)


if __name__ == "__main__":
    main()
