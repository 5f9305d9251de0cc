"""websockets (asyncio implementation) echo server with permessage-deflate for
bench/test_deflate.py; --compression none turns it off (same code otherwise).

    python bench/servers/websockets_deflate_echo.py --host 127.0.0.1 --port 9001 \
        [--compression none]

The echo of bench/servers/websockets_echo.py with ``compression=`` left at websockets' default
(``"deflate"``: ``ServerPerMessageDeflateFactory(server_max_window_bits=12,
client_max_window_bits=12, compress_settings={"memLevel": 5})``, zlib's default level 6), or
None. Single process, single thread: uvloop if installed, else asyncio's default loop (printed
at start).
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Optional

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


async def main(host: str, port: int, compression: Optional[str]) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(echo, host, port, max_size=64 * 1024 * 1024, compression=compression,
                     ping_interval=None):
        print(f"websockets {websockets.__version__} echo server on ws://{host}:{port}/ "
              f"(compression={compression!r}, loop: {type(loop).__module__}."
              f"{type(loop).__name__})", flush=True)
        await stop


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--compression", choices=("deflate", "none"), default="deflate")
    args = ap.parse_args()
    if uvloop is not None:
        uvloop.install()
    try:
        asyncio.run(main(args.host, args.port,
                         "deflate" if args.compression == "deflate" else None))
    except KeyboardInterrupt:
        sys.exit(0)
