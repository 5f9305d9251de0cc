"""What does pyws's Python layer add to one ping-pong round trip (1 connection, one 32-byte
message in flight)? Everything runs in this one process and thread, over a real 127.0.0.1
socket: a raw client socket sends one masked frame, one ``poll`` of the server flushes the
previous echo, reads the frame and dispatches it, then the client reads the previous echo.
So each round trip is exactly the server's steady-state iteration (epoll_wait, recvfrom,
sendmsg) plus the client's send and recv, with no cross-CPU wake-up to blur it; the same loop
is timed with several servers, interleaved, best of --repeat:

  raw       the C engine driven by a minimal Python loop: lib.pyws_poll, struct.unpack_from of
            the event, lib.pyws_send (the floor for any Python driver of this engine)
  manager   examples/echo_server.py's handler on a pyws.Manager (mgr.poll(200), as the example
            runs it)
  manager-min  the same Manager with a handler that only does conn.ws_send(msg.data, msg.opcode)

    PYTHONPATH=build/dev .venv/bin/python bench/profile_pingpong.py [-n 20000] [--repeat 5]
                                                                     [--cprofile]

manager - raw is what Manager.poll's Python costs per message beyond the least a Python loop
must do. A micro-benchmark: run it under flock /tmp/pyws-bench.lock like the others.
"""
from __future__ import annotations

import argparse
import base64
import cProfile
import io
import os
import pstats
import socket
import struct
import sys
import time
from typing import Any, Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "examples"))

import pyws  # noqa: E402
from pyws._lib import ffi, lib  # noqa: E402
from pyws.constants import EV_HTTP_MSG, EV_WS_MSG  # noqa: E402

from echo_server import handler as example_handler  # noqa: E402  (the example's, unchanged)

SIZE = 32
PAYLOAD = bytes(range(SIZE))
# a binary frame, masked with the key 0 (the payload is then sent as it is)
FRAME = bytes([0x82, 0x80 | SIZE, 0, 0, 0, 0]) + PAYLOAD
ECHO = bytes([0x82, SIZE]) + PAYLOAD


def client(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    return s


def read_head(s: socket.socket, pump: Callable[[], None]) -> None:
    s.setblocking(False)
    got = b""
    deadline = time.monotonic() + 5
    while b"\r\n\r\n" not in got:
        if time.monotonic() > deadline:
            raise RuntimeError("no 101 from the server")
        pump()
        try:
            got += s.recv(4096)
        except BlockingIOError:
            pass
    if not got.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"upgrade refused: {got!r}")
    s.setblocking(True)


def pingpong(s: socket.socket, step: Callable[[], None], n: int) -> float:
    """n round trips; returns ns per round trip. The echo of frame i is written by the step
    that reads frame i + 1 (pyws flushes at the start of a poll), as in a real server."""
    send, recv_into = s.send, s.recv_into
    buf = bytearray(len(ECHO))
    view = memoryview(buf)
    send(FRAME)
    step()  # reads frame 0, queues its echo
    t0 = time.perf_counter_ns()
    for _ in range(n):
        send(FRAME)
        step()  # flushes the previous echo, reads this frame, queues its echo
        got = 0
        while got < len(ECHO):
            got += recv_into(view[got:])
    dt = time.perf_counter_ns() - t0
    if bytes(buf) != ECHO:
        raise RuntimeError(f"bad echo {bytes(buf)!r}")
    return dt / n


def raw_server() -> Any:
    """The engine with the least Python a driver needs: one poll, one unpack, one send."""
    loop = lib.pyws_loop_new()
    opts = ffi.new("pyws_opts *")
    lib.pyws_opts_default(opts)
    lid = ffi.new("uint64_t *")
    assert lib.pyws_listen(loop, b"127.0.0.1", 0, opts, lid) == 0
    port = lib.pyws_local_port(loop, lid[0])
    evp = ffi.new("pyws_event **")
    size = ffi.sizeof("pyws_event")
    unpack = struct.Struct("@iiiQQQQQQ").unpack_from
    poll, send, buffer = lib.pyws_poll, lib.pyws_send, ffi.buffer

    def step() -> None:
        n = poll(loop, 0, evp)
        evs = evp[0]
        b = buffer(evs, n * size)
        for i in range(n):
            t, op, _c, cid, dptr, ln, _d2, _l2, _a = unpack(b, i * size)
            if t == EV_WS_MSG:
                send(loop, cid, op, buffer(evs[i].data, ln)[:], ln, 1)
            elif t == EV_HTTP_MSG:
                lib.pyws_ws_upgrade(loop, cid, ffi.NULL, ffi.NULL)
    return step, port, lambda: lib.pyws_loop_free(loop)


def manager_server(h: Any, timeout: int) -> Any:
    mgr = pyws.Manager(h, max_message_size=64 << 20, write_limit=256 << 20)
    lst = mgr.listen("http://127.0.0.1:0")
    poll = mgr.poll
    return (lambda: poll(timeout)), lst.port, mgr.close


def min_handler(conn: pyws.Connection, ev: int, data: Any) -> None:
    if ev == EV_WS_MSG:
        conn.ws_send(data.data, data.opcode)
    elif ev == EV_HTTP_MSG:
        conn.ws_upgrade(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=20000, help="round trips per run (default 20000)")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved runs (default 5)")
    ap.add_argument("--cprofile", action="store_true",
                    help="then one cProfile'd run of the manager server")
    args = ap.parse_args()
    makers: Dict[str, Callable[[], Any]] = {
        "raw": raw_server,
        "manager": lambda: manager_server(example_handler, 200),
        "manager-min": lambda: manager_server(min_handler, 200),
    }
    servers = {}
    for name, make in makers.items():
        step, port, close = make()
        s = client(port)
        read_head(s, step)
        servers[name] = (step, s, close)
    best: Dict[str, List[float]] = {k: [] for k in servers}
    for _ in range(args.repeat):
        for name, (step, s, _close) in servers.items():
            best[name].append(pingpong(s, step, args.n))
    raw = min(best["raw"])
    print(f"in-process ping-pong, {SIZE} B binary, {args.n} round trips x {args.repeat} "
          f"interleaved runs; ns per round trip (best, median), and minus raw")
    for name, v in best.items():
        v.sort()
        print(f"  {name:<12} {v[0]:8.0f} {v[len(v) // 2]:8.0f}   {v[0] - raw:+7.0f}")
    if args.cprofile:
        step, s, _close = servers["manager"]
        prof = cProfile.Profile()
        prof.enable()
        pingpong(s, step, args.n)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
        print(out.getvalue())
    for step, s, close in servers.values():
        s.close()
        close()


if __name__ == "__main__":
    main()
