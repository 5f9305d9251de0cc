"""Bad input from raw sockets: each case ends in a clear HTTP error or WebSocket close code, and
after EACH one, in the same test, a good websocket-client connection is still echoed."""
from __future__ import annotations

import os
import queue
import socket
import struct
import time
from typing import Any, Callable, List, Tuple

import pytest
import websocket

import pyws
from pyws import EV_CLOSE, EV_ERROR, EV_HTTP_MSG, EV_WS_MSG

from _frames import MASK_KEY, RSV1, RSV2, RSV3, frame
from _rawws import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS, close_payload,
                    handshake_request)
from conftest import ServerThread

MAX_MSG = 64 * 1024


class BadInputServer:
    """An echo server (seed-style: every request for /ws is upgraded, whatever it looks like)
    that records requests, handshake errors and close codes. A request that asks for an upgrade
    but is malformed never reaches it: pyws answers it and reports EV_ERROR with conn.error set
    (recorded as "handshake_error" too)."""

    def __init__(self, factory: Callable[..., ServerThread], **opts: Any) -> None:
        self.events: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        options = dict(max_header_bytes=2048, max_headers=20, max_message_size=MAX_MSG,
                       close_timeout=2.0)
        options.update(opts)
        self.srv = factory(self.handler, **options)
        self.port = self.srv.port

    def handler(self, conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            self.events.put(("http", data.uri))
            if data.uri == "/ws":
                try:
                    conn.ws_upgrade(data)
                except pyws.HandshakeError as exc:
                    self.events.put(("handshake_error", (exc.status, str(exc))))
            else:
                conn.reply(200, "ok")
        elif ev == EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)
        elif ev == EV_ERROR and isinstance(conn.error, pyws.HandshakeError):
            self.events.put(("handshake_error", (conn.error.status, str(conn.error))))
        elif ev == EV_CLOSE:
            self.events.put(("close", (conn.is_websocket, conn.close_code, conn.close_reason)))

    def next(self, kind: str, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        seen: List[Tuple[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                k, v = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if k == kind:
                return v
            seen.append((k, v))
        raise AssertionError(f"no {kind} event in time; saw {seen}")

    def saw(self, kind: str, timeout: float = 0.1) -> bool:
        """True if an event of this kind is (or within timeout gets) queued; others are kept."""
        deadline = time.monotonic() + timeout
        kept: List[Tuple[str, Any]] = []
        found = False
        while not found:
            try:
                k, v = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            found = k == kind
            kept.append((k, v))
        for item in kept:
            self.events.put(item)
        return found

    def next_ws_close(self, timeout: float = 5.0) -> Tuple[int, str]:
        deadline = time.monotonic() + timeout
        for _ in range(100):
            is_ws, code, reason = self.next("close", max(0.01, deadline - time.monotonic()))
            if is_ws:
                return code, reason
        raise AssertionError("no WebSocket close")

    def assert_alive(self) -> None:
        """A good client is still served."""
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws", timeout=5)
        try:
            ws.send("still alive?")
            assert ws.recv() == "still alive?"
            ws.send_binary(b"\x00\x01")
            assert ws.recv() == b"\x00\x01"
        finally:
            ws.close()

    def raw(self) -> RawWS:
        return RawWS(self.port, timeout=5)

    def upgraded(self) -> RawWS:
        r = self.raw()
        r.handshake()
        return r


@pytest.fixture
def bad(server_factory: Callable[..., ServerThread]) -> BadInputServer:
    return BadInputServer(server_factory)


def expect_close_then_eof(r: RawWS, code: int) -> Tuple[bytes, List[Tuple[int, bytes]]]:
    got, reason, before = r.recv_close()
    assert got == code, (got, reason)
    assert r.is_eof(3.0), "the server must close TCP after failing the connection"
    return reason, before


# --------------------------------------------------------------------------- HTTP phase

@pytest.mark.parametrize("junk", [
    b"\x00\x01\x02\x03garbage\xff\xfe\r\n\r\n",
    b"hello there, this is not HTTP at all\r\n\r\n",
    b"GET /ws\r\n\r\n",                       # HTTP/0.9-ish, no version
    b"GET  /ws HTTP/1.1\r\nHost: x\r\n\r\n",   # two spaces
    b"GET /ws HTTP/1.1\r\n Host: x\r\n\r\n",   # obs-fold / leading whitespace
    b"GET /ws HTTP/1.1\r\nHost : x\r\n\r\n",   # whitespace before the colon
    b"\xff" * 50,                              # no line end at all: fails at the first byte
])
def test_garbage_instead_of_http_gets_400(bad: BadInputServer, junk: bytes) -> None:
    with bad.raw() as r:
        r.send(junk)
        reply = r.read_until_eof(3)
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:80]
    assert b"Connection: close" in reply
    bad.assert_alive()


def test_tls_client_hello_gets_400(bad: BadInputServer) -> None:
    # the start of a real TLS 1.2/1.3 ClientHello record
    hello = bytes.fromhex(
        "16030100f4010000f00303") + os.urandom(32) + bytes.fromhex(
        "20") + os.urandom(32) + bytes.fromhex("0008130213031301c02f0100009f0000000e000c0000"
                                               "096c6f63616c686f7374")
    with bad.raw() as r:
        r.send(hello)
        reply = r.read_until_eof(3)
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:80]
    bad.assert_alive()


def test_http2_preface_gets_505(bad: BadInputServer) -> None:
    with bad.raw() as r:
        r.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        reply = r.read_until_eof(3)
    assert reply.startswith(b"HTTP/1.1 505 "), reply[:80]
    bad.assert_alive()


def test_truncated_handshake_then_vanish(bad: BadInputServer) -> None:
    for cut in (1, 10, 40, len(handshake_request()) - 1):
        r = bad.raw()
        r.send(handshake_request()[:cut])
        time.sleep(0.02)
        r.close()
        bad.assert_alive()
    # the half-open connections are all gone: four EV_CLOSE for plain HTTP connections (no
    # WebSocket close code), besides the good clients' normal closes
    plain = 0
    for _ in range(8):
        is_ws, code, _reason = bad.next("close")
        if is_ws:
            assert code == 1000
        else:
            assert code is None
            plain += 1
    assert plain == 4
    deadline = time.monotonic() + 5
    while bad.srv.call(lambda: len(bad.srv.mgr.connections)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert bad.srv.call(lambda: len(bad.srv.mgr.connections)) == 0


def test_truncated_handshake_times_out_with_408(server_factory: Callable[..., ServerThread]
                                                ) -> None:
    bad = BadInputServer(server_factory, handshake_timeout=0.3)
    with bad.raw() as r:
        t0 = time.monotonic()
        r.send(handshake_request()[:30])
        reply = r.read_until_eof(5)
        elapsed = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    assert 0.2 <= elapsed < 3.0, elapsed
    # a client that sends nothing at all gets the same
    with bad.raw() as r:
        reply = r.read_until_eof(5)
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    bad.assert_alive()


def test_oversize_header_gets_431(bad: BadInputServer) -> None:
    with bad.raw() as r:
        r.send(handshake_request(extra="X-Big: " + "a" * 3000 + "\r\n"))
        reply = r.read_until_eof(3)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:80]
    bad.assert_alive()
    # the same head trickling in, without ever ending, is cut off at the limit too
    with bad.raw() as r:
        r.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        status = b""
        for _ in range(100):
            try:
                r.send(b"b" * 100)
            except OSError:
                break
            r.sock.settimeout(0.01)
            try:
                status = r.sock.recv(64)
            except socket.timeout:
                continue
            finally:
                r.sock.settimeout(5)
            break
        status += r.read_until_eof(3)
    assert status.startswith(b"HTTP/1.1 431 "), status[:80]
    bad.assert_alive()


def test_too_many_headers_gets_431(bad: BadInputServer) -> None:
    extra = "".join(f"X-H{i}: {i}\r\n" for i in range(40))
    with bad.raw() as r:
        r.send(handshake_request(extra=extra))
        reply = r.read_until_eof(3)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:80]
    bad.assert_alive()


@pytest.mark.parametrize("version", ["8", "12", "14", "130"])
def test_bad_websocket_version_gets_426(bad: BadInputServer, version: str) -> None:
    with bad.raw() as r:
        r.send(handshake_request(version=version))
        status, headers, _ = r.read_http_head()
        assert r.is_eof(3)
    assert status == 426
    assert headers["sec-websocket-version"] == "13"
    # answered by pyws itself: the handler gets EV_ERROR (conn.error), never the request
    err_status, msg = bad.next("handshake_error")
    assert err_status == 426 and "Sec-WebSocket-Version" in msg
    assert not bad.saw("http")
    bad.assert_alive()


@pytest.mark.parametrize("key", [None, "", "short", "dGhlIHNhbXBsZSBub25jZQ", "!!!!" * 6])
def test_missing_or_bad_key_gets_400_and_handshake_error(bad: BadInputServer, key: Any) -> None:
    with bad.raw() as r:
        if key is None:
            r.send(handshake_request(key=None))
        else:
            req = handshake_request().replace(b"dGhlIHNhbXBsZSBub25jZQ==", key.encode())
            r.send(req)
        status, _headers, _ = r.read_http_head()
        assert r.is_eof(3)
    assert status == 400
    err_status, msg = bad.next("handshake_error")
    assert err_status == 400 and "400" in msg and "Sec-WebSocket-Key" in msg
    assert not bad.saw("http")
    bad.assert_alive()


def test_plain_get_on_ws_path_gets_400(bad: BadInputServer) -> None:
    with bad.raw() as r:
        r.send(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _h, _ = r.read_http_head()
    assert status == 400
    assert bad.next("handshake_error")[0] == 400
    bad.assert_alive()


# --------------------------------------------------------------------------- WebSocket phase

def test_unmasked_frame_closes_1002(bad: BadInputServer) -> None:
    with bad.upgraded() as r:
        r.send_frame(b"hello", OP_TEXT, mask=False)
        expect_close_then_eof(r, 1002)
    assert bad.next_ws_close()[0] == 1002
    bad.assert_alive()


@pytest.mark.parametrize("opcode", [3, 4, 7, 11, 15])
def test_reserved_opcode_closes_1002(bad: BadInputServer, opcode: int) -> None:
    with bad.upgraded() as r:
        r.send_frame(b"x", opcode)
        expect_close_then_eof(r, 1002)
    bad.assert_alive()


@pytest.mark.parametrize("rsv", [RSV3, RSV2, RSV1, RSV1 | RSV2 | RSV3])
def test_rsv_bits_close_1002(bad: BadInputServer, rsv: int) -> None:
    with bad.upgraded() as r:
        r.send_frame(b"x", OP_TEXT, rsv=rsv)
        expect_close_then_eof(r, 1002)
    bad.assert_alive()


@pytest.mark.parametrize("frames", [
    [(b"x", OP_CONT, True)],                                      # continuation out of nowhere
    [(b"a", OP_TEXT, False), (b"b", OP_TEXT, True)],              # new message inside one
    [(b"p", OP_PING, False)],                                     # fragmented control frame
    [(b"p" * 126, OP_PING, True)],                                # control frame too long
])
def test_frame_sequence_errors_close_1002(bad: BadInputServer, frames: List[Any]) -> None:
    with bad.upgraded() as r:
        for payload, op, fin in frames:
            r.send_frame(payload, op, fin)
        expect_close_then_eof(r, 1002)
    bad.assert_alive()


@pytest.mark.parametrize("payload", [
    b"\xff", b"abc\xc0\xafdef", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\x80",
    b"truncated \xe2\x82",
])
def test_invalid_utf8_closes_1007(bad: BadInputServer, payload: bytes) -> None:
    with bad.upgraded() as r:
        r.send_frame(payload, OP_TEXT)
        expect_close_then_eof(r, 1007)
    assert bad.next_ws_close()[0] == 1007
    bad.assert_alive()


def test_invalid_utf8_in_first_fragment_fails_fast(bad: BadInputServer) -> None:
    with bad.upgraded() as r:
        r.send_frame(b"fine so far \xe2\x82", OP_TEXT, fin=False)  # a valid partial code point
        r.send_frame(b"\xac and more", OP_CONT, fin=False)           # completes "€": still fine
        r.send_frame(b"then \xc3\x28 bad", OP_CONT, fin=False)       # invalid; message not done
        # no more fragments are sent: the close must come anyway
        code, _reason, before = r.recv_close(timeout=3)
        assert code == 1007
        assert before == []
        assert r.is_eof(3)
    bad.assert_alive()


def test_invalid_utf8_split_across_fragments(bad: BadInputServer) -> None:
    with bad.upgraded() as r:
        # "\xf0\x9f" then "\x28": the continuation byte expected is missing
        r.send_frame(b"abc\xf0\x9f", OP_TEXT, fin=False)
        r.send_frame(b"\x28", OP_CONT, fin=False)
        code, _reason, _ = r.recv_close(timeout=3)
        assert code == 1007
    bad.assert_alive()


def test_oversize_message_closes_1009(bad: BadInputServer) -> None:
    with bad.upgraded() as r:
        r.send_frame(b"a" * MAX_MSG, OP_BINARY)       # exactly the limit: fine
        op, fin, data = r.recv_frame()
        assert (op, fin, len(data)) == (OP_BINARY, True, MAX_MSG)
        # one byte more, announced in the header: fails before the payload arrives
        r.send(frame(OP_BINARY, b"", mask=MASK_KEY, length=MAX_MSG + 1)[:14])
        expect_close_then_eof(r, 1009)
    bad.assert_alive()
    # the limit counts the whole message, across fragments
    with bad.upgraded() as r:
        for _ in range(3):
            r.send_frame(b"b" * (MAX_MSG // 3), OP_BINARY if _ == 0 else OP_CONT, fin=False)
        r.send_frame(b"b" * 10, OP_CONT, fin=True)
        code, _reason, before = r.recv_close()
        assert code == 1009 and before == []
    bad.assert_alive()


def test_per_connection_max_message_size(server_factory: Callable[..., ServerThread]) -> None:
    bad = BadInputServer(server_factory)
    with bad.upgraded() as r:
        bad.srv.call(lambda: setattr(bad.srv.mgr.connections[0], "max_message_size", 10))
        r.send_frame(b"0123456789", OP_TEXT)
        assert r.recv_frame()[2] == b"0123456789"
        r.send_frame(b"0123456789A", OP_TEXT)
        expect_close_then_eof(r, 1009)
    bad.assert_alive()


def test_close_frame_with_one_byte_payload_closes_1002(bad: BadInputServer) -> None:
    with bad.upgraded() as r:
        r.send_frame(b"\x03", OP_CLOSE)
        expect_close_then_eof(r, 1002)
    bad.assert_alive()


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_invalid_close_code_closes_1002(bad: BadInputServer, code: int) -> None:
    with bad.upgraded() as r:
        r.send_frame(close_payload(code, b"bad"), OP_CLOSE)
        expect_close_then_eof(r, 1002)
    bad.assert_alive()


def test_close_reason_invalid_utf8_closes_1007(bad: BadInputServer) -> None:
    with bad.upgraded() as r:
        r.send_frame(close_payload(1000, b"\xff\xfe"), OP_CLOSE)
        expect_close_then_eof(r, 1007)
    bad.assert_alive()


def test_valid_close_is_echoed(bad: BadInputServer) -> None:
    with bad.upgraded() as r:
        r.send_frame(close_payload(3333, "fin ✓".encode()), OP_CLOSE)
        code, _reason, _ = r.recv_close()
        assert code == 3333  # the code is echoed (RFC 6455 §5.5.1); the reason need not be
        assert r.is_eof(3)
    assert bad.next_ws_close() == (3333, "fin ✓")
    # an empty close is answered with an empty close; the server reports 1005
    with bad.upgraded() as r:
        r.send_frame(b"", OP_CLOSE)
        op, _fin, payload = r.recv_frame()
        assert op == OP_CLOSE and payload == b""
    assert bad.next_ws_close()[0] == 1005
    bad.assert_alive()


@pytest.mark.parametrize("cut", [1, 2, 5, 9])
def test_client_vanishing_mid_frame(bad: BadInputServer, cut: int) -> None:
    r = bad.upgraded()
    raw_frame = frame(OP_TEXT, b"z" * 300, mask=MASK_KEY)
    r.send(raw_frame[:cut])
    time.sleep(0.05)
    r.close()
    code, _reason = bad.next_ws_close()
    assert code == 1006
    bad.assert_alive()


def test_client_vanishing_mid_fragmented_message(bad: BadInputServer) -> None:
    r = bad.upgraded()
    r.send_frame(b"part one", OP_TEXT, fin=False)
    r.send(frame(OP_CONT, b"part two", fin=False, mask=MASK_KEY)[:5])
    time.sleep(0.05)
    r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    r.close()  # RST instead of FIN
    assert bad.next_ws_close()[0] == 1006
    bad.assert_alive()


@pytest.mark.parametrize("bad_frame,code", [
    (frame(3, b"x", mask=MASK_KEY), 1002),
    (frame(OP_TEXT, b"x"), 1002),
    (frame(OP_TEXT, b"\xff", mask=MASK_KEY), 1007),
])
def test_messages_before_an_error_are_echoed_first(bad: BadInputServer, bad_frame: bytes,
                                                    code: int) -> None:
    with bad.upgraded() as r:
        r.send(frame(OP_TEXT, b"first", mask=MASK_KEY) + frame(OP_TEXT, b"second", mask=MASK_KEY) +
               bad_frame + frame(OP_TEXT, b"never", mask=MASK_KEY))
        got, _reason, before = r.recv_close()
        assert before == [(OP_TEXT, b"first"), (OP_TEXT, b"second")]
        assert got == code
        assert r.is_eof(3)
    bad.assert_alive()


def test_pipelined_upgrade_and_frames_in_one_segment(bad: BadInputServer) -> None:
    """Frames sent right behind the upgrade request, before the 101 arrives, are not lost."""
    with bad.raw() as r:
        r.send(handshake_request() + frame(OP_TEXT, b"early", mask=MASK_KEY) +
               frame(OP_PING, b"", mask=MASK_KEY) +
               frame(OP_CLOSE, close_payload(1000), mask=MASK_KEY))
        status, _h, _ = r.read_http_head()
        assert status == 101
        code, _reason, before = r.recv_close()
        # the pong is answered in C and may overtake the application's echo
        assert sorted(before) == [(OP_TEXT, b"early"), (OP_PONG, b"")]
        assert code == 1000
        assert r.is_eof(3)
    bad.assert_alive()


def test_byte_at_a_time_frames(bad: BadInputServer) -> None:
    with bad.upgraded() as r:
        r.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = frame(OP_TEXT, "dribble €".encode(), fin=False, mask=MASK_KEY) + \
            frame(OP_PING, b"", mask=MASK_KEY) + frame(OP_CONT, b" done", mask=MASK_KEY)
        for i in range(len(data)):
            r.send(data[i:i + 1])
            if i % 8 == 0:
                time.sleep(0.001)
        assert r.recv_frame()[0] == OP_PONG
        assert r.recv_frame() == (OP_TEXT, True, "dribble € done".encode())
    bad.assert_alive()
