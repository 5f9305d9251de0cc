"""App routing: HTTP routes beside WebSocket routes on one port (params and converters, return
types, Response, methods, 404/405/426, HEAD, keep-alive), the static-files helper (including
path traversal attempts), and upgrades to paths without a WebSocket route."""
from __future__ import annotations

import http.client
import json
import logging
import os
import queue
import select
import socket
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
import websocket

import pyws
from pyws import Request, Response

from _rawws import RawWS, handshake_request
from conftest import AppServer
from test_app import connect, recv_close




def request(port: int, method: str, path: str, body: Optional[bytes] = None,
            headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
    """One request on a fresh connection: (status, lower-cased headers, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or the deadline passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(out) < 1 << 20:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out


class HttpReader:
    """Reads Content-Length framed responses off a keep-alive socket, keeping what follows."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self, deadline: float, what: str) -> None:
        assert time.monotonic() < deadline, f"no response {what} in time"
        chunk = self.sock.recv(65536)
        assert chunk, f"EOF inside the {what}: {self.buf!r}"
        self.buf += chunk

    def response(self, head_only: bool = False) -> Tuple[int, Dict[str, str], bytes]:
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in self.buf:
            self._more(deadline, "head")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (ln.partition(":") for ln in lines[1:])}
        n = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._more(deadline, "body")
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def nothing_more(self, wait: float = 0.1) -> bool:
        """True if no further bytes arrive within ``wait`` seconds."""
        if self.buf:
            return False
        r, _, _ = select.select([self.sock], [], [], wait)
        return not r


# ---------------------------------------------------------------------------------- routes
@pytest.fixture
def api(serve: Callable[..., AppServer]) -> AppServer:
    app = pyws.App()

    @app.route("/")
    def index(req: Request) -> str:
        return "<h1>home</h1>"

    @app.route("/bytes")
    def raw(req: Request) -> bytes:
        return b"\x00\x01raw"

    @app.route("/dict")
    def as_dict(req: Request) -> Dict[str, Any]:
        return {"a": 1, "b": [True, None], "s": "é"}

    @app.route("/list")
    def as_list(req: Request) -> List[int]:
        return [1, 2, 3]

    @app.route("/none")
    def nothing(req: Request) -> None:
        return None

    @app.route("/tuple")
    def created(req: Request) -> Tuple[Dict[str, bool], int]:
        return {"created": True}, 201

    @app.route("/response")
    def response(req: Request) -> Response:
        return Response("teapot body", 418, headers={"X-Custom": "yes"},
                        content_type="text/plain")

    @app.route("/response-json")
    def response_json(req: Request) -> Response:
        return Response.json({"ok": True}, status=202, headers={"X-J": "1"})

    @app.route("/redirect")
    def redirect(req: Request) -> Response:
        return Response.redirect("/elsewhere", 301)

    @app.route("/items/{id:int}", methods=["GET", "POST"])
    def item(req: Request) -> Dict[str, Any]:
        out: Dict[str, Any] = {"id": req.params["id"], "type": type(req.params["id"]).__name__,
                               "method": req.method}
        if req.method == "POST":
            out["body"] = req.json()
        return out

    @app.route("/users/{name}/posts/{post}")
    def post(req: Request) -> Dict[str, Any]:
        return dict(req.params)

    @app.route("/files/{rest:path}")
    def files(req: Request) -> str:
        return "path=" + req.params["rest"]

    @app.get("/echo")
    def echo(req: Request) -> Dict[str, Any]:
        return {"args": req.args, "query": req.query, "ua": req.headers.get("user-agent"),
                "cookies": req.cookies, "ip": req.remote_ip, "path": req.path}

    @app.post("/upload")
    def upload(req: Request) -> Dict[str, Any]:
        return {"len": len(req.body), "text": req.text[:10]}

    @app.route("/put-only", methods=["PUT"])
    def put_only(req: Request) -> str:
        return "put"

    @app.route("/broken")
    def broken(req: Request) -> str:
        raise RuntimeError("route failure")

    @app.route("/bad-type")
    def bad_type(req: Request) -> Any:
        return 3.14

    @app.route("/first")
    def first(req: Request) -> str:
        return "first"

    @app.websocket("/chat")
    def chat(ws: pyws.WebSocket) -> Any:
        msg = yield ws.recv()
        ws.send_text("ws:" + msg.text)

    @app.route("/chat")
    def chat_page(req: Request) -> str:
        return "chat page"

    @app.websocket("/ws/only")
    def ws_only(ws: pyws.WebSocket) -> Any:
        yield ws.recv()

    return serve(app)


def test_return_types(api: AppServer) -> None:
    status, h, body = request(api.port, "GET", "/")
    assert (status, body) == (200, b"<h1>home</h1>")
    assert h["content-type"] == "text/html; charset=utf-8"
    assert h["content-length"] == str(len(body))

    status, h, body = request(api.port, "GET", "/bytes")
    assert (status, body, h["content-type"]) == (200, b"\x00\x01raw", "application/octet-stream")

    status, h, body = request(api.port, "GET", "/dict")
    assert status == 200 and h["content-type"] == "application/json"
    assert json.loads(body) == {"a": 1, "b": [True, None], "s": "é"}

    status, h, body = request(api.port, "GET", "/list")
    assert (status, json.loads(body)) == (200, [1, 2, 3])

    status, h, body = request(api.port, "GET", "/none")
    assert (status, body) == (204, b"")

    status, h, body = request(api.port, "GET", "/tuple")
    assert (status, json.loads(body)) == (201, {"created": True})

    status, h, body = request(api.port, "GET", "/response")
    assert (status, body) == (418, b"teapot body")
    assert h["x-custom"] == "yes" and h["content-type"] == "text/plain"

    status, h, body = request(api.port, "GET", "/response-json")
    assert (status, json.loads(body), h["x-j"]) == (202, {"ok": True}, "1")

    status, h, body = request(api.port, "GET", "/redirect")
    assert (status, h["location"]) == (301, "/elsewhere")


def test_path_params_and_converters(api: AppServer) -> None:
    status, _, body = request(api.port, "GET", "/items/42")
    assert status == 200 and json.loads(body) == {"id": 42, "type": "int", "method": "GET"}
    status, _, body = request(api.port, "GET", "/items/-7")
    assert json.loads(body)["id"] == -7
    assert request(api.port, "GET", "/items/abc")[0] == 404   # {id:int} does not match
    assert request(api.port, "GET", "/items/4/2")[0] == 404   # nor does it span segments
    assert request(api.port, "GET", "/items/")[0] == 404

    status, _, body = request(api.port, "POST", "/items/9", body=b'{"x": [1]}',
                              headers={"Content-Type": "application/json"})
    assert json.loads(body) == {"id": 9, "type": "int", "method": "POST", "body": {"x": [1]}}

    status, _, body = request(api.port, "GET", "/users/ann/posts/p-1")
    assert json.loads(body) == {"name": "ann", "post": "p-1"}
    assert request(api.port, "GET", "/users/ann/posts/")[0] == 404
    assert request(api.port, "GET", "/users/a/b/posts/1")[0] == 404  # {name} is one segment

    assert request(api.port, "GET", "/files/a/b/c.txt")[2] == b"path=a/b/c.txt"
    assert request(api.port, "GET", "/files/x")[2] == b"path=x"
    assert request(api.port, "GET", "/files/")[0] == 404  # {p:path} needs at least one char


def test_request_fields(api: AppServer) -> None:
    status, _, body = request(api.port, "GET", "/echo?a=1&a=2&b=&c=x%20y",
                              headers={"User-Agent": "tester/1", "Cookie": "k=v; z=9"})
    assert status == 200
    got = json.loads(body)
    assert got["args"] == {"a": ["1", "2"], "b": [""], "c": ["x y"]}
    assert got["query"] == "a=1&a=2&b=&c=x%20y"
    assert got["ua"] == "tester/1"
    assert got["cookies"] == {"k": "v", "z": "9"}
    assert got["ip"] == "127.0.0.1"
    assert got["path"] == "/echo"

    payload = "héllo wörld".encode() * 1000
    status, _, body = request(api.port, "POST", "/upload", body=payload)
    assert json.loads(body) == {"len": len(payload), "text": "héllo wörl"}


def test_404_405_and_allow(api: AppServer) -> None:
    status, h, body = request(api.port, "GET", "/nope")
    assert status == 404 and body
    status, h, _ = request(api.port, "DELETE", "/items/1")
    assert status == 405
    assert [m.strip() for m in h["allow"].split(",")][:0] == [] and \
        {m.strip() for m in h["allow"].split(",")} >= {"GET", "POST"}
    assert "DELETE" not in h["allow"]
    status, h, _ = request(api.port, "POST", "/echo")
    assert status == 405 and "GET" in h["allow"] and "POST" not in h["allow"]
    status, h, _ = request(api.port, "GET", "/upload")
    assert status == 405 and h["allow"].strip() == "POST"
    status, h, _ = request(api.port, "GET", "/put-only")
    assert status == 405 and h["allow"].strip() == "PUT"
    assert request(api.port, "PUT", "/put-only")[2] == b"put"
    assert request(api.port, "GET", "/first")[2] == b"first"


def test_route_errors_answer_500_and_serving_goes_on(api: AppServer, caplog: Any) -> None:
    with caplog.at_level(logging.ERROR, logger="pyws"):
        status, _, body = request(api.port, "GET", "/broken")
        assert status == 500
        status, _, _ = request(api.port, "GET", "/bad-type")
        assert status == 500
    assert "route failure" in caplog.text and "Traceback" in caplog.text
    assert "float" in caplog.text
    assert request(api.port, "GET", "/")[0] == 200


def test_head(api: AppServer) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
        rd = HttpReader(s)
        # HEAD on a GET route: the GET headers (with its Content-Length), no body
        s.sendall(b"HEAD /dict HTTP/1.1\r\nHost: x\r\n\r\n")
        status, h, body = rd.response(head_only=True)
        assert status == 200 and rd.nothing_more()
        assert h["content-type"] == "application/json"
        assert int(h["content-length"]) == len(json.dumps({"a": 1, "b": [True, None],
                                                           "s": "é"}).encode())
        # HEAD of a missing path: 404, still no body, the connection stays usable
        s.sendall(b"HEAD /missing HTTP/1.1\r\nHost: x\r\n\r\n")
        status, h, body = rd.response(head_only=True)
        assert status == 404 and rd.nothing_more()
        assert int(h["content-length"]) > 0  # what a GET would have carried
        # HEAD on a POST-only route: 405; on a WebSocket path: 426
        s.sendall(b"HEAD /upload HTTP/1.1\r\nHost: x\r\n\r\n")
        status, h, body = rd.response(head_only=True)
        assert status == 405 and h["allow"] == "POST" and rd.nothing_more()
        s.sendall(b"HEAD /ws/only HTTP/1.1\r\nHost: x\r\n\r\n")
        status, h, body = rd.response(head_only=True)
        assert status == 426 and rd.nothing_more()
        # the next response on this keep-alive connection is parsed right
        s.sendall(b"GET /list HTTP/1.1\r\nHost: x\r\n\r\n")
        status, h, body = rd.response()
        assert (status, body) == (200, b"[1, 2, 3]")
    status, h, body = request(api.port, "HEAD", "/")
    assert status == 200 and body == b"" and h["content-length"] == str(len(b"<h1>home</h1>"))


def test_keep_alive_and_connection_close(api: AppServer) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
        rd = HttpReader(s)
        for i in range(5):
            s.sendall(f"GET /items/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, _, body = rd.response()
            assert status == 200 and json.loads(body)["id"] == i
        # pipelined: answered in order
        s.sendall(b"GET /list HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        assert rd.response()[:3:2] == (200, b"[1, 2, 3]")
        assert rd.response()[0] == 404
        assert json.loads(rd.response()[2]) == {"len": 3, "text": "abc"}
        assert rd.nothing_more()
    out = raw_exchange(api.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"<h1>home</h1>")
    out = raw_exchange(api.port, b"GET /nope HTTP/1.0\r\n\r\n")  # 1.0: closed after it
    assert out.startswith(b"HTTP/1.1 404") and out.endswith(b"not found\n")


def test_websocket_and_http_on_the_same_path(api: AppServer) -> None:
    assert request(api.port, "GET", "/chat")[2] == b"chat page"
    c = connect(api, "/chat")
    try:
        c.send("hi")
        assert c.recv() == "ws:hi"
    finally:
        c.close()


def test_plain_get_to_a_websocket_path_is_426(api: AppServer) -> None:
    status, h, body = request(api.port, "GET", "/ws/only")
    assert status == 426
    assert h["upgrade"].lower() == "websocket"
    assert "upgrade" in h["connection"].lower()
    # an upgrade attempt with a version we do not speak is not a valid upgrade either
    with RawWS(api.port) as r:
        r.send(handshake_request("/ws/only", version="8"))
        status, h, _ = r.read_http_head()
        assert status == 426


def test_upgrade_to_an_http_only_path(api: AppServer) -> None:
    # no WebSocket route here: accepted, then closed with 1001 (the default)
    c = connect(api, "/dict")
    try:
        assert recv_close(c) == (1001, "no WebSocket route for this path")
    finally:
        c.close()


# ---------------------------------------------------------------------------------- unknown WS
def test_unknown_websocket_path_accept_then_1001(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()

    @app.websocket("/ws/{room}")
    def room(ws: pyws.WebSocket) -> Any:
        yield ws.recv()

    srv = serve(app)
    with RawWS(srv.port) as r:
        r.handshake("/nowhere")
        code, reason, before = r.recv_close()
        assert (code, reason, before) == (1001, b"no WebSocket route for this path", [])
    c = connect(srv, "/ws/a/b")  # one segment too many: no route
    try:
        assert recv_close(c)[0] == 1001
    finally:
        c.close()
    # plain HTTP to an unknown path is a 404 either way
    assert request(srv.port, "GET", "/nowhere")[0] == 404


def test_unknown_websocket_path_404_setting(serve: Callable[..., AppServer]) -> None:
    app = pyws.App(unknown_websocket="404")

    @app.websocket("/ws")
    def ws_route(ws: pyws.WebSocket) -> Any:
        msg = yield ws.recv()
        ws.send(msg)

    srv = serve(app)
    with pytest.raises(websocket.WebSocketBadStatusException) as ei:
        connect(srv, "/nowhere")
    assert ei.value.status_code == 404
    with RawWS(srv.port) as r:
        r.send(handshake_request("/nowhere"))
        status, _, _ = r.read_http_head()
        assert status == 404
        assert r.is_eof()
    c = connect(srv, "/ws")  # the known route still works
    try:
        c.send("ok")
        assert c.recv() == "ok"
    finally:
        c.close()


# ---------------------------------------------------------------------------------- static
@pytest.fixture
def static_site(tmp_path: Any, serve: Callable[..., AppServer]) -> AppServer:
    web = tmp_path / "web"
    (web / "sub").mkdir(parents=True)
    (web / "empty").mkdir()
    (web / "index.html").write_text("<p>index</p>")
    (web / "style.css").write_text("body{}")
    (web / "app.js").write_text("let x = 1;")
    (web / "data.bin").write_bytes(bytes(range(256)))
    (web / "sub" / "index.html").write_text("<p>sub index</p>")
    (web / "sub" / "deep.txt").write_text("deep")
    (web / "with space.txt").write_text("spaced")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    (tmp_path / "webby").mkdir()  # a sibling whose name starts like the root
    (tmp_path / "webby" / "x.txt").write_text("SIBLING")
    os.symlink(str(tmp_path / "secret.txt"), str(web / "link-out.txt"))
    app = pyws.App()
    app.static("/static", str(web))

    @app.route("/")
    def home(req: Request) -> str:
        return "home"

    return serve(app)


def test_static_files(static_site: AppServer) -> None:
    port = static_site.port
    for path in ("/static", "/static/", "/static/index.html"):
        status, h, body = request(port, "GET", path)
        assert (status, body) == (200, b"<p>index</p>"), path
        assert h["content-type"] == "text/html; charset=utf-8"
    status, h, body = request(port, "GET", "/static/style.css")
    assert (status, body, h["content-type"]) == (200, b"body{}", "text/css; charset=utf-8")
    status, h, body = request(port, "GET", "/static/app.js")
    assert status == 200 and h["content-type"].split(";")[0] in ("application/javascript",
                                                                 "text/javascript")
    status, h, body = request(port, "GET", "/static/data.bin")
    assert (status, body, h["content-type"]) == (200, bytes(range(256)),
                                                 "application/octet-stream")
    assert request(port, "GET", "/static/sub/")[2] == b"<p>sub index</p>"
    assert request(port, "GET", "/static/sub")[2] == b"<p>sub index</p>"
    assert request(port, "GET", "/static/sub/deep.txt")[2] == b"deep"
    assert request(port, "GET", "/static/missing.txt")[0] == 404
    assert request(port, "GET", "/static/empty/")[0] == 404  # a directory without index
    assert request(port, "GET", "/")[2] == b"home"
    status, h, body = request(port, "HEAD", "/static/style.css")
    assert (status, body, h["content-length"]) == (200, b"", "6")
    assert request(port, "POST", "/static/style.css")[0] == 405


def test_static_percent_encoded_names(static_site: AppServer) -> None:
    status, _, body = request(static_site.port, "GET", "/static/with%20space.txt")
    assert (status, body) == (200, b"spaced")


@pytest.mark.parametrize("path", [
    "/static/../secret.txt",
    "/static/../../secret.txt",
    "/static/sub/../../secret.txt",
    "/static/..%2fsecret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/..%5csecret.txt",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/../webby/x.txt",
    "/static/link-out.txt",
    "/static/sub/%00.txt",
])
def test_static_path_traversal_is_404(static_site: AppServer, path: str) -> None:
    # raw bytes: no client-side normalisation of the path
    out = raw_exchange(static_site.port,
                       f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert out.split(b"\r\n", 1)[0] in (b"HTTP/1.1 404 Not Found", b"HTTP/1.1 400 Bad Request"), \
        out[:200]
    assert b"TOP SECRET" not in out and b"SIBLING" not in out and b"root:" not in out


def test_static_at_the_root_beside_other_routes(tmp_path: Any,
                                                serve: Callable[..., AppServer]) -> None:
    (tmp_path / "index.html").write_text("root index")
    (tmp_path / "a.txt").write_text("A")
    app = pyws.App()

    @app.route("/api/status")
    def status(req: Request) -> Dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ws")
    def ws_echo(ws: pyws.WebSocket) -> Any:
        msg = yield ws.recv()
        ws.send(msg)

    app.static("/", str(tmp_path))  # registered last: the routes above win
    srv = serve(app)
    assert request(srv.port, "GET", "/")[2] == b"root index"
    assert request(srv.port, "GET", "/a.txt")[2] == b"A"
    assert json.loads(request(srv.port, "GET", "/api/status")[2]) == {"status": "ok"}
    assert request(srv.port, "GET", "/b.txt")[0] == 404
    c = connect(srv, "/ws")
    try:
        c.send("x")
        assert c.recv() == "x"
    finally:
        c.close()



def test_path_params_are_percent_decoded(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()

    @app.route("/users/{name}")
    def user(req: Request) -> Any:
        return {"name": req.params["name"]}

    srv = serve(app)
    status, _h, body = request(srv.port, "GET", "/users/Jos%C3%A9%2Fx")
    assert status == 200
    assert json.loads(body) == {"name": "José/x"}


def test_405_allow_lists_head_for_get_routes(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()

    @app.route("/thing")
    def thing(req: Request) -> str:
        return "ok"

    srv = serve(app)
    status, headers, _ = request(srv.port, "DELETE", "/thing")
    assert status == 405
    assert {m.strip() for m in headers["allow"].split(",")} == {"GET", "HEAD"}
