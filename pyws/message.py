"""Message objects handed to handlers: HTTP requests and WebSocket messages."""
from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Mapping, MutableMapping, Optional, Tuple, Union
from urllib.parse import parse_qs, unquote

from .constants import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only view of HTTP headers.

    ``headers["content-type"]`` and ``headers["Content-Type"]`` are the same; a header sent
    several times reads as its values joined with ``", "``; :meth:`get_all` lists them apart.
    """

    __slots__ = ("_items", "_map")

    def __init__(self, items: List[Tuple[str, str]]) -> None:
        self._items = items
        m: Dict[str, str] = {}
        for k, v in items:
            lk = k.lower()
            m[lk] = f"{m[lk]}, {v}" if lk in m else v
        self._map = m

    def __getitem__(self, key: str) -> str:
        return self._map[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def get_all(self, key: str) -> List[str]:
        """Every value of header ``key`` in the order received (an empty list if absent)."""
        lk = key.lower()
        return [v for k, v in self._items if k.lower() == lk]

    def raw(self) -> List[Tuple[str, str]]:
        """The headers as received: (name, value) pairs, names in their original case."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class HttpMessage:
    """An HTTP request (server side) or response (client side).

    Attributes: ``method`` (``"GET"``), ``uri`` (the path, without the query, as sent),
    ``query`` (the raw query string without ``?``), ``version`` (``"HTTP/1.1"``), ``status``
    (responses), ``headers`` (:class:`Headers`), ``body`` (bytes), ``head`` (the raw head).

    ``is_websocket_upgrade`` is True for a valid RFC 6455 upgrade request (call
    ``conn.ws_upgrade``). A request that asks for an upgrade (an ``Upgrade`` header naming
    ``websocket``, any case) but is not valid never becomes an HttpMessage: pyws answers it
    400, or 426 with ``Sec-WebSocket-Version: 13``, closes the connection, and the handler gets
    ``EV_ERROR`` saying why. Requests without that header are plain HTTP (False here).
    """

    __slots__ = ("head", "body", "method", "uri", "query", "version", "status", "reason",
                 "_headers", "is_websocket_upgrade")

    def __init__(self, head: bytes, body: bytes = b"", is_websocket_upgrade: bool = False) -> None:
        self.head = head
        self.body = body
        self.is_websocket_upgrade = is_websocket_upgrade
        self._headers: Optional[Headers] = None
        end = head.find(b"\n")
        first = head[: end if end >= 0 else len(head)].rstrip(b"\r").decode("latin-1")
        parts = first.split(" ", 2)
        self.status = 0
        self.reason = ""
        if first.startswith("HTTP/"):
            self.version = parts[0]
            self.method = ""
            self.uri = ""
            self.query = ""
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            self.reason = parts[2] if len(parts) > 2 else ""
        else:
            self.method = parts[0]
            target = parts[1] if len(parts) > 1 else ""
            self.version = parts[2] if len(parts) > 2 else ""
            path, _, query = target.partition("?")
            self.uri = path
            self.query = query

    @property
    def target(self) -> str:
        """The request-target as sent: path plus ``?query`` if any."""
        return f"{self.uri}?{self.query}" if self.query else self.uri

    @property
    def path(self) -> str:
        """The percent-decoded path."""
        return unquote(self.uri)

    @property
    def headers(self) -> Headers:
        """The request headers (parsed on first use)."""
        if self._headers is None:
            items: List[Tuple[str, str]] = []
            lines = self.head.split(b"\n")[1:]
            for raw in lines:
                line = raw.rstrip(b"\r")
                if not line:
                    continue
                name, _, value = line.partition(b":")
                items.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
            self._headers = Headers(items)
        return self._headers

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The value of header ``name`` (case-insensitive), or ``default``."""
        return self.headers.get(name, default)

    @property
    def args(self) -> Dict[str, List[str]]:
        """The query string parsed into ``{name: [values]}``."""
        return parse_qs(self.query, keep_blank_values=True)

    @property
    def cookies(self) -> Dict[str, str]:
        """Cookies from the ``Cookie`` headers."""
        jar: Dict[str, str] = {}
        for value in self.headers.get_all("cookie"):
            for part in value.split(";"):
                k, sep, v = part.strip().partition("=")
                if sep:
                    jar[k] = v
        return jar

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def __repr__(self) -> str:
        if self.status:
            return f"<HttpMessage {self.version} {self.status} {self.reason}>"
        return f"<HttpMessage {self.method} {self.target}>"


class _TextOrFactory:
    """``msg.text`` is the payload as str; ``Message.text("hi")`` builds a text message."""

    def __get__(self, instance: Optional["Message"], owner: type) -> Any:
        if instance is None:
            return lambda text: owner(text.encode("utf-8") if isinstance(text, str) else text,
                                      OP_TEXT)
        return instance.data.decode("utf-8", "replace" if instance.opcode != OP_TEXT
                                    else "strict")


class Message:
    """One whole WebSocket message (or control frame).

    ``data`` is the payload as bytes; ``text`` decodes it (text messages are already checked to
    be valid UTF-8); ``opcode`` (aliases ``flags``, mongoose's name, and ``type``, aiohttp's)
    is ``OP_TEXT``/``OP_BINARY``, or for control events ``OP_PING``/``OP_PONG``/``OP_CLOSE``.
    Build one with ``Message.text("hi")`` or ``Message.binary(b"...")``.
    """

    __slots__ = ("data", "opcode", "compressed")
    text = _TextOrFactory()

    def __init__(self, data: bytes, opcode: int = OP_TEXT, compressed: bool = False) -> None:
        self.data = data
        self.opcode = opcode
        #: True if the message arrived compressed (permessage-deflate); ``data`` is inflated.
        self.compressed = compressed

    @classmethod
    def binary(cls, data: Union[bytes, bytearray, memoryview]) -> "Message":
        """A binary message carrying ``data``."""
        return cls(bytes(data), OP_BINARY)

    @property
    def flags(self) -> int:
        """The opcode (the mongoose name)."""
        return self.opcode

    @property
    def type(self) -> int:
        """The opcode (the aiohttp name)."""
        return self.opcode

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.data)

    def is_text(self) -> bool:
        """True for a text message."""
        return self.opcode == OP_TEXT

    def is_binary(self) -> bool:
        """True for a binary message."""
        return self.opcode == OP_BINARY

    def is_close(self) -> bool:
        """True for a close control frame (control events only)."""
        return self.opcode == OP_CLOSE

    def is_ping(self) -> bool:
        """True for a ping control frame (control events only)."""
        return self.opcode == OP_PING

    def is_pong(self) -> bool:
        """True for a pong control frame (control events only)."""
        return self.opcode == OP_PONG

    def __len__(self) -> int:
        return len(self.data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Message):
            return self.opcode == other.opcode and self.data == other.data
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.opcode, self.data))

    def __repr__(self) -> str:
        shown = self.data[:40]
        return f"<Message opcode={self.opcode} len={len(self.data)} data={shown!r}>"


#: The callback API's name for :class:`Message`.
WsMessage = Message


def encode_payload(data: Union[str, bytes, bytearray, memoryview]) -> bytes:
    """Bytes for a payload: str is encoded as UTF-8, bytes-likes pass through."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data) if not isinstance(data, bytes) else data
    raise TypeError(f"a message payload must be str or bytes-like, not {type(data).__name__}")


def header_lines(headers: Optional[Union[Mapping[str, str], MutableMapping[str, str]]]) -> str:
    """``Name: value\\r\\n`` lines for extra response headers, refusing CR/LF injection."""
    if not headers:
        return ""
    out = []
    for k, v in headers.items():
        k = str(k)
        v = str(v)
        if not k or any(c in k for c in "\r\n:") or any(c in v for c in "\r\n\0"):
            raise ValueError(f"invalid header {k!r}: names and values may not contain CR, LF "
                             "(or ':' in names)")
        out.append(f"{k}: {v}\r\n")
    return "".join(out)
