"""The one place that knows how the C core in csrc/ becomes the extension module pyws._pyws.

cffi API mode (out-of-line): the declarations handed to cdef() are the part of csrc/pyws.h
between the CDEF markers, with every #define turned into ``#define NAME ...`` so the compiler
fills in the values.

Build-time environment variables:
  PYWS_POLLER    epoll | poll | kqueue   (default: epoll on Linux, kqueue on BSD/macOS)
  PYWS_SANITIZE  1 -> compile with -fsanitize=address,undefined (for the sanitizer test run),
                      and with PYWS_CHECK_STATES: an illegal connection state change aborts
  PYWS_DEBUG     1 -> -O0 -g

Run directly (``python build_ffi.py --outdir DIR``) to compile the module into DIR/pyws/
without installing, which is how the sanitizer build is made.
"""
from __future__ import annotations

import glob
import os
import re
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"


def _cdef() -> str:
    with open(os.path.join(HERE, CSRC, "pyws.h"), encoding="utf-8") as f:
        text = f.read()
    body = text.split("/* CDEF-BEGIN */", 1)[1].split("/* CDEF-END */", 1)[0]
    body = re.sub(r"/\*.*?\*/", " ", body, flags=re.S)
    return re.sub(r"^#define (\w+)\s.*$", r"#define \1 ...", body, flags=re.M)


def _sources(absolute: bool) -> list[str]:
    files = sorted(glob.glob(os.path.join(HERE, CSRC, "*.c")))
    return files if absolute else [os.path.relpath(f, HERE) for f in files]


def _flags() -> tuple[list[str], list[str], list[tuple[str, str]]]:
    # -fvisibility=hidden: the module exports PyInit__pyws only; the C functions stay inside
    cflags = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"]
    ldflags: list[str] = []
    macros: list[tuple[str, str]] = []
    if os.environ.get("PYWS_DEBUG") == "1":
        cflags += ["-O0", "-g"]
    else:
        cflags += ["-O3"]
    if os.environ.get("PYWS_SANITIZE") == "1":
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
               "-fno-sanitize-recover=undefined"]
        cflags += san + ["-g", "-O1"]
        ldflags += san
        macros.append(("PYWS_CHECK_STATES", "1"))
    poller = os.environ.get("PYWS_POLLER", "").strip().lower()
    if poller:
        if poller not in ("epoll", "poll", "kqueue"):
            raise SystemExit(f"PYWS_POLLER must be epoll, poll or kqueue, not {poller!r}")
        macros.append((f"PYWS_POLLER_{poller.upper()}", "1"))
    return cflags, ldflags, macros


def make_builder(absolute: bool = False) -> FFI:
    """The FFI builder; setuptools wants source paths relative to the project, a direct
    compile into another directory wants them absolute."""
    builder = FFI()
    builder.cdef(_cdef())
    cflags, ldflags, macros = _flags()
    builder.set_source(
        "pyws._pyws",
        '#include "pyws.h"\n',
        sources=_sources(absolute),
        include_dirs=[os.path.join(HERE, CSRC) if absolute else CSRC],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        define_macros=macros,
        libraries=["ssl", "crypto", "z", "pthread"],  # Debian: libssl-dev, zlib1g-dev
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    outdir = "."
    if "--outdir" in sys.argv:
        outdir = sys.argv[sys.argv.index("--outdir") + 1]
    make_builder(absolute=True).compile(tmpdir=os.path.abspath(outdir), verbose=False)
