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
- detach(), bytes(msg), .text, .json() and the queues that keep messages past a batch.
"""
from __future__ import annotations

import gc
import json
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


@pytest.mark.parametrize("how", ["arena", "assembled", "inflated"])
def test_a_kept_slice_never_reads_reused_memory(how: str, caplog: Any) -> None:
    """A slice of the view kept past the handler: its bytes stay those of its message while
    later messages refill the arena / assembly buffers, and the memory is freed once the slice
    is gone. Peer: the websockets sync client (fragments, permessage-deflate)."""
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
    n = 64 * KIB
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

    port = app.listen("127.0.0.1", 0).port
    msgs = [pattern(40 * KIB, s) for s in range(4)]
    out: List[Any] = []

    def client() -> None:
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=10)
        for m in msgs:
            ws.send_binary(m)
        out.extend(ws.recv() for _ in msgs)
        ws.close()

    t = threading.Thread(target=client)
    t.start()
    end = time.monotonic() + 15
    while t.is_alive() and time.monotonic() < end:
        app.poll(5)
    t.join(1)
    app.mgr.close()
    assert out == msgs
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
