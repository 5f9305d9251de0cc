"""Echo server written with the generator-style App: every message comes back unchanged.

    python examples/generator_echo.py --host 127.0.0.1 --port 9001 [--max-size BYTES]

The WebSocket handler is a generator, one per connection, all of them driven by pyws's C poll
loop in a single thread (no asyncio, no threads):

    @app.websocket("/")
    def echo(ws):
        while True:
            msg = yield ws.recv()     # the next message, or None once the peer has closed
            if msg is None:
                return                # returning closes with 1000
            ws.send(msg)              # text stays text, binary stays binary

WebSockets are accepted on every path ("/" and "/anything/else"); a plain HTTP GET of "/" gets
a short text page. SIGINT (Ctrl-C) or SIGTERM closes every WebSocket with 1001 and exits.
"""
from __future__ import annotations

import argparse
from typing import Any

import pyws


def make_app(max_size: int = 64 * 1024 * 1024) -> pyws.App:
    app = pyws.App(max_message_size=max_size, write_limit=max(4 * max_size, 64 * 1024 * 1024))

    @app.websocket("/")
    @app.websocket("/{path:path}")
    def echo(ws: pyws.WebSocket) -> Any:
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            ws.send(msg)

    @app.route("/")
    def index(request: pyws.Request) -> pyws.Response:
        return pyws.Response("pyws generator echo server: connect with a WebSocket client\n",
                             content_type="text/plain; charset=utf-8")

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--max-size", type=int, default=64 * 1024 * 1024,
                    help="maximum message size in bytes (default 64 MiB)")
    args = ap.parse_args()
    app = make_app(args.max_size)
    host = f"[{args.host}]" if ":" in args.host else args.host

    def started(lst: pyws.Listener) -> None:
        print(f"generator echo server on ws://{host}:{lst.port}/ ({app.mgr.backend})",
              flush=True)

    app.run(args.host, args.port, on_start=started, shutdown_timeout=2.0)
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
