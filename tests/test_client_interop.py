"""Interop of pyws' client with a server nobody here wrote: a `websockets` (asyncio) server run
in a background thread. Echo at every payload size 0 B .. 8 MiB (text and binary), fragmented
messages both ways, ping/pong both ways, close codes and reasons both ways, subprotocol
negotiation, the request headers the server saw, max_size, 100+ concurrent in-loop clients.
And masking, checked on the wire by a raw server that records every client frame."""
from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed as WsClosed

import pyws
from pyws import (EV_CLOSE, EV_ERROR, EV_WS_CTL, EV_WS_MSG, EV_WS_OPEN, OP_BINARY,
                  OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT)

from test_client_bad_server import OP_CLOSE, Peer, raw_server  # noqa: F401
from test_client_blocking import payload_of, text_of

MiB = 1 << 20
SIZES = [0, 1, 2, 125, 126, 127, 128, 65535, 65536, 65537, 1 * MiB]


class WebsocketsServer:
    """A websockets server on 127.0.0.1:<free port>, its asyncio loop in a thread. Requests are
    routed by path to ``routes[path prefix]``; ``log`` collects what handlers report."""

    def __init__(self, routes: Dict[str, Callable[[ServerConnection], Awaitable[None]]],
                 **options: Any) -> None:
        self.routes = routes
        self.options = options
        self.log: List[Any] = []
        self.port = 0
        self.error: Optional[BaseException] = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: Optional[asyncio.Event] = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the websockets server did not start")
        if self.error:
            raise self.error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:
            self.error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        opts = dict(compression=None, ping_interval=None, max_size=16 * MiB,
                    close_timeout=2)
        opts.update(self.options)
        async with serve(self._route, "127.0.0.1", 0, **opts) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _route(self, ws: ServerConnection) -> None:
        path = ws.request.path
        for prefix in sorted(self.routes, key=len, reverse=True):
            if path.startswith(prefix):
                try:
                    await self.routes[prefix](ws)
                except WsClosed:
                    pass
                except Exception as exc:  # reported to the test
                    self.log.append(("handler error", repr(exc)))
                    raise
                return
        await ws.close(4404, "no route")

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive()


# --------------------------------------------------------------------------- server routes

async def echo(ws: ServerConnection) -> None:
    async for msg in ws:
        await ws.send(msg)


def make_routes(log: List[Any]) -> Dict[str, Callable[[ServerConnection], Awaitable[None]]]:
    async def record(ws: ServerConnection) -> None:
        """Report the request, echo, then report the close the client sent."""
        log.append(("request", ws.request.path, dict(ws.request.headers.raw_items()),
                    ws.subprotocol))
        try:
            async for msg in ws:
                await ws.send(msg)
        finally:
            await ws.wait_closed()
            log.append(("closed", ws.close_code, ws.close_reason))

    async def fragments_out(ws: ServerConnection) -> None:
        """Each request message names what to send in fragments: "text" or "binary:N"."""
        async for msg in ws:
            if msg == "text":
                await ws.send(["frag", "mented ", "", "tëxt 😀"])
            elif msg == "many":
                await ws.send(str(i % 10) for i in range(1000))
            else:
                n = int(msg.split(":")[1])
                data = payload_of(n)
                await ws.send(data[i:i + 4096] for i in range(0, max(n, 1), 4096))

    async def fragments_in(ws: ServerConnection) -> None:
        """Receive each message frame by frame; answer how many frames and what it was."""
        while True:
            parts = [p async for p in ws.recv_streaming()]
            is_text = bool(parts) and isinstance(parts[0], str)
            joined = "".join(parts) if is_text else b"".join(parts)
            await ws.send(json.dumps({"frames": len(parts), "text": is_text,
                                      "len": len(joined),
                                      "value": joined if is_text else joined.hex()[:64]}))

    async def ping_client(ws: ServerConnection) -> None:
        """On "ping": ping the client, wait for its pong, report."""
        async for msg in ws:
            waiter = await ws.ping(msg.encode() if isinstance(msg, str) else msg)
            latency = await asyncio.wait_for(waiter, 5)
            await ws.send(f"pong after {latency:.4f}")

    async def close_with(ws: ServerConnection) -> None:
        """/close/CODE?reason: send two messages then close with CODE and reason."""
        code = int(ws.request.path.split("/")[2].split("?")[0])
        reason = ws.request.path.partition("?")[2].replace("%20", " ")
        await ws.send("first")
        await ws.send(b"second")
        await ws.close(code, reason)

    async def send_big(ws: ServerConnection) -> None:
        """/big/N: send one binary message of N bytes, then echo."""
        n = int(ws.request.path.split("/")[2])
        await ws.send(payload_of(n))
        await ws.wait_closed()
        log.append(("closed", ws.close_code, ws.close_reason))

    async def hello_at_once(ws: ServerConnection) -> None:
        await ws.send("welcome")
        await echo(ws)

    return {"/echo": echo, "/record": record, "/frag-out": fragments_out,
            "/frag-in": fragments_in, "/ping": ping_client, "/close/": close_with,
            "/big/": send_big, "/hello": hello_at_once}


@pytest.fixture
def wss() -> Any:
    """A websockets server with the routes above (16 MiB max_size, no compression)."""
    log: List[Any] = []
    srv = WebsocketsServer(make_routes(log))
    srv.log = log
    yield srv
    srv.stop()


@pytest.fixture
def wss_factory() -> Any:
    started: List[WebsocketsServer] = []

    def make(**options: Any) -> WebsocketsServer:
        log: List[Any] = []
        srv = WebsocketsServer(make_routes(log), **options)
        srv.log = log
        started.append(srv)
        return srv

    yield make
    for s in started:
        s.stop()


def connect(url: str, **kw: Any) -> pyws.ClientConnection:
    kw.setdefault("timeout", 10)
    kw.setdefault("open_timeout", 5)
    kw.setdefault("close_timeout", 3)
    kw.setdefault("max_size", 16 * MiB)
    return pyws.connect(url, **kw)


def wait_for_log(srv: WebsocketsServer, kind: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in list(srv.log):
            if entry[0] == kind:
                return entry
        time.sleep(0.01)
    raise AssertionError(f"no {kind!r} in the server log: {srv.log}")


# =========================================================================== echo, all sizes

@pytest.mark.parametrize("n", SIZES)
def test_echo_binary(wss: WebsocketsServer, n: int) -> None:
    with connect(wss.url("/echo")) as ws:
        data = payload_of(n)
        ws.send(data)
        m = ws.recv()
        assert (m.opcode, m.data) == (OP_BINARY, data)


@pytest.mark.parametrize("n", SIZES)
def test_echo_text(wss: WebsocketsServer, n: int) -> None:
    with connect(wss.url("/echo")) as ws:
        text = text_of(n)
        ws.send(text)
        m = ws.recv()
        assert m.opcode == OP_TEXT and m.text == text


@pytest.mark.slow
@pytest.mark.parametrize("n", [2 * MiB, 8 * MiB])
def test_echo_large(wss: WebsocketsServer, n: int) -> None:
    with connect(wss.url("/echo")) as ws:
        data = payload_of(n)
        ws.send_bytes(data)
        assert ws.recv().data == data
        text = text_of(n)
        ws.send_text(text)
        assert ws.recv().text == text


def test_echo_many_in_a_row(wss: WebsocketsServer) -> None:
    with connect(wss.url("/echo")) as ws:
        sent = [text_of(i) if i % 3 else payload_of(i * 17) for i in range(300)]
        for s in sent:
            ws.send(s)
        for s in sent:
            m = ws.recv()
            assert m.data == (s.encode() if isinstance(s, str) else s)


def test_a_message_sent_right_after_the_handshake(wss: WebsocketsServer) -> None:
    with connect(wss.url("/hello")) as ws:
        assert ws.recv().text == "welcome"


# =========================================================================== fragmentation

def test_fragmented_text_from_the_server(wss: WebsocketsServer) -> None:
    with connect(wss.url("/frag-out")) as ws:
        ws.send("text")
        m = ws.recv()
        assert m.opcode == OP_TEXT and m.text == "fragmented tëxt 😀"
        ws.send("many")
        assert ws.recv().text == "0123456789" * 100


@pytest.mark.parametrize("n", [0, 1, 4096, 4097, 100000, 3 * MiB])
def test_fragmented_binary_from_the_server(wss: WebsocketsServer, n: int) -> None:
    with connect(wss.url("/frag-out")) as ws:
        ws.send(f"binary:{n}")
        m = ws.recv()
        assert m.opcode == OP_BINARY and m.data == payload_of(n)


def _loop_client(url: str, on_open: Callable[[pyws.Connection], Any], want: int,
                 **kw: Any) -> Tuple[pyws.Connection, List[Any], List[int]]:
    """Run one Manager.ws_connect client until it has ``want`` messages; then close it."""
    msgs: List[Any] = []
    events: List[int] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        events.append(ev)
        if ev == EV_WS_OPEN:
            on_open(conn)
        elif ev in (EV_WS_MSG, EV_WS_CTL):
            msgs.append(data)
            if len([m for m in msgs if m.opcode in (OP_TEXT, OP_BINARY)]) == want:
                conn.close()

    with pyws.Manager() as mgr:
        c = mgr.ws_connect(url, handler, **kw)
        deadline = time.monotonic() + 10
        while EV_CLOSE not in events and time.monotonic() < deadline:
            mgr.poll(20)
    assert EV_CLOSE in events, events
    assert EV_ERROR not in events, c.error
    return c, msgs, events


def test_fragmented_messages_to_the_server(wss: WebsocketsServer) -> None:
    """Connection.send_fragments and ws_send(fin=False) + OP_CONTINUATION: the websockets
    server receives each message frame by frame and reports how many frames it saw."""
    def on_open(c: pyws.Connection) -> None:
        c.send_fragments(["Hel", "lo ", "wör", "ld"], OP_TEXT)
        c.send_fragments([b"\x00" * 1000, b"\x01" * 1000, b"\x02"], OP_BINARY)
        # a 4-byte character split across frames: UTF-8 checks span fragments
        smile = "😀".encode()
        c.ws_send(smile[:1], OP_TEXT, fin=False)
        c.ping(b"between fragments")  # a control frame in the middle is allowed
        c.ws_send(smile[1:3], OP_CONTINUATION, fin=False)
        c.ws_send(smile[3:], OP_CONTINUATION, fin=True)
        c.send_fragments([payload_of(70000), payload_of(70000)], OP_BINARY)
        c.send("single")

    c, msgs, _ = _loop_client(wss.url("/frag-in"), on_open, 5)
    got = [json.loads(m.data) for m in msgs if m.opcode == OP_TEXT]
    assert got[0] == {"frames": 4, "text": True, "len": 11, "value": "Hello wörld"}
    assert got[1]["frames"] == 3 and got[1]["len"] == 2001 and not got[1]["text"]
    assert got[2] == {"frames": 3, "text": True, "len": 1, "value": "😀"}
    assert got[3]["frames"] == 2 and got[3]["len"] == 140000
    assert got[4] == {"frames": 1, "text": True, "len": 6, "value": "single"}


# =========================================================================== ping / pong

def test_server_pings_the_blocking_client(wss: WebsocketsServer) -> None:
    with connect(wss.url("/ping")) as ws:
        for payload in ["p1", "", "x" * 125]:
            ws.send(payload)
            m = ws.recv()  # arrives only once websockets got our pong
            assert m.text.startswith("pong after ")


def test_client_pings_the_server(wss: WebsocketsServer) -> None:
    """The loop client with control_events=True sees websockets' pongs with our payloads."""
    def on_open(c: pyws.Connection) -> None:
        c.ping(b"one")
        c.ping(b"")
        c.ping(bytes(range(125)))
        c.send("after the pings")

    c, msgs, _ = _loop_client(wss.url("/echo"), on_open, 1, control_events=True)
    pongs = [m.data for m in msgs if m.opcode == OP_PONG]
    assert pongs == [b"one", b"", bytes(range(125))]
    assert [m.text for m in msgs if m.opcode == OP_TEXT] == ["after the pings"]


def test_blocking_client_ping_keeps_working(wss: WebsocketsServer) -> None:
    with connect(wss.url("/echo")) as ws:
        for i in range(20):
            ws.ping(str(i))
        ws.send("done")
        assert ws.recv().text == "done"


def test_server_keepalive_pings(wss_factory: Any) -> None:
    """websockets' own keepalive (ping every 0.1 s, 0.5 s to answer): an idle but receiving
    pyws client stays connected."""
    srv = wss_factory(ping_interval=0.1, ping_timeout=0.5)
    with connect(srv.url("/echo")) as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1.0)
        ws.send("alive")
        assert ws.recv().text == "alive"


# =========================================================================== close

@pytest.mark.parametrize("code,reason", [(1000, ""), (1001, "going away"), (1008, "policy"),
                                         (3001, "app"), (4999, "four nine nine nine")])
def test_server_closes(wss: WebsocketsServer, code: int, reason: str) -> None:
    ws = connect(wss.url(f"/close/{code}?{reason.replace(' ', '%20')}"))
    try:
        assert ws.recv().text == "first"
        assert ws.recv().data == b"second"
        with pytest.raises(pyws.ConnectionClosed) as info:
            ws.recv()
        assert (info.value.code, info.value.reason) == (code, reason)
        assert ws.closed
    finally:
        ws.close()


def test_server_closes_iteration(wss: WebsocketsServer) -> None:
    with connect(wss.url("/close/1000")) as ws:
        assert [m.data for m in ws] == [b"first", b"second"]


@pytest.mark.parametrize("code,reason", [(1000, ""), (1001, "bye"), (1011, "oops"),
                                         (3000, "x" * 123), (4321, "reason é")])
def test_client_closes(wss: WebsocketsServer, code: int, reason: str) -> None:
    ws = connect(wss.url("/record"))
    ws.send("hi")
    assert ws.recv().text == "hi"
    ws.close(code, reason)
    assert ws.closed
    _, got_code, got_reason = wait_for_log(wss, "closed")
    assert (got_code, got_reason) == (code, reason)
    assert ws.close_code == code


def test_client_closes_in_the_loop(wss: WebsocketsServer) -> None:
    events: List[int] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        events.append(ev)
        if ev == EV_WS_OPEN:
            conn.close(4100, "loop close")

    with pyws.Manager() as mgr:
        c = mgr.ws_connect(wss.url("/record"), handler)
        deadline = time.monotonic() + 5
        while EV_CLOSE not in events and time.monotonic() < deadline:
            mgr.poll(20)
    assert c.close_code == 4100
    assert wait_for_log(wss, "closed")[1:] == (4100, "loop close")


def test_client_max_size(wss: WebsocketsServer) -> None:
    ws = connect(wss.url(f"/big/{MiB + 1}"), max_size=MiB)
    try:
        with pytest.raises(pyws.ConnectionClosed) as info:
            ws.recv()
        assert info.value.code == 1009
    finally:
        ws.close()
    assert wait_for_log(wss, "closed")[1] == 1009


# =========================================================================== handshake

def test_request_headers_seen_by_websockets(wss: WebsocketsServer) -> None:
    with connect(wss.url("/record?room=a%20b&x=1"), origin="https://pyws.example",
                 headers={"X-Custom": "value 1", "Authorization": "Bearer t0k3n"}) as ws:
        ws.send("x")
        ws.recv()
    _, path, headers, proto = wait_for_log(wss, "request")
    h = {k.lower(): v for k, v in headers.items()}
    assert path == "/record?room=a%20b&x=1"
    assert h["host"] == f"127.0.0.1:{wss.port}"
    assert h["origin"] == "https://pyws.example"
    assert h["x-custom"] == "value 1"
    assert h["authorization"] == "Bearer t0k3n"
    assert h["sec-websocket-version"] == "13"
    # compression is on by default: the client offers permessage-deflate (and a fallback)
    assert h["sec-websocket-extensions"] == (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12, "
        "permessage-deflate; client_max_window_bits=12")
    assert proto is None


def test_response_headers_from_websockets(wss: WebsocketsServer) -> None:
    with connect(wss.url("/echo")) as ws:
        assert ws.response.status == 101
        assert "websockets" in ws.response_headers["server"]


def test_subprotocol_negotiation(wss_factory: Any) -> None:
    srv = wss_factory(subprotocols=["chat.v2", "chat.v1"])
    with connect(srv.url("/record"), subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol in ("chat.v1", "chat.v2")
        chosen = ws.subprotocol
        ws.send("x")
        ws.recv()
    _, _, headers, proto = wait_for_log(srv, "request")
    assert proto == chosen
    assert {k.lower(): v for k, v in headers.items()}["sec-websocket-protocol"] == \
        "chat.v1, chat.v2"


def test_subprotocol_none_in_common(wss_factory: Any) -> None:
    """websockets refuses an upgrade whose subprotocols it does not support: a clear
    HandshakeError with its status."""
    srv = wss_factory(subprotocols=["only-this"])
    with pytest.raises(pyws.HandshakeError) as info:
        connect(srv.url("/echo"), subprotocols=["something-else"])
    assert info.value.status == 400


def test_no_subprotocol_offered_to_a_server_that_requires_one(wss_factory: Any) -> None:
    """websockets (17) requires one of its subprotocols once it has some: 400, seen as a
    HandshakeError with the server's status and headers."""
    srv = wss_factory(subprotocols=["chat"])
    with pytest.raises(pyws.HandshakeError) as info:
        connect(srv.url("/echo"))
    assert info.value.status == 400
    assert "content-length" in info.value.headers


def test_websockets_rejects_with_a_status(wss_factory: Any) -> None:
    def process_request(conn: ServerConnection, request: Any) -> Any:
        return conn.respond(418, "I'm a teapot\n")

    srv = wss_factory(process_request=process_request)
    with pytest.raises(pyws.HandshakeError) as info:
        connect(srv.url("/echo"))
    assert info.value.status == 418
    assert info.value.headers["content-type"].startswith("text/plain")


# =========================================================================== many clients

def test_many_concurrent_loop_clients(wss: WebsocketsServer) -> None:
    n = 120
    got: Dict[int, List[bytes]] = {}
    closed: Dict[int, Optional[int]] = {}
    errors: List[Any] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        k = conn.userdata
        if ev == EV_WS_OPEN:
            conn.send(f"text {k}")
            conn.send(payload_of(k * 100))
        elif ev == EV_WS_MSG:
            got.setdefault(k, []).append(data.data)
            if len(got[k]) == 2:
                conn.close()
        elif ev == EV_CLOSE:
            closed[k] = conn.close_code
        elif ev == EV_ERROR:
            errors.append((k, data))

    with pyws.Manager(handler) as mgr:
        for k in range(n):
            mgr.ws_connect(wss.url(f"/echo/{k}")).userdata = k
        deadline = time.monotonic() + 30
        while len(closed) < n and time.monotonic() < deadline:
            mgr.poll(20)
    assert errors == []
    assert closed == {k: 1000 for k in range(n)}
    assert got == {k: [f"text {k}".encode(), payload_of(k * 100)] for k in range(n)}


# =========================================================================== masking on the wire

def test_every_client_frame_is_masked_with_a_fresh_key(raw_server: Any) -> None:
    """A raw server records each client frame: all masked, every 4-byte key different (fresh
    randomness per frame), and the payloads unmask to what was sent."""
    report: Dict[str, Any] = {}

    def behave(p: Peer) -> None:
        p.handshake()
        close, before = p.recv_until_close()
        report["frames"] = before + [close]
        p.send_frame(close.payload, OP_CLOSE)

    s = raw_server(behave)
    sent: List[Tuple[int, bytes]] = []
    with connect(s.url("/")) as ws:
        for i in range(200):
            data = payload_of(i * 13)
            if i % 3 == 0:
                ws.send_text(data.hex())
                sent.append((OP_TEXT, data.hex().encode()))
            else:
                ws.send_bytes(data)
                sent.append((OP_BINARY, data))
        ws.ping(b"p")
        sent.append((OP_PING, b"p"))
        ws.send_bytes(b"")
        sent.append((OP_BINARY, b""))
        ws.close(1000, "masked too")
    s.stop()
    s.check()
    frames = report["frames"]
    assert len(frames) == len(sent) + 1
    assert all(f.masked for f in frames)
    keys = [f.key for f in frames]
    assert len(set(keys)) == len(keys)
    assert all(len(k) == 4 for k in keys)
    assert [(f.opcode, f.payload) for f in frames[:-1]] == sent
    assert frames[-1].opcode == OP_CLOSE
    assert frames[-1].payload == struct.pack("!H", 1000) + b"masked too"
    # keys look random: across ~200 keys every byte value position varies
    for pos in range(4):
        assert len({k[pos] for k in keys}) > 50


def test_masks_differ_between_connections(raw_server: Any) -> None:
    keys: List[bytes] = []
    lock = threading.Lock()

    def behave(p: Peer) -> None:
        p.handshake()
        close, before = p.recv_until_close()
        with lock:
            keys.extend(f.key for f in before + [close])
        p.send_frame(close.payload, OP_CLOSE)

    s = raw_server(behave)
    for _ in range(10):
        with connect(s.url("/")) as ws:
            ws.send("same message")
    s.stop()
    s.check()
    assert len(keys) == 20
    assert len(set(keys)) == 20
    reqs = s.requests
    assert len({r.key for r in reqs}) == 10  # a fresh Sec-WebSocket-Key per handshake


def test_the_close_echo_is_masked_too(raw_server: Any) -> None:
    """When the server starts the close, the client's answering close frame is masked and
    echoes the code."""
    seen: Dict[str, Any] = {}

    def behave(p: Peer) -> None:
        p.handshake()
        p.send_frame(struct.pack("!H", 4004) + b"server first", OP_CLOSE)
        close, before = p.recv_until_close()
        seen["close"] = close
        seen["before"] = before

    s = raw_server(behave)
    ws = connect(s.url("/"))
    with pytest.raises(pyws.ConnectionClosed) as info:
        ws.recv()
    assert (info.value.code, info.value.reason) == (4004, "server first")
    ws.close()
    s.stop()
    s.check()
    assert seen["before"] == []
    assert seen["close"].masked and seen["close"].close_code == 4004
