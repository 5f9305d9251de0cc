"""Byte streams in the loop (Manager.connect_stream: the STREAM state of csrc/state.c): the
connection kind the Redis broker rides on, tested against real peers (plain TCP and TLS
servers made with Python's socket and ssl modules)."""
from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Tuple

import pytest

import pyws
from _pki import make_pki


def tcp_server(serve: Callable[[socket.socket], None],
               wrap: Any = None) -> Tuple[int, socket.socket]:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)

    def run() -> None:
        try:
            c, _ = lsock.accept()
        except OSError:
            return
        if wrap is not None:
            try:
                c = wrap.wrap_socket(c, server_side=True)
            except ssl.SSLError:
                c.close()  # the client refused our certificate: what the test wants
                return
        with c:
            serve(c)

    threading.Thread(target=run, daemon=True).start()
    return lsock.getsockname()[1], lsock


def echo(c: socket.socket) -> None:
    while True:
        data = c.recv(65536)
        if not data:
            return
        c.sendall(data)


def drive(mgr: pyws.Manager, until: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        mgr.poll(10)


def test_stream_connects_sends_queued_bytes_and_reads() -> None:
    port, lsock = tcp_server(echo)
    events: List[Tuple[int, Any]] = []
    got = bytearray()

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        events.append((ev, data))
        if ev == pyws.EV_DATA:
            got.extend(data)

    with pyws.Manager(handler) as mgr:
        c = mgr.connect_stream("127.0.0.1", port)
        c.send_raw(b"queued before the connect;")  # waits in the queue
        drive(mgr, lambda: any(e == pyws.EV_CONNECT for e, _ in events))
        assert c.state == pyws.State.OPEN and not c.is_websocket
        c.send_raw(b"x" * 300_000)
        drive(mgr, lambda: len(got) == 26 + 300_000)
        assert bytes(got) == b"queued before the connect;" + b"x" * 300_000
        c.drain()
        drive(mgr, lambda: c.closed)
    lsock.close()


def test_stream_refused_is_an_error_then_a_close() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    events: List[int] = []
    with pyws.Manager(lambda conn, ev, data: events.append(ev)) as mgr:
        c = mgr.connect_stream("127.0.0.1", port)
        drive(mgr, lambda: c.closed)
    assert events[-2:] == [pyws.EV_ERROR, pyws.EV_CLOSE]
    assert isinstance(c.error, ConnectionRefusedError)


def test_stream_write_limit_ends_it_with_an_error() -> None:
    stop = threading.Event()
    port, lsock = tcp_server(lambda c: stop.wait(10))  # never reads
    errors: List[str] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_ERROR:
            errors.append(data)

    with pyws.Manager(handler) as mgr:
        c = mgr.connect_stream("127.0.0.1", port, write_limit=1 << 20)
        drive(mgr, lambda: c.state == pyws.State.OPEN)
        for _ in range(64):
            if c.closed:
                break
            try:
                c.send_raw(b"y" * (256 << 10))
            except pyws.PyWSError:
                break
            mgr.poll(5)
        drive(mgr, lambda: c.closed)
    stop.set()
    lsock.close()
    assert c.closed and any("write_limit" in e for e in errors)


def test_stream_over_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(pki.server_cert, pki.server_key)
    port, lsock = tcp_server(echo, wrap=sctx)
    got = bytearray()

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_DATA:
            got.extend(data)

    with pyws.Manager(handler) as mgr:
        c = mgr.connect_stream("127.0.0.1", port, tls=pyws.TlsOpts(ca=pki.ca_cert))
        c.send_raw(b"over TLS")
        drive(mgr, lambda: bytes(got) == b"over TLS")
        assert c.tls_info is not None and c.tls_info.startswith("TLS")
        c.abort()
    lsock.close()


def test_stream_tls_with_an_untrusted_certificate_fails(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(pki.selfsigned_cert, pki.selfsigned_key)
    port, lsock = tcp_server(lambda c: None, wrap=sctx)
    with pyws.Manager() as mgr:
        c = mgr.connect_stream("127.0.0.1", port, tls=pyws.TlsOpts(ca=pki.ca_cert))
        drive(mgr, lambda: c.closed)
    assert isinstance(c.error, pyws.TlsError)
    lsock.close()
