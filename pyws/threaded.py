"""The blocking driver: plain (non-generator, non-async) WebSocket handlers run in a bounded
pool of threads with a blocking ``ws``, while the loop stays on its one thread and never waits
for them.

``msg = ws.recv()`` blocks the handler's thread only: the loop queues the connection's messages
for it (bounded: past ``max_queue`` reading pauses, TCP pushes back on the peer). Everything a
handler does to a connection (send, close, subscribe, publish, accept, ...) is handed to the
loop's thread with ``Manager.call_soon_threadsafe`` (the C wakeup queue), in order. A send
returns once handed over (its payload is built on the handler's thread); it first waits while
the write buffer is above ``write_high_water`` (backpressure, as ``await ws.send()`` does)
and raises ``ConnectionClosed`` once the connection is closing. Every other call waits for its
result, so its errors are raised where it was made.

Each open blocking connection holds one thread for its whole life, so ``App(threads=)`` is the
number of blocking connections served at once. Past it, new connections wait (not yet
accepted) in a queue of ``thread_queue`` places for at most ``thread_queue_timeout`` seconds;
past that, or when the queue is full, they are refused with 503 and a log line.
"""
from __future__ import annotations

import collections
import inspect
import json
import logging
import threading
import time
from typing import (TYPE_CHECKING, Any, Callable, Deque, Dict, Iterator, List, Mapping,
                    Optional, Set, Tuple, Union)

from ._lib import lib
from ._send import Sendable, outgoing
from .compression import send_flags
from .connection import Connection
from .constants import EV_CLOSE, EV_CLOSE_HELD, EV_DRAIN, EV_WS_MSG, OP_BINARY, OP_TEXT, State
from .errors import ConnectionClosed, PyWSError, QueueFull, closed_error
from .message import Message
from .request import Request
from .websocket import WebSocket

if TYPE_CHECKING:  # pragma: no cover
    from .app import App

__all__ = ["ThreadedWebSocket", "ThreadPool", "DEFAULT_THREADS"]

log = logging.getLogger("pyws")

#: ``App(threads=)``'s default: blocking connections served at once (one thread each).
DEFAULT_THREADS = 128

_get_ident = threading.get_ident
_pyws_send = lib.pyws_send
_SEND_HW = lib.PYWS_SEND_FIN | lib.PYWS_SEND_REPORT_HW  # queue a whole message; 1 = above HW
_SHUTDOWN = (1001, "server shutting down")


class _Call:
    """One function handed to the loop thread; the calling thread waits on ``lock``."""

    __slots__ = ("fn", "args", "lock", "value", "exc", "done")

    def __init__(self, fn: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.lock = threading.Lock()
        self.lock.acquire()
        self.value: Any = None
        self.exc: Optional[BaseException] = None
        self.done = False


class ThreadedWebSocket(WebSocket):
    """The ``ws`` of a blocking handler (a plain ``def handler(ws)`` with no ``yield``).

    The same object and attributes as :class:`pyws.WebSocket` (``params``, ``request``,
    ``state``, ``connected``, ``close_code``, ...), with blocking waits:

    - ``ws.recv(timeout=None)``: the next :class:`pyws.Message`; None once the connection has
      closed (and every message before the close was read); waiting again after that raises
      :class:`pyws.ConnectionClosed`. ``timeout`` (seconds) raises ``TimeoutError``.
    - ``ws.receive(timeout=None)``: flask-sock's call: the payload itself (str for text,
      bytes for binary), None if ``timeout`` passed, ``ConnectionClosed`` once closed.
    - ``for msg in ws:`` every message until the close.
    - ``ws.sleep(seconds)`` (``ConnectionClosed`` if it closes meanwhile), ``ws.drain()``.

    Every other call is THREAD-SAFE. ``send``, ``send_text``, ``send_bytes``, ``send_json``
    from another thread return once the message is handed to the loop, after waiting while
    the write buffer is above ``write_high_water``; they raise ``ConnectionClosed`` once the
    connection is closing. The rest (``close``, ``ping``, ``subscribe``, ``publish``,
    ``accept``, ``reject``, ``send_fragments``, ...) runs on the loop's thread and returns (or
    raises) once done. Made on the loop's thread (a generator or callback handler sending to
    this connection) any of them runs at once. The handshake is answered at the first recv or
    send, as for the other drivers.
    """

    __slots__ = ("_cond", "_pool", "_drains", "_resume_pending", "_stopped", "_call_fn",
                 "_unsent", "_above", "_busy", "_close_held")

    def __init__(self, app: "App", conn: Connection, request: Request,
                 pool: "ThreadPool") -> None:
        super().__init__(app, conn, request)
        self._cond = threading.Condition(threading.Lock())
        self._pool = pool
        self._drains = 0                 # EV_DRAIN events seen (a send waits for the next)
        self._resume_pending = False     # a resume_reading() is on its way to the loop
        self._stopped = False            # the pool was closed under it
        self._call_fn: Optional[Callable[["ThreadedWebSocket"], Any]] = None
        # sends handed to the loop: bytes not yet queued in C, and whether the last one left
        # the write buffer above write_high_water (EV_DRAIN clears it)
        self._unsent = 0
        self._above = False
        # The C loop holds this connection's close frames (pyws_hold_closes) so that the
        # replies to the messages before a close (the peer's, or a bad frame's) go out first.
        # _busy: the thread holds a message it may still answer (from recv() returning it
        # until it waits again or the handler returns); _close_held: a close waits for that.
        self._busy = False
        self._close_held = False

    # ------------------------------------------------------------------ plumbing
    def _on_loop(self) -> bool:
        return self.app.mgr._owner == _get_ident()

    def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(self, *args)`` on the loop thread (at once if this is it)."""
        if self.app.mgr._owner == _get_ident():
            return fn(self, *args)
        return self._pool.call(fn, (self,) + args)

    def _gone(self) -> bool:
        return self._stopped or not self.connected

    def _end_error(self) -> ConnectionClosed:
        if self._stopped and self.close_code is None:
            return ConnectionClosed(*_SHUTDOWN)
        return closed_error(self.close_code if self.close_code is not None else 1006,
                            self.close_reason or "the WebSocket is not open")

    def _not_here(self, what: str) -> PyWSError:
        return PyWSError(f"ws.{what}() of a blocking handler's WebSocket was called on the "
                         "loop's thread, where it would stop every connection; only its "
                         "handler thread (or another thread) may wait on it")

    def _idle(self) -> None:
        """This thread answered every message it took (called with _cond held, queue empty
        or about to be read): a close the loop holds for it may go out, after the sends
        handed over before this (the loop runs them in order)."""
        self._busy = False
        if self._close_held and not self._queue:
            self._close_held = False
            self._pool.post(self._release_close)

    def _release_close(self) -> None:  # loop thread
        loop = self.app.mgr._loop
        if loop is not None and not self.conn.closed:
            lib.pyws_hold_closes(loop, self.conn.id, 0)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # ------------------------------------------------------------------ handshake
    def accept(self, protocol: Optional[str] = None,
               headers: Optional[Mapping[str, str]] = None) -> None:
        """THREAD-SAFE. See :meth:`pyws.WebSocket.accept`."""
        if self._accepted is True:
            return
        self._run(WebSocket.accept, protocol, headers)

    def reject(self, status: int = 403, body: Union[str, bytes] = b"",
               headers: Optional[Mapping[str, str]] = None) -> None:
        """THREAD-SAFE. See :meth:`pyws.WebSocket.reject`."""
        self._run(WebSocket.reject, status, body, headers)

    # ------------------------------------------------------------------ waiting
    def recv(self, timeout: Optional[float] = None) -> Optional[Message]:  # type: ignore[override]
        """Block until the next message (a :class:`pyws.Message`) and return it; None once the
        connection has closed and every message before the close was read (after that,
        another wait raises :class:`pyws.ConnectionClosed`). With ``timeout`` (seconds),
        ``TimeoutError`` is raised if nothing arrives in time. Only this thread waits; the
        loop goes on."""
        if self.app.mgr._owner == _get_ident():
            raise self._not_here("recv")
        if self._accepted is None:
            self.accept()
        q = self._queue
        cond = self._cond
        deadline = None if timeout is None else time.monotonic() + timeout
        with cond:
            self._idle()
            while not q:
                if self._gone():
                    if not self._told_none:
                        self._told_none = True
                        return None
                    self._told_closed = True
                    raise self._end_error()
                if deadline is None:
                    cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"no message within {timeout} s")
                    cond.wait(left)
            msg = q.popleft()
            self._busy = True
            resume = self._paused and not self._resume_pending and \
                len(q) <= self._pool.max_queue // 2
            if resume:
                self._resume_pending = True
        if resume:
            self._pool.post(self._resume)
        return msg

    def receive(self, timeout: Optional[float] = None) -> Optional[Union[str, bytes]]:
        """flask-sock's (simple-websocket's) receive: block for the next message and return
        its payload, str for text and bytes for binary; None if ``timeout`` seconds passed
        without one; :class:`pyws.ConnectionClosed` once the connection has closed."""
        try:
            msg = self.recv(timeout)
        except TimeoutError:
            return None
        if msg is None:
            self._told_closed = True
            raise self._end_error()
        return msg.text if msg.opcode == OP_TEXT else msg.data

    def __iter__(self) -> Iterator[Message]:
        """``for msg in ws:`` each message until the connection closes."""
        while True:
            msg = self.recv()
            if msg is None:
                return
            yield msg

    def sleep(self, seconds: float) -> None:  # type: ignore[override]
        """Block this thread for ``seconds``; raise :class:`pyws.ConnectionClosed` at once if
        the connection closes meanwhile (or is already closed)."""
        if self._on_loop():
            raise self._not_here("sleep")
        deadline = time.monotonic() + max(0.0, seconds)
        with self._cond:
            if not self._queue:
                self._idle()
            while not self._gone():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)
        raise self._end_error()

    def drain(self) -> None:  # type: ignore[override]
        """Block until the write buffer is back under ``write_high_water`` (at once if it
        is); :class:`pyws.ConnectionClosed` if the connection closes first."""
        if self._on_loop():
            raise self._not_here("drain")
        above, seen = self._run(ThreadedWebSocket._high_water)
        if above:
            self._wait_drain(seen)

    def _high_water(self) -> Tuple[bool, int]:  # loop thread
        if not self.connected:
            raise self._end_error()
        return self.conn.above_high_water, self._drains

    def _wait_drain(self, seen: int) -> None:
        with self._cond:
            while self._drains == seen:
                if self._gone():
                    raise self._end_error()
                self._cond.wait()

    def _resume(self) -> None:  # loop thread
        self._resume_pending = False
        if self._paused and len(self._queue) <= self._pool.max_queue // 2:
            self._paused = False
            self.conn.resume_reading()

    # ------------------------------------------------------------------ sending
    def _send(self, payload: bytes, op: int, compress: Optional[bool]) -> None:
        """A whole message. From a foreign thread it is handed to the loop without waiting for
        it to run (in order with every other call from this thread); it waits first while the
        write buffer is above ``write_high_water``, or while as much is still on its way to
        the loop. Raises ConnectionClosed at once if the connection is known to be closing.
        On the loop's thread it is sent at once."""
        mgr = self.app.mgr
        if mgr._owner == _get_ident():
            if self._accepted is not True:
                self._ensure_open()
            self.conn.ws_send(payload, op, True, compress)
            return
        n = len(payload)
        cond = self._cond
        with cond:
            while True:
                if self._accepted is False or self.close_code is not None or \
                        self.conn.closed or self._stopped:
                    raise self._end_error()
                if not self._above and (self._unsent == 0 or
                                        self._unsent + n <= self._pool.high_water):
                    break
                cond.wait()
            self._unsent += n
        try:
            self._pool.post_later(self._loop_send, payload, op, compress)
        except BaseException:
            with cond:
                self._unsent -= n
            raise

    def _loop_send(self, payload: bytes, op: int, compress: Optional[bool]) -> None:
        """On the loop thread: queue a send handed over by _send."""
        above = False
        try:
            conn = self.conn
            if self._accepted is not True:
                self._ensure_open()
            loop = self.app.mgr._loop
            if loop is None or conn.closed:
                return
            rc = _pyws_send(loop, conn.id, op, payload, len(payload),
                            _SEND_HW | send_flags(compress))
            if rc == 1:
                above = True
            elif rc < 0:
                conn._fail(rc, "ws_send")
        except ConnectionClosed:
            pass  # closed meanwhile (or LimitExceeded: closed with 1008): the thread sees it
        except Exception:
            log.exception("pyws: a send from the handler of %s failed", self.request.path)
        finally:
            with self._cond:
                self._unsent -= len(payload)
                if above:
                    self._above = True
                self._cond.notify_all()

    def send(self, data: Sendable, binary: Optional[bool] = None,
             compress: Optional[bool] = None) -> None:
        """THREAD-SAFE. Send a whole message: a str as text, bytes-like as binary, a
        :class:`pyws.Message` with its own opcode (see :meth:`pyws.WebSocket.send`). From a
        handler thread it returns once the message is handed to the loop, after waiting while
        the write buffer is above ``write_high_water``; ``ConnectionClosed`` if closing."""
        payload, op = outgoing(data, binary)
        self._send(payload, op, compress)

    def send_text(self, text: str, compress: Optional[bool] = None) -> None:
        """THREAD-SAFE. Send a text message (see :meth:`send`)."""
        self._send(text.encode(), OP_TEXT, compress)

    def send_bytes(self, data: Union[bytes, bytearray, memoryview],
                   compress: Optional[bool] = None) -> None:
        """THREAD-SAFE. Send a binary message (see :meth:`send`)."""
        self._send(bytes(data), OP_BINARY, compress)

    def send_json(self, obj: Any, dumps: Callable[[Any], str] = json.dumps,
                  compress: Optional[bool] = None) -> None:
        """THREAD-SAFE. Send ``dumps(obj)`` as a text message (see :meth:`send`)."""
        self._send(dumps(obj).encode(), OP_TEXT, compress)

    def _sent(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Another send method of WebSocket (send_fragments, ...) on the loop thread; from a
        foreign thread it waits for it to run, then while the write buffer is above its
        high-water mark."""
        if self.app.mgr._owner == _get_ident():
            return fn(self, *args, **kwargs)
        result, above, seen = self._pool.call(_send_and_mark, (fn, self, args, kwargs))
        if above:
            self._wait_drain(seen)
        return result

    def close(self, code: int = 1000, reason: Union[str, bytes] = "", *,
              message: Optional[str] = None) -> None:
        """THREAD-SAFE. Start the close handshake (see :meth:`pyws.WebSocket.close`);
        ``message=`` is flask-sock's name for ``reason``. A ``recv()`` waiting on another
        thread then returns None."""
        self._run(WebSocket.close, code, reason if message is None else message)
        self._wake()

    # ------------------------------------------------------------------ state read in C
    @property
    def extensions(self) -> str:
        """THREAD-SAFE. See :attr:`pyws.WebSocket.extensions`."""
        return str(self._run(lambda ws: ws.conn.extensions))

    @property
    def connection_state(self) -> State:
        """THREAD-SAFE. See :attr:`pyws.WebSocket.connection_state`."""
        return State(self._run(lambda ws: ws.conn.state))

    @property
    def write_buffer_size(self) -> int:
        """THREAD-SAFE. Bytes queued and not yet written."""
        return int(self._run(lambda ws: ws.conn.write_buffer_size))

    def __repr__(self) -> str:
        return "<Threaded" + super().__repr__()[1:]


def _send_and_mark(fn: Callable[..., Any], ws: ThreadedWebSocket, args: Tuple[Any, ...],
                   kwargs: Dict[str, Any]) -> Tuple[Any, bool, int]:
    """On the loop thread: the send, then whether the buffer is above its high-water mark
    (and the drain count to wait past)."""
    result = fn(ws, *args, **kwargs)
    return result, ws.conn.above_high_water, ws._drains


def _thread_safe(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if name.startswith("send"):  # sends wait while the buffer is above write_high_water
        def method(self: ThreadedWebSocket, *args: Any, **kwargs: Any) -> Any:
            return self._sent(fn, *args, **kwargs)
    else:
        def method(self: ThreadedWebSocket, *args: Any, **kwargs: Any) -> Any:
            if self.app.mgr._owner == _get_ident():
                return fn(self, *args, **kwargs)
            return self._pool.call(lambda: fn(self, *args, **kwargs), ())
    method.__name__ = name
    method.__qualname__ = f"ThreadedWebSocket.{name}"
    method.__doc__ = f"THREAD-SAFE (runs on the loop's thread). {fn.__doc__ or ''}"
    return method


# Every other public method of WebSocket (ping, subscribe, unsubscribe, publish,
# send_fragments, and whatever is added there later) runs on the loop's thread when called
# from a handler thread, so nothing here touches the connection from the wrong thread; the
# send* ones then wait for the drain as send() does.
for _name, _fn in list(vars(WebSocket).items()):
    if not _name.startswith("_") and inspect.isfunction(_fn) and \
            _name not in vars(ThreadedWebSocket):
        setattr(ThreadedWebSocket, _name, _thread_safe(_name, _fn))


class ThreadPool:
    """The App's handler threads (started on demand, at most ``threads``) and the queue of
    connections waiting for one. Admission, events and finishing run on the loop thread; the
    threads run handlers and hand everything else to the loop."""

    def __init__(self, app: "App", threads: int, queue: int, queue_timeout: float,
                 max_queue: int) -> None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, not {threads!r}")
        if not isinstance(queue, int) or isinstance(queue, bool) or queue < 0:
            raise ValueError(f"thread_queue must be an int >= 0, not {queue!r}")
        if not isinstance(queue_timeout, (int, float)) or queue_timeout <= 0:
            raise ValueError(f"thread_queue_timeout must be seconds > 0, not {queue_timeout!r}")
        self.app = app
        self.threads = threads
        self.queue = queue
        self.queue_timeout = float(queue_timeout)
        self.max_queue = max(1, max_queue)
        #: bytes a handler thread may have on their way to the loop before its send waits
        #: (the App's write_high_water)
        self.high_water = 1024 * 1024
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)     # workers wait here for a job
        self._idle_cv = threading.Condition(self._lock)  # shutdown waits here for busy == 0
        self._jobs: Deque[ThreadedWebSocket] = collections.deque()
        self._workers: List[threading.Thread] = []
        self._idents: Set[int] = set()                    # the workers' thread idents
        self._idle = 0
        self.busy = 0                                     # handlers running
        self._calls: Set[_Call] = set()
        self._stopping = False
        self._going = False                               # the App is shutting down
        self._live: Set[ThreadedWebSocket] = set()        # started or waiting, not yet ended
        self._log_at: Dict[str, float] = {}
        self._log_skipped: Dict[str, int] = {}
        self.refused = 0                                  # 503s for want of a thread

    # ------------------------------------------------------------------ loop thread: admission
    def has_room(self) -> bool:
        """True if one more connection can run now or wait in the queue."""
        with self._lock:
            return not self._stopping and self.busy + len(self._jobs) < self.threads + self.queue

    def refuse(self, conn: Connection, path: str, remote: str) -> None:
        """Answer 503 for want of a thread, and say so in the log (at most once a second,
        with a count)."""
        self.refused += 1
        conn.reply(503, "server busy: every handler thread is taken and the queue for them "
                   "is full\n", {"Retry-After": "5"})
        conn.drain()
        self._warn("refused", "refused the upgrade to %s from %s with 503: all %d handler "
                   "threads are busy and %d connection(s) wait for one (App threads=%d, "
                   "thread_queue=%d)",
                   path, remote, self.busy, len(self._jobs), self.threads, self.queue)

    def _warn(self, kind: str, fmt: str, *args: Any) -> None:
        """A warning, at most once a second per ``kind``, counting the ones left out."""
        now = time.monotonic()
        if now - self._log_at.get(kind, -10.0) < 1.0:
            self._log_skipped[kind] = self._log_skipped.get(kind, 0) + 1
            return
        skipped = self._log_skipped.pop(kind, 0)
        more = f" (and {skipped} more such since the last line)" if skipped else ""
        self._log_at[kind] = now
        log.warning("pyws: " + fmt + more, *args)

    def start(self, ws: ThreadedWebSocket, fn: Callable[[ThreadedWebSocket], Any]) -> None:
        """Queue ``ws`` for a thread that runs ``fn(ws)`` (after :meth:`has_room`)."""
        ws._call_fn = fn
        self.bind(ws)
        self._live.add(ws)
        with self._lock:
            self._jobs.append(ws)
            waits = self.busy + len(self._jobs) > self.threads
            if self._idle < len(self._jobs) and len(self._workers) < self.threads:
                t = threading.Thread(target=self._worker, daemon=True,
                                     name=f"pyws-handler-{len(self._workers) + 1}")
                self._workers.append(t)
                t.start()
            self._work.notify()
        if waits:
            self._warn("waits", "all %d handler threads are busy: the upgrade to %s waits for "
                       "one (%d waiting; at most thread_queue=%d, each for "
                       "thread_queue_timeout=%g s, then 503)", self.threads,
                       ws.request.path, len(self._jobs), self.queue, self.queue_timeout)
            self.app.mgr.timer(self.queue_timeout, lambda: self._expired(ws))

    def _expired(self, ws: ThreadedWebSocket) -> None:  # loop thread
        with self._lock:
            try:
                self._jobs.remove(ws)
            except ValueError:
                return  # a thread took it (or it closed)
        self.refused += 1
        self._warn("expired", "the upgrade to %s from %s waited %g s (thread_queue_timeout) "
                   "for a handler thread and was refused with 503; all %d threads are busy "
                   "(App threads=%d)",
                   ws.request.path, ws.request.remote_addr, self.queue_timeout, self.busy,
                   self.threads)
        if ws._accepted is None and not ws.conn.closed:
            ws.reject(503, "server busy: no handler thread became free in time\n",
                      {"Retry-After": "5"})
        self._live.discard(ws)
        self.app._closed(ws)

    # ------------------------------------------------------------------ loop thread: events
    def bind(self, ws: ThreadedWebSocket) -> None:
        """Deliver the connection's events to ``ws``: messages into its queue (pausing the
        reads past ``max_queue``), drains and the close to the threads waiting on it."""
        q, cond, conn, max_queue = ws._queue, ws._cond, ws.conn, self.max_queue
        new = Message.__new__

        def sink(data: bytes, opcode: int, compressed: bool) -> None:
            m = new(Message)
            m.data, m.opcode, m.compressed = data, opcode, compressed
            with cond:
                q.append(m)
                cond.notify()
            if len(q) >= max_queue and not ws._paused:
                ws._paused = True
                conn.pause_reading()

        def on_event(c: Connection, ev: int, data: Any) -> None:
            if ev == EV_WS_MSG:  # only if delivered through the handler, not the sink
                sink(data.data, data.opcode, data.compressed)
            elif ev == EV_DRAIN:
                with cond:
                    ws._drains += 1
                    ws._above = False
                    cond.notify_all()
            elif ev == EV_CLOSE_HELD:
                with cond:
                    release = not ws._busy and not q
                    ws._close_held = not release
                if release:
                    # queued behind what the thread handed over before it went idle (its
                    # last sends may still wait in the loop's queue): they go out first
                    try:
                        self.app.mgr.call_soon_threadsafe(ws._release_close)
                    except Exception:
                        ws._release_close()
            elif ev == EV_CLOSE:
                self._closed(ws)

        conn.handler = on_event
        conn._msg_sink = sink
        loop = self.app.mgr._loop
        if loop is not None:
            lib.pyws_hold_closes(loop, conn.id, 1)

    def _closed(self, ws: ThreadedWebSocket) -> None:  # loop thread
        if ws.conn.close_code is not None:  # code and reason of one frame, never a mix
            ws.close_code, ws.close_reason = ws.conn.close_code, ws.conn.close_reason
        else:
            ws.close_code = ws.close_code or 1006
        with self._lock:
            try:
                self._jobs.remove(ws)  # it was still waiting for a thread: it never runs
            except ValueError:
                pass
        self._live.discard(ws)  # a running handler learns it from ws.connected
        ws._wake()
        self.app._closed(ws)

    # ------------------------------------------------------------------ handler threads
    def is_handler_thread(self) -> bool:
        """True on one of this pool's handler threads."""
        return _get_ident() in self._idents

    def _worker(self) -> None:
        self._idents.add(_get_ident())
        try:
            self._work_loop()
        finally:
            self._idents.discard(_get_ident())

    def _work_loop(self) -> None:
        while True:
            with self._lock:
                while not self._jobs and not self._stopping:
                    self._idle += 1
                    self._work.wait()
                    self._idle -= 1
                if self._stopping:
                    return
                ws = self._jobs.popleft()
                self.busy += 1
            try:
                self._run_handler(ws)
            finally:
                with self._lock:
                    self.busy -= 1
                    self._idle_cv.notify_all()

    def _run_handler(self, ws: ThreadedWebSocket) -> None:
        fn = ws._call_fn
        ws._call_fn = None
        exc: Optional[BaseException] = None
        if fn is not None and not ws.conn.closed:
            try:
                result = fn(ws)
                if inspect.isgenerator(result) or inspect.iscoroutine(result):
                    result.close()
                    raise TypeError(
                        f"the handler of {ws.request.path} returned a "
                        f"{type(result).__name__} but was registered as a blocking handler: "
                        "pyws could not see that it is a generator or async function (a "
                        "decorator without functools.wraps?); decorate the wrapper with "
                        "functools.wraps(handler) so the right driver runs it")
            except Exception as e:
                exc = e
        self.post(self._finished, ws, exc)

    def _finished(self, ws: ThreadedWebSocket, exc: Optional[BaseException]) -> None:
        self._live.discard(ws)
        with ws._cond:
            ws._queue.clear()
            ws._busy = ws._close_held = False
        ws._release_close()  # a close held for the handler's replies goes out now
        if self._going and exc is None and ws._accepted and not ws.conn.closed:
            # it returned because the App is going away: the client hears 1001, not 1000
            ws.conn.close(*_SHUTDOWN)
        self.app._driver.finished(ws, exc)  # 1000, or 1011 and the traceback logged

    # ------------------------------------------------------------------ crossing to the loop
    def call(self, fn: Callable[..., Any], args: Tuple[Any, ...]) -> Any:
        """From a foreign thread: run ``fn(*args)`` on the loop thread and return its result
        (or raise its exception). ConnectionClosed(1001) if the App is shutting down."""
        c = _Call(fn, args)
        with self._lock:
            if self._stopping:
                raise ConnectionClosed(*_SHUTDOWN)
            self._calls.add(c)
        mgr = self.app.mgr
        try:
            mgr.call_soon_threadsafe(self._run_call, c)
        except QueueFull:
            self._forget(c)
            raise
        except PyWSError:
            self._forget(c)
            raise ConnectionClosed(*_SHUTDOWN) from None
        while not c.lock.acquire(timeout=1.0):
            if mgr._loop is None:  # closed without running it
                self._forget(c)
                raise ConnectionClosed(*_SHUTDOWN)
        self._forget(c)
        if c.exc is not None:
            raise c.exc
        return c.value

    def _forget(self, c: _Call) -> None:
        with self._lock:
            self._calls.discard(c)

    def _run_call(self, c: _Call) -> None:  # loop thread
        value: Any = None
        exc: Optional[BaseException] = None
        try:
            value = c.fn(*c.args)
        except BaseException as e:  # handed to the caller
            exc = e
        with self._lock:
            if c.done:
                return
            c.done = True
            c.value, c.exc = value, exc
        c.lock.release()

    def post_later(self, fn: Callable[..., Any], *args: Any) -> None:
        """From a foreign thread: queue ``fn(*args)`` for the loop thread, in order with every
        other call of this pool, without waiting for it to run. ConnectionClosed(1001) if the
        App is shutting down; QueueFull if the loop's queue stayed full."""
        if self._stopping:
            raise ConnectionClosed(*_SHUTDOWN)
        try:
            self.app.mgr.call_soon_threadsafe(fn, *args)
        except QueueFull:
            raise
        except PyWSError:
            raise ConnectionClosed(*_SHUTDOWN) from None

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread without waiting for it (dropped once the
        App's loop is closed)."""
        if self.app.mgr._owner == _get_ident():
            fn(*args)
            return
        try:
            self.app.mgr.call_soon_threadsafe(fn, *args)
        except PyWSError:
            pass  # the loop is gone: nothing is left to finish

    # ------------------------------------------------------------------ stopping
    def going_away(self) -> None:
        """The App is shutting down (loop thread): every running handler is told at once, so
        its ``recv()`` gives None (then raises ConnectionClosed(1001)) without waiting for the
        close handshake; connections still waiting for a thread are not started: they are
        answered 503 (with Retry-After), as when the queue is full."""
        self._going = True
        with self._lock:
            waiting = list(self._jobs)
            self._jobs.clear()
        for ws in waiting:
            self._live.discard(ws)
            self.refused += 1
            if ws._accepted is None and not ws.conn.closed:
                ws.reject(503, "server shutting down: try again later\n", {"Retry-After": "5"})
            self.app._closed(ws)
        if waiting:
            log.warning("pyws: shutting down: answered 503 to %d upgrade(s) still waiting for "
                        "a handler thread", len(waiting))
        for ws in list(self._live):
            if ws.close_code is None:
                ws.close_code, ws.close_reason = _SHUTDOWN
            ws._wake()

    def wait_idle(self, deadline: float, poll: Callable[[], Any]) -> bool:
        """Call ``poll()`` (one loop iteration) until no handler runs or ``deadline``
        (time.monotonic()) passes; True if none runs."""
        while self.busy and time.monotonic() < deadline:
            poll()
        return not self.busy

    def close(self, timeout: float = 1.0) -> None:
        """Stop: every waiting call and recv() on a handler thread raises
        ConnectionClosed(1001), idle threads end, and the threads are joined for at most
        ``timeout`` seconds (they are daemon threads: one stuck in its own code is left
        behind, and logged)."""
        with self._lock:
            self._stopping = True
            calls = list(self._calls)
            self._calls.clear()
            self._jobs.clear()
            self._work.notify_all()
            for c in calls:
                if not c.done:
                    c.done = True
                    c.exc = ConnectionClosed(*_SHUTDOWN)
                    c.lock.release()
        for ws in list(self._live):
            ws._stopped = True
            ws._wake()
        self._live.clear()
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._workers if t.is_alive()]
        if stuck:
            log.warning("pyws: %d blocking handler(s) still running %g s after the App closed "
                        "(%s); they are left behind as daemon threads: their ws calls raise "
                        "ConnectionClosed", len(stuck), timeout, ", ".join(stuck[:5]))
        self._workers = [t for t in self._workers if t.is_alive()]
