"""pyws echo server with permessage-deflate for bench/test_deflate.py; --compression none turns
it off (the same code, so the difference is compression and nothing else).

    python bench/servers/pyws_deflate_echo.py --host 127.0.0.1 --port 9001 [--compression none]

The callback Manager echo of examples/echo_server.py (same handler), with ``compression=``
left at pyws's default (``"deflate"``: ``pyws.Deflate()``, window 12, memLevel 5, level 6,
128-byte threshold) or None. One extra HTTP route for the memory benchmark:
``GET /memory`` answers JSON ``{"websockets": N, "conn_memory": B, "extensions": {...}}``:
N open WebSockets, B the sum of ``Connection.memory`` over them (``lib.pyws_conn_memory``: the
C core's exact heap per connection, zlib's allocations included), and how many connections
agreed on each ``Sec-WebSocket-Extensions`` value. Single process, single thread. The first
line printed gives the URL, the backend, the compression setting and the build of the C
extension.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any, Dict, List

import pyws
from pyws import EV_CLOSE, EV_HTTP_MSG, EV_WS_MSG

OPEN: Dict[int, pyws.Connection] = {}


def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
    if ev == EV_WS_MSG:
        conn.ws_send(data.data, data.opcode)
    elif ev == EV_HTTP_MSG:
        if data.is_websocket_upgrade:
            conn.ws_upgrade(data)
            OPEN[conn.id] = conn
        elif data.uri == "/memory":
            exts: Dict[str, int] = {}
            total = 0
            for c in OPEN.values():
                total += c.memory
                exts[c.extensions] = exts.get(c.extensions, 0) + 1
            body = json.dumps({"websockets": len(OPEN), "conn_memory": total,
                               "extensions": exts})
            conn.reply(200, body, headers={"Content-Type": "application/json"})
        else:
            conn.reply(200, "pyws deflate echo server: connect with a WebSocket client\n")
    elif ev == EV_CLOSE:
        OPEN.pop(conn.id, None)


def _build() -> str:
    """The loaded C extension's file name and modification time."""
    mod = sys.modules.get("pyws._pyws")
    path = getattr(mod, "__file__", None)
    if not path:
        return "?"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(path)))
    return f"{os.path.basename(path)} built {stamp}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--compression", choices=("deflate", "none"), default="deflate")
    ap.add_argument("--max-size", type=int, default=64 * 1024 * 1024,
                    help="maximum message size in bytes (default 64 MiB)")
    args = ap.parse_args()
    compression = "deflate" if args.compression == "deflate" else None
    host = args.host if ":" not in args.host else f"[{args.host}]"
    stop: List[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with pyws.Manager(handler, max_message_size=args.max_size, compression=compression,
                      write_limit=max(4 * args.max_size, 64 * 1024 * 1024)) as mgr:
        lst = mgr.listen(f"http://{host}:{args.port}")
        print(f"pyws echo server on ws://{args.host}:{lst.port}/ ({mgr.backend}, "
              f"compression={compression!r}; {_build()})", flush=True)
        try:
            while not stop:
                mgr.poll(200)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
