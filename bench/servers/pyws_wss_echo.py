"""pyws echo server over TLS (wss://) for the pyws benchmarks; without --cert/--key, plain ws://.

    python bench/servers/pyws_wss_echo.py --host 127.0.0.1 --port 9443 --cert C.pem --key K.pem
    python bench/servers/pyws_wss_echo.py --host 127.0.0.1 --port 9001        # plain ws://

The callback Manager echo of examples/echo_server.py (same handler, same message-size and
write limits), listening on ``wss://`` with ``tls=pyws.TlsOpts(cert=..., key=...)``. The
plain mode is the same code with ``http://``, so the TLS cost measured against it is TLS and
nothing else. Single process, single thread. The first line printed gives the URL, the
poller backend and which build of the C extension ran (its file's modification time: other
work may rebuild it while a benchmark runs).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

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
    ap.add_argument("--port", type=int, default=9443)
    ap.add_argument("--cert", help="server certificate (PEM file); with --key: wss://")
    ap.add_argument("--key", help="its private key (PEM file)")
    ap.add_argument("--max-size", type=int, default=64 * 1024 * 1024,
                    help="maximum message size in bytes (default 64 MiB)")
    args = ap.parse_args()
    if bool(args.cert) != bool(args.key):
        ap.error("--cert and --key go together")
    tls = pyws.TlsOpts(cert=args.cert, key=args.key) if args.cert else None
    scheme = "wss" if tls else "http"
    host = args.host if ":" not in args.host else f"[{args.host}]"
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with pyws.Manager(handler, max_message_size=args.max_size,
                      write_limit=max(4 * args.max_size, 64 * 1024 * 1024)) as mgr:
        lst = mgr.listen(f"{scheme}://{host}:{args.port}", tls=tls)
        print(f"pyws echo server on {'wss' if tls else 'ws'}://{args.host}:{lst.port}/ "
              f"({mgr.backend}, {'TLS: ' + repr(tls) if tls else 'plain'}; {_build()})",
              flush=True)
        try:
            while not stop:
                mgr.poll(200)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
