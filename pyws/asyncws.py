"""The async ``ws`` of ``async def`` handlers and of :func:`pyws.aconnect` clients, and the
aiohttp-shaped message it delivers. The same Connection and send path as the other drivers;
this driver owns only how a coroutine waits (asyncio futures woken by the loop's events)."""
from __future__ import annotations

import builtins
import collections
import json
import logging
import struct
import threading
import time
from typing import (TYPE_CHECKING, Any, Awaitable, Callable, Deque, Dict, Generator, Iterable,
                    Mapping, Optional, Tuple, Union)

import asyncio

from ._lib import lib
from ._send import Payload, Sendable
from .connection import Connection
from .constants import (EV_CLOSE, EV_DRAIN, EV_ERROR, EV_WS_CTL, EV_WS_MSG, EV_WS_OPEN,
                        OP_BINARY, OP_PONG, OP_TEXT, WSMsgType)
from .errors import ConnectionClosed, PyWSError, closed_error
from .message import Message, check_close_code, close_reason_bytes

if TYPE_CHECKING:  # pragma: no cover
    from .request import Request

__all__ = ["AsyncWebSocket", "WSMessage"]

log = logging.getLogger("pyws")

_NORMAL = (1000, 1001)
_DEFAULT: Any = object()
# the hot path's constants and callables, bound once (module globals beat attribute lookups)
_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_pyws_send = lib.pyws_send
_SEND_HW = lib.PYWS_SEND_FIN | lib.PYWS_SEND_REPORT_HW  # queue a whole message; 1 = above HW
_get_ident = threading.get_ident


class WSMessage:
    """One message as the async API delivers it, shaped like aiohttp's ``WSMessage``:
    ``type`` (:class:`pyws.WSMsgType`: TEXT, BINARY, or CLOSE/CLOSED/ERROR from
    :meth:`AsyncWebSocket.receive`; it also compares equal to Gobstopper's strings,
    ``message.type == "text"``, ``"bytes"``, ``"close"``), ``data`` (str for text, bytes for
    binary; the close code for CLOSE; the exception for ERROR), ``extra`` (the close reason
    for CLOSE), :meth:`json`, ``msg_type`` and ``is_text()``/``is_binary()``/``is_close()``
    (Cello's names).
    Also ``text`` (str), ``bytes`` (the payload as bytes), ``opcode`` and ``compressed`` as
    in :class:`pyws.Message`; ``ws.send(msg)`` sends it back with its own type."""

    __slots__ = ("type", "data", "extra", "compressed")

    def __init__(self, type: int, data: Any, extra: Any = None,
                 compressed: bool = False) -> None:
        self.type = WSMsgType(type)
        self.data = data
        self.extra = extra
        #: True if the message arrived compressed (permessage-deflate); ``data`` is inflated.
        self.compressed = compressed

    @property
    def opcode(self) -> int:
        """The type as a plain int (``OP_TEXT``/``OP_BINARY``)."""
        return int(self.type)

    @property
    def text(self) -> str:
        """The payload as str (binary payloads are decoded as UTF-8, errors replaced)."""
        d = self.data
        if isinstance(d, str):
            return d
        if isinstance(d, (bytes, bytearray)):
            return bytes(d).decode("utf-8", "replace")
        return "" if d is None else str(d)

    @property
    def bytes(self) -> bytes:
        """The payload as bytes (text is encoded as UTF-8)."""
        d = self.data
        if isinstance(d, str):
            return d.encode()
        return bytes(d) if isinstance(d, (bytes, bytearray, memoryview)) else b""

    def json(self, *, loads: Callable[[Any], Any] = json.loads) -> Any:
        """The payload parsed with ``loads`` (default ``json.loads``)."""
        return loads(self.data)

    def is_text(self) -> bool:
        """True for a text message."""
        return self.type == WSMsgType.TEXT

    def is_binary(self) -> bool:
        """True for a binary message."""
        return self.type == WSMsgType.BINARY

    def is_close(self) -> bool:
        """True for the CLOSE that :meth:`AsyncWebSocket.receive` reports once closed."""
        return self.type == WSMsgType.CLOSE

    def is_ping(self) -> bool:
        """True for a ping (never delivered by ``recv()``: the core answers pings)."""
        return self.type == WSMsgType.PING

    def is_pong(self) -> bool:
        """True for a pong (never delivered by ``recv()``)."""
        return self.type == WSMsgType.PONG

    @property
    def msg_type(self) -> str:
        """Cello's name for the type as a str: ``"text"``, ``"binary"``, ``"close"``,
        ``"closed"``, ``"error"`` ... (``type`` itself also compares equal to these, and to
        ``"bytes"`` for binary)."""
        return "binary" if self.type == WSMsgType.BINARY else self.type.label

    def __pyws_payload__(self) -> Tuple[builtins.bytes, int]:
        """What sending it means: (payload, opcode); see :mod:`pyws._send`."""
        if self.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            raise TypeError(f"a {self.type.name} message cannot be sent")
        return self.bytes, int(self.type)

    def __len__(self) -> int:
        d = self.data
        return len(d) if isinstance(d, (str, bytes, bytearray)) else 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, WSMessage):
            return (self.type, self.data, self.extra) == (other.type, other.data, other.extra)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.type, self.data if not isinstance(self.data, Exception) else 0))

    def __iter__(self) -> Any:  # aiohttp's WSMessage is a named tuple: (type, data, extra)
        return iter((self.type, self.data, self.extra))

    def __getitem__(self, index: Any) -> Any:
        """``msg[0]``, ``msg[1]``, ``msg[2]``: type, data, extra, as aiohttp's named tuple."""
        return (self.type, self.data, self.extra)[index]

    def __repr__(self) -> str:
        d = self.data
        shown = d[:40] if isinstance(d, (str, bytes)) else d
        return f"<WSMessage {self.type.name} {shown!r}>"


_new_message = WSMessage.__new__


def _message(data: bytes, opcode: int, compressed: bool) -> WSMessage:
    m = _new_message(WSMessage)
    if opcode == OP_TEXT:
        m.type = _TEXT
        m.data = data.decode()  # the C core checked it is UTF-8
    else:
        m.type = _BINARY
        m.data = data
    m.extra = None
    m.compressed = compressed
    return m


class _Done:
    """What ``accept()`` returns: nothing to wait for, but awaitable, so that both
    ``ws.accept()`` and Gobstopper's ``await websocket.accept()`` work."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator that ends at once

    def __repr__(self) -> str:
        return "<accepted>"


_DONE = _Done()


def _expire(fut: "asyncio.Future[Any]", what: str) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError(what))


class AsyncWebSocket:
    """One WebSocket for coroutines: the ``ws`` of ``@app.websocket(path) async def h(ws)``
    and what ``pyws.aconnect()`` gives.

    Receiving: ``await ws.recv(timeout=None)`` gives the next :class:`WSMessage`, or None once
    the connection has closed and every message before the close was read; ``async for msg
    in ws`` does the same until then. Cancelling a ``recv()`` loses nothing (the message stays
    queued for the next one); two ``recv()`` at once on one ws raise ``RuntimeError``. At most
    ``max_queue`` messages wait unread; past that, reading from the socket pauses (TCP pushes
    back on the peer) until the handler catches up.

    Sending: ``await ws.send(data)`` (str as text, bytes-like as binary, a message with its own
    type), ``send_text``, ``send_bytes``, ``send_json``. Each queues the message at once and
    then, while the connection's write buffer is above its ``write_high_water`` (1 MiB by
    default), waits until it has drained: real backpressure. Raises
    :class:`pyws.ConnectionClosed` once closing.

    aiohttp's names work too: ``send_str``, ``receive()`` (a WSMessage; CLOSE with the code
    and reason once the peer closed, then CLOSED), ``receive_str``, ``receive_bytes``,
    ``receive_json``, ``closed``, ``close_code``, ``protocol``, ``exception()``,
    ``close(code=, message=b"...")``.

    Everything runs on the asyncio loop's thread.
    """

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop, *,
                 request: Optional["Request"] = None, max_queue: int = 1024,
                 accept: Optional[Callable[..., None]] = None,
                 reject: Optional[Callable[..., None]] = None,
                 on_close: Optional[Callable[[], None]] = None,
                 timeout: Optional[float] = None) -> None:
        self.conn = conn
        #: the default ``timeout`` of :meth:`recv` (seconds; None waits as long as it takes)
        self.timeout = timeout
        self._loop = loop
        #: server side: the upgrade request (headers, query, cookies, ``params``)
        self.request = request
        #: server side: the path parameters of the route
        self.params: Dict[str, Any] = dict(request.params) if request is not None else {}
        #: your own per-connection data
        self.state: Dict[str, Any] = {}
        self.max_queue = max(1, max_queue)
        self._queue: Deque[WSMessage] = collections.deque()
        # the future a recv() waits on (None when none waits: two at once raise), and the same
        # future until the next message or the close has woken it (then None: the messages
        # after it in the batch only queue)
        self._waiter: Optional["asyncio.Future[None]"] = None
        self._wake: Optional["asyncio.Future[None]"] = None
        self._drains: list["asyncio.Future[None]"] = []
        self._pings: "collections.OrderedDict[bytes, Tuple[asyncio.Future[float], float]]" = \
            collections.OrderedDict()
        self._ping_seq = 0
        self._closed_fut: Optional["asyncio.Future[None]"] = None
        self._opened: Optional["asyncio.Future[None]"] = None
        self._paused = False
        self._closed = False
        self._close_told = False
        self._exc: Optional[BaseException] = None
        self._accept = accept
        self._reject = reject
        self._accepted = accept is None
        self._on_close = on_close
        self.close_code: Optional[int] = None
        self.close_reason = ""
        #: the subprotocol agreed; before accept(), the one the route's or listener's
        #: ``subprotocols=`` selected, which accept() will answer with (None: none)
        self.subprotocol: Optional[str] = (conn.subprotocol if conn.subprotocol is not None
                                           else conn._auto_protocol)
        conn.handler = self._on_event
        conn._msg_sink = self._on_message

    # ------------------------------------------------------------------ events (loop side)
    def _on_message(self, data: bytes, opcode: int, compressed: bool) -> None:
        """EV_WS_MSG, straight from the Manager's dispatch (``Connection._msg_sink``): once per
        message, so it builds the WSMessage inline and wakes a waiting recv() once per batch."""
        m = _new_message(WSMessage)
        if opcode == OP_TEXT:
            m.type = _TEXT
            m.data = data.decode()  # the C core checked it is UTF-8
        else:
            m.type = _BINARY
            m.data = data
        m.extra = None
        m.compressed = compressed
        q = self._queue
        q.append(m)
        w = self._wake
        if w is not None:
            self._wake = None
            if not w.done():  # not timed out meanwhile
                w.set_result(None)
        if len(q) >= self.max_queue and not self._paused:
            self._paused = True
            self.conn.pause_reading()

    def _on_event(self, conn: Connection, ev: int, data: Any) -> None:
        if ev == EV_WS_MSG:  # only if delivered through the handler, not the sink
            self._on_message(bytes(data.data), data.opcode, data.compressed)
        elif ev == EV_DRAIN:
            self._wake_drains(None)
        elif ev == EV_WS_CTL:
            if data.opcode == OP_PONG:
                self._pong(data.data)
        elif ev == EV_CLOSE:
            self._on_closed()
        elif ev == EV_WS_OPEN:
            self.subprotocol = conn.subprotocol
            if self._opened is not None and not self._opened.done():
                self._opened.set_result(None)
        elif ev == EV_ERROR:
            err = conn.error if conn.error is not None else ConnectionError(str(data))
            if self._exc is None:
                self._exc = err
            if self._opened is not None and not self._opened.done():
                self._opened.set_exception(err)

    def _on_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        c = self.conn
        if c.close_code is not None:
            self.close_code, self.close_reason = c.close_code, c.close_reason
        elif self.close_code is None:
            self.close_code = 1006
        if self.close_code not in _NORMAL and self._exc is None:
            self._exc = closed_error(self.close_code, self.close_reason)
        w = self._waiter
        self._wake = None
        if w is not None and not w.done():
            w.set_result(None)
        exc = closed_error(self.close_code, self.close_reason)
        self._wake_drains(exc)
        for fut, _t in self._pings.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pings.clear()
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(
                c.error if c.error is not None else
                ConnectionError("the connection closed during the handshake"))
        if self._closed_fut is not None and not self._closed_fut.done():
            self._closed_fut.set_result(None)
        if self._on_close is not None:
            cb, self._on_close = self._on_close, None
            cb()

    def _wake_drains(self, exc: Optional[BaseException]) -> None:
        ds, self._drains = self._drains, []
        for f in ds:
            if not f.done():
                if exc is None:
                    f.set_result(None)
                else:
                    f.set_exception(exc)

    def _pong(self, payload: bytes) -> None:
        if payload not in self._pings:
            return  # the heartbeat's, or unsolicited
        now = time.monotonic()
        # a pong answers its ping and every earlier one (RFC 6455 §5.5.3)
        while self._pings:
            key, (fut, t0) = self._pings.popitem(last=False)
            if not fut.done():
                fut.set_result(now - t0)
            if key == payload:
                break
        if not self._pings and not self.conn.closed:
            self._control_events(False)

    def _control_events(self, on: bool) -> None:
        loop = self.conn._mgr._loop
        if loop is not None and not self.conn.closed:
            lib.pyws_set_control_events(loop, self.conn.id, 1 if on else 0)

    # ------------------------------------------------------------------ handshake (server)
    def accept(self, protocol: Optional[str] = None,
               headers: Optional[Mapping[str, str]] = None) -> Awaitable[None]:
        """Complete the handshake (101) now, optionally selecting ``protocol`` (one the client
        offered; left None, the one the route's or listener's ``subprotocols=`` selected, if
        any) and adding response ``headers``. A handler that does neither this nor
        :meth:`reject` is accepted at its first receive or send; accepting twice does nothing.

        The handshake is done when the call returns (the 101 is queued; nothing is waited
        for), but what it returns may be awaited, so Gobstopper's and Starlette's ``await
        websocket.accept()`` works as written. Raises :class:`pyws.HandshakeError` if the
        request cannot be upgraded."""
        if self._accepted:
            return _DONE
        self._accepted = True
        assert self._accept is not None
        self._accept(protocol, headers)
        self.subprotocol = self.conn.subprotocol
        return _DONE

    def reject(self, status: int = 403, body: Payload = b"Forbidden",
               headers: Optional[Mapping[str, str]] = None) -> None:
        """Refuse the upgrade with an HTTP response; only before :meth:`accept`."""
        if self._accepted or self._reject is None:
            raise PyWSError("reject() is only possible before accept()")
        self._accepted = True
        self._reject(status, body, headers)

    def _ensure_open(self) -> None:
        if not self._accepted:
            self.accept()

    # ------------------------------------------------------------------ receiving
    def _take(self) -> WSMessage:
        m = self._queue.popleft()
        if self._paused and len(self._queue) <= self.max_queue // 2:
            self._paused = False
            self.conn.resume_reading()
        return m

    async def recv(self, timeout: Optional[float] = _DEFAULT) -> Optional[WSMessage]:
        """The next message, or None once the connection has closed (and every message that
        came before the close was read). ``timeout`` (seconds; default ``ws.timeout``, None
        unless given to aconnect): raise ``TimeoutError`` if nothing arrives in time. Safe to
        cancel: no message is lost."""
        if self._waiter is not None:  # first: a message queued meanwhile is the waiter's
            raise RuntimeError("recv(): another coroutine is already waiting for the next "
                               "message of this WebSocket; only one may wait at a time")
        if self._queue:
            return self._take()
        if self._closed:
            return None
        if timeout is _DEFAULT:
            timeout = self.timeout
        if not self._accepted:
            self.accept()
        fut: "asyncio.Future[None]" = self._loop.create_future()
        self._waiter = self._wake = fut
        h = None
        if timeout is not None:
            h = self._loop.call_later(timeout, _expire, fut, f"no message within {timeout} s")
        try:
            await fut
        finally:
            self._waiter = self._wake = None
            if h is not None:
                h.cancel()
        if self._queue:
            return self._take()
        return None

    def __aiter__(self) -> "AsyncWebSocket":
        return self

    async def __anext__(self) -> WSMessage:
        q = self._queue
        if q and self._waiter is None:  # recv()'s fast path inlined: no coroutine more
            m = q.popleft()
            if self._paused and len(q) <= self.max_queue // 2:
                self._paused = False
                self.conn.resume_reading()
            return m
        m2 = await self.recv(None)
        if m2 is None:
            raise StopAsyncIteration
        return m2

    async def receive(self, timeout: Optional[float] = _DEFAULT) -> WSMessage:
        """aiohttp's ``receive()``: the next message; once closed, a CLOSE message (``data``
        the close code, ``extra`` the reason) the first time, then CLOSED. ``timeout``:
        ``TimeoutError`` (``asyncio.TimeoutError``) after that many seconds."""
        m = await self.recv(timeout)
        if m is not None:
            return m
        if not self._close_told:
            self._close_told = True
            return WSMessage(WSMsgType.CLOSE, self.close_code, self.close_reason)
        return WSMessage(WSMsgType.CLOSED, None, None)

    async def receive_str(self, *, timeout: Optional[float] = _DEFAULT) -> str:
        """The next message, which must be text (``TypeError`` otherwise)."""
        m = await self.receive(timeout)
        if m.type != WSMsgType.TEXT:
            raise TypeError(f"received message {m.type.name}:{m.data!r} is not str")
        return str(m.data)

    async def receive_bytes(self, *, timeout: Optional[float] = _DEFAULT) -> bytes:
        """The next message, which must be binary (``TypeError`` otherwise)."""
        m = await self.receive(timeout)
        if m.type != WSMsgType.BINARY:
            raise TypeError(f"received message {m.type.name}:{m.data!r} is not bytes")
        return bytes(m.data)

    async def receive_json(self, *, loads: Callable[[Any], Any] = json.loads,
                           timeout: Optional[float] = _DEFAULT) -> Any:
        """The next text message parsed with ``loads``."""
        return loads(await self.receive_str(timeout=timeout))

    # ------------------------------------------------------------------ sending
    async def _backpressure(self) -> None:
        if self.conn.above_high_water:
            await self._drained()

    def _drained(self) -> "asyncio.Future[None]":
        """A future set at the next EV_DRAIN (or failed when the connection closes)."""
        fut: "asyncio.Future[None]" = self._loop.create_future()
        self._drains.append(fut)
        return fut

    async def send(self, data: Union[Sendable, WSMessage], binary: Optional[bool] = None,
                   compress: Optional[bool] = None) -> None:
        """Send a whole message: a str as text, bytes-like as binary, a received message with
        its own type (``binary=True``/``False`` overrides); waits while the write buffer is
        above the high-water mark. ``compress``: see :meth:`pyws.Connection.ws_send`."""
        if binary is None and compress is None and self._accepted:
            # the hot path (an echo's ``await ws.send(msg)``): one C call queues the message
            # and says whether the queue is above its high-water mark
            t = type(data)
            d: Any = data
            if t is WSMessage:
                d = data.data  # type: ignore[union-attr]
                t = type(d)
            op = OP_BINARY if t is bytes else OP_TEXT if t is str else 0
            conn = self.conn
            mgr = conn._mgr
            loop = mgr._loop
            if op and mgr._owner == _get_ident() and loop is not None and not conn.closed:
                if op == OP_TEXT:
                    d = d.encode()
                rc = _pyws_send(loop, conn.id, op, d, len(d), _SEND_HW)
                if rc == 0:
                    return
                if rc == 1:
                    await self._drained()
                    return
                conn._fail(rc, "ws_send")
        if not self._accepted:
            self.accept()
        conn = self.conn
        if type(data) is WSMessage and binary is None:
            d = data.data
            conn.ws_send(d, OP_TEXT if type(d) is str else OP_BINARY, True, compress)
        else:
            conn.send(data, binary, compress)  # type: ignore[arg-type]
        if conn.above_high_water:
            await self._backpressure()

    async def send_text(self, text: str, compress: Optional[bool] = None) -> None:
        """Send a text message (waits while above the high-water mark)."""
        if not self._accepted:
            self.accept()
        self.conn.ws_send(text, OP_TEXT, True, compress)
        await self._backpressure()

    send_str = send_text

    async def send_bytes(self, data: Union[bytes, bytearray, memoryview],
                         compress: Optional[bool] = None) -> None:
        """Send a binary message (waits while above the high-water mark)."""
        if not self._accepted:
            self.accept()
        self.conn.ws_send(data, OP_BINARY, True, compress)
        await self._backpressure()

    #: Cello's name for :meth:`send_bytes`.
    send_binary = send_bytes

    async def send_json(self, data: Any, compress: Optional[bool] = None, *,
                        dumps: Callable[[Any], str] = json.dumps) -> None:
        """Send ``dumps(data)`` as a text message."""
        await self.send_text(dumps(data), compress)

    async def send_fragments(self, fragments: Iterable[Sendable], binary: Optional[bool] = None,
                             compress: Optional[bool] = None) -> None:
        """Send one message made of the pieces in ``fragments``, one frame each (see
        :meth:`pyws.Connection.send_fragments`), then wait while above the high-water mark."""
        if not self._accepted:
            self.accept()
        self.conn.send_fragments(fragments, binary, compress)
        await self._backpressure()

    async def drain(self) -> None:
        """Wait until the write buffer is back under its high-water mark (at once if it is)."""
        await self._backpressure()

    async def ping(self, data: Payload = b"", timeout: Optional[float] = None) -> float:
        """Send a ping and wait for its pong; returns the round trip in seconds. ``data``
        (at most 125 bytes) defaults to a counter unique on this connection. ``timeout``:
        ``TimeoutError`` after that many seconds. Raises ConnectionClosed if the connection
        closes first."""
        if not self._accepted:
            self.accept()
        if not data:
            self._ping_seq += 1
            payload = struct.pack("!I", self._ping_seq)
        else:
            payload = data.encode() if isinstance(data, str) else bytes(data)
        if payload in self._pings:
            raise ValueError("a ping with this payload is already waiting for its pong")
        if not self._pings:
            self._control_events(True)
        fut: "asyncio.Future[float]" = self._loop.create_future()
        self._pings[payload] = (fut, time.monotonic())
        try:
            self.conn.ping(payload)
        except BaseException:
            self._pings.pop(payload, None)
            raise
        if timeout is None:
            return await fut
        return await asyncio.wait_for(fut, timeout)

    async def pong(self, data: Payload = b"") -> None:
        """Send an unsolicited pong."""
        self.conn.pong(data)

    # ------------------------------------------------------------------ closing
    async def close(self, code: int = 1000, reason: Union[str, bytes] = "", *,
                    message: Optional[Union[str, bytes]] = None,
                    timeout: Optional[float] = None) -> bool:
        """Start the close handshake with ``code`` and ``reason`` (str, or UTF-8 bytes;
        aiohttp's keyword ``message`` is the same) and wait until the connection has closed
        (the peer answered, or ``close_timeout`` passed and it was dropped). Returns False if
        it was already closed. A reason over 123 bytes (UTF-8) raises ``ValueError``, as does
        a code that may not be sent; both are checked before anything is closed."""
        if message is not None:
            reason = message
        check_close_code(code, True)
        r = close_reason_bytes(reason)
        if not isinstance(reason, str):
            reason = r.decode("utf-8")
        if self._closed:
            return False
        if not self._accepted:
            self.accept()
        self.conn.close(code, reason)  # first: from a foreign thread it raises, changing nothing
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        await self.wait_closed(timeout)
        return True

    async def wait_closed(self, timeout: Optional[float] = None) -> None:
        """Wait until the connection has closed."""
        if self._closed:
            return
        if self._closed_fut is None:
            self._closed_fut = self._loop.create_future()
        fut = self._closed_fut
        if timeout is None:
            await asyncio.shield(fut)
        else:
            await asyncio.wait_for(asyncio.shield(fut), timeout)

    def abort(self) -> None:
        """Drop the TCP connection now, without a close handshake."""
        self.conn.abort()

    # ------------------------------------------------------------------ topics
    def subscribe(self, topic: Union[str, bytes]) -> bool:
        """Subscribe to ``topic`` (``publish`` reaches every subscriber, framed once in C)."""
        self._ensure_open()
        return self.conn.subscribe(topic)

    def unsubscribe(self, topic: Union[str, bytes]) -> bool:
        """Leave ``topic``."""
        return self.conn.unsubscribe(topic)

    def publish(self, topic: Union[str, bytes], data: Union[Sendable, WSMessage],
                exclude_self: bool = False, compress: Optional[bool] = None,
                binary: Optional[bool] = None) -> int:
        """Send ``data`` to every subscriber of ``topic`` (optionally not this one); returns
        how many it was queued on. Does not wait for anyone's buffer."""
        return self.conn._mgr.publish(topic, data,  # type: ignore[arg-type]
                                      self.conn if exclude_self else None, binary, compress)

    # ------------------------------------------------------------------ state
    @property
    def closed(self) -> bool:
        """True once the connection has closed (aiohttp: also while the close handshake is
        under way, see ``close_code``)."""
        return self._closed or self.conn.closed

    @property
    def connected(self) -> bool:
        """True while open: accepted (or connected) and not closed."""
        return self._accepted and not self._closed and not self.conn.closed and \
            self.conn.is_websocket

    @property
    def protocol(self) -> Optional[str]:
        """The subprotocol agreed (aiohttp's name for ``subprotocol``)."""
        return self.subprotocol

    def exception(self) -> Optional[BaseException]:
        """What ended the connection abnormally (a :class:`pyws.ConnectionClosed` for a close
        other than 1000/1001, a handshake or connect error), or None."""
        return self._exc

    @property
    def remote_addr(self) -> str:
        """The peer's address as ``"ip:port"``."""
        return self.conn.remote_addr

    @property
    def extensions(self) -> str:
        """The extensions agreed in the handshake (``"permessage-deflate; ..."``) or ``""``."""
        return self.conn.extensions

    @property
    def write_buffer_size(self) -> int:
        """Bytes queued and not yet written."""
        return self.conn.write_buffer_size

    @property
    def response(self) -> Any:
        """Client side: the server's 101 response (:class:`pyws.HttpMessage`)."""
        return self.conn.response

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open" if self._accepted else "pending"
        where = self.request.path if self.request is not None else self.conn.remote_addr
        return f"<AsyncWebSocket {where} {state}>"

