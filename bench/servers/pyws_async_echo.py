"""pyws echo server written with an ``async def`` handler, run inside asyncio (or uvloop with
--uvloop) through pyws.aio, for the pyws benchmarks.

    python bench/servers/pyws_async_echo.py --host 127.0.0.1 --port 9001 [--uvloop]

The handler is the README's async echo, unchanged:

    @app.websocket("/")
    async def echo(ws):
        async for msg in ws:
            await ws.send(msg)

Same limits as examples/echo_server.py (messages up to 64 MiB). Single process, single thread:
the asyncio loop's own wait drives pyws's C loop (its epoll descriptor via add_reader).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal

import pyws


def make_app(max_size: int = 64 * 1024 * 1024) -> pyws.App:
    app = pyws.App(max_message_size=max_size, write_limit=max(4 * max_size, 64 * 1024 * 1024))

    @app.websocket("/")
    async def echo(ws: pyws.AsyncWebSocket) -> None:
        async for msg in ws:
            await ws.send(msg)

    return app


async def serve(host: str, port: int, loop_name: str) -> None:
    app = make_app()

    def started(lst: pyws.Listener) -> None:
        print(f"pyws async echo server on ws://{host}:{lst.port}/ "
              f"(async def handler on {loop_name}, {app.mgr.backend}; pyws from "
              f"{os.path.dirname(pyws.__file__)})", flush=True)

    task = asyncio.ensure_future(app.serve(host, port, on_start=started, shutdown_timeout=2.0))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = ap.parse_args()
    if args.uvloop:
        import uvloop
        uvloop.run(serve(args.host, args.port, "uvloop"))
    else:
        asyncio.run(serve(args.host, args.port, "asyncio"))


if __name__ == "__main__":
    main()
