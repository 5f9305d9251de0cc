"""Echo server driving pyws's C engine through cffi with the least Python a driver can have:
lib.pyws_poll, one struct.unpack_from per event, the payload copied out, lib.pyws_send. No
Manager, no Connection, no Message, no handler call. The echo benchmark's "pyws-raw": the
floor for any Python layer over this engine, between c-echo (no Python) and pyws (the callback
API, examples/echo_server.py).

    python bench/servers/pyws_raw_echo.py --host 127.0.0.1 --port 9001 [--max-size BYTES]

Same options as examples/echo_server.py (messages up to 64 MiB, write_limit max(4 x max-size,
64 MiB)); a request that is not a WebSocket upgrade gets a short text page. SIGTERM stops it.
Not an API example: it skips what pyws's Python layer is for (thread checks, errors that
explain themselves, views of large messages, per-connection state).
"""
from __future__ import annotations

import argparse
import signal
import struct

from pyws._lib import ffi, lib
from pyws.constants import EV_HTTP_MSG, EV_WS_MSG

PAGE = b"pyws raw echo server: connect with a WebSocket client\n"
REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
         b"Content-Length: %d\r\n\r\n" % len(PAGE)) + PAGE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--max-size", type=int, default=64 * 1024 * 1024)
    args = ap.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    loop = lib.pyws_loop_new()
    opts = ffi.new("pyws_opts *")
    lib.pyws_opts_default(opts)
    opts.max_message_size = args.max_size
    opts.write_limit = max(4 * args.max_size, 64 * 1024 * 1024)
    lid = ffi.new("uint64_t *")
    if lib.pyws_listen(loop, args.host.encode(), args.port, opts, lid) < 0:
        raise SystemExit(f"cannot listen: {ffi.string(lib.pyws_last_error(loop)).decode()}")
    print(f"echo server on ws://{args.host}:{lib.pyws_local_port(loop, lid[0])}/ "
          f"({ffi.string(lib.pyws_backend()).decode()}, raw cffi loop)", flush=True)

    evp = ffi.new("pyws_event **")
    size = ffi.sizeof("pyws_event")
    unpack = struct.Struct("@iiiQQQQQQ").unpack_from
    assert struct.calcsize("@iiiQQQQQQ") == size
    poll, send, buffer = lib.pyws_poll, lib.pyws_send, ffi.buffer
    try:
        while not stop:
            n = poll(loop, 200, evp)
            if n <= 0:
                continue
            evs = evp[0]
            b = buffer(evs, n * size)
            for i in range(n):
                t, op, code, cid, _d, ln, _d2, _l2, _a = unpack(b, i * size)
                if t == EV_WS_MSG:
                    send(loop, cid, op, buffer(evs[i].data, ln)[:] if ln else b"", ln, 1)
                elif t == EV_HTTP_MSG:
                    if code:
                        lib.pyws_ws_upgrade(loop, cid, ffi.NULL, ffi.NULL)
                    else:
                        lib.pyws_send_raw(loop, cid, REPLY, len(REPLY))
    except KeyboardInterrupt:
        pass
    finally:
        lib.pyws_loop_free(loop)


if __name__ == "__main__":
    main()
