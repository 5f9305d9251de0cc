"""permessage-deflate (RFC 7692) against hostile and awkward peers, from raw sockets.

What this file proves, each case checking the exact close code the server sends and that the
server then still serves a well-behaved compressed connection:
- the 101 carries Sec-WebSocket-Extensions exactly when deflate was offered and is enabled;
- RSV1 is accepted only where RFC 7692 puts it (first frame of a data message, after
  negotiation): elsewhere, and RSV2/RSV3 always, close 1002;
- the message size limit counts inflated bytes, and a deflate bomb is refused (1009) without
  the server ever holding the bomb's inflated size (peak RSS of this process, which hosts the
  server thread, is measured around it);
- undecodable compressed data (random bytes, a truncated stream, bad block types, a valid
  stream with garbage after it) and inflated text that is not UTF-8 close 1007;
- compressed messages survive fragmentation at every split point, TCP writes split at every
  byte offset, pings between fragments, context takeover kept or reset, empty payloads and
  a peer that ends its stream with BFINAL;
- what the server sends back: RSV1 on the first frame of a compressed message only, never on
  control frames, short messages uncompressed; the test inflates the replies itself.
Payloads are compressed here with Python's zlib (raw deflate, sync flush, tail stripped)."""
from __future__ import annotations

import queue
import random
import resource
import socket
import struct
import time
import zlib
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import pytest

import pyws
from pyws import EV_CLOSE, EV_HTTP_MSG, EV_WS_MSG

from _frames import MASK_KEY, frame
from _rawws import (ACCEPT, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS,
                    close_payload, handshake_request)
from conftest import ServerThread

MAX = 1 << 20                      # the servers' max_message_size (inflated bytes)
TAIL = b"\x00\x00\xff\xff"         # RFC 7692 §7.2.1: stripped by the sender, appended on receipt
OFFER = "permessage-deflate"
RSV1 = 4                           # RSV bits here are the 3 bits as 0..7, as Frame.rsv reads
                                   # them (RSV1 the top one); _frames.frame wants them in place:
                                   # rsv << 4
TEXT = ("The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. "
        "Grüße, ✓ and 🦊 too. ") * 4


# --------------------------------------------------------------------------- compression

def deflate(data: bytes, comp: Optional[Any] = None, wbits: int = -15) -> bytes:
    """``data`` as one message's payload: raw deflate, sync flush, the 4-byte tail stripped.
    Pass ``comp`` (a compressobj) to keep context across messages."""
    c = comp if comp is not None else zlib.compressobj(9, zlib.DEFLATED, wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def deflate_final(data: bytes) -> bytes:
    """``data`` as a finished stream (Z_FINISH): its last block has BFINAL=1, no tail."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush()
    assert not out.endswith(TAIL)
    return out


def deflate_zeros(n: int) -> bytes:
    """n zero bytes compressed (about 1000:1) without ever building n bytes here."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    parts = [c.compress(chunk) for _ in range(n >> 20)]
    parts.append(c.compress(bytes(n & ((1 << 20) - 1))))
    parts.append(c.flush(zlib.Z_SYNC_FLUSH))
    out = b"".join(parts)
    assert out.endswith(TAIL)
    return out[:-4]


def complete_stream(payload: bytes) -> bool:
    """True if payload + tail is a valid run of whole deflate blocks (what a receiver must get):
    Python's zlib decodes it, and an empty final stored block right after it ends the stream
    exactly (a truncated block would swallow those bytes as its own)."""
    d = zlib.decompressobj(-15)
    try:
        d.decompress(payload + TAIL + b"\x01\x00\x00\xff\xff")
    except zlib.error:
        return False
    return d.eof and d.unused_data == b""


# --------------------------------------------------------------------------- the client side

class Frame(NamedTuple):
    fin: bool
    rsv: int        # the 3 RSV bits, 0..7 (4 = RSV1)
    opcode: int
    payload: bytes


class Peer:
    """A raw WebSocket client that may speak permessage-deflate: sends frames it builds itself,
    reads the server's frames with their RSV bits, and inflates the server's compressed
    messages with one inflater kept for the connection (the server keeps its context)."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.raw = RawWS(port, timeout=timeout)
        self.inflater = zlib.decompressobj(-15)
        self.headers: Dict[str, str] = {}

    def handshake(self, offer: Optional[str] = OFFER) -> Dict[str, str]:
        extra = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer is not None else ""
        self.raw.send(handshake_request(extra=extra))
        status, headers, head = self.raw.read_http_head()
        assert status == 101, head
        assert headers["sec-websocket-accept"] == ACCEPT
        self.headers = headers
        return headers

    def send(self, data: bytes) -> None:
        self.raw.send(data)

    def frame(self, payload: bytes = b"", opcode: int = OP_TEXT, fin: bool = True,
              rsv: int = 0) -> None:
        self.raw.send(frame(opcode, payload, fin=fin, rsv=rsv << 4, mask=MASK_KEY))

    def compressed(self, payload: bytes, opcode: int = OP_TEXT) -> None:
        """One single-frame compressed message whose payload is already compressed."""
        self.frame(payload, opcode, True, rsv=RSV1)

    def read_frame(self, timeout: Optional[float] = None) -> Frame:
        t = timeout or self.raw.timeout
        b0, b1 = self.raw.recv_exact(2, t)
        assert not (b1 & 0x80), "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.raw.recv_exact(2, t))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.raw.recv_exact(8, t))[0]
        payload = self.raw.recv_exact(n, t) if n else b""
        frame = Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload)
        assert frame.rsv in (0, RSV1), f"server set RSV2/RSV3: {frame[:3]}"
        if frame.opcode & 8:
            assert frame.rsv == 0, f"RSV1 on a control frame from the server: {frame[:3]}"
            assert frame.fin
        return frame

    def recv(self, max_frames: int = 100000) -> Tuple[int, bytes, bool]:
        """The next data message: (opcode, inflated payload, arrived compressed). Control frames
        met on the way are skipped (read_frame checked their bits); a close fails the test."""
        first: Optional[Frame] = None
        parts: List[bytes] = []
        for _ in range(max_frames):
            f = self.read_frame()
            if f.opcode & 8:
                assert f.opcode != OP_CLOSE, f"closed instead: {f.payload!r}"
                continue
            if first is None:
                assert f.opcode in (OP_TEXT, OP_BINARY), f
                first = f
            else:
                assert f.opcode == OP_CONT, f
                assert f.rsv == 0, "RSV1 on a continuation frame from the server"
            parts.append(f.payload)
            if f.fin:
                data = b"".join(parts)
                if first.rsv == RSV1:
                    data = self.inflater.decompress(data + TAIL)
                    assert not self.inflater.unconsumed_tail
                return first.opcode, data, first.rsv == RSV1
        raise AssertionError("no whole message within max_frames frames")

    def expect_close(self, code: int, max_frames: int = 1000) -> Tuple[bytes, List[Frame]]:
        """Read up to the server's close frame: assert its code and that TCP is closed after it.
        Returns (close reason, frames before it)."""
        before: List[Frame] = []
        for _ in range(max_frames):
            f = self.read_frame()
            if f.opcode == OP_CLOSE:
                got = struct.unpack("!H", f.payload[:2])[0] if len(f.payload) >= 2 else 1005
                assert got == code, (got, f.payload[2:], before[:3])
                assert self.raw.is_eof(3.0), "the server must close TCP after failing"
                return f.payload[2:], before
            before.append(f)
        raise AssertionError("no close frame")

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> "Peer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- the server side

class DeflateServer:
    """An echo server with permessage-deflate that records how connections ended and whether
    messages arrived compressed. A binary message ``b"FRAG:<n>:<body>"`` is answered with
    <body> sent as n fragments (one compressed stream), then a ping ``b"after"``."""

    def __init__(self, factory: Callable[..., ServerThread], **opts: Any) -> None:
        self.events: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        options: Dict[str, Any] = dict(max_message_size=MAX, close_timeout=2.0,
                             compression=pyws.Deflate())
        options.update(opts)
        self.srv = factory(self.handler, **options)
        self.port = self.srv.port

    def handler(self, conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            if data.is_websocket_upgrade:
                conn.ws_upgrade(data)
            else:
                conn.reply(200, "ok")
        elif ev == EV_WS_MSG:
            self.events.put(("msg", data.compressed))
            payload = bytes(data.data)
            if data.opcode == OP_BINARY and payload.startswith(b"FRAG:"):
                _tag, n, body = payload.split(b":", 2)
                size = -(-len(body) // int(n))
                conn.send_fragments([body[i:i + size] for i in range(0, len(body), size)],
                                    OP_BINARY)
                conn.ping(b"after")
            else:
                conn.ws_send(payload, data.opcode)
        elif ev == EV_CLOSE and conn.is_websocket:
            self.events.put(("close", (conn.close_code, conn.close_reason)))

    def next(self, kind: str, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        seen: List[Tuple[str, Any]] = []
        for _ in range(10000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                k, v = self.events.get(timeout=left)
            except queue.Empty:
                break
            if k == kind:
                return v
            seen.append((k, v))
        raise AssertionError(f"no {kind} event in time; saw {seen[:10]}")

    def extensions(self) -> List[str]:
        """Connection.extensions of every live connection, read on the loop thread."""
        def read() -> List[str]:
            assert self.srv.mgr is not None
            return [c.extensions for c in self.srv.mgr.connections]
        return list(self.srv.call(read))

    def peer(self, offer: Optional[str] = OFFER) -> Peer:
        p = Peer(self.port)
        p.handshake(offer)
        return p

    def assert_alive(self) -> None:
        """A well-behaved compressed connection is still served: compressed and plain messages
        both ways, then a clean close."""
        with self.peer() as p:
            assert p.headers["sec-websocket-extensions"].startswith("permessage-deflate")
            comp = zlib.compressobj(9, zlib.DEFLATED, -15)
            p.compressed(deflate(TEXT.encode(), comp))
            assert p.recv() == (OP_TEXT, TEXT.encode(), True)
            p.frame(b"plain", OP_BINARY)
            assert p.recv() == (OP_BINARY, b"plain", False)
            p.compressed(deflate(b"\x00\x01" * 200, comp), OP_BINARY)
            assert p.recv() == (OP_BINARY, b"\x00\x01" * 200, True)
            p.frame(close_payload(1000), OP_CLOSE)
            p.expect_close(1000)


@pytest.fixture
def dsrv(server_factory: Callable[..., ServerThread]) -> DeflateServer:
    return DeflateServer(server_factory)


def drain_events(s: DeflateServer) -> None:
    for _ in range(100000):
        try:
            s.events.get_nowait()
        except queue.Empty:
            return


# --------------------------------------------------------------------------- negotiation

@pytest.mark.parametrize("offer,expect", [
    ("permessage-deflate",
     "permessage-deflate; server_max_window_bits=12"),
    ("permessage-deflate; client_max_window_bits",
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    ("permessage-deflate; client_no_context_takeover",
     "permessage-deflate; client_no_context_takeover; server_max_window_bits=12"),
    ("x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=15",
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
], ids=["plain", "client-bits", "client-no-takeover", "after-unknown"])
def test_101_carries_the_agreed_extension(dsrv: DeflateServer, offer: str, expect: str) -> None:
    with dsrv.peer(offer) as p:
        got = p.headers.get("sec-websocket-extensions")
        assert got is not None
        params = sorted(s.strip() for s in got.split(";"))
        assert params == sorted(s.strip() for s in expect.split(";")), got
        exts = dsrv.extensions()
        assert len(exts) == 1 and exts[0].startswith("permessage-deflate")
        assert sorted(s.strip() for s in exts[0].split(";")) == params
    dsrv.assert_alive()


def test_101_has_no_extension_when_not_offered(dsrv: DeflateServer) -> None:
    with dsrv.peer(None) as p:
        assert "sec-websocket-extensions" not in p.headers
        assert dsrv.extensions() == [""]
        # no compression: even a long message comes back plain
        p.frame(TEXT.encode(), OP_TEXT)
        assert p.read_frame() == Frame(True, 0, OP_TEXT, TEXT.encode())
    dsrv.assert_alive()


def test_101_has_no_extension_when_compression_is_off(
        server_factory: Callable[..., ServerThread]) -> None:
    s = DeflateServer(server_factory, compression=None)
    with s.peer() as p:
        assert "sec-websocket-extensions" not in p.headers
        p.frame(TEXT.encode(), OP_TEXT)
        assert p.read_frame() == Frame(True, 0, OP_TEXT, TEXT.encode())
        # and RSV1 is then a protocol error like any reserved bit
        p.compressed(deflate(b"hello"))
        p.expect_close(1002)
    assert s.next("close")[0] == 1002


def test_server_asks_for_client_no_context_takeover(
        server_factory: Callable[..., ServerThread]) -> None:
    s = DeflateServer(server_factory, compression=pyws.Deflate(peer_no_context_takeover=True))
    with s.peer() as p:
        assert "client_no_context_takeover" in p.headers["sec-websocket-extensions"]
        for i in range(5):  # honoured: each message from a fresh compressor
            msg = f"{i}: {TEXT}".encode()
            p.compressed(deflate(msg))
            assert p.recv() == (OP_TEXT, msg, True)
    s.assert_alive()


# --------------------------------------------------------------------------- reserved bits

def test_rsv1_without_negotiation_closes_1002(dsrv: DeflateServer) -> None:
    with dsrv.peer(None) as p:
        p.compressed(deflate(TEXT.encode()))
        p.expect_close(1002)
    assert dsrv.next("close")[0] == 1002
    dsrv.assert_alive()


@pytest.mark.parametrize("first_rsv", [RSV1, 0], ids=["compressed-first", "plain-first"])
def test_rsv1_on_a_continuation_closes_1002(dsrv: DeflateServer, first_rsv: int) -> None:
    data = deflate(TEXT.encode()) if first_rsv else TEXT.encode()
    with dsrv.peer() as p:
        p.frame(data[:10], OP_TEXT, fin=False, rsv=first_rsv)
        p.frame(data[10:], OP_CONT, fin=True, rsv=RSV1)
        _reason, before = p.expect_close(1002)
        assert before == []
    code, reason = dsrv.next("close")
    assert code == 1002 and "continuation" in reason
    dsrv.assert_alive()


@pytest.mark.parametrize("opcode,payload", [
    (OP_PING, b"ping"), (OP_PONG, b"pong"), (OP_CLOSE, close_payload(1000)),
    (OP_PING, b""),
], ids=["ping", "pong", "close", "empty-ping"])
def test_rsv1_on_a_control_frame_closes_1002(dsrv: DeflateServer, opcode: int,
                                             payload: bytes) -> None:
    with dsrv.peer() as p:
        p.frame(payload, opcode, rsv=RSV1)
        _reason, before = p.expect_close(1002)
        assert before == []
    code, reason = dsrv.next("close")
    assert code == 1002 and "control" in reason
    dsrv.assert_alive()


def test_rsv1_on_a_control_frame_inside_a_compressed_message_closes_1002(
        dsrv: DeflateServer) -> None:
    data = deflate(TEXT.encode())
    with dsrv.peer() as p:
        p.frame(data[:5], OP_TEXT, fin=False, rsv=RSV1)
        p.frame(b"x", OP_PING, rsv=RSV1)
        p.frame(data[5:], OP_CONT)
        _reason, before = p.expect_close(1002)
        assert before == []
    dsrv.assert_alive()


@pytest.mark.parametrize("rsv", [2, 1, 3, 6, 5, 7],
                         ids=["rsv2", "rsv3", "rsv2+3", "rsv1+2", "rsv1+3", "all"])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY, OP_PING])
def test_rsv2_rsv3_close_1002_with_deflate_on(dsrv: DeflateServer, rsv: int,
                                              opcode: int) -> None:
    with dsrv.peer() as p:
        payload = deflate(b"abc") if rsv & RSV1 and opcode != OP_PING else b"abc"
        p.frame(payload, opcode, rsv=rsv)
        _reason, before = p.expect_close(1002)
        assert before == []
    assert dsrv.next("close")[0] == 1002
    dsrv.assert_alive()


def test_rsv2_on_a_continuation_of_a_compressed_message_closes_1002(
        dsrv: DeflateServer) -> None:
    data = deflate(TEXT.encode())
    with dsrv.peer() as p:
        p.frame(data[:5], OP_TEXT, fin=False, rsv=RSV1)
        p.frame(data[5:], OP_CONT, rsv=2)
        p.expect_close(1002)
    dsrv.assert_alive()


# --------------------------------------------------------------------------- size limits, bombs

def _peak_rss_reset() -> Tuple[bool, int]:
    """Reset this process's peak RSS if Linux lets us (clear_refs 5); (reset?, baseline KiB)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True, _status_kib("VmRSS")
    except OSError:
        return False, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


def _peak_rss_since(reset: bool) -> int:
    return _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_deflate_bomb_closes_1009(dsrv: DeflateServer) -> None:
    bomb = deflate_zeros(10 << 20)       # 10 MiB of zeros in about 10 KiB
    assert len(bomb) < 16 << 10
    with dsrv.peer() as p:
        p.compressed(bomb, OP_BINARY)
        _reason, before = p.expect_close(1009)
        assert before == []
    assert dsrv.next("close") == (1009, "message too big (after inflating)")
    dsrv.assert_alive()


def test_deflate_bomb_is_not_inflated_in_full(dsrv: DeflateServer) -> None:
    """256 MiB of zeros (256 KiB compressed, within the compressed-size slack of a 1 MiB
    limit) is refused having inflated at most max_message_size + 1 bytes: this process (which
    runs the server's loop thread) never grows by anything near 256 MiB."""
    bomb = deflate_zeros(256 << 20)
    assert len(bomb) < MAX
    raw_frame = frame(OP_BINARY, bomb, rsv=RSV1 << 4, mask=MASK_KEY)
    with dsrv.peer() as p:
        reset, base_kib = _peak_rss_reset()
        t0 = time.monotonic()
        p.send(raw_frame)
        p.expect_close(1009)
        elapsed = time.monotonic() - t0
        grew_kib = _peak_rss_since(reset) - base_kib
    assert grew_kib < 48 << 10, f"peak RSS grew by {grew_kib} KiB while refusing the bomb"
    assert elapsed < 3.0, elapsed
    assert dsrv.next("close") == (1009, "message too big (after inflating)")
    # the loop is unharmed: many bombs in a row are each refused, and good clients served
    for _ in range(3):
        with dsrv.peer() as p:
            p.send(raw_frame)
            p.expect_close(1009)
    dsrv.assert_alive()


def test_fragmented_deflate_bomb_closes_1009(dsrv: DeflateServer) -> None:
    bomb = deflate_zeros(64 << 20)
    step = 4096
    with dsrv.peer() as p:
        for i in range(0, len(bomb), step):
            last = i + step >= len(bomb)
            p.frame(bomb[i:i + step], OP_BINARY if i == 0 else OP_CONT, fin=last,
                    rsv=RSV1 if i == 0 else 0)
        _reason, before = p.expect_close(1009)
        assert before == []
    assert dsrv.next("close")[0] == 1009
    dsrv.assert_alive()


@pytest.mark.parametrize("size,echoed", [
    (MAX - 1, True), (MAX, True), (MAX + 1, False), (MAX + 4096, False),
], ids=["limit-1", "limit", "limit+1", "limit+4096"])
def test_inflated_size_limit_is_exact(dsrv: DeflateServer, size: int, echoed: bool) -> None:
    with dsrv.peer() as p:
        p.compressed(deflate_zeros(size), OP_BINARY)
        if echoed:
            op, data, was_compressed = p.recv()
            assert (op, len(data), was_compressed) == (OP_BINARY, size, True)
            assert data == bytes(size)
            # the connection goes on with the same inflater
            p.compressed(deflate(b"after the big one"), OP_BINARY)
            assert p.recv()[1] == b"after the big one"
        else:
            p.expect_close(1009)
    if not echoed:
        assert dsrv.next("close")[0] == 1009
    dsrv.assert_alive()


@pytest.mark.parametrize("fragments", [1, 7], ids=["one-frame", "seven-frames"])
def test_limit_counts_inflated_bytes_not_compressed(dsrv: DeflateServer, fragments: int) -> None:
    msg = b"abcdefghijklmnopqrstuvwxyz0123456789" * ((2 << 20) // 36 + 1)
    msg = msg[:2 << 20]                        # 2 MiB, limit 1 MiB
    data = deflate(msg)
    assert len(data) < 64 << 10                # tiny on the wire
    with dsrv.peer() as p:
        size = -(-len(data) // fragments)
        pieces = [data[i:i + size] for i in range(0, len(data), size)]
        for i, piece in enumerate(pieces):
            p.frame(piece, OP_BINARY if i == 0 else OP_CONT, fin=i == len(pieces) - 1,
                    rsv=RSV1 if i == 0 else 0)
        p.expect_close(1009)
    assert dsrv.next("close") == (1009, "message too big (after inflating)")
    dsrv.assert_alive()


def test_limit_applies_to_each_message_under_context_takeover(dsrv: DeflateServer) -> None:
    """A message just under the limit, again on the same stream, then one twice its size that
    still compresses to a few KiB: the limit holds for each message on a kept context."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    rnd = random.Random(7)
    block = bytes(rnd.getrandbits(8) for _ in range(1000)) * ((MAX - 10) // 1000)
    with dsrv.peer() as p:
        p.compressed(deflate(block, comp), OP_BINARY)
        assert p.recv()[1] == block
        p.compressed(deflate(block, comp), OP_BINARY)
        assert p.recv()[1] == block
        p.compressed(deflate(block + block, comp), OP_BINARY)
        p.expect_close(1009)
    dsrv.assert_alive()


# --------------------------------------------------------------------------- corrupt data
#
# Why 1007: RFC 7692 §7.2.2 has the receiver append the tail and inflate; a payload that does
# not inflate is data "not consistent with the type of the message" (RFC 6455 §7.4.1, 1007),
# like invalid UTF-8 in a text message, rather than a framing error (1002): the frames
# themselves were fine. pyws reports it as 1007 "invalid compressed data".

def _random_invalid(seed: int, n: int = 64) -> bytes:
    """Seeded random bytes that Python's zlib rejects outright (with the tail appended)."""
    rnd = random.Random(seed)
    for _ in range(1000):
        data = bytes(rnd.getrandbits(8) for _ in range(n))
        try:
            zlib.decompressobj(-15).decompress(data + TAIL)
        except zlib.error:
            return data
    raise AssertionError("no invalid random data found")


def _far_back() -> bytes:
    """A stream whose first match reaches into a preset dictionary the receiver lacks."""
    words = b"preset dictionary words that only the sender knows about " * 4
    c = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=words)
    return deflate(words[:100], c)


def _bad_stored_lengths() -> bytes:
    # a stored block (BFINAL=0, BTYPE=00) whose NLEN is not the complement of LEN
    return b"\x00" + struct.pack("<HH", 5, 5) + b"hello"


CORRUPT = {
    "random-1": _random_invalid(1),
    "random-2": _random_invalid(2),
    "random-3": _random_invalid(3, 1000),
    "btype-3": b"\x06",                                      # BFINAL=0, BTYPE=11 (reserved)
    "btype-3-final": b"\x07\x00\x00",                        # BFINAL=1, BTYPE=11
    "valid-then-btype-3": deflate(TEXT.encode()) + b"\x06",
    "valid-then-ff": deflate(TEXT.encode()) + b"\xff" * 8,
    "stored-lengths": _bad_stored_lengths(),
    "distance-too-far": _far_back(),
    "final-then-garbage": deflate_final(TEXT.encode()) + b"garbage after the end",
    "final-then-valid-stream": deflate_final(b"one") + deflate(b"two"),
}


@pytest.mark.parametrize("payload", list(CORRUPT.values()), ids=list(CORRUPT))
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_corrupt_compressed_data_closes_1007(dsrv: DeflateServer, payload: bytes,
                                             opcode: int) -> None:
    assert not complete_stream(payload)  # Python's zlib agrees it is not a valid message
    with dsrv.peer() as p:
        p.frame(b"good first", OP_TEXT)
        p.compressed(payload, opcode)
        p.frame(b"never", OP_TEXT)
        _reason, before = p.expect_close(1007)
        assert [(f.opcode, f.payload) for f in before] == [(OP_TEXT, b"good first")]
    assert dsrv.next("close") == (1007, "invalid compressed data")
    dsrv.assert_alive()


def test_corrupt_data_in_a_fragmented_message_closes_1007(dsrv: DeflateServer) -> None:
    data = deflate(TEXT.encode())
    data = data[:20] + b"\xff" * 4 + data[20:]
    with dsrv.peer() as p:
        p.frame(data[:10], OP_BINARY, fin=False, rsv=RSV1)
        p.frame(data[10:30], OP_CONT, fin=False)
        p.frame(data[30:], OP_CONT, fin=True)
        p.expect_close(1007)
    dsrv.assert_alive()


def test_truncated_stream_closes_1007(dsrv: DeflateServer) -> None:
    """Every prefix of a compressed message that, tail appended, stops inside a deflate block
    is not a message: it must close 1007, not deliver a part of the message (and leave the
    context takeover window mid-block for the next one). Prefixes that happen to end on a
    block boundary are valid shorter messages and must be echoed as exactly that."""
    data = deflate(TEXT.encode())
    wrong: List[str] = []
    for cut in range(1, len(data)):
        piece = data[:cut]
        with dsrv.peer() as p:
            p.compressed(piece, OP_BINARY)
            f = p.read_frame()
            if f.opcode == OP_CLOSE:
                code = struct.unpack("!H", f.payload[:2])[0]
                outcome = f"close {code}"
            else:
                outcome = f"echoed {len(f.payload)}-byte frame rsv={f.rsv}"
        if complete_stream(piece):
            d = zlib.decompressobj(-15)
            expect = d.decompress(piece + TAIL)
            with dsrv.peer() as p:
                p.compressed(piece, OP_BINARY)
                if p.recv()[1] != expect:
                    wrong.append(f"cut {cut}: complete prefix not echoed as {expect!r}")
        elif outcome != "close 1007":
            wrong.append(f"cut {cut}/{len(data)}: {outcome}")
    assert not wrong, (f"{len(wrong)} of {len(data) - 1} truncations of a {len(data)}-byte "
                       f"compressed message were not refused with 1007: " + "; ".join(wrong[:6]))
    dsrv.assert_alive()


def test_truncated_stream_does_not_poison_the_next_message(dsrv: DeflateServer) -> None:
    """The visible harm of accepting a truncated stream: with context takeover the inflater is
    left inside a block, and the next, valid, message inflates to garbage (or fails). Either
    the truncated message closes 1007, or the next message must come back intact."""
    data = deflate(TEXT.encode())
    cut = len(data) // 2
    assert not complete_stream(data[:cut])
    with dsrv.peer() as p:
        p.compressed(data[:cut], OP_BINARY)
        f = p.read_frame()
        if f.opcode == OP_CLOSE:
            assert struct.unpack("!H", f.payload[:2])[0] == 1007
            assert p.raw.is_eof(3.0)
        else:
            p.compressed(deflate(b"the next message " * 10), OP_BINARY)
            f2 = p.read_frame()
            got = f2.payload if f2.opcode == OP_CLOSE else None
            assert f2.opcode != OP_CLOSE, (
                f"truncated message accepted ({len(f.payload)}-byte echo), then the valid next "
                f"message was refused: close {got!r}")
            if f2.rsv:
                body = zlib.decompressobj(-15).decompress(f2.payload + TAIL)
            else:
                body = f2.payload
            assert body == b"the next message " * 10
    dsrv.assert_alive()


def test_peer_ignoring_the_agreed_window_closes_1007(dsrv: DeflateServer) -> None:
    """client_max_window_bits=12 agreed, but the client compresses with a 32 KiB window and
    refers 8 KiB back into its previous message: beyond the server's 4 KiB window."""
    rnd = random.Random(11)
    first = bytes(rnd.getrandbits(8) for _ in range(8192))
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    with dsrv.peer("permessage-deflate; client_max_window_bits") as p:
        assert "client_max_window_bits=12" in p.headers["sec-websocket-extensions"]
        p.compressed(deflate(first, comp), OP_BINARY)
        assert p.recv()[1] == first
        second = deflate(first[:200], comp)
        assert len(second) < 50               # a back-reference, 8192 bytes back
        p.compressed(second, OP_BINARY)
        p.expect_close(1007)
    dsrv.assert_alive()


def test_peer_ignoring_client_no_context_takeover_closes_1007(dsrv: DeflateServer) -> None:
    """client_no_context_takeover agreed: the server starts each message with an empty window,
    so a client that refers back into its previous message sends invalid data."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    with dsrv.peer("permessage-deflate; client_no_context_takeover") as p:
        p.compressed(deflate(TEXT.encode(), comp))
        assert p.recv()[1] == TEXT.encode()
        again = deflate(TEXT.encode(), comp)
        assert len(again) < 20                 # one back-reference to the previous message
        p.compressed(again)
        p.expect_close(1007)
    dsrv.assert_alive()


# --------------------------------------------------------------------------- UTF-8

@pytest.mark.parametrize("text", [
    b"\xff", b"abc\xc0\xafdef", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\x80",
    "truncated €".encode()[:-1], ("long and valid ✓ " * 50).encode() + b"\xfe",
], ids=["ff", "overlong", "surrogate", "above-max", "stray-cont", "truncated", "late-bad"])
@pytest.mark.parametrize("fragments", [1, 3])
def test_inflated_text_invalid_utf8_closes_1007(dsrv: DeflateServer, text: bytes,
                                                fragments: int) -> None:
    data = deflate(text)
    with dsrv.peer() as p:
        size = max(1, -(-len(data) // fragments))
        pieces = [data[i:i + size] for i in range(0, len(data), size)]
        for i, piece in enumerate(pieces):
            p.frame(piece, OP_TEXT if i == 0 else OP_CONT, fin=i == len(pieces) - 1,
                    rsv=RSV1 if i == 0 else 0)
        _reason, before = p.expect_close(1007)
        assert before == []
    code, reason = dsrv.next("close")
    assert code == 1007 and "UTF-8" in reason
    dsrv.assert_alive()


def test_compressed_bytes_need_not_be_utf8(dsrv: DeflateServer) -> None:
    """The compressed form of valid text is almost never UTF-8 itself: only the inflated text
    is checked."""
    msg = "héllo wörld ✓ 🦊 ".encode() * 20
    data = deflate(msg)
    with pytest.raises(UnicodeDecodeError):
        data.decode()
    with dsrv.peer() as p:
        p.frame(data[:3], OP_TEXT, fin=False, rsv=RSV1)
        p.frame(data[3:], OP_CONT)
        assert p.recv() == (OP_TEXT, msg, True)
    assert dsrv.next("msg") is True


# --------------------------------------------------------------------------- fragmentation

def test_fragment_boundary_at_every_offset(dsrv: DeflateServer) -> None:
    msg = "fragment me ✓ 🦊, fragment me again ✓ 🦊".encode()
    data = deflate(msg)
    with dsrv.peer() as p:
        for cut in range(0, len(data) + 1):    # including an empty first or last fragment
            p.frame(data[:cut], OP_TEXT, fin=False, rsv=RSV1)
            p.frame(data[cut:], OP_CONT, fin=True)
            assert p.recv() == (OP_TEXT, msg, False), cut
    dsrv.assert_alive()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_many_small_fragments(dsrv: DeflateServer, size: int) -> None:
    msg = (TEXT * 3).encode()
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    with dsrv.peer() as p:
        for round_ in range(2):                # the second one leans on the first's context
            data = deflate(msg, comp)
            pieces = [data[i:i + size] for i in range(0, len(data), size)]
            for i, piece in enumerate(pieces):
                p.frame(piece, OP_TEXT if i == 0 else OP_CONT, fin=i == len(pieces) - 1,
                        rsv=RSV1 if i == 0 else 0)
            assert p.recv() == (OP_TEXT, msg, True), round_
    assert dsrv.next("msg") is True
    dsrv.assert_alive()


def test_large_message_in_random_fragments(dsrv: DeflateServer) -> None:
    rnd = random.Random(3)
    words = [w.encode() for w in TEXT.split()]
    msg = b" ".join(rnd.choice(words) for _ in range(60000))[:MAX]
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    with dsrv.peer() as p:
        for _ in range(3):
            data = deflate(msg, comp)
            pos, first = 0, True
            for _n in range(100000):
                step = rnd.choice([0, 1, 5, 100, 1000, 9000])
                piece = data[pos:pos + step]
                pos += len(piece)
                p.frame(piece, OP_BINARY if first else OP_CONT, fin=pos >= len(data),
                        rsv=RSV1 if first else 0)
                first = False
                if pos >= len(data):
                    break
            assert p.recv() == (OP_BINARY, msg, True)
    dsrv.assert_alive()


def _two_fragments_and_a_ping(data: bytes, split: int) -> bytes:
    return (frame(OP_TEXT, data[:split], fin=False, rsv=RSV1 << 4, mask=MASK_KEY) +
            frame(OP_PING, b"in between", mask=MASK_KEY) +
            frame(OP_CONT, data[split:], fin=True, mask=MASK_KEY))


def test_ping_between_compressed_fragments(dsrv: DeflateServer) -> None:
    msg = TEXT.encode()
    data = deflate(msg)
    with dsrv.peer() as p:
        for split in (0, 1, len(data) // 2, len(data) - 1, len(data)):
            p.send(_two_fragments_and_a_ping(data, split))
            assert p.read_frame() == Frame(True, 0, OP_PONG, b"in between")
            assert p.recv() == (OP_TEXT, msg, True)
    dsrv.assert_alive()


def test_tcp_writes_split_at_every_offset(dsrv: DeflateServer) -> None:
    """A small compressed message in two fragments with a ping between them, the bytes split
    across two TCP writes at every offset (each message from a fresh compressor, so the bytes
    are the same every time; the server keeps its context, which a fresh stream never uses)."""
    msg = "tiny ✓ message, tiny ✓ message".encode()
    data = deflate(msg)
    with dsrv.peer() as p:
        p.raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        wire = _two_fragments_and_a_ping(data, len(data) // 2)
        for cut in range(1, len(wire)):
            wire = _two_fragments_and_a_ping(data, len(data) // 2)
            p.send(wire[:cut])
            time.sleep(0.002)
            p.send(wire[cut:])
            assert p.read_frame() == Frame(True, 0, OP_PONG, b"in between"), cut
            assert p.recv() == (OP_TEXT, msg, False), cut   # short reply: sent uncompressed
    dsrv.assert_alive()


def test_byte_at_a_time(dsrv: DeflateServer) -> None:
    msg = TEXT.encode()
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    with dsrv.peer() as p:
        p.raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(2):
            wire = _two_fragments_and_a_ping(deflate(msg, comp), 7)
            for i in range(len(wire)):
                p.send(wire[i:i + 1])
                if i % 16 == 0:
                    time.sleep(0.001)
            assert p.read_frame() == Frame(True, 0, OP_PONG, b"in between")
            assert p.recv() == (OP_TEXT, msg, True)
    dsrv.assert_alive()


# --------------------------------------------------------------------------- context takeover

def test_context_takeover_shared_compressor(dsrv: DeflateServer) -> None:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    msgs = [f"message {i}: {TEXT}".encode() for i in range(30)]
    sizes = []
    with dsrv.peer() as p:
        for i, m in enumerate(msgs):
            data = deflate(m, comp)
            sizes.append(len(data))
            p.compressed(data, OP_TEXT if i % 2 else OP_BINARY)
            op, got, _c = p.recv()
            assert (op, got) == (OP_TEXT if i % 2 else OP_BINARY, m), i
            if i % 5 == 4:                    # uncompressed messages in between change nothing
                p.frame(b"plain " * 40, OP_BINARY)
                assert p.recv()[1] == b"plain " * 40
    assert max(sizes[1:]) < sizes[0] // 3, sizes  # later messages did lean on earlier ones
    dsrv.assert_alive()


def test_client_no_context_takeover_fresh_compressor_each(dsrv: DeflateServer) -> None:
    """Negotiated client_no_context_takeover; two such connections interleaved (the server
    inflates their messages with one shared, reset stream)."""
    offer = "permessage-deflate; client_no_context_takeover"
    with dsrv.peer(offer) as a, dsrv.peer(offer) as b:
        for p in (a, b):
            assert "client_no_context_takeover" in p.headers["sec-websocket-extensions"]
        for i in range(20):
            p = a if i % 2 else b
            m = f"{i} {'a' if p is a else 'b'}: {TEXT}".encode()
            data = deflate(m)
            if i % 3 == 0:                     # sometimes fragmented
                p.frame(data[:9], OP_TEXT, fin=False, rsv=RSV1)
                p.frame(data[9:], OP_CONT)
            else:
                p.compressed(data)
            assert p.recv()[1] == m, i
    dsrv.assert_alive()


# --------------------------------------------------------------------------- edge payloads

@pytest.mark.parametrize("payload", [b"", b"\x00"], ids=["zero-length", "empty-stored-block"])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_empty_compressed_payload_is_an_empty_message(dsrv: DeflateServer, payload: bytes,
                                                      opcode: int) -> None:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    with dsrv.peer() as p:
        p.compressed(deflate(TEXT.encode(), comp))
        assert p.recv()[1] == TEXT.encode()
        p.compressed(payload, opcode)
        assert p.read_frame() == Frame(True, 0, opcode, b"")   # empty: sent back plain
        assert dsrv.next("msg") is True
        assert dsrv.next("msg") is True
        # the context survives the empty message
        p.compressed(deflate(TEXT.encode(), comp))
        assert p.recv()[1] == TEXT.encode()
        # and an empty message in fragments (RSV1 on the first, all empty)
        p.frame(b"", opcode, fin=False, rsv=RSV1)
        p.frame(b"", OP_CONT, fin=False)
        p.frame(payload, OP_CONT, fin=True)
        assert p.read_frame() == Frame(True, 0, opcode, b"")
    dsrv.assert_alive()


def test_final_block_bfinal_is_decoded(dsrv: DeflateServer) -> None:
    """A peer that ends each message's stream (Z_FINISH: BFINAL=1, no tail to strip): the
    server restarts its inflater after the end of a stream."""
    with dsrv.peer() as p:
        for i in range(4):
            m = f"final {i}: {TEXT}".encode()
            p.compressed(deflate_final(m))
            assert p.recv()[1] == m, i
        # fragmented, and then a sync-flushed message on a fresh stream
        data = deflate_final(TEXT.encode())
        p.frame(data[:4], OP_BINARY, fin=False, rsv=RSV1)
        p.frame(data[4:], OP_CONT)
        assert p.recv()[1] == TEXT.encode()
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        for _ in range(2):
            p.compressed(deflate(TEXT.encode(), comp))
            assert p.recv()[1] == TEXT.encode()
        # BFINAL on an empty stream too
        p.compressed(deflate_final(b""), OP_BINARY)
        assert p.recv() == (OP_BINARY, b"", False)
    dsrv.assert_alive()


# --------------------------------------------------------------------------- the server's replies

@pytest.mark.parametrize("size,compressed", [
    (0, False), (1, False), (127, False), (128, True), (129, True), (5000, True),
])
def test_reply_compressed_only_from_the_threshold(dsrv: DeflateServer, size: int,
                                                  compressed: bool) -> None:
    msg = (b"x" * size)
    with dsrv.peer() as p:
        p.compressed(deflate(msg), OP_BINARY)
        f = p.read_frame()
        assert f.fin and f.opcode == OP_BINARY
        assert f.rsv == (RSV1 if compressed else 0), (size, f.rsv)
        body = p.inflater.decompress(f.payload + TAIL) if f.rsv else f.payload
        assert body == msg
        if compressed and size > 200:
            assert len(f.payload) < size // 4
    dsrv.assert_alive()


def test_reply_fragments_rsv1_on_first_frame_only(dsrv: DeflateServer) -> None:
    body = (TEXT * 20).encode()
    with dsrv.peer() as p:
        for n in (2, 5, 9):
            p.compressed(deflate(b"FRAG:%d:" % n + body), OP_BINARY)
            size = -(-len(body) // n)
            count = len(range(0, len(body), size))
            frames: List[Frame] = []
            for _ in range(count):
                frames.append(p.read_frame())
            assert count > 1
            assert [f.opcode for f in frames] == [OP_BINARY] + [OP_CONT] * (count - 1)
            assert [f.fin for f in frames] == [False] * (count - 1) + [True]
            assert [f.rsv for f in frames] == [RSV1] + [0] * (count - 1), n
            got = p.inflater.decompress(b"".join(f.payload for f in frames) + TAIL)
            assert got == body
            ping = p.read_frame()                  # RSV bits on control frames: read_frame
            assert ping == Frame(True, 0, OP_PING, b"after")
        # our own ping between messages: the pong carries no RSV bit
        p.frame(b"hi", OP_PING)
        assert p.read_frame() == Frame(True, 0, OP_PONG, b"hi")
        # the close frame neither
        p.frame(close_payload(1000), OP_CLOSE)
        p.expect_close(1000)
    dsrv.assert_alive()


def test_replies_keep_the_servers_context(dsrv: DeflateServer) -> None:
    """The server keeps its compressor's context between messages (no server_no_context_
    takeover asked): its second identical reply is a back-reference that only an inflater
    kept for the connection can decode."""
    msg = TEXT.encode()
    with dsrv.peer() as p:
        p.compressed(deflate(msg))
        f1 = p.read_frame()
        p.compressed(deflate(msg))
        f2 = p.read_frame()
        assert f1.rsv == f2.rsv == RSV1
        assert len(f2.payload) < len(f1.payload) // 3
        assert p.inflater.decompress(f1.payload + TAIL) == msg
        assert p.inflater.decompress(f2.payload + TAIL) == msg
        with pytest.raises(zlib.error):
            zlib.decompressobj(-15).decompress(f2.payload + TAIL)
    # asked for server_no_context_takeover, each reply stands alone
    with dsrv.peer("permessage-deflate; server_no_context_takeover") as p:
        assert "server_no_context_takeover" in p.headers["sec-websocket-extensions"]
        for _ in range(3):
            p.compressed(deflate(msg))
            f = p.read_frame()
            assert f.rsv == RSV1
            assert zlib.decompressobj(-15).decompress(f.payload + TAIL) == msg
    dsrv.assert_alive()


def test_close_after_compressed_traffic_has_no_rsv(dsrv: DeflateServer) -> None:
    with dsrv.peer() as p:
        p.compressed(deflate(TEXT.encode()))
        assert p.recv()[2] is True
        p.compressed(b"\x06")
        # read_frame asserts no RSV bit on the close frame
        p.expect_close(1007)
    dsrv.assert_alive()
