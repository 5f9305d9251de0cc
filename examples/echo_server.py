"""Echo server: every text or binary message comes back unchanged, on any path.

    python examples/echo_server.py --host 127.0.0.1 --port 9001 [--max-size BYTES]

As a test peer it accepts messages up to 64 MiB (and of any number of fragments) by default.
Plain HTTP requests to any path other than a WebSocket upgrade get a short text page. A request
that asks for an upgrade (Upgrade: websocket) but breaks RFC 6455 never reaches the handler:
pyws answers it 400, or 426 for a Sec-WebSocket-Version other than 13, and closes.
"""
from __future__ import annotations

import argparse
import signal

import pyws
from pyws import EV_HTTP_MSG, EV_WS_MSG


def handler(conn: pyws.Connection, ev: int, data: object) -> None:
    if ev == EV_WS_MSG:
        assert isinstance(data, pyws.WsMessage)
        conn.ws_send(data.data, data.opcode)
    elif ev == EV_HTTP_MSG:
        assert isinstance(data, pyws.HttpMessage)
        if data.is_websocket_upgrade:
            conn.ws_upgrade(data)
        else:
            conn.reply(200, "pyws echo server: connect with a WebSocket client\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--max-size", type=int, default=64 * 1024 * 1024,
                    help="maximum message size in bytes (default 64 MiB)")
    args = ap.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with pyws.Manager(handler, max_message_size=args.max_size,
                      write_limit=max(4 * args.max_size, 64 * 1024 * 1024)) as mgr:
        lst = mgr.listen(f"http://{args.host}:{args.port}" if ":" not in args.host
                         else f"http://[{args.host}]:{args.port}")
        print(f"echo server on ws://{args.host}:{lst.port}/ ({mgr.backend})", flush=True)
        try:
            while not stop:
                mgr.poll(200)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
