"""What a hostile or dead peer can cost, over real sockets against a server in its own process
(so its memory is measured from outside): a ping flood from a client that never reads, a
sender that never reads its echoes, frames that claim megabytes and stall, messages of endless
empty fragments, a peer that stops answering, a request no handler answers. Each must cost no
more than the limits say (pyws.DEFAULT_OPTIONS) and end with the RFC's close code."""
from __future__ import annotations

import json
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

import pyws
from pyws._lib import ffi, lib

from _frames import MASK_KEY, frame
from _rawws import OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS
from conftest import PKG_PARENT, SANITIZED, ServerThread

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20


class ServerProcess:
    """tests/_limits_server.py (a callback echo server) with the given options."""

    def __init__(self, **options: Any) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "_limits_server.py"), json.dumps(options)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert self.proc.stdout is not None
        self.lines: "queue.Queue[str]" = queue.Queue()
        first = self.proc.stdout.readline()
        self.port = int(first)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def status(self, field: str) -> int:
        """A /proc/PID/status figure in bytes (VmRSS, VmSize, VmHWM)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(field)

    def closes(self, n: int, timeout: float) -> List[str]:
        """The next n ``close CODE REASON`` lines, waiting at most timeout seconds."""
        out: List[str] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line.startswith("close "):
                out.append(line)
        return out

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def server() -> Iterator[Callable[..., ServerProcess]]:
    started: List[ServerProcess] = []

    def start(**options: Any) -> ServerProcess:
        s = ServerProcess(**options)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def still_serves(port: int) -> None:
    """A fresh client gets its echo: the server kept serving everyone else."""
    with RawWS(port) as ws:
        ws.handshake()
        ws.send_frame(b"still here", OP_TEXT)
        assert ws.recv_frame() == (OP_TEXT, True, b"still here")


# ============================================================================ ping flood

def test_ping_flood_from_a_client_that_never_reads_costs_no_memory(
        server: Callable[..., ServerProcess]) -> None:
    """Pings as fast as one client can send them for 3 s, pongs never read: the server owes at
    most one pong at a time (RFC 6455 §5.5.3), so its memory stays flat where it used to grow
    by every pong owed (1.4 GB in 3 s)."""
    srv = server()
    rss0 = srv.status("VmRSS")
    ws = RawWS(srv.port)
    ws.handshake()
    batch = b"".join(frame(OP_PING, struct.pack("!Q", i) + b"x" * 117, mask=MASK_KEY)
                     for i in range(2000))
    sent = 0
    peak = rss0
    deadline = time.monotonic() + 3.0
    ws.sock.settimeout(2.0)
    while time.monotonic() < deadline:
        ws.sock.sendall(batch)  # times out if the server stopped reading
        sent += 2000
        if sent % 100_000 == 0:
            peak = max(peak, srv.status("VmRSS"))
    peak = max(peak, srv.status("VmRSS"))
    growth = peak - rss0
    print(f"\nping flood: {sent:,} pings in 3 s; server RSS {rss0 / MiB:.1f} MiB -> peak "
          f"{peak / MiB:.1f} MiB (+{growth / MiB:.2f} MiB)")
    assert sent >= 200_000, "the server stopped reading pings"
    assert growth < 4 * MiB  # write_limit (16 MiB) is the promise; pongs take far less
    ws.close()
    still_serves(srv.port)


def test_only_the_latest_of_unanswered_pings_gets_its_pong(
        server: Callable[..., ServerProcess]) -> None:
    srv = server()
    with RawWS(srv.port) as ws:
        ws.handshake()
        n = 5000
        ws.send(b"".join(frame(OP_PING, b"%06d" % i + b"p" * 100, mask=MASK_KEY) for i in range(n)))
        ws.send_frame(b"after", OP_TEXT)
        pongs: List[bytes] = []
        for _ in range(n + 1):
            op, fin, payload = ws.recv_frame()
            if op == OP_TEXT:
                assert payload == b"after"
                break
            assert op == OP_PONG and fin
            pongs.append(payload)
        assert 1 <= len(pongs) < n
        assert pongs[-1] == b"%06d" % (n - 1) + b"p" * 100  # the most recent ping's payload
        indices = [int(p[:6]) for p in pongs]
        assert indices == sorted(indices)


# ============================================================================ senders that never read

def test_a_sender_that_never_reads_is_pushed_back_by_tcp(
        server: Callable[..., ServerProcess]) -> None:
    """Echoed messages the client never reads: past write_high_water the server stops reading
    from it, so TCP pushes back on the sender instead of the server queueing up to
    write_limit. Once the client reads, every echo arrives intact and in order."""
    srv = server(write_high_water=256 * 1024)
    rss0 = srv.status("VmRSS")
    ws = RawWS(srv.port)
    ws.handshake()
    msg = bytes(range(256)) * 16  # 4 KiB
    raw_frame = frame(OP_BINARY, msg, mask=MASK_KEY)
    ws.sock.setblocking(False)
    sent = 0
    pending = b""
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        if not pending:
            pending = raw_frame * 64
        try:
            n = ws.sock.send(pending)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        sent += n
        pending = pending[n:]
    rss1 = srv.status("VmRSS")
    print(f"\nnon-reading sender: {sent / MiB:.2f} MiB accepted in 3 s; server RSS "
          f"+{(rss1 - rss0) / MiB:.2f} MiB")
    assert sent < 24 * MiB  # high water + both sockets' buffers, not an open tap
    assert rss1 - rss0 < 16 * MiB
    ws.sock.setblocking(True)
    ws.sock.settimeout(10)
    partial = len(pending) % len(raw_frame)
    total_frames = sent // len(raw_frame) + (1 if partial else 0)
    got: List[Any] = []

    def read_all() -> None:
        try:
            for _ in range(total_frames):
                got.append(ws.recv_frame(10))
        except Exception as e:  # reported below
            got.append(e)

    reader = threading.Thread(target=read_all)
    reader.start()
    if partial:
        ws.sock.sendall(pending[:partial])  # completes the frame cut short
    reader.join(30)
    assert len(got) == total_frames and all(g == (OP_BINARY, True, msg) for g in got)
    ws.close()
    still_serves(srv.port)


# ============================================================================ stalled frames

def test_frames_that_claim_4mib_and_stall_cost_what_arrived(
        server: Callable[..., ServerProcess]) -> None:
    """200 connections each announce a 4 MiB frame and send 100 bytes of it: memory is
    reserved as bytes arrive, not by the claimed length (it was 4 MiB each up front)."""
    srv = server(max_message_size=8 * MiB, heartbeat=None)
    socks: List[RawWS] = []
    try:
        for _ in range(10):  # warm up: the first connections allocate the loop's own tables
            ws = RawWS(srv.port)
            ws.handshake()
            socks.append(ws)
        time.sleep(0.2)
        vsz0, rss0 = srv.status("VmSize"), srv.status("VmRSS")
        head = frame(OP_BINARY, b"", mask=MASK_KEY, length=4 * MiB)  # header + mask key
        for _ in range(200):
            ws = RawWS(srv.port)
            ws.handshake()
            ws.send(head[:-4] + head[-4:] + os.urandom(100))
            socks.append(ws)
        still_serves(srv.port)
        time.sleep(0.3)
        vsz1, rss1 = srv.status("VmSize"), srv.status("VmRSS")
        per_vsz = (vsz1 - vsz0) / 200
        per_rss = (rss1 - rss0) / 200
        print(f"\n200 stalled 4 MiB frames: VmSize +{per_vsz / 1024:.1f} KiB and RSS "
              f"+{per_rss / 1024:.1f} KiB per connection")
        assert per_vsz < 64 * 1024
        assert per_rss < 64 * 1024
    finally:
        for ws in socks:
            ws.close()


def test_a_stalled_frame_is_reclaimed_by_the_heartbeat(
        server: Callable[..., ServerProcess]) -> None:
    """Inside a frame a peer cannot answer pings: the heartbeat closes it (1011)."""
    srv = server(heartbeat=0.2, heartbeat_timeout=0.3)
    with RawWS(srv.port) as ws:
        ws.handshake()
        ws.send(frame(OP_BINARY, b"", mask=MASK_KEY, length=4 * MiB) + b"z" * 100)
        t0 = time.monotonic()
        assert ws.is_eof(timeout=5)
        elapsed = time.monotonic() - t0
    lines = srv.closes(1, 5)
    assert lines and lines[0].startswith("close 1011 keepalive ping timeout"), lines
    assert elapsed < 3.0


# ============================================================================ endless messages

def test_a_message_of_endless_empty_fragments_is_closed_1009(
        server: Callable[..., ServerProcess]) -> None:
    """The default max_fragments (1,048,576) ends a message that would otherwise never end."""
    limit = pyws.DEFAULT_OPTIONS["max_fragments"]
    assert limit >= 16 * 65536  # well above Autobahn's 65,536-fragment cases
    srv = server()
    with RawWS(srv.port, timeout=20) as ws:
        ws.handshake()
        ws.send_frame(b"", OP_TEXT, fin=False, key=b"\0\0\0\0")
        empty = frame(OP_CONT, b"", fin=False, mask=b"\0\0\0\0")
        chunk = empty * 65536
        closed_at = None
        try:
            for i in range(limit // 65536 + 4):
                ws.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            closed_at = i
        code, reason, _ = ws.recv_close(timeout=20, max_frames=10)
    assert code == 1009 and reason == b"message has too many fragments"
    assert closed_at is None or closed_at >= limit // 65536 - 1
    still_serves(srv.port)


def test_max_fragments_boundary(server: Callable[..., ServerProcess]) -> None:
    srv = server(max_fragments=100)
    with RawWS(srv.port) as ws:
        ws.handshake()
        frames = [frame(OP_TEXT, b"a", fin=False, mask=MASK_KEY)]
        frames += [frame(OP_CONT, b"b", fin=False, mask=MASK_KEY) for _ in range(98)]
        frames += [frame(OP_PING, b"c", mask=MASK_KEY)]  # control frames do not count
        frames += [frame(OP_CONT, b"c", fin=True, mask=MASK_KEY)]
        ws.send(b"".join(frames))
        assert ws.recv_frame() == (OP_PONG, True, b"c")
        assert ws.recv_frame() == (OP_TEXT, True, b"a" + b"b" * 98 + b"c")
        ws.send(b"".join([frame(OP_TEXT, b"a", fin=False, mask=MASK_KEY)] +
                         [frame(OP_CONT, b"b", fin=False, mask=MASK_KEY) for _ in range(100)]))
        code, reason, _ = ws.recv_close()
        assert (code, reason) == (1009, b"message has too many fragments")


# ============================================================================ the Autobahn 9.x shapes

@pytest.mark.slow
@pytest.mark.parametrize("case", ["16MiB-text", "16MiB-binary", "4MiB-in-65536-fragments"])
def test_autobahn_9x_shapes_pass_with_the_defaults_but_size(
        server: Callable[..., ServerProcess], case: str) -> None:
    """What Autobahn's 9.x cases send (16 MiB messages in one frame, 4 MiB in 64-byte
    fragments): echoed intact by a server with default limits but max_message_size raised to
    the suite's 16 MiB, so none of the new bounds (frames per message, heartbeat, read pause
    above high water) gets in the way."""
    srv = server(max_message_size=16 * MiB, write_limit=64 * MiB)
    with RawWS(srv.port, timeout=30) as ws:
        ws.handshake()
        if case == "4MiB-in-65536-fragments":
            payload = os.urandom(4 * MiB)
            pieces = [payload[i:i + 64] for i in range(0, len(payload), 64)]
            assert len(pieces) == 65536
            frames = [frame(OP_BINARY, pieces[0], fin=False, mask=MASK_KEY)]
            frames += [frame(OP_CONT, p, fin=i == len(pieces) - 1, mask=MASK_KEY)
                       for i, p in enumerate(pieces) if i]
            ws.send(b"".join(frames))
            op = OP_BINARY
        else:
            op = OP_TEXT if case == "16MiB-text" else OP_BINARY
            payload = (b"*" if op == OP_TEXT else b"\xfe") * (16 * MiB)
            t = threading.Thread(target=ws.send, args=(frame(op, payload, mask=MASK_KEY),))
            t.start()
        got = ws.recv_frame(timeout=60)
        if case != "4MiB-in-65536-fragments":
            t.join(30)
    assert got == (op, True, payload)


# ============================================================================ defaults that reclaim

def test_defaults_reclaim_what_is_dead() -> None:
    """Heartbeat on by default (20 s, then 20 s for the pong, as websockets does), frames per
    message bounded, handshake bounded; the C defaults agree with pyws.DEFAULT_OPTIONS."""
    d = pyws.DEFAULT_OPTIONS
    assert d["heartbeat"] == 20.0 and d["heartbeat_timeout"] == 20.0
    assert d["max_fragments"] == 1 << 20
    assert d["handshake_timeout"] == 10.0
    o = ffi.new("pyws_opts *")
    lib.pyws_opts_default(o)
    assert (o.heartbeat, o.heartbeat_timeout, o.max_fragments) == (20000, 20000, 1 << 20)


def test_a_request_no_handler_answers_is_reclaimed(
        server_factory: Callable[..., ServerThread]) -> None:
    """An upgrade request the application never answers (neither ws_upgrade nor reply) is not
    kept forever: handshake_timeout bounds it (408)."""
    seen = []

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            seen.append(data.uri)  # and no answer

    srv = server_factory(h, handshake_timeout=0.3)
    with RawWS(srv.port) as ws:
        ws.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13"
                b"\r\n\r\n")
        t0 = time.monotonic()
        reply = ws.read_until_eof(timeout=5)
        elapsed = time.monotonic() - t0
    assert seen == ["/ws"]
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    assert elapsed < 3.0


def test_a_connection_that_sends_nothing_is_reclaimed(
        server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(None, handshake_timeout=0.3)
    with RawWS(srv.port) as ws:
        t0 = time.monotonic()
        reply = ws.read_until_eof(timeout=5)
        assert time.monotonic() - t0 < 3.0
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]


def test_control_replies_count_against_write_limit(
        server: Callable[..., ServerProcess]) -> None:
    """A pong is bytes queued like any other: past write_limit the connection closes with
    1008 (here a limit smaller than one pong, so the first one crosses it)."""
    srv = server(write_limit=100)
    with RawWS(srv.port) as ws:
        ws.handshake()
        ws.send_frame(b"p" * 125, OP_PING)
        assert ws.is_eof(timeout=5)
    lines = srv.closes(1, 5)
    assert lines == ["close 1008 write buffer limit exceeded (slow consumer)"], lines
    still_serves(srv.port)


def test_a_burst_of_pings_gets_every_pong(server: Callable[..., ServerProcess]) -> None:
    """A reading peer's burst of pings (Autobahn's case 2.10: ten at once) gets a pong for
    each, in order: pongs are merged only once a peer has 16 KiB queued and unread."""
    srv = server()
    with RawWS(srv.port) as ws:
        ws.handshake()
        ws.send(b"".join(frame(OP_PING, b"payload-%d" % i, mask=MASK_KEY) for i in range(10)))
        got = [ws.recv_frame() for _ in range(10)]
    assert got == [(OP_PONG, True, b"payload-%d" % i) for i in range(10)]
