"""The blocking client, ``pyws.connect(url) -> ClientConnection``, against pyws' own server (in
a background thread): every send form, recv with and without timeouts, recv_json, ping both
ways, close codes and reasons both ways, iteration, the context manager, subprotocols, request
and response headers, max_size, payload sizes 0 B .. 8 MiB, many clients in threads, and the
timeouts (open, recv, close) against servers that stall."""
from __future__ import annotations

import json
import struct
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import pyws
from pyws import (EV_CLOSE, EV_HTTP_MSG, EV_WS_CTL, EV_WS_MSG, EV_WS_OPEN, OP_BINARY, OP_PING,
                  OP_PONG, OP_TEXT, Message)
from pyws._lib import lib

from conftest import ServerThread
from test_client_bad_server import OP_CLOSE, Peer, RawServer, raw_server  # noqa: F401

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20]
MiB = 1 << 20


def payload_of(n: int) -> bytes:
    block = bytes((i * 7 + 3) & 0xFF for i in range(4096))
    return block * (n // 4096) + block[: n % 4096]


def text_of(n: int) -> str:
    """A str of exactly n UTF-8 bytes mixing 1-, 2-, 3- and 4-byte characters."""
    unit = "aé€😀"  # 1 + 2 + 3 + 4 = 10 bytes
    s = unit * (n // 10)
    tail = n % 10
    s += {0: "", 1: "a", 2: "é", 3: "€", 4: "😀", 5: "a😀", 6: "é😀", 7: "€😀", 8: "😀😀",
          9: "a😀😀"}[tail]
    assert len(s.encode()) == n
    return s


def wait_until(cond: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


class Recorder:
    """A pyws server handler that records what the server saw: the upgrade requests, control
    frames (control_events=True), and each connection's close code and reason. ``on_open`` and
    ``on_msg`` script the server (the default echoes); ``protocols`` are the subprotocols it
    supports, in order of preference."""

    def __init__(self, on_open: Optional[Callable[[pyws.Connection], Any]] = None,
                 on_msg: Optional[Callable[[pyws.Connection, Message], Any]] = None,
                 protocols: Optional[List[str]] = None,
                 upgrade_headers: Optional[Dict[str, str]] = None) -> None:
        self.on_open = on_open
        self.on_msg = on_msg
        self.protocols = protocols or []
        self.upgrade_headers = upgrade_headers
        self.requests: List[pyws.HttpMessage] = []
        self.ctl: List[Tuple[int, bytes]] = []
        self.closes: List[Tuple[Optional[int], str]] = []
        self.messages: List[Message] = []

    def handler(self, conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            self.requests.append(data)
            if not data.is_websocket_upgrade:
                conn.reply(404, "not here\n")
                conn.drain()
                return
            offered = [p.strip() for p in (data.header("sec-websocket-protocol") or "").split(",")]
            chosen = next((p for p in self.protocols if p in offered), None)
            conn.ws_upgrade(data, chosen, self.upgrade_headers)
        elif ev == EV_WS_OPEN:
            if self.on_open:
                self.on_open(conn)
        elif ev == EV_WS_MSG:
            self.messages.append(data.detach())  # kept past the handler
            if self.on_msg:
                self.on_msg(conn, data)
            else:
                conn.ws_send(data.data, data.opcode)
        elif ev == EV_WS_CTL:
            self.ctl.append((data.opcode, data.data))
        elif ev == EV_CLOSE:
            self.closes.append((conn.close_code, conn.close_reason))


@pytest.fixture
def recorder_server(server_factory: Callable[..., ServerThread]) -> Callable[..., Any]:
    """``recorder_server(**recorder_kwargs) -> (recorder, server)``."""
    def make(**kw: Any) -> Tuple[Recorder, ServerThread]:
        opts = kw.pop("server_options", {})
        rec = Recorder(**kw)
        srv = server_factory(rec.handler, control_events=True, **opts)
        return rec, srv
    return make


def connect(url: str, **kw: Any) -> pyws.ClientConnection:
    kw.setdefault("timeout", 10)
    kw.setdefault("open_timeout", 5)
    kw.setdefault("close_timeout", 3)
    return pyws.connect(url, **kw)


# =========================================================================== echo sizes

@pytest.mark.parametrize("n", SIZES)
def test_echo_sizes_binary(echo_server: ServerThread, n: int) -> None:
    with connect(echo_server.url + "/ws") as ws:
        data = payload_of(n)
        ws.send(data)
        m = ws.recv()
        assert m.opcode == OP_BINARY and m.is_binary()
        assert m.data == data


@pytest.mark.parametrize("n", SIZES)
def test_echo_sizes_text(echo_server: ServerThread, n: int) -> None:
    with connect(echo_server.url + "/ws") as ws:
        text = text_of(n)
        ws.send(text)
        m = ws.recv()
        assert m.opcode == OP_TEXT and m.is_text()
        assert m.text == text


@pytest.mark.slow
@pytest.mark.parametrize("n", [4 * MiB, 8 * MiB])
def test_echo_large(echo_server: ServerThread, n: int) -> None:
    with connect(echo_server.url + "/ws", max_size=16 * MiB) as ws:
        data = payload_of(n)
        ws.send_bytes(data)
        assert ws.recv().data == data
        text = text_of(n)
        ws.send_text(text)
        assert ws.recv().text == text


def test_many_messages_in_order(echo_server: ServerThread) -> None:
    with connect(echo_server.url + "/ws") as ws:
        for i in range(500):
            ws.send(f"m{i}" if i % 2 else payload_of(i))
        for i in range(500):
            m = ws.recv()
            assert m.data == (f"m{i}".encode() if i % 2 else payload_of(i))


def test_fragmented_messages_from_a_pyws_server(recorder_server: Any) -> None:
    def on_msg(c: pyws.Connection, m: Message) -> None:
        if m.text == "text":
            c.send_fragments(["frag", "", "mented ", "tëxt"], OP_TEXT)
        elif m.text == "utf8-split":
            smile = "😀".encode()
            c.send_fragments([smile[:1], smile[1:2], smile[2:]], OP_TEXT)
        else:
            data = payload_of(int(m.text))
            c.send_fragments([data[i:i + 65536] for i in range(0, len(data), 65536)],
                             OP_BINARY)

    rec, srv = recorder_server(on_msg=on_msg)
    with connect(srv.url + "/ws", max_size=8 * MiB) as ws:
        ws.send("text")
        m = ws.recv()
        assert (m.opcode, m.text) == (OP_TEXT, "fragmented tëxt")
        ws.send("utf8-split")
        assert ws.recv().text == "😀"
        for n in (1, 65536, 65537, 3 * MiB):
            ws.send(str(n))
            m = ws.recv()
            assert m.opcode == OP_BINARY and m.data == payload_of(n)


def test_fragmented_messages_to_a_pyws_server(recorder_server: Any) -> None:
    """The blocking client's own Connection can send fragments (conn.send_fragments): the pyws
    server assembles them into one message."""
    rec, srv = recorder_server()
    with connect(srv.url + "/ws") as ws:
        ws._conn.send_fragments(["a", "bc", "déf"], OP_TEXT)
        ws._conn.send_fragments([payload_of(70000), payload_of(10)], OP_BINARY)
        m1, m2 = ws.recv(), ws.recv()
    assert (m1.opcode, m1.text) == (OP_TEXT, "abcdéf")
    assert (m2.opcode, m2.data) == (OP_BINARY, payload_of(70000) + payload_of(10))
    assert [m.data for m in rec.messages] == [m1.data, m2.data]


# =========================================================================== sending

def test_send_forms(echo_server: ServerThread) -> None:
    with connect(echo_server.url + "/ws") as ws:
        ws.send("text é")
        ws.send(b"bytes")
        ws.send(bytearray(b"bytearray"))
        ws.send(memoryview(b"xxmemoryviewxx")[2:-2])
        ws.send(Message.text("a Message"))
        ws.send(Message.binary(b"\x00\xffbin"))
        ws.send_text("send_text")
        ws.send_bytes(b"send_bytes")
        ws.send_bytes(bytearray(b"ba"))
        ws.send_json({"a": [1, 2, {"b": None}], "s": "é"})
        got = [ws.recv() for _ in range(10)]
    assert [(m.opcode, m.data) for m in got[:9]] == [
        (OP_TEXT, "text é".encode()), (OP_BINARY, b"bytes"), (OP_BINARY, b"bytearray"),
        (OP_BINARY, b"memoryview"), (OP_TEXT, b"a Message"), (OP_BINARY, b"\x00\xffbin"),
        (OP_TEXT, b"send_text"), (OP_BINARY, b"send_bytes"), (OP_BINARY, b"ba")]
    assert got[9].opcode == OP_TEXT
    assert got[9].json() == {"a": [1, 2, {"b": None}], "s": "é"}


def test_send_json_and_recv_json(echo_server: ServerThread) -> None:
    with connect(echo_server.url + "/ws") as ws:
        obj = {"n": 1, "list": [1.5, "two", True], "nested": {"k": "v"}}
        ws.send_json(obj)
        assert ws.recv_json() == obj
        ws.send_json([1, 2], dumps=lambda o: json.dumps(o, separators=(",", ":")))
        m = ws.recv()
        assert m.text == "[1,2]"
        ws.send("not json")
        with pytest.raises(ValueError):
            ws.recv_json()


def test_send_wrong_type(echo_server: ServerThread) -> None:
    with connect(echo_server.url + "/ws") as ws:
        with pytest.raises(TypeError):
            ws.send(12345)  # type: ignore[arg-type]
        ws.send("still fine")
        assert ws.recv().text == "still fine"


def test_blocking_send_waits_for_a_slow_server(raw_server: Any) -> None:
    """Sending much more than the write buffer holds to a server that reads late blocks until
    the data is written; it does not fail with 1008 (write_limit) like a non-blocking queue."""
    got: Dict[str, int] = {}

    def behave(p: Peer) -> None:
        p.handshake()
        time.sleep(0.7)  # not reading: TCP fills up
        close, before = p.recv_until_close(timeout=10)
        got["n"] = len(before)
        got["bytes"] = sum(len(f.payload) for f in before)
        p.send_frame(close.payload, OP_CLOSE)

    s = raw_server(behave)
    with connect(s.url(), write_limit=4 * MiB, close_timeout=10) as ws:
        for _ in range(24):  # 24 MiB: six times write_limit
            ws.send_bytes(b"q" * MiB)
    s.stop()
    s.check()
    assert got == {"n": 24, "bytes": 24 * MiB}


# =========================================================================== receiving, timeouts

def test_recv_timeout_argument(echo_server: ServerThread) -> None:
    with connect(echo_server.url + "/ws", timeout=None) as ws:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
        elapsed = time.monotonic() - t0
        assert 0.25 <= elapsed < 3.0, elapsed
        ws.send("after a timeout")  # the connection is still fine
        assert ws.recv(timeout=5).text == "after a timeout"


def test_recv_default_timeout_from_connect(echo_server: ServerThread) -> None:
    with connect(echo_server.url + "/ws", timeout=0.3) as ws:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            ws.recv()
        assert 0.25 <= time.monotonic() - t0 < 3.0
        with pytest.raises(TimeoutError):
            ws.recv_json()
        assert not ws.closed


def test_recv_zero_timeout_reads_what_has_arrived(echo_server: ServerThread) -> None:
    with connect(echo_server.url + "/ws") as ws:
        with pytest.raises(TimeoutError):
            ws.recv(0)
        ws.send("ready")
        time.sleep(0.3)  # the echo is in our socket, nothing has read it yet
        t0 = time.monotonic()
        assert ws.recv(0).text == "ready"
        assert time.monotonic() - t0 < 2.0
        with pytest.raises(TimeoutError):
            ws.recv(0)


def test_recv_none_waits_for_a_late_message(recorder_server: Any) -> None:
    rec, srv = recorder_server(on_open=lambda c: srv.mgr.timer(0.6, lambda: c.send("late")))
    with connect(srv.url + "/ws", timeout=0.1) as ws:
        t0 = time.monotonic()
        assert ws.recv(timeout=None).text == "late"
        assert 0.4 < time.monotonic() - t0 < 3


def test_open_timeout_against_a_server_that_never_upgrades(
        server_factory: Callable[..., ServerThread]) -> None:
    """A pyws server whose handler ignores the upgrade request: TimeoutError after
    open_timeout."""
    srv = server_factory(lambda conn, ev, data: None)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        connect(srv.url + "/ws", open_timeout=0.4)
    assert 0.3 < time.monotonic() - t0 < 3.0


def test_open_timeout_against_a_silent_raw_server(raw_server: Any) -> None:
    s = raw_server(lambda p: (p.read_request(), p.idle(3)))
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        connect(s.url(), open_timeout=0.3)
    assert 0.2 < time.monotonic() - t0 < 2.5  # below the server's 3 s idle


def test_close_timeout(raw_server: Any) -> None:
    """A server that reads our close frame and never answers: close() returns after about
    close_timeout and the connection is closed."""
    seen: Dict[str, Any] = {}

    def behave(p: Peer) -> None:
        p.handshake()
        close, _ = p.recv_until_close()
        seen["code"] = close.close_code
        seen["reason"] = close.payload[2:]
        seen["eof"] = p.wait_eof(4)

    s = raw_server(behave)
    ws = connect(s.url(), close_timeout=0.5)
    t0 = time.monotonic()
    ws.close(4321, "leaving")
    elapsed = time.monotonic() - t0
    assert 0.4 < elapsed < 3.0, elapsed  # close_timeout 0.5 s; the server waits 4 s
    assert ws.closed
    with pytest.raises(pyws.ConnectionClosed):
        ws.recv(0)
    s.stop()
    s.check()
    assert seen == {"code": 4321, "reason": b"leaving", "eof": True}


# =========================================================================== ping / pong

def test_client_ping_reaches_the_server(recorder_server: Any) -> None:
    rec, srv = recorder_server()
    with connect(srv.url + "/ws") as ws:
        ws.ping(b"hello")
        ws.ping("text ping")
        ws.ping()
        ws.send("sync")
        assert ws.recv().text == "sync"
    wait_until(lambda: len([c for c in rec.ctl if c[0] == OP_PING]) == 3)
    assert [d for op, d in rec.ctl if op == OP_PING] == [b"hello", b"text ping", b""]


def test_ping_too_long(echo_server: ServerThread) -> None:
    with connect(echo_server.url + "/ws") as ws:
        with pytest.raises(ValueError):
            ws.ping(b"x" * 126)
        ws.ping(b"x" * 125)
        ws.send("ok")
        assert ws.recv().text == "ok"


def test_server_ping_is_answered_while_receiving(recorder_server: Any) -> None:
    def on_open(c: pyws.Connection) -> None:
        c.ping(b"srv-ping-1")
        c.ping(b"srv-ping-2")

    def on_msg(c: pyws.Connection, m: Message) -> None:
        c.send(json.dumps([d.decode() for op, d in rec.ctl if op == OP_PONG]))

    rec, srv = recorder_server(on_open=on_open, on_msg=on_msg)
    with connect(srv.url + "/ws") as ws:
        # the pongs go out as the client polls; ask until the server has seen both
        deadline = time.monotonic() + 5
        pongs: List[str] = []
        while len(pongs) < 2 and time.monotonic() < deadline:
            ws.send("which pongs?")
            pongs = ws.recv_json()
            time.sleep(0.02)
    assert pongs == ["srv-ping-1", "srv-ping-2"]


def test_server_heartbeat_keeps_an_idle_client_alive(recorder_server: Any) -> None:
    rec, srv = recorder_server(server_options={"heartbeat": 0.1, "heartbeat_timeout": 0.5})
    with connect(srv.url + "/ws") as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1.2)  # polling the whole time: pings answered
        ws.send("still here")
        assert ws.recv().text == "still here"
    assert len([1 for op, _ in rec.ctl if op == OP_PONG]) >= 5


# =========================================================================== closing

def test_client_close_code_and_reason(recorder_server: Any) -> None:
    rec, srv = recorder_server()
    ws = connect(srv.url + "/ws")
    ws.close(4001, "bye now é")
    assert ws.closed
    wait_until(lambda: rec.closes)
    assert rec.closes == [(4001, "bye now é")]
    assert ws.close_code == 4001
    ws.close()  # twice is harmless
    with pytest.raises(pyws.ConnectionClosed):
        ws.send("x")
    with pytest.raises(pyws.ConnectionClosed):
        ws.recv(1)


def test_client_close_default_is_1000(recorder_server: Any) -> None:
    rec, srv = recorder_server()
    connect(srv.url + "/ws").close()
    wait_until(lambda: rec.closes)
    assert rec.closes == [(1000, "")]


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 5000])
def test_client_close_invalid_code(echo_server: ServerThread, code: int) -> None:
    ws = connect(echo_server.url + "/ws")
    try:
        with pytest.raises(ValueError):
            ws.close(code)
    finally:
        ws.close()
    assert ws.closed


def test_client_close_reason_too_long(echo_server: ServerThread) -> None:
    ws = connect(echo_server.url + "/ws")
    try:
        with pytest.raises(ValueError):
            ws.close(1000, "r" * 124)
    finally:
        ws.close()


@pytest.mark.parametrize("code,reason", [(1000, ""), (1001, "going"), (1011, "oops"),
                                         (3000, "app"), (4999, "é" * 40)])
def test_server_close_code_and_reason(recorder_server: Any, code: int, reason: str) -> None:
    def on_open(c: pyws.Connection) -> None:
        c.send("before 1")
        c.send(b"before 2")
        c.close(code, reason)

    rec, srv = recorder_server(on_open=on_open)
    ws = connect(srv.url + "/ws")
    try:
        assert ws.recv().text == "before 1"  # what came before the close is still read
        assert ws.recv().data == b"before 2"
        with pytest.raises(pyws.ConnectionClosed) as info:
            ws.recv()
        assert (info.value.code, info.value.reason) == (code, reason)
        assert isinstance(info.value, RuntimeError)
        assert (ws.close_code, ws.close_reason) == (code, reason)
        assert ws.closed
        with pytest.raises(pyws.ConnectionClosed):
            ws.send("after")
    finally:
        ws.close()


def test_server_close_without_code(recorder_server: Any) -> None:
    rec, srv = recorder_server(on_open=lambda c: c.close(0))
    with connect(srv.url + "/ws") as ws:
        with pytest.raises(pyws.ConnectionClosed) as info:
            ws.recv()
        assert info.value.code == 1005


def test_server_abort_is_1006(recorder_server: Any) -> None:
    rec, srv = recorder_server(on_msg=lambda c, m: c.abort())
    with connect(srv.url + "/ws") as ws:
        ws.send("kill me")
        with pytest.raises(pyws.ConnectionClosed) as info:
            ws.recv()
        assert info.value.code == 1006


def test_max_size(recorder_server: Any) -> None:
    rec, srv = recorder_server(on_msg=lambda c, m: c.send(b"z" * int(m.text)))
    ws = connect(srv.url + "/ws", max_size=1000)
    try:
        ws.send("1000")
        assert len(ws.recv().data) == 1000
        ws.send("1001")
        with pytest.raises(pyws.ConnectionClosed) as info:
            ws.recv()
        assert info.value.code == 1009
    finally:
        ws.close()
    wait_until(lambda: rec.closes)
    assert rec.closes[0][0] == 1009


# =========================================================================== iteration, with

def test_iteration_ends_on_a_normal_close(recorder_server: Any) -> None:
    def on_open(c: pyws.Connection) -> None:
        for i in range(3):
            c.send(f"m{i}")
        c.close(1000)

    rec, srv = recorder_server(on_open=on_open)
    with connect(srv.url + "/ws") as ws:
        got = [m.text for m in ws]
    assert got == ["m0", "m1", "m2"]


def test_iteration_ends_on_going_away(recorder_server: Any) -> None:
    rec, srv = recorder_server(on_open=lambda c: (c.send("only"), c.close(1001, "bye")))
    with connect(srv.url + "/ws") as ws:
        assert [m.text for m in ws] == ["only"]


def test_iteration_raises_on_an_error_close(recorder_server: Any) -> None:
    rec, srv = recorder_server(on_open=lambda c: (c.send("a"), c.send("b"), c.close(4000, "err")))
    got: List[str] = []
    with connect(srv.url + "/ws") as ws:
        with pytest.raises(pyws.ConnectionClosed) as info:
            for m in ws:
                got.append(m.text)
    assert got == ["a", "b"]
    assert (info.value.code, info.value.reason) == (4000, "err")


def test_iteration_with_break_and_echo(echo_server: ServerThread) -> None:
    with connect(echo_server.url + "/ws") as ws:
        ws.send("1")
        n = 0
        for m in ws:
            n += 1
            if n == 5:
                break
            ws.send(str(int(m.text) + 1))
        assert n == 5


def test_context_manager_closes_with_1000(recorder_server: Any) -> None:
    rec, srv = recorder_server()
    with connect(srv.url + "/ws") as ws:
        assert not ws.closed
    assert ws.closed
    wait_until(lambda: rec.closes)
    assert rec.closes == [(1000, "")]


def test_context_manager_closes_on_an_exception(recorder_server: Any) -> None:
    rec, srv = recorder_server()
    with pytest.raises(KeyError):
        with connect(srv.url + "/ws") as ws:
            raise KeyError("boom")
    assert ws.closed
    wait_until(lambda: rec.closes)
    assert rec.closes[0][0] == 1000


# =========================================================================== handshake details

def test_subprotocol_negotiated(recorder_server: Any) -> None:
    rec, srv = recorder_server(protocols=["v2.chat", "v1.chat"])
    with connect(srv.url + "/ws", subprotocols=["v1.chat", "v2.chat"]) as ws:
        assert ws.subprotocol == "v2.chat"
        assert ws.response_headers["Sec-WebSocket-Protocol"] == "v2.chat"
    assert rec.requests[0].header("sec-websocket-protocol") == "v1.chat, v2.chat"


def test_no_subprotocol_in_common(recorder_server: Any) -> None:
    rec, srv = recorder_server(protocols=["other"])
    with connect(srv.url + "/ws", subprotocols=["mine"]) as ws:
        assert ws.subprotocol is None


def test_request_headers_reach_the_server(recorder_server: Any) -> None:
    rec, srv = recorder_server()
    with connect(srv.url + "/path/x?k=v&k2=%20", origin="http://example.org",
                 headers={"X-Api-Key": "secret", "Cookie": "a=1; b=2"}):
        pass
    req = rec.requests[0]
    assert req.method == "GET"
    assert req.uri == "/path/x" and req.query == "k=v&k2=%20"
    assert req.header("host") == f"127.0.0.1:{srv.port}"
    assert req.header("origin") == "http://example.org"
    assert req.header("x-api-key") == "secret"
    assert req.cookies == {"a": "1", "b": "2"}
    assert req.is_websocket_upgrade


def test_response_and_remote_addr(recorder_server: Any) -> None:
    rec, srv = recorder_server(upgrade_headers={"X-Server": "pyws-test", "Set-Cookie": "s=1"})
    with connect(srv.url + "/ws") as ws:
        assert ws.response.status == 101
        assert ws.response_headers["x-server"] == "pyws-test"
        assert ws.response_headers["Set-Cookie"] == "s=1"
        assert "sec-websocket-accept" in ws.response_headers
        assert ws.remote_addr == f"127.0.0.1:{srv.port}"
        assert ws.subprotocol is None
        assert ws.close_code is None


def test_non_101_from_a_pyws_server(server_factory: Callable[..., ServerThread]) -> None:
    """A pyws server that answers a plain 404 to a path: HandshakeError with the status."""
    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.reply(404, "no such socket\n", {"X-Route": "none"})
            conn.drain()

    srv = server_factory(handler)
    with pytest.raises(pyws.HandshakeError) as info:
        connect(srv.url + "/nowhere")
    assert info.value.status == 404
    assert info.value.headers["x-route"] == "none"


def test_it_runs_on_the_c_engine(echo_server: ServerThread) -> None:
    """The blocking client is a Manager-driven client Connection, not a second protocol
    implementation: its socket lives in the C loop and the C core reports it upgraded."""
    with connect(echo_server.url + "/ws") as ws:
        mgr = ws._mgr
        conn = ws._conn
        assert isinstance(mgr, pyws.Manager) and isinstance(conn, pyws.Connection)
        assert conn.is_client and conn.is_websocket
        assert lib.pyws_is_websocket(mgr._loop, conn.id) == 1
        assert lib.pyws_conn_count(mgr._loop) == 1
        assert conn.memory > 0


def test_connect_refused_frees_everything() -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for _ in range(50):  # no leaked loop or descriptor makes this fail later
        with pytest.raises(ConnectionRefusedError):
            pyws.connect(f"ws://127.0.0.1:{port}/", open_timeout=2)


# =========================================================================== concurrency

def test_many_blocking_clients_in_threads(echo_server: ServerThread) -> None:
    errors: List[BaseException] = []
    counts: List[int] = []

    def client(k: int) -> None:
        try:
            with connect(echo_server.url + f"/c{k}") as ws:
                for i in range(20):
                    msg = f"{k}:{i}" if i % 2 else payload_of(k * 31 + i)
                    ws.send(msg)
                    got = ws.recv()
                    assert got.data == (msg.encode() if isinstance(msg, str) else msg)
                counts.append(20)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sum(counts) == 24 * 20


def test_a_connection_is_bound_to_its_thread(echo_server: ServerThread) -> None:
    """Using a ClientConnection from another thread than the one that made it is refused
    clearly (the loop is single-threaded), not a silent race."""
    with connect(echo_server.url + "/ws") as ws:
        box: List[BaseException] = []

        def other() -> None:
            try:
                ws.send("from another thread")
            except BaseException as exc:
                box.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join(5)
        assert len(box) == 1 and isinstance(box[0], pyws.WrongThreadError)
        ws.send("same thread")
        assert ws.recv().text == "same thread"


# =========================================================================== client-side timers

def test_client_heartbeat_closes_a_dead_server(raw_server: Any) -> None:
    """heartbeat/heartbeat_timeout (Manager options) work for the blocking client: a server
    that never answers pings is closed with 1011 and recv raises promptly."""
    pings: List[bytes] = []

    def behave(p: Peer) -> None:
        p.handshake()
        for _ in range(20):
            f = p.recv_frame()
            if f.opcode == OP_CLOSE:
                pings.append(f.payload[:2])
                return
            pings.append(f.payload)

    s = raw_server(behave)
    ws = connect(s.url(), heartbeat=0.1, heartbeat_timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(pyws.ConnectionClosed) as info:
        ws.recv(timeout=5)
    assert time.monotonic() - t0 < 3  # heartbeat_timeout 0.3 s, well before recv's 5 s
    assert info.value.code == 1011
    ws.close()
    s.stop()
    assert len(pings) >= 2 and pings[-1] == struct.pack("!H", 1011)


def test_open_timeout_none_means_no_deadline(echo_server: ServerThread) -> None:
    with pyws.connect(echo_server.url + "/ws", open_timeout=None, timeout=5) as ws:
        ws.send("no deadline")
        assert ws.recv().text == "no deadline"
