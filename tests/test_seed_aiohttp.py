"""The aiohttp seed's examples (shared/seeds/004: the WebSocket client, the broadcast server,
the chat server, the server with authentication) written the way an aiohttp user writes them,
run on pyws with their imports changed, and driven by real aiohttp clients (and an aiohttp
server for the client example) over real sockets, on asyncio's default loop and on uvloop.

The changes beyond the imports are the ones docs/migrating-from-aiohttp.md lists, each marked
``# aiohttp:`` where it happens:

- a handler receives the ``ws`` (already the WebSocket: no ``WebSocketResponse()`` and no
  ``await ws.prepare(request)``; ``ws.request`` is the upgrade request);
- routes are registered with ``app.websocket(path)(handler)`` / ``app.get(path)(handler)``
  instead of ``app.router.add_get(path, handler)``;
- per-connection options such as ``heartbeat=30`` go to ``App(...)`` (or ``listen``);
- ``web.run_app(app, host=, port=)`` is ``await app.serve(host, port)``;
- the client has no session: ``pyws.aconnect(url)`` instead of ``session.ws_connect(url)``.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import hmac
import json
import logging
import types
import weakref
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, TypeVar

import pytest

import pyws
from pyws import App, Response, WSMsgType  # aiohttp: from aiohttp import web, WSMsgType

from conftest import aiohttp_server, serving

aiohttp = pytest.importorskip("aiohttp")
uvloop = pytest.importorskip("uvloop")

T = TypeVar("T")


async def receive_json(ws: Any) -> Any:
    """The aiohttp client's next message, which must be JSON text."""
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return msg.json()


# ---------------------------------------------------------------------- "WebSocket Server"

def broadcast_server() -> App:
    """The seed's "WebSocket Server" example."""
    # Store active WebSocket connections
    websockets: "weakref.WeakSet[Any]" = weakref.WeakSet()

    async def websocket_handler(ws: Any) -> Any:
        # aiohttp: (request), ws = web.WebSocketResponse(); await ws.prepare(request)

        # Add to active connections
        websockets.add(ws)

        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = msg.json()

                    if data['type'] == 'echo':
                        # Echo message back
                        await ws.send_json({
                            'type': 'echo_response',
                            'message': data['message']
                        })

                    elif data['type'] == 'broadcast':
                        # Broadcast to all connections
                        message = data['message']
                        for websocket in websockets:
                            if not websocket.closed:
                                await websocket.send_json({
                                    'type': 'broadcast',
                                    'message': message
                                })

                elif msg.type == WSMsgType.ERROR:
                    print(f"WebSocket error: {ws.exception()}")
                    break

        except Exception as e:
            print(f"WebSocket handler error: {e}")

        finally:
            websockets.discard(ws)

        return ws

    # Create application with WebSocket route
    app = App()
    app.websocket('/ws')(websocket_handler)  # aiohttp: app.router.add_get('/ws', ...)
    return app


def test_seed_broadcast_server_with_aiohttp_clients(run: Any,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        async with serving(broadcast_server()) as port, aiohttp.ClientSession() as s:
            url = f"ws://127.0.0.1:{port}/ws"
            async with s.ws_connect(url) as a, s.ws_connect(url) as b:
                await a.send_json({'type': 'echo', 'message': 'hi'})
                assert await receive_json(a) == {'type': 'echo_response', 'message': 'hi'}
                await b.send_json({'type': 'broadcast', 'message': 'to all'})
                want = {'type': 'broadcast', 'message': 'to all'}
                assert await receive_json(a) == want
                assert await receive_json(b) == want
                # not JSON: msg.json() raises, the handler prints it and returns: close 1000
                await a.send_str('Hello, Server!')
                msg = await a.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1000
                await b.send_json({'type': 'broadcast', 'message': 'fewer'})
                assert await receive_json(b) == {'type': 'broadcast', 'message': 'fewer'}
    run(main())
    assert "WebSocket handler error: Expecting value" in capsys.readouterr().out


# ---------------------------------------------------------------------- "WebSocket Client"

def test_seed_client_against_aiohttp_server(run: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from aiohttp import web

    async def peer(request: Any) -> Any:  # echoes two texts, sends bytes, closes
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for _ in range(2):
            msg = await ws.receive()
            await ws.send_str(msg.data)
        await ws.send_bytes(b'\x00\x01')
        await ws.close()
        return ws

    async def main() -> None:
        async with aiohttp_server(peer) as port:
            ws = await seed_client(f'ws://127.0.0.1:{port}/ws')
            assert ws.closed and ws.close_code == 1000 and ws.exception() is None
    run(main())
    assert capsys.readouterr().out.splitlines() == [
        "Received text: Hello, Server!",
        'Received text: {"type": "greeting", "message": "Hello"}',
        "Received binary: b'\\x00\\x01'",
    ]


async def seed_client(url: str) -> Any:
    """The seed's "WebSocket Client" example (``url`` instead of ws://localhost:8080/ws);
    returns the ws for the test to look at."""
    # aiohttp: session = aiohttp.ClientSession(); try: ... finally: await session.close()
    async with pyws.aconnect(url) as ws:  # aiohttp: session.ws_connect(url)
        # Send messages
        await ws.send_str('Hello, Server!')
        await ws.send_json({'type': 'greeting', 'message': 'Hello'})

        # Receive messages
        async for msg in ws:
            if msg.type == pyws.WSMsgType.TEXT:
                print(f"Received text: {msg.data}")
            elif msg.type == pyws.WSMsgType.BINARY:
                print(f"Received binary: {msg.data}")
            elif msg.type == pyws.WSMsgType.ERROR:
                print(f"WebSocket error: {ws.exception()}")
                break
            elif msg.type == pyws.WSMsgType.CLOSE:
                print("WebSocket closed")
                break
    return ws


def test_seed_client_against_seed_server_both_pyws(run: Any,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The two examples together, one asyncio loop: the client's first text is not JSON, so
    the server's handler reports it and returns, which closes with 1000 and ends the client's
    ``async for``."""
    async def main() -> None:
        async with serving(broadcast_server()) as port:
            ws = await seed_client(f'ws://127.0.0.1:{port}/ws')
            assert ws.close_code == 1000 and ws.exception() is None
    run(main())
    out = capsys.readouterr().out
    assert "WebSocket handler error: Expecting value" in out and "Received" not in out


# ---------------------------------------------------------------------- "Real-time Chat Server"

def chat_server() -> App:
    """The seed's "Real-time Chat Server" example (the page shortened)."""
    logger = logging.getLogger("seed.chat")

    class ChatRoom:
        def __init__(self) -> None:
            self.clients: "weakref.WeakSet[Any]" = weakref.WeakSet()
            self.users: Dict[Any, str] = {}  # websocket -> username mapping

        def add_client(self, ws: Any, username: str) -> None:
            self.clients.add(ws)
            self.users[ws] = username
            logger.info(f"User {username} joined the chat")

        def remove_client(self, ws: Any) -> None:
            if ws in self.users:
                username = self.users.pop(ws)
                logger.info(f"User {username} left the chat")
            self.clients.discard(ws)

        async def broadcast(self, message: Any, exclude: Any = None) -> None:
            """Broadcast message to all connected clients."""
            disconnected = []

            for client in self.clients:
                if client != exclude and not client.closed:
                    try:
                        await client.send_json(message)
                    except Exception as e:
                        logger.error(f"Error sending to client: {e}")
                        disconnected.append(client)

            # Clean up disconnected clients
            for client in disconnected:
                self.remove_client(client)

    # Global chat room
    chat_room = ChatRoom()

    async def websocket_handler(ws: Any) -> Any:
        # aiohttp: web.WebSocketResponse(heartbeat=30) + prepare: see App(heartbeat=30) below

        username = None

        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                        msg_type = data.get('type')

                        if msg_type == 'join':
                            username = data.get('username', 'Anonymous')
                            chat_room.add_client(ws, username)

                            # Send welcome message
                            await ws.send_json({
                                'type': 'system',
                                'message': f'Welcome {username}!'
                            })

                            # Notify others
                            await chat_room.broadcast({
                                'type': 'user_joined',
                                'username': username,
                                'message': f'{username} joined the chat'
                            }, exclude=ws)

                        elif msg_type == 'message':
                            if username:
                                message = {
                                    'type': 'message',
                                    'username': username,
                                    'message': data.get('message', '')
                                }
                                await chat_room.broadcast(message)

                    except json.JSONDecodeError:
                        await ws.send_json({
                            'type': 'error',
                            'message': 'Invalid JSON message'
                        })

                elif msg.type == WSMsgType.ERROR:
                    logger.error(f"WebSocket error: {ws.exception()}")
                    break

        except Exception as e:
            logger.error(f"WebSocket handler error: {e}")

        finally:
            if username:
                await chat_room.broadcast({
                    'type': 'user_left',
                    'username': username,
                    'message': f'{username} left the chat'
                }, exclude=ws)

            chat_room.remove_client(ws)

        return ws

    # Serve static files (chat UI)
    async def index_handler(request: Any) -> Any:
        return Response(text="""
<!DOCTYPE html>
<html>
<head>
    <title>WebSocket Chat</title>
</head>
<body>
    <div id="messages"></div>
    <script>const ws = new WebSocket('ws://' + location.host + '/ws');</script>
</body>
</html>
""", content_type='text/html')

    # Create application
    app = App(heartbeat=30)  # aiohttp: web.Application(); heartbeat=30 per WebSocketResponse
    app.get('/')(index_handler)  # aiohttp: app.router.add_get('/', index_handler)
    app.websocket('/ws')(websocket_handler)  # aiohttp: app.router.add_get('/ws', ...)
    return app


def test_seed_chat_server_with_aiohttp_clients(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving(chat_server()) as port, aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/") as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "text/html; charset=utf-8"
                assert "<title>WebSocket Chat</title>" in await r.text()
            url = f"ws://127.0.0.1:{port}/ws"
            async with s.ws_connect(url) as alice:
                await alice.send_str(json.dumps({'type': 'join', 'username': 'alice'}))
                assert await receive_json(alice) == {'type': 'system',
                                                     'message': 'Welcome alice!'}
                async with s.ws_connect(url) as bob:
                    await bob.send_json({'type': 'join', 'username': 'bob'})
                    assert (await receive_json(bob))['message'] == 'Welcome bob!'
                    assert await receive_json(alice) == {
                        'type': 'user_joined', 'username': 'bob',
                        'message': 'bob joined the chat'}
                    await bob.send_json({'type': 'message', 'message': 'hello'})
                    said = {'type': 'message', 'username': 'bob', 'message': 'hello'}
                    assert await receive_json(alice) == said
                    assert await receive_json(bob) == said
                    await bob.send_str('{oops')
                    assert await receive_json(bob) == {'type': 'error',
                                                       'message': 'Invalid JSON message'}
                assert await receive_json(alice) == {
                    'type': 'user_left', 'username': 'bob', 'message': 'bob left the chat'}
    with caplog.at_level(logging.INFO, logger="seed.chat"):
        run(main())
    said = [r.getMessage() for r in caplog.records if r.name == "seed.chat"]
    assert "User bob joined the chat" in said and "User bob left the chat" in said


# ---------------------------------------------------------------------- "WebSocket with Authentication"

def _jwt_stand_in() -> Any:
    """PyJWT's encode/decode for HS256 (what the example uses), for when PyJWT is not
    installed: the example is about the WebSocket, not the token library."""
    class InvalidTokenError(Exception):
        pass

    class ExpiredSignatureError(InvalidTokenError):
        pass

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def unb64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    def encode(payload: Dict[str, Any], key: str, algorithm: str = "HS256") -> str:
        body = {k: int(v.timestamp()) if isinstance(v, datetime.datetime) else v
                for k, v in payload.items()}
        signing = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(body).encode())
        sig = hmac.new(key.encode(), signing.encode(), hashlib.sha256).digest()
        return signing + "." + b64(sig)

    def decode(token: str, key: str, algorithms: List[str]) -> Dict[str, Any]:
        try:
            head, body, sig = token.split(".")
            want = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(unb64(sig), want):
                raise InvalidTokenError("bad signature")
            payload: Dict[str, Any] = json.loads(unb64(body))
        except (ValueError, AttributeError) as exc:
            raise InvalidTokenError(str(exc)) from exc
        if payload.get("exp", 0) < datetime.datetime.now(datetime.timezone.utc).timestamp():
            raise ExpiredSignatureError("expired")
        return payload

    return types.SimpleNamespace(encode=encode, decode=decode, InvalidTokenError=InvalidTokenError,
                                 ExpiredSignatureError=ExpiredSignatureError)


try:
    import jwt  # type: ignore[import-not-found]
except ImportError:
    jwt = _jwt_stand_in()

SECRET_KEY = 'your-secret-key'


def create_token(username: str, hours: int = 1) -> str:
    """Create JWT token for user."""
    payload = {
        'username': username,
        'exp': datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=hours)
    }
    return str(jwt.encode(payload, SECRET_KEY, algorithm='HS256'))


def verify_token(token: str) -> Any:
    """Verify JWT token."""
    try:
        payload = jwt.decode(token, SECRET_KEY, algorithms=['HS256'])
        return payload.get('username')
    except jwt.ExpiredSignatureError:
        return None
    except jwt.InvalidTokenError:
        return None


def auth_server() -> App:
    """The seed's "WebSocket with Authentication" example."""
    async def websocket_handler(ws: Any) -> Any:
        # aiohttp: (request), ws = web.WebSocketResponse(); await ws.prepare(request)

        authenticated = False
        username = None

        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = msg.json()

                    if not authenticated:
                        if data.get('type') == 'auth':
                            token = data.get('token')
                            username = verify_token(token)

                            if username:
                                authenticated = True
                                await ws.send_json({
                                    'type': 'auth_success',
                                    'message': f'Welcome {username}!'
                                })
                            else:
                                await ws.send_json({
                                    'type': 'auth_error',
                                    'message': 'Invalid or expired token'
                                })
                                break
                        else:
                            await ws.send_json({
                                'type': 'error',
                                'message': 'Authentication required'
                            })

                    else:
                        # Handle authenticated messages
                        if data.get('type') == 'ping':
                            await ws.send_json({'type': 'pong'})

                        elif data.get('type') == 'message':
                            # Process authenticated message
                            await ws.send_json({
                                'type': 'echo',
                                'username': username,
                                'message': data.get('message')
                            })

                elif msg.type == WSMsgType.ERROR:
                    print(f"WebSocket error: {ws.exception()}")
                    break

        except Exception as e:
            print(f"WebSocket error: {e}")

        return ws

    app = App()
    app.websocket('/ws')(websocket_handler)  # aiohttp: app.router.add_get('/ws', ...)
    return app


def test_seed_auth_server_with_aiohttp_client(run: Any) -> None:
    async def main() -> None:
        async with serving(auth_server()) as port, aiohttp.ClientSession() as s:
            url = f"ws://127.0.0.1:{port}/ws"
            async with s.ws_connect(url) as ws:
                await ws.send_json({'type': 'message', 'message': 'early'})
                assert (await receive_json(ws))['message'] == 'Authentication required'
                await ws.send_json({'type': 'auth', 'token': create_token('eve', hours=-1)})
                assert (await receive_json(ws))['type'] == 'auth_error'
                msg = await ws.receive(timeout=5)  # the handler's break: closed with 1000
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1000
            async with s.ws_connect(url) as ws:
                await ws.send_json({'type': 'auth', 'token': create_token('ann')})
                assert await receive_json(ws) == {'type': 'auth_success',
                                                  'message': 'Welcome ann!'}
                await ws.send_json({'type': 'ping'})
                assert await receive_json(ws) == {'type': 'pong'}
                await ws.send_json({'type': 'message', 'message': 'hi'})
                assert await receive_json(ws) == {'type': 'echo', 'username': 'ann',
                                                  'message': 'hi'}
    run(main())


def test_response_text_keyword() -> None:
    """aiohttp's ``web.Response(text=..., content_type=...)`` spelling."""
    r = Response(text="<p>hi</p>", content_type="text/html")
    assert r.body == b"<p>hi</p>" and r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert Response(text="x").headers["Content-Type"] == "text/plain; charset=utf-8"
    assert Response(text="{}", content_type="application/json").headers["Content-Type"] == \
        "application/json"
    with pytest.raises(ValueError):
        Response(b"body", text="text")


def test_wsmessage_reads_like_aiohttps_named_tuple() -> None:
    msg = pyws.WSMessage(WSMsgType.CLOSE, 1000, "bye")
    kind, data, extra = msg
    assert (kind, data, extra) == (msg[0], msg[1], msg[2]) == (WSMsgType.CLOSE, 1000, "bye")
    assert msg[-1] == "bye" and msg[:2] == (WSMsgType.CLOSE, 1000)
