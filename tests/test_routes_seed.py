"""Routes as the seeds write them: ``<name>``, ``<int:name>``, ``<path:name>`` beside ``{name}``
and ``{name:int}``; path parameters passed by keyword when the handler names them, the request
when it asks for it, for every driver (generator, blocking thread, async, and HTTP routes); and
every pattern or signature that cannot work refused when it is registered, with a message that
says what to write instead. Real clients over real sockets."""
from __future__ import annotations

import asyncio
import http.client
import json
import uuid
from typing import Any, Callable, Dict, Tuple

import pytest
import websocket

import pyws
from pyws import Request
from pyws.routing import Route

from conftest import AppServer, serving
from test_app import recv_close


def ws_get(srv: AppServer, path: str) -> Tuple[str, int]:
    """Connect to ``path``, read one message and the close code."""
    c = websocket.create_connection(srv.url(path), timeout=5)
    try:
        text = c.recv()
        return text, recv_close(c)[0]
    finally:
        c.close()


def http_get(port: int, path: str) -> Tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


# ------------------------------------------------------------------------------ matching
@pytest.mark.parametrize("pattern,path,params", [
    ("/ws/upload/<upload_id>", "/ws/upload/u-17", {"upload_id": "u-17"}),
    ("/ws/upload/{upload_id}", "/ws/upload/u-17", {"upload_id": "u-17"}),
    ("/items/<int:id>", "/items/-42", {"id": -42}),
    ("/items/{id:int}", "/items/42", {"id": 42}),
    ("/files/<path:rest>", "/files/a/b/c.txt", {"rest": "a/b/c.txt"}),
    ("/files/{rest:path}", "/files/a/b", {"rest": "a/b"}),
    ("/p/<float:x>", "/p/2.5", {"x": 2.5}),
    ("/p/<string:s>/<str:t>", "/p/a/b", {"s": "a", "t": "b"}),
    ("/u/<uuid:u>", "/u/12345678-1234-5678-1234-567812345678",
     {"u": uuid.UUID("12345678-1234-5678-1234-567812345678")}),
    ("/mix/{room}/<int:n>", "/mix/lobby/3", {"room": "lobby", "n": 3}),
    ("/enc/<name>", "/enc/a%2Fb", {"name": "a/b"}),      # an encoded / stays in one segment
])
def test_each_syntax_matches(pattern: str, path: str, params: Dict[str, Any]) -> None:
    assert Route(pattern, lambda ws: None).match(path) == params


@pytest.mark.parametrize("pattern,path", [
    ("/items/<int:id>", "/items/abc"),
    ("/items/<int:id>", "/items/4/2"),
    ("/ws/upload/<upload_id>", "/ws/upload/a/b"),      # <name> is one segment
    ("/ws/upload/<upload_id>", "/ws/upload/"),
    ("/files/<path:rest>", "/files/"),
    ("/p/<float:x>", "/p/x1"),
    ("/u/<uuid:u>", "/u/not-a-uuid"),
])
def test_converters_refuse(pattern: str, path: str) -> None:
    assert Route(pattern, lambda ws: None).match(path) is None


# ------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("pattern,needle,advice", [
    ("/items/<int:>", "has no parameter name", "<int:name>"),
    ("/items/<:id>", "empty converter", "<id> or <int:id>"),
    ("/items/{id:}", "empty converter", "{id} or {id:int}"),
    ("/items/<>", "has no parameter name", "<str:name>"),
    ("/items/{}", "has no parameter name", "{name:str}"),
    ("/items/<number:id>", "unknown converter 'number'", "str, int, float, path, uuid"),
    ("/items/{id:integer}", "unknown converter 'integer'", "str, int, float, path, uuid"),
    ("/a/<x>/b/{x}", "'x' appears twice", "its own name"),
    ("/a/<x>/b/<int:x>", "'x' appears twice", "its own name"),
    ("/items/<id", "no matching '>'", "<int:name>"),
    ("/items/{id", "no matching '}'", "{name:int}"),
    ("/items/id>", "closes nothing", "<name>"),
    ("/items/<9lives>", "not a Python identifier", "not starting with a digit"),
    ("/items/<my-id>", "not a Python identifier", "letters, digits and _"),
    ("items/<id>", "must start with '/'", "'/items/<id>'"),
])
def test_bad_patterns_refused_at_registration(pattern: str, needle: str, advice: str) -> None:
    app = pyws.App()
    for register in (app.websocket, app.route):
        with pytest.raises(ValueError) as ei:
            @register(pattern)
            def handler(ws: Any) -> None:
                pass
        assert needle in str(ei.value) and advice in str(ei.value), str(ei.value)
    assert app._ws_routes == [] and app._http_routes == []
    app.close()


def test_bad_signatures_refused_at_registration() -> None:
    app = pyws.App()
    with pytest.raises(TypeError) as ei:
        @app.websocket("/ws/upload/<upload_id>")
        def typo(ws: Any, uploadid: str) -> None:
            pass
    msg = str(ei.value)
    assert "parameter 'uploadid' is neither a path parameter of the route (it has: " \
        "upload_id) nor the request" in msg
    assert "add <uploadid>" in msg and "call it 'request'" in msg and "default" in msg

    with pytest.raises(TypeError, match=r"no positional parameter for the ws: write "
                                        r"def nothing\(ws, room\)"):
        @app.websocket("/rooms/<room>")
        def nothing() -> None:
            pass

    with pytest.raises(TypeError, match="asks for the request twice"):
        @app.websocket("/twice")
        def twice(ws: Any, request: Any, req: Any) -> None:
            pass

    with pytest.raises(TypeError, match="positional-only"):
        @app.websocket("/po/<room>")
        def posonly(ws: Any, room: str, /) -> None:
            pass

    with pytest.raises(TypeError, match="async generator"):
        @app.websocket("/agen")
        async def agen(ws: Any) -> Any:
            yield None

    with pytest.raises(TypeError, match=r"parameter 'extra' is neither"):
        @app.route("/items/<int:id>")
        def view(request: Any, id: int, extra: str) -> None:
            pass
    assert app._ws_routes == [] and app._http_routes == []
    app.close()


def test_duplicate_routes_refused() -> None:
    app = pyws.App()

    @app.websocket("/rooms/{room}")
    def first(ws: Any) -> None:
        pass

    with pytest.raises(ValueError, match=r"already has the handler 'first' and matches the "
                                         r"same paths, so this one would never run"):
        @app.websocket("/rooms/<name>")   # the same paths, spelled differently
        def second(ws: Any) -> None:
            pass

    @app.websocket("/rooms/<int:n>")      # a different converter: other paths, allowed
    def third(ws: Any) -> None:
        pass

    @app.get("/page")
    def page(request: Any) -> str:
        return "get"

    @app.post("/page")                    # other methods on the same path are fine
    def page_post(request: Any) -> str:
        return "post"

    with pytest.raises(ValueError, match=r"'/page' \(GET\) already has the handler 'page'"):
        @app.route("/page", methods=["GET", "PUT"])
        def page_again(request: Any) -> str:
            return "again"
    assert [r.pattern for r in app._ws_routes] == ["/rooms/{room}", "/rooms/<int:n>"]
    app.close()


def test_allowed_signatures() -> None:
    """Defaults, **kwargs, a request annotated pyws.Request under any name, and parameters
    left to ws.params are all accepted."""
    app = pyws.App()

    @app.websocket("/a/<x>/<y>")
    def defaults(ws: Any, x: str, other: int = 3, **rest: Any) -> None:
        pass

    @app.websocket("/b/<x>")
    def annotated(ws: Any, r: Request) -> None:
        pass

    @app.websocket("/c/<x>/<y>")
    def params_only(ws: Any) -> None:      # ws.params as before
        pass

    assert len(app._ws_routes) == 3
    app.close()


# ------------------------------------------------------------------------------ every driver
def kwargs_app() -> pyws.App:
    app = pyws.App()

    @app.websocket("/ws/upload/<upload_id>")          # Gobstopper's route and signature
    def handler(ws: Any, upload_id: str) -> None:      # blocking (thread) driver
        ws.send_text(f"thread upload={upload_id}")

    @app.websocket("/gen/<int:n>/<path:rest>")
    def gen(ws: Any, rest: str, n: int, request: Any) -> Any:   # generator driver
        ws.send_text(json.dumps([n, rest, request.path, request.params["n"]]))
        yield ws.sleep(0)

    @app.websocket("/rooms/{room_id}")                  # Cello's (ws, request)
    def room(ws: Any, request: Any) -> None:
        ws.send_text(f"Joined room: {request.params['room_id']}")

    @app.websocket("/ann/<x>")
    def ann(ws: Any, x: str, r: Request, **more: Any) -> None:
        ws.send_text(f"{x} {type(r).__name__} {r.params} {more}")

    @app.websocket("/rest/<x>/<y>")
    def rest(ws: Any, x: str, **more: Any) -> None:
        ws.send_text(f"{x} {more}")

    @app.route("/items/<int:id>")                        # HTTP routes get them too
    def item(request: Any, id: int) -> Dict[str, Any]:
        return {"id": id, "type": type(id).__name__, "params": request.params}

    return app


def test_kwargs_and_request_reach_thread_generator_and_http(
        serve: Callable[..., AppServer]) -> None:
    srv = serve(kwargs_app())
    assert ws_get(srv, "/ws/upload/u-17") == ("thread upload=u-17", 1000)
    text, code = ws_get(srv, "/gen/7/a/b%20c")
    assert json.loads(text) == [7, "a/b c", "/gen/7/a/b%20c", 7] and code == 1000
    assert ws_get(srv, "/rooms/lobby") == ("Joined room: lobby", 1000)
    assert ws_get(srv, "/ann/1") == ("1 Request {'x': '1'} {}", 1000)
    assert ws_get(srv, "/rest/1/2") == ("1 {'y': '2'}", 1000)
    status, body = http_get(srv.port, "/items/5")
    assert status == 200 and json.loads(body) == {"id": 5, "type": "int",
                                                  "params": {"id": 5}}
    assert http_get(srv.port, "/items/x")[0] == 404


def test_kwargs_reach_async_handlers(run: Callable[..., Any]) -> None:
    app = pyws.App()

    @app.websocket("/ws/upload-progress/<upload_id>")   # Gobstopper's async signature
    async def upload_progress(websocket: Any, upload_id: str) -> None:
        await websocket.send_text(json.dumps({"upload_id": upload_id}))

    @app.websocket("/rooms/<int:n>")
    async def room(ws: Any, n: int, request: Any) -> None:
        await ws.send_text(f"{n + 1} {request.path}")

    async def main() -> Tuple[Any, Any]:
        async with serving(app) as port:
            async with pyws.aconnect(f"ws://127.0.0.1:{port}/ws/upload-progress/u9") as ws:
                a = (await ws.recv(timeout=5)).data
            async with pyws.aconnect(f"ws://127.0.0.1:{port}/rooms/41") as ws:
                b = (await ws.recv(timeout=5)).data
            return a, b

    a, b = run(main())
    assert json.loads(a) == {"upload_id": "u9"} and b == "42 /rooms/41"


def test_gobstopper_upload_route_was_1001_now_matches(serve: Callable[..., AppServer]) -> None:
    """The issue's case: `/ws/upload/<upload_id>` never matched (the client got 1001) and
    `def handler(ws, upload_id)` failed at connect time (1011)."""
    app = pyws.App()
    seen = []

    @app.websocket("/ws/upload/<upload_id>")
    def handler(ws: Any, upload_id: str) -> None:
        seen.append(upload_id)
        while True:
            msg = ws.recv()
            if msg is None:
                return
            ws.send_text(f"{upload_id}: {msg.text}")

    srv = serve(app)
    c = websocket.create_connection(srv.url("/ws/upload/abc-1"), timeout=5)
    try:
        c.send("50%")
        assert c.recv() == "abc-1: 50%"
    finally:
        c.close()
    assert seen == ["abc-1"]
    c = websocket.create_connection(srv.url("/ws/upload/abc/extra"), timeout=5)
    try:   # no route for that: accepted then closed 1001, as for any unknown path
        assert recv_close(c)[0] == 1001
    finally:
        c.close()


def test_async_route_with_kwargs_in_asyncio(run: Callable[..., Any]) -> None:
    """An async HTTP route with a path parameter keyword."""
    app = pyws.App()

    @app.get("/n/<int:n>")
    async def double(request: Any, n: int) -> Dict[str, int]:
        await asyncio.sleep(0)
        return {"n": n * 2}

    async def main() -> Tuple[int, bytes]:
        async with serving(app) as port:
            return await asyncio.to_thread(http_get, port, "/n/21")

    status, body = run(main())
    assert status == 200 and json.loads(body) == {"n": 42}
