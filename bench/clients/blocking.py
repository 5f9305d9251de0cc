"""Blocking echo client for bench/test_clients.py: one connection, one message in flight.

    python bench/clients/blocking.py --impl pyws|websocket-client|websockets-sync \
        --url ws://127.0.0.1:PORT/ [--size 64] [--duration 3] [--warmup 1] [--text] \
        [--timeout 10] [--server-pid PID] [--cprofile FILE]

Sends one message, waits for its echo, checks it, repeats: for --warmup seconds, then for
--duration seconds measured (and never more than --max-msgs round trips). Every round trip is
timed (send call to echo returned). Prints one JSON line: round trips/s, RTT percentiles, this
process's CPU (getrusage, every thread) and the server's (/proc/<pid>/stat) over the
measurement.

The clients, each as its users write it:

- ``pyws``: ``pyws.connect(url, timeout=T, max_size=...)``; ``ws.send(p)``; ``ws.recv().data``
  (``.text`` for text).
- ``websocket-client``: ``websocket.create_connection(url, timeout=T,
  enable_multithread=False)``; ``ws.send_binary(p)`` (``ws.send(p)`` for text); ``ws.recv()``.
- ``websockets-sync``: ``websockets.sync.client.connect(url, compression=None, max_size=...)``;
  ``ws.send(p)``; ``ws.recv(timeout=T)``.

``--timeout 0`` connects without a receive timeout (pyws ``timeout=None``, websocket-client a
blocking socket, websockets ``recv()`` without timeout).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (Meter, emit, fail, loop_budget, parser, payloads,  # noqa: E402
                     percentiles, run_profiled, versions)

MAX_SIZE = 64 * 1024 * 1024


def _loop(send: Callable[[Any], Any], recv: Callable[[], Any], attr: str, pl: List[Any],
          until: float, cap: int, samples: List[int]) -> int:
    """Round trips until perf_counter passes ``until`` or ``cap`` are done; appends each RTT
    (ns) to samples. ``attr``: "" when recv returns the payload itself, else the attribute of
    the returned message that holds it."""
    perf = time.perf_counter_ns
    until_ns = int(until * 1e9)
    append = samples.append
    n = 0
    if attr == "":
        while n < cap:
            p = pl[n & 7]
            t0 = perf()
            send(p)
            r = recv()
            t1 = perf()
            if r != p:
                fail(f"round trip {n}: echo differs from what was sent")
            append(t1 - t0)
            n += 1
            if t1 >= until_ns:
                break
    elif attr == "data":
        while n < cap:
            p = pl[n & 7]
            t0 = perf()
            send(p)
            r = recv().data
            t1 = perf()
            if r != p:
                fail(f"round trip {n}: echo differs from what was sent")
            append(t1 - t0)
            n += 1
            if t1 >= until_ns:
                break
    else:  # "text"
        while n < cap:
            p = pl[n & 7]
            t0 = perf()
            send(p)
            r = recv().text
            t1 = perf()
            if r != p:
                fail(f"round trip {n}: echo differs from what was sent")
            append(t1 - t0)
            n += 1
            if t1 >= until_ns:
                break
    return n


def open_pyws(url: str, timeout: float, text: bool) -> Tuple[Any, ...]:
    import pyws
    ws = pyws.connect(url, timeout=timeout or None, max_size=MAX_SIZE, close_timeout=2.0)
    detail = {"mask": "pyws C core (SIMD kernel chosen at runtime)",
              "utf8": "pyws C core", "versions": versions("pyws")}
    return ws, ws.send, ws.recv, "text" if text else "data", ws.close, detail


def open_websocket_client(url: str, timeout: float, text: bool) -> Tuple[Any, ...]:
    import websocket
    from websocket import _abnf, _utils
    ws = websocket.create_connection(url, timeout=timeout or None, enable_multithread=False)
    accel = "XorMaskerSimple" in vars(_abnf)
    detail = {
        "mask": "wsaccel XorMaskerSimple (C)" if accel else
                "pure Python (int.from_bytes XOR; wsaccel not installed)",
        "utf8": "wsaccel Utf8Validator (C)" if "Utf8Validator" in vars(_utils) else
                "pure Python DFA (text messages only)",
        "enable_multithread": False,
        "versions": versions("websocket"),
    }

    def close() -> None:
        ws.close(timeout=2)

    return ws, (ws.send if text else ws.send_binary), ws.recv, "", close, detail


def open_websockets_sync(url: str, timeout: float, text: bool) -> Tuple[Any, ...]:
    from websockets import frames
    from websockets.sync.client import connect
    from websockets import speedups
    cm = connect(url, compression=None, max_size=MAX_SIZE, open_timeout=10, close_timeout=2)
    ws = cm.__enter__()  # what ``with connect(...) as ws:`` does (a bare connect() warns)
    t = timeout or None

    def close() -> None:
        cm.__exit__(None, None, None)

    def recv() -> Any:
        return ws.recv(t)

    detail = {"mask": "websockets.speedups.apply_mask (C)"
                      if getattr(frames, "apply_mask", None) is speedups.apply_mask else
                      "websockets.utils.apply_mask (pure Python)",
              "utf8": "bytes.decode", "threads": "a background reader thread per connection",
              "versions": versions("websockets")}
    recv_fn = recv if t is not None else ws.recv
    return ws, ws.send, recv_fn, "", close, detail


# imported before the connect is timed
IMPORTS = {"pyws": "pyws", "websocket-client": "websocket",
           "websockets-sync": "websockets.sync.client"}
OPENERS = {"pyws": open_pyws, "websocket-client": open_websocket_client,
           "websockets-sync": open_websockets_sync}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="receive timeout given to the client, seconds (0: none; default 10)")
    args = ap.parse_args()
    if args.impl not in OPENERS:
        fail(f"unknown --impl {args.impl!r}; known: {', '.join(OPENERS)}")
    if args.size < 1:
        fail("--size must be at least 1")
    pl = payloads(args.size, args.text)

    def run() -> Dict[str, Any]:
        __import__(IMPORTS[args.impl])
        t_conn = time.perf_counter()
        ws, send, recv, attr, close, detail = OPENERS[args.impl](args.url, args.timeout,
                                                                 args.text)
        connect_ms = (time.perf_counter() - t_conn) * 1000
        meter = Meter(args.server_pid)
        warm: List[int] = []
        samples: List[int] = []
        t_meas, t_end = loop_budget(args.warmup, args.duration)
        nwarm = _loop(send, recv, attr, pl, t_meas, args.max_msgs, warm)
        meter.start()
        n = _loop(send, recv, attr, pl, t_end, args.max_msgs, samples)
        meter.stop()
        t_close = time.perf_counter()
        close()
        close_ms = (time.perf_counter() - t_close) * 1000
        doc: Dict[str, Any] = {
            "impl": args.impl, "size": args.size, "opcode": "text" if args.text else "binary",
            "timeout_s": args.timeout or None, "round_trips": n, "warmup_round_trips": nwarm,
            "rt_per_s": round(n / meter.wall, 1) if meter.wall > 0 else 0.0,
            "mb_per_s": round(n * args.size / meter.wall / 1e6, 3) if meter.wall > 0 else 0,
            "connect_ms": round(connect_ms, 2), "close_ms": round(close_ms, 2),
            "detail": detail, "python": sys.version.split()[0],
        }
        doc.update(percentiles(samples))
        doc.update(meter.report(n))
        return doc

    emit(run_profiled(run, args.cprofile))


if __name__ == "__main__":
    main()
