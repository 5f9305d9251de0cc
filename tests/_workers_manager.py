"""A Manager-based program run as workers by pyws.run_workers (tests/test_workers.py).

    python tests/_workers_manager.py PORT REUSE_PORT(0/1) [REDIS_URL]

Each worker echoes, tells a new WebSocket its pid, and prints ``PORT <port> <pid>``."""
from __future__ import annotations

import os
import sys
from typing import Any

import pyws

port = int(sys.argv[1])
reuse = sys.argv[2] == "1"
broker = sys.argv[3] if len(sys.argv) > 3 else None


def main(worker: pyws.Worker) -> None:
    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            conn.ws_upgrade(data)
            conn.ws_send(f"ready {os.getpid()}")
            conn.subscribe("all")
        elif ev == pyws.EV_WS_MSG:
            mgr.publish("all", data.data, binary=data.opcode == pyws.OP_BINARY)

    mgr = pyws.Manager(handler, broker=broker)
    lst = worker.listen(mgr)
    os.write(1, f"PORT {lst.port} {os.getpid()}\n".encode())  # one write: workers share stdout
    worker.serve(mgr)


pyws.run_workers(main, workers=2, host="127.0.0.1", port=port, reuse_port=reuse,
                 shutdown_timeout=2.0)
