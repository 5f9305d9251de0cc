"""One side of bench/test_broker.py's capacity run: how many messages a second one Redis
carries through pyws's broker path (publisher node -> Redis -> subscriber node).

    python bench/servers/pyws_broker_flood.py sink REDIS_URL
    python bench/servers/pyws_broker_flood.py pub REDIS_URL COUNT SIZE

``sink``: a Manager with the broker and one local subscriber to topic "f" (a WebSocket whose
client side, in a thread, reads and discards); prints "ready" once subscribed, then a JSON
line {"received": n, "t_first": s, "t_last": s} when COUNT messages arrived or stdin closes.
``pub``: a Manager with the broker that publishes COUNT messages of SIZE bytes to "f" as fast
as its loop writes them (batches of 512 per poll), then drains; prints {"t_first", "t_last"}.
"""
from __future__ import annotations

import json
import socket
import sys
import threading
import time
from typing import Any

import pyws

OPTIONS = dict(probe_interval=600.0, queue_items=1 << 22, queue_bytes=1 << 30,
               max_inflight=1 << 20)


def sink(url: str, count: int) -> None:
    got = {"n": 0, "first": 0.0, "last": 0.0}

    def handler(conn: Any, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            conn.ws_upgrade(data)
            conn.subscribe("f")

    mgr = pyws.Manager(handler, broker=url, broker_options=OPTIONS)
    lst = mgr.listen("http://127.0.0.1:0")
    s = socket.create_connection(("127.0.0.1", lst.port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")

    def drain() -> None:
        while s.recv(1 << 20):
            pass
    threading.Thread(target=drain, daemon=True).start()
    broker = mgr.broker
    assert broker is not None
    deadline = time.monotonic() + 10
    while (broker.state != "up" or mgr.subscribers("f") != 1) and time.monotonic() < deadline:
        mgr.poll(10)
    for _ in range(20):
        mgr.poll(5)  # the SUBSCRIBE goes out and is confirmed
    print("ready", flush=True)
    start_received = broker.counters["received"]
    end = time.monotonic() + 120
    while time.monotonic() < end:
        mgr.poll(50)
        n = broker.counters["received"] - start_received
        if n and not got["first"]:
            got["first"] = time.time()
        if n >= count:
            got["last"] = time.time()
            break
    print(json.dumps({"received": broker.counters["received"] - start_received,
                      "t_first": got["first"], "t_last": got["last"],
                      "bad": broker.counters["bad_messages"]}), flush=True)
    mgr.close()


def pub(url: str, count: int, size: int) -> None:
    mgr = pyws.Manager(broker=url, broker_options=OPTIONS)
    broker = mgr.broker
    assert broker is not None
    deadline = time.monotonic() + 10
    while broker.state != "up" and time.monotonic() < deadline:
        mgr.poll(10)
    payload = b"x" * size
    t_first = time.time()
    sent = 0
    while sent < count:
        for _ in range(min(512, count - sent)):
            mgr.publish("f", payload)
        sent += min(512, count - sent)
        mgr.poll(0)
    while broker.stats()["inflight"] or broker.stats()["queued"]:
        mgr.poll(5)
    print(json.dumps({"t_first": t_first, "t_last": time.time(),
                      "sent": broker.counters["sent"]}), flush=True)
    mgr.close()


if __name__ == "__main__":
    if sys.argv[1] == "sink":
        sink(sys.argv[2], int(sys.argv[3]))
    else:
        pub(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
