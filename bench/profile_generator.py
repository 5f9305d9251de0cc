"""Where does the generator-style App spend its time, compared with the callback API? Two parts:

1. End to end, in this process: the callback echo handler (examples/echo_server.py), the
   generator echo handler (bench/servers/pyws_generator_echo.py, the README's
   ``msg = yield ws.recv(); ws.send(msg)``) and that same handler with the "lean" prototype
   below, each driven by bench/loadgen.c in turn (interleaved rounds). For each: msgs/s, and
   the loop's CPU per message split between the C poll (``lib.pyws_poll``) and the Python
   dispatch (``Manager._dispatch_batch`` + App + Driver + handler + ``ws_send``).
2. Micro, no network (timeit): the Python cost per message of each layer of the generator
   path against a fake connection whose ``ws_send`` does nothing, peeled one layer at a time,
   next to the callback handler's cost.

    .venv/bin/python bench/profile_generator.py [-c 64 -k 16 -s 64 -d 2 -r 2] [--cprofile]
                                                [--skip-e2e] [--skip-micro]

The "lean" prototype changes nothing under pyws/: it is installed by patching pyws's classes in
THIS process only while its runs last (and removed after), to measure what these changes to
pyws/websocket.py and pyws/app.py would save:

- ``ws.recv()`` without a timeout returns one shared ``Recv`` object (no allocation and no
  ``__init__`` chain per message; safe: a timeout-less Recv never holds a timer) -- pyws's own
  ``pyws.websocket._RECV_FOREVER`` when it has one;
- ``ws.send(msg)`` checks the open state inline and calls ``conn.ws_send`` directly;
- ``Driver.message`` fast path: when the handler waits in that shared Recv and the WebSocket is
  open, resume it with ``gen.send(msg)`` and, when it yields the shared Recv again with nothing
  queued, park it right there (no ``step`` loop, no ``connected`` property, no isinstance
  chain); anything else falls back to the existing logic;
- the App routes a connection's events to its WebSocket directly (``conn.handler`` set when it
  opens) instead of through ``App._on_event`` and the ``_sockets`` lookup.

Not a benchmark (it instruments the loop); bounded: each load-client run by its own duration
plus a fixed margin. Connects only to 127.0.0.1.
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
import timeit
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "servers"))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import pyws  # noqa: E402
from pyws import app as app_mod  # noqa: E402
from pyws import websocket as ws_mod  # noqa: E402
from pyws._lib import lib  # noqa: E402
from pyws.constants import EV_WS_MSG, OP_BINARY  # noqa: E402
from pyws.message import HttpMessage, Message, WsMessage  # noqa: E402
from pyws.request import Request  # noqa: E402

from echo_server import handler as callback_handler  # noqa: E402  (the example, unchanged)
from harness import build_loadgen  # noqa: E402
from pyws_generator_echo import make_app  # noqa: E402

Recv, Driver, WebSocket = ws_mod.Recv, ws_mod.Driver, ws_mod.WebSocket


# ----------------------------------------------------------------------------- lean prototype

# the shared timeout-less Recv: pyws's own once it has one (pyws.websocket._RECV_FOREVER)
_PYWS_SHARED_RECV = getattr(ws_mod, "_RECV_FOREVER", None)
_RECV = _PYWS_SHARED_RECV if _PYWS_SHARED_RECV is not None else Recv(None)


@contextmanager
def lean() -> Iterator[None]:
    """Install the prototype fast paths on pyws's classes (this process only), remove them
    afterwards."""
    orig = {
        "recv": WebSocket.recv, "send": WebSocket.send, "message": Driver.message,
        "open": app_mod.App._open,
    }

    def recv(self: Any, timeout: Optional[float] = None) -> Any:
        return _RECV if timeout is None else Recv(timeout)

    send_slow = orig["send"]

    def send(self: Any, message: Any) -> None:
        if self._accepted is True and message.__class__ is Message:
            self.conn.ws_send(message.data, message.opcode)
        else:
            send_slow(self, message)

    message_slow = orig["message"]

    def message(self: Any, ws: Any, msg: Any) -> None:
        if ws._waiting is _RECV and ws._accepted is True:
            ws._waiting = None
            gen = ws._gen
            try:
                w = gen.send(msg)
            except StopIteration:
                self.finished(ws, None)
                return
            except Exception as e:
                self.finished(ws, e)
                return
            if (w is _RECV and not ws._queue and ws._accepted is True
                    and ws.close_code is None and not ws.conn.closed):
                ws._waiting = w  # parked again: the common case, done
                return
            _after_yield(self, ws, w)
            return
        message_slow(self, ws, msg)

    open_orig = orig["open"]

    def open_(self: Any, conn: Any, hm: Any, route: Any, params: Any) -> None:
        open_orig(self, conn, hm, route, params)
        ws = self._sockets.get(conn.id)
        if ws is None:
            return
        on_message = self._driver.message
        fallback = self._on_event

        def conn_handler(c: Any, ev: int, data: Any) -> None:
            if ev == EV_WS_MSG:
                on_message(ws, data)
            else:
                fallback(c, ev, data)

        conn.handler = conn_handler  # the dispatch calls conn.handler before the default

    if _PYWS_SHARED_RECV is None:
        WebSocket.recv = recv
    WebSocket.send = send
    Driver.message = message
    app_mod.App._open = open_
    try:
        yield
    finally:
        WebSocket.recv = orig["recv"]
        WebSocket.send = orig["send"]
        Driver.message = orig["message"]
        app_mod.App._open = orig["open"]


def _after_yield(driver: Any, ws: Any, w: Any) -> None:
    """The generator has just yielded w outside the fast case: do what Driver.step does with a
    yielded waitable, without sending into the generator first. Rare in the echo (a close, a
    queued message); kept simple by handing every case that must resume the generator back to
    Driver.step."""
    if isinstance(w, Recv):
        if ws._queue:
            value = ws._queue.popleft()
            if ws._paused and len(ws._queue) <= driver.max_queue // 2:
                ws._paused = False
                ws.conn.resume_reading()
            driver.step(ws, value, None)
            return
        if ws._accepted is not True or ws.conn.closed or ws.close_code is not None:
            exc = None
            if ws._told_none:  # as Driver.step: None once, then ConnectionClosed
                ws._told_closed = True
                exc = pyws.ConnectionClosed(ws.close_code, ws.close_reason)
            ws._told_none = True
            driver.step(ws, None, exc)
            return
        ws._waiting = w
        if w.timeout is not None:
            w.timer = driver.app.mgr.timer(w.timeout, lambda: driver._timed_out(ws, w))
        return
    # Sleep, Drain or something wrong: let the original logic handle it by re-yielding is not
    # possible, so mirror it
    if isinstance(w, ws_mod.Sleep):
        if not ws.connected:
            driver.step(ws, None, pyws.ConnectionClosed(ws.close_code, ws.close_reason))
            return
        ws._waiting = w
        w.timer = driver.app.mgr.timer(max(0.0, w.seconds), lambda: driver._woke(ws, w))
        return
    if isinstance(w, ws_mod.Drain):
        if not ws.connected:
            driver.step(ws, None, pyws.ConnectionClosed(ws.close_code, ws.close_reason))
        elif ws.conn.write_buffer_size < driver.app.high_water:
            driver.step(ws, None, None)
        else:
            ws._waiting = w
        return
    driver.step(ws, None, TypeError(f"a handler yields ws.recv(), ws.sleep() or ws.drain(), "
                                    f"not {w!r}"))


# ----------------------------------------------------------------------------- end to end

def run_e2e(variant: str, exe: str, args: Any, prof: Optional[cProfile.Profile]
            ) -> Dict[str, Any]:
    if variant == "callback":
        mgr = pyws.Manager(callback_handler, max_message_size=64 << 20, write_limit=256 << 20)
        lst = mgr.listen("http://127.0.0.1:0")
        closer: Callable[[], None] = mgr.close
    else:
        app = make_app()
        lst = app.listen("127.0.0.1", 0)
        mgr = app.mgr
        closer = app.close
    cmd = [exe, "--port", str(lst.port), "-c", str(args.c), "-k", str(args.k), "-s",
           str(args.s), "-d", str(args.d), "-w", "0.5", "--pid", str(os.getpid())]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    loop, evp = mgr._loop, mgr._evp
    dispatch = mgr._dispatch_batch
    poll = lib.pyws_poll
    cpu = time.thread_time_ns
    c_poll = c_disp = n_events = 0
    deadline = time.monotonic() + args.d + 30.0
    mono = time.monotonic
    next_check = mono() + 0.1
    if prof:
        prof.enable()
    try:
        while True:
            now = mono()
            if now >= next_check:
                if proc.poll() is not None or now > deadline:
                    break
                next_check = now + 0.1
            ca = cpu()
            n = poll(loop, 50, evp)
            cb = cpu()
            c_poll += cb - ca
            if n > 0:
                dispatch(evp[0], n)
                c_disp += cpu() - cb
                n_events += n
    finally:
        if prof:
            prof.disable()
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate(timeout=10)
        closer()
    if not out.strip():
        raise SystemExit(f"loadgen failed against {variant}: {err.strip()}")
    res: Dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    res.update(variant=variant, poll_ns_per_event=c_poll / max(n_events, 1),
               disp_ns_per_event=c_disp / max(n_events, 1), events=n_events)
    return res


def e2e(args: Any) -> None:
    exe = build_loadgen()
    variants = ["callback", "generator", "generator+lean"]
    runs: List[Dict[str, Any]] = []
    for rnd in range(1, args.r + 1):
        for v in variants:
            if v == "generator+lean":
                with lean():
                    r = run_e2e(v, exe, args, None)
            else:
                r = run_e2e(v, exe, args, None)
            r["round"] = rnd
            runs.append(r)
            print(f"  round {rnd} {v:<15} {r['msgs_per_s']:>9.0f} msgs/s  "
                  f"C poll {r['poll_ns_per_event']:5.0f} ns/msg  Python "
                  f"{r['disp_ns_per_event']:5.0f} ns/msg  (process CPU "
                  f"{r['server_cpu_pct']:.0f}%, client {r['client_cpu_pct']:.0f}%)", flush=True)
    print()
    print(f"end to end, in-process, {args.c} conns x {args.k} in flight x {args.s} B, best of "
          f"{args.r} interleaved round(s):")
    best = {v: max((r for r in runs if r["variant"] == v), key=lambda r: r["msgs_per_s"])
            for v in variants}
    base = best["callback"]
    print(f"  {'variant':<16}{'msgs/s':>10}{'vs callback':>13}{'C ns/msg':>10}"
          f"{'Py ns/msg':>11}{'Py extra':>10}")
    for v in variants:
        b = best[v]
        print(f"  {v:<16}{b['msgs_per_s']:>10.0f}{b['msgs_per_s'] / base['msgs_per_s']:>12.2f}x"
              f"{b['poll_ns_per_event']:>10.0f}{b['disp_ns_per_event']:>11.0f}"
              f"{b['disp_ns_per_event'] - base['disp_ns_per_event']:>+10.0f}")
    if args.cprofile:  # one more generator run, profiled, outside the table
        prof = cProfile.Profile()
        r = run_e2e("generator", exe, args, prof)
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(16)
        print(f"\ncProfile of one more generator run ({r['msgs_per_s']:.0f} msgs/s under the "
              f"profiler; it inflates per-call costs, read the shares):")
        print(s.getvalue())


# ----------------------------------------------------------------------------- micro

class FakeConn:
    """Just enough of pyws.Connection for the App, the WebSocket and the Driver."""

    __slots__ = ("id", "closed", "close_code", "close_reason", "handler", "remote_addr", "sent",
                 "write_buffer_size")

    def __init__(self) -> None:
        self.id = 0x1001
        self.closed = False
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.handler: Any = None
        self.remote_addr = "127.0.0.1:40000"
        self.sent = 0
        self.write_buffer_size = 0

    def ws_send(self, data: bytes, op: int = OP_BINARY, fin: bool = True) -> None:
        pass

    def ws_upgrade(self, hm: Any = None, protocol: Any = None, headers: Any = None) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass


def _open_generator_ws() -> Tuple[Any, FakeConn, Any]:
    """An App with the generator echo route, and one WebSocket opened on a fake connection
    (the handler has started and waits in ws.recv())."""
    app = make_app()
    fc = FakeConn()
    hm = HttpMessage(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", b"", True)
    route = app._ws_routes[0]
    app._open(fc, hm, route, {})  # a FakeConn stands in for the Connection
    ws = app._sockets[fc.id]
    assert ws._waiting is not None and ws._accepted is True, "handler did not reach recv()"
    return app, fc, ws


def _ns(stmt: Callable[[], Any], n: int) -> float:
    """Best-of-7 ns per call of stmt (n calls per repeat)."""
    t = min(timeit.repeat(stmt, number=n, repeat=7))
    return t / n * 1e9


def micro(args: Any) -> None:
    n = args.n
    data = b"x" * 64
    msg = WsMessage(data, OP_BINARY)
    rows: List[Tuple[str, float, str]] = []

    fc0 = FakeConn()
    t_cb = _ns(lambda: callback_handler(fc0, EV_WS_MSG, WsMessage(data, OP_BINARY)), n)
    rows.append(("callback: handler(conn, EV_WS_MSG, WsMessage(...))", t_cb,
                 "examples/echo_server.py's handler: the reference"))
    t_msg = _ns(lambda: WsMessage(data, OP_BINARY), n)
    rows.append(("  of which WsMessage(data, op)", t_msg, "built by the dispatch in both APIs"))
    t_fsend = _ns(lambda: fc0.ws_send(data, OP_BINARY), n)
    rows.append(("  of which conn.ws_send (fake: no-op)", t_fsend, "the real one is in C poll + "
                 "Connection.ws_send, the same for both APIs"))

    app, fc, ws = _open_generator_ws()
    on_event, driver, gen = app._on_event, app._driver, ws._gen
    t_full = _ns(lambda: on_event(fc, EV_WS_MSG, WsMessage(data, OP_BINARY)), n)
    rows.append(("generator: App._on_event(conn, EV_WS_MSG, WsMessage(...))", t_full,
                 "the whole generator path per message"))
    t_message = _ns(lambda: driver.message(ws, msg), n)
    rows.append(("  Driver.message(ws, msg)", t_message,
                 f"App._on_event + _sockets.get: {t_full - t_msg - t_message:.0f} ns"))

    def step() -> None:
        driver.step(ws, msg, None)
    t_step = _ns(step, n)
    rows.append(("    Driver.step(ws, msg, None)", t_step,
                 f"message() around it (isinstance, _cancel, attrs): "
                 f"{t_message - t_step:.0f} ns"))
    t_gsend = _ns(lambda: gen.send(msg), n)
    rows.append(("      gen.send(msg): the handler's loop body", t_gsend,
                 f"step() loop around it (connected, _PENDING, isinstance chain, queue and "
                 f"state checks): {t_step - t_gsend:.0f} ns"))
    t_wsend = _ns(lambda: ws.send(msg), n)
    rows.append(("        ws.send(msg)", t_wsend,
                 f"_ensure_open + isinstance + conn.ws_send: {t_wsend - t_fsend:.0f} ns over "
                 f"the bare conn.ws_send"))
    t_recv = _ns(lambda: ws.recv(), n)
    rows.append(("        ws.recv()", t_recv,
                 "returns pyws's shared Recv" if _PYWS_SHARED_RECV is not None and
                 ws.recv() is _PYWS_SHARED_RECV else
                 "a new Recv each time: Recv.__init__ + super().__init__"))
    t_conn = _ns(lambda: ws.connected, n)
    rows.append(("        ws.connected (read once per step)", t_conn, "property: 3 checks"))

    def bare_gen() -> Any:
        send = fc.ws_send
        while True:
            m = yield _RECV
            send(m.data, m.opcode)
    g = bare_gen()
    next(g)
    t_bare = _ns(lambda: g.send(msg), n)
    rows.append(("      floor: a bare generator resumed with send(msg)", t_bare,
                 "yield a constant + call the send"))

    with lean():
        app2, fc2, ws2 = _open_generator_ws()
        h2 = fc2.handler
        assert h2 is not None, "lean prototype: conn.handler not set"
        t_lean = _ns(lambda: h2(fc2, EV_WS_MSG, WsMessage(data, OP_BINARY)), n)
        rows.append(("generator + lean prototype: conn.handler(conn, EV_WS_MSG, ...)", t_lean,
                     "see the module docstring"))

    print(f"micro: Python ns per message (best of 7 x {n}), fake connection, 64-byte binary "
          f"message")
    for name, t, note in rows:
        print(f"  {name:<66}{t:>7.0f} ns   {note}")
    print(f"  => generator path costs {t_full - t_cb:+.0f} ns/msg over the callback handler "
          f"({t_full / t_cb:.2f}x); with the lean prototype {t_lean - t_cb:+.0f} ns/msg "
          f"({t_lean / t_cb:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", type=int, default=64, help="connections (default 64)")
    ap.add_argument("-k", type=int, default=16, help="in flight per connection (default 16)")
    ap.add_argument("-s", type=int, default=64, help="payload bytes (default 64)")
    ap.add_argument("-d", type=float, default=2.0, help="seconds per run (default 2)")
    ap.add_argument("-r", type=int, default=2, help="interleaved rounds (default 2)")
    ap.add_argument("-n", type=int, default=100000, help="micro: calls per repeat")
    ap.add_argument("--cprofile", action="store_true",
                    help="one more generator run under cProfile (not in the table)")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--skip-micro", action="store_true")
    args = ap.parse_args()
    if not args.skip_micro:
        micro(args)
        print()
    if not args.skip_e2e:
        e2e(args)


if __name__ == "__main__":
    main()
