"""TLS on the server side: ``listen("wss://..." / "https://...", tls=TlsOpts(...))`` with
certificate paths or PEM bytes, the mongoose style (``conn.tls_init`` on EV_ACCEPT), and
``App.listen`` / ``App.run(tls=...)``; interop with websocket-client over wss and with Python's
ssl module as a raw client (ALPN, protocol versions, raw upgrade and masked frames); the
handshake running inside the loop (silent and trickling peers, handshake_timeout); garbage and
plain HTTP on a TLS port; 8 MiB messages; slow readers (backpressure through SSL_write's
want-write path); many concurrent TLS clients; bad certificates and keys at listen time.

Certificates are made at test time (tests/_pki.py). The pyws client's own TLS checks (wrong
host, expired, self-signed, SNI, mutual TLS) are in test_tls_client.py."""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import websocket

import pyws
from _frames import MASK_KEY, frame
from _pki import Pki, make_pki
from _rawws import ACCEPT, OP_BINARY, OP_CLOSE, OP_TEXT, RawWS, close_payload, handshake_request
from conftest import AppServer, ServerThread, echo_handler, free_port

Factory = Callable[..., ServerThread]
MiB = 1024 * 1024


# ------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def pki(tmp_path_factory: Any) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def server_opts(pki: Pki, **kw: Any) -> pyws.TlsOpts:
    return pyws.TlsOpts(cert=pki.server_cert, key=pki.server_key, **kw)


class Recorder:
    """A server handler: echo (conftest.echo_handler) and record what happened, with the
    time, from the loop thread."""

    def __init__(self, inner: Callable[[pyws.Connection, int, Any], None] = echo_handler
                 ) -> None:
        self.inner = inner
        self.events: List[Tuple[float, int, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, conn: pyws.Connection, ev: int, data: Any) -> None:
        with self.lock:
            self.events.append((time.monotonic(), ev, data if ev == pyws.EV_ERROR else None))
        self.inner(conn, ev, data)

    def errors(self) -> List[str]:
        with self.lock:
            return [d for _, ev, d in self.events if ev == pyws.EV_ERROR]

    def count(self, ev: int) -> int:
        with self.lock:
            return sum(1 for _, e, _ in self.events if e == ev)

    def wait_errors(self, n: int, timeout: float = 5.0) -> List[str]:
        deadline = time.monotonic() + timeout
        while len(self.errors()) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.errors()


def tls_server(server_factory: Factory, pki: Pki, handler: Any = echo_handler,
               url: str = "wss://127.0.0.1:0", tls: Optional[pyws.TlsOpts] = None,
               **options: Any) -> ServerThread:
    options.setdefault("max_message_size", 16 * MiB)
    options.setdefault("write_limit", 64 * MiB)
    return server_factory(handler, listen_url=url,
                          listen_options={"tls": tls or server_opts(pki)}, **options)


def wss(port: int, host: str = "localhost", path: str = "/") -> str:
    h = f"[{host}]" if ":" in host else host
    return f"wss://{h}:{port}{path}"


def assert_serves(port: int, pki: Pki, host: str = "localhost") -> None:
    """A good wss client is served: the server survived whatever came before."""
    with pyws.connect(wss(port, host), timeout=5, open_timeout=5,
                      tls=pyws.TlsOpts(ca=pki.ca_cert)) as ws:
        ws.send("still serving")
        assert ws.recv().text == "still serving"
        assert ws.tls_info is not None


def client_ctx(pki: Pki, alpn: Optional[List[str]] = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.ca_cert)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


class RawTLS(RawWS):
    """RawWS over an ssl-wrapped socket (Python's ssl module as the client). With
    ``ragged_eof=False`` an EOF without close_notify raises ssl.SSLEOFError."""

    def __init__(self, port: int, ctx: ssl.SSLContext, server_hostname: str = "localhost",
                 timeout: float = 5.0, rcvbuf: Optional[int] = None,
                 ragged_eof: bool = True) -> None:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.settimeout(timeout)
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            raw.connect(("127.0.0.1", port))
            self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname,
                                        suppress_ragged_eofs=ragged_eof)
        except BaseException:
            raw.close()
            raise
        self.sock.settimeout(timeout)
        self.buf = b""
        self.timeout = timeout


def dropped(sock: socket.socket, timeout: float = 3.0) -> bytes:
    """Read until the peer ends TCP (EOF or reset); what came before. TimeoutError if it
    stays open."""
    sock.settimeout(timeout)
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return got
        except socket.timeout:
            break
        if not chunk:
            return got
        got += chunk
    raise TimeoutError(f"the server kept the connection open (read {got[:60]!r})")


def client_hello(pki: Pki) -> bytes:
    """The bytes of a real TLS ClientHello (made with ssl.MemoryBIO, never sent by ssl)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(pki).wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    assert hello[:1] == b"\x16" and len(hello) > 100
    return hello


# ------------------------------------------------------------------------------ listening
@pytest.mark.parametrize("scheme", ["wss", "https"])
def test_listen_tls_with_cert_and_key_paths(server_factory: Factory, pki: Pki,
                                            scheme: str) -> None:
    srv = tls_server(server_factory, pki, url=f"{scheme}://127.0.0.1:0")
    with pyws.connect(wss(srv.port), timeout=5, tls=pyws.TlsOpts(ca=pki.ca_cert)) as ws:
        info = ws.tls_info
        assert info is not None and info.split()[0] in ("TLSv1.2", "TLSv1.3"), info
        ws.send("over TLS")
        assert ws.recv().text == "over TLS"
        ws.send(b"\x00\xff" * 1000)
        assert ws.recv().data == b"\x00\xff" * 1000
    # a plain-text client on the same port is not served in clear text
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(handshake_request("/"))
        assert b"HTTP/1.1" not in dropped(s)


def test_listen_tls_with_pem_bytes_and_str(server_factory: Factory, pki: Pki) -> None:
    cert = open(pki.server_cert, "rb").read()
    key = open(pki.server_key, "rb").read()
    assert cert.startswith(b"-----BEGIN CERTIFICATE") and b"PRIVATE KEY" in key
    for opts in (pyws.TlsOpts(cert=cert, key=key),
                 pyws.TlsOpts(cert=cert.decode(), key=key.decode())):
        srv = tls_server(server_factory, pki, url="https://127.0.0.1:0", tls=opts)
        assert_serves(srv.port, pki)


def test_https_listener_answers_plain_http_over_tls(server_factory: Factory, pki: Pki) -> None:
    """https:// is HTTP over TLS: an HTTPS GET (http.client + ssl) gets the handler's reply."""
    srv = tls_server(server_factory, pki, url="https://127.0.0.1:0")
    conn = http.client.HTTPSConnection("localhost", srv.port, timeout=5,
                                       context=client_ctx(pki))
    try:
        conn.request("GET", "/hello")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read() == b"ok"
    finally:
        conn.close()


def test_server_connection_reports_tls_info(server_factory: Factory, pki: Pki) -> None:
    seen: List[Optional[str]] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_WS_MSG:
            seen.append(conn.tls_info)
        echo_handler(conn, ev, data)

    srv = tls_server(server_factory, pki, handler)
    assert_serves(srv.port, pki)
    assert len(seen) == 1 and seen[0] is not None
    assert seen[0].split()[0] in ("TLSv1.2", "TLSv1.3")
    # and a plain server's connections have none
    seen.clear()
    plain = server_factory(handler)
    with pyws.connect(plain.url + "/", timeout=5) as ws:
        ws.send("x")
        ws.recv()
        assert ws.tls_info is None
    assert seen == [None]


@pytest.mark.parametrize("url", ["http://127.0.0.1:0", "https://127.0.0.1:0"])
def test_tls_init_on_accept_mongoose_style(server_factory: Factory, pki: Pki, url: str) -> None:
    cert = open(pki.server_cert, "rb").read()
    key = open(pki.server_key, "rb").read()
    opts = pyws.TlsOpts(cert=cert, key=key)

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_ACCEPT:
            conn.tls_init(opts)
        echo_handler(conn, ev, data)

    srv = server_factory(handler, listen_url=url)
    for _ in range(3):
        assert_serves(srv.port, pki)
    with RawTLS(srv.port, client_ctx(pki, ["http/1.1"])) as raw:
        assert raw.sock.selected_alpn_protocol() == "http/1.1"  # type: ignore[attr-defined]
        raw.handshake("/")
        raw.send_frame(b"raw", OP_TEXT)
        assert raw.recv_frame() == (OP_TEXT, True, b"raw")


def test_tls_init_too_late_is_an_error(server_factory: Factory, pki: Pki) -> None:
    """tls_init once the request has been read raises TlsError; the connection goes on in
    clear text."""
    late: List[BaseException] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            try:
                conn.tls_init(server_opts(pki))
            except pyws.TlsError as exc:
                late.append(exc)
        echo_handler(conn, ev, data)

    srv = server_factory(handler)
    with pyws.connect(srv.url + "/", timeout=5) as ws:
        ws.send("clear")
        assert ws.recv().text == "clear"
    assert len(late) == 1 and "before any byte" in str(late[0]), late


def test_tls_init_twice_is_an_error(server_factory: Factory, pki: Pki) -> None:
    opts = server_opts(pki)
    errors: List[BaseException] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_ACCEPT:
            conn.tls_init(opts)
            try:
                conn.tls_init(opts)
            except pyws.TlsError as exc:
                errors.append(exc)
        echo_handler(conn, ev, data)

    srv = server_factory(handler, listen_url="http://127.0.0.1:0")
    assert_serves(srv.port, pki)
    assert len(errors) == 1 and "already" in str(errors[0])


def _echo_app() -> pyws.App:
    app = pyws.App(max_message_size=16 * MiB, write_limit=64 * MiB)

    @app.websocket("/ws")
    def echo(ws: pyws.WebSocket) -> Any:
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            ws.send(msg)

    @app.route("/")
    def index(request: pyws.Request) -> str:
        return "tls app"

    return app


def test_app_listen_tls(serve: Callable[..., AppServer], pki: Pki) -> None:
    srv = serve(_echo_app(), tls=server_opts(pki))
    with pyws.connect(wss(srv.port, path="/ws"), timeout=5,
                      tls=pyws.TlsOpts(ca=pki.ca_cert)) as ws:
        ws.send("app over tls")
        assert ws.recv().text == "app over tls"
        big = os.urandom(2 * MiB)
        ws.send(big)
        assert ws.recv().data == big
        assert ws.tls_info is not None
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=5,
                                       context=client_ctx(pki))
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200 and b"tls app" in resp.read()
    finally:
        conn.close()


def test_app_run_tls(pki: Pki) -> None:
    app = _echo_app()
    started = threading.Event()
    box: Dict[str, Any] = {}

    def on_start(lst: pyws.Listener) -> None:
        box["port"] = lst.port
        started.set()

    def run() -> None:
        try:
            app.run("127.0.0.1", 0, tls=server_opts(pki), on_start=on_start,
                    shutdown_timeout=1.0)
        except BaseException as exc:  # surfaced below
            box["error"] = exc
            started.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        assert started.wait(10) and "error" not in box, box.get("error")
        ws = pyws.connect(wss(box["port"], path="/ws"), timeout=5,
                          tls=pyws.TlsOpts(ca=pki.ca_cert))
        ws.send("run over tls")
        assert ws.recv().text == "run over tls"
        app.stop()
        with pytest.raises(pyws.ConnectionClosed) as ei:
            ws.recv(5)
        assert ei.value.code == 1001  # run()'s graceful shutdown, over TLS
        ws.close()
    finally:
        app.stop()
        t.join(10)
    assert not t.is_alive()
    assert "error" not in box, box.get("error")


# ------------------------------------------------------------------------------ bad options
def test_key_not_matching_cert_fails_at_listen(pki: Pki) -> None:
    port = free_port()
    with pyws.Manager() as mgr:
        bad = pyws.TlsOpts(cert=pki.server_cert, key=pki.client_key)
        with pytest.raises(pyws.TlsError) as ei:
            mgr.listen(f"wss://127.0.0.1:{port}", tls=bad)
        text = str(ei.value)
        assert "private key" in text and "mismatch" in text, text
        assert mgr.listeners == []
        # nothing was left listening (in clear text) on the port: it can be taken again
        lst = mgr.listen(f"wss://127.0.0.1:{port}", tls=server_opts(pki))
        assert lst.port == port


def test_bad_tls_options_raise_tls_error(pki: Pki, tmp_path: Any) -> None:
    missing = str(tmp_path / "no-such-cert.pem")
    with pytest.raises(pyws.TlsError) as ei:
        pyws.TlsOpts(cert=missing, key=pki.server_key)
    assert missing in str(ei.value) and "certificate" in str(ei.value)
    missing_key = str(tmp_path / "no-such-key.pem")
    with pytest.raises(pyws.TlsError) as ei:
        pyws.TlsOpts(cert=pki.server_cert, key=missing_key)
    assert missing_key in str(ei.value) and "private key" in str(ei.value)
    with pytest.raises(pyws.TlsError) as ei:
        pyws.TlsOpts(cert=pki.server_cert, key=pki.server_key, ca=str(tmp_path / "nope"))
    assert "CA" in str(ei.value)
    with pyws.Manager() as mgr:
        for opts, words in (
                (pyws.TlsOpts(cert=b"not a certificate", key=pki.server_key), "certificate"),
                (pyws.TlsOpts(cert=pki.server_cert, key=b"not a key"), "private key"),
                (pyws.TlsOpts(cert=pki.server_cert), "certificate and a key"),
                (pyws.TlsOpts(key=pki.server_key), "certificate"),
                (pyws.TlsOpts(cert=pki.server_cert, key=pki.server_key, ca=b"junk"), "CA")):
            with pytest.raises(pyws.TlsError) as ei:
                mgr.listen("wss://127.0.0.1:0", tls=opts)
            assert words in str(ei.value), (opts, str(ei.value))
        assert mgr.listeners == []


# ------------------------------------------------------------------------------ interop
def test_websocket_client_over_wss(server_factory: Factory, pki: Pki) -> None:
    srv = tls_server(server_factory, pki)
    ws = websocket.create_connection(wss(srv.port), timeout=5,
                                     sslopt={"ca_certs": pki.ca_cert})
    try:
        ws.send("héllo over wss")
        assert ws.recv() == "héllo over wss"
        for n in (0, 125, 126, 65535, 65536, MiB + 7):
            payload = os.urandom(n)
            ws.send_binary(payload)
            assert ws.recv() == payload
        ws.ping(b"pp")
        op, frame = ws.recv_data_frame(control_frame=True)
        assert op == websocket.ABNF.OPCODE_PONG and frame.data == b"pp"
        ws.close()
    finally:
        ws.shutdown()
    # websocket-client against the same server with the system's trust store: refused
    with pytest.raises(ssl.SSLCertVerificationError):
        websocket.create_connection(wss(srv.port), timeout=5)
    assert_serves(srv.port, pki)


def test_websocket_client_8mib_both_ways(server_factory: Factory, pki: Pki) -> None:
    srv = tls_server(server_factory, pki)
    ws = websocket.create_connection(wss(srv.port, "127.0.0.1"), timeout=20,
                                     sslopt={"ca_certs": pki.ca_cert})
    try:
        big = os.urandom(8 * MiB)
        ws.send_binary(big)
        assert hashlib.sha256(ws.recv()).digest() == hashlib.sha256(big).digest()
        text = "ü" * (4 * MiB)  # 8 MiB of UTF-8
        ws.send(text)
        assert ws.recv() == text
    finally:
        ws.close()


def test_python_ssl_raw_client(server_factory: Factory, pki: Pki) -> None:
    """Python's ssl module as the client: handshake, ALPN http/1.1, TLS >= 1.2, a raw upgrade,
    masked frames both ways, and the close handshake."""
    srv = tls_server(server_factory, pki)
    with RawTLS(srv.port, client_ctx(pki, ["http/1.1"])) as raw:
        sock = raw.sock
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.selected_alpn_protocol() == "http/1.1"
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        cert = sock.getpeercert()
        assert cert is not None and ("DNS", "localhost") in cert["subjectAltName"]
        raw.send(handshake_request("/chat"))
        status, headers, _ = raw.read_http_head()
        assert status == 101
        assert headers["sec-websocket-accept"] == ACCEPT
        assert headers["upgrade"].lower() == "websocket"
        raw.send_frame(b"masked text", OP_TEXT)
        assert raw.recv_frame() == (OP_TEXT, True, b"masked text")
        payload = os.urandom(70000)
        raw.send_frame(payload, OP_BINARY)
        assert raw.recv_frame() == (OP_BINARY, True, payload)
        # two frames in one TLS record, and one frame split over many records
        raw.send(frame(OP_TEXT, b"one", mask=MASK_KEY) + frame(OP_TEXT, b"two", mask=MASK_KEY))
        assert raw.recv_frame() == (OP_TEXT, True, b"one")
        assert raw.recv_frame() == (OP_TEXT, True, b"two")
        raw_frame = frame(OP_TEXT, b"s" * 3000, mask=MASK_KEY)
        for i in range(0, len(raw_frame), 7):
            raw.send(raw_frame[i:i + 7])
        assert raw.recv_frame() == (OP_TEXT, True, b"s" * 3000)
        raw.send_frame(close_payload(1000, b"bye"), OP_CLOSE)
        code, reason, before = raw.recv_close()
        assert (code, before) == (1000, [])
        assert dropped(raw.sock) == b""


def test_alpn_without_http11_still_connects(server_factory: Factory, pki: Pki) -> None:
    """A client whose ALPN list lacks http/1.1 gets no ALPN answer (not a failed handshake);
    one without ALPN at all is served as well."""
    srv = tls_server(server_factory, pki)
    for alpn in (["h2"], None):
        with RawTLS(srv.port, client_ctx(pki, alpn)) as raw:
            assert raw.sock.selected_alpn_protocol() is None  # type: ignore[attr-defined]
            raw.handshake("/")
            raw.send_frame(b"no alpn", OP_TEXT)
            assert raw.recv_frame() == (OP_TEXT, True, b"no alpn")


def test_tls12_client_is_served(server_factory: Factory, pki: Pki) -> None:
    srv = tls_server(server_factory, pki)
    ctx = client_ctx(pki, ["http/1.1"])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with RawTLS(srv.port, ctx) as raw:
        assert raw.sock.version() == "TLSv1.2"  # type: ignore[attr-defined]
        cipher = raw.sock.cipher()  # type: ignore[attr-defined]
        assert cipher is not None and cipher[0].startswith("ECDHE-"), cipher  # forward secret
        raw.handshake("/")
        raw.send_frame(b"tls 1.2", OP_TEXT)
        assert raw.recv_frame() == (OP_TEXT, True, b"tls 1.2")


def test_tls11_client_is_refused(server_factory: Factory, pki: Pki) -> None:
    srv = tls_server(server_factory, pki)
    ctx = client_ctx(pki)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        except (ValueError, ssl.SSLError):
            pass  # this OpenSSL will not even try: still, the connection must not succeed
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)):
        RawTLS(srv.port, ctx).close()
    assert_serves(srv.port, pki)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_s_client_tls11_refused_by_the_server(server_factory: Factory,
                                                       pki: Pki) -> None:
    """With a client that really offers only TLS 1.1 (openssl s_client at security level 0),
    it is the server that says no: EV_ERROR with OpenSSL's reason."""
    rec = Recorder()
    srv = tls_server(server_factory, pki, rec)
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", "-tls1_1",
                        "-cipher", "DEFAULT@SECLEVEL=0"], input=b"", capture_output=True,
                       timeout=20)
    assert r.returncode != 0
    errors = rec.wait_errors(1)
    assert errors and "TLS handshake failed" in errors[0], errors
    assert "unsupported protocol" in errors[0] or "version" in errors[0], errors
    assert_serves(srv.port, pki)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_s_client_renegotiation_refused(server_factory: Factory, pki: Pki) -> None:
    """TLS 1.2 renegotiation (s_client's "R" command) is refused; ALPN is http/1.1."""
    srv = tls_server(server_factory, pki)
    p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}",
                          "-tls1_2", "-CAfile", pki.ca_cert, "-servername", "localhost",
                          "-alpn", "http/1.1"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        assert p.stdin is not None
        time.sleep(0.5)
        p.stdin.write(b"R\n")
        p.stdin.flush()
        deadline = time.monotonic() + 5
        while p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if p.poll() is None:
            p.terminate()
        out = p.communicate(timeout=10)[0].decode("latin-1")
    assert "Verify return code: 0 (ok)" in out, out[-2000:]
    assert "ALPN protocol: http/1.1" in out, out[-2000:]
    assert "RENEGOTIATING" in out
    assert "no renegotiation" in out, out[-2000:]
    assert_serves(srv.port, pki)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_s_client_key_update(server_factory: Factory, pki: Pki) -> None:
    """TLS 1.3 KeyUpdate asking the server to update its keys too (s_client's "K"): the
    server's SSL_read takes it in its stride, and requests before and after are answered."""
    srv = tls_server(server_factory, pki)
    p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}",
                          "-tls1_3", "-CAfile", pki.ca_cert, "-servername", "localhost",
                          "-crlf"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        assert p.stdin is not None
        time.sleep(0.5)
        for line in (b"GET /a HTTP/1.1\nHost: localhost\n\n", b"K\n",
                     b"GET /b HTTP/1.1\nHost: localhost\n\n", b"K\n",
                     b"GET /c HTTP/1.1\nHost: localhost\n\n"):
            p.stdin.write(line)
            p.stdin.flush()
            time.sleep(0.2)
    finally:
        p.terminate()
        out = p.communicate(timeout=10)[0].decode("latin-1")
    assert out.count("KEYUPDATE") == 2, out[-2000:]
    assert out.count("HTTP/1.1 200 OK") == 3, out[-2000:]


# ------------------------------------------------------------------------------ the loop
def test_handshake_never_blocks_the_loop(server_factory: Factory, pki: Pki) -> None:
    """A peer that connects and says nothing, and one that trickles a ClientHello a byte
    every 100 ms, stall neither poll() nor other clients; handshake_timeout closes both.
    handshake_timeout is 4 s so that "not stalled" (a connect and round trips well under it)
    holds on a loaded machine and still fails if a hanging peer held the loop up to it."""
    rec = Recorder()
    srv = tls_server(server_factory, pki, rec, handshake_timeout=4.0)
    hello = client_hello(pki)
    stop = threading.Event()
    t0 = time.monotonic()
    silent = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    trickle = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    sent = [0]

    def trickler() -> None:
        for b in hello[:60]:  # 6 s worth: longer than the timeout, shorter than the hello
            if stop.is_set():
                return
            try:
                trickle.sendall(bytes([b]))
            except OSError:
                return
            sent[0] += 1
            time.sleep(0.1)

    th = threading.Thread(target=trickler, daemon=True)
    th.start()
    try:
        time.sleep(0.2)
        # another client: handshake and round trips, all while the two hang
        c0 = time.monotonic()
        with pyws.connect(wss(srv.port), timeout=5, tls=pyws.TlsOpts(ca=pki.ca_cert)) as ws:
            connect_time = time.monotonic() - c0
            worst = 0.0
            for i in range(10):
                r0 = time.monotonic()
                ws.send(f"ping {i}")
                assert ws.recv().text == f"ping {i}"
                worst = max(worst, time.monotonic() - r0)
            assert time.monotonic() - t0 < 3.8, "the two hanging peers must still be open"
        assert connect_time < 2.0, connect_time
        assert worst < 2.0, worst
        # handshake_timeout (4 s) ends both, and no sooner
        assert dropped(silent, 8.0) == b""
        silent_gone = time.monotonic() - t0
        assert dropped(trickle, 8.0) == b""
        trickle_gone = time.monotonic() - t0
        assert 3.8 <= silent_gone < 7.0, silent_gone
        assert 3.8 <= trickle_gone < 7.0, trickle_gone
        assert 5 <= sent[0] < 60
    finally:
        stop.set()
        th.join(5)
        silent.close()
        trickle.close()
    errors = rec.wait_errors(2)
    timeouts = [e for e in errors if "did not complete in time" in e]
    assert len(timeouts) == 2, errors
    assert all(e.startswith("TLS handshake failed") for e in timeouts)
    assert_serves(srv.port, pki)


def test_handshake_timeout_ends_a_silent_peer_without_a_good_client(
        server_factory: Factory, pki: Pki) -> None:
    """handshake_timeout 0.5 s: the silent peer is dropped after about 0.5 s (not after
    close_timeout), with EV_ERROR then EV_CLOSE; nothing in clear text is written to it."""
    rec = Recorder()
    srv = tls_server(server_factory, pki, rec, handshake_timeout=0.5, close_timeout=5.0)
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        assert dropped(s, 4.0) == b""  # in particular, no "HTTP/1.1 408" in clear text
        took = time.monotonic() - t0
    assert 0.4 <= took < 3.0, took  # handshake_timeout 0.5 s, not close_timeout 5 s
    errors = rec.wait_errors(1)
    assert len(errors) == 1 and "did not complete in time" in errors[0], errors
    deadline = time.monotonic() + 2
    while rec.count(pyws.EV_CLOSE) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.count(pyws.EV_ACCEPT) == 1 and rec.count(pyws.EV_CLOSE) == 1
    # a peer that completes the TLS handshake but sends no request: the usual 408, encrypted
    with RawTLS(srv.port, client_ctx(pki)) as raw:
        status, _headers, _ = raw.read_http_head(3)
        assert status == 408


def test_client_hello_split_into_bytes_completes(server_factory: Factory, pki: Pki) -> None:
    """The server's handshake resumes on every byte (want-read) until the hello is whole."""
    srv = tls_server(server_factory, pki)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(pki, ["http/1.1"]).wrap_bio(inc, out, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        deadline = time.monotonic() + 10
        while True:
            assert time.monotonic() < deadline
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            for b in out.read():  # the client's flight, one byte per segment
                s.sendall(bytes([b]))
            data = s.recv(65536)
            assert data, "the server closed during the handshake"
            inc.write(data)
        tail = out.read()
        if tail:
            s.sendall(tail)
        assert obj.selected_alpn_protocol() == "http/1.1"
        obj.write(handshake_request("/"))
        s.sendall(out.read())
        got = b""
        while b"\r\n\r\n" not in got:
            assert time.monotonic() < deadline
            try:
                got += obj.read(65536)
            except ssl.SSLWantReadError:
                data = s.recv(65536)
                assert data
                inc.write(data)
        assert got.startswith(b"HTTP/1.1 101") and ACCEPT.encode() in got


# ------------------------------------------------------------------------------ garbage
@pytest.mark.parametrize("garbage", [
    pytest.param(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", id="plain-http"),
    pytest.param(handshake_request("/"), id="plain-ws-upgrade"),
    pytest.param(bytes(range(256)) * 4, id="binary"),
    pytest.param(b"\x16\x03\x01\x00\x40" + b"\x00" * 64, id="bogus-record"),
    pytest.param(b"\x16\x03\x01\xff\xff" + b"A" * 300, id="huge-record"),
])
def test_garbage_to_a_tls_port(server_factory: Factory, pki: Pki, garbage: bytes) -> None:
    rec = Recorder()
    srv = tls_server(server_factory, pki, rec)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        try:
            s.sendall(garbage)
        except OSError:
            pass  # already dropped
        answer = dropped(s, 4.0)
    assert b"HTTP/" not in answer  # never a clear-text answer
    errors = rec.wait_errors(1)
    assert len(errors) == 1, errors
    assert errors[0].startswith("TLS handshake failed: error:"), errors  # OpenSSL's reason
    if garbage.startswith(b"GET"):
        assert "http request" in errors[0]
    assert rec.count(pyws.EV_HTTP_MSG) == 0
    assert_serves(srv.port, pki)


def test_tls_client_to_a_plain_port_fails(server_factory: Factory, pki: Pki) -> None:
    """The other way round: a ClientHello to a plain listener is garbage to it (a 400 in
    clear text), and the TLS client fails."""
    with pytest.raises((ssl.SSLError, OSError)):
        RawTLS(server_factory(echo_handler).port, client_ctx(pki)).close()


# ------------------------------------------------------------------------------ sizes, load
def test_8mib_messages_both_ways_raw_ssl(server_factory: Factory, pki: Pki) -> None:
    srv = tls_server(server_factory, pki)
    with RawTLS(srv.port, client_ctx(pki), timeout=20) as raw:
        raw.handshake("/")
        big = os.urandom(8 * MiB)
        raw.send_frame(big, OP_BINARY)
        got = _recv_big_frame(raw.sock, 8 * MiB, 20.0)
        assert got == (OP_BINARY, hashlib.sha256(big).hexdigest())


def _recv_exact_into(sock: socket.socket, view: memoryview, deadline: float) -> None:
    at = 0
    while at < len(view):
        if time.monotonic() > deadline:
            raise TimeoutError(f"read {at} of {len(view)} bytes")
        n = sock.recv_into(view[at:], min(len(view) - at, 1 << 20))
        if n == 0:
            raise EOFError(f"EOF after {at} of {len(view)} bytes")
        at += n


def _recv_big_frame(sock: socket.socket, n: int, timeout: float) -> Tuple[int, str]:
    """(opcode, sha256 hex) of the next server frame, which must have n payload bytes."""
    deadline = time.monotonic() + timeout
    head = bytearray(10)
    _recv_exact_into(sock, memoryview(head)[:2], deadline)
    assert head[1] == 127, head[:2]
    _recv_exact_into(sock, memoryview(head)[2:10], deadline)
    assert struct.unpack("!Q", head[2:10])[0] == n
    body = bytearray(n)
    _recv_exact_into(sock, memoryview(body), deadline)
    return head[0] & 0x0F, hashlib.sha256(body).hexdigest()


def _chunk(i: int) -> bytes:
    return i.to_bytes(4, "big") * (MiB // 4)


def test_slow_reader_gets_32mib_intact(server_factory: Factory, pki: Pki) -> None:
    """The server queues 32 MiB (32 messages of 1 MiB) for a raw ssl client that first reads
    slowly: the write buffer stays large (SSL_write meets a full socket: want-write, partial
    writes), EV_DRAIN fires once the reader catches up, and every byte arrives intact."""
    state: Dict[str, Any] = {"drains": [], "queued": 0}

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == pyws.EV_WS_OPEN:
            state["conn"] = conn
            for i in range(32):
                conn.ws_send(_chunk(i), pyws.OP_BINARY)
            state["queued"] = conn.write_buffer_size
        elif ev == pyws.EV_DRAIN:
            state["drains"].append((time.monotonic(), conn.write_buffer_size))

    srv = tls_server(server_factory, pki, handler, write_limit=64 * MiB)
    with RawTLS(srv.port, client_ctx(pki), rcvbuf=32 * 1024, timeout=20) as raw:
        raw.handshake("/")
        sock = raw.sock
        frame_len = 10 + MiB
        total = 32 * frame_len
        data = bytearray(total)
        view = memoryview(data)
        at = len(raw.buf)
        view[:at] = raw.buf
        # slow phase: 16 KiB every 10 ms for 0.6 s
        slow_end = time.monotonic() + 0.6
        while time.monotonic() < slow_end:
            n = sock.recv_into(view[at:], 16384)
            assert n > 0
            at += n
            time.sleep(0.01)
        queued = srv.call(lambda: state["queued"])
        pending = srv.call(lambda: state["conn"].write_buffer_size)
        assert queued >= 32 * MiB
        assert pending > 16 * MiB, pending  # backpressure: it did not all vanish into the kernel
        assert srv.call(lambda: len(state["drains"])) == 0
        slow_done = time.monotonic()
        # catch up
        _recv_exact_into(sock, view[at:], time.monotonic() + 20)
    for i in range(32):
        frame = view[i * frame_len:(i + 1) * frame_len]
        assert frame[0] == 0x82 and frame[1] == 127
        assert struct.unpack("!Q", frame[2:10])[0] == MiB
        assert frame[10:] == _chunk(i), f"message {i} corrupted"
    deadline = time.monotonic() + 5
    while not srv.call(lambda: state["drains"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    drains = srv.call(lambda: list(state["drains"]))
    assert len(drains) == 1, drains
    assert drains[0][0] > slow_done
    assert drains[0][1] < MiB  # under the high-water mark (1 MiB) when it fired
    assert srv.call(lambda: state["conn"].write_buffer_size) == 0


def test_paused_reader_with_bytes_inside_openssl(server_factory: Factory, pki: Pki) -> None:
    """A server that pauses reading while decrypted bytes wait inside OpenSSL (a read that
    filled its room mid-record) must see them after resume_reading, though the socket itself
    has nothing more to report."""
    state: Dict[str, Any] = {"msgs": []}

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == pyws.EV_WS_OPEN:
            state["conn"] = conn
            conn.pause_reading()  # until the client has sent everything
        elif ev == pyws.EV_WS_MSG:
            state["msgs"].append(len(data.data))
            if data.data == b"pause":
                conn.pause_reading()
                srv.mgr.timer(0.2, conn.resume_reading)  # type: ignore[union-attr]
            elif len(data.data) > 1000:
                conn.ws_send(hashlib.sha256(data.data).hexdigest(), pyws.OP_TEXT)

    srv = tls_server(server_factory, pki, handler)
    ctx = client_ctx(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    with RawTLS(srv.port, ctx, timeout=10) as raw:
        raw.handshake("/")
        # one small record, then a frame of exactly 16 full records: a read of 256 KiB ends
        # 11 bytes short of the last record's end, leaving them decrypted inside OpenSSL
        raw.send(frame(OP_TEXT, b"pause", mask=MASK_KEY))
        wire = 16 * 16384
        payload = os.urandom(wire - 14)
        raw_frame = frame(OP_BINARY, payload, mask=MASK_KEY)
        assert len(raw_frame) == wire
        for i in range(0, wire, 16384):
            raw.send(raw_frame[i:i + 16384])
        time.sleep(0.3)  # all of it waits in the server's socket
        srv.call(lambda: state["conn"].resume_reading())
        op, _fin, answer = raw.recv_frame(5)
        assert (op, answer) == (OP_TEXT, hashlib.sha256(payload).hexdigest().encode())
    assert state["msgs"] == [5, len(payload)]


def test_client_sends_8mib_to_a_server_that_reads_slowly(server_factory: Factory,
                                                        pki: Pki) -> None:
    """The pyws client's SSL_write meets a full socket (the server paused reading): its send
    waits, and everything arrives once the server reads again."""
    state: Dict[str, Any] = {}

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == pyws.EV_WS_OPEN:
            conn.pause_reading()
            state["conn"] = conn
            srv.mgr.timer(0.5, conn.resume_reading)  # type: ignore[union-attr]
        elif ev == pyws.EV_WS_MSG:
            conn.ws_send(hashlib.sha256(data.data).hexdigest(), pyws.OP_TEXT)

    srv = tls_server(server_factory, pki, handler)
    with pyws.connect(wss(srv.port), timeout=10, max_size=16 * MiB,
                      tls=pyws.TlsOpts(ca=pki.ca_cert)) as ws:
        big = os.urandom(8 * MiB)
        t0 = time.monotonic()
        ws.send(big)  # blocks while above the high-water mark: until the server reads
        send_time = time.monotonic() - t0
        assert ws.recv().text == hashlib.sha256(big).hexdigest()
    assert send_time >= 0.25, send_time  # it did wait for the paused server


def test_many_concurrent_tls_clients(server_factory: Factory, pki: Pki) -> None:
    """50 TLS clients at once on one client loop against one server loop: every handshake
    completes and every message comes back to its own sender."""
    srv = tls_server(server_factory, pki)
    n = 50
    got: Dict[int, List[bytes]] = {i: [] for i in range(n)}
    opened: List[int] = []
    closed: List[int] = []
    tls = pyws.TlsOpts(ca=pki.ca_cert)
    with pyws.Manager() as mgr:
        conns: Dict[int, pyws.Connection] = {}

        def make(i: int) -> Callable[[pyws.Connection, int, Any], None]:
            def on(conn: pyws.Connection, ev: int, data: Any) -> None:
                if ev == pyws.EV_WS_OPEN:
                    opened.append(i)
                    conn.ws_send(f"hello {i}".encode() * (i + 1), pyws.OP_BINARY)
                elif ev == pyws.EV_WS_MSG:
                    got[i].append(bytes(data.data))
                elif ev == pyws.EV_CLOSE:
                    closed.append(i)
            return on

        for i in range(n):
            conns[i] = mgr.ws_connect(wss(srv.port, "localhost" if i % 2 else "127.0.0.1"),
                                      make(i), tls=tls)
        deadline = time.monotonic() + 20
        while sum(len(v) for v in got.values()) < n and time.monotonic() < deadline:
            mgr.poll(20)
            assert not closed, f"closed early: {closed}, errors: " \
                f"{[conns[i].error for i in closed]}"
        assert sorted(opened) == list(range(n))
        for i in range(n):
            assert got[i] == [f"hello {i}".encode() * (i + 1)]
            info = conns[i].tls_info
            assert info is not None and info.startswith("TLSv1.")
        for c in conns.values():
            c.close()
        deadline = time.monotonic() + 10
        while len(closed) < n and time.monotonic() < deadline:
            mgr.poll(20)
        assert len(closed) == n
        assert all(c.close_code == 1000 for c in conns.values())


def test_many_raw_ssl_clients_in_threads(server_factory: Factory, pki: Pki) -> None:
    srv = tls_server(server_factory, pki)
    ctx = client_ctx(pki)
    failures: List[BaseException] = []

    def one(i: int) -> None:
        try:
            with RawTLS(srv.port, ctx, timeout=10) as raw:
                raw.handshake("/")
                for j in range(5):
                    msg = f"{i}:{j}".encode() * 50
                    raw.send_frame(msg, OP_BINARY)
                    assert raw.recv_frame() == (OP_BINARY, True, msg)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert failures == []


def test_ipv6_wss(server_factory: Factory, pki: Pki) -> None:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    srv = tls_server(server_factory, pki, url="wss://[::1]:0")
    with pyws.connect(wss(srv.port, "::1"), timeout=5, tls=pyws.TlsOpts(ca=pki.ca_cert)) as ws:
        ws.send("v6")
        assert ws.recv().text == "v6"


def test_connection_close_sends_close_notify(server_factory: Factory, pki: Pki) -> None:
    """The server ends a TLS connection with close_notify: Python's ssl sees a clean EOF
    (SSLEOFError would mean a truncated stream)."""

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            conn.reply(200, "bye")
            conn.drain()

    srv = tls_server(server_factory, pki, handler)
    for _ in range(3):
        with RawTLS(srv.port, client_ctx(pki), ragged_eof=False) as raw:
            raw.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            status, headers, _ = raw.read_http_head()
            assert status == 200
            body = raw.recv_exact(int(headers["content-length"]))
            assert body == b"bye"
            assert raw.sock.recv(100) == b""  # close_notify, not a ragged EOF


# ------------------------------------------------------------------------------ the build
@pytest.mark.skipif(shutil.which("ldd") is None, reason="needs ldd")
def test_extension_links_libssl_and_libcrypto() -> None:
    import pyws._pyws  # type: ignore[import-not-found]  # the cffi extension
    path = pyws._pyws.__file__
    out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30).stdout
    assert "libssl.so" in out and "libcrypto.so" in out, out


def test_readme_and_check_deps_name_the_openssl_packages() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    setup = readme[readme.index("## Set up"):readme.index("## Use")]
    assert "libssl-dev" in setup and "scripts/check-deps" in setup
    makefile = open(os.path.join(root, "Makefile"), encoding="utf-8").read()
    assert "./scripts/check-deps" in makefile
    script = os.path.join(root, "scripts", "check-deps")
    assert "libssl-dev" in open(script, encoding="utf-8").read()
    # on this machine (which built pyws) every dependency is there: it says nothing, exits 0
    r = subprocess.run(["sh", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_tls_opts_mistakes_are_caught_at_listen_time(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    for kw, words in (({"cert": pki.server_cert, "key": pki.server_key, "verify_client": True},
                       "verify_client needs ca="),
                      ({"key": pki.server_key}, "give both cert= and key=")):
        with pyws.Manager() as mgr:
            with pytest.raises(pyws.TlsError, match=words):
                mgr.listen("wss://127.0.0.1:0", tls=pyws.TlsOpts(**kw))
            assert mgr.listeners == []
