"""Building RFC 6455 frames in plain Python, independently of the C encoder: the one frame
builder of the test suite, used by the protocol tests (test_frame.py, test_session.py) and by
everything that writes frames to a raw socket (_rawws.RawWS, the bad-input and limits tests).

``frame(opcode, payload, ...)`` makes any frame, including the ones a conforming peer never sends
(RSV bits, reserved opcodes, fragmented or oversized control frames, non-minimal or forced length
encodings, a 64-bit length with its top bit set, a length that disagrees with the payload).
Opcode first, then payload; everything else by keyword. A client frame is ``frame(op, payload,
mask=MASK_KEY)`` (or any 4-byte key); RSV bits are the bits of the first byte (``RSV1`` = 0x40).
``xor_mask()`` is the reference masking every kernel is compared with.
"""
from __future__ import annotations

import random
import struct
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

RSV1 = 0x40
RSV2 = 0x20
RSV3 = 0x10

# Length encodings: the 7-bit field alone, the 16-bit extension (len7 = 126), the 64-bit one
# (len7 = 127).
LEN7 = 7
LEN16 = 16
LEN64 = 64

KEY = b"\x37\xfa\x21\x3d"
# The key the raw-socket tests mask client frames with: fixed, so a failure replays byte for
# byte. Named apart from _rawws.KEY, which is the handshake's Sec-WebSocket-Key.
MASK_KEY = KEY


def xor_mask(data: bytes, key: bytes, phase: int = 0) -> bytes:
    """data XOR key[(phase + i) % 4]: the reference for every masking kernel."""
    n = len(data)
    if n == 0:
        return b""
    k = key[phase % 4:] + key[:phase % 4]
    stream = (k * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little")


def encoding_for(length: int) -> int:
    """The minimal length encoding for a payload of ``length`` bytes."""
    if length < 126:
        return LEN7
    if length <= 0xFFFF:
        return LEN16
    return LEN64


def header(opcode: int, length: int, *, fin: bool = True, rsv: int = 0,
           mask: Optional[bytes] = None, encoding: Optional[int] = None,
           raw_len7: Optional[int] = None) -> bytes:
    """A frame header. ``encoding`` forces LEN7/LEN16/LEN64 (default: minimal); ``length`` is
    written as given (up to 2**64 - 1 with LEN64, top bit included). ``raw_len7`` overrides the
    7-bit field while keeping the extension chosen by ``encoding``."""
    enc = encoding if encoding is not None else encoding_for(length)
    b0 = (0x80 if fin else 0) | (rsv & 0x70) | (opcode & 0x0F)
    mbit = 0x80 if mask is not None else 0
    if enc == LEN7:
        if length > 125:
            raise ValueError("a 7-bit length holds 0..125")
        len7, ext = length, b""
    elif enc == LEN16:
        if length > 0xFFFF:
            raise ValueError("a 16-bit length holds 0..65535")
        len7, ext = 126, struct.pack("!H", length)
    elif enc == LEN64:
        len7, ext = 127, struct.pack("!Q", length)
    else:
        raise ValueError(f"unknown length encoding {enc}")
    if raw_len7 is not None:
        len7 = raw_len7
    out = bytes([b0, mbit | len7]) + ext
    if mask is not None:
        if len(mask) != 4:
            raise ValueError("a masking key is 4 bytes")
        out += mask
    return out


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          mask: Optional[bytes] = None, encoding: Optional[int] = None,
          raw_len7: Optional[int] = None, length: Optional[int] = None) -> bytes:
    """A whole frame; the payload is masked with ``mask`` when one is given. ``length`` writes
    that length in the header instead of len(payload) (to announce more than is sent, or less);
    the minimal encoding is then chosen for ``length``."""
    body = xor_mask(payload, mask) if mask is not None else payload
    n = len(payload) if length is None else length
    return header(opcode, n, fin=fin, rsv=rsv, mask=mask, encoding=encoding,
                  raw_len7=raw_len7) + body


def close_payload(code: Optional[int], reason: bytes = b"") -> bytes:
    """The payload of a close frame: nothing, or a 2-byte code and a reason."""
    if code is None:
        return reason
    return struct.pack("!H", code) + reason


def key_for(seed: int) -> bytes:
    """A distinct, deterministic masking key (never all zero, so masking is visible)."""
    rng = random.Random(seed)
    k = bytes(rng.randrange(256) for _ in range(4))
    return k if k != b"\0\0\0\0" else KEY


def payload_bytes(n: int, seed: int = 0) -> bytes:
    """n deterministic pseudo-random bytes."""
    return random.Random(n * 1000003 + seed).randbytes(n)


def fragments(payload: bytes, sizes: Sequence[int]) -> List[bytes]:
    """Cut payload into pieces of the given sizes (which must add up to len(payload))."""
    if sum(sizes) != len(payload):
        raise ValueError("fragment sizes do not add up to the payload")
    out: List[bytes] = []
    pos = 0
    for s in sizes:
        out.append(payload[pos:pos + s])
        pos += s
    return out


def message_frames(opcode: int, pieces: Sequence[bytes], *, mask_seed: Optional[int] = None,
                   interleave: Optional[dict[int, bytes]] = None) -> bytes:
    """A data message sent as len(pieces) frames (first with ``opcode``, then continuations, the
    last with FIN). Masked with per-frame keys when ``mask_seed`` is not None. ``interleave``
    maps a fragment index i to the bytes of (control) frames sent just before fragment i."""
    out = bytearray()
    for i, piece in enumerate(pieces):
        if interleave and i in interleave:
            out += interleave[i]
        op = opcode if i == 0 else OP_CONT
        key = key_for(mask_seed * 7919 + i) if mask_seed is not None else None
        out += frame(op, piece, fin=(i == len(pieces) - 1), mask=key)
    return bytes(out)


def splits2(data: bytes) -> Iterator[Tuple[bytes, bytes]]:
    """Every split of data into two pieces (either may be empty)."""
    for k in range(len(data) + 1):
        yield data[:k], data[k:]


def bytewise(data: bytes) -> List[bytes]:
    """data one byte at a time."""
    return [data[i:i + 1] for i in range(len(data))]


def chunks(data: bytes, cuts: Iterable[int]) -> List[bytes]:
    """data cut at the given (sorted, in-range) offsets."""
    out: List[bytes] = []
    prev = 0
    for c in cuts:
        out.append(data[prev:c])
        prev = c
    out.append(data[prev:])
    return out
