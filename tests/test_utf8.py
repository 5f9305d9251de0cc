"""The incremental UTF-8 validator (pyws_utf8_feed / pyws_utf8_feed_with / pyws_utf8_valid)
through the cffi module, for every kernel this CPU runs.

The reference is Python's own decoder, which follows the same rules (no overlongs, no
surrogates, nothing above U+10FFFF). Its error tells us where the C validator must fail: for an
"invalid start byte" the offending byte is the error's start, for an "invalid continuation
byte" it is the byte just after the longest valid prefix (the error's end), and "unexpected end
of data" means the C validator says PARTIAL.
"""
from __future__ import annotations

import random
from typing import List, Optional, Sequence, Tuple

import pytest

from pyws._lib import ffi, lib

OK = lib.PYWS_UTF8_OK
PARTIAL = lib.PYWS_UTF8_PARTIAL
INVALID = lib.PYWS_UTF8_INVALID

ALL_IMPLS = {"scalar": lib.PYWS_IMPL_SCALAR, "sse2": lib.PYWS_IMPL_SSE2,
             "sse4": lib.PYWS_IMPL_SSE4, "avx2": lib.PYWS_IMPL_AVX2,
             "avx512": lib.PYWS_IMPL_AVX512, "neon": lib.PYWS_IMPL_NEON}
AVAILABLE = {name: i for name, i in ALL_IMPLS.items() if lib.pyws_impl_available(i) == 1}
# "auto" goes through pyws_utf8_feed (the dispatch every other caller uses)
IMPLS = [pytest.param(i, id=name) for name, i in AVAILABLE.items()] + [
    pytest.param(None, id="auto")]


def oracle(data: bytes) -> Tuple[int, Optional[int]]:
    """(verdict, offset of the first offending byte) according to Python's decoder."""
    try:
        data.decode("utf-8")
        return OK, None
    except UnicodeDecodeError as e:
        if e.reason == "unexpected end of data":
            assert e.end == len(data)
            return PARTIAL, None
        if e.reason == "invalid start byte":
            return INVALID, e.start
        assert e.reason == "invalid continuation byte", e.reason
        return INVALID, e.end


class Validator:
    def __init__(self, impl: Optional[int]) -> None:
        self.impl = impl
        self.v = ffi.new("pyws_utf8 *")
        lib.pyws_utf8_init(self.v)
        self.bad = ffi.new("size_t *")

    def feed(self, data: bytes, offset: int = 0) -> Tuple[int, Optional[int]]:
        """Feed data (placed `offset` bytes into a larger buffer, to vary the alignment)."""
        store = bytearray(offset) + bytearray(data) + bytearray(1)
        buf = ffi.from_buffer("uint8_t[]", store) + offset
        self.bad[0] = 0xDEAD
        if self.impl is None:
            r = lib.pyws_utf8_feed(self.v, buf, len(data), self.bad)
        else:
            r = lib.pyws_utf8_feed_with(self.impl, self.v, buf, len(data), self.bad)
        if r == INVALID:
            return r, self.bad[0]
        assert self.bad[0] == 0xDEAD        # only written on INVALID
        assert r in (OK, PARTIAL)
        assert (self.v.state == 0) == (r == OK)
        return r, None


def check_pieces(impl: Optional[int], data: bytes, cuts: Sequence[int],
                 offset: int = 0) -> None:
    """Feed data cut at `cuts`; every feed must answer what the oracle says about the bytes so
    far, with the offending byte's offset relative to that feed."""
    verdict, bad = oracle(data)
    v = Validator(impl)
    bounds = [0] + list(cuts) + [len(data)]
    for start, end in zip(bounds, bounds[1:]):
        got = v.feed(data[start:end], offset)
        if bad is not None and bad < start:
            assert got == (INVALID, 0), (data, cuts, start)     # sticky, blames the 1st byte
        elif bad is not None and bad < end:
            assert got == (INVALID, bad - start), (data, cuts, start)
        else:
            assert got == (oracle(data[:end])[0], None), (data, cuts, start)
    # an empty feed at the end changes nothing
    assert v.feed(b"") == ((INVALID, 0) if bad is not None else (verdict, None))


# (name, sequence, index of the first offending byte in it)
INVALID_CLASSES: List[Tuple[str, bytes, int]] = [
    ("overlong2-c0-80", b"\xc0\x80", 0),
    ("overlong2-c1-bf", b"\xc1\xbf", 0),
    ("overlong3-e0-80-80", b"\xe0\x80\x80", 1),
    ("overlong3-e0-9f-bf", b"\xe0\x9f\xbf", 1),
    ("overlong4-f0-80-80-80", b"\xf0\x80\x80\x80", 1),
    ("overlong4-f0-8f-bf-bf", b"\xf0\x8f\xbf\xbf", 1),
    ("surrogate-d800", b"\xed\xa0\x80", 1),
    ("surrogate-dbff", b"\xed\xaf\xbf", 1),
    ("surrogate-dc00", b"\xed\xb0\x80", 1),
    ("surrogate-dfff", b"\xed\xbf\xbf", 1),
    ("above-10ffff-f4-90", b"\xf4\x90\x80\x80", 1),
    ("above-10ffff-f4-bf", b"\xf4\xbf\xbf\xbf", 1),
    ("byte-f5", b"\xf5\x80\x80\x80", 0),
    ("byte-f7", b"\xf7\xbf\xbf\xbf", 0),
    ("byte-f8", b"\xf8\x88\x80\x80\x80", 0),
    ("byte-fc", b"\xfc\x84\x80\x80\x80\x80", 0),
    ("byte-fe", b"\xfe", 0),
    ("byte-ff", b"\xff", 0),
    ("lone-80", b"\x80", 0),
    ("lone-bf", b"\xbf", 0),
    ("extra-continuation", b"\xc3\xa9\x80", 2),
    ("continuation-after-4byte", b"\xf0\x9f\x98\x80\x80", 4),
    ("missing-cont-2", b"\xc3A", 1),
    ("missing-cont-3a", b"\xe2A", 1),
    ("missing-cont-3b", b"\xe2\x82A", 2),
    ("missing-cont-4", b"\xf0\x9f\x98A", 3),
    ("lead-after-lead", b"\xc3\xc3\xa9", 1),
    ("ascii-nul-after-lead", b"\xe2\x00", 1),
]
# (name, a valid sequence cut short, the bytes that complete it)
TRUNCATED = [("trunc-c3", b"\xc3", b"\xa9"), ("trunc-e2", b"\xe2", b"\x82\xac"),
             ("trunc-e2-82", b"\xe2\x82", b"\xac"), ("trunc-f0", b"\xf0", b"\x9f\x98\x80"),
             ("trunc-f0-9f", b"\xf0\x9f", b"\x98\x80"),
             ("trunc-f0-9f-98", b"\xf0\x9f\x98", b"\x80"),
             ("trunc-f4-8f-bf", b"\xf4\x8f\xbf", b"\xbf"), ("trunc-ed-9f", b"\xed\x9f", b"\xbf"),
             ("trunc-e0-a0", b"\xe0\xa0", b"\x80"), ("trunc-e0", b"\xe0", b"\xa0\x80"),
             ("trunc-f4", b"\xf4", b"\x8f\xbf\xbf")]

PREFIXES = [0, 1, 7, 15, 16, 31, 32, 63, 64, 65, 127, 128, 200]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("seq,bad_at", [pytest.param(s, i, id=n) for n, s, i in INVALID_CLASSES])
def test_invalid_class_and_offset(impl: Optional[int], seq: bytes, bad_at: int) -> None:
    for pre in PREFIXES:
        for filler in (b"a", "é".encode(), "😀".encode()):
            prefix = (filler * pre)[:pre]
            # keep the prefix whole characters so the sequence starts on a boundary
            while oracle(prefix)[0] != OK:
                prefix = prefix[:-1]
            data = prefix + seq + b"tail" * 20
            assert oracle(data) == (INVALID, len(prefix) + bad_at)   # the table agrees
            assert Validator(impl).feed(data) == (INVALID, len(prefix) + bad_at)
            # without anything after it
            assert Validator(impl).feed(prefix + seq)[0] == INVALID


def _mixed_prefix(n: int) -> bytes:
    """n bytes of mixed-script text ending on a character boundary (padded with ASCII)."""
    chars = "Ça-ва 語😀ß€ "
    out = b""
    for i in range(n):
        c = chars[i % len(chars)].encode()
        if len(out) + len(c) > n:
            break
        out += c
    return out + b"." * (n - len(out))


@pytest.mark.parametrize("impl", IMPLS)
def test_invalid_classes_at_every_offset_of_two_blocks(impl: Optional[int]) -> None:
    """The vector kernels check 64-byte blocks against the last bytes of the block before: every
    class at every offset of the first two blocks of mixed text, fed whole and cut just before,
    inside and just after it, against Python's decoder."""
    tail = _mixed_prefix(70)
    for _, seq, bad_at in INVALID_CLASSES:
        for off in range(0, 131):
            data = _mixed_prefix(off) + seq + tail
            want = (INVALID, off + bad_at)
            assert oracle(data) == want
            assert Validator(impl).feed(data) == want, (seq, off)
            for cut in (off, off + 1, off + len(seq)):
                check_pieces(impl, data, [cut])
    for _, seq, _ in TRUNCATED:                 # unfinished at the end: PARTIAL
        for off in range(0, 131):
            data = _mixed_prefix(off) + seq
            assert Validator(impl).feed(data) == (PARTIAL, None), (seq, off)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("seq,rest", [pytest.param(s, r, id=n) for n, s, r in TRUNCATED])
def test_truncated_is_partial_then_completes_or_fails(impl: Optional[int], seq: bytes,
                                                      rest: bytes) -> None:
    full = seq + rest
    assert oracle(full) == (OK, None) and oracle(seq) == (PARTIAL, None)
    for pre in PREFIXES:
        v = Validator(impl)
        assert v.feed(b"x" * pre + seq) == (PARTIAL, None)
        assert v.v.state != 0
        assert v.feed(b"") == (PARTIAL, None)
        assert v.feed(rest + b"!") == (OK, None)
        # the partial sequence followed by something that cannot continue it
        v = Validator(impl)
        assert v.feed(b"x" * pre + seq) == (PARTIAL, None)
        assert v.feed(b"A") == (INVALID, 0)


BOUNDARY_CHARS = ["\u0080", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\uffff", "\U00010000",
                  "\U0010ffff", "é", "€", "😀", "𝄞"]


@pytest.mark.parametrize("impl", IMPLS)
def test_partial_at_every_boundary_of_every_length(impl: Optional[int]) -> None:
    for ch in BOUNDARY_CHARS:
        c = ch.encode()
        for pre in (0, 5, 63, 64, 70):
            for k in range(1, len(c)):
                v = Validator(impl)
                assert v.feed(b"a" * pre + c[:k]) == (PARTIAL, None)
                for j in range(k, len(c) - 1):      # continue one byte at a time
                    assert v.feed(c[j:j + 1]) == (PARTIAL, None)
                assert v.feed(c[-1:]) == (OK, None)


def _mixed_samples() -> List[bytes]:
    rng = random.Random(7)
    text = ("ASCII run " * 9 + "ü ñ é " + "日本語テキスト" + " 😀🎉𝄞 " + "x" * 70 + "Ω≈ç√∫"
            + "\U0010ffff\u0800\u07ff\u0080" + "end")
    raw = text.encode()
    dense = "".join(rng.choice("é€😀a") for _ in range(60)).encode()
    return [raw, dense, b"a" * 130, b"", "€".encode() * 40]


MIXED = _mixed_samples()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sample", range(len(MIXED)))
def test_every_split_of_valid_mixed_samples(impl: Optional[int], sample: int) -> None:
    data = MIXED[sample]
    for k in range(len(data) + 1):
        check_pieces(impl, data, [k])
    for k in range(0, len(data) + 1, 5):
        for j in range(k, len(data) + 1, 11):
            check_pieces(impl, data, [k, j])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("seq", [pytest.param(s, id=n) for n, s, _ in INVALID_CLASSES[::3]])
def test_every_split_of_invalid_samples(impl: Optional[int], seq: bytes) -> None:
    for data in (MIXED[0][:90] + seq + MIXED[1][:40], seq + b"z" * 70, b"q" * 64 + seq):
        for k in range(len(data) + 1):
            check_pieces(impl, data, [k])


@pytest.mark.parametrize("impl", IMPLS)
def test_invalid_is_sticky_until_init(impl: Optional[int]) -> None:
    v = Validator(impl)
    assert v.feed(b"ab\xffcd") == (INVALID, 2)
    for more in (b"fine", b"", "é".encode(), b"\x80"):
        assert v.feed(more) == (INVALID, 0)
    lib.pyws_utf8_init(v.v)
    assert v.feed(b"fine") == (OK, None)


# ------------------------------------------------------------------------------------------
# Exhaustive short sequences and a random differential test against Python
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_all_one_and_two_byte_inputs(impl: Optional[int]) -> None:
    v = Validator(impl)
    for a in range(256):
        one = bytes([a])
        assert Validator(impl).feed(one) == oracle(one), one
        if a < 0x80:
            continue
        for b in range(256):
            two = bytes([a, b])
            lib.pyws_utf8_init(v.v)
            assert v.feed(two) == oracle(two), two


@pytest.mark.parametrize("impl", IMPLS)
def test_three_and_four_byte_edges(impl: Optional[int]) -> None:
    seconds = [0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0]
    thirds = [0x7F, 0x80, 0xBF, 0xC0]
    v = Validator(impl)
    for a in range(0xE0, 0xF8):
        for b in seconds:
            for c in thirds:
                for d in ([] if a < 0xF0 else thirds) + [None]:
                    data = bytes([a, b, c] + ([] if d is None else [d]))
                    lib.pyws_utf8_init(v.v)
                    assert v.feed(data) == oracle(data), data
                    lib.pyws_utf8_init(v.v)
                    assert v.feed(b"p" * 61 + data) == oracle(b"p" * 61 + data), data


VALID_TOKENS = [b"a", b"hello world ", "é".encode(), "€".encode(), "😀".encode(),
                "\U0010ffff".encode(), "\u0800".encode(), "\ud7ff".encode(), "\ue000".encode()]
BAD_TOKENS = [b"\x80", b"\xbf", b"\xc0", b"\xc1", b"\xc3", b"\xe0\x80", b"\xe0", b"\xed\xa0",
              b"\xf0\x8f", b"\xf4\x90", b"\xf5", b"\xff", b"\xe2\x82", b"\xf0\x9f\x98"]


def random_sample(rng: random.Random) -> bytes:
    out = bytearray()
    valid_only = rng.random() < 0.4
    for _ in range(rng.randrange(0, 12)):
        r = rng.random()
        if r < 0.25:
            out += b"x" * rng.choice([1, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100])
        elif r < 0.8 or valid_only:
            out += rng.choice(VALID_TOKENS)
        elif r < 0.9:
            out += rng.choice(BAD_TOKENS)
        else:
            out += bytes([rng.randrange(256)])
    if rng.random() < 0.2:
        out += rng.choice([b"\xc3", b"\xe2", b"\xe2\x82", b"\xf0\x9f\x98", b"\xf4\x8f"])
    return bytes(out)


@pytest.mark.parametrize("impl", IMPLS)
def test_random_differential_vs_python(impl: Optional[int]) -> None:
    rng = random.Random(0x5EED + (impl if impl is not None else 9))
    kinds = {OK: 0, PARTIAL: 0, INVALID: 0}
    for _ in range(3000):
        data = random_sample(rng)
        want = oracle(data)
        kinds[want[0]] += 1
        assert Validator(impl).feed(data, offset=rng.randrange(16)) == want, data
        ncut = rng.randrange(1, 4)
        cuts = sorted(rng.randrange(len(data) + 1) for _ in range(ncut))
        check_pieces(impl, data, cuts, offset=rng.randrange(16))
    assert min(kinds.values()) > 200       # the generator exercised every verdict


def test_impls_agree_with_each_other_on_large_inputs() -> None:
    rng = random.Random(11)
    big = b"".join(rng.choice([b"a" * 50, "日本".encode(), "😀".encode(), b" "])
                   for _ in range(4000))
    assert oracle(big) == (OK, None)
    for pos in (0, 1, 63, 64, 65, 1000, 4095, 4096, len(big) - 1):
        for bad in (b"\xff", b"\x80", b"\xed\xa0\x80"):
            # insert at a boundary: move pos to the next character start
            p = pos
            while p < len(big) and (big[p] & 0xC0) == 0x80:
                p += 1
            data = big[:p] + bad + big[p:]
            want = oracle(data)
            assert want[0] == INVALID
            for impl in [None] + list(AVAILABLE.values()):
                for offset in (0, 3):
                    assert Validator(impl).feed(data, offset) == want, (impl, pos, bad)
    for impl in [None] + list(AVAILABLE.values()):
        v = Validator(impl)
        # fed in 4097-byte pieces, cutting characters
        for i in range(0, len(big), 4097):
            r = v.feed(big[i:i + 4097])
            assert r == (oracle(big[:i + 4097])[0], None)
        assert v.v.state == 0


def test_one_shot_valid_matches_python() -> None:
    rng = random.Random(99)
    for _ in range(1000):
        data = random_sample(rng)
        buf = ffi.from_buffer("uint8_t[]", data + b"\0")
        assert lib.pyws_utf8_valid(buf, len(data)) == (1 if oracle(data)[0] == OK else 0), data
    assert lib.pyws_utf8_valid(ffi.NULL, 0) == 1


def test_unavailable_impls_are_refused() -> None:
    v = ffi.new("pyws_utf8 *")
    bad = ffi.new("size_t *")
    data = ffi.new("uint8_t[]", b"abc")
    assert lib.pyws_impl_available(lib.PYWS_IMPL_SCALAR) == 1
    assert lib.pyws_impl_available(lib.PYWS_IMPL_AUTO) == 1
    assert lib.pyws_impl_best() in AVAILABLE.values()
    for impl in list(ALL_IMPLS.values()) + [6, 17, -2]:
        lib.pyws_utf8_init(v)
        r = lib.pyws_utf8_feed_with(impl, v, data, 3, bad)
        if impl in AVAILABLE.values():
            assert r == OK
        else:
            assert lib.pyws_impl_available(impl) == 0
            assert r == lib.PYWS_ERR_UNSUPPORTED
    lib.pyws_utf8_init(v)
    assert lib.pyws_utf8_feed_with(lib.PYWS_IMPL_AUTO, v, data, 3, bad) == OK


def test_bad_offset_may_be_null() -> None:
    for impl in list(AVAILABLE.values()):
        v = ffi.new("pyws_utf8 *")
        lib.pyws_utf8_init(v)
        data = ffi.new("uint8_t[]", b"a\xffb")
        assert lib.pyws_utf8_feed_with(impl, v, data, 3, ffi.NULL) == INVALID
        assert lib.pyws_utf8_feed_with(impl, v, data, 3, ffi.NULL) == INVALID
