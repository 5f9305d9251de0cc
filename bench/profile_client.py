"""Where the blocking client's time goes: pyws.connect's send/recv as shipped against leaner
prototypes of the same two methods, patched onto the connection for their runs only (nothing in
pyws/ is changed), interleaved, against one echo server.

    .venv/bin/python bench/profile_client.py [-s 64] [-d 2] [-r 3] [--server picows|pyws]
        [--placement split|same|free] [--cprofile]

Variants (all with a recv timeout of 10 s, binary messages, one in flight):

- ``stock``: ``ws.send(p)`` / ``ws.recv()`` of pyws/client.py. Per round trip: send ->
  ``ws_send`` + ``poll(0)`` (the write) + ``above_high_water``; recv -> ``poll(0)``, then
  ``poll(wait)``. Three ``Manager.poll`` calls (three epoll_wait) per round trip when the echo
  is not back by the time recv starts (split placement: it never is).
- ``lean``: send = ``ws_send`` + ``poll(0)``; recv returns a queued message at once, else polls
  with the wait straight away (no ``poll(0)`` first: ``poll(wait)`` returns as soon as something
  is readable anyway), no ``above_high_water`` call (prototype only: the real client would check
  it only when ``ws_send`` left bytes queued). Two polls per round trip.
- ``deferred``: send = ``ws_send`` only; the write happens in recv's ``poll(wait)``, which
  flushes before it waits. One poll per round trip: what a write-through ``pyws_send`` in C (try
  ``sendmsg`` at once when nothing is queued) would give a blocking client that never calls
  recv too.
- ``spin``: ``lean``, but recv first polls without waiting for up to 100 us (busy-polling)
  before it blocks: trades client CPU for not sleeping through the wake-up of an idle CPU.

For each: round trips/s, p50 RTT, client CPU per round trip (user / system). ``--cprofile``
prints the top functions of one extra stock run.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from harness import BUILD, ROOT, cpus, server  # noqa: E402

import pyws  # noqa: E402
from pyws import OP_BINARY  # noqa: E402
from pyws.errors import ConnectionClosed  # noqa: E402

SLICE_MS = 1000
VARIANTS = ("stock", "lean", "deferred", "spin")
SPIN_NS = 100_000  # the "spin" variant polls without waiting for up to this long first


def methods(ws: Any, variant: str) -> Tuple[Callable[[bytes], Any], Callable[[], Any]]:
    if variant == "stock":
        return ws.send, ws.recv
    conn, mgr, q = ws._conn, ws._mgr, ws._queue
    poll, ws_send, popleft, mono = mgr.poll, conn.ws_send, q.popleft, time.monotonic
    timeout = ws.timeout

    def recv() -> Any:
        if q:
            return popleft()
        deadline = mono() + timeout
        while not q:
            if ws._closed:
                raise ConnectionClosed(ws.close_code, ws.close_reason)
            left = deadline - mono()
            if left <= 0:
                poll(0)
                if q:
                    break
                raise TimeoutError("no message")
            poll(min(SLICE_MS, max(1, int(left * 1000))))
        return popleft()

    if variant == "lean":
        def send(p: bytes) -> None:
            ws_send(p, OP_BINARY)
            poll(0)
    elif variant == "spin":
        perf = time.perf_counter_ns
        lean_recv = recv

        def send(p: bytes) -> None:
            ws_send(p, OP_BINARY)
            poll(0)

        def recv() -> Any:  # noqa: F811 - spin first, then the lean recv
            if not q:
                until = perf() + SPIN_NS
                while not q and not ws._closed and perf() < until:
                    poll(0)
            return lean_recv()
    else:
        def send(p: bytes) -> None:
            ws_send(p, OP_BINARY)
    return send, recv


def run_once(url: str, variant: str, size: int, duration: float, warmup: float
             ) -> Dict[str, float]:
    ws = pyws.connect(url, timeout=10, max_size=64 << 20, close_timeout=2)
    send, recv = methods(ws, variant)
    pl = [bytes([65 + i]) * size for i in range(8)]
    perf = time.perf_counter_ns
    rtts: List[int] = []
    n = 0
    end = perf() + int(warmup * 1e9)
    while perf() < end and n < 10_000_000:
        p = pl[n & 7]
        send(p)
        if recv().data != p:
            raise SystemExit("echo differs")
        n += 1
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = perf()
    end = t0 + int(duration * 1e9)
    n = 0
    while n < 10_000_000:
        p = pl[n & 7]
        a = perf()
        send(p)
        m = recv()
        b = perf()
        if m.data != p:
            raise SystemExit("echo differs")
        rtts.append(b - a)
        n += 1
        if b >= end:
            break
    t1 = perf()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    ws.close()
    rtts.sort()
    wall = (t1 - t0) / 1e9
    return {"rt_s": n / wall, "p50_us": rtts[len(rtts) // 2] / 1000,
            "user_us": (r1.ru_utime - r0.ru_utime) / n * 1e6,
            "sys_us": (r1.ru_stime - r0.ru_stime) / n * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-s", "--size", type=int, default=64)
    ap.add_argument("-d", "--duration", type=float, default=2.0)
    ap.add_argument("-w", "--warmup", type=float, default=0.3)
    ap.add_argument("-r", "--rounds", type=int, default=3)
    ap.add_argument("--server", choices=("picows", "pyws"), default="picows")
    ap.add_argument("--placement", choices=("split", "same", "free"), default="split")
    ap.add_argument("--cprofile", action="store_true")
    args = ap.parse_args()
    argv = ([os.path.join(HERE, "servers", "picows_echo.py")] if args.server == "picows"
            else [os.path.join(ROOT, "examples", "echo_server.py")])
    os.makedirs(BUILD, exist_ok=True)
    cs = cpus()
    pin = args.placement != "free" and len(cs) >= 2
    with server(args.server, argv, os.path.join(BUILD, "server-profile-client.log"),
                pin) as (proc, port, banner):
        if pin:
            os.sched_setaffinity(0, {cs[-1] if args.placement == "same" else cs[0]})
        url = f"ws://127.0.0.1:{port}/"
        print(f"server: {banner}; placement {args.placement}; {args.size} B binary; "
              f"{args.rounds} interleaved rounds of {args.duration} s")
        res: Dict[str, List[Dict[str, float]]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for v in VARIANTS:
                res[v].append(run_once(url, v, args.size, args.duration, args.warmup))
        print(f"  {'variant':<10}{'rt/s':>9}{'p50 us':>8}{'CPU us/rt':>11}{'user':>7}{'sys':>7}"
              f"{'vs stock':>10}  per round rt/s")
        best_stock = max(r["rt_s"] for r in res["stock"])
        for v in VARIANTS:
            b = max(res[v], key=lambda r: r["rt_s"])
            print(f"  {v:<10}{b['rt_s']:>9.0f}{b['p50_us']:>8.1f}"
                  f"{b['user_us'] + b['sys_us']:>11.1f}{b['user_us']:>7.1f}{b['sys_us']:>7.1f}"
                  f"{b['rt_s'] / best_stock:>9.2f}x  "
                  + ",".join(f"{r['rt_s'] / 1000:.1f}k" for r in res[v]))
        if args.cprofile:
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.runcall(run_once, url, "stock", args.size, args.duration, 0.1)
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
