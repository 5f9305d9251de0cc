"""pyws echo server written with the generator-style App, for the pyws benchmarks.

    python bench/servers/pyws_generator_echo.py --host 127.0.0.1 --port 9001

The handler is the README's generator echo, unchanged:

    @app.websocket("/")
    def echo(ws):
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            ws.send(msg)

Same limits as examples/echo_server.py (messages up to 64 MiB). Single process, single thread
(pyws's own C poll loop via ``app.run``). The benchmark uses examples/generator_echo.py instead
when that file exists.
"""
from __future__ import annotations

import argparse
from typing import Any

import pyws


def make_app(max_size: int = 64 * 1024 * 1024) -> pyws.App:
    app = pyws.App(max_message_size=max_size, write_limit=max(4 * max_size, 64 * 1024 * 1024))

    @app.websocket("/")
    def echo(ws: pyws.WebSocket) -> Any:
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            ws.send(msg)

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    args = ap.parse_args()
    app = make_app()

    def started(lst: pyws.Listener) -> None:
        print(f"pyws generator echo server on ws://{args.host}:{lst.port}/ "
              f"(generator App, {app.mgr.backend})", flush=True)

    app.run(args.host, args.port, on_start=started, shutdown_timeout=2.0)


if __name__ == "__main__":
    main()
