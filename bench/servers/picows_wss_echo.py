"""picows echo server over TLS (wss://) for the pyws benchmarks; without --cert/--key, plain ws://.

    python bench/servers/picows_wss_echo.py --host 127.0.0.1 --port 9443 --cert C.pem --key K.pem
    python bench/servers/picows_wss_echo.py --host 127.0.0.1 --port 9001      # plain ws://

The echo listener of bench/servers/picows_echo.py (picows's README example: on_ws_frame sends
the payload back with the same message type), served with
``ws_create_server(factory, host, port, ssl=ssl_context)``: picows passes ``ssl`` on to the
server factory (aiofastnet's ``create_server`` when aiofastnet is installed, picows's default;
it then runs its own OpenSSL engine, "direct" when it found libssl, instead of asyncio's
SSLProtocol). The context is Python's ``ssl.SSLContext(PROTOCOL_TLS_SERVER)`` with
``load_cert_chain(cert, key)`` and nothing else changed. Single process, single thread:
uvloop if installed. The first line printed says which loop, whether aiofastnet and which of
its TLS engines ran.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from typing import Optional

import picows
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

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


def _tls_engine() -> str:
    """Which TLS implementation picows's server runs with."""
    try:
        from picows import api as _api
        if not getattr(_api, "_HAS_AIOFASTNET", False):
            return "asyncio SSLProtocol (no aiofastnet)"
        from aiofastnet import ssl_transport  # type: ignore[attr-defined]
        direct = getattr(ssl_transport, "SSLEngineDirect", None) is not None
        return f"aiofastnet {'SSLEngineDirect' if direct else 'SSLEngineFallback'}"
    except Exception as exc:  # pragma: no cover
        return f"? ({exc})"


async def main(host: str, port: int, ctx: Optional[ssl.SSLContext]) -> None:
    def factory(request: WSUpgradeRequest) -> Echo:
        return Echo()

    # ssl=None: plain, as without the argument (picows forwards it to create_server)
    server = await ws_create_server(factory, host, port, max_frame_size=64 * 1024 * 1024,
                                    ssl=ctx)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    try:
        from picows import api as _api
        fastnet = getattr(_api, "_HAS_AIOFASTNET", None)
    except Exception:  # pragma: no cover
        fastnet = None
    what = (f"TLS: {_tls_engine()}, {ssl.OPENSSL_VERSION}" if ctx is not None else "plain")
    print(f"picows {getattr(picows, '__version__', '?')} echo server on "
          f"{'wss' if ctx is not None else 'ws'}://{host}:{port}/ "
          f"(loop: {type(loop).__module__}.{type(loop).__name__}, aiofastnet: {fastnet}, "
          f"{what})", flush=True)
    async with server:
        await stop


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9443)
    ap.add_argument("--cert", help="server certificate (PEM file); with --key: wss://")
    ap.add_argument("--key", help="its private key (PEM file)")
    args = ap.parse_args()
    if bool(args.cert) != bool(args.key):
        ap.error("--cert and --key go together")
    context = None
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
    if uvloop is not None:
        uvloop.install()
    try:
        asyncio.run(main(args.host, args.port, context))
    except KeyboardInterrupt:
        sys.exit(0)
