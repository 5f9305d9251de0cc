"""Malformed WebSocket upgrades are answered by pyws itself, whatever the application does.

A request *asks for a WebSocket upgrade* when some ``Upgrade`` header has the token
``websocket`` (any case). If it then breaks RFC 6455 §4.2.1, pyws answers it 400 Bad Request (426
Upgrade Required with ``Sec-WebSocket-Version: 13`` when the version is missing or not 13),
with a body saying what was wrong, and closes the connection; the handler never gets the
request (EV_HTTP_MSG), only an EV_ERROR with ``conn.error`` (a HandshakeError carrying the
status). A request without that header is plain HTTP and reaches the handler as before.

Each case runs over real sockets against (a) Manager handlers that answer 200 to anything or
call ws_upgrade on anything, (b) an App with a WebSocket route (and an HTTP route) at the path,
(c) examples/echo_server.py as a subprocess; after each, a valid upgrade on a fresh connection
still echoes."""
from __future__ import annotations

import base64
import logging
import queue
import socket
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import pytest
import websocket

import pyws
from pyws import EV_CLOSE, EV_ERROR, EV_HTTP_MSG, EV_WS_MSG

from conftest import AppServer, ExampleProcess, ServerThread

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3: base64 of 16 bytes


def request(method: str = "GET", version: str = "HTTP/1.1", path: str = "/ws",
            upgrade: Optional[str] = "websocket", connection: Optional[str] = "Upgrade",
            key: Optional[str] = KEY, ws_version: Optional[str] = "13") -> bytes:
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1"]
    if upgrade is not None:
        lines.append(f"Upgrade: {upgrade}")
    if connection is not None:
        lines.append(f"Connection: {connection}")
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if ws_version is not None:
        lines.append(f"Sec-WebSocket-Version: {ws_version}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Case(NamedTuple):
    request: bytes
    status: int
    says: str  # a piece of the body (and of the EV_ERROR text) naming what was wrong


CASES: Dict[str, Case] = {
    "POST": Case(request(method="POST"), 400, "must be GET"),
    "HTTP/1.0": Case(request(version="HTTP/1.0"), 400, "HTTP/1.1"),
    "missing key": Case(request(key=None), 400, "missing Sec-WebSocket-Key"),
    "key of 15 bytes": Case(request(key=base64.b64encode(b"k" * 15).decode()), 400,
                            "Sec-WebSocket-Key must be 16 bytes in base64"),
    "key of 17 bytes": Case(request(key=base64.b64encode(b"k" * 17).decode()), 400,
                            "Sec-WebSocket-Key must be 16 bytes in base64"),
    "key not base64": Case(request(key="!!!!" * 6), 400,
                           "Sec-WebSocket-Key must be 16 bytes in base64"),
    "version 8": Case(request(ws_version="8"), 426, "Sec-WebSocket-Version"),
    "missing version": Case(request(ws_version=None), 426, "missing Sec-WebSocket-Version"),
    "no Connection": Case(request(connection=None), 400, "Connection: Upgrade"),
    "Connection without upgrade": Case(request(connection="keep-alive"), 400,
                                       "lacks the upgrade token"),
    "mixed-case Upgrade, no key": Case(request(upgrade="h2c, WebSocket", key=None), 400,
                                       "missing Sec-WebSocket-Key"),
}
CASE_IDS = list(CASES)

PLAIN_GET = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class Answer(NamedTuple):
    status: int
    headers: Dict[str, str]
    body: bytes
    closed: bool  # the server closed TCP after answering


def ask(port: int, data: bytes, timeout: float = 5.0) -> Answer:
    """Send data on a fresh connection and read the answer until the server closes TCP (or a
    keep-alive answer is complete and nothing else comes within a moment)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        closed = False
        deadline = time.monotonic() + timeout
        head_end = -1
        length = -1
        while time.monotonic() < deadline:
            if head_end >= 0 and len(buf) >= head_end + length:
                s.settimeout(0.3)  # whole answer here: does the server close?
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            buf += chunk
            if head_end < 0 and b"\r\n\r\n" in buf:
                head_end = buf.index(b"\r\n\r\n") + 4
                for line in buf[:head_end].decode("latin-1").split("\r\n")[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                length = max(length, 0)
    assert head_end >= 0, f"no HTTP answer: {buf!r}"
    lines = buf[:head_end].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return Answer(int(lines[0].split(" ")[1]), headers, buf[head_end:], closed)


def assert_rejected(ans: Answer, case: Case) -> None:
    assert ans.status == case.status, ans
    assert ans.closed, "the server must close the connection after answering a bad upgrade"
    assert ans.headers.get("connection", "").lower() == "close"
    if case.status == 426:
        assert ans.headers.get("sec-websocket-version") == "13"
    else:
        assert "sec-websocket-version" not in ans.headers
    reason = "Bad Request" if case.status == 400 else "Upgrade Required"
    text = ans.body.decode()
    assert text.startswith(f"{case.status} {reason}: "), text
    assert case.says in text, text
    assert len(ans.body) == int(ans.headers["content-length"])


def assert_valid_upgrade_works(port: int, path: str = "/ws") -> None:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=5)
    try:
        ws.send("still served?")
        assert ws.recv() == "still served?"
    finally:
        ws.close()


# --------------------------------------------------------------------------- (a) Manager

class Recorder:
    """A Manager handler that either answers 200 to every request or calls ws_upgrade on every
    request (seed style), echoes messages and records what it saw."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.events: "queue.Queue[Tuple[str, Any]]" = queue.Queue()

    def __call__(self, conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            self.events.put(("http", (data.method, data.uri, data.is_websocket_upgrade)))
            if self.mode == "reply200" and not data.is_websocket_upgrade:
                conn.reply(200, "handler says ok\n")
            else:
                try:
                    conn.ws_upgrade(data)
                except pyws.HandshakeError as exc:
                    self.events.put(("upgrade_failed", exc.status))
        elif ev == EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)
        elif ev == EV_ERROR:
            err = conn.error if conn is not None else None
            self.events.put(("error", (data, getattr(err, "status", None), type(err).__name__)))
        elif ev == EV_CLOSE:
            self.events.put(("close", conn.is_websocket))

    def drain(self, settle: float = 0.2) -> List[Tuple[str, Any]]:
        out: List[Tuple[str, Any]] = []
        deadline = time.monotonic() + settle
        while True:
            try:
                out.append(self.events.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return out


@pytest.mark.parametrize("mode", ["reply200", "upgrade_all"])
@pytest.mark.parametrize("name", CASE_IDS)
def test_manager_answers_bad_upgrade_itself(server_factory: Callable[..., ServerThread],
                                            mode: str, name: str) -> None:
    case = CASES[name]
    rec = Recorder(mode)
    srv = server_factory(rec)
    ans = ask(srv.port, case.request)
    assert_rejected(ans, case)
    seen = rec.drain()
    # the handler never got the request, only the error (with conn.error) and the close
    assert not [e for e in seen if e[0] in ("http", "upgrade_failed")], seen
    errors = [v for k, v in seen if k == "error"]
    assert len(errors) == 1, seen
    text, status, kind = errors[0]
    assert kind == "HandshakeError" and status == case.status
    assert text.startswith(f"{case.status} ") and case.says in text, text
    assert ("close", False) in seen
    assert_valid_upgrade_works(srv.port)


@pytest.mark.parametrize("mode", ["reply200", "upgrade_all"])
def test_manager_plain_get_reaches_the_handler(server_factory: Callable[..., ServerThread],
                                              mode: str) -> None:
    rec = Recorder(mode)
    srv = server_factory(rec)
    ans = ask(srv.port, PLAIN_GET)
    seen = rec.drain()
    assert ("http", ("GET", "/ws", False)) in seen
    if mode == "reply200":
        assert ans.status == 200 and ans.body == b"handler says ok\n"
        assert not ans.closed  # keep-alive: the handler's answer does not close
    else:
        # the handler chose to upgrade a request that did not ask: ws_upgrade raises
        # HandshakeError(status=400) and the client is told why
        assert ("upgrade_failed", 400) in seen
        assert ans.status == 400 and ans.closed
        assert b"does not ask for a WebSocket upgrade" in ans.body
    assert_valid_upgrade_works(srv.port)


def test_manager_keep_alive_then_bad_upgrade(server_factory: Callable[..., ServerThread]) -> None:
    """A plain request answered by the handler, then a bad upgrade on the same connection: the
    first answer is the handler's, the second pyws's, and then the connection closes."""
    rec = Recorder("reply200")
    srv = server_factory(rec)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(PLAIN_GET + request(ws_version="8") + PLAIN_GET)
        buf = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    assert buf.startswith(b"HTTP/1.1 200 OK\r\n"), buf
    second = buf[buf.index(b"HTTP/1.1 426 "):]
    assert b"Sec-WebSocket-Version: 13\r\n" in second
    assert buf.count(b"HTTP/1.1 ") == 2  # nothing after the bad upgrade is served
    seen = rec.drain()
    assert [v for k, v in seen if k == "http"] == [("GET", "/ws", False)]


def test_valid_upgrade_still_reaches_the_handler(server_factory: Callable[..., ServerThread]
                                                 ) -> None:
    rec = Recorder("upgrade_all")
    srv = server_factory(rec)
    assert_valid_upgrade_works(srv.port)
    seen = rec.drain()
    assert ("http", ("GET", "/ws", True)) in seen
    assert not [e for e in seen if e[0] == "error"]


# --------------------------------------------------------------------------- (b) App

def make_app() -> Tuple[pyws.App, "queue.Queue[str]"]:
    app = pyws.App()
    calls: "queue.Queue[str]" = queue.Queue()

    @app.websocket("/ws")
    def echo(ws: pyws.WebSocket) -> Any:
        calls.put("websocket")
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            ws.send(msg.data if msg.is_binary() else msg.text)

    @app.route("/ws", methods=["GET", "POST"])
    def page(req: pyws.Request) -> str:
        calls.put(f"http {req.method}")
        return "http route says ok\n"

    return app, calls


def drained(q: "queue.Queue[str]", settle: float = 0.2) -> List[str]:
    out: List[str] = []
    deadline = time.monotonic() + settle
    while True:
        try:
            out.append(q.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            return out


@pytest.mark.parametrize("name", CASE_IDS)
def test_app_answers_bad_upgrade_itself(serve: Callable[..., AppServer], caplog: Any,
                                        name: str) -> None:
    case = CASES[name]
    app, calls = make_app()
    srv = serve(app)
    with caplog.at_level(logging.INFO, logger="pyws"):
        ans = ask(srv.port, case.request)
        assert_rejected(ans, case)
        assert drained(calls) == []  # neither the WebSocket nor the HTTP route ran
    logged = [r.getMessage() for r in caplog.records if r.name == "pyws"]
    assert any(case.says in m and f"{case.status} " in m for m in logged), logged
    assert_valid_upgrade_works(srv.port)
    assert drained(calls) == ["websocket"]


def test_app_plain_get_reaches_the_http_route(serve: Callable[..., AppServer]) -> None:
    app, calls = make_app()
    srv = serve(app)
    ans = ask(srv.port, PLAIN_GET)
    assert ans.status == 200 and ans.body == b"http route says ok\n" and not ans.closed
    assert drained(calls) == ["http GET"]


def test_app_plain_get_without_http_route_is_426(serve: Callable[..., AppServer]) -> None:
    """Unchanged: a plain GET to a WebSocket-only path is the App's own 426 (keep-alive), not
    a bad upgrade."""
    app = pyws.App()

    @app.websocket("/ws")
    def echo(ws: pyws.WebSocket) -> Any:
        msg = yield ws.recv()
        if msg is not None:
            ws.send(msg.text)

    srv = serve(app)
    ans = ask(srv.port, PLAIN_GET)
    assert ans.status == 426 and not ans.closed
    assert ans.headers.get("upgrade") == "websocket"


# --------------------------------------------------------------------------- (c) the example

@pytest.fixture
def echo_example(run_example: Callable[..., ExampleProcess]) -> ExampleProcess:
    return run_example("echo_server.py")


@pytest.mark.parametrize("name", CASE_IDS)
def test_echo_server_example_answers_bad_upgrade(echo_example: ExampleProcess,
                                                 name: str) -> None:
    case = CASES[name]
    assert_rejected(ask(echo_example.port, case.request), case)
    assert_valid_upgrade_works(echo_example.port)
    assert echo_example.proc.poll() is None


def test_echo_server_example_plain_get_is_200(echo_example: ExampleProcess) -> None:
    ans = ask(echo_example.port, PLAIN_GET)
    assert ans.status == 200 and b"echo server" in ans.body


# the other examples that answer HTTP: a bad upgrade to their page ("/", where a plain GET is
# 200) or to their WebSocket path is pyws's 400/426, never the page
@pytest.mark.parametrize("example, ws_path", [
    ("chat_server.py", "/ws"), ("broadcast_server.py", "/"), ("rooms_chat.py", "/ws/rooms/x"),
    ("generator_echo.py", "/"), ("live_dashboard.py", "/ws/metrics"),
])
def test_examples_never_answer_a_bad_upgrade_200(run_example: Callable[..., ExampleProcess],
                                                 example: str, ws_path: str) -> None:
    ep = run_example(example)
    plain = ask(ep.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert plain.status == 200  # the page is there
    for path in sorted({"/", ws_path}):
        assert_rejected(ask(ep.port, request(method="POST", path=path)), CASES["POST"])
        assert_rejected(ask(ep.port, request(ws_version="8", path=path)), CASES["version 8"])
        assert_rejected(ask(ep.port, request(key=None, path=path)), CASES["missing key"])
    assert ep.proc.poll() is None
