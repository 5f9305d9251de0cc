"""The bounded cross-thread queue behind Manager.wakeup() and Manager.call_soon_threadsafe():
a flood from many threads keeps memory and every poll() bounded while delivering each item
exactly once and in order; a full queue makes producers wait (then raise pyws.QueueFull), the
loop's own thread gets QueueFull at once, close() wakes waiting producers, and one poll runs a
bounded batch without the next one waiting for the rest."""
from __future__ import annotations

import os
import struct
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest
import websocket

import pyws
from pyws import EV_HTTP_MSG, EV_WAKEUP, EV_WS_MSG, EV_WS_OPEN
from pyws._lib import lib

from conftest import SANITIZED

# what the flood test asserts (and why these numbers):
FLOOD_SECONDS = 3.0          # producers run this long
FLOOD_PRODUCERS = 8
RSS_GROWTH_LIMIT_MB = 64     # the default bound (65,536 items) costs ~10-20 MB here; without
                             # a bound the same flood grew RSS by hundreds of MB
POLL_LIMIT_S = 0.5           # longest single poll() allowed on a loaded 2-core machine
PAYLOAD = 64                 # bytes per wakeup


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS in /proc/self/status")


def wait_until(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def blocked_call(fn: Any, *args: Any, **kw: Any) -> Tuple[threading.Thread, Dict[str, Any]]:
    """Run fn(*args, **kw) on a new thread; the box gets its result or exception and how long
    it took."""
    box: Dict[str, Any] = {}

    def run() -> None:
        t0 = time.monotonic()
        try:
            box["result"] = fn(*args, **kw)
        except BaseException as exc:
            box["error"] = exc
        box["elapsed"] = time.monotonic() - t0

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, box


def echo_and_record(seen: List[Tuple[int, Any, Any]]) -> Any:
    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)
        elif ev in (EV_WS_OPEN, EV_WAKEUP):
            seen.append((ev, conn.id, data))
    return handler


class FloodServer:
    """An echo Manager created and polled on its own thread, timing every poll() and sampling
    the process RSS and the queue depth while it runs."""

    def __init__(self, handler: Any, **options: Any) -> None:
        self.handler = handler
        self.options = options
        self.mgr: Optional[pyws.Manager] = None
        self.port = 0
        self.polls = 0
        self.max_poll = 0.0
        self.max_pending = 0
        self.peak_rss = 0.0
        self.error: Optional[BaseException] = None
        self.stop_flag = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)
        if self.error:
            raise self.error

    def _run(self) -> None:
        try:
            self.mgr = pyws.Manager(self.handler, **self.options)
            self.port = self.mgr.listen("http://127.0.0.1:0").port
            self.ready.set()
            next_sample = 0.0
            while not self.stop_flag.is_set():
                t0 = time.perf_counter()
                self.mgr.poll(20)
                d = time.perf_counter() - t0
                self.polls += 1
                if d > self.max_poll:
                    self.max_poll = d
                if t0 >= next_sample:
                    next_sample = t0 + 0.05
                    self.max_pending = max(self.max_pending, self.mgr.pending_wakeups[0])
                    self.peak_rss = max(self.peak_rss, rss_mb())
            self.mgr.shutdown(1.0)
            self.mgr.close()
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the loop thread did not stop"
        if self.error:
            raise self.error


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
@pytest.mark.parametrize("limits, spin_us", [
    ({}, 0), ({"wakeup_queue_items": 1000, "wakeup_batch": 128}, 0), ({}, 20)],
    ids=["default-bounds", "small-queue", "slow-consumer"])
def test_thread_flood_keeps_memory_and_polls_bounded_and_delivers_in_order(
        limits: Dict[str, int], spin_us: int) -> None:
    """default-bounds: the loop mostly keeps up. small-queue: the queue fills at once and the
    producers spend the flood waiting for room and being woken. slow-consumer: the loop spends
    20 us per item, so the producers outrun it and fill the default queue; without the
    per-poll batch one poll ran for most of a second here and the echo starved."""
    n = FLOOD_PRODUCERS
    spin = spin_us / 1e6
    expect = [0] * n                 # next sequence number due from each producer
    bad: List[Tuple[int, int, int]] = []
    delivered = [0]

    def record(k: int, i: int) -> None:
        if spin:  # the work an item costs the loop thread
            until = time.perf_counter() + spin
            while time.perf_counter() < until:
                pass
        if expect[k] != i and len(bad) < 20:
            bad.append((k, i, expect[k]))
        expect[k] = i + 1
        delivered[0] += 1

    opened: List[int] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_OPEN:
            opened.append(conn.id)
        elif ev == EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)
        elif ev == EV_WAKEUP:
            k, i = struct.unpack_from("<II", data)
            record(k, i)

    srv = FloodServer(handler, **limits)
    ws = websocket.create_connection(f"ws://127.0.0.1:{srv.port}/ws", timeout=5)
    try:
        for j in range(20):  # warm up: the connection, the event batch, the allocator
            ws.send(f"warm {j}")
            assert ws.recv() == f"warm {j}"
        wait_until(lambda: opened)
        conn_id = opened[0]
        assert srv.mgr is not None
        mgr = srv.mgr
        for j in range(5000):
            mgr.call_soon_threadsafe(lambda: None)
        wait_until(lambda: mgr.pending_wakeups == (0, 0))
        rss_before = rss_mb()
        srv.peak_rss = rss_before

        sent = [0] * n
        failures: List[BaseException] = []
        stop_at = time.monotonic() + FLOOD_SECONDS
        pad = b"x" * (PAYLOAD - 8)

        def produce(k: int) -> None:
            i = 0
            try:
                while time.monotonic() < stop_at and i < 50_000_000:
                    if i & 1:
                        mgr.call_soon_threadsafe(record, k, i)
                    else:
                        mgr.wakeup(conn_id, struct.pack("<II", k, i) + pad)
                    i += 1
            except BaseException as exc:
                failures.append(exc)
            sent[k] = i

        producers = [threading.Thread(target=produce, args=(k,), daemon=True) for k in range(n)]
        for t in producers:
            t.start()
        echoes = 0
        while time.monotonic() < stop_at and echoes < 1_000_000:
            ws.send(f"echo {echoes}")
            assert ws.recv() == f"echo {echoes}"
            echoes += 1
        for t in producers:
            t.join(20)
            assert not t.is_alive(), "a producer did not finish"
        wait_until(lambda: expect == sent, timeout=60)
        rss_after = rss_mb()
        ws.send("after the flood")
        assert ws.recv() == "after the flood"
        total = sum(sent)
        print(f"\nflood {limits} {spin_us} us/item: {total} items from {n} threads in {FLOOD_SECONDS:.0f} s "
              f"({delivered[0]} delivered), {srv.polls} polls, max poll "
              f"{srv.max_poll * 1000:.1f} ms, max queued {srv.max_pending}, RSS "
              f"{rss_before:.1f} -> peak {srv.peak_rss:.1f} -> {rss_after:.1f} MB, "
              f"{echoes} echoes")
    finally:
        ws.close()
        srv.stop()
    assert not failures, failures[:3]
    assert not bad, f"out of order or duplicated (producer, got, expected): {bad}"
    assert delivered[0] == total and expect == sent  # exactly once: no loss, no duplicate
    assert total > 10_000, "the flood was too small to prove anything"
    assert echoes >= 10, "the echo connection starved during the flood"
    bound = limits.get("wakeup_queue_items", pyws.LOOP_OPTIONS["wakeup_queue_items"])
    assert srv.max_pending <= bound
    if not SANITIZED:  # ASan keeps freed blocks in a quarantine (256 MB): RSS measures that
        assert max(srv.peak_rss, rss_after) - rss_before < RSS_GROWTH_LIMIT_MB
    assert srv.max_poll < POLL_LIMIT_S


def _fill(mgr: pyws.Manager, items: int) -> None:
    for j in range(items):
        mgr.call_soon_threadsafe(lambda: None, timeout=0)


@pytest.mark.parametrize("kind", ["wakeup", "call_soon_threadsafe"])
def test_full_queue_blocks_then_raises_queue_full(kind: str) -> None:
    mgr = pyws.Manager(wakeup_queue_items=4)
    try:
        _fill(mgr, 4)  # nobody polls: it stays full
        assert mgr.pending_wakeups == (4, 0)
        if kind == "wakeup":
            th, box = blocked_call(mgr.wakeup, 1, b"late", timeout=0.4)
        else:
            th, box = blocked_call(mgr.call_soon_threadsafe, print, "late", timeout=0.4)
        th.join(5)
        assert not th.is_alive()
        err = box.get("error")
        assert isinstance(err, pyws.QueueFull) and isinstance(err, pyws.PyWSError)
        assert 0.35 <= box["elapsed"] < 3.0, box["elapsed"]
        text = str(err)
        assert "wakeup_queue_items" in text and "poll()" in text and "timeout=" in text
        assert mgr.pending_wakeups == (4, 0)  # the refused item was not queued
        assert len(mgr._soon) == 4
        # timeout=0: no wait at all
        t0 = time.monotonic()
        th, box = blocked_call(mgr.wakeup, 1, b"now", timeout=0)
        th.join(5)
        assert isinstance(box.get("error"), pyws.QueueFull) and time.monotonic() - t0 < 3.0
    finally:
        mgr.close()


def test_full_queue_unblocks_when_the_loop_polls() -> None:
    ran: List[Any] = []
    mgr = pyws.Manager(wakeup_queue_items=4)
    try:
        for j in range(4):
            mgr.call_soon_threadsafe(ran.append, j)
        th, box = blocked_call(mgr.call_soon_threadsafe, ran.append, "late", timeout=None)
        th2, box2 = blocked_call(mgr.wakeup, 7, b"late too", timeout=10)
        time.sleep(0.4)
        assert th.is_alive() and th2.is_alive(), "the producers did not wait for room"
        t0 = time.monotonic()
        mgr.poll(0)  # runs the 4 queued callbacks and makes room
        th.join(5)
        th2.join(5)
        assert not th.is_alive() and not th2.is_alive()
        assert "error" not in box and "error" not in box2, (box, box2)
        assert time.monotonic() - t0 < 3.0
        assert ran == [0, 1, 2, 3]
        for _ in range(20):
            if mgr.pending_wakeups == (0, 0):
                break
            mgr.poll(50)
        assert ran == [0, 1, 2, 3, "late"]
    finally:
        mgr.close()


def test_loop_thread_gets_queue_full_at_once() -> None:
    errors: List[BaseException] = []
    queued: List[int] = []

    def in_callback() -> None:
        # runs on the loop thread inside poll(): one slot is free, then the queue is full
        mgr.call_soon_threadsafe(queued.append, 1, timeout=10)
        t0 = time.monotonic()
        try:
            mgr.call_soon_threadsafe(queued.append, 2, timeout=10)
        except pyws.QueueFull as exc:
            errors.append(exc)
        assert time.monotonic() - t0 < 3.0  # at once, not after timeout=10

    mgr = pyws.Manager(wakeup_queue_items=2, wakeup_batch=1)
    try:
        # the thread that owns the manager (it will poll it) is the loop thread already
        mgr.call_soon_threadsafe(in_callback)
        mgr.call_soon_threadsafe(lambda: None)
        t0 = time.monotonic()
        with pytest.raises(pyws.QueueFull) as ei:
            mgr.wakeup(1, b"x", timeout=10)
        assert time.monotonic() - t0 < 3.0  # at once, not after timeout=10
        assert "loop's own thread" in str(ei.value)
        mgr.poll(0)  # batch of 1: in_callback runs, finds one slot, then a full queue
        assert len(errors) == 1 and "loop's own thread" in str(errors[0])
        # the C core knows the polling thread too: even asked to wait, it refuses at once
        assert mgr.pending_wakeups[0] == 2
        t0 = time.monotonic()
        rc = lib.pyws_wakeup_wait(mgr._loop, 1, 0, b"x", 1, 5000)
        assert rc == lib.PYWS_ERR_LIMIT and time.monotonic() - t0 < 3.0  # not after 5 s
        for _ in range(10):
            mgr.poll(0)
        assert queued == [1]
    finally:
        mgr.close()


def test_close_wakes_blocked_producers() -> None:
    mgr = pyws.Manager(wakeup_queue_items=2)
    _fill(mgr, 2)
    calls = [blocked_call(mgr.wakeup, 1, b"w", timeout=None),
             blocked_call(mgr.wakeup, 1, b"w" * 100, timeout=30),
             blocked_call(mgr.call_soon_threadsafe, print, timeout=None)]
    time.sleep(0.4)
    assert all(th.is_alive() for th, _ in calls), "the producers did not wait"
    t0 = time.monotonic()
    mgr.close()
    for th, box in calls:
        th.join(5)
        assert not th.is_alive()
        err = box.get("error")
        assert type(err) is pyws.PyWSError and str(err) == "the manager is closed", err
    assert time.monotonic() - t0 < 3.0
    assert mgr._soon == {}
    with pytest.raises(pyws.PyWSError, match="the manager is closed"):
        mgr.wakeup(1, b"after")
    with pytest.raises(pyws.PyWSError, match="the manager is closed"):
        mgr.call_soon_threadsafe(print)
    assert mgr.pending_wakeups == (0, 0)


def test_one_poll_runs_a_bounded_batch_and_the_next_does_not_wait() -> None:
    seen: List[Tuple[int, Any, Any]] = []
    mgr = pyws.Manager(echo_and_record(seen), wakeup_batch=100)
    order: List[Any] = []
    try:
        # 350 items alternating wakeups and callbacks, queued by another thread
        def produce() -> None:
            for i in range(350):
                if i % 2:
                    mgr.call_soon_threadsafe(order.append, i)
                else:
                    mgr.wakeup(0, b"%d" % i)
        th, box = blocked_call(produce)
        th.join(10)
        assert "error" not in box, box
        assert mgr.pending_wakeups[0] == 350
        per_poll = []
        for _ in range(10):
            if mgr.pending_wakeups[0] == 0:
                break
            t0 = time.monotonic()
            n = mgr.poll(10000)  # leftovers make it return at once, not after 10 s
            elapsed = time.monotonic() - t0
            assert elapsed < 3.0, f"poll waited {elapsed:.2f} s with items still queued"
            per_poll.append(n)
        assert per_poll == [100, 100, 100, 50]
        assert mgr.pending_wakeups == (0, 0)
        # wakeups for id 0 reach no connection; the callbacks ran in order
        assert order == list(range(1, 350, 2))
    finally:
        mgr.close()


def test_wakeups_and_callbacks_share_one_fifo_per_connection() -> None:
    seen: List[Tuple[int, Any, Any]] = []
    mgr = pyws.Manager(echo_and_record(seen), wakeup_batch=7)
    port = mgr.listen("http://127.0.0.1:0").port
    got: List[Any] = []
    th, box = blocked_call(websocket.create_connection, f"ws://127.0.0.1:{port}/ws", timeout=5)
    try:
        for _ in range(500):
            mgr.poll(10)
            if any(e[0] == EV_WS_OPEN for e in seen):
                break
        th.join(5)
        conn_id = [e[1] for e in seen if e[0] == EV_WS_OPEN][0]
        seen.clear()
        for i in range(40):
            if i % 3 == 0:
                mgr.call_soon_threadsafe(got.append, i)
            else:
                mgr.wakeup(conn_id, b"%d" % i)
        mgr.call_soon_threadsafe(got.append, "end")
        mgr.handler = lambda c, ev, d: got.append(int(d)) if ev == EV_WAKEUP else None
        for conn in mgr.connections:
            conn.handler = None
        for _ in range(50):
            if got and got[-1] == "end":
                break
            mgr.poll(10)
        assert got == list(range(40)) + ["end"]
    finally:
        if "result" in box:
            box["result"].close()
        mgr.close()


def test_byte_budget_bounds_wakeup_data() -> None:
    mgr = pyws.Manager(wakeup_queue_bytes=1000)
    try:
        mgr.wakeup(1, b"a" * 600, timeout=0)
        assert mgr.pending_wakeups == (1, 600)
        th, box = blocked_call(mgr.wakeup, 1, b"b" * 600, timeout=0.3)
        th.join(5)
        assert isinstance(box.get("error"), pyws.QueueFull) and box["elapsed"] >= 0.25
        assert "wakeup_queue_bytes" in str(box["error"])
        mgr.wakeup(1, b"c" * 400, timeout=0)  # exactly fills the budget
        assert mgr.pending_wakeups == (2, 1000)
        with pytest.raises(ValueError, match="wakeup_queue_bytes"):
            mgr.wakeup(1, b"d" * 1001)  # could never fit: refused without waiting
        mgr.poll(0)
        assert mgr.pending_wakeups == (0, 0)
        mgr.wakeup(1, b"e" * 1000, timeout=0)
    finally:
        mgr.close()


def test_loop_options_are_checked_and_only_taken_by_the_manager() -> None:
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError):
            pyws.Manager(wakeup_queue_items=bad)
    with pytest.raises(ValueError):
        pyws.Manager(wakeup_batch=1 << 40)
    with pytest.raises(TypeError, match="unknown option"):
        pyws.Manager(wakeup_queue_itemz=5)
    mgr = pyws.Manager(wakeup_queue_items=10, wakeup_queue_bytes=1 << 20, wakeup_batch=3)
    try:
        with pytest.raises(TypeError, match="loop-wide"):
            mgr.listen("http://127.0.0.1:0", wakeup_batch=5)
        with pytest.raises(TypeError, match="loop-wide"):
            mgr.ws_connect("ws://127.0.0.1:1/", wakeup_queue_items=5)
    finally:
        mgr.close()
    assert set(pyws.LOOP_OPTIONS) == {"wakeup_queue_items", "wakeup_queue_bytes", "wakeup_batch",
                                      "view_threshold"}


def test_app_takes_the_loop_options_and_stop_never_blocks() -> None:
    app = pyws.App(wakeup_queue_items=1)
    try:
        app.mgr.call_soon_threadsafe(lambda: None)  # the queue is now full
        th, box = blocked_call(app.stop)
        th.join(5)
        assert not th.is_alive() and "error" not in box and box["elapsed"] < 3.0
    finally:
        app.close()
    app.stop()  # after close: harmless
