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
from urllib.parse import parse_qs, unquote

from ._lib import ffi, lib
from .constants import EV_BROKER, EV_CLOSE, EV_DATA, EV_ERROR, OP_BINARY, OP_TEXT
from .errors import ConnectionClosed, PyWSError
from .tls import TlsOpts

if TYPE_CHECKING:
    from .connection import Connection
    from .manager import Manager

__all__ = ["Broker", "BrokerEvent", "BrokerURL", "parse_broker_url", "key_slot",
           "BROKER_DEFAULTS"]

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
    "topology_interval": 5.0,   # s: a cluster's slot map is asked again this often
    "tls": None,                # TlsOpts for rediss:// (None: system CAs, host name checked)
}

_MAGIC = b"pw\x01"             # version 1 of the envelope
_HEADER = 12                   # magic (3) + opcode (1: b"t"/b"b") + origin node id (8)
_TICK = 0.1                    # s: how often timeouts, retries and probes are looked at
_CHUNK = 1024                  # channels per SUBSCRIBE/UNSUBSCRIBE command


class BrokerURL:
    """A parsed broker URL: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://``
    (TLS), or ``redis+cluster://host:port[,host:port...]`` / ``rediss+cluster://`` (a Redis
    Cluster: topics spread over its masters by hash slot, SSUBSCRIBE/SPUBLISH); ``?prefix=``
    sets the channel prefix."""

    __slots__ = ("host", "port", "seeds", "db", "username", "password", "tls", "cluster",
                 "prefix", "safe")

    def __init__(self, seeds: List[Tuple[str, int]], db: int, username: Optional[str],
                 password: Optional[str], tls: bool, cluster: bool, prefix: Optional[str],
                 safe: str) -> None:
        self.seeds = seeds
        self.host, self.port = seeds[0]
        self.db = db
        self.username = username
        self.password = password
        self.tls = tls
        self.cluster = cluster
        self.prefix = prefix
        self.safe = safe  # the URL without its password, for logs and stats


def _host_port(item: str, url: str) -> Tuple[str, int]:
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_s = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"broker URL {url!r} has no host: redis://127.0.0.1:6379/0")
    try:
        port = int(port_s) if port_s else 6379
    except ValueError as exc:
        raise ValueError(f"broker URL {url!r}: bad port {port_s!r}") from exc
    if not 0 < port < 65536:
        raise ValueError(f"broker URL {url!r}: bad port {port}")
    return host, port


def parse_broker_url(url: str) -> BrokerURL:
    """Parse a ``redis://``, ``rediss://``, ``redis+cluster://`` or ``rediss+cluster://`` URL;
    ValueError says what is wrong."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        raise ValueError(f"broker URL {url!r}: use redis://host:port/db, rediss:// (TLS) or "
                         "redis+cluster://host:port,host:port (Redis Cluster)")
    netloc, _, path_q = rest.partition("/")
    path, _, query = path_q.partition("?")
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        hosts, userinfo = netloc, ""
    if not hosts:
        raise ValueError(f"broker URL {url!r} has no host: redis://127.0.0.1:6379/0")
    cluster = scheme.endswith("+cluster")
    seeds = [_host_port(h, url) for h in hosts.split(",") if h]
    if len(seeds) > 1 and not cluster:
        raise ValueError(f"broker URL {url!r}: several hosts are for redis+cluster:// only")
    path = path.strip("/")
    try:
        db = int(path) if path else 0
    except ValueError as exc:
        raise ValueError(f"broker URL {url!r}: the path is the database number, e.g. /0") \
            from exc
    if db < 0 or (cluster and db):
        raise ValueError(f"broker URL {url!r}: the database number must be >= 0 (and 0 for "
                         "a cluster)")
    q = parse_qs(query)
    prefix = q["prefix"][-1] if "prefix" in q else None
    username: Optional[str] = None
    password: Optional[str] = None
    if userinfo:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
        if not colon:  # redis://secret@host: a password alone, as redis-cli reads it
            password, username = username, None
    tls = scheme.startswith("rediss")
    shown = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in seeds)
    safe = f"{scheme}://{shown}" + ("" if cluster else f"/{db}")
    return BrokerURL(seeds, db, username, password, tls, cluster, prefix, safe)


# Redis Cluster's key slot: CRC16 (CCITT/XMODEM: polynomial 0x1021, initial 0) of the key, or
# of its hash tag (the bytes between the first "{" and the next "}", when not empty), mod 16384
def _crc16_table() -> List[int]:
    table = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        table.append(c & 0xFFFF)
    return table


_CRC16 = _crc16_table()
SLOTS = 16384


def key_slot(key: bytes) -> int:
    """The Redis Cluster hash slot of ``key`` (channel names hash like keys)."""
    s = key.find(b"{")
    if s >= 0:
        e = key.find(b"}", s + 1)
        if e > s + 1:
            key = key[s + 1:e]
    crc = 0
    for b in key:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ b) & 0xFF]
    return crc % SLOTS


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
    """One Redis connection of the loop: ``sub`` (subscribed) or ``pub`` (PUBLISH, probes and
    cluster commands), to one shard's node."""

    def __init__(self, shard: "_Shard", role: str) -> None:
        self.shard = shard
        self.broker = shard.broker
        self.role = role
        self.conn: Optional["Connection"] = None
        self.state = "down"          # down -> connecting -> up
        self.since = time.monotonic()
        self.retry_at = 0.0          # monotonic: when to connect again (0: now)
        self.attempts = 0            # failures since it was last up
        self.setup = 0               # replies still owed to the set-up commands
        # pub: one entry per command written and not answered: a publish (topic, channel,
        # message), or a callable that takes the reply (probes, CLUSTER SLOTS)
        self.expect: Deque[Any] = collections.deque()
        self.last_rx = time.monotonic()
        self.last_error = ""
        self.reader: Any = None
        self.initial: Set[bytes] = set()  # sub: the channels its set-up subscribed

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
                self.shard.host, self.shard.port, self._on_event,
                tls=(b.options["tls"] or TlsOpts()) if u.tls else None,
                server_name=u.host if u.tls else None,
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
            return
        for cmd in setup:
            self.send(cmd)
        channels = self.shard.initial_channels()
        self.initial = set(channels)
        self.setup = len(setup) + len(channels)
        b.send_subscribe(self, channels)
        if not self.setup:
            self._ready()

    def send(self, cmd: Tuple[bytes, ...]) -> bool:
        """Queue a command; False if the connection is already ending (its EV_CLOSE is on
        the way: the caller keeps what it wanted to send)."""
        if self.conn is None:
            return False
        try:
            self.conn.send_raw(_hiredis.pack_command(cmd))
        except (PyWSError, ConnectionClosed):
            return False
        return True

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


class _Shard:
    """One Redis node of the broker (the only one, or a cluster master): its two connections,
    the publishes waiting for it, and its probe."""

    def __init__(self, broker: "Broker", host: str, port: int) -> None:
        self.broker = broker
        self.host = host
        self.port = port
        self.name = f"{host}:{port}"
        self.sub = _Link(self, "sub")
        self.pub = _Link(self, "pub")
        self.queue: Deque[Tuple[Optional[bytes], bytes, bytes]] = collections.deque()
        self.probe_ch: Optional[bytes] = None
        self.probe_token: Optional[bytes] = None
        self.probe_sent = 0.0
        self.gone = False             # no longer a master of the cluster
        self.confirmed: Set[bytes] = set()  # channels Redis confirmed on the subscribed link

    @property
    def up(self) -> bool:
        return self.sub.up and self.pub.up

    def initial_channels(self) -> List[bytes]:
        """What a new subscribed connection to this node subscribes to: the probe channel,
        and every wanted channel (and the broadcast channel) that lives here."""
        b = self.broker
        out = [self.probe_ch] if self.probe_ch is not None else []
        if b.route(b.bcast) is self:
            out.append(b.bcast)
        out += [b.prefix + t for t in sorted(b.wanted) if b.route(b.prefix + t) is self]
        return out

    def start(self) -> None:
        self.sub.open()
        self.pub.open()

    def close(self, flush: bool) -> None:
        self.sub.close(False)
        self.pub.close(flush)


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
        self.cluster = self.url.cluster
        self.node_id = os.urandom(8)
        self._hdr = {OP_TEXT: _MAGIC + b"t" + self.node_id,
                     OP_BINARY: _MAGIC + b"b" + self.node_id}
        self.bcast = self.prefix + b"\x00broadcast"
        self._plen = len(self.prefix)
        self._sub_cmd = (b"SSUBSCRIBE", b"SUNSUBSCRIBE") if self.cluster else \
            (b"SUBSCRIBE", b"UNSUBSCRIBE")
        self._pub_cmd = b"SPUBLISH" if self.cluster else b"PUBLISH"
        self._msg_kind = b"smessage" if self.cluster else b"message"
        self.shards: Dict[str, _Shard] = {}
        self._slots: Optional[List[Optional[_Shard]]] = None   # cluster: slot -> master
        self._slot_cache: Dict[bytes, int] = {}
        self._seed = 0
        self._topology_at = 0.0      # monotonic: the last CLUSTER SLOTS asked
        self._topology_asked = False
        self._refresh_due = False
        if self.cluster:
            host, port = self.url.seeds[0]
            self._seed_shard: Optional[_Shard] = _Shard(self, host, port)
        else:
            self._seed_shard = None
            one = _Shard(self, self.url.host, self.url.port)
            one.probe_ch = self.prefix + b"\x00probe:" + self.node_id.hex().encode()
            self.shards[one.name] = one
        self.wanted: Set[bytes] = set()            # topics with local subscribers
        self._pending: Deque[Tuple[Optional[bytes], bytes, bytes]] = collections.deque()
        self._queued = 0                           # items and bytes waiting, all shards
        self._queued_bytes = 0
        self._stopping = False
        # the gap: since when a subscription is away, and what may have missed messages
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
            "probe_failures", "subscribes", "unsubscribes", "moved", "topology_changes"), 0)
        self._tick_timer: Any = None
        # nothing touches the network before the first poll(): a Manager made in a process
        # that forks workers (pyws.workers) leaves no connection behind in the parent
        self._started = False
        lib.pyws_topic_watch(mgr._require_loop(), 1)
        mgr._poll_hooks.append(self._sync)

    def _start(self) -> None:
        self._started = True
        self._tick_timer = self.mgr.timer(_TICK, self._tick, repeat=True)
        if self._seed_shard is not None:
            self._seed_shard.pub.open()
        for sh in self.shards.values():
            sh.start()

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> str:
        """``"up"`` (every connection ready), ``"connecting"`` or ``"down"``."""
        shards = list(self.shards.values())
        if shards and all(sh.up for sh in shards):
            return "up"
        links = [ln for sh in shards for ln in (sh.sub, sh.pub)]
        if self._seed_shard is not None:
            links.append(self._seed_shard.pub)
        if all(ln.state == "down" for ln in links):
            return "down"
        return "connecting"

    def stats(self) -> Dict[str, Any]:
        """The broker's counters and state: ``state``, ``url`` (without the password),
        ``node_id``, ``shards`` (Redis nodes in use: 1, or the cluster's masters),
        ``topics`` (topics with local subscribers), ``confirmed`` (their channels Redis has
        confirmed subscribing: equal to ``topics`` once every SUBSCRIBE is answered), ``queued`` /
        ``queued_bytes`` (publishes waiting for Redis now), ``inflight`` (written, not
        answered), and since the start: ``published`` (publishes handed to the broker),
        ``sent`` (PUBLISHes written), ``queued_total``, ``dropped`` (did not fit the queue),
        ``unconfirmed`` (written but the connection broke before Redis answered),
        ``received`` (messages from Redis), ``delivered`` (local deliveries of them),
        ``echoes`` (this node's own messages coming back, dropped), ``bad_messages`` and
        ``oversize`` (dropped input), ``reconnects``, ``probes``, ``probe_failures``,
        ``subscribes`` / ``unsubscribes`` (channels), ``moved`` and ``topology_changes``
        (cluster), ``down_for`` (s, 0 when up) and ``last_error``."""
        st: Dict[str, Any] = dict(self.counters)
        links = [ln for sh in self.shards.values() for ln in (sh.sub, sh.pub)]
        confirmed = sum(1 for sh in self.shards.values() for ch in sh.confirmed
                        if ch != sh.probe_ch and ch != self.bcast)
        st.update(state=self.state, url=self.url.safe, node_id=self.node_id.hex(),
                  shards=len(self.shards), topics=len(self.wanted), confirmed=confirmed,
                  queued=self._queued,
                  queued_bytes=self._queued_bytes,
                  inflight=sum(len(sh.pub.expect) for sh in self.shards.values()),
                  down_for=(time.monotonic() - self._down_since) if self._down_since else 0.0,
                  last_error=next((ln.last_error for ln in links if ln.last_error), ""))
        return st

    # ------------------------------------------------------------------ routing
    def route(self, channel: bytes) -> Optional[_Shard]:
        """The shard a channel lives on (None: a cluster whose slots are not known yet)."""
        if not self.cluster:
            return next(iter(self.shards.values()))
        if self._slots is None:
            return None
        slot = self._slot_cache.get(channel)
        if slot is None:
            if len(self._slot_cache) > 100_000:
                self._slot_cache.clear()
            slot = self._slot_cache[channel] = key_slot(channel)
        return self._slots[slot]

    def send_subscribe(self, link: _Link, channels: List[bytes], unsub: bool = False) -> None:
        """(S)SUBSCRIBE or (S)UNSUBSCRIBE ``channels`` on a subscribed connection: batched,
        and in a cluster one command per hash slot (a command may not span slots)."""
        verb = self._sub_cmd[1 if unsub else 0]
        if not self.cluster:
            for i in range(0, len(channels), _CHUNK):
                link.send((verb,) + tuple(channels[i:i + _CHUNK]))
            return
        by_slot: Dict[int, List[bytes]] = {}
        for ch in channels:
            by_slot.setdefault(key_slot(ch), []).append(ch)
        for group in by_slot.values():
            link.send((verb,) + tuple(group))

    # ------------------------------------------------------------------ publishing
    def publish(self, topic: Optional[bytes], payload: Any, op: int) -> None:
        """Send a local publish (``topic``) or broadcast (None) to the other nodes. The local
        subscribers already have it (Manager.publish)."""
        if self._stopping:
            return
        ch = self.bcast if topic is None else self.prefix + topic
        msg = b"".join((self._hdr[op], payload))
        self.counters["published"] += 1
        sh = self.route(ch)
        if sh is not None and sh.pub.up and not sh.queue and \
                len(sh.pub.expect) < self.options["max_inflight"] and \
                sh.pub.send((self._pub_cmd, ch, msg)):
            sh.pub.expect.append((topic, ch, msg))
            self.counters["sent"] += 1
            return
        self._enqueue(sh, topic, ch, msg)

    def _enqueue(self, sh: Optional[_Shard], topic: Optional[bytes], ch: bytes,
                 msg: bytes, front: bool = False) -> None:
        if (self._queued >= self.options["queue_items"]
                or self._queued_bytes + len(msg) > self.options["queue_bytes"]):
            self.counters["dropped"] += 1
            self._gap_dropped += 1
            if topic is not None:
                self._gap_topics.add(topic)
            self._drop_log(logging.WARNING, "pyws broker %s: a publish was dropped: the queue "
                           "for Redis is full (%d messages, %d bytes: broker_options "
                           "queue_items/queue_bytes)", self.url.safe, self._queued,
                           self._queued_bytes)
            return
        q = sh.queue if sh is not None else self._pending
        if front:
            q.appendleft((topic, ch, msg))
        else:
            q.append((topic, ch, msg))
        self._queued += 1
        self._queued_bytes += len(msg)
        self.counters["queued_total"] += 1

    def _flush(self, sh: _Shard) -> None:
        pub = sh.pub
        limit = self.options["max_inflight"]
        while sh.queue and pub.up and len(pub.expect) < limit:
            topic, ch, msg = sh.queue[0]
            if not pub.send((self._pub_cmd, ch, msg)):
                return  # ending: the queue waits for the next connection
            sh.queue.popleft()
            self._queued -= 1
            self._queued_bytes -= len(msg)
            pub.expect.append((topic, ch, msg))
            self.counters["sent"] += 1

    def _reroute_pending(self) -> None:
        """Publishes made before the cluster's slots were known, or queued on a shard that
        is no longer a master: to the shard that owns their channel now."""
        moved: List[Tuple[Optional[bytes], bytes, bytes]] = list(self._pending)
        self._pending.clear()
        for sh in list(self.shards.values()):
            if sh.gone:
                moved += list(sh.queue)
                sh.queue.clear()
        for topic, ch, msg in moved:
            self._queued -= 1
            self._queued_bytes -= len(msg)
            self.counters["queued_total"] -= 1
            self._enqueue(self.route(ch), topic, ch, msg)
        for sh in self.shards.values():
            self._flush(sh)

    # ------------------------------------------------------------------ replies
    def reply(self, link: _Link, r: Any) -> None:
        """A reply or a pushed message from Redis on ``link``."""
        if link.state == "connecting" and link.setup:
            if isinstance(r, _hiredis.ReplyError):
                link.restart(f"Redis refused the set-up: {r}")
                return
            if not isinstance(r, list) or r[:1] in ([b"subscribe"], [b"ssubscribe"]):
                if isinstance(r, list) and len(r) == 3:
                    link.shard.confirmed.add(r[1])
                link.setup -= 1
                if link.setup == 0:
                    link._ready()
                return
        if link.role == "pub":
            entry = link.expect.popleft() if link.expect else None
            if callable(entry):
                entry(r)
            elif isinstance(r, _hiredis.ReplyError):
                self._publish_failed(link, entry, r)
            sh = link.shard
            if sh.queue:
                self._flush(sh)
            return
        if isinstance(r, list) and len(r) == 3:
            kind = r[0]
            if kind == self._msg_kind:
                self._message(link.shard, r[1], r[2])
                return
            if kind in (b"subscribe", b"ssubscribe"):
                link.shard.confirmed.add(r[1])
                return
            if kind == b"unsubscribe":
                link.shard.confirmed.discard(r[1])
                return
            if kind == b"sunsubscribe":
                ch = r[1]
                link.shard.confirmed.discard(ch)
                t = ch[self._plen:]
                if ch.startswith(self.prefix) and t in self.wanted and \
                        self.route(ch) is link.shard:
                    # not ours: the cluster moved the slot away (or the node lost it)
                    self._refresh_due = True
                return
        if isinstance(r, _hiredis.ReplyError):
            text = str(r)
            if text.startswith(("MOVED", "CLUSTERDOWN")):
                self._refresh_due = True
            self._bad_log(logging.WARNING, "pyws broker %s: Redis error on the subscription "
                          "to %s: %s", self.url.safe, link.shard.name, r)
            return
        self.bad_input(f"unexpected reply on the subscription: {r!r:.80}")

    def _publish_failed(self, link: _Link, entry: Any, r: Any) -> None:
        text = str(r)
        if entry is not None and text.startswith(("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")):
            # not published: the slot lives elsewhere now; send it again once we know where
            self.counters["moved"] += 1
            self._refresh_due = True
            topic, ch, msg = entry
            self._pending.append((topic, ch, msg))
            self._queued += 1
            self._queued_bytes += len(msg)
            return
        if entry is not None:
            self.counters["dropped"] += 1
            self._gap_dropped += 1
        self._bad_log(logging.WARNING, "pyws broker %s: Redis (%s) answered a publish with an "
                      "error: %s", self.url.safe, link.shard.name, r)

    def _message(self, sh: _Shard, ch: bytes, data: bytes) -> None:
        self.counters["received"] += 1
        if ch == sh.probe_ch:
            self.counters["received"] -= 1  # not an application message
            if data == sh.probe_token:
                sh.probe_token = None
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
        if ch == self.bcast:
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
        since the last poll become one SUBSCRIBE and one UNSUBSCRIBE (per node and slot)."""
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
        subs: Dict[_Shard, List[bytes]] = {}
        unsubs: Dict[_Shard, List[bytes]] = {}
        for t in names:
            have = lib.pyws_topic_count(loop, t, len(t)) > 0
            ch = self.prefix + t
            if have and t not in self.wanted:
                self.wanted.add(t)
                self.counters["subscribes"] += 1
                if self._down_since is not None:
                    self._gap_topics.add(t)
                sh = self.route(ch)
                if sh is not None:
                    subs.setdefault(sh, []).append(ch)
            elif not have and t in self.wanted:
                self.wanted.discard(t)
                self.counters["unsubscribes"] += 1
                sh = self.route(ch)
                if sh is not None:
                    unsubs.setdefault(sh, []).append(ch)
        # a node whose subscribed connection is not up subscribes everything when it is
        for sh, chs in subs.items():
            if sh.sub.up:
                self.send_subscribe(sh.sub, chs)
        for sh, chs in unsubs.items():
            if sh.sub.up:
                self.send_subscribe(sh.sub, chs, unsub=True)

    # ------------------------------------------------------------------ cluster topology
    def _ask_topology(self) -> None:
        link = next((sh.pub for sh in self.shards.values() if sh.pub.up), None)
        if link is None and self._seed_shard is not None and self._seed_shard.pub.up:
            link = self._seed_shard.pub
        if link is None:
            return
        self._topology_asked = True
        self._topology_at = time.monotonic()
        self._refresh_due = False
        link.send((b"CLUSTER", b"SLOTS"))
        link.expect.append(self._topology)

    def _topology(self, r: Any) -> None:
        """The answer to CLUSTER SLOTS: [[first, last, [host, port, id], replicas...], ...]."""
        self._topology_asked = False
        if not isinstance(r, list) or not r:
            log.warning("pyws broker %s: CLUSTER SLOTS gave %r; is this a cluster? (use "
                        "redis:// for a single Redis)", self.url.safe, r)
            return
        slots: List[Optional[_Shard]] = [None] * SLOTS
        masters: Dict[str, _Shard] = {}
        old = self._slots
        for rng in r:
            try:
                first, last, node = int(rng[0]), int(rng[1]), rng[2]
                host = node[0].decode() or self.url.host
                port = int(node[1])
            except (IndexError, TypeError, ValueError):
                self.bad_input(f"a CLUSTER SLOTS entry {rng!r:.80} cannot be read")
                continue
            name = f"{host}:{port}"
            sh = masters.get(name) or self.shards.get(name)
            if sh is None:
                sh = _Shard(self, host, port)
            masters[name] = sh
            for s in range(max(0, first), min(SLOTS - 1, last) + 1):
                slots[s] = sh
        changed = old is None or any(a is not b for a, b in zip(old, slots))
        if not changed:
            return
        self.counters["topology_changes"] += 1
        before = {t: self.route(self.prefix + t) for t in self.wanted} if old else {}
        for name, sh in list(self.shards.items()):
            if name not in masters:
                sh.gone = True
                del self.shards[name]
                sh.close(False)
        self._slots = slots
        for name, sh in masters.items():
            if sh.probe_ch is None:
                sh.probe_ch = self._probe_channel(sh)
            if name not in self.shards:
                self.shards[name] = sh
                sh.start()
        log.info("pyws broker %s: %d cluster master(s): %s", self.url.safe, len(masters),
                 ", ".join(sorted(masters)))
        # subscriptions whose slot moved: leave the old node, join the new one
        for t, was in before.items():
            now = self.route(self.prefix + t)
            if now is not was:
                if was is not None and was.sub.up and not was.gone:
                    self.send_subscribe(was.sub, [self.prefix + t], unsub=True)
                if now is not None and now.sub.up:
                    self.send_subscribe(now.sub, [self.prefix + t])
        if self._seed_shard is not None and self._seed_shard.name not in self.shards:
            self._seed_shard.pub.close(False)
        self._seed_shard = None
        self._reroute_pending()

    def _probe_channel(self, sh: _Shard) -> bytes:
        """A probe channel for this node whose hash slot this node serves."""
        base = self.prefix + b"\x00probe:" + self.node_id.hex().encode()
        if self._slots is None:
            return base
        for i in range(100_000):
            tag = str(i).encode()
            if self._slots[key_slot(tag)] is sh:
                return base + b":{" + tag + b"}"
        return base  # pragma: no cover - a master with almost no slots

    # ------------------------------------------------------------------ up and down
    def link_up(self, link: _Link) -> None:
        sh = link.shard
        if link.role == "sub":
            # topics that came or went while it was connecting: its set-up did not know them
            want = set(sh.initial_channels())
            missing, extra = sorted(want - link.initial), sorted(link.initial - want)
            if missing:
                self.send_subscribe(link, missing)
            if extra:
                self.send_subscribe(link, extra, unsub=True)
        if link.role == "pub":
            if self.cluster and (self._slots is None or self._refresh_due):
                self._ask_topology()
            self._flush(sh)
        if not self._all_up():
            return
        if self._down_since is None:
            return
        down_for = time.monotonic() - self._down_since
        topics = sorted(self._gap_topics)
        dropped = self._gap_dropped
        first = not self._ever_up
        self._ever_up = True
        self._down_since = None
        self._gap_topics = set()
        self._gap_dropped = 0
        if first and not self._announced_down:
            log.info("pyws broker %s: connected (node %s, %d Redis node(s))", self.url.safe,
                     self.node_id.hex(), len(self.shards))
            return  # up at start: nothing was missed
        self._announced_down = False
        log.warning("pyws broker %s: back after %.2f s; %d topic(s) may have missed "
                    "messages, %d publish(es) of this node did not reach Redis",
                    self.url.safe, down_for, len(topics), dropped)
        self._emit(BrokerEvent(True, [t.decode("utf-8", "surrogateescape") for t in topics],
                               dropped, down_for, "reconnected"))

    def _all_up(self) -> bool:
        return bool(self.shards) and (not self.cluster or self._slots is not None) and \
            all(sh.up for sh in self.shards.values())

    def link_down(self, link: _Link, why: str, was_up: bool, retry_in: float) -> None:
        sh = link.shard
        if link.role == "sub":
            sh.confirmed.clear()
        if link.role == "pub" and link.expect:
            for entry in link.expect:
                if isinstance(entry, tuple):
                    self.counters["unconfirmed"] += 1
                    self._gap_dropped += 1
                    if entry[0] is not None:
                        self._gap_topics.add(entry[0])
                elif entry == self._topology:
                    self._topology_asked = False
            link.expect.clear()
        sh.probe_token = None
        if self._stopping or sh.gone:
            return
        if was_up:
            self.counters["reconnects"] += 1
        if self.cluster:
            self._refresh_due = True  # a master that went may have been replaced
        self._conn_log(logging.WARNING, "pyws broker %s: %s connection to %s %s: %s; retrying "
                       "in %.2f s", self.url.safe, "subscribed" if link.role == "sub"
                       else "publish", sh.name, "lost" if was_up else "failed", why, retry_in)
        mine = {t for t in self.wanted if self.route(self.prefix + t) in (sh, None)}
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._gap_topics |= mine
        if not self._announced_down:
            self._announced_down = True
            self._emit(BrokerEvent(False, [t.decode("utf-8", "surrogateescape")
                                           for t in sorted(mine)], 0, 0.0, why))

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
        links = [ln for sh in self.shards.values() for ln in (sh.sub, sh.pub)]
        if self._seed_shard is not None:
            links.append(self._seed_shard.pub)
            if self._seed_shard.pub.state == "down" and self._slots is None and \
                    len(self.url.seeds) > 1 and now >= self._seed_shard.pub.retry_at:
                # the next seed of the list
                self._seed = (self._seed + 1) % len(self.url.seeds)
                host, port = self.url.seeds[self._seed]
                self._seed_shard.host, self._seed_shard.port = host, port
                self._seed_shard.name = f"{host}:{port}"
        for link in links:
            if link.state == "down" and now >= link.retry_at:
                link.open()
            elif link.state == "connecting" and now - link.since > o["connect_timeout"]:
                link.restart(f"Redis did not answer within connect_timeout "
                             f"({o['connect_timeout']} s)")
        if self.cluster and not self._topology_asked and (
                self._refresh_due or self._slots is None
                or now - self._topology_at > o["topology_interval"]):
            self._ask_topology()
        for sh in list(self.shards.values()):
            if not sh.up:
                continue
            if sh.probe_token is not None:
                if now - sh.probe_sent > o["probe_timeout"]:
                    sh.probe_token = None
                    self.counters["probe_failures"] += 1
                    log.warning("pyws broker %s: the subscription to %s stopped delivering "
                                "(a probe did not come back within %.1f s); reconnecting",
                                self.url.safe, sh.name, o["probe_timeout"])
                    sh.sub.restart("probe not delivered")
                    sh.pub.restart("probe not delivered")
            elif sh.probe_ch is not None and now - sh.sub.last_rx >= o["probe_interval"]:
                sh.probe_token = os.urandom(8)
                sh.probe_sent = now
                self.counters["probes"] += 1
                sh.pub.send((self._pub_cmd, sh.probe_ch, sh.probe_token))
                sh.pub.expect.append(self._probe_answered)

    @staticmethod
    def _probe_answered(r: Any) -> None:
        """The publish side's answer to a probe (the probe itself comes back as a message)."""

    def stop(self, flush: bool = True) -> None:
        """Stop for good: no more retries; with ``flush`` the publishes already written (or
        queued, when connected) still go out before the connections end."""
        if self._stopping:
            return
        if flush:
            for sh in self.shards.values():
                self._flush(sh)
        self._stopping = True
        if self._tick_timer is not None:
            self._tick_timer.cancel()
        if self._sync in self.mgr._poll_hooks:
            self.mgr._poll_hooks.remove(self._sync)
        if self._seed_shard is not None:
            self._seed_shard.pub.close(False)
        for sh in self.shards.values():
            sh.close(flush)
        if self._queued:
            self.counters["dropped"] += self._queued
            log.warning("pyws broker %s: stopped with %d publish(es) not sent to Redis",
                        self.url.safe, self._queued)
            self._pending.clear()
            for sh in self.shards.values():
                sh.queue.clear()
            self._queued = self._queued_bytes = 0
