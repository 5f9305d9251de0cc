"""Property-based fuzzing of the Sans-I/O parsers through cffi (bounded example counts; the
sanitizer run executes these against an ASan/UBSan build, so an over-read fails loudly).
Longer coverage-guided runs: `make fuzz` (libFuzzer harnesses in csrc/fuzz/)."""
from __future__ import annotations

import os
import struct
from typing import List, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyws._lib import ffi, lib

EXAMPLES = 150 if os.environ.get("PYWS_SANITIZED") == "1" else 400
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def masked_frame(fin: bool, opcode: int, payload: bytes, key: bytes) -> bytes:
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    body = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
    return head + key + body


Event = Tuple[int, int, bytes]


def run_session(stream: bytes, splits: List[int], max_message: int = 1 << 20) -> List[Event]:
    """Feed stream to a server-role session cut at `splits`; return (kind, opcode/code, data)."""
    s = ffi.new("pyws_session *")
    lib.pyws_session_init(s, lib.PYWS_ROLE_SERVER, max_message)
    buf = bytearray(stream)
    cbuf = ffi.from_buffer(buf)
    ev = ffi.new("pyws_sess_event *")
    used = ffi.new("size_t *")
    retired = ffi.new("uint8_t **")
    out: List[Event] = []
    cuts = sorted({c for c in splits if 0 < c < len(buf)}) + [len(buf)]
    start = 0
    try:
        for end in cuts:
            pos = start
            while pos < end:
                k = lib.pyws_session_feed(s, cbuf + pos, end - pos, used, ev, retired)
                assert used[0] <= end - pos
                pos += used[0]
                if k == lib.PYWS_SESS_NONE:
                    assert pos == end
                    break
                if k in (lib.PYWS_SESS_MESSAGE, lib.PYWS_SESS_PING, lib.PYWS_SESS_PONG):
                    data = ffi.buffer(ev.data, ev.len)[:] if ev.len else b""
                    out.append((k, ev.opcode, data))
                elif k in (lib.PYWS_SESS_CLOSE, lib.PYWS_SESS_ERROR):
                    out.append((k, ev.code, b""))
                lib.pyws_session_release(s, 0)
            start = end
    finally:
        lib.pyws_session_free(s)
    return out


messages = st.lists(
    st.tuples(st.sampled_from([1, 2]),
              st.one_of(st.text(max_size=300).map(lambda t: t.encode()), st.binary(max_size=300)),
              st.integers(1, 5),            # fragments
              st.booleans()),               # ping inside
    min_size=1, max_size=6)


@SETTINGS
@given(messages, st.lists(st.integers(0, 4000), max_size=12), st.binary(min_size=4, max_size=4))
def test_valid_streams_give_exactly_their_messages(msgs: list, splits: List[int], key: bytes) -> None:  # type: ignore[type-arg]
    stream = b""
    expected: List[Event] = []
    for opcode, payload, nfrag, ping in msgs:
        if opcode == 1:
            payload = payload.decode("utf-8", "replace").encode()
        step = max(1, len(payload) // nfrag)
        pieces = [payload[i:i + step] for i in range(0, len(payload), step)] or [b""]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            stream += masked_frame(last, opcode if i == 0 else 0, piece, key)
            if last:
                expected.append((lib.PYWS_SESS_MESSAGE, opcode, payload))
            if ping and i == 0:  # inside the message when it has more fragments, else after
                stream += masked_frame(True, 9, b"p", key)
                expected.append((lib.PYWS_SESS_PING, 0, b"p"))
    got = run_session(stream, splits)
    # ping events carry no opcode; normalise
    got = [(k, 0 if k == lib.PYWS_SESS_PING else o, d) for k, o, d in got]
    assert got == expected


@SETTINGS
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8))
def test_arbitrary_bytes_never_break_the_session(data: bytes, splits: List[int]) -> None:
    events = run_session(data, splits, max_message=4096)
    for kind, code, payload in events:
        assert kind in (lib.PYWS_SESS_MESSAGE, lib.PYWS_SESS_PING, lib.PYWS_SESS_PONG,
                        lib.PYWS_SESS_CLOSE, lib.PYWS_SESS_ERROR)
        if kind == lib.PYWS_SESS_ERROR:
            assert code in (1002, 1007, 1009)
        if kind == lib.PYWS_SESS_MESSAGE:
            assert len(payload) <= 4096
    # nothing after a close or an error
    for i, (kind, _, _) in enumerate(events):
        if kind in (lib.PYWS_SESS_CLOSE, lib.PYWS_SESS_ERROR):
            assert i == len(events) - 1


@SETTINGS
@given(messages, st.integers(0, 10_000), st.integers(0, 255), st.lists(st.integers(0, 3000), max_size=6))
def test_mutated_streams_fail_cleanly(msgs: list, where: int, value: int, splits: List[int]) -> None:  # type: ignore[type-arg]
    key = b"\x11\x22\x33\x44"
    stream = bytearray()
    for opcode, payload, _n, _p in msgs:
        stream += masked_frame(True, opcode, payload, key)
    stream[where % len(stream)] = value
    events = run_session(bytes(stream), splits)
    assert all(k != lib.PYWS_SESS_NONE for k, _, _ in events)


@SETTINGS
@given(st.binary(max_size=2000), st.integers(1, 4096), st.integers(0, 40))
def test_http_parser_on_arbitrary_bytes(data: bytes, max_bytes: int, max_headers: int) -> None:
    buf = ffi.new("char[]", len(data) or 1)
    ffi.memmove(buf, data, len(data))
    head = ffi.new("pyws_http_head *")
    headers = ffi.new("pyws_header[]", max(max_headers, 1))
    r = lib.pyws_http_parse_request(buf, len(data), max_bytes, head, headers, max_headers)
    assert r in (lib.PYWS_HTTP_PARTIAL, lib.PYWS_HTTP_BAD, lib.PYWS_HTTP_TOO_LARGE,
                 lib.PYWS_HTTP_VERSION) or 0 < r <= min(len(data), max_bytes)
    if r > 0:
        assert head.num_headers <= max_headers
        hs = ffi.new("pyws_handshake *")
        lib.pyws_handshake_check(head, headers, hs)
        assert hs.status in (0, 400, 426)


@SETTINGS
@given(st.lists(st.sampled_from([b"GET /x HTTP/1.1\r\n", b"Host: a\r\n", b"Upgrade: websocket\r\n",
                                 b"Connection: Upgrade\r\n", b"Sec-WebSocket-Version: 13\r\n",
                                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                                 b"Sec-WebSocket-Protocol: a, b\r\n", b"X: \x01\r\n", b" fold\r\n",
                                 b"\r\n", b"\n", b":\r\n", b"GET"]), max_size=12))
def test_handshake_on_shuffled_header_lines(lines: List[bytes]) -> None:
    data = b"".join(lines)
    buf = ffi.new("char[]", len(data) or 1)
    ffi.memmove(buf, data, len(data))
    head = ffi.new("pyws_http_head *")
    headers = ffi.new("pyws_header[]", 32)
    r = lib.pyws_http_parse_request(buf, len(data), 8192, head, headers, 32)
    if r > 0:
        hs = ffi.new("pyws_handshake *")
        lib.pyws_handshake_check(head, headers, hs)
        if hs.status == 0:
            assert ffi.string(hs.accept) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
