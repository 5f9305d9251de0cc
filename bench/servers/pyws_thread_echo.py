"""pyws echo server written as a blocking handler (a plain function: the App's thread pool),
for the pyws benchmarks.

    python bench/servers/pyws_thread_echo.py --host 127.0.0.1 --port 9001 [--threads 128]

The handler, as the README's blocking style writes it:

    @app.websocket("/")
    def echo(ws):
        while True:
            msg = ws.recv()
            if msg is None:
                return
            ws.send(msg)

One thread per connection (``App(threads=)``, 128 by default, so the benchmark's 64
connections all run at once) plus pyws's own loop thread (``app.run``). Same limits as
examples/echo_server.py (messages up to 64 MiB).
"""
from __future__ import annotations

import argparse
from typing import Any

import pyws


def make_app(threads: int, max_size: int = 64 * 1024 * 1024) -> pyws.App:
    app = pyws.App(threads=threads, max_message_size=max_size,
                   write_limit=max(4 * max_size, 64 * 1024 * 1024))

    @app.websocket("/")
    def echo(ws: Any) -> None:
        while True:
            msg = ws.recv()
            if msg is None:
                return
            ws.send(msg)

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--threads", type=int, default=128)
    args = ap.parse_args()
    app = make_app(args.threads)

    def started(lst: pyws.Listener) -> None:
        print(f"pyws blocking-handler echo server on ws://{args.host}:{lst.port}/ "
              f"(threads={args.threads}, {app.mgr.backend})", flush=True)

    app.run(args.host, args.port, on_start=started, shutdown_timeout=2.0)


if __name__ == "__main__":
    main()
