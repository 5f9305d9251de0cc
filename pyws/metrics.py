"""The server's counters in the Prometheus text exposition format (version 0.0.4).

``app.metrics("/metrics")`` serves them on an HTTP route of an App; with the callback API,
answer a request with ``render(mgr.stats())``::

    if data.uri == "/metrics":
        conn.reply(200, pyws.metrics.render(mgr.stats()),
                   {"Content-Type": pyws.metrics.CONTENT_TYPE})

Counters end in ``_total``; labels name states and reasons (``state="open"``,
``reason="write_limit"``). Per-second rates are left to Prometheus (``rate(...)``); per
connection and per topic numbers are not exported (their labels would grow without bound):
read them with ``conn.stats()`` and ``mgr.topics()``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .stats import ServerStats

__all__ = ["CONTENT_TYPE", "render"]

#: The Content-Type of the text format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = Tuple[Mapping[str, str], float]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(v: float) -> str:
    if isinstance(v, int) or float(v).is_integer():
        return str(int(v))
    return repr(float(v))


class _Writer:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.lines: List[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Sequence[Sample]) -> None:
        full = f"{self.prefix}_{name}"
        self.lines.append(f"# HELP {full} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            if labels:
                inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                self.lines.append(f"{full}{{{inner}}} {_number(value)}")
            else:
                self.lines.append(f"{full} {_number(value)}")

    def one(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text, [({}, value)])

    def labelled(self, name: str, kind: str, help_text: str, label: str,
                 values: Dict[str, int]) -> None:
        self.family(name, kind, help_text, [({label: k}, v) for k, v in values.items()])


_BROKER_COUNTERS = (
    ("published", "Publishes handed to the broker."),
    ("sent", "PUBLISH commands written to Redis."),
    ("dropped", "Publishes that did not reach Redis (queue full, or an error answer)."),
    ("unconfirmed", "PUBLISHes written but not answered when a connection broke."),
    ("received", "Messages that arrived from Redis."),
    ("delivered", "Local deliveries of messages from Redis."),
    ("echoes", "This node's own messages coming back from Redis (dropped)."),
    ("bad_messages", "Messages from Redis dropped as malformed."),
    ("oversize", "Messages from Redis dropped as larger than max_message."),
    ("reconnects", "Redis connections lost after being up."),
    ("probe_failures", "Probes of the subscription that did not come back."),
)


def render(stats: ServerStats, prefix: str = "pyws",
           broker: Optional[Mapping[str, Any]] = None) -> str:
    """``stats`` (from ``mgr.stats()`` / ``app.stats()``) as Prometheus text, every metric
    name starting with ``prefix`` + ``_``; with ``broker`` (``mgr.broker.stats()``) also the
    broker's state, queue and counters (``pyws_broker_*``). Serve it with
    :data:`CONTENT_TYPE`."""
    w = _Writer(prefix)
    w.labelled("connections", "gauge", "Live connections by state (connecting: HTTP or not "
               "open yet; open; closing).", "state", stats["connections"])
    w.labelled("connection_states", "gauge", "Live connections by the engine's internal "
               "state.", "state", stats["connection_states"])
    w.one("listeners", "gauge", "Listening sockets.", stats["listeners"])
    w.one("open_sockets", "gauge", "Open TCP connections (listeners excluded), counted "
          "against max_sockets.", stats["open_sockets"])
    w.one("connections_accepted_total", "counter", "Connections accepted.", stats["accepted"])
    w.one("websockets_opened_total", "counter", "WebSockets opened (server and client).",
          stats["websockets_opened"])
    w.one("messages_received_total", "counter", "Data messages received whole.",
          stats["messages_in"])
    w.one("messages_sent_total", "counter", "Data messages queued to send.",
          stats["messages_out"])
    w.one("payload_bytes_received_total", "counter", "Payload bytes of data messages "
          "received, after inflating.", stats["bytes_in"])
    w.one("payload_bytes_sent_total", "counter", "Payload bytes of data messages sent, before "
          "compressing.", stats["bytes_out"])
    w.one("wire_bytes_received_total", "counter", "Bytes read from connections (HTTP, frame "
          "headers, control frames, payloads as sent).", stats["wire_bytes_in"])
    w.one("wire_bytes_sent_total", "counter", "Bytes written to connections.",
          stats["wire_bytes_out"])
    w.family("deflate_bytes_total", "counter", "permessage-deflate: payload bytes of compressed "
             "messages, on the wire (compressed) and as data (uncompressed).", [
                 ({"direction": "received", "form": "compressed"}, stats["deflate_in_wire"]),
                 ({"direction": "received", "form": "uncompressed"}, stats["deflate_in_data"]),
                 ({"direction": "sent", "form": "uncompressed"}, stats["deflate_out_data"]),
                 ({"direction": "sent", "form": "compressed"}, stats["deflate_out_wire"])])
    w.one("topics", "gauge", "Topics with at least one subscriber.", stats["topics"])
    w.one("subscriptions", "gauge", "Subscriptions: (connection, topic) pairs.",
          stats["subscriptions"])
    w.labelled("closes_total", "counter", "Connections the engine closed on its own, by "
               "reason (write_limit: slow consumer, 1008; heartbeat_timeout: 1011).", "reason",
               stats["closes"])
    w.labelled("handshake_failures_total", "counter", "Server handshakes that failed, by the "
               "HTTP status answered, or tls / tls_timeout.", "reason",
               stats["handshake_failures"])
    w.labelled("drops_total", "counter", "What the server dropped, by kind (refused: "
               "connections past max_sockets).", "reason", stats["drops"])
    caches = stats["caches"]
    w.family("cached_blocks", "gauge", "Idle blocks the loop keeps for reuse, by cache.",
             [({"cache": name}, c["blocks"]) for name, c in caches.items()])
    w.family("cached_bytes", "gauge", "Bytes of those idle blocks, by cache.",
             [({"cache": name}, c["bytes"]) for name, c in caches.items()])
    w.one("accept_failures_total", "counter", "accept() failures for want of descriptors or "
          "memory.", stats["accept_failures"])
    w.one("accept_pauses_total", "counter", "Times the listeners were unwatched after such a "
          "failure.", stats["accept_pauses"])
    w.one("accepts_paused", "gauge", "1 while the listeners are unwatched.",
          stats["accepts_paused"])
    if broker is not None:
        w.one("broker_up", "gauge", "1 while every Redis connection of the broker is ready.",
              1 if broker["state"] == "up" else 0)
        w.one("broker_queued", "gauge", "Publishes waiting for Redis.", broker["queued"])
        w.one("broker_topics", "gauge", "Topics subscribed through the broker.",
              broker["topics"])
        for key, text in _BROKER_COUNTERS:
            w.one(f"broker_{key}_total", "counter", text, broker[key])
    return "\n".join(w.lines) + "\n"
