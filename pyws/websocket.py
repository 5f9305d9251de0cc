"""The ``ws`` object of generator-style handlers, the waitables they yield, and the driver that
resumes each handler when what it waits for has happened."""
from __future__ import annotations

import collections
import json
import logging
from typing import (TYPE_CHECKING, Any, Callable, Deque, Dict, Generator, Iterable, Mapping,
                    Optional, Union)

from ._send import Payload, Sendable
from .connection import Connection
from .constants import EV_CLOSE, EV_DRAIN, EV_WS_MSG, OP_BINARY, OP_TEXT, State
from .errors import ConnectionClosed, HandshakeError, PyWSError, closed_error
from .message import Message, check_close_code, close_reason_bytes
from .request import Request

if TYPE_CHECKING:  # pragma: no cover
    from .app import App
    from .stats import ConnStats
    from .manager import Timer

log = logging.getLogger("pyws")

#: What a generator handler is: it yields waitables and gets their results sent back.
HandlerGen = Generator[Any, Any, Any]

_NOTHING: Any = object()


class Waitable:
    """Base of what handlers yield: ``ws.recv()``, ``ws.sleep()``, ``ws.drain()``."""

    __slots__ = ("timer",)

    def __init__(self) -> None:
        self.timer: Optional["Timer"] = None

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Recv(Waitable):
    """``msg = yield ws.recv(timeout=None)``: the next :class:`Message`, or None once the peer
    has closed; raises ``TimeoutError`` in the handler after ``timeout`` seconds."""

    __slots__ = ("timeout",)

    def __init__(self, timeout: Optional[float]) -> None:
        super().__init__()
        self.timeout = timeout


#: ws.recv() without a timeout carries no state (no timer), so one object serves everyone.
_RECV_FOREVER = Recv(None)


class Sleep(Waitable):
    """``yield ws.sleep(seconds)``: resume after ``seconds`` (raises ``ConnectionClosed`` in the
    handler if the connection closes meanwhile)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds


class Drain(Waitable):
    """``yield ws.drain()``: resume once the write buffer is under ``write_high_water``."""

    __slots__ = ()


class WebSocket:
    """One WebSocket as a generator handler sees it.

    ``params`` (path parameters), ``request`` (:class:`pyws.Request`: headers, query, cookies,
    remote address), ``connected``, ``close_code``, ``close_reason``, ``subprotocol``,
    ``state`` (a dict for your own per-connection data: the name was taken first, so the
    connection's :class:`pyws.State` is ``connection_state``); attributes of your own may be
    set too (``ws.user = user``), as Gobstopper's guide does. Waiting is yielded
    (``yield ws.recv()``, ``yield ws.sleep(s)``, ``yield ws.drain()``); sending is a plain call.
    Everything runs on the loop's thread.

    The connection's state is the C core's (``connection_state``, ``conn.closed``); this
    object adds only what the application decided: whether it accepted or rejected the
    upgrade (``_accepted``), and what its handler has been told about the end.
    """

    __slots__ = ("app", "conn", "request", "params", "state", "subprotocol", "_accepted", "_gen",
                 "_waiting", "_queue", "_paused", "_told_none", "_told_closed", "close_code",
                 "close_reason", "error", "__weakref__", "__dict__")

    def __init__(self, app: "App", conn: Connection, request: Request,
                 opened: Optional[bool] = None) -> None:
        self.app = app
        self.conn = conn
        self.request = request
        self.params = request.params
        self.state: Dict[str, Any] = {}
        #: the subprotocol agreed; before accept(), the one the route's or listener's
        #: ``subprotocols=`` selected, which accept() will answer with (None: none)
        self.subprotocol: Optional[str] = conn._auto_protocol
        #: the application's answer to the upgrade: None = not yet, True = accepted (101
        #: sent), False = rejected (reject(), or the upgrade was invalid)
        self._accepted: Optional[bool] = None
        self._gen: Optional[HandlerGen] = None
        self._waiting: Optional[Waitable] = None
        self._queue: Deque[Message] = collections.deque()
        self._paused = False
        # what the handler has been told about the end (see Driver.step): ws.recv() gave None,
        # a wait raised ConnectionClosed
        self._told_none = False
        self._told_closed = False
        self.close_code: Optional[int] = None
        self.close_reason = ""
        #: client sockets from App.connect that failed to open: why
        self.error: Optional[Exception] = None
        if opened is not None:  # a client socket: the handshake is already decided
            self._accepted = opened
            self.subprotocol = conn.subprotocol

    # ------------------------------------------------------------------ handshake
    def accept(self, protocol: Optional[str] = None,
               headers: Optional[Mapping[str, str]] = None) -> None:
        """Complete the handshake (101), optionally selecting ``protocol`` (one the client
        offered; see ``ws.request.headers["sec-websocket-protocol"]``; left None, the one the
        route's or listener's ``subprotocols=`` selected, if any) and adding response
        ``headers``. Handlers that neither accept nor reject before their first yield are
        accepted automatically. ``ws.subprotocol`` is then the one agreed."""
        if self._accepted:
            return
        if self._accepted is not None:
            raise PyWSError("accept(): the handshake was already answered")
        try:
            self.conn.ws_upgrade(self.request.message, protocol=protocol, headers=headers)
        except HandshakeError:
            self._accepted = False
            raise
        self._accepted = True
        self.subprotocol = self.conn.subprotocol

    def reject(self, status: int = 403, body: Union[str, bytes] = b"",
               headers: Optional[Mapping[str, str]] = None) -> None:
        """Refuse the upgrade with an HTTP response (``status``, ``body``); the connection
        closes once it is written. Only before :meth:`accept`."""
        if self._accepted is not None:
            raise PyWSError("reject() is only possible before accept()")
        self._accepted = False
        self.conn.reply(status, body, headers)
        self.conn.drain()

    def _ensure_open(self) -> None:
        if self._accepted is None:
            self.accept()
        elif not self._accepted:
            raise closed_error(self.close_code if self.close_code is not None else 1006,
                                   self.close_reason or "the WebSocket is not open")

    # ------------------------------------------------------------------ waiting
    def recv(self, timeout: Optional[float] = None) -> Recv:
        """Yield this: ``msg = yield ws.recv()`` gives the next :class:`Message`, or None once
        the peer has closed. With ``timeout`` (seconds), ``TimeoutError`` is raised in the
        handler if nothing arrives in time."""
        return _RECV_FOREVER if timeout is None else Recv(timeout)

    def sleep(self, seconds: float) -> Sleep:
        """Yield this: ``yield ws.sleep(0.5)`` resumes the handler after ``seconds``."""
        return Sleep(seconds)

    def drain(self) -> Drain:
        """Yield this: ``yield ws.drain()`` resumes once the write buffer is back under its
        high-water mark (at once if it already is)."""
        return Drain()

    # ------------------------------------------------------------------ sending
    def send_text(self, text: str, compress: Optional[bool] = None) -> None:
        """Send a text message. With permessage-deflate on, ``compress=False`` sends this one
        uncompressed and ``compress=True`` compresses it even under the threshold."""
        if self._accepted is not True:
            self._ensure_open()
        self.conn.ws_send(text, OP_TEXT, True, compress)

    def send_bytes(self, data: Union[bytes, bytearray, memoryview],
                   compress: Optional[bool] = None) -> None:
        """Send a binary message (``compress``: see :meth:`send_text`)."""
        if self._accepted is not True:
            self._ensure_open()
        self.conn.ws_send(data, OP_BINARY, True, compress)

    #: Cello's name for :meth:`send_bytes`.
    send_binary = send_bytes

    def send_json(self, obj: Any, dumps: Callable[[Any], str] = json.dumps,
                  compress: Optional[bool] = None) -> None:
        """Send ``dumps(obj)`` as a text message."""
        self.send_text(dumps(obj), compress)

    def send(self, data: Sendable, binary: Optional[bool] = None,
             compress: Optional[bool] = None) -> None:
        """Send a whole message: a str as text, bytes-like as binary, a :class:`Message` with
        its own opcode (``ws.send(msg)`` echoes text as text). ``binary=True`` sends it as
        binary, ``binary=False`` as text. ``compress``: see :meth:`send_text`. The same as
        :meth:`pyws.Connection.send`."""
        if self._accepted is not True:
            self._ensure_open()
        if type(data) is Message and binary is None:
            # the echo idiom, ws.send(msg), without a call more: what outgoing() gives for it
            self.conn.ws_send(data.data, data.opcode, True, compress)
        else:
            self.conn.send(data, binary, compress)

    def send_fragments(self, fragments: Iterable[Sendable], binary: Optional[int] = None,
                       compress: Optional[bool] = None, *, op: Optional[int] = None) -> None:
        """Send one message made of the pieces in ``fragments``, one frame each; ``binary``
        None makes it what its first piece is. See :meth:`pyws.Connection.send_fragments`."""
        if self._accepted is not True:
            self._ensure_open()
        self.conn.send_fragments(fragments, binary, compress, op=op)

    @property
    def extensions(self) -> str:
        """The extensions agreed in the handshake (``"permessage-deflate; ..."``) or ``""``."""
        return self.conn.extensions

    def ping(self, data: Payload = b"") -> None:
        """Send a ping (payload at most 125 bytes)."""
        self._ensure_open()
        self.conn.ping(data)

    def close(self, code: int = 1000, reason: Union[str, bytes] = "") -> None:
        """Start the close handshake with ``code`` and ``reason`` (str, or UTF-8 bytes; at
        most 123 bytes: ``ValueError`` past that). Before the handshake was answered, the
        connection is accepted and then closed, so the client sees the code."""
        r = close_reason_bytes(reason)
        check_close_code(code, True)
        if isinstance(reason, (bytes, bytearray, memoryview)):
            reason = r.decode("utf-8")
        if self._accepted is None:
            self.accept()
        if self._accepted and not self.conn.closed:
            self.conn.close(code, reason)
            if self.close_code is None:
                self.close_code = code
                self.close_reason = reason

    # ------------------------------------------------------------------ topics
    def subscribe(self, topic: Union[str, bytes]) -> bool:
        """Subscribe to ``topic`` (``app.publish`` reaches every subscriber)."""
        self._ensure_open()
        return self.conn.subscribe(topic)

    def unsubscribe(self, topic: Union[str, bytes]) -> bool:
        """Leave ``topic``."""
        return self.conn.unsubscribe(topic)

    def publish(self, topic: Union[str, bytes], data: Sendable,
                exclude_self: bool = False, compress: Optional[bool] = None,
                binary: Optional[bool] = None) -> int:
        """``app.publish(topic, data)``, optionally leaving this connection out; ``data`` and
        ``binary`` as for :meth:`send`."""
        return self.app.publish(topic, data, self if exclude_self else None, compress, binary)

    # ------------------------------------------------------------------ state
    @property
    def rejected(self) -> bool:
        """True once the upgrade was refused (``reject()`` or an invalid handshake)."""
        return self._accepted is False

    @property
    def connected(self) -> bool:
        """True while the WebSocket is open (accepted and not closed)."""
        return self._accepted is True and not self.conn.closed and self.close_code is None

    @property
    def connection_state(self) -> State:
        """The connection's :class:`pyws.State`, from the C core (see ``Connection.state``).
        (``ws.state`` is your own per-connection dict.)"""
        return self.conn.state

    @property
    def remote_addr(self) -> str:
        """The peer's address as ``"ip:port"``."""
        return self.request.remote_addr

    @property
    def write_buffer_size(self) -> int:
        """Bytes queued and not yet written."""
        return self.conn.write_buffer_size

    def stats(self) -> Optional["ConnStats"]:
        """This connection's counters: see :meth:`Connection.stats` (None once closed)."""
        return self.conn.stats()

    def __repr__(self) -> str:
        state = ("rejected" if self._accepted is False else "closed" if self.conn.closed
                 else "open" if self._accepted else "pending")
        return f"<WebSocket {self.request.path} {state}>"


class Driver:
    """Runs generator handlers: starts them, and resumes each one when what it yielded is
    ready. Lives inside the App; everything happens on the loop's thread."""

    def __init__(self, app: "App", max_queue: int) -> None:
        self.app = app
        self.max_queue = max(1, max_queue)

    def start(self, ws: WebSocket, fn: Callable[[WebSocket], Any]) -> None:
        try:
            result = fn(ws)
        except Exception as exc:
            self.finished(ws, exc)
            return
        if isinstance(result, Generator):
            ws._gen = result
            self.step(ws, None, None)
        else:
            self.finished(ws, None)  # a plain function: it ran once

    def step(self, ws: WebSocket, value: Any, exc: Optional[BaseException],
             yielded: Any = _NOTHING) -> None:
        """Resume ws's generator with value (or exc), or start from what it just ``yielded``,
        and keep resuming while what it yields is ready at once. Returns when it waits or
        ends.

        The loop ends by construction. Each pass resumes the generator because:

        - a queued message was taken: the queue only shrinks here (messages are appended by
          poll()'s dispatch, never during a step);
        - the handler learns that its WebSocket is gone (closed, closing, rejected): at most
          twice in its life, ``ws.recv()`` giving None once and any wait raising
          ConnectionClosed once; waiting again after both stops it (:meth:`_gone`);
        - the automatic accept failed (HandshakeError): once, the upgrade is then rejected;
        - it yielded something that is not a waitable (TypeError), or a ``ws.drain()`` that
          is already satisfied: repeated only by a handler that loops on them itself, as
          ``while True: pass`` would.

        (The old loop resumed a handler that kept waiting on a gone connection with one
        ConnectionClosed after another and needed a counter to give up.)
        """
        gen = ws._gen
        if gen is None:
            return
        while True:
            if yielded is not _NOTHING:
                w, yielded = yielded, _NOTHING
            else:
                try:
                    w = gen.throw(exc) if exc is not None else gen.send(value)
                except StopIteration:
                    self.finished(ws, None)
                    return
                except Exception as e:
                    self.finished(ws, e)
                    return
            value, exc = None, None
            if ws._accepted is None:
                try:
                    ws.accept()
                except HandshakeError as e:
                    exc = e
                    continue
            if isinstance(w, Recv):
                if ws._queue:
                    value = ws._queue.popleft()
                    if ws._paused and len(ws._queue) <= self.max_queue // 2:
                        ws._paused = False
                        ws.conn.resume_reading()
                    continue
                if not ws.connected:
                    if not ws._told_none:
                        ws._told_none = True
                        continue  # None: the peer has closed
                    exc = self._gone(ws, gen)
                    if exc is None:
                        return
                    continue
                ws._waiting = w
                if w.timeout is not None:
                    w.timer = self.app.mgr.timer(w.timeout, lambda: self._timed_out(ws, w))
                return
            if isinstance(w, Sleep):
                if not ws.connected:
                    exc = self._gone(ws, gen)
                    if exc is None:
                        return
                    continue
                ws._waiting = w
                w.timer = self.app.mgr.timer(max(0.0, w.seconds), lambda: self._woke(ws, w))
                return
            if isinstance(w, Drain):
                if not ws.connected:
                    exc = self._gone(ws, gen)
                    if exc is None:
                        return
                    continue
                if not ws.conn.above_high_water:  # the connection's own mark, set in C
                    continue
                ws._waiting = w
                return
            exc = TypeError(f"a handler yields ws.recv(), ws.sleep() or ws.drain(), not {w!r}; "
                            "use `yield from` to call another generator")

    @staticmethod
    def _gone(ws: WebSocket, gen: HandlerGen) -> Optional[BaseException]:
        """The handler waits on a WebSocket that is gone: ConnectionClosed to raise in it the
        first time; after that (it caught the exception and waited again) stop it and return
        None."""
        if not ws._told_closed:
            ws._told_closed = True
            return closed_error(ws.close_code, ws.close_reason)
        ws._gen = None
        log.warning("pyws: handler for %s kept waiting after its connection closed; stopped it",
                    ws.request.path)
        try:
            gen.close()
        except Exception:
            log.exception("pyws: handler for %s raised while being stopped", ws.request.path)
        return None

    def _timed_out(self, ws: WebSocket, w: Recv) -> None:
        if ws._waiting is w:
            ws._waiting = None
            w.timer = None
            self.step(ws, None, TimeoutError(f"no message within {w.timeout} s"))

    def _woke(self, ws: WebSocket, w: Sleep) -> None:
        if ws._waiting is w:
            ws._waiting = None
            w.timer = None
            self.step(ws, None, None)

    # ------------------------------------------------------------------ events
    def bind(self, ws: WebSocket) -> None:
        """Route the connection's events straight to this socket (no App-level lookup)."""
        message, closed, drained = self.message, self.closed, self.drained

        def on_event(conn: Connection, ev: int, data: Any) -> None:
            if ev == EV_WS_MSG:
                message(ws, data)
            elif ev == EV_CLOSE:
                closed(ws)
            elif ev == EV_DRAIN:
                drained(ws)

        ws.conn.handler = on_event

    def message(self, ws: WebSocket, msg: Message) -> None:
        w = ws._waiting
        if w is _RECV_FOREVER:
            # the hot path: a handler parked on recv() gets the message and, most often,
            # parks on recv() again; anything else takes the general path in step()
            gen = ws._gen
            ws._waiting = None
            if gen is None:
                return
            try:
                nxt = gen.send(msg)
            except StopIteration:
                self.finished(ws, None)
                return
            except Exception as e:
                self.finished(ws, e)
                return
            if nxt is _RECV_FOREVER and not ws._queue and ws._accepted is True and \
                    ws.close_code is None:
                ws._waiting = nxt
                return
            self.step(ws, None, None, nxt)
            return
        if isinstance(w, Recv):
            ws._waiting = None
            w._cancel()
            self.step(ws, msg, None)
            return
        if ws._gen is None:
            return  # the handler has finished: nobody will read it
        # read later, after this batch: a large message's view would have expired by then
        ws._queue.append(msg.detach())
        if len(ws._queue) >= self.max_queue and not ws._paused:
            ws._paused = True
            ws.conn.pause_reading()

    def drained(self, ws: WebSocket) -> None:
        w = ws._waiting
        if isinstance(w, Drain):
            ws._waiting = None
            self.step(ws, None, None)

    def closed(self, ws: WebSocket) -> None:
        if ws.conn.close_code is not None:  # code and reason of one frame, never a mix
            ws.close_code, ws.close_reason = ws.conn.close_code, ws.conn.close_reason
        else:
            ws.close_code = ws.close_code or 1006
        w = ws._waiting
        ws._waiting = None
        if w is not None:
            w._cancel()
            if isinstance(w, Recv) and not ws._queue:
                ws._told_none = True
                self.step(ws, None, None)
            else:
                ws._told_closed = True
                self.step(ws, None, closed_error(ws.close_code, ws.close_reason))
        if ws._gen is not None:
            # still suspended somewhere: end it so its finally blocks run
            gen, ws._gen = ws._gen, None
            try:
                gen.close()
            except Exception:
                log.exception("pyws: handler for %s raised while closing", ws.request.path)
        self.app._closed(ws)

    def finished(self, ws: WebSocket, exc: Optional[BaseException]) -> None:
        ws._gen = None
        ws._waiting = None
        ws._queue.clear()
        if ws._paused:  # nobody reads any more: read again, or the close reply is never seen
            ws._paused = False
            ws.conn.resume_reading()
        code, reason = 1000, ""
        if exc is not None and not isinstance(exc, ConnectionClosed):
            log.error("pyws: WebSocket handler for %s raised; closing with 1011",
                      ws.request.path, exc_info=exc)
            code, reason = 1011, "internal error"
        if ws._accepted is None:  # ended before answering the handshake: accept, then close
            try:
                ws.accept()
            except HandshakeError:
                return
        if ws._accepted and not ws.conn.closed:
            ws.conn.close(code, reason)
