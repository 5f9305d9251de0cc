"""wss://: pyws's async client against an aiohttp server speaking TLS (a peer whose TLS is
Python's ssl module, not pyws's OpenSSL glue), with the test PKI of tests/_pki.py: text,
large binary (many TLS records, some left buffered inside OpenSSL after a read), subprotocol,
close code; mutual TLS; and the failures a client must report (unknown CA, wrong host,
expired certificate), on asyncio's default loop and on uvloop."""
from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Tuple, TypeVar

import pytest

import pyws

from conftest import aiohttp_server

aiohttp = pytest.importorskip("aiohttp")
uvloop = pytest.importorskip("uvloop")
from aiohttp import web  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _pki import Pki, make_pki  # noqa: E402

T = TypeVar("T")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def echo(request: Any) -> Any:
    ws = web.WebSocketResponse(protocols=("chat",), max_msg_size=0)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            if msg.data == "close":
                await ws.close(code=4001, message=b"tls bye")
            else:
                await ws.send_str(msg.data)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def server_closes(ws: pyws.AsyncWebSocket) -> None:
    """Have the server start the close (see test_client_initiated_close_over_tls_is_prompt
    for why the others do not end with the client's)."""
    await ws.send("close")
    assert (await ws.receive(timeout=10)).data == 4001


def server_context(cert: str, key: str, client_ca: Optional[str] = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def aiohttp_wss(ctx: ssl.SSLContext) -> Any:
    """The echo handler on an aiohttp TLS server; an async context manager yielding the port."""
    return aiohttp_server(echo, ssl_context=ctx)


def test_wss_pyws_client_against_aiohttp_tls_server(run: Any, pki: Pki) -> None:
    async def main() -> None:
        async with aiohttp_wss(server_context(pki.server_cert, pki.server_key)) as port:
            async with pyws.aconnect(f"wss://localhost:{port}/ws", subprotocols=["chat"],
                                     tls=pyws.TlsOpts(ca=pki.ca_cert),
                                     max_size=16 << 20) as ws:
                assert ws.protocol == "chat"
                await ws.send_str("über TLS")
                assert await ws.receive_str(timeout=10) == "über TLS"
                big = os.urandom(3 << 20)  # incompressible: ~200 TLS records each way
                await ws.send_bytes(big)
                assert await ws.receive_bytes(timeout=20) == big
                for i in range(50):  # many small records, in flight together
                    await ws.send_str(str(i))
                assert [await ws.receive_str(timeout=10) for _ in range(50)] == \
                    [str(i) for i in range(50)]
                await ws.send_str("close")
                msg = await ws.receive(timeout=10)
                assert (msg.type, msg.data, msg.extra) == (pyws.WSMsgType.CLOSE, 4001,
                                                           "tls bye")
            assert ws.close_code == 4001 and ws.exception() is not None
            # by IP address too (the certificate names 127.0.0.1)
            async with pyws.aconnect(f"wss://127.0.0.1:{port}/ws",
                                     tls=pyws.TlsOpts(ca=pki.ca_cert)) as ws:
                await ws.send("ip")
                assert (await ws.recv(timeout=10)).data == "ip"
                await server_closes(ws)
    run(main())


def test_wss_mutual_tls_against_aiohttp(run: Any, pki: Pki) -> None:
    async def main() -> None:
        ctx = server_context(pki.server_cert, pki.server_key, client_ca=pki.ca_cert)
        async with aiohttp_wss(ctx) as port:
            url = f"wss://localhost:{port}/ws"
            async with pyws.aconnect(url, tls=pyws.TlsOpts(ca=pki.ca_cert,
                                                           cert=pki.client_cert,
                                                           key=pki.client_key)) as ws:
                await ws.send("with a client certificate")
                assert (await ws.recv(timeout=10)).data == "with a client certificate"
                await server_closes(ws)
            # without one the server refuses the handshake (TLS 1.3: possibly only once the
            # client reads), so the client fails to open or is closed at once
            failed: Tuple[Any, ...] = ()
            try:
                async with pyws.aconnect(url, tls=pyws.TlsOpts(ca=pki.ca_cert),
                                         open_timeout=10) as ws:
                    assert await ws.recv(timeout=10) is None
                    failed = ("closed", ws.close_code)
            except (pyws.TlsError, ConnectionError, pyws.HandshakeError) as exc:
                failed = ("refused", type(exc).__name__)
            assert failed and failed != ("closed", 1000), failed
    run(main())


@pytest.mark.parametrize("case", ["unknown CA", "wrong host", "expired"])
def test_wss_failures_are_tls_errors(run: Any, pki: Pki, case: str) -> None:
    cert, key = {"unknown CA": (pki.selfsigned_cert, pki.selfsigned_key),
                 "wrong host": (pki.wronghost_cert, pki.wronghost_key),
                 "expired": (pki.expired_cert, pki.expired_key)}[case]

    async def main() -> None:
        async with aiohttp_wss(server_context(cert, key)) as port:
            with pytest.raises(pyws.TlsError):
                await pyws.aconnect(f"wss://localhost:{port}/ws",
                                    tls=pyws.TlsOpts(ca=pki.ca_cert), open_timeout=10)
            # the loudly named way out works against the same server
            async with pyws.aconnect(f"wss://localhost:{port}/ws",
                                     tls=pyws.TlsOpts(insecure_skip_verify=True)) as ws:
                await ws.send("anyway")
                assert (await ws.recv(timeout=10)).data == "anyway"
                await server_closes(ws)
    run(main())


def test_client_initiated_close_over_tls_is_prompt(run: Any, pki: Pki) -> None:
    """A close_notify read in the same read as the server's close frame (asyncio's TLS
    transport then waits for ours before its FIN) is seen at once, not after close_timeout."""
    async def main() -> None:
        async with aiohttp_wss(server_context(pki.server_cert, pki.server_key)) as port:
            ws = await pyws.aconnect(f"wss://localhost:{port}/ws",
                                     tls=pyws.TlsOpts(ca=pki.ca_cert), close_timeout=2)
            await ws.send("x")
            assert (await ws.recv(timeout=10)).data == "x"
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await ws.close()
            assert ws.close_code == 1000
            assert loop.time() - t0 < 1.0
    run(main())
