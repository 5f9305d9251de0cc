"""Server memory per idle WebSocket, for docs/backpressure-and-memory.md.

    flock /tmp/pyws-bench.lock python scripts/conn_memory.py [--conns 1000] [--servers ...]

Starts each echo server in its own process on 127.0.0.1 (a free port), opens --warm idle
WebSockets (the one-time costs: imports, first buffers), reads the server's VmRSS from
/proc/PID/status, opens --conns more, waits a second, reads it again, and prints the growth
divided by --conns. The client is raw sockets in this process (a plain RFC 6455 handshake that
offers no compression, then nothing): what is measured is an open, idle, uncompressed
connection. Servers:

    pyws-callback, pyws-generator, pyws-async, pyws-threads  scripts/conformance_peer.py
        (pyws-threads only where pyws has the blocking style; it gets App(threads=) raised
        to hold every connection)
    websockets, aiohttp, picows                              bench/servers/*_echo.py

Bounded: every step has a timeout, and the servers are terminated at the end.
"""
from __future__ import annotations

import argparse
import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "scripts" / "conformance_peer.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(name: str, port: int) -> List[str]:
    if name.startswith("pyws-"):
        return [sys.executable, str(PEER), "server", "--style", name[5:], "--port", str(port)]
    return [sys.executable, str(ROOT / "bench" / "servers" / f"{name}_echo.py"),
            "--host", "127.0.0.1", "--port", str(port)]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_ws(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"no 101: {head[:80]!r}")
    return s


def measure(name: str, warm: int, conns: int) -> Optional[float]:
    port = free_port()
    env = dict(os.environ)
    if name == "pyws-threads":
        env["PYWS_THREADS"] = str(warm + conns + 16)
    proc = subprocess.Popen(command(name, port), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    socks: List[socket.socket] = []
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    print(f"{name}: did not start: {err.strip()[-300:]}")
                    return None
                time.sleep(0.1)
        socks += [open_ws(port) for _ in range(warm)]
        time.sleep(1.0)
        before = rss_kib(proc.pid)
        socks += [open_ws(port) for _ in range(conns)]
        time.sleep(1.0)
        after = rss_kib(proc.pid)
        per = (after - before) / conns
        print(f"{name:16} RSS {before / 1024:7.1f} MiB with {warm} -> {after / 1024:7.1f} MiB "
              f"with {warm + conns}: {per:6.1f} KiB per idle connection", flush=True)
        return per
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--warm", type=int, default=100)
    ap.add_argument("--servers", default="pyws-callback,pyws-generator,pyws-async,pyws-threads,"
                                         "websockets,aiohttp,picows")
    args = ap.parse_args()
    results = {}
    for name in args.servers.split(","):
        if name == "pyws-threads":
            r = subprocess.run([sys.executable, str(PEER), "has-threads"])
            if r.returncode != 0:
                print("pyws-threads     skipped: this pyws has no blocking (threads) style")
                continue
        per = measure(name, args.warm, args.conns)
        if per is not None:
            results[name] = per
    base = results.get("pyws-callback")
    if base:
        print("relative to pyws-callback: " + ", ".join(
            f"{n} {v / base:.2f}x" for n, v in results.items() if n != "pyws-callback"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
