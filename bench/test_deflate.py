"""permessage-deflate (RFC 7692) benchmarks: compressed echo throughput and memory per compressed
connection, pyws against websockets, each also with compression off, all in one pytest run.

The servers (one script per library; ``--compression none`` is the same code with the
extension off, so ``X`` against ``X-plain`` is the cost of compression and nothing else):

- ``pyws`` / ``pyws-plain``: bench/servers/pyws_deflate_echo.py, the callback ``Manager`` echo
  of examples/echo_server.py with pyws's default ``compression="deflate"`` (window 12, memLevel
  5, level 6, 128-byte threshold) / ``compression=None``; ``GET /memory`` gives the sum of
  ``Connection.memory`` (``lib.pyws_conn_memory``) over its WebSockets;
- ``websockets`` / ``websockets-plain``: bench/servers/websockets_deflate_echo.py, the asyncio
  echo with websockets' default ``compression="deflate"`` (window 12, memLevel 5, zlib's level
  6) / ``compression=None``, on uvloop.

One client for all: bench/clients/deflate_client.py, a raw RFC 6455 + 7692 client on uvloop
(bench/loadgen.c does not speak permessage-deflate) that offers what Chromium offers and checks
every echo byte for byte after inflating it. By default it compresses each of its 8 payloads
once, before the run, so while measuring it only parses, inflates and compares: it is not
what limits a server (its CPU is in the table: ``cli CPU``).

- ``test_deflate_echo``: N connections x K messages in flight of JSON-like text (1 KiB and
  16 KiB by default, over pyws's 128-byte threshold), rounds interleaved (every server once per
  round and size). Checked: the compressed servers agreed on permessage-deflate and sent every
  echo compressed; the plain ones agreed on nothing.
- ``test_deflate_memory``: 50 connections, then 500 more, each echoing 4 messages of 1 KiB;
  the server's VmRSS (/proc/<pid>/status) after each stage; per connection = the growth over
  the 500 (so one-time costs of the first connections are left out). For pyws also the exact C
  heap per connection from ``GET /memory``.

Nothing asserts on time. The tables are printed at the end of the run ("pyws deflate benchmark
summary") and written to build/bench-deflate.json. Settings come from environment variables
(the option table of bench/README.md): PYWS_DEFLATE_SERVERS, PYWS_DEFLATE_SIZES,
PYWS_DEFLATE_CONNS, PYWS_DEFLATE_INFLIGHT, PYWS_DEFLATE_DURATION, PYWS_DEFLATE_WARMUP,
PYWS_DEFLATE_ROUNDS, PYWS_DEFLATE_LIVE, PYWS_DEFLATE_MEM_STAGES, PYWS_DEFLATE_MEM_MESSAGES,
PYWS_DEFLATE_MEM_SIZE.
"""
from __future__ import annotations

import http.client
import json
import os
import platform
import re
import select
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest

from harness import BUILD, HERE, ROOT, server, tail

CLIENT = os.path.join(HERE, "clients", "deflate_client.py")
DEFLATE_JSON = os.path.join(ROOT, "build", "bench-deflate.json")

# name -> (script under bench/servers, --compression, the module it needs)
SERVERS: Dict[str, Tuple[str, str, str]] = {
    "pyws": ("pyws_deflate_echo.py", "deflate", "pyws"),
    "websockets": ("websockets_deflate_echo.py", "deflate", "websockets"),
    "pyws-plain": ("pyws_deflate_echo.py", "none", "pyws"),
    "websockets-plain": ("websockets_deflate_echo.py", "none", "websockets"),
}


def _env(name: str, default: str) -> str:
    return os.environ.get(f"PYWS_DEFLATE_{name}", default).strip() or default


def _list(name: str, default: str) -> List[str]:
    return [x.strip() for x in _env(name, default).split(",") if x.strip()]


def _servers() -> List[str]:
    names = _list("SERVERS", ",".join(SERVERS))
    bad = [n for n in names if n not in SERVERS]
    if bad:
        raise pytest.UsageError(f"PYWS_DEFLATE_SERVERS: unknown {bad}; known: {list(SERVERS)}")
    return names


CONNS = int(_env("CONNS", "64"))
INFLIGHT = int(_env("INFLIGHT", "16"))
DURATION = float(_env("DURATION", "3"))
WARMUP = float(_env("WARMUP", "0.5"))
LIVE = _env("LIVE", "0") not in ("0", "no", "false")
MEM_STAGES = [int(x) for x in _list("MEM_STAGES", "50,500")]
MEM_MESSAGES = int(_env("MEM_MESSAGES", "4"))
MEM_SIZE = int(_env("MEM_SIZE", "1024"))

RESULTS: Dict[str, Any] = {"echo": [], "memory": [], "started": time.time()}


def pytest_generate_tests(metafunc: Any) -> None:
    servers = _servers()
    if "deflate_echo_case" in metafunc.fixturenames:
        sizes = [int(s) for s in _list("SIZES", "1024,16384")]
        rounds = max(1, int(_env("ROUNDS", "2")))
        cases = [(r, size, s) for size in sizes for r in range(1, rounds + 1) for s in servers]
        metafunc.parametrize("deflate_echo_case", cases,
                             ids=[f"{size}B-r{r}-{s}" for r, size, s in cases])
    if "deflate_mem_server" in metafunc.fixturenames:
        metafunc.parametrize("deflate_mem_server", servers)


def _need(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        pytest.skip(f"{module} is not installed")


def _argv(name: str) -> List[str]:
    script, compression, _ = SERVERS[name]
    return [os.path.join(HERE, "servers", script), "--compression", compression]


# ----------------------------------------------------------------------------- throughput

def test_deflate_echo(benchmark: Any, deflate_echo_case: Any) -> None:
    rnd, size, name = deflate_echo_case
    _need(SERVERS[name][2])
    benchmark.group = f"deflate echo {size}B"
    os.makedirs(BUILD, exist_ok=True)
    log_path = os.path.join(BUILD, f"server-deflate-{name}.log")
    argv = _argv(name)
    with server(name, argv, log_path, fail=pytest.fail) as (proc, port, banner):
        cmd = [sys.executable, CLIENT, "echo", "--port", str(port), "--size", str(size),
               "--conns", str(CONNS), "--inflight", str(INFLIGHT), "--duration", str(DURATION),
               "--warmup", str(WARMUP), "--server-pid", str(proc.pid)]
        if LIVE:
            cmd.append("--live")
        # the client bounds each phase itself (open 30 s, drain 5 s, close 5 s)
        budget = DURATION + WARMUP + 30 + 5 + 5 + 15

        def run() -> "subprocess.CompletedProcess[str]":
            return subprocess.run(cmd, capture_output=True, text=True, timeout=budget, cwd=ROOT)

        r = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
        alive = proc.poll() is None
    if r.returncode != 0:
        pytest.fail(f"deflate_client against {name} exited with {r.returncode}: "
                    f"{r.stderr.strip()[-2000:]}\nserver log:\n{tail(log_path)}")
    assert alive, f"{name} server died during the run:\n{tail(log_path)}"
    res = json.loads(r.stdout.strip().splitlines()[-1])
    exts = res["extensions"]
    if SERVERS[name][1] == "deflate":
        assert list(exts) and all(e.startswith("permessage-deflate") for e in exts), exts
        assert res["compressed_echoes"] > 0 and res["plain_echoes"] == 0, res
    else:
        assert list(exts) == [""], exts
        assert res["compressed_echoes"] == 0, res
    assert res["msgs"] > 0
    res.update(server=name, round=rnd, banner=banner, script=os.path.relpath(argv[0], ROOT))
    benchmark.extra_info.update(res)
    RESULTS["echo"].append(res)


# ----------------------------------------------------------------------------- memory

def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _read_line(fd: int, pending: bytearray, timeout: float) -> str:
    """One line from a pipe, waiting at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while b"\n" not in pending:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no line from the client within {timeout:.0f} s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("the client exited")
            pending += chunk
    line, _, rest = bytes(pending).partition(b"\n")
    pending[:] = rest
    return line.decode()


def _pyws_memory(port: int) -> Dict[str, Any]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", "/memory")
        resp = c.getresponse()
        assert resp.status == 200, resp.status
        return dict(json.loads(resp.read()))
    finally:
        c.close()


def test_deflate_memory(benchmark: Any, deflate_mem_server: str) -> None:
    name = deflate_mem_server
    _need(SERVERS[name][2])
    benchmark.group = "deflate memory"
    os.makedirs(BUILD, exist_ok=True)
    log_path = os.path.join(BUILD, f"server-deflate-mem-{name}.log")
    argv = _argv(name)
    with server(name, argv, log_path, fail=pytest.fail) as (proc, port, banner):
        def run() -> Dict[str, Any]:
            time.sleep(0.2)
            doc: Dict[str, Any] = {"rss_start_kb": _rss_kb(proc.pid), "stages": []}
            cmd = [sys.executable, CLIENT, "hold", "--port", str(port),
                   "--stages", ",".join(map(str, MEM_STAGES)),
                   "--messages", str(MEM_MESSAGES), "--size", str(MEM_SIZE)]
            cli = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, cwd=ROOT)
            assert cli.stdin is not None and cli.stdout is not None
            pending = bytearray()
            try:
                for _ in MEM_STAGES:
                    try:
                        st = json.loads(_read_line(cli.stdout.fileno(), pending, 45))
                    except (TimeoutError, EOFError) as e:
                        cli.kill()
                        err = cli.stderr.read().decode()[-2000:] if cli.stderr else ""
                        pytest.fail(f"deflate_client hold against {name}: {e}\n{err}\n"
                                    f"server log:\n{tail(log_path)}")
                    time.sleep(0.2)   # nothing is in flight; let the server settle
                    st["rss_kb"] = _rss_kb(proc.pid)
                    if name.startswith("pyws"):
                        st["pyws"] = _pyws_memory(port)
                    doc["stages"].append(st)
                    cli.stdin.write(b"\n")
                    cli.stdin.flush()
                doc["final"] = json.loads(_read_line(cli.stdout.fileno(), pending, 20))
                cli.wait(10)
            finally:
                if cli.poll() is None:
                    cli.kill()
                    cli.wait(5)
            return doc

        res = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
        alive = proc.poll() is None
    assert alive, f"{name} server died during the run:\n{tail(log_path)}"
    stages = res["stages"]
    for st in stages:
        exts = st["extensions"]
        if SERVERS[name][1] == "deflate":
            assert all(e.startswith("permessage-deflate") for e in exts) and st["plain_echoes"] == 0
        else:
            assert list(exts) == [""] and st["compressed_echoes"] == 0
    a, b = stages[-2] if len(stages) > 1 else None, stages[-1]
    base_conns = a["conns"] if a else 0
    base_rss = a["rss_kb"] if a else res["rss_start_kb"]
    grown = b["conns"] - base_conns
    res.update(server=name, banner=banner, size=MEM_SIZE, messages=MEM_MESSAGES,
               conns=b["conns"], measured_conns=grown,
               rss_per_conn_kib=(b["rss_kb"] - base_rss) / grown,
               extensions=b["extensions"])
    if name.startswith("pyws"):
        base_heap = a["pyws"]["conn_memory"] if a else 0
        res["c_heap_per_conn_kib"] = (b["pyws"]["conn_memory"] - base_heap) / grown / 1024
        res["c_heap_per_conn_all_kib"] = b["pyws"]["conn_memory"] / b["conns"] / 1024
    assert res["final"]["closed_cleanly"] == b["conns"], res["final"]
    benchmark.extra_info.update({k: v for k, v in res.items() if k != "stages"})
    RESULTS["memory"].append(res)


# ----------------------------------------------------------------------------- summary

def _size(n: int) -> str:
    return f"{n >> 10} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def _k(v: float) -> str:
    return f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def _zlib_floor(size: int) -> Optional[float]:
    """Microseconds of zlib work one compressed echo costs any server here, measured in this
    process with the servers' settings: inflate the client's message (window 12) and compress
    the echo (level 6, window 12, memLevel 5, context kept, sync flush). Bounded: 2000
    messages or 1 s."""
    import zlib
    sys.path.insert(0, os.path.join(HERE, "clients"))
    try:
        from deflate_client import deflate_once, json_payloads
    except ImportError:
        return None
    pl = json_payloads(size)
    frames = [deflate_once(p, 12) + b"\x00\x00\xff\xff" for p in pl]
    c = zlib.compressobj(6, zlib.DEFLATED, -12, 5)
    d = zlib.decompressobj(-12)
    n = 0
    t0 = time.perf_counter()
    while n < 2000 and time.perf_counter() - t0 < 1.0:
        d.decompress(frames[n & 7])
        c.compress(pl[n & 7])
        c.flush(zlib.Z_SYNC_FLUSH)
        n += 1
    return (time.perf_counter() - t0) / n * 1e6


def _banners(rs: List[Dict[str, Any]]) -> List[str]:
    return sorted({f"    {r['server']}: " + re.sub(r":\d+/", ":PORT/", r["banner"])
                   for r in rs if r.get("banner")})


REF = {"pyws": "pyws", "websockets": "pyws", "pyws-plain": "pyws-plain",
       "websockets-plain": "pyws-plain"}


def _echo_tables(runs: List[Dict[str, Any]]) -> List[str]:
    out: List[str] = []
    order = [s for s in SERVERS if any(r["server"] == s for r in runs)]
    for size in sorted({r["size"] for r in runs}):
        rs = [r for r in runs if r["size"] == size]
        cfg = rs[0]
        out.append("")
        out.append(f"deflate echo, {cfg['conns']} connections x {cfg['inflight']} in flight, "
                   f"{_size(size)} JSON-like text messages, {cfg['duration_s']:.1f} s per run; "
                   f"best of {max(r['round'] for r in rs)} interleaved round(s); client: "
                   f"deflate_client.py ({cfg['client_compresses']})")
        out.append(f"  {'server':<17}{'msgs/s':>9}{'MB/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
                   f"{'srv CPU':>8}{'msgs/CPU-s':>11}{'cli CPU':>8}{'other':>7}{'wire s>c':>9}"
                   f"{'wire c>s':>9}{'pyws/peer':>10}  {'per-round msgs/s':<18}"
                   f"per-round pyws/peer")
        best = {s: max((r for r in rs if r["server"] == s), key=lambda r: r["msgs_per_s"])
                for s in order if any(r["server"] == s for r in rs)}
        for s, b in best.items():
            mine = sorted((r for r in rs if r["server"] == s), key=lambda r: r["round"])
            ref = best.get(REF[s])
            ratio = (f"{ref['msgs_per_s'] / b['msgs_per_s']:.2f}x"
                     if ref and b["msgs_per_s"] > 0 else "-")
            rr = []
            for r in mine:
                p = next((x for x in rs if x["server"] == REF[s] and x["round"] == r["round"]),
                         None)
                if p and r["msgs_per_s"] > 0:
                    rr.append(f"{p['msgs_per_s'] / r['msgs_per_s']:.2f}x")
            cpu = b.get("server_cpu_pct", -1)
            srv = f"{cpu:.0f}%" if cpu >= 0 else "?"
            eff = _k(b["msgs_per_s"] / (cpu / 100.0)) if cpu > 0 else "?"
            other = b.get("other_cpu_pct", -1)
            wi = f"{b['wire_in_ratio']:.3f}" if b.get("wire_in_ratio") else "-"
            wo = f"{b['wire_out_ratio']:.3f}" if b.get("wire_out_ratio") else "-"
            out.append(f"  {s:<17}{b['msgs_per_s']:>9.0f}{b['mb_per_s']:>8.1f}"
                       f"{b['p50_us'] / 1000:>8.2f}{b['p99_us'] / 1000:>8.2f}{srv:>8}{eff:>11}"
                       f"{b['client_cpu_pct']:>7.0f}%{other:>6.0f}%{wi:>9}{wo:>9}{ratio:>10}  "
                       f"{','.join(_k(r['msgs_per_s']) for r in mine):<18}{','.join(rr)}")
        for a, b_, label in (("pyws", "websockets", "compressed, pyws/websockets"),
                             ("pyws-plain", "websockets-plain", "plain, pyws/websockets"),
                             ("pyws", "pyws-plain", "compression keeps, pyws"),
                             ("websockets", "websockets-plain", "compression keeps, websockets")):
            ra = [r for r in rs if r["server"] == a]
            rb = [r for r in rs if r["server"] == b_]
            if not ra or not rb:
                continue
            per = []
            for x in sorted(ra, key=lambda r: r["round"]):
                y = next((y for y in rb if y["round"] == x["round"]), None)
                if y and y["msgs_per_s"] > 0:
                    per.append(f"{x['msgs_per_s'] / y['msgs_per_s']:.2f}x")
            ba = max(ra, key=lambda r: r["msgs_per_s"])
            bb = max(rb, key=lambda r: r["msgs_per_s"])
            cpu_a, cpu_b = ba.get("server_cpu_pct", -1), bb.get("server_cpu_pct", -1)
            eff = (f"{(ba['msgs_per_s'] / cpu_a) / (bb['msgs_per_s'] / cpu_b):.2f}x"
                   if cpu_a > 0 and cpu_b > 0 else "?")
            out.append(f"  {label}: {a}/{b_} = {ba['msgs_per_s'] / bb['msgs_per_s']:.2f}x "
                       f"msgs/s (best rounds), per round {','.join(per)}; {eff} msgs/CPU-s")
        floor = _zlib_floor(size)
        if floor and any(SERVERS[r["server"]][1] == "deflate" for r in rs):
            out.append(f"  zlib floor: {floor:.1f} us of zlib per compressed echo (inflate + "
                       f"deflate, measured here), at most {_k(1e6 / floor)} msgs/CPU-s for any "
                       f"server")
        out += _banners(rs)
    return out


def _memory_table(runs: List[Dict[str, Any]]) -> List[str]:
    by = {r["server"]: r for r in runs}
    order = [s for s in SERVERS if s in by]
    cfg = runs[0]
    stages = [st["conns"] for st in cfg["stages"]]
    out = ["", f"deflate memory: connections opened in stages to {', '.join(map(str, stages))}, "
               f"{cfg['messages']} x {_size(cfg['size'])} text messages echoed on each "
               f"(Chromium's offer); per connection = growth over the last "
               f"{cfg['measured_conns']} connections",
           f"  {'server':<17}{'RSS start':>10}" + "".join(f"{'RSS@' + str(n):>10}"
                                                         for n in stages) +
           f"{'RSS/conn':>10}{'C heap/conn':>12}  extension agreed"]
    for s in order:
        r = by[s]
        heap = r.get("c_heap_per_conn_kib")
        exts = ", ".join(f"{e or '(none)'} x{n}" for e, n in r["extensions"].items())
        out.append(f"  {s:<17}{r['rss_start_kb'] / 1024:>8.1f}MB"
                   + "".join(f"{st['rss_kb'] / 1024:>8.1f}MB" for st in r["stages"])
                   + f"{r['rss_per_conn_kib']:>7.1f}KiB"
                   + (f"{heap:>9.1f}KiB" if heap is not None else f"{'-':>12}") + f"  {exts}")
    for lib in ("pyws", "websockets"):
        if lib in by and f"{lib}-plain" in by:
            c, p = by[lib], by[f"{lib}-plain"]
            line = (f"  cost of compression per connection, {lib}: "
                    f"{c['rss_per_conn_kib'] - p['rss_per_conn_kib']:.1f} KiB RSS")
            if lib == "pyws":
                line += (f", {c['c_heap_per_conn_kib'] - p['c_heap_per_conn_kib']:.1f} KiB of C "
                         f"heap (pyws_conn_memory: {c['c_heap_per_conn_all_kib']:.1f} KiB per "
                         f"compressed connection, {p['c_heap_per_conn_all_kib']:.1f} KiB plain)")
            out.append(line)
    if "pyws" in by and "websockets" in by and by["pyws"]["rss_per_conn_kib"] > 0:
        out.append(f"  RSS per compressed connection, websockets/pyws = "
                   f"{by['websockets']['rss_per_conn_kib'] / by['pyws']['rss_per_conn_kib']:.2f}x")
    out += _banners(runs)
    return out


class _Summary:
    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int,
                                config: Any) -> None:
        lines: List[str] = []
        if RESULTS["echo"]:
            lines += _echo_tables(RESULTS["echo"])
        if RESULTS["memory"]:
            lines += _memory_table(RESULTS["memory"])
        if not lines:
            return
        os.makedirs(os.path.dirname(DEFLATE_JSON), exist_ok=True)
        with open(DEFLATE_JSON, "w") as f:
            json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                             time.localtime(RESULTS["started"])),
                       "python": sys.version.split()[0], "platform": platform.platform(),
                       "cpus": os.cpu_count(), "loadavg_end": list(os.getloadavg()),
                       "echo": RESULTS["echo"], "memory": RESULTS["memory"]}, f, indent=2)
        lines += ["", f"  written to {os.path.relpath(DEFLATE_JSON, ROOT)}; load average at end "
                      f"{[round(x, 2) for x in os.getloadavg()]} ({os.cpu_count()} CPUs)"]
        terminalreporter.write_sep("=", "pyws deflate benchmark summary")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def _deflate_summary(request: Any) -> Optional[Any]:
    """Registers the summary printer (a test module cannot hold terminal-summary hooks)."""
    pm = request.config.pluginmanager
    if not pm.has_plugin("pyws-deflate-summary"):
        pm.register(_Summary(), "pyws-deflate-summary")
    return None
