"""pyws: WebSocket server and client with a hand-written C engine.

Callback style (mongoose-like)::

    from pyws import Manager, EV_HTTP_MSG, EV_WS_MSG

    def handler(conn, ev, data):
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data) if data.uri == "/ws" else conn.reply(404, "Not Found")
        elif ev == EV_WS_MSG:
            conn.ws_send(data.data, data.flags)

    mgr = Manager(handler)
    mgr.listen("http://127.0.0.1:8000")
    while True:
        mgr.poll(100)

Generator style::

    app = pyws.App()

    @app.websocket("/ws/rooms/{room}")
    def room(ws):
        ws.subscribe(ws.params["room"])
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            app.publish(ws.params["room"], msg.text)

    app.run("127.0.0.1", 8000)

Async style (inside asyncio or uvloop; mixable with the others in one App)::

    @app.websocket("/echo")
    async def echo(ws):
        async for msg in ws:
            await ws.send(msg)

    asyncio.run(app.serve("127.0.0.1", 8000))

    async with pyws.aconnect("ws://127.0.0.1:8000/echo") as ws:
        await ws.send("hi")
        print(await ws.recv())
"""
from __future__ import annotations

from ._lib import ffi as _ffi
from ._lib import lib as _lib
from .connection import Connection
from .constants import (EV_ACCEPT, EV_BROKER, EV_CLOSE, EV_CONNECT, EV_DATA, EV_DRAIN,
                        EV_ERROR, EV_HTTP_MSG, EV_TIMER, EV_WAKEUP, EV_WS_CTL, EV_WS_MSG, EV_WS_OPEN, MG_EV_ACCEPT,
                        MG_EV_CLOSE, MG_EV_CONNECT, MG_EV_DRAIN, MG_EV_ERROR, MG_EV_HTTP_MSG,
                        MG_EV_TIMER, MG_EV_WAKEUP, MG_EV_WS_CTL, MG_EV_WS_MSG, MG_EV_WS_OPEN,
                        OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
                        WEBSOCKET_OP_BINARY, WEBSOCKET_OP_CLOSE, WEBSOCKET_OP_CONTINUE,
                        WEBSOCKET_OP_PING, WEBSOCKET_OP_PONG, WEBSOCKET_OP_TEXT, CloseCode,
                        Opcode, State, WSCloseCode, WSMsgType)
from .errors import (ConnectionClosed, HandshakeError, LimitExceeded, ProtocolError, PyWSError,
                     QueueFull, WrongThreadError)
from .app import App, Route
from .client import ClientConnection, connect
from .compression import Deflate
from .manager import DEFAULT_OPTIONS, LOOP_OPTIONS, Listener, Manager, Timer
from .message import Headers, HttpMessage, Message, MessageView, WebSocketMessage, WsMessage
from .request import Request, Response
from .stats import ConnStats, ServerStats
from . import metrics
from .tls import TlsError, TlsOpts
from .websocket import WebSocket
from .threaded import ThreadedWebSocket
from .asyncws import AsyncWebSocket, WSMessage
from .aclient import aconnect
from .aio import attach
from .broker import BROKER_DEFAULTS, Broker, BrokerEvent
from .workers import Worker, run_workers

__version__ = "0.1.0"


def backend() -> str:
    """The poller backend compiled into the C core: ``"epoll"``, ``"kqueue"`` or ``"poll"``."""
    return str(_ffi.string(_lib.pyws_backend()).decode())


__all__ = [
    "Manager", "Listener", "Timer", "Connection", "HttpMessage", "WsMessage", "Message",
    "MessageView",
    "WebSocketMessage",
    "Headers", "App", "Route", "WebSocket", "Request", "Response", "connect",
    "ThreadedWebSocket",
    "ClientConnection", "AsyncWebSocket", "WSMessage", "aconnect", "attach", "TlsOpts", "TlsError", "Deflate",
    "PyWSError", "ConnectionClosed", "ProtocolError", "HandshakeError", "WrongThreadError",
    "LimitExceeded", "QueueFull", "Opcode", "CloseCode", "State", "WSMsgType", "WSCloseCode",
    "DEFAULT_OPTIONS", "LOOP_OPTIONS", "backend", "ConnStats", "ServerStats", "metrics",
    "Broker", "BrokerEvent", "BROKER_DEFAULTS", "Worker", "run_workers",
    "EV_DATA", "EV_BROKER", "EV_ERROR", "EV_ACCEPT", "EV_CONNECT", "EV_HTTP_MSG", "EV_WS_OPEN",
    "EV_WS_MSG",
    "EV_WS_CTL", "EV_DRAIN", "EV_WAKEUP", "EV_TIMER", "EV_CLOSE",
    "MG_EV_ERROR", "MG_EV_ACCEPT", "MG_EV_CONNECT", "MG_EV_HTTP_MSG", "MG_EV_WS_OPEN",
    "MG_EV_WS_MSG", "MG_EV_WS_CTL", "MG_EV_DRAIN", "MG_EV_WAKEUP", "MG_EV_TIMER", "MG_EV_CLOSE",
    "OP_CONTINUATION", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG",
    "WEBSOCKET_OP_CONTINUE", "WEBSOCKET_OP_TEXT", "WEBSOCKET_OP_BINARY", "WEBSOCKET_OP_CLOSE",
    "WEBSOCKET_OP_PING", "WEBSOCKET_OP_PONG",
]
