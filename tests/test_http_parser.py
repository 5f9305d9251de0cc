"""HTTP head parsing and the opening handshake through the cffi module (pyws_http_parse_request,
pyws_http_parse_response, pyws_handshake_check, pyws_accept_key, pyws_protocol_offered).

csrc/tests/test_http.c tests these exhaustively in C; this file checks that the same answers
come through the Python binding, with the views pointing into the caller's buffer.
"""
from __future__ import annotations

import base64
import hashlib
from typing import Any, Dict, List, Optional, Tuple

import pytest

from pyws._lib import ffi, lib

MAX_HEADERS = 32

UPGRADE = (b"GET /chat?room=1 HTTP/1.1\r\n"
           b"Host: server.example.com\r\n"
           b"Upgrade: websocket\r\n"
           b"Connection: keep-alive, Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Origin: http://example.com\r\n"
           b"Sec-WebSocket-Protocol: chat, superchat\r\n"
           b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
           b"Sec-WebSocket-Version: 13\r\n"
           b"\r\n")


class Parsed:
    """The result of one parse, with the views copied out (and checked to lie in the buffer)."""

    def __init__(self, data: bytes, max_bytes: int = 16384, max_headers: int = MAX_HEADERS,
                 response: bool = False) -> None:
        self.buf = ffi.new("char[]", data if data else b"\0")
        self.head = ffi.new("pyws_http_head *")
        self.headers = ffi.new("pyws_header[]", max(max_headers, 1))
        fn = lib.pyws_http_parse_response if response else lib.pyws_http_parse_request
        self.ret = fn(self.buf, len(data), max_bytes, self.head, self.headers, max_headers)
        self.data = data
        if self.ret > 0:
            assert self.ret == self.head.head_len <= len(data)

    def view(self, s: Any) -> bytes:
        if s.len == 0:
            return b""
        start = int(ffi.cast("uintptr_t", s.ptr)) - int(ffi.cast("uintptr_t", self.buf))
        assert 0 <= start and start + s.len <= self.head.head_len
        return bytes(ffi.unpack(s.ptr, s.len))

    @property
    def method(self) -> bytes:
        return self.view(self.head.method)

    @property
    def target(self) -> bytes:
        return self.view(self.head.target)

    def header_list(self) -> List[Tuple[bytes, bytes]]:
        return [(self.view(self.headers[i].name), self.view(self.headers[i].value))
                for i in range(self.head.num_headers)]


def handshake(data: bytes) -> Tuple[Any, Parsed]:
    p = Parsed(data)
    assert p.ret > 0, p.ret
    hs = ffi.new("pyws_handshake *")
    lib.pyws_handshake_check(p.head, p.headers, hs)
    return hs, p


def pystr(s: Any) -> bytes:
    return ffi.unpack(s.ptr, s.len) if s.len else b""


# ------------------------------------------------------------------------------------------
# Request heads
# ------------------------------------------------------------------------------------------

def test_upgrade_request_fields() -> None:
    body = b"trailing bytes are not looked at"
    p = Parsed(UPGRADE + body)
    assert p.ret == len(UPGRADE)
    assert p.method == b"GET"
    assert p.target == b"/chat?room=1"
    assert p.head.version_minor == 1
    assert p.header_list() == [
        (b"Host", b"server.example.com"),
        (b"Upgrade", b"websocket"),
        (b"Connection", b"keep-alive, Upgrade"),
        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"Origin", b"http://example.com"),
        (b"Sec-WebSocket-Protocol", b"chat, superchat"),
        (b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits"),
        (b"Sec-WebSocket-Version", b"13"),
    ]
    assert lib.pyws_http_find(p.headers, p.head.num_headers, b"sec-websocket-key", 0) == 3
    assert lib.pyws_http_find(p.headers, p.head.num_headers, b"X-Missing", 0) == -1
    assert lib.pyws_http_has_token(p.headers[2].value, b"upgrade") == 1
    assert lib.pyws_http_has_token(p.headers[2].value, b"close") == 0


@pytest.mark.parametrize("data,method,target,minor,headers", [
    (b"GET / HTTP/1.1\r\n\r\n", b"GET", b"/", 1, []),
    (b"GET / HTTP/1.0\r\n\r\n", b"GET", b"/", 0, []),
    (b"POST /up?x=1&y=%20 HTTP/1.1\r\nContent-Length: 5\r\n\r\n", b"POST", b"/up?x=1&y=%20", 1,
     [(b"Content-Length", b"5")]),
    (b"GET /lf HTTP/1.1\nHost: a\nX-Empty:\nX-Spaces: \t  padded value \t\n\n", b"GET",
     b"/lf", 1, [(b"Host", b"a"), (b"X-Empty", b""), (b"X-Spaces", b"padded value")]),
    (b"\r\nGET /after-empty-line HTTP/1.1\r\n\r\n", b"GET", b"/after-empty-line", 1, []),
    (b"OPTIONS * HTTP/1.1\r\nX-Obs: caf\xc3\xa9\r\n\r\n", b"OPTIONS", b"*", 1,
     [(b"X-Obs", b"caf\xc3\xa9")]),
])
def test_valid_requests(data: bytes, method: bytes, target: bytes, minor: int,
                        headers: List[Tuple[bytes, bytes]]) -> None:
    p = Parsed(data)
    assert p.ret == len(data)
    assert (p.method, p.target, p.head.version_minor) == (method, target, minor)
    assert p.header_list() == headers


@pytest.mark.parametrize("data", [UPGRADE, b"GET / HTTP/1.1\r\n\r\n",
                                  b"GET /x HTTP/1.1\nA: b\n\n"])
def test_every_prefix_is_partial_until_complete(data: bytes) -> None:
    whole = Parsed(data)
    assert whole.ret == len(data)
    for k in range(len(data)):
        assert Parsed(data[:k]).ret == lib.PYWS_HTTP_PARTIAL, k
    # once complete, more bytes do not change the answer
    more = Parsed(data + b"GET / HTTP/1.1\r\n")
    assert more.ret == whole.ret and more.header_list() == whole.header_list()


@pytest.mark.parametrize("data", [
    b"GET  / HTTP/1.1\r\n\r\n",                         # two spaces
    b"GET / HTTP/1.1 \r\n\r\n",                         # trailing space
    b"GET / http/1.1\r\n\r\n",                          # lower-case version
    b"GET / HTTP/1.10\r\n\r\n",                         # two minor digits
    b"G(T / HTTP/1.1\r\n\r\n",                          # not a token
    b"GET /\x7f HTTP/1.1\r\n\r\n",                      # DEL in the target
    b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",               # raw non-ASCII in the target
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",              # space before the colon
    b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",    # obs-fold
    b"GET / HTTP/1.1\r\n X: a\r\n\r\n",                 # whitespace before the first header
    b"GET / HTTP/1.1\r\nX\x00Y: a\r\n\r\n",             # NUL in a name
    b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",             # NUL in a value
    b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",             # control character in a value
    b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
    b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
    b"GET / HTTP/1.1\rX: a\r\n\r\n",                    # CR without LF
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",    # a TLS ClientHello
])
def test_malformed_requests(data: bytes) -> None:
    assert Parsed(data).ret == lib.PYWS_HTTP_BAD
    assert Parsed(data + b"X: y\r\n" * 3 + b"\r\n").ret == lib.PYWS_HTTP_BAD


@pytest.mark.parametrize("data", [b"GET / HTTP/2.0\r\n\r\n", b"GET / HTTP/0.9\r\n\r\n",
                                  b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"GET / HTTP/3"])
def test_wrong_http_version(data: bytes) -> None:
    assert Parsed(data).ret == lib.PYWS_HTTP_VERSION


def test_oversize_heads() -> None:
    data = UPGRADE
    n = len(data)
    # a complete head of exactly max_bytes is fine, one byte less is too large
    assert Parsed(data, max_bytes=n).ret == n
    assert Parsed(data, max_bytes=n - 1).ret == lib.PYWS_HTTP_TOO_LARGE
    # an incomplete head that already fills max_bytes can never fit
    big = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 5000
    assert Parsed(big, max_bytes=4096).ret == lib.PYWS_HTTP_TOO_LARGE
    assert Parsed(big, max_bytes=16384).ret == lib.PYWS_HTTP_PARTIAL
    # too many header lines
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(9)) + b"\r\n"
    assert Parsed(many, max_headers=9).ret == len(many)
    assert Parsed(many, max_headers=8).ret == lib.PYWS_HTTP_TOO_LARGE


def test_response_head() -> None:
    data = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    p = Parsed(data, response=True)
    assert p.ret == len(data)
    assert p.head.status == 101 and p.view(p.head.reason) == b"Switching Protocols"
    assert p.header_list()[2] == (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    for k in range(len(data)):
        assert Parsed(data[:k], response=True).ret == lib.PYWS_HTTP_PARTIAL
    assert Parsed(b"HTTP/1.1 1O1 Bad\r\n\r\n", response=True).ret == lib.PYWS_HTTP_BAD
    assert Parsed(b"HTTP/2 101\r\n\r\n", response=True).ret == lib.PYWS_HTTP_VERSION


# ------------------------------------------------------------------------------------------
# The handshake
# ------------------------------------------------------------------------------------------

def accept_of(key: bytes) -> bytes:
    digest = hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    return base64.b64encode(digest)


def test_rfc6455_sample_handshake() -> None:
    hs, _ = handshake(UPGRADE)
    assert hs.status == 0 and hs.error == ffi.NULL
    assert ffi.string(hs.accept) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert pystr(hs.protocols) == b"chat, superchat" and hs.protocols_multi == 0
    assert pystr(hs.extensions) == b"permessage-deflate; client_max_window_bits"
    out = ffi.new("char[29]")
    lib.pyws_accept_key(b"dGhlIHNhbXBsZSBub25jZQ==", 24, out)
    assert ffi.string(out) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("key", [b"AAAAAAAAAAAAAAAAAAAAAA==", b"x3JJHMbDL1EzLkh9GBhXDw==",
                                 base64.b64encode(bytes(range(16)))])
def test_accept_matches_python(key: bytes) -> None:
    req = (b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: upgrade\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key:  " + key + b" \r\n\r\n")
    hs, _ = handshake(req)
    assert hs.status == 0
    assert ffi.string(hs.accept) == accept_of(key)
    out = ffi.new("char[29]")
    lib.pyws_accept_key(key, len(key), out)
    assert ffi.string(out) == accept_of(key)


def _request(drop: Tuple[str, ...] = (), extra: bytes = b"", method: bytes = b"GET",
             version: bytes = b"HTTP/1.1", override: Optional[Dict[str, bytes]] = None) -> bytes:
    fields = {"Host": b"example.com", "Upgrade": b"websocket", "Connection": b"Upgrade",
              "Sec-WebSocket-Key": b"dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": b"13"}
    fields.update(override or {})
    lines = b"".join(k.encode() + b": " + v + b"\r\n" for k, v in fields.items() if k not in drop)
    return method + b" /ws " + version + b"\r\n" + lines + extra + b"\r\n"


@pytest.mark.parametrize("req,status", [
    pytest.param(_request(method=b"POST"), 400, id="post"),
    pytest.param(_request(method=b"get"), 400, id="lower-case-get"),
    pytest.param(_request(version=b"HTTP/1.0"), 400, id="http-1.0"),
    pytest.param(_request(drop=("Host",)), 400, id="no-host"),
    pytest.param(_request(extra=b"Host: other\r\n"), 400, id="two-hosts"),
    pytest.param(_request(drop=("Upgrade",)), 400, id="no-upgrade"),
    pytest.param(_request(override={"Upgrade": b"h2c"}), 400, id="upgrade-h2c"),
    pytest.param(_request(drop=("Connection",)), 400, id="no-connection"),
    pytest.param(_request(override={"Connection": b"keep-alive"}), 400, id="connection-no-upgrade"),
    pytest.param(_request(drop=("Sec-WebSocket-Version",)), 426, id="no-version"),
    pytest.param(_request(override={"Sec-WebSocket-Version": b"8"}), 426, id="version-8"),
    pytest.param(_request(override={"Sec-WebSocket-Version": b"13, 8"}), 426, id="version-list"),
    pytest.param(_request(extra=b"Sec-WebSocket-Version: 13\r\n"), 400, id="two-versions"),
    pytest.param(_request(drop=("Sec-WebSocket-Key",)), 400, id="no-key"),
    pytest.param(_request(override={"Sec-WebSocket-Key": b"not base64!"}), 400, id="key-junk"),
    pytest.param(_request(override={"Sec-WebSocket-Key": b"AAAAAAAAAAAAAAAAAAAA"}), 400,
                 id="key-15-bytes"),
    pytest.param(_request(override={"Sec-WebSocket-Key": base64.b64encode(bytes(17))}), 400,
                 id="key-17-bytes"),
    pytest.param(_request(override={"Sec-WebSocket-Key": b"dGhlIHNhbXBsZSBub25jZR=="}), 400,
                 id="key-not-canonical"),
    pytest.param(_request(extra=b"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"), 400,
                 id="two-keys"),
])
def test_invalid_handshakes(req: bytes, status: int) -> None:
    hs, _ = handshake(req)
    assert hs.status == status
    assert hs.error != ffi.NULL and ffi.string(hs.error)
    assert ffi.string(hs.accept) == b""


def test_valid_handshake_variants() -> None:
    for req in (_request(), _request(version=b"HTTP/1.1",
                                     override={"Connection": b"keep-alive,  UPGRADE"}),
                _request(override={"Upgrade": b"foo/2, WebSocket"}),
                _request(extra=b"Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b\r\n")):
        hs, _ = handshake(req)
        assert hs.status == 0, ffi.string(hs.error)
        assert ffi.string(hs.accept) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    hs, _ = handshake(_request(extra=b"Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b\r\n"))
    assert pystr(hs.protocols) == b"a" and hs.protocols_multi == 1


@pytest.mark.parametrize("offered,protocol,want", [
    (b"chat, superchat", b"chat", 1),
    (b"chat, superchat", b"superchat", 1),
    (b"chat,superchat", b"superchat", 1),
    (b"chat, superchat", b"Chat", 0),          # case-sensitive
    (b"chat, superchat", b"cha", 0),
    (b"chat, superchat", b"super", 0),
    (b"chat, superchat", b"chat, superchat", 0),
    (b"", b"chat", 0),
    (b"  v2.json.example  ,  mqtt ", b"mqtt", 1),
    (b"  v2.json.example  ,  mqtt ", b"v2.json.example", 1),
])
def test_protocol_offered(offered: bytes, protocol: bytes, want: int) -> None:
    buf = ffi.new("char[]", offered or b"\0")
    s = ffi.new("pyws_str *", {"ptr": buf, "len": len(offered)})
    assert lib.pyws_protocol_offered(s[0], protocol) == want
