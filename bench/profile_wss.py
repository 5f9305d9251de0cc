"""Where does a wss echo server spend its time? Starts one of test_wss.py's servers (pyws-wss,
picows-wss, pyws-ws, picows-ws) on 127.0.0.1 with a fresh certificate, drives it with
bench/loadgen.c (--tls for the -wss ones) and, during the measurement, attaches Linux perf to
the server process:

- syscalls per echoed message (perf stat on the syscall tracepoints: read/recvfrom,
  write/sendmsg/writev/sendto, epoll_wait/epoll_ctl) and server CPU-microseconds per message;
- with --perf-record, a sampled CPU profile (perf record -g), printed as the top symbols
  (self time, by shared object and symbol).

    .venv/bin/python bench/profile_wss.py [--servers pyws-wss,pyws-ws] [-s 4096] [-d 3]
        [--perf-record] [--top 25]

Needs perf and permission to trace the server (root, or kernel.perf_event_paranoid <= 1 and
tracefs access); without it the syscall counts are reported as unavailable. Not a benchmark
(tracing costs a little); bounded: the load client's duration plus fixed margins per server.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from harness import BUILD, build_loadgen, server  # noqa: E402
from test_wss import SERVERS  # noqa: E402

READS = ["read", "recvfrom", "recvmsg", "readv"]
WRITES = ["write", "sendmsg", "writev", "sendto"]
OTHER = ["epoll_wait", "epoll_ctl"]


def _perf_stat(pid: int, seconds: float) -> Optional[Dict[str, int]]:
    """Syscall counts of process pid over `seconds`, or None if perf cannot trace it."""
    if not shutil.which("perf"):
        return None
    events = ",".join(f"syscalls:sys_enter_{n}" for n in READS + WRITES + OTHER)
    r = subprocess.run(["perf", "stat", "-x", ",", "-e", events, "-p", str(pid), "--",
                        "sleep", f"{seconds:.3f}"], capture_output=True, text=True,
                       timeout=seconds + 20)
    out: Dict[str, int] = {}
    for line in r.stderr.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2].startswith("syscalls:sys_enter_"):
            try:
                out[parts[2][len("syscalls:sys_enter_"):]] = int(parts[0])
            except ValueError:  # "<not supported>" / "<not counted>"
                return None
    return out or None


def _perf_record(pid: int, seconds: float, data: str, top: int) -> List[str]:
    if not shutil.which("perf"):
        return ["  (perf not found)"]
    r = subprocess.run(["perf", "record", "-F", "999", "-g", "-o", data, "-p", str(pid), "--",
                        "sleep", f"{seconds:.3f}"], capture_output=True, text=True,
                       timeout=seconds + 30)
    if r.returncode != 0:
        return [f"  (perf record failed: {r.stderr.strip()[-300:]})"]
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                          "--sort", "dso,symbol", "-g", "none", "--percent-limit", "0.7"],
                         capture_output=True, text=True, timeout=120)
    lines = [ln for ln in rep.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    return ["  " + ln.strip() for ln in lines[:top]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", default="pyws-wss,pyws-ws,picows-wss,picows-ws")
    ap.add_argument("-c", type=int, default=64)
    ap.add_argument("-k", type=int, default=16)
    ap.add_argument("-s", type=int, default=4096)
    ap.add_argument("-d", type=float, default=3.0, help="measured seconds (default 3)")
    ap.add_argument("--perf-record", action="store_true",
                    help="also a sampled CPU profile of each server (a second run)")
    ap.add_argument("--top", type=int, default=25, help="symbols shown (default 25)")
    args = ap.parse_args()
    exe = build_loadgen()
    os.makedirs(BUILD, exist_ok=True)
    from _pki import make_pki
    from pathlib import Path
    with tempfile.TemporaryDirectory(prefix="pyws-wss-pki-") as tmp:
        pki = make_pki(Path(tmp))
        for name in [s.strip() for s in args.servers.split(",") if s.strip()]:
            script, tls, _module = SERVERS[name]
            argv = [os.path.join(HERE, "servers", script)]
            if tls:
                argv += ["--cert", pki.server_cert, "--key", pki.server_key]
            for record in ([False, True] if args.perf_record else [False]):
                log = os.path.join(BUILD, f"server-profile-{name}.log")
                with server(name, argv, log) as (proc, port, banner):
                    cmd = [exe, "--port", str(port), "-c", str(args.c), "-k", str(args.k),
                           "-s", str(args.s), "-d", str(args.d), "-w", "0.5",
                           "--pid", str(proc.pid)] + (["--tls"] if tls else [])
                    lg = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True)
                    # connect + handshakes are quick on 127.0.0.1; start well inside the
                    # measurement and stop before its end
                    time.sleep(0.5 + 0.6)
                    window = max(0.5, args.d - 1.0)
                    if record:
                        data = os.path.join(BUILD, f"perf-wss-{name}-{args.s}.data")
                        prof = _perf_record(proc.pid, window, data, args.top)
                        counts = None
                    else:
                        counts = _perf_stat(proc.pid, window)
                    out, err = lg.communicate(timeout=args.d + 30)
                if lg.returncode != 0:
                    print(f"{name}: loadgen failed ({lg.returncode}): {err.strip()}")
                    break
                res = json.loads(out.strip().splitlines()[-1])
                rate, cpu = res["msgs_per_s"], res["server_cpu_pct"]
                head = (f"{name} ({args.s} B, {'perf record running' if record else 'perf stat'}"
                        f"): {rate:.0f} msgs/s, server {cpu:.0f}% CPU = "
                        f"{cpu / 100 / rate * 1e6:.2f} CPU-us/msg, client {res['client_cpu_pct']:.0f}%"
                        f", tls {res.get('tls')}")
                print(head)
                if record:
                    print(f"  top symbols (self), {data}:")
                    print("\n".join(prof))
                    continue
                if counts is None:
                    print("  syscall counts unavailable (perf missing or not permitted)")
                    continue
                msgs = rate * window
                per = {k: v / msgs for k, v in counts.items() if v}
                rd = sum(counts.get(k, 0) for k in READS) / msgs
                wr = sum(counts.get(k, 0) for k in WRITES) / msgs
                print(f"  syscalls per message: reads {rd:.3f}, writes {wr:.3f}, "
                      f"messages per read {1 / rd if rd else 0:.1f}, per write "
                      f"{1 / wr if wr else 0:.1f};  "
                      + ", ".join(f"{k} {v:.3f}" for k, v in sorted(per.items())))


if __name__ == "__main__":
    main()
