"""Subprotocols chosen by the server (RFC 6455 §4.2.2): ``subprotocols=[...]`` on
``Manager.listen`` and ``@app.websocket``, the first of the SERVER's list that the client
offered is selected and returned in ``Sec-WebSocket-Protocol``; none in common gives no header,
or ``400`` with ``subprotocol_required=True``. Checked with websockets (asyncio and sync),
websocket-client, aiohttp and raw requests, against the callback, generator and async
drivers."""
from __future__ import annotations

import asyncio
from typing import Any, Callable, List

import aiohttp
import pytest
import websocket
import websockets
import websockets.sync.client as ws_sync
from websockets.exceptions import InvalidStatus

import pyws
from _rawws import RawWS, handshake_request
from conftest import AppServer, ServerThread, serving


def _proto_handler(seen: List[Any]) -> Callable[[pyws.Connection, int, Any], None]:
    """Upgrade every WebSocket request with the listener's choice; answer every message with
    the subprotocol agreed ("-" for none). Records the events it saw."""
    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        seen.append(ev)
        if ev == pyws.EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == pyws.EV_WS_MSG:
            conn.ws_send(conn.subprotocol or "-", pyws.OP_TEXT)
        elif ev == pyws.EV_ERROR:
            seen.append((data, conn.error))
    return handler


# ------------------------------------------------------------------ Manager listeners

def test_listener_selects_the_servers_first_choice_websockets_sync(
        server_factory: Callable[..., ServerThread]) -> None:
    seen: List[Any] = []
    srv = server_factory(_proto_handler(seen),
                         listen_options={"subprotocols": ["chat.v2", "chat.v1"]})
    # the client prefers v1, the server v2: the server's order decides
    with ws_sync.connect(srv.url + "/ws", subprotocols=["chat.v1", "chat.v2"],
                         proxy=None, open_timeout=5) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.response.headers["Sec-WebSocket-Protocol"] == "chat.v2"
        ws.send("which?")
        assert ws.recv(timeout=5) == "chat.v2"   # conn.subprotocol on the server
    # offering only one the server speaks: that one
    with ws_sync.connect(srv.url + "/ws", subprotocols=["chat.v1"], proxy=None,
                         open_timeout=5) as ws:
        assert ws.subprotocol == "chat.v1"
        ws.send("which?")
        assert ws.recv(timeout=5) == "chat.v1"


def test_listener_none_in_common_sends_no_header(
        server_factory: Callable[..., ServerThread]) -> None:
    seen: List[Any] = []
    srv = server_factory(_proto_handler(seen), listen_options={"subprotocols": ["chat.v2"]})
    # websockets accepts a 101 without a subprotocol (RFC 6455 lets the client decide)
    with ws_sync.connect(srv.url + "/ws", subprotocols=["other"], proxy=None,
                         open_timeout=5) as ws:
        assert ws.subprotocol is None
        assert "Sec-WebSocket-Protocol" not in ws.response.headers
        ws.send("which?")
        assert ws.recv(timeout=5) == "-"
    # websocket-client is strict: a 101 without the subprotocol it asked for fails it
    with pytest.raises(websocket.WebSocketException, match="Invalid WebSocket Header"):
        websocket.create_connection(srv.url + "/ws", subprotocols=["other"], timeout=5)
    # a client offering nothing gets no subprotocol and no header
    with RawWS(srv.port) as raw:
        headers = raw.handshake()
        assert "sec-websocket-protocol" not in headers
    # names are case-sensitive (RFC 6455 §1.9): CHAT.V2 is not chat.v2
    with RawWS(srv.port) as raw:
        headers = raw.handshake(extra="Sec-WebSocket-Protocol: CHAT.V2\r\n")
        assert "sec-websocket-protocol" not in headers


def test_listener_websocket_client_and_split_offers(
        server_factory: Callable[..., ServerThread]) -> None:
    seen: List[Any] = []
    srv = server_factory(_proto_handler(seen),
                         listen_options={"subprotocols": ["graphql-transport-ws", "graphql-ws"]})
    ws = websocket.create_connection(srv.url + "/ws", subprotocols=["graphql-ws"], timeout=5)
    try:
        assert ws.getsubprotocol() == "graphql-ws"
        ws.send("which?")
        assert ws.recv() == "graphql-ws"
    finally:
        ws.close()
    # offers spread over several headers, with blanks, are all read
    with RawWS(srv.port) as raw:
        headers = raw.handshake(extra="Sec-WebSocket-Protocol: a, b ,\r\n"
                                      "Sec-WebSocket-Protocol: graphql-ws,graphql-transport-ws\r\n")
        assert headers["sec-websocket-protocol"] == "graphql-transport-ws"


def test_listener_subprotocol_required_answers_400_before_the_handler(
        server_factory: Callable[..., ServerThread]) -> None:
    seen: List[Any] = []
    srv = server_factory(_proto_handler(seen), listen_options={
        "subprotocols": ["chat.v2", "chat.v1"], "subprotocol_required": True})
    with RawWS(srv.port) as raw:
        raw.send(handshake_request("/ws", extra="Sec-WebSocket-Protocol: chat.v0\r\n"))
        status, headers, _ = raw.read_http_head()
        body = raw.read_until_eof()
    assert status == 400
    assert "sec-websocket-accept" not in headers
    assert b"no common subprotocol" in body and b"chat.v2, chat.v1" in body
    assert b"chat.v0" in body
    # the websockets client sees the 400
    with pytest.raises(InvalidStatus) as info:
        ws_sync.connect(srv.url + "/ws", proxy=None, open_timeout=5)
    assert info.value.response.status_code == 400
    # one in common: upgraded as usual
    with ws_sync.connect(srv.url + "/ws", subprotocols=["chat.v1"], proxy=None,
                         open_timeout=5) as ws:
        assert ws.subprotocol == "chat.v1"
    # the handler never saw the refused requests as HTTP messages: EV_ERROR instead, with a
    # HandshakeError whose status is the one sent
    errors = [e for e in seen if isinstance(e, tuple)]
    assert len(errors) == 2
    for text, err in errors:
        assert text.startswith("400 Bad Request: no common subprotocol")
        assert isinstance(err, pyws.HandshakeError) and err.status == 400
    assert seen.count(pyws.EV_HTTP_MSG) == 1


def test_explicit_protocol_in_ws_upgrade_wins(server_factory: Callable[..., ServerThread]) -> None:
    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            conn.ws_upgrade(data, protocol="b")   # the handler decides itself
        elif ev == pyws.EV_WS_MSG:
            conn.ws_send(conn.subprotocol or "-", pyws.OP_TEXT)

    srv = server_factory(handler, listen_options={"subprotocols": ["a", "b"]})
    with ws_sync.connect(srv.url + "/ws", subprotocols=["a", "b"], proxy=None,
                         open_timeout=5) as ws:
        assert ws.subprotocol == "b"
        ws.send("?")
        assert ws.recv(timeout=5) == "b"


def test_bad_arguments_say_what_to_write() -> None:
    with pyws.Manager() as mgr:
        with pytest.raises(TypeError, match=r"subprotocols=\['chat'\]"):
            mgr.listen("http://127.0.0.1:0", subprotocols="chat")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="not a valid name"):
            mgr.listen("http://127.0.0.1:0", subprotocols=["chat v1"])
        with pytest.raises(ValueError, match="twice"):
            mgr.listen("http://127.0.0.1:0", subprotocols=["a", "a"])
        with pytest.raises(ValueError, match="needs subprotocols"):
            mgr.listen("http://127.0.0.1:0", subprotocol_required=True)
        assert mgr.listeners == []
    app = pyws.App()
    with pytest.raises(ValueError, match=r"@app.websocket\('/ws'\).*not a valid name"):
        app.websocket("/ws", subprotocols=["a,b"])
    app.close()


# ------------------------------------------------------------------ App routes

def test_app_route_generator_handler(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()

    @app.websocket("/chat", subprotocols=["chat.v2", "chat.v1"])
    def chat(ws: pyws.WebSocket) -> Any:
        ws.send_text(ws.subprotocol or "-")
        yield ws.recv()

    @app.websocket("/strict", subprotocols=["mqtt"], subprotocol_required=True)
    def strict(ws: pyws.WebSocket) -> Any:
        ws.send_text(ws.subprotocol or "-")
        yield ws.recv()

    @app.websocket("/plain")
    def plain(ws: pyws.WebSocket) -> Any:
        ws.send_text(ws.subprotocol or "-")
        yield ws.recv()

    # the listener's list serves routes without their own
    srv = serve(app, subprotocols=["json"])
    with ws_sync.connect(srv.url("/chat"), subprotocols=["chat.v1", "chat.v2", "json"],
                         proxy=None, open_timeout=5) as ws:
        assert ws.subprotocol == "chat.v2"          # the route's list replaces the listener's
        assert ws.recv(timeout=5) == "chat.v2"
    with ws_sync.connect(srv.url("/plain"), subprotocols=["chat.v1", "json"], proxy=None,
                         open_timeout=5) as ws:
        assert ws.subprotocol == "json"
        assert ws.recv(timeout=5) == "json"
    ws2 = websocket.create_connection(srv.url("/strict"), subprotocols=["mqtt"], timeout=5)
    try:
        assert ws2.getsubprotocol() == "mqtt"
        assert ws2.recv() == "mqtt"
    finally:
        ws2.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(srv.url("/strict"), subprotocols=["json"], timeout=5)
    assert info.value.status_code == 400
    assert b"the server speaks mqtt" in (info.value.resp_body or b"")
    # the refused request took no connection slot
    assert srv.call(lambda: len(app.connections)) == 0


def test_app_route_async_handler_websockets_and_aiohttp(run: Callable[..., Any]) -> None:
    app = pyws.App()

    @app.websocket("/ws", subprotocols=["v3", "v2"])
    async def handler(ws: pyws.AsyncWebSocket) -> None:
        await ws.accept()
        await ws.send_text(f"{ws.subprotocol}/{ws.protocol}")
        await ws.receive()

    async def main() -> None:
        async with serving(app) as port:
            url = f"ws://127.0.0.1:{port}/ws"
            async with websockets.connect(url, subprotocols=["v1", "v2", "v3"],  # type: ignore[list-item]
                                          proxy=None) as ws:
                assert ws.subprotocol == "v3"
                assert await asyncio.wait_for(ws.recv(), 5) == "v3/v3"
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(url, protocols=("v1", "v2")) as ws2:
                    assert ws2.protocol == "v2"
                    msg = await ws2.receive(timeout=5)
                    assert msg.data == "v2/v2"
    run(main())


def test_app_connect_client_offer_reaches_a_listener(serve: Callable[..., AppServer]) -> None:
    """pyws's own client against a pyws listener: offers in the client's order, the server's
    order decides, and the client checks the answer in C."""
    app = pyws.App()

    @app.websocket("/ws")
    def echo(ws: pyws.WebSocket) -> Any:
        ws.send_text(ws.subprotocol or "-")
        yield ws.recv()

    srv = serve(app, subprotocols=["b", "a"])
    with pyws.connect(srv.url("/ws"), subprotocols=["a", "b"], timeout=5) as ws:
        assert ws.recv().text == "b"
        assert ws.subprotocol == "b"
