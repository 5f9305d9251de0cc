"""The callback API (Manager / Connection): timers, cross-thread wakeups, thread checks,
shutdown, event order, HTTP messages and replies, subprotocols, closed-connection errors,
per-connection state, backpressure, heartbeats, idle timeouts, size limits, control events."""
from __future__ import annotations

import http.client
import json
import queue
import socket
import struct
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import websocket
from websocket import ABNF

import pyws
from pyws import (EV_ACCEPT, EV_CLOSE, EV_DRAIN, EV_HTTP_MSG, EV_WAKEUP, EV_WS_CTL, EV_WS_MSG,
                  EV_WS_OPEN, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG)

from _frames import MASK_KEY, frame
from _rawws import RawWS, close_payload, handshake_request
from conftest import ServerThread


def connect(port: int, path: str = "/ws", **kw: Any) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=5, **kw)


def wait_for(pred: Callable[[], Any], timeout: float = 5.0, step: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(step)


class Local:
    """A Manager polled by the test's own thread (for tests that time poll() itself)."""

    def __init__(self, handler: Optional[Callable[..., Any]] = None, **opts: Any) -> None:
        self.events: List[Tuple[int, Any, Any]] = []
        self.user_handler = handler
        self.raws: List[RawWS] = []
        self._opened = 0
        self.mgr = pyws.Manager(self.handler, **opts)
        self.port = self.mgr.listen("http://127.0.0.1:0").port

    def handler(self, conn: pyws.Connection, ev: int, data: Any) -> None:
        self.events.append((ev, conn, data))
        if self.user_handler is not None:
            self.user_handler(conn, ev, data)
        elif ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)

    def poll_until(self, pred: Callable[[], Any], timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            v = pred()
            if v:
                return v
            if time.monotonic() > deadline:
                break
            self.mgr.poll(10)
        raise AssertionError("condition not met in time")

    def count(self, ev: int) -> int:
        return sum(1 for e in self.events if e[0] == ev)

    def ws_conn(self) -> pyws.Connection:
        """Open a raw WebSocket to the manager and return (server side) its Connection."""
        r = RawWS(self.port)
        self.raws.append(r)
        r.send(handshake_request())
        self.poll_until(lambda: self.count(EV_WS_OPEN) > self._opened)
        self._opened += 1
        status, _h, _ = r.read_http_head()
        assert status == 101
        return [e[1] for e in self.events if e[0] == EV_WS_OPEN][-1]

    def close(self) -> None:
        for r in self.raws:
            r.close()
        if self.mgr._loop is not None:
            self.mgr.close()


@pytest.fixture
def local() -> Any:
    made: List[Local] = []

    def make(handler: Optional[Callable[..., Any]] = None, **opts: Any) -> Local:
        lo = Local(handler, **opts)
        made.append(lo)
        return lo

    yield make
    for lo in made:
        lo.close()


# --------------------------------------------------------------------------- timers

def test_one_shot_timer(local: Any) -> None:
    lo = local()
    fired: List[float] = []
    t0 = time.monotonic()
    tm = lo.mgr.timer(0.05, lambda: fired.append(time.monotonic()))
    assert tm.active and not tm.repeat
    lo.poll_until(lambda: fired, timeout=3)
    assert fired[0] - t0 >= 0.045
    assert not tm.active
    # it fires once only
    end = time.monotonic() + 0.15
    while time.monotonic() < end:
        lo.mgr.poll(10)
    assert len(fired) == 1
    tm.cancel()  # harmless after firing


def test_repeat_timer_and_cancel(local: Any) -> None:
    lo = local()
    ticks: List[float] = []
    tm = lo.mgr.timer(0.02, lambda: ticks.append(time.monotonic()), repeat=True)
    lo.poll_until(lambda: len(ticks) >= 5, timeout=3)
    tm.cancel()
    assert not tm.active
    n = len(ticks)
    end = time.monotonic() + 0.1
    while time.monotonic() < end:
        lo.mgr.poll(10)
    assert len(ticks) == n
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert all(g >= 0.015 for g in gaps), gaps


def test_cancel_before_firing_and_timer_cancelling_itself(local: Any) -> None:
    lo = local()
    fired: List[str] = []
    a = lo.mgr.timer(0.03, lambda: fired.append("a"))
    b_box: List[pyws.Timer] = []

    def b_tick() -> None:
        fired.append("b")
        if fired.count("b") == 3:
            b_box[0].cancel()

    b_box.append(lo.mgr.timer(0.01, b_tick, repeat=True))
    a.cancel()
    c = lo.mgr.timer(0.06, lambda: fired.append("c"))
    lo.poll_until(lambda: "c" in fired, timeout=3)
    end = time.monotonic() + 0.08
    while time.monotonic() < end:
        lo.mgr.poll(10)
    assert "a" not in fired
    assert fired.count("b") == 3
    assert fired.count("c") == 1 and not c.active


def test_timer_exception_is_logged_and_loop_continues(local: Any, caplog: Any) -> None:
    lo = local()
    ok: List[int] = []

    def boom() -> None:
        raise ValueError("timer boom")

    lo.mgr.timer(0.0, boom)
    lo.mgr.timer(0.02, lambda: ok.append(1))
    lo.poll_until(lambda: ok, timeout=3)
    assert "timer boom" in caplog.text


def test_timer_wakes_a_long_poll(local: Any) -> None:
    lo = local()
    fired: List[int] = []
    lo.mgr.timer(0.1, lambda: fired.append(1))
    t0 = time.monotonic()
    for _ in range(5):
        lo.mgr.poll(10000)
        if fired:
            break
    assert fired
    assert time.monotonic() - t0 < 3.0  # the 0.1 s timer ended the poll, not its 10 s


# --------------------------------------------------------------------------- threads

def _drain(lo: Local) -> None:
    for _ in range(20):
        if lo.mgr.poll(0) == 0:
            break


def test_wakeup_from_another_thread(local: Any) -> None:
    lo = local()
    conn = lo.ws_conn()
    _drain(lo)
    sent_at: List[float] = []

    def other() -> None:
        time.sleep(0.15)
        sent_at.append(time.monotonic())
        lo.mgr.wakeup(conn.id, b"from thread")

    th = threading.Thread(target=other)
    th.start()
    t0 = time.monotonic()
    for _ in range(3):
        lo.mgr.poll(10000)
        if lo.count(EV_WAKEUP):
            break
    returned = time.monotonic()
    th.join(5)
    assert lo.count(EV_WAKEUP) == 1
    ev, c, data = [e for e in lo.events if e[0] == EV_WAKEUP][0]
    assert c is conn and data == b"from thread"
    assert returned - t0 < 3.0, "poll(10000) was not woken up"
    assert returned - sent_at[0] < 3.0


def test_wakeup_str_and_for_a_closed_connection(local: Any, caplog: Any) -> None:
    lo = local()
    conn = lo.ws_conn()
    lo.mgr.wakeup(conn.id, "text is encoded")
    lo.poll_until(lambda: lo.count(EV_WAKEUP))
    assert [e[2] for e in lo.events if e[0] == EV_WAKEUP] == [b"text is encoded"]
    conn.abort()
    lo.poll_until(lambda: lo.count(EV_CLOSE))
    lo.mgr.wakeup(conn.id, b"too late")  # dropped, with a log line, not delivered
    for _ in range(5):
        lo.mgr.poll(10)
    assert lo.count(EV_WAKEUP) == 1
    assert "dropped" in caplog.text


def test_call_soon_threadsafe_wakes_poll(local: Any) -> None:
    lo = local()
    _drain(lo)
    ran: List[Tuple[Any, ...]] = []

    def other() -> None:
        time.sleep(0.15)
        lo.mgr.call_soon_threadsafe(lambda *a: ran.append((threading.get_ident(),) + a), 1, 2)

    th = threading.Thread(target=other)
    th.start()
    t0 = time.monotonic()
    for _ in range(3):
        lo.mgr.poll(10000)
        if ran:
            break
    elapsed = time.monotonic() - t0
    th.join(5)
    assert ran == [(threading.get_ident(), 1, 2)]  # ran on the loop (this) thread
    assert elapsed < 3.0  # woken, not after poll's 10 s


def test_many_wakeups_from_many_threads(local: Any) -> None:
    lo = local()
    conn = lo.ws_conn()
    got: List[int] = []
    lo.user_handler = lambda c, ev, d: got.append(int(d)) if ev == EV_WAKEUP else None

    def spam(k: int) -> None:
        for i in range(100):
            lo.mgr.wakeup(conn.id, str(k * 1000 + i).encode())

    ths = [threading.Thread(target=spam, args=(k,)) for k in range(4)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(5)
    lo.poll_until(lambda: len(got) >= 400, timeout=5)
    assert sorted(got) == sorted(k * 1000 + i for k in range(4) for i in range(100))
    for k in range(4):  # per-thread order is kept
        mine = [g for g in got if g // 1000 == k]
        assert mine == sorted(mine)


def test_wrong_thread_raises(echo_server: ServerThread) -> None:
    ws = connect(echo_server.port)
    try:
        ws.send("x")
        assert ws.recv() == "x"
        conn = echo_server.call(lambda: echo_server.mgr.connections[0])
        for call in (lambda: conn.ws_send("nope"), lambda: conn.close(1000),
                     lambda: conn.reply(200, "x"), lambda: echo_server.mgr.timer(1, print),
                     lambda: echo_server.mgr.listen("http://127.0.0.1:0"),
                     lambda: echo_server.mgr.shutdown()):
            with pytest.raises(pyws.WrongThreadError) as ei:
                call()
            assert isinstance(ei.value, RuntimeError)
            assert isinstance(ei.value, pyws.PyWSError)
        # the connection was not disturbed by the refused calls
        ws.send("still")
        assert ws.recv() == "still"
        # wakeup is the one thing allowed: it reaches the handler on the loop thread
        seen: "queue.Queue[Any]" = queue.Queue()

        def h(c: pyws.Connection, ev: int, data: Any) -> None:
            if ev == EV_WAKEUP:
                seen.put((threading.get_ident(), data))
                c.ws_send(b"woken: " + data, OP_BINARY)

        echo_server.call(lambda: setattr(conn, "handler", h))
        echo_server.mgr.wakeup(conn.id, b"ok")
        ident, data = seen.get(timeout=5)
        assert data == b"ok" and ident != threading.get_ident()
        assert ws.recv() == b"woken: ok"
    finally:
        ws.close()


def test_poll_from_inside_a_handler_is_refused(local: Any) -> None:
    errors: List[BaseException] = []
    box: List[Local] = []

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            try:
                box[0].mgr.poll(0)
            except pyws.PyWSError as exc:
                errors.append(exc)
            conn.reply(200, "ok")

    lo = local(h)
    box.append(lo)
    with socket.create_connection(("127.0.0.1", lo.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        lo.poll_until(lambda: errors)
    assert "inside a handler" in str(errors[0])


def test_shutdown_from_a_handler_is_refused_without_side_effects(local: Any) -> None:
    errors: List[BaseException] = []
    box: List[Local] = []

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            try:
                box[0].mgr.shutdown(0.1)
            except pyws.PyWSError as exc:
                errors.append(exc)
            conn.reply(200, "still serving")  # the connection was not closed by the attempt

    lo = local(h)
    box.append(lo)
    for _ in range(2):  # and the listener still accepts
        with RawWS(lo.port) as r:
            r.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            lo.poll_until(lambda: len(errors) >= 1)
            lo.mgr.poll(10)
            status, headers, _ = r.read_http_head()
            assert status == 200
            assert r.recv_exact(int(headers["content-length"])) == b"still serving"
        errors.clear()
    assert lo.mgr.listeners


# --------------------------------------------------------------------------- shutdown, with

def _client_waiting_for_close(port: int, out: "queue.Queue[Any]") -> threading.Thread:
    def run() -> None:
        try:
            ws = connect(port)
            ws.send("hello")
            out.put(("echo", ws.recv()))
            op, frame = ws.recv_data_frame(control_frame=True)
            out.put(("close", op, frame.data))
            ws.shutdown()
        except BaseException as exc:
            out.put(("error", exc))

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_shutdown_closes_websockets_with_1001(local: Any) -> None:
    lo = local()
    out: "queue.Queue[Any]" = queue.Queue()
    ths = [_client_waiting_for_close(lo.port, out) for _ in range(3)]
    lo.poll_until(lambda: lo.count(EV_WS_MSG) >= 3)
    lo.mgr.poll(10)  # write the echoes
    # a plain HTTP connection is closed too (its client closes its side on EOF)
    plain = socket.create_connection(("127.0.0.1", lo.port), timeout=5)
    plain_eof: List[bytes] = []

    def plain_reader() -> None:
        try:
            plain_eof.append(plain.recv(10))
        finally:
            plain.close()

    pth = threading.Thread(target=plain_reader, daemon=True)
    pth.start()
    lo.poll_until(lambda: lo.count(EV_ACCEPT) >= 4)
    t0 = time.monotonic()
    lo.mgr.shutdown(10.0)
    assert time.monotonic() - t0 < 3.0  # done when everyone has closed, not at the deadline
    for th in ths:
        th.join(5)
    results = [out.get(timeout=1) for _ in range(6)]
    assert sorted(r[0] for r in results) == ["close"] * 3 + ["echo"] * 3, results
    for r in results:
        if r[0] == "close":
            assert r[1] == ABNF.OPCODE_CLOSE
            assert struct.unpack("!H", r[2][:2])[0] == 1001
    assert lo.mgr.connections == []
    assert lo.count(EV_CLOSE) == 4
    pth.join(5)
    assert plain_eof == [b""]
    # the listener is gone
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", lo.port), timeout=2).close()


def test_context_manager(free_port_fixture: int) -> None:
    out: "queue.Queue[Any]" = queue.Queue()
    closes: List[int] = []

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)
        elif ev == EV_CLOSE:
            closes.append(conn.close_code)

    with pyws.Manager(h) as mgr:
        port = mgr.listen(f"http://127.0.0.1:{free_port_fixture}").port
        assert port == free_port_fixture
        th = _client_waiting_for_close(port, out)
        deadline = time.monotonic() + 5
        while out.empty() and time.monotonic() < deadline:
            mgr.poll(10)
        assert out.get(timeout=1) == ("echo", "hello")
    th.join(5)
    r = out.get(timeout=1)
    assert r[0] == "close" and struct.unpack("!H", r[2][:2])[0] == 1001
    assert closes and closes[0] in (1001, 1000)
    # the manager is closed: polling or listening again is an error, closing again is not
    with pytest.raises(pyws.PyWSError):
        mgr.poll(0)
    with pytest.raises(pyws.PyWSError):
        mgr.listen("http://127.0.0.1:0")
    mgr.close()


@pytest.fixture
def free_port_fixture() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        pyws.Manager(None, max_mesage_size=1)


# --------------------------------------------------------------------------- events

def test_event_order_for_a_websocket(server_factory: Callable[..., ServerThread]) -> None:
    log: Dict[int, List[int]] = {}
    done: "queue.Queue[int]" = queue.Queue()

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        log.setdefault(conn.id, []).append(ev)
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)
        elif ev == EV_CLOSE:
            done.put(conn.id)

    srv = server_factory(h)
    ws = connect(srv.port)
    ws.send("a")
    assert ws.recv() == "a"
    ws.send("b")
    assert ws.recv() == "b"
    ws.close()
    cid = done.get(timeout=5)
    assert log[cid] == [EV_ACCEPT, EV_HTTP_MSG, EV_WS_OPEN, EV_WS_MSG, EV_WS_MSG, EV_CLOSE]


def test_http_message_fields(server_factory: Callable[..., ServerThread]) -> None:
    seen: "queue.Queue[Dict[str, Any]]" = queue.Queue()

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            info = {
                "method": data.method, "uri": data.uri, "query": data.query,
                "target": data.target, "version": data.version, "args": data.args,
                "lower": data.headers["x-custom-header"],
                "upper": data.headers["X-CUSTOM-HEADER"],
                "get": data.header("X-Custom-Header"), "missing": data.header("nope", "dflt"),
                "contains": "x-CUSTOM-header" in data.headers,
                "multi": data.headers.get_all("x-multi"),
                "joined": data.headers["x-multi"],
                "body": data.body.decode(), "text": data.text,
                "upgrade": data.is_websocket_upgrade,
                "cookies": data.cookies,
            }
            seen.put(info)
            conn.reply(201, json.dumps(info), headers={"Content-Type": "application/json",
                                                       "X-Reply": "yes"})

    srv = server_factory(h)
    body = "héllo=wörld&x=1".encode()
    hc = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        hc.putrequest("POST", "/submit/form?a=1&b=two&a=3")
        hc.putheader("X-Custom-Header", "Some Value")
        hc.putheader("X-Multi", "one")
        hc.putheader("X-Multi", "two")
        hc.putheader("Cookie", "sid=abc; theme=dark")
        hc.putheader("Content-Length", str(len(body)))
        hc.endheaders(body)
        resp = hc.getresponse()
        assert resp.status == 201
        assert resp.getheader("X-Reply") == "yes"
        assert resp.getheader("Content-Type") == "application/json"
        echoed = json.loads(resp.read())
    finally:
        hc.close()
    info = seen.get(timeout=5)
    assert info == echoed
    assert info["method"] == "POST"
    assert info["uri"] == "/submit/form"
    assert info["query"] == "a=1&b=two&a=3"
    assert info["target"] == "/submit/form?a=1&b=two&a=3"
    assert info["version"] == "HTTP/1.1"
    assert info["args"] == {"a": ["1", "3"], "b": ["two"]}
    assert info["lower"] == info["upper"] == info["get"] == "Some Value"
    assert info["missing"] == "dflt" and info["contains"] is True
    assert info["multi"] == ["one", "two"] and info["joined"] == "one, two"
    assert info["body"] == body.decode() == info["text"]
    assert info["upgrade"] is False
    assert info["cookies"] == {"sid": "abc", "theme": "dark"}


def test_reply_keep_alive_and_drain(server_factory: Callable[..., ServerThread]) -> None:
    accepts: List[int] = []

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_ACCEPT:
            accepts.append(conn.id)
        elif ev == EV_HTTP_MSG:
            if data.uri == "/bye":
                conn.reply(200, b"goodbye", headers={"Content-Type": "text/plain"})
                conn.drain()
            elif data.uri == "/str":
                conn.reply(200, "unicode ✓")
            else:
                conn.reply(404, b"Not Found")

    srv = server_factory(h)
    hc = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        for path, status, body in (("/x", 404, b"Not Found"), ("/str", 200,
                                                               "unicode ✓".encode())):
            hc.request("GET", path)
            resp = hc.getresponse()
            assert resp.status == status
            assert resp.read() == body
        assert resp.getheader("Content-Type") == "text/plain; charset=utf-8"
    finally:
        hc.close()
    assert len(accepts) == 1  # both requests on one keep-alive connection
    # drain: the response is written whole, then the server closes the connection
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /bye HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\ngoodbye")
    assert b"Content-Length: 7\r\n" in data


def test_pipelined_http_requests_answered_in_order(
        server_factory: Callable[..., ServerThread]) -> None:
    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.reply(200, data.uri + ":" + data.body.decode())

    srv = server_factory(h)
    with RawWS(srv.port) as r:
        r.send(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
               b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n")
        bodies = []
        for _ in range(3):
            status, headers, _ = r.read_http_head()
            assert status == 200
            bodies.append(r.recv_exact(int(headers["content-length"])))
    assert bodies == [b"/one:", b"/two:abc", b"/three:"]


# --------------------------------------------------------------------------- subprotocols

def _subproto_server(factory: Callable[..., ServerThread]
                     ) -> Tuple[ServerThread, "queue.Queue[Any]"]:
    out: "queue.Queue[Any]" = queue.Queue()

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            want = data.query.partition("=")[2]
            offered = [p.strip() for p in data.header("Sec-WebSocket-Protocol", "").split(",")]
            try:
                conn.ws_upgrade(data, protocol=want)
                out.put(("ok", want, conn.subprotocol))
            except ValueError as exc:
                out.put(("ValueError", str(exc)))
                conn.ws_upgrade(data, protocol=offered[0])  # nothing was sent: try again
        elif ev == EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)

    return factory(h), out


def test_subprotocol_selected(server_factory: Callable[..., ServerThread]) -> None:
    srv, out = _subproto_server(server_factory)
    ws = connect(srv.port, "/ws?want=chat.v2", subprotocols=["chat.v1", "chat.v2"])
    try:
        assert ws.getsubprotocol() == "chat.v2"
        assert ws.getheaders()["sec-websocket-protocol"] == "chat.v2"
        ws.send("x")
        assert ws.recv() == "x"
    finally:
        ws.close()
    assert out.get(timeout=5) == ("ok", "chat.v2", "chat.v2")
    # exactly one Sec-WebSocket-Protocol line, carrying exactly the chosen one
    with RawWS(srv.port) as r:
        r.send(handshake_request("/ws?want=b", extra="Sec-WebSocket-Protocol: a, b, c\r\n"))
        status, _h, head = r.read_http_head()
    assert status == 101
    lines = [ln for ln in head.decode().split("\r\n")
             if ln.lower().startswith("sec-websocket-protocol")]
    assert lines == ["Sec-WebSocket-Protocol: b"]


def test_subprotocol_not_offered_is_value_error(
        server_factory: Callable[..., ServerThread]) -> None:
    srv, out = _subproto_server(server_factory)
    ws = connect(srv.port, "/ws?want=zzz", subprotocols=["alpha", "beta"])
    try:
        assert ws.getsubprotocol() == "alpha"
        ws.send("y")
        assert ws.recv() == "y"
    finally:
        ws.close()
    kind, msg = out.get(timeout=5)
    assert kind == "ValueError" and "zzz" in msg


def test_subprotocol_without_any_offer_is_value_error(
        server_factory: Callable[..., ServerThread]) -> None:
    errors: "queue.Queue[Any]" = queue.Queue()

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            try:
                conn.ws_upgrade(data, protocol="chat")
            except ValueError as exc:
                errors.put(exc)
                conn.ws_upgrade(data)

    srv = server_factory(h)
    ws = connect(srv.port)
    assert ws.getsubprotocol() is None
    ws.close()
    assert isinstance(errors.get(timeout=5), ValueError)


# --------------------------------------------------------------------------- closed sends

def test_send_on_closed_connection_raises(server_factory: Callable[..., ServerThread]) -> None:
    out: "queue.Queue[Any]" = queue.Queue()

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            if data.text == "close then send":
                conn.close(3000, "closing")
                try:
                    conn.ws_send("after close")
                except pyws.ConnectionClosed as exc:
                    out.put(("after-close", exc))
                conn.close(1000)  # a second close is harmless
        elif ev == EV_CLOSE:
            try:
                conn.ws_send("after EV_CLOSE")
            except RuntimeError as exc:  # the seeds' `except RuntimeError` keeps working
                out.put(("after-ev-close", exc))
            out.put(("later", conn))

    srv = server_factory(h)
    ws = connect(srv.port)
    ws.send("close then send")
    op, frame = ws.recv_data_frame(control_frame=True)
    assert op == ABNF.OPCODE_CLOSE and struct.unpack("!H", frame.data[:2])[0] == 3000
    ws.shutdown()
    kind, exc = out.get(timeout=5)
    assert kind == "after-close"
    assert isinstance(exc, pyws.ConnectionClosed) and isinstance(exc, RuntimeError)
    assert exc.code == 3000
    kind, exc = out.get(timeout=5)
    assert kind == "after-ev-close"
    assert isinstance(exc, pyws.ConnectionClosed)
    kind, conn = out.get(timeout=5)
    assert conn.closed
    # later, from the loop thread, still ConnectionClosed (not a crash, not a stale slot)
    with pytest.raises(pyws.ConnectionClosed):
        srv.call(lambda: conn.ws_send("much later"))
    with pytest.raises(RuntimeError):
        srv.call(lambda: conn.send_json({"a": 1}))
    srv.call(conn.close)  # harmless
    assert srv.call(lambda: conn.write_buffer_size) == 0


# --------------------------------------------------------------------------- state

def test_userdata_remote_addr_and_write_buffer_size(
        server_factory: Callable[..., ServerThread]) -> None:
    out: "queue.Queue[Any]" = queue.Queue()

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_ACCEPT:
            assert conn.userdata is None
            conn.userdata = {"count": 0}
        elif ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            conn.userdata["count"] += 1
            before = conn.write_buffer_size
            conn.ws_send(f"{conn.userdata['count']} {conn.remote_addr} {conn.remote_ip}")
            conn.ws_send("second")  # the first may be written at once (a lone event's reply)
            out.put((before, conn.write_buffer_size))
        elif ev == EV_CLOSE:
            out.put(("closed", conn.userdata))

    srv = server_factory(h)
    ws = connect(srv.port)
    local_port = ws.sock.getsockname()[1]
    try:
        for i in range(1, 4):
            ws.send("x")
            assert ws.recv() == f"{i} 127.0.0.1:{local_port} 127.0.0.1"
            assert ws.recv() == "second"
            before, after = out.get(timeout=5)
            assert before == 0
            assert after > 0  # queued until the next poll writes it
    finally:
        ws.close()
    assert wait_for(lambda: out.get(timeout=5)) == ("closed", {"count": 3})


def test_backpressure_drain_event(server_factory: Callable[..., ServerThread]) -> None:
    hw = 256 * 1024
    drains: List[float] = []
    closes: List[int] = []

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_DRAIN:
            drains.append(conn.write_buffer_size)
        elif ev == EV_CLOSE:
            closes.append(conn.close_code)

    srv = server_factory(h, write_high_water=hw, write_limit=64 * 1024 * 1024)
    r = RawWS(srv.port, timeout=10)
    r.handshake()
    conn = wait_for(lambda: srv.call(lambda: srv.mgr.connections))[0]
    chunk = b"\xab" * (64 * 1024)
    sent = 0

    def send_some() -> int:
        for _ in range(8):
            conn.ws_send(chunk, OP_BINARY)
        return conn.write_buffer_size

    # fill the kernel buffers until our own queue stays above the high-water mark
    for _ in range(400):
        srv.call(send_some)
        sent += 8
        time.sleep(0.01)
        if srv.call(lambda: conn.write_buffer_size) > hw:
            time.sleep(0.05)
            if srv.call(lambda: conn.write_buffer_size) > hw:
                break
    queued = srv.call(lambda: conn.write_buffer_size)
    assert queued > hw, "the client's unread data never backed up into the queue"
    drains.clear()
    time.sleep(0.1)
    assert drains == []  # nothing drains while the client does not read
    # the client reads everything; the queue empties and EV_DRAIN fires
    for i in range(sent):
        op, fin, payload = r.recv_frame(timeout=10)
        assert op == OP_BINARY and len(payload) == len(chunk)
        if i == 0:
            assert payload == chunk
    wait_for(lambda: drains, timeout=5)
    assert drains[0] < hw
    assert srv.call(lambda: conn.write_buffer_size) == 0
    assert not closes
    r.close()


def test_write_limit_closes_1008(server_factory: Callable[..., ServerThread]) -> None:
    closes: "queue.Queue[Tuple[int, str]]" = queue.Queue()

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_CLOSE:
            closes.put((conn.close_code, conn.close_reason))

    limit = 512 * 1024
    srv = server_factory(h, write_high_water=64 * 1024, write_limit=limit)
    r = RawWS(srv.port)
    r.handshake()
    conn = wait_for(lambda: srv.call(lambda: srv.mgr.connections))[0]

    def flood() -> Tuple[int, BaseException]:
        for i in range(1000):
            try:
                conn.ws_send(b"z" * 65536, OP_BINARY)
            except pyws.PyWSError as exc:
                return i, exc
        raise AssertionError("the write limit was never hit")

    n, exc = srv.call(flood)
    assert isinstance(exc, pyws.LimitExceeded)
    assert isinstance(exc, pyws.ConnectionClosed) and isinstance(exc, RuntimeError)
    assert exc.code == 1008
    assert n * 65536 <= limit + 65536
    assert closes.get(timeout=5)[0] == 1008
    with pytest.raises(pyws.ConnectionClosed):
        srv.call(lambda: conn.ws_send("more"))
    # the client's TCP connection ends (without the undeliverable backlog)
    assert r.is_eof(5)
    r.close()


# --------------------------------------------------------------------------- timeouts

def test_heartbeat_pings_reach_a_live_client(server_factory: Callable[..., ServerThread]
                                              ) -> None:
    ctl: "queue.Queue[Tuple[int, bytes]]" = queue.Queue()

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)
        elif ev == EV_WS_CTL:
            ctl.put((data.opcode, data.data))

    srv = server_factory(h, heartbeat=0.05, heartbeat_timeout=0.3, control_events=True)
    ws = connect(srv.port)
    try:
        pings = []
        t0 = time.monotonic()
        while len(pings) < 4 and time.monotonic() - t0 < 5:
            op, frame = ws.recv_data_frame(control_frame=True)  # answers with a pong
            if op == ABNF.OPCODE_PING:
                pings.append(frame.data)
        assert len(pings) == 4
        assert len(set(pings)) == 4  # each ping carries its own payload
        # the client keeps reading (so it answers every ping): past two heartbeat_timeouts it
        # is still open
        t1 = time.monotonic()
        while time.monotonic() - t1 < 0.7:
            op, frame = ws.recv_data_frame(control_frame=True)
            assert op == ABNF.OPCODE_PING
        ws.send("alive")
        for _ in range(50):
            op, data = ws.recv_data_frame(control_frame=True)
            if op == ABNF.OPCODE_TEXT:
                assert data.data == b"alive"
                break
        else:
            raise AssertionError("no echo")
        assert ctl.get(timeout=2)[0] == OP_PONG
    finally:
        ws.close()


def test_heartbeat_unanswered_closes_1011(server_factory: Callable[..., ServerThread]) -> None:
    closes: "queue.Queue[Tuple[int, str]]" = queue.Queue()

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_CLOSE:
            closes.put((conn.close_code, conn.close_reason))

    srv = server_factory(h, heartbeat=0.05, heartbeat_timeout=0.2)
    with RawWS(srv.port) as r:
        r.handshake()
        t0 = time.monotonic()
        code, reason, before = r.recv_close(timeout=5)  # never answers the pings
        elapsed = time.monotonic() - t0
        assert code == 1011
        assert before and all(op == OP_PING for op, _ in before)
        assert 0.15 < elapsed < 3.0
        assert r.is_eof(3)
    code, reason = closes.get(timeout=5)
    assert code == 1011 and "ping" in reason


def test_idle_timeout_closes_1001(server_factory: Callable[..., ServerThread]) -> None:
    closes: "queue.Queue[Tuple[int, str]]" = queue.Queue()

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)
        elif ev == EV_CLOSE:
            closes.put((conn.close_code, conn.close_reason))

    srv = server_factory(h, idle_timeout=0.3)
    # a busy client is not idle
    ws = connect(srv.port)
    try:
        for i in range(6):
            ws.send(str(i))
            assert ws.recv() == str(i)
            time.sleep(0.1)
    finally:
        ws.close()
    assert closes.get(timeout=5)[0] == 1000
    # an idle one is closed with 1001
    with RawWS(srv.port) as r:
        r.handshake()
        t0 = time.monotonic()
        code, reason, _ = r.recv_close(timeout=5)
        assert code == 1001 and reason == b"idle timeout"
        assert 0.2 < time.monotonic() - t0 < 3.0
        r.send_frame(close_payload(1001), 8)
        assert r.is_eof(3)
    assert closes.get(timeout=5)[0] == 1001


# --------------------------------------------------------------------------- limits

def test_max_message_size_per_manager(server_factory: Callable[..., ServerThread]) -> None:
    closes: "queue.Queue[int]" = queue.Queue()

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)
        elif ev == EV_CLOSE:
            closes.put(conn.close_code)

    srv = server_factory(h, max_message_size=100)
    ws = connect(srv.port)
    try:
        ws.send("a" * 100)
        assert ws.recv() == "a" * 100
        ws.send("a" * 101)
        op, frame = ws.recv_data_frame(control_frame=True)
        assert op == ABNF.OPCODE_CLOSE
        assert struct.unpack("!H", frame.data[:2])[0] == 1009
    finally:
        ws.shutdown()
    assert closes.get(timeout=5) == 1009


def test_max_message_size_per_connection(server_factory: Callable[..., ServerThread]) -> None:
    closes: "queue.Queue[Tuple[str, int]]" = queue.Queue()

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
            if data.uri == "/small":
                conn.max_message_size = 10
        elif ev == EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)
        elif ev == EV_CLOSE:
            closes.put((conn.userdata, conn.close_code))
        if ev == EV_HTTP_MSG:
            conn.userdata = data.uri

    srv = server_factory(h, max_message_size=1000)
    small = connect(srv.port, "/small")
    big = connect(srv.port, "/big")
    try:
        big.send("b" * 1000)
        assert big.recv() == "b" * 1000
        small.send("s" * 10)
        assert small.recv() == "s" * 10
        # fragments count together
        small.send_frame(ABNF.create_frame(b"123456", ABNF.OPCODE_BINARY, fin=0))
        small.send_frame(ABNF.create_frame(b"78901", ABNF.OPCODE_CONT, fin=1))
        op, frame = small.recv_data_frame(control_frame=True)
        assert op == ABNF.OPCODE_CLOSE
        assert struct.unpack("!H", frame.data[:2])[0] == 1009
        big.send("still fine")
        assert big.recv() == "still fine"
        live = srv.call(lambda: srv.mgr.connections[0])
        with pytest.raises(AttributeError):  # write-only: C does not report it back
            srv.call(lambda: live.max_message_size)
    finally:
        small.shutdown()
        big.close()
    got = sorted([closes.get(timeout=5), closes.get(timeout=5)])
    assert got == [("/big", 1000), ("/small", 1009)]


def test_control_events(server_factory: Callable[..., ServerThread]) -> None:
    ctl: "queue.Queue[Tuple[int, bytes]]" = queue.Queue()

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            conn.ping(b"srv")
        elif ev == EV_WS_CTL:
            assert isinstance(data, pyws.WsMessage)
            ctl.put((data.opcode, data.data))

    srv = server_factory(h, control_events=True)
    ws = connect(srv.port)
    ws.ping(b"one")
    op, frame = ws.recv_data_frame(control_frame=True)
    assert op == ABNF.OPCODE_PONG and frame.data == b"one"
    assert ctl.get(timeout=5) == (OP_PING, b"one")
    ws.pong(b"unsolicited")
    assert ctl.get(timeout=5) == (OP_PONG, b"unsolicited")
    ws.send("trigger")
    op, frame = ws.recv_data_frame(control_frame=True)
    assert op == ABNF.OPCODE_PING and frame.data == b"srv"  # websocket-client pongs it
    assert ctl.get(timeout=5) == (OP_PONG, b"srv")
    ws.close(status=1000, reason=b"done")
    assert ctl.get(timeout=5) == (OP_CLOSE, close_payload(1000, b"done"))

    # without control_events nothing of this reaches the handler
    quiet: List[int] = []

    def h2(conn: pyws.Connection, ev: int, data: Any) -> None:
        quiet.append(ev)
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)

    srv2 = server_factory(h2)
    ws = connect(srv2.port)
    ws.ping(b"x")
    op, frame = ws.recv_data_frame(control_frame=True)
    assert op == ABNF.OPCODE_PONG and frame.data == b"x"
    ws.close()
    wait_for(lambda: EV_CLOSE in quiet)
    assert EV_WS_CTL not in quiet


def test_handler_exception_closes_that_connection_1011(
        server_factory: Callable[..., ServerThread], caplog: Any) -> None:
    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            if data.text == "boom":
                raise KeyError("handler bug")
            conn.ws_send(data.data, data.opcode)

    srv = server_factory(h)
    good = connect(srv.port)
    bad = connect(srv.port)
    try:
        bad.send("boom")
        op, frame = bad.recv_data_frame(control_frame=True)
        assert op == ABNF.OPCODE_CLOSE
        assert struct.unpack("!H", frame.data[:2])[0] == 1011
        good.send("fine")
        assert good.recv() == "fine"
    finally:
        bad.shutdown()
        good.close()
    assert "handler bug" in caplog.text


def test_raw_client_message_sizes_via_local_manager(local: Any) -> None:
    """The batch hands over messages assembled from many frames and reads in one poll."""
    lo = local()
    conn = lo.ws_conn()
    r = lo.raws[-1]
    r.send(b"".join(frame(OP_BINARY, bytes([i]) * i, mask=MASK_KEY) for i in range(1, 60)))
    lo.poll_until(lambda: lo.count(EV_WS_MSG) >= 59)
    msgs = [e[2] for e in lo.events if e[0] == EV_WS_MSG]
    assert [m.data for m in msgs] == [bytes([i]) * i for i in range(1, 60)]
    assert all(m.opcode == OP_BINARY and m.flags == OP_BINARY for m in msgs)
    assert conn.is_websocket and not conn.closed


def test_handler_exception_on_http_request_answers_500(
        server_factory: Callable[..., ServerThread], caplog: Any) -> None:
    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            if data.uri == "/boom":
                raise ValueError("http handler bug")
            conn.reply(200, "fine")

    srv = server_factory(h)
    hc = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    hc.request("GET", "/boom")
    resp = hc.getresponse()
    assert resp.status == 500
    resp.read()
    hc.close()
    hc = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    hc.request("GET", "/ok")
    resp = hc.getresponse()
    assert (resp.status, resp.read()) == (200, b"fine")
    hc.close()
    assert "http handler bug" in caplog.text
