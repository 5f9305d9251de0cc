"""Broadcast server (the protocol of bench/test_broadcast.py), written with the generator App.

    python examples/broadcast_server.py --host 127.0.0.1 --port 9001

Every text message that starts with "B:" is sent unchanged to ALL connected clients, the sender
included; every other message is echoed back to its sender only. Each WebSocket subscribes to
the topic "all" when it opens, and a "B:" message is one ``app.publish("all", msg)``: the C core
frames it once and queues the same bytes on every subscriber. A subscriber that cannot keep up
is closed with 1008 once its queue passes ``write_limit`` instead of stalling everyone else.

WebSockets are accepted on every path. SIGINT (Ctrl-C) or SIGTERM closes every WebSocket with
1001 and exits.
"""
from __future__ import annotations

import argparse
from typing import Any

import pyws

TOPIC = "all"


def make_app(max_size: int = 64 * 1024 * 1024,
             write_limit: int = 256 * 1024 * 1024) -> pyws.App:
    app = pyws.App(max_message_size=max_size, write_limit=write_limit)

    @app.websocket("/")
    @app.websocket("/{path:path}")
    def member(ws: pyws.WebSocket) -> Any:
        ws.subscribe(TOPIC)
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            if msg.is_text() and msg.data.startswith(b"B:"):
                app.publish(TOPIC, msg)  # to everyone, the sender included
            else:
                ws.send(msg)

    @app.route("/")
    def index(request: pyws.Request) -> pyws.Response:
        text = (f"pyws broadcast server: {app.subscribers(TOPIC)} client(s); "
                'text messages starting with "B:" go to everyone, the rest is echoed\n')
        return pyws.Response(text, content_type="text/plain; charset=utf-8")

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--max-size", type=int, default=64 * 1024 * 1024,
                    help="maximum message size in bytes (default 64 MiB)")
    ap.add_argument("--write-limit", type=int, default=256 * 1024 * 1024,
                    help="bytes queued per client before it is closed as too slow "
                         "(default 256 MiB)")
    args = ap.parse_args()
    app = make_app(args.max_size, args.write_limit)
    host = f"[{args.host}]" if ":" in args.host else args.host

    def started(lst: pyws.Listener) -> None:
        print(f"broadcast server on ws://{host}:{lst.port}/ (app.publish, {app.mgr.backend})",
              flush=True)

    app.run(args.host, args.port, on_start=started, shutdown_timeout=2.0)
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
