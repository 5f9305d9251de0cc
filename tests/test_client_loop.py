"""Clients in the loop: ``Manager.ws_connect`` (callback style) and ``App.connect`` (generator
style). Events reach the handler like a server connection's, in order (connect, open,
message..., close; error then close on failure); 100+ concurrent clients in one loop; the loop
never blocks on a TCP connect; redirects keep the same Connection object."""
from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Dict, Generator, List, Optional, Tuple

import pytest

import pyws
from pyws import (EV_CLOSE, EV_CONNECT, EV_ERROR, EV_HTTP_MSG, EV_WS_CTL, EV_WS_MSG,
                  EV_WS_OPEN, OP_BINARY, OP_PING, OP_PONG, OP_TEXT)

from conftest import ServerThread, echo_handler
from test_client_blocking import Recorder, recorder_server  # noqa: F401
from test_client_bad_server import (OP_CLOSE, Peer, RawServer, http_response,  # noqa: F401
                                    raw_server, response_101)


def run_until(mgr: Any, cond: Callable[[], Any], timeout: float = 5.0, step_ms: int = 20) -> None:
    """Poll ``mgr`` (a Manager or App) until cond() is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        mgr.poll(step_ms)


class Events:
    """A client handler recording (event, data) in order; scripted by ``on``."""

    def __init__(self, on: Optional[Callable[[pyws.Connection, int, Any], Any]] = None) -> None:
        self.log: List[Tuple[int, Any]] = []
        self.conns: List[pyws.Connection] = []
        self.on = on

    def __call__(self, conn: pyws.Connection, ev: int, data: Any) -> None:
        self.log.append((ev, data))
        self.conns.append(conn)
        if self.on is not None:
            self.on(conn, ev, data)

    @property
    def kinds(self) -> List[int]:
        return [ev for ev, _ in self.log]

    def has(self, ev: int) -> bool:
        return ev in self.kinds

    def messages(self) -> List[Any]:
        return [d for ev, d in self.log if ev == EV_WS_MSG]


# =========================================================================== event order

def test_events_in_order_client_closes(echo_server: ServerThread) -> None:
    def on(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_WS_OPEN:
            conn.send("one")
            conn.send(b"two")
        elif ev == EV_WS_MSG and len(rec.messages()) == 2:
            conn.close(4000, "done")

    rec = Events(on)
    with pyws.Manager() as mgr:
        c = mgr.ws_connect(echo_server.url + "/ws", rec)
        assert isinstance(c, pyws.Connection) and c.is_client and not c.is_websocket
        assert mgr.connections == [c]
        run_until(mgr, lambda: rec.has(EV_CLOSE))
    assert rec.kinds == [EV_CONNECT, EV_WS_OPEN, EV_WS_MSG, EV_WS_MSG, EV_CLOSE]
    assert all(x is c for x in rec.conns)
    assert [(m.opcode, m.data) for m in rec.messages()] == [(OP_TEXT, b"one"), (OP_BINARY, b"two")]
    response = rec.log[1][1]
    assert isinstance(response, pyws.HttpMessage) and response.status == 101
    assert c.response is response
    # the close code and reason are those of the server's answering close frame (pyws
    # echoes the code without the reason)
    assert c.closed and c.close_code == 4000
    assert c.error is None
    assert mgr.connections == [] if mgr._loop is not None else True


def test_events_in_order_server_closes(recorder_server: Any) -> None:
    rec_srv, srv = recorder_server(on_open=lambda c: (c.send("hi"), c.close(4100, "server bye")))
    rec = Events()
    with pyws.Manager() as mgr:
        c = mgr.ws_connect(srv.url + "/ws", rec)
        run_until(mgr, lambda: rec.has(EV_CLOSE))
    assert rec.kinds == [EV_CONNECT, EV_WS_OPEN, EV_WS_MSG, EV_CLOSE]
    assert rec.messages()[0].text == "hi"
    assert (c.close_code, c.close_reason) == (4100, "server bye")


def test_events_on_connect_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rec = Events()
    with pyws.Manager() as mgr:
        c = mgr.ws_connect(f"ws://127.0.0.1:{port}/", rec)
        run_until(mgr, lambda: rec.has(EV_CLOSE))
    assert rec.kinds == [EV_ERROR, EV_CLOSE]
    assert isinstance(rec.log[0][1], str) and "refused" in rec.log[0][1].lower()
    assert isinstance(c.error, ConnectionRefusedError)
    assert not c.is_websocket and c.closed


def test_events_on_handshake_failure(raw_server: Any) -> None:
    s = raw_server(lambda p: (p.handshake(accept="AAAAAAAAAAAAAAAAAAAAAAAAAAA="), p.idle(2)))
    rec = Events()
    with pyws.Manager() as mgr:
        c = mgr.ws_connect(s.url(), rec)
        run_until(mgr, lambda: rec.has(EV_CLOSE))
    assert rec.kinds == [EV_CONNECT, EV_ERROR, EV_CLOSE]
    assert isinstance(c.error, pyws.HandshakeError)
    assert "Accept" in rec.log[1][1]


def test_events_when_the_server_vanishes(raw_server: Any) -> None:
    s = raw_server(lambda p: (p.handshake(), p.send(b"\x82\x7e\x01\x00partial")))
    rec = Events()
    with pyws.Manager() as mgr:
        c = mgr.ws_connect(s.url(), rec)
        run_until(mgr, lambda: rec.has(EV_CLOSE))
    assert rec.kinds == [EV_CONNECT, EV_WS_OPEN, EV_CLOSE]
    assert c.close_code == 1006


def test_manager_default_handler_and_userdata(echo_server: ServerThread) -> None:
    """With handler=None the manager's handler gets the client's events; the Connection is
    the same kind of object a server connection is (userdata, send, close)."""
    seen: List[int] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        seen.append(ev)
        if ev == EV_WS_OPEN:
            conn.userdata = {"sent": 0}
            conn.send_json({"n": 1})
            conn.userdata["sent"] += 1
        elif ev == EV_WS_MSG:
            conn.userdata["got"] = data.json()
            conn.close()

    with pyws.Manager(handler) as mgr:
        c = mgr.ws_connect(echo_server.url + "/ws")
        run_until(mgr, lambda: EV_CLOSE in seen)
    assert seen == [EV_CONNECT, EV_WS_OPEN, EV_WS_MSG, EV_CLOSE]
    assert c.userdata == {"sent": 1, "got": {"n": 1}}
    assert c.close_code == 1000


def test_control_events_for_a_client(recorder_server: Any) -> None:
    """control_events=True on ws_connect: the server's ping and pong reach the client handler
    (the pong to the client's own ping too)."""
    rec_srv, srv = recorder_server(on_open=lambda c: c.ping(b"from server"))

    def on(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_WS_OPEN:
            conn.ping(b"from client")

    rec = Events(on)
    with pyws.Manager() as mgr:
        c = mgr.ws_connect(srv.url + "/ws", rec, control_events=True)
        run_until(mgr, lambda: len([1 for ev, _ in rec.log if ev == EV_WS_CTL]) >= 2)
        c.close()
        run_until(mgr, lambda: rec.has(EV_CLOSE))
    ctl = sorted((d.opcode, d.data) for ev, d in rec.log if ev == EV_WS_CTL and d.opcode != 8)
    assert ctl == [(OP_PING, b"from server"), (OP_PONG, b"from client")]
    assert (OP_PONG, b"from server") in rec_srv.ctl
    assert (OP_PING, b"from client") in rec_srv.ctl


def test_headers_origin_protocols_and_options(recorder_server: Any) -> None:
    rec_srv, srv = recorder_server(protocols=["b"],
                                   on_msg=lambda c, m: c.send(b"x" * int(m.text)))
    rec = Events(lambda conn, ev, data: conn.send("100") if ev == EV_WS_OPEN else
                 conn.send("101") if ev == EV_WS_MSG else None)
    with pyws.Manager() as mgr:
        c = mgr.ws_connect(srv.url + "/chat?room=7", rec, headers={"X-Token": "abc"},
                           origin="http://front.example", protocols=["a", "b"],
                           max_message_size=100)
        run_until(mgr, lambda: rec.has(EV_CLOSE))
    req = rec_srv.requests[0]
    assert req.uri == "/chat" and req.query == "room=7"
    assert req.header("x-token") == "abc"
    assert req.header("origin") == "http://front.example"
    assert req.header("sec-websocket-protocol") == "a, b"
    assert req.header("host") == f"127.0.0.1:{srv.port}"
    assert c.subprotocol == "b"
    assert [len(m.data) for m in rec.messages()] == [100]  # 101 bytes > max_message_size
    assert c.close_code == 1009


def test_unknown_option_and_bad_url_raise_at_once() -> None:
    with pyws.Manager() as mgr:
        with pytest.raises(TypeError):
            mgr.ws_connect("ws://127.0.0.1:1/", no_such_option=1)
        with pytest.raises(ValueError):
            mgr.ws_connect("http//oops")
        with pytest.raises(ValueError):
            mgr.ws_connect("ws://127.0.0.1:1/", protocols=["has space"])
        assert mgr.connections == []


def test_ws_connect_from_another_thread_is_refused(echo_server: ServerThread) -> None:
    mgr = pyws.Manager()
    box: List[BaseException] = []

    def other() -> None:
        try:
            mgr.ws_connect(echo_server.url)
        except BaseException as exc:
            box.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(5)
    mgr.close()
    assert len(box) == 1 and isinstance(box[0], pyws.WrongThreadError)


# =========================================================================== many clients

@pytest.mark.parametrize("n", [150])
def test_many_concurrent_clients_in_one_loop(echo_server: ServerThread, n: int) -> None:
    per_client = 5
    done: Dict[int, List[bytes]] = {}
    closed: List[Tuple[int, Optional[int]]] = []
    errors: List[str] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        k = conn.userdata
        if ev == EV_WS_OPEN:
            for i in range(per_client):
                conn.send(f"{k}-{i}".encode() * (1 + i * 100))
        elif ev == EV_WS_MSG:
            done.setdefault(k, []).append(data.data)
            if len(done[k]) == per_client:
                conn.close(1000, f"client {k}")
        elif ev == EV_CLOSE:
            closed.append((k, conn.close_code))
        elif ev == EV_ERROR:
            errors.append(data)

    with pyws.Manager(handler) as mgr:
        t0 = time.monotonic()
        conns = []
        for k in range(n):
            c = mgr.ws_connect(echo_server.url + f"/c/{k}")
            c.userdata = k
            conns.append(c)
        assert time.monotonic() - t0 < 2.0  # opening does not wait for anything
        assert len({c.id for c in conns}) == n
        run_until(mgr, lambda: len(closed) == n or errors, timeout=30)
    assert errors == []
    assert sorted(k for k, _ in closed) == list(range(n))
    assert all(code == 1000 for _, code in closed)
    for k in range(n):
        assert done[k] == [f"{k}-{i}".encode() * (1 + i * 100) for i in range(per_client)]


def test_server_and_clients_in_the_same_loop() -> None:
    """One Manager listens and connects to itself: 120 clients, the loop never waits on its
    own connects."""
    n = 120
    got: Dict[int, bytes] = {}
    closed: List[int] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if conn.is_client:
            if ev == EV_WS_OPEN:
                conn.send(f"hello {conn.userdata}")
            elif ev == EV_WS_MSG:
                got[conn.userdata] = data.data
                conn.close()
            elif ev == EV_CLOSE:
                closed.append(conn.userdata)
        else:
            echo_handler(conn, ev, data)

    with pyws.Manager(handler) as mgr:
        port = mgr.listen("http://127.0.0.1:0").port
        for k in range(n):
            mgr.ws_connect(f"ws://127.0.0.1:{port}/").userdata = k
        run_until(mgr, lambda: len(closed) == n, timeout=30)
    assert got == {k: f"hello {k}".encode() for k in range(n)}


# =========================================================================== never blocks on TCP

class BlackHole:
    """A listening socket that never accepts, its accept queue filled: further connects stay
    in SYN_SENT (Linux drops the SYNs) until they time out."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers: List[socket.socket] = []
        for _ in range(8):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(f)
        time.sleep(0.1)

    def is_black_hole(self) -> bool:
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect(("127.0.0.1", self.port))
            return False
        except (socket.timeout, OSError):
            return True
        finally:
            probe.close()

    def close(self) -> None:
        for f in self.fillers:
            f.close()
        self.sock.close()


def test_connect_never_blocks_the_loop(echo_server: ServerThread) -> None:
    """ws_connect to a server whose accept queue is full returns at once; poll(0) returns at
    once and poll(ms) keeps its timeout while the connect is pending; a timer and another
    client on the same loop run meanwhile; the pending connect ends with a TimeoutError after
    handshake_timeout."""
    hole = BlackHole()
    try:
        if not hole.is_black_hole():  # pragma: no cover - a kernel that accepts anyway
            pytest.fail("could not make a connect that stays pending")
        stuck = Events()
        other = Events(lambda c, ev, d: c.send("meanwhile") if ev == EV_WS_OPEN else None)
        ticks: List[float] = []
        with pyws.Manager() as mgr:
            # handshake_timeout 3 s: each bound below stays far under it, so "returns at once"
            # holds on a loaded machine and still fails if a call waits for the connect
            t0 = time.monotonic()
            c = mgr.ws_connect(f"ws://127.0.0.1:{hole.port}/", stuck, handshake_timeout=3.0)
            assert time.monotonic() - t0 < 1.0
            t0 = time.monotonic()
            mgr.poll(0)  # before the timer exists: nothing but the connect could end it
            assert time.monotonic() - t0 < 1.0
            mgr.timer(0.05, lambda: ticks.append(time.monotonic()), repeat=True)
            for _ in range(3):
                t0 = time.monotonic()
                mgr.poll(100)
                assert time.monotonic() - t0 < 0.8
            assert stuck.kinds == []  # still connecting
            mgr.ws_connect(echo_server.url + "/ws", other)
            run_until(mgr, lambda: other.messages(), timeout=1.0)
            assert other.messages()[0].text == "meanwhile"
            assert stuck.kinds == []
            assert len(ticks) >= 3
            run_until(mgr, lambda: stuck.has(EV_CLOSE), timeout=6)
        assert stuck.kinds == [EV_ERROR, EV_CLOSE]
        assert isinstance(c.error, TimeoutError)
        assert "in time" in str(c.error)
    finally:
        hole.close()


def test_blocking_connect_to_a_black_hole_times_out() -> None:
    hole = BlackHole()
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            pyws.connect(f"ws://127.0.0.1:{hole.port}/", open_timeout=0.5)
        assert 0.4 < time.monotonic() - t0 < 3.0
    finally:
        hole.close()


# =========================================================================== redirects

def test_redirect_keeps_the_same_connection(raw_server: Any, echo_server: ServerThread) -> None:
    def behave(p: Peer) -> None:
        p.read_request()
        p.send(http_response(307, "Temporary Redirect",
                             {"Location": echo_server.url + "/moved?x=1"}))
        p.wait_eof(2)

    s = raw_server(behave)
    addrs: List[str] = []

    def on(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_WS_OPEN:
            addrs.append(conn.remote_addr)
            conn.send("via redirect")
        elif ev == EV_WS_MSG:
            conn.close()

    rec = Events(on)
    with pyws.Manager() as mgr:
        c = mgr.ws_connect(s.url("/old"), rec)
        first_id = c.id
        run_until(mgr, lambda: rec.has(EV_CLOSE))
        assert mgr.connections == []
    assert all(x is c for x in rec.conns)
    assert c.id != first_id
    assert EV_ERROR not in rec.kinds
    assert rec.kinds.count(EV_CLOSE) == 1 and rec.kinds[-1] == EV_CLOSE
    assert rec.kinds.count(EV_WS_OPEN) == 1
    assert rec.kinds.index(EV_WS_OPEN) < rec.kinds.index(EV_WS_MSG)
    assert [m.text for m in rec.messages()] == ["via redirect"]
    assert c.close_code == 1000
    assert addrs == [f"127.0.0.1:{echo_server.port}"]  # the redirect target's


def test_redirect_loop_in_the_loop(raw_server: Any) -> None:
    def behave(p: Peer) -> None:
        p.read_request()
        p.send(http_response(301, "Moved", {"Location": "/loop"}))
        p.wait_eof(2)

    s = raw_server(behave)
    rec = Events()
    with pyws.Manager() as mgr:
        c = mgr.ws_connect(s.url("/loop"), rec, max_redirects=2)
        run_until(mgr, lambda: rec.has(EV_CLOSE))
    assert rec.kinds.count(EV_ERROR) == 1 and rec.kinds.count(EV_CLOSE) == 1
    assert rec.kinds[-2:] == [EV_ERROR, EV_CLOSE]
    assert EV_WS_OPEN not in rec.kinds
    assert isinstance(c.error, pyws.HandshakeError) and c.error.status == 301
    s.stop()
    assert len(s.requests) == 3


def test_redirect_to_a_refused_port(raw_server: Any) -> None:
    with socket.socket() as tmp:
        tmp.bind(("127.0.0.1", 0))
        dead = tmp.getsockname()[1]

    def behave(p: Peer) -> None:
        p.read_request()
        p.send(http_response(302, "Found", {"Location": f"ws://127.0.0.1:{dead}/"}))
        p.wait_eof(2)

    s = raw_server(behave)
    rec = Events()
    with pyws.Manager() as mgr:
        c = mgr.ws_connect(s.url(), rec)
        run_until(mgr, lambda: rec.has(EV_CLOSE))
    assert rec.kinds.count(EV_ERROR) == 1 and rec.kinds[-1] == EV_CLOSE
    assert isinstance(c.error, ConnectionRefusedError)


# =========================================================================== App.connect

def test_app_connect_generator_handler(recorder_server: Any) -> None:
    rec_srv, srv = recorder_server(upgrade_headers={"X-Hello": "there"})
    results: List[Any] = []

    def client(ws: pyws.WebSocket) -> Generator[Any, Any, None]:
        results.append(("connected", ws.connected, ws.request.headers.get("x-hello")))
        ws.send("hello")
        msg = yield ws.recv()
        results.append(msg.text)
        ws.send_bytes(b"\x00\x01")
        msg = yield ws.recv()
        results.append(msg.data)
        ws.send_json({"k": [1]})
        msg = yield ws.recv()
        results.append(msg.json())
        yield ws.sleep(0.05)
        results.append("slept")
        # returning closes with 1000

    app = pyws.App()
    try:
        conn = app.connect(srv.url + "/gen", client)
        assert isinstance(conn, pyws.Connection) and conn.is_client
        run_until(app, lambda: conn.closed)
    finally:
        app.close()
    assert results == [("connected", True, "there"), "hello", b"\x00\x01", {"k": [1]}, "slept"]
    deadline = time.monotonic() + 5
    while not rec_srv.closes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec_srv.closes == [(1000, "")]


def test_app_connect_sees_the_server_close(recorder_server: Any) -> None:
    rec_srv, srv = recorder_server(on_open=lambda c: (c.send("only"), c.close(4003, "enough")))
    out: List[Any] = []

    def client(ws: pyws.WebSocket) -> Generator[Any, Any, None]:
        while True:
            msg = yield ws.recv(timeout=5)
            if msg is None:
                out.append((ws.close_code, ws.close_reason))
                return
            out.append(msg.text)

    app = pyws.App()
    try:
        conn = app.connect(srv.url + "/", client)
        run_until(app, lambda: conn.closed and len(out) == 2)
    finally:
        app.close()
    assert out == ["only", (4003, "enough")]


def test_app_connect_failure_calls_the_handler_with_the_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seen: List[Any] = []

    def client(ws: pyws.WebSocket) -> Generator[Any, Any, None]:
        seen.append((ws.connected, ws.error))
        return
        yield  # a generator

    app = pyws.App()
    try:
        conn = app.connect(f"ws://127.0.0.1:{port}/", client)
        run_until(app, lambda: conn.closed)
    finally:
        app.close()
    assert len(seen) == 1
    assert seen[0][0] is False and isinstance(seen[0][1], ConnectionRefusedError)


def test_app_connect_handshake_failure(raw_server: Any) -> None:
    def behave(p: Peer) -> None:
        p.read_request()
        p.send(http_response(401, "Unauthorized", {"WWW-Authenticate": "Bearer"}))
        p.wait_eof(2)

    s = raw_server(behave)
    seen: List[Any] = []
    app = pyws.App()
    try:
        conn = app.connect(s.url(), lambda ws: seen.append(ws.error))
        run_until(app, lambda: conn.closed and seen)
    finally:
        app.close()
    assert len(seen) == 1 and isinstance(seen[0], pyws.HandshakeError)
    assert seen[0].status == 401 and seen[0].headers["www-authenticate"] == "Bearer"


def test_app_connect_handler_exception_closes_1011(recorder_server: Any) -> None:
    rec_srv, srv = recorder_server()

    def client(ws: pyws.WebSocket) -> Generator[Any, Any, None]:
        ws.send("x")
        yield ws.recv()
        raise RuntimeError("client bug")

    app = pyws.App()
    try:
        conn = app.connect(srv.url + "/", client)
        run_until(app, lambda: conn.closed)
    finally:
        app.close()
    deadline = time.monotonic() + 5
    while not rec_srv.closes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec_srv.closes[0][0] == 1011


def test_app_connects_to_itself() -> None:
    """An App serving a route and, on the same loop, 100 generator clients talking to it."""
    app = pyws.App()
    n = 100

    @app.websocket("/echo/{name}")
    def echo(ws: pyws.WebSocket) -> Generator[Any, Any, None]:
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            ws.send(f"{ws.params['name']}:{msg.text}")

    replies: Dict[int, List[str]] = {}

    def make_client(k: int) -> Callable[[pyws.WebSocket], Generator[Any, Any, None]]:
        def client(ws: pyws.WebSocket) -> Generator[Any, Any, None]:
            got: List[str] = []
            for i in range(3):
                ws.send(str(i))
                msg = yield ws.recv(timeout=10)
                got.append(msg.text)
            replies[k] = got
        return client

    try:
        port = app.listen("127.0.0.1", 0).port
        conns = [app.connect(f"ws://127.0.0.1:{port}/echo/c{k}", make_client(k))
                 for k in range(n)]
        run_until(app, lambda: all(c.closed for c in conns), timeout=30)
    finally:
        app.close()
    assert replies == {k: [f"c{k}:0", f"c{k}:1", f"c{k}:2"] for k in range(n)}


def test_app_client_sockets_do_not_use_server_capacity(serve: Any,
                                                       recorder_server: Any) -> None:
    """Outgoing client sockets of an App are not incoming connections: they must not count
    against max_connections_per_ip (nor free a slot of it when they close)."""
    rec_srv, other = recorder_server()
    app = pyws.App(max_connections_per_ip=1)

    @app.websocket("/in")
    def incoming(ws: pyws.WebSocket) -> Generator[Any, Any, None]:
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            ws.send(msg.data)

    client_done: List[bool] = []

    def client(ws: pyws.WebSocket) -> Generator[Any, Any, None]:
        ws.send("x")
        yield ws.recv()
        client_done.append(True)  # returning closes it

    srv = serve(app)
    first = pyws.connect(srv.url("/in"), open_timeout=5, timeout=5)
    try:
        srv.call(lambda: app.connect(other.url + "/out", client))
        deadline = time.monotonic() + 5
        while not client_done and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # its close is processed
        assert client_done
        # the incoming connection from 127.0.0.1 still holds the only slot
        with pytest.raises(pyws.HandshakeError) as info:
            pyws.connect(srv.url("/in"), open_timeout=5)
        assert info.value.status == 503
        first.send("still open")
        assert first.recv().text == "still open"
    finally:
        first.close()
