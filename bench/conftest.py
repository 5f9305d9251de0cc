"""Shared machinery of the pyws benchmarks: command-line options of the echo, broadcast,
client and wss benchmarks, the load client fixture, a per-run store the tests fill, and the
summary tables printed at the end of the run (kernel ratios, the end-to-end echo table, the
broadcast fan-out table, the client tables of clients_summary.py, the wss tables of
wss_summary.py and the async driver's table of async_summary.py; the last five also written to
build/bench-echo.json, build/bench-broadcast.json, build/bench-clients.json,
build/bench-wss.json and build/bench-async.json).

Run:  .venv/bin/python -m pytest bench -q --benchmark-only     (see bench/README.md)
"""
from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
ECHO_JSON = os.path.join(BUILD, "bench-echo.json")
BCAST_JSON = os.path.join(BUILD, "bench-broadcast.json")
CLIENTS_JSON = os.path.join(BUILD, "bench-clients.json")
WSS_JSON = os.path.join(BUILD, "bench-wss.json")
ASYNC_JSON = os.path.join(BUILD, "bench-async.json")
BROKER_JSON = os.path.join(BUILD, "bench-broker.json")

STORE = pytest.StashKey[Dict[str, Any]]()


def pytest_addoption(parser: Any) -> None:
    g = parser.getgroup("pyws-bench", "pyws end-to-end echo benchmark")
    g.addoption("--echo-servers", default="pyws,pyws-gen,picows,websockets,aiohttp",
                help="comma-separated servers to run (default: all five; pyws = callback API, "
                     "pyws-gen = generator-style App)")
    g.addoption("--echo-conns", type=int, default=64, help="connections (default 64)")
    g.addoption("--echo-inflight", type=int, default=16,
                help="messages in flight per connection (default 16)")
    g.addoption("--echo-size", default="64",
                help="payload bytes; a comma-separated list runs each size (default 64)")
    g.addoption("--echo-duration", type=float, default=3.0,
                help="seconds measured per run (default 3)")
    g.addoption("--echo-warmup", type=float, default=0.5,
                help="seconds of warm-up before measuring (default 0.5)")
    g.addoption("--echo-rounds", type=int, default=2,
                help="rounds; each round runs every server once, interleaved (default 2)")
    g.addoption("--echo-text", action="store_true", help="text messages instead of binary")
    g.addoption("--echo-mixed", action="store_true",
                help="text messages of mixed-script UTF-8 (1- to 4-byte sequences) instead "
                     "of binary or ASCII (loadgen --mixed)")
    g.addoption("--echo-workloads", default="",
                help="several workloads in one run, comma-separated CONNSxINFLIGHT:SIZE:PAYLOAD "
                     "(PAYLOAD binary, ascii or mixed), e.g. 8x4:65536:binary,4x2:1048576:ascii,"
                     "4x2:1048576:mixed,1x1:32:binary (the last: a 1-connection ping-pong); "
                     "overrides --echo-size/-conns/-inflight/-text/-mixed")
    g.addoption("--echo-baseline", default="",
                help="a directory holding another build of the pyws package (DIR/pyws, e.g. "
                     "an older commit's `python build_ffi.py --outdir DIR` plus its pyws/*.py): "
                     "adds the server pyws-base, examples/echo_server.py on that build, so a "
                     "change is measured before and after in one run")
    g.addoption("--echo-pin", action="store_true",
                help="pin the server to the last CPU and the load client to the first "
                     "(off by default: on a shared machine pinning can hurt more than help)")
    g.addoption("--async-servers", default="pyws-async,pyws-async-uv,pyws,pyws-gen,picows",
                help="test_async.py's servers (default: the async echo on asyncio and on "
                     "uvloop, the callback and generator echoes, picows); the --echo-* "
                     "options set the load")
    g.addoption("--async-clients", default="pyws-async,pyws,websockets,aiohttp",
                help="test_async.py's in-loop clients (default: pyws.aconnect, the callback "
                     "client, websockets, aiohttp), against --cli-loop-servers")
    b = parser.getgroup("pyws-bcast", "pyws end-to-end broadcast fan-out benchmark")
    b.addoption("--bcast-servers", default="pyws,pyws-cb,picows,websockets,pyws-example",
                help="comma-separated servers (default: pyws [App + app.publish], pyws-cb "
                     "[callback + mgr.publish], picows, websockets, pyws-example "
                     "[examples/broadcast_server.py, skipped if absent])")
    b.addoption("--bcast-subscribers", type=int, default=500,
                help="subscriber connections (default 500; plus one publisher)")
    b.addoption("--bcast-inflight", type=int, default=16,
                help="messages the publisher keeps in flight (default 16)")
    b.addoption("--bcast-size", type=int, default=64,
                help="message bytes, at least 36 (default 64)")
    b.addoption("--bcast-duration", type=float, default=3.0,
                help="seconds measured per run (default 3)")
    b.addoption("--bcast-warmup", type=float, default=0.5,
                help="seconds of warm-up before measuring (default 0.5)")
    b.addoption("--bcast-rounds", type=int, default=2,
                help="rounds; each round runs every server once, interleaved (default 2)")
    b.addoption("--bcast-pin", action="store_true",
                help="pin the server to the last CPU and the load client to the first")
    c = parser.getgroup("pyws-clients", "pyws client-side echo benchmark (test_clients.py)")
    c.addoption("--cli-blocking", default="pyws,websocket-client,websockets-sync",
                help="blocking clients (default: pyws, websocket-client, websockets-sync)")
    c.addoption("--cli-servers", default="picows,pyws",
                help="echo servers for the blocking clients (default: picows,pyws; also "
                     "websockets, aiohttp)")
    c.addoption("--cli-size", default="64,4096",
                help="blocking clients' payload bytes, comma-separated (default 64,4096)")
    c.addoption("--cli-timeout", type=float, default=10.0,
                help="receive timeout the blocking clients are given, s (0: none; default 10)")
    c.addoption("--cli-loop", default="pyws,websockets,aiohttp",
                help="in-loop clients (default: pyws, websockets, aiohttp)")
    c.addoption("--cli-loop-servers", default="picows",
                help="echo servers for the in-loop clients (default: picows)")
    c.addoption("--cli-loop-size", default="64",
                help="in-loop clients' payload bytes, comma-separated (default 64)")
    c.addoption("--cli-conns", type=int, default=64,
                help="in-loop connections (default 64)")
    c.addoption("--cli-inflight", default="1,16",
                help="in-loop messages in flight per connection, comma-separated (default 1,16)")
    c.addoption("--cli-duration", type=float, default=3.0,
                help="seconds measured per run (default 3)")
    c.addoption("--cli-warmup", type=float, default=1.0,
                help="seconds of warm-up before measuring (default 1)")
    c.addoption("--cli-rounds", type=int, default=2,
                help="interleaved rounds (default 2)")
    c.addoption("--cli-text", action="store_true", help="text messages instead of binary")
    c.addoption("--cli-placement", default="same,split",
                help="CPU placement of the blocking runs, comma-separated: same (server and "
                     "client pinned to one CPU), split (pinned to two), free (not pinned); "
                     "default same,split")
    c.addoption("--cli-loop-placement", default="split",
                help="CPU placement of the in-loop runs (default split)")
    w = parser.getgroup("pyws-wss", "pyws end-to-end echo over TLS (test_wss.py)")
    w.addoption("--wss-servers", default="pyws-wss,picows-wss,pyws-ws,picows-ws",
                help="comma-separated servers, run in this order in every round (default: "
                     "pyws-wss,picows-wss,pyws-ws,picows-ws; -ws = the same script, plain)")
    w.addoption("--wss-conns", type=int, default=64, help="connections (default 64)")
    w.addoption("--wss-inflight", type=int, default=16,
                help="messages in flight per connection (default 16)")
    w.addoption("--wss-size", default="64,4096",
                help="payload bytes, comma-separated (default 64,4096)")
    w.addoption("--wss-duration", type=float, default=3.0,
                help="seconds measured per run (default 3)")
    w.addoption("--wss-warmup", type=float, default=0.5,
                help="seconds of warm-up before measuring (default 0.5)")
    w.addoption("--wss-rounds", type=int, default=3,
                help="interleaved rounds; each round runs every server once (default 3)")
    w.addoption("--wss-pin", action="store_true",
                help="pin the server to the last CPU and the load client to the first")


def pytest_configure(config: Any) -> None:
    config.stash[STORE] = {"kernels": {}, "echo": [], "broadcast": [], "clients": [], "wss": [],
                           "async": [], "broker": [],
                           "started": time.time(), "loadavg_start": _loadavg()}


@pytest.fixture(scope="session")
def bench_store(request: Any) -> Dict[str, Any]:
    return request.config.stash[STORE]


@pytest.fixture(scope="session")
def loadgen() -> str:
    """bench/loadgen.c compiled with cc -O2 into build/bench/loadgen (rebuilt when the source
    is newer)."""
    from harness import HarnessError, build_loadgen, find_cc
    try:
        return build_loadgen()
    except HarnessError as e:
        if not find_cc():
            pytest.skip(str(e))
        pytest.fail(str(e))


@pytest.fixture
def record_kernel(bench_store: Dict[str, Any]) -> Callable[..., None]:
    """``record_kernel(benchmark, op, size, impl)`` keeps a finished kernel benchmark's
    statistics for the summary (nothing when benchmarks are disabled: --benchmark-disable)."""
    def record(benchmark: Any, op: str, size: int, impl: str) -> None:
        meta = getattr(benchmark, "stats", None)
        if meta is None or getattr(meta, "stats", None) is None:
            return
        st = meta.stats
        bench_store["kernels"].setdefault(op, {}).setdefault(size, {})[impl] = {
            "min": st.min, "median": st.median, "mean": st.mean, "rounds": st.rounds}
    return record


def _loadavg() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


# ----------------------------------------------------------------------------- summary

def _fmt_time(s: float) -> str:
    if s < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.2f} us"
    return f"{s * 1e3:.2f} ms"


def _size_label(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10} KiB"
    return f"{n} B"


def _kernel_tables(kernels: Dict[str, Any]) -> List[str]:
    out: List[str] = []
    for op in sorted(kernels):
        by_size = kernels[op]
        sizes = sorted(by_size)
        impls: List[str] = []
        for s in sizes:
            for name in by_size[s]:
                if name not in impls:
                    impls.append(name)
        ref_name = next((n for n in impls if n.startswith("pyws-") and n.endswith("(auto)")),
                        None)
        out.append("")
        out.append(f"{op}: median time per call, GB/s, and time relative to pyws's default "
                   f"kernel {ref_name or '?'} (>1.00x = slower than pyws)")
        head = f"  {'implementation':<26}" + "".join(f"{_size_label(s):>30}" for s in sizes)
        out.append(head)
        for name in impls:
            row = f"  {name:<26}"
            for s in sizes:
                r = by_size[s].get(name)
                if r is None:
                    row += f"{'-':>30}"
                    continue
                med = r["median"]
                gbs = s / med / 1e9 if med > 0 else 0.0
                ref = by_size[s].get(ref_name) if ref_name else None
                rel = f"{med / ref['median']:.2f}x" if ref and ref["median"] > 0 else "-"
                cell = f"{_fmt_time(med)} {gbs:6.2f}GB/s {rel:>7}"
                row += f"{cell:>30}"
            out.append(row)
    return out


def _echo_tables(runs: List[Dict[str, Any]]) -> List[str]:
    out: List[str] = []

    def key(r: Dict[str, Any]) -> Any:
        return (r["size"], r["conns"], r["inflight"], r.get("payload", r["opcode"]))
    workloads: List[Any] = []
    for r in runs:
        if key(r) not in workloads:
            workloads.append(key(r))
    servers: List[str] = []
    for r in runs:
        if r["server"] not in servers:
            servers.append(r["server"])
    for wk in workloads:
        size = wk[0]
        rs = [r for r in runs if key(r) == wk]
        cfg = rs[0]
        kind = cfg["opcode"] if cfg.get("payload", "binary") == "binary" else \
            f"{cfg['opcode']} ({cfg['payload']})"
        out.append("")
        out.append(f"echo, {cfg['conns']} connections x {cfg['inflight']} in flight, "
                   f"{size} B {kind} messages, {cfg['duration_s']:.1f} s per run; "
                   f"best of {max(r['round'] for r in rs)} interleaved round(s)")
        out.append(f"  {'server':<11}{'msgs/s':>10}{'MB/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
                   f"{'srv CPU':>9}{'msgs/CPU-s':>11}{'cli CPU':>9}{'pyws/peer':>11}  "
                   f"{'per-round msgs/s':<24}"
                   f"per-round pyws/peer")
        best: Dict[str, Dict[str, Any]] = {}
        for s in servers:
            mine = [r for r in rs if r["server"] == s]
            if mine:
                best[s] = max(mine, key=lambda r: r["msgs_per_s"])
        pyws_best = best.get("pyws")
        for s in servers:
            if s not in best:
                continue
            b = best[s]
            mine = sorted((r for r in rs if r["server"] == s), key=lambda r: r["round"])
            per_round = ",".join(f"{r['msgs_per_s'] / 1000:.0f}k" for r in mine)
            ratio = (f"{pyws_best['msgs_per_s'] / b['msgs_per_s']:.2f}x"
                     if pyws_best and b["msgs_per_s"] > 0 else "-")
            rr = []
            for r in mine:
                p = next((x for x in rs if x["server"] == "pyws" and x["round"] == r["round"]),
                         None)
                if p and r["msgs_per_s"] > 0:
                    rr.append(f"{p['msgs_per_s'] / r['msgs_per_s']:.2f}x")
            cpu = b.get("server_cpu_pct", -1)
            srv = f"{cpu:.0f}%" if cpu >= 0 else "?"
            eff = f"{b['msgs_per_s'] / (cpu / 100.0) / 1000:.0f}k" if cpu > 0 else "?"
            out.append(f"  {s:<11}{b['msgs_per_s']:>10.0f}{b['mb_per_s']:>8.2f}"
                       f"{b['p50_us'] / 1000:>9.2f}{b['p99_us'] / 1000:>9.2f}{srv:>9}{eff:>11}"
                       f"{b['client_cpu_pct']:>8.0f}%{ratio:>11}  {per_round:<24}"
                       f"{','.join(rr)}")
        out += _ratio_lines(rs, "msgs_per_s", [("pyws-gen", "pyws"), ("pyws-gen", "picows")],
                            "generator App")
        out += _ratio_lines(rs, "msgs_per_s", [("pyws", "c-echo"), ("pyws-gen", "c-echo"),
                                               ("pyws-base", "c-echo"), ("pyws-raw", "c-echo"),
                                               ("pyws", "pyws-raw"), ("pyws", "picows"),
                                               ("pyws", "pyws-gen"), ("pyws", "pyws-base"),
                                               ("pyws", "picows-utf8"),
                                               ("pyws-gen", "picows-utf8")], "ratio")
        out += _banners(rs)
    return out


def _banners(rs: List[Dict[str, Any]]) -> List[str]:
    lines = sorted({f"{r['server']}: " + re.sub(r":\d+/", ":PORT/", r["banner"])
                    for r in rs if r.get("banner")})
    return [f"    {line}" for line in lines]


def _ratio_lines(rs: List[Dict[str, Any]], key: str, pairs: List[Any], label: str) -> List[str]:
    """``a/b`` of the best runs, and per round, for each (a, b) pair present in rs."""
    out: List[str] = []
    for a, b in pairs:
        ra = [r for r in rs if r["server"] == a]
        rb = [r for r in rs if r["server"] == b]
        if not ra or not rb:
            continue
        best_a = max(x[key] for x in ra)
        best_b = max(x[key] for x in rb)
        per = []
        for x in sorted(ra, key=lambda r: r["round"]):
            y = next((y for y in rb if y["round"] == x["round"]), None)
            if y and y[key] > 0:
                per.append(f"{x[key] / y[key]:.2f}x")
        best = f"{best_a / best_b:.2f}x" if best_b > 0 else "-"
        out.append(f"  {label}: {a}/{b} = {best} (best rounds), per round {','.join(per)}")
    return out


def _bcast_tables(runs: List[Dict[str, Any]]) -> List[str]:
    out: List[str] = []
    servers: List[str] = []
    for r in runs:
        if r["server"] not in servers:
            servers.append(r["server"])
    cfg = runs[0]
    out.append("")
    out.append(f"broadcast fan-out, {cfg['subscribers']} subscribers + 1 publisher, "
               f"{cfg['inflight']} in flight, {cfg['size']} B text messages, "
               f"{cfg['duration_s']:.1f} s per run; best of {max(r['round'] for r in runs)} "
               f"interleaved round(s); every run checked: each subscriber got every message "
               f"once, in order")
    out.append(f"  {'server':<13}{'deliv/s':>10}{'pub/s':>8}{'MB/s':>8}{'p50 ms':>8}"
               f"{'p99 ms':>8}{'srv CPU':>8}{'deliv/CPU-s':>12}{'cli CPU':>8}{'pyws/peer':>10}"
               f"  {'per-round deliv/s':<20}per-round pyws/peer")
    best = {s: max((r for r in runs if r["server"] == s), key=lambda r: r["deliveries_per_s"])
            for s in servers}
    ref = best.get("pyws")
    for s in servers:
        b = best[s]
        mine = sorted((r for r in runs if r["server"] == s), key=lambda r: r["round"])
        per_round = ",".join(_k(r["deliveries_per_s"]) for r in mine)
        ratio = (f"{ref['deliveries_per_s'] / b['deliveries_per_s']:.2f}x"
                 if ref and b["deliveries_per_s"] > 0 else "-")
        rr = []
        for r in mine:
            p = next((x for x in runs if x["server"] == "pyws" and x["round"] == r["round"]),
                     None)
            if p and r["deliveries_per_s"] > 0:
                rr.append(f"{p['deliveries_per_s'] / r['deliveries_per_s']:.2f}x")
        cpu = b.get("server_cpu_pct", -1)
        srv = f"{cpu:.0f}%" if cpu >= 0 else "?"
        eff = _k(b["deliveries_per_s"] / (cpu / 100.0)) if cpu > 0 else "?"
        out.append(f"  {s:<13}{_k(b['deliveries_per_s']):>10}{b['published_per_s']:>8.0f}"
                   f"{b['mb_per_s']:>8.1f}{b['p50_us'] / 1000:>8.2f}{b['p99_us'] / 1000:>8.2f}"
                   f"{srv:>8}{eff:>12}{b['client_cpu_pct']:>7.0f}%{ratio:>10}  "
                   f"{per_round:<20}{','.join(rr)}")
    out += _ratio_lines(runs, "deliveries_per_s", [("pyws", "picows"), ("pyws", "websockets"),
                                                   ("pyws", "pyws-cb"), ("pyws-example", "pyws")],
                        "deliveries/s")
    out += _banners(runs)
    return out


def _k(v: float) -> str:
    """1234567 -> '1.23M', 45678 -> '45.7k'."""
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    store = config.stash.get(STORE, None)
    if not store:
        return
    lines: List[str] = []
    if store["kernels"]:
        lines += _kernel_tables(store["kernels"])
    from clients_summary import client_tables
    from wss_summary import wss_tables
    from async_summary import async_tables
    from broker_summary import broker_tables
    for key, path, tables in (("echo", ECHO_JSON, _echo_tables),
                              ("broadcast", BCAST_JSON, _bcast_tables),
                              ("clients", CLIENTS_JSON, client_tables),
                              ("wss", WSS_JSON, wss_tables),
                              ("async", ASYNC_JSON, async_tables),
                              ("broker", BROKER_JSON, broker_tables)):
        if not store[key]:
            continue
        lines += tables(store[key])
        os.makedirs(BUILD, exist_ok=True)
        doc = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(store["started"])),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_start": store["loadavg_start"],
            "loadavg_end": _loadavg(),
            "runs": store[key],
        }
        with open(path, "w") as f:
            json.dump(doc, f, indent=2)
        lines.append("")
        lines.append(f"  written to {os.path.relpath(path, ROOT)}; load average at start "
                     f"{store['loadavg_start']}, at end {_loadavg()} ({os.cpu_count()} CPUs)")
    if lines:
        terminalreporter.write_sep("=", "pyws benchmark summary")
        for line in lines:
            terminalreporter.write_line(line)
