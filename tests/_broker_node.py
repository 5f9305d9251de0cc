"""One node of the broker tests: a pyws App in its own process sharing topics through Redis.

    python tests/_broker_node.py REDIS_URL [BROKER_OPTIONS_JSON] [--workers N --port P]

- ``/sub/{topic}``: the WebSocket subscribes to ``topic``; every message it sends is published
  to ``topic`` (so a publish may start on any node).
- ``/stats``: the broker's stats, the BrokerEvents seen and ``lag_ms``, the longest gap
  between two poll iterations of the last second (how long the loop was stalled).

Prints ``PORT <n>`` once it listens (each worker does, with workers).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, List

import pyws

url = sys.argv[1]
options: Dict[str, Any] = json.loads(sys.argv[2]) if len(sys.argv) > 2 and \
    sys.argv[2].startswith("{") else {}
workers = int(sys.argv[sys.argv.index("--workers") + 1]) if "--workers" in sys.argv else 1
port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0

app = pyws.App(broker=url or None, broker_options=options or None)
events: List[Dict[str, Any]] = []
lag = {"max_ms": 0.0, "last": time.monotonic()}


@app.on_broker
def on_broker(ev: pyws.BrokerEvent) -> None:
    events.append({"up": ev.up, "topics": ev.topics, "dropped": ev.dropped,
                   "down_for": ev.down_for, "reason": ev.reason, "at": time.time()})


@app.websocket("/sub/{topic}")
def sub(ws: pyws.WebSocket) -> Any:
    topic = ws.params["topic"]
    ws.subscribe(topic)
    ws.send(f"ready {os.getpid()}")
    while True:
        msg = yield ws.recv()
        if msg is None:
            return
        app.publish(topic, msg)


@app.get("/stats")
def stats(request: pyws.Request) -> Any:
    st = app.broker.stats() if app.broker is not None else {}
    return {"broker": st, "events": events, "lag_ms": lag["max_ms"], "pid": os.getpid(),
            "subscribers": {t: app.subscribers(t) for t in ("a", "b", "c", "t")}}


def tick() -> None:
    now = time.monotonic()
    lag["max_ms"] = max(lag["max_ms"] * 0.0 if now - lag["last"] > 1.0 else lag["max_ms"],
                        (now - lag["last"] - 0.01) * 1000.0)
    lag["last"] = now


def started(lst: pyws.Listener) -> None:
    lag["last"] = time.monotonic()
    app.mgr.timer(0.01, tick, repeat=True)
    os.write(1, f"PORT {lst.port} {os.getpid()}\n".encode())  # one write: workers share stdout


app.run("127.0.0.1", port, workers=workers, on_start=started, shutdown_timeout=2.0)
