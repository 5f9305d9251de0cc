"""How long 1,000 concurrent generator handlers take, end to end, in one server thread.

The workload of tests/test_many_handlers.py (which checks that it is right, with generous
deadlines, and no longer asserts how fast): an App with one generator echo handler per
connection, polled by one thread; 1,000 raw non-blocking client sockets read by one selector.

  connect    open every socket and send every upgrade request before reading any answer,
             then read the 1,000 "101" responses
  echo       two rounds: every client sends one masked text frame, then every echo is read
  leave      even clients send a close frame, odd ones drop TCP; until every handler's
             finally block has run

Three timed runs, each with a fresh App (a run takes a fraction of a second here); the phases
of the last run are in extra_info. Run:
  .venv/bin/python -m pytest bench/test_many_handlers.py --benchmark-only -q
"""
from __future__ import annotations

import os
import resource
import selectors
import socket
import struct
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Set, Tuple

import pytest

import pyws

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
from _frames import MASK_KEY, OP_CLOSE, OP_TEXT, close_payload, frame  # noqa: E402

N = 1000
STEP_TIMEOUT = 60.0   # a step that takes longer has failed, not just run slowly


def _raise_fd_limit(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft if soft != resource.RLIM_INFINITY else need


def _upgrade_request(path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def _server_frames(buf: bytearray) -> List[Tuple[int, bytes]]:
    """Remove the complete unmasked frames at the start of buf: (opcode, payload) each."""
    out: List[Tuple[int, bytes]] = []
    pos, n = 0, len(buf)
    while n - pos >= 2:
        ln, hl = buf[pos + 1] & 0x7F, 2
        if ln == 126:
            if n - pos < 4:
                break
            ln, hl = struct.unpack_from("!H", buf, pos + 2)[0], 4
        elif ln == 127:
            if n - pos < 10:
                break
            ln, hl = struct.unpack_from("!Q", buf, pos + 2)[0], 10
        if n - pos < hl + ln:
            break
        out.append((buf[pos] & 0x0F, bytes(buf[pos + hl:pos + hl + ln])))
        pos += hl + ln
    del buf[:pos]
    return out


class _Server:
    """An App polled by a background thread; call(fn) runs fn on the loop thread."""

    def __init__(self, app: pyws.App) -> None:
        self.app = app
        self.port = app.listen("127.0.0.1", 0).port
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.app.poll(20)
        self.app.shutdown(1.0)
        self.app.close()

    def call(self, fn: Callable[[], Any]) -> Any:
        done = threading.Event()
        box: List[Any] = []
        self.app.mgr.call_soon_threadsafe(lambda: (box.append(fn()), done.set()))
        assert done.wait(STEP_TIMEOUT)
        return box[0]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _read_until(sel: selectors.BaseSelector, socks: List[socket.socket],
                bufs: List[bytearray], done: Callable[[int], bool], what: str) -> None:
    """Read whatever arrives into bufs until done(i) has held for every i once."""
    pending = set(range(len(socks)))
    deadline = time.monotonic() + STEP_TIMEOUT
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} clients still waiting for {what}"
        for key, _ in sel.select(0.5):
            i = key.data
            try:
                chunk = socks[i].recv(65536)
            except BlockingIOError:
                continue
            assert chunk, f"client {i}: EOF while waiting for {what}"
            bufs[i] += chunk
            if i in pending and done(i):
                pending.discard(i)


def _run_once(n: int) -> Dict[str, float]:
    app = pyws.App(backlog=2048)
    state = {"finally": 0}

    @app.websocket("/ws/echo/{i:int}")
    def echo(ws: pyws.WebSocket) -> Any:
        try:
            while True:
                msg = yield ws.recv()
                if msg is None:
                    return
                ws.send_text(f"{ws.params['i']}:{msg.text}")
        finally:
            state["finally"] += 1

    srv = _Server(app)
    socks: List[socket.socket] = []
    sel = selectors.DefaultSelector()
    phases: Dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(_upgrade_request(f"/ws/echo/{i}"))
            s.setblocking(False)
            socks.append(s)
            sel.register(s, selectors.EVENT_READ, i)
        bufs = [bytearray() for _ in range(n)]
        upgraded: Set[int] = set()

        def head_done(i: int) -> bool:
            if b"\r\n\r\n" not in bufs[i]:
                return False
            head, _, rest = bytes(bufs[i]).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            bufs[i][:] = rest
            upgraded.add(i)
            return True

        _read_until(sel, socks, bufs, head_done, "the 101")
        t1 = time.perf_counter()
        phases["connect_s"] = t1 - t0

        for rnd in range(2):
            for i, s in enumerate(socks):
                s.setblocking(True)
                s.sendall(frame(OP_TEXT, f"m{rnd}-{i}".encode(), mask=MASK_KEY))
                s.setblocking(False)

            def echoed(i: int, rnd: int = rnd) -> bool:
                got = _server_frames(bufs[i])
                assert got in ([], [(OP_TEXT, f"{i}:m{rnd}-{i}".encode())]), got
                return bool(got)

            _read_until(sel, socks, bufs, echoed, f"echo round {rnd}")
        t2 = time.perf_counter()
        phases["echo_s"] = t2 - t1

        for i, s in enumerate(socks):
            if i % 2 == 0:
                s.setblocking(True)
                try:
                    s.sendall(frame(OP_CLOSE, close_payload(1000), mask=MASK_KEY))
                except OSError:
                    pass
            sel.unregister(s)
            s.close()
        deadline = time.monotonic() + STEP_TIMEOUT
        while srv.call(lambda: state["finally"]) < n:
            assert time.monotonic() < deadline, "not every handler's finally block ran"
            time.sleep(0.005)
        phases["leave_s"] = time.perf_counter() - t2
    finally:
        for s in socks:
            s.close()
        sel.close()
        srv.stop()
    return phases


def test_thousand_generator_handlers(benchmark: Any) -> None:
    limit = _raise_fd_limit(2 * N + 200)
    if (limit - 100) // 2 < N:
        pytest.skip(f"RLIMIT_NOFILE allows only {limit} descriptors; need about {2 * N + 100}")
    phases: Dict[str, float] = {}

    def run() -> None:
        phases.update(_run_once(N))

    benchmark.group = "many handlers"
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update({"handlers": N, **{k: round(v, 3) for k, v in phases.items()}})
    print(f"\n{N} generator handlers: connect+upgrade {phases['connect_s']:.2f} s, two echo "
          f"rounds {phases['echo_s']:.2f} s, leave {phases['leave_s']:.2f} s")
