"""Summary tables of bench/test_wss.py (printed by conftest's terminal summary and written to
build/bench-wss.json). Not a test module."""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional

Run = Dict[str, Any]

# (a, b, label): "a/b" lines under each table
PAIRS = [
    ("pyws-wss", "picows-wss", "pyws vs picows, TLS"),
    ("pyws-ws", "picows-ws", "pyws vs picows, plain"),
    ("pyws-wss", "pyws-ws", "TLS cost, pyws"),
    ("picows-wss", "picows-ws", "TLS cost, picows"),
]


def _size(n: int) -> str:
    return f"{n >> 10} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def _k(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.0f}k"
    return f"{v:.0f}"


def _eff(r: Run) -> Optional[float]:
    """Messages per server CPU-second (None when the server CPU is unknown)."""
    cpu = r.get("server_cpu_pct", -1)
    return r["msgs_per_s"] / (cpu / 100.0) if cpu and cpu > 0 else None


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def _pair(rs: List[Run], a: str, b: str, label: str) -> List[str]:
    ra = sorted((r for r in rs if r["server"] == a), key=lambda r: r["round"])
    rb = {r["round"]: r for r in rs if r["server"] == b}
    if not ra or not rb:
        return []
    best_a = max(ra, key=lambda r: r["msgs_per_s"])
    best_b = max(rb.values(), key=lambda r: r["msgs_per_s"])

    def per(f: Callable[[Run], Optional[float]]) -> str:
        return ",".join(_ratio(f(x), f(rb[x["round"]])) for x in ra if x["round"] in rb)

    def thr(r: Run) -> Optional[float]:
        return float(r["msgs_per_s"])

    return [f"  {label + ':':<24}{a}/{b}  msgs/s {_ratio(thr(best_a), thr(best_b))} "
            f"(best rounds; per round {per(thr)}),  msgs/CPU-s "
            f"{_ratio(_eff(best_a), _eff(best_b))} (per round {per(_eff)})"]


def wss_tables(runs: List[Run]) -> List[str]:
    out: List[str] = []
    servers: List[str] = []
    for r in runs:
        if r["server"] not in servers:
            servers.append(r["server"])
    for size in sorted({r["size"] for r in runs}):
        rs = [r for r in runs if r["size"] == size]
        cfg = rs[0]
        tls = sorted({r["tls"] for r in rs if r.get("tls")})
        verified = all(r.get("tls_verified") for r in rs if r.get("tls"))
        out.append("")
        out.append(f"wss echo, {cfg['conns']} connections x {cfg['inflight']} in flight, "
                   f"{_size(size)} {cfg['opcode']} messages, {cfg['duration_s']:.1f} s per run; "
                   f"best of {max(r['round'] for r in rs)} interleaved round(s); TLS: "
                   f"{', '.join(tls) or '-'} (server certificate "
                   f"{'verified by the client' if verified else 'NOT verified'})")
        out.append(f"  {'server':<12}{'msgs/s':>10}{'MB/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
                   f"{'srv CPU':>9}{'msgs/CPU-s':>12}{'cli CPU':>9}  per-round msgs/s")
        for s in servers:
            mine = sorted((r for r in rs if r["server"] == s), key=lambda r: r["round"])
            if not mine:
                continue
            b = max(mine, key=lambda r: r["msgs_per_s"])
            cpu = b.get("server_cpu_pct", -1)
            srv = f"{cpu:.0f}%" if cpu >= 0 else "?"
            eff = _eff(b)
            out.append(f"  {s:<12}{b['msgs_per_s']:>10.0f}{b['mb_per_s']:>9.2f}"
                       f"{b['p50_us'] / 1000:>9.2f}{b['p99_us'] / 1000:>9.2f}{srv:>9}"
                       f"{_k(eff) if eff else '?':>12}{b['client_cpu_pct']:>8.0f}%  "
                       f"{','.join(_k(r['msgs_per_s']) for r in mine)}")
        for a, b_, label in PAIRS:
            out += _pair(rs, a, b_, label)
        banners = sorted({f"{r['server']}: " + re.sub(r":\d+/", ":PORT/", r["banner"])
                          for r in rs if r.get("banner")})
        out += [f"    {line}" for line in banners]
    builds = sorted({m.group(1) for r in runs if r["server"].startswith("pyws")
                     for m in [re.search(r"built ([0-9: -]+)", r.get("banner", ""))] if m})
    if len(builds) > 1:
        out.append(f"  NOTE: pyws's C extension was rebuilt during this run (builds of "
                   f"{', '.join(builds)}): its rows may mix builds")
    return out
