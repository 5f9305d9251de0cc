"""TLS on the client side: ``pyws.connect("wss://...")`` and ``Manager.ws_connect`` (and
``App.connect``) against a pyws server and against a Python ssl server. Messages of every size
up to 8 MiB; the certificate checks, each failing cleanly with pyws.TlsError and OpenSSL's
reason (wrong host name, expired, self-signed against the system store and against the test CA,
an unknown issuer), ``insecure_skip_verify=True`` as the only way past them; SNI and ALPN as a
server sees them; mutual TLS (a client without a certificate, or with one from another CA, is
refused and the server keeps serving); handshake timeouts on the client side."""
from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import websocket

import pyws
from _pki import Pki, make_pki
from _rawws import accept_for
from conftest import ServerThread, echo_handler

Factory = Callable[..., ServerThread]
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def pki(tmp_path_factory: Any) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Recorder:
    """Echo, and keep the EV_ERROR texts (appended on the loop thread)."""

    def __init__(self) -> None:
        self.errors: List[str] = []

    def __call__(self, conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_ERROR:
            self.errors.append(data)
        echo_handler(conn, ev, data)

    def wait(self, n: int, timeout: float = 5.0) -> List[str]:
        deadline = time.monotonic() + timeout
        while len(self.errors) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.errors)


def tls_server(server_factory: Factory, cert: str, key: str, handler: Any = echo_handler,
               **tls: Any) -> ServerThread:
    return server_factory(handler, listen_url="wss://127.0.0.1:0",
                          listen_options={"tls": pyws.TlsOpts(cert=cert, key=key, **tls)},
                          max_message_size=16 * MiB, write_limit=64 * MiB)


def wss(port: int, host: str = "localhost", path: str = "/") -> str:
    h = f"[{host}]" if ":" in host else host
    return f"wss://{h}:{port}{path}"


def echo_once(url: str, tls: pyws.TlsOpts, text: str = "hello") -> str:
    with pyws.connect(url, timeout=5, open_timeout=5, tls=tls) as ws:
        ws.send(text)
        got = ws.recv().text
        assert ws.tls_info is not None
        return got


def connect_fails(url: str, tls: Optional[pyws.TlsOpts]) -> pyws.TlsError:
    """pyws.connect must raise TlsError, promptly."""
    t0 = time.monotonic()
    with pytest.raises(pyws.TlsError) as ei:
        pyws.connect(url, timeout=5, open_timeout=5, tls=tls)
    assert time.monotonic() - t0 < 3.0
    assert isinstance(ei.value, pyws.PyWSError)
    return ei.value


# ------------------------------------------------------------------------------ sizes
SIZES = [0, 1, 125, 126, 127, 1000, 16383, 16384, 16385, 65535, 65536, 65537, 100_000,
         MiB - 1, MiB, 3 * MiB + 5, 8 * MiB]


def test_pyws_client_against_pyws_server_all_sizes(server_factory: Factory, pki: Pki) -> None:
    srv = tls_server(server_factory, pki.server_cert, pki.server_key)
    with pyws.connect(wss(srv.port), timeout=20, max_size=16 * MiB,
                      tls=pyws.TlsOpts(ca=pki.ca_cert)) as ws:
        info = ws.tls_info
        assert info is not None
        version, cipher = info.split()
        assert version in ("TLSv1.2", "TLSv1.3") and cipher
        for n in SIZES:
            payload = os.urandom(n)
            ws.send(payload)
            m = ws.recv()
            assert m.is_binary and len(m.data) == n
            assert hashlib.sha256(m.data).digest() == hashlib.sha256(payload).digest(), n
        for n in (0, 5, 70000, 8 * MiB):
            text = ("aé€𝄞" * (n // 10 + 1))[: n // 4]
            ws.send(text)
            assert ws.recv().text == text
        # many small messages in a burst, then their echoes in order
        for i in range(500):
            ws.send(f"m{i}")
        assert [ws.recv().text for _ in range(500)] == [f"m{i}" for i in range(500)]
        ws.ping(b"over tls")


def test_ws_connect_on_a_manager(server_factory: Factory, pki: Pki) -> None:
    srv = tls_server(server_factory, pki.server_cert, pki.server_key)
    events: List[int] = []
    got: List[bytes] = []
    with pyws.Manager() as mgr:
        def on(conn: pyws.Connection, ev: int, data: Any) -> None:
            events.append(ev)
            if ev == pyws.EV_WS_OPEN:
                conn.ws_send(b"x" * (2 * MiB), pyws.OP_BINARY)
            elif ev == pyws.EV_WS_MSG:
                got.append(bytes(data.data))
                conn.close(1000, "done")

        c = mgr.ws_connect(wss(srv.port, "127.0.0.1", "/path?q=1"), on,
                           tls=pyws.TlsOpts(ca=pki.ca_cert), max_message_size=4 * MiB)
        deadline = time.monotonic() + 10
        while pyws.EV_CLOSE not in events and time.monotonic() < deadline:
            mgr.poll(20)
    assert got == [b"x" * (2 * MiB)]
    assert events[0] == pyws.EV_CONNECT and pyws.EV_WS_OPEN in events
    assert c.close_code == 1000 and c.error is None


def test_app_connect_over_wss(server_factory: Factory, pki: Pki) -> None:
    srv = tls_server(server_factory, pki.server_cert, pki.server_key)
    app = pyws.App()
    seen: Dict[str, Any] = {}

    def client(ws: pyws.WebSocket) -> Any:
        seen["connected"] = ws.connected
        if not ws.connected:
            seen["error"] = ws.error
            return
        ws.send("from an App")
        msg = yield ws.recv()
        seen["reply"] = msg.text

    def failing(ws: pyws.WebSocket) -> Any:
        seen["bad_connected"] = ws.connected
        seen["bad_error"] = ws.error
        return
        yield  # a generator

    with app:
        app.connect(wss(srv.port), client, tls=pyws.TlsOpts(ca=pki.ca_cert))
        app.connect(wss(srv.port), failing)  # the system's store: the test CA is unknown
        deadline = time.monotonic() + 10
        while ("reply" not in seen or "bad_error" not in seen) and \
                time.monotonic() < deadline:
            app.poll(20)
    assert seen["connected"] is True and seen["reply"] == "from an App"
    assert seen["bad_connected"] is False
    assert isinstance(seen["bad_error"], pyws.TlsError)
    assert "unable to get local issuer certificate" in str(seen["bad_error"])


# ------------------------------------------------------------------------------ verification
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_wrong_host_name_fails(server_factory: Factory, pki: Pki, host: str) -> None:
    rec = Recorder()
    srv = tls_server(server_factory, pki.wronghost_cert, pki.wronghost_key, rec)
    err = connect_fails(wss(srv.port, host), pyws.TlsOpts(ca=pki.ca_cert))
    want = "hostname mismatch" if host == "localhost" else "IP address mismatch"
    assert str(err).startswith("TLS handshake failed: certificate verify failed")
    assert want in str(err), str(err)
    errors = rec.wait(1)
    assert errors and "alert bad certificate" in errors[0], errors  # the server saw why
    # the same server, with the check turned off loudly
    assert echo_once(wss(srv.port, host), pyws.TlsOpts(ca=pki.ca_cert,
                                                       insecure_skip_verify=True)) == "hello"


def test_expired_certificate_fails(server_factory: Factory, pki: Pki) -> None:
    rec = Recorder()
    srv = tls_server(server_factory, pki.expired_cert, pki.expired_key, rec)
    err = connect_fails(wss(srv.port), pyws.TlsOpts(ca=pki.ca_cert))
    assert "certificate has expired" in str(err), str(err)
    errors = rec.wait(1)
    assert errors and "certificate expired" in errors[0], errors
    assert echo_once(wss(srv.port), pyws.TlsOpts(insecure_skip_verify=True)) == "hello"


@pytest.mark.parametrize("trust", ["system", "test-ca"])
def test_self_signed_certificate_fails(server_factory: Factory, pki: Pki, trust: str) -> None:
    rec = Recorder()
    srv = tls_server(server_factory, pki.selfsigned_cert, pki.selfsigned_key, rec)
    opts = pyws.TlsOpts() if trust == "system" else pyws.TlsOpts(ca=pki.ca_cert)
    err = connect_fails(wss(srv.port), opts)
    assert "self-signed certificate" in str(err) or "self signed certificate" in str(err), \
        str(err)
    errors = rec.wait(1)
    assert errors and errors[0].startswith("TLS handshake failed"), errors
    # the same client without tls= at all (the default: the system's store) fails the same
    err2 = connect_fails(wss(srv.port), None)
    assert "self" in str(err2) and "signed" in str(err2)


def test_insecure_skip_verify_against_self_signed(server_factory: Factory, pki: Pki) -> None:
    srv = tls_server(server_factory, pki.selfsigned_cert, pki.selfsigned_key)
    opts = pyws.TlsOpts(insecure_skip_verify=True)
    assert "INSECURE" in repr(opts)
    with pyws.connect(wss(srv.port), timeout=5, tls=opts) as ws:
        ws.send(b"\x01" * 300000)
        assert ws.recv().data == b"\x01" * 300000
        assert ws.tls_info is not None  # still encrypted, just not authenticated
    # a wrong host name and an IP are also let through
    assert echo_once(wss(srv.port, "127.0.0.1"), opts) == "hello"


def test_unknown_issuer_with_the_system_store(server_factory: Factory, pki: Pki) -> None:
    """By default the system's trust store is used, which does not know the test CA."""
    rec = Recorder()
    srv = tls_server(server_factory, pki.server_cert, pki.server_key, rec)
    err = connect_fails(wss(srv.port), None)
    assert "unable to get local issuer certificate" in str(err), str(err)
    assert rec.wait(1) and "unknown ca" in rec.errors[0], rec.errors
    assert echo_once(wss(srv.port), pyws.TlsOpts(ca=pki.ca_cert)) == "hello"


def test_failures_leave_the_server_serving(server_factory: Factory, pki: Pki) -> None:
    rec = Recorder()
    srv = tls_server(server_factory, pki.wronghost_cert, pki.wronghost_key, rec)
    for i in range(10):
        connect_fails(wss(srv.port), pyws.TlsOpts(ca=pki.ca_cert) if i % 2 else None)
    assert len(rec.wait(10)) == 10
    ok = pyws.TlsOpts(ca=pki.ca_cert, insecure_skip_verify=True)
    assert [echo_once(wss(srv.port), ok, f"t{i}") for i in range(3)] == ["t0", "t1", "t2"]


def test_ws_connect_failure_reports_error_event(server_factory: Factory, pki: Pki) -> None:
    srv = tls_server(server_factory, pki.expired_cert, pki.expired_key)
    events: List[Any] = []
    with pyws.Manager() as mgr:
        c = mgr.ws_connect(wss(srv.port), lambda conn, ev, data: events.append((ev, data)),
                           tls=pyws.TlsOpts(ca=pki.ca_cert))
        deadline = time.monotonic() + 5
        while not any(ev == pyws.EV_CLOSE for ev, _ in events) and \
                time.monotonic() < deadline:
            mgr.poll(20)
    kinds = [ev for ev, _ in events]
    assert pyws.EV_WS_OPEN not in kinds
    assert kinds[-2:] == [pyws.EV_ERROR, pyws.EV_CLOSE], kinds
    text = events[-2][1]
    assert "certificate has expired" in text
    assert isinstance(c.error, pyws.TlsError) and "certificate has expired" in str(c.error)


# ------------------------------------------------------------------------------ SNI, ALPN
class PySslServer:
    """A Python ssl WebSocket server on 127.0.0.1: records the SNI name, the negotiated ALPN
    protocol, the request's Host and the client's certificate; answers 101, sends one text
    frame, and closes."""

    def __init__(self, pki: Pki, require_client_cert: bool = False,
                 answer: bool = True) -> None:
        self.answer = answer
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki.server_cert, pki.server_key)
        self.ctx.set_alpn_protocols(["http/1.1"])
        if require_client_cert:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(pki.ca_cert)
        self.names: List[Optional[str]] = []
        self.ctx.sni_callback = self._sni
        self.seen: List[Dict[str, Any]] = []
        self.errors: List[BaseException] = []
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sni(self, sslobj: Any, name: Optional[str], ctx: ssl.SSLContext) -> None:
        self.names.append(name)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            raw.settimeout(5)
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as s:
                    self._serve(s)
            except (OSError, ssl.SSLError, ValueError) as exc:
                self.errors.append(exc)

    def _serve(self, s: ssl.SSLSocket) -> None:
        info: Dict[str, Any] = {"alpn": s.selected_alpn_protocol(), "version": s.version(),
                                "peercert": s.getpeercert()}
        self.seen.append(info)
        head = b""
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in head and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                return
            head += chunk
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        info["host"] = headers.get("host")
        if not self.answer:
            return  # hang up without a word (and without close_notify)
        s.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: "
                   f"{accept_for(headers['sec-websocket-key'])}\r\n\r\n").encode())
        s.sendall(b"\x81\x05hello" + b"\x88\x02\x03\xe8")  # "hello", then close 1000
        got = b""
        while len(got) < 2 and time.monotonic() < deadline:  # the client's close frame
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        info["close"] = got[:1]
        # then end TCP first, as a server does (without close_notify, like many servers)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.lsock.close()


@pytest.fixture
def py_server(pki: Pki) -> Iterator[Callable[..., PySslServer]]:
    made: List[PySslServer] = []

    def make(**kw: Any) -> PySslServer:
        s = PySslServer(pki, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def test_sni_and_alpn_as_the_server_sees_them(py_server: Callable[..., PySslServer],
                                             pki: Pki) -> None:
    srv = py_server()
    with pyws.connect(wss(srv.port, "localhost"), timeout=5,
                      tls=pyws.TlsOpts(ca=pki.ca_cert)) as ws:
        assert ws.recv().text == "hello"
    assert srv.names == ["localhost"]
    assert srv.seen[0]["alpn"] == "http/1.1"
    assert srv.seen[0]["version"] in ("TLSv1.2", "TLSv1.3")
    assert srv.seen[0]["host"] == f"localhost:{srv.port}"
    assert srv.seen[0]["peercert"] is None  # no client certificate was asked for or sent
    # an IP literal: no SNI (RFC 6066 allows host names only), the IP SAN is what is checked
    with pyws.connect(wss(srv.port, "127.0.0.1"), timeout=5,
                      tls=pyws.TlsOpts(ca=pki.ca_cert)) as ws:
        assert ws.recv().text == "hello"
    assert srv.names == ["localhost", None]
    assert srv.errors == []


def test_sni_from_ws_connect(py_server: Callable[..., PySslServer], pki: Pki) -> None:
    srv = py_server()
    got: List[str] = []
    with pyws.Manager() as mgr:
        def on(conn: pyws.Connection, ev: int, data: Any) -> None:
            if ev == pyws.EV_WS_MSG:
                got.append(data.text)

        c = mgr.ws_connect(wss(srv.port, "localhost"), on, tls=pyws.TlsOpts(ca=pki.ca_cert))
        deadline = time.monotonic() + 5
        while not c.closed and time.monotonic() < deadline:
            mgr.poll(20)
    assert got == ["hello"] and c.close_code == 1000
    assert srv.names == ["localhost"]


def test_client_certificate_reaches_a_python_server(py_server: Callable[..., PySslServer],
                                                    pki: Pki) -> None:
    srv = py_server(require_client_cert=True)
    with pyws.connect(wss(srv.port), timeout=5,
                      tls=pyws.TlsOpts(ca=pki.ca_cert, cert=pki.client_cert,
                                       key=pki.client_key)) as ws:
        assert ws.recv().text == "hello"
    subject = dict(x[0] for x in srv.seen[0]["peercert"]["subject"])
    assert subject["commonName"] == "pyws test client"


def test_server_hanging_up_after_the_tls_handshake(py_server: Callable[..., PySslServer],
                                                   pki: Pki) -> None:
    """The TLS handshake succeeded but the server ends TCP (no close_notify) instead of
    answering the upgrade: the same HandshakeError as over ws://, not a TLS failure."""
    srv = py_server(answer=False)
    with pytest.raises(pyws.HandshakeError) as ei:
        pyws.connect(wss(srv.port), timeout=5, open_timeout=5,
                     tls=pyws.TlsOpts(ca=pki.ca_cert))
    assert not isinstance(ei.value, pyws.TlsError)
    assert "closed the connection before answering the upgrade" in str(ei.value)
    assert srv.names == ["localhost"] and srv.seen[0]["host"] == f"localhost:{srv.port}"


# ------------------------------------------------------------------------------ mutual TLS
def test_mutual_tls(server_factory: Factory, pki: Pki) -> None:
    rec = Recorder()
    srv = tls_server(server_factory, pki.server_cert, pki.server_key, rec, ca=pki.ca_cert,
                     verify_client=True)
    url = wss(srv.port)
    # no client certificate: refused, with the server's reason
    err = connect_fails(url, pyws.TlsOpts(ca=pki.ca_cert))
    assert "certificate required" in str(err) or "handshake failure" in str(err), str(err)
    errors = rec.wait(1)
    assert "peer did not return a certificate" in errors[0], errors
    # a certificate from another issuer (self-signed): refused
    err = connect_fails(url, pyws.TlsOpts(ca=pki.ca_cert, cert=pki.selfsigned_cert,
                                          key=pki.selfsigned_key))
    assert "unknown ca" in str(err) or "certificate" in str(err), str(err)
    errors = rec.wait(2)
    assert "certificate verify failed" in errors[1], errors
    # the client certificate signed by the CA: served, again and again
    good = pyws.TlsOpts(ca=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)
    for i in range(3):
        assert echo_once(url, good, f"mtls {i}") == f"mtls {i}"
    # websocket-client with and without its certificate
    ws = websocket.create_connection(url, timeout=5, sslopt={
        "ca_certs": pki.ca_cert, "certfile": pki.client_cert, "keyfile": pki.client_key})
    try:
        ws.send("wsc mtls")
        assert ws.recv() == "wsc mtls"
    finally:
        ws.close()
    with pytest.raises((ssl.SSLError, OSError, websocket.WebSocketException)):
        bad = websocket.create_connection(url, timeout=5, sslopt={"ca_certs": pki.ca_cert})
        bad.recv()  # TLS 1.3: the refusal may only show on the first read
    assert len(rec.wait(3)) == 3
    assert echo_once(url, good, "still") == "still"


def test_mutual_tls_over_tls12(server_factory: Factory, pki: Pki) -> None:
    """With TLS 1.2 the server's refusal comes inside the handshake itself."""
    srv = tls_server(server_factory, pki.server_cert, pki.server_key, ca=pki.ca_cert,
                     verify_client=True)
    for cert in (None, (pki.client_cert, pki.client_key)):
        ctx = ssl.create_default_context(cafile=pki.ca_cert)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if cert:
            ctx.load_cert_chain(*cert)
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        try:
            if cert is None:
                with pytest.raises(ssl.SSLError):
                    ctx.wrap_socket(raw, server_hostname="localhost")
            else:
                s = ctx.wrap_socket(raw, server_hostname="localhost")
                assert s.version() == "TLSv1.2"
                s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
                s.close()
        finally:
            raw.close()


# ------------------------------------------------------------------------------ timeouts
def test_client_tls_handshake_timeout() -> None:
    """A server that accepts and never answers the ClientHello: open_timeout ends it with
    TimeoutError naming the TLS handshake; other clients on the same loop are not held up."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    port = lsock.getsockname()[1]
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as ei:
            pyws.connect(wss(port), open_timeout=0.5, tls=pyws.TlsOpts(insecure_skip_verify=True))
        took = time.monotonic() - t0
        assert 0.4 <= took < 3.0, took
        assert "TLS handshake" in str(ei.value) and "in time" in str(ei.value)
    finally:
        lsock.close()


def test_a_hanging_tls_server_does_not_block_other_clients(server_factory: Factory,
                                                           pki: Pki) -> None:
    srv = tls_server(server_factory, pki.server_cert, pki.server_key)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    try:
        with pyws.Manager() as mgr:
            events: Dict[str, List[Any]] = {"hang": [], "good": []}
            hang = mgr.ws_connect(wss(lsock.getsockname()[1]),
                                  lambda c, ev, d: events["hang"].append(ev),
                                  tls=pyws.TlsOpts(insecure_skip_verify=True),
                                  handshake_timeout=4.0)

            def good_on(conn: pyws.Connection, ev: int, data: Any) -> None:
                events["good"].append(ev)
                if ev == pyws.EV_WS_OPEN:
                    conn.ws_send("ping")
                elif ev == pyws.EV_WS_MSG:
                    conn.close()

            t0 = time.monotonic()
            good = mgr.ws_connect(wss(srv.port), good_on, tls=pyws.TlsOpts(ca=pki.ca_cert))
            deadline = time.monotonic() + 10
            while not good.closed and time.monotonic() < deadline:
                mgr.poll(20)
            assert good.closed and good.close_code == 1000
            assert time.monotonic() - t0 < 3.0  # not held up until hang's 4 s timeout
            assert not hang.closed  # still waiting for its server
            while not hang.closed and time.monotonic() < deadline:
                mgr.poll(20)
            assert hang.closed and isinstance(hang.error, TimeoutError)
            assert events["hang"][-2:] == [pyws.EV_ERROR, pyws.EV_CLOSE]
    finally:
        lsock.close()
