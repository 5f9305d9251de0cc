"""Options of the loop, its listeners and its connections: the defaults, the one function that
checks what a caller passed (:func:`resolve_options`), and filling the C ``pyws_opts`` struct.

Every entry point that takes options, ``Manager(...)``, ``Manager.listen(...)``,
``Manager.ws_connect(...)``, ``App(...)`` (and its ``listen``/``connect``) and
``pyws.connect(...)``, checks them with :func:`resolve_options`, so an unknown name is a
``TypeError`` and a bad value a ``ValueError`` with the same wording everywhere, at the call.
"""
from __future__ import annotations

import difflib
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from . import compression as _compression
from ._lib import lib

__all__ = ["DEFAULT_OPTIONS", "LOOP_OPTIONS", "resolve_options", "fill_opts"]

#: Defaults of the options accepted by ``Manager(...)`` and ``Manager.listen(...)``.
DEFAULT_OPTIONS: Dict[str, Any] = {
    "max_message_size": 4 * 1024 * 1024,  # bytes; a longer message closes with 1009
    "max_fragments": 1 << 20,             # frames in one message; more closes with 1009
    "max_header_bytes": 16384,            # bytes of HTTP request head; more gets 431
    "max_headers": 64,                    # header lines; more gets 431
    "max_body": 1024 * 1024,              # bytes of HTTP request body; more gets 413
    "write_high_water": 1024 * 1024,      # bytes; falling back under it raises EV_DRAIN
    "write_limit": 16 * 1024 * 1024,      # bytes queued; past it the peer is closed with 1008
    "close_timeout": 5.0,                 # seconds for the whole close handshake
    "heartbeat": 20.0,                    # seconds between pings; None = no heartbeat
    "heartbeat_timeout": 20.0,            # seconds to wait for the pong; then close 1011
    "idle_timeout": None,                 # seconds without traffic before closing; None = off
    "handshake_timeout": 10.0,            # seconds for an HTTP request to arrive completely
    "control_events": False,              # True: PING/PONG/CLOSE reach the handler as EV_WS_CTL
    "reuse_port": False,                  # SO_REUSEPORT on listeners
    "backlog": 1024,                      # listen(2) backlog
    "compression": "deflate",             # permessage-deflate: None, "deflate" or pyws.Deflate
    # Open TCP connections of the loop (accepted or dialled; listeners not counted) past
    # which a new connection gets "503 Service Unavailable" (Retry-After: 1) and is closed.
    # None = auto at listen(): S - max(32, S // 16) connections, S being the soft
    # RLIMIT_NOFILE (descriptors), so S // 16 (at least 32) stay free for files, listeners,
    # the poller and dialled connections. See Listener.max_sockets and Manager.stats().
    "max_sockets": None,
}

#: Defaults of the loop-wide options, accepted by ``Manager(...)`` (and ``App(...)``) only: they
#: bound the queue that :meth:`Manager.wakeup` and :meth:`Manager.call_soon_threadsafe` fill
#: from other threads and that ``poll()`` empties on the loop thread.
LOOP_OPTIONS: Dict[str, Any] = {
    "wakeup_queue_items": 65536,            # items (wakeups + callbacks) waiting; then producers wait
    "wakeup_queue_bytes": 64 * 1024 * 1024,  # bytes of wakeup() data waiting; then producers wait
    "wakeup_batch": 1024,                   # items one poll() runs at most; the rest run next poll
    # received messages of at least this many bytes reach handlers as a pyws.MessageView (a
    # read-only view of the receive buffer, valid while the handler runs; no copy); smaller
    # ones as bytes. None: always bytes.
    "view_threshold": 16 * 1024,
}


def resolve_options(options: Mapping[str, Any], where: str, *,
                    base: Optional[Mapping[str, Any]] = None, loop_wide: bool = False,
                    also: Iterable[str] = ()) -> Tuple[Dict[str, Any], Dict[str, int]]:
    """Check the keyword ``options`` given to ``where`` (``"listen()"``, ``"App()"`` ...) and
    return ``(connection_options, loop_options)``.

    ``connection_options`` is ``base`` (default: :data:`DEFAULT_OPTIONS`) updated with the
    names of :data:`DEFAULT_OPTIONS` in ``options``. With ``loop_wide=True`` (``Manager`` and
    ``App`` only) the names of :data:`LOOP_OPTIONS` are accepted too and ``loop_options`` is
    :data:`LOOP_OPTIONS` updated with them; otherwise such a name is refused and
    ``loop_options`` is empty. ``also`` lists the caller's own keyword names, only to suggest
    them for a misspelt name.

    Raises ``TypeError`` for an unknown name (or a loop-wide one where it does not apply) and
    ``ValueError`` for a bad value (``compression``, ``max_sockets``, the loop-wide bounds).
    """
    unknown = [k for k in options if k not in DEFAULT_OPTIONS and
               not (loop_wide and k in LOOP_OPTIONS)]
    if unknown:
        misplaced = sorted(k for k in unknown if k in LOOP_OPTIONS)
        if misplaced:
            raise TypeError(f"{where}: {', '.join(misplaced)}: loop-wide option(s), given to "
                            "Manager(...) (or App(...)), not per listener or connection")
        known = [*DEFAULT_OPTIONS, *(LOOP_OPTIONS if loop_wide else ()), *also]
        hints = []
        for k in sorted(unknown):
            close = difflib.get_close_matches(k, known, n=1)
            hints.append(f"{k} (did you mean {close[0]}?)" if close else k)
        raise TypeError(f"{where}: unknown option(s): {', '.join(hints)}; the options are "
                        "those of pyws.DEFAULT_OPTIONS"
                        + (" and pyws.LOOP_OPTIONS" if loop_wide else ""))
    conn = dict(DEFAULT_OPTIONS if base is None else base)
    loop: Dict[str, int] = {}
    for k, v in options.items():
        if k in DEFAULT_OPTIONS:
            conn[k] = v
        else:
            loop[k] = _loop_option(k, v)
    if "compression" in options:
        _compression.resolve(options["compression"])  # a bad value fails here, not later
    if "max_sockets" in options:
        max_sockets(options["max_sockets"])
    if loop_wide:
        loop = {k: loop.get(k, _loop_option(k, v)) for k, v in LOOP_OPTIONS.items()}
    return conn, loop


def _loop_option(name: str, value: Any) -> int:
    if name == "view_threshold":
        if value is None:
            return 0  # never
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"view_threshold must be None (always bytes) or a positive int "
                             f"(bytes), not {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, not {value!r}")
    if name == "wakeup_batch" and value > 0xFFFFFFFF:
        raise ValueError(f"wakeup_batch must be at most {0xFFFFFFFF}, not {value!r}")
    return value


def max_sockets(value: Optional[int]) -> int:
    """The C value of the max_sockets option: 0 = auto, else 1..2**32-1 (larger is clamped).
    Raises ``ValueError`` below 1."""
    if value is None:
        return 0
    n = int(value)
    if n < 1:
        raise ValueError(f"max_sockets must be None (auto) or at least 1, not {value!r}")
    return min(n, 0xFFFFFFFF)


def _ms(seconds: Optional[float]) -> int:
    if seconds is None or seconds <= 0:
        return 0
    return max(1, int(round(seconds * 1000)))


def fill_opts(o: Any, opts: Mapping[str, Any]) -> None:
    """Copy resolved connection options (every name of :data:`DEFAULT_OPTIONS`) into the
    cffi ``pyws_opts *`` struct ``o``."""
    lib.pyws_opts_default(o)
    o.max_message_size = int(opts["max_message_size"] or 0)
    o.max_fragments = int(opts["max_fragments"] or 0)
    o.max_header_bytes = int(opts["max_header_bytes"])
    o.max_headers = int(opts["max_headers"])
    o.max_body = int(opts["max_body"])
    o.write_high_water = int(opts["write_high_water"])
    o.write_limit = int(opts["write_limit"])
    o.close_timeout = _ms(opts["close_timeout"]) or 5000
    o.heartbeat = _ms(opts["heartbeat"])
    o.heartbeat_timeout = _ms(opts["heartbeat_timeout"]) or 20000
    o.idle_timeout = _ms(opts["idle_timeout"])
    o.handshake_timeout = _ms(opts["handshake_timeout"])
    o.control_events = 1 if opts["control_events"] else 0
    o.reuse_port = 1 if opts["reuse_port"] else 0
    o.backlog = int(opts["backlog"])
    o.max_sockets = max_sockets(opts["max_sockets"])
    _compression.fill(o, opts["compression"])
