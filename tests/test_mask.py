"""The masking kernels (pyws_mask / pyws_mask_with) through the cffi module: every kernel this
CPU runs against a Python reference XOR, at every length up to 300 and some large ones, every
alignment 0..15 and every key phase 0..3; in-place only (the bytes around the range are never
touched); masking in pieces with the returned phase equals masking at once; masking twice
restores the input.
"""
from __future__ import annotations

import random
from typing import Any, List, Optional

import pytest

from pyws._lib import ffi, lib

from _frames import xor_mask

ALL_IMPLS = {"scalar": lib.PYWS_IMPL_SCALAR, "sse2": lib.PYWS_IMPL_SSE2,
             "avx2": lib.PYWS_IMPL_AVX2, "neon": lib.PYWS_IMPL_NEON}
AVAILABLE = {name: i for name, i in ALL_IMPLS.items() if lib.pyws_impl_available(i) == 1}
# None: through pyws_mask (the dispatch); AUTO: through pyws_mask_with(PYWS_IMPL_AUTO)
IMPLS = [pytest.param(i, id=name) for name, i in AVAILABLE.items()] + [
    pytest.param(None, id="pyws_mask"), pytest.param(lib.PYWS_IMPL_AUTO, id="auto")]

KEYS = [b"\x37\xfa\x21\x3d", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x02\x03\x04"]
GUARD = 32
UNSUPPORTED = (1 << (8 * ffi.sizeof("size_t"))) + lib.PYWS_ERR_UNSUPPORTED   # as size_t


class Arena:
    """A bytearray with room to place a range at any alignment, with guard bytes around it."""

    def __init__(self, size: int) -> None:
        self.store = bytearray(size + 2 * GUARD + 16)
        self.base = ffi.from_buffer("uint8_t[]", self.store)
        self.addr = int(ffi.cast("uintptr_t", self.base))

    def place(self, data: bytes, align: int) -> int:
        """Copy data so it starts at an address = align (mod 16); returns its offset. Fills the
        rest with a marker pattern."""
        off = GUARD + ((align - (self.addr + GUARD)) % 16)
        self.store[:] = b"\xa5" * len(self.store)
        self.store[off:off + len(data)] = data
        return off


def mask_call(impl: Optional[int], ptr: Any, n: int, key: Any, phase: int) -> int:
    if impl is None:
        return int(lib.pyws_mask(ptr, n, key, phase))
    return int(lib.pyws_mask_with(impl, ptr, n, key, phase))


def check_one(impl: Optional[int], arena: Arena, data: bytes, key: bytes, ckey: Any,
              align: int, phase: int) -> None:
    off = arena.place(data, align)
    ptr = arena.base + off
    assert int(ffi.cast("uintptr_t", ptr)) % 16 == align
    r = mask_call(impl, ptr, len(data), ckey, phase)
    assert r == (phase + len(data)) & 3
    n = len(data)
    assert arena.store[off:off + n] == xor_mask(data, key, phase), (n, align, phase)
    # nothing outside the range changed
    assert arena.store[:off] == b"\xa5" * off
    assert arena.store[off + n:] == b"\xa5" * (len(arena.store) - off - n)


@pytest.mark.parametrize("impl", IMPLS)
def test_every_length_alignment_and_phase(impl: Optional[int]) -> None:
    rng = random.Random(1)
    arena = Arena(301)
    data_all = rng.randbytes(301)
    key = KEYS[0]
    ckey = ffi.new("uint8_t[4]", key)
    for n in range(0, 301):
        data = data_all[:n]
        for align in range(16):
            for phase in range(4):
                check_one(impl, arena, data, key, ckey, align, phase)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [1000, 4096, 4099, 65536, 65536 + 13, 1 << 20])
def test_large_lengths(impl: Optional[int], n: int) -> None:
    rng = random.Random(n)
    data = rng.randbytes(n)
    arena = Arena(n)
    for key in KEYS:
        ckey = ffi.new("uint8_t[4]", key)
        for align, phase in ((0, 0), (1, 3), (7, 2), (15, 1)):
            check_one(impl, arena, data, key, ckey, align, phase)


@pytest.mark.parametrize("impl", IMPLS)
def test_every_key_byte_position_matters(impl: Optional[int]) -> None:
    """Zero data: the output is the key stream itself, so any rotation mistake shows."""
    ckey = ffi.new("uint8_t[4]", b"\x11\x22\x33\x44")
    arena = Arena(200)
    for n in (3, 4, 5, 16, 31, 32, 33, 64, 65, 127, 128, 129, 200):
        for phase in range(4):
            off = arena.place(bytes(n), 0)
            mask_call(impl, arena.base + off, n, ckey, phase)
            want = (bytes([0x11, 0x22, 0x33, 0x44] * 60)[phase:phase + n])
            assert arena.store[off:off + n] == want


@pytest.mark.parametrize("impl", IMPLS)
def test_pieces_with_returned_phase_equal_at_once(impl: Optional[int]) -> None:
    rng = random.Random(5)
    key = KEYS[0]
    ckey = ffi.new("uint8_t[4]", key)
    for trial in range(200):
        n = rng.randrange(0, 700)
        data = rng.randbytes(n)
        start_phase = rng.randrange(4)
        whole = bytearray(data)
        assert mask_call(impl, ffi.from_buffer("uint8_t[]", whole), n, ckey,
                         start_phase) == (start_phase + n) & 3
        pieces = bytearray(data)
        cbuf = ffi.from_buffer("uint8_t[]", pieces)
        pos, phase = 0, start_phase
        while pos < n or trial % 7 == 0:     # sometimes with empty pieces as well
            step = rng.choice([0, 1, 2, 3, 5, 16, 31, 33, 64, 100, 257])
            step = min(step, n - pos)
            phase = mask_call(impl, cbuf + pos, step, ckey, phase)
            pos += step
            if pos >= n:
                break
        assert phase == (start_phase + n) & 3
        assert pieces == whole == bytearray(xor_mask(data, key, start_phase))


@pytest.mark.parametrize("impl", IMPLS)
def test_masking_twice_restores(impl: Optional[int]) -> None:
    rng = random.Random(6)
    for n in (0, 1, 17, 64, 1000, 70000):
        data = rng.randbytes(n)
        for key in KEYS:
            ckey = ffi.new("uint8_t[4]", key)
            for phase in range(4):
                buf = bytearray(data)
                cbuf = ffi.from_buffer("uint8_t[]", buf)
                mask_call(impl, cbuf, n, ckey, phase)
                if n and key != b"\0\0\0\0":
                    assert buf != data
                mask_call(impl, cbuf, n, ckey, phase)
                assert buf == data


def test_kernels_agree_with_each_other() -> None:
    rng = random.Random(8)
    data = rng.randbytes(5000)
    ckey = ffi.new("uint8_t[4]", KEYS[0])
    results: List[bytes] = []
    for impl in AVAILABLE.values():
        buf = bytearray(data)
        lib.pyws_mask_with(impl, ffi.from_buffer("uint8_t[]", buf) + 3, 4990, ckey, 2)
        results.append(bytes(buf))
    assert len(results) == len(AVAILABLE) and len(set(results)) == 1


def test_unavailable_kernels_are_refused() -> None:
    buf = bytearray(b"abcdefgh")
    cbuf = ffi.from_buffer("uint8_t[]", buf)
    ckey = ffi.new("uint8_t[4]", KEYS[0])
    assert lib.pyws_impl_available(lib.PYWS_IMPL_SCALAR) == 1
    for impl in list(ALL_IMPLS.values()) + [4, 99, -7]:
        if lib.pyws_impl_available(impl):
            continue
        assert lib.pyws_mask_with(impl, cbuf, len(buf), ckey, 0) == UNSUPPORTED
        assert buf == b"abcdefgh"     # untouched
