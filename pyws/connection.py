"""One connection as the callback API sees it (server-accepted or client)."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Union

from ._lib import ffi, lib, raise_for
from .compression import send_flags
from .constants import OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, State
from .errors import ConnectionClosed, HandshakeError, closed_error
from ._send import Payload, Sendable, binary_arg, outgoing
from .message import (HttpMessage, check_close_code, close_reason_bytes, encode_payload,
                      header_lines, parse_close_payload)

if TYPE_CHECKING:  # pragma: no cover
    from .handshake import UpgradePolicy
    from .manager import Handler, Manager
    from .stats import ConnStats

_REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 302: "Found",
    304: "Not Modified", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
    426: "Upgrade Required", 429: "Too Many Requests", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable",
}

__all__ = ["Connection", "Payload"]

# ws_send's C call, looked up once (an attribute of cffi's lib is a dictionary lookup per use)
_pyws_send = lib.pyws_send


def _topic(topic: Union[str, bytes]) -> bytes:
    if isinstance(topic, str):
        return topic.encode("utf-8")
    if isinstance(topic, bytes):
        return topic
    raise TypeError(f"a topic is str or bytes, not {type(topic).__name__}")


class Connection:
    """A TCP connection speaking HTTP or, after ``ws_upgrade``, WebSocket.

    One object per connection for its whole life (so ``conn in clients`` and ``conn != other``
    work as expected). All methods must be called from the loop's thread; sending on a closed
    connection raises :class:`pyws.ConnectionClosed` (a ``RuntimeError``).

    Attributes: ``id`` (int, generation-checked: never reused for another connection),
    ``userdata`` (anything you like; ``None`` at first), ``state`` (a :class:`pyws.State`,
    read from the C core), ``is_websocket``, ``closed``, ``close_code`` and ``close_reason``
    (set once closed), ``is_client``, ``subprotocol`` (the one agreed, or None). Attributes of
    your own may be set too (``conn.user = user``); they live as long as the object.

    The connection's state lives in C; ``state`` and ``is_websocket`` ask it. ``closed`` is a
    plain attribute (sends check it without a C call) set in one place, :meth:`_ended`, from
    the EV_CLOSE event (or when the Manager is closed).
    """

    __slots__ = ("_mgr", "id", "userdata", "handler", "_was_ws", "closed", "close_code",
                 "close_reason", "_remote", "is_client", "subprotocol", "listener_id",
                 "_sent_close", "response", "error", "_client", "_msg_sink", "_policy",
                 "_auto_protocol", "__weakref__", "__dict__")

    def __init__(self, mgr: "Manager", conn_id: int, handler: Optional["Handler"] = None,
                 is_client: bool = False, listener_id: int = 0) -> None:
        self._mgr = mgr
        self.id = conn_id
        self.userdata: Any = None
        self.handler = handler
        self._was_ws = False  # what EV_CLOSE said: was it upgraded (C has forgotten by then)
        self.closed = False
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self._remote: Optional[str] = None
        self.is_client = is_client
        self.subprotocol: Optional[str] = None
        self.listener_id = listener_id
        # the code this side's close() sent (C keeps only the one EV_CLOSE reports): what a
        # send after close() raises ConnectionClosed with until EV_CLOSE says more
        self._sent_close: Optional[int] = None
        #: client connections: the server's 101 response once open
        self.response: Optional[HttpMessage] = None
        #: client connections: why the connection failed (HandshakeError, or an OSError for
        #: the TCP connect), set before the EV_ERROR event. Server connections: a
        #: HandshakeError (``status`` 400 or 426) when a failed WebSocket upgrade was answered
        #: by pyws itself, set before the EV_ERROR event
        self.error: Optional[Exception] = None
        self._client: Any = None
        # a driver that takes whole messages itself (the async one): EV_WS_MSG goes to
        # _msg_sink(payload, opcode, compressed) instead of handler(conn, ev, Message), which
        # spares a Message and the handler's branching per message
        self._msg_sink: Optional[Callable[[bytes, int, bool], None]] = None
        # server connections: the listener's subprotocol/origin rules (pyws.handshake), and
        # the subprotocol they selected for the upgrade request being answered
        self._policy: Optional["UpgradePolicy"] = None
        self._auto_protocol: Optional[str] = None

    # ------------------------------------------------------------------ state
    def _ended(self, was_ws: bool, code: Optional[int] = None, reason: str = "") -> None:
        """The connection is gone in C (EV_CLOSE, or the Manager was closed): the one place
        ``closed`` is set. A WebSocket keeps the close code and reason EV_CLOSE carried."""
        self.closed = True
        self._was_ws = was_ws
        if was_ws and code is not None:
            self.close_code = code
            self.close_reason = reason

    @property
    def state(self) -> State:
        """The connection's :class:`pyws.State` (CONNECTING, OPEN, CLOSING, CLOSED), asked of
        the C core at each read (one C call; do not poll it in a tight loop). CLOSED once
        EV_CLOSE was delivered; a server connection still speaking HTTP is CONNECTING."""
        loop = self._mgr._loop
        if self.closed or loop is None:
            return State.CLOSED
        return State(lib.pyws_conn_state(loop, self.id))

    @property
    def is_websocket(self) -> bool:
        """True once the connection was upgraded to WebSocket (``ws_upgrade``, or a client's
        101), and still after it closed. Asked of the C core while the connection lives."""
        loop = self._mgr._loop
        if self.closed or loop is None:
            return self._was_ws
        return bool(lib.pyws_is_websocket(loop, self.id) == 1)

    # ------------------------------------------------------------------ helpers
    def _loop(self) -> Any:
        mgr = self._mgr
        mgr._check_thread()
        loop = mgr._loop
        if loop is None or self.closed:
            raise closed_error(self.close_code if self.close_code is not None else 1006,
                                   self.close_reason or "connection closed")
        return loop

    def _fail(self, rc: int, what: str) -> None:
        raise_for(rc, self._mgr._loop, what,
                  self.close_code if self.close_code is not None else self._sent_close,
                  self.close_reason)

    # ------------------------------------------------------------------ HTTP
    def ws_upgrade(self, hm: Optional[HttpMessage] = None, protocol: Optional[str] = None,
                   headers: Optional[Mapping[str, str]] = None) -> None:
        """Answer the HTTP request ``hm`` with 101 and switch this connection to WebSocket.

        ``protocol`` selects one of the subprotocols the client offered in
        Sec-WebSocket-Protocol (naming one it did not offer raises ``ValueError``); left
        None, it is the one the listener's ``subprotocols=`` selected (the first of the
        server's list the client offered), if any. ``headers`` adds response headers. Raises :class:`pyws.HandshakeError` (``status``
        400) when the request does not ask for an upgrade (``hm.is_websocket_upgrade`` is
        False: no ``Upgrade: websocket``); the client has then been answered with 400 and the
        connection closes. A request that asks for an upgrade but breaks RFC 6455 §4.2.1 never
        reaches the handler: pyws answers it 400 (426 with ``Sec-WebSocket-Version: 13`` for a
        version other than 13), closes the connection and reports ``EV_ERROR``.
        """
        loop = self._loop()
        extra = header_lines(headers)
        if protocol is None:
            protocol = self._auto_protocol
        status = lib.pyws_handshake_status(loop, self.id)  # what C answers if it fails
        rc = lib.pyws_ws_upgrade(loop, self.id,
                                 protocol.encode() if protocol else ffi.NULL,
                                 extra.encode("latin-1") if extra else ffi.NULL)
        if rc == lib.PYWS_ERR_HANDSHAKE:
            from ._lib import last_error
            raise HandshakeError(last_error(loop), status=status if status > 0 else 400)
        if rc < 0:
            self._fail(rc, "ws_upgrade")
        self.subprotocol = protocol or None

    def reply(self, status: int = 200, body: Payload = b"",
              headers: Optional[Mapping[str, str]] = None, head_only: bool = False) -> None:
        """Send an HTTP response: status line, ``headers``, Content-Length, then ``body``.

        A str body is sent as UTF-8 with ``Content-Type: text/plain; charset=utf-8`` unless
        ``headers`` names a Content-Type. ``head_only=True`` (for HEAD requests) sends the
        same head, Content-Length included, without the body. The connection stays open for
        the next request; call :meth:`drain` to close it once the response is written.
        """
        loop = self._loop()
        is_text = isinstance(body, str)
        payload = encode_payload(body)
        hdrs = dict(headers or {})
        lower = {k.lower() for k in hdrs}
        if "content-type" not in lower and (is_text or payload):
            hdrs["Content-Type"] = "text/plain; charset=utf-8" if is_text else \
                "application/octet-stream"
        hdrs.pop("Content-Length", None)
        reason = _REASONS.get(status, "Status")
        head = (f"HTTP/1.1 {int(status)} {reason}\r\n{header_lines(hdrs)}"
                f"Content-Length: {len(payload)}\r\n\r\n").encode("latin-1")
        data = head if head_only else head + payload
        rc = lib.pyws_send_raw(loop, self.id, data, len(data))
        if rc < 0:
            self._fail(rc, "reply")

    def send_raw(self, data: Payload) -> None:
        """Queue raw bytes on the connection (you write the whole HTTP response yourself)."""
        loop = self._loop()
        payload = encode_payload(data)
        rc = lib.pyws_send_raw(loop, self.id, payload, len(payload))
        if rc < 0:
            self._fail(rc, "send_raw")

    def drain(self) -> None:
        """Close the connection once everything queued has been written (mongoose's
        ``is_draining``). For a WebSocket this sends no close frame: use :meth:`close`."""
        loop = self._loop()
        rc = lib.pyws_close_after_flush(loop, self.id)
        if rc < 0:
            self._fail(rc, "drain")

    # ------------------------------------------------------------------ WebSocket
    def ws_send(self, data: Payload, op: int = OP_TEXT, fin: bool = True,
                compress: Optional[bool] = None) -> None:
        """Send one frame: ``op`` is ``OP_TEXT`` (str is encoded as UTF-8), ``OP_BINARY``,
        ``OP_PING``/``OP_PONG`` (at most 125 bytes) or, for the later pieces of a fragmented
        message, ``OP_CONTINUATION``. ``fin=False`` leaves the message open: follow with
        ``OP_CONTINUATION`` frames, the last one with ``fin=True``.

        ``OP_CLOSE`` (mongoose's ``WEBSOCKET_OP_CLOSE``) starts the close handshake, as
        :meth:`close` does, with the code and reason in ``data``: empty (a close frame
        without a code), or the code as 2 bytes big-endian followed by the reason in UTF-8
        (``struct.pack("!H", 1000) + b"bye"``); a payload of 1 byte, a code that may not be
        sent or a reason over 123 bytes raise ``ValueError``.

        With permessage-deflate agreed (see :attr:`extensions`), a message is compressed when
        it reaches the threshold; ``compress=False`` sends this one uncompressed and
        ``compress=True`` compresses it even if short (given on a message's first frame).

        The frame is queued and written at the next ``poll()`` (the first send after a poll
        that returned a single event is written at once: a reply does not wait). Raises
        :class:`pyws.ConnectionClosed` once the connection is closing, and
        :class:`pyws.LimitExceeded` (after closing the connection with 1008) if the queue
        would pass ``write_limit``.
        """
        mgr = self._mgr
        loop = mgr._loop
        if mgr._owner != mgr._get_ident() or loop is None or self.closed:
            if op == OP_CLOSE and (self.closed or loop is None):
                parse_close_payload(encode_payload(data))  # a bad payload still raises
                return  # closing a closed connection is harmless, as close() is
            loop = self._loop()
        if type(data) is str:
            data = data.encode()
        elif type(data) is not bytes:
            if type(data) is memoryview and data.c_contiguous and op != OP_CLOSE:
                # a MessageView's payload (or any contiguous view): framed from where it is,
                # no bytes object in between; C copies it into the write queue
                n = data.nbytes
                rc = lib.pyws_send(loop, self.id, op, ffi.from_buffer(data), n,
                                   (1 if fin else 0) if compress is None
                                   else (1 if fin else 0) | send_flags(compress))
                if rc:
                    self._fail(rc, "ws_send")
                return
            data = encode_payload(data)
        flags = 1 if fin else 0
        if compress is not None:
            flags |= send_flags(compress)
        rc = _pyws_send(loop, self.id, op, data, len(data), flags)
        if rc:
            if op == OP_CLOSE:  # mongoose's ws_send(payload, WEBSOCKET_OP_CLOSE)
                code, reason = parse_close_payload(data)
                self._close(code, reason)
                return
            self._fail(rc, "ws_send")

    def send(self, data: Sendable, binary: Optional[bool] = None,
             compress: Optional[bool] = None) -> None:
        """Send a whole message: a str as text, bytes-like as binary, a :class:`pyws.Message`
        with its own opcode (so an echo keeps text as text). ``binary=True`` sends it as
        binary, ``binary=False`` as text (the bytes must then be UTF-8). ``compress``: see
        :meth:`ws_send`. The same in :class:`pyws.WebSocket` and
        :class:`pyws.ClientConnection`, which send through here."""
        if binary is None:  # the common cases without a call more: what outgoing() gives
            if type(data) is bytes:
                self.ws_send(data, OP_BINARY, True, compress)
                return
            if type(data) is str:  # ws_send encodes it
                self.ws_send(data, OP_TEXT, True, compress)
                return
        payload, op = outgoing(data, binary)
        self.ws_send(payload, op, True, compress)

    def send_text(self, text: str, compress: Optional[bool] = None) -> None:
        """Send a text message (``compress``: see :meth:`ws_send`)."""
        self.ws_send(text, OP_TEXT, True, compress)

    def send_bytes(self, data: Union[bytes, bytearray, memoryview],
                   compress: Optional[bool] = None) -> None:
        """Send a binary message (``compress``: see :meth:`ws_send`)."""
        self.ws_send(data, OP_BINARY, True, compress)

    #: Cello's name for :meth:`send_bytes`.
    send_binary = send_bytes

    def send_json(self, obj: Any, dumps: Callable[[Any], str] = json.dumps,
                  compress: Optional[bool] = None) -> None:
        """Send ``dumps(obj)`` as a text message."""
        self.ws_send(dumps(obj), OP_TEXT, True, compress)

    def send_fragments(self, fragments: Iterable[Sendable], binary: Optional[int] = None,
                       compress: Optional[bool] = None, *, op: Optional[int] = None) -> None:
        """Send one message made of the pieces in ``fragments``, one frame each (the first as
        text or binary, the rest as continuations). Pieces are what :meth:`send` takes.

        ``binary``: None (default) makes the message what its first piece is (str or a text
        Message: text; bytes-like: binary; no piece at all: binary), True binary, False text.
        The older spelling, an opcode (``OP_BINARY``/``OP_TEXT``, positionally or as ``op=``),
        is still accepted. An empty iterable sends an empty message. With permessage-deflate
        the whole message is compressed as one stream (unless ``compress=False``), each frame
        carrying what its piece compressed to."""
        kind = binary_arg(binary, op)
        it = iter(fragments)
        for first in it:
            break
        else:
            self.ws_send(b"", OP_TEXT if kind is False else OP_BINARY, True, compress)
            return
        cur, frame_op = outgoing(first, kind)
        comp = compress
        for nxt in it:
            self.ws_send(cur, frame_op, False, comp)
            frame_op, comp = OP_CONTINUATION, None
            cur = outgoing(nxt, kind)[0]
        self.ws_send(cur, frame_op, True, comp)

    def publish(self, topic: Union[str, bytes], data: Sendable, exclude_self: bool = False,
                compress: Optional[bool] = None, binary: Optional[bool] = None) -> int:
        """``Manager.publish(topic, data)`` from this connection, optionally leaving it out
        (``exclude_self``); ``data`` and ``binary`` as for :meth:`send`. Returns how many
        connections it was queued on."""
        return self._mgr.publish(topic, data, self if exclude_self else None, binary, compress)

    @property
    def extensions(self) -> str:
        """The extensions agreed in the handshake, as in its Sec-WebSocket-Extensions header
        (``"permessage-deflate; server_max_window_bits=12"``), or ``""`` for none."""
        loop = self._mgr._loop
        if loop is None or self.closed:
            return ""
        buf = ffi.new("char[]", 256)
        n = lib.pyws_ws_extensions(loop, self.id, buf, 256)
        return ffi.string(buf).decode("ascii") if n > 0 else ""

    def ping(self, data: Payload = b"") -> None:
        """Send a ping (payload at most 125 bytes); the C core answers the peer's pings itself."""
        self.ws_send(data, OP_PING)

    def pong(self, data: Payload = b"") -> None:
        """Send an unsolicited pong (a heartbeat the peer does not answer)."""
        self.ws_send(data, OP_PONG)

    def close(self, code: int = 1000, reason: Union[str, bytes] = "") -> None:
        """Start the close handshake with ``code`` (1000-1003, 1007-1014 or 3000-4999; 0
        sends a close frame without a code, which the peer reports as 1005) and ``reason``
        (str, or bytes in UTF-8; at most 123 bytes once encoded: ``ValueError`` past that); the connection ends when the peer answers, or after ``close_timeout``. On
        a plain HTTP connection this is :meth:`drain`. Closing twice is harmless."""
        r = close_reason_bytes(reason)
        if check_close_code(code, True) == 0 and r:
            raise ValueError("a close reason needs a close code: close(0) sends none")
        self._close(code, r)

    def _close(self, code: int, reason: bytes) -> None:
        """close() with checked arguments; code 0: a close frame without a code."""
        if self.closed or self._mgr._loop is None:
            return
        loop = self._loop()
        rc = lib.pyws_ws_close(loop, self.id, code, reason, len(reason))
        if rc < 0:
            if rc == lib.PYWS_ERR_BADID:
                return
            self._fail(rc, "close")
        self._sent_close = code or 1005

    def abort(self) -> None:
        """Drop the TCP connection now, without a close handshake (EV_CLOSE follows, 1006)."""
        if self.closed or self._mgr._loop is None:
            return
        lib.pyws_abort(self._loop(), self.id)

    # ------------------------------------------------------------------ TLS
    def tls_init(self, opts: Any, server_name: Optional[str] = None) -> None:
        """Start TLS on this connection with ``opts`` (a :class:`pyws.TlsOpts`): on
        ``EV_ACCEPT`` for a server connection (mongoose's ``conn.tls_init``), before any byte
        is exchanged. ``server_name`` is for client connections (SNI and the name checked)."""
        loop = self._loop()
        ctx = opts.context(not self.is_client, loop)
        rc = lib.pyws_tls_init(loop, self.id, ctx,
                               server_name.encode("idna") if server_name else ffi.NULL)
        if rc < 0:
            from .tls import TlsError
            from ._lib import last_error
            raise TlsError(f"tls_init: {last_error(loop)}")

    @property
    def tls_info(self) -> Optional[str]:
        """``"TLSv1.3 TLS_AES_256_GCM_SHA384"`` once TLS is established, else None."""
        loop = self._mgr._loop
        if loop is None or self.closed:
            return None
        buf = ffi.new("char[128]")
        n = lib.pyws_tls_info(loop, self.id, buf, 128)
        return ffi.string(buf).decode() if n > 0 else None

    # ------------------------------------------------------------------ topics, flow control
    def subscribe(self, topic: Union[str, bytes]) -> bool:
        """Subscribe this WebSocket to ``topic`` (str or bytes); ``Manager.publish`` then
        reaches it. Returns False if it already was subscribed. Subscriptions end with the
        connection."""
        t = _topic(topic)
        rc = lib.pyws_subscribe(self._loop(), self.id, t, len(t))
        if rc < 0:
            self._fail(rc, "subscribe")
        return bool(rc == 1)

    def unsubscribe(self, topic: Union[str, bytes]) -> bool:
        """Leave ``topic``; returns False if it was not subscribed."""
        if self.closed or self._mgr._loop is None:
            return False
        t = _topic(topic)
        return bool(lib.pyws_unsubscribe(self._loop(), self.id, t, len(t)) == 1)

    def is_subscribed(self, topic: Union[str, bytes]) -> bool:
        """True if this connection is subscribed to ``topic``."""
        if self.closed or self._mgr._loop is None:
            return False
        t = _topic(topic)
        return bool(lib.pyws_is_subscribed(self._loop(), self.id, t, len(t)) == 1)

    def pause_reading(self) -> None:
        """Stop reading from this connection (TCP then pushes back on the peer) until
        :meth:`resume_reading`. Pings are not answered while paused."""
        lib.pyws_set_reading(self._loop(), self.id, 0)

    def resume_reading(self) -> None:
        """Read from this connection again after :meth:`pause_reading`."""
        if self.closed or self._mgr._loop is None:
            return
        lib.pyws_set_reading(self._loop(), self.id, 1)

    # ------------------------------------------------------------------ state
    @property
    def remote_addr(self) -> str:
        """The peer's address as ``"ip:port"`` (``"[ip6]:port"`` for IPv6)."""
        if self._remote is None:
            loop = self._mgr._loop
            if loop is None:
                return ""
            buf = ffi.new("char[80]")
            n = lib.pyws_remote_addr(loop, self.id, buf, 80)
            self._remote = ffi.string(buf).decode() if n > 0 else ""
        return self._remote

    @property
    def remote_ip(self) -> str:
        """The peer's IP address without the port."""
        addr = self.remote_addr
        host = addr.rsplit(":", 1)[0]
        return host[1:-1] if host.startswith("[") else host

    @property
    def write_buffer_size(self) -> int:
        """Bytes queued and not yet written to the socket (0 once closed)."""
        loop = self._mgr._loop
        if loop is None or self.closed:
            return 0
        n = lib.pyws_write_buffer_size(loop, self.id)
        return int(n) if n > 0 else 0

    @property
    def above_high_water(self) -> bool:
        """True while the write buffer is above this connection's ``write_high_water`` (an
        ``EV_DRAIN`` follows once it drains back under it)."""
        loop = self._mgr._loop
        if loop is None or self.closed:
            return False
        return bool(lib.pyws_above_high_water(loop, self.id) == 1)

    @property
    def max_message_size(self) -> int:
        """Not readable back from C; set it to change this connection's limit (bytes)."""
        raise AttributeError("max_message_size is write-only on a connection")

    @max_message_size.setter
    def max_message_size(self, value: int) -> None:
        loop = self._loop()
        lib.pyws_set_max_message_size(loop, self.id, int(value))

    @property
    def memory(self) -> int:
        """Bytes of heap the C core holds for this connection (struct, buffers, queue)."""
        loop = self._mgr._loop
        if loop is None or self.closed:
            return 0
        return max(0, int(lib.pyws_conn_memory(loop, self.id)))

    def stats(self) -> Optional["ConnStats"]:
        """This connection's counters (messages, payload and wire bytes in and out, deflate,
        connected since, last activity, heartbeat ping round trip): a :class:`pyws.ConnStats`
        read with one C call, or None once it has closed (its counts live on in
        ``Manager.stats()``'s totals)."""
        from .stats import conn_stats
        loop = self._mgr._loop
        return None if loop is None or self.closed else conn_stats(loop, self.id)

    def __repr__(self) -> str:
        kind = "ws" if self.is_websocket else "http"
        state = f" closed={self.close_code}" if self.closed else ""
        return f"<Connection id={self.id:#x} {kind}{state}>"
