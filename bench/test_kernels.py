"""Micro-benchmarks of pyws's SIMD kernels against the peers' own implementations.

Masking (XOR with the 4-byte key) and UTF-8 validation at 125 B (the largest control frame,
a typical small message), 4 KiB and 1 MiB, one pytest-benchmark group per operation and size
so the output compares implementations side by side.

What each entry measures (read the numbers with this in mind):
  pyws-<kernel>         lib.pyws_mask_with / lib.pyws_utf8_feed_with on a buffer created once
                        (ffi.from_buffer of a bytearray): one cffi call + the kernel, no
                        allocation. "(auto)" marks the kernel pyws picks on this CPU.
  websockets-C          websockets.speedups.apply_mask(data, mask): C, returns a NEW bytes
                        object (allocation + write of len bytes included: that is its API).
  websockets-py         websockets.utils.apply_mask: the pure-Python fallback (big-int XOR).
  aiohttp-cython        aiohttp._websocket.mask._websocket_mask_cython(mask, bytearray): in
                        place, 8 bytes at a time.
  aiohttp-py            aiohttp._websocket.helpers._websocket_mask_python: its pure-Python
                        fallback (bytes.translate per key byte).
  bytes.decode          data.decode("utf-8"): how websockets, aiohttp and picows validate a text
                        message (CPython's decoder; builds the str too).
  websocket-client      websocket._utils.validate_utf8(data): websocket-client's validator
                        (its wsaccel C speedup when installed, else a pure-Python DFA).
  floor-memmove         ffi.memmove(dst, src, n) between two preallocated buffers: one cffi call
                        that reads and writes n bytes. The floor for an in-place pyws kernel.
  floor-bytes-copy      bytes(bytearray): allocate + copy; the floor for websockets-C's API.
At 125 B every entry is dominated by the call overhead (cffi ~100+ ns), not by the kernel.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import pytest

from pyws._lib import ffi, lib

SIZES = [125, 4096, 1 << 20]
KEY = b"\x37\xfa\x21\x3d"

KERNELS: List[Tuple[str, int]] = [
    (name, getattr(lib, "PYWS_IMPL_" + name.upper()))
    for name in ("scalar", "sse2", "sse4", "avx2", "avx512", "neon")
    if lib.pyws_impl_available(getattr(lib, "PYWS_IMPL_" + name.upper()))
]
BEST = lib.pyws_impl_best()


def _kernel_label(name: str, impl: int) -> str:
    return f"pyws-{name}" + (" (auto)" if impl == BEST else "")


def _size_id(n: int) -> str:
    return f"{n >> 20}MiB" if n >= 1 << 20 else f"{n >> 10}KiB" if n >= 1024 else f"{n}B"


# ----------------------------------------------------------------------------- peers

def _mask_peers() -> Dict[str, Callable[[bytearray], Callable[[], Any]]]:
    """name -> factory(buffer) -> zero-argument callable that masks the buffer's content."""
    peers: Dict[str, Callable[[bytearray], Callable[[], Any]]] = {}
    try:
        from websockets.speedups import apply_mask as ws_c
        peers["websockets-C"] = lambda ba: (lambda: ws_c(ba, KEY))
    except ImportError:  # pragma: no cover - depends on the wheel
        pass
    try:
        from websockets.utils import apply_mask as ws_py
        peers["websockets-py"] = lambda ba: (lambda: ws_py(ba, KEY))
    except ImportError:  # pragma: no cover
        pass
    try:
        from aiohttp._websocket.mask import _websocket_mask_cython as aio_cy
        peers["aiohttp-cython"] = lambda ba: (lambda: aio_cy(KEY, ba))
    except ImportError:  # pragma: no cover - aiohttp without extensions
        try:
            from aiohttp.http_websocket import _websocket_mask as aio_cy  # older aiohttp
            peers["aiohttp-cython"] = lambda ba: (lambda: aio_cy(KEY, ba))
        except ImportError:
            pass
    try:
        from aiohttp._websocket.helpers import _websocket_mask_python as aio_py
        peers["aiohttp-py"] = lambda ba: (lambda: aio_py(KEY, ba))
    except ImportError:  # pragma: no cover
        pass
    return peers


MASK_PEERS = _mask_peers()


def _floors(n: int) -> Dict[str, Callable[[], Any]]:
    src = bytearray(b"x" * n)
    dst = bytearray(n)
    csrc, cdst = ffi.from_buffer(src), ffi.from_buffer(dst)
    memmove = ffi.memmove
    return {
        "floor-memmove": lambda: memmove(cdst, csrc, n),
        "floor-bytes-copy": lambda: bytes(src),
    }


# ----------------------------------------------------------------------------- masking

MASK_CASES = (
    [(n, _kernel_label(k, i)) for n in SIZES for k, i in KERNELS]
    + [(n, p) for n in SIZES for p in MASK_PEERS]
    + [(n, f) for n in SIZES for f in ("floor-memmove", "floor-bytes-copy")]
)


@pytest.mark.parametrize("size,impl", MASK_CASES,
                         ids=[f"{_size_id(n)}-{i.split(' ')[0]}" for n, i in MASK_CASES])
def test_mask(benchmark: Any, record_kernel: Any, size: int, impl: str) -> None:
    benchmark.group = f"mask {_size_id(size)}"
    ba = bytearray((i * 7 + 3) & 0xFF for i in range(size))
    if impl.startswith("pyws-"):
        kernel = dict((_kernel_label(k, i), i) for k, i in KERNELS)[impl]
        buf = ffi.from_buffer(ba)
        key = ffi.new("uint8_t[4]", KEY)
        fn = lib.pyws_mask_with
        # sanity (not timed): masking twice gives the input back, and matches the scalar kernel
        orig = bytes(ba)
        fn(kernel, buf, size, key, 0)
        once = bytes(ba)
        fn(kernel, buf, size, key, 0)
        assert bytes(ba) == orig
        ref = bytearray(orig)
        lib.pyws_mask_with(lib.PYWS_IMPL_SCALAR, ffi.from_buffer(ref), size, key, 0)
        assert bytes(ref) == once
        benchmark(fn, kernel, buf, size, key, 0)
    elif impl.startswith("floor-"):
        benchmark(_floors(size)[impl])
    else:
        benchmark(MASK_PEERS[impl](ba))
    record_kernel(benchmark, "mask", size, impl)


# ----------------------------------------------------------------------------- UTF-8

_TEXTS = {
    "ascii": "The quick brown fox jumps over the lazy dog; 0123456789. ",
    # French and German: mostly ASCII with 2-byte accented letters
    "latin": "Ça s'est passé à Noël, près de la forêt; Größe, Übermaß und Bärenstärke. ",
    # Chinese and Japanese: 3-byte characters, a few ASCII/CJK punctuation marks
    "cjk": "中华人民共和国的首都是北京。日本語の文章も、ひらがなとカタカナで書かれています。",
    # emoji: 4-byte sequences, with joiners and variation selectors (3-byte) between them
    "emoji": "😀🎉🚀🌍 👍🏽❤️‍🔥🧑‍💻🐍 ",
    # everything in one line: 1-, 2-, 3- and 4-byte sequences
    "mixed": "Hello, мир! Grüße — こんにちは世界 🌍🚀 ok; ",
}


def _utf8_data(kind: str, n: int) -> bytes:
    """Exactly n bytes of valid UTF-8 ending on a code point boundary."""
    text = _TEXTS[kind]
    enc = (text * (n // len(text.encode()) + 2)).encode()[:n]
    while True:  # cut back to a boundary, pad with ASCII
        try:
            enc.decode("utf-8")
            break
        except UnicodeDecodeError:
            enc = enc[:-1]
    return enc + b"." * (n - len(enc))


def _utf8_peers() -> Dict[str, Callable[[bytes], Callable[[], Any]]]:
    """name -> factory(data) -> zero-argument callable that validates data."""
    peers: Dict[str, Callable[[bytes], Callable[[], Any]]] = {
        "bytes.decode": lambda d: (lambda: d.decode("utf-8")),
    }
    try:
        from websocket._utils import validate_utf8 as wsc
        peers["websocket-client"] = lambda d: (lambda: wsc(d))
    except ImportError:  # pragma: no cover - depends on the venv
        pass
    return peers


UTF8_PEERS = _utf8_peers()
UTF8_KINDS = list(_TEXTS)
UTF8_CASES = (
    [(kind, n, _kernel_label(k, i)) for kind in UTF8_KINDS for n in SIZES for k, i in KERNELS]
    + [(kind, n, p) for kind in UTF8_KINDS for n in SIZES for p in UTF8_PEERS]
    + [(kind, n, "floor-memmove") for kind in UTF8_KINDS for n in SIZES]
)


@pytest.mark.parametrize("kind,size,impl", UTF8_CASES,
                         ids=[f"{k}-{_size_id(n)}-{i.split(' ')[0]}" for k, n, i in UTF8_CASES])
def test_utf8(benchmark: Any, record_kernel: Any, kind: str, size: int, impl: str) -> None:
    benchmark.group = f"utf8-{kind} {_size_id(size)}"
    data = _utf8_data(kind, size)
    assert len(data) == size
    if impl.startswith("pyws-"):
        kernel = dict((_kernel_label(k, i), i) for k, i in KERNELS)[impl]
        ba = bytearray(data)
        buf = ffi.from_buffer(ba)
        v = ffi.new("pyws_utf8 *")
        lib.pyws_utf8_init(v)
        fn = lib.pyws_utf8_feed_with
        # sanity (not timed): valid input ends on a boundary, so the validator stays at state 0
        # and can be fed the same message again without re-initialising it
        assert fn(kernel, v, buf, size, ffi.NULL) == lib.PYWS_UTF8_OK
        bad = bytearray(data)
        bad[size // 2] = 0xFF
        w = ffi.new("pyws_utf8 *")
        lib.pyws_utf8_init(w)
        assert fn(kernel, w, ffi.from_buffer(bad), size, ffi.NULL) == lib.PYWS_UTF8_INVALID
        benchmark(fn, kernel, v, buf, size, ffi.NULL)
        assert v.state == 0
    elif impl in UTF8_PEERS:
        fn = UTF8_PEERS[impl](data)
        assert fn() in (True, data.decode("utf-8"))     # sanity: it says valid
        benchmark(fn)
    else:
        benchmark(_floors(size)[impl])
    record_kernel(benchmark, f"utf8-{kind}", size, impl)
