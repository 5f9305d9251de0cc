"""websockets (asyncio implementation) broadcast server for the pyws benchmarks (the "B:"
protocol of bench/test_broadcast.py).

    python bench/servers/websockets_broadcast.py --host 127.0.0.1 --port 9001

Every text message that starts with "B:" goes unchanged to ALL connected clients, the sender
included, with ``websockets.broadcast(CONNECTIONS, message)`` as the websockets docs recommend
(it writes to every connection synchronously, without waiting for their buffers to drain);
every other message is echoed back with ``await ws.send``. Single process, single thread:
uvloop if installed, else asyncio's default loop (printed at start).
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Set

import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

try:
    import uvloop  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    uvloop = None

CONNECTIONS: Set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    CONNECTIONS.add(ws)
    try:
        async for message in ws:
            if isinstance(message, str) and message.startswith("B:"):
                websockets.broadcast(CONNECTIONS, message)
            else:
                await ws.send(message)
    except ConnectionClosed:  # the client closed with messages still in flight: normal here
        pass
    finally:
        CONNECTIONS.discard(ws)


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(handler, host, port, max_size=64 * 1024 * 1024, compression=None,
                     ping_interval=None):
        print(f"websockets {websockets.__version__} broadcast server on ws://{host}:{port}/ "
              f"(websockets.broadcast; loop: {type(loop).__module__}.{type(loop).__name__})",
              flush=True)
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
