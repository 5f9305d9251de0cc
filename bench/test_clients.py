"""Client-side echo benchmark (issue 4): pyws's clients against the peers' clients, all talking
to the same echo server, in the same pytest run.

- **Blocking** (``test_blocking_client``): one connection, one message in flight: send, wait for
  the echo, repeat. ``pyws.connect`` against ``websocket-client``
  (``websocket.create_connection(..., enable_multithread=False)``) and, as a bonus,
  ``websockets.sync.client.connect``. Each at every --cli-size, against every --cli-servers
  (default: the picows echo server, which is neither pyws nor any client under test, and pyws's
  own examples/echo_server.py).
- **In-loop** (``test_inloop_client``): --cli-conns connections (64) in one thread, each with K
  messages in flight (--cli-inflight, default 1 and 16): pyws ``Manager.ws_connect`` (the
  handler answers every echo with the next message, ``mgr.poll`` drives the loop) against the
  ``websockets`` asyncio client (one task per connection, uvloop) and the ``aiohttp`` client,
  against --cli-loop-servers (default: picows).

Each run starts a fresh server subprocess (bench/harness.server) and runs the client in its own
subprocess (bench/clients/blocking.py or inloop.py, which print one JSON line), so the client's
CPU is its own and the server is separate. Rounds are interleaved: round 1 runs every client
against every server, then round 2, ...; the summary (conftest's terminal summary, also
build/bench-clients.json) shows each client's best round, the per-round figures and the
pyws/peer ratios within each round. The pytest-benchmark time of these tests is one client
run's wall time and means nothing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List

import pytest

from harness import BUILD, HERE, ROOT, cpus, server, tail

CLIENTS_DIR = os.path.join(HERE, "clients")

SERVERS: Dict[str, List[str]] = {
    "picows": [os.path.join(HERE, "servers", "picows_echo.py")],
    "pyws": [os.path.join(ROOT, "examples", "echo_server.py")],
    "websockets": [os.path.join(HERE, "servers", "websockets_echo.py")],
    "aiohttp": [os.path.join(HERE, "servers", "aiohttp_echo.py")],
}
SERVER_REQUIRES = {"picows": "picows", "pyws": "pyws", "websockets": "websockets",
                   "aiohttp": "aiohttp"}
BLOCKING_REQUIRES = {"pyws": "pyws", "websocket-client": "websocket",
                     "websockets-sync": "websockets.sync.client"}
INLOOP_REQUIRES = {"pyws": "pyws", "pyws-async": "pyws.aio",
                   "websockets": "websockets.asyncio.client",
                   "aiohttp": "aiohttp"}


def _split(opt: str) -> List[str]:
    return [x.strip() for x in opt.split(",") if x.strip()]


PLACEMENTS = ("same", "split", "free")


def _known(opt: str, value: List[str], known: Any) -> List[str]:
    bad = [v for v in value if v not in known]
    if bad:
        raise pytest.UsageError(f"{opt}: unknown {bad}; known: {list(known)}")
    return value


def pytest_generate_tests(metafunc: Any) -> None:
    cfg = metafunc.config
    rounds = max(1, cfg.getoption("--cli-rounds"))
    if "blocking_case" in metafunc.fixturenames:
        servers = _known("--cli-servers", _split(cfg.getoption("--cli-servers")), SERVERS)
        clients = _known("--cli-blocking", _split(cfg.getoption("--cli-blocking")),
                         BLOCKING_REQUIRES)
        sizes = [int(s) for s in _split(cfg.getoption("--cli-size"))]
        places = _known("--cli-placement", _split(cfg.getoption("--cli-placement")), PLACEMENTS)
        cases = [(r, size, pl, srv, cli) for size in sizes for r in range(1, rounds + 1)
                 for pl in places for srv in servers for cli in clients]
        metafunc.parametrize("blocking_case", cases,
                             ids=[f"{s}B-r{r}-{pl}-{srv}-{c}" for r, s, pl, srv, c in cases])
    if "inloop_case" in metafunc.fixturenames:
        servers = _known("--cli-loop-servers", _split(cfg.getoption("--cli-loop-servers")),
                         SERVERS)
        clients = _known("--cli-loop", _split(cfg.getoption("--cli-loop")), INLOOP_REQUIRES)
        sizes = [int(s) for s in _split(cfg.getoption("--cli-loop-size"))]
        ks = [int(k) for k in _split(cfg.getoption("--cli-inflight"))]
        places = _known("--cli-loop-placement", _split(cfg.getoption("--cli-loop-placement")),
                        PLACEMENTS)
        lcases = [(r, size, k, pl, srv, cli) for size in sizes for k in ks
                  for r in range(1, rounds + 1) for pl in places for srv in servers
                  for cli in clients]
        metafunc.parametrize("inloop_case", lcases,
                             ids=[f"{s}B-k{k}-r{r}-{pl}-{srv}-{c}"
                                  for r, s, k, pl, srv, c in lcases])


_GIT: Dict[str, Any] = {}


def pyws_git() -> Dict[str, Any]:
    """The commit of the pyws under test and which of its files differ from it (others may be
    editing pyws/ while this runs): recorded with every run."""
    if not _GIT:
        def git(*a: str) -> str:
            try:
                return subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT,
                                      timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                return ""
        _GIT["commit"] = git("rev-parse", "--short", "HEAD").strip() or "?"
        # porcelain lines are "XY path": the status, a space, the path
        _GIT["modified"] = [line[3:] for line in
                            git("status", "--porcelain", "--", "pyws", "csrc").splitlines()
                            if len(line) > 3]
    return _GIT


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        pytest.skip(f"{module} is not installed")


def _run_client(benchmark: Any, script: str, srv_name: str, args: List[str], budget: float,
                placement: str) -> Dict[str, Any]:
    """Start the server, run the client subprocess against it (timed once by pytest-benchmark,
    for form), return the client's JSON plus the server's name and start line.

    placement: "same" pins the server and the client to the last CPU, "split" the server to the
    last CPU and the client to the first, "free" pins nothing (with fewer than 2 CPUs: free)."""
    os.makedirs(BUILD, exist_ok=True)
    log_path = os.path.join(BUILD, f"server-clients-{srv_name}.log")
    argv = SERVERS[srv_name]
    cs = cpus()
    if len(cs) < 2:
        placement = "free"
    pin = placement != "free"
    with server(srv_name, argv, log_path, pin, fail=pytest.fail) as (proc, port, banner):
        cmd = [sys.executable, os.path.join(CLIENTS_DIR, script),
               "--url", f"ws://127.0.0.1:{port}/", "--server-pid", str(proc.pid), *args]
        cpu = cs[-1] if placement == "same" else cs[0] if cs else 0
        pre = (lambda: os.sched_setaffinity(0, {cpu})) if pin else None

        def run() -> "subprocess.CompletedProcess[str]":
            return subprocess.run(cmd, capture_output=True, text=True, timeout=budget,
                                  preexec_fn=pre, cwd=ROOT)

        r = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
        alive = proc.poll() is None
    if r.returncode != 0:
        pytest.fail(f"{script} {' '.join(args)} against {srv_name} exited with "
                    f"{r.returncode}:\n{r.stderr.strip()[-3000:]}\n"
                    f"server log:\n{tail(log_path)}")
    assert alive, f"{srv_name} server died during the run:\n{tail(log_path)}"
    lines = r.stdout.strip().splitlines()
    if not lines:
        pytest.fail(f"{script} printed nothing; stderr:\n{r.stderr.strip()[-3000:]}")
    res: Dict[str, Any] = json.loads(lines[-1])
    res.update(server=srv_name, banner=banner, script=os.path.relpath(argv[0], ROOT),
               placement=placement, pyws_git=pyws_git())
    return res


def test_blocking_client(benchmark: Any, bench_store: Dict[str, Any], blocking_case: Any,
                         pytestconfig: Any) -> None:
    rnd, size, place, srv, cli = blocking_case
    _require(SERVER_REQUIRES[srv])
    _require(BLOCKING_REQUIRES[cli])
    opt = pytestconfig.getoption
    duration, warmup = opt("--cli-duration"), opt("--cli-warmup")
    benchmark.group = f"blocking client {size}B vs {srv} ({place})"
    args = ["--impl", cli, "--size", str(size), "--duration", str(duration),
            "--warmup", str(warmup), "--timeout", str(opt("--cli-timeout"))]
    if opt("--cli-text"):
        args.append("--text")
    # the client bounds itself (duration + warm-up + connect/close timeouts); a second fence:
    budget = duration + warmup + 30.0
    res = _run_client(benchmark, "blocking.py", srv, args, budget, place)
    res.update(mode="blocking", round=rnd, duration_s=duration)
    benchmark.extra_info.update(res)
    bench_store["clients"].append(res)


def test_inloop_client(benchmark: Any, bench_store: Dict[str, Any], inloop_case: Any,
                       pytestconfig: Any) -> None:
    rnd, size, k, place, srv, cli = inloop_case
    _require(SERVER_REQUIRES[srv])
    _require(INLOOP_REQUIRES[cli])
    opt = pytestconfig.getoption
    duration, warmup, conns = opt("--cli-duration"), opt("--cli-warmup"), opt("--cli-conns")
    benchmark.group = f"in-loop clients {conns}x{k} {size}B vs {srv} ({place})"
    args = ["--impl", cli, "--size", str(size), "--duration", str(duration),
            "--warmup", str(warmup), "--conns", str(conns), "--inflight", str(k)]
    if opt("--cli-text"):
        args.append("--text")
    # open (<= 20 s) + warm-up + measurement + drain (<= 5 s) + close (<= 5 s), and a margin
    budget = duration + warmup + 20.0 + 5.0 + 5.0 + 15.0
    res = _run_client(benchmark, "inloop.py", srv, args, budget, place)
    res.update(mode="inloop", round=rnd, duration_s=duration)
    benchmark.extra_info.update(res)
    bench_store["clients"].append(res)
