"""Summary table of bench/test_async.py (printed by conftest's terminal summary and written to
build/bench-async.json): the async driver's echo servers against pyws's callback and generator
paths and picows, and the asyncio layer's CPU per message. Not a test module."""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

#: the async servers, and what they are compared with (the issue's aims where it names one)
ASYNC = ("pyws-async", "pyws-async-uv")
PEERS = (("picows", 2.0), ("pyws", 0.7), ("pyws-gen", None))


def _us(r: Dict[str, Any]) -> Optional[float]:
    """Server CPU per message, us (None if loadgen could not read the server's CPU)."""
    cpu = r.get("server_cpu_pct", -1)
    rate = r.get("msgs_per_s", 0)
    if cpu is None or cpu <= 0 or not rate:
        return None
    return float(cpu) / 100.0 / float(rate) * 1e6


def _k(v: float) -> str:
    return f"{v / 1e3:.0f}k" if v >= 1e3 else f"{v:.0f}"


def _pair(rs: List[Dict[str, Any]], a: str, b: str) -> List[str]:
    """a against b: msgs/s ratio, CPU per message difference and msgs/CPU-s ratio, for the
    best rounds and per round."""
    ra = sorted((r for r in rs if r["server"] == a), key=lambda r: r["round"])
    rb = sorted((r for r in rs if r["server"] == b), key=lambda r: r["round"])
    if not ra or not rb:
        return []
    ba = max(ra, key=lambda r: r["msgs_per_s"])
    bb = max(rb, key=lambda r: r["msgs_per_s"])
    per_rate, per_cost = [], []
    for x in ra:
        y = next((y for y in rb if y["round"] == x["round"]), None)
        if y is None or not y["msgs_per_s"]:
            continue
        per_rate.append(f"{x['msgs_per_s'] / y['msgs_per_s']:.2f}x")
        ux, uy = _us(x), _us(y)
        if ux is not None and uy is not None:
            per_cost.append(f"{ux - uy:+.2f}")
    out = []
    aim = dict(PEERS).get(b)
    aim_s = f"; aim >= {aim:.1f}x" if aim else ""
    out.append(f"  {a}/{b}: {ba['msgs_per_s'] / bb['msgs_per_s']:.2f}x msgs/s (best rounds), "
               f"per round {','.join(per_rate)}{aim_s}")
    ua, ub = _us(ba), _us(bb)
    if b == "pyws" and ua is not None and ub is not None:
        out.append(f"  asyncio layer cost ({a} over the callback path): {ua - ub:+.2f} us of "
                   f"server CPU per message (best rounds: {ua:.2f} vs {ub:.2f} us), per round "
                   f"{','.join(per_cost)} us; {ub / ua:.2f}x the callback path's msgs per "
                   f"CPU-second")
    return out


def async_tables(runs: List[Dict[str, Any]]) -> List[str]:
    out: List[str] = []
    servers: List[str] = []
    for r in runs:
        if r["server"] not in servers:
            servers.append(r["server"])
    for size in sorted({r["size"] for r in runs}):
        rs = [r for r in runs if r["size"] == size]
        c = rs[0]
        out.append("")
        out.append(f"async driver echo, {c['conns']} connections x {c['inflight']} in flight, "
                   f"{size} B {c['opcode']} messages, {c['duration_s']:.1f} s per run; best of "
                   f"{max(r['round'] for r in rs)} interleaved round(s)")
        out.append(f"  {'server':<15}{'msgs/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'srv CPU':>9}"
                   f"{'msgs/CPU-s':>11}{'us/msg':>8}{'cli CPU':>9}  per-round msgs/s")
        for s in servers:
            mine = sorted((r for r in rs if r["server"] == s), key=lambda r: r["round"])
            if not mine:
                continue
            b = max(mine, key=lambda r: r["msgs_per_s"])
            cpu = b.get("server_cpu_pct", -1)
            us = _us(b)
            out.append(f"  {s:<15}{b['msgs_per_s']:>10.0f}{b['p50_us'] / 1000:>9.2f}"
                       f"{b['p99_us'] / 1000:>9.2f}"
                       f"{(f'{cpu:.0f}%' if cpu >= 0 else '?'):>9}"
                       f"{(_k(1e6 / us) if us else '?'):>11}"
                       f"{(f'{us:.2f}' if us else '?'):>8}{b['client_cpu_pct']:>8.0f}%  "
                       + ",".join(_k(r["msgs_per_s"]) for r in mine))
        for a in ASYNC:
            for peer, _aim in PEERS:
                out += _pair(rs, a, peer)
        out += _pair(rs, "pyws-async", "pyws-async-base")  # before/after (--echo-baseline)
        out.append("  us/msg: the server's CPU per echoed message (loadgen --pid). srv CPU "
                   "well under 100%: the load client set the pace, and msgs/s ratios "
                   "understate the faster server; compare us/msg then.")
        for line in sorted({f"{r['server']}: " + re.sub(r":\d+/", ":PORT/", r["banner"])
                            for r in rs if r.get("banner")}):
            out.append(f"    {line}")
    return out
