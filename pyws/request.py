"""Request and Response objects of the App's HTTP routes (and of ``ws.request``)."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Union

from .message import Headers, HttpMessage


class Request:
    """An HTTP request as a route (or a WebSocket handler, as ``ws.request``) sees it.

    ``method``, ``path`` (as sent, without the query), ``query`` (raw string), ``args``
    (parsed query), ``headers`` (case-insensitive), ``cookies``, ``body`` (bytes), ``text``,
    ``json()``, ``remote_addr`` (``"ip:port"``), ``remote_ip``, ``params`` (path parameters of
    the matched route).
    """

    __slots__ = ("message", "params", "remote_addr")

    def __init__(self, message: HttpMessage, params: Dict[str, Any], remote_addr: str) -> None:
        self.message = message
        self.params = params
        self.remote_addr = remote_addr

    @property
    def method(self) -> str:
        """The request method (``"GET"``)."""
        return self.message.method

    @property
    def path(self) -> str:
        """The request path as sent, without the query string."""
        return self.message.uri

    @property
    def query(self) -> str:
        """The raw query string (without ``?``)."""
        return self.message.query

    @property
    def args(self) -> Dict[str, List[str]]:
        """The query string parsed: ``{name: [values]}``."""
        return self.message.args

    @property
    def headers(self) -> Headers:
        """The headers, case-insensitive."""
        return self.message.headers

    @property
    def cookies(self) -> Dict[str, str]:
        """Cookies sent with the request."""
        return self.message.cookies

    @property
    def body(self) -> bytes:
        """The request body."""
        return self.message.body

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.message.text

    def json(self) -> Any:
        """The body parsed as JSON."""
        return self.message.json()

    @property
    def remote_ip(self) -> str:
        """The client's IP address, without the port."""
        host = self.remote_addr.rsplit(":", 1)[0]
        return host[1:-1] if host.startswith("[") else host

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.message.target} from {self.remote_addr}>"


class Response:
    """What a route may return when bytes, str or a dict is not enough.

    ``Response(body, status=200, headers=None, content_type=None)``; ``Response.json(obj)``
    and ``Response.redirect(url)`` build the common ones. ``text=`` (aiohttp's spelling) is a
    str body: ``text/plain`` unless ``content_type`` says otherwise, with ``charset=utf-8``
    added to a ``text/*`` type that names none.
    """

    __slots__ = ("body", "status", "headers")

    def __init__(self, body: Union[bytes, str] = b"", status: int = 200,
                 headers: Optional[Mapping[str, str]] = None,
                 content_type: Optional[str] = None, *, text: Optional[str] = None) -> None:
        self.status = int(status)
        self.headers: Dict[str, str] = dict(headers or {})
        if text is not None:
            if body:
                raise ValueError("Response(): give body or text=, not both")
            self.body = text.encode("utf-8")
            content_type = content_type or "text/plain"
            if content_type.startswith("text/") and "charset" not in content_type:
                content_type += "; charset=utf-8"
        elif isinstance(body, str):
            self.body = body.encode("utf-8")
            content_type = content_type or "text/html; charset=utf-8"
        else:
            self.body = bytes(body)
        if content_type:
            self.headers["Content-Type"] = content_type

    @classmethod
    def json(cls, obj: Any, status: int = 200,
             headers: Optional[Mapping[str, str]] = None) -> "Response":
        """A JSON response."""
        return cls(json.dumps(obj).encode("utf-8"), status, headers, "application/json")

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> "Response":
        """A redirect to ``location``."""
        return cls(b"", status, {"Location": location})

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.body)} bytes>"


def to_response(result: Any) -> Response:
    """Turn what a route returned into a Response: bytes (application/octet-stream), str
    (text/html), dict or list (JSON), None (204), a (body, status) tuple, or a Response."""
    if isinstance(result, Response):
        return result
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], int):
        r = to_response(result[0])
        r.status = result[1]
        return r
    if result is None:
        return Response(b"", 204)
    if isinstance(result, (bytes, bytearray, memoryview)):
        return Response(bytes(result), 200, content_type="application/octet-stream")
    if isinstance(result, str):
        return Response(result)
    if isinstance(result, (dict, list)):
        return Response.json(result)
    raise TypeError(f"a route returned {type(result).__name__}; return bytes, str, dict, list, "
                    "None, (body, status) or a pyws.Response")
