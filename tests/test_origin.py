"""Origin checks (``allowed_origins=[...]`` on ``Manager.listen``, ``App.listen`` and
``@app.websocket``): a request whose Origin is not allowed gets ``403 Forbidden`` before any
upgrade and its handler never runs; a request without Origin passes unless
``allow_no_origin=False``. Raw requests for every pattern, websocket-client's and websockets'
``origin=``, and headless Chromium: a page from an allowed origin connects, the same page from
another origin (another port) cannot."""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import websocket
import websockets.sync.client as ws_sync
from websockets.exceptions import InvalidStatus

import pyws
from _rawws import RawWS, handshake_request
from conftest import AppServer, ServerThread

ALLOWED = ["https://app.example.com", "https://*.example.org", "http://localhost:8080",
           "*.example.net", "null"]


def _handler(seen: List[Any]) -> Callable[[pyws.Connection, int, Any], None]:
    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            seen.append(("http", data.header("origin")))
            conn.ws_upgrade(data)
        elif ev == pyws.EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)
        elif ev == pyws.EV_ERROR:
            seen.append(("error", data, conn.error))
    return handler


def _upgrade(port: int, extra: str) -> Tuple[int, Dict[str, str], bytes]:
    """(status, headers, body) of one upgrade request with the ``extra`` header lines."""
    with RawWS(port) as raw:
        raw.send(handshake_request("/ws", extra=extra))
        status, headers, _ = raw.read_http_head()
        body = b"" if status == 101 else raw.read_until_eof()
    return status, headers, body


@pytest.mark.parametrize("origin, allowed", [
    ("https://app.example.com", True),
    ("HTTPS://App.Example.COM", True),           # scheme and host compare in lower case
    ("https://app.example.com:443", True),       # the default port, written out
    ("https://app.example.com:8443", False),     # another port is another origin
    ("http://app.example.com", False),           # another scheme too
    ("https://evil.example.com", False),
    ("https://app.example.com.evil.io", False),
    ("https://a.example.org", True),             # https://*.example.org: any depth
    ("https://a.b.example.org", True),
    ("https://example.org", False),              # ... but not the apex itself
    ("https://badexample.org", False),
    ("http://a.example.org", False),
    ("http://localhost:8080", True),
    ("http://localhost", False),
    ("http://x.example.net:1234", True),         # *.example.net: any scheme, any port
    ("wss://y.x.example.net", True),
    ("null", True),
    ("https://app.example.com/", False),         # an Origin has no path
    ("garbage", False),
    (None, True),                                # no Origin: not a browser; allowed
])
def test_listener_origin_patterns(server_factory: Callable[..., ServerThread],
                                  origin: Optional[str], allowed: bool) -> None:
    seen: List[Any] = []
    srv = server_factory(_handler(seen), listen_options={"allowed_origins": ALLOWED})
    status, headers, body = _upgrade(srv.port, f"Origin: {origin}\r\n" if origin else "")
    if allowed:
        assert status == 101
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [("http", origin)]
        return
    assert status == 403
    assert "sec-websocket-accept" not in headers
    assert b"is not allowed" in body
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    # the handler never saw the request: EV_ERROR with the text sent, and a HandshakeError
    (kind, text, err), = seen
    assert kind == "error"
    assert text.startswith("403 Forbidden: origin ")
    assert isinstance(err, pyws.HandshakeError) and err.status == 403


def test_listener_two_origins_and_required_origin(
        server_factory: Callable[..., ServerThread]) -> None:
    seen: List[Any] = []
    srv = server_factory(_handler(seen), listen_options={
        "allowed_origins": ["https://app.example.com"], "allow_no_origin": False})
    status, _, body = _upgrade(srv.port, "")
    assert status == 403 and b"an Origin header is required" in body
    status, _, body = _upgrade(srv.port, "Origin: https://app.example.com\r\n"
                                         "Origin: https://app.example.com\r\n")
    assert status == 403 and b"more than one Origin header" in body
    assert _upgrade(srv.port, "Origin: https://app.example.com\r\n")[0] == 101
    # None in the list (websockets' spelling) allows a request without Origin again
    srv2 = server_factory(_handler([]), listen_options={
        "allowed_origins": ["https://app.example.com", None], "allow_no_origin": False})
    assert _upgrade(srv2.port, "")[0] == 101
    assert _upgrade(srv2.port, "Origin: https://other.example.com\r\n")[0] == 403
    # "*" allows any Origin
    srv3 = server_factory(_handler([]), listen_options={"allowed_origins": ["*"]})
    assert _upgrade(srv3.port, "Origin: https://anything.test\r\n")[0] == 101


def test_plain_http_is_not_checked(server_factory: Callable[..., ServerThread]) -> None:
    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            conn.reply(200, "page")
    srv = server_factory(handler, listen_options={"allowed_origins": ["https://a.test"]})
    with RawWS(srv.port) as raw:
        raw.send(b"GET / HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.test\r\n\r\n")
        status, _, _ = raw.read_http_head()
    assert status == 200


def test_websocket_client_origin(server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(_handler([]), listen_options={
        "allowed_origins": ["https://app.example.com"]})
    ws = websocket.create_connection(srv.url + "/ws", origin="https://app.example.com",
                                     timeout=5)
    try:
        ws.send("hi")
        assert ws.recv() == "hi"
    finally:
        ws.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(srv.url + "/ws", origin="https://evil.example.com",
                                    timeout=5)
    assert info.value.status_code == 403
    # websocket-client sends "Origin: http://HOST" unless told: suppress_origin leaves it out
    ws = websocket.create_connection(srv.url + "/ws", suppress_origin=True, timeout=5)
    ws.close()


def test_app_route_origins(serve: Callable[..., AppServer]) -> None:
    app = pyws.App()
    ran: List[str] = []

    @app.websocket("/ws", allowed_origins=["https://app.example.com"])
    def guarded(ws: pyws.WebSocket) -> Any:
        ran.append(ws.request.headers.get("origin", ""))
        msg = yield ws.recv()
        if msg is not None:
            ws.send(msg)

    @app.websocket("/open")
    def open_(ws: pyws.WebSocket) -> Any:
        msg = yield ws.recv()
        if msg is not None:
            ws.send(msg)

    # the listener's list applies to every route; a route's own list must pass too
    srv = serve(app, allowed_origins=["https://app.example.com", "https://other.example.com"])
    with ws_sync.connect(srv.url("/ws"), origin="https://app.example.com",  # type: ignore[arg-type]
                         proxy=None, open_timeout=5) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
    with pytest.raises(InvalidStatus) as info:   # allowed by the listener, not by the route
        ws_sync.connect(srv.url("/ws"), origin="https://other.example.com",  # type: ignore[arg-type]
                        proxy=None, open_timeout=5)
    assert info.value.response.status_code == 403
    assert b"not allowed" in info.value.response.body
    with ws_sync.connect(srv.url("/open"), origin="https://other.example.com",  # type: ignore[arg-type]
                         proxy=None, open_timeout=5) as ws:
        ws.send("ok")
        assert ws.recv(timeout=5) == "ok"
    with pytest.raises(InvalidStatus) as info:   # refused by the listener
        ws_sync.connect(srv.url("/open"), origin="https://evil.test",  # type: ignore[arg-type]
                        proxy=None, open_timeout=5)
    assert info.value.response.status_code == 403
    assert ran == ["https://app.example.com"]
    assert srv.call(lambda: len(app.connections)) == 0


def test_bad_entries_say_what_to_write() -> None:
    with pyws.Manager() as mgr:
        for bad, match in [("https://app.example.com/", "no path"),
                           ("https://a.*.example.com", "may only start the host"),
                           ("https://app.example.com:99999", "bad host or port"),
                           ("ht tp://x", "bad scheme")]:
            with pytest.raises(ValueError, match=match):
                mgr.listen("http://127.0.0.1:0", allowed_origins=[bad])
        with pytest.raises(TypeError, match=r"allowed_origins=\['https://a.test'\]"):
            mgr.listen("http://127.0.0.1:0", allowed_origins="https://a.test")
        with pytest.raises(ValueError, match="would refuse every browser"):
            mgr.listen("http://127.0.0.1:0", allowed_origins=[])
        with pytest.raises(ValueError, match="allow_no_origin=False goes with"):
            mgr.listen("http://127.0.0.1:0", allow_no_origin=False)
        assert mgr.listeners == []


# ------------------------------------------------------------------ a real browser

PAGE = """<!doctype html><html><body><script>
window.result = new Promise(resolve => {
  const ws = new WebSocket("ws://127.0.0.1:%d/ws");
  const out = {opened: false, echo: null, code: null};
  ws.onopen = () => { out.opened = true; ws.send("from " + location.origin); };
  ws.onmessage = ev => { out.echo = ev.data; ws.close(1000); };
  ws.onclose = ev => { out.code = ev.code; resolve(out); };
});
</script></body></html>"""


@pytest.mark.timeout(60)
def test_chromium_page_from_allowed_origin_connects_other_origin_refused(
        serve: Callable[..., AppServer], tmp_path: Any) -> None:
    from test_browser import Chromium, find_chromium
    exe = find_chromium()
    # the WebSocket server, also serving the page (its own origin); registered after listen()
    # so that the allowed origin can name the port
    app = pyws.App()
    srv = serve(app)
    own = f"http://127.0.0.1:{srv.port}"

    @app.websocket("/ws", allowed_origins=[own])
    def echo(ws: pyws.WebSocket) -> Any:
        msg = yield ws.recv()
        if msg is not None:
            ws.send(msg)

    @app.get("/")
    def page(request: pyws.Request) -> pyws.Response:
        return pyws.Response(PAGE % srv.port, content_type="text/html")

    # the same page from another origin: another port on the same host
    other_app = pyws.App()

    @other_app.get("/")
    def other_page(request: pyws.Request) -> pyws.Response:
        return pyws.Response(PAGE % srv.port, content_type="text/html")

    other = serve(other_app)
    browser = Chromium(exe, str(tmp_path / "profile"), str(tmp_path / "chromium.log"))
    results: Dict[str, Any] = {}
    try:
        for name, url in (("own", own + "/"), ("other", f"http://127.0.0.1:{other.port}/")):
            target = browser.call("Target.createTarget", {"url": "about:blank"}, timeout=30)
            session = browser.call("Target.attachToTarget",
                                   {"targetId": target["targetId"], "flatten": True})["sessionId"]
            browser.call("Network.enable", session=session)
            browser.call("Page.enable", session=session)
            nav = browser.call("Page.navigate", {"url": url}, session=session)
            assert not nav.get("errorText"), nav
            browser.wait_event("Page.loadEventFired", lambda e: e.get("sessionId") == session,
                               timeout=15)
            res = browser.call("Runtime.evaluate", {
                "expression": "window.result", "awaitPromise": True, "returnByValue": True,
                "timeout": 15000}, session=session, timeout=20)
            assert "exceptionDetails" not in res, res
            results[name] = res["result"]["value"]
        sent = [e["params"]["request"]["headers"] for e in browser.events
                if e.get("method") == "Network.webSocketWillSendHandshakeRequest"]
    finally:
        browser.close()
    assert results["own"] == {"opened": True, "echo": f"from {own}", "code": 1000}, results
    other_origin = f"http://127.0.0.1:{other.port}"
    # refused before the upgrade: the browser never opened it (1006, no message)
    assert results["other"] == {"opened": False, "echo": None, "code": 1006}, results
    origins = [next(v for k, v in h.items() if k.lower() == "origin") for h in sent]
    assert origins == [own, other_origin], json.dumps(sent)
