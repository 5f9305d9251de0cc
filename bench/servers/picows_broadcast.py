"""picows broadcast server for the pyws benchmarks (the "B:" protocol of bench/test_broadcast.py).

    python bench/servers/picows_broadcast.py --host 127.0.0.1 --port 9001

Every text message that starts with "B:" goes unchanged to ALL connected clients, the sender
included; every other message is echoed back to its sender. picows has no broadcast helper, so
this is what picows users write: a set of the open transports (added in on_ws_connected,
removed in on_ws_disconnected) and a loop of ``transport.send(...)`` over it; the payload is
taken out of the frame once (``get_payload_as_bytes``) and the same bytes object is sent to
everyone. Single process, single thread: uvloop if installed, else asyncio's default loop;
picows decides about aiofastnet itself (its default). The first line printed says which.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Set

import picows
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

try:  # a faster loop only if it is there; the line printed at start says which one ran
    import uvloop  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    uvloop = None

CLIENTS: Set[WSTransport] = set()


class Broadcast(WSListener):
    def on_ws_connected(self, transport: WSTransport) -> None:
        CLIENTS.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        CLIENTS.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        t = frame.msg_type
        if t is WSMsgType.TEXT or t is WSMsgType.BINARY or t is WSMsgType.CONTINUATION:
            payload = frame.get_payload_as_bytes()
            if t is WSMsgType.TEXT and frame.fin and payload.startswith(b"B:"):
                for client in CLIENTS:
                    client.send(WSMsgType.TEXT, payload)
            else:
                transport.send(t, payload, frame.fin)
        elif t is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


async def main(host: str, port: int) -> None:
    def factory(request: WSUpgradeRequest) -> Broadcast:
        return Broadcast()

    server = await ws_create_server(factory, host, port, max_frame_size=64 * 1024 * 1024)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    try:
        from picows import api as _api
        fastnet = getattr(_api, "_HAS_AIOFASTNET", None)
    except Exception:  # pragma: no cover
        fastnet = None
    print(f"picows {getattr(picows, '__version__', '?')} broadcast server on ws://{host}:{port}/ "
          f"(set of transports + transport.send loop; loop: {type(loop).__module__}."
          f"{type(loop).__name__}, aiofastnet: {fastnet})", flush=True)
    async with server:
        await stop


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    args = ap.parse_args()
    if uvloop is not None:
        uvloop.install()
    try:
        asyncio.run(main(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)
