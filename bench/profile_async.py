"""What does the asyncio driver cost per message? Runs, in this process and one after the other,
the callback echo of examples/echo_server.py (driven by ``mgr.poll``) and the ``async def``
echo of bench/servers/pyws_async_echo.py (driven by an asyncio loop through pyws.aio, and by
uvloop with ``--uvloop``), each against bench/loadgen.c, in interleaved rounds.

    .venv/bin/python bench/profile_async.py [-c 64] [-k 16] [-s 64] [-d 2] [-r 2]
                                            [--modes callback,async,async-uv] [--cprofile]

Per run: msgs/s, this process's CPU during the measurement (loadgen's --pid) and the CPU per
message; at the end the async modes' extra CPU per message over the callback path (the asyncio
layer's cost, µs) and the throughput ratio. ``--cprofile`` profiles the async runs (slower:
read the shares, not the rate). Not a benchmark of record (bench/test_async.py is); a quick
before/after for work on pyws/aio.py and pyws/asyncws.py. Connects only to 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "examples"))
sys.path.insert(0, os.path.join(HERE, "servers"))
sys.path.insert(0, HERE)

import pyws  # noqa: E402
import pyws.aio  # noqa: E402

from echo_server import handler  # noqa: E402  (the callback example's handler, unchanged)
from harness import build_loadgen  # noqa: E402
from pyws_async_echo import make_app  # noqa: E402  (the async bench server's App, unchanged)


def _cmd(exe: str, port: int, a: Any) -> List[str]:
    return [exe, "--port", str(port), "-c", str(a.c), "-k", str(a.k), "-s", str(a.s),
            "-d", str(a.d), "-w", "0.5", "--pid", str(os.getpid())]


def _result(proc: "subprocess.Popen[str]") -> Dict[str, Any]:
    out, err = proc.communicate(timeout=30)
    if proc.returncode != 0 or not out.strip():
        raise SystemExit(f"loadgen failed ({proc.returncode}): {err.strip()}")
    res: Dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return res


def run_callback(exe: str, a: Any) -> Dict[str, Any]:
    mgr = pyws.Manager(handler, max_message_size=64 << 20, write_limit=256 << 20)
    lst = mgr.listen("http://127.0.0.1:0")
    proc = subprocess.Popen(_cmd(exe, lst.port, a), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + a.d + 30
    while proc.poll() is None and time.monotonic() < deadline:
        for _ in range(200):
            mgr.poll(20)
    res = _result(proc)
    mgr.close()
    return res


def run_async(exe: str, a: Any, uv: bool, prof: Optional[cProfile.Profile]) -> Dict[str, Any]:
    async def main() -> Dict[str, Any]:
        app = make_app()
        b = pyws.aio.attach(app)
        lst = app.listen("127.0.0.1", 0)
        proc = subprocess.Popen(_cmd(exe, lst.port, a), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + a.d + 30
        if prof is not None:
            prof.enable()
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if prof is not None:
            prof.disable()
        res = _result(proc)
        await b.shutdown(1.0)
        b.close()
        app.mgr.close()
        return res

    if uv:
        import uvloop
        return uvloop.run(main())  # type: ignore[no-any-return]
    return asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", type=int, default=64)
    ap.add_argument("-k", type=int, default=16)
    ap.add_argument("-s", type=int, default=64)
    ap.add_argument("-d", type=float, default=2.0)
    ap.add_argument("-r", type=int, default=2, help="interleaved rounds")
    ap.add_argument("--modes", default="callback,async")
    ap.add_argument("--cprofile", action="store_true", help="profile the async runs")
    a = ap.parse_args()
    exe = build_loadgen()
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    prof = cProfile.Profile() if a.cprofile else None
    print(f"pyws from {os.path.dirname(pyws.__file__)}", flush=True)
    best: Dict[str, Dict[str, float]] = {}
    for r in range(1, a.r + 1):
        for m in modes:
            if m == "callback":
                res = run_callback(exe, a)
            else:
                res = run_async(exe, a, m == "async-uv", prof)
            rate, cpu = float(res["msgs_per_s"]), float(res["server_cpu_pct"])
            us = cpu / 100.0 / rate * 1e6 if rate else 0.0
            print(f"r{r} {m:9s} {rate:10.0f} msgs/s  srv CPU {cpu:5.1f}%  {us:.3f} us/msg  "
                  f"p50 {res['p50_us']:.0f} us", flush=True)
            b = best.get(m)
            if b is None or rate > b["rate"]:
                best[m] = {"rate": rate, "us": us}
    cb = best.get("callback")
    if cb:
        for m, b in best.items():
            if m != "callback":
                print(f"{m}: {b['rate'] / cb['rate']:.2f}x the callback rate; "
                      f"{b['us'] - cb['us']:+.3f} us CPU/msg over it "
                      f"({cb['us'] / b['us']:.2f}x its msgs per CPU-s)")
    if prof is not None:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        print(s.getvalue())


if __name__ == "__main__":
    main()
