"""The connection state machine: the table in C (csrc/state.c) against the one in
docs/architecture.md, the public state Python reads (Connection.state, pyws.State) over real
sockets, and Driver.step ending a handler that keeps waiting on a closed connection."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from typing import Any, Callable, Dict, Iterator, List, Set, Tuple

import pytest

import pyws
from pyws import State
from pyws._lib import ffi, lib

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                    "architecture.md")


# ----------------------------------------------------------------------------- the table

def _c_states() -> List[str]:
    names = []
    for s in range(lib.pyws_state_count()):
        p = lib.pyws_state_name(s)
        assert p != ffi.NULL
        names.append(ffi.string(p).decode())
    return names


def _c_transitions() -> Set[Tuple[str, str]]:
    names = _c_states()
    n = len(names)
    return {(names[a], names[b]) for a in range(n) for b in range(n)
            if lib.pyws_state_allowed(a, b)}


def _docs_section() -> str:
    with open(DOCS, encoding="utf-8") as f:
        text = f.read()
    assert "## Connection states" in text
    section = text.split("## Connection states", 1)[1]
    return re.split(r"^## ", section, maxsplit=1, flags=re.M)[0]


def _docs_table(header: str) -> List[List[str]]:
    """The rows of the markdown table whose header row is ``header`` (cells stripped)."""
    lines = _docs_section().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == header)
    rows = []
    for line in lines[start + 2:]:  # after the header and its --- row
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert rows, f"the table {header!r} is empty"
    return rows


def test_docs_transitions_are_the_c_table_exactly() -> None:
    rows = _docs_table("| from | to | when |")
    documented = [(r[0], r[1]) for r in rows]
    assert all(r[2] for r in rows), "every transition says when it happens"
    assert len(documented) == len(set(documented)), "a transition is listed twice"
    in_c = _c_transitions()
    assert set(documented) - in_c == set(), "documented but not allowed in csrc/state.c"
    assert in_c - set(documented) == set(), "allowed in csrc/state.c but not documented"


def test_docs_states_are_the_c_states_with_their_public_state() -> None:
    rows = _docs_table("| state | public | meaning |")
    names = _c_states()
    assert [r[0] for r in rows] == names
    for s, row in enumerate(rows):
        assert State(lib.pyws_state_public(s)).name == row[1], row[0]


def test_table_shape() -> None:
    names = _c_states()
    n = len(names)
    closed = names.index("CLOSED")
    assert lib.pyws_state_name(n) == ffi.NULL and lib.pyws_state_name(-1) == ffi.NULL
    assert lib.pyws_state_allowed(-1, 0) == 0 and lib.pyws_state_allowed(0, n) == 0
    for s in range(n):
        assert lib.pyws_state_allowed(s, s) == 0, "no transition to itself"
        if s != closed:  # an I/O error or abort can end a connection in any state
            assert lib.pyws_state_allowed(s, closed) == 1, names[s]
    assert not any(lib.pyws_state_allowed(closed, t) for t in range(n)), "CLOSED is final"
    # every state but NEW is reachable from NEW, and every state leads to CLOSED
    reach, todo = {0}, [0]
    while todo:
        a = todo.pop()
        for b in range(n):
            if lib.pyws_state_allowed(a, b) and b not in reach:
                reach.add(b)
                todo.append(b)
    assert reach == set(range(n))


def test_public_constants() -> None:
    assert [int(s) for s in State] == [lib.PYWS_STATE_CONNECTING, lib.PYWS_STATE_OPEN,
                                      lib.PYWS_STATE_CLOSING, lib.PYWS_STATE_CLOSED]
    assert pyws.State is State and "State" in pyws.__all__
    mgr = pyws.Manager()
    try:  # a stale or never-used id
        assert lib.pyws_conn_state(mgr._loop, 0) == lib.PYWS_STATE_CLOSED
        assert lib.pyws_conn_state(mgr._loop, (7 << 32) | 3) == lib.PYWS_STATE_CLOSED
    finally:
        mgr.close()


# ----------------------------------------------------------------------------- real sockets

def _dedup(seq: List[Any]) -> List[Any]:
    out: List[Any] = []
    for x in seq:
        if not out or out[-1] != x:
            out.append(x)
    return out


class _Pair:
    """One Manager that listens and dials itself: the server's and the client's connection
    on one loop, each with its own list of the states seen (at every event and after every
    poll)."""

    def __init__(self, server: Callable[["_Pair", Any, int, Any], None], **options: Any) -> None:
        self.server_fn = server
        self.mgr = pyws.Manager(self._server, **options)
        self.port = self.mgr.listen("http://127.0.0.1:0").port
        self.events: List[Tuple[str, int]] = []
        self.seen: Dict[str, List[State]] = {"server": [], "client": []}
        self.conns: Dict[str, Any] = {}
        self.client = self.mgr.ws_connect(f"ws://127.0.0.1:{self.port}/", self._client)
        self.conns["client"] = self.client
        self._note()

    def _server(self, conn: Any, ev: int, data: Any) -> None:
        self.conns["server"] = conn
        self.events.append(("server", ev))
        self.seen["server"].append(conn.state)
        self.server_fn(self, conn, ev, data)
        self.seen["server"].append(conn.state)

    def _client(self, conn: Any, ev: int, data: Any) -> None:
        self.events.append(("client", ev))
        self.seen["client"].append(conn.state)
        if ev == pyws.EV_CLOSE:
            assert conn.closed and conn.state == State.CLOSED

    def _note(self) -> None:
        for side, conn in self.conns.items():
            self.seen[side].append(conn.state)

    def poll_until(self, cond: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out; events: {self.events}"
            self.mgr.poll(10)
            self._note()

    def closed(self, side: str) -> bool:
        return (side, pyws.EV_CLOSE) in self.events


def _upgrade(p: _Pair, conn: Any, ev: int, data: Any) -> None:
    if ev == pyws.EV_HTTP_MSG:
        assert conn.state == State.CONNECTING  # a server connection still speaking HTTP
        conn.ws_upgrade(data)
        assert conn.state == State.OPEN


def test_client_goes_connecting_open_closing_closed() -> None:
    p = _Pair(_upgrade)
    try:
        assert p.client.state == State.CONNECTING
        p.poll_until(lambda: p.client.is_websocket)
        assert p.client.state == State.OPEN
        p.client.close(1000, "bye")
        assert p.client.state == State.CLOSING
        p.poll_until(lambda: p.closed("client") and p.closed("server"))
        assert p.client.state == State.CLOSED and p.client.close_code == 1000
        assert _dedup(p.seen["client"]) == [State.CONNECTING, State.OPEN, State.CLOSING,
                                            State.CLOSED]
        # the server saw the client's close: a peer-initiated close
        assert _dedup(p.seen["server"]) == [State.CONNECTING, State.OPEN, State.CLOSING,
                                            State.CLOSED]
    finally:
        p.mgr.close()


def _both_open(p: _Pair) -> bool:
    return "server" in p.conns and p.conns["server"].is_websocket and p.client.is_websocket


def test_server_initiated_close_goes_open_closing_closed() -> None:
    def server(p: _Pair, conn: Any, ev: int, data: Any) -> None:
        _upgrade(p, conn, ev, data)
        if ev == pyws.EV_CLOSE:
            assert conn.state == State.CLOSED

    p = _Pair(server)
    try:
        p.poll_until(lambda: _both_open(p))
        srv = p.conns["server"]
        assert srv.state == State.OPEN and p.client.state == State.OPEN
        srv.close(4001, "server says bye")
        assert srv.state == State.CLOSING
        p.poll_until(lambda: p.closed("client") and p.closed("server"))
        assert srv.state == State.CLOSED
        assert p.client.close_code == 4001 and srv.close_code == 4001
        assert _dedup(p.seen["server"]) == [State.CONNECTING, State.OPEN, State.CLOSING,
                                            State.CLOSED]
        assert _dedup(p.seen["client"]) == [State.CONNECTING, State.OPEN, State.CLOSING,
                                            State.CLOSED]
    finally:
        p.mgr.close()


def test_peer_initiated_close_is_closing_when_the_close_frame_arrives() -> None:
    at_close_frame: List[State] = []

    def server(p: _Pair, conn: Any, ev: int, data: Any) -> None:
        _upgrade(p, conn, ev, data)
        if ev == pyws.EV_WS_CTL and data.opcode == pyws.OP_CLOSE:
            at_close_frame.append(conn.state)  # our echo is still to go out
            conn.send_text("a reply before the echo")  # still allowed: WS_CLOSE_RECEIVED

    p = _Pair(server, control_events=True)
    try:
        p.poll_until(lambda: _both_open(p))
        p.client.close(1001, "client leaves")
        p.poll_until(lambda: p.closed("client") and p.closed("server"))
        assert at_close_frame == [State.CLOSING]
        srv = p.conns["server"]
        assert srv.state == State.CLOSED and srv.close_code == 1001
        assert srv.close_reason == "client leaves"
        assert _dedup(p.seen["server"]) == [State.CONNECTING, State.OPEN, State.CLOSING,
                                            State.CLOSED]
    finally:
        p.mgr.close()


def test_state_is_closed_after_close_event_and_after_manager_close() -> None:
    p = _Pair(_upgrade)
    p.poll_until(lambda: _both_open(p))
    srv = p.conns["server"]
    assert srv.state == State.OPEN and p.client.state == State.OPEN
    p.mgr.close()
    assert srv.closed and srv.state == State.CLOSED and srv.is_websocket
    assert p.client.closed and p.client.state == State.CLOSED and p.client.is_websocket


def test_http_connection_states() -> None:
    """A plain HTTP exchange: CONNECTING while it speaks HTTP, CLOSING once drain() was
    called, CLOSED after EV_CLOSE; never a WebSocket."""
    import socket

    seen: List[Tuple[int, State]] = []
    conns: List[Any] = []

    def handler(conn: Any, ev: int, data: Any) -> None:
        conns.append(conn)
        seen.append((ev, conn.state))
        if ev == pyws.EV_HTTP_MSG:
            conn.reply(200, "ok")
            conn.drain()
            seen.append((-1, conn.state))

    mgr = pyws.Manager(handler)
    try:
        port = mgr.listen("http://127.0.0.1:0").port
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.setblocking(False)
        deadline = time.monotonic() + 10
        while not any(ev == pyws.EV_CLOSE for ev, _ in seen):
            assert time.monotonic() < deadline
            mgr.poll(10)
            try:  # read the answer; at the server's FIN close too, which ends its linger
                if s.fileno() >= 0 and s.recv(4096) == b"":
                    s.close()
            except BlockingIOError:
                pass
        s.close()
        assert [st for _, st in seen] == [State.CONNECTING, State.CONNECTING, State.CLOSING,
                                          State.CLOSED]
        assert not conns[0].is_websocket and conns[0].close_code is None
    finally:
        mgr.close()


# ----------------------------------------------------------------------------- Driver.step

@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in this (the main) thread after ``seconds``: a step loop that spins
    in Python is interrupted instead of hanging the run."""
    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s: Driver.step spins")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("wait", ["recv", "sleep", "drain"])
def test_handler_that_keeps_waiting_after_close_is_stopped(
        wait: str, caplog: pytest.LogCaptureFixture) -> None:
    """A handler that catches ConnectionClosed and waits again: with no guard at all the old
    step loop resumed it forever. It is told twice (recv() gives None, then a wait raises
    ConnectionClosed), then stopped, its finally block run."""
    app = pyws.App()
    told: List[Any] = []
    ended: List[bool] = []

    @app.websocket("/stubborn")
    def stubborn(ws: pyws.WebSocket) -> Any:
        try:
            while True:
                try:
                    if wait == "recv":
                        told.append((yield ws.recv()))
                    elif wait == "sleep":
                        told.append((yield ws.sleep(0.01)))
                    else:
                        told.append((yield ws.drain()))
                        yield ws.sleep(0.01)  # drain() under high water is ready at once
                except pyws.ConnectionClosed as exc:
                    told.append(type(exc).__name__)
        finally:
            ended.append(True)

    lst = app.listen("127.0.0.1", 0)
    opened: List[Any] = []

    def client(ws: pyws.WebSocket) -> Any:
        opened.append(ws)
        ws.close(1000)
        return
        yield  # a generator

    caplog.set_level(logging.WARNING, logger="pyws")
    try:
        with _deadline(15):
            app.connect(f"ws://127.0.0.1:{lst.port}/stubborn", client)
            deadline = time.monotonic() + 10
            while not ended:
                assert time.monotonic() < deadline, told
                app.poll(10)
        assert ended == [True]
        assert told[-1] == "ConnectionClosed" and told.count("ConnectionClosed") == 1
        if wait == "recv":
            assert told == [None, "ConnectionClosed"]
        assert "kept waiting after its connection closed" in caplog.text
    finally:
        app.close()


def test_recv_after_close_gives_none_then_raises() -> None:
    """The well-behaved sequence is unchanged: None once, then ConnectionClosed, which a
    handler that lets it propagate ends with (no warning)."""
    app = pyws.App()
    told: List[Any] = []
    ended: List[bool] = []

    @app.websocket("/ws")
    def handler(ws: pyws.WebSocket) -> Any:
        try:
            told.append((yield ws.recv()))
            told.append(ws.connection_state)
            told.append((yield ws.recv()))
        except pyws.ConnectionClosed as exc:
            told.append(exc.code)
        finally:
            ended.append(True)

    lst = app.listen("127.0.0.1", 0)

    def client(ws: pyws.WebSocket) -> Any:
        assert ws.connection_state == State.OPEN and isinstance(ws.state, dict)
        ws.close(1000)
        assert ws.connection_state == State.CLOSING
        return
        yield

    try:
        with _deadline(15):
            app.connect(f"ws://127.0.0.1:{lst.port}/ws", client)
            deadline = time.monotonic() + 10
            while not ended:
                assert time.monotonic() < deadline, told
                app.poll(10)
        assert told == [None, State.CLOSED, 1000]
    finally:
        app.close()
