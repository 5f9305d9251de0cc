"""pyws inside asyncio (pyws.aio, AsyncWebSocket, aconnect), against real peers over real
sockets: aiohttp's and websockets' clients against async handlers, pyws's async client against
aiohttp and websockets servers; every test on asyncio's default loop and on uvloop."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import ssl
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, List, Optional, TypeVar

import pytest

import pyws
from pyws import aio

from conftest import aiohttp_server, serving

aiohttp = pytest.importorskip("aiohttp")
uvloop = pytest.importorskip("uvloop")
websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect as ws_connect  # noqa: E402
from websockets.asyncio.server import serve as ws_serve  # noqa: E402

T = TypeVar("T")

SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20, 8 << 20]


def echo_app(**options: Any) -> pyws.App:
    app = pyws.App(max_message_size=16 << 20, write_limit=64 << 20, **options)

    @app.websocket("/echo")
    async def echo(ws: pyws.AsyncWebSocket) -> None:
        async for msg in ws:
            await ws.send(msg)

    return app


def payload(n: int, text: bool) -> Any:
    if text:
        return ("héllo wörld " * (n // 12 + 1)).encode()[:n].decode("utf-8", "ignore")
    return bytes(i * 7 & 0xFF for i in range(min(n, 4096))) * (n // 4096) + \
        bytes(i & 0xFF for i in range(n % 4096))


# ---------------------------------------------------------------------- server vs aiohttp client

def test_aiohttp_client_against_async_handler_text_binary_all_sizes(run: Any) -> None:
    async def main() -> None:
        async with serving(echo_app()) as port, aiohttp.ClientSession() as s:
            async with s.ws_connect(f"http://127.0.0.1:{port}/echo", max_msg_size=0) as ws:
                for n in SIZES:
                    t = payload(n, True)
                    await ws.send_str(t)
                    m = await ws.receive(timeout=20)
                    assert m.type == aiohttp.WSMsgType.TEXT and m.data == t, n
                    b = payload(n, False)
                    await ws.send_bytes(b)
                    m = await ws.receive(timeout=20)
                    assert m.type == aiohttp.WSMsgType.BINARY and m.data == b, n
                await ws.close(code=4000, message=b"bye")
            assert ws.close_code == 4000
    run(main())


def test_aiohttp_names_on_the_async_ws(run: Any) -> None:
    seen: List[Any] = []
    app = pyws.App()

    @app.websocket("/ws")
    async def h(ws: pyws.AsyncWebSocket) -> None:
        seen.append(await ws.receive_str())
        seen.append(await ws.receive_bytes())
        seen.append(await ws.receive_json())
        await ws.send_str("s")
        await ws.send_bytes(b"b")
        await ws.send_json({"k": [1, 2]})
        msg = await ws.receive()
        seen.append((msg.type, msg.data, msg.extra))
        msg = await ws.receive()
        seen.append(msg.type)
        seen.append((ws.closed, ws.close_code, ws.exception()))

    async def main() -> None:
        async with serving(app) as port, aiohttp.ClientSession() as s:
            async with s.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                await ws.send_str("a")
                await ws.send_bytes(b"\x01")
                await ws.send_json({"x": 1})
                assert await ws.receive_str() == "s"
                assert await ws.receive_bytes() == b"b"
                assert await ws.receive_json() == {"k": [1, 2]}
                await ws.close(code=pyws.WSCloseCode.GOING_AWAY, message=b"later")
            for _ in range(100):
                if len(seen) == 6:
                    break
                await asyncio.sleep(0.02)
    run(main())
    assert seen[:3] == ["a", b"\x01", {"x": 1}]
    assert seen[3] == (pyws.WSMsgType.CLOSE, 1001, "later")
    assert seen[4] == pyws.WSMsgType.CLOSED
    assert seen[5] == (True, 1001, None)


# ---------------------------------------------------------------------- server vs websockets

def test_websockets_client_fragments_ping_compression_close_code(run: Any) -> None:
    app = echo_app()
    rtts: List[float] = []

    @app.websocket("/ping")
    async def pinger(ws: pyws.AsyncWebSocket) -> None:
        rtts.append(await ws.ping())
        rtts.append(await ws.ping(b"abc"))
        await ws.close(4002, "done pinging")

    async def main() -> None:
        async with serving(app) as port:
            async with ws_connect(f"ws://127.0.0.1:{port}/echo", max_size=None) as c:
                assert c.response.headers.get("Sec-WebSocket-Extensions", "").startswith(
                    "permessage-deflate")
                await c.send(["frag", "ment", "ed"])  # one message in three frames
                assert await c.recv() == "fragmented"
                await c.send([b"\x00" * 70000, b"\x01" * 10])
                assert await c.recv() == b"\x00" * 70000 + b"\x01" * 10
                big = "compress me " * 100000
                await c.send(big)
                assert await c.recv() == big
                latency = await (await c.ping(b"p"))  # answered by the C core
                assert latency >= 0
            async with ws_connect(f"ws://127.0.0.1:{port}/ping") as c:
                with pytest.raises(websockets.ConnectionClosed):
                    await c.recv()
                assert c.close_code == 4002 and c.close_reason == "done pinging"
    run(main())
    assert len(rtts) == 2 and all(0 <= r < 5 for r in rtts)


def test_handler_exception_closes_1011_and_is_logged(run: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    app = pyws.App()

    @app.websocket("/boom")
    async def boom(ws: pyws.AsyncWebSocket) -> None:
        await ws.recv()
        raise ValueError("kaboom")

    async def main() -> None:
        async with serving(app) as port:
            async with ws_connect(f"ws://127.0.0.1:{port}/boom") as c:
                await c.send("x")
                with pytest.raises(websockets.ConnectionClosedError):
                    await c.recv()
                assert c.close_code == 1011
    with caplog.at_level(logging.ERROR, logger="pyws"):
        run(main())
    assert any("raised; closing with 1011" in r.message and r.exc_info for r in caplog.records)


def test_generator_callback_and_async_handlers_in_one_loop(run: Any) -> None:
    app = pyws.App()

    @app.websocket("/gen")
    def gen(ws: pyws.WebSocket) -> Any:
        yield ws.sleep(0.05)  # a pyws timer, driven by the asyncio loop's call_at
        while True:
            m = yield ws.recv()
            if m is None:
                return
            ws.send("gen:" + m.text)

    @app.websocket("/async")
    async def a(ws: pyws.AsyncWebSocket) -> None:
        async for m in ws:
            await ws.send("async:" + m.text)

    @app.get("/plain")
    def plain(req: pyws.Request) -> str:
        return "plain"

    @app.get("/slow")
    async def slow(req: pyws.Request) -> Any:
        await asyncio.sleep(0.05)
        return {"slow": True}

    def callback(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == pyws.EV_WS_MSG:
            conn.send("cb:" + data.text)

    async def main() -> None:
        mgr = pyws.Manager(callback)
        lst = mgr.listen("http://127.0.0.1:0")
        pyws.attach(mgr)
        async with serving(app) as port:
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{port}/plain") as r:
                    assert await r.text() == "plain"
                async with s.get(f"http://127.0.0.1:{port}/slow") as r:
                    assert await r.json() == {"slow": True}
            for path, want in (("gen", "gen:x"), ("async", "async:x")):
                async with pyws.aconnect(f"ws://127.0.0.1:{port}/{path}") as ws:
                    await ws.send("x")
                    assert (await ws.recv(timeout=5)).data == want
            async with pyws.aconnect(f"ws://127.0.0.1:{lst.port}/") as ws:
                await ws.send("x")
                assert (await ws.recv(timeout=5)).data == "cb:x"
        aio.detach(mgr)
        mgr.close()
    run(main())


# ---------------------------------------------------------------------- asyncio's rules

def test_cancelled_recv_loses_no_message(run: Any) -> None:
    """recv() cancelled by wait_for's tiny timeouts while messages trickle in (some land in
    the very iteration the cancellation does): every message still arrives, once, in order."""
    n = 300
    app = pyws.App()

    @app.websocket("/burst")
    async def burst(ws: pyws.AsyncWebSocket) -> None:
        await ws.recv()
        for i in range(n):
            await ws.send(str(i))
            if i % 3 == 0:
                await asyncio.sleep(0.0005)
        await ws.recv()

    async def main() -> None:
        async with serving(app) as port:
            async with pyws.aconnect(f"ws://127.0.0.1:{port}/burst") as ws:
                await ws.send("go")
                got: List[str] = []
                cancels = 0
                deadline = time.monotonic() + 30
                while len(got) < n and time.monotonic() < deadline:
                    try:
                        m = await asyncio.wait_for(ws.recv(), 0.0002)
                    except asyncio.TimeoutError:
                        cancels += 1
                        continue
                    assert m is not None
                    got.append(m.data)
                assert got == [str(i) for i in range(n)]
                assert cancels > 0
                await ws.send("end")
    run(main())


def test_two_concurrent_recv_raise_a_clear_error(run: Any) -> None:
    async def main() -> None:
        async with serving(echo_app()) as port:
            async with pyws.aconnect(f"ws://127.0.0.1:{port}/echo") as ws:
                first = asyncio.ensure_future(ws.recv())
                await asyncio.sleep(0.01)
                with pytest.raises(RuntimeError, match="already waiting"):
                    await ws.recv()
                await ws.send("one")
                assert (await first).data == "one"
                with pytest.raises(TimeoutError):
                    await ws.recv(timeout=0.05)
    run(main())


def test_message_for_a_woken_recv_stays_its_own(run: Any) -> None:
    """A message wakes the waiting recv(); a second recv() that runs before the first one
    resumes raises (it does not take the message, which would leave the first with None)."""
    async def main() -> None:
        async with serving(echo_app()) as port:
            async with pyws.aconnect(f"ws://127.0.0.1:{port}/echo") as ws:
                first = asyncio.ensure_future(ws.recv())
                await asyncio.sleep(0.01)
                ws._on_message(b"mine", pyws.OP_TEXT, False)  # as the dispatch delivers it
                assert not first.done()
                with pytest.raises(RuntimeError, match="already waiting"):
                    await ws.recv()
                m = await first
                assert m is not None and m.data == "mine"
                await ws.send("two")
                assert [m.data async for m in _take(ws, 1)] == ["two"]
    run(main())


async def _take(ws: pyws.AsyncWebSocket, n: int) -> AsyncIterator[Any]:
    async for m in ws:
        yield m
        n -= 1
        if not n:
            return


def test_messages_with_the_101_are_answered_before_a_protocol_error_close(run: Any) -> None:
    """Autobahn 5.15 against aconnect: the 101, a whole message and then a bad frame come in
    one packet. The client answers the message (right after aconnect returns) before the
    close 1002 the C core queued after it goes out."""
    import base64
    import hashlib
    import threading

    def frame(op: int, payload: bytes, fin: bool) -> bytes:
        return bytes([(0x80 if fin else 0) | op, len(payload)]) + payload

    got: List[bytes] = []
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    port = lst.getsockname()[1]

    def peer() -> None:
        c, _ = lst.accept()
        with c:
            req = b""
            while b"\r\n\r\n" not in req:
                req += c.recv(4096)
            key = next(line.split(b":", 1)[1].strip() for line in req.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key"))
            accept = base64.b64encode(hashlib.sha1(
                key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                      + frame(1, b"one", False) + frame(0, b"two", True)
                      + frame(0, b"nothing to continue", False))
            c.settimeout(10)
            data = b""
            while True:
                d = c.recv(4096)
                if not d:
                    break
                data += d
            got.append(data)

    t = threading.Thread(target=peer, daemon=True)
    t.start()

    async def main() -> None:
        ws = await pyws.aconnect(f"ws://127.0.0.1:{port}/", timeout=5)
        m = await ws.recv()
        assert m is not None and m.data == "onetwo"
        await ws.send(m)
        assert await ws.recv() is None
        assert ws.close_code == 1002

    try:
        run(main())
        t.join(10)
    finally:
        lst.close()
    data = got[0]
    # masked client frames: 0x81 = the text echo, then 0x88 = the close; nothing else
    assert data[0] == 0x81 and data[1] & 0x7F == 6
    assert data[2 + 4 + 6] == 0x88


def test_send_waits_above_high_water_instead_of_overflowing(run: Any) -> None:
    """40 MiB to a client that pauses reading: without backpressure the server's queue would
    pass write_limit (16 MiB) and close 1008; with it, every byte arrives."""
    chunk = os.urandom(1 << 20)  # incompressible: 1 MiB on the wire each
    highs: List[int] = []
    app = pyws.App(write_high_water=256 << 10, write_limit=16 << 20)

    @app.websocket("/flood")
    async def flood(ws: pyws.AsyncWebSocket) -> None:
        for _ in range(40):
            await ws.send(chunk)
            highs.append(ws.write_buffer_size)
        await ws.send("end")
        await ws.recv()

    async def main() -> None:
        async with serving(app) as port:
            async with pyws.aconnect(f"ws://127.0.0.1:{port}/flood", max_queue=2) as ws:
                await asyncio.sleep(0.5)  # not reading: the client's queue fills, TCP pushes back
                assert len(highs) < 40
                total = 0
                while True:
                    m = await ws.recv(timeout=20)
                    assert m is not None
                    if m.type == pyws.WSMsgType.TEXT:
                        break
                    total += len(m.data)
                assert total == 40 << 20
                await ws.send("ok")
    run(main())
    assert max(highs) < 16 << 20


def test_blocking_coroutine_delays_but_loses_nothing(run: Any) -> None:
    app = echo_app()

    async def main() -> None:
        async with serving(app) as port:
            async with pyws.aconnect(f"ws://127.0.0.1:{port}/echo") as ws:
                for i in range(50):
                    await ws.send(str(i))
                time.sleep(0.3)  # blocks the whole loop, pyws included
                got = [(await ws.recv(timeout=10)).data for _ in range(50)]
                assert got == [str(i) for i in range(50)]
    run(main())


def test_blocking_coroutine_loses_or_doubles_no_timer_or_deadline(run: Any) -> None:
    """While a coroutine blocks the loop, pyws timers and recv deadlines fall due; once it
    returns, each one-shot timer fires exactly once, a repeating one does not fire a burst for
    the ticks it missed, and a recv deadline ends that recv once (TimeoutError), not twice."""
    fired: List[str] = []
    app = pyws.App()

    @app.websocket("/quiet")
    async def quiet(ws: pyws.AsyncWebSocket) -> None:
        try:
            await ws.recv(timeout=0.1)
            fired.append("recv:message")
        except TimeoutError:
            fired.append("recv:timeout")
        await ws.send("done")

    async def main() -> None:
        async with serving(app) as port:
            mgr = app.mgr
            mgr.timer(0.05, lambda: fired.append("once"))
            ticks: List[float] = []
            rep = mgr.timer(0.05, lambda: ticks.append(time.monotonic()), repeat=True)
            t0 = time.monotonic()
            async with pyws.aconnect(f"ws://127.0.0.1:{port}/quiet") as ws:
                await asyncio.sleep(0.02)
                time.sleep(0.4)  # blocks the whole loop: every deadline above passes meanwhile
                assert (await ws.recv(timeout=10)).data == "done"
                await asyncio.sleep(0.2)
            rep.cancel()
            elapsed = time.monotonic() - t0
        assert fired.count("once") == 1
        assert fired.count("recv:timeout") == 1 and "recv:message" not in fired
        # the ticks missed during the block are not made up in a burst: at most one per period
        # (plus the one due when the block ends), and never two within a few ms of each other
        assert 1 <= len(ticks) <= elapsed / 0.05 + 1, (len(ticks), elapsed)
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        assert all(g > 0.02 for g in gaps), gaps
    run(main())


def test_serve_cancelled_closes_clients_1001(run: Any) -> None:
    app = echo_app()

    async def main() -> None:
        ports: List[int] = []
        task = asyncio.create_task(app.serve("127.0.0.1", 0,
                                             on_start=lambda l: ports.append(l.port)))
        while not ports:
            await asyncio.sleep(0.005)
        ws = await pyws.aconnect(f"ws://127.0.0.1:{ports[0]}/echo")
        await ws.send("hi")
        assert (await ws.recv(timeout=5)).data == "hi"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await ws.recv(timeout=5) is None
        assert ws.close_code == 1001
        assert aio.bridge_for(app) is None
    run(main())


# ---------------------------------------------------------------------- the async client

def test_aconnect_against_aiohttp_server(run: Any) -> None:
    from aiohttp import web

    async def handler(request: Any) -> Any:
        ws = web.WebSocketResponse(protocols=("chat",), max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                if msg.data == "close":
                    await ws.close(code=4003, message=b"asked")
                else:
                    await ws.send_str(msg.data + "/answer")
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def main() -> None:
        async with aiohttp_server(handler) as port:
            async with pyws.aconnect(f"ws://127.0.0.1:{port}/ws", subprotocols=["chat"],
                                     max_size=16 << 20) as ws:
                assert ws.protocol == "chat"
                await ws.send_str("hello")
                assert await ws.receive_str() == "hello/answer"
                for n in SIZES:
                    b = payload(n, False)
                    await ws.send_bytes(b)
                    assert (await ws.recv(timeout=20)).data == b
                await ws.send("close")
                m = await ws.receive()
                assert m.type == pyws.WSMsgType.CLOSE and m.data == 4003 and m.extra == "asked"
            assert ws.close_code == 4003
    run(main())


def test_aconnect_against_websockets_server_many_clients_one_loop(run: Any) -> None:
    async def echo(conn: Any) -> None:
        async for m in conn:
            await conn.send(m)

    async def one(port: int, i: int) -> None:
        async with pyws.aconnect(f"ws://127.0.0.1:{port}/") as ws:
            for j in range(20):
                await ws.send(f"{i}:{j}")
                assert (await ws.recv(timeout=10)).data == f"{i}:{j}"
            assert await ws.ping() >= 0

    async def main() -> None:
        async with ws_serve(echo, "127.0.0.1", 0) as server:
            port = list(server.sockets)[0].getsockname()[1]
            await asyncio.gather(*(one(port, i) for i in range(50)))
            from pyws import aclient
            assert len(aclient._HUBS) <= 1  # one pyws loop for all of them
            with pytest.raises(ConnectionRefusedError):
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                free = s.getsockname()[1]
                s.close()
                await pyws.aconnect(f"ws://127.0.0.1:{free}/")
    run(main())


def test_tls_server_and_client(run: Any, tmp_path: Path) -> None:
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from _pki import make_pki
    pki = make_pki(tmp_path)
    tls = pyws.TlsOpts(cert=pki.server_cert, key=pki.server_key)

    async def main() -> None:
        async with serving(echo_app(), tls=tls) as port:
            async with pyws.aconnect(f"wss://localhost:{port}/echo",
                                     tls=pyws.TlsOpts(ca=pki.ca_cert)) as ws:
                big = os.urandom(3 << 20)  # many TLS records: some stay buffered in OpenSSL
                await ws.send(big)
                assert (await ws.recv(timeout=20)).data == big
            ctx = ssl.create_default_context(cafile=pki.ca_cert)
            async with ws_connect(f"wss://localhost:{port}/echo", ssl=ctx, max_size=None) as c:
                await c.send("secure")
                assert await c.recv() == "secure"
    run(main())


# ---------------------------------------------------------------------- no busy polling

def test_idle_server_with_1000_connections_uses_no_cpu(run: Any) -> None:
    app = pyws.App(max_connections=2000)
    opened: List[int] = []

    @app.websocket("/idle")
    async def idle(ws: pyws.AsyncWebSocket) -> None:
        opened.append(1)
        await ws.recv()

    async def main() -> None:
        async with serving(app) as port:
            socks = []
            try:
                req = (f"GET /idle HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n").encode()
                loop = asyncio.get_running_loop()
                for _ in range(1000):
                    s = socket.socket()
                    s.setblocking(False)
                    await loop.sock_connect(s, ("127.0.0.1", port))
                    await loop.sock_sendall(s, req)
                    socks.append(s)
                for s in socks:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        head += await loop.sock_recv(s, 4096)
                    assert head.startswith(b"HTTP/1.1 101")
                while len(opened) < 1000:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)
                r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
                await asyncio.sleep(3.0)
                r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
                cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
                print(f"idle CPU with 1000 connections: {cpu * 1000:.1f} ms over "
                      f"{t1 - t0:.2f} s ({100 * cpu / (t1 - t0):.2f} %)")
                assert cpu < 0.1 * (t1 - t0) / 3.0  # < ~3 % of a core; measured ~0
            finally:
                for s in socks:
                    s.close()
    run(main())


# ---------------------------------------------------------------------- the poll(2) backend

def test_backend_descriptor_or_mirrored_descriptors(run: Any) -> None:
    """epoll/kqueue: one descriptor for the whole loop. poll(2): each watched descriptor is
    mirrored into the asyncio loop (the suite runs on that backend too, see the Makefile)."""
    async def main() -> None:
        async with serving(echo_app()) as port:
            app_bridge = [b for b in aio._BRIDGES.values()][0]
            if pyws.backend() == "poll":
                assert app_bridge.backend_fd == -1 and len(app_bridge._watched) >= 2
            else:
                assert app_bridge.backend_fd >= 0
            async with pyws.aconnect(f"ws://127.0.0.1:{port}/echo") as ws:
                await ws.send("x")
                assert (await ws.recv(timeout=5)).data == "x"
    run(main())
