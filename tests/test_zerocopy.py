"""Large received messages reach handlers as a pyws.MessageView: a read-only view of the C
loop's receive buffer, no copy. What is checked here, over real sockets (websocket-client as
the peer, the Manager polled on the test's thread so that each poll is under the test's
control):

- which messages are views (view_threshold) and that echo / forward patterns send them right;
- the lifetime: a view used after its handler returned raises, after more polls that refilled
  the buffers it pointed into, and a slice kept past the handler still reads its own bytes
  (pyws kept that memory), in the arena, an assembled (fragmented) message's buffer and an
  inflated (permessage-deflate) one;
- that the callback path makes no Python copy of a large payload (tracemalloc);
- detach(), bytes(msg), .text, .json() and the queues that keep messages past a batch;
- large messages: the rest of a large frame is read straight into the message buffer (frames
  cut at every kind of boundary, fragmented, over plain TCP and TLS), and echoing a view hands
  that buffer to the write queue instead of copying it: the view still reads its own bytes
  after the send (and after an abort), the next messages reuse the memory without disturbing
  the echo, and a slice kept past the handler gets the buffer back from the queue.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from typing import Any, Callable, Dict, List, Optional

import pytest
import websocket

import pyws
from pyws import EV_HTTP_MSG, EV_WS_MSG

KIB = 1024


class Peer:
    """A Manager polled here and one websocket-client connection driven from a thread by a
    script of steps; ``run()`` polls until the script has finished."""

    def __init__(self, handler: Callable[[pyws.Connection, int, Any], None],
                 **options: Any) -> None:
        def h(conn: pyws.Connection, ev: int, data: Any) -> None:
            if ev == EV_HTTP_MSG:
                conn.ws_upgrade(data)
            else:
                handler(conn, ev, data)

        self.mgr = pyws.Manager(h, **options)
        self.port = self.mgr.listen("http://127.0.0.1:0").port
        self.ws: Optional[websocket.WebSocket] = None
        self.error: Optional[BaseException] = None

    def connect(self, **kw: Any) -> None:
        done: List[websocket.WebSocket] = []
        t = threading.Thread(target=lambda: done.append(websocket.create_connection(
            f"ws://127.0.0.1:{self.port}/", timeout=10, **kw)))
        t.start()
        self._poll_while(t)
        assert done, "the client did not connect"
        self.ws = done[0]

    def _poll_while(self, t: threading.Thread, limit: float = 20.0) -> None:
        end = time.monotonic() + limit
        while t.is_alive() and time.monotonic() < end:
            self.mgr.poll(5)
        t.join(1)
        assert not t.is_alive(), "the client script did not finish"

    def run(self, script: Callable[[websocket.WebSocket], Any]) -> Any:
        """Run ``script(ws)`` on a thread, polling until it returns; return its result."""
        out: List[Any] = []

        def go() -> None:
            try:
                out.append(script(self.ws))
            except BaseException as e:  # reported on the test's thread
                self.error = e

        t = threading.Thread(target=go)
        t.start()
        self._poll_while(t)
        if self.error is not None:
            raise self.error
        return out[0] if out else None

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close(timeout=0.2)
        self.mgr.close()


@pytest.fixture
def peer_factory() -> Any:
    made: List[Peer] = []

    def make(handler: Callable[[pyws.Connection, int, Any], None], **options: Any) -> Peer:
        p = Peer(handler, **options)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def echo_data(conn: pyws.Connection, ev: int, data: Any) -> None:
    """The README's callback echo."""
    if ev == EV_WS_MSG:
        conn.ws_send(data.data, data.opcode)


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(256)) * (n // 256) + b"z" * (n % 256)


def test_large_messages_are_views_small_ones_bytes(peer_factory: Any) -> None:
    seen: List[Any] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_WS_MSG:
            seen.append((type(data), type(data.data), len(data),
                         isinstance(data.data, memoryview) and data.data.readonly))
            conn.ws_send(data.data, data.opcode)

    p = peer_factory(handler)
    p.connect()
    sizes = [10, 16 * KIB - 1, 16 * KIB, 64 * KIB, 1024 * KIB]

    def script(ws: websocket.WebSocket) -> List[bool]:
        ok = []
        for n in sizes:
            ws.send_binary(pattern(n, n))
            ok.append(ws.recv() == pattern(n, n))
        return ok

    assert p.run(script) == [True] * len(sizes)
    assert seen == [
        (pyws.Message, bytes, 10, False),
        (pyws.Message, bytes, 16 * KIB - 1, False),
        (pyws.MessageView, memoryview, 16 * KIB, True),
        (pyws.MessageView, memoryview, 64 * KIB, True),
        (pyws.MessageView, memoryview, 1024 * KIB, True),
    ]


@pytest.mark.parametrize("threshold, kinds", [(None, [bytes, bytes]), (100, [bytes, memoryview]),
                                              (1, [memoryview, memoryview])])
def test_view_threshold_option(peer_factory: Any, threshold: Optional[int],
                               kinds: List[type]) -> None:
    seen: List[type] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_WS_MSG:
            seen.append(type(data.data))
            conn.send(data)

    p = peer_factory(handler, view_threshold=threshold)
    p.connect()
    assert p.run(lambda ws: [(ws.send_binary(b"x" * 99), ws.recv())[1],
                             (ws.send_binary(b"y" * 100), ws.recv())[1]]) == [b"x" * 99,
                                                                                b"y" * 100]
    assert seen == kinds


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "16k"])
def test_view_threshold_bad_values(bad: Any) -> None:
    with pytest.raises(ValueError, match="view_threshold must be None"):
        pyws.Manager(None, view_threshold=bad)


def test_every_send_pattern_echoes_a_view(peer_factory: Any) -> None:
    """conn.ws_send(data.data, op), conn.send(msg), conn.send(msg.data), text kept as text."""
    ways = ["ws_send", "send_msg", "send_data_binary", "send_text"]
    state = {"i": 0}

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev != EV_WS_MSG:
            return
        assert isinstance(data, pyws.MessageView)
        way = ways[state["i"] % len(ways)]
        state["i"] += 1
        if way == "ws_send":
            conn.ws_send(data.data, data.opcode)
        elif way == "send_msg":
            conn.send(data)
        elif way == "send_data_binary":
            conn.send(data.data)  # a memoryview: binary
        else:
            conn.send(data.text)

    p = peer_factory(handler)
    p.connect()
    text = "héllo wörld ✓ 🌍 " * 4000

    def script(ws: websocket.WebSocket) -> List[Any]:
        got = []
        for _ in ways:
            ws.send(text)
            op, payload = ws.recv_data()
            got.append((op, payload.decode("utf-8") == text))
        return got

    assert p.run(script) == [(1, True), (1, True), (2, True), (1, True)]


def test_a_view_used_after_its_handler_raises_after_more_polls(peer_factory: Any) -> None:
    kept: Dict[str, Any] = {}

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_WS_MSG:
            if "msg" not in kept:
                kept["msg"] = data
                kept["view"] = data.data
                kept["text_during"] = data.text[:5]
            conn.ws_send(data.data, data.opcode)

    p = peer_factory(handler)
    p.connect()
    first = "A" * (64 * KIB)
    p.run(lambda ws: (ws.send(first), ws.recv()))
    # more traffic through the same buffers: the arena is reused by these polls
    p.run(lambda ws: [(ws.send("B" * (64 * KIB)), ws.recv()) for _ in range(20)])
    msg, view = kept["msg"], kept["view"]
    assert kept["text_during"] == "AAAAA"
    assert msg.expired
    for use in (lambda: msg.data, lambda: bytes(msg), lambda: msg.text, lambda: msg.json(),
                lambda: len(msg), lambda: msg.detach()):
        with pytest.raises(ValueError, match=r"msg\.detach\(\)"):
            use()
    for use in (lambda: bytes(view), lambda: view[0], lambda: len(view), lambda: view.tobytes(),
                lambda: memoryview(view)):
        with pytest.raises(ValueError, match="released"):
            use()
    assert "expired" in repr(msg)


@pytest.mark.parametrize("how", ["arena", "assembled", "inflated", "handed-over"])
def test_a_kept_slice_never_reads_reused_memory(how: str, caplog: Any) -> None:
    """A slice of the view kept past the handler: its bytes stay those of its message while
    later messages refill the arena / assembly buffers, and the memory is freed once the slice
    is gone. Peer: the websockets sync client (fragments, permessage-deflate). handed-over: a
    1 MiB message, whose buffer the echo gave to the write queue: the slice takes it back (the
    queue writes a copy)."""
    from websockets.sync.client import connect

    kept: List[memoryview] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            if not kept:
                kept.append(data.data[100:200])
                kept.append(data.data.cast("c")[:10])
            conn.ws_send(data.data, data.opcode)

    mgr = pyws.Manager(handler, compression="deflate" if how == "inflated" else None)
    port = mgr.listen("http://127.0.0.1:0").port
    n = 1024 * KIB if how == "handed-over" else 64 * KIB
    first = pattern(n, 1)
    step = threading.Event()
    done = threading.Event()
    results: List[Any] = []

    def client() -> None:
        try:
            with connect(f"ws://127.0.0.1:{port}/", max_size=None,
                         compression="deflate" if how == "inflated" else None) as ws:
                if how == "assembled":  # three frames: put together in the session's buffer
                    ws.send([first[:1000], first[1000:30000], first[30000:]])
                else:
                    ws.send(first)
                results.append(ws.recv() == first)
                step.set()
                for seed in range(2, 8):
                    for _ in range(4):
                        m = pattern(n, seed)
                        ws.send(m)
                        results.append(ws.recv() == m)
        finally:
            done.set()

    t = threading.Thread(target=client)
    with caplog.at_level("WARNING", logger="pyws"):
        t.start()
        end = time.monotonic() + 20
        while not done.is_set() and time.monotonic() < end:
            mgr.poll(5)
            if step.is_set():  # every poll after the first echo: the slices stay right
                assert bytes(kept[0]) == first[100:200]
                assert bytes(kept[1]) == first[:10]
    t.join(5)
    try:
        assert results == [True] * 25
        assert "outlived its handler" in caplog.text
        keeper = mgr._keeper
        assert bytes(kept[0]) == first[100:200] and bytes(kept[1]) == first[:10]
        assert not keeper.dead  # still in use
        kept.clear()
        gc.collect()
        assert keeper.dead  # freed at the next poll, never in the middle of a batch
        mgr.poll(0)
        assert not keeper.dead
    finally:
        mgr.close()


def test_closing_the_manager_inside_a_handler_releases_the_view(peer_factory: Any) -> None:
    kept: Dict[str, Any] = {}

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_WS_MSG:
            kept["view"] = data.data
            kept["slice"] = data.data[:4]
            conn._mgr.close()
            kept["after"] = data.expired

    p = peer_factory(handler)
    p.connect()
    payload = b"WXYZ" + b"q" * (32 * KIB)
    t = threading.Thread(target=lambda: p.ws.send_binary(payload))
    t.start()
    end = time.monotonic() + 10
    while p.mgr._loop is not None and time.monotonic() < end:
        p.mgr.poll(5)
    t.join(5)
    assert kept["after"] is True
    with pytest.raises(ValueError):
        bytes(kept["view"])
    assert bytes(kept["slice"]) == b"WXYZ"  # its memory went to the slice, not back to C
    del kept["slice"]
    gc.collect()
    assert not p.mgr._keeper.dead  # freed at once: the manager is closed


def test_detach_text_json_bytes_inside_the_handler(peer_factory: Any) -> None:
    kept: Dict[str, Any] = {}
    doc = {"k": "v" * (40 * KIB), "n": [1, 2, 3]}

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_WS_MSG:
            kept["detached"] = data.detach()
            kept["bytes"] = bytes(data)
            kept["json"] = data.json()
            kept["eq"] = data == pyws.Message(json.dumps(doc).encode(), pyws.OP_TEXT)
            kept["hash"] = hash(data) == hash((pyws.OP_TEXT, json.dumps(doc).encode()))
            kept["startswith"] = data.data[:2] == b'{"'
            conn.send("ok")

    p = peer_factory(handler)
    p.connect()
    assert p.run(lambda ws: (ws.send(json.dumps(doc)), ws.recv())[1]) == "ok"
    d = kept["detached"]
    assert type(d) is pyws.Message and type(d.data) is bytes
    assert d.text == json.dumps(doc) and d.json() == doc and d.detach() is d
    assert kept["bytes"] == json.dumps(doc).encode()
    assert kept["json"] == doc and kept["eq"] and kept["hash"] and kept["startswith"]


CLIENT = """
import sys, websocket
ws = websocket.create_connection(sys.argv[1], timeout=10)
sys.stdin.readline()
n = int(sys.argv[2])
ws.send_binary(b"m" * n)
assert ws.recv() == b"m" * n
ws.close()
"""


def test_no_python_copy_of_a_large_payload() -> None:
    """tracemalloc sees every Python allocation of this process (the client is another
    process): echoing a 1 MiB message with the callback echo allocates nothing near its size
    (with view_threshold=None, the old path: one bytes object of 1 MiB)."""
    size = 1024 * KIB
    peaks: List[int] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)

    for threshold in (None, 16 * KIB):  # bytes (the old path) then views
        mgr = pyws.Manager(handler, view_threshold=threshold, max_message_size=4 * size)
        port = mgr.listen("http://127.0.0.1:0").port
        proc = subprocess.Popen([sys.executable, "-c", CLIENT, f"ws://127.0.0.1:{port}/",
                                 str(size)], stdin=subprocess.PIPE, text=True)
        try:
            end = time.monotonic() + 10
            while not mgr.connections and time.monotonic() < end:
                mgr.poll(5)
            while not any(c.is_websocket for c in mgr.connections) and \
                    time.monotonic() < end:
                mgr.poll(5)
            tracemalloc.start()
            try:
                proc.stdin.write("go\n")
                proc.stdin.flush()
                while proc.poll() is None and time.monotonic() < end:
                    mgr.poll(5)
                peaks.append(tracemalloc.get_traced_memory()[1])
            finally:
                tracemalloc.stop()
            assert proc.wait(5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            mgr.close()
    assert peaks[0] >= size  # the copy the bytes path makes: the method sees it
    assert peaks[1] < size // 4, peaks


def echoes_from_app(app: pyws.App, sends: List[Any], timeout: float) -> List[Any]:
    """Send each of ``sends`` (bytes as binary, str as text) to ``app`` listening on a free
    port, from a websocket-client peer on a thread, while this thread polls the App; return
    the replies, one per message sent. The App is closed after."""
    port = app.listen("127.0.0.1", 0).port
    out: List[Any] = []

    def client() -> None:
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=10)
        for m in sends:
            if isinstance(m, bytes):
                ws.send_binary(m)
            else:
                ws.send(m)
        out.extend(ws.recv() for _ in sends)
        ws.close()

    t = threading.Thread(target=client)
    t.start()
    end = time.monotonic() + timeout
    while t.is_alive() and time.monotonic() < end:
        app.poll(5)
    t.join(1)
    app.mgr.close()
    return out


def test_generator_echo_and_queued_messages(peer_factory: Any) -> None:
    """The generator App: ws.send(msg) of a view, and messages that arrive while the handler
    is busy elsewhere (queued past the batch: detached, still right)."""
    app = pyws.App()
    seen: List[Any] = []

    @app.websocket("/")
    def echo(ws: pyws.WebSocket) -> Any:
        first = yield ws.recv()
        seen.append(type(first))
        ws.send(first)
        yield ws.sleep(0.3)  # the next messages queue meanwhile
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            seen.append(type(msg))
            ws.send(msg)

    msgs = [pattern(40 * KIB, s) for s in range(4)]
    assert echoes_from_app(app, msgs, timeout=15) == msgs
    assert seen[0] is pyws.MessageView
    assert len(seen) == 4 and all(issubclass(k, pyws.Message) for k in seen)


def test_blocking_client_keeps_large_messages(peer_factory: Any) -> None:
    """pyws.connect reads messages after poll() returned: they are detached."""
    p = peer_factory(echo_data)
    big = pattern(200 * KIB, 9)
    out: List[Any] = []

    def client() -> None:
        with pyws.connect(f"ws://127.0.0.1:{p.port}/") as c:
            c.send(big)
            c.send(big[:100])
            out.append(c.recv())
            out.append(c.recv())

    t = threading.Thread(target=client)
    t.start()
    end = time.monotonic() + 15
    while t.is_alive() and time.monotonic() < end:
        p.mgr.poll(5)
    t.join(1)
    assert [bytes(m.data) if hasattr(m, "data") else m for m in out] == [big, big[:100]]


# ------------------------------------------------------------------------------ large messages


def _masked_frame(op: int, payload: bytes, fin: bool = True, seed: int = 0) -> bytes:
    """A client frame (masked), built here: header and masked payload."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | op
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    key = bytes([(seed * 37 + i * 11 + 1) & 0xFF for i in range(4)])
    mask = (key * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(
        n, "little") if n else b""
    return head + key + body


def _recv_exact(sock: Any, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(min(n - len(out), 1 << 20))
        if not chunk:
            raise EOFError(f"EOF after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def _recv_frame(sock: Any) -> Any:
    b0, b1 = _recv_exact(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", _recv_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", _recv_exact(sock, 8))[0]
    return b0 & 0x0F, _recv_exact(sock, n)


class ViewEcho:
    """Echo each message's view with conn.ws_send, then check that the view still reads the
    bytes it had before the send (the write queue took its buffer over)."""

    def __init__(self) -> None:
        self.bad: List[str] = []
        self.views = 0
        self.copied: List[int] = []  # sizes of the large echoes the queue holds a copy of
        self.checked = 0
        # set while one message at a time is in flight: with two, the next message's first
        # bytes may come in the read that ends this one, and then its buffer is retired (the
        # session starts the next one in a fresh buffer) and the echo copies it
        self.check = threading.Event()

    def __call__(self, conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            before = hashlib.sha256(data.data).digest()
            mem = conn.memory
            conn.ws_send(data.data, data.opcode)
            if isinstance(data, pyws.MessageView):
                self.views += 1
            n = len(data)
            if n >= 256 * KIB and self.check.is_set():
                self.checked += 1
                if conn.memory - mem >= n // 2:
                    # the queue holds a copy besides the session's buffer: not handed over
                    self.copied.append(n)
            if hashlib.sha256(data.data).digest() != before:
                self.bad.append(f"the view of {len(data)} bytes changed after the send")


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_large_frames_cut_at_every_kind_of_boundary(tls: bool, tmp_path: Any) -> None:
    """Large masked frames arriving in pieces (a header cut in two, a header alone, payload
    pieces of odd sizes, the last piece carrying the next frame's header), fragmented ones with
    a ping between the fragments, text cut inside characters, and two messages in one write:
    every echo right, over plain TCP and over TLS (where reads go through OpenSSL)."""
    handler = ViewEcho()
    mgr = pyws.Manager(handler, max_message_size=8 << 20)
    ctx: Optional[ssl.SSLContext] = None
    if tls:
        from _pki import make_pki

        pki = make_pki(tmp_path)
        port = mgr.listen("https://127.0.0.1:0",
                          tls=pyws.TlsOpts(cert=pki.server_cert, key=pki.server_key)).port
        ctx = ssl.create_default_context(cafile=pki.ca_cert)
    else:
        port = mgr.listen("http://127.0.0.1:0").port
    big = pattern(700 * KIB + 3, 5)
    text = ("zé€😀" * 70000).encode()  # 280000 bytes, characters of 1 to 4 bytes
    # (pieces to write, each followed by a pause; the messages they make)
    f1 = _masked_frame(2, big, seed=1)
    f2 = _masked_frame(1, text, seed=2)
    frag = [_masked_frame(1, text[:100001], fin=False, seed=3),
            _masked_frame(9, b"ping between", seed=4),
            _masked_frame(0, text[100001:100003], fin=False, seed=5),
            _masked_frame(0, text[100003:], seed=6)]
    f3 = _masked_frame(2, big[:300000], seed=7)
    f4 = _masked_frame(2, big[300000:], seed=8)
    writes = [f1[:1], f1[1:5], f1[5:14], f1[14:1014], f1[1014:70000], f1[70000:] + f2[:3],
              f2[3:14], f2[14:200001], f2[200001:],
              frag[0][:14], frag[0][14:] + frag[1] + frag[2][:7], frag[2][7:] + frag[3][:99],
              frag[3][99:],
              f3 + f4]
    expect = [(2, big), (1, text), (10, None), (1, text), (2, big[:300000]), (2, big[300000:])]
    got: List[Any] = []
    errors: List[BaseException] = []

    def client() -> None:
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock: Any = ctx.wrap_socket(raw, server_hostname="localhost") if ctx else raw
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(1)
            assert head.startswith(b"HTTP/1.1 101"), head
            for w in writes:
                sock.sendall(w)
                time.sleep(0.01)
            for _ in expect:
                got.append(_recv_frame(sock))
            sock.close()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=client)
    t.start()
    end = time.monotonic() + 30
    try:
        while t.is_alive() and time.monotonic() < end:
            mgr.poll(5)
        t.join(1)
    finally:
        mgr.close()
    assert not errors, errors
    # the pong goes out as the ping is read: maybe ahead of the echo of a message before it
    assert (10, b"ping between") in got
    data = [(op, payload) for op, payload in got if op != 10]
    assert [op for op, _ in data] == [op for op, want in expect if want is not None]
    for (op, payload), want in zip(data, [w for _, w in expect if w is not None]):
        assert payload == want
    assert handler.bad == []
    assert handler.views == 5


def test_an_echoed_view_then_the_next_messages_reuse_its_memory(peer_factory: Any) -> None:
    """Messages of several large sizes, two in flight: each echo's buffer goes to the write
    queue, comes back to the loop's cache once written, and the next messages are assembled in
    it; every echo has its own bytes, and an idle connection keeps no large buffer."""
    handler = ViewEcho()
    p = peer_factory(lambda c, e, d: handler(c, e, d), max_message_size=8 << 20)
    p.connect()
    sizes = [1024 * KIB, 1024 * KIB, 200 * KIB, 3072 * KIB, 70 * KIB, 1024 * KIB, 65 * KIB,
             2048 * KIB]
    msgs = [pattern(n, i) for i, n in enumerate(sizes * 2)]

    def script(ws: websocket.WebSocket) -> List[bool]:
        ok = []
        for a, b in zip(msgs[::2], msgs[1::2]):
            ws.send_binary(a)
            ws.send_binary(b)
            ok.append(ws.recv() == a)
            ok.append(ws.recv() == b)
        handler.check.set()
        for m in msgs[:len(sizes)]:
            ws.send_binary(m)
            ok.append(ws.recv() == m)
        return ok

    assert p.run(script) == [True] * (len(msgs) + len(sizes))
    assert handler.bad == []
    assert handler.checked == 5 and handler.copied == []  # the buffers went to the queue
    assert handler.views == len(msgs) + len(sizes)
    for _ in range(3):
        p.mgr.poll(0)
    conn = next(iter(p.mgr._conns.values()))
    assert conn.memory < 256 * KIB, conn.memory


def test_a_view_reads_its_bytes_after_the_connection_is_aborted(peer_factory: Any) -> None:
    """The echo gave the buffer to the write queue and the handler then aborts the connection
    (freeing its queue): the view still reads its own bytes until the handler returns."""
    seen: List[bool] = []
    payload = pattern(1024 * KIB, 3)

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)
            conn.abort()
            seen.append(bytes(data.data) == payload)

    p = peer_factory(handler, max_message_size=8 << 20)
    p.connect()

    def script(ws: websocket.WebSocket) -> None:
        ws.send_binary(payload)
        try:
            ws.recv()
        except Exception:
            pass

    p.run(script)
    for _ in range(3):
        p.mgr.poll(0)
    assert seen == [True]


def test_generator_echo_of_large_views() -> None:
    """The generator App's ws.send(msg) hands the buffer over too; the message still reads its
    own bytes after the send."""
    app = pyws.App(max_message_size=8 << 20)
    bad: List[int] = []

    @app.websocket("/")
    def echo(ws: pyws.WebSocket) -> Any:
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            before = hashlib.sha256(msg.data).digest()
            ws.send(msg)
            if hashlib.sha256(msg.data).digest() != before:
                bad.append(len(msg))

    msgs: List[Any] = [pattern(n, i) for i, n in
                       enumerate([1024 * KIB, 300 * KIB, 1024 * KIB, 2048 * KIB])]
    msgs.append("é✓" * 200000)
    assert echoes_from_app(app, msgs, timeout=20) == msgs
    assert bad == []
