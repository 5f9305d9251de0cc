"""What the engine counted, as typed Python values: :class:`ConnStats` for one connection
(``conn.stats()``, ``ws.stats()``) and :class:`ServerStats` for a whole loop (``mgr.stats()``,
``app.stats()``). Each is one C call (plus, for the loop, a walk over its connections in C);
nothing is counted in Python per message.

Two byte counts, at two levels (see ``csrc/pyws.h``, "Observability"):

- ``bytes_in`` / ``bytes_out``: the payload of data messages as the application sees it
  (after inflating what came compressed, before compressing what goes out); no headers, no
  control frames.
- ``wire_bytes_in`` / ``wire_bytes_out``: every byte read from and written to the connection:
  the HTTP upgrade, frame headers, control frames, compressed payloads. Under TLS, the
  plaintext TLS carries (records add their own overhead).

With permessage-deflate, ``deflate_in_wire`` / ``deflate_in_data`` are the compressed messages
received, before and after inflating; ``deflate_out_data`` / ``deflate_out_wire`` the messages
sent compressed, before and after compressing. Messages sent or received uncompressed are not
in them.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional, Tuple, TypedDict

from ._lib import ffi, lib

__all__ = ["ConnStats", "ServerStats", "RATE_WINDOW", "conn_stats", "ServerCounters"]

#: Seconds of history the per-second rates of :class:`ServerStats` are computed over.
RATE_WINDOW = 10.0

_PUBLIC_STATE = {0: "connecting", 1: "open", 2: "closing", 3: "closed"}


def _state_names() -> Tuple[str, ...]:
    return tuple(ffi.string(lib.pyws_state_name(i)).decode()
                 for i in range(int(lib.pyws_state_count())))


def _labels(table: int) -> Tuple[str, ...]:
    out: List[str] = []
    i = 0
    while True:
        p = lib.pyws_stats_label(table, i)
        if p == ffi.NULL:
            return tuple(out)
        out.append(ffi.string(p).decode())
        i += 1


STATE_NAMES = _state_names()
#: The public state (``"connecting"``, ``"open"``, ``"closing"``) of each internal state.
STATE_PUBLIC = tuple(_PUBLIC_STATE[int(lib.pyws_state_public(i))]
                     for i in range(len(STATE_NAMES)))
CLOSE_REASONS = _labels(0)
HANDSHAKE_REASONS = _labels(1)


@dataclass(frozen=True)
class ConnStats:
    """One connection's counters, read at once from the C core by ``conn.stats()``.

    Counts since the connection was accepted (or, for a client, since its connect began).
    Times are wall-clock seconds (``time.time()`` scale), derived from the loop's monotonic
    clock at the moment of the call; durations are seconds.
    """

    messages_in: int          #: data messages received, whole (fragments reassembled)
    messages_out: int         #: data messages queued to send (counted at their last frame)
    bytes_in: int             #: payload bytes of the messages received, after inflating
    bytes_out: int            #: payload bytes of data frames queued, before compressing
    wire_bytes_in: int        #: every byte read from the connection (HTTP, headers, control)
    wire_bytes_out: int       #: every byte written to it (what is still queued not included)
    deflate_in_wire: int      #: compressed messages received: payload bytes as they came
    deflate_in_data: int      #: ... and after inflating
    deflate_out_data: int     #: messages sent compressed: payload bytes before compressing
    deflate_out_wire: int     #: ... and after
    connected_since: float    #: wall-clock time the connection began
    last_activity: float      #: wall-clock time of the last byte read or written
    ping_rtt: Optional[float]  #: seconds: round trip of the last heartbeat ping the engine
    #: sent whose pong came back (None before the first; pings from the peer are not timed)
    pings_sent: int           #: heartbeat pings the engine sent
    write_buffer: int         #: bytes queued and not yet written
    state: str                #: the engine's internal state ("WS_OPEN", "HTTP", ...)
    subscriptions: int        #: topics the connection is subscribed to

    @property
    def age(self) -> float:
        """Seconds since the connection began (at the time of the call)."""
        return max(0.0, time.time() - self.connected_since)


def conn_stats(loop: Any, conn_id: int) -> Optional[ConnStats]:
    """The counters of connection ``conn_id`` of ``loop`` (a cffi ``pyws_loop *``), or None when
    it is not alive."""
    st = ffi.new("pyws_conn_stats *")
    if lib.pyws_conn_stats_get(loop, conn_id, st) < 0:
        return None
    wall = time.time()
    now = int(st.now)

    def when(ms: int) -> float:
        return wall - max(0, now - int(ms)) / 1000.0

    rtt = int(st.ping_rtt_us)
    state = int(st.state)
    return ConnStats(
        messages_in=int(st.msgs_in), messages_out=int(st.msgs_out),
        bytes_in=int(st.bytes_in), bytes_out=int(st.bytes_out),
        wire_bytes_in=int(st.wire_in), wire_bytes_out=int(st.wire_out),
        deflate_in_wire=int(st.deflate_in_wire), deflate_in_data=int(st.deflate_in_data),
        deflate_out_data=int(st.deflate_out_data), deflate_out_wire=int(st.deflate_out_wire),
        connected_since=when(int(st.connected_at)), last_activity=when(int(st.last_activity)),
        ping_rtt=rtt / 1e6 if rtt else None, pings_sent=int(st.pings_sent),
        write_buffer=int(st.write_buffer),
        state=STATE_NAMES[state] if 0 <= state < len(STATE_NAMES) else str(state),
        subscriptions=int(st.subscriptions))


class ServerStats(TypedDict):
    """What ``mgr.stats()`` / ``app.stats()`` return: a dict (JSON-ready) with these keys.

    Descriptor limits (since the Manager was made):

    - ``open_sockets``: open TCP connections (listeners excluded), checked against
      ``max_sockets``; ``refused``: connections answered 503 and closed at ``max_sockets``;
      ``accept_failures``: ``accept()`` failures for want of descriptors or memory;
      ``accept_pauses``: times the listeners were unwatched after one; ``accepts_paused``: 1
      while they are; ``pause_ms``: length of the current or last pause.

    Connections:

    - ``listeners``; ``connections``: live connections by public state (``"connecting"``: a
      server connection speaking HTTP or a client not open yet, ``"open"``, ``"closing"``);
      ``connection_states``: the same by the engine's internal state (``"HTTP"``,
      ``"WS_OPEN"``, ``"LINGER"``, ...; docs/architecture.md); ``accepted``: connections
      accepted in all; ``websockets_opened``: WebSockets opened in all (server and client).

    Traffic, summed over every connection the loop has had (see the module docstring for
    payload vs wire bytes): ``messages_in``, ``messages_out``, ``bytes_in``, ``bytes_out``,
    ``wire_bytes_in``, ``wire_bytes_out``, ``deflate_in_wire``, ``deflate_in_data``,
    ``deflate_out_data``, ``deflate_out_wire``; ``rates``: per second, ``messages_in``,
    ``messages_out``, ``bytes_in``, ``bytes_out`` averaged over ``rate_window`` seconds: the
    time since the oldest of the samples this Manager kept from earlier ``stats()`` calls within
    the last :data:`RATE_WINDOW` seconds (one sample a second at most; the first call averages
    since the Manager was made).

    Topics: ``topics`` (with at least one subscriber), ``subscriptions`` ((connection, topic)
    pairs).

    By reason:

    - ``closes``: connections the engine closed on its own: ``write_limit`` (1008, a slow
      consumer whose queue passed ``write_limit``, also in a publish), ``heartbeat_timeout``
      (1011, no pong within ``heartbeat_timeout``), ``idle_timeout``, ``close_timeout`` (the
      close handshake or lingering close outlasted ``close_timeout``);
    - ``handshake_failures``: server connections whose handshake failed, by the HTTP status
      they were answered with (``"400"``, ``"403"``, ``"404"``, ``"405"``, ``"408"``,
      ``"413"``, ``"426"``, ``"429"``, ``"431"``, ``"501"``, ``"503"``, ``"505"``,
      ``"other"``) — the engine's answers to bad requests, a request that did not arrive in
      ``handshake_timeout`` (408), the application's non-101 answers to valid upgrade requests
      (``ws.reject()``, App's ``max_connections`` 503, ...) — or ``"tls"`` / ``"tls_timeout"``
      for a TLS handshake that failed or did not end in time;
    - ``drops``: what was dropped: ``refused`` (connections refused at ``max_sockets``, the same
      as above), ``publish_skipped`` (publish/broadcast deliveries skipped: the subscriber was
      sending a fragmented message), ``pongs_replaced`` (pongs never sent: the peer pinged
      again before the last pong could go), ``wakeups_refused`` (``wakeup()`` /
      ``call_soon_threadsafe()`` calls that raised QueueFull), ``wakeups_unrouted`` (wakeups
      for a connection that had closed).

    Memory: ``caches``: what the loop keeps in its idle block caches for reuse, by cache
    (``"write_blocks"``: the 16 KiB blocks small frames are queued in, at most 1,024;
    ``"large_buffers"``: buffers of messages over 64 KiB and of frames over 16 KiB, at most 64
    and 64 MiB), each ``{"blocks": n, "bytes": n}``. A quarter of the blocks unused since the
    last trim is freed each poll (each second for large buffers), so they empty when the
    traffic stops.
    """

    open_sockets: int
    refused: int
    accept_failures: int
    accept_pauses: int
    accepts_paused: int
    pause_ms: int
    listeners: int
    connections: Dict[str, int]
    connection_states: Dict[str, int]
    accepted: int
    websockets_opened: int
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    wire_bytes_in: int
    wire_bytes_out: int
    deflate_in_wire: int
    deflate_in_data: int
    deflate_out_data: int
    deflate_out_wire: int
    rates: Dict[str, float]
    rate_window: float
    topics: int
    subscriptions: int
    closes: Dict[str, int]
    handshake_failures: Dict[str, int]
    drops: Dict[str, int]
    caches: Dict[str, Dict[str, int]]


#: the names of ``ServerStats["caches"]``, in pyws_loop_stats.cached_blocks[] order
CACHE_NAMES = ("write_blocks", "large_buffers")

_RATED = ("messages_in", "messages_out", "bytes_in", "bytes_out")


class ServerCounters:
    """A Manager's reader of the loop-wide counters, with the samples its rates come from and
    the drops only Python sees (wakeups). Loop thread only, like the Manager."""

    __slots__ = ("_samples", "wakeups_refused", "wakeups_unrouted")

    def __init__(self) -> None:
        self._samples: Deque[Tuple[float, Tuple[int, ...]]] = deque(
            [(time.monotonic(), (0,) * len(_RATED))])
        self.wakeups_refused = 0
        self.wakeups_unrouted = 0

    def read(self, loop: Any) -> ServerStats:
        """Everything :class:`ServerStats` lists, for the cffi ``pyws_loop *`` ``loop``."""
        lim = ffi.new("pyws_limit_stats *")
        lib.pyws_limit_stats_get(loop, lim)
        st = ffi.new("pyws_loop_stats *")
        lib.pyws_loop_stats_get(loop, st)
        by_state = {name: int(st.states[i]) for i, name in enumerate(STATE_NAMES)
                    if name != "CLOSED"}
        public = {"connecting": 0, "open": 0, "closing": 0}
        for i, name in enumerate(STATE_NAMES):
            if name != "CLOSED":
                public[STATE_PUBLIC[i]] += by_state[name]
        totals = (int(st.msgs_in), int(st.msgs_out), int(st.bytes_in), int(st.bytes_out))
        rates, window = self._rates(totals)
        return ServerStats(
            open_sockets=int(lim.sockets), refused=int(lim.refused),
            accept_failures=int(lim.accept_failures), accept_pauses=int(lim.accept_pauses),
            accepts_paused=int(lim.accept_paused), pause_ms=int(lim.pause_ms),
            listeners=int(st.listeners), connections=public, connection_states=by_state,
            accepted=int(st.accepted), websockets_opened=int(st.ws_opened),
            messages_in=totals[0], messages_out=totals[1], bytes_in=totals[2],
            bytes_out=totals[3], wire_bytes_in=int(st.wire_in), wire_bytes_out=int(st.wire_out),
            deflate_in_wire=int(st.deflate_in_wire), deflate_in_data=int(st.deflate_in_data),
            deflate_out_data=int(st.deflate_out_data),
            deflate_out_wire=int(st.deflate_out_wire),
            rates=rates, rate_window=window,
            topics=int(st.topics), subscriptions=int(st.subscriptions),
            closes={name: int(st.closes[i]) for i, name in enumerate(CLOSE_REASONS)},
            handshake_failures={name: int(st.hs_failed[i])
                                for i, name in enumerate(HANDSHAKE_REASONS)},
            drops={"refused": int(lim.refused), "publish_skipped": int(st.publish_skipped),
                   "pongs_replaced": int(st.pongs_replaced),
                   "wakeups_refused": self.wakeups_refused,
                   "wakeups_unrouted": self.wakeups_unrouted},
            caches={name: {"blocks": int(st.cached_blocks[i]), "bytes": int(st.cached_bytes[i])}
                    for i, name in enumerate(CACHE_NAMES)})

    def _rates(self, totals: Tuple[int, ...]) -> Tuple[Dict[str, float], float]:
        now = time.monotonic()
        samples = self._samples
        # the oldest sample still inside the window (or the newest one before it)
        while len(samples) > 1 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        t0, base = samples[0]
        dt = now - t0
        rates = {k: (totals[i] - base[i]) / dt if dt > 0 else 0.0 for i, k in enumerate(_RATED)}
        if now - samples[-1][0] >= 1.0:
            samples.append((now, totals))
        return rates, dt
