"""Summary tables of bench/test_clients.py (printed by conftest's terminal summary and written
to build/bench-clients.json). Not a test module."""
from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence, Tuple


def _k(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def _size(n: int) -> str:
    return f"{n >> 10} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def _order(runs: Sequence[Dict[str, Any]], key: str) -> List[str]:
    out: List[str] = []
    for r in runs:
        if r[key] not in out:
            out.append(r[key])
    return out


def _table(rs: List[Dict[str, Any]], rate: str, unit: str, us: bool) -> List[str]:
    """One table: a row per client implementation (best round), ratios against pyws."""
    out: List[str] = []
    impls = _order(rs, "impl")
    best = {i: max((r for r in rs if r["impl"] == i), key=lambda r: r[rate]) for i in impls}
    ref = best.get("pyws")
    lat = "us" if us else "ms"
    div = 1.0 if us else 1000.0
    out.append(f"  {'client':<18}{unit:>9}{'p50 ' + lat:>9}{'p99 ' + lat:>9}{'cli CPU':>9}"
               f"{'cli us/msg':>11}{'srv CPU':>9}{'other':>7}{'pyws/peer':>10}{'CPU/msg':>9}  "
               f"{'per-round ' + unit:<22}per-round pyws/peer")
    for i in impls:
        b = best[i]
        mine = sorted((r for r in rs if r["impl"] == i), key=lambda r: r["round"])
        per = ",".join(_k(r[rate]) for r in mine)
        ratio = f"{ref[rate] / b[rate]:.2f}x" if ref and b[rate] > 0 else "-"
        cpu_ratio = "-"
        if ref and ref.get("client_cpu_us_per_msg") and b.get("client_cpu_us_per_msg"):
            cpu_ratio = f"{b['client_cpu_us_per_msg'] / ref['client_cpu_us_per_msg']:.2f}x"
        rr = []
        for r in mine:
            p = next((x for x in rs if x["impl"] == "pyws" and x["round"] == r["round"]), None)
            if p and r[rate] > 0:
                rr.append(f"{p[rate] / r[rate]:.2f}x")
        srv = b.get("server_cpu_pct", -1)
        oth = max(r.get("other_cpu_pct", -1) for r in mine)  # the most disturbed round
        out.append(f"  {i:<18}{_k(b[rate]):>9}{b['p50_us'] / div:>9.{1 if us else 2}f}"
                   f"{b['p99_us'] / div:>9.{1 if us else 2}f}{b['client_cpu_pct']:>8.0f}%"
                   f"{b.get('client_cpu_us_per_msg') or 0:>11.1f}"
                   f"{(f'{srv:.0f}%' if srv >= 0 else '?'):>9}"
                   f"{(f'{oth:.0f}%' if oth >= 0 else '?'):>7}{ratio:>10}{cpu_ratio:>9}  "
                   f"{per:<22}{','.join(rr)}")
    a = best.get("pyws-async")
    for i in impls:
        if a is None or i == "pyws-async":
            continue
        b = best[i]
        per_r = []
        for r in sorted((r for r in rs if r["impl"] == "pyws-async"), key=lambda r: r["round"]):
            p = next((x for x in rs if x["impl"] == i and x["round"] == r["round"]), None)
            if p and p[rate] > 0:
                per_r.append(f"{r[rate] / p[rate]:.2f}x")
        cpu = "-"
        if a.get("client_cpu_us_per_msg") and b.get("client_cpu_us_per_msg"):
            cpu = f"{b['client_cpu_us_per_msg'] / a['client_cpu_us_per_msg']:.2f}x"
        out.append(f"  pyws-async/{i}: {a[rate] / b[rate]:.2f}x {unit} (best rounds), per round "
                   f"{','.join(per_r)}; CPU/msg {cpu} (>1: pyws-async cheaper)"
                   if b[rate] > 0 else f"  pyws-async/{i}: -")
    return out


def _details(rs: List[Dict[str, Any]]) -> List[str]:
    out: List[str] = []
    seen = set()
    for r in rs:
        d = r.get("detail") or {}
        parts = [f"{k}: {v}" for k, v in d.items() if k in ("mask", "utf8", "loop", "threads")]
        vers = d.get("versions") or {}
        line = f"{r['impl']} " + " ".join(f"{k} {v}" for k, v in vers.items())
        if parts:
            line += " - " + "; ".join(parts)
        if line not in seen:
            seen.add(line)
            out.append(f"    {line}")
    for b in sorted({f"server {r['server']}: " + re.sub(r":\d+/", ":PORT/", r["banner"])
                     for r in rs if r.get("banner")}):
        out.append(f"    {b}")
    return out


PLACE = {"same": "server and client pinned to one CPU",
         "split": "server and client pinned to two CPUs",
         "free": "not pinned"}


def _place(r: Dict[str, Any]) -> str:
    p = r.get("placement", "free")
    return f"{p}: {PLACE.get(p, p)}"


def client_tables(runs: List[Dict[str, Any]]) -> List[str]:
    out: List[str] = []
    blocking = [r for r in runs if r["mode"] == "blocking"]
    inloop = [r for r in runs if r["mode"] == "inloop"]
    keys: List[Tuple[Any, ...]] = []
    for r in blocking:
        k = (r["size"], r.get("placement", "free"), r["server"])
        if k not in keys:
            keys.append(k)
    places = _order([dict(r, placement=r.get("placement", "free")) for r in runs], "placement")
    for size, place, srv in sorted(keys, key=lambda k: (
            k[0], places.index(k[1]), _order(blocking, "server").index(k[2]))):
        rs = [r for r in blocking if r["size"] == size and r["server"] == srv
              and r.get("placement", "free") == place]
        c = rs[0]
        out.append("")
        out.append(f"blocking client, 1 connection, 1 message in flight: round trips/s against "
                   f"the {srv} echo server, {_size(size)} {c['opcode']} messages, recv timeout "
                   f"{c.get('timeout_s')} s, {c['duration_s']:.1f} s per run, {_place(c)}; "
                   f"best of {max(r['round'] for r in rs)} interleaved round(s)")
        out += _table(rs, "rt_per_s", "rt/s", us=True)
    lkeys: List[Tuple[Any, ...]] = []
    for r in inloop:
        lk = (r["size"], r["inflight"], r.get("placement", "free"), r["server"])
        if lk not in lkeys:
            lkeys.append(lk)
    for size, k, place, srv in sorted(lkeys, key=lambda x: (
            x[0], x[1], places.index(x[2]), _order(inloop, "server").index(x[3]))):
        rs = [r for r in inloop if r["size"] == size and r["inflight"] == k
              and r["server"] == srv and r.get("placement", "free") == place]
        c = rs[0]
        out.append("")
        out.append(f"in-loop clients, {c['conns']} connections x {k} in flight, one thread: "
                   f"messages/s against the {srv} echo server, {_size(size)} {c['opcode']} "
                   f"messages, {c['duration_s']:.1f} s per run, {_place(c)}; best of "
                   f"{max(r['round'] for r in rs)} interleaved round(s)")
        out += _table(rs, "msgs_per_s", "msgs/s", us=False)
    if runs:
        out.append("")
        out.append("  pyws/peer: pyws's rate over the peer's (best rounds; >1 = pyws faster). "
                   "CPU/msg: the peer's client CPU per message over pyws's (>1 = pyws cheaper). "
                   "srv CPU near 100%: the server, not the client, set the pace. other: CPU "
                   "used by the rest of the machine during the most disturbed of the rounds "
                   "(% of one CPU; more than a few % = a disturbed run).")
        out += _details(runs)
        g = runs[0].get("pyws_git") or {}
        if g:
            mod = ", ".join(g.get("modified") or []) or "none"
            out.append(f"    pyws under test: commit {g.get('commit')}, files changed since: "
                       f"{mod}")
    return out
