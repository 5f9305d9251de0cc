"""The Sans-I/O session (pyws_session_*) through the cffi module: message reassembly, control
frames, the size limit, close payloads, UTF-8 of text messages checked as the bytes arrive (so
an invalid byte fails the feed call that brings it), and the assembly buffer's hold/retire/
release life cycle.
"""
from __future__ import annotations

import random
from typing import Any, List, Optional, Sequence, Tuple

import cffi
import pytest

from pyws._lib import ffi, lib

from _frames import (KEY, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, bytewise,
                     chunks, close_payload, frame, header, key_for, message_frames,
                     payload_bytes, splits2)

SERVER = lib.PYWS_ROLE_SERVER
CLIENT = lib.PYWS_ROLE_CLIENT
ROLES = [pytest.param(SERVER, id="server"), pytest.param(CLIENT, id="client")]

# Retired assembly buffers were malloc'd by the C core and are the caller's to free(): reach
# libc's free() (the sanitizer's, when it is preloaded) through a tiny ABI-mode FFI.
_libc_ffi = cffi.FFI()
_libc_ffi.cdef("void free(void *);")
_libc = _libc_ffi.dlopen(None)


def c_free(ptr: Any) -> None:
    _libc.free(_libc_ffi.cast("void *", int(ffi.cast("uintptr_t", ptr))))


# A normalised event: ("MSG", opcode, bytes), ("PING", bytes), ("PONG", bytes),
# ("CLOSE", code, reason bytes), ("ERROR", code).
Ev = Tuple[Any, ...]

KIND_NAMES = {lib.PYWS_SESS_MESSAGE: "MSG", lib.PYWS_SESS_PING: "PING",
              lib.PYWS_SESS_PONG: "PONG", lib.PYWS_SESS_CLOSE: "CLOSE",
              lib.PYWS_SESS_ERROR: "ERROR"}


class Session:
    """A pyws_session driven through cffi. By default the views of each event are released
    (pyws_session_release) right after they are copied out, as a driver would."""

    def __init__(self, role: int, max_message: int = 0, release: bool = True,
                 keep_bytes: int = 1 << 20) -> None:
        self.s = ffi.new("pyws_session *")
        lib.pyws_session_init(self.s, role, max_message)
        self.role = role
        self.release = release
        self.keep_bytes = keep_bytes
        self.ev = ffi.new("pyws_sess_event *")
        self.consumed = ffi.new("size_t *")
        self.retired = ffi.new("uint8_t **")
        self.retired_seen: List[Any] = []
        self.raw: List[Any] = []        # (kind, data pointer) of every event, for view checks

    def close(self) -> None:
        for p in self.retired_seen:
            c_free(p)
        self.retired_seen = []
        lib.pyws_session_free(self.s)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def feed(self, data: bytes) -> List[Ev]:
        """Feed one piece until the session has consumed it all; return its events."""
        n_total = len(data)
        buf = ffi.new("uint8_t[]", data if data else b"\0")
        pos = 0
        out: List[Ev] = []
        for _ in range(4 * n_total + 16):
            self.retired[0] = ffi.NULL
            kind = lib.pyws_session_feed(self.s, buf + pos, n_total - pos, self.consumed,
                                         self.ev, self.retired)
            n = self.consumed[0]
            assert kind == self.ev.kind
            assert n <= n_total - pos
            if self.retired[0] != ffi.NULL:
                self.retired_seen.append(self.retired[0])
            pos += n
            if kind == lib.PYWS_SESS_NONE:
                assert pos == n_total   # NONE: everything was consumed
                return out
            out.append(self._event(buf, n_total))
            if self.release:
                lib.pyws_session_release(self.s, self.keep_bytes)
        raise AssertionError("the session did not settle")

    def _event(self, buf: Any, n_total: int) -> Ev:
        ev = self.ev
        name = KIND_NAMES[ev.kind]
        self.raw.append((name, ev.data, ev.len, buf, n_total))
        if name == "ERROR":
            assert ev.reason != ffi.NULL and ev.reason_len == len(ffi.string(ev.reason))
            assert ev.reason_len > 0
            return ("ERROR", ev.code)
        data = bytes(ffi.buffer(ev.data, ev.len)) if ev.len else b""
        if ev.len:
            assert ev.data != ffi.NULL
        if name == "MSG":
            assert ev.opcode in (OP_TEXT, OP_BINARY)
            return ("MSG", ev.opcode, data)
        if name == "CLOSE":
            reason = bytes(ffi.buffer(ev.reason, ev.reason_len)) if ev.reason_len else b""
            return ("CLOSE", ev.code, reason)
        return (name, data)


def mask_for(role: int, seed: int) -> Optional[bytes]:
    return key_for(seed) if role == SERVER else None


def fr(role: int, opcode: int, payload: bytes = b"", fin: bool = True, seed: int = 0) -> bytes:
    """A frame as the peer of `role` sends it (masked towards a server)."""
    return frame(opcode, payload, fin=fin, mask=mask_for(role, seed + len(payload) + opcode))


def msg_frames(role: int, opcode: int, pieces: Sequence[bytes], seed: int = 1,
               interleave: Optional[dict[int, bytes]] = None) -> bytes:
    return message_frames(opcode, pieces, mask_seed=seed if role == SERVER else None,
                          interleave=interleave)


def run(role: int, pieces: Sequence[bytes], max_message: int = 0,
        keep_bytes: int = 1 << 20) -> List[Ev]:
    with Session(role, max_message, keep_bytes=keep_bytes) as s:
        out: List[Ev] = []
        for p in pieces:
            out += s.feed(p)
        return out


# ------------------------------------------------------------------------------------------
# Messages: single frames, fragments, interleaved control frames, every split point
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
@pytest.mark.parametrize("length", [0, 1, 125, 126, 65536])
def test_single_frame_message(role: int, opcode: int, length: int) -> None:
    payload = (b"a" * length) if opcode == OP_TEXT else payload_bytes(length)
    data = fr(role, opcode, payload)
    assert run(role, [data]) == [("MSG", opcode, payload)]
    assert run(role, [data[:3], data[3:]]) == [("MSG", opcode, payload)]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("count", [2, 3, 10, 100, 1000])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_fragmented_message_reassembled(role: int, count: int, opcode: int) -> None:
    rng = random.Random(count * 31 + opcode)
    # fragment sizes include empty ones (at the start, the end and in between)
    sizes = [rng.choice([0, 0, 1, 2, 3, 7, 50, 130]) for _ in range(count)]
    sizes[0] = 0
    sizes[-1] = 0
    total = sum(sizes)
    if opcode == OP_TEXT:
        # valid text of exactly `total` bytes; fragments cut it on byte positions, so multi-byte
        # sequences are split across fragments on purpose
        out = bytearray()
        while len(out) < total:
            ch = rng.choice(["a", "é", "€", "😀"]).encode()
            out += ch if len(out) + len(ch) <= total else b"a"
        payload = bytes(out)
    else:
        payload = payload_bytes(total)
    pieces = chunks(payload, [sum(sizes[:i]) for i in range(1, count)])
    assert len(pieces) == count
    stream = msg_frames(role, opcode, pieces)
    assert run(role, [stream]) == [("MSG", opcode, payload)]
    if count <= 10:
        for a, b in splits2(stream):
            assert run(role, [a, b]) == [("MSG", opcode, payload)]


@pytest.mark.parametrize("role", ROLES)
def test_all_fragments_empty(role: int) -> None:
    for count in (1, 2, 5):
        for opcode in (OP_TEXT, OP_BINARY):
            stream = msg_frames(role, opcode, [b""] * count)
            assert run(role, [stream]) == [("MSG", opcode, b"")]
            assert run(role, bytewise(stream)) == [("MSG", opcode, b"")]


@pytest.mark.parametrize("role", ROLES)
def test_control_frames_interleaved_in_fragmented_message(role: int) -> None:
    pieces = [b"Hello", b", ", b"", b"wor", b"ld!"]
    inter = {1: fr(role, OP_PING, b"p1"), 2: fr(role, OP_PONG, b"") + fr(role, OP_PING, b""),
             4: fr(role, OP_PONG, payload_bytes(125))}
    stream = msg_frames(role, OP_TEXT, pieces, interleave=inter)
    want = [("PING", b"p1"), ("PONG", b""), ("PING", b""), ("PONG", payload_bytes(125)),
            ("MSG", OP_TEXT, b"Hello, world!")]
    assert run(role, [stream]) == want
    assert run(role, bytewise(stream)) == want
    for a, b in splits2(stream):
        assert run(role, [a, b]) == want, f"split at {len(a)}"


def multi_frame_stream(role: int) -> Tuple[bytes, List[Ev]]:
    """A stream mixing every kind of event, ending with a close."""
    big = payload_bytes(300)
    parts: List[Tuple[bytes, List[Ev]]] = [
        (fr(role, OP_TEXT, "héllo".encode()), [("MSG", OP_TEXT, "héllo".encode())]),
        (fr(role, OP_PING, b"are you there"), [("PING", b"are you there")]),
        (msg_frames(role, OP_BINARY, [big[:100], b"", big[100:]],
                    interleave={1: fr(role, OP_PONG, b"yes")}),
         [("PONG", b"yes"), ("MSG", OP_BINARY, big)]),
        (msg_frames(role, OP_TEXT, [b"\xe2\x82", b"\xac", b" euro"]),
         [("MSG", OP_TEXT, "€ euro".encode())]),
        (fr(role, OP_BINARY, b""), [("MSG", OP_BINARY, b"")]),
        (fr(role, OP_CLOSE, close_payload(1000, b"done")), [("CLOSE", 1000, b"done")]),
    ]
    stream = b"".join(p[0] for p in parts)
    want: List[Ev] = [e for p in parts for e in p[1]]
    return stream, want


@pytest.mark.parametrize("role", ROLES)
def test_multi_frame_stream_every_split(role: int) -> None:
    stream, want = multi_frame_stream(role)
    assert run(role, [stream]) == want
    assert run(role, bytewise(stream)) == want
    for a, b in splits2(stream):
        assert run(role, [a, b]) == want, f"split at {len(a)}"
        # releasing with keep_bytes=0 after every event (a PONG inside a fragmented message
        # included) must not lose the message in progress
        assert run(role, [a, b], keep_bytes=0) == want, f"split at {len(a)}"
    assert run(role, bytewise(stream), keep_bytes=0) == want
    n = len(stream)
    for i in range(0, n, 23):
        for j in range(i, n, 37):
            assert run(role, chunks(stream, [i, j])) == want


@pytest.mark.parametrize("role", ROLES)
def test_zero_copy_and_assembled_give_same_bytes(role: int) -> None:
    payload = payload_bytes(5000, 9)
    stream = fr(role, OP_BINARY, payload)
    # whole frame in one feed: delivered in place, a view into the fed buffer
    with Session(role) as s:
        assert s.feed(stream) == [("MSG", OP_BINARY, payload)]
        _, data, n, buf, n_total = s.raw[-1]
        assert n == len(payload)
        assert buf <= data and data + n <= buf + n_total
    # the same frame in two feeds: assembled in the session's buffer
    with Session(role) as s:
        assert s.feed(stream[:1000]) == []
        assert s.feed(stream[1000:]) == [("MSG", OP_BINARY, payload)]
        _, data, n, buf, n_total = s.raw[-1]
        assert n == len(payload)
        assert not (buf <= data < buf + n_total)
        assert data == s.s.buf
    # fragmented: assembled too
    with Session(role) as s:
        assert s.feed(msg_frames(role, OP_BINARY, [payload[:1], payload[1:]])) == [
            ("MSG", OP_BINARY, payload)]
        assert s.raw[-1][1] == s.s.buf


@pytest.mark.parametrize("role", ROLES)
def test_held_buffer_is_retired_for_second_assembled_message(role: int) -> None:
    first = payload_bytes(3000, 1)
    second = payload_bytes(2000, 2)
    s = Session(role, release=False)
    try:
        evs = s.feed(msg_frames(role, OP_BINARY, [first[:10], first[10:]]))
        assert evs == [("MSG", OP_BINARY, first)]
        first_ptr = s.raw[-1][1]
        assert s.s.held == 1
        assert s.retired_seen == []
        # the second assembled message goes to a fresh buffer; the held one is handed back
        retired = ffi.new("uint8_t **")
        consumed = ffi.new("size_t *")
        ev = ffi.new("pyws_sess_event *")
        data2 = msg_frames(role, OP_BINARY, [second[:5], second[5:]])
        buf = ffi.new("uint8_t[]", data2)
        got_retired = []
        pos = 0
        kind = lib.PYWS_SESS_NONE
        while pos < len(data2) or kind != lib.PYWS_SESS_NONE:
            retired[0] = ffi.NULL
            kind = lib.pyws_session_feed(s.s, buf + pos, len(data2) - pos, consumed, ev, retired)
            pos += consumed[0]
            if retired[0] != ffi.NULL:
                got_retired.append(retired[0])
            if kind == lib.PYWS_SESS_MESSAGE:
                assert bytes(ffi.buffer(ev.data, ev.len)) == second
                assert ev.data != first_ptr
                # the first message's view is still intact: it was not reused or freed
                assert bytes(ffi.buffer(first_ptr, len(first))) == first
                break
            assert kind == lib.PYWS_SESS_NONE
        assert got_retired == [first_ptr]
        for p in got_retired:
            c_free(p)
        # a zero-copy message while one is held retires nothing
        retired[0] = ffi.NULL
        one = fr(role, OP_TEXT, b"in place")
        b3 = ffi.new("uint8_t[]", one)
        kind = lib.pyws_session_feed(s.s, b3, len(one), consumed, ev, retired)
        assert kind == lib.PYWS_SESS_MESSAGE and retired[0] == ffi.NULL
        assert bytes(ffi.buffer(ev.data, ev.len)) == b"in place"
        lib.pyws_session_release(s.s, 1 << 20)
        assert s.s.held == 0
        # after release, the buffer is reused in place (no retire)
        evs = s.feed(msg_frames(role, OP_BINARY, [b"ab", b"cd"]))
        assert evs == [("MSG", OP_BINARY, b"abcd")]
        assert s.retired_seen == []
    finally:
        s.close()


@pytest.mark.parametrize("role", ROLES)
def test_release_frees_large_buffers(role: int) -> None:
    payload = payload_bytes(10000)
    with Session(role, release=False) as s:
        assert s.feed(msg_frames(role, OP_BINARY, [payload[:1], payload[1:]])) == [
            ("MSG", OP_BINARY, payload)]
        assert lib.pyws_session_memory(s.s) >= 10000
        lib.pyws_session_release(s.s, 1 << 20)     # keep: under the threshold
        assert lib.pyws_session_memory(s.s) >= 10000
        assert s.feed(msg_frames(role, OP_BINARY, [payload[:2], payload[2:]])) == [
            ("MSG", OP_BINARY, payload)]
        lib.pyws_session_release(s.s, 4096)        # larger than keep_bytes: freed
        assert lib.pyws_session_memory(s.s) == 0
        assert s.feed(msg_frames(role, OP_BINARY, [b"x", b"y"])) == [("MSG", OP_BINARY, b"xy")]


# ------------------------------------------------------------------------------------------
# Maximum message size
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_max_message_exact_ok(role: int, opcode: int) -> None:
    limit = 1000
    payload = b"z" * limit
    assert run(role, [fr(role, opcode, payload)], limit) == [("MSG", opcode, payload)]
    stream = msg_frames(role, opcode, [payload[:1], b"", payload[1:600], payload[600:]])
    assert run(role, [stream], limit) == [("MSG", opcode, payload)]
    # control frames do not count
    stream = msg_frames(role, opcode, [payload[:500], payload[500:]],
                        interleave={1: fr(role, OP_PING, b"p" * 125)})
    assert run(role, [stream], limit) == [("PING", b"p" * 125), ("MSG", opcode, payload)]
    # the limit is per message
    two = fr(role, opcode, payload) + fr(role, opcode, payload)
    assert run(role, [two], limit) == [("MSG", opcode, payload)] * 2


def _expect_too_big_at_header(role: int, before: bytes, hdr: bytes, limit: int) -> None:
    with Session(role, limit) as s:
        assert [e for e in s.feed(before) if e[0] == "ERROR"] == []
        # the header alone is enough: the payload never has to arrive
        assert s.feed(hdr) == [("ERROR", lib.PYWS_CLOSE_TOO_BIG)]
        assert s.feed(b"\x00" * 50) == []     # ignored from now on


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_max_message_plus_one_fails_at_header(role: int, opcode: int) -> None:
    limit = 1000
    m = mask_for(role, 3)
    _expect_too_big_at_header(role, b"", header(opcode, limit + 1, mask=m), limit)
    # huge 64-bit lengths too
    _expect_too_big_at_header(role, b"", header(opcode, (1 << 63) - 1, mask=m), limit)
    # across fragments: 600 + 401
    first = fr(role, opcode, b"a" * 600, fin=False)
    _expect_too_big_at_header(role, first, header(OP_CONT, 401, mask=m), limit)
    # across many fragments, with an empty one and a control frame in between
    before = (fr(role, opcode, b"a" * 300, fin=False) + fr(role, OP_CONT, b"", fin=False)
              + fr(role, OP_PING, b"x") + fr(role, OP_CONT, b"b" * 700, fin=False))
    _expect_too_big_at_header(role, before, header(OP_CONT, 1, fin=True, mask=m), limit)
    # and the same stream fed as a whole gives the same error after the PING
    with Session(role, limit) as s:
        assert s.feed(before + header(OP_CONT, 1, mask=m) + b"q") == [
            ("PING", b"x"), ("ERROR", lib.PYWS_CLOSE_TOO_BIG)]


# ------------------------------------------------------------------------------------------
# Control frames and close payloads
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
def test_ping_pong_payload_returned(role: int) -> None:
    for n in (0, 1, 60, 125):
        p = payload_bytes(n, 4)
        stream = fr(role, OP_PING, p) + fr(role, OP_PONG, p[::-1])
        want = [("PING", p), ("PONG", p[::-1])]
        assert run(role, [stream]) == want
        assert run(role, bytewise(stream)) == want


@pytest.mark.parametrize("role", ROLES)
def test_close_without_payload(role: int) -> None:
    stream = fr(role, OP_CLOSE, b"")
    want = [("CLOSE", lib.PYWS_CLOSE_NO_STATUS, b"")]
    assert run(role, [stream]) == want
    assert run(role, bytewise(stream)) == want


@pytest.mark.parametrize("role", ROLES)
def test_close_with_one_byte_payload(role: int) -> None:
    assert run(role, [fr(role, OP_CLOSE, b"\x03")]) == [("ERROR", 1002)]


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000,
               3999, 4000, 4999]
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_code(code: int) -> None:
    assert lib.pyws_close_code_valid(code) == 1
    for role in (SERVER, CLIENT):
        assert run(role, [fr(role, OP_CLOSE, close_payload(code))]) == [("CLOSE", code, b"")]
        assert run(role, [fr(role, OP_CLOSE, close_payload(code, b"why"))]) == [
            ("CLOSE", code, b"why")]


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_code(code: int) -> None:
    assert lib.pyws_close_code_valid(code) == 0
    for role in (SERVER, CLIENT):
        assert run(role, [fr(role, OP_CLOSE, close_payload(code))]) == [("ERROR", 1002)]
        assert run(role, [fr(role, OP_CLOSE, close_payload(code, b"ok"))]) == [("ERROR", 1002)]


def test_close_code_valid_exhaustive() -> None:
    valid = set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))
    for code in range(-2, 70000):
        assert lib.pyws_close_code_valid(code) == (1 if code in valid else 0), code


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("reason", ["bye", "Tschüß", "日本語のテキスト", "🎉 done 🎉",
                                    "x" * 123, "é" * 61 + "a"])
def test_close_reason_valid_utf8_returned_intact(role: int, reason: str) -> None:
    raw = reason.encode()
    assert len(raw) <= 123
    stream = fr(role, OP_CLOSE, close_payload(1001, raw))
    want = [("CLOSE", 1001, raw)]
    assert run(role, [stream]) == want
    assert run(role, bytewise(stream)) == want


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("bad", [b"\xff", b"\xc0\x80", b"ok\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                 b"trunc\xe2\x82", b"\x80abc", b"\xc3"])
def test_close_reason_invalid_utf8(role: int, bad: bytes) -> None:
    assert run(role, [fr(role, OP_CLOSE, close_payload(1000, bad))]) == [("ERROR", 1007)]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("ending", ["close", "error"])
def test_input_after_close_or_error_is_ignored(role: int, ending: str) -> None:
    end = (fr(role, OP_CLOSE, close_payload(1000, b"bye")) if ending == "close"
           else fr(role, OP_CLOSE, b"\x03"))
    first = [("CLOSE", 1000, b"bye")] if ending == "close" else [("ERROR", 1002)]
    after = fr(role, OP_TEXT, b"more") + fr(role, OP_PING, b"") + b"\xff\xff garbage"
    with Session(role) as s:
        assert s.feed(fr(role, OP_TEXT, b"before") + end + after) == [
            ("MSG", OP_TEXT, b"before")] + first
        for piece in (after, b"", fr(role, OP_CLOSE, b""), b"\x00" * 100):
            assert s.feed(piece) == []      # consumed entirely, no event
        assert (s.s.closed if ending == "close" else s.s.failed) == 1


@pytest.mark.parametrize("role", ROLES)
def test_frame_errors_reach_session_as_1002(role: int) -> None:
    bad = [frame(OP_TEXT, b"x", rsv=0x40, mask=mask_for(role, 1)),
           frame(5, b"", mask=mask_for(role, 1)),
           frame(OP_CONT, b"x", mask=mask_for(role, 1)),
           frame(OP_PING, b"", fin=False, mask=mask_for(role, 1)),
           frame(OP_TEXT, b"x", mask=None if role == SERVER else KEY)]
    for b in bad:
        assert run(role, [b]) == [("ERROR", 1002)]
        assert run(role, bytewise(b)) == [("ERROR", 1002)]


# ------------------------------------------------------------------------------------------
# UTF-8 of text messages: fail fast
# ------------------------------------------------------------------------------------------

# (name, bytes, index of the first offending byte, or None when only the end of the message
# shows the text is invalid)
UTF8_CLASSES: List[Tuple[str, bytes, Optional[int]]] = [
    ("overlong2-c0", b"\xc0\x80", 0),
    ("overlong2-c1", b"\xc1\xbf", 0),
    ("overlong3", b"\xe0\x80\x80", 1),
    ("overlong3-max", b"\xe0\x9f\xbf", 1),
    ("overlong4", b"\xf0\x80\x80\x80", 1),
    ("overlong4-max", b"\xf0\x8f\xbf\xbf", 1),
    ("surrogate-d800", b"\xed\xa0\x80", 1),
    ("surrogate-dfff", b"\xed\xbf\xbf", 1),
    ("above-10ffff-f4", b"\xf4\x90\x80\x80", 1),
    ("above-10ffff-f5", b"\xf5\x80\x80\x80", 0),
    ("above-10ffff-f7", b"\xf7\xbf\xbf\xbf", 0),
    ("byte-f8", b"\xf8\x88\x80\x80\x80", 0),
    ("byte-fe", b"\xfe", 0),
    ("byte-ff", b"\xff", 0),
    ("lone-continuation-80", b"\x80", 0),
    ("lone-continuation-bf", b"\xbf", 0),
    ("extra-continuation", b"\xc3\xa9\xa9", 2),
    ("missing-continuation-2", b"\xc3A", 1),
    ("missing-continuation-3", b"\xe2\x82A", 2),
    ("missing-continuation-4", b"\xf0\x9f\x98A", 3),
    ("lead-after-lead", b"\xe2\xe2\x82\xac", 1),
    ("truncated-2-at-end", b"\xc3", None),
    ("truncated-3-at-end", b"\xe2\x82", None),
    ("truncated-4-at-end", b"\xf0\x9f\x98", None),
]
FAST = [pytest.param(b, i, id=n) for n, b, i in UTF8_CLASSES if i is not None]
AT_END = [pytest.param(b, id=n) for n, b, i in UTF8_CLASSES if i is None]


def _feed_frames(s: Session, frames: Sequence[bytes]) -> int:
    """Feed frame after frame; return the index of the frame whose feed reported an error (then
    stop: nothing after it is fed), or -1."""
    for i, f in enumerate(frames):
        evs = s.feed(f)
        if evs:
            assert evs == [("ERROR", lib.PYWS_CLOSE_INVALID_DATA)]
            return i
    return -1


def _frames_of(role: int, opcode: int, pieces: Sequence[bytes]) -> List[bytes]:
    return [frame(opcode if i == 0 else OP_CONT, p, fin=i == len(pieces) - 1,
                  mask=mask_for(role, i)) for i, p in enumerate(pieces)]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("bad,bad_at", FAST)
def test_invalid_utf8_in_first_fragment(role: int, bad: bytes, bad_at: int) -> None:
    pieces = [b"ok \xc3\xa9 " + bad + b" tail", b"second", b"third"]
    with Session(role) as s:
        assert _feed_frames(s, _frames_of(role, OP_TEXT, pieces)) == 0
    # also as a single frame
    assert run(role, [fr(role, OP_TEXT, b"".join(pieces))]) == [("ERROR", 1007)]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("bad,bad_at", FAST)
def test_invalid_utf8_in_second_fragment(role: int, bad: bytes, bad_at: int) -> None:
    pieces = ["first €".encode(), b"x" + bad + b"y", b"third"]
    with Session(role) as s:
        assert _feed_frames(s, _frames_of(role, OP_TEXT, pieces)) == 1


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("bad,bad_at", FAST)
def test_invalid_utf8_split_across_fragments(role: int, bad: bytes, bad_at: int) -> None:
    """The bad sequence is cut between two fragments at every position: the error comes with
    the fragment holding the offending byte, before any later fragment is fed."""
    for cut in range(1, len(bad)):
        pieces = [b"abc" + bad[:cut], bad[cut:] + b"def", b"more", b"end"]
        want = 0 if bad_at < cut else 1
        with Session(role) as s:
            assert _feed_frames(s, _frames_of(role, OP_TEXT, pieces)) == want, f"cut {cut}"
        # with an empty fragment and a ping between the two halves
        pieces2 = [b"abc" + bad[:cut], b"", bad[cut:] + b"def", b"end"]
        frames = _frames_of(role, OP_TEXT, pieces2)
        frames.insert(1, fr(role, OP_PING, b"hi"))
        with Session(role) as s:
            got = []
            for i, f in enumerate(frames):
                evs = s.feed(f)
                got += evs
                if evs and evs[-1][0] == "ERROR":
                    assert i == (0 if bad_at < cut else 3)
                    break
            assert got[-1] == ("ERROR", 1007)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("bad,bad_at", FAST)
def test_invalid_utf8_inside_one_frame_fails_at_the_bad_byte(role: int, bad: bytes,
                                                             bad_at: int) -> None:
    """One frame fed in two pieces: the feed call whose piece holds the offending byte reports
    the error, though the frame is not complete."""
    payload = "héllo wörld ".encode() + bad + b" and then a long tail" * 4
    stream = fr(role, OP_TEXT, payload)
    bad_pos = len(stream) - len(payload) + len("héllo wörld ".encode()) + bad_at
    for a, b in splits2(stream):
        with Session(role) as s:
            first = s.feed(a)
            if len(a) > bad_pos:
                assert first == [("ERROR", 1007)], f"split at {len(a)}"
            else:
                assert first == [], f"split at {len(a)}"
                assert s.feed(b) == [("ERROR", 1007)], f"split at {len(a)}"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("bad", AT_END)
def test_text_truncated_at_message_end(role: int, bad: bytes) -> None:
    """A message may not end inside a sequence: valid so far, so the error comes only with the
    last fragment's end."""
    pieces = [b"start", b"mid " + bad]
    with Session(role) as s:
        assert _feed_frames(s, _frames_of(role, OP_TEXT, pieces)) == 1
    # the last fragment being empty does not change that
    pieces = [b"start " + bad, b"", b""]
    with Session(role) as s:
        assert _feed_frames(s, _frames_of(role, OP_TEXT, pieces)) == 2
    # nor a single frame fed byte by byte: the error comes with its last byte
    stream = fr(role, OP_TEXT, b"abc" + bad)
    with Session(role) as s:
        for i, piece in enumerate(bytewise(stream)):
            evs = s.feed(piece)
            if i < len(stream) - 1:
                assert evs == []
            else:
                assert evs == [("ERROR", 1007)]


@pytest.mark.parametrize("role", ROLES)
def test_valid_multibyte_split_across_fragments_everywhere(role: int) -> None:
    text = "aé€😀ü𝄞z".encode()
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            pieces = [text[:i], text[i:j], text[j:]]
            stream = msg_frames(role, OP_TEXT, pieces, seed=i * 100 + j)
            assert run(role, [stream]) == [("MSG", OP_TEXT, text)]
    stream = msg_frames(role, OP_TEXT, bytewise(text))      # one byte per fragment
    assert run(role, [stream]) == [("MSG", OP_TEXT, text)]
    assert run(role, bytewise(stream)) == [("MSG", OP_TEXT, text)]


@pytest.mark.parametrize("role", ROLES)
def test_utf8_state_resets_between_messages(role: int) -> None:
    # a failed message is terminal, but a completed one leaves no state behind
    stream = (fr(role, OP_TEXT, "€".encode()) + msg_frames(role, OP_TEXT, [b"a\xe2", b"\x82\xac"])
              + fr(role, OP_TEXT, b"plain"))
    assert run(role, [stream]) == [("MSG", OP_TEXT, "€".encode()),
                                   ("MSG", OP_TEXT, "a€".encode()), ("MSG", OP_TEXT, b"plain")]
    # a binary message ending inside a "sequence" does not leak into the next text message
    stream = fr(role, OP_BINARY, b"\xe2\x82") + fr(role, OP_TEXT, b"\xac")
    assert run(role, [stream]) == [("MSG", OP_BINARY, b"\xe2\x82"), ("ERROR", 1007)]


@pytest.mark.parametrize("role", ROLES)
def test_binary_messages_are_not_utf8_checked(role: int) -> None:
    allbad = b"".join(b for _, b, _ in UTF8_CLASSES)
    assert run(role, [fr(role, OP_BINARY, allbad)]) == [("MSG", OP_BINARY, allbad)]
    pieces = [b"\xe0", b"\x80", b"\xed\xa0\x80\xff", b"\xc3"]
    stream = msg_frames(role, OP_BINARY, pieces)
    assert run(role, [stream]) == [("MSG", OP_BINARY, b"".join(pieces))]
    assert run(role, bytewise(stream)) == [("MSG", OP_BINARY, b"".join(pieces))]
    every_byte = bytes(range(256))
    assert run(role, [fr(role, OP_BINARY, every_byte)]) == [("MSG", OP_BINARY, every_byte)]
    # ping/pong payloads are not text either
    assert run(role, [fr(role, OP_PING, b"\xff\xc0")]) == [("PING", b"\xff\xc0")]


def test_random_text_fragmentations_match_python() -> None:
    """Random text (valid or not) in random fragments, fed in random pieces: MESSAGE exactly
    when Python decodes it, else ERROR 1007 (only here, with the whole text known)."""
    rng = random.Random(20240611)
    alphabet = [b"a", b"Z", b" ", "é".encode(), "€".encode(), "😀".encode(), b"\xc3", b"\x80",
                b"\xe2\x82", b"\xed\xa0", b"\xf4\x90", b"\xff", b"\xf0\x9f"]
    for trial in range(300):
        role = SERVER if trial % 2 else CLIENT
        text = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 20)))
        ncut = rng.randrange(0, 4)
        cuts = sorted(rng.randrange(0, len(text) + 1) for _ in range(ncut))
        pieces = chunks(text, cuts)
        stream = msg_frames(role, OP_TEXT, pieces, seed=trial)
        scuts = sorted(rng.randrange(0, len(stream) + 1) for _ in range(rng.randrange(0, 4)))
        got = run(role, chunks(stream, scuts))
        try:
            text.decode("utf-8")
            assert got == [("MSG", OP_TEXT, text)], text
        except UnicodeDecodeError:
            assert got == [("ERROR", 1007)], text
