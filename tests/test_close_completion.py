"""A close completes when the close handshake does (RFC 6455 §7.1.1: once both close frames
have been exchanged the server closes TCP first). The close is reported at once in every API:
EV_CLOSE in the callback Manager, recv() -> None, the handler's finally and the connection
count / per-IP slot in the App. close_timeout only bounds a peer that never answers. A pyws
client waits for the server's FIN (the server closes first) and is released when it comes.

Every test prints what it measured (``pytest -s`` shows it); the bound asserted (1 s against a
5 s close_timeout) is generous for a loaded 2-core machine, the point is "not close_timeout"."""
from __future__ import annotations

import queue
import socket
import struct
import time
from typing import Any, Callable, Dict, Optional, Tuple

import pytest
import websocket
from websocket import ABNF

import pyws
from pyws import EV_CLOSE, EV_HTTP_MSG, EV_WS_MSG, OP_BINARY

from _pki import make_pki
from _rawws import OP_BINARY as RAW_OP_BINARY
from _frames import MASK_KEY, frame
from _rawws import OP_CLOSE, OP_TEXT, RawWS, close_payload
from conftest import AppServer, ServerThread
from test_client_bad_server import Peer, raw_server  # noqa: F401

CLOSE_TIMEOUT = 5.0
FAST = 1.0  # far below CLOSE_TIMEOUT, generous for a loaded machine
BIG = bytes(range(256)) * (8 << 10)  # 2 MiB


def report(what: str, seconds: float) -> None:
    print(f"\n[close-completion] {what}: {seconds * 1000:.1f} ms")


def wait_for(pred: Callable[[], Any], timeout: float = 8.0, step: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(step)


def wsc_connect(url: str) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=8)


def wsc_answer_close(ws: websocket.WebSocket) -> Tuple[int, bytes, float]:
    """Read frames until the server's close; websocket-client answers it (and keeps its socket
    open). (code, reason, when the answer was sent)."""
    for _ in range(1000):
        op, frame = ws.recv_data_frame(True)
        if op == ABNF.OPCODE_CLOSE:
            t = time.monotonic()
            code = struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else 1005
            return code, frame.data[2:], t
    raise AssertionError("no close frame")


def ends_with_fin(sock: socket.socket, timeout: float = 3.0) -> bool:
    """True if the server ends TCP with a FIN within timeout (bytes read meanwhile are
    dropped); an RST fails the test: it can cost the peer bytes it was owed."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            raise AssertionError("the server reset the connection instead of closing it")
        except socket.timeout:
            return False
    return False


# ---------------------------------------------------------------------------- callback API
class Closer:
    """Upgrades, closes with 1000 "bye" when a message says "close-me", and records when
    EV_CLOSE arrives (on the loop's thread, same monotonic clock as the test)."""

    def __init__(self) -> None:
        self.closes: "queue.Queue[Tuple[float, Optional[int], str]]" = queue.Queue()

    def handler(self, conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            if data.data == b"close-me":
                conn.close(1000, "bye")
            elif data.data == b"big":
                conn.ws_send(BIG, OP_BINARY)
        elif ev == EV_CLOSE:
            self.closes.put((time.monotonic(), conn.close_code, conn.close_reason))


def test_callback_server_close_websocket_client(server_factory: Callable[..., ServerThread]
                                                ) -> None:
    rec = Closer()
    srv = server_factory(rec.handler, close_timeout=CLOSE_TIMEOUT)
    ws = wsc_connect(srv.url + "/ws")
    try:
        ws.send("close-me")
        code, reason, t_reply = wsc_answer_close(ws)
        assert (code, reason) == (1000, b"bye")
        t_close, ccode, creason = rec.closes.get(timeout=CLOSE_TIMEOUT + 3)
        report("callback, websocket-client answers the close -> EV_CLOSE", t_close - t_reply)
        assert t_close - t_reply < FAST
        assert (ccode, creason) == (1000, "")  # the peer's answer (websocket-client's: 1000)
        assert ends_with_fin(ws.sock)  # the server closed TCP
    finally:
        ws.shutdown()


def test_callback_server_close_websocket_client_over_tls(
        server_factory: Callable[..., ServerThread], tmp_path: Any) -> None:
    """The same over wss://: close_notify and FIN go out at once after the peer's answer."""
    pki = make_pki(tmp_path)
    rec = Closer()
    srv = server_factory(rec.handler, close_timeout=CLOSE_TIMEOUT,
                         listen_url="wss://127.0.0.1:0",
                         listen_options={"tls": pyws.TlsOpts(cert=pki.server_cert,
                                                             key=pki.server_key)})
    ws = websocket.create_connection(f"wss://localhost:{srv.port}/ws", timeout=8,
                                     sslopt={"ca_certs": pki.ca_cert})
    try:
        ws.send("close-me")
        code, reason, t_reply = wsc_answer_close(ws)
        assert (code, reason) == (1000, b"bye")
        t_close, ccode, _ = rec.closes.get(timeout=CLOSE_TIMEOUT + 3)
        report("callback over TLS, websocket-client answers the close -> EV_CLOSE",
               t_close - t_reply)
        assert t_close - t_reply < FAST
        assert ccode == 1000
        assert ends_with_fin(ws.sock)
    finally:
        ws.shutdown()


def test_callback_server_close_raw_peer(server_factory: Callable[..., ServerThread]) -> None:
    rec = Closer()
    srv = server_factory(rec.handler, close_timeout=CLOSE_TIMEOUT)
    with RawWS(srv.port, timeout=8) as r:
        r.handshake()
        r.send_frame(b"close-me", OP_TEXT)
        code, reason, _ = r.recv_close()
        assert (code, reason) == (1000, b"bye")
        r.send_frame(close_payload(1000, b"ok"), OP_CLOSE)
        t_reply = time.monotonic()
        t_close, ccode, creason = rec.closes.get(timeout=CLOSE_TIMEOUT + 3)
        assert ends_with_fin(r.sock)  # the server closed TCP first; the peer still has its socket
        t_eof = time.monotonic()
        report("callback, raw peer answers the close -> EV_CLOSE", t_close - t_reply)
        report("callback, raw peer answers the close -> EOF at the peer", t_eof - t_reply)
        assert t_close - t_reply < FAST
        assert t_eof - t_reply < FAST
        assert (ccode, creason) == (1000, "ok")  # what the peer answered


def test_callback_peer_close_raw_peer_keeps_socket(server_factory: Callable[..., ServerThread]
                                                   ) -> None:
    """The peer starts the close and keeps its socket open: the server echoes, closes TCP and
    reports EV_CLOSE at once."""
    rec = Closer()
    srv = server_factory(rec.handler, close_timeout=CLOSE_TIMEOUT)
    with RawWS(srv.port, timeout=8) as r:
        r.handshake()
        r.send_frame(close_payload(4001, b"leaving"), OP_CLOSE)
        t_sent = time.monotonic()
        code, reason, _ = r.recv_close()
        assert code == 4001  # echoed (the code; the reason is not repeated)
        t_close, ccode, creason = rec.closes.get(timeout=CLOSE_TIMEOUT + 3)
        assert ends_with_fin(r.sock)
        t_eof = time.monotonic()
        report("callback, raw peer's close (socket kept open) -> EV_CLOSE", t_close - t_sent)
        assert t_close - t_sent < FAST
        assert t_eof - t_sent < FAST
        assert (ccode, creason) == (4001, "leaving")


def test_callback_input_after_the_close_costs_the_peer_nothing(
        server_factory: Callable[..., ServerThread]) -> None:
    """The peer asks for 2 MiB, sends its close frame and 128 KiB of junk behind it in one go,
    then reads nothing for a while. The server owes it the 2 MiB and the close echo: it writes
    them all, drops what came after the close (unread input would turn close() into an RST that
    discards bytes still queued for the peer) and ends with a FIN, not a reset."""
    rec = Closer()
    srv = server_factory(rec.handler, close_timeout=CLOSE_TIMEOUT)
    with RawWS(srv.port, timeout=8) as r:
        r.handshake()
        r.send(frame(OP_TEXT, b"big", mask=MASK_KEY) +
               frame(OP_CLOSE, close_payload(1000), mask=MASK_KEY) +
               b"\x00" * (128 << 10))
        t_sent = time.monotonic()
        time.sleep(0.3)  # let the server fill the socket buffers and wait on us
        op, _fin, payload = r.recv_frame(8)
        assert op == RAW_OP_BINARY and payload == BIG
        code, _, _ = r.recv_close(8)
        assert code == 1000
        assert r.buf == b"" and ends_with_fin(r.sock)
        t_close, ccode, _ = rec.closes.get(timeout=CLOSE_TIMEOUT + 3)
        report("callback, 2 MiB owed + junk after the peer's close -> EV_CLOSE", t_close - t_sent)
        assert t_close - t_sent < FAST + 0.3
        assert ccode == 1000


def test_callback_unanswered_close_still_times_out(server_factory: Callable[..., ServerThread]
                                                   ) -> None:
    """A peer that reads our close frame and never answers is cut off after close_timeout."""
    rec = Closer()
    srv = server_factory(rec.handler, close_timeout=0.5)
    with RawWS(srv.port, timeout=8) as r:
        r.handshake()
        r.send_frame(b"close-me", OP_TEXT)
        code, _, _ = r.recv_close()
        t_got = time.monotonic()
        assert code == 1000
        t_close, ccode, _ = rec.closes.get(timeout=5)
        assert ends_with_fin(r.sock)
        report("callback, unanswered close (close_timeout 0.5 s) -> EV_CLOSE", t_close - t_got)
        assert 0.3 < t_close - t_got < 3.0
        assert ccode == 1006  # no close frame came back


# ---------------------------------------------------------------------------- generator API
def closing_app(**options: Any) -> Tuple[pyws.App, "queue.Queue[Tuple[Any, ...]]"]:
    """/close closes with 1000 "bye" after the first message; /wait waits for the peer to
    close. Both report recv()'s None and their finally with the time."""
    app = pyws.App(**options)
    events: "queue.Queue[Tuple[Any, ...]]" = queue.Queue()

    @app.websocket("/close")
    def closer(ws: pyws.WebSocket) -> Any:
        try:
            yield ws.recv()
            ws.close(1000, "bye")
            msg = yield ws.recv()
            events.put(("recv", time.monotonic(), msg))
        finally:
            events.put(("finally", time.monotonic(), ws.close_code))

    @app.websocket("/wait")
    def waiter(ws: pyws.WebSocket) -> Any:
        try:
            msg = yield ws.recv()
            events.put(("recv", time.monotonic(), msg))
        finally:
            events.put(("finally", time.monotonic(), ws.close_code))

    return app, events


def released(srv: AppServer, app: pyws.App) -> bool:
    """The App's connection count and per-IP slots are free and the Manager holds no
    connection any more."""
    return bool(srv.call(lambda: app._accepted == 0 and not app._per_ip and
                         not app.mgr.connections))


def release_time(srv: AppServer, app: pyws.App) -> float:
    wait_for(lambda: released(srv, app), timeout=CLOSE_TIMEOUT + 3)
    return time.monotonic()


def test_app_server_close_websocket_client(serve: Callable[..., AppServer]) -> None:
    app, events = closing_app(close_timeout=CLOSE_TIMEOUT, max_connections_per_ip=1)
    srv = serve(app)
    ws = wsc_connect(srv.url("/close"))
    try:
        ws.send("hi")
        code, reason, t_reply = wsc_answer_close(ws)
        assert (code, reason) == (1000, b"bye")
        t_rel = release_time(srv, app)
        report("App, websocket-client answers the close -> count and per-IP slot released",
               t_rel - t_reply)
        assert t_rel - t_reply < FAST
        kind, t_recv, msg = events.get(timeout=1)
        assert kind == "recv" and msg is None
        kind, t_fin, fcode = events.get(timeout=1)
        assert kind == "finally" and fcode == 1000
        assert t_fin <= t_rel
        assert ends_with_fin(ws.sock)
        # the slot really is free: the same IP may connect again at once
        again = wsc_connect(srv.url("/wait"))
        again.close()
    finally:
        ws.shutdown()


def test_app_server_close_raw_peer(serve: Callable[..., AppServer]) -> None:
    app, events = closing_app(close_timeout=CLOSE_TIMEOUT, max_connections_per_ip=1)
    srv = serve(app)
    with RawWS(srv.port, timeout=8) as r:
        r.handshake("/close")
        r.send_frame(b"hi", OP_TEXT)
        code, reason, _ = r.recv_close()
        assert (code, reason) == (1000, b"bye")
        r.send_frame(close_payload(1000), OP_CLOSE)
        t_reply = time.monotonic()
        assert ends_with_fin(r.sock)
        t_eof = time.monotonic()
        t_rel = release_time(srv, app)
        report("App, raw peer answers the close -> EOF at the peer", t_eof - t_reply)
        report("App, raw peer answers the close -> count and per-IP slot released",
               t_rel - t_reply)
        assert t_eof - t_reply < FAST
        assert t_rel - t_reply < FAST
        got = [events.get(timeout=1)[0] for _ in range(2)]
        assert got == ["recv", "finally"]


def test_app_peer_close_raw_peer_keeps_socket(serve: Callable[..., AppServer]) -> None:
    """The peer starts the close and keeps its socket open: recv() gives None, finally runs and
    the slot is free at once, not after close_timeout."""
    app, events = closing_app(close_timeout=CLOSE_TIMEOUT, max_connections_per_ip=1)
    srv = serve(app)
    with RawWS(srv.port, timeout=8) as r:
        r.handshake("/wait")
        wait_for(lambda: released(srv, app) is False)
        r.send_frame(close_payload(1000, b"done"), OP_CLOSE)
        t_sent = time.monotonic()
        code, reason, _ = r.recv_close()
        assert code == 1000
        kind, t_recv, msg = events.get(timeout=CLOSE_TIMEOUT + 3)
        assert kind == "recv" and msg is None
        kind, t_fin, fcode = events.get(timeout=1)
        assert kind == "finally" and fcode == 1000
        assert ends_with_fin(r.sock)
        t_rel = release_time(srv, app)
        report("App, raw peer's close (socket kept open) -> recv() None", t_recv - t_sent)
        report("App, raw peer's close (socket kept open) -> finally", t_fin - t_sent)
        report("App, raw peer's close (socket kept open) -> slot released", t_rel - t_sent)
        assert t_recv - t_sent < FAST
        assert t_fin - t_sent < FAST
        assert t_rel - t_sent < FAST


def test_app_unanswered_close_still_times_out(serve: Callable[..., AppServer]) -> None:
    app, events = closing_app(close_timeout=0.5, max_connections_per_ip=1)
    srv = serve(app)
    with RawWS(srv.port, timeout=8) as r:
        r.handshake("/close")
        r.send_frame(b"hi", OP_TEXT)
        code, _, _ = r.recv_close()
        t_got = time.monotonic()
        assert code == 1000
        assert ends_with_fin(r.sock, 4.0)
        t_rel = release_time(srv, app)
        report("App, unanswered close (close_timeout 0.5 s) -> slot released", t_rel - t_got)
        assert 0.3 < t_rel - t_got < 3.0


# ---------------------------------------------------------------------------- client role
def test_client_close_waits_for_the_server_fin_and_no_longer(raw_server: Any  # noqa: F811
                                                             ) -> None:
    """A pyws client that closes waits for the server to end TCP (the server closes first) and
    is released as soon as its FIN arrives, long before close_timeout."""
    hold = 0.4
    seen: Dict[str, Any] = {}

    def behave(p: Peer) -> None:
        p.handshake()
        close, _ = p.recv_until_close()
        p.send_frame(close.payload, OP_CLOSE)
        # the client must not end TCP first
        p.sock.settimeout(hold)
        try:
            seen["early"] = p.sock.recv(1)
        except socket.timeout:
            seen["early"] = None
        seen["fin"] = time.monotonic()
        p.sock.shutdown(socket.SHUT_WR)
        p.sock.settimeout(3)
        seen["eof"] = p.wait_eof(3)

    s = raw_server(behave)
    ws = pyws.connect(s.url(), open_timeout=5, timeout=5, close_timeout=CLOSE_TIMEOUT)
    t0 = time.monotonic()
    ws.close(1000, "bye")
    t_done = time.monotonic()
    s.stop()
    s.check()
    report("client close() -> returned after the server's FIN", t_done - seen["fin"])
    assert seen["early"] is None  # no EOF from the client before the server's FIN
    assert t_done - t0 >= hold * 0.75
    assert t_done - seen["fin"] < FAST
    assert ws.closed and ws.close_code == 1000
    assert seen["eof"]


def test_client_server_initiated_close_released_at_fin(raw_server: Any  # noqa: F811
                                                       ) -> None:
    """The server closes: the pyws client answers, waits for the server's FIN, and recv()
    raises ConnectionClosed as soon as it arrives."""
    hold = 0.4
    seen: Dict[str, Any] = {}

    def behave(p: Peer) -> None:
        p.handshake()
        p.send_frame(close_payload(1001, b"going"), OP_CLOSE)
        reply, _ = p.recv_until_close()
        seen["reply"] = reply.payload
        time.sleep(hold)
        seen["fin"] = time.monotonic()
        p.sock.shutdown(socket.SHUT_WR)
        seen["eof"] = p.wait_eof(3)

    s = raw_server(behave)
    ws = pyws.connect(s.url(), open_timeout=5, timeout=5, close_timeout=CLOSE_TIMEOUT)
    try:
        with pytest.raises(pyws.ConnectionClosed) as ei:
            while True:
                ws.recv(CLOSE_TIMEOUT + 2)
        t_done = time.monotonic()
        assert ei.value.code == 1001
    finally:
        ws.close()
    s.stop()
    s.check()
    report("client, server-initiated close -> ConnectionClosed after the server's FIN",
           t_done - seen["fin"])
    assert t_done - seen["fin"] < FAST
    assert seen["reply"][:2] == struct.pack("!H", 1001)
    assert seen["eof"]


def test_pyws_client_and_server_close_quickly(serve: Callable[..., AppServer]) -> None:
    """Both ends pyws: a client close completes (both sides released) without close_timeout."""
    app, events = closing_app(close_timeout=CLOSE_TIMEOUT)
    srv = serve(app)
    ws = pyws.connect(srv.url("/wait"), open_timeout=5, timeout=5, close_timeout=CLOSE_TIMEOUT)
    wait_for(lambda: released(srv, app) is False)
    t0 = time.monotonic()
    ws.close(1000, "bye")
    t_client = time.monotonic()
    t_rel = release_time(srv, app)
    report("pyws client close() against a pyws App -> close() returned", t_client - t0)
    report("pyws client close() against a pyws App -> server slot released", t_rel - t0)
    assert t_client - t0 < FAST
    assert t_rel - t0 < FAST
    kinds = [events.get(timeout=1)[0] for _ in range(2)]
    assert kinds == ["recv", "finally"]
