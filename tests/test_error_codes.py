"""Errors cross from C to Python as codes, never as wording: the kind of a failed connect
(refused, timed out, DNS, other) is the EV_ERROR event's code, one table in pyws._lib maps
codes to exceptions, and a connection closed for breaking the protocol raises ProtocolError
(a ConnectionClosed)."""
from __future__ import annotations

import ast
import os
import socket
import threading
import time
from typing import Any, Callable, List, Tuple

import pytest

import pyws
from pyws import EV_CLOSE, EV_ERROR
from pyws._lib import failure, lib

from conftest import ServerThread

PKG = os.path.dirname(os.path.abspath(pyws.__file__))


def run_until(mgr: pyws.Manager, done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        mgr.poll(20)


def errors_of(url: str, **options: Any) -> Tuple[List[Tuple[int, str]], Any]:
    """The (code, text) of every EV_ERROR a client connection to url gets, and the conn."""
    seen: List[Tuple[int, str]] = []
    closed = []

    def h(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_ERROR:
            seen.append((conn.error, data))
        elif ev == EV_CLOSE:
            closed.append(conn)

    with pyws.Manager() as mgr:
        c = mgr.ws_connect(url, h, **options)
        run_until(mgr, lambda: bool(closed))
    return seen, c


def test_refused_is_a_code() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seen, c = errors_of(f"ws://127.0.0.1:{port}/")
    assert len(seen) == 1 and isinstance(c.error, ConnectionRefusedError)


def test_timeout_is_a_code() -> None:
    """A server that accepts TCP and never answers the upgrade: TimeoutError, from the code."""
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(4)
        port = lsock.getsockname()[1]
        seen, c = errors_of(f"ws://127.0.0.1:{port}/", handshake_timeout=0.2)
    assert isinstance(c.error, TimeoutError)
    assert not isinstance(c.error, pyws.HandshakeError)


def test_dns_failure_is_a_code() -> None:
    with pyws.Manager() as mgr:
        with pytest.raises(ConnectionError) as info:
            mgr.ws_connect("ws://no-such-host.invalid/", lambda *a: None)
    assert not isinstance(info.value, ConnectionRefusedError)


@pytest.mark.parametrize("code,cls", [
    (lib.PYWS_ERR_REFUSED, ConnectionRefusedError), (lib.PYWS_ERR_TIMEOUT, TimeoutError),
    (lib.PYWS_ERR_DNS, ConnectionError), (lib.PYWS_ERR_SYS, ConnectionError),
    (lib.PYWS_ERR_TLS, pyws.TlsError), (lib.PYWS_ERR_HANDSHAKE, pyws.HandshakeError),
    (lib.PYWS_ERR_LIMIT, pyws.LimitExceeded), (lib.PYWS_ERR_NOMEM, MemoryError),
    (lib.PYWS_ERR_STATE, pyws.PyWSError)])
def test_the_one_table(code: int, cls: type) -> None:
    # the wording says the opposite of the code on purpose: only the code may decide
    err = failure(code, "connection refused, timed out, did not arrive in time")
    assert type(err) is cls or (cls is pyws.PyWSError and isinstance(err, cls))


def test_no_decision_reads_an_error_message() -> None:
    """No module of the package compares an error's text with words (the old "refused",
    "timed out", "in time", "426" matches): string literals of those words appear in no
    comparison or membership test."""
    words = ("refused", "timed out", "in time", "426")
    offenders = []
    for name in sorted(os.listdir(PKG)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(PKG, name), encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and \
                            any(w in sub.value.lower() for w in words):
                        offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_tls_error_lives_in_errors() -> None:
    from pyws import errors, tls
    assert pyws.TlsError is errors.TlsError is tls.TlsError
    assert issubclass(pyws.TlsError, pyws.PyWSError)


def test_protocol_violation_raises_protocol_error() -> None:
    """A server that sends invalid UTF-8 in a text frame: the client fails the connection
    with 1007, and its recv raises ProtocolError (still a ConnectionClosed)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]

    def serve() -> None:
        conn, _ = lsock.accept()
        with conn:
            req = b""
            while b"\r\n\r\n" not in req:
                req += conn.recv(4096)
            key = [ln.split(b":", 1)[1].strip() for ln in req.split(b"\r\n")
                   if ln.lower().startswith(b"sec-websocket-key")][0]
            import base64
            import hashlib
            acc = base64.b64encode(hashlib.sha1(
                key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
            conn.sendall(b"\x81\x02\xc3\x28")  # text frame, invalid UTF-8
            conn.settimeout(5)
            try:
                while conn.recv(4096):
                    pass
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ws = pyws.connect(f"ws://127.0.0.1:{port}/", timeout=5, compression=None)
    with pytest.raises(pyws.ProtocolError) as info:
        ws.recv()
    assert isinstance(info.value, pyws.ConnectionClosed)
    assert info.value.code == 1007
    ws.close()
    t.join(10)
    lsock.close()


def test_normal_close_is_not_a_protocol_error(echo_server: ServerThread) -> None:
    ws = pyws.connect(echo_server.url, timeout=5)
    ws.close()
    with pytest.raises(pyws.ConnectionClosed) as info:
        ws.recv()
    assert not isinstance(info.value, pyws.ProtocolError)
