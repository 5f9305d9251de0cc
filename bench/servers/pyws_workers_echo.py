"""pyws echo server in worker processes (bench/test_echo.py's pyws-w1 and pyws-w2 servers).

    python bench/servers/pyws_workers_echo.py --host 127.0.0.1 --port 9001 --workers 2

The callback echo of examples/echo_server.py, run by pyws.run_workers: N processes listening
on one port with SO_REUSEPORT (the kernel spreads the connections), under a supervisor. With
--workers 1 it is a single process, as examples/echo_server.py. The first line printed names
the URL (the supervisor prints it once every worker listens).
"""
from __future__ import annotations

import argparse
import os
from typing import Any

import pyws
from pyws import EV_HTTP_MSG, EV_WS_MSG


def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
    if ev == EV_WS_MSG:
        conn.ws_send(data.data, data.opcode)
    elif ev == EV_HTTP_MSG:
        if data.is_websocket_upgrade:
            conn.ws_upgrade(data)
        else:
            conn.reply(200, "pyws workers echo: connect with a WebSocket client\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    ready_r, ready_w = os.pipe()

    def worker(w: pyws.Worker) -> None:
        if w.count > 1:  # a forked worker: the read end is the supervisor's
            os.close(ready_r)
        mgr = pyws.Manager(handler, max_message_size=64 << 20, write_limit=256 << 20)
        w.listen(mgr)
        os.write(ready_w, b"x")
        if w.count > 1:
            os.close(ready_w)
        w.serve(mgr)

    def ready(port: int) -> None:
        # the supervisor's banner once every worker listens (each wrote one byte)
        import threading

        def wait() -> None:
            got = 0
            while got < args.workers:
                b = os.read(ready_r, 16)
                if not b:
                    return
                got += len(b)
            print(f"pyws echo on ws://{args.host}:{port}/ ({args.workers} worker processes, "
                  f"SO_REUSEPORT, callback Manager)", flush=True)
        threading.Thread(target=wait, daemon=True).start()

    pyws.run_workers(worker, args.workers, host=args.host, port=args.port, on_ready=ready,
                     shutdown_timeout=2.0)


if __name__ == "__main__":
    main()
