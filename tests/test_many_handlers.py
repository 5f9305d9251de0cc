"""1,000 concurrent generator handlers in ONE server thread, each echoing; every client is a raw
non-blocking socket read by one selector (no thread per client). Then every client disconnects
(half with a close frame, half by dropping TCP) and every handler's finally block runs.
Each step has a generous deadline; the time the whole run takes is a benchmark
(bench/test_many_handlers.py), not an assertion."""
from __future__ import annotations

import resource
import selectors
import socket
import struct
import threading
import time
from typing import Any, Dict, List, Set

import pytest

import pyws

from _frames import MASK_KEY, frame
from _rawws import OP_CLOSE, OP_TEXT, close_payload, handshake_request
from conftest import AppServer
from test_app import wait_for
from test_topics import parse_frames

N = 1000


def _raise_fd_limit(need: int) -> int:
    """Raise the soft RLIMIT_NOFILE toward ``need`` (up to the hard limit); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft if soft != resource.RLIM_INFINITY else need


def test_thousand_concurrent_generator_handlers() -> None:
    limit = _raise_fd_limit(2 * N + 200)
    # each connection costs two descriptors here (client and server end) plus some spare
    n = min(N, (limit - 100) // 2)
    assert n >= N, f"RLIMIT_NOFILE allows only {limit} descriptors; need about {2 * N + 100}"

    app = pyws.App(backlog=2048)
    stats: Dict[str, Any] = {"started": 0, "finally": 0, "echoed": 0, "threads": set(),
                             "none": 0}
    lock = threading.Lock()  # only the loop thread touches stats; the lock documents reads

    @app.websocket("/ws/echo/{i:int}")
    def echo(ws: pyws.WebSocket) -> Any:
        with lock:
            stats["started"] += 1
            stats["threads"].add(threading.get_ident())
        try:
            while True:
                msg = yield ws.recv()
                if msg is None:
                    with lock:
                        stats["none"] += 1
                    return
                ws.send_text(f"{ws.params['i']}:{msg.text}")
                with lock:
                    stats["echoed"] += 1
        finally:
            with lock:
                stats["finally"] += 1

    srv = AppServer(app).start()
    socks: List[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        # connect and send every handshake before reading any answer
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(handshake_request(f"/ws/echo/{i}"))
            s.setblocking(False)
            socks.append(s)
            sel.register(s, selectors.EVENT_READ, i)
        bufs = [bytearray() for _ in range(n)]
        upgraded: Set[int] = set()
        deadline = time.monotonic() + 20
        while len(upgraded) < n:
            assert time.monotonic() < deadline, f"only {len(upgraded)} handshakes in time"
            for key, _ in sel.select(0.5):
                i = key.data
                try:
                    chunk = socks[i].recv(65536)
                except BlockingIOError:
                    continue
                assert chunk, f"client {i}: EOF during the handshake"
                bufs[i] += chunk
                if i not in upgraded and b"\r\n\r\n" in bufs[i]:
                    head, _, rest = bytes(bufs[i]).partition(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 101"), head
                    bufs[i] = bytearray(rest)
                    upgraded.add(i)
        # all n handlers are alive at once, in the one loop thread
        assert srv.call(lambda: (len(app.connections), stats["started"])) == (n, n)
        assert stats["threads"] == {srv._thread.ident}

        # every client sends two messages and gets exactly its own two echoes back
        for rnd in range(2):
            for i, s in enumerate(socks):
                s.setblocking(True)
                s.sendall(frame(OP_TEXT, f"m{rnd}-{i}".encode(), mask=MASK_KEY))
                s.setblocking(False)
            got = [0] * n
            done = 0
            deadline = time.monotonic() + 20
            while done < n:
                assert time.monotonic() < deadline, f"only {done} echoes in round {rnd}"
                for key, _ in sel.select(0.5):
                    i = key.data
                    try:
                        chunk = socks[i].recv(65536)
                    except BlockingIOError:
                        continue
                    assert chunk, f"client {i}: EOF while waiting for its echo"
                    bufs[i] += chunk
                    for op, data in parse_frames(bufs[i]):
                        assert (op, data) == (OP_TEXT, f"{i}:m{rnd}-{i}".encode())
                        got[i] += 1
                        done += 1
            assert got == [1] * n
        assert srv.call(lambda: stats["echoed"]) == 2 * n
        assert srv.call(lambda: stats["finally"]) == 0  # nobody has left yet

        # everyone leaves: even clients with a close frame, odd ones by dropping TCP
        for i, s in enumerate(socks):
            if i % 2 == 0:
                s.setblocking(True)
                try:
                    s.sendall(frame(OP_CLOSE, close_payload(1000), mask=MASK_KEY))
                except OSError:
                    pass
            sel.unregister(s)
            s.close()
        wait_for(lambda: srv.call(lambda: stats["finally"]) == n, timeout=20)
        assert srv.call(lambda: (stats["none"], len(app.connections), len(app._sockets),
                                 len(app.mgr.connections))) == (n, 0, 0, 0)
    finally:
        for s in socks:
            s.close()
        sel.close()
        srv.stop()
    # how long all this takes is measured in bench/test_many_handlers.py, not asserted here
