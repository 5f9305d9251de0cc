"""The callback-style API: a Manager owns one C event loop; you call ``poll()`` from your own
main loop and a handler ``handler(conn, ev, data)`` sees every event, mongoose style."""
from __future__ import annotations

import itertools
import logging
import math
import struct
import sys
import threading
import time
import weakref
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence,
                    Tuple, Union)
from urllib.parse import urlsplit

from ._lib import failure, ffi, lib, last_error, raise_for
from ._send import Sendable, outgoing
from .compression import send_flags
from .constants import (EV_ACCEPT, EV_CLOSE, EV_CLOSE_HELD, EV_CONNECT, EV_DATA, EV_DRAIN,
                        EV_ERROR, EV_HTTP_MSG, EV_HTTP_RESP, EV_TIMER, EV_WAKEUP, EV_WS_CTL,
                        EV_WS_MSG, EV_WS_OPEN)
from .connection import Connection, _topic
from .dial import dial
from .errors import HandshakeError, PyWSError, QueueFull, WrongThreadError
from .handshake import UpgradePolicy
from .message import HttpMessage, MessageView, WsMessage
from .options import DEFAULT_OPTIONS, LOOP_OPTIONS, fill_opts, resolve_options
from .stats import ServerCounters, ServerStats
from .tls import TlsError, TlsOpts

__all__ = ["Manager", "Listener", "Timer", "Handler", "DEFAULT_OPTIONS", "LOOP_OPTIONS",
           "WAKEUP_TIMEOUT"]

log = logging.getLogger("pyws")

# The event batch is read with one struct.iter_unpack over the C array instead of one cffi
# attribute access per field; the format is checked against the compiler's layout.
_EV_SIZE = ffi.sizeof("pyws_event")
_EV_FORMAT = "@iiiQQQQQQ"
_EV_FIELDS = ("type", "opcode", "code", "id", "data", "len", "data2", "len2", "aux")
_EV_UNPACK = struct.Struct(_EV_FORMAT).iter_unpack if (
    struct.calcsize(_EV_FORMAT) == _EV_SIZE and ffi.sizeof("void *") == 8
    and [ffi.offsetof("pyws_event", f) for f in _EV_FIELDS] == [0, 4, 8, 16, 24, 32, 40, 48, 56]
) else None
# a batch of one event (a ping-pong's every poll): its fields in one call, from a buffer kept
# over the array's first event until the array moves (see Manager.poll)
_EV_UNPACK1 = struct.Struct(_EV_FORMAT).unpack_from if _EV_UNPACK is not None else None
_pyws_poll = lib.pyws_poll
# a received message is built without a call to Message.__init__ (a Python frame per message)
_new_message = object.__new__

Handler = Callable[[Any, int, Any], Any]

_getrefcount = sys.getrefcount
# a MessageView's exporter (the cffi buffer over the C memory) once its view is released and
# the message let go of it: referenced by _end_view's local and getrefcount's argument, plus
# one while any view derived from it (a slice, a cast, memoryview(view)) is alive
_EXP_REFS = 2


class _Kept:
    """A C block handed over by ``pyws_view_keep`` because views into it outlived their
    handler: freed once the last of them is gone, between polls (never while a batch whose
    views may point into it is being dispatched)."""

    __slots__ = ("block", "lo", "hi", "refs", "owner")

    def __init__(self, block: Any, lo: int, hi: int, owner: "_Keeper") -> None:
        self.block = block
        self.lo = lo
        self.hi = hi
        self.refs = 0
        self.owner = owner

    def died(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            self.owner.dead.append(self.block)
            if self.owner.closed:
                self.owner.free()


class _Keeper:
    """The blocks a Manager keeps for views that outlived their handler."""

    __slots__ = ("dead", "closed", "batch", "warned")

    def __init__(self) -> None:
        self.dead: List[Any] = []
        self.closed = False
        self.batch: List[_Kept] = []  # blocks kept during the batch being dispatched
        self.warned = False

    def free(self) -> None:
        while self.dead:
            lib.pyws_block_free(self.dead.pop())

if TYPE_CHECKING:
    from .broker import Broker

#: Seconds ``wakeup()`` and ``call_soon_threadsafe()`` wait for room in a full queue by default.
WAKEUP_TIMEOUT = 10.0

# A producer waits for room in slices of at most this many ms, so that a signal (Ctrl-C) still
# reaches a main-thread producer while it waits.
_WAIT_SLICE_MS = 250


class Listener:
    """A listening socket returned by :meth:`Manager.listen`: ``port`` (the bound port, useful
    with port 0), ``host``, ``url``, ``id``, ``max_sockets`` (the connection cap in force:
    the option's value, or the one derived from RLIMIT_NOFILE when it was None), ``policy``
    (its subprotocol and origin rules, a ``pyws.handshake.UpgradePolicy``, or None);
    :meth:`close` stops accepting."""

    __slots__ = ("_mgr", "id", "host", "port", "url", "handler", "max_sockets", "policy")

    def __init__(self, mgr: "Manager", lid: int, host: str, port: int, url: str,
                 handler: Optional[Handler], max_sockets: int = 0,
                 policy: Optional[UpgradePolicy] = None) -> None:
        self._mgr = mgr
        self.id = lid
        self.host = host
        self.port = port
        self.url = url
        self.handler = handler
        self.max_sockets = max_sockets
        self.policy = policy

    def close(self) -> None:
        """Stop accepting; connections already accepted are not affected."""
        mgr = self._mgr
        if mgr._loop is not None and self.id in mgr._listeners:
            mgr._check_thread()
            lib.pyws_abort(mgr._loop, self.id)
            del mgr._listeners[self.id]

    def __repr__(self) -> str:
        return f"<Listener {self.url}>"


def refuse_upgrade(conn: Connection, status: int, why: str) -> str:
    """Answer an upgrade request that the listener's or route's rules refuse (403 for its
    Origin, 400 for no common subprotocol) with ``status`` and ``why``, close the connection
    once written, and set ``conn.error`` to a HandshakeError; returns the text an
    ``EV_ERROR`` carries (``"403 Forbidden: origin 'https://x' is not allowed"``)."""
    text = f"{status} {'Forbidden' if status == 403 else 'Bad Request'}: {why}"
    conn.reply(status, why + "\n", {"Connection": "close"})
    conn.drain()
    conn.error = HandshakeError(text, status=status)
    return text


class Timer:
    """A timer from :meth:`Manager.timer`; :meth:`cancel` stops it."""

    __slots__ = ("_mgr", "id", "fn", "repeat", "active")

    def __init__(self, mgr: "Manager", tid: int, fn: Callable[[], Any], repeat: bool) -> None:
        self._mgr = mgr
        self.id = tid
        self.fn = fn
        self.repeat = repeat
        self.active = True

    def cancel(self) -> None:
        """Stop the timer (harmless if it already fired or was cancelled)."""
        if self.active and self._mgr._loop is not None:
            self._mgr._check_thread()
            lib.pyws_timer_cancel(self._mgr._loop, self.id)
            self._mgr._timers.pop(self.id, None)
        self.active = False


class Manager:
    """An event loop with its listeners, connections and timers.

    ``handler(conn, ev, data)`` receives every event (see :mod:`pyws.constants` for what
    ``data`` is per event). Options (``max_message_size`` ...; see ``DEFAULT_OPTIONS`` for each
    default and unit) apply to every listener unless ``listen()`` overrides them.

    Threads: the loop belongs to the thread that first calls :meth:`poll` (or that created the
    Manager). Only :meth:`wakeup` and :meth:`call_soon_threadsafe` may be called from other
    threads; any other call from a foreign thread raises :class:`pyws.WrongThreadError`. What
    they hand over waits in a bounded queue (``LOOP_OPTIONS``: ``wakeup_queue_items``,
    ``wakeup_queue_bytes``) and each ``poll()`` runs at most ``wakeup_batch`` of it.
    """

    def __init__(self, handler: Optional[Handler] = None, *, broker: Optional[str] = None,
                 broker_options: Optional[Dict[str, Any]] = None, **options: Any) -> None:
        self._options, limits = resolve_options(options, "Manager()", loop_wide=True)
        self.handler = handler
        loop = lib.pyws_loop_new()
        if loop == ffi.NULL:
            raise PyWSError("cannot create the event loop (out of file descriptors or memory)")
        self._loop: Any = loop
        self._limits = limits
        lib.pyws_wake_limits(loop, limits["wakeup_queue_items"], limits["wakeup_queue_bytes"],
                             limits["wakeup_batch"])
        # one entry per thread inside wakeup()/call_soon_threadsafe()/pending_wakeups: each
        # appends before it reads self._loop and pops when done (both atomic), and close()
        # clears self._loop before it waits for this to empty, so it never frees the loop
        # under a producer
        self._inside: List[int] = []
        self._evp = ffi.new("pyws_event **")
        # poll()'s one-event path: the address pyws_poll stored in *_evp, as an int, and a
        # buffer over the first event at _ev1_at (remade when the array is somewhere else)
        self._ev_addr = ffi.cast("uintptr_t *", self._evp)
        self._ev1_at = 0
        self._ev1: Any = None
        size = ffi.new("size_t *")
        base = lib.pyws_arena(loop, size)
        self._arena = ffi.buffer(base, size[0])
        self._arena_base = int(ffi.cast("uintptr_t", base))
        self._arena_size = int(size[0])
        # EV_WS_MSG payloads of at least this many bytes are handed over as MessageView
        vt = limits["view_threshold"]
        self._view_min = vt if vt > 0 else 1 << 62
        self._keeper = _Keeper()
        self._live: Optional[Tuple[MessageView, int, int, int]] = None  # the view in a handler
        self._conns: Dict[int, Connection] = {}
        self._listeners: Dict[int, Listener] = {}
        self._timers: Dict[int, Timer] = {}
        # call_soon_threadsafe callbacks by tag: each rides the C queue as an EV_WAKEUP with
        # id 0 and this tag in aux, so wakeups and callbacks share one bound and one order
        self._soon: Dict[int, Tuple[Callable[..., Any], Tuple[Any, ...]]] = {}
        self._soon_tags = itertools.count(1)
        self._owner: Optional[int] = threading.get_ident()
        self._get_ident = threading.get_ident
        self._in_poll = False
        self._skipped = ffi.new("uint32_t *")
        self._dropped = ffi.new("uint32_t *")
        # run first thing in close(), while every descriptor is still open: what drives this
        # loop from outside (pyws.aio's bridge) lets go of its descriptors there
        self._close_hooks: List[Callable[[], None]] = []
        # run at the start of every poll(), before it writes and waits (pyws.broker: the
        # SUBSCRIBE/UNSUBSCRIBE batch of the changes since the last poll)
        self._poll_hooks: List[Callable[[], None]] = []
        self.broker: Optional["Broker"] = None
        if broker is not None:
            from .broker import Broker
            self.broker = Broker(self, broker, **(broker_options or {}))
        self._counters = ServerCounters()  # stats(): rate samples, drops Python sees

    # ------------------------------------------------------------------ threads
    def _check_thread(self) -> None:
        if self._owner != threading.get_ident():
            raise WrongThreadError(
                "this pyws call must run on the loop's thread; from other threads use "
                "Manager.wakeup() or Manager.call_soon_threadsafe()")

    def _require_loop(self) -> Any:
        self._check_thread()
        if self._loop is None:
            raise PyWSError("the manager is closed")
        return self._loop

    # ------------------------------------------------------------------ listening
    def listen(self, url: str, handler: Optional[Handler] = None, *, http: bool = True,
               tls: Optional[TlsOpts] = None, fd: Optional[int] = None,
               subprotocols: Optional[Sequence[str]] = None,
               subprotocol_required: bool = False,
               allowed_origins: Optional[Iterable[Optional[str]]] = None,
               allow_no_origin: bool = True, **options: Any) -> Listener:
        """Listen on ``url`` (``"http://127.0.0.1:8000"``, ``"ws://[::1]:0"``, ``"0.0.0.0:8000"``;
        port 0 picks a free port, see ``Listener.port``). ``handler`` overrides the manager's for
        connections accepted here; ``options`` override the manager's options. ``http`` is
        accepted for compatibility (pyws listeners always speak HTTP first).

        Upgrade rules, checked before the handler sees a WebSocket request (details in
        :mod:`pyws.handshake`):

        - ``subprotocols=["chat.v2", "chat.v1"]``: the subprotocols the server speaks, in its
          order of preference; ``conn.ws_upgrade(data)`` selects the first the client offered
          (``conn.subprotocol``), or none. ``subprotocol_required=True``: a request offering
          none of them gets ``400 Bad Request`` instead.
        - ``allowed_origins=["https://app.example.com", "https://*.example.com"]``: a request
          with another ``Origin`` gets ``403 Forbidden``. A request without ``Origin`` (not
          from a browser) is allowed unless ``allow_no_origin=False``.

        Refused requests are answered and closed by pyws; the handler gets ``EV_ERROR`` with
        the text sent, and ``conn.error`` is a :class:`pyws.HandshakeError` with its status.

        ``https://`` and ``wss://`` listeners need ``tls=TlsOpts(cert=..., key=...)``: every
        connection they accept speaks TLS. (Or, mongoose style, listen on http:// and call
        ``conn.tls_init(TlsOpts(...))`` on ``EV_ACCEPT``.)

        ``fd``: a socket already bound and listening (say, inherited from a parent process
        that shares it among workers, see :mod:`pyws.workers`) to accept on instead of
        binding ``url``'s address; the manager owns it from then on. ``url`` still gives the
        scheme.
        """
        loop = self._require_loop()
        opts_for_listener, _ = resolve_options(options, "listen()", base=self._options)
        policy = UpgradePolicy.make("listen()", subprotocols, subprotocol_required,
                                    allowed_origins, allow_no_origin)
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        # https:// or wss:// without tls=: the mongoose pattern, where the handler calls
        # conn.tls_init(TlsOpts(...)) on EV_ACCEPT
        if scheme not in ("http", "ws", "tcp", "https", "wss"):
            raise ValueError(f"cannot listen on {url!r}: use http://, ws://, https:// or wss://")
        host = parts.hostname or "0.0.0.0"
        try:
            port = parts.port if parts.port is not None else 80
        except ValueError as exc:
            raise ValueError(f"bad port in {url!r}") from exc
        # the TLS context first: a bad certificate or key must not leave a listener behind
        ctx = tls.context(True, loop) if tls is not None else None
        opts = ffi.new("pyws_opts *")
        fill_opts(opts, opts_for_listener)
        idp = ffi.new("uint64_t *")
        if fd is not None:
            rc = lib.pyws_listen_fd(loop, int(fd), opts, idp)
        else:
            rc = lib.pyws_listen(loop, host.encode(), port, opts, idp)
        if rc < 0:
            raise OSError(f"cannot listen on {url}: {last_error(loop)}")
        lid = int(idp[0])
        if ctx is not None:
            rc = lib.pyws_listen_tls(loop, lid, ctx)
            if rc < 0:
                lib.pyws_abort(loop, lid)
                raise TlsError(f"cannot listen with TLS: {last_error(loop)}")
        bound = lib.pyws_local_port(loop, lid)
        cap = int(lib.pyws_listener_max_sockets(loop, lid))
        lst = Listener(self, lid, host, bound, url, handler, cap, policy)
        self._listeners[lid] = lst
        return lst

    # ------------------------------------------------------------------ the loop
    def poll(self, timeout_ms: int = 0) -> int:
        """Run one loop iteration: write what is queued, wait up to ``timeout_ms``
        milliseconds (0 = do not wait, -1 = until something happens) for network activity,
        timers or wakeups, then call the handlers for everything that happened. Returns the
        number of events handled. Not reentrant: do not call it from a handler.

        Items from other threads (:meth:`wakeup`, :meth:`call_soon_threadsafe`) run in the
        order they were queued, at most ``wakeup_batch`` per call; when more are waiting, the
        next call does not wait but runs the next batch."""
        ident = self._get_ident()
        if self._owner != ident:
            if self._in_poll:
                raise WrongThreadError("poll() is already running on another thread")
            self._owner = ident
        loop = self._loop
        if loop is None:
            raise PyWSError("the manager is closed")
        if self._in_poll:
            raise PyWSError("poll() was called from inside a handler; return from the handler "
                            "instead")
        self._in_poll = True
        try:
            if self._poll_hooks:  # the broker's topic interest, before any wait
                for hook in self._poll_hooks:
                    hook()
            if self._keeper.dead:  # kept blocks whose last view died since the last batch
                self._keeper.free()
            n: int = _pyws_poll(loop, timeout_ms if type(timeout_ms) is int else int(timeout_ms),
                                self._evp)
            if n == 1 and _EV_UNPACK1 is not None:
                # One event, the steady state of a ping-pong: a small message is handed to its
                # handler here, without the batch machinery (a buffer and an iterator over the
                # array, two more frames); every other event goes the batch's way. This path
                # is a round trip's whole Python cost, so it is kept short.
                at = self._ev_addr[0]
                if at != self._ev1_at:  # the array moved (or the first poll): a new buffer
                    self._ev1 = ffi.buffer(self._evp[0], _EV_SIZE)
                    self._ev1_at = at
                t, op, _code, cid, dptr, ln, _d2, _l2, aux = _EV_UNPACK1(self._ev1)
                c = self._conns.get(cid) if t == EV_WS_MSG and ln < self._view_min else None
                if c is None:
                    self._dispatch_batch(self._evp[0], 1)
                else:
                    off = dptr - self._arena_base
                    if 0 <= off <= self._arena_size - ln:
                        data = self._arena[off:off + ln]
                    else:
                        data = ffi.buffer(self._evp[0].data, ln)[:] if ln else b""
                    sink = c._msg_sink
                    if sink is not None:  # the async driver: straight to its queue
                        try:
                            sink(data, op, aux == 1)
                        except Exception:
                            self._handler_failed(c, t)
                    else:
                        h = c.handler or self.handler
                        if h is not None:
                            msg = _new_message(WsMessage)
                            msg.data = data
                            msg.opcode = op
                            msg.compressed = aux == 1
                            try:
                                h(c, t, msg)
                            except Exception:
                                self._handler_failed(c, t)
            elif n:
                if n < 0:
                    raise PyWSError(f"poll failed: {last_error(loop)}")
                self._dispatch_batch(self._evp[0], n)
        finally:
            self._in_poll = False
        return n

    def _dispatch_batch(self, evs: Any, n: int) -> None:
        if _EV_UNPACK is None:  # pragma: no cover - 32-bit or unusual ABI
            rows: Any = ((e.type, e.opcode, e.code, e.id, int(ffi.cast("uintptr_t", e.data)),
                          e.len, 0, e.len2, e.aux) for e in (evs[i] for i in range(n)))
        else:
            rows = _EV_UNPACK(ffi.buffer(evs, n * _EV_SIZE))
        conns = self._conns
        buf = ffi.buffer
        default = self.handler
        arena = self._arena
        base = self._arena_base
        asize = self._arena_size
        vmin = self._view_min
        try:
            self._dispatch_rows(rows, evs, conns, buf, default, arena, base, asize, vmin)
        finally:
            if self._keeper.batch:  # the arena may have been handed over: map the new one
                self._keeper.batch.clear()
                size = ffi.new("size_t *")
                nb = lib.pyws_arena(self._loop, size) if self._loop is not None else None
                if nb is not None:
                    self._arena = ffi.buffer(nb, size[0])
                    self._arena_base = int(ffi.cast("uintptr_t", nb))

    def _dispatch_rows(self, rows: Any, evs: Any, conns: Dict[int, Connection], buf: Any,
                       default: Optional[Handler], arena: Any, base: int, asize: int,
                       vmin: int) -> None:
        i = -1
        for t, op, code, cid, dptr, ln, _d2, ln2, aux in rows:
            i += 1
            if t == EV_WS_MSG:
                c = conns.get(cid)
                if c is None:
                    continue
                sink = c._msg_sink
                if ln >= vmin and sink is None:
                    # a large message: a view of the C buffer, no copy; released (and made to
                    # raise) once the handler returns
                    h = c.handler or default
                    if h is None:
                        continue
                    exp = buf(evs[i].data, ln)
                    msg = MessageView(memoryview(exp).toreadonly(), op, aux == 1, exp)
                    del exp
                    self._live = (msg, cid, dptr, ln)
                    try:
                        h(c, t, msg)
                    except Exception:
                        self._handler_failed(c, t)
                    self._end_view(msg, cid, dptr, ln)
                    if self._loop is None:
                        break
                    continue
                off = dptr - base
                if 0 <= off <= asize - ln:
                    data = arena[off:off + ln]
                else:
                    data = buf(evs[i].data, ln)[:] if ln else b""
                if sink is not None:  # the async driver: straight to its queue
                    try:
                        sink(data, op, aux == 1)
                    except Exception:
                        self._handler_failed(c, t)
                    continue
                h = c.handler or default
                if h is not None:
                    wm = _new_message(WsMessage)  # Message(data, op, aux == 1), one call less
                    wm.data = data
                    wm.opcode = op
                    wm.compressed = aux == 1
                    try:
                        h(c, t, wm)
                    except Exception:
                        self._handler_failed(c, t)
            elif t == EV_ACCEPT:
                lst = self._listeners.get(aux)
                c = Connection(self, cid, lst.handler if lst else None, listener_id=aux)
                if lst is not None and lst.policy is not None:
                    c._policy = lst.policy
                conns[cid] = c
                self._deliver(c, t, None)
            elif t == EV_HTTP_MSG:
                c = conns.get(cid)
                if c is None:
                    continue
                ev = evs[i]
                head = buf(ev.data, ln)[:]
                body = buf(ev.data2, ln2)[:] if ln2 else b""
                hm = HttpMessage(head, body, bool(code))
                if code and c._policy is not None:  # the listener's origin/subprotocol rules
                    proto, status, why = c._policy.check(hm)
                    c._auto_protocol = proto
                    if status:
                        self._deliver(c, EV_ERROR, refuse_upgrade(c, status, why))
                        continue
                self._deliver(c, t, hm)
            elif t == EV_WS_OPEN:
                c = conns.get(cid)
                if c is None:
                    continue
                response = None
                if ln:  # a client's: the server's 101
                    response = HttpMessage(buf(evs[i].data, ln)[:])
                    c.response = response
                    c.subprotocol = response.header("sec-websocket-protocol")
                self._deliver(c, t, response)
            elif t == EV_HTTP_RESP:
                c = conns.get(cid)
                if c is not None:
                    ev = evs[i]
                    self._client_answered(c, HttpMessage(
                        buf(ev.data, ln)[:], buf(ev.data2, ln2)[:] if ln2 else b""))
            elif t == EV_CLOSE:
                c = conns.pop(cid, None)
                if c is None:
                    continue
                # aux: the connection had been upgraded (C's CF_WAS_WS)
                c._ended(aux == 1, code,
                         buf(evs[i].data, ln)[:].decode("utf-8", "replace") if ln else "")
                self._deliver(c, t, None)
            elif t == EV_DRAIN:
                c = conns.get(cid)
                if c is not None:
                    self._deliver(c, t, None)
            elif t == EV_WS_CTL:
                c = conns.get(cid)
                if c is not None:
                    data = buf(evs[i].data, ln)[:] if ln else b""
                    self._deliver(c, t, WsMessage(data, op))
            elif t == EV_TIMER:
                tm = self._timers.get(aux)
                if tm is not None:
                    if not tm.repeat:
                        tm.active = False
                        del self._timers[aux]
                    try:
                        tm.fn()
                    except Exception:
                        log.exception("pyws: timer callback %r raised", tm.fn)
            elif t == EV_WAKEUP:
                if cid == 0:
                    item = self._soon.pop(aux, None)  # call_soon_threadsafe's callback
                    if item is not None:
                        try:
                            item[0](*item[1])
                        except Exception:
                            log.exception("pyws: call_soon_threadsafe callback %r raised",
                                          item[0])
                    if self._loop is None:
                        break  # the callback closed the manager
                    continue
                data = buf(evs[i].data, ln)[:] if ln else b""
                c = conns.get(cid)
                if c is None:
                    self._counters.wakeups_unrouted += 1
                    log.warning("pyws: wakeup for connection %#x dropped: it is closed", cid)
                    continue
                self._deliver(c, t, data)
            elif t == EV_ERROR:
                text = buf(evs[i].data, ln)[:].decode("utf-8", "replace") if ln else "error"
                c = conns.get(cid)
                if c is not None and c.is_client and c.error is None:
                    c.error = failure(code, text)  # the kind is the code, never the wording
                elif c is not None and aux == 1 and c.error is None:
                    # a failed WebSocket upgrade, answered by the C core (op: the status sent)
                    c.error = HandshakeError(text, status=op)
                if c is None:
                    log.warning("pyws: %s", text)
                    if default is not None:
                        try:
                            default(None, t, text)
                        except Exception:
                            log.exception("pyws: handler raised on EV_ERROR")
                    continue
                self._deliver(c, t, text)
            elif t == EV_CONNECT or t == EV_CLOSE_HELD:  # CLOSE_HELD: pyws_hold_closes
                c = conns.get(cid)
                if c is not None:
                    self._deliver(c, t, None)
            elif t == EV_DATA:
                c = conns.get(cid)
                if c is not None:
                    off = dptr - base
                    if 0 <= off <= asize - ln:
                        self._deliver(c, t, arena[off:off + ln])
                    else:  # pragma: no cover - stream reads always land in the arena
                        self._deliver(c, t, buf(evs[i].data, ln)[:])
            if self._loop is None:
                break  # a handler closed the manager: the batch is gone

    def _end_view(self, msg: MessageView, cid: int, dptr: int, ln: int) -> None:
        """The handler that got ``msg`` returned: release its view, so that using it raises,
        and if a view derived from it is still alive, keep the memory under it for it."""
        self._live = None
        view = msg._view
        msg._view = None
        escaped = False
        if view is not None:
            try:
                view.release()
            except BufferError:  # something holds the view's own buffer (an export)
                escaped = True
            del view
        exp = msg._exp
        msg._exp = None
        if exp is None or not (escaped or _getrefcount(exp) > _EXP_REFS):
            return
        self._keep(exp, cid, dptr, ln)

    def _keep(self, exp: Any, cid: int, dptr: int, ln: int) -> None:
        """A view of ``dptr[0..ln)`` outlives its handler: make sure C neither frees nor reuses
        that memory until it is gone (``exp``, the exporter every derived view refers to,
        dies with the last of them)."""
        keeper = self._keeper
        if not keeper.warned:
            keeper.warned = True
            log.warning("pyws: a view of a received message (a slice or cast of msg.data) "
                        "outlived its handler; pyws keeps the memory under it alive. Copy what "
                        "you keep: bytes(msg.data[a:b]) or msg.detach()")
        kept = next((k for k in keeper.batch if k.lo <= dptr and dptr + ln <= k.hi), None)
        if kept is None:
            loop = self._loop
            if loop is None:  # pragma: no cover - close() keeps views before freeing
                raise PyWSError("the manager is closed")
            old_base = self._arena_base
            blk = ffi.new("void **")
            rc = lib.pyws_view_keep(loop, cid, ffi.cast("void *", dptr), ln, blk)
            if rc < 0:
                # never reuse memory under a live view: stop this loop rather than risk it
                raise MemoryError("pyws: cannot keep the memory of a view that outlived its "
                                  f"handler ({last_error(loop)})")
            if old_base <= dptr < old_base + self._arena_size:
                kept = _Kept(blk[0], old_base, old_base + self._arena_size, keeper)
            else:
                kept = _Kept(blk[0], dptr, dptr + ln, keeper)
            keeper.batch.append(kept)
        kept.refs += 1
        weakref.finalize(exp, kept.died).atexit = False

    def _deliver(self, c: Connection, ev: int, data: Any) -> None:
        h = c.handler or self.handler
        if h is None:
            return
        try:
            h(c, ev, data)
        except Exception:
            self._handler_failed(c, ev)

    def _handler_failed(self, c: Connection, ev: int) -> None:
        log.exception("pyws: handler raised on event %d for %r; closing that connection", ev, c)
        if c.closed or self._loop is None:
            return
        try:
            if c.is_websocket:
                c.close(1011, "internal error")
            else:
                if ev == EV_HTTP_MSG and c.write_buffer_size == 0:
                    c.reply(500, "internal server error\n")  # nothing answered it yet
                c.drain()
        except Exception:  # pragma: no cover - already closing
            pass

    # ------------------------------------------------------------------ timers, threads
    def timer(self, seconds: float, fn: Callable[[], Any], repeat: bool = False) -> Timer:
        """Call ``fn()`` on the loop thread after ``seconds`` (then every ``seconds`` if
        ``repeat``). Returns a :class:`Timer` with ``cancel()``."""
        loop = self._require_loop()
        tid = ffi.new("uint64_t *")
        rc = lib.pyws_timer_add(loop, max(0, int(seconds * 1000)), 1 if repeat else 0, tid)
        if rc < 0:
            raise MemoryError("cannot add a timer")
        t = Timer(self, int(tid[0]), fn, repeat)
        self._timers[t.id] = t
        return t

    def wakeup(self, conn_id: int, data: Union[bytes, str] = b"", *,
               timeout: Optional[float] = WAKEUP_TIMEOUT) -> None:
        """THREAD-SAFE. Deliver ``EV_WAKEUP`` with ``data`` to connection ``conn_id`` on the
        loop thread, waking a ``poll()`` that is waiting. A wakeup for a connection that has
        closed meanwhile is logged and dropped. Wakeups and :meth:`call_soon_threadsafe`
        callbacks are delivered in the order they were queued.

        The queue is bounded (``wakeup_queue_items`` items, ``wakeup_queue_bytes`` bytes of
        data: see ``LOOP_OPTIONS``). When it is full this call waits, without holding the GIL,
        until the loop has made room, for at most ``timeout`` seconds (default 10; ``None``
        waits as long as it takes, 0 not at all), then raises :class:`pyws.QueueFull`. Called
        from the loop's own thread (a handler, a timer) it never waits: a full queue raises
        QueueFull at once, since only that thread can empty it. Raises ``PyWSError("the
        manager is closed")`` once :meth:`close` was called, also in a thread that was waiting;
        ``ValueError`` if ``data`` alone is larger than ``wakeup_queue_bytes``."""
        if isinstance(data, str):
            data = data.encode()
        self._enqueue(int(conn_id), 0, data, timeout)

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any,
                             timeout: Optional[float] = WAKEUP_TIMEOUT) -> None:
        """THREAD-SAFE. Run ``fn(*args)`` on the loop thread at its next iteration, waking a
        ``poll()`` that is waiting. Callbacks and :meth:`wakeup` events run in the order they
        were queued; an exception in ``fn`` is logged.

        It shares the wakeup queue and its bound: when the queue is full this call waits for
        room up to ``timeout`` seconds (default 10; ``None`` = as long as it takes, 0 = not at
        all), then raises :class:`pyws.QueueFull` and ``fn`` will not run. From the loop's own
        thread it never waits: a full queue raises QueueFull at once (that thread is the one
        that empties it). After :meth:`close` it raises ``PyWSError("the manager is closed")``,
        also in a thread that was waiting."""
        tag = next(self._soon_tags)
        self._soon[tag] = (fn, args)  # before queueing: the loop may run it at once
        try:
            self._enqueue(0, tag, b"", timeout)
        except BaseException:
            self._soon.pop(tag, None)
            raise

    def _enqueue(self, conn_id: int, tag: int, data: bytes, timeout: Optional[float]) -> None:
        inside = self._inside
        inside.append(1)
        try:
            loop = self._loop
            if loop is None:
                raise PyWSError("the manager is closed")
            rc = lib.pyws_wakeup_wait(loop, conn_id, tag, data, len(data), 0)
            if rc == lib.PYWS_ERR_LIMIT:
                rc = self._wait_for_room(loop, conn_id, tag, data, timeout)
        finally:
            inside.pop()
        if rc == lib.PYWS_OK:
            return
        if rc == lib.PYWS_ERR_CLOSED:
            raise PyWSError("the manager is closed")
        if rc == lib.PYWS_ERR_ARG:
            raise ValueError(f"wakeup data of {len(data)} bytes can never fit the queue's "
                             f"wakeup_queue_bytes={self._limits['wakeup_queue_bytes']}; send "
                             "less, or raise that Manager option")
        raise MemoryError("wakeup: out of memory")

    def _wait_for_room(self, loop: Any, conn_id: int, tag: int, data: bytes,
                       timeout: Optional[float]) -> int:
        """The queue was full: wait for room in slices (the C wait releases the GIL), or
        raise QueueFull. Returns the last C result otherwise."""
        on_loop_thread = self._owner == self._get_ident()
        rc = lib.PYWS_ERR_LIMIT
        if not on_loop_thread and (timeout is None or timeout > 0):
            deadline = None if timeout is None else time.monotonic() + timeout
            while rc == lib.PYWS_ERR_LIMIT:
                if deadline is None:
                    ms = _WAIT_SLICE_MS
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    ms = min(_WAIT_SLICE_MS, max(1, math.ceil(left * 1000)))
                rc = lib.pyws_wakeup_wait(loop, conn_id, tag, data, len(data), ms)
        if rc == lib.PYWS_ERR_LIMIT:
            self._counters.wakeups_refused += 1  # (a plain int: a lost count, never a crash)
            raise QueueFull(self._full_message(on_loop_thread, timeout))
        return int(rc)

    def _full_message(self, on_loop_thread: bool, timeout: Optional[float]) -> str:
        bound = (f"{self._limits['wakeup_queue_items']} items or "
                 f"{self._limits['wakeup_queue_bytes']} bytes of data (Manager options "
                 "wakeup_queue_items / wakeup_queue_bytes)")
        if on_loop_thread:
            return (f"the loop's cross-thread queue is full ({bound}) and this is the loop's own "
                    "thread, which cannot wait for room only it can make: do the work directly "
                    "here, or return and queue it after poll() ran the backlog")
        return (f"the loop's cross-thread queue stayed full ({bound}) for the whole "
                f"timeout={timeout}s: the loop thread is not calling poll(), or not often enough "
                "for this rate. Poll more often, queue fewer (larger) items, pass a longer "
                "timeout= (None waits as long as it takes), or raise those bounds")

    @property
    def pending_wakeups(self) -> Tuple[int, int]:
        """THREAD-SAFE. ``(items, data_bytes)`` queued by :meth:`wakeup` and
        :meth:`call_soon_threadsafe` that the loop has not run yet; ``(0, 0)`` once closed."""
        items = ffi.new("size_t *")
        nbytes = ffi.new("size_t *")
        self._inside.append(1)  # keeps close() from freeing the loop meanwhile
        try:
            loop = self._loop
            if loop is None:
                return (0, 0)
            lib.pyws_wake_pending(loop, items, nbytes)
            return (int(items[0]), int(nbytes[0]))
        finally:
            self._inside.pop()

    # ------------------------------------------------------------------ clients
    def ws_connect(self, url: str, handler: Optional[Handler] = None, *,
                   headers: Optional[Dict[str, str]] = None,
                   protocols: Optional[List[str]] = None, origin: Optional[str] = None,
                   max_redirects: int = 5, tls: Optional[TlsOpts] = None,
                   **options: Any) -> Connection:
        """Open a client WebSocket to ``url`` (``ws://host[:port]/path?query``; IPv6 literals
        in brackets) from this loop; returns its :class:`Connection` at once. Its events reach
        ``handler`` (or the manager's): ``EV_CONNECT``, ``EV_WS_OPEN`` (data: the server's 101
        :class:`HttpMessage`), ``EV_WS_MSG``, ``EV_CLOSE``, and ``EV_ERROR`` when the connect
        or handshake fails (``conn.error`` then holds a HandshakeError, with the status and
        headers of a non-101 answer, or an OSError).

        ``headers`` are sent with the request, ``origin`` as Origin, ``protocols`` offered as
        Sec-WebSocket-Protocol (the server's choice is then ``conn.subprotocol``). Redirects
        (301/302/303/307/308) are followed up to ``max_redirects`` times, keeping the same
        Connection object. ``options`` are the manager options (``max_message_size``,
        ``handshake_timeout`` bounds connect + response, ...). DNS resolution blocks; the TCP
        connect does not. ``wss://`` verifies the server's certificate chain against the
        system's trust store and its host name, and sends SNI; ``tls=TlsOpts(ca=..., cert=...,
        key=...)`` gives a custom CA or a client certificate (``insecure_skip_verify=True``
        turns checking off)."""
        self._require_loop()
        return dial(self, url, handler, headers=headers, protocols=protocols, origin=origin,
                    max_redirects=max_redirects, tls=tls, options=options)

    def connect_stream(self, host: str, port: int, handler: Optional[Handler] = None, *,
                       tls: Optional[TlsOpts] = None, server_name: Optional[str] = None,
                       **options: Any) -> Connection:
        """Open a plain TCP (or, with ``tls=``, TLS) byte stream to ``host:port`` from this
        loop: no HTTP, no WebSocket, for a database or broker protocol that lives in the same
        loop (pyws's Redis broker uses it). Returns its :class:`Connection` at once.

        Events reach ``handler`` (or the manager's): ``EV_CONNECT`` when TCP is up, ``EV_DATA``
        (``bytes``: what one read gave, in order, never split or merged meaningfully: parse a
        stream), ``EV_ERROR`` then ``EV_CLOSE`` when it fails or ends. Write with
        ``conn.send_raw(data)`` (allowed before it connects: the bytes wait), end with
        ``conn.drain()`` (after the queued bytes) or ``conn.abort()``. ``handshake_timeout``
        bounds the connect (and the TLS handshake); ``write_limit`` bounds the queue (past it:
        ``EV_ERROR`` and the stream ends). DNS resolution blocks; use an IP address where the
        loop must never wait."""
        loop = self._require_loop()
        opts_resolved, _ = resolve_options(options, "connect_stream()", base=self._options)
        opts = ffi.new("pyws_opts *")
        fill_opts(opts, opts_resolved)
        idp = ffi.new("uint64_t *")
        rc = lib.pyws_stream_connect(loop, host.encode("idna"), int(port), opts, idp)
        if rc < 0:
            raise failure(rc, f"{host}:{port}: {last_error(loop)}")
        c = Connection(self, int(idp[0]), handler, is_client=True)
        self._conns[c.id] = c
        if tls is not None:
            rc = lib.pyws_tls_init(loop, c.id, tls.context(False, loop),
                                   (server_name or host).encode("idna"))
            if rc < 0:
                lib.pyws_abort(loop, c.id)
                raise TlsError(f"{host}:{port}: {last_error(loop)}")
        return c

    def _client_answered(self, c: Connection, hm: HttpMessage) -> None:
        """A client's upgrade got another answer than 101: its connect job (pyws.dial)
        follows a redirect or fails the connection."""
        if c._client is not None:
            c._client.answered(hm)

    # ------------------------------------------------------------------ topics
    def publish(self, topic: Union[str, bytes], data: Sendable,
                exclude: Optional[Connection] = None, binary: Optional[bool] = None,
                compress: Optional[bool] = None) -> int:
        """Send ``data`` to every WebSocket subscribed to ``topic`` except ``exclude``. The C
        core frames the message once and queues the same bytes on every subscriber. str is
        sent as text, bytes-like as binary, a :class:`pyws.Message` with its own opcode
        (``binary=True``/``False`` overrides; see :meth:`Connection.send`). A subscriber whose queue would
        pass ``write_limit`` is closed with 1008; it does not hold up the others. Returns how
        many connections it was queued on.

        With permessage-deflate, subscribers that reset their compressor after each message
        share one compressed frame (compressed once); ``compress=False`` sends it uncompressed
        to all, ``compress=True`` compresses it even under the threshold."""
        loop = self._require_loop()
        t = _topic(topic)
        payload, op = outgoing(data, binary)
        rc = lib.pyws_publish(loop, t, len(t), op, payload, len(payload),
                              exclude.id if exclude is not None else 0, send_flags(compress),
                              self._skipped, self._dropped)
        if rc < 0:
            raise_for(rc, loop, "publish")
        self._note_fanout("publish")
        if self.broker is not None:
            self.broker.publish(t, payload, op)
        return int(rc)

    def broadcast(self, data: Sendable, exclude: Optional[Connection] = None,
                  binary: Optional[bool] = None, compress: Optional[bool] = None) -> int:
        """Send ``data`` to every open server-side WebSocket of this manager except
        ``exclude``, framed once in C (see :meth:`publish`). Returns the number reached."""
        loop = self._require_loop()
        payload, op = outgoing(data, binary)
        rc = lib.pyws_broadcast(loop, op, payload, len(payload),
                                exclude.id if exclude is not None else 0, send_flags(compress),
                                self._skipped, self._dropped)
        if rc < 0:
            raise_for(rc, loop, "broadcast")
        self._note_fanout("broadcast")
        if self.broker is not None:
            self.broker.publish(None, payload, op)
        return int(rc)

    def _note_fanout(self, what: str) -> None:
        if self._skipped[0]:
            log.warning("pyws: %s skipped %d connection(s) in the middle of sending a "
                        "fragmented message", what, self._skipped[0])
        if self._dropped[0]:
            log.warning("pyws: %s closed %d slow subscriber(s) with 1008 (write_limit)", what,
                        self._dropped[0])

    def subscribers(self, topic: Union[str, bytes]) -> int:
        """How many connections are subscribed to ``topic``."""
        t = _topic(topic)
        return int(lib.pyws_topic_count(self._require_loop(), t, len(t)))

    @property
    def topic_count(self) -> int:
        """How many topics have at least one subscriber."""
        return int(lib.pyws_topic_total(self._require_loop()))

    def topics(self) -> Dict[Union[str, bytes], int]:
        """Every topic with at least one subscriber and its number of subscribers, read from
        the C core's table (a str name when it is UTF-8, else bytes; in no particular order)."""
        loop = self._require_loop()
        cursor = ffi.new("uint64_t *")
        name = ffi.new("pyws_str *")
        count = ffi.new("uint32_t *")
        out: Dict[Union[str, bytes], int] = {}
        while lib.pyws_topic_next(loop, cursor, name, count) == 1:
            raw = ffi.unpack(name.ptr, name.len) if name.len else b""
            try:
                key: Union[str, bytes] = raw.decode("utf-8")
            except UnicodeDecodeError:
                key = raw
            out[key] = int(count[0])
        return out

    def topic_members(self, topic: Union[str, bytes]) -> List[Connection]:
        """The connections subscribed to ``topic`` (empty if none), from the C core's table."""
        loop = self._require_loop()
        t = _topic(topic)
        n = int(lib.pyws_topic_members(loop, t, len(t), ffi.NULL, 0))
        if n <= 0:
            return []
        ids = ffi.new("uint64_t[]", n)
        n = min(n, int(lib.pyws_topic_members(loop, t, len(t), ids, n)))
        conns = self._conns
        return [c for c in (conns.get(int(ids[i])) for i in range(n)) if c is not None]

    # ------------------------------------------------------------------ connections
    @property
    def connections(self) -> List[Connection]:
        """The live connections (a new list each time)."""
        return list(self._conns.values())

    @property
    def listeners(self) -> List[Listener]:
        """The listeners."""
        return list(self._listeners.values())

    def connection(self, conn_id: int) -> Optional[Connection]:
        """The live connection with this id, or None."""
        return self._conns.get(conn_id)

    def stats(self) -> ServerStats:
        """Counters of the whole loop, since the manager was made: connections by state,
        messages and bytes in and out (totals and per-second rates), topics, closes the engine
        decided by reason (slow consumers, heartbeat timeouts), handshake failures by reason,
        drops, and the descriptor limits (``open_sockets``, ``refused``, ``accept_failures``,
        ``accept_pauses``, ``accepts_paused``, ``pause_ms``). A dict: every key is listed in
        :class:`pyws.ServerStats`. One C call that walks the connection table: cheap enough
        for a scrape every second, not meant for every event. Running short of descriptors is
        also logged (``EV_ERROR`` on the listener, a warning on the ``pyws`` logger) at most
        once a second, with a count. See :mod:`pyws.metrics` for the Prometheus text."""
        return self._counters.read(self._require_loop())

    @property
    def backend(self) -> str:
        """The poller compiled in: ``"epoll"``, ``"kqueue"`` or ``"poll"``."""
        return str(ffi.string(lib.pyws_backend()).decode())

    # ------------------------------------------------------------------ stopping
    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every WebSocket with 1001 (going away) and every HTTP
        connection after its queued output, keep polling until they are gone or ``timeout``
        seconds pass, then drop whatever is left. Call it between polls, not from a handler
        (it polls itself); from a signal handler, set a flag and shut down after ``poll()``."""
        loop = self._require_loop()
        if self._in_poll:
            raise PyWSError("shutdown() was called from inside a handler; it polls the loop "
                            "itself: set a flag and call it after poll() returns")
        if self.broker is not None:
            self.broker.stop()  # its last publishes are flushed, then its streams end
        for lst in list(self._listeners.values()):
            lst.close()
        for c in list(self._conns.values()):
            try:
                if c.is_websocket:
                    c.close(1001, "server shutting down")
                elif c.write_buffer_size == 0:
                    c.abort()  # an idle keep-alive HTTP connection: nothing to lose
                else:
                    c.drain()
            except Exception:
                pass
        deadline = time.monotonic() + timeout
        while self._conns and time.monotonic() < deadline:
            self.poll(20)
        for c in list(self._conns.values()):
            lib.pyws_abort(loop, c.id)
        if self._conns:
            self.poll(0)

    def close(self) -> None:
        """Free the loop at once: sockets are closed without any handshake and no further
        events are delivered. Use :meth:`shutdown` first for a graceful stop. A Manager
        running inside asyncio (:func:`pyws.attach`) is detached from it first."""
        if self._loop is None:
            return
        self._check_thread()
        if self.broker is not None:
            self.broker.stop(flush=False)
        hooks, self._close_hooks = self._close_hooks, []
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("pyws: close(): %r failed", hook)
        if self._loop is None:  # a hook closed it
            return
        live = self._live
        if live is not None:  # closed from inside a handler holding a view: keep it safe
            self._end_view(*live)
        loop, self._loop = self._loop, None  # no new producer gets in
        # wake the producers waiting for room (they raise "the manager is closed"), then let
        # every one that already holds the loop pointer leave the C call before freeing it
        lib.pyws_wake_close(loop)
        deadline = time.monotonic() + 10.0
        while self._inside and time.monotonic() < deadline:
            time.sleep(0.0005)  # they are on their way out: the C calls return at once now
        left = not self._inside
        for c in self._conns.values():  # no EV_CLOSE will come: say so from what C knows
            c._ended(bool(lib.pyws_is_websocket(loop, c.id) == 1))
        self._conns.clear()
        self._listeners.clear()
        self._timers.clear()
        self._soon.clear()
        self._keeper.closed = True  # kept blocks are no batch's any more: free them at once
        self._keeper.free()
        if left:
            lib.pyws_loop_free(loop)
        else:  # pragma: no cover - a producer stuck inside the C call: leak, never free under it
            log.error("pyws: close(): a thread is still inside wakeup(); the loop is not freed")

    def __enter__(self) -> "Manager":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None:
            try:
                if self._conns or self._listeners:
                    self.shutdown(1.0)
            finally:
                self.close()

    def __del__(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None:
            self._loop = None
            lib.pyws_loop_free(loop)
