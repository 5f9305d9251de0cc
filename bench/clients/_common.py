"""Shared pieces of the benchmark clients in bench/clients/: command line, payloads, CPU
accounting (this process via getrusage, the server via /proc/<pid>/stat), percentiles and the
JSON line each client prints last. Not a client itself."""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

# hard caps so every loop is bounded in count as well as in time
MAX_MSGS = 20_000_000
DISTINCT = 8  # distinct payloads, sent in turn: an echo of the wrong message is caught


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--impl", required=True)
    ap.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/")
    ap.add_argument("--size", type=int, default=64, help="payload bytes (default 64)")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds measured (default 3)")
    ap.add_argument("--warmup", type=float, default=1.0,
                    help="seconds of round trips before measuring (default 1)")
    ap.add_argument("--text", action="store_true", help="text messages (default binary)")
    ap.add_argument("--server-pid", type=int, default=0,
                    help="measure this process's CPU over the measurement too")
    ap.add_argument("--max-msgs", type=int, default=MAX_MSGS,
                    help="stop after this many round trips even if time is left")
    ap.add_argument("--cprofile", default="",
                    help="write a cProfile of the whole client run to this file")
    return ap


def payloads(size: int, text: bool) -> List[Union[bytes, str]]:
    """DISTINCT payloads of ``size`` bytes (ASCII, so a str has the same length), each with a
    different first byte."""
    out: List[Union[bytes, str]] = []
    for i in range(DISTINCT):
        body = bytes((i * 7 + j) % 26 + 97 for j in range(size))
        if size:
            body = bytes([65 + i]) + body[1:]
        out.append(body.decode("ascii") if text else body)
    return out


def _proc_cpu_s(pid: int) -> Optional[float]:
    """utime + stime of ``pid`` in seconds (all threads), or None."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tck
    except (OSError, IndexError, ValueError):
        return None


def _system_busy_s() -> Optional[float]:
    """CPU seconds every CPU of the machine spent busy so far (/proc/stat: all but idle and
    iowait), or None."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
        if fields[0] != b"cpu":
            return None
        v = [int(x) for x in fields[1:]]
        busy = sum(v[:8]) - v[3] - v[4]  # user nice system idle iowait irq softirq steal
        return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Meter:
    """CPU of this process (getrusage: every thread) and of the server between start() and
    stop(), and the wall time."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.t0 = self.t1 = 0.0
        self.r0: Any = None
        self.r1: Any = None
        self.s0: Optional[float] = None
        self.s1: Optional[float] = None
        self.b0: Optional[float] = None
        self.b1: Optional[float] = None

    def start(self) -> None:
        self.b0 = _system_busy_s()
        self.s0 = _proc_cpu_s(self.server_pid)
        self.r0 = resource.getrusage(resource.RUSAGE_SELF)
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        self.t1 = time.perf_counter()
        self.r1 = resource.getrusage(resource.RUSAGE_SELF)
        self.s1 = _proc_cpu_s(self.server_pid)
        self.b1 = _system_busy_s()

    @property
    def wall(self) -> float:
        return self.t1 - self.t0

    def report(self, count: int) -> Dict[str, Any]:
        wall = self.wall if self.wall > 0 else 1e-9
        r0, r1 = self.r0, self.r1
        user = r1.ru_utime - r0.ru_utime
        sys_ = r1.ru_stime - r0.ru_stime
        out: Dict[str, Any] = {
            "wall_s": round(wall, 4),
            "client_cpu_pct": round(100.0 * (user + sys_) / wall, 1),
            "client_user_pct": round(100.0 * user / wall, 1),
            "client_sys_pct": round(100.0 * sys_ / wall, 1),
            "client_cpu_us_per_msg": round(1e6 * (user + sys_) / count, 2) if count else None,
            "client_vol_ctxsw_per_msg": round((r1.ru_nvcsw - r0.ru_nvcsw) / count, 3)
            if count else None,
            "client_invol_ctxsw": r1.ru_nivcsw - r0.ru_nivcsw,
        }
        srv = None
        if self.s0 is not None and self.s1 is not None:
            srv = self.s1 - self.s0
            out["server_cpu_pct"] = round(100.0 * srv / wall, 1)
        else:
            out["server_cpu_pct"] = -1
        # everything else the machine ran meanwhile (other processes, interrupts): a measure of
        # how disturbed this run was; clock-tick granularity, so +-1-2 % of noise
        if self.b0 is not None and self.b1 is not None and srv is not None:
            other = (self.b1 - self.b0) - (user + sys_) - srv
            out["other_cpu_pct"] = round(max(0.0, 100.0 * other / wall), 1)
        else:
            out["other_cpu_pct"] = -1
        return out


def percentiles(samples_ns: Sequence[int]) -> Dict[str, float]:
    if not samples_ns:
        return {"p50_us": 0.0, "p90_us": 0.0, "p99_us": 0.0, "max_us": 0.0, "samples": 0}
    s = sorted(samples_ns)
    n = len(s)

    def at(q: float) -> float:
        return round(s[min(n - 1, int(q * n))] / 1000.0, 2)

    return {"p50_us": at(0.50), "p90_us": at(0.90), "p99_us": at(0.99),
            "max_us": round(s[-1] / 1000.0, 2), "samples": n}


def emit(doc: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def fail(msg: str, code: int = 2) -> None:
    sys.stderr.write(f"error: {msg}\n")
    sys.stderr.flush()
    sys.exit(code)


def versions(*mods: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for m in mods:
        try:
            mod = __import__(m)
            out[m] = str(getattr(mod, "__version__", "?"))
        except ImportError:
            out[m] = "missing"
    return out


def run_profiled(fn: Any, path: str) -> Any:
    """fn() under cProfile when path is set (stats dumped there), else plain."""
    if not path:
        return fn()
    import cProfile
    prof = cProfile.Profile()
    try:
        return prof.runcall(fn)
    finally:
        prof.dump_stats(path)


def loop_budget(warmup: float, duration: float) -> Tuple[float, float]:
    """(start of measurement, end of measurement) from now, perf_counter seconds."""
    now = time.perf_counter()
    return now + warmup, now + warmup + duration
