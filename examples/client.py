"""Blocking client: connect, send a few messages, print each reply.

    python examples/client.py --url ws://127.0.0.1:9001/ hello "second message" bye
    python examples/client.py --url ws://127.0.0.1:9001/ --binary 00ff10

Run examples/echo_server.py first to have something that answers. Each message is sent as
text (or, with --binary, as the bytes its hex spells), and the reply is printed as ``< ...``.
Exits 1 with the reason when the connection cannot be opened or ends early.
"""
from __future__ import annotations

import argparse
import sys

import pyws


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="ws://127.0.0.1:9001/", help="ws:// URL to connect to")
    ap.add_argument("--origin", default=None, help="Origin header to send")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply")
    ap.add_argument("--binary", action="store_true",
                    help="messages are hex strings sent as binary")
    ap.add_argument("messages", nargs="*", default=["hello", "from", "pyws"])
    args = ap.parse_args()
    try:
        with pyws.connect(args.url, timeout=args.timeout, origin=args.origin) as ws:
            print(f"connected to {args.url} ({ws.remote_addr})", flush=True)
            for text in args.messages:
                if args.binary:
                    ws.send_bytes(bytes.fromhex(text))
                else:
                    ws.send_text(text)
                print(f"> {text}", flush=True)
                reply = ws.recv()
                shown = reply.text if reply.is_text() else reply.data.hex()
                print(f"< {shown}", flush=True)
    except pyws.ConnectionClosed as exc:
        print(f"the server closed the connection: {exc}", file=sys.stderr)
        return 1
    except (pyws.PyWSError, OSError, ValueError) as exc:  # HandshakeError, refused, timeout
        print(f"cannot talk to {args.url}: {exc}", file=sys.stderr)
        return 1
    print("closed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
