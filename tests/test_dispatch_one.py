"""Manager.poll's one-event path: a poll that returns a single small message (a ping-pong's
every poll) hands it to the handler without the batch machinery. Each test drives a Manager
from its own thread with a raw client socket, so it knows which polls returned one event, and
checks that such a message behaves as one from a batch: its fields, the echo, a handler that
raises, the async-style sink, a large message still a view, and a lone message after a batch
large enough to move the event array."""
from __future__ import annotations

import os
import time
from typing import Any, Callable, List, Tuple

import pytest

import pyws
from pyws import EV_HTTP_MSG, EV_WS_MSG, EV_WS_OPEN, OP_BINARY, OP_TEXT

from _frames import frame
from _rawws import RawWS, handshake_request


class One:
    """A Manager polled here; ``polls`` records what each poll() returned."""

    def __init__(self, on_message: Callable[[pyws.Connection, Any], None], **opts: Any) -> None:
        self.on_message = on_message
        self.got: List[Tuple[type, bytes, int, bool]] = []
        self.polls: List[int] = []
        self.opened: List[pyws.Connection] = []
        self.mgr = pyws.Manager(self.handler, **opts)
        self.port = self.mgr.listen("http://127.0.0.1:0").port

    def handler(self, conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_OPEN:
            self.opened.append(conn)
        elif ev == EV_WS_MSG:
            self.got.append((type(data), bytes(data.data), data.opcode, data.compressed))
            self.on_message(conn, data)

    def poll_until(self, pred: Callable[[], Any], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, "condition not met in time"
            self.polls.append(self.mgr.poll(10))

    def client(self) -> RawWS:
        r = RawWS(self.port)
        n = len(self.opened)
        r.send(handshake_request())
        self.poll_until(lambda: len(self.opened) > n)
        self.mgr.poll(10)
        status, _headers, _head = r.read_http_head()
        assert status == 101
        return r


@pytest.fixture
def one() -> Any:
    made: List[One] = []

    def make(on_message: Callable[[pyws.Connection, Any], None], **opts: Any) -> One:
        o = One(on_message, **opts)
        made.append(o)
        return o
    yield make
    for o in made:
        o.mgr.close()


def echo(conn: pyws.Connection, msg: Any) -> None:
    conn.ws_send(msg.data, msg.opcode)


def test_a_lone_message_is_a_message_with_its_fields(one: Any) -> None:
    o = one(echo)
    r = o.client()
    for payload, op in ((b"hello", OP_TEXT), (b"\x00\xff" * 10, OP_BINARY), (b"", OP_TEXT)):
        before = len(o.got)
        o.polls.clear()
        r.send_frame(payload, op)
        o.poll_until(lambda: len(o.got) > before)
        assert o.polls[-1] == 1  # the message came alone: the one-event path took it
        assert o.got[-1] == (pyws.Message, payload, op, False)
        o.mgr.poll(10)  # the echo is written at the start of a poll
        assert r.recv_frame() == (op, True, payload)


def test_a_lone_message_after_a_batch_that_moved_the_event_array(one: Any) -> None:
    o = one(echo)
    r = o.client()
    # a lone message first, so that the array's old place held one (a stale read shows)
    r.send_frame(b"first", OP_TEXT)
    o.poll_until(lambda: o.got)
    burst = [os.urandom(8) + i.to_bytes(4, "big") for i in range(600)]
    r.send(b"".join(frame(OP_BINARY, p, mask=os.urandom(4)) for p in burst))
    o.polls.clear()
    o.poll_until(lambda: len(o.got) >= 1 + len(burst))
    assert max(o.polls) > 1  # batches, the array grown past its first size
    for i in range(3):  # then lone messages again: the buffer over the first event is remade
        before = len(o.got)
        o.polls.clear()
        r.send_frame(b"alone %d" % i, OP_TEXT)
        o.poll_until(lambda: len(o.got) > before)
        assert o.polls[-1] == 1
        assert o.got[-1] == (pyws.Message, b"alone %d" % i, OP_TEXT, False)
    o.mgr.poll(10)
    echoed = [r.recv_frame()[2] for _ in range(1 + len(burst) + 3)]
    assert echoed == [b"first"] + burst + [b"alone %d" % i for i in range(3)]


def test_a_handler_raising_on_a_lone_message_closes_that_connection_1011(one: Any) -> None:
    def boom(conn: pyws.Connection, msg: Any) -> None:
        if msg.data == b"boom":
            raise RuntimeError("handler bug (expected by the test)")
        echo(conn, msg)

    o = one(boom)
    bad, good = o.client(), o.client()
    o.polls.clear()
    bad.send_frame(b"boom", OP_TEXT)
    o.poll_until(lambda: len(o.got) == 1)
    assert o.polls[-1] == 1
    o.mgr.poll(10)
    code, _reason, frames = bad.recv_close()
    assert (code, frames) == (1011, [])
    good.send_frame(b"still here", OP_TEXT)
    o.poll_until(lambda: len(o.got) == 2)
    o.mgr.poll(10)
    assert good.recv_frame() == (OP_TEXT, True, b"still here")


def test_a_lone_large_message_is_still_a_view(one: Any) -> None:
    seen: List[Any] = []

    def keep(conn: pyws.Connection, msg: Any) -> None:
        seen.append(msg)
        echo(conn, msg)

    o = one(keep, view_threshold=1024)
    r = o.client()
    payload = os.urandom(4000)
    o.polls.clear()
    r.send_frame(payload, OP_BINARY)
    o.poll_until(lambda: seen)
    assert o.polls[-1] == 1
    assert isinstance(seen[0], pyws.MessageView)
    with pytest.raises(ValueError):  # released once its handler returned
        bytes(seen[0].data)
    o.mgr.poll(10)
    assert r.recv_frame() == (OP_BINARY, True, payload)


def test_a_lone_message_goes_to_a_message_sink(one: Any) -> None:
    o = one(echo)
    r = o.client()
    sunk: List[Tuple[bytes, int, bool]] = []
    o.opened[0]._msg_sink = lambda data, op, compressed: sunk.append((data, op, compressed))
    o.polls.clear()
    r.send_frame(b"to the sink", OP_BINARY)
    o.poll_until(lambda: sunk)
    assert o.polls[-1] == 1
    assert sunk == [(b"to the sink", OP_BINARY, False)] and o.got == []


def _readable_now(sock: Any) -> bytes:
    """What the client socket holds right now, without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""
    finally:
        sock.settimeout(5.0)


def test_the_reply_to_a_lone_message_is_written_before_the_handler_returns(one: Any) -> None:
    # the round trip's reply does not wait for the next poll: the first send after a poll
    # that returned one event goes to the socket at once; a second one in the same handler
    # waits for the poll, so a handler that sends several frames still has them coalesced
    seen: List[Tuple[bytes, bytes]] = []
    holder: List[RawWS] = []

    def on_message(conn: pyws.Connection, msg: Any) -> None:
        conn.ws_send(b"first", OP_TEXT)
        at_once = _readable_now(holder[0].sock)
        conn.ws_send(b"second", OP_TEXT)
        seen.append((at_once, _readable_now(holder[0].sock)))

    o = one(on_message)
    r = o.client()
    holder.append(r)
    for i in range(3):
        r.send_frame(b"ping %d" % i, OP_TEXT, mask=True)
        n = len(seen)
        o.poll_until(lambda: len(seen) > n)
        assert o.polls[-1] == 1  # the lone-event poll
        at_once, after_second = seen[-1]
        assert at_once == frame(OP_TEXT, b"first"), at_once
        assert after_second == b""  # coalesced: it goes out at the next poll
        o.mgr.poll(10)
        assert r.recv_frame() == (OP_TEXT, True, b"second")
