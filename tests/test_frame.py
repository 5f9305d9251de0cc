"""The frame parser (pyws_parser_init / pyws_parser_feed) and encoder (pyws_frame_header),
through the cffi module.

Every frame shape is fed all at once, at every split point into two pieces and (for the small
ones) one byte at a time, and must give the same events: HEADER with the frame's fields, the
payload (unmasked, as views into the fed buffer) and END. Every frame-level protocol error is
reported with 1002, as early as the bytes allow, and stays reported.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import pytest

from pyws._lib import ffi, lib

from _frames import (KEY, LEN16, LEN64, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG,
                     OP_TEXT, RSV1, RSV2, RSV3, bytewise, chunks, frame, header, key_for,
                     payload_bytes, splits2)

SERVER = lib.PYWS_ROLE_SERVER
CLIENT = lib.PYWS_ROLE_CLIENT

# A normalised event: ("H", fin, rsv, opcode, masked, length), ("P", payload bytes),
# ("E", fin, opcode) or ("X", close_code, reason).
Ev = Tuple[Any, ...]


class Parser:
    """A pyws_parser fed through cffi, recording its events."""

    def __init__(self, role: int, rsv_allowed: int = 0) -> None:
        self.p = ffi.new("pyws_parser *")
        lib.pyws_parser_init(self.p, role)
        self.p.rsv_allowed = rsv_allowed
        self.ev = ffi.new("pyws_frame_event *")

    def feed(self, data: bytes) -> List[Ev]:
        """Feed one piece; call pyws_parser_feed until it asks for more (or fails) and check the
        invariants of every answer. Returns the events of this piece (payload not merged)."""
        n_total = len(data)
        buf = ffi.new("uint8_t[]", data if data else b"\0")
        pos = 0
        out: List[Ev] = []
        for _ in range(4 * n_total + 16):
            n = lib.pyws_parser_feed(self.p, buf + pos, n_total - pos, self.ev)
            ev = self.ev
            assert n <= n_total - pos
            if ev.kind == lib.PYWS_FRAME_NEED_MORE:
                # "everything offered was consumed"
                assert pos + n == n_total
                return out
            if ev.kind == lib.PYWS_FRAME_HEADER:
                assert n >= 1  # the call that completes a header consumes its last byte
                out.append(("H", ev.fin, ev.rsv, ev.opcode, ev.masked, ev.length))
            elif ev.kind == lib.PYWS_FRAME_PAYLOAD:
                assert ev.len == n and n > 0
                # a view into the caller's buffer, at the bytes just consumed, unmasked in place
                assert ev.data == buf + pos
                out.append(("P", bytes(ffi.buffer(ev.data, ev.len))))
            elif ev.kind == lib.PYWS_FRAME_END:
                assert n == 0
                out.append(("E", ev.fin, ev.opcode))
            elif ev.kind == lib.PYWS_FRAME_ERROR:
                reason = ffi.string(ev.reason).decode("ascii")
                assert reason
                out.append(("X", ev.close_code, reason))
                return out
            else:  # pragma: no cover - an unknown kind is a failure
                raise AssertionError(f"unknown event kind {ev.kind}")
            pos += n
        raise AssertionError("the parser did not settle (no NEED_MORE)")


def normalise(events: Sequence[Ev]) -> List[Ev]:
    """Merge consecutive payload pieces."""
    out: List[Ev] = []
    for e in events:
        if e[0] == "P" and out and out[-1][0] == "P":
            out[-1] = ("P", out[-1][1] + e[1])
        else:
            out.append(e)
    return out


def run(role: int, pieces: Sequence[bytes], rsv_allowed: int = 0) -> List[Ev]:
    """Feed the pieces in turn. Once an error is reported, every later piece must report the
    same error again (sticky); it is recorded once."""
    parser = Parser(role, rsv_allowed)
    events: List[Ev] = []
    for piece in pieces:
        evs = parser.feed(piece)
        if events and events[-1][0] == "X":
            assert evs == [events[-1]]
        else:
            events += evs
    return normalise(events)


def expect(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
           masked: bool = False) -> List[Ev]:
    """The events a well-formed frame must give."""
    out: List[Ev] = [("H", int(fin), rsv, opcode, int(masked), len(payload))]
    if payload:
        out.append(("P", payload))
    out.append(("E", int(fin), opcode))
    return out


def mask_for(role: int, seed: int) -> Optional[bytes]:
    """Frames a server receives are masked, frames a client receives are not."""
    return key_for(seed) if role == SERVER else None


# ------------------------------------------------------------------------------------------
# Every frame shape at every split point
# ------------------------------------------------------------------------------------------

SMALL_LENGTHS = [0, 1, 125, 126, 127]
LARGE_LENGTHS = [65535, 65536, 70001]
DATA_OPS = [OP_TEXT, OP_BINARY, OP_CONT]
CONTROL_OPS = [OP_PING, OP_PONG, OP_CLOSE]
ROLES = [pytest.param(SERVER, id="server-masked"), pytest.param(CLIENT, id="client-unmasked")]


def shape_cases(lengths: Sequence[int]) -> List[Any]:
    cases = []
    for length in lengths:
        for op in DATA_OPS:
            for fin in (True, False):
                cases.append(pytest.param(length, op, fin, id=f"len{length}-op{op}-fin{int(fin)}"))
        if length <= 125:
            for op in CONTROL_OPS:
                cases.append(pytest.param(length, op, True, id=f"len{length}-op{op}-ctl"))
    return cases


def build_shape(role: int, length: int, opcode: int, fin: bool) -> Tuple[bytes, List[Ev]]:
    """The stream for one frame shape and the events it must give. A continuation frame comes
    after the opening TEXT frame of its fragmented message."""
    masked = role == SERVER
    payload = payload_bytes(length, seed=opcode)
    stream = b""
    events: List[Ev] = []
    if opcode == OP_CONT:
        first = b"\xce\xbb"
        stream += frame(OP_TEXT, first, fin=False, mask=mask_for(role, 99))
        events += expect(OP_TEXT, first, fin=False, masked=masked)
    stream += frame(opcode, payload, fin=fin, mask=mask_for(role, length + opcode))
    events += expect(opcode, payload, fin=fin, masked=masked)
    return stream, events


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("length,opcode,fin", shape_cases(SMALL_LENGTHS))
def test_small_frame_every_split(role: int, length: int, opcode: int, fin: bool) -> None:
    stream, want = build_shape(role, length, opcode, fin)
    assert run(role, [stream]) == want
    for a, b in splits2(stream):
        assert run(role, [a, b]) == want, f"split at {len(a)}"
    assert run(role, bytewise(stream)) == want


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("length,opcode,fin", shape_cases(LARGE_LENGTHS))
def test_large_frame_header_splits_and_sampled_payload_splits(role: int, length: int,
                                                             opcode: int, fin: bool) -> None:
    stream, want = build_shape(role, length, opcode, fin)
    assert run(role, [stream]) == want
    head = len(stream) - length            # every byte before the payload (incl. a prefix frame)
    cuts = set(range(0, head + 3))         # every split of the header region
    cuts |= {head + 3, head + 4, head + 5, head + 7, head + 1000, head + 4097,
             len(stream) - 65535, len(stream) - 3, len(stream) - 1, len(stream)}
    cuts |= {head + (length * i) // 17 for i in range(1, 17)}
    for k in sorted(c for c in cuts if 0 <= c <= len(stream)):
        assert run(role, [stream[:k], stream[k:]]) == want, f"split at {k}"
    # three pieces: header one byte at a time, payload in uneven chunks
    pieces = bytewise(stream[:head]) + chunks(stream[head:], [1, 2, 5, 4096, 60001])
    assert run(role, pieces) == want


@pytest.mark.parametrize("role", ROLES)
def test_multi_frame_stream_every_split(role: int) -> None:
    """A fragmented message with control frames in between, then more frames."""
    m = role == SERVER
    parts = [
        (OP_TEXT, b"frag-one ", False),
        (OP_PING, b"ping!", True),
        (OP_CONT, b"", False),
        (OP_PONG, b"", True),
        (OP_CONT, payload_bytes(130), False),
        (OP_CONT, b"end", True),
        (OP_BINARY, payload_bytes(126, 1), True),
        (OP_CLOSE, b"\x03\xe8bye", True),
    ]
    stream = b""
    want: List[Ev] = []
    for i, (op, pl, fin) in enumerate(parts):
        stream += frame(op, pl, fin=fin, mask=mask_for(role, i))
        want += expect(op, pl, fin=fin, masked=m)
    assert run(role, [stream]) == want
    for a, b in splits2(stream):
        assert run(role, [a, b]) == want, f"split at {len(a)}"
    assert run(role, bytewise(stream)) == want
    # a few three-piece splits
    n = len(stream)
    for i in range(0, n, 7):
        for j in range(i, n, 13):
            assert run(role, chunks(stream, [i, j])) == want


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("length,encoding", [(0, LEN16), (5, LEN16), (125, LEN16),
                                             (0, LEN64), (5, LEN64), (300, LEN64),
                                             (65535, LEN64)])
def test_non_minimal_length_encodings_accepted(role: int, length: int, encoding: int) -> None:
    payload = payload_bytes(length, 3)
    key = mask_for(role, 5)
    stream = frame(OP_BINARY, payload, mask=key, encoding=encoding)
    want = expect(OP_BINARY, payload, masked=role == SERVER)
    assert run(role, [stream]) == want
    head = len(stream) - length
    for k in range(0, head + 2):
        assert run(role, [stream[:k], stream[k:]]) == want


def test_payload_is_unmasked_in_place() -> None:
    payload = b"Hello, WebSocket! " * 5
    stream = frame(OP_TEXT, payload, mask=KEY)
    assert stream[6:] != payload
    buf = ffi.new("uint8_t[]", stream)
    p = ffi.new("pyws_parser *")
    ev = ffi.new("pyws_frame_event *")
    lib.pyws_parser_init(p, SERVER)
    assert lib.pyws_parser_feed(p, buf, len(stream), ev) == 6
    assert ev.kind == lib.PYWS_FRAME_HEADER and ev.masked == 1
    assert lib.pyws_parser_feed(p, buf + 6, len(stream) - 6, ev) == len(payload)
    assert ev.kind == lib.PYWS_FRAME_PAYLOAD
    assert bytes(ffi.buffer(buf + 6, len(payload))) == payload   # the caller's bytes changed
    assert lib.pyws_parser_feed(p, buf + len(stream), 0, ev) == 0
    assert ev.kind == lib.PYWS_FRAME_END


# ------------------------------------------------------------------------------------------
# RSV bits
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bit", [RSV1, RSV2, RSV3])
@pytest.mark.parametrize("role", ROLES)
def test_rsv_bit_accepted_when_claimed(bit: int, role: int) -> None:
    payload = b"compressed?"
    stream = frame(OP_TEXT, payload, rsv=bit, mask=mask_for(role, 1))
    want = expect(OP_TEXT, payload, rsv=bit, masked=role == SERVER)
    assert run(role, [stream], rsv_allowed=bit) == want
    assert run(role, bytewise(stream), rsv_allowed=bit) == want
    # all three claimed
    assert run(role, [stream], rsv_allowed=RSV1 | RSV2 | RSV3) == want


# ------------------------------------------------------------------------------------------
# Protocol errors: 1002, as early as possible, sticky
# ------------------------------------------------------------------------------------------

def _m(role: int) -> Optional[bytes]:
    return mask_for(role, 7)


# (id, role, rsv_allowed, valid prefix frames, bad frame, bytes of the bad frame that must be
# enough to report the error)
ERROR_CASES: List[Any] = []


def _err(name: str, role: int, bad: bytes, detect_at: int = 2, prefix: bytes = b"",
         rsv_allowed: int = 0) -> None:
    ERROR_CASES.append(pytest.param(role, rsv_allowed, prefix, bad, detect_at, id=name))


for _role, _rn in ((SERVER, "server"), (CLIENT, "client")):
    for _bit, _bn in ((RSV1, "rsv1"), (RSV2, "rsv2"), (RSV3, "rsv3")):
        _err(f"{_rn}-{_bn}", _role, frame(OP_TEXT, b"abc", rsv=_bit, mask=_m(_role)))
        # an extension claiming another bit does not make this one legal
        _err(f"{_rn}-{_bn}-other-claimed", _role,
             frame(OP_BINARY, b"abc", rsv=_bit, mask=_m(_role)),
             rsv_allowed=(RSV1 | RSV2 | RSV3) & ~_bit)
    _err(f"{_rn}-rsv-on-control", _role, frame(OP_PING, b"", rsv=RSV1, mask=_m(_role)))
    for _op in list(range(3, 8)) + list(range(11, 16)):
        _err(f"{_rn}-reserved-op{_op}", _role, frame(_op, b"xy", mask=_m(_role)))
    for _op in CONTROL_OPS:
        _err(f"{_rn}-control-op{_op}-fin0", _role, frame(_op, b"", fin=False, mask=_m(_role)))
        _err(f"{_rn}-control-op{_op}-len126-16bit", _role,
             frame(_op, payload_bytes(126), mask=_m(_role)))
        _err(f"{_rn}-control-op{_op}-len126-64bit", _role,
             frame(_op, payload_bytes(126), mask=_m(_role), encoding=LEN64))
        _err(f"{_rn}-control-op{_op}-len7-126-short", _role,
             frame(_op, b"abcde", mask=_m(_role), encoding=LEN16))
    _err(f"{_rn}-continuation-without-message", _role, frame(OP_CONT, b"abc", mask=_m(_role)))
    _err(f"{_rn}-continuation-after-finished-message", _role,
         frame(OP_CONT, b"abc", mask=_m(_role)),
         prefix=frame(OP_TEXT, b"a", fin=False, mask=_m(_role))
         + frame(OP_CONT, b"b", fin=True, mask=_m(_role)))
    for _op in (OP_TEXT, OP_BINARY):
        for _fin in (True, False):
            _err(f"{_rn}-op{_op}-fin{int(_fin)}-inside-fragmented", _role,
                 frame(_op, b"new", fin=_fin, mask=_m(_role)),
                 prefix=frame(OP_BINARY, b"first", fin=False, mask=_m(_role))
                 + frame(OP_PING, b"p", mask=_m(_role))
                 + frame(OP_CONT, b"more", fin=False, mask=_m(_role)))
    _err(f"{_rn}-64bit-top-bit", _role,
         header(OP_BINARY, 1 << 63, mask=_m(_role), encoding=LEN64) + b"payload",
         detect_at=10 + (4 if _role == SERVER else 0))
    _err(f"{_rn}-64bit-all-ones", _role,
         header(OP_BINARY, (1 << 64) - 1, mask=_m(_role), encoding=LEN64),
         detect_at=10 + (4 if _role == SERVER else 0))
_err("server-unmasked-frame", SERVER, frame(OP_TEXT, b"hello"))
_err("server-unmasked-empty-control", SERVER, frame(OP_CLOSE, b""))
_err("server-unmasked-after-valid", SERVER, frame(OP_BINARY, b"x"),
     prefix=frame(OP_BINARY, b"fine", mask=KEY))
_err("client-masked-frame", CLIENT, frame(OP_TEXT, b"hello", mask=KEY))
_err("client-masked-empty-control", CLIENT, frame(OP_PONG, b"", mask=KEY))
_err("client-masked-after-valid", CLIENT, frame(OP_BINARY, b"x", mask=KEY),
     prefix=frame(OP_BINARY, b"fine"))


@pytest.mark.parametrize("role,rsv_allowed,prefix,bad,detect_at", ERROR_CASES)
def test_protocol_error(role: int, rsv_allowed: int, prefix: bytes, bad: bytes,
                        detect_at: int) -> None:
    want_prefix = run(role, [prefix], rsv_allowed) if prefix else []
    assert all(e[0] != "X" for e in want_prefix)
    stream = prefix + bad

    # all at once
    got = run(role, [stream], rsv_allowed)
    assert got[:-1] == want_prefix
    assert got[-1][0] == "X" and got[-1][1] == lib.PYWS_CLOSE_PROTOCOL_ERROR
    reason = got[-1][2]

    # one byte at a time: the error comes with byte number `detect_at` of the bad frame at the
    # latest (for most errors, the 2nd header byte), never needing its payload
    parser = Parser(role, rsv_allowed)
    seen: List[Ev] = []
    fail_at = None
    for i, piece in enumerate(bytewise(stream)):
        evs = parser.feed(piece)
        seen += evs
        if evs and evs[-1][0] == "X":
            fail_at = i - len(prefix) + 1   # bytes of the bad frame fed
            break
    assert fail_at is not None
    if detect_at == 2:
        assert fail_at == 2
    else:
        assert 2 < fail_at <= detect_at
    assert normalise(seen[:-1]) == want_prefix
    assert seen[-1] == ("X", lib.PYWS_CLOSE_PROTOCOL_ERROR, reason)

    # sticky: anything fed afterwards reports the same error and consumes nothing
    for more in (b"", b"\x81\x80abcd", frame(OP_PING, b"", mask=KEY), b"\x00" * 20):
        buf = ffi.new("uint8_t[]", more or b"\0")
        ev = ffi.new("pyws_frame_event *")
        assert lib.pyws_parser_feed(parser.p, buf, len(more), ev) == 0
        assert ev.kind == lib.PYWS_FRAME_ERROR
        assert ev.close_code == lib.PYWS_CLOSE_PROTOCOL_ERROR
        assert ffi.string(ev.reason).decode() == reason

    # every split point: same prefix events, same error
    for a, b in splits2(stream):
        got = run(role, [a, b], rsv_allowed)
        assert got[:-1] == want_prefix, f"split at {len(a)}"
        assert got[-1] == ("X", lib.PYWS_CLOSE_PROTOCOL_ERROR, reason), f"split at {len(a)}"


def test_error_reasons_differ_by_class() -> None:
    """Each error class names its own reason (the reason text is for humans, but a wrong class
    reported would show up here)."""
    reasons = {}
    samples = {
        "rsv": frame(OP_TEXT, b"", rsv=RSV1, mask=KEY),
        "opcode": frame(3, b"", mask=KEY),
        "fragmented control": frame(OP_PING, b"", fin=False, mask=KEY),
        "control length": frame(OP_PING, payload_bytes(126), mask=KEY),
        "unmasked": frame(OP_TEXT, b""),
        "continuation": frame(OP_CONT, b"", mask=KEY),
        "64-bit": header(OP_TEXT, 1 << 63, mask=KEY, encoding=LEN64),
    }
    for name, data in samples.items():
        got = run(SERVER, [data])
        assert got[-1][0] == "X" and got[-1][1] == 1002
        reasons[name] = got[-1][2]
    got = run(SERVER, [frame(OP_TEXT, b"", fin=False, mask=KEY) + frame(OP_TEXT, b"", mask=KEY)])
    reasons["data in fragmented"] = got[-1][2]
    got = run(CLIENT, [frame(OP_TEXT, b"", mask=KEY)])
    reasons["masked"] = got[-1][2]
    assert len(set(reasons.values())) == len(reasons)


def test_largest_64bit_length_accepted() -> None:
    """2**63 - 1 has the top bit clear: a valid header (its payload is never fed here)."""
    hdr = header(OP_BINARY, (1 << 63) - 1, encoding=LEN64)
    assert run(CLIENT, [hdr]) == [("H", 1, 0, OP_BINARY, 0, (1 << 63) - 1)]
    assert run(CLIENT, bytewise(hdr) + [b"abc"]) == [("H", 1, 0, OP_BINARY, 0, (1 << 63) - 1),
                                                     ("P", b"abc")]


# ------------------------------------------------------------------------------------------
# pyws_frame_header -> parser
# ------------------------------------------------------------------------------------------

ENCODER_LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70001, 1 << 32, (1 << 63) - 1]


@pytest.mark.parametrize("length", ENCODER_LENGTHS)
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_frame_header_round_trip(length: int, masked: bool) -> None:
    key = ffi.new("uint8_t[4]", KEY) if masked else ffi.NULL
    role = SERVER if masked else CLIENT
    out = ffi.new("uint8_t[14]")
    combos = [(OP_TEXT, 1, 0), (OP_BINARY, 0, RSV1), (OP_CONT, 1, RSV1 | RSV2 | RSV3),
              (OP_CONT, 0, 0)]
    if length <= 125:
        combos += [(OP_PING, 1, 0), (OP_PONG, 1, 0), (OP_CLOSE, 1, 0)]
    for opcode, fin, rsv in combos:
        n = lib.pyws_frame_header(out, fin, rsv, opcode, length, key)
        want = header(opcode, length, fin=bool(fin), rsv=rsv, mask=KEY if masked else None)
        assert n == len(want)
        expected_size = (2 if length < 126 else 4 if length < 65536 else 10) + (4 if masked else 0)
        assert n == expected_size
        assert bytes(ffi.buffer(out, n)) == want
        prefix = b""
        want_events: List[Ev] = []
        if opcode == OP_CONT:
            prefix = frame(OP_BINARY, b"", fin=False, mask=KEY if masked else None)
            want_events = expect(OP_BINARY, b"", fin=False, masked=masked)
        hdr = bytes(ffi.buffer(out, n))
        want_events = want_events + [("H", fin, rsv, opcode, int(masked), length)]
        # an empty payload is complete with its header
        head_only = want_events + ([("E", fin, opcode)] if length == 0 else [])
        allowed = RSV1 | RSV2 | RSV3
        assert run(role, [prefix + hdr], allowed) == head_only
        assert run(role, [prefix] + bytewise(hdr), allowed) == head_only
        if length <= 70001:
            payload = payload_bytes(length)
            body = bytearray(payload)
            if masked:
                lib.pyws_mask(ffi.from_buffer("uint8_t[]", body), len(body), key, 0)
            full = want_events + ([("P", payload)] if length else []) + [("E", fin, opcode)]
            assert run(role, [prefix + hdr + bytes(body)], allowed) == full


def test_frame_header_ignores_extra_bits() -> None:
    """Only 0x70 of rsv and 0x0F of opcode reach the wire."""
    out = ffi.new("uint8_t[14]")
    n = lib.pyws_frame_header(out, 1, 0xFF, 0xF1, 3, ffi.NULL)
    assert n == 2
    assert bytes(ffi.buffer(out, 2)) == bytes([0x80 | 0x70 | 0x01, 3])
