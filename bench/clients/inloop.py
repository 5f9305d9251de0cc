"""In-loop concurrent echo clients for bench/test_clients.py: N connections in one thread, each
keeping K messages in flight (K=1: sequential round trips per connection).

    python bench/clients/inloop.py --impl pyws|pyws-async|websockets|aiohttp --url ws://127.0.0.1:PORT/ \
        [--conns 64] [--inflight 1] [--size 64] [--duration 3] [--warmup 1] [--text] \
        [--server-pid PID] [--cprofile FILE]

Every connection is opened first (all of them, before any message); then each sends K
messages and answers every echo with the next message at once. Every echo is checked (the
payloads rotate, so an echo of the wrong message is caught) and timed from its send (echoes
come back in order: a FIFO of send times per connection). Counted: echoes received during the
--duration seconds that follow --warmup seconds of the same load. Afterwards no new message is
sent, the ones in flight are received (bounded), every connection is closed. Prints one JSON
line.

The clients, each as its users write it, on one thread:

- ``pyws``: ``mgr = pyws.Manager()``; ``mgr.ws_connect(url, handler)`` per connection; the
  handler answers ``EV_WS_MSG`` with ``conn.ws_send(next, OP_BINARY)``; ``mgr.poll(10)`` in a
  loop.
- ``websockets``: ``websockets.asyncio.client.connect(url, compression=None)``, one task per
  connection (``await ws.send(p)``; ``await ws.recv()``), on uvloop when installed.
- ``pyws-async``: ``pyws.aconnect(url)`` per connection, one task each (``await
  ws.send(p)``; ``async for msg in ws``), on uvloop when installed.
- ``aiohttp``: one ``aiohttp.ClientSession``; ``session.ws_connect(url)`` per connection, one
  task each (``await ws.send_bytes(p)``; ``await ws.receive()``), on uvloop when installed.
"""
from __future__ import annotations

import collections
import os
import sys
import time
from typing import Any, Callable, Deque, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (Meter, emit, fail, parser, payloads, percentiles,  # noqa: E402
                     run_profiled, versions)

MAX_SIZE = 64 * 1024 * 1024
OPEN_TIMEOUT = 20.0   # seconds to open every connection
DRAIN_TIMEOUT = 5.0   # seconds to receive what is still in flight after the measurement
CLOSE_TIMEOUT = 3.0   # seconds to close every connection


class Run:
    """What every implementation shares: phase, counters, samples, payloads, meter."""

    def __init__(self, args: Any) -> None:
        self.args = args
        self.pl = payloads(args.size, args.text)
        self.phase = 0          # 0 opening/warm-up, 1 measuring, 2 stopping
        self.count = 0          # echoes received while measuring
        self.warm = 0           # echoes received before
        self.after = 0          # echoes received after
        self.samples: List[int] = []
        self.meter = Meter(args.server_pid)
        self.open_s = 0.0
        self.cap = args.max_msgs

    def result(self, detail: Dict[str, Any], closed: int) -> Dict[str, Any]:
        a, m = self.args, self.meter
        doc: Dict[str, Any] = {
            "impl": a.impl, "size": a.size, "opcode": "text" if a.text else "binary",
            "conns": a.conns, "inflight": a.inflight, "msgs": self.count,
            "warmup_msgs": self.warm, "drained_msgs": self.after,
            "msgs_per_s": round(self.count / m.wall, 1) if m.wall > 0 else 0.0,
            "mb_per_s": round(self.count * a.size / m.wall / 1e6, 3) if m.wall > 0 else 0.0,
            "open_s": round(self.open_s, 3), "closed_cleanly": closed,
            "detail": detail, "python": sys.version.split()[0],
        }
        doc.update(percentiles(self.samples))
        doc.update(m.report(self.count))
        return doc


# ----------------------------------------------------------------------------- pyws

def run_pyws(run: Run) -> Dict[str, Any]:
    import pyws
    from pyws import EV_CLOSE, EV_ERROR, EV_WS_MSG, EV_WS_OPEN, OP_BINARY, OP_TEXT

    a = run.args
    pl = run.pl
    op = OP_TEXT if a.text else OP_BINARY
    attr_text = a.text
    perf = time.perf_counter_ns
    samples = run.samples
    append = samples.append
    opened: List[Any] = []
    closed: List[Any] = []
    errors: List[str] = []
    # per connection: [FIFO of send times, echoes received, messages sent]
    Fifo = collections.deque

    def handler(conn: Any, ev: int, data: Any) -> None:
        if ev == EV_WS_MSG:
            st = conn.userdata
            t1 = perf()
            dq = st[0]
            got = data.text if attr_text else data.data
            n = st[1]
            if got != pl[n & 7]:
                errors.append(f"connection {conn.id:#x}: echo {n} differs from what was sent")
                conn.close(1002)
                return
            st[1] = n + 1
            t0 = dq.popleft()
            ph = run.phase
            if ph == 1:
                append(t1 - t0)
                run.count += 1
                if run.count >= run.cap:
                    run.phase = 2
            elif ph == 0:
                run.warm += 1
            else:
                run.after += 1
                return
            s = st[2]
            st[2] = s + 1
            dq.append(perf())
            conn.ws_send(pl[s & 7], op)
        elif ev == EV_WS_OPEN:
            conn.userdata = [Fifo(), 0, 0]
            opened.append(conn)
        elif ev == EV_CLOSE:
            closed.append(conn)
        elif ev == EV_ERROR:
            errors.append(f"connection error: {data}")

    mgr = pyws.Manager(None, max_message_size=MAX_SIZE, write_limit=256 * 1024 * 1024)
    t0 = time.perf_counter()
    conns = [mgr.ws_connect(a.url, handler) for _ in range(a.conns)]
    deadline = t0 + OPEN_TIMEOUT
    while len(opened) < a.conns and not errors and time.perf_counter() < deadline:
        mgr.poll(10)
    if len(opened) < a.conns:
        fail(f"pyws: {len(opened)}/{a.conns} connections opened; {errors[:3]}")
    run.open_s = time.perf_counter() - t0
    for c in conns:
        st = c.userdata
        for _ in range(a.inflight):
            s = st[2]
            st[2] = s + 1
            st[0].append(perf())
            c.ws_send(pl[s & 7], op)
    t_start = time.perf_counter()
    t_meas = t_start + a.warmup
    t_end = t_meas + a.duration
    poll = mgr.poll
    now = t_start
    while now < t_meas and not errors and run.phase == 0:
        poll(10)
        now = time.perf_counter()
    run.meter.start()
    run.phase = 1
    while now < t_end and not errors and run.phase == 1:
        poll(10)
        now = time.perf_counter()
    run.phase = 2
    run.meter.stop()
    if errors:
        fail(f"pyws: {errors[:3]}")
    deadline = time.perf_counter() + DRAIN_TIMEOUT
    while any(c.userdata[0] for c in conns) and time.perf_counter() < deadline:
        poll(10)
    for c in conns:
        c.close(1000)
    deadline = time.perf_counter() + CLOSE_TIMEOUT
    while len(closed) < a.conns and time.perf_counter() < deadline:
        poll(10)
    n_closed = len(closed)
    mgr.close()
    detail = {"loop": f"pyws C loop ({mgr.backend}), Manager.poll(10)",
              "versions": versions("pyws")}
    return run.result(detail, n_closed)


# ----------------------------------------------------------------------------- asyncio

def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio default loop"
    uvloop.install()
    return f"uvloop {getattr(uvloop, '__version__', '?')}"


async def _drive(run: Run, open_one: Callable[[], Any], pump: Callable[..., Any],
                 close_one: Callable[[Any], Any]) -> int:
    """Open every connection (at most 64 at once), then one task per connection running
    ``pump(conn, state)``; flips the phases on time."""
    import asyncio
    a = run.args
    sem = asyncio.Semaphore(64)

    async def opened() -> Any:
        async with sem:
            return await open_one()

    t0 = time.perf_counter()
    conns = await asyncio.wait_for(asyncio.gather(*(opened() for _ in range(a.conns))),
                                   OPEN_TIMEOUT)
    run.open_s = time.perf_counter() - t0
    tasks = [asyncio.ensure_future(pump(c)) for c in conns]
    await asyncio.sleep(a.warmup)
    run.meter.start()
    run.phase = 1
    # wake every 50 ms to stop early if a task failed or the message cap was reached
    end = time.perf_counter() + a.duration
    while True:
        left = end - time.perf_counter()
        if left <= 0 or run.phase != 1 or any(t.done() for t in tasks):
            break
        await asyncio.sleep(min(0.05, left))
    run.phase = 2
    run.meter.stop()
    done, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT)
    for t in pending:
        t.cancel()
    for t in done:
        exc = t.exception()
        if exc is not None:
            fail(f"{a.impl}: {type(exc).__name__}: {exc}")
    results = await asyncio.wait_for(
        asyncio.gather(*(close_one(c) for c in conns), return_exceptions=True),
        CLOSE_TIMEOUT + 2)
    return sum(1 for r in results if r is True)


def run_websockets(run: Run) -> Dict[str, Any]:
    import asyncio

    import websockets
    from websockets import frames, speedups
    from websockets.asyncio.client import connect

    loop_name = _install_uvloop()
    a = run.args
    pl = run.pl
    perf = time.perf_counter_ns
    append = run.samples.append
    K = a.inflight

    async def open_one() -> Any:
        return await connect(a.url, compression=None, max_size=MAX_SIZE, ping_interval=None,
                             open_timeout=OPEN_TIMEOUT, close_timeout=CLOSE_TIMEOUT)

    async def pump(ws: Any) -> None:
        dq: Deque[int] = collections.deque()
        send, recv = ws.send, ws.recv
        s = n = 0
        for _ in range(K):
            dq.append(perf())
            await send(pl[s & 7])
            s += 1
        while True:
            got = await recv()
            t1 = perf()
            if got != pl[n & 7]:
                raise AssertionError(f"echo {n} differs from what was sent")
            n += 1
            t0 = dq.popleft()
            ph = run.phase
            if ph == 1:
                append(t1 - t0)
                run.count += 1
                if run.count >= run.cap:
                    run.phase = 2
            elif ph == 0:
                run.warm += 1
            else:
                run.after += 1
                if not dq:
                    return
                continue
            dq.append(perf())
            await send(pl[s & 7])
            s += 1

    async def close_one(ws: Any) -> bool:
        await ws.close()
        return True

    async def main() -> int:
        return await _drive(run, open_one, pump, close_one)

    closed = asyncio.run(main())
    detail = {"loop": loop_name, "mask": "websockets.speedups.apply_mask (C)"
              if getattr(frames, "apply_mask", None) is speedups.apply_mask else "pure Python",
              "versions": versions("websockets")}
    return run.result(detail, closed)


def run_aiohttp(run: Run) -> Dict[str, Any]:
    import asyncio

    import aiohttp
    from aiohttp import WSMsgType

    loop_name = _install_uvloop()
    a = run.args
    pl = run.pl
    perf = time.perf_counter_ns
    append = run.samples.append
    K = a.inflight
    text = a.text
    want = WSMsgType.TEXT if text else WSMsgType.BINARY
    session: List[Any] = []

    async def open_one() -> Any:
        return await session[0].ws_connect(a.url, autoping=True, compress=0,
                                           max_msg_size=MAX_SIZE, heartbeat=None)

    async def pump(ws: Any) -> None:
        dq: Deque[int] = collections.deque()
        send = ws.send_str if text else ws.send_bytes
        recv = ws.receive
        s = n = 0
        for _ in range(K):
            dq.append(perf())
            await send(pl[s & 7])
            s += 1
        while True:
            msg = await recv()
            t1 = perf()
            if msg.type is not want or msg.data != pl[n & 7]:
                raise AssertionError(f"echo {n}: {msg.type} differs from what was sent")
            n += 1
            t0 = dq.popleft()
            ph = run.phase
            if ph == 1:
                append(t1 - t0)
                run.count += 1
                if run.count >= run.cap:
                    run.phase = 2
            elif ph == 0:
                run.warm += 1
            else:
                run.after += 1
                if not dq:
                    return
                continue
            dq.append(perf())
            await send(pl[s & 7])
            s += 1

    async def close_one(ws: Any) -> bool:
        return bool(await ws.close())

    async def main() -> int:
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as sess:
            session.append(sess)
            return await _drive(run, open_one, pump, close_one)

    closed = asyncio.run(main())
    try:
        import importlib
        importlib.import_module("aiohttp._websocket.mask")
        mask = "aiohttp._websocket.mask (Cython)"
    except ImportError:
        mask = "pure Python"
    detail = {"loop": loop_name, "mask": mask, "versions": versions("aiohttp")}
    return run.result(detail, closed)


def run_pyws_async(run: Run) -> Dict[str, Any]:
    import asyncio

    import pyws

    loop_name = _install_uvloop()
    a = run.args
    pl = run.pl
    perf = time.perf_counter_ns
    append = run.samples.append
    K = a.inflight

    async def open_one() -> Any:
        return await pyws.aconnect(a.url, max_size=MAX_SIZE, open_timeout=OPEN_TIMEOUT,
                                   close_timeout=CLOSE_TIMEOUT)

    async def pump(ws: Any) -> None:
        dq: Deque[int] = collections.deque()
        send = ws.send
        s = n = 0
        for _ in range(K):
            dq.append(perf())
            await send(pl[s & 7])
            s += 1
        async for msg in ws:
            t1 = perf()
            if msg.data != pl[n & 7]:
                raise AssertionError(f"echo {n} differs from what was sent")
            n += 1
            t0 = dq.popleft()
            ph = run.phase
            if ph == 1:
                append(t1 - t0)
                run.count += 1
                if run.count >= run.cap:
                    run.phase = 2
            elif ph == 0:
                run.warm += 1
            else:
                run.after += 1
                if not dq:
                    return
                continue
            dq.append(perf())
            await send(pl[s & 7])
            s += 1
        raise AssertionError("the connection closed during the run")

    async def close_one(ws: Any) -> bool:
        return bool(await ws.close())

    async def main() -> int:
        return await _drive(run, open_one, pump, close_one)

    closed = asyncio.run(main())
    detail = {"loop": f"{loop_name}, pyws.aconnect (pyws.aio: one pyws loop per asyncio loop)",
              "versions": versions("pyws")}
    return run.result(detail, closed)


IMPLS = {"pyws": run_pyws, "pyws-async": run_pyws_async, "websockets": run_websockets,
         "aiohttp": run_aiohttp}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--conns", type=int, default=64, help="connections (default 64)")
    ap.add_argument("--inflight", type=int, default=1,
                    help="messages in flight per connection (default 1)")
    args = ap.parse_args()
    if args.impl not in IMPLS:
        fail(f"unknown --impl {args.impl!r}; known: {', '.join(IMPLS)}")
    if args.size < 1 or args.conns < 1 or args.inflight < 1:
        fail("--size, --conns and --inflight must be at least 1")
    run = Run(args)
    emit(run_profiled(lambda: IMPLS[args.impl](run), args.cprofile))


if __name__ == "__main__":
    main()
