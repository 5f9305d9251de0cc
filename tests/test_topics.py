"""Topics (rooms) in C, through the App and through the callback Manager API: subscribe,
unsubscribe, is_subscribed, subscriber and topic counts, publish (with exclude), broadcast,
str / bytes / Message payloads, exactly-once in-order fan-out to many subscribers, cleanup on
close, slow subscribers closed with 1008 while fast ones keep receiving, and connections in the
middle of a fragmented send being skipped."""
from __future__ import annotations

import logging
import os
import queue
import random
import selectors
import socket
import struct
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest
import websocket
from websocket import ABNF

import pyws
from pyws import EV_CLOSE, EV_HTTP_MSG, EV_WS_MSG, OP_BINARY, OP_CONTINUATION, OP_TEXT, Message

from _rawws import KEY, OP_CLOSE, RawWS, handshake_request
from conftest import AppServer, ServerThread
from test_app import wait_for

Frame = Tuple[int, bytes]




# ---------------------------------------------------------------------------------- raw clients
def parse_frames(buf: bytearray) -> List[Frame]:
    """Remove the complete (unmasked, server-sent) frames at the start of buf; (opcode, data)."""
    out: List[Frame] = []
    pos = 0
    n = len(buf)
    while n - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        assert not b1 & 0x80, "server frames are not masked"
        ln = b1 & 0x7F
        hl = 2
        if ln == 126:
            if n - pos < 4:
                break
            ln = struct.unpack_from("!H", buf, pos + 2)[0]
            hl = 4
        elif ln == 127:
            if n - pos < 10:
                break
            ln = struct.unpack_from("!Q", buf, pos + 2)[0]
            hl = 10
        if n - pos < hl + ln:
            break
        assert b0 & 0x80, "publish sends whole messages in one frame"
        out.append((b0 & 0x0F, bytes(buf[pos + hl:pos + hl + ln])))
        pos += hl + ln
    del buf[:pos]
    return out


class RawClients:
    """Many raw WebSocket clients read by one thread with a selector (no thread per client)."""

    def __init__(self, port: int, paths: List[str], rcvbuf: Optional[int] = None) -> None:
        self.socks: List[socket.socket] = []
        self.bufs: List[bytearray] = []
        self.frames: List[List[Frame]] = []
        self.eof: List[bool] = []
        self.sel = selectors.DefaultSelector()
        for i, path in enumerate(paths):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            s.sendall(handshake_request(path))
            head = b""
            deadline = time.monotonic() + 5
            while b"\r\n\r\n" not in head:
                assert time.monotonic() < deadline, "no handshake response in time"
                chunk = s.recv(1)  # byte by byte: nothing past the head is consumed
                assert chunk, f"EOF in the handshake: {head!r}"
                head += chunk
            assert head.startswith(b"HTTP/1.1 101"), head
            s.setblocking(False)
            self.socks.append(s)
            self.bufs.append(bytearray())
            self.frames.append([])
            self.eof.append(False)
            self.sel.register(s, selectors.EVENT_READ, i)

    def pump(self, until: Callable[[], bool], timeout: float = 10.0) -> None:
        """Read and parse until ``until()`` or the deadline (then AssertionError)."""
        deadline = time.monotonic() + timeout
        for _ in range(1_000_000):
            if until():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in self.sel.select(min(left, 0.1)):
                i = key.data
                try:
                    chunk = self.socks[i].recv(262144)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    self.eof[i] = True
                    self.sel.unregister(self.socks[i])
                    continue
                self.bufs[i] += chunk
                self.frames[i].extend(parse_frames(self.bufs[i]))
        raise AssertionError("clients did not get what was expected in time: " +
                             str(sorted({len(f) for f in self.frames})))

    def settle(self, seconds: float = 0.1) -> None:
        """Keep reading for ``seconds`` (to catch anything extra that would arrive)."""
        end = time.monotonic() + seconds
        try:
            self.pump(lambda: time.monotonic() > end, seconds + 5)
        except AssertionError:  # pragma: no cover - the condition is time only
            raise

    def wait_counts(self, n: int, which: Optional[List[int]] = None,
                    timeout: float = 10.0) -> None:
        idx = range(len(self.socks)) if which is None else which
        self.pump(lambda: all(len(self.frames[i]) >= n for i in idx), timeout)

    def send(self, i: int, payload: bytes, opcode: int = OP_TEXT) -> None:
        from _frames import MASK_KEY, frame
        self.socks[i].setblocking(True)
        self.socks[i].settimeout(5)
        self.socks[i].sendall(frame(opcode, payload, mask=MASK_KEY))
        self.socks[i].setblocking(False)

    def close(self, i: Optional[int] = None) -> None:
        for j in (range(len(self.socks)) if i is None else [i]):
            try:
                self.sel.unregister(self.socks[j])
            except (KeyError, ValueError):
                pass
            self.socks[j].close()

    def __enter__(self) -> "RawClients":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
        self.sel.close()


def room_app(**options: Any) -> Tuple[pyws.App, "queue.Queue[Any]"]:
    """Chat rooms: subscribe to the room at once, publish what is received (to everyone in the
    room, the sender included); 'leave' unsubscribes, 'join:x' subscribes to x too. Closes are
    reported as (path, close_code, close_reason)."""
    app = pyws.App(**options)
    closes: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/ws/rooms/{room}")
    def room(ws: pyws.WebSocket) -> Any:
        name = ws.params["room"]
        assert ws.subscribe(name) is True
        assert ws.subscribe(name) is False  # already
        try:
            while True:
                msg = yield ws.recv()
                if msg is None:
                    return
                if msg.text == "leave":
                    ws.unsubscribe(name)
                elif msg.text.startswith("join:"):
                    ws.subscribe(msg.text[5:])
                else:
                    app.publish(name, msg)
        finally:
            closes.put((ws.request.path, ws.close_code, ws.close_reason))

    return app, closes


# ---------------------------------------------------------------------------------- App API
def test_app_subscribe_publish_exclude_and_counts(serve: Callable[..., AppServer]) -> None:
    app, closes = room_app()
    srv = serve(app)
    with RawClients(srv.port, ["/ws/rooms/a"] * 3 + ["/ws/rooms/b"] * 2) as rc:
        assert srv.call(lambda: (app.subscribers("a"), app.subscribers("b"),
                                 app.subscribers(b"a"), app.subscribers("c"),
                                 app.mgr.topic_count)) == (3, 2, 3, 0, 2)
        socks = srv.call(lambda: sorted(app.connections, key=lambda w: w.remote_addr))
        assert len(socks) == 5
        a_socks = [w for w in socks if w.params["room"] == "a"]

        def pub() -> Tuple[int, ...]:
            return (app.publish("a", "to a"),
                    app.publish(b"b", b"to b"),
                    app.publish("a", Message.binary(b"\x00bin")),
                    app.publish("b", Message.text("text msg")),
                    app.publish("a", "not to first", exclude=a_socks[0]),
                    app.publish("a", "not to second", exclude=a_socks[1].conn),
                    app.mgr.publish("a", b"as text", binary=False),
                    app.publish("nobody", "lost"),
                    app.broadcast("to all"),
                    app.broadcast(Message.binary(b"all bin"), exclude=a_socks[2]))
        assert srv.call(pub) == (3, 2, 3, 2, 2, 2, 3, 0, 5, 4)
        expect_a = [(OP_TEXT, b"to a"), (OP_BINARY, b"\x00bin"), (OP_TEXT, b"not to first"),
                    (OP_TEXT, b"not to second"), (OP_TEXT, b"as text"), (OP_TEXT, b"to all"),
                    (OP_BINARY, b"all bin")]
        expect_b = [(OP_BINARY, b"to b"), (OP_TEXT, b"text msg"), (OP_TEXT, b"to all"),
                    (OP_BINARY, b"all bin")]
        ports = [w.remote_addr.rsplit(":", 1)[1] for w in a_socks]
        idx = {str(s.getsockname()[1]): i for i, s in enumerate(rc.socks)}
        wanted = {}
        for i in range(5):
            wanted[i] = list(expect_b) if i >= 3 else list(expect_a)
        wanted[idx[ports[0]]].remove((OP_TEXT, b"not to first"))
        wanted[idx[ports[1]]].remove((OP_TEXT, b"not to second"))
        wanted[idx[ports[2]]].remove((OP_BINARY, b"all bin"))
        rc.pump(lambda: all(len(rc.frames[i]) >= len(wanted[i]) for i in range(5)))
        rc.settle()
        for i in range(5):
            assert rc.frames[i] == wanted[i], i

        # a message from a client is published to its room, the sender included
        rc.frames = [[] for _ in range(5)]
        rc.send(3, b"hello b")
        rc.wait_counts(1, [3, 4])
        assert rc.frames[3] == rc.frames[4] == [(OP_TEXT, b"hello b")]
        # unsubscribe ("leave") and subscribe to a second topic ("join:b")
        rc.send(0, b"leave")
        rc.send(1, b"join:b")
        wait_for(lambda: srv.call(lambda: (app.subscribers("a"), app.subscribers("b")))
                 == (2, 3))
        is_subs = srv.call(lambda: sorted(
            (w.conn.is_subscribed("a"), w.conn.is_subscribed("b")) for w in app.connections))
        assert is_subs == [(False, False), (False, True), (False, True), (True, False),
                           (True, True)]
    wait_for(lambda: closes.qsize() == 5)
    assert srv.call(lambda: (app.subscribers("a"), app.subscribers("b"),
                             app.mgr.topic_count)) == (0, 0, 0)


def test_ws_publish_exclude_self(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()

    @app.websocket("/ws")
    def h(ws: pyws.WebSocket) -> Any:
        ws.subscribe("t")
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            n = ws.publish("t", msg.text, exclude_self=msg.text == "others")
            ws.send_text(f"reached {n}")

    srv = serve(app)
    a = websocket.create_connection(f"ws://127.0.0.1:{srv.port}/ws", timeout=5)
    b = websocket.create_connection(f"ws://127.0.0.1:{srv.port}/ws", timeout=5)
    try:
        a.send("all")
        assert a.recv() == "all" and a.recv() == "reached 2"
        assert b.recv() == "all"
        a.send("others")
        assert a.recv() == "reached 1"
        assert b.recv() == "others"
    finally:
        a.close()
        b.close()


def test_topic_names(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()
    results: "queue.Queue[Any]" = queue.Queue()

    @app.websocket("/ws")
    def h(ws: pyws.WebSocket) -> Any:
        out = [ws.subscribe("é/room"), ws.subscribe(b"\x00\xff"), ws.subscribe(""),
               ws.conn.is_subscribed("é/room".encode()), ws.conn.is_subscribed("x")]
        try:
            ws.subscribe("x" * 70000)
        except ValueError as exc:
            out.append(("ValueError", "64" in str(exc) or "65536" in str(exc)))
        try:
            ws.subscribe(123)  # type: ignore[arg-type]
        except TypeError:
            out.append("TypeError")
        out.append(app.subscribers(b"\x00\xff"))
        out.append(ws.unsubscribe("nope"))
        out.append(ws.unsubscribe(b"\x00\xff"))
        out.append(app.subscribers(b"\x00\xff"))
        results.put(out)
        yield ws.recv()

    srv = serve(app)
    c = websocket.create_connection(f"ws://127.0.0.1:{srv.port}/ws", timeout=5)
    try:
        assert results.get(timeout=5) == [True, True, True, True, False, ("ValueError", True),
                                          "TypeError", 1, False, True, 0]
        assert srv.call(lambda: app.publish("é/room", "x")) == 1
        assert c.recv() == "x"
        assert srv.call(lambda: app.publish("", b"empty topic")) == 1
        assert c.recv() == b"empty topic"
    finally:
        c.close()


def test_fan_out_exactly_once_in_order(serve: Callable[..., AppServer]) -> None:
    n_subs, n_msgs = 200, 150
    app, closes = room_app(write_limit=64 * 1024 * 1024)
    srv = serve(app)
    sizes = [0, 1, 125, 126, 127, 65535, 65536, 70000] + \
        [(i * 37) % 300 for i in range(n_msgs - 8)]
    payloads = [f"{i}:".encode() + b"x" * sizes[i] for i in range(n_msgs)]
    with RawClients(srv.port, ["/ws/rooms/big"] * n_subs + ["/ws/rooms/other"]) as rc:
        assert srv.call(lambda: app.subscribers("big")) == n_subs
        counts = srv.call(lambda: [app.publish("big", p if i % 2 else p.decode())
                                   for i, p in enumerate(payloads)])
        assert counts == [n_subs] * n_msgs
        rc.wait_counts(n_msgs, list(range(n_subs)), timeout=30)
        rc.settle()
        expected = [(OP_BINARY if i % 2 else OP_TEXT, p) for i, p in enumerate(payloads)]
        for i in range(n_subs):
            assert rc.frames[i] == expected, i
        assert rc.frames[n_subs] == []  # the other room got nothing
    wait_for(lambda: closes.qsize() == n_subs + 1)
    assert srv.call(lambda: (app.subscribers("big"), app.mgr.topic_count)) == (0, 0)


def test_chat_fan_out_from_many_senders(serve: Callable[..., AppServer]) -> None:
    # 50 members, 10 of them each send 20 messages: every member gets all 200 exactly once
    # and, per sender, in the order sent
    app, closes = room_app()
    srv = serve(app)
    members, senders, per = 50, 10, 20
    with RawClients(srv.port, ["/ws/rooms/chat"] * members) as rc:
        for k in range(per):
            for s in range(senders):
                rc.send(s, f"{s}:{k}".encode())
        rc.wait_counts(senders * per, timeout=20)
        rc.settle()
        for i in range(members):
            got = [data.decode() for op, data in rc.frames[i]]
            assert len(got) == senders * per and len(set(got)) == senders * per
            for s in range(senders):
                mine = [g for g in got if g.startswith(f"{s}:")]
                assert mine == [f"{s}:{k}" for k in range(per)]


def test_subscriptions_end_with_the_connection(serve: Callable[..., AppServer]) -> None:
    app, closes = room_app()
    srv = serve(app)
    n = 40
    with RawClients(srv.port, [f"/ws/rooms/r{i % 4}" for i in range(n)]) as rc:
        for i in range(n):
            rc.send(i, f"join:own{i}".encode())
            rc.send(i, b"join:all")
        wait_for(lambda: srv.call(lambda: app.subscribers("all")) == n)
        assert srv.call(lambda: app.mgr.topic_count) == 4 + n + 1
        for i in range(0, n, 2):  # half leave by closing TCP, without a close frame
            rc.close(i)
        wait_for(lambda: srv.call(lambda: app.subscribers("all")) == n // 2)
        assert srv.call(lambda: [app.subscribers(f"r{k}") for k in range(4)]) == [0, 10, 0, 10]
        assert srv.call(lambda: app.mgr.topic_count) == 2 + n // 2 + 1
        assert srv.call(lambda: app.publish("all", "still here")) == n // 2
        rc.wait_counts(1, list(range(1, n, 2)))
    wait_for(lambda: closes.qsize() == n)
    assert srv.call(lambda: (app.subscribers("all"), app.mgr.topic_count)) == (0, 0)
    # and again: topics come back and go away without leaking
    with RawClients(srv.port, ["/ws/rooms/again"] * 5) as rc:
        assert srv.call(lambda: (app.subscribers("again"), app.mgr.topic_count)) == (5, 1)
    wait_for(lambda: srv.call(lambda: app.mgr.topic_count) == 0)


def _slow_subscriber(port: int, path: str) -> socket.socket:
    """A client with a tiny receive buffer that completes the handshake and never reads."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.sendall(handshake_request(path))
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 4096:
        chunk = s.recv(1)
        assert chunk
        head += chunk
    assert head.startswith(b"HTTP/1.1 101")
    return s


def test_slow_subscriber_closed_1008_fast_ones_keep_receiving(
        serve: Callable[..., AppServer], caplog: Any) -> None:
    limit = 256 * 1024
    app, closes = room_app(write_limit=limit, write_high_water=64 * 1024)
    srv = serve(app)
    slow = _slow_subscriber(srv.port, "/ws/rooms/feed")
    slow_port = str(slow.getsockname()[1])
    body = b"y" * 16000
    published: List[bytes] = []
    with RawClients(srv.port, ["/ws/rooms/feed"] * 3) as fast:
        assert srv.call(lambda: app.subscribers("feed")) == 4
        dropped_at = None
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="pyws"):
            for rnd in range(400):
                msgs = [f"{rnd}:{j}:".encode() + body for j in range(8)]
                counts = srv.call(lambda: [app.publish("feed", m) for m in msgs])
                published.extend(msgs)
                fast.wait_counts(len(published))
                if dropped_at is None and counts[-1] == 3:
                    dropped_at = rnd
                    assert counts[0] in (3, 4)
                if dropped_at is not None and rnd >= dropped_at + 3:
                    break
                assert time.monotonic() - t0 < 20, "the slow subscriber was never dropped"
        assert dropped_at is not None
        assert "slow subscriber" in caplog.text
        path, code, reason = closes.get(timeout=5)
        assert code == 1008 and "slow" in reason
        assert srv.call(lambda: app.subscribers("feed")) == 3
        closed_ports = srv.call(lambda: {w.remote_addr.rsplit(":", 1)[1]
                                         for w in app.connections})
        assert slow_port not in closed_ports
        # the fast ones got everything, exactly once, in order, while the slow one was stuck
        for i in range(3):
            assert [d for _op, d in fast.frames[i]] == published
    # the slow client: what reached it is an in-order prefix, then the TCP end (no close
    # frame fits behind a full queue)
    slow.settimeout(5)
    buf = bytearray()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = slow.recv(262144)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        buf += chunk
    slow.close()
    got = [d for op, d in parse_frames(buf) if op != OP_CLOSE]
    assert got == published[:len(got)]
    assert len(got) < len(published)


# ---------------------------------------------------------------------------------- Manager API
def _manager_handler(topic_of: Callable[[str], List[str]],
                     events: "queue.Queue[Any]") -> Callable[..., None]:
    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            if data.is_websocket_upgrade:
                conn.ws_upgrade(data)
                for t in topic_of(data.uri):
                    conn.subscribe(t)
                conn.userdata = data.uri
            else:
                try:
                    conn.subscribe("http")
                except pyws.PyWSError as exc:
                    conn.reply(400, type(exc).__name__)
        elif ev == EV_WS_MSG:
            text = data.data.decode()
            if text.startswith("pub:"):
                _, topic, payload = text.split(":", 2)
                conn._mgr.publish(topic, payload, exclude=conn)
        elif ev == EV_CLOSE:
            events.put(("close", conn.userdata, conn.is_subscribed("a")))
    return handler


def test_manager_topic_api(server_factory: Callable[..., ServerThread]) -> None:
    events: "queue.Queue[Any]" = queue.Queue()
    srv = server_factory(_manager_handler(lambda uri: uri.strip("/").split("/"), events))
    with RawClients(srv.port, ["/a", "/a/b", "/b", "/c"]) as rc:
        mgr = srv.mgr
        assert mgr is not None
        assert srv.call(lambda: (mgr.subscribers("a"), mgr.subscribers("b"),
                                 mgr.subscribers("c"), mgr.topic_count)) == (2, 2, 1, 3)

        def by_uri() -> Dict[str, pyws.Connection]:
            return {c.userdata: c for c in mgr.connections}

        def ops() -> List[Any]:
            cs = by_uri()
            return [cs["/a"].is_subscribed("a"), cs["/a"].is_subscribed("b"),
                    cs["/a"].subscribe("a"), cs["/a"].subscribe("z"),
                    mgr.publish("a", "t-a"),
                    mgr.publish(b"b", b"b-b"),
                    mgr.publish("a", b"a-as-text", binary=False),
                    mgr.publish("b", "b-as-binary", binary=True),
                    mgr.publish("a", "ex", exclude=cs["/a/b"]),
                    mgr.broadcast("everyone"),
                    mgr.broadcast(b"nearly", exclude=cs["/c"]),
                    cs["/a"].unsubscribe("z"), cs["/a"].unsubscribe("z"),
                    mgr.topic_count]
        assert srv.call(ops) == [True, False, False, True, 2, 2, 2, 2, 1, 4, 3, True, False, 3]
        want = {
            0: [(OP_TEXT, b"t-a"), (OP_TEXT, b"a-as-text"), (OP_TEXT, b"ex"),
                (OP_TEXT, b"everyone"), (OP_BINARY, b"nearly")],
            1: [(OP_TEXT, b"t-a"), (OP_BINARY, b"b-b"), (OP_TEXT, b"a-as-text"),
                (OP_BINARY, b"b-as-binary"), (OP_TEXT, b"everyone"), (OP_BINARY, b"nearly")],
            2: [(OP_BINARY, b"b-b"), (OP_BINARY, b"b-as-binary"), (OP_TEXT, b"everyone"),
                (OP_BINARY, b"nearly")],
            3: [(OP_TEXT, b"everyone")],
        }
        rc.pump(lambda: all(len(rc.frames[i]) >= len(w) for i, w in want.items()))
        rc.settle()
        assert {i: rc.frames[i] for i in want} == want
        # publishing from a handler, excluding the sender
        rc.frames = [[] for _ in range(4)]
        rc.send(0, b"pub:a:from handler")
        rc.wait_counts(1, [1])
        rc.settle()
        assert rc.frames == [[], [(OP_TEXT, b"from handler")], [], []]
    for _ in range(4):
        kind, uri, still = events.get(timeout=5)
        assert kind == "close" and still is False  # no subscription survives its connection
    assert srv.call(lambda: (srv.mgr.subscribers("a"), srv.mgr.topic_count)) == (0, 0)
    # an HTTP connection cannot subscribe
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"PyWSError" in s.recv(4096)


def test_manager_broadcast_skips_http_and_pending(
        server_factory: Callable[..., ServerThread]) -> None:
    events: "queue.Queue[Any]" = queue.Queue()
    srv = server_factory(_manager_handler(lambda uri: [], events))
    with RawClients(srv.port, ["/x", "/y"]) as rc, \
            socket.create_connection(("127.0.0.1", srv.port), timeout=5) as idle, \
            socket.create_connection(("127.0.0.1", srv.port), timeout=5) as half:
        half.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # an unfinished request
        wait_for(lambda: srv.call(lambda: len(srv.mgr.connections)) == 4)
        assert srv.call(lambda: srv.mgr.broadcast("hi")) == 2
        rc.wait_counts(1)
        assert rc.frames == [[(OP_TEXT, b"hi")], [(OP_TEXT, b"hi")]]
        idle.settimeout(0.2)
        with pytest.raises(socket.timeout):
            idle.recv(10)


def test_fragmented_send_in_progress_is_skipped(server_factory: Callable[..., ServerThread],
                                                caplog: Any) -> None:
    events: "queue.Queue[Any]" = queue.Queue()
    srv = server_factory(_manager_handler(lambda uri: ["t"], events))
    with RawWS(srv.port) as f, RawClients(srv.port, ["/g", "/h"]) as rc:
        f.handshake("/f")
        mgr = srv.mgr
        assert mgr is not None
        wait_for(lambda: srv.call(lambda: mgr.subscribers("t")) == 3)

        def step1() -> Tuple[int, int]:
            fc = [c for c in mgr.connections if c.userdata == "/f"][0]
            fc.ws_send(b"part1-", OP_BINARY, fin=False)
            n1 = mgr.publish("t", "during")
            n2 = mgr.broadcast("during-bc")
            fc.ws_send(b"part2", OP_CONTINUATION, fin=True)
            return n1, n2

        with caplog.at_level(logging.WARNING, logger="pyws"):
            assert srv.call(step1) == (2, 2)  # the one mid-fragment is not counted
        assert "skipped 1 connection" in caplog.text
        assert srv.call(lambda: mgr.publish("t", "after")) == 3
        rc.wait_counts(3)
        rc.settle()
        assert rc.frames[0] == rc.frames[1] == [(OP_TEXT, b"during"), (OP_TEXT, b"during-bc"),
                                                (OP_TEXT, b"after")]
        # /f: its fragmented message whole, with nothing published into the middle of it,
        # and the publish made after it
        assert [f.recv_frame() for _ in range(3)] == [
            (OP_BINARY, False, b"part1-"), (OP_CONTINUATION, True, b"part2"),
            (OP_TEXT, True, b"after")]


def test_fragmented_message_not_interleaved(server_factory: Callable[..., ServerThread]) -> None:
    events: "queue.Queue[Any]" = queue.Queue()
    srv = server_factory(_manager_handler(lambda uri: ["t"], events))
    with RawWS(srv.port) as r:
        r.handshake("/f")
        mgr = srv.mgr
        assert mgr is not None

        def run() -> List[int]:
            f = mgr.connections[0]
            out = []
            f.ws_send(b"a", OP_TEXT, fin=False)
            out.append(mgr.publish("t", "x"))
            f.ws_send(b"b", OP_CONTINUATION, fin=False)
            out.append(mgr.broadcast("y"))
            f.ws_send(b"c", OP_CONTINUATION, fin=True)
            out.append(mgr.publish("t", "z"))
            return out

        assert srv.call(run) == [0, 0, 1]
        frames = [r.recv_frame() for _ in range(4)]
        assert frames == [(OP_TEXT, False, b"a"), (OP_CONTINUATION, False, b"b"),
                          (OP_CONTINUATION, True, b"c"), (OP_TEXT, True, b"z")]


def test_subscribe_unsubscribe_model(server_factory: Callable[..., ServerThread]) -> None:
    """Random subscribe / unsubscribe / close against a Python model: counts, is_subscribed
    and publish reach agree with it after every step (the C side swap-removes entries and
    fixes back-references, which this exercises)."""
    events: "queue.Queue[Any]" = queue.Queue()
    srv = server_factory(_manager_handler(lambda uri: [], events))
    n, topics = 24, [f"t{i}" for i in range(6)]
    rng = random.Random(1234)
    with RawClients(srv.port, [f"/c{i}" for i in range(n)]) as rc:
        mgr = srv.mgr
        assert mgr is not None
        conns: Dict[int, pyws.Connection] = srv.call(
            lambda: {int(c.userdata[2:]): c for c in mgr.connections})
        model: Dict[int, Set[str]] = {i: set() for i in range(n)}
        alive = set(range(n))
        for step in range(600):
            i = rng.choice(sorted(alive))
            t = rng.choice(topics)
            r = rng.random()
            if r < 0.55:
                got = srv.call(lambda: conns[i].subscribe(t))
                assert got == (t not in model[i])
                model[i].add(t)
            elif r < 0.95:
                got = srv.call(lambda: conns[i].unsubscribe(t))
                assert got == (t in model[i])
                model[i].discard(t)
            elif len(alive) > 4:
                rc.close(i)
                alive.discard(i)
                model[i] = set()
                wait_for(lambda: srv.call(lambda: conns[i].closed))
            if step % 25 == 0 or step == 599:
                counts = srv.call(lambda: [mgr.subscribers(x) for x in topics])
                assert counts == [sum(1 for j in alive if x in model[j]) for x in topics]
                subs = srv.call(lambda: {j: {x for x in topics if conns[j].is_subscribed(x)}
                                         for j in alive})
                assert subs == {j: model[j] for j in alive}
                assert srv.call(lambda: mgr.topic_count) == \
                    len({x for j in alive for x in model[j]})
        # every live client receives exactly the topics it is subscribed to, once each
        for x in topics:
            assert srv.call(lambda: mgr.publish(x, x)) == sum(1 for j in alive if x in model[j])
        for j in alive:
            rc.frames[j] = []
        rc.pump(lambda: all(len(rc.frames[j]) >= len(model[j]) for j in alive))
        rc.settle()
        for j in alive:
            assert sorted(d.decode() for _op, d in rc.frames[j]) == sorted(model[j])


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE"))


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_publish_shares_one_frame_between_subscribers(serve: Callable[..., AppServer]) -> None:
    # 100 subscribers that do not read, one 8 MiB message: if it were copied per subscriber
    # the process would grow by ~800 MiB; framed once and shared it grows by ~8 MiB
    n, size = 100, 8 * 1024 * 1024
    app, closes = room_app(write_limit=64 * 1024 * 1024)
    srv = serve(app)
    payload = b"z" * size
    socks = [_slow_subscriber(srv.port, "/ws/rooms/share") for _ in range(n)]
    try:
        wait_for(lambda: srv.call(lambda: app.subscribers("share")) == n)
        before = _rss()
        assert srv.call(lambda: app.publish("share", payload)) == n
        time.sleep(0.2)  # let the loop write what the kernel takes
        queued = srv.call(lambda: [w.write_buffer_size for w in app.connections])
        grown = _rss() - before
        assert len(queued) == n and min(queued) > size // 2  # still queued in user space
        assert grown < 64 * 1024 * 1024, f"RSS grew by {grown >> 20} MiB"
    finally:
        for s in socks:
            s.close()
