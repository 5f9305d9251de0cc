"""websockets (asyncio implementation) echo server for the pyws benchmarks.

    python bench/servers/websockets_echo.py --host 127.0.0.1 --port 9001

Every message comes back unchanged (str as text, bytes as binary), as in the websockets docs'
echo example. No compression is offered by the load client, so none is negotiated. Single
process, single thread: uvloop if installed, else asyncio's default loop (printed at start).
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

try:
    import uvloop  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    uvloop = None


async def echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:  # the client closed with echoes still in flight: normal here
        pass


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(echo, host, port, max_size=64 * 1024 * 1024, compression=None,
                     ping_interval=None):
        print(f"websockets {websockets.__version__} echo server on ws://{host}:{port}/ "
              f"(loop: {type(loop).__module__}.{type(loop).__name__})", flush=True)
        await stop


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
