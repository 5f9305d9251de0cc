"""End-to-end echo benchmark: pyws, picows, websockets and aiohttp echo servers driven by the
same C load client (bench/loadgen.c) in the same pytest run.

Each server runs as its own single-process, single-threaded subprocess on a free 127.0.0.1
port; the load client opens --echo-conns connections, keeps --echo-inflight messages of
--echo-size bytes in flight on each, and measures for --echo-duration seconds after
--echo-warmup seconds. Rounds are interleaved (round 1: every server, round 2: every server,
...), so slow drift of a shared machine's load hits every server alike; the summary reports the
best round of each server, the per-round numbers and the pyws/peer ratio per round.

The pytest-benchmark "time" of these tests is the wall time of one load-client run (warm-up +
measurement + close) and means nothing by itself: read the summary table printed at the end
(also in build/bench-echo.json).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Tuple

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(ROOT, "build", "bench")

SERVERS: Dict[str, List[str]] = {
    "pyws": [os.path.join(ROOT, "examples", "echo_server.py")],
    "picows": [os.path.join(HERE, "servers", "picows_echo.py")],
    "websockets": [os.path.join(HERE, "servers", "websockets_echo.py")],
    "aiohttp": [os.path.join(HERE, "servers", "aiohttp_echo.py")],
}
# the module each server needs, to skip (not fail) a server whose package is missing
REQUIRES = {"pyws": "pyws", "picows": "picows", "websockets": "websockets", "aiohttp": "aiohttp"}


def _split(opt: str) -> List[str]:
    return [x.strip() for x in opt.split(",") if x.strip()]


def pytest_generate_tests(metafunc: Any) -> None:
    if "echo_case" not in metafunc.fixturenames:
        return
    cfg = metafunc.config
    servers = _split(cfg.getoption("--echo-servers"))
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        raise pytest.UsageError(f"--echo-servers: unknown {unknown}; known: {list(SERVERS)}")
    sizes = [int(s) for s in _split(cfg.getoption("--echo-size"))]
    rounds = max(1, cfg.getoption("--echo-rounds"))
    cases = [(r, size, s) for size in sizes for r in range(1, rounds + 1) for s in servers]
    metafunc.parametrize("echo_case", cases, ids=[f"{size}B-r{r}-{s}" for r, size, s in cases])


@pytest.fixture(scope="session")
def loadgen() -> str:
    """bench/loadgen.c compiled with cc -O2 into build/bench/ (rebuilt when the source is
    newer)."""
    src = os.path.join(HERE, "loadgen.c")
    exe = os.path.join(BUILD, "loadgen")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(src):
        return exe
    if not cc:
        pytest.skip("no C compiler (cc) to build bench/loadgen.c")
    os.makedirs(BUILD, exist_ok=True)
    tmp = exe + f".tmp{os.getpid()}"
    r = subprocess.run([cc, "-O2", "-std=gnu99", "-Wall", "-o", tmp, src],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.fail(f"building loadgen failed:\n{r.stdout}{r.stderr}")
    os.replace(tmp, exe)
    return exe


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpus() -> List[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return []


@contextmanager
def echo_server(name: str, pin: bool, log_path: str) -> Iterator[Tuple[subprocess.Popen, int, str]]:
    """Start server `name` on a free 127.0.0.1 port; yield (process, port, banner line)."""
    port = _free_port()
    cmd = [sys.executable, *SERVERS[name], "--host", "127.0.0.1", "--port", str(port)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                start_new_session=True)
    try:
        cpus = _cpus()
        if pin and len(cpus) >= 2:
            os.sched_setaffinity(proc.pid, {cpus[-1]})
        deadline = time.monotonic() + 20.0
        banner = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"{name} server exited with {proc.returncode}:\n{_tail(log_path)}")
            with open(log_path, "rb") as f:
                first = f.readline().decode("utf-8", "replace")
            if first.endswith("\n") and "echo server on" in first:
                banner = first.strip()
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"{name} server did not start within 20 s:\n{_tail(log_path)}")
        yield proc, port, banner
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _tail(path: str, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
        return data[-n:].decode("utf-8", "replace")
    except OSError:
        return ""


def test_echo(benchmark: Any, bench_store: Dict[str, Any], loadgen: str, echo_case: Any,
              pytestconfig: Any) -> None:
    rnd, size, name = echo_case
    try:
        __import__(REQUIRES[name])
    except ImportError:
        pytest.skip(f"{REQUIRES[name]} is not installed")
    opt = pytestconfig.getoption
    conns, inflight = opt("--echo-conns"), opt("--echo-inflight")
    duration, warmup = opt("--echo-duration"), opt("--echo-warmup")
    text, pin = opt("--echo-text"), opt("--echo-pin")
    benchmark.group = f"echo {size}B"
    os.makedirs(BUILD, exist_ok=True)
    log_path = os.path.join(BUILD, f"server-{name}.log")

    with echo_server(name, pin, log_path) as (proc, port, banner):
        cmd = [loadgen, "--port", str(port), "-c", str(conns), "-k", str(inflight),
               "-s", str(size), "-d", str(duration), "-w", str(warmup), "--pid", str(proc.pid)]
        if text:
            cmd.append("--text")
        cpus = _cpus()
        pre = (lambda: os.sched_setaffinity(0, {cpus[0]})) if pin and len(cpus) >= 2 else None
        # loadgen bounds itself (phases + SIGALRM backstop); the timeout here is a second fence
        budget = duration + warmup + 10.0 + 2.0 + 15.0

        def run() -> subprocess.CompletedProcess:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=budget,
                                  preexec_fn=pre)

        r = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
        alive = proc.poll() is None
    if r.returncode != 0:
        pytest.fail(f"loadgen against {name} exited with {r.returncode}: {r.stderr.strip()}\n"
                    f"server log:\n{_tail(log_path)}")
    assert alive, f"{name} server died during the run:\n{_tail(log_path)}"
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res.update(server=name, round=rnd, banner=banner, pinned=bool(pin and len(_cpus()) >= 2))
    benchmark.extra_info.update(res)
    bench_store["echo"].append(res)
