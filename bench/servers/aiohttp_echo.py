"""aiohttp echo server for the pyws benchmarks.

    python bench/servers/aiohttp_echo.py --host 127.0.0.1 --port 9001

A web.Application with one WebSocket route on "/" (any path would do for the load client,
which asks for "/"), echoing text as text and binary as binary, as in aiohttp's docs. Single
process, single thread: uvloop if installed, else asyncio's default loop (printed at start).
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import aiohttp
from aiohttp import WSMsgType, web

try:
    import uvloop  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    uvloop = None


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024, compress=False, autoping=True)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def main(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_get("/", echo)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    print(f"aiohttp {aiohttp.__version__} echo server on ws://{host}:{port}/ "
          f"(loop: {type(loop).__module__}.{type(loop).__name__})", flush=True)
    try:
        await stop
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    args = ap.parse_args()
    if uvloop is not None:
        uvloop.install()
    try:
        asyncio.run(main(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)
