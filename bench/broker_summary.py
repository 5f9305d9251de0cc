"""The broker table of the benchmark summary (bench/test_broker.py's runs)."""
from __future__ import annotations

from typing import Any, Dict, List


def _k(v: float) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def broker_tables(runs: List[Dict[str, Any]]) -> List[str]:
    """Best round per configuration, with CPU µs per publish of each process and ratios
    against ``local`` (one process, no broker) measured in the same run."""
    caps = [r for r in runs if r["server"].startswith("capacity-")]
    runs = [r for r in runs if not r["server"].startswith("capacity-")]
    out: List[str] = []
    for c in caps:
        out.append(f"  one Redis through the broker path, {c['size']} B: "
                   f"{_k(c['msgs_per_s'])} msgs/s ({c['count']} messages node -> Redis -> node); "
                   f"CPU per message: Redis {c['cpu_redis_us_per_msg']:.2f} us, receiving node "
                   f"{c['cpu_sink_us_per_msg']:.2f} us")
    if not runs:
        return out
    cfg = runs[0]
    out += ["", f"broadcast through Redis: {cfg['subscribers']} subscribers + 1 publisher, "
               f"{cfg['inflight']} in flight, {cfg['size']} B; best of "
               f"{max(r['round'] for r in runs)} interleaved round(s); every delivery checked"]
    out.append(f"  {'config':<9}{'nodes':>6}{'deliv/s':>10}{'pub/s':>9}{'p50 ms':>8}"
               f"{'p99 ms':>8}{'node CPU us/pub':>17}{'redis us/pub':>13}{'vs local':>9}"
               f"  per-round deliv/s")
    names: List[str] = []
    for r in runs:
        if r["server"] not in names:
            names.append(r["server"])
    best = {n: max((r for r in runs if r["server"] == n), key=lambda r: r["deliveries_per_s"])
            for n in names}
    ref = best.get("local")
    for n in names:
        b = best[n]
        rounds = ",".join(_k(r["deliveries_per_s"]) for r in
                          sorted((r for r in runs if r["server"] == n), key=lambda r: r["round"]))
        ratio = f"{b['deliveries_per_s'] / ref['deliveries_per_s']:.2f}x" if ref else "-"
        node_cpu = "+".join(f"{c:.1f}" for c in b["cpu_node_us_per_pub"])
        out.append(f"  {n:<9}{b['nodes']:>6}{_k(b['deliveries_per_s']):>10}"
                   f"{b['published_per_s']:>9.0f}{b['p50_us'] / 1000:>8.2f}"
                   f"{b['p99_us'] / 1000:>8.2f}{node_cpu:>17}{b['cpu_redis_us_per_pub']:>13.1f}"
                   f"{ratio:>9}  {rounds}")
    return out
