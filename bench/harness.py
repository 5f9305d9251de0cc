"""Helpers shared by the end-to-end benchmarks (test_echo.py, test_broadcast.py) and the profiling
scripts: building bench/loadgen.c, starting a server subprocess on a free 127.0.0.1 port and
stopping it. Not a test module."""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, List, NoReturn, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(ROOT, "build", "bench")
LOADGEN_SRC = os.path.join(HERE, "loadgen.c")
LOADGEN_EXE = os.path.join(BUILD, "loadgen")
C_ECHO_SRC = os.path.join(HERE, "servers", "c_echo.c")
C_ECHO_EXE = os.path.join(BUILD, "c_echo")


class HarnessError(RuntimeError):
    """A server did not start, or loadgen could not be built."""


def _raise(msg: str) -> NoReturn:
    raise HarnessError(msg)


def find_cc() -> Optional[str]:
    return (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
            or shutil.which("clang"))


def build_loadgen() -> str:
    """bench/loadgen.c compiled with cc -O2 into build/bench/loadgen (rebuilt when the source
    is newer), linked with OpenSSL (-lssl -lcrypto) for --tls; where OpenSSL's headers or
    libraries are missing, built with -DLOADGEN_NO_TLS instead (everything but --tls works;
    ``loadgen_has_tls()`` tells). Raises HarnessError if there is no compiler or the build
    fails."""
    exe = LOADGEN_EXE
    if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(LOADGEN_SRC):
        return exe
    cc = find_cc()
    if not cc:
        raise HarnessError("no C compiler (cc) to build bench/loadgen.c")
    os.makedirs(BUILD, exist_ok=True)
    tmp = exe + f".tmp{os.getpid()}"
    base = [cc, "-O2", "-std=gnu99", "-Wall", "-o", tmp, LOADGEN_SRC]
    r = subprocess.run(base + ["-lssl", "-lcrypto"], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:  # no OpenSSL development files: a loadgen without --tls
        r2 = subprocess.run(base + ["-DLOADGEN_NO_TLS"], capture_output=True, text=True,
                            timeout=120)
        if r2.returncode != 0:
            raise HarnessError(f"building loadgen failed:\n{r2.stdout}{r2.stderr}\n"
                               f"(with OpenSSL:\n{r.stdout}{r.stderr})")
    os.replace(tmp, exe)
    return exe


def build_c_echo() -> str:
    """bench/servers/c_echo.c linked with every csrc/*.c into build/bench/c_echo: pyws's C
    engine without Python, compiled with build_ffi.py's flags (its -O3 and warnings, the poller
    PYWS_POLLER names, and the -DNDEBUG -fwrapv that Python's own CFLAGS add to the extension
    module) and linked with the same libraries; bench/servers/c_echo.c itself is clean under
    plain -Wall -Wextra. Rebuilt when c_echo.c or any csrc file is newer.
    Raises HarnessError if there is no compiler or the build fails."""
    exe = C_ECHO_EXE
    csrc = os.path.join(ROOT, "csrc")
    # build_ffi.py, the one place that knows how csrc/ is compiled, loaded from its file: the
    # repository root on sys.path would shadow the built pyws package with its sources
    spec = importlib.util.spec_from_file_location("build_ffi", os.path.join(ROOT, "build_ffi.py"))
    assert spec is not None and spec.loader is not None
    build_ffi = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_ffi)
    sources = build_ffi._sources(absolute=True)
    deps = [C_ECHO_SRC, os.path.join(ROOT, "build_ffi.py"), *sources,
            *(os.path.join(csrc, f) for f in os.listdir(csrc) if f.endswith(".h"))]
    if os.path.exists(exe) and os.path.getmtime(exe) >= max(map(os.path.getmtime, deps)):
        return exe
    cc = find_cc()
    if not cc:
        raise HarnessError("no C compiler (cc) to build bench/servers/c_echo.c")
    cflags, ldflags, macros = build_ffi._flags()
    os.makedirs(BUILD, exist_ok=True)
    tmp = exe + f".tmp{os.getpid()}"
    cmd = [cc, *cflags, "-DNDEBUG", "-fwrapv", *(f"-D{k}={v}" for k, v in macros),
           "-I" + csrc, "-o", tmp, C_ECHO_SRC, *sources, *ldflags,
           "-lssl", "-lcrypto", "-lz", "-lpthread"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise HarnessError(f"building c_echo failed:\n{r.stdout}{r.stderr}")
    os.replace(tmp, exe)
    return exe


def loadgen_has_tls(exe: str) -> bool:
    """Was this loadgen built with OpenSSL (``--tls`` available)?"""
    r = subprocess.run([exe, "--tls"], capture_output=True, text=True, timeout=10)
    return "without OpenSSL" not in r.stderr


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpus() -> List[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return []


def tail(path: str, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
        return data[-n:].decode("utf-8", "replace")
    except OSError:
        return ""


def _listening(port: int) -> bool:
    """Is something accepting on 127.0.0.1:port? (Only used for a server that prints no start
    line: a bare TCP connect + close.)"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def server(name: str, argv: Sequence[str], log_path: str, pin: bool = False,
           start_timeout: float = 20.0, fail: Callable[[str], NoReturn] = _raise,
           pythonpath: str = "", native: bool = False
           ) -> Iterator[Tuple["subprocess.Popen[bytes]", int, str]]:
    """Start ``python argv... --host 127.0.0.1 --port PORT`` (PORT: a free one) in its own
    session, its output to log_path; yield (process, port, first line printed). Ready once its
    first line, mentioning the URL it serves ("ws://" or "http://"), is printed; a server that
    prints nothing for 3 s is probed with a TCP connect instead. SIGTERM (then SIGKILL) at the
    end. A server that does not start is reported with ``fail(message)`` (default: raise
    HarnessError; the tests pass ``pytest.fail``). ``pythonpath`` goes first on its
    PYTHONPATH. "wss://" and "https://" count as URLs too. ``native=True``: argv[0] is a
    program of its own (the C echo, build/bench/c_echo), run without the interpreter."""
    port = free_port()
    cmd = [*([] if native else [sys.executable]), *argv, "--host", "127.0.0.1",
           "--port", str(port)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if pythonpath:  # another build of a package first (the echo benchmark's pyws-base)
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                start_new_session=True)
    try:
        cs = cpus()
        if pin and len(cs) >= 2:
            os.sched_setaffinity(proc.pid, {cs[-1]})
        t0 = time.monotonic()
        deadline = t0 + start_timeout
        banner = ""
        while True:
            now = time.monotonic()
            if proc.poll() is not None:
                fail(f"{name} server exited with {proc.returncode}:\n{tail(log_path)}")
            if now >= deadline:
                fail(f"{name} server did not start within {start_timeout:.0f} s:\n"
                     f"{tail(log_path)}")
            with open(log_path, "rb") as f:
                first = f.readline().decode("utf-8", "replace")
            if first.endswith("\n") and any(u in first for u in ("ws://", "wss://", "http://",
                                                                "https://")):
                banner = first.strip()
                break
            if now - t0 > 3.0 and _listening(port):
                banner = first.strip()
                break
            time.sleep(0.05)
        yield proc, port, banner
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
