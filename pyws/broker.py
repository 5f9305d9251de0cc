"""Topics shared through Redis pub/sub: ``Manager(broker="redis://...")`` / ``App(broker=...)``.

Every worker and every machine that names the same Redis shares its topics: a publish reaches
the subscribers of every node, each once, in the publisher's order.

How it works (docs/deployment.md has the figures):

- One Redis channel per topic, ``prefix + topic``. A node SUBSCRIBEs to a channel while it has
  at least one local subscriber to the topic and UNSUBSCRIBEs when the last one leaves; the C
  topic table logs those changes (``pyws_topic_watch``) and the broker sends them as one
  SUBSCRIBE and one UNSUBSCRIBE at the start of the next ``poll()``.
- One PUBLISH per publish, on one connection, so Redis keeps the publisher's order. The
  publishing node delivers to its own subscribers at once (the C fan-out) and drops its own
  copy when Redis echoes it back: every message carries the node's random 8-byte id.
- A message that arrives from Redis goes through the same C fan-out as a local publish
  (framed once, queued on every subscriber).
- The two Redis connections (one subscribed, one for PUBLISH) are streams of the pyws loop
  (``Manager.connect_stream``: the loop's buffers, write queue, deadlines and TLS). Nothing
  blocks ``poll()``; there is no thread. Replies are parsed by hiredis (the ``hiredis``
  package: Redis's own C parser), commands are made by its ``pack_command``.

When Redis is away, local delivery goes on. Publishes wait in a bounded queue and go out, in
order, when the connection is back; what does not fit is counted (``dropped``). The
application hears of it: ``EV_BROKER`` on the Manager's handler (``conn`` is None, ``data`` a
:class:`BrokerEvent`), and ``@app.on_broker`` on an App. A subscription that stopped
delivering without the connection failing (seen after failovers) is found by a probe: when
nothing arrived for ``probe_interval`` seconds the node publishes a token on its own probe
channel and expects it back within ``probe_timeout``; if it does not come, both connections
are made anew.
"""
from __future__ import annotations

import collections
import logging
import os
import random
import sys
import time
from typing import (TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Set, Tuple,
                    Union)
from urllib.parse import parse_qs, unquote, urlsplit

from ._lib import ffi, lib
from .constants import EV_BROKER, EV_CLOSE, EV_DATA, EV_ERROR, OP_BINARY, OP_TEXT
from .tls import TlsOpts

if TYPE_CHECKING:
    from .connection import Connection
    from .manager import Manager

__all__ = ["Broker", "BrokerEvent", "BrokerURL", "parse_broker_url", "BROKER_DEFAULTS"]

log = logging.getLogger("pyws.broker")

_hiredis: Any
try:
    import hiredis as _hiredis
except ImportError:  # pragma: no cover - a dependency of pyws; reported when a broker is asked
    _hiredis = None

#: The broker's options (``broker_options={...}`` on Manager/App) and their defaults.
BROKER_DEFAULTS: Dict[str, Any] = {
    "prefix": "pyws:",          # channel = prefix + topic; nodes of one app share it
    "queue_items": 10_000,      # publishes held while Redis is away ...
    "queue_bytes": 16 << 20,    # ... and their bytes; past either, a publish is dropped+counted
    "max_inflight": 10_000,     # PUBLISHes written and not answered yet; past it, queue
    "max_message": 16 << 20,    # a message from Redis bigger than this is dropped and counted
    "connect_timeout": 3.0,     # s: connect + AUTH/SELECT/SUBSCRIBE answered
    "probe_interval": 5.0,      # s without any message on the subscription: probe it
    "probe_timeout": 3.0,       # s for the probe to come back, else reconnect
    "backoff_min": 0.05,        # s: first retry after a failure (then doubling, with jitter)
    "backoff_max": 1.0,         # s: retries never wait longer
    "tls": None,                # TlsOpts for rediss:// (None: system CAs, host name checked)
}

_MAGIC = b"pw\x01"             # version 1 of the envelope
_HEADER = 12                   # magic (3) + opcode (1: b"t"/b"b") + origin node id (8)
_TICK = 0.1                    # s: how often timeouts, retries and probes are looked at
_CHUNK = 1024                  # channels per SUBSCRIBE/UNSUBSCRIBE command


class BrokerURL:
    """A parsed broker URL: ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://``
    (TLS); ``?prefix=...`` sets the channel prefix."""

    __slots__ = ("host", "port", "db", "username", "password", "tls", "prefix", "safe")

    def __init__(self, host: str, port: int, db: int, username: Optional[str],
                 password: Optional[str], tls: bool, prefix: Optional[str], safe: str) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.username = username
        self.password = password
        self.tls = tls
        self.prefix = prefix
        self.safe = safe  # the URL without its password, for logs and stats


def parse_broker_url(url: str) -> BrokerURL:
    """Parse a ``redis://`` or ``rediss://`` URL; ValueError says what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise ValueError(f"broker URL {url!r}: use redis://host:port/db or rediss:// (TLS)")
    host = parts.hostname
    if not host:
        raise ValueError(f"broker URL {url!r} has no host: redis://127.0.0.1:6379/0")
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ValueError(f"broker URL {url!r}: bad port") from exc
    path = parts.path.strip("/")
    try:
        db = int(path) if path else 0
    except ValueError as exc:
        raise ValueError(f"broker URL {url!r}: the path is the database number, e.g. /0") \
            from exc
    if db < 0:
        raise ValueError(f"broker URL {url!r}: the database number must be >= 0")
    q = parse_qs(parts.query)
    prefix = q["prefix"][-1] if "prefix" in q else None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    netloc = f"[{host}]" if ":" in host else host
    safe = f"{scheme}://{netloc}:{port}/{db}"
    return BrokerURL(host, port, db, username, password, scheme == "rediss", prefix, safe)


class BrokerEvent:
    """What ``EV_BROKER`` and ``@app.on_broker`` hand over.

    - ``up``: True when the broker came back (every topic resubscribed), False when it went
      away (or could not be reached at start).
    - ``topics``: the topics that may have missed messages from other nodes: those with
      local subscribers at any time while it was away (``up=True``), or at the moment it went
      (``up=False``).
    - ``dropped``: this node's publishes that did not reach Redis in the gap (queue overflow,
      or written and never confirmed when the connection broke); 0 when all went out.
    - ``down_for``: seconds it was away (``up=True``), else 0.
    - ``reason``: why it went away, or what brought it back."""

    __slots__ = ("up", "topics", "dropped", "down_for", "reason")

    def __init__(self, up: bool, topics: List[str], dropped: int, down_for: float,
                 reason: str) -> None:
        self.up = up
        self.topics = topics
        self.dropped = dropped
        self.down_for = down_for
        self.reason = reason

    def __repr__(self) -> str:
        state = "up" if self.up else "down"
        return (f"<BrokerEvent {state} topics={len(self.topics)} dropped={self.dropped} "
                f"down_for={self.down_for:.3f}s reason={self.reason!r}>")


class _RateLog:
    """Log a condition at once, then at most once per ``every`` seconds with a count."""

    __slots__ = ("every", "count", "last")

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.count = 0
        self.last = 0.0

    def __call__(self, level: int, msg: str, *args: Any) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= self.every:
            if self.count > 1:
                msg += " (%d times since the last report)"
                args = args + (self.count,)
            log.log(level, msg, *args)
            self.last = now
            self.count = 0


class _Link:
    """One Redis connection of the loop: ``sub`` (subscribed) or ``pub`` (PUBLISH, probes)."""

    def __init__(self, broker: "Broker", role: str) -> None:
        self.broker = broker
        self.role = role
        self.conn: Optional["Connection"] = None
        self.state = "down"          # down -> connecting -> up
        self.since = time.monotonic()
        self.retry_at = 0.0          # monotonic: when to connect again (0: now)
        self.attempts = 0            # failures since it was last up
        self.setup = 0               # replies still owed to the set-up commands
        self.expect: Deque[Optional[bytes]] = collections.deque()  # pub: topic per PUBLISH
        self.last_rx = time.monotonic()
        self.last_error = ""
        self.reader: Any = None

    @property
    def up(self) -> bool:
        return self.state == "up"

    def open(self) -> None:
        b = self.broker
        self.reader = _hiredis.Reader()
        self.state = "connecting"
        self.since = time.monotonic()
        self.expect.clear()
        u = b.url
        try:
            self.conn = b.mgr.connect_stream(
                u.host, u.port, self._on_event,
                tls=(b.options["tls"] or TlsOpts()) if u.tls else None,
                handshake_timeout=b.options["connect_timeout"],
                write_limit=max(64 << 20, 4 * int(b.options["queue_bytes"])))
        except Exception as exc:  # DNS failure, no descriptors ...: retry like a refusal
            self.conn = None
            self._failed(str(exc))
            return
        setup: List[Tuple[bytes, ...]] = []
        if u.password is not None:
            setup.append((b"AUTH", u.username.encode(), u.password.encode()) if u.username
                         else (b"AUTH", u.password.encode()))
        if self.role == "pub":
            if u.db:
                setup.append((b"SELECT", str(u.db).encode()))
            for cmd in setup:
                self.send(cmd)
            self.setup = len(setup)
            if not self.setup:
                self._ready()
        else:
            for cmd in setup:
                self.send(cmd)
            channels = b.initial_channels()
            self.setup = len(setup) + len(channels)
            for i in range(0, len(channels), _CHUNK):
                self.send((b"SUBSCRIBE",) + tuple(channels[i:i + _CHUNK]))

    def send(self, cmd: Tuple[bytes, ...]) -> None:
        if self.conn is not None:
            self.conn.send_raw(_hiredis.pack_command(cmd))

    def close(self, flush: bool) -> None:
        conn, self.conn = self.conn, None
        self.state = "down"
        if conn is not None and not conn.closed:
            try:
                if flush:
                    conn.drain()
                else:
                    conn.abort()
            except Exception:  # pragma: no cover - already gone
                pass

    def restart(self, why: str) -> None:
        """Drop this connection and make a new one (after the backoff)."""
        self.close(False)
        self._failed(why)

    def _ready(self) -> None:
        self.state = "up"
        self.since = time.monotonic()
        self.attempts = 0
        self.last_rx = time.monotonic()
        self.broker.link_up(self)

    def _failed(self, why: str) -> None:
        was_up = self.state == "up"
        self.state = "down"
        self.conn = None
        self.last_error = why
        self.since = time.monotonic()
        lo, hi = self.broker.options["backoff_min"], self.broker.options["backoff_max"]
        delay = min(hi, lo * (2 ** min(self.attempts, 20)))
        delay *= random.uniform(0.5, 1.0)  # jitter: nodes that lost Redis together spread out
        self.attempts += 1
        self.retry_at = time.monotonic() + delay
        self.broker.link_down(self, why, was_up, delay)

    def _on_event(self, conn: "Connection", ev: int, data: Any) -> None:
        if conn is not self.conn:
            return  # a connection this link already gave up
        if ev == EV_DATA:
            self.reader.feed(data)
            while True:
                try:
                    reply = self.reader.gets()
                except Exception as exc:  # hiredis.ProtocolError: the stream is lost
                    self.broker.bad_input(f"unreadable reply from Redis ({exc})")
                    self.restart(f"protocol error: {exc}")
                    return
                if reply is False:
                    return
                self.last_rx = time.monotonic()
                self.broker.reply(self, reply)
                if conn is not self.conn:
                    return  # the reply made it restart
        elif ev == EV_ERROR:
            self.last_error = str(data)
        elif ev == EV_CLOSE:
            if self.conn is conn:
                self.conn = None
                self._failed(self.last_error or "Redis closed the connection")


class Broker:
    """The Redis side of a Manager's topics (see the module's text). Made by
    ``Manager(broker=url, broker_options={...})``; options: :data:`BROKER_DEFAULTS`."""

    def __init__(self, mgr: "Manager", url: str, **options: Any) -> None:
        if _hiredis is None:
            raise RuntimeError("the Redis broker needs the hiredis package: pip install hiredis")
        unknown = set(options) - set(BROKER_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown broker option(s) {sorted(unknown)}; the options are "
                            f"{sorted(BROKER_DEFAULTS)}")
        self.options: Dict[str, Any] = dict(BROKER_DEFAULTS, **options)
        self.url = parse_broker_url(url)
        prefix = self.url.prefix if self.url.prefix is not None else self.options["prefix"]
        self.prefix = prefix.encode() if isinstance(prefix, str) else bytes(prefix)
        self.mgr = mgr
        self.node_id = os.urandom(8)
        self._hdr = {OP_TEXT: _MAGIC + b"t" + self.node_id, OP_BINARY: _MAGIC + b"b" + self.node_id}
        self._bcast = self.prefix + b"\x00broadcast"
        self._probe_ch = self.prefix + b"\x00probe:" + self.node_id.hex().encode()
        self._plen = len(self.prefix)
        self.sub = _Link(self, "sub")
        self.pub = _Link(self, "pub")
        self._wanted: Set[bytes] = set()          # topics with local subscribers
        self._queue: Deque[Tuple[bytes, bytes]] = collections.deque()
        self._queue_bytes = 0
        self._probe_token: Optional[bytes] = None
        self._probe_sent = 0.0
        self._stopping = False
        # the gap: since when the subscription is away, and what may have missed messages
        self._down_since: Optional[float] = time.monotonic()
        self._gap_topics: Set[bytes] = set()
        self._gap_dropped = 0
        self._announced_down = False
        self._ever_up = False
        self._lenp = ffi.new("size_t *")
        self._lostp = ffi.new("uint64_t *")
        self._skipped = ffi.new("uint32_t *")
        self._dropped_c = ffi.new("uint32_t *")
        self._bad_log = _RateLog()
        self._drop_log = _RateLog()
        self._conn_log = _RateLog(10.0)
        self.counters: Dict[str, int] = dict.fromkeys((
            "published", "sent", "queued_total", "dropped", "unconfirmed", "received",
            "delivered", "echoes", "bad_messages", "oversize", "reconnects", "probes",
            "probe_failures", "subscribes", "unsubscribes"), 0)
        self._tick_timer: Any = None
        # nothing touches the network before the first poll(): a Manager made in a process
        # that forks workers (pyws.workers) leaves no connection behind in the parent
        self._started = False
        lib.pyws_topic_watch(mgr._require_loop(), 1)
        mgr._poll_hooks.append(self._sync)

    def _start(self) -> None:
        self._started = True
        self._tick_timer = self.mgr.timer(_TICK, self._tick, repeat=True)
        self.sub.open()
        self.pub.open()

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> str:
        """``"up"`` (both connections ready), ``"connecting"`` or ``"down"``."""
        if self.sub.up and self.pub.up:
            return "up"
        if self.sub.state == "down" and self.pub.state == "down":
            return "down"
        return "connecting"

    def stats(self) -> Dict[str, Any]:
        """The broker's counters and state: ``state``, ``url`` (without the password),
        ``node_id``, ``topics`` (channels subscribed for local subscribers), ``queued`` /
        ``queued_bytes`` (publishes waiting for Redis now), ``inflight`` (written, not
        answered), and since the start: ``published`` (publishes handed to the broker),
        ``sent`` (PUBLISHes written), ``queued_total``, ``dropped`` (did not fit the queue),
        ``unconfirmed`` (written but the connection broke before Redis answered),
        ``received`` (messages from Redis), ``delivered`` (local deliveries of them),
        ``echoes`` (this node's own messages coming back, dropped), ``bad_messages`` and
        ``oversize`` (dropped input), ``reconnects``, ``probes``, ``probe_failures``,
        ``subscribes`` / ``unsubscribes`` (channels), ``down_for`` (s, 0 when up) and
        ``last_error``."""
        st: Dict[str, Any] = dict(self.counters)
        st.update(state=self.state, url=self.url.safe, node_id=self.node_id.hex(),
                  topics=len(self._wanted), queued=len(self._queue),
                  queued_bytes=self._queue_bytes, inflight=len(self.pub.expect),
                  down_for=(time.monotonic() - self._down_since) if self._down_since else 0.0,
                  last_error=self.sub.last_error or self.pub.last_error)
        return st

    def initial_channels(self) -> List[bytes]:
        """What a new subscribed connection SUBSCRIBEs to: every wanted topic, the broadcast
        channel and this node's probe channel."""
        return [self._probe_ch, self._bcast] + [self.prefix + t for t in sorted(self._wanted)]

    # ------------------------------------------------------------------ publishing
    def publish(self, topic: Optional[bytes], payload: Any, op: int) -> None:
        """Send a local publish (``topic``) or broadcast (None) to the other nodes. The local
        subscribers already have it (Manager.publish)."""
        if self._stopping:
            return
        ch = self._bcast if topic is None else self.prefix + topic
        msg = b"".join((self._hdr[op], payload))
        self.counters["published"] += 1
        pub = self.pub
        if pub.up and not self._queue and len(pub.expect) < self.options["max_inflight"]:
            pub.send((b"PUBLISH", ch, msg))
            pub.expect.append(topic)
            self.counters["sent"] += 1
            return
        if (len(self._queue) >= self.options["queue_items"]
                or self._queue_bytes + len(msg) > self.options["queue_bytes"]):
            self.counters["dropped"] += 1
            self._gap_dropped += 1
            if topic is not None:
                self._gap_topics.add(topic)
            self._drop_log(logging.WARNING, "pyws broker %s: a publish was dropped: the queue "
                           "for Redis is full (%d messages, %d bytes: broker_options "
                           "queue_items/queue_bytes)", self.url.safe, len(self._queue),
                           self._queue_bytes)
            return
        self._queue.append((ch, msg))
        self._queue_bytes += len(msg)
        self.counters["queued_total"] += 1

    def _flush_queue(self) -> None:
        pub = self.pub
        limit = self.options["max_inflight"]
        while self._queue and pub.up and len(pub.expect) < limit:
            ch, msg = self._queue.popleft()
            self._queue_bytes -= len(msg)
            pub.send((b"PUBLISH", ch, msg))
            pub.expect.append(ch[self._plen:] if ch != self._bcast else None)
            self.counters["sent"] += 1

    # ------------------------------------------------------------------ replies
    def reply(self, link: _Link, r: Any) -> None:
        """A reply or a pushed message from Redis on ``link``."""
        if link.state == "connecting" and link.setup:
            if isinstance(r, _hiredis.ReplyError):
                link.restart(f"Redis refused the set-up: {r}")
                return
            setup_reply = not isinstance(r, list) or r[:1] == [b"subscribe"]
            if setup_reply:
                link.setup -= 1
                if link.setup == 0:
                    link._ready()
                return
        if link.role == "pub":
            if isinstance(r, _hiredis.ReplyError):
                self._bad_log(logging.WARNING, "pyws broker %s: Redis answered a PUBLISH with "
                              "an error: %s", self.url.safe, r)
            if link.expect:
                link.expect.popleft()
            if link.expect or self._queue:
                self._flush_queue()
            return
        if isinstance(r, list) and len(r) == 3:
            kind = r[0]
            if kind == b"message":
                self._message(r[1], r[2])
                return
            if kind in (b"subscribe", b"unsubscribe"):
                return
        if isinstance(r, _hiredis.ReplyError):
            self._bad_log(logging.WARNING, "pyws broker %s: Redis error on the subscription: "
                          "%s", self.url.safe, r)
            return
        self.bad_input(f"unexpected reply on the subscription: {r!r:.80}")

    def _message(self, ch: bytes, data: bytes) -> None:
        self.counters["received"] += 1
        if ch == self._probe_ch:
            self.counters["received"] -= 1  # not an application message
            if data == self._probe_token:
                self._probe_token = None
            return
        if len(data) < _HEADER or not data.startswith(_MAGIC):
            self.bad_input(f"a message on {ch!r:.80} is not a pyws message")
            return
        if data[4:_HEADER] == self.node_id:
            self.counters["echoes"] += 1  # ours, already delivered here
            return
        kind = data[3]
        op = OP_TEXT if kind == 0x74 else OP_BINARY if kind == 0x62 else 0
        n = len(data) - _HEADER
        if not op:
            self.bad_input(f"a message on {ch!r:.80} has an unknown type {kind}")
            return
        if n > self.options["max_message"]:
            self.counters["oversize"] += 1
            self._bad_log(logging.WARNING, "pyws broker %s: a %d-byte message on %r was "
                          "dropped: larger than max_message (%d)", self.url.safe, n, ch[:80],
                          self.options["max_message"])
            return
        loop = self.mgr._loop
        if loop is None:
            return
        ptr = ffi.from_buffer(data) + _HEADER
        if op == OP_TEXT and not lib.pyws_utf8_valid(ptr, n):
            self.bad_input(f"a text message on {ch!r:.80} is not valid UTF-8")
            return
        if ch == self._bcast:
            rc = lib.pyws_broadcast(loop, op, ptr, n, 0, 0, self._skipped, self._dropped_c)
        elif ch.startswith(self.prefix):
            t = ch[self._plen:]
            rc = lib.pyws_publish(loop, t, len(t), op, ptr, n, 0, 0, self._skipped,
                                  self._dropped_c)
        else:
            self.bad_input(f"a message on {ch!r:.80}, a channel without the prefix")
            return
        if rc > 0:
            self.counters["delivered"] += rc
        if self._skipped[0] or self._dropped_c[0]:
            self.mgr._note_fanout("broker delivery")

    def bad_input(self, what: str) -> None:
        """Input from the broker side that cannot be delivered: dropped, counted, logged."""
        self.counters["bad_messages"] += 1
        self._bad_log(logging.WARNING, "pyws broker %s: dropped: %s", self.url.safe, what)

    # ------------------------------------------------------------------ interest
    def _sync(self) -> None:
        """Poll hook: the topics that gained their first local subscriber or lost their last
        since the last poll become one SUBSCRIBE and one UNSUBSCRIBE."""
        if not self._started:
            self._start()
        loop = self.mgr._loop
        ptr = lib.pyws_topic_changes(loop, self._lenp, self._lostp)
        n = self._lenp[0]
        if not n and not self._lostp[0]:
            return
        if self._lostp[0]:
            log.error("pyws broker %s: %d topic change(s) were not recorded (out of memory): "
                      "some topics may not be subscribed", self.url.safe, self._lostp[0])
        raw = ffi.buffer(ptr, n)[:]
        names: Set[bytes] = set()
        i = 0
        while i + 4 <= n:
            ln = int.from_bytes(raw[i:i + 4], sys.byteorder)
            names.add(raw[i + 4:i + 4 + ln])
            i += 4 + ln
        subs: List[bytes] = []
        unsubs: List[bytes] = []
        for t in names:
            have = lib.pyws_topic_count(loop, t, len(t)) > 0
            if have and t not in self._wanted:
                self._wanted.add(t)
                subs.append(self.prefix + t)
                if self._down_since is not None:
                    self._gap_topics.add(t)
            elif not have and t in self._wanted:
                self._wanted.discard(t)
                unsubs.append(self.prefix + t)
        if self.sub.up:  # otherwise the set-up of the next connection subscribes them all
            for i in range(0, len(subs), _CHUNK):
                self.sub.send((b"SUBSCRIBE",) + tuple(subs[i:i + _CHUNK]))
            for i in range(0, len(unsubs), _CHUNK):
                self.sub.send((b"UNSUBSCRIBE",) + tuple(unsubs[i:i + _CHUNK]))
        self.counters["subscribes"] += len(subs)
        self.counters["unsubscribes"] += len(unsubs)

    # ------------------------------------------------------------------ up and down
    def link_up(self, link: _Link) -> None:
        if link.role == "pub":
            self._flush_queue()
        if self.sub.up and self.pub.up and self._down_since is not None:
            down_for = time.monotonic() - self._down_since
            topics = sorted(self._gap_topics)
            dropped = self._gap_dropped
            first = not self._ever_up
            self._ever_up = True
            self._down_since = None
            self._gap_topics = set()
            self._gap_dropped = 0
            if first and not self._announced_down:
                log.info("pyws broker %s: connected (node %s)", self.url.safe,
                         self.node_id.hex())
                return  # up at start: nothing was missed
            self._announced_down = False
            log.warning("pyws broker %s: back after %.2f s; %d topic(s) may have missed "
                        "messages, %d publish(es) of this node did not reach Redis",
                        self.url.safe, down_for, len(topics), dropped)
            self._emit(BrokerEvent(True, [t.decode("utf-8", "surrogateescape") for t in topics],
                                   dropped, down_for, "reconnected"))

    def link_down(self, link: _Link, why: str, was_up: bool, retry_in: float) -> None:
        if link.role == "pub" and link.expect:
            n = len(link.expect)
            self.counters["unconfirmed"] += n
            self._gap_dropped += n
            self._gap_topics.update(t for t in link.expect if t is not None)
            link.expect.clear()
        if self._stopping:
            return
        if was_up:
            self.counters["reconnects"] += 1
        self._conn_log(logging.WARNING, "pyws broker %s: %s connection %s: %s; retrying in "
                       "%.2f s", self.url.safe, "subscription" if link.role == "sub"
                       else "publish", "lost" if was_up else "failed", why, retry_in)
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._gap_topics = set(self._wanted)
        if not self._announced_down:
            self._announced_down = True
            self._emit(BrokerEvent(False, [t.decode("utf-8", "surrogateescape")
                                           for t in sorted(self._wanted)],
                                   0, 0.0, why))
        if link.role == "sub" and self.pub.up:
            pass  # the publish side goes on: other nodes still get this node's messages

    def _emit(self, event: BrokerEvent) -> None:
        h = self.mgr.handler
        if h is None:
            return
        try:
            h(None, EV_BROKER, event)
        except Exception:
            log.exception("pyws: handler raised on EV_BROKER")

    # ------------------------------------------------------------------ time
    def _tick(self) -> None:
        if self._stopping:
            return
        now = time.monotonic()
        o = self.options
        for link in (self.sub, self.pub):
            if link.state == "down" and now >= link.retry_at:
                link.open()
            elif link.state == "connecting" and now - link.since > o["connect_timeout"]:
                link.restart(f"Redis did not answer within connect_timeout "
                             f"({o['connect_timeout']} s)")
        if not (self.sub.up and self.pub.up):
            return
        if self._probe_token is not None:
            if now - self._probe_sent > o["probe_timeout"]:
                self._probe_token = None
                self.counters["probe_failures"] += 1
                log.warning("pyws broker %s: the subscription stopped delivering (a probe "
                            "did not come back within %.1f s); reconnecting", self.url.safe,
                            o["probe_timeout"])
                self.sub.restart("probe not delivered")
                self.pub.restart("probe not delivered")
        elif now - self.sub.last_rx >= o["probe_interval"]:
            self._probe_token = os.urandom(8)
            self._probe_sent = now
            self.counters["probes"] += 1
            self.pub.send((b"PUBLISH", self._probe_ch, self._probe_token))
            self.pub.expect.append(None)

    def stop(self, flush: bool = True) -> None:
        """Stop for good: no more retries; with ``flush`` the publishes already written (or
        queued, when connected) still go out before the connection ends."""
        if self._stopping:
            return
        if flush:
            self._flush_queue()
        self._stopping = True
        if self._tick_timer is not None:
            self._tick_timer.cancel()
        if self._sync in self.mgr._poll_hooks:
            self.mgr._poll_hooks.remove(self._sync)
        self.sub.close(False)
        self.pub.close(flush)
        if self._queue:
            self.counters["dropped"] += len(self._queue)
            log.warning("pyws broker %s: stopped with %d publish(es) not sent to Redis",
                        self.url.safe, len(self._queue))
            self._queue.clear()
            self._queue_bytes = 0
