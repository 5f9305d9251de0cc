"""The async driver's echo benchmark (issue 14): the ``async def`` echo handler inside asyncio
(``pyws-async``) and inside uvloop (``pyws-async-uv``), against pyws's own callback
(``pyws``) and generator (``pyws-gen``) paths and picows (asyncio native), driven by the same C
load client (bench/loadgen.c) in the same run, 64 connections x 16 in flight x 64 B by default.

A preset of test_echo.py: the same servers, options (--echo-conns, --echo-inflight,
--echo-size, --echo-duration, --echo-warmup, --echo-rounds, --echo-text, --echo-pin) and runner
(``test_echo.run_echo``); only the set of servers (--async-servers) and the summary differ.
The summary ("async driver" table, also build/bench-async.json) gives, per server, the best
round's msgs/s, latency, the server's CPU and its CPU per message, then:

- ``async/picows`` and ``async/callback`` (and generator), as msgs/s of the best rounds and per
  round: the issue's aims are >= 2x picows and >= 0.7x the callback path;
- the **asyncio layer's cost per message**: the async server's CPU per message minus the
  callback server's (us, best rounds and per round), and the ratio of their msgs per
  CPU-second. When the load client, not the server, sets the pace (server CPU well under
  100%), msgs/s ratios understate the faster server and the CPU figures are the fairer ones.

The client side (``test_async_client``): test_clients.py's in-loop client benchmark (its
runner and table), with the clients of --async-clients (default ``pyws-async,pyws,websockets,
aiohttp``: ``pyws.aconnect`` with one task per connection and ``async for``, the callback
client, and the websockets and aiohttp asyncio clients, all on uvloop when installed),
--cli-conns connections x --echo-inflight in flight against --cli-loop-servers (picows),
--cli-duration / --cli-warmup / --cli-rounds. The clients' table adds pyws-async/peer lines.

Run (a benchmark, not a test; nothing asserts on time):

    .venv/bin/python -m pytest bench/test_async.py -q --benchmark-only \\
        [--async-servers pyws-async,pyws-async-uv,pyws,pyws-gen,picows] [--echo-rounds 2] \\
        [--async-clients pyws-async,pyws,websockets,aiohttp] [-k echo | -k client]

Every server imports the pyws that the pytest process's environment finds (PYTHONPATH is
passed on): to measure a build elsewhere, run with ``PYTHONPATH=DIR`` (DIR/pyws); the start
lines below the table name the loop and backend each server ran.
"""
from __future__ import annotations

from typing import Any, Dict, List

import pytest

import test_clients
from test_echo import parametrize_echo, run_echo

#: what --async-servers may name: test_echo's servers
DEFAULT = "pyws-async,pyws-async-uv,pyws,pyws-gen,picows"


def _split(opt: str) -> List[str]:
    return [x.strip() for x in opt.split(",") if x.strip()]


def pytest_generate_tests(metafunc: Any) -> None:
    cfg = metafunc.config
    if "async_client_case" in metafunc.fixturenames:
        clients = _split(cfg.getoption("--async-clients"))
        unknown = [c for c in clients if c not in test_clients.INLOOP_REQUIRES]
        if unknown:
            raise pytest.UsageError(f"--async-clients: unknown {unknown}; known: "
                                    f"{list(test_clients.INLOOP_REQUIRES)}")
        k, size = cfg.getoption("--echo-inflight"), int(_split(cfg.getoption("--echo-size"))[0])
        srvs = _split(cfg.getoption("--cli-loop-servers"))
        place = _split(cfg.getoption("--cli-loop-placement"))[0]
        rounds = max(1, cfg.getoption("--cli-rounds"))
        lcases = [(r, size, k, place, srv, cli) for r in range(1, rounds + 1) for srv in srvs
                  for cli in clients]
        metafunc.parametrize("async_client_case", lcases,
                             ids=[f"{s}B-k{k}-r{r}-{srv}-{c}" for r, s, k, _p, srv, c in lcases])
    if "async_case" in metafunc.fixturenames:
        parametrize_echo(metafunc, "async_case", "--async-servers")


def test_async_echo(benchmark: Any, bench_store: Dict[str, Any], loadgen: str, async_case: Any,
                    pytestconfig: Any) -> None:
    bench_store["async"].append(run_echo(benchmark, loadgen, async_case, pytestconfig))


def test_async_client(benchmark: Any, bench_store: Dict[str, Any], async_client_case: Any,
                      pytestconfig: Any) -> None:
    """The in-loop client benchmark of test_clients.py (its runner, its table) with the
    clients of --async-clients: ``pyws.aconnect`` against the callback client and the
    websockets and aiohttp asyncio clients, --echo-inflight messages in flight."""
    test_clients.test_inloop_client(benchmark, bench_store, async_client_case, pytestconfig)
