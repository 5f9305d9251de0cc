"""The client against misbehaving servers made with raw sockets: a wrong Sec-WebSocket-Accept,
non-101 answers, missing Upgrade/Connection, a subprotocol or extension we did not offer,
garbage instead of HTTP, a server that closes before answering or never answers, masked server
frames, a server vanishing mid-frame. Each ends in a clear error, never a hang. Also: redirects
(followed, counted, and a loop stopped), wss:// failures, IPv6 literals, the Host header
(default port omitted), the query string.

``RawServer`` (a listening socket whose every connection runs a scripted ``behave(peer)`` on its
own thread) is shared with the other client test files."""
from __future__ import annotations

import base64
import socket
import struct
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import pyws
from pyws import EV_CLOSE, EV_CONNECT, EV_ERROR, EV_WS_MSG, EV_WS_OPEN
from pyws.url import parse_ws_url

from _frames import MASK_KEY, frame
from _rawws import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, accept_for

IO_TIMEOUT = 5.0


# =========================================================================== the raw server

class RawRequest:
    """The request head a client sent: method, target, headers (lower-case names; a repeated
    header keeps its last value), lines (raw header lines in order) and the raw bytes."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        lines = raw.decode("latin-1").split("\r\n")
        self.request_line = lines[0]
        parts = lines[0].split(" ")
        self.method = parts[0]
        self.target = parts[1] if len(parts) > 1 else ""
        self.version = parts[2] if len(parts) > 2 else ""
        self.lines: List[Tuple[str, str]] = []
        self.headers: Dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            k, _, v = line.partition(":")
            self.lines.append((k.strip(), v.strip()))
            self.headers[k.strip().lower()] = v.strip()

    def count(self, name: str) -> int:
        return sum(1 for k, _ in self.lines if k.lower() == name.lower())

    @property
    def key(self) -> str:
        return self.headers.get("sec-websocket-key", "")


class Frame:
    """A frame read from the client."""

    def __init__(self, fin: bool, rsv: int, opcode: int, masked: bool, key: bytes,
                 payload: bytes) -> None:
        self.fin = fin
        self.rsv = rsv
        self.opcode = opcode
        self.masked = masked
        self.key = key
        self.payload = payload  # unmasked

    @property
    def close_code(self) -> Optional[int]:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    def __repr__(self) -> str:
        return f"<Frame op={self.opcode} fin={self.fin} masked={self.masked} " \
               f"len={len(self.payload)}>"


def unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return b""
    reps = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(reps, "little")).to_bytes(
        n, "little")


class Peer:
    """One accepted connection, seen from the raw server. Every read has a deadline."""

    def __init__(self, sock: socket.socket, server: "RawServer", index: int) -> None:
        self.sock = sock
        self.server = server
        self.index = index  # 0 for the first connection the server accepted
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        if time.monotonic() > deadline:
            raise TimeoutError("the client sent nothing in time")
        try:
            chunk = self.sock.recv(1 << 20)
        except ConnectionResetError:
            return False
        if not chunk:
            return False
        self.buf += chunk
        return True

    def recv_exact(self, n: int, timeout: float = IO_TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise EOFError(f"EOF after {len(self.buf)} of {n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_request(self, timeout: float = IO_TIMEOUT) -> RawRequest:
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise ValueError("request head too long")
            if not self._fill(deadline):
                raise EOFError(f"EOF inside the request head: {self.buf!r}")
        end = self.buf.index(b"\r\n\r\n") + 4
        raw, self.buf = self.buf[:end], self.buf[end:]
        req = RawRequest(raw)
        with self.server.lock:
            self.server.requests.append(req)
        return req

    def handshake(self, extra: str = "", accept: Optional[str] = None) -> RawRequest:
        """Read the upgrade request and answer a valid 101 (plus ``extra`` header lines)."""
        req = self.read_request()
        self.send(response_101(req, extra=extra, accept=accept))
        return req

    def send_frame(self, payload: bytes = b"", opcode: int = OP_TEXT, fin: bool = True, *,
                   mask: bool = False) -> None:
        """A server frame: unmasked unless ``mask=True`` is passed."""
        self.send(frame(opcode, payload, fin=fin, mask=MASK_KEY if mask else None))

    def recv_frame(self, timeout: float = IO_TIMEOUT) -> Frame:
        b0, b1 = self.recv_exact(2, timeout)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.recv_exact(2, timeout))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.recv_exact(8, timeout))[0]
        masked = bool(b1 & 0x80)
        key = self.recv_exact(4, timeout) if masked else b""
        payload = self.recv_exact(n, timeout) if n else b""
        if masked:
            payload = unmask(payload, key)
        frame = Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, masked, key, payload)
        with self.server.lock:
            self.server.frames.append(frame)
        return frame

    def recv_until_close(self, timeout: float = IO_TIMEOUT, max_frames: int = 100000
                         ) -> Tuple[Frame, List[Frame]]:
        """Frames until the client's close frame: (the close frame, the frames before it)."""
        before: List[Frame] = []
        for _ in range(max_frames):
            f = self.recv_frame(timeout)
            if f.opcode == OP_CLOSE:
                return f, before
            before.append(f)
        raise AssertionError("no close frame from the client")

    def wait_eof(self, timeout: float = IO_TIMEOUT) -> bool:
        """True once the client ends TCP within timeout (bytes meanwhile are discarded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True
            except socket.timeout:
                continue
        return False

    def idle(self, seconds: float) -> None:
        """Keep the connection open for ``seconds`` (or until the client leaves)."""
        self.wait_eof(seconds)


def response_101(req: RawRequest, extra: str = "", accept: Optional[str] = None,
                 upgrade: bool = True, connection: bool = True) -> bytes:
    lines = ["HTTP/1.1 101 Switching Protocols"]
    if upgrade:
        lines.append("Upgrade: websocket")
    if connection:
        lines.append("Connection: Upgrade")
    lines.append(f"Sec-WebSocket-Accept: {accept if accept is not None else accept_for(req.key)}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode("latin-1")


def answer_close(p: Peer) -> None:
    """A polite server: valid 101, echo data frames, answer the client's close."""
    p.handshake()
    for _ in range(1000):
        f = p.recv_frame()
        if f.opcode == OP_CLOSE:
            p.send_frame(f.payload, OP_CLOSE)
            return
        if f.opcode in (OP_TEXT, OP_BINARY):
            p.send_frame(f.payload, f.opcode)


def http_response(status: int, reason: str, headers: Optional[Dict[str, str]] = None,
                  body: bytes = b"") -> bytes:
    h = dict(headers or {})
    h.setdefault("Content-Length", str(len(body)))
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
    return (head + "\r\n").encode("latin-1") + body


class RawServer:
    """A listening socket on 127.0.0.1 (or ::1) whose connections each run ``behave(peer)`` on
    their own thread. ``requests`` and ``frames`` record what clients sent; an exception in a
    behaviour is kept in ``errors`` (and re-raised by :meth:`check`)."""

    def __init__(self, behave: Callable[[Peer], Any], host: str = "127.0.0.1",
                 max_conns: int = 64, backlog: int = 64, port: int = 0) -> None:
        self.behave = behave
        self.host = host
        self.max_conns = max_conns
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
            self.sock.listen(backlog)
        except OSError:
            self.sock.close()
            raise
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.lock = threading.Lock()
        self.requests: List[RawRequest] = []
        self.frames: List[Frame] = []
        self.errors: List[BaseException] = []
        self.accepted = 0
        self.finished = threading.Event()  # set when a behaviour returns
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{path}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set() and self.accepted < self.max_conns:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(IO_TIMEOUT)
            peer = Peer(conn, self, self.accepted)
            self.accepted += 1
            t = threading.Thread(target=self._serve, args=(peer,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, peer: Peer) -> None:
        try:
            self.behave(peer)
        except BaseException as exc:  # kept for check()
            with self.lock:
                self.errors.append(exc)
        finally:
            try:
                peer.sock.close()
            except OSError:
                pass
            self.finished.set()

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]

    def stop(self) -> None:
        self._stop.set()
        self._acceptor.join(5)
        self.sock.close()
        for t in self._threads:
            t.join(IO_TIMEOUT + 2)
        assert not self._acceptor.is_alive()

    def __enter__(self) -> "RawServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@pytest.fixture
def raw_server() -> Any:
    """``raw_server(behave, host="127.0.0.1")`` starts a RawServer; all are stopped at the end."""
    started: List[RawServer] = []

    def make(behave: Callable[[Peer], Any], **kw: Any) -> RawServer:
        s = RawServer(behave, **kw)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def connect(url: str, **kw: Any) -> pyws.ClientConnection:
    kw.setdefault("open_timeout", 5)
    kw.setdefault("timeout", 5)
    kw.setdefault("close_timeout", 2)
    return pyws.connect(url, **kw)


def fails_within(seconds: float, exc_type: Any, fn: Callable[[], Any]) -> Any:
    """Call fn, expect exc_type, and check it came within ``seconds``. Returns the exception."""
    t0 = time.monotonic()
    with pytest.raises(exc_type) as info:
        fn()
    elapsed = time.monotonic() - t0
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    return info.value


# =========================================================================== handshake failures

def test_a_valid_raw_server_works(raw_server: Any) -> None:
    """The baseline the failures below depart from: the raw server's 101 is accepted, frames
    both ways, close handshake."""
    def behave(p: Peer) -> None:
        p.handshake()
        f = p.recv_frame()
        assert f.masked and f.opcode == OP_TEXT
        p.send_frame(f.payload.upper(), OP_TEXT)
        close, _ = p.recv_until_close()
        p.send_frame(close.payload, OP_CLOSE)

    s = raw_server(behave)
    with connect(s.url("/ws")) as ws:
        ws.send("hello")
        assert ws.recv().text == "HELLO"
    assert ws.close_code == 1000
    s.stop()
    s.check()


def test_wrong_accept_key(raw_server: Any) -> None:
    s = raw_server(lambda p: (p.handshake(accept=accept_for("x" * 24)), p.idle(3)))
    exc = fails_within(3, pyws.HandshakeError, lambda: connect(s.url()))
    assert "Sec-WebSocket-Accept" in str(exc)


def test_accept_key_missing(raw_server: Any) -> None:
    def behave(p: Peer) -> None:
        p.read_request()
        p.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\n\r\n")
        p.idle(3)

    s = raw_server(behave)
    exc = fails_within(3, pyws.HandshakeError, lambda: connect(s.url()))
    assert "Sec-WebSocket-Accept" in str(exc)


def test_accept_key_of_the_rfc_example_is_not_ours(raw_server: Any) -> None:
    """A server that answers a fixed accept (the RFC's example) is caught: our key is random."""
    s = raw_server(lambda p: (p.handshake(accept="s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), p.idle(3)))
    with pytest.raises(pyws.HandshakeError, match="Accept"):
        connect(s.url())


@pytest.mark.parametrize("status,reason", [(400, "Bad Request"), (403, "Forbidden"),
                                           (404, "Not Found"), (500, "Internal Server Error")])
def test_non_101_answer(raw_server: Any, status: int, reason: str) -> None:
    body = b"no websocket for you\n"

    def behave(p: Peer) -> None:
        p.read_request()
        p.send(http_response(status, reason, {"X-Why": "because", "Content-Type": "text/plain"},
                             body))
        p.idle(3)

    s = raw_server(behave)
    exc = fails_within(3, pyws.HandshakeError, lambda: connect(s.url("/ws")))
    assert exc.status == status
    assert str(status) in str(exc)
    assert exc.headers["x-why"] == "because"
    assert exc.headers["content-type"] == "text/plain"
    assert exc.headers["content-length"] == str(len(body))
    assert isinstance(exc, pyws.PyWSError)


def test_non_101_in_the_loop_sets_conn_error(raw_server: Any) -> None:
    """Manager.ws_connect: a 403 reaches the handler as EV_ERROR then EV_CLOSE; conn.error is
    the HandshakeError with status and headers."""
    def behave(p: Peer) -> None:
        p.read_request()
        p.send(http_response(403, "Forbidden", {"X-Why": "denied"}))
        p.idle(3)

    s = raw_server(behave)
    events: List[int] = []
    texts: List[str] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        events.append(ev)
        if ev == EV_ERROR:
            texts.append(data)

    with pyws.Manager() as mgr:
        c = mgr.ws_connect(s.url("/ws"), handler)
        deadline = time.monotonic() + 5
        while EV_CLOSE not in events and time.monotonic() < deadline:
            mgr.poll(50)
    assert events == [EV_CONNECT, EV_ERROR, EV_CLOSE]
    assert isinstance(c.error, pyws.HandshakeError)
    assert c.error.status == 403 and c.error.headers["x-why"] == "denied"
    assert "403" in texts[0]
    assert c.closed and not c.is_websocket


def test_missing_upgrade_header(raw_server: Any) -> None:
    def behave(p: Peer) -> None:
        req = p.read_request()
        p.send(response_101(req, upgrade=False))
        p.idle(3)

    s = raw_server(behave)
    with pytest.raises(pyws.HandshakeError, match="Upgrade"):
        connect(s.url())


def test_missing_connection_header(raw_server: Any) -> None:
    def behave(p: Peer) -> None:
        req = p.read_request()
        p.send(response_101(req, connection=False))
        p.idle(3)

    s = raw_server(behave)
    with pytest.raises(pyws.HandshakeError, match="Connection"):
        connect(s.url())


def test_upgrade_header_naming_another_protocol(raw_server: Any) -> None:
    def behave(p: Peer) -> None:
        req = p.read_request()
        p.send(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Accept: {accept_for(req.key)}\r\n\r\n".encode())
        p.idle(3)

    s = raw_server(behave)
    with pytest.raises(pyws.HandshakeError, match="Upgrade"):
        connect(s.url())


def test_header_names_and_tokens_are_case_insensitive(raw_server: Any) -> None:
    """UPGRADE: WebSocket / connection: keep-alive, UPGRADE is a valid 101."""
    def behave(p: Peer) -> None:
        req = p.read_request()
        p.send(f"HTTP/1.1 101 Switching Protocols\r\nUPGRADE: WebSocket\r\n"
               f"connection: keep-alive, UPGRADE\r\n"
               f"sec-websocket-accept: {accept_for(req.key)}\r\n\r\n".encode())
        close, _ = p.recv_until_close()
        p.send_frame(close.payload, OP_CLOSE)

    s = raw_server(behave)
    with connect(s.url()) as ws:
        assert ws.response.status == 101
    assert ws.close_code == 1000


@pytest.mark.parametrize("status_line,accept_line", [
    ("HTTP/1.1 101 Switching Protocols", "Sec-WebSocket-Accept:   {} \t"),  # OWS trimmed
    ("HTTP/1.1 101 Switching Protocols", "Sec-WebSocket-Accept:{}"),
    ("HTTP/1.1 101", "Sec-WebSocket-Accept: {}"),                         # no reason phrase
    ("HTTP/1.1 101 Web Socket Protocol Handshake", "sec-websocket-accept: {}"),
])
def test_valid_variations_of_the_101(raw_server: Any, status_line: str,
                                     accept_line: str) -> None:
    def behave(p: Peer) -> None:
        req = p.read_request()
        p.send((f"{status_line}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"{accept_line.format(accept_for(req.key))}\r\n\r\n").encode())
        close, _ = p.recv_until_close()
        p.send_frame(close.payload, OP_CLOSE)

    s = raw_server(behave)
    with connect(s.url()) as ws:
        assert ws.response.status == 101
    assert ws.close_code == 1000


@pytest.mark.parametrize("offered", [None, ["chat"]])
def test_subprotocol_not_offered(raw_server: Any, offered: Optional[List[str]]) -> None:
    s = raw_server(lambda p: (p.handshake("Sec-WebSocket-Protocol: superchat\r\n"), p.idle(3)))
    with pytest.raises(pyws.HandshakeError, match="subprotocol"):
        connect(s.url(), subprotocols=offered)
    s.stop()
    if offered:
        assert s.requests[0].headers["sec-websocket-protocol"] == "chat"
    else:
        assert "sec-websocket-protocol" not in s.requests[0].headers


def test_subprotocol_prefix_of_an_offer_is_not_an_offer(raw_server: Any) -> None:
    s = raw_server(lambda p: (p.handshake("Sec-WebSocket-Protocol: chat\r\n"), p.idle(3)))
    with pytest.raises(pyws.HandshakeError, match="subprotocol"):
        connect(s.url(), subprotocols=["chat.v2", "superchat"])


def test_two_subprotocols_selected(raw_server: Any) -> None:
    s = raw_server(lambda p: (p.handshake("Sec-WebSocket-Protocol: a, b\r\n"), p.idle(3)))
    with pytest.raises(pyws.HandshakeError, match="subprotocol"):
        connect(s.url(), subprotocols=["a", "b"])


def test_subprotocol_offered_is_accepted(raw_server: Any) -> None:
    def behave(p: Peer) -> None:
        p.handshake("Sec-WebSocket-Protocol: b\r\n")
        close, _ = p.recv_until_close()
        p.send_frame(close.payload, OP_CLOSE)

    s = raw_server(behave)
    with connect(s.url(), subprotocols=["a", "b", "c"]) as ws:
        assert ws.subprotocol == "b"
    s.stop()
    assert s.requests[0].headers["sec-websocket-protocol"] == "a, b, c"


@pytest.mark.parametrize("ext", ["permessage-deflate", "x-webkit-deflate-frame",
                                 "permessage-deflate; client_max_window_bits=10"])
def test_extension_not_offered(raw_server: Any, ext: str) -> None:
    """With compression off the client offers no extension, and fails on any answer."""
    s = raw_server(lambda p: (p.handshake(f"Sec-WebSocket-Extensions: {ext}\r\n"), p.idle(3)))
    with pytest.raises(pyws.HandshakeError, match="extension"):
        connect(s.url(), compression=None)
    s.stop()
    assert "sec-websocket-extensions" not in s.requests[0].headers


@pytest.mark.parametrize("ext,why", [
    ("x-webkit-deflate-frame", "extension we did not offer"),
    ("permessage-deflate, permessage-deflate", "twice"),
    ("permessage-deflate; foo", "unknown parameter"),
    ("permessage-deflate; server_max_window_bits=16", "invalid parameter value"),
    ("permessage-deflate; client_max_window_bits", "no value"),
    ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", "repeats"),
])
def test_extension_answer_invalid(raw_server: Any, ext: str, why: str) -> None:
    """With compression on (the default) the client offers permessage-deflate and fails the
    handshake on an answer it cannot accept."""
    s = raw_server(lambda p: (p.handshake(f"Sec-WebSocket-Extensions: {ext}\r\n"), p.idle(3)))
    with pytest.raises(pyws.HandshakeError, match=why):
        connect(s.url())
    s.stop()
    assert s.requests[0].headers["sec-websocket-extensions"].startswith("permessage-deflate")


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)) + b"\r\n\r\n",  # TLS-ish
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"HTTP/1.1 abc Weird\r\n\r\n",
    b"HTTP/1.1 101\r\nno colon here\r\n\r\n",
    b"\x00" * 100 + b"\r\n\r\n",
])
def test_garbage_instead_of_http(raw_server: Any, garbage: bytes) -> None:
    def behave(p: Peer) -> None:
        p.read_request()
        p.send(garbage)
        p.idle(3)

    s = raw_server(behave)
    exc = fails_within(3, pyws.HandshakeError, lambda: connect(s.url()))
    assert str(exc)


def test_garbage_then_close(raw_server: Any) -> None:
    """Some bytes that never make an HTTP head, then EOF: an error, not a hang."""
    def behave(p: Peer) -> None:
        p.read_request()
        p.send(b"this is not http at all")

    s = raw_server(behave)
    fails_within(3, pyws.HandshakeError, lambda: connect(s.url()))


def test_response_head_too_large(raw_server: Any) -> None:
    def behave(p: Peer) -> None:
        req = p.read_request()
        filler = "".join(f"X-Filler-{i}: {'y' * 200}\r\n" for i in range(200))  # ~ 44 KB
        p.send(response_101(req, extra=filler))
        p.idle(3)

    s = raw_server(behave)
    with pytest.raises(pyws.HandshakeError, match="too large"):
        connect(s.url())


def test_server_closes_before_answering(raw_server: Any) -> None:
    s = raw_server(lambda p: p.read_request())
    exc = fails_within(3, pyws.HandshakeError, lambda: connect(s.url()))
    assert "closed" in str(exc)
    s.stop()
    assert len(s.requests) == 1


def test_server_closes_without_reading(raw_server: Any) -> None:
    s = raw_server(lambda p: None)
    fails_within(3, (pyws.HandshakeError, ConnectionError), lambda: connect(s.url()))


def test_server_half_answers_then_closes(raw_server: Any) -> None:
    def behave(p: Peer) -> None:
        p.read_request()
        p.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")

    s = raw_server(behave)
    exc = fails_within(3, pyws.HandshakeError, lambda: connect(s.url()))
    assert "closed" in str(exc)


def test_server_never_answers(raw_server: Any) -> None:
    s = raw_server(lambda p: (p.read_request(), p.idle(4)))
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        connect(s.url(), open_timeout=0.5)
    elapsed = time.monotonic() - t0
    assert 0.4 <= elapsed < 3.0, elapsed  # the server idles 4 s
    assert "in time" in str(info.value)


def test_server_dribbles_the_response(raw_server: Any) -> None:
    """A 101 that arrives one byte at a time is still one valid response."""
    def behave(p: Peer) -> None:
        req = p.read_request()
        data = response_101(req) + frame(OP_TEXT, b"hi")
        for i in range(len(data)):
            p.send(data[i:i + 1])
            time.sleep(0.001)
        close, _ = p.recv_until_close()
        p.send_frame(close.payload, OP_CLOSE)

    s = raw_server(behave)
    with connect(s.url()) as ws:
        assert ws.recv().text == "hi"


def test_frames_in_the_same_packet_as_the_101(raw_server: Any) -> None:
    """Messages the server sends right behind its 101 (one write) are not lost."""
    def behave(p: Peer) -> None:
        req = p.read_request()
        p.send(response_101(req) + frame(OP_TEXT, b"one") +
               frame(OP_BINARY, b"\x00\x01") +
               frame(OP_TEXT, b"three"))
        close, _ = p.recv_until_close()
        p.send_frame(close.payload, OP_CLOSE)

    s = raw_server(behave)
    with connect(s.url()) as ws:
        got = [ws.recv(), ws.recv(), ws.recv()]
    assert [(m.opcode, m.data) for m in got] == [(OP_TEXT, b"one"), (OP_BINARY, b"\x00\x01"),
                                                 (OP_TEXT, b"three")]


@pytest.mark.parametrize("n", [70000, 3 << 20])
def test_a_large_frame_glued_to_the_101(raw_server: Any, n: int) -> None:
    """The 101 and a large frame in one write: the part read with the head and the rest read
    later make one message."""
    data = bytes(i % 251 for i in range(n))

    def behave(p: Peer) -> None:
        req = p.read_request()
        p.send(response_101(req) + frame(OP_BINARY, data) +
               frame(OP_TEXT, b"next"))
        close, _ = p.recv_until_close()
        p.send_frame(close.payload, OP_CLOSE)

    s = raw_server(behave)
    with connect(s.url(), max_size=8 << 20) as ws:
        assert ws.recv().data == data
        assert ws.recv().text == "next"


def test_connection_refused() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exc = fails_within(3, ConnectionRefusedError, lambda: connect(f"ws://127.0.0.1:{port}/"))
    assert str(port) in str(exc)


def test_unresolvable_host() -> None:
    with pytest.raises(OSError):
        connect("ws://no-such-host.invalid/")


# =========================================================================== bad frames

def test_masked_server_frame_closes_with_1002(raw_server: Any) -> None:
    seen: Dict[str, Any] = {}

    def behave(p: Peer) -> None:
        p.handshake()
        p.send_frame(b"fine", OP_TEXT)
        p.send_frame(b"masked!", OP_TEXT, mask=True)
        close, before = p.recv_until_close()
        seen["close"] = close
        seen["before"] = before
        p.send_frame(close.payload, OP_CLOSE)
        seen["eof"] = p.wait_eof(3)

    s = raw_server(behave)
    ws = connect(s.url())
    try:
        assert ws.recv().text == "fine"  # what came before the bad frame is delivered
        t0 = time.monotonic()
        with pytest.raises(pyws.ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert time.monotonic() - t0 < 3
        assert info.value.code == 1002
        assert ws.close_code == 1002
        with pytest.raises(pyws.ConnectionClosed):  # stays closed
            ws.recv(timeout=1)
        with pytest.raises(pyws.ConnectionClosed):
            ws.send("more")
    finally:
        ws.close()
    s.stop()
    s.check()
    assert seen["close"].masked
    assert seen["close"].close_code == 1002
    assert seen["before"] == []


@pytest.mark.parametrize("frame,code", [
    (bytes([0x81 | 0x40, 0x02]) + b"hi", 1002),            # RSV1 without an extension
    (bytes([0x83, 0x00]), 1002),                            # reserved data opcode 3
    (bytes([0x8B, 0x00]), 1002),                            # reserved control opcode 11
    (bytes([0x09, 0x00]), 1002),                            # fragmented ping
    (bytes([0x80, 0x01]) + b"x", 1002),                     # continuation with nothing open
    (bytes([0x89, 0x7E, 0x00, 0x7E]) + b"p" * 126, 1002),   # ping longer than 125
    (bytes([0x81, 0x02]) + b"\xc3\x28", 1007),              # invalid UTF-8 in a text message
    (bytes([0x88, 0x01]) + b"\x03", 1002),                  # close payload of 1 byte
    (bytes([0x88, 0x02]) + struct.pack("!H", 1005), 1002),  # close code never on the wire
])
def test_protocol_violation_from_the_server(raw_server: Any, frame: bytes, code: int) -> None:
    seen: Dict[str, Any] = {}

    def behave(p: Peer) -> None:
        p.handshake()
        p.send(frame)
        close, _ = p.recv_until_close()
        seen["code"] = close.close_code
        p.send_frame(close.payload, OP_CLOSE)

    s = raw_server(behave)
    ws = connect(s.url())
    try:
        with pytest.raises(pyws.ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.code == code
    finally:
        ws.close()
    s.stop()
    s.check()
    assert seen["code"] == code


def test_garbage_frames_after_the_101(raw_server: Any) -> None:
    def behave(p: Peer) -> None:
        p.handshake()
        p.send(b"\xff" * 64)
        p.wait_eof(3)

    s = raw_server(behave)
    ws = connect(s.url())
    try:
        with pytest.raises(pyws.ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.code == 1002
    finally:
        ws.close()


@pytest.mark.parametrize("cut", ["header", "length", "payload"])
def test_server_vanishes_mid_frame(raw_server: Any, cut: str) -> None:
    def behave(p: Peer) -> None:
        p.handshake()
        p.send_frame(b"whole", OP_TEXT)
        raw_frame = frame(OP_BINARY, b"z" * 1000)
        part = {"header": raw_frame[:1], "length": raw_frame[:3], "payload": raw_frame[:500]}[cut]
        p.send(part)
        time.sleep(0.05)
        # ends TCP without a close frame

    s = raw_server(behave)
    ws = connect(s.url())
    try:
        assert ws.recv().text == "whole"
        t0 = time.monotonic()
        with pytest.raises(pyws.ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert time.monotonic() - t0 < 3
        assert info.value.code == 1006
        assert ws.closed and ws.close_code == 1006
    finally:
        ws.close()


def test_server_resets_the_connection(raw_server: Any) -> None:
    def behave(p: Peer) -> None:
        p.handshake()
        p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # close() with a zero linger sends RST

    s = raw_server(behave)
    ws = connect(s.url())
    try:
        with pytest.raises(pyws.ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.code == 1006
    finally:
        ws.close()


def test_server_close_frame_without_tcp_close_is_bounded(raw_server: Any) -> None:
    """The server sends its close frame but never ends TCP: the client waits close_timeout for
    it (RFC 6455 §7.1.1) and then gives up; recv raises promptly with the server's code."""
    def behave(p: Peer) -> None:
        p.handshake()
        p.send_frame(struct.pack("!H", 4000) + b"done", OP_CLOSE)
        p.recv_until_close()
        p.idle(4)  # keep TCP open

    s = raw_server(behave)
    ws = connect(s.url(), close_timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(pyws.ConnectionClosed) as info:
        ws.recv(timeout=5)
    assert time.monotonic() - t0 < 3.0  # close_timeout 0.5 s; the server idles 4 s
    assert (info.value.code, info.value.reason) == (4000, "done")
    ws.close()


def test_close_when_server_never_answers_the_close(raw_server: Any) -> None:
    """close() waits at most close_timeout (+ slack) for a server that ignores it."""
    s = raw_server(lambda p: (p.handshake(), p.idle(4)))
    ws = connect(s.url(), close_timeout=0.5)
    t0 = time.monotonic()
    ws.close(1000, "bye")
    assert time.monotonic() - t0 < 3.0  # close_timeout 0.5 s; the server idles 4 s
    assert ws.closed


def test_ping_from_a_raw_server_is_answered_with_the_same_payload(raw_server: Any) -> None:
    seen: Dict[str, Any] = {}

    def behave(p: Peer) -> None:
        p.handshake()
        p.send_frame(b"are you there", OP_PING)
        pong = p.recv_frame()
        seen["pong"] = pong
        p.send_frame(b"ok", OP_TEXT)
        close, _ = p.recv_until_close()
        p.send_frame(close.payload, OP_CLOSE)

    s = raw_server(behave)
    with connect(s.url()) as ws:
        assert ws.recv().text == "ok"
    s.stop()
    s.check()
    assert seen["pong"].opcode == OP_PONG
    assert seen["pong"].masked
    assert seen["pong"].payload == b"are you there"


# =========================================================================== redirects

def redirecting(status: int, location: Callable[[Peer, RawRequest], str],
                final: Optional[Callable[[Peer, RawRequest], bool]] = None
                ) -> Callable[[Peer], None]:
    """A behaviour: requests for which final(...) is true get a valid 101 (and the connection
    echoes until close); others get ``status`` with Location."""
    def behave(p: Peer) -> None:
        req = p.read_request()
        if final is not None and final(p, req):
            p.send(response_101(req))
            for _ in range(100):
                f = p.recv_frame()
                if f.opcode == OP_CLOSE:
                    p.send_frame(f.payload, OP_CLOSE)
                    return
                p.send_frame(f.payload, f.opcode)
            return
        p.send(http_response(status, "Redirect", {"Location": location(p, req)}))
        p.wait_eof(2)
    return behave


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_is_followed(raw_server: Any, status: int) -> None:
    s = raw_server(redirecting(status, lambda p, r: "/final?from=" + r.target,
                               final=lambda p, r: r.target.startswith("/final")))
    with connect(s.url("/start"), headers={"X-Token": "t1"}, origin="http://o.example") as ws:
        ws.send("through the redirect")
        assert ws.recv().text == "through the redirect"
    s.stop()
    s.check()
    assert [r.target for r in s.requests] == ["/start", "/final?from=/start"]
    for r in s.requests:  # the same request each time: headers, origin, Host
        assert r.headers["x-token"] == "t1"
        assert r.headers["origin"] == "http://o.example"
        assert r.headers["host"] == f"127.0.0.1:{s.port}"
    assert s.requests[0].key != s.requests[1].key  # a fresh key for the new request


def test_redirect_chain_to_another_server_absolute(raw_server: Any) -> None:
    final = raw_server(redirecting(302, lambda p, r: "", final=lambda p, r: True))
    middle = raw_server(redirecting(307, lambda p, r: final.url("/end?x=1")))
    first = raw_server(redirecting(301, lambda p, r: f"http://127.0.0.1:{middle.port}/mid"))
    with connect(first.url("/begin")) as ws:
        ws.send(b"\x01\x02")
        assert ws.recv().data == b"\x01\x02"
    for s in (first, middle, final):
        s.stop()
        s.check()
    assert [r.target for r in first.requests] == ["/begin"]
    assert [r.target for r in middle.requests] == ["/mid"]
    assert [r.target for r in final.requests] == ["/end?x=1"]
    assert final.requests[0].headers["host"] == f"127.0.0.1:{final.port}"


@pytest.mark.parametrize("max_redirects", [0, 1, 3])
def test_redirect_loop_stops_after_max_redirects(raw_server: Any, max_redirects: int) -> None:
    s = raw_server(redirecting(302, lambda p, r: "/again"))
    exc = fails_within(5, pyws.HandshakeError,
                       lambda: connect(s.url("/loop"), max_redirects=max_redirects))
    assert exc.status == 302
    assert "redirect" in str(exc)
    assert exc.headers["location"] == "/again"
    s.stop()
    assert len(s.requests) == max_redirects + 1


def test_default_redirect_limit_is_finite(raw_server: Any) -> None:
    s = raw_server(redirecting(308, lambda p, r: "/again"))
    fails_within(5, pyws.HandshakeError, lambda: connect(s.url("/loop")))
    s.stop()
    assert 2 <= len(s.requests) <= 21


def test_redirect_without_location_fails(raw_server: Any) -> None:
    def behave(p: Peer) -> None:
        p.read_request()
        p.send(http_response(302, "Found"))
        p.wait_eof(2)

    s = raw_server(behave)
    exc = fails_within(3, pyws.HandshakeError, lambda: connect(s.url()))
    assert exc.status == 302
    s.stop()
    assert len(s.requests) == 1


def test_redirect_to_wss_is_followed_over_tls(raw_server: Any) -> None:
    s = raw_server(redirecting(301, lambda p, r: "wss://127.0.0.1:1/secure"))
    with pytest.raises(ConnectionRefusedError):  # followed: the TLS connect itself is refused
        connect(s.url())


# =========================================================================== URLs

def test_wss_to_a_refused_port_fails_fast() -> None:
    t0 = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        pyws.connect("wss://127.0.0.1:1/", open_timeout=10)
    assert time.monotonic() - t0 < 3.0  # refused at once, not after open_timeout


def test_wss_to_a_plain_http_server_is_a_tls_error(raw_server: Any) -> None:
    """A server that answers in plain HTTP: the TLS handshake fails with a clear TlsError."""
    s = raw_server(lambda peer: peer.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
    with pytest.raises(pyws.TlsError, match="TLS handshake failed"):
        pyws.connect(s.url().replace("ws://", "wss://"), open_timeout=3)


def test_wss_in_the_loop_reports_the_failure() -> None:
    with pyws.Manager() as mgr:
        events: List[int] = []
        c = mgr.ws_connect("wss://127.0.0.1:1/", lambda conn, ev, data: events.append(ev))
        deadline = time.monotonic() + 3
        while not c.closed and time.monotonic() < deadline:
            mgr.poll(20)
        assert events[-2:] == [pyws.EV_ERROR, pyws.EV_CLOSE]
        assert isinstance(c.error, ConnectionRefusedError)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "127.0.0.1:80/", "ws:///nohost",
                                 "ws://127.0.0.1/#frag", "ws://127.0.0.1:99999/"])
def test_bad_urls_raise_value_error(url: str) -> None:
    with pytest.raises(ValueError):
        pyws.connect(url, open_timeout=2)


def test_ipv6_literal(raw_server: Any) -> None:
    def behave(p: Peer) -> None:
        p.handshake()
        f = p.recv_frame()
        p.send_frame(f.payload, f.opcode)
        close, _ = p.recv_until_close()
        p.send_frame(close.payload, OP_CLOSE)

    s = raw_server(behave, host="::1")
    url = f"ws://[::1]:{s.port}/v6?q=1"
    with connect(url) as ws:
        ws.send("over IPv6")
        assert ws.recv().text == "over IPv6"
        assert ws.remote_addr == f"[::1]:{s.port}"
    s.stop()
    s.check()
    assert s.requests[0].headers["host"] == f"[::1]:{s.port}"
    assert s.requests[0].target == "/v6?q=1"


def test_ipv6_literal_in_the_loop(raw_server: Any) -> None:
    def behave(p: Peer) -> None:
        p.handshake()
        p.send_frame(b"v6", OP_TEXT)
        close, _ = p.recv_until_close()
        p.send_frame(close.payload, OP_CLOSE)

    s = raw_server(behave, host="::1")
    got: List[bytes] = []
    with pyws.Manager() as mgr:
        c = mgr.ws_connect(f"ws://[::1]:{s.port}/",
                           lambda conn, ev, data: got.append(data.data) if ev == EV_WS_MSG
                           else None)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            mgr.poll(50)
        assert got == [b"v6"]
        assert c.remote_ip == "::1"


def test_host_header_has_the_port_when_not_default(raw_server: Any) -> None:
    s = raw_server(answer_close)
    connect(s.url("/")).close()
    s.stop()
    req = s.requests[0]
    assert req.headers["host"] == f"127.0.0.1:{s.port}"
    assert req.count("host") == 1


def test_host_header_default_port_omitted_in_url_parsing() -> None:
    assert parse_ws_url("ws://example.com/").host_header == "example.com"
    assert parse_ws_url("ws://example.com:80/").host_header == "example.com"
    assert parse_ws_url("ws://example.com:8080/").host_header == "example.com:8080"
    assert parse_ws_url("wss://example.com/").host_header == "example.com"
    assert parse_ws_url("wss://example.com:443/x").host_header == "example.com"
    assert parse_ws_url("wss://example.com:80/").host_header == "example.com:80"
    assert parse_ws_url("ws://[::1]/").host_header == "[::1]"
    assert parse_ws_url("ws://[::1]:9000/").host_header == "[::1]:9000"
    t = parse_ws_url("ws://Example.COM")
    assert (t.port, t.resource) == (80, "/")
    assert parse_ws_url("wss://h").port == 443


@pytest.mark.parametrize("url", ["ws://127.0.0.1/path", "ws://127.0.0.1:80/path"])
def test_default_port_omitted_from_host_on_the_wire(url: str) -> None:
    """End to end on port 80 (needs the privilege to bind it, and the port free; the
    URL-parsing test above covers the rule everywhere)."""
    try:
        s = RawServer(answer_close, port=80)
    except OSError:
        pytest.skip("cannot bind 127.0.0.1:80 here")
    try:
        connect(url).close()
    finally:
        s.stop()
    s.check()
    assert s.requests[0].headers["host"] == "127.0.0.1"
    assert s.requests[0].target == "/path"


@pytest.mark.parametrize("path,expect", [
    ("", "/"),
    ("/", "/"),
    ("/a/b", "/a/b"),
    ("/chat?room=1&user=bob", "/chat?room=1&user=bob"),
    ("?only=query", "/?only=query"),
    ("/p%20q?x=%2F&y=", "/p%20q?x=%2F&y="),
])
def test_path_and_query_are_sent(raw_server: Any, path: str, expect: str) -> None:
    s = raw_server(answer_close)
    connect(f"ws://127.0.0.1:{s.port}{path}").close()
    s.stop()
    req = s.requests[0]
    assert req.request_line == f"GET {expect} HTTP/1.1"


def test_request_headers(raw_server: Any) -> None:
    """Host, Origin when given, custom headers, and the upgrade headers with a fresh random
    key each time."""
    s = raw_server(answer_close)
    connect(s.url("/h"), origin="https://app.example",
            headers={"X-Custom": "v1", "Authorization": "Bearer abc",
                     "User-Agent": "pyws-test/1"}).close()
    connect(s.url("/h")).close()
    s.stop()
    a, b = s.requests
    assert a.method == "GET" and a.version == "HTTP/1.1"
    assert a.headers["host"] == f"127.0.0.1:{s.port}"
    assert a.headers["origin"] == "https://app.example"
    assert a.headers["x-custom"] == "v1"
    assert a.headers["authorization"] == "Bearer abc"
    assert a.headers["user-agent"] == "pyws-test/1"
    assert a.headers["upgrade"].lower() == "websocket"
    assert "upgrade" in a.headers["connection"].lower()
    assert a.headers["sec-websocket-version"] == "13"
    assert len(base64.b64decode(a.key, validate=True)) == 16
    assert a.key != b.key
    assert "origin" not in b.headers
    for name in ("host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version"):
        assert a.count(name) == 1, name


@pytest.mark.parametrize("headers", [{"X-Bad": "a\r\nInjected: 1"}, {"Bad\nName": "v"},
                                     {"X:Colon": "v"}])
def test_header_injection_is_refused(headers: Dict[str, str]) -> None:
    with pytest.raises(ValueError):
        pyws.connect("ws://127.0.0.1:1/", headers=headers, open_timeout=1)


@pytest.mark.parametrize("proto", ["", "a b", "a,b", "x\r\n"])
def test_bad_subprotocol_names_are_refused(proto: str) -> None:
    with pytest.raises(ValueError):
        pyws.connect("ws://127.0.0.1:1/", subprotocols=[proto], open_timeout=1)


def test_origin_injection_is_refused() -> None:
    with pytest.raises(ValueError):
        pyws.connect("ws://127.0.0.1:1/", origin="http://a\r\nX-Evil: 1", open_timeout=1)
