"""pyws broadcast server for the pyws benchmarks (the "B:" protocol of bench/test_broadcast.py).

    python bench/servers/pyws_broadcast.py --host 127.0.0.1 --port 9001
        [--api app|callback] [--fanout publish|broadcast] [--broker redis://...]

Every text message that starts with "B:" goes unchanged to ALL connected clients, the sender
included; every other message is echoed back to its sender. Every WebSocket subscribes to one
topic ("all") when it opens, and a "B:" message is sent with one C fan-out call:

- ``--api app`` (default): the generator-style ``pyws.App``; ``app.publish("all", msg)``.
- ``--api callback``: the callback ``pyws.Manager``; ``conn.subscribe`` on upgrade,
  ``mgr.publish("all", payload, binary=False)``.
- ``--fanout broadcast``: ``app.broadcast`` / ``mgr.broadcast`` instead (every open WebSocket,
  no topic).

Single process, single thread (pyws's own C poll loop). The first line printed names the API.
``--broker URL`` shares the topic through Redis (bench/test_broker.py runs two such servers).
"""
from __future__ import annotations

import argparse
import signal
import time
from typing import Any, List, Optional

import pyws
from pyws import EV_HTTP_MSG, EV_WS_MSG, OP_TEXT

TOPIC = "all"
LIMITS = dict(max_message_size=64 * 1024 * 1024, write_limit=256 * 1024 * 1024)
BROKER_OPTIONS = dict(probe_interval=600.0)  # no probe PUBLISHes among the measured ones


def run_app(host: str, port: int, fanout: str, broker: Optional[str]) -> None:
    app = pyws.App(broker=broker, broker_options=BROKER_OPTIONS if broker else None, **LIMITS)
    use_publish = fanout == "publish"

    @app.websocket("/")
    def handler(ws: pyws.WebSocket) -> Any:
        ws.subscribe(TOPIC)
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            if msg.opcode == OP_TEXT and msg.data.startswith(b"B:"):
                if use_publish:
                    app.publish(TOPIC, msg)
                else:
                    app.broadcast(msg)
            else:
                ws.send(msg)

    def started(lst: pyws.Listener) -> None:
        print(f"pyws broadcast server on ws://{host}:{lst.port}/ (generator App, "
              f"app.{fanout}, {app.mgr.backend})", flush=True)

    app.run(host, port, on_start=started, shutdown_timeout=2.0)


def run_callback(host: str, port: int, fanout: str, broker: Optional[str]) -> None:
    mgr: pyws.Manager
    use_publish = fanout == "publish"

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_WS_MSG:
            payload, op = data.data, data.opcode
            if op == OP_TEXT and payload.startswith(b"B:"):
                if use_publish:
                    mgr.publish(TOPIC, payload, binary=False)
                else:
                    mgr.broadcast(payload, binary=False)
            else:
                conn.ws_send(payload, op)
        elif ev == EV_HTTP_MSG:
            if data.is_websocket_upgrade:
                conn.ws_upgrade(data)
                conn.subscribe(TOPIC)
            else:
                conn.reply(200, "pyws broadcast server: connect with a WebSocket client\n")

    stop: List[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with pyws.Manager(handler, broker=broker, broker_options=BROKER_OPTIONS if broker else None,
                      **LIMITS) as mgr:
        lst = mgr.listen(f"http://{host}:{port}")
        if mgr.broker is not None:  # ready once Redis is: the load client starts at the banner
            t_end = time.monotonic() + 10
            while mgr.broker.state != "up" and time.monotonic() < t_end:
                mgr.poll(10)
        print(f"pyws broadcast server on ws://{host}:{lst.port}/ (callback Manager, "
              f"mgr.{fanout}, {mgr.backend}"
              f"{', broker ' + mgr.broker.url.safe if mgr.broker else ''})", flush=True)
        try:
            while not stop:
                mgr.poll(200)
        except KeyboardInterrupt:
            pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--api", choices=("app", "callback"), default="app")
    ap.add_argument("--fanout", choices=("publish", "broadcast"), default="publish")
    ap.add_argument("--broker", default=None, help="share the topic through this Redis URL")
    args = ap.parse_args()
    if args.api == "app":
        run_app(args.host, args.port, args.fanout, args.broker)
    else:
        run_callback(args.host, args.port, args.fanout, args.broker)


if __name__ == "__main__":
    main()
