"""The blocking driver: plain ``def handler(ws)`` handlers run in the App's bounded thread pool
with a blocking ``ws`` (pyws/threaded.py), while the loop thread goes on serving everything
else. Real clients over real sockets: websockets (asyncio) for the 200-connection load,
websocket-client for the blocking ones, raw sockets where the HTTP answer itself is checked.

"The loop is not blocked" is shown by what a generator handler on the same App does meanwhile:
its echo answers in a small fraction of the time the threads are busy or asleep, never by a
speed claim (those live in bench/)."""
from __future__ import annotations

import asyncio
import functools
import logging
import queue
import socket
import statistics
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import websocket
import websockets

import pyws

from _frames import OP_CLOSE, OP_TEXT, RSV1, close_payload, frame
from _rawws import RawWS, handshake_request
from conftest import AppServer, serving
from test_app import recv_close, wait_for


def gen_echo(app: pyws.App, path: str = "/gen") -> None:
    @app.websocket(path)
    def gen(ws: pyws.WebSocket) -> Any:
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            ws.send(msg)


def thread_echo(app: pyws.App, path: str = "/echo") -> None:
    @app.websocket(path)
    def echo(ws: Any) -> None:
        while True:
            msg = ws.recv()
            if msg is None:
                return
            ws.send(msg)


def connect(srv: AppServer, path: str, **kw: Any) -> websocket.WebSocket:
    return websocket.create_connection(srv.url(path), timeout=10, **kw)


def round_trips(c: websocket.WebSocket, n: int, pause: float = 0.0) -> List[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        c.send(f"p{i}")
        assert c.recv() == f"p{i}"
        out.append(time.perf_counter() - t0)
        if pause:
            time.sleep(pause)
    return out


def raw_upgrade(port: int, path: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(handshake_request(path))
    return s


def read_head(s: socket.socket, timeout: float) -> bytes:
    """What the server answered within ``timeout`` (b"" if nothing)."""
    s.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    return data


# --------------------------------------------------------------------------- the basics
def test_plain_function_recv_blocks_and_returns_messages(serve: Callable[..., AppServer]
                                                         ) -> None:
    """The issue's case: `msg = ws.recv()` in a plain function gave a Recv object."""
    app = pyws.App()
    seen: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/ws")
    def handler(ws: Any) -> None:
        seen.put((type(ws).__name__, threading.current_thread().name))
        while True:
            msg = ws.recv()
            if msg is None:
                seen.put(("end", ws.close_code))
                return
            seen.put(type(msg).__name__)
            ws.send_text(f"{msg.text}:{msg.is_text()}")

    srv = serve(app)
    c = connect(srv, "/ws")
    c.send("a")
    assert c.recv() == "a:True"
    c.send_binary(b"\x00\xff")
    assert c.recv() == "\x00\ufffd:False"
    c.close()
    name, thread = seen.get(timeout=5)
    assert name == "ThreadedWebSocket" and thread.startswith("pyws-handler-")
    assert [seen.get(timeout=5) for _ in range(3)] == ["Message", "Message", ("end", 1000)]


def test_flask_sock_style_echo(serve: Callable[..., AppServer], caplog: Any) -> None:
    """flask-sock's idiom runs unchanged: receive() gives the payload (str or bytes) and
    raises ConnectionClosed once the client has gone, which ends the handler quietly."""
    app = pyws.App()

    @app.websocket("/echo")
    def echo(ws):  # type: ignore[no-untyped-def]
        while True:
            data = ws.receive()
            ws.send(data)

    srv = serve(app)
    with caplog.at_level(logging.WARNING, logger="pyws"):
        c = connect(srv, "/echo")
        c.send("héllo")
        assert c.recv() == "héllo"
        c.send_binary(b"\x01\x02")
        assert c.recv_data() == (websocket.ABNF.OPCODE_BINARY, b"\x01\x02")
        c.close()
        time.sleep(0.2)
        srv.call(lambda: None)
    assert "raised" not in caplog.text


def test_recv_timeout_raises_and_receive_timeout_gives_none(
        serve: Callable[..., AppServer]) -> None:
    app = pyws.App()
    out: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/t")
    def timed(ws: Any) -> None:
        t0 = time.monotonic()
        try:
            ws.recv(timeout=0.3)
        except TimeoutError as exc:
            out.put(("recv", str(exc), time.monotonic() - t0))
        t0 = time.monotonic()
        out.put(("receive", ws.receive(timeout=0.2), time.monotonic() - t0))
        ws.send_text("still open")
        msg = ws.recv(timeout=5)
        ws.send_text(f"got {msg.text}")

    srv = serve(app)
    c = connect(srv, "/t")
    kind, text, waited = out.get(timeout=5)
    assert kind == "recv" and "no message within 0.3 s" in text and waited >= 0.29
    kind, value, waited = out.get(timeout=5)
    assert kind == "receive" and value is None and waited >= 0.19
    assert c.recv() == "still open"
    c.send("late")
    assert c.recv() == "got late"
    assert recv_close(c)[0] == 1000


def test_handler_exception_closes_1011_with_traceback(serve: Callable[..., AppServer],
                                                     caplog: Any) -> None:
    app = pyws.App()

    @app.websocket("/boom")
    def boom(ws: Any) -> None:
        msg = ws.recv()
        raise ValueError(f"threaded failure on {msg.text}")

    srv = serve(app)
    with caplog.at_level(logging.ERROR, logger="pyws"):
        c = connect(srv, "/boom")
        c.send("x")
        assert recv_close(c) == (1011, "internal error")
        c.close()
        wait_for(lambda: "threaded failure on x" in caplog.text)
    assert "WebSocket handler for /boom raised; closing with 1011" in caplog.text
    assert "Traceback" in caplog.text and "in boom" in caplog.text


def test_returning_closes_1000_and_accept_reject_work_from_the_thread(
        serve: Callable[..., AppServer]) -> None:
    app = pyws.App()

    @app.websocket("/proto")
    def proto(ws: Any) -> None:
        offered = ws.request.headers.get("sec-websocket-protocol", "")
        ws.accept(protocol=offered.split(",")[0].strip(), headers={"X-Thread": "yes"})
        ws.send_text(f"{ws.subprotocol} {ws.connected}")

    @app.websocket("/no")
    def no(ws: Any) -> None:
        ws.reject(401, "who are you?")

    srv = serve(app)
    c = connect(srv, "/proto", subprotocols=["chat", "other"])
    assert c.getsubprotocol() == "chat" and c.getheaders()["x-thread"] == "yes"
    assert c.recv() == "chat True"
    assert recv_close(c)[0] == 1000
    with pytest.raises(websocket.WebSocketBadStatusException) as ei:
        connect(srv, "/no")
    assert ei.value.status_code == 401


def test_sends_and_topics_from_other_threads_and_from_the_loop(
        serve: Callable[..., AppServer]) -> None:
    """A threaded ws can be sent to from any thread and from the loop thread (a generator
    handler); subscribe/publish and app.publish work from handler threads."""
    app = pyws.App()
    registry: Dict[str, Any] = {}
    ready = threading.Event()

    @app.websocket("/sub")
    def sub(ws: Any) -> None:
        ws.subscribe("news")
        registry["sub"] = ws
        ready.set()
        for msg in ws:                       # iteration ends at the close
            ws.send_text("echo " + msg.text)

    @app.websocket("/pub")
    def pub(ws: Any) -> None:
        msg = ws.recv()
        n = ws.publish("news", "via ws.publish " + msg.text)
        m = app.publish("news", "via app.publish")
        ws.send_text(f"{n} {m} {app.subscribers('news')}")

    @app.websocket("/gen")
    def gen(ws: pyws.WebSocket) -> Any:
        msg = yield ws.recv()
        registry["sub"].send_text("from the loop: " + msg.text)  # on the loop thread: direct
        ws.send_text("done")

    srv = serve(app)
    s = connect(srv, "/sub")
    assert ready.wait(5)
    p = connect(srv, "/pub")
    p.send("x")
    assert p.recv() == "1 1 1"
    assert s.recv() == "via ws.publish x" and s.recv() == "via app.publish"
    with pytest.raises(pyws.WrongThreadError):   # app.* from other threads: as before
        app.publish("news", "from the test's thread")
    g = connect(srv, "/gen")
    g.send("y")
    assert g.recv() == "done" and s.recv() == "from the loop: y"
    t = threading.Thread(target=lambda: registry["sub"].send_text("from a plain thread"))
    t.start()
    t.join(5)
    assert s.recv() == "from a plain thread"
    s.send("z")
    assert s.recv() == "echo z"
    # blocking waits on the loop thread would stop every connection: refused, clearly
    with pytest.raises(pyws.PyWSError, match="called on the loop's thread"):
        srv.call(lambda: registry["sub"].recv())
    for c in (s, p, g):
        c.close()


def test_unread_messages_pause_reading_then_resume(serve: Callable[..., AppServer]) -> None:
    """Messages for a handler that is not reading wait in a bounded queue: past max_queue the
    connection is not read any more (TCP pushes back), and reading resumes as the handler
    catches up; nothing is lost or reordered."""
    app = pyws.App(max_queue=4)
    go = threading.Event()
    peak: List[int] = []
    got: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/slow")
    def slow(ws: Any) -> None:
        ws.accept()
        go.wait(10)
        peak.append(len(ws._queue))
        n = 0
        while True:
            msg = ws.recv(timeout=5)
            if msg is None:
                break
            assert msg.data == bytes([n % 256]) * 65536, n
            n += 1
            if n == 200:
                break
        got.put(n)

    srv = serve(app)
    c = connect(srv, "/slow")
    sender = threading.Thread(target=lambda: [c.send_binary(bytes([i % 256]) * 65536)
                                              for i in range(200)], daemon=True)
    sender.start()
    time.sleep(1.0)          # the client writes as fast as TCP lets it, the handler waits
    go.set()
    assert got.get(timeout=20) == 200
    sender.join(10)
    # after 1 s of 12.5 MiB offered: max_queue (4), plus what the last read held
    assert peak[0] <= 4 + 64, peak
    c.close()


def test_send_waits_while_above_high_water(serve: Callable[..., AppServer]) -> None:
    """A thread that sends faster than the peer reads waits in send() (backpressure) instead
    of filling the write buffer up to write_limit. (64 MiB: more than the kernel's socket
    buffers on both ends take.)"""
    high, size, count = 256 * 1024, 512 * 1024, 128
    app = pyws.App(write_high_water=high, write_limit=256 * 1024 * 1024,
                   compression=None)
    sent: List[int] = []
    sizes: List[int] = []

    @app.websocket("/flood")
    def flood(ws: Any) -> None:
        for i in range(count):
            ws.send_bytes(b"x" * size)
            sent.append(i)
            sizes.append(ws.write_buffer_size)

    srv = serve(app)
    c = connect(srv, "/flood")
    time.sleep(1.0)            # not reading yet
    stalled = len(sent)
    assert stalled < count, "send() did not wait for the buffer to drain"
    for _ in range(count):
        assert len(c.recv_data()[1]) == size
    wait_for(lambda: len(sent) == count)
    assert max(sizes) <= high + size, max(sizes)
    c.close()


# --------------------------------------------------------------------------- the pool
def test_full_pool_queues_then_answers_503_with_a_log_line(serve: Callable[..., AppServer],
                                                           caplog: Any) -> None:
    app = pyws.App(threads=2, thread_queue=1, thread_queue_timeout=60)
    thread_echo(app)
    gen_echo(app)
    srv = serve(app)
    with caplog.at_level(logging.WARNING, logger="pyws"):
        busy = [connect(srv, "/echo") for _ in range(2)]
        for i, c in enumerate(busy):      # both handlers are running (accepted at recv)
            c.send(f"b{i}")
            assert c.recv() == f"b{i}"
        queued = raw_upgrade(srv.port, "/echo")
        assert read_head(queued, 0.5) == b""  # waits for a thread: no answer yet
        wait_for(lambda: "the upgrade to /echo waits for one" in caplog.text)
        refused = raw_upgrade(srv.port, "/echo")
        head = read_head(refused, 5)
        assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 5" in head, head
        refused.close()
        wait_for(lambda: "refused the upgrade to /echo" in caplog.text)
        assert "all 2 handler threads are busy and 1 connection(s) wait for one " \
               "(App threads=2, thread_queue=1)" in caplog.text
        # the loop is not held up: generator routes answer meanwhile
        g = connect(srv, "/gen")
        assert max(round_trips(g, 5)) < 1.0
        g.close()
        # a thread frees up: the waiting connection is accepted and served
        busy[0].close()
        head = read_head(queued, 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        queued.close()
        assert srv.call(lambda: app._threads.refused) == 1
    busy[1].close()


def test_queued_connection_times_out_with_503(serve: Callable[..., AppServer],
                                              caplog: Any) -> None:
    app = pyws.App(threads=1, thread_queue=4, thread_queue_timeout=0.3)
    thread_echo(app)
    srv = serve(app)
    with caplog.at_level(logging.WARNING, logger="pyws"):
        hold = connect(srv, "/echo")
        hold.send("h")
        assert hold.recv() == "h"
        t0 = time.monotonic()
        waiting = raw_upgrade(srv.port, "/echo")
        head = read_head(waiting, 5)
        waited = time.monotonic() - t0
        assert head.startswith(b"HTTP/1.1 503") and 0.25 <= waited < 4, (head, waited)
        wait_for(lambda: "waited 0.3 s (thread_queue_timeout)" in caplog.text)
        waiting.close()
        # a client that gives up while queued frees its place
        gone = raw_upgrade(srv.port, "/echo")
        wait_for(lambda: srv.call(lambda: len(app._threads._jobs)) == 1)
        gone.close()
        wait_for(lambda: srv.call(lambda: len(app._threads._jobs)) == 0)
    hold.close()


def test_200_concurrent_threaded_connections_while_the_loop_keeps_serving(
        serve: Callable[..., AppServer]) -> None:
    """200 blocking handlers open at once each echo 21 messages correctly (checked with the
    websockets client, all connections open together), while a generator echo on the same
    App keeps answering: its round trips during the load are compared with the unloaded ones
    measured just before, in this test."""
    n_conns, n_msgs = 200, 20
    app = pyws.App(threads=n_conns)
    thread_echo(app)
    gen_echo(app)
    srv = serve(app)
    probe = connect(srv, "/gen")
    baseline = round_trips(probe, 30, 0.005)

    result: Dict[str, Any] = {}

    async def load() -> None:
        all_open = asyncio.Event()
        opened = 0

        async def one(k: int) -> int:
            nonlocal opened
            async with websockets.connect(srv.url("/echo"), open_timeout=20,
                                          compression=None) as ws:
                await ws.send(f"{k}:first")
                assert await ws.recv() == f"{k}:first"
                opened += 1
                if opened == n_conns:
                    result["busy"] = srv.call(lambda: app._threads.busy)
                    all_open.set()
                await asyncio.wait_for(all_open.wait(), 30)
                for i in range(n_msgs):
                    await ws.send(f"{k}:{i}")
                    assert await ws.recv() == f"{k}:{i}"
                return k

        done = await asyncio.wait_for(asyncio.gather(*(one(k) for k in range(n_conns))), 60)
        result["done"] = sorted(done)

    loader = threading.Thread(target=lambda: asyncio.run(load()), daemon=True)
    t0 = time.monotonic()
    loader.start()
    loaded: List[float] = []
    while loader.is_alive() and time.monotonic() - t0 < 60:
        loaded += round_trips(probe, 1)
        time.sleep(0.005)
    loader.join(60)
    elapsed = time.monotonic() - t0
    assert result.get("done") == list(range(n_conns)), result
    assert result["busy"] == n_conns  # every handler was running at the same moment
    base50 = statistics.median(baseline)
    load50 = statistics.median(loaded)
    print(f"\n200 threaded echo connections x {n_msgs + 1} messages in {elapsed:.2f} s; "
          f"generator echo round trip p50 {base50 * 1e3:.2f} ms unloaded, "
          f"{load50 * 1e3:.2f} ms during the load (max {max(loaded) * 1e3:.1f} ms, "
          f"{len(loaded)} samples)")
    assert len(loaded) >= 5
    # the loop was never held: generous bounds, far below what a blocked loop would show
    assert load50 < max(0.05, 20 * base50)
    assert max(loaded) < 2.0
    probe.close()
    wait_for(lambda: srv.call(lambda: app._threads.busy) == 0, timeout=10)


@pytest.mark.parametrize("then", ["bad frame", "close"])
def test_replies_to_earlier_messages_go_out_before_the_close(
        serve: Callable[..., AppServer], then: str) -> None:
    """A message, then (in the same TCP segment) a bad frame or a close: the thread's echo of
    the message goes out before the close frame (1002 for the bad frame, the echo of 1000),
    as on the loop-thread drivers (Autobahn 3.2-3.4, 4.1.3-4.2.4, 5.15). The handler takes
    0.2 s to answer, so the close is due long before its reply."""
    app = pyws.App()

    @app.websocket("/slow")
    def slow(ws: Any) -> None:
        for msg in ws:
            time.sleep(0.2)
            ws.send(msg)

    srv = serve(app)
    raw = RawWS(srv.port)
    raw.handshake("/slow")
    bad = frame(OP_TEXT, b"bad", rsv=RSV1, mask=b"abcd") if then == "bad frame" else \
        frame(OP_CLOSE, close_payload(1000, b"bye"), mask=b"abcd")
    raw.send(frame(OP_TEXT, b"first", mask=b"abcd") + bad)
    assert raw.recv_frame() == (OP_TEXT, True, b"first")
    op, fin, payload = raw.recv_frame()
    assert op == OP_CLOSE
    assert int.from_bytes(payload[:2], "big") == (1002 if then == "bad frame" else 1000)
    assert raw.is_eof(5)


def test_a_fast_handler_s_reply_is_not_overtaken_by_the_close(
        serve: Callable[..., AppServer]) -> None:
    """The race Autobahn 4.1.3 found: the thread answers at once and is back in recv() when the
    held close is reported, but its reply still waits in the loop's queue; the close must be
    queued behind it. 60 connections, the bad frame in the same write as the message or
    0-1 ms after it."""
    app = pyws.App()
    thread_echo(app, "/fast")
    srv = serve(app)
    for i in range(60):
        raw = RawWS(srv.port)
        raw.handshake("/fast")
        msg, bad = frame(OP_TEXT, b"hello %d" % i, mask=b"abcd"), frame(5, b"", mask=b"abcd")
        if i % 3 == 0:
            raw.send(msg + bad)  # bad: a reserved opcode
        else:
            raw.send(msg)
            time.sleep((i % 3 - 1) / 1000)
            raw.send(bad)
        assert raw.recv_frame() == (OP_TEXT, True, b"hello %d" % i), i
        op, _, payload = raw.recv_frame()
        assert op == OP_CLOSE and int.from_bytes(payload[:2], "big") == 1002
        raw.sock.close()


def test_a_held_close_waits_at_most_close_timeout(serve: Callable[..., AppServer]) -> None:
    """A handler that took a message and never comes back for the next one does not keep the
    peer's close waiting for ever: the echo goes out close_timeout (here 0.5 s) after it was
    due, and the handler hears of it."""
    app = pyws.App(close_timeout=0.5)
    ended = threading.Event()

    @app.websocket("/stuck")
    def stuck(ws: Any) -> None:
        ws.recv()
        deadline = time.monotonic() + 10
        while ws.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        ended.set()

    srv = serve(app)
    raw = RawWS(srv.port)
    raw.handshake("/stuck")
    raw.send(frame(OP_TEXT, b"x", mask=b"abcd"))
    time.sleep(0.1)
    t0 = time.monotonic()
    raw.send_frame(close_payload(1000), OP_CLOSE)
    op, _, payload = raw.recv_frame()
    took = time.monotonic() - t0
    assert op == OP_CLOSE and int.from_bytes(payload[:2], "big") == 1000
    assert 0.3 < took < 3, took
    assert ended.wait(5)


def test_a_sleeping_handler_does_not_delay_the_loop(serve: Callable[..., AppServer]) -> None:
    """A blocking handler that sleeps 2 s holds its thread only: a generator echo on the same
    App answers meanwhile, each round trip far under the 2 s."""
    app = pyws.App()
    asleep = threading.Event()

    @app.websocket("/sleepy")
    def sleepy(ws: Any) -> None:
        ws.recv()
        asleep.set()
        time.sleep(2.0)
        ws.send_text("woke")

    gen_echo(app)
    srv = serve(app)
    s = connect(srv, "/sleepy")
    g = connect(srv, "/gen")
    s.send("sleep")
    assert asleep.wait(5)
    t0 = time.monotonic()
    trips = round_trips(g, 10, 0.02)
    assert time.monotonic() - t0 < 1.9  # all ten while the handler still sleeps
    # a blocked loop would show ~2 s on the first one
    assert statistics.median(trips) < 0.1 and max(trips) < 1.0, trips
    assert s.recv() == "woke"
    s.close()
    g.close()


def test_blocking_handlers_inside_asyncio(run: Callable[..., Any]) -> None:
    """An App served by `await app.serve()` (asyncio, then uvloop) runs blocking handlers
    beside async ones: the threads' calls reach the loop through the same wakeup; cancelling
    the serve tells a waiting thread (its recv() gives None)."""
    app = pyws.App()
    thread_echo(app)
    ended: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/async")
    async def aecho(ws: Any) -> None:
        async for m in ws:
            await ws.send(m)

    @app.websocket("/wait")
    def wait(ws: Any) -> None:
        ws.send_text("ready")
        ended.put(ws.recv())

    async def main() -> None:
        async def one(port: int, path: str, k: int) -> None:
            async with pyws.aconnect(f"ws://127.0.0.1:{port}{path}") as ws:
                for i in range(3):
                    await ws.send(f"{k}.{i}")
                    assert (await ws.recv(timeout=5)).data == f"{k}.{i}"

        async with serving(app, shutdown_timeout=2) as port:
            await asyncio.gather(*(one(port, "/echo", k) for k in range(20)),
                                 one(port, "/async", 99))
            w = await pyws.aconnect(f"ws://127.0.0.1:{port}/wait")
            assert (await w.recv(timeout=5)).data == "ready"
        assert await w.recv(timeout=5) is None and w.close_code == 1001
        await w.close()

    run(main())
    assert ended.get(timeout=5) is None


# --------------------------------------------------------------------------- shutdown
class LoopThread:
    """An App polled by a thread we stop ourselves, to watch shutdown and close."""

    def __init__(self, app: pyws.App) -> None:
        self.app = app
        self.port = app.listen("127.0.0.1", 0).port
        self.stop = threading.Event()
        self.timings: Dict[str, float] = {}
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self, shutdown: float = 1.5) -> None:
        while not self.stop.is_set():
            self.app.poll(20)
        t0 = time.monotonic()
        self.app.shutdown(shutdown)
        self.timings["shutdown"] = time.monotonic() - t0
        t0 = time.monotonic()
        self.app.close()
        self.timings["close"] = time.monotonic() - t0

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive()


def test_shutdown_tells_waiting_threads_and_joins_them(caplog: Any) -> None:
    app = pyws.App()
    events: "queue.Queue[Any]" = queue.Queue()
    release = threading.Event()

    @app.websocket("/wait")
    def wait(ws: Any) -> None:
        events.put("waiting")
        try:
            while True:
                msg = ws.recv()
                events.put(None if msg is None else msg.text)
        except pyws.ConnectionClosed as exc:
            events.put(("closed", exc.code))

    @app.websocket("/stuck")
    def stuck(ws: Any) -> None:
        ws.accept()
        events.put("stuck")
        release.wait(30)   # ignores the shutdown: its own code, not a pyws wait

    lt = LoopThread(app)
    waiting = [websocket.create_connection(f"ws://127.0.0.1:{lt.port}/wait", timeout=5)
               for _ in range(3)]
    stuck_c = websocket.create_connection(f"ws://127.0.0.1:{lt.port}/stuck", timeout=5)
    got = [events.get(timeout=5) for _ in range(4)]
    assert sorted(map(str, got)) == ["stuck", "waiting", "waiting", "waiting"]
    with caplog.at_level(logging.WARNING, logger="pyws"):
        lt.finish()
    for c in waiting:
        assert recv_close(c)[0] == 1001
        c.close()
    told = [events.get(timeout=5) for _ in range(6)]
    assert told.count(None) == 3 and told.count(("closed", 1001)) == 3  # None, then raised
    # bounded: shutdown(1.5) waited for the stuck one, close() joined for at most 1 s more
    assert lt.timings["shutdown"] < 3.0 and lt.timings["close"] < 2.0, lt.timings
    assert "1 blocking handler(s) still running 1.5 s after shutdown began" in caplog.text
    assert "left behind as daemon threads" in caplog.text
    assert [t for t in app._threads._workers if t.is_alive()]  # only the stuck one
    release.set()
    wait_for(lambda: not any(t.is_alive() for t in app._threads._workers))
    stuck_c.close()


def test_shutdown_answers_503_to_upgrades_waiting_for_a_thread(caplog: Any) -> None:
    """A connection queued for a handler thread when the App shuts down is told so (503 with
    Retry-After), not dropped without an answer."""
    app = pyws.App(threads=1, thread_queue=4)
    started = threading.Event()

    @app.websocket("/busy")
    def busy(ws: Any) -> None:
        started.set()
        for _ in ws:
            pass

    lt = LoopThread(app)
    first = websocket.create_connection(f"ws://127.0.0.1:{lt.port}/busy", timeout=5)
    assert started.wait(5)
    queued = raw_upgrade(lt.port, "/busy")
    wait_for(lambda: len(app._threads._jobs) == 1)
    with caplog.at_level(logging.WARNING, logger="pyws"):
        lt.finish()
    head = read_head(queued, 5)
    assert head.startswith(b"HTTP/1.1 503 "), head
    assert b"retry-after: 5" in head.lower()
    assert "answered 503 to 1 upgrade(s) still waiting" in caplog.text
    assert recv_close(first)[0] == 1001
    first.close()
    queued.close()


def test_close_without_shutdown_raises_connection_closed_in_threads() -> None:
    app = pyws.App()
    events: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/wait")
    def wait(ws: Any) -> None:
        events.put("waiting")
        try:
            ws.recv()
            ws.recv()
        except pyws.ConnectionClosed as exc:
            events.put(("recv", exc.code))
        try:
            ws.send_text("after")
        except pyws.ConnectionClosed as exc:
            events.put(("send", exc.code))

    port = app.listen("127.0.0.1", 0).port
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            app.poll(20)
        app.close()   # no graceful shutdown: the threads are told directly

    t = threading.Thread(target=run, daemon=True)
    t.start()
    c = websocket.create_connection(f"ws://127.0.0.1:{port}/wait", timeout=5)
    assert events.get(timeout=5) == "waiting"
    stop.set()
    t.join(10)
    assert events.get(timeout=5) == ("recv", 1001)
    assert events.get(timeout=5)[0] == "send"
    wait_for(lambda: not any(w.is_alive() for w in app._threads._workers))
    c.close()


def test_the_driver_is_chosen_at_registration(serve: Callable[..., AppServer],
                                              caplog: Any) -> None:
    """Generators (also behind functools.wraps, or as a callable object's __call__) keep the
    generator driver; async def the async one; everything else is blocking. A wrapper that
    hides a generator is reported with what to do."""
    app = pyws.App()

    def wrapped(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(ws: Any) -> Any:
            return fn(ws)
        return inner

    def hidden(fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(ws: Any) -> Any:     # no functools.wraps: looks like a plain function
            return fn(ws)
        return inner

    class Handler:
        def __call__(self, ws: Any) -> Any:
            msg = yield ws.recv()
            ws.send_text("object " + msg.text)

    @app.websocket("/wrapped")
    @wrapped
    def gen(ws: Any) -> Any:
        msg = yield ws.recv()
        in_pool = threading.current_thread().name.startswith("pyws-handler")
        ws.send_text(f"gen {msg.text} in pool: {in_pool}")

    @app.websocket("/hidden")
    @hidden
    def gen2(ws: Any) -> Any:
        yield ws.recv()

    @app.websocket("/async")
    @wrapped
    async def coro(ws: Any) -> None:
        pass

    app.websocket("/object")(Handler())
    app.websocket("/lambda")(lambda ws: ws.send_text(type(ws).__name__))
    drivers = {r.pattern: r.driver for r in app._ws_routes}
    assert drivers == {"/wrapped": "generator", "/hidden": "thread", "/async": "async",
                       "/object": "generator", "/lambda": "thread"}
    srv = serve(app)
    for path, want in [("/wrapped", "gen x in pool: False"), ("/object", "object x")]:
        c = connect(srv, path)
        c.send("x")
        assert c.recv() == want
        c.close()
    c = connect(srv, "/lambda")
    assert c.recv() == "ThreadedWebSocket"
    c.close()
    with caplog.at_level(logging.ERROR, logger="pyws"):
        c = connect(srv, "/hidden")
        assert recv_close(c)[0] == 1011
        c.close()
        wait_for(lambda: "decorate the wrapper with functools.wraps(handler)" in caplog.text)


def test_threads_options_are_checked() -> None:
    for kw, text in [({"threads": 0}, "threads must be an int >= 1"),
                     ({"thread_queue": -1}, "thread_queue must be an int >= 0"),
                     ({"thread_queue_timeout": 0}, "thread_queue_timeout must be seconds")]:
        with pytest.raises(ValueError, match=text):
            pyws.App(**kw)
    with pytest.raises(TypeError, match="did you mean threads"):
        pyws.App(thread=4)
