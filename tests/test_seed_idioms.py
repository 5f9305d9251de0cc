"""The seeds' names and idioms, run literally over real sockets:

- Cello's guide (generator App): ``ws.send_binary``, ``WebSocketMessage`` and its factories
  (``text``, ``binary``, ``ping``, ``close``), ``msg.msg_type``, ``msg.is_text()`` /
  ``is_binary()`` / ``is_close()``, ``ws.connected``, its chat room. The changes from the
  guide, and only these: ``from cello import`` -> ``from pyws import``, ``msg = ws.recv()``
  -> ``msg = yield ws.recv()`` (a pyws handler is a generator driven by the loop), and the
  test serves the app instead of ``app.run()``.
- Gobstopper's guide (``async def`` handlers): ``await websocket.accept()``, ``message =
  await websocket.receive()``, ``message.type == "text"`` / ``"bytes"`` / ``"close"``,
  ``send_text``/``send_bytes``, ``except ConnectionError`` when the client has gone,
  ``websocket.close(1008, reason)`` before accept, ``websocket.user = user``. The changes: the
  test provides ``app`` (a ``pyws.App``), ``app.logger``, and the helpers the guide leaves to
  its reader (``get_live_metrics``, ``load_image_bytes``, ``authenticate_websocket``, a
  ``websocket_manager``).
- mongoose's ``conn.ws_send(payload, WEBSOCKET_OP_CLOSE)``: the close handshake with the
  payload's code and reason.
- ``close(code, reason)`` with str or bytes on every kind of ws, 123 bytes at most.
"""
from __future__ import annotations

import asyncio
import json
import logging
import pickle
import queue
import struct
import time
from typing import Any, Callable, Dict, List

import pytest
import websocket
import websockets
from websocket import ABNF

import pyws
from _rawws import OP_CLOSE, OP_PING, OP_TEXT, RawWS
from conftest import AppServer, ServerThread, serving


class Printed:
    """A ``print`` for a seed's namespace that records lines (thread-safe)."""

    def __init__(self) -> None:
        self.q: "queue.Queue[str]" = queue.Queue()
        self.lines: List[str] = []

    def __call__(self, *args: Any, **_kw: Any) -> None:
        self.q.put(" ".join(str(a) for a in args))

    def expect(self, line: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.lines:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{line!r} was not printed; printed: {self.lines}")
            try:
                self.lines.append(self.q.get(timeout=left))
            except queue.Empty:
                pass


def load(source: str, **extra: Any) -> Dict[str, Any]:
    assert "cello" not in source and "gobstopper" not in source
    ns: Dict[str, Any] = {"__name__": "seed", "print": Printed()}
    ns.update(extra)
    exec(compile(source, "<seed>", "exec"), ns)
    return ns


def wsc(url: str) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=5)


# =========================================================================== Cello

CELLO_QUICK_START = '''
from pyws import App
app = App()
@app.websocket("/ws")
def echo(ws):
    ws.send_text("Connected!")
    while True:
        msg = yield ws.recv()
        if msg is None or msg.is_close():
            break
        ws.send_text(f"Echo: {msg.text}")
'''

CELLO_SENDING = '''
from pyws import App, WebSocketMessage
app = App()
@app.websocket("/ws")
def handler(ws):
    # Send text
    ws.send_text("Hello, client!")
    # Send binary
    ws.send_binary(b"\\x00\\x01\\x02\\x03")
    # Send a message object
    msg = WebSocketMessage.text("Structured message")
    ws.send(msg)
    # Close the connection
    ws.close()
'''

CELLO_RECEIVING = '''
from pyws import App
app = App()
@app.websocket("/ws")
def handler(ws):
    while True:
        msg = yield ws.recv()
        if msg is None:
            break # Client disconnected
        if msg.is_close():
            break # Client sent close frame
        if msg.is_text():
            print(f"Text: {msg.text}")
        elif msg.is_binary():
            print(f"Binary: {len(msg.data)} bytes")
'''

CELLO_FACTORIES = '''
from pyws import WebSocketMessage
# Create a text message
msg = WebSocketMessage.text("Hello")
# Create a binary message
msg = WebSocketMessage.binary(b"\\x00\\x01\\x02")
# Create a ping message
msg = WebSocketMessage.ping()
# Create a close message
msg = WebSocketMessage.close()
'''

CELLO_LIFECYCLE = '''
from pyws import App
app = App()
@app.websocket("/ws/lifecycle")
def lifecycle_demo(ws):
    # Phase: Connected
    ws.send_text("Welcome!")
    # Phase: Message loop
    while True:
        msg = yield ws.recv()
        if msg is None or msg.is_close():
            break
        ws.send_text(f"Got: {msg.text}")
    # Phase: Cleanup (connection will close when handler returns)
    print("Client disconnected")
'''

CELLO_JSON = '''
from pyws import App
app = App()
import json
@app.websocket("/ws/data")
def data_stream(ws):
    ws.send_text(json.dumps({"type": "connected", "status": "ok"}))
    while True:
        msg = yield ws.recv()
        if msg is None or msg.is_close():
            break
        try:
            data = json.loads(msg.text)
            response = process_command(data)
            ws.send_text(json.dumps(response))
        except json.JSONDecodeError:
            ws.send_text(json.dumps({"error": "Invalid JSON"}))
'''

CELLO_CHAT = '''
from pyws import App
import json
app = App()
# Store connected clients (in production, use a proper data structure)
clients = []
@app.websocket("/ws/chat")
def chat(ws):
    # Register client
    clients.append(ws)
    ws.send_text(json.dumps({
        "type": "system",
        "message": "Welcome to the chat!",
        "users_online": len(clients),
    }))
    # Broadcast join notification
    broadcast(json.dumps({
        "type": "system",
        "message": "A new user joined",
        "users_online": len(clients),
    }), exclude=ws)
    # Message loop
    while True:
        msg = yield ws.recv()
        if msg is None or msg.is_close():
            break
        # Broadcast the message to all clients
        broadcast(json.dumps({
            "type": "message",
            "text": msg.text,
        }))
    # Cleanup on disconnect
    clients.remove(ws)
    broadcast(json.dumps({
        "type": "system",
        "message": "A user left",
        "users_online": len(clients),
    }))
def broadcast(message, exclude=None):
    """Send a message to all connected clients."""
    for client in clients:
        if client is not exclude:
            try:
                client.send_text(message)
            except Exception:
                pass # Client may have disconnected
'''


def test_cello_quick_start(serve: Callable[..., AppServer]) -> None:
    ns = load(CELLO_QUICK_START)
    srv = serve(ns["app"])
    ws = wsc(srv.url("/ws"))
    assert ws.recv() == "Connected!"
    ws.send("Hello!")
    assert ws.recv() == "Echo: Hello!"
    ws.close()


def test_cello_sending_send_binary_message_object_close(serve: Callable[..., AppServer]) -> None:
    ns = load(CELLO_SENDING)
    srv = serve(ns["app"])
    ws = wsc(srv.url("/ws"))
    assert ws.recv_data() == (ABNF.OPCODE_TEXT, b"Hello, client!")
    assert ws.recv_data() == (ABNF.OPCODE_BINARY, b"\x00\x01\x02\x03")
    assert ws.recv_data() == (ABNF.OPCODE_TEXT, b"Structured message")
    op, frame = ws.recv_data_frame(control_frame=True)
    assert op == ABNF.OPCODE_CLOSE
    assert struct.unpack("!H", frame.data[:2])[0] == 1000
    ws.close()


def test_cello_receiving_type_checks(serve: Callable[..., AppServer]) -> None:
    ns = load(CELLO_RECEIVING)
    srv = serve(ns["app"])
    ws = wsc(srv.url("/ws"))
    ws.send("héllo")
    ws.send_binary(b"\x00" * 7)
    ns["print"].expect("Text: héllo")
    ns["print"].expect("Binary: 7 bytes")
    ws.close()


def test_cello_message_factories_and_msg_type() -> None:
    ns = load(CELLO_FACTORIES)
    W = pyws.WebSocketMessage
    assert W is pyws.Message and ns["msg"].msg_type == "close"
    assert ns["msg"].is_close() and ns["msg"].data == struct.pack("!H", 1000)
    cases = [(W.text("Hello"), "text", b"Hello"), (W.binary(b"\x00\x01\x02"), "binary", b"\x00\x01\x02"),
             (W.ping(), "ping", b""), (W.ping(b"x"), "ping", b"x"), (W.pong(), "pong", b""),
             (W.close(4000, "done"), "close", struct.pack("!H", 4000) + b"done"),
             (W.close(None), "close", b"")]
    for msg, kind, data in cases:
        assert msg.msg_type == kind and msg.data == data
        assert msg.type == kind or (kind == "binary" and msg.type == "bytes")
        assert msg.is_text() == (kind == "text") and msg.is_binary() == (kind == "binary")
        assert msg.is_ping() == (kind == "ping") and msg.is_close() == (kind == "close")
    assert W.text("Hello").type == pyws.WSMsgType.TEXT == pyws.OP_TEXT
    with pytest.raises(ValueError, match="123 bytes"):
        W.close(1000, "x" * 124)
    with pytest.raises(ValueError, match="close code 1006 may not be sent"):
        W.close(1006)
    with pytest.raises(ValueError, match="125 bytes"):
        W.ping(b"x" * 126)


def test_cello_ping_and_close_messages_go_on_the_wire(serve: Callable[..., AppServer]) -> None:
    """ws.send(WebSocketMessage.ping()) sends a ping; ws.send(WebSocketMessage.close(...))
    starts the close handshake with that code and reason."""
    ns = load(CELLO_FACTORIES)
    W = ns["WebSocketMessage"]
    app = pyws.App()

    @app.websocket("/ws")
    def handler(ws: pyws.WebSocket) -> Any:
        ws.send(W.ping(b"are you there"))
        msg = yield ws.recv()
        ws.send(W.close(4001, f"bye {msg.text}"))
        assert (yield ws.recv()) is None

    srv = serve(app)
    with RawWS(srv.port) as raw:
        raw.handshake("/ws")
        assert raw.recv_frame() == (OP_PING, True, b"are you there")
        raw.send_frame(b"you", OP_TEXT)
        code, reason, before = raw.recv_close()
        assert (code, reason, before) == (4001, b"bye you", [])
        raw.send_frame(struct.pack("!H", 4001), OP_CLOSE)
        assert raw.is_eof()


def test_cello_lifecycle_connected_and_json(serve: Callable[..., AppServer]) -> None:
    ns = load(CELLO_LIFECYCLE)
    seen: List[bool] = []

    @ns["app"].websocket("/ws/state")
    def state(ws: pyws.WebSocket) -> Any:
        # Cello's "Connection State" property. pyws lets a handler reject the upgrade until
        # it first sends or waits, so before that it is False; after, True until the close
        seen.append(ws.connected)
        ws.send_text("hi")
        seen.append(ws.connected)
        yield ws.recv()
        seen.append(ws.connected)

    srv = serve(ns["app"])
    ws = wsc(srv.url("/ws/lifecycle"))
    assert ws.recv() == "Welcome!"
    ws.send("one")
    assert ws.recv() == "Got: one"
    ws.close()
    ns["print"].expect("Client disconnected")
    ws = wsc(srv.url("/ws/state"))
    assert ws.recv() == "hi"
    ws.close()
    deadline = time.monotonic() + 5
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [False, True, False]

    js = load(CELLO_JSON, process_command=lambda data: {"ok": data["cmd"]})
    srv2 = serve(js["app"])
    ws = wsc(srv2.url("/ws/data"))
    assert json.loads(ws.recv()) == {"type": "connected", "status": "ok"}
    ws.send(json.dumps({"cmd": "go"}))
    assert json.loads(ws.recv()) == {"ok": "go"}
    ws.send("{not json")
    assert json.loads(ws.recv()) == {"error": "Invalid JSON"}
    ws.close()


def test_cello_chat_room(serve: Callable[..., AppServer]) -> None:
    ns = load(CELLO_CHAT)
    srv = serve(ns["app"])
    a = wsc(srv.url("/ws/chat"))
    assert json.loads(a.recv())["users_online"] == 1
    b = wsc(srv.url("/ws/chat"))
    assert json.loads(b.recv()) == {"type": "system", "message": "Welcome to the chat!",
                                    "users_online": 2}
    assert json.loads(a.recv()) == {"type": "system", "message": "A new user joined",
                                    "users_online": 2}
    b.send("hi all")
    for c in (a, b):
        assert json.loads(c.recv()) == {"type": "message", "text": "hi all"}
    b.close()
    assert json.loads(a.recv()) == {"type": "system", "message": "A user left",
                                    "users_online": 1}
    a.close()


# =========================================================================== Gobstopper

GOB_LIFECYCLE = '''
@app.websocket("/ws")
async def websocket_handler(websocket):
    # 1. Accept the connection
    await websocket.accept()
    # 2. Handle messages
    try:
        while True:
            message = await websocket.receive()
            if message.type == "text":
                await websocket.send_text(f"Echo: {message.data}")
            elif message.type == "close":
                break
    except ConnectionError:
        # Handle disconnection
        pass
'''

GOB_CONNECT = '''
@app.websocket("/ws/connect")
async def connect_handler(websocket):
    try:
        await websocket.accept()
        await websocket.send_text("Connected successfully!")
    except ConnectionError:
        # Connection failed
        app.logger.error("Failed to accept WebSocket connection")
'''

GOB_BINARY = '''
@app.websocket("/ws/binary")
async def binary_handler(websocket):
    await websocket.accept()
    # Send binary data
    image_data = await load_image_bytes("welcome.png")
    await websocket.send_bytes(image_data)
    # Send compressed data
    import gzip
    large_data = get_large_dataset()
    compressed = gzip.compress(json.dumps(large_data).encode())
    await websocket.send_bytes(compressed)
'''

GOB_ECHO = '''
@app.websocket("/ws/echo")
async def echo_server(websocket):
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message.type == "text":
                await websocket.send_text(f"Echo: {message.data}")
            elif message.type == "bytes":
                await websocket.send_bytes(b"Echo: " + message.data)
            elif message.type == "close":
                break
    except ConnectionError:
        app.logger.info("Echo client disconnected")
'''

GOB_LIVE = '''
import asyncio
@app.websocket("/ws/live-data")
async def live_data_stream(websocket):
    await websocket.accept()
    try:
        # Send periodic updates
        while True:
            data = await get_live_metrics()
            update = {
                "timestamp": datetime.utcnow().isoformat(),
                "cpu_usage": data["cpu"],
                "memory_usage": data["memory"],
                "active_connections": data["connections"]
            }
            await websocket.send_text(json.dumps(update))
            await asyncio.sleep(1) # Update every second
    except ConnectionError:
        app.logger.info("Live data client disconnected")
'''

GOB_AUTH = '''
@app.websocket("/ws/authenticated")
async def authenticated_websocket(websocket):
    # Authenticate before accepting
    user = await authenticate_websocket(websocket)
    if not user:
        await websocket.close(1008, "Authentication required")
        return
    await websocket.accept()
    # Add user info to websocket
    websocket.user = user
    # Continue with authenticated handler
    connection_id = str(uuid.uuid4())
    websocket_manager.add_connection(connection_id, websocket)
    # ... rest of handler
'''


class _Manager:
    """The guide's WebSocketManager, as far as these handlers use it."""

    def __init__(self) -> None:
        self.connections: Dict[str, Any] = {}

    def add_connection(self, cid: str, ws: Any) -> None:
        self.connections[cid] = ws


class _Log(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _gob_app() -> Dict[str, Any]:
    import datetime
    import uuid
    app = pyws.App()
    log = logging.getLogger("gobstopper-seed")
    log.setLevel(logging.INFO)
    rec = _Log()
    log.addHandler(rec)
    app.logger = log  # type: ignore[attr-defined]   # the test provides it (an App has none)

    async def load_image_bytes(name: str) -> bytes:
        return b"\x89PNG" + name.encode()

    async def get_live_metrics() -> Dict[str, int]:
        return {"cpu": 5, "memory": 6, "connections": 7}

    async def authenticate_websocket(websocket: Any) -> Any:
        token = websocket.request.args.get("token", [None])[0]
        return {"name": "ada"} if token == "good" else None

    ns = {"__name__": "seed", "app": app, "json": json, "datetime": datetime.datetime,
          "uuid": uuid, "load_image_bytes": load_image_bytes,
          "get_large_dataset": lambda: {"rows": list(range(100))},
          "get_live_metrics": get_live_metrics,
          "authenticate_websocket": authenticate_websocket,
          "websocket_manager": _Manager(), "log_records": rec}
    for src in (GOB_LIFECYCLE, GOB_CONNECT, GOB_BINARY, GOB_ECHO, GOB_LIVE, GOB_AUTH):
        exec(compile(src, "<gobstopper seed>", "exec"), ns)
    return ns


def test_gobstopper_async_handlers(run: Callable[..., Any]) -> None:
    import gzip
    ns = _gob_app()
    rec: _Log = ns["log_records"]

    async def main() -> None:
        async with serving(ns["app"]) as port:
            base = f"ws://127.0.0.1:{port}"
            async with websockets.connect(base + "/ws", proxy=None) as ws:
                await ws.send("hi")
                assert await asyncio.wait_for(ws.recv(), 5) == "Echo: hi"
            async with websockets.connect(base + "/ws/connect", proxy=None) as ws:
                assert await asyncio.wait_for(ws.recv(), 5) == "Connected successfully!"
            async with websockets.connect(base + "/ws/binary", proxy=None) as ws:
                assert await asyncio.wait_for(ws.recv(), 5) == b"\x89PNGwelcome.png"
                blob = await asyncio.wait_for(ws.recv(), 5)
                assert json.loads(gzip.decompress(blob)) == {"rows": list(range(100))}
            async with websockets.connect(base + "/ws/echo", proxy=None) as ws:
                await ws.send("text")
                assert await asyncio.wait_for(ws.recv(), 5) == "Echo: text"
                await ws.send(b"\x00\x01")
                assert await asyncio.wait_for(ws.recv(), 5) == b"Echo: \x00\x01"
            # a client that leaves: the handler's next send raises ConnectionClosed, which
            # its `except ConnectionError` catches
            async with websockets.connect(base + "/ws/live-data", proxy=None) as ws:
                first = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert (first["cpu_usage"], first["active_connections"]) == (5, 7)
            deadline = time.monotonic() + 5
            while "Live data client disconnected" not in rec.lines:
                assert time.monotonic() < deadline, rec.lines
                await asyncio.sleep(0.05)
            # close(1008, reason) before accept: the client sees the code and reason
            async with websockets.connect(base + "/ws/authenticated", proxy=None) as ws:
                with pytest.raises(websockets.ConnectionClosed) as info:
                    await asyncio.wait_for(ws.recv(), 5)
                assert info.value.rcvd is not None
                assert (info.value.rcvd.code, info.value.rcvd.reason) == \
                    (1008, "Authentication required")
            async with websockets.connect(base + "/ws/authenticated?token=good",
                                          proxy=None) as ws:
                with pytest.raises(websockets.ConnectionClosed) as info:
                    await asyncio.wait_for(ws.recv(), 5)   # "... rest of handler": it ends
                assert info.value.rcvd is not None and info.value.rcvd.code == 1000
            (user_ws,) = ns["websocket_manager"].connections.values()
            assert user_ws.user == {"name": "ada"}     # websocket.user = user
            assert "Echo client disconnected" not in rec.lines  # closed normally: "close"
    run(main())


def test_string_message_types_and_connection_closed_bases() -> None:
    T = pyws.WSMsgType
    assert T.TEXT == "text" and T.BINARY == "bytes" and T.BINARY == "binary"
    assert T.CLOSE == "close" and T.ERROR == "error" and T.CLOSED == "closed"
    assert T.TEXT != "bytes" and not (T.TEXT != "text") and T.TEXT != "TEXT"
    assert T.TEXT == 1 and T.TEXT != 2 and {1: "x"}[T.TEXT] == "x"
    m = pyws.asyncws.WSMessage(T.CLOSE, 1000, "bye")
    assert m.type == "close" and m.is_close() and m.msg_type == "close"
    assert pyws.asyncws.WSMessage(T.BINARY, b"x").msg_type == "binary"
    exc = pyws.ConnectionClosed(1001, "going away")
    assert isinstance(exc, ConnectionError) and isinstance(exc, RuntimeError)
    assert isinstance(pyws.ProtocolError(1002, "x"), ConnectionError)
    assert exc.errno is None and str(exc) == "connection closed with code 1001 (going away)"
    back = pickle.loads(pickle.dumps(pyws.LimitExceeded(1008, "full")))
    assert type(back) is pyws.LimitExceeded and (back.code, back.reason) == (1008, "full")


# =========================================================================== attributes

def test_own_attributes_on_every_kind_of_ws(serve: Callable[..., AppServer],
                                            server_factory: Callable[..., ServerThread]) -> None:
    app = pyws.App()

    @app.websocket("/ws")
    def gen(ws: pyws.WebSocket) -> Any:
        ws.user = "ada"                       # type: ignore[attr-defined]
        msg = yield ws.recv()
        ws.send_text(f"{ws.user}:{msg.text}")  # type: ignore[attr-defined]

    srv = serve(app)
    ws = wsc(srv.url("/ws"))
    ws.send("x")
    assert ws.recv() == "ada:x"
    ws.close()

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            conn.ws_upgrade(data)
            conn.room = "lobby"  # type: ignore[attr-defined]
        elif ev == pyws.EV_WS_MSG:
            conn.ws_send(conn.room, pyws.OP_TEXT)  # type: ignore[attr-defined]

    cb = server_factory(handler)
    ws = wsc(cb.url + "/ws")
    ws.send("?")
    assert ws.recv() == "lobby"
    ws.close()


# =========================================================================== mongoose OP_CLOSE

def _op_close_handler(errors: List[str]) -> Callable[[pyws.Connection, int, Any], None]:
    from pyws import MG_EV_HTTP_MSG, MG_EV_WS_MSG, WEBSOCKET_OP_CLOSE, WEBSOCKET_OP_TEXT

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == MG_EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == MG_EV_WS_MSG:
            if data.text == "bye":
                conn.ws_send(struct.pack("!H", 1001) + b"going away", WEBSOCKET_OP_CLOSE)
            elif data.text == "empty":
                conn.ws_send(b"", WEBSOCKET_OP_CLOSE)
            elif data.text == "4000":
                conn.ws_send(struct.pack("!H", 4000) + "fin ✓".encode(), WEBSOCKET_OP_CLOSE)
            else:
                for bad in (b"\x03", struct.pack("!H", 1006), struct.pack("!H", 999),
                            struct.pack("!H", 1000) + b"x" * 124,
                            struct.pack("!H", 1000) + b"\xff"):
                    try:
                        conn.ws_send(bad, WEBSOCKET_OP_CLOSE)
                    except ValueError as exc:
                        errors.append(str(exc))
                conn.ws_send("still open", WEBSOCKET_OP_TEXT)
    return handler


def test_mongoose_ws_send_op_close(server_factory: Callable[..., ServerThread]) -> None:
    errors: List[str] = []
    srv = server_factory(_op_close_handler(errors))
    ws = wsc(srv.url + "/ws")
    ws.send("bad payloads")
    assert ws.recv() == "still open"
    assert len(errors) == 5
    assert "not 1 byte" in errors[0]
    assert "close code 1006 may not be sent" in errors[1]
    assert "close code 999 may not be sent" in errors[2]
    assert "at most 123 bytes" in errors[3]
    assert "must be UTF-8" in errors[4]
    ws.send("bye")
    op, frame = ws.recv_data_frame(control_frame=True)
    assert op == ABNF.OPCODE_CLOSE
    assert frame.data == struct.pack("!H", 1001) + b"going away"
    ws.close()
    # an empty payload: a close frame without a code; a UTF-8 reason goes as it is
    for text, want in (("empty", b""), ("4000", struct.pack("!H", 4000) + "fin ✓".encode())):
        with RawWS(srv.port) as raw:
            raw.handshake("/ws")
            raw.send_frame(text.encode(), OP_TEXT)
            op2, _fin, payload = raw.recv_frame()
            assert (op2, payload) == (OP_CLOSE, want)
            raw.send_frame(payload, OP_CLOSE)
            assert raw.is_eof()


# =========================================================================== close reasons

def test_close_reason_str_or_bytes_everywhere(serve: Callable[..., AppServer],
                                              server_factory: Callable[..., ServerThread],
                                              run: Callable[..., Any]) -> None:
    # Connection (callback API)
    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == pyws.EV_WS_MSG:
            with pytest.raises(ValueError, match="124 bytes in UTF-8; at most 123"):
                conn.close(1000, "é" * 62)       # 62 characters, 124 bytes
            conn.close(4000, "naïve ✓".encode())
    cb = server_factory(handler)
    ws = wsc(cb.url + "/ws")
    ws.send("x")
    op, frame = ws.recv_data_frame(control_frame=True)
    assert (op, frame.data) == (ABNF.OPCODE_CLOSE, struct.pack("!H", 4000) + "naïve ✓".encode())
    ws.close()

    # WebSocket (generator)
    app = pyws.App()
    raised: List[str] = []

    @app.websocket("/ws")
    def gen(ws: pyws.WebSocket) -> Any:
        yield ws.recv()
        try:
            ws.close(1000, b"x" * 124)
        except ValueError as exc:
            raised.append(str(exc))
        ws.close(4001, b"bytes reason")

    srv = serve(app)
    ws = wsc(srv.url("/ws"))
    ws.send("x")
    op, frame = ws.recv_data_frame(control_frame=True)
    assert frame.data == struct.pack("!H", 4001) + b"bytes reason"
    ws.close()
    assert raised and "at most 123 bytes" in raised[0]

    # the blocking client: a bad reason raises before anything is closed
    seen: List[Any] = []

    def recorder(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == pyws.EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)
        elif ev == pyws.EV_CLOSE:
            seen.append((conn.close_code, conn.close_reason))
    rs = server_factory(recorder)
    with pyws.connect(rs.url + "/ws", timeout=5) as c:
        with pytest.raises(ValueError, match="at most 123"):
            c.close(1000, "y" * 200)
        c.send("still open")
        assert c.recv().text == "still open"
        c.close(1000, b"client bye")
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [(1000, "client bye")]

    # AsyncWebSocket (client side and an async handler)
    aapp = pyws.App()

    @aapp.websocket("/ws")
    async def ahandler(ws: pyws.AsyncWebSocket) -> None:
        await ws.accept()
        await ws.receive()
        with pytest.raises(ValueError, match="at most 123"):
            await ws.close(1000, b"z" * 124)
        await ws.close(4002, b"async bytes")

    async def main() -> None:
        async with serving(aapp) as port:
            async with pyws.aconnect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send("go")
                assert await ws.recv(timeout=5) is None
                assert (ws.close_code, ws.close_reason) == (4002, "async bytes")
            async with pyws.aconnect(rs.url + "/ws") as ws2:
                with pytest.raises(ValueError, match="at most 123"):
                    await ws2.close(1000, "w" * 124)
                assert await ws2.close(1000, message=b"aiohttp spelling") is True
    run(main())
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen[1] == (1000, "aiohttp spelling")
