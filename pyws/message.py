"""Message objects handed to handlers: HTTP requests and WebSocket messages."""
from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Mapping, MutableMapping, Optional, Tuple, Union
from urllib.parse import parse_qs, unquote

from ._lib import lib
from .constants import OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, WSMsgType

#: The most bytes a close reason may take: a close frame carries at most 125 bytes, two of
#: them the code (RFC 6455 §5.5, §5.5.1).
MAX_CLOSE_REASON = 123


def close_reason_bytes(reason: Union[str, bytes, bytearray, memoryview]) -> bytes:
    """A close reason as the bytes a close frame carries: str is encoded as UTF-8, bytes-likes
    must be UTF-8 already. Raises ``ValueError`` past :data:`MAX_CLOSE_REASON` (123) bytes or
    for bytes that are not UTF-8, ``TypeError`` for anything else."""
    if isinstance(reason, str):
        r = reason.encode("utf-8")
    elif isinstance(reason, (bytes, bytearray, memoryview)):
        r = bytes(reason)
        try:
            r.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"a close reason must be UTF-8 (RFC 6455 §5.5.1); {r[:40]!r} is "
                             "not: pass a str, or bytes encoded as UTF-8") from exc
    else:
        raise TypeError(f"a close reason is str or bytes, not {type(reason).__name__}")
    if len(r) > MAX_CLOSE_REASON:
        raise ValueError(f"close reason is {len(r)} bytes in UTF-8; at most "
                         f"{MAX_CLOSE_REASON} bytes fit in a close frame (125 less the 2-byte "
                         "code): shorten it")
    return r


def check_close_code(code: int, zero: bool = False) -> int:
    """``code`` if a close frame may carry it (1000-1003, 1007-1014, 3000-4999; with
    ``zero=True`` also 0, which the ``close()`` methods take for a close frame without a
    code), else ``ValueError`` saying which codes may be sent."""
    if isinstance(code, bool) or not isinstance(code, int) or \
            not (lib.pyws_close_code_valid(code) or (zero and code == 0)):
        raise ValueError(f"close code {code!r} may not be sent: use 1000-1003, 1007-1014 or "
                         "3000-4999 (1005, 1006 and 1015 are never sent on the wire)")
    return int(code)


def close_payload(code: Optional[int] = 1000,
                  reason: Union[str, bytes, bytearray, memoryview] = "") -> bytes:
    """The payload of a close frame: ``code`` as 2 bytes big-endian then ``reason`` (UTF-8,
    at most 123 bytes), or empty for ``code=None`` (then ``reason`` must be empty)."""
    r = close_reason_bytes(reason)
    if code is None:
        if r:
            raise ValueError("a close reason needs a close code: give code= too")
        return b""
    return check_close_code(code).to_bytes(2, "big") + r


def parse_close_payload(payload: bytes) -> Tuple[int, bytes]:
    """``(code, reason)`` of a close frame's payload as mongoose's ``ws_send(payload,
    WEBSOCKET_OP_CLOSE)`` takes it: 2 bytes big-endian code and a UTF-8 reason, or empty
    (``(0, b"")``: a close frame without a code). Raises ``ValueError`` for a 1-byte payload,
    a code that may not be sent, or a reason that is too long or not UTF-8."""
    if not payload:
        return 0, b""
    if len(payload) == 1:
        raise ValueError("a close payload is empty or a 2-byte big-endian code followed by a "
                         "UTF-8 reason, not 1 byte (e.g. struct.pack('!H', 1000) + b'bye')")
    code = check_close_code(int.from_bytes(payload[:2], "big"))
    return code, close_reason_bytes(payload[2:])


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
        # str(x, ...) decodes bytes and a message view alike, without copying the view first
        return str(instance.data, "utf-8", "replace" if instance.opcode != OP_TEXT else "strict")


class Message:
    """One whole WebSocket message (or control frame); Cello's name for it,
    ``pyws.WebSocketMessage``, is the same class.

    ``data`` is the payload: bytes, or for a large received message (see
    :class:`MessageView`) a read-only memoryview valid only while the handler runs; ``text``
    decodes it, on first use only (text messages are already checked to be valid UTF-8);
    ``bytes(msg)`` is the payload as bytes and ``msg.detach()`` a Message that owns it; ``opcode`` (alias ``flags``, mongoose's name) is ``OP_TEXT``/``OP_BINARY``,
    or for control events ``OP_PING``/``OP_PONG``/``OP_CLOSE``; ``type`` (aiohttp's name) is
    the same as a :class:`pyws.WSMsgType`, which also compares equal to ``"text"``,
    ``"binary"``/``"bytes"`` ...; ``msg_type`` (Cello's) is that name as a str. ``is_text()``,
    ``is_binary()``, ``is_close()``, ``is_ping()``, ``is_pong()`` test it.

    Build one with ``Message.text("hi")``, ``Message.binary(b"...")``, ``Message.ping()``,
    ``Message.pong()`` or ``Message.close(code=1000, reason="")``; ``ws.send(msg)`` sends it as
    what it is (a close message starts the close handshake with its code and reason).
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

    @classmethod
    def ping(cls, data: Union[str, bytes, bytearray, memoryview] = b"") -> "Message":
        """A ping (``ws.send(Message.ping())`` sends it); ``data`` at most 125 bytes."""
        payload = encode_payload(data)
        if len(payload) > 125:
            raise ValueError(f"a ping carries at most 125 bytes, not {len(payload)}")
        return cls(payload, OP_PING)

    @classmethod
    def pong(cls, data: Union[str, bytes, bytearray, memoryview] = b"") -> "Message":
        """An unsolicited pong; ``data`` at most 125 bytes."""
        payload = encode_payload(data)
        if len(payload) > 125:
            raise ValueError(f"a pong carries at most 125 bytes, not {len(payload)}")
        return cls(payload, OP_PONG)

    @classmethod
    def close(cls, code: Optional[int] = 1000,
              reason: Union[str, bytes, bytearray, memoryview] = "") -> "Message":
        """A close message: ``ws.send(Message.close())`` starts the close handshake with
        ``code`` (default 1000; None sends a close frame without a code) and ``reason`` (str
        or UTF-8 bytes, at most 123 bytes). ``data`` is the frame's payload: the code as 2
        bytes big-endian, then the reason."""
        return cls(close_payload(code, reason), OP_CLOSE)

    @property
    def flags(self) -> int:
        """The opcode (the mongoose name)."""
        return self.opcode

    @property
    def type(self) -> WSMsgType:
        """The opcode as a :class:`pyws.WSMsgType` (the aiohttp name): an int equal to
        ``opcode`` that also compares equal to ``"text"``, ``"binary"``/``"bytes"``,
        ``"close"``, ``"ping"``, ``"pong"``."""
        return _MSG_TYPES[self.opcode]

    @property
    def msg_type(self) -> str:
        """Cello's name for the type: ``"text"``, ``"binary"``, ``"ping"``, ``"pong"`` or
        ``"close"`` (``"continuation"`` never reaches a handler)."""
        return _MSG_TYPE_STR[self.opcode]

    def json(self) -> Any:
        """The payload parsed as JSON."""
        data = self.data
        return json.loads(data if type(data) is bytes else bytes(data))

    def __bytes__(self) -> bytes:
        return bytes(self.data)

    def detach(self) -> "Message":
        """A Message that owns its payload, to keep after the handler returns. A Message whose
        ``data`` is bytes already owns it: this returns it as it is. See
        :class:`MessageView`."""
        return self

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
        data = self.data
        return hash((self.opcode, data if type(data) is bytes else bytes(data)))

    def __repr__(self) -> str:
        try:
            data = self.data
        except ValueError:
            return f"<{type(self).__name__} opcode={self.opcode} (expired)>"
        shown = bytes(data[:40])
        return f"<{type(self).__name__} opcode={self.opcode} len={len(data)} data={shown!r}>"


#: What using a :class:`MessageView` after its handler returned raises, and says.
EXPIRED = ("this message's payload was a view of pyws's receive buffer, valid only while the "
           "handler that received it ran; call msg.detach() (or bytes(msg), or msg.text) "
           "inside the handler to keep it")


class MessageView(Message):
    """A large received message whose payload pyws does not copy out of its receive buffer.

    Messages of at least ``view_threshold`` bytes (a ``Manager``/``App`` option, default
    16 KiB; ``None`` turns views off) reach handlers as a MessageView: ``data`` is a read-only
    ``memoryview`` over the C loop's buffer, no copy made. Echoing or forwarding it, with
    ``ws.send(msg)``, ``conn.send(msg)`` or ``conn.ws_send(msg.data, msg.opcode)``, queues
    the frame straight from that buffer. ``msg.text`` decodes it to str when read.

    Lifetime: the view is valid while the handler call that received it runs (a callback
    handler: until it returns; a generator handler: until it next waits, ``yield
    ws.recv()``). To keep the payload, call ``msg.detach()`` (a :class:`Message` owning a
    copy), ``bytes(msg)`` or ``msg.text`` inside the handler. After the call, ``msg.data``,
    ``bytes(msg)`` and ``msg.text`` raise ``ValueError`` saying so, and a memoryview taken
    from ``msg.data`` raises ``ValueError`` (a released memoryview) on any use: none of them
    ever reads memory pyws has freed or reused. A slice of the view (``msg.data[:4]``) kept
    past the call stays readable: pyws notices it and leaves that memory to it (logging a
    warning once), so copy slices you keep (``bytes(msg.data[:4])``).
    """

    __slots__ = ("_view", "_exp")

    def __init__(self, view: memoryview, opcode: int, compressed: bool = False,
                 exporter: Any = None) -> None:  # pylint: disable=super-init-not-called
        self._view: Optional[memoryview] = view
        self._exp = exporter
        self.opcode = opcode
        self.compressed = compressed

    @property
    def data(self) -> memoryview:  # type: ignore[override]
        """The payload, a read-only memoryview valid while the handler runs."""
        v = self._view
        if v is None:
            raise ValueError(EXPIRED)
        return v

    def detach(self) -> Message:
        """A :class:`Message` owning a copy of the payload, valid after the handler returns."""
        return Message(self.data.tobytes(), self.opcode, self.compressed)

    @property
    def expired(self) -> bool:
        """True once the handler call that received it has returned."""
        return self._view is None


_MSG_TYPES = {op: WSMsgType(op) for op in (OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE,
                                            OP_PING, OP_PONG)}
_MSG_TYPE_STR = {OP_CONTINUATION: "continuation", OP_TEXT: "text", OP_BINARY: "binary",
                 OP_CLOSE: "close", OP_PING: "ping", OP_PONG: "pong"}

#: The callback API's name for :class:`Message`.
WsMessage = Message

#: Cello's name for :class:`Message` (``WebSocketMessage.text("hi")``, ``.binary(b"")``,
#: ``.ping()``, ``.close()``, ``msg.msg_type``, ``msg.is_close()``).
WebSocketMessage = Message


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
