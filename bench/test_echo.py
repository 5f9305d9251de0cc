"""End-to-end echo benchmark: pyws (callback API, examples/echo_server.py), pyws-gen (the
generator-style App), picows, websockets and aiohttp echo servers driven by the same C load
client (bench/loadgen.c) in the same pytest run; and c-echo, the same echo written in C against
pyws's engine without Python (bench/servers/c_echo.c): the ceiling for what the Python layer
costs per message.

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
import subprocess
from typing import Any, Callable, Dict, List, Tuple

import pytest

from harness import BUILD, HERE, ROOT, HarnessError, build_c_echo, cpus, find_cc, server, tail


def _generator_echo() -> List[str]:
    """The generator-style App echo: examples/generator_echo.py once it exists, else
    bench/servers/pyws_generator_echo.py (the README's generator echo handler)."""
    example = os.path.join(ROOT, "examples", "generator_echo.py")
    if os.path.exists(example):
        return [example]
    return [os.path.join(HERE, "servers", "pyws_generator_echo.py")]


# name -> argv after the interpreter (a callable: resolved when the server starts)
SERVERS: Dict[str, Callable[[], List[str]]] = {
    "pyws": lambda: [os.path.join(ROOT, "examples", "echo_server.py")],
    "pyws-gen": _generator_echo,
    # the callback echo on another build of pyws (--echo-baseline): before/after in one run
    "pyws-base": lambda: [os.path.join(ROOT, "examples", "echo_server.py")],
    # the async def handler inside asyncio / uvloop (pyws.aio): see bench/test_async.py
    "pyws-async": lambda: [os.path.join(HERE, "servers", "pyws_async_echo.py")],
    "pyws-async-uv": lambda: [os.path.join(HERE, "servers", "pyws_async_echo.py"), "--uvloop"],
    # the async echo on the --echo-baseline build: the async driver before/after in one run
    "pyws-async-base": lambda: [os.path.join(HERE, "servers", "pyws_async_echo.py")],
    # the callback echo in worker processes sharing the port (pyws.run_workers, SO_REUSEPORT)
    "pyws-w1": lambda: [os.path.join(HERE, "servers", "pyws_workers_echo.py"), "--workers", "1"],
    "pyws-w2": lambda: [os.path.join(HERE, "servers", "pyws_workers_echo.py"), "--workers", "2"],
    # blocking handlers (pyws's thread pool) and their threaded peer, websockets.sync
    "pyws-thread": lambda: [os.path.join(HERE, "servers", "pyws_thread_echo.py")],
    "websockets-sync": lambda: [os.path.join(HERE, "servers", "websockets_sync_echo.py")],
    "picows": lambda: [os.path.join(HERE, "servers", "picows_echo.py")],
    # picows checking text frames are UTF-8 in Python (bytes.decode), as pyws does in C
    "picows-utf8": lambda: [os.path.join(HERE, "servers", "picows_echo.py"), "--validate"],
    "websockets": lambda: [os.path.join(HERE, "servers", "websockets_echo.py")],
    "aiohttp": lambda: [os.path.join(HERE, "servers", "aiohttp_echo.py")],
    # pyws's C engine driven from C (bench/servers/c_echo.c, built into build/bench/c_echo):
    # the same loop, framing and UTF-8 kernels as pyws, without Python
    "c-echo": lambda: [_c_echo()],
    # the same engine under the least Python a driver can have (lib.pyws_poll, unpack,
    # lib.pyws_send): the floor for any Python layer, between c-echo and pyws
    "pyws-raw": lambda: [os.path.join(HERE, "servers", "pyws_raw_echo.py")],
}
# servers that are programs of their own, run without the interpreter
NATIVE = {"c-echo"}
# the module each server needs, to skip (not fail) a server whose package is missing
REQUIRES = {"pyws": "pyws", "pyws-gen": "pyws", "pyws-base": "pyws", "picows": "picows",
            "picows-utf8": "picows",
            "pyws-async": "pyws", "pyws-async-uv": "uvloop", "pyws-async-base": "pyws",
            "websockets": "websockets", "aiohttp": "aiohttp", "pyws-thread": "pyws",
            "websockets-sync": "websockets", "pyws-w1": "pyws", "pyws-w2": "pyws",
            "c-echo": None, "pyws-raw": "pyws"}


def _c_echo() -> str:
    """build/bench/c_echo, built first if needed (skipped where there is no C compiler)."""
    try:
        return build_c_echo()
    except HarnessError as e:
        if not find_cc():
            pytest.skip(str(e))
        pytest.fail(str(e))


def _split(opt: str) -> List[str]:
    return [x.strip() for x in opt.split(",") if x.strip()]


PAYLOADS = ("binary", "ascii", "mixed")


def parse_workloads(spec: str) -> List[Tuple[int, int, int, str]]:
    """--echo-workloads: comma-separated ``CONNSxINFLIGHT:SIZE:PAYLOAD`` (PAYLOAD binary,
    ascii or mixed), e.g. ``8x4:65536:binary,1x1:32:binary`` -> [(8, 4, 65536, "binary"),
    (1, 1, 32, "binary")]."""
    out = []
    for item in _split(spec):
        try:
            ck, size, payload = item.split(":")
            conns, inflight = (int(x) for x in ck.lower().split("x"))
            w = (conns, inflight, int(size), payload)
        except ValueError:
            raise pytest.UsageError(f"--echo-workloads: {item!r} is not CONNSxINFLIGHT:SIZE:"
                                    f"PAYLOAD (e.g. 8x4:65536:binary)") from None
        if payload not in PAYLOADS:
            raise pytest.UsageError(f"--echo-workloads: payload {payload!r} is not one of "
                                    f"{PAYLOADS}")
        out.append(w)
    return out


def parametrize_echo(metafunc: Any, fixture: str, servers_option: str) -> None:
    """Parametrize ``fixture`` with (round, size, server, workload) for the servers named by
    ``servers_option`` and the --echo-size / --echo-rounds options (or --echo-workloads),
    rounds interleaved. ``workload`` is (conns, inflight, size, payload), or None when the
    --echo-conns / --echo-inflight / --echo-text / --echo-mixed options apply."""
    cfg = metafunc.config
    servers = _split(cfg.getoption(servers_option))
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        raise pytest.UsageError(f"{servers_option}: unknown {unknown}; known: {list(SERVERS)}")
    rounds = max(1, cfg.getoption("--echo-rounds"))
    workloads = parse_workloads(cfg.getoption("--echo-workloads") or "")
    if workloads:
        cases: List[Any] = [(r, w[2], s, w) for w in workloads for r in range(1, rounds + 1)
                            for s in servers]
        ids = [f"{w[0]}x{w[1]}-{w[2]}B-{w[3]}-r{r}-{s}" for r, _, s, w in cases]
    else:
        sizes = [int(s) for s in _split(cfg.getoption("--echo-size"))]
        cases = [(r, size, s, None) for size in sizes for r in range(1, rounds + 1)
                 for s in servers]
        ids = [f"{size}B-r{r}-{s}" for r, size, s, _ in cases]
    metafunc.parametrize(fixture, cases, ids=ids)


def pytest_generate_tests(metafunc: Any) -> None:
    if "echo_case" in metafunc.fixturenames:
        parametrize_echo(metafunc, "echo_case", "--echo-servers")


def test_echo(benchmark: Any, bench_store: Dict[str, Any], loadgen: str, echo_case: Any,
              pytestconfig: Any) -> None:
    bench_store["echo"].append(run_echo(benchmark, loadgen, echo_case, pytestconfig))


def run_echo(benchmark: Any, loadgen: str, case: Any, pytestconfig: Any) -> Dict[str, Any]:
    """One run: start the server ``case = (round, size, name)`` names, drive it with loadgen
    under the --echo-* options, return loadgen's result (one JSON object) with the server's
    name, round, start line and script. Shared with bench/test_async.py."""
    rnd, size, name, workload = case if len(case) == 4 else (*case, None)
    module = REQUIRES[name]
    try:
        if module is not None:
            __import__(module)
    except ImportError:
        pytest.skip(f"{module} is not installed")
    opt = pytestconfig.getoption
    conns, inflight = opt("--echo-conns"), opt("--echo-inflight")
    duration, warmup = opt("--echo-duration"), opt("--echo-warmup")
    text, pin = opt("--echo-text"), opt("--echo-pin")
    payload = "mixed" if opt("--echo-mixed") else "ascii" if text else "binary"
    if workload is not None:
        conns, inflight, size, payload = workload
    benchmark.group = f"echo {size}B"
    os.makedirs(BUILD, exist_ok=True)
    log_path = os.path.join(BUILD, f"server-{name}.log")
    argv = SERVERS[name]()

    baseline = opt("--echo-baseline")
    base = name.endswith("-base")
    if base and not baseline:
        pytest.skip(f"{name} needs --echo-baseline DIR")
    with server(name, argv, log_path, pin, fail=pytest.fail,
                pythonpath=os.path.abspath(baseline) if base else "", native=name in NATIVE
                ) as (proc, port, banner):
        cmd = [loadgen, "--port", str(port), "-c", str(conns), "-k", str(inflight),
               "-s", str(size), "-d", str(duration), "-w", str(warmup), "--pid", str(proc.pid)]
        if payload == "mixed":
            cmd.append("--mixed")
        elif payload == "ascii":
            cmd.append("--text")
        cs = cpus()
        pre = (lambda: os.sched_setaffinity(0, {cs[0]})) if pin and len(cs) >= 2 else None
        # loadgen bounds itself (phases + SIGALRM backstop); the timeout here is a second fence
        budget = duration + warmup + 10.0 + 2.0 + 15.0

        def run() -> "subprocess.CompletedProcess[str]":
            return subprocess.run(cmd, capture_output=True, text=True, timeout=budget,
                                  preexec_fn=pre)

        r = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
        alive = proc.poll() is None
    if r.returncode != 0:
        pytest.fail(f"loadgen against {name} exited with {r.returncode}: {r.stderr.strip()}\n"
                    f"server log:\n{tail(log_path)}")
    assert alive, f"{name} server died during the run:\n{tail(log_path)}"
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res.update(server=name, round=rnd, banner=banner, pinned=bool(pin and len(cpus()) >= 2),
               script=os.path.relpath(argv[0], ROOT))
    benchmark.extra_info.update(res)
    return res  # type: ignore[no-any-return]
