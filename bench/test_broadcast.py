"""End-to-end broadcast fan-out benchmark: pyws (C topic fan-out: ``app.publish`` of the
generator App, and ``mgr.publish`` of the callback API), picows (a set of transports and a
``transport.send`` loop) and websockets (``websockets.broadcast``), driven by the same C load
client (bench/loadgen.c --broadcast) in the same pytest run.

Every server speaks the same protocol: a text message starting with "B:" goes unchanged to ALL
connected clients, the sender included; anything else is echoed. The load client opens
--bcast-subscribers subscriber connections that only listen, plus one publisher that keeps
--bcast-inflight "B:<seq>:<time>:..." messages of --bcast-size bytes in flight (its own copy is
its ack). Every subscriber checks that it gets every message exactly once and in order; after
the measurement the client waits for the last copies and fails the run if any subscriber is
short. Rounds are interleaved as in test_echo.py.

The pytest-benchmark "time" of these tests is the wall time of one load-client run and means
nothing by itself: read the broadcast table of the summary (also in build/bench-broadcast.json).
"""
from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Callable, Dict, List

import pytest

from harness import BUILD, HERE, ROOT, cpus, server, tail

_PYWS = os.path.join(HERE, "servers", "pyws_broadcast.py")
_EXAMPLE = os.path.join(ROOT, "examples", "broadcast_server.py")

# name -> argv after the interpreter (resolved when the server starts)
SERVERS: Dict[str, Callable[[], List[str]]] = {
    "pyws": lambda: [_PYWS, "--api", "app", "--fanout", "publish"],
    "pyws-cb": lambda: [_PYWS, "--api", "callback", "--fanout", "publish"],
    "pyws-example": lambda: [_EXAMPLE],
    "picows": lambda: [os.path.join(HERE, "servers", "picows_broadcast.py")],
    "websockets": lambda: [os.path.join(HERE, "servers", "websockets_broadcast.py")],
}
REQUIRES = {"pyws": "pyws", "pyws-cb": "pyws", "pyws-example": "pyws", "picows": "picows",
            "websockets": "websockets"}


def _split(opt: str) -> List[str]:
    return [x.strip() for x in opt.split(",") if x.strip()]


def pytest_generate_tests(metafunc: Any) -> None:
    if "bcast_case" not in metafunc.fixturenames:
        return
    cfg = metafunc.config
    servers = _split(cfg.getoption("--bcast-servers"))
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        raise pytest.UsageError(f"--bcast-servers: unknown {unknown}; known: {list(SERVERS)}")
    rounds = max(1, cfg.getoption("--bcast-rounds"))
    cases = [(r, s) for r in range(1, rounds + 1) for s in servers]
    metafunc.parametrize("bcast_case", cases, ids=[f"r{r}-{s}" for r, s in cases])


def test_broadcast(benchmark: Any, bench_store: Dict[str, Any], loadgen: str, bcast_case: Any,
                   pytestconfig: Any) -> None:
    rnd, name = bcast_case
    try:
        __import__(REQUIRES[name])
    except ImportError:
        pytest.skip(f"{REQUIRES[name]} is not installed")
    if name == "pyws-example" and not os.path.exists(_EXAMPLE):
        pytest.skip("examples/broadcast_server.py does not exist (yet)")
    opt = pytestconfig.getoption
    subs, inflight, size = opt("--bcast-subscribers"), opt("--bcast-inflight"), opt("--bcast-size")
    duration, warmup, pin = opt("--bcast-duration"), opt("--bcast-warmup"), opt("--bcast-pin")
    benchmark.group = "broadcast"
    os.makedirs(BUILD, exist_ok=True)
    log_path = os.path.join(BUILD, f"server-bcast-{name}.log")
    argv = SERVERS[name]()

    with server(name, argv, log_path, pin, fail=pytest.fail) as (proc, port, banner):
        cmd = [loadgen, "--broadcast", "--port", str(port), "-c", str(subs), "-k",
               str(inflight), "-s", str(size), "-d", str(duration), "-w", str(warmup),
               "--pid", str(proc.pid)]
        cs = cpus()
        pre = (lambda: os.sched_setaffinity(0, {cs[0]})) if pin and len(cs) >= 2 else None
        # loadgen bounds itself (connect 10 s + phases + drain 5 s + close 2 s, SIGALRM
        # backstop); the timeout here is a second fence
        budget = duration + warmup + 10.0 + 5.0 + 2.0 + 15.0

        def run() -> "subprocess.CompletedProcess[str]":
            return subprocess.run(cmd, capture_output=True, text=True, timeout=budget,
                                  preexec_fn=pre)

        r = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
        alive = proc.poll() is None
    if r.returncode != 0:
        what = {2: "protocol error or a message lost/duplicated/out of order",
                4: "timeout or stall", 5: "a subscriber did not get every message"}
        pytest.fail(f"loadgen --broadcast against {name} exited with {r.returncode} "
                    f"({what.get(r.returncode, 'error')}): {r.stderr.strip()}\n"
                    f"server log:\n{tail(log_path)}")
    assert alive, f"{name} server died during the run:\n{tail(log_path)}"
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res.update(server=name, round=rnd, banner=banner, pinned=bool(pin and len(cpus()) >= 2),
               script=os.path.relpath(argv[0], ROOT), argv=argv[1:])
    benchmark.extra_info.update(res)
    bench_store["broadcast"].append(res)
