"""The generator-style App: handlers, what they yield (recv, recv with timeout, sleep, drain,
yield from), sends, accept/reject/subprotocol/headers, errors (1011, logged, isolated), plain
function handlers, Message and the enums, connection limits, and running it (run() with
SIGTERM/SIGINT in a subprocess, run() in a thread with stop(), listen() + poll() in our own
loop)."""
from __future__ import annotations

import logging
import os
import queue
import select
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
import websocket
from websocket import ABNF

import pyws
from pyws import CloseCode, Message, Opcode, WSCloseCode, WSMsgType

from _rawws import OP_CLOSE, OP_TEXT, RawWS, handshake_request
from conftest import PKG_PARENT, AppServer


# ---------------------------------------------------------------------------------- helpers
def connect(srv: AppServer, path: str = "/ws", **kw: Any) -> websocket.WebSocket:
    return websocket.create_connection(srv.url(path), timeout=5, **kw)


def wait_for(pred: Callable[[], Any], timeout: float = 5.0, step: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(step)


def recv_close(ws: websocket.WebSocket) -> Tuple[int, str]:
    """Read frames until the server's close frame: (code, reason). websocket-client answers
    the close frame but keeps its socket open (its close() is then a no-op), so the socket is
    shut here; otherwise the server waits close_timeout for the TCP end."""
    for _ in range(1000):
        op, frame = ws.recv_data_frame(True)
        if op == ABNF.OPCODE_CLOSE:
            ws.shutdown()
            code = struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else 1005
            return code, frame.data[2:].decode("utf-8")
    raise AssertionError("no close frame")


def echo_app(**options: Any) -> Tuple[pyws.App, "queue.Queue[Any]"]:
    """An App whose /ws handler echoes and reports its finally block on a queue."""
    app = pyws.App(**options)
    events: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/ws")
    def echo(ws: pyws.WebSocket) -> Any:
        try:
            while True:
                msg = yield ws.recv()
                if msg is None:
                    events.put(("none", ws.close_code, ws.close_reason, ws.connected))
                    return
                ws.send(msg)
        finally:
            events.put(("finally", ws.request.path))

    return app, events


# ---------------------------------------------------------------------------------- handlers
def test_params_and_request(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()
    seen: "queue.Queue[Dict[str, Any]]" = queue.Queue()

    @app.websocket("/ws/rooms/{room}/{n:int}")
    def room(ws: pyws.WebSocket) -> Any:
        r = ws.request
        seen.put({"params": dict(ws.params), "path": r.path, "query": r.query,
                  "args": r.args, "x": r.headers["x-test"], "X": r.headers.get("X-TEST"),
                  "cookies": r.cookies, "addr": r.remote_addr, "ip": r.remote_ip,
                  "ws_addr": ws.remote_addr, "method": r.method})
        msg = yield ws.recv()
        ws.send_text(f"{ws.params['room']}:{ws.params['n'] + 1}:{msg.text}")

    srv = serve(app)
    c = connect(srv, "/ws/rooms/lobby/41?a=1&b=two&a=3", header=["X-Test: hello"],
                cookie="sid=abc; theme=dark")
    try:
        info = seen.get(timeout=5)
        local_port = c.sock.getsockname()[1]
        c.send("hi")
        assert c.recv() == "lobby:42:hi"
        assert recv_close(c)[0] == 1000  # returning closes with 1000
    finally:
        c.close()
    assert info["params"] == {"room": "lobby", "n": 41}
    assert info["path"] == "/ws/rooms/lobby/41"
    assert info["query"] == "a=1&b=two&a=3"
    assert info["args"] == {"a": ["1", "3"], "b": ["two"]}
    assert info["x"] == info["X"] == "hello"
    assert info["cookies"] == {"sid": "abc", "theme": "dark"}
    assert info["ip"] == "127.0.0.1"
    assert info["addr"].startswith("127.0.0.1:") and info["addr"] == info["ws_addr"]
    assert int(info["addr"].rsplit(":", 1)[1]) == local_port
    assert info["method"] == "GET"


def test_echo_and_message_types(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()
    kinds: "queue.Queue[Tuple[Any, ...]]" = queue.Queue()

    @app.websocket("/ws")
    def echo(ws: pyws.WebSocket) -> Any:
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            kinds.put((msg.type, msg.opcode, msg.is_text(), msg.is_binary(), msg.is_close(),
                       msg.data))
            ws.send(msg)  # the opcode is kept

    srv = serve(app)
    c = connect(srv)
    try:
        c.send("héllo")
        assert c.recv() == "héllo"
        c.send_binary(b"\x00\xff")
        assert c.recv() == b"\x00\xff"
        c.send("")
        assert c.recv() == ""
    finally:
        c.close()
    assert kinds.get(timeout=5) == (Opcode.TEXT, 1, True, False, False, "héllo".encode())
    assert kinds.get(timeout=5) == (Opcode.BINARY, 2, False, True, False, b"\x00\xff")
    assert kinds.get(timeout=5)[5] == b""


def test_sends(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()

    @app.websocket("/ws")
    def sender(ws: pyws.WebSocket) -> Any:
        ws.send_text("text")
        ws.send_bytes(b"bytes")
        ws.send_bytes(bytearray(b"ba"))
        ws.send_json({"a": [1, 2]})
        ws.send(Message.text("mt"))
        ws.send(Message.binary(b"mb"))
        ws.send("plain str")
        ws.send(b"plain bytes")
        ws.ping(b"are you there")
        msg = yield ws.recv()
        ws.send_text(f"got {msg.text}")
        ws.close(4000, "done here")
        assert not ws.connected
        assert ws.close_code == 4000 and ws.close_reason == "done here"
        # a recv after our own close gives None (the connection is closing)
        again = yield ws.recv()
        ws.state["after_close"] = again

    srv = serve(app)
    c = connect(srv)
    try:
        got = []
        for _ in range(9):
            op, data = c.recv_data(control_frame=True)
            got.append((op, data))
        assert got == [
            (ABNF.OPCODE_TEXT, b"text"), (ABNF.OPCODE_BINARY, b"bytes"),
            (ABNF.OPCODE_BINARY, b"ba"), (ABNF.OPCODE_TEXT, b'{"a": [1, 2]}'),
            (ABNF.OPCODE_TEXT, b"mt"), (ABNF.OPCODE_BINARY, b"mb"),
            (ABNF.OPCODE_TEXT, b"plain str"), (ABNF.OPCODE_BINARY, b"plain bytes"),
            (ABNF.OPCODE_PING, b"are you there")]
        c.send("x")
        assert c.recv() == "got x"
        assert recv_close(c) == (4000, "done here")
    finally:
        c.close()


def test_recv_none_after_peer_close_then_finally(serve: Callable[..., AppServer]) -> None:
    app, events = echo_app()
    srv = serve(app)
    c = connect(srv)
    c.send("a")
    assert c.recv() == "a"
    c.close(status=4001, reason=b"bye")
    assert events.get(timeout=5) == ("none", 4001, "bye", False)
    assert events.get(timeout=5) == ("finally", "/ws")
    wait_for(lambda: srv.call(lambda: len(app.connections)) == 0)


def test_close_code_and_reason_come_from_the_same_frame(
        serve: Callable[..., AppServer]) -> None:
    # the server closes with (4000, "done here"); the peer answers (1000, no reason). Once
    # closed, ws.close_code/close_reason describe one frame, not a mix of the two
    app = pyws.App()
    seen: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/ws")
    def closer(ws: pyws.WebSocket) -> Any:
        ws.close(4000, "done here")
        seen.put(ws)
        msg = yield ws.recv()  # None at once: this side is closing
        seen.put((msg, ws.close_code, ws.close_reason))

    srv = serve(app)
    with RawWS(srv.port) as r:
        r.handshake("/ws")
        assert r.recv_close()[:2] == (4000, b"done here")
        r.send_frame(struct.pack("!H", 1000), OP_CLOSE)
        assert r.is_eof()
    ws = seen.get(timeout=5)
    assert seen.get(timeout=5) == (None, 4000, "done here")
    wait_for(lambda: srv.call(lambda: ws.conn.closed))
    final = srv.call(lambda: (ws.close_code, ws.close_reason))
    assert final in ((4000, "done here"), (1000, "")), final


def test_finally_runs_when_tcp_drops_without_close(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()
    events: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/ws")
    def waiter(ws: pyws.WebSocket) -> Any:
        try:
            msg = yield ws.recv()
            events.put(("recv", msg, ws.close_code))
            yield ws.recv()  # a second recv on a closed connection raises
        except pyws.ConnectionClosed as exc:
            events.put(("closed", exc.code))
        finally:
            events.put("finally")

    srv = serve(app)
    r = RawWS(srv.port)
    r.handshake("/ws")
    r.close()  # no close frame: TCP just ends
    assert events.get(timeout=5) == ("recv", None, 1006)
    assert events.get(timeout=5) == ("closed", 1006)
    assert events.get(timeout=5) == "finally"


def test_finally_runs_when_suspended_in_sleep(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()
    events: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/ws")
    def sleeper(ws: pyws.WebSocket) -> Any:
        try:
            ws.send_text("sleeping")
            yield ws.sleep(30)
            events.put("woke")  # must not happen
        except pyws.ConnectionClosed as exc:
            events.put(("closed", exc.code))
            raise
        finally:
            events.put("finally")

    srv = serve(app)
    c = connect(srv)
    assert c.recv() == "sleeping"
    t0 = time.monotonic()
    c.close()
    assert events.get(timeout=5) == ("closed", 1000)
    assert events.get(timeout=5) == "finally"
    assert time.monotonic() - t0 < 5
    assert events.empty()


def test_recv_timeout_raises_timeout_error(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()

    @app.websocket("/ws")
    def timed(ws: pyws.WebSocket) -> Any:
        t0 = time.monotonic()
        try:
            yield ws.recv(timeout=0.2)
        except TimeoutError:
            ws.send_text(f"timeout {time.monotonic() - t0:.3f}")
        msg = yield ws.recv(timeout=5)  # arrives in time: no TimeoutError
        ws.send_text("got " + msg.text)
        # a timed-out recv leaves nothing behind: the next message is not lost
        try:
            yield ws.recv(timeout=0.05)
        except TimeoutError:
            pass
        msg = yield ws.recv(timeout=5)
        ws.send_text("then " + msg.text)

    srv = serve(app)
    c = connect(srv)
    try:
        text = c.recv()
        assert text.startswith("timeout ")
        assert 0.18 <= float(text.split()[1]) < 3.0
        c.send("x")
        assert c.recv() == "got x"
        time.sleep(0.2)
        c.send("y")
        assert c.recv() == "then y"
        assert recv_close(c)[0] == 1000
    finally:
        c.close()


def test_uncaught_timeout_closes_1011(serve: Callable[..., AppServer], caplog: Any) -> None:
    app = pyws.App()

    @app.websocket("/ws")
    def timed(ws: pyws.WebSocket) -> Any:
        yield ws.recv(timeout=0.1)

    srv = serve(app)
    with caplog.at_level(logging.ERROR, logger="pyws"):
        c = connect(srv)
        try:
            assert recv_close(c)[0] == 1011
        finally:
            c.close()
    assert "TimeoutError" in caplog.text


def test_sleep(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()

    @app.websocket("/ws")
    def ticker(ws: pyws.WebSocket) -> Any:
        for i in range(3):
            t0 = time.monotonic()
            yield ws.sleep(0.1)
            ws.send_text(f"{i} {time.monotonic() - t0:.3f}")
        yield ws.sleep(0)  # zero is fine too
        ws.send_text("end")

    srv = serve(app)
    c = connect(srv)
    try:
        for i in range(3):
            n, dt = c.recv().split()
            assert int(n) == i and 0.09 <= float(dt) < 3.0
        assert c.recv() == "end"
    finally:
        c.close()


def test_drain_waits_for_the_write_buffer(serve: Callable[..., AppServer]) -> None:
    high = 64 * 1024
    app = pyws.App(write_high_water=high, write_limit=64 * 1024 * 1024)
    report: "queue.Queue[Any]" = queue.Queue()
    chunk = b"x" * 16384

    @app.websocket("/ws")
    def producer(ws: pyws.WebSocket) -> Any:
        sent = 0
        for _ in range(2000):  # fill until the kernel's buffers are full too
            while ws.write_buffer_size < 4 * high:
                ws.send_bytes(chunk)
                sent += 1
            yield ws.sleep(0.02)
            if ws.write_buffer_size >= 2 * high:
                break
        before = ws.write_buffer_size
        report.put("full")
        yield ws.drain()
        report.put((sent, before, ws.write_buffer_size))
        yield ws.drain()  # already under: resumes at once
        ws.send_text("done")
        yield ws.recv()

    srv = serve(app)
    r = RawWS(srv.port)
    try:
        r.handshake("/ws")
        assert report.get(timeout=10) == "full"
        time.sleep(0.2)  # not reading: the server's buffer stays full
        assert report.empty(), "drain resumed while the client was not reading"
        frames = 0
        for _ in range(20000):
            op, _fin, payload = r.recv_frame(5)
            if op == OP_TEXT:
                assert payload == b"done"
                break
            frames += 1
        sent, before, after = report.get(timeout=5)
        assert frames == sent
        assert before >= 2 * high and after < high  # the producer stops filling at 2x
    finally:
        r.close()


def test_yield_from_sub_generators(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()

    def read_line(ws: pyws.WebSocket) -> Any:
        parts = []
        for _ in range(100):
            msg = yield ws.recv()
            if msg is None or msg.text == ".":
                break
            parts.append(msg.text)
        return " ".join(parts)

    def pause(ws: pyws.WebSocket) -> Any:
        yield ws.sleep(0.01)
        return "paused"

    @app.websocket("/ws")
    def handler(ws: pyws.WebSocket) -> Any:
        line = yield from read_line(ws)
        p = yield from pause(ws)
        ws.send_text(f"{line}|{p}")

    srv = serve(app)
    c = connect(srv)
    try:
        for w in ("a", "b", "c", "."):
            c.send(w)
        assert c.recv() == "a b c|paused"
    finally:
        c.close()


def test_messages_queue_while_the_handler_is_busy(serve: Callable[..., AppServer]) -> None:
    # max_queue 4: reading pauses while the handler sleeps, nothing is lost or reordered
    app = pyws.App(max_queue=4)

    @app.websocket("/ws")
    def slow(ws: pyws.WebSocket) -> Any:
        yield ws.sleep(0.3)
        total = []
        for _ in range(200):
            msg = yield ws.recv()
            total.append(msg.text)
        ws.send_text(",".join(total))

    srv = serve(app)
    c = connect(srv)
    try:
        for i in range(200):
            c.send(str(i))
        assert c.recv() == ",".join(str(i) for i in range(200))
    finally:
        c.close()


def test_handler_ending_while_reading_is_paused_closes_promptly(
        serve: Callable[..., AppServer]) -> None:
    # the handler never reads: reading pauses at max_queue; when it returns, the close
    # handshake must still see the peer's reply (not wait close_timeout)
    app = pyws.App(max_queue=2)

    @app.websocket("/ws")
    def lazy(ws: pyws.WebSocket) -> Any:
        yield ws.sleep(0.3)

    srv = serve(app)
    with RawWS(srv.port) as r:
        r.handshake("/ws")
        for i in range(50):
            r.send_frame(f"m{i}".encode())
        code, _, _ = r.recv_close(5)
        assert code == 1000
        t0 = time.monotonic()
        r.send_frame(struct.pack("!H", code), OP_CLOSE)
        assert r.is_eof(4)
        assert time.monotonic() - t0 < 3  # TCP ends after the close exchange, not after 4 s


def test_queued_messages_stay_readable_after_the_close(serve: Callable[..., AppServer]) -> None:
    # the peer sends 300 messages and closes while the handler sleeps: the sleep raises
    # ConnectionClosed, and the handler can still read every queued message, then None
    app = pyws.App()
    got: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/ws")
    def late(ws: pyws.WebSocket) -> Any:
        try:
            yield ws.sleep(0.5)
        except pyws.ConnectionClosed as exc:
            got.put(("closed", exc.code))
        texts = []
        for _ in range(1000):
            msg = yield ws.recv()
            if msg is None:
                break
            texts.append(msg.text)
        got.put(texts)

    srv = serve(app)
    with RawWS(srv.port) as r:
        r.handshake("/ws")
        for i in range(300):
            r.send_frame(f"m{i}".encode())
        r.send_frame(struct.pack("!H", 1000), OP_CLOSE)
        assert r.recv_close(5)[0] == 1000
        r.close()  # the handler hears of the close once TCP ends too
        assert got.get(timeout=5) == ("closed", 1000)
        assert got.get(timeout=5) == [f"m{i}" for i in range(300)]


def test_yielding_something_else_raises_type_error(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()

    @app.websocket("/ws")
    def wrong(ws: pyws.WebSocket) -> Any:
        try:
            yield 42
        except TypeError as exc:
            ws.send_text("TypeError: " + str(exc)[:30])
        yield ws.recv()

    srv = serve(app)
    c = connect(srv)
    try:
        assert c.recv().startswith("TypeError: a handler yields")
    finally:
        c.close()


# ---------------------------------------------------------------------------------- handshake
def test_reject_gives_an_http_response(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()
    after: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/ws")
    def guarded(ws: pyws.WebSocket) -> Any:
        if ws.request.headers.get("authorization") != "Bearer good":
            ws.reject(401, "token required\n", {"WWW-Authenticate": "Bearer"})
            after.put((ws.rejected, ws.connected))
            return
        ws.accept()
        ws.send_text("welcome")
        yield ws.recv()

    srv = serve(app)
    with pytest.raises(websocket.WebSocketBadStatusException) as ei:
        connect(srv)
    assert ei.value.status_code == 401
    assert after.get(timeout=5) == (True, False)

    with RawWS(srv.port) as r:
        r.send(handshake_request("/ws"))
        status, headers, _ = r.read_http_head()
        assert status == 401
        assert headers["www-authenticate"] == "Bearer"
        assert r.recv_exact(int(headers["content-length"])) == b"token required\n"
        assert r.is_eof()

    c = connect(srv, header=["Authorization: Bearer good"])
    try:
        assert c.recv() == "welcome"
    finally:
        c.close()
    # a reject does not hold a connection slot
    wait_for(lambda: srv.call(lambda: len(app._sockets)) == 0)


def test_reject_in_a_generator_before_its_first_yield(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()

    @app.websocket("/ws/{n:int}")
    def gen(ws: pyws.WebSocket) -> Any:
        if ws.params["n"] > 10:
            ws.reject(403, "too big")
            return
        yield ws.recv()

    srv = serve(app)
    with pytest.raises(websocket.WebSocketBadStatusException) as ei:
        connect(srv, "/ws/11")
    assert ei.value.status_code == 403
    c = connect(srv, "/ws/3")
    c.close()


def test_close_1008_after_accept(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()

    @app.websocket("/ws")
    def policy(ws: pyws.WebSocket) -> Any:
        ws.accept()
        if "name" not in ws.request.args:
            ws.close(1008, "name required")
            return
        yield ws.recv()

    srv = serve(app)
    c = connect(srv)
    try:
        assert recv_close(c) == (1008, "name required")
    finally:
        c.close()


def test_close_before_accept_accepts_then_closes(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()

    @app.websocket("/ws")
    def policy(ws: pyws.WebSocket) -> Any:
        ws.close(4003, "go away")
        return
        yield  # a generator

    srv = serve(app)
    c = connect(srv)
    try:
        assert recv_close(c) == (4003, "go away")
    finally:
        c.close()


def test_accept_with_subprotocol_and_headers(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()
    chosen: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/ws")
    def proto(ws: pyws.WebSocket) -> Any:
        offered = [p.strip() for p in
                   ws.request.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        pick = "superchat" if "superchat" in offered else None
        ws.accept(protocol=pick, headers={"X-Server": "pyws", "Set-Cookie": "s=1"})
        chosen.put((offered, ws.subprotocol, ws.connected))
        msg = yield ws.recv()
        ws.send_text(f"{ws.subprotocol}:{msg.text}")

    srv = serve(app)
    c = connect(srv, subprotocols=["chat", "superchat"])
    try:
        assert c.getsubprotocol() == "superchat"
        assert c.getheaders()["x-server"] == "pyws"
        assert c.getheaders()["set-cookie"] == "s=1"
        c.send("m")
        assert c.recv() == "superchat:m"
    finally:
        c.close()
    assert chosen.get(timeout=5) == (["chat", "superchat"], "superchat", True)

    c = connect(srv)  # nothing offered: no subprotocol
    try:
        assert c.getsubprotocol() is None
        c.send("n")
        assert c.recv() == "None:n"
    finally:
        c.close()
    assert chosen.get(timeout=5)[1] is None


def test_subprotocol_not_offered_fails_the_handler(serve: Callable[..., AppServer],
                                                   caplog: Any) -> None:
    app = pyws.App()

    @app.websocket("/ws")
    def proto(ws: pyws.WebSocket) -> Any:
        ws.accept(protocol="nope")  # ValueError: the client did not offer it
        yield ws.recv()

    srv = serve(app)
    with caplog.at_level(logging.ERROR, logger="pyws"):
        with RawWS(srv.port) as r:
            r.send(handshake_request("/ws", extra="Sec-WebSocket-Protocol: chat\r\n"))
            status, headers, _ = r.read_http_head()
            assert status == 101 and "sec-websocket-protocol" not in headers
            assert r.recv_close()[0] == 1011
    assert "not offered" in caplog.text


def test_accept_and_reject_misuse(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()
    out: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/ws")
    def misuse(ws: pyws.WebSocket) -> Any:
        ws.accept()
        ws.accept()  # twice is harmless
        try:
            ws.reject(403)
        except pyws.PyWSError as exc:
            out.put(("reject after accept", type(exc).__name__))
        yield ws.recv()

    @app.websocket("/rej")
    def misuse2(ws: pyws.WebSocket) -> None:
        ws.reject(403)
        try:
            ws.accept()
        except pyws.PyWSError as exc:
            out.put(("accept after reject", type(exc).__name__))
        try:
            ws.send_text("x")
        except pyws.ConnectionClosed:
            out.put(("send after reject", "ConnectionClosed"))

    srv = serve(app)
    c = connect(srv)
    c.close()
    assert out.get(timeout=5) == ("reject after accept", "PyWSError")
    with pytest.raises(websocket.WebSocketBadStatusException):
        connect(srv, "/rej")
    assert out.get(timeout=5) == ("accept after reject", "PyWSError")
    assert out.get(timeout=5) == ("send after reject", "ConnectionClosed")


def test_auto_accept_at_first_yield_and_at_first_send(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()
    states: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/yield")
    def by_yield(ws: pyws.WebSocket) -> Any:
        states.put(("before", ws.connected))
        msg = yield ws.recv()
        states.put(("after", ws.connected))
        ws.send(msg)

    @app.websocket("/send")
    def by_send(ws: pyws.WebSocket) -> Any:
        ws.send_text("first")  # sending accepts
        states.put(("sent", ws.connected))
        yield ws.recv()

    srv = serve(app)
    c = connect(srv, "/yield")
    try:
        c.send("e")
        assert c.recv() == "e"
    finally:
        c.close()
    assert states.get(timeout=5) == ("before", False)
    assert states.get(timeout=5) == ("after", True)
    c = connect(srv, "/send")
    try:
        assert c.recv() == "first"
    finally:
        c.close()
    assert states.get(timeout=5) == ("sent", True)


# ---------------------------------------------------------------------------------- errors
def test_exception_closes_1011_logged_and_isolated(serve: Callable[..., AppServer],
                                                    caplog: Any) -> None:
    app = pyws.App()

    @app.websocket("/ws")
    def fragile(ws: pyws.WebSocket) -> Any:
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            if msg.text == "boom":
                raise ZeroDivisionError("boom requested")
            ws.send(msg)

    srv = serve(app)
    with caplog.at_level(logging.ERROR, logger="pyws"):
        others = [connect(srv) for _ in range(3)]
        victim = connect(srv)
        try:
            for i, o in enumerate(others):
                o.send(f"before {i}")
                assert o.recv() == f"before {i}"
            victim.send("boom")
            assert recv_close(victim) == (1011, "internal error")
            for i, o in enumerate(others):
                o.send(f"after {i}")
                assert o.recv() == f"after {i}"
        finally:
            victim.close()
            for o in others:
                o.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is ZeroDivisionError
    assert "Traceback" in caplog.text and "boom requested" in caplog.text


def test_exception_before_first_yield_closes_1011(serve: Callable[..., AppServer],
                                                  caplog: Any) -> None:
    app = pyws.App()

    @app.websocket("/ws")
    def broken(ws: pyws.WebSocket) -> Any:
        ws.params["missing"]  # KeyError before any yield
        yield ws.recv()

    srv = serve(app)
    with caplog.at_level(logging.ERROR, logger="pyws"):
        c = connect(srv)
        try:
            assert recv_close(c)[0] == 1011
        finally:
            c.close()
    assert "KeyError" in caplog.text
    wait_for(lambda: srv.call(lambda: len(app._sockets)) == 0)


def test_exception_in_finally_after_disconnect_is_logged(serve: Callable[..., AppServer],
                                                         caplog: Any) -> None:
    app = pyws.App()
    done: "queue.Queue[str]" = queue.Queue()

    @app.websocket("/ws")
    def bad_cleanup(ws: pyws.WebSocket) -> Any:
        try:
            yield ws.sleep(30)
        finally:
            done.put("cleanup")
            raise ValueError("cleanup failed")

    app2, events = echo_app()  # noqa: F841 (only the handler above is used)
    srv = serve(app)
    with caplog.at_level(logging.ERROR, logger="pyws"):
        c = connect(srv)
        c.close()
        assert done.get(timeout=5) == "cleanup"
        wait_for(lambda: "cleanup failed" in caplog.text)
    # the loop is fine
    c = connect(srv)
    c.close()
    assert done.get(timeout=5) == "cleanup"


def test_plain_function_handlers(serve: Callable[..., AppServer], caplog: Any) -> None:
    app = pyws.App()
    ran: "queue.Queue[str]" = queue.Queue()

    @app.websocket("/hello/{name}")
    def hello(ws: pyws.WebSocket) -> None:
        ran.put(ws.params["name"])
        ws.send_text(f"hello {ws.params['name']}")
        ws.send_json({"bye": True})

    @app.websocket("/silent")
    def silent(ws: pyws.WebSocket) -> None:
        ran.put("silent")

    @app.websocket("/raises")
    def raises(ws: pyws.WebSocket) -> None:
        raise RuntimeError("plain failure")

    srv = serve(app)
    c = connect(srv, "/hello/ann")
    try:
        assert c.recv() == "hello ann"
        assert c.recv() == '{"bye": true}'
        assert recv_close(c)[0] == 1000
    finally:
        c.close()
    assert ran.get(timeout=5) == "ann"
    c = connect(srv, "/silent")  # accepted, then closed with 1000
    try:
        assert recv_close(c)[0] == 1000
    finally:
        c.close()
    assert ran.get(timeout=5) == "silent"
    with caplog.at_level(logging.ERROR, logger="pyws"):
        c = connect(srv, "/raises")
        try:
            assert recv_close(c)[0] == 1011
        finally:
            c.close()
    assert "plain failure" in caplog.text


# ---------------------------------------------------------------------------------- Message
def test_message_and_enums() -> None:
    m = Message.text("héllo")
    assert isinstance(m, Message)
    assert m.data == "héllo".encode() and m.text == "héllo"
    assert m.opcode == m.type == m.flags == Opcode.TEXT == 1
    assert m.is_text() and not m.is_binary() and not m.is_close()
    j = Message.text('{"k": [1, null]}')
    assert j.json() == {"k": [1, None]}
    b = Message.binary(bytearray(b"\x01\x02"))
    assert b.data == b"\x01\x02" and isinstance(b.data, bytes)
    assert b.type == Opcode.BINARY and b.is_binary() and not b.is_text()
    assert Message.binary(b'{"a": 1}').json() == {"a": 1}
    c = Message(struct.pack("!H", 1000), Opcode.CLOSE)
    assert c.is_close() and not c.is_text() and not c.is_binary()
    assert Message(b"", Opcode.PING).is_ping() and Message(b"", Opcode.PONG).is_pong()
    assert Message.text("a") == Message.text("a") != Message.binary(b"a")
    assert len(Message.text("abc")) == 3
    assert "opcode=1" in repr(m)

    assert (Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY, Opcode.CLOSE, Opcode.PING,
            Opcode.PONG) == (0, 1, 2, 8, 9, 10)
    assert CloseCode.NORMAL == 1000 and CloseCode.GOING_AWAY == 1001
    assert CloseCode.PROTOCOL_ERROR == 1002 and CloseCode.UNSUPPORTED_DATA == 1003
    assert CloseCode.INVALID_TEXT == 1007 and CloseCode.POLICY_VIOLATION == 1008
    assert CloseCode.MESSAGE_TOO_BIG == 1009 and CloseCode.INTERNAL_ERROR == 1011
    assert CloseCode.TRY_AGAIN_LATER == 1013
    assert WSCloseCode is CloseCode and WSCloseCode.ABNORMAL_CLOSURE == 1006
    assert WSMsgType.CLOSED == 257 and WSMsgType.TEXT == Opcode.TEXT  # aiohttp's, plus states
    assert WSMsgType.TEXT == pyws.OP_TEXT and WSMsgType.BINARY == pyws.OP_BINARY
    assert WSCloseCode.GOING_AWAY == 1001 and WSCloseCode.OK == 1000
    assert pyws.WsMessage is Message


def test_close_code_enum_in_a_handler(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()

    @app.websocket("/ws")
    def h(ws: pyws.WebSocket) -> Any:
        msg = yield ws.recv()
        if msg.type == WSMsgType.BINARY:
            ws.close(WSCloseCode.UNSUPPORTED_DATA, "text only")

    srv = serve(app)
    c = connect(srv)
    try:
        c.send_binary(b"x")
        assert recv_close(c) == (1003, "text only")
    finally:
        c.close()


# ---------------------------------------------------------------------------------- limits
def _status_of_upgrade(port: int, path: str = "/ws") -> Tuple[int, bytes]:
    with RawWS(port) as r:
        r.send(handshake_request(path))
        status, headers, _ = r.read_http_head()
        body = r.recv_exact(int(headers.get("content-length", "0"))) if status != 101 else b""
        return status, body


def test_max_connections_503(serve: Callable[..., AppServer]) -> None:
    app, events = echo_app(max_connections=3)
    srv = serve(app)
    clients = [connect(srv) for _ in range(3)]
    try:
        status, body = _status_of_upgrade(srv.port)
        assert status == 503 and b"capacity" in body
        with pytest.raises(websocket.WebSocketBadStatusException) as ei:
            connect(srv)
        assert ei.value.status_code == 503
        assert srv.call(lambda: len(app.connections)) == 3
        for c in clients:  # the open ones are unaffected
            c.send("still")
            assert c.recv() == "still"
        clients.pop().close()
        wait_for(lambda: srv.call(lambda: len(app.connections)) == 2)
        clients.append(connect(srv))  # a slot was freed
        clients[-1].send("new")
        assert clients[-1].recv() == "new"
    finally:
        for c in clients:
            c.close()
    wait_for(lambda: srv.call(lambda: len(app.connections)) == 0)
    # plain HTTP is not counted
    app2_status = _status_of_upgrade(srv.port)[0]
    assert app2_status == 101


def test_max_connections_per_ip(serve: Callable[..., AppServer]) -> None:
    app, events = echo_app(max_connections_per_ip=2)
    srv = serve(app)
    a, b = connect(srv), connect(srv)
    try:
        status, body = _status_of_upgrade(srv.port)
        assert status == 503 and b"this address" in body
        a.close()
        wait_for(lambda: srv.call(lambda: app._per_ip.get("127.0.0.1")) == 1)
        c = connect(srv)
        c.send("ok")
        assert c.recv() == "ok"
        c.close()
    finally:
        a.close()
        b.close()
    wait_for(lambda: srv.call(lambda: dict(app._per_ip)) == {})


def test_connections_set(serve: Callable[..., AppServer]) -> None:
    app, events = echo_app()
    srv = serve(app)
    cs = [connect(srv) for _ in range(4)]
    try:
        conns = srv.call(lambda: app.connections)
        assert len(conns) == 4
        assert all(isinstance(w, pyws.WebSocket) and w.connected for w in conns)
        ports = {int(w.remote_addr.rsplit(":", 1)[1]) for w in conns}
        assert ports == {c.sock.getsockname()[1] for c in cs}
        cs[0].close()
        wait_for(lambda: srv.call(lambda: len(app.connections)) == 3)
    finally:
        for c in cs:
            c.close()
    wait_for(lambda: srv.call(lambda: len(app.connections)) == 0)


def test_unknown_app_option_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        pyws.App(no_such_option=1)
    with pytest.raises(ValueError):
        pyws.App(unknown_websocket="ignore")


# ---------------------------------------------------------------------------------- running
RUN_SCRIPT = textwrap.dedent("""
    import sys
    import pyws

    app = pyws.App()

    @app.websocket("/ws")
    def echo(ws):
        try:
            while True:
                msg = yield ws.recv()
                if msg is None:
                    return
                ws.send(msg)
        finally:
            print("finally", ws.close_code, flush=True)

    @app.route("/")
    def index(request):
        return "up"

    app.run("127.0.0.1", int(sys.argv[1]),
            on_start=lambda lst: print("listening", lst.port, flush=True))
    print("run returned", flush=True)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_until_signal_closes_1001_and_returns(tmp_path: Any, sig: int) -> None:
    from conftest import free_port, wait_port
    script = tmp_path / "run_app.py"
    script.write_text(RUN_SCRIPT)
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_port(port)
        clients = [websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=5)
                   for _ in range(3)]
        for i, c in enumerate(clients):
            c.send(str(i))
            assert c.recv() == str(i)
        proc.send_signal(sig)
        for c in clients:
            assert recv_close(c) == (1001, "server shutting down")
            c.close()
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, out
    lines = out.splitlines()
    assert lines[0] == f"listening {port}"
    # the handlers saw the close (its code is the one the peer answered with: websocket-client
    # answers every close with 1000) and their finally blocks ran
    assert len([ln for ln in lines if ln.startswith("finally ")]) == 3, out
    assert lines[-1] == "run returned"
    with pytest.raises(OSError):  # no longer listening
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


FLUSH_SCRIPT = textwrap.dedent("""
    import sys
    import pyws

    app = pyws.App(write_limit=64 * 1024 * 1024)

    @app.websocket("/flood")
    def flood(ws):
        for i in range(256):
            ws.send_bytes(bytes([i]) * 65536)
        print("queued", ws.write_buffer_size, flush=True)
        yield ws.recv()

    app.run("127.0.0.1", int(sys.argv[1]), shutdown_timeout=10.0)
    print("run returned", flush=True)
""")


def test_run_flushes_queued_data_before_the_1001(tmp_path: Any) -> None:
    from conftest import free_port, wait_port
    script = tmp_path / "flush_app.py"
    script.write_text(FLUSH_SCRIPT)
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_port(port)
        with RawWS(port, timeout=10) as r:
            r.handshake("/flood")
            # not reading yet: 16 MiB is more than the kernel buffers take
            assert select.select([proc.stdout], [], [], 10)[0]
            line = proc.stdout.readline().split() if proc.stdout else []
            assert line[0] == "queued" and int(line[1]) > 0, line
            proc.send_signal(signal.SIGTERM)
            for i in range(256):
                assert r.recv_frame(10) == (2, True, bytes([i]) * 65536), i
            code, reason, before = r.recv_close(10)
            assert (code, reason, before) == (1001, b"server shutting down", [])
            r.send_frame(struct.pack("!H", code), OP_CLOSE)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0 and out.strip().endswith("run returned"), out


def test_run_in_a_thread_and_stop() -> None:
    app, events = echo_app()
    started: "queue.Queue[int]" = queue.Queue()
    returned = threading.Event()

    def serve_forever() -> None:
        app.run("127.0.0.1", 0, on_start=lambda lst: started.put(lst.port))
        returned.set()

    t = threading.Thread(target=serve_forever, daemon=True)
    t.start()
    port = started.get(timeout=5)
    c = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=5)
    try:
        c.send("x")
        assert c.recv() == "x"
        assert not returned.is_set()
        app.stop()  # thread-safe
        assert recv_close(c) == (1001, "server shutting down")
    finally:
        c.close()
    t.join(10)
    assert returned.is_set()
    assert events.get(timeout=1)[0] == "none"
    assert events.get(timeout=1) == ("finally", "/ws")
    # the run thread owns the loop now: closing it from here would be a WrongThreadError
    with pytest.raises(pyws.WrongThreadError):
        app.close()


def test_listen_and_poll_in_our_own_loop() -> None:
    app, events = echo_app()

    @app.route("/ping")
    def ping(request: pyws.Request) -> str:
        return "pong"

    lst = app.listen("127.0.0.1", 0)
    assert lst.port > 0

    def pump(sock: socket.socket, until: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(10000):
            if until():
                return
            if time.monotonic() > deadline:
                break
            app.poll(10)
        raise AssertionError("condition not met in time")

    def readable(sock: socket.socket) -> bool:
        return bool(select.select([sock], [], [], 0)[0])

    try:
        r = RawWS(lst.port)
        r.send(handshake_request("/ws"))
        pump(r.sock, lambda: readable(r.sock))
        status, _, _ = r.read_http_head()
        assert status == 101
        r.send_frame(b"hello")
        pump(r.sock, lambda: readable(r.sock))
        assert r.recv_frame() == (OP_TEXT, True, b"hello")
        r.close()
        pump(r.sock, lambda: events.qsize() >= 2)
        assert events.get_nowait()[0] == "none"
        assert events.get_nowait() == ("finally", "/ws")

        h = socket.create_connection(("127.0.0.1", lst.port), timeout=5)
        h.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        pump(h, lambda: readable(h))
        data = b""
        for _ in range(100):
            pump(h, lambda: readable(h))
            chunk = h.recv(4096)
            if not chunk:
                break
            data += chunk
        h.close()
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"pong")
        assert app.poll(0) >= 0
    finally:
        app.shutdown(1.0)
        app.close()


def test_shutdown_is_prompt_while_reading_is_paused() -> None:
    # a handler that never reads (reading paused at max_queue): the shutdown's close frame
    # must still let the peer's close reply in, so shutdown does not wait close_timeout
    app = pyws.App(max_queue=2)

    @app.websocket("/ws")
    def lazy(ws: pyws.WebSocket) -> Any:
        yield ws.sleep(30)

    lst = app.listen("127.0.0.1", 0)
    r = RawWS(lst.port)
    try:
        r.send(handshake_request("/ws"))
        deadline = time.monotonic() + 5
        while not select.select([r.sock], [], [], 0)[0] and time.monotonic() < deadline:
            app.poll(10)
        assert r.read_http_head()[0] == 101
        for i in range(50):
            r.send_frame(f"m{i}".encode())
        for _ in range(20):
            app.poll(5)
        assert len(app._sockets) == 1 and next(iter(app._sockets.values()))._paused

        def peer() -> None:
            code, _, _ = r.recv_close(5)
            r.send_frame(struct.pack("!H", code), OP_CLOSE)
            r.is_eof(5)
            r.close()
        t = threading.Thread(target=peer, daemon=True)
        t.start()
        t0 = time.monotonic()
        app.shutdown(4.0)
        assert time.monotonic() - t0 < 3  # done when the peer answers, before the 4 s deadline
        t.join(5)
    finally:
        r.close()
        app.close()


def test_app_shutdown_closes_websockets_1001() -> None:
    app, events = echo_app()
    lst = app.listen("127.0.0.1", 0)
    r = RawWS(lst.port)
    try:
        r.send(handshake_request("/ws"))
        deadline = time.monotonic() + 5
        while not select.select([r.sock], [], [], 0)[0] and time.monotonic() < deadline:
            app.poll(10)
        assert r.read_http_head()[0] == 101
        closed = threading.Event()

        def peer() -> None:  # answer the close frame like a client would
            code, reason, _ = r.recv_close(5)
            r.send_frame(struct.pack("!H", code), OP_CLOSE)
            r.close()
            closed.set()
        t = threading.Thread(target=peer, daemon=True)
        t.start()
        app.shutdown(3.0)
        t.join(5)
        assert closed.is_set()
        # the close code is the peer's answer (RFC 6455 7.1.5); this peer echoed 1001
        assert events.get(timeout=1)[:2] == ("none", 1001)
    finally:
        r.close()
        app.close()


def test_drain_follows_the_listeners_own_high_water(serve: Callable[..., AppServer]) -> None:
    """The listener's write_high_water (not the App's) decides whether drain() waits."""
    app = pyws.App(write_high_water=64 * 1024)
    report: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/ws")
    def producer(ws: pyws.WebSocket) -> Any:
        ws.send_bytes(b"x" * (1024 * 1024))  # far over the App's mark, under the listener's
        yield ws.drain()
        report.put("resumed")
        yield ws.recv()

    srv = serve(app, write_high_water=4 * 1024 * 1024)
    r = RawWS(srv.port)
    try:
        r.handshake("/ws")
        assert report.get(timeout=5) == "resumed"
    finally:
        r.close()


def test_async_generators_are_refused_and_async_routes_need_asyncio() -> None:
    app = pyws.App()
    with pytest.raises(TypeError, match="async generator"):
        @app.websocket("/gen")
        async def agen(ws: Any) -> Any:  # pragma: no cover - never runs
            yield None

    @app.websocket("/ws")
    async def handler(ws: pyws.AsyncWebSocket) -> None:  # pragma: no cover - never runs
        pass

    # async def handlers run inside asyncio (await app.serve()); the blocking run() says so
    with pytest.raises(TypeError, match="serve"):
        app.run("127.0.0.1", 0)
    app.close()


def test_stop_before_run_does_not_stick(tmp_path: Any) -> None:
    app = pyws.App()
    app.stop()
    ran: List[int] = []
    t = threading.Thread(target=lambda: app.run("127.0.0.1", 0, shutdown_timeout=0.5,
                                                on_start=lambda lst: ran.append(lst.port)))
    t.start()
    deadline = time.monotonic() + 5
    while not ran and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ran, "run() did not start"
    time.sleep(0.2)
    assert t.is_alive(), "an earlier stop() made run() return at once"
    app.stop()
    t.join(5)
    assert not t.is_alive()
