"""Where does a pyws echo server spend its time? Runs the echo handler of examples/echo_server.py
in this process, drives it with bench/loadgen.c, and splits the loop's time between the C poll
(lib.pyws_poll: syscalls, parsing, unmasking, UTF-8, queueing) and the Python dispatch
(Manager._dispatch_batch: event structs -> objects -> handler -> ws_send -> lib.pyws_send).

    .venv/bin/python bench/profile_pyws.py [-c 64] [-k 16] [-s 64] [-d 3] [--cprofile]

Not a benchmark (it instruments the loop, which costs a little); bounded by the load client's
own duration plus a fixed margin. Connects only to 127.0.0.1.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "examples"))

import pyws  # noqa: E402
from pyws._lib import lib  # noqa: E402

from echo_server import handler  # noqa: E402  (the example's own handler, unchanged)

sys.path.insert(0, HERE)
from harness import build_loadgen  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", type=int, default=64)
    ap.add_argument("-k", type=int, default=16)
    ap.add_argument("-s", type=int, default=64)
    ap.add_argument("-d", type=float, default=3.0)
    ap.add_argument("--cprofile", action="store_true", help="also run cProfile (slower)")
    args = ap.parse_args()
    exe = build_loadgen()

    mgr = pyws.Manager(handler, max_message_size=64 << 20, write_limit=256 << 20)
    lst = mgr.listen("http://127.0.0.1:0")
    cmd = [exe, "--port", str(lst.port), "-c", str(args.c), "-k", str(args.k), "-s",
           str(args.s), "-d", str(args.d), "-w", "0.5", "--pid", str(os.getpid())]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    loop, evp = mgr._loop, mgr._evp
    dispatch = mgr._dispatch_batch
    poll = lib.pyws_poll
    clock, cpu = time.perf_counter_ns, time.thread_time_ns
    t_poll = t_disp = c_poll = c_disp = 0
    n_batches = n_events = 0
    prof = cProfile.Profile() if args.cprofile else None
    deadline = time.monotonic() + args.d + 30.0
    if prof:
        prof.enable()
    mono = time.monotonic
    next_check = mono() + 0.1
    while True:
        now = mono()
        if now >= next_check:  # is the load client done? (checked 10 times a second)
            if proc.poll() is not None or now > deadline:
                break
            next_check = now + 0.1
        a, ca = clock(), cpu()
        n = poll(loop, 50, evp)
        b, cb = clock(), cpu()
        if n > 0:
            dispatch(evp[0], n)
            c, cc = clock(), cpu()
            t_disp += c - b
            c_disp += cc - cb
            n_batches += 1
            n_events += n
        t_poll += b - a
        c_poll += cb - ca
    if prof:
        prof.disable()
    if proc.poll() is None:
        proc.kill()
    out, err = proc.communicate(timeout=10)
    mgr.close()
    res = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err}
    wall = t_poll + t_disp
    print(json.dumps(res))
    print(f"loop wall {wall / 1e9:.2f} s over {n_batches} batches, {n_events} events "
          f"({n_events / max(n_batches, 1):.1f} events/batch)")
    print(f"  C   lib.pyws_poll     wall {100 * t_poll / wall:5.1f}%   cpu {c_poll / 1e9:.2f} s "
          f"(waiting: {(t_poll - c_poll) / 1e9:.2f} s)")
    print(f"  Py  _dispatch_batch   wall {100 * t_disp / wall:5.1f}%   cpu {c_disp / 1e9:.2f} s")
    tot_cpu = c_poll + c_disp
    if n_events:
        print(f"  per event: C poll {c_poll / n_events:.0f} ns cpu, Python dispatch "
              f"{c_disp / n_events:.0f} ns cpu; Python share of CPU "
              f"{100 * c_disp / max(tot_cpu, 1):.0f}% (timer overhead included)")
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(15)
        print(s.getvalue())


if __name__ == "__main__":
    main()
