"""Broadcast through Redis (pyws's broker) against the same load on one process, in one run.

The load is bench/test_broadcast.py's: --bcast-subscribers subscriber connections, one
publisher keeping --bcast-inflight "B:" messages of --bcast-size bytes in flight, every
delivery checked by the C load client (bench/loadgen.c: each subscriber gets every message
once, in order). Configurations, interleaved per round:

- ``local``: one pyws process (the callback Manager of bench/servers/pyws_broadcast.py), no
  broker: the C fan-out alone.
- ``redis-1``: the same process with ``broker=`` a real redis-server: every publish also goes
  out as one PUBLISH and comes back as the node's own echo (dropped): the broker path's cost
  on the publishing node.
- ``redis-2``: two such processes sharing the topic through Redis, the subscribers split
  between them (loadgen --port2): half of the deliveries go publisher node -> Redis -> the
  other node -> its C fan-out.

Besides deliveries/s and latency, the CPU time of each process (server nodes and
redis-server) is read from /proc before and after the run: the table gives CPU microseconds
per publish for each, the broker path's cost. Results: build/bench-broker.json.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from harness import BUILD, HERE, ROOT, cpus, server, tail

sys.path.insert(0, os.path.join(ROOT, "tests"))
from _redis import RedisServer  # noqa: E402  (the tests' redis-server starter)

_SERVER = os.path.join(HERE, "servers", "pyws_broadcast.py")
CONFIGS = ("local", "redis-1", "redis-2")
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def pytest_generate_tests(metafunc: Any) -> None:
    if "broker_case" not in metafunc.fixturenames:
        return
    rounds = max(1, metafunc.config.getoption("--bcast-rounds"))
    cases = [(r, c) for r in range(1, rounds + 1) for c in CONFIGS]
    metafunc.parametrize("broker_case", cases, ids=[f"r{r}-{c}" for r, c in cases])


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    try:
        # no output-buffer cap on subscribers: by default Redis disconnects a subscriber that
        # falls 32 MB behind (the broker would reconnect and report the gap), which the
        # capacity run's flood would trigger by design
        r = RedisServer(args=["--client-output-buffer-limit", "pubsub 0 0 0"])
    except RuntimeError as exc:
        pytest.skip(str(exc))
    yield r
    r.close()


def test_broker_broadcast(benchmark: Any, bench_store: Dict[str, Any], loadgen: str,
                          broker_case: Tuple[int, str], redis_server: RedisServer,
                          pytestconfig: Any) -> None:
    rnd, config = broker_case
    opt = pytestconfig.getoption
    subs, inflight, size = opt("--bcast-subscribers"), opt("--bcast-inflight"), opt("--bcast-size")
    duration, warmup = opt("--bcast-duration"), opt("--bcast-warmup")
    benchmark.group = "broker"
    os.makedirs(BUILD, exist_ok=True)
    argv = [_SERVER, "--api", "callback", "--fanout", "publish"]
    if config != "local":
        argv += ["--broker", redis_server.url]
    n_nodes = 2 if config == "redis-2" else 1
    with contextlib.ExitStack() as stack:
        nodes = []
        for i in range(n_nodes):
            log_path = os.path.join(BUILD, f"server-broker-{config}-{i}.log")
            proc, port, banner = stack.enter_context(
                server(f"{config}#{i}", argv, log_path, fail=pytest.fail))
            nodes.append((proc, port, banner, log_path))
        cmd = [loadgen, "--broadcast", "--port", str(nodes[0][1]), "-c", str(subs), "-k",
               str(inflight), "-s", str(size), "-d", str(duration), "-w", str(warmup),
               "--pid", str(nodes[0][0].pid)]
        if n_nodes == 2:
            cmd += ["--port2", str(nodes[1][1])]
        budget = duration + warmup + 10.0 + 5.0 + 2.0 + 15.0
        pids = [p.pid for p, *_ in nodes]
        rpid = redis_server.proc.pid if redis_server.proc else 0
        before = [cpu_seconds(p) for p in pids] + [cpu_seconds(rpid)]
        stats_before = redis_server.commandstats().get("publish", 0)

        def run() -> "subprocess.CompletedProcess[str]":
            return subprocess.run(cmd, capture_output=True, text=True, timeout=budget)

        r = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
        after = [cpu_seconds(p) for p in pids] + [cpu_seconds(rpid)]
        publishes_seen = redis_server.commandstats().get("publish", 0) - stats_before
        alive = all(p.poll() is None for p in [n[0] for n in nodes])
    if r.returncode != 0:
        logs = "\n".join(tail(n[3]) for n in nodes)
        pytest.fail(f"loadgen --broadcast against {config} exited with {r.returncode}: "
                    f"{r.stderr.strip()}\nserver logs:\n{logs}")
    assert alive, f"a {config} server died during the run"
    res = json.loads(r.stdout.strip().splitlines()[-1])
    total = max(1, res["total_published"])
    cpu = [a - b for a, b in zip(after, before)]
    res.update(server=config, round=rnd, banner=nodes[0][2], nodes=n_nodes,
               cpu_node_us_per_pub=[c * 1e6 / total for c in cpu[:-1]],
               cpu_redis_us_per_pub=cpu[-1] * 1e6 / total if config != "local" else 0.0,
               redis_publish_calls=publishes_seen)
    if config != "local":
        # one PUBLISH per publish, whatever the number of subscribers and nodes
        assert publishes_seen == res["total_published"], (publishes_seen, res)
    benchmark.extra_info.update(res)
    bench_store.setdefault("broker", []).append(res)


@pytest.mark.parametrize("size", [64, 1024])
def test_broker_capacity(benchmark: Any, bench_store: Dict[str, Any], size: int,
                         redis_server: RedisServer) -> None:
    """What one Redis carries through the broker path: one node publishes COUNT messages as
    fast as it can, another node (one local subscriber) receives them; messages/s from the
    first publish to the last arrival, and the CPU of every process per message."""
    count = 200_000 if size <= 64 else 50_000
    flood = os.path.join(HERE, "servers", "pyws_broker_flood.py")
    env = dict(os.environ)
    sinkp = subprocess.Popen([sys.executable, flood, "sink", redis_server.url, str(count)],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert sinkp.stdout is not None
        assert sinkp.stdout.readline().strip() == "ready"
        rpid = redis_server.proc.pid if redis_server.proc else 0
        before = (cpu_seconds(sinkp.pid), cpu_seconds(rpid))

        def run() -> "subprocess.CompletedProcess[str]":
            return subprocess.run([sys.executable, flood, "pub", redis_server.url, str(count),
                                   str(size)], capture_output=True, text=True, timeout=180,
                                  env=env)

        benchmark.group = "broker capacity"
        r = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
        assert r.returncode == 0, r.stderr
        got = json.loads(sinkp.stdout.readline())
        after = (cpu_seconds(sinkp.pid), cpu_seconds(rpid))
    finally:
        sinkp.kill()
        sinkp.wait(10)
    p = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["received"] == count and got["bad"] == 0, got
    secs = got["t_last"] - p["t_first"]
    res = {"server": f"capacity-{size}B", "size": size, "count": count,
           "msgs_per_s": count / secs, "publish_s": p["t_last"] - p["t_first"],
           "cpu_sink_us_per_msg": (after[0] - before[0]) * 1e6 / count,
           "cpu_redis_us_per_msg": (after[1] - before[1]) * 1e6 / count}
    benchmark.extra_info.update(res)
    bench_store.setdefault("broker", []).append(res)
