"""websockets' threaded (sync) server echo, for the pyws benchmarks: the peer of pyws's blocking
handlers (one thread per connection, a blocking ``recv``/``send``).

    python bench/servers/websockets_sync_echo.py --host 127.0.0.1 --port 9001

Every message comes back unchanged, as in the websockets docs' sync echo example. No
compression, no keepalive pings (as bench/servers/websockets_echo.py).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve


def echo(ws: ServerConnection) -> None:
    try:
        for message in ws:
            ws.send(message)
    except ConnectionClosed:  # the client closed with echoes still in flight: normal here
        pass


def main(host: str, port: int) -> None:
    with serve(echo, host, port, max_size=64 * 1024 * 1024, compression=None,
               ping_interval=None) as server:
        def stop(*_: Any) -> None:
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        print(f"websockets {websockets.__version__} sync (threaded) echo server on "
              f"ws://{host}:{port}/", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    args = ap.parse_args()
    try:
        main(args.host, args.port)
    except KeyboardInterrupt:
        sys.exit(0)
