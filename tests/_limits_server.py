"""A callback echo server in a process of its own, so that the limits tests can measure its
memory and CPU from outside: ``python _limits_server.py '{"option": value}'`` prints its port,
then one line per closed connection (``close CODE REASON``), and polls until it is killed."""
from __future__ import annotations

import json
import sys
from typing import Any

import pyws


def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
    if ev == pyws.EV_HTTP_MSG:
        if data.is_websocket_upgrade:
            conn.ws_upgrade(data)
        else:
            conn.reply(404, "not found\n")
            conn.drain()
    elif ev == pyws.EV_WS_MSG:
        conn.ws_send(data.data, data.opcode)
    elif ev == pyws.EV_CLOSE and conn.is_websocket:
        print(f"close {conn.close_code} {conn.close_reason}", flush=True)


def main() -> None:
    options = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    mgr = pyws.Manager(handler, **options)
    print(mgr.listen("http://127.0.0.1:0").port, flush=True)
    while True:
        mgr.poll(100)


if __name__ == "__main__":
    main()
