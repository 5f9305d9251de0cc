"""picows echo server for the pyws benchmarks: every text/binary frame comes back unchanged.

    python bench/servers/picows_echo.py --host 127.0.0.1 --port 9001 [--validate]

Written after picows's README echo example: a WSListener whose on_ws_frame sends the frame's
payload back with the same message type (picows hands over frames, not messages; the load
client sends unfragmented messages, so a frame is a message). Single process, single thread:
uvloop if it is installed, else asyncio's default loop; picows itself decides whether to use
aiofastnet (its default: yes when installed). The first line printed says which.

picows does not check that text frames are UTF-8 (RFC 6455 §8.1 asks a server to fail the
connection with 1007 when they are not; pyws does, in C). With --validate this server does it
in Python, the way a picows user would: each TEXT frame's payload is decoded with
``bytes.decode("utf-8")`` (CPython's decoder, ASCII fast path included) and a frame that is not
UTF-8 closes the connection with 1007. The load client never fragments a message, so one frame
is one whole message and a per-frame check is a per-message check.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import picows
from picows import (WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest,
                    ws_create_server)

try:  # a faster loop only if it is there; the line printed at start says which one ran
    import uvloop  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    uvloop = None


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        t = frame.msg_type
        if t is WSMsgType.TEXT or t is WSMsgType.BINARY or t is WSMsgType.CONTINUATION:
            transport.send(t, frame.get_payload_as_bytes(), frame.fin)
        elif t is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


class ValidatingEcho(WSListener):
    """Echo, checking that text frames are UTF-8 first (1007 if not)."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        t = frame.msg_type
        if t is WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                transport.send_close(WSCloseCode.INVALID_TEXT, b"invalid UTF-8")
                transport.disconnect()
                return
            transport.send(t, payload, frame.fin)
        elif t is WSMsgType.BINARY or t is WSMsgType.CONTINUATION:
            transport.send(t, frame.get_payload_as_bytes(), frame.fin)
        elif t is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


async def main(host: str, port: int, validate: bool = False) -> None:
    def factory(request: WSUpgradeRequest) -> WSListener:
        return ValidatingEcho() if validate else Echo()

    server = await ws_create_server(factory, host, port, max_frame_size=64 * 1024 * 1024)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    try:
        from picows import api as _api
        fastnet = getattr(_api, "_HAS_AIOFASTNET", None)
    except Exception:  # pragma: no cover
        fastnet = None
    print(f"picows {getattr(picows, '__version__', '?')} echo server on ws://{host}:{port}/ "
          f"(loop: {type(loop).__module__}.{type(loop).__name__}, aiofastnet: {fastnet}"
          f"{', text checked as UTF-8 in Python' if validate else ''})",
          flush=True)
    async with server:
        await stop


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    ap.add_argument("--validate", action="store_true",
                    help="check that text frames are UTF-8 (1007 if not), as pyws does")
    args = ap.parse_args()
    if uvloop is not None:
        uvloop.install()
    try:
        asyncio.run(main(args.host, args.port, args.validate))
    except KeyboardInterrupt:
        sys.exit(0)
