"""pyws inside an asyncio loop (the default loop or uvloop): one pyws loop per Manager, driven
by the asyncio loop's own I/O wait. No busy polling and no second thread.

How it runs (:class:`Bridge`):

- The poller's descriptor (epoll, kqueue: ``pyws_loop_fd``) is registered with
  ``loop.add_reader``. Readable means one non-blocking ``Manager.poll(0)``, which does the I/O
  in C and dispatches the batch to the handlers (callback, generator or async).
- After each poll the C loop says when it needs the next one (``pyws_next_timeout``): 0 when
  work is left over (a poll handles at most 256 ready sockets and ``wakeup_batch`` wakeups;
  bytes OpenSSL has decrypted but pyws not yet read; a connection that had no arena room;
  output queued by the handlers; events raised between polls): the next poll is scheduled with
  ``call_soon``, after the other ready callbacks, so a busy pyws loop never starves asyncio nor
  the other way round, and after the tasks the batch woke (a readiness or a timer meanwhile
  waits for that poll): their replies go out before a close the C core queued after the
  messages they answer. Otherwise the next timer or deadline (heartbeats, timeouts, user timers)
  is one ``call_at`` handle, moved only when an earlier deadline appears.
- Work queued from outside a poll (an ``await ws.send()`` in a task, a timer added, a close)
  makes the poller's descriptor readable by itself (the C loop's self-wake, through its wakeup
  eventfd, at most once between two polls), so nothing waits for an unrelated event.
- The poll(2) backend has no pollable descriptor. There the bridge mirrors the descriptors the
  C poller watches into the asyncio loop (``add_reader``/``add_writer`` per socket, and the
  wakeup descriptor), re-read after every poll when their set changed (a generation counter),
  keyed by descriptor and connection id so that a descriptor number reused by another socket is
  registered again. Each readiness still runs one non-blocking poll. O(changes) per poll, O(n)
  when the set changed: a fallback, like the backend itself.

Use :func:`attach` for a Manager or App you drive yourself, or ``await app.serve(...)``.

Closing: ``Manager.close()`` (``App.close()``) detaches the Manager from asyncio first. Closing
the asyncio loop itself (``loop.close()``, or ``asyncio.run()``/``uvloop.run()`` returning)
closes pyws's part cleanly: :func:`attach` wraps that loop object's ``close`` once, and the
wrapper, before the loop really closes, cancels the async handlers and async routes still
running on it and lets them finish (each closes its WebSocket with 1001), writes what they
queued with one non-blocking poll, closes the Manager the async clients of that loop share,
and detaches every other Manager attached to it (they stay usable: poll or close them
yourself). No descriptor stays registered and no task is left pending.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from ._lib import ffi, lib
from .errors import PyWSError
from .manager import Manager

__all__ = ["Bridge", "attach", "detach", "bridge_for"]

log = logging.getLogger("pyws")

# Manager -> its bridge (one per Manager; a Manager runs in one asyncio loop at a time)
_BRIDGES: Dict[int, "Bridge"] = {}


def _unwatch(loop: asyncio.AbstractEventLoop, fd: int, ev: int) -> None:
    """Stop watching ``fd`` for ``ev`` (PYWS_WATCH_IN / _OUT bits). The C loop may have closed
    the fd already (its connection ended in the last poll). asyncio's selector loops then fail
    when one of two interests goes (the kernel registration they modify is gone with the fd:
    EBADF), so a registration that cannot be changed is dropped whole."""
    try:
        if ev & lib.PYWS_WATCH_IN:
            loop.remove_reader(fd)
        if ev & lib.PYWS_WATCH_OUT:
            loop.remove_writer(fd)
    except OSError:
        selector = getattr(loop, "_selector", None)  # asyncio's selector event loops
        if selector is None:
            raise
        try:
            key = selector.unregister(fd)  # tolerates a closed fd
        except (KeyError, ValueError):
            return
        for handle in key.data or ():
            if handle is not None:
                handle.cancel()


class Bridge:
    """Runs one :class:`pyws.Manager`'s C loop inside one asyncio loop. Made by
    :func:`attach`; :meth:`close` (or :func:`detach`) unregisters it, after which the Manager
    can be polled by hand again or closed."""

    def __init__(self, mgr: Manager, loop: asyncio.AbstractEventLoop) -> None:
        if mgr._loop is None:
            raise PyWSError("the manager is closed")
        self.mgr = mgr
        self.loop = loop
        self._ptr = mgr._loop
        self._fd = int(lib.pyws_loop_fd(self._ptr))
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_when = 0.0
        self._soon = False
        self._closed = False
        self._idle: List["asyncio.Future[None]"] = []
        # poll(2) backend: what is registered with the asyncio loop, fd -> (events, id)
        self._watched: Dict[int, Tuple[int, int]] = {}
        self._gen = -1
        self._cap = 0
        self._fds: Any = None
        self._evs: Any = None
        self._ids: Any = None
        self._genp = ffi.new("uint64_t *")
        #: called (instead of a plain detach) when the asyncio loop closes; aconnect's shared
        #: Manager closes itself there
        self.on_loop_close: Optional[Callable[[], None]] = None
        self._closing = False  # the asyncio loop is closing: start no new task
        mgr._owner = threading.get_ident()  # the asyncio loop's thread owns the pyws loop
        mgr._close_hooks.append(self.close)  # Manager.close() detaches first
        _hook_loop_close(loop)
        lib.pyws_loop_self_wake(self._ptr, 1)
        if self._fd >= 0:
            loop.add_reader(self._fd, self._on_ready)
        else:
            self._sync_fds()
        self.schedule()

    @property
    def backend_fd(self) -> int:
        """The descriptor registered with ``add_reader`` (-1 with the poll(2) backend, where
        each socket's descriptor is registered instead)."""
        return self._fd

    def schedule(self) -> None:
        """Poll once more soon (``call_soon``), whatever the descriptor says. Idempotent
        until that poll has run."""
        if not self._soon and not self._closed:
            self._soon = True
            self.loop.call_soon(self._run_soon)

    def _run_soon(self) -> None:
        self._soon = False
        self._run()

    def _on_timer(self) -> None:
        self._timer = None
        if not self._soon:  # else the poll scheduled with call_soon does the timer's work
            self._run()

    def _on_ready(self) -> None:
        """The descriptor is readable. With a poll already scheduled by ``call_soon`` (the
        last one left work, a close to send for one), that poll does it: polling now could
        run before the tasks the last poll woke have answered the messages it delivered, and
        the close would go out before their replies (the C core sends it "at the next poll,
        after the replies to messages delivered before it")."""
        if not self._soon:
            self._run()

    def _run(self) -> None:
        """One non-blocking poll, its dispatch, then arrange the next one."""
        if self._closed:
            return
        mgr = self.mgr
        if mgr._loop is not self._ptr:  # closed behind our back: stop watching
            self.close()
            return
        if mgr._in_poll:  # a handler awaited nothing but ran a nested loop: come back later
            self.schedule()
            return
        try:
            mgr.poll(0)
        except Exception:
            log.exception("pyws: poll failed inside the asyncio loop")
        if mgr._loop is not self._ptr:  # a handler closed the manager
            self.close()
            return
        self._rearm()
        if self._idle and not mgr._conns:
            for f in self._idle:
                if not f.done():
                    f.set_result(None)
            self._idle.clear()

    def _rearm(self) -> None:
        if self._fd < 0:
            self._sync_fds()
        ms = int(lib.pyws_next_timeout(self._ptr))
        if ms == 0:
            self.schedule()
            return
        if ms < 0:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        # half a millisecond late rather than early: the C clock counts whole milliseconds
        when = self.loop.time() + (ms + 0.5) / 1000.0
        if self._timer is not None:
            if self._timer_when <= when + 0.0005:
                return  # it fires first (at worst once early) and re-arms then
            self._timer.cancel()
        self._timer_when = when
        self._timer = self.loop.call_at(when, self._on_timer)

    # ------------------------------------------------------------------ poll(2) backend
    def _sync_fds(self) -> None:
        ptr = self._ptr
        n = int(lib.pyws_loop_watched(ptr, self._fds if self._cap else ffi.NULL,
                                      self._evs if self._cap else ffi.NULL,
                                      self._ids if self._cap else ffi.NULL, self._cap,
                                      self._genp))
        if n < 0:
            return
        if n > self._cap:
            cap = max(64, n * 2)
            self._fds = ffi.new("int[]", cap)
            self._evs = ffi.new("uint32_t[]", cap)
            self._ids = ffi.new("uint64_t[]", cap)
            self._cap = cap
            n = int(lib.pyws_loop_watched(ptr, self._fds, self._evs, self._ids, cap,
                                          self._genp))
        gen = int(self._genp[0])
        if gen == self._gen:
            return
        self._gen = gen
        fds, evs, ids = self._fds, self._evs, self._ids
        new = {int(fds[i]): (int(evs[i]), int(ids[i])) for i in range(n)}
        old = self._watched
        loop = self.loop
        for fd, (ev, cid) in old.items():
            now = new.get(fd)
            if now == (ev, cid):
                continue
            keep = 0 if now is None or now[1] != cid else now[0]  # a reused fd: all anew
            _unwatch(loop, fd, ev & ~keep)
        for fd, (ev, cid) in new.items():
            was = old.get(fd)
            if was == (ev, cid):
                continue
            had = 0 if was is None or was[1] != cid else was[0]
            if ev & lib.PYWS_WATCH_IN and not had & lib.PYWS_WATCH_IN:
                loop.add_reader(fd, self._on_ready)
            if ev & lib.PYWS_WATCH_OUT and not had & lib.PYWS_WATCH_OUT:
                loop.add_writer(fd, self._on_ready)
        self._watched = new

    def _unwatch_all(self) -> None:
        for fd, (ev, _cid) in self._watched.items():
            _unwatch(self.loop, fd, ev)
        self._watched = {}

    # ------------------------------------------------------------------ lifecycle
    async def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Wait until the Manager has no connection left (or ``timeout`` seconds); True if
        it has none."""
        if not self.mgr._conns:
            return True
        fut: "asyncio.Future[None]" = self.loop.create_future()
        self._idle.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            pass
        return not self.mgr._conns

    async def shutdown(self, timeout: float = 5.0) -> None:
        """The asyncio form of :meth:`Manager.shutdown`: stop accepting, close every
        WebSocket with 1001 (going away) and every HTTP connection after its output, wait
        (without blocking the asyncio loop) until they are gone or ``timeout`` seconds passed,
        then drop what is left."""
        mgr = self.mgr
        if mgr._loop is None:
            return
        for lst in list(mgr._listeners.values()):
            lst.close()
        for c in list(mgr._conns.values()):
            try:
                if c.is_websocket:
                    c.close(1001, "server shutting down")
                elif c.write_buffer_size == 0:
                    c.abort()
                else:
                    c.drain()
            except Exception:
                pass
        self.schedule()
        await self.wait_idle(timeout)
        if mgr._loop is not None and mgr._conns:
            for c in list(mgr._conns.values()):
                c.abort()
            self.schedule()
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    def close(self) -> None:
        """Stop driving the Manager from the asyncio loop (unregister its descriptor and
        timer). The Manager stays usable (poll it yourself, or :meth:`Manager.close`)."""
        if self._closed:
            return
        self._closed = True
        _BRIDGES.pop(id(self.mgr), None)
        try:
            self.mgr._close_hooks.remove(self.close)
        except ValueError:
            pass  # Manager.close() took the hooks and is calling this one
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.loop.is_closed():
            if self._fd >= 0:
                self.loop.remove_reader(self._fd)
            else:
                self._unwatch_all()
        if self.mgr._loop is self._ptr:
            lib.pyws_loop_self_wake(self._ptr, 0)
        for f in self._idle:
            if not f.done():
                f.set_result(None)
        self._idle.clear()

    def _flush(self) -> None:
        """One last non-blocking poll: write what the handlers queued (close frames)."""
        mgr = self.mgr
        if mgr._loop is self._ptr and not mgr._in_poll:
            try:
                mgr.poll(0)
            except Exception:
                log.debug("pyws: the last poll before the asyncio loop closed failed",
                          exc_info=True)


# ---------------------------------------------------------------------- the asyncio loop closing

def _hook_loop_close(loop: asyncio.AbstractEventLoop) -> None:
    """Make ``loop.close()`` run :func:`_loop_closing` first (once per loop object). A loop
    class that takes no instance attributes is left alone (detach or close the Manager
    before closing such a loop)."""
    if getattr(loop, "_pyws_close_hooked", False):
        return
    original = loop.close

    def close() -> None:
        try:
            _loop_closing(loop)
        finally:
            original()

    try:
        setattr(loop, "close", close)
        setattr(loop, "_pyws_close_hooked", True)
    except (AttributeError, TypeError):  # pragma: no cover - no per-instance attributes
        log.debug("pyws: cannot hook %r's close(); detach before closing it", loop)


def _loop_closing(loop: asyncio.AbstractEventLoop) -> None:
    if loop.is_closed() or loop.is_running():
        return  # the real close() does nothing, or raises that the loop is running
    bridges = [b for b in list(_BRIDGES.values()) if b.loop is loop and not b._closed]
    for b in bridges:
        b._closing = True
    mine = [t for t in list(_TASKS) if t.get_loop() is loop and not t.done()]
    if mine:  # asyncio.run() cancelled them already; a bare loop.close() did not
        for t in mine:
            t.cancel()
        try:
            loop.run_until_complete(asyncio.gather(*mine, return_exceptions=True))
        except BaseException:  # pragma: no cover - interrupted: close what we can
            log.debug("pyws: cancelling the handlers before the loop closed", exc_info=True)
    for b in bridges:
        b._flush()
        if b.on_loop_close is not None:
            try:
                b.on_loop_close()
            except Exception:
                log.exception("pyws: closing %r with its asyncio loop failed", b.mgr)
        b.close()


def _manager(target: Any) -> Manager:
    mgr = getattr(target, "mgr", target)
    if not isinstance(mgr, Manager):
        raise TypeError(f"attach() takes a pyws.Manager or pyws.App, not {type(target).__name__}")
    return mgr


def attach(target: Union[Manager, Any],
           loop: Optional[asyncio.AbstractEventLoop] = None) -> Bridge:
    """Run ``target`` (a :class:`pyws.Manager` or :class:`pyws.App`) inside the asyncio loop
    ``loop`` (default: the running one): its callback, generator and async handlers are then
    driven by that loop; do not call ``poll()`` yourself meanwhile. Returns the
    :class:`Bridge` (attaching twice returns the same one). Call it on the loop's thread."""
    mgr = _manager(target)
    if loop is None:
        loop = asyncio.get_running_loop()
    b = _BRIDGES.get(id(mgr))
    if b is not None and b.mgr is mgr and not b._closed:
        if b.loop is not loop:
            raise PyWSError("this Manager already runs inside another asyncio loop")
        return b
    b = Bridge(mgr, loop)
    _BRIDGES[id(mgr)] = b
    return b


def detach(target: Union[Manager, Any]) -> None:
    """Undo :func:`attach` (harmless if not attached): the Manager is yours to poll again.
    ``Manager.close()`` and closing the asyncio loop detach by themselves. On the asyncio
    loop's thread only (``WrongThreadError`` otherwise)."""
    b = bridge_for(target)
    if b is not None:
        b.mgr._check_thread()  # the asyncio loop's thread only, like every loop-bound call
        b.close()


def bridge_for(target: Union[Manager, Any]) -> Optional[Bridge]:
    """The :class:`Bridge` driving ``target`` (Manager or App), or None."""
    mgr = _manager(target)
    b = _BRIDGES.get(id(mgr))
    return b if b is not None and b.mgr is mgr and not b._closed else None


# ---------------------------------------------------------------------- App glue
# App hands its async handlers and async HTTP routes here (app.py stays asyncio-free).

def is_async(fn: Any) -> bool:
    """True for an ``async def`` function (what App runs with this driver)."""
    import inspect
    return inspect.iscoroutinefunction(fn)


def start_handler(app: Any, ws: Any, fn: Any) -> None:
    """Run ``fn(aws)`` for the WebSocket ``ws`` that App just opened for an ``async def``
    route: the connection's events go to an :class:`AsyncWebSocket` from now on, and the
    coroutine runs as a task of the asyncio loop driving the App. When it returns the
    connection is closed with 1000; when it raises, with 1011 and the exception is logged."""
    from .asyncws import AsyncWebSocket
    b = bridge_for(app.mgr)
    if b is not None and b._closing:  # the asyncio loop is closing: no task could run
        ws.close(1001, "going away")
        return
    if b is None:
        log.error("pyws: %s is an async handler but the App is not running inside asyncio; "
                  "use `await app.serve(...)` (or pyws.aio.attach(app) in a running loop)",
                  getattr(fn, "__name__", fn))
        ws.close(1011, "internal error")
        return
    aws = AsyncWebSocket(ws.conn, b.loop, request=ws.request,
                         max_queue=app._driver.max_queue,
                         accept=ws.accept, reject=ws.reject,
                         on_close=lambda: app._closed(ws))
    task = b.loop.create_task(_run_handler(aws, fn))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


_TASKS: "set[asyncio.Task[Any]]" = set()


async def _run_handler(aws: Any, fn: Any) -> None:
    path = aws.request.path if aws.request is not None else "?"
    code, reason = 1000, ""
    try:
        await fn(aws)
    except asyncio.CancelledError:
        code, reason = 1001, "going away"
        raise
    except Exception as exc:
        from .errors import ConnectionClosed
        if not isinstance(exc, ConnectionClosed):
            log.error("pyws: WebSocket handler for %s raised; closing with 1011", path,
                      exc_info=exc)
            code, reason = 1011, "internal error"
    finally:
        try:
            if not aws._accepted:
                aws.accept()  # ended before answering: accept, then close with the code
            if not aws.closed and aws.conn.is_websocket:
                aws.conn.close(code, reason)
        except Exception:
            pass
        aws._wake_drains(None)


def finish_route(app: Any, conn: Any, hm: Any, coro: Any, head: bool, pattern: str) -> None:
    """Answer an HTTP request whose route is ``async def``: await it as a task, then reply
    (500 if it raised)."""
    b = bridge_for(app.mgr)
    if b is not None and b._closing:  # the asyncio loop is closing: no task could run
        coro.close()
        conn.reply(503, "server shutting down\n")
        conn.drain()
        return
    if b is None:
        coro.close()
        log.error("pyws: route %s is async but the App is not running inside asyncio", pattern)
        conn.reply(500, "internal server error\n")
        conn.drain()
        return
    task = b.loop.create_task(_answer(app, conn, hm, coro, head, pattern))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def _answer(app: Any, conn: Any, hm: Any, coro: Any, head: bool, pattern: str) -> None:
    from .request import Response, to_response
    try:
        resp = to_response(await coro)
    except Exception:
        log.exception("pyws: route %s raised", pattern)
        resp = Response(b"internal server error\n", 500, content_type="text/plain")
    if conn.closed:
        return
    conn.reply(resp.status, resp.body, resp.headers, head_only=head)
    app._finish_http(conn, hm)


async def serve(app: Any, host: str = "127.0.0.1", port: int = 8000, *,
                tls: Any = None, shutdown_timeout: float = 5.0,
                on_start: Optional[Any] = None, **options: Any) -> None:
    """What ``await app.serve(...)`` does: listen, run inside the running asyncio loop until
    cancelled, then shut down gracefully (stop accepting, close every WebSocket with 1001,
    flush, wait up to ``shutdown_timeout`` seconds) and re-raise the cancellation."""
    b = attach(app)
    lst = app.listen(host, port, tls=tls, **options)
    if on_start is not None:
        on_start(lst)
    try:
        await asyncio.get_running_loop().create_future()  # until cancelled
    finally:
        if hasattr(app, "_threads"):
            app._threads.going_away()  # blocking handlers: recv() gives None now
        try:
            await asyncio.shield(b.shutdown(shutdown_timeout))
        finally:
            b.close()
