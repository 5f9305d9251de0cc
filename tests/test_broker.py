"""Topics shared through a real Redis (pyws/broker.py): several nodes, each a process with its
own App, a redis-server started on a free port of 127.0.0.1 (tests/_redis.py), real WebSocket
clients (websockets). Redis's own counters (INFO commandstats, PUBSUB NUMSUB) check what the
nodes sent it."""
from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import threading
import time
import urllib.request
from typing import Any, Dict, Iterator, List, Optional

import pytest

from _procs import Program
from _redis import RedisServer, free_port

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect as ws_connect  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NO_PROBE = {"probe_interval": 600.0}


class Node(Program):
    """tests/_broker_node.py in a subprocess (an App with ``broker=url``)."""

    PORT = re.compile(r"^PORT (\d+) (\d+)")

    def __init__(self, url: str, options: Optional[Dict[str, Any]] = None,
                 extra: Optional[List[str]] = None, expect_ports: int = 1) -> None:
        super().__init__([os.path.join(HERE, "_broker_node.py"), url,
                          json.dumps(options or {})] + (extra or []))
        self.ports: List[int] = []
        self.pids: List[int] = []
        try:
            for _ in range(expect_ports):
                m = self.expect(self.PORT)
                self.ports.append(int(m.group(1)))
                self.pids.append(int(m.group(2)))
        except BaseException:
            self.stop()  # never leave a node process behind
            raise
        self.port = self.ports[0]

    def stats(self) -> Dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as r:
            return dict(json.loads(r.read()))

    def wait(self, cond: Any, timeout: float = 10.0, what: str = "") -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        st: Dict[str, Any] = {}
        while time.monotonic() < deadline:
            st = self.stats()
            if cond(st):
                return st
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}: {st}\n" + "".join(self.output))


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    r = RedisServer()
    yield r
    r.close()


@pytest.fixture
def nodes() -> Iterator[List[Node]]:
    made: List[Node] = []
    yield made
    for n in made:
        n.stop()


def up(st: Dict[str, Any]) -> bool:
    return bool(st["broker"]["state"] == "up")


async def subscribe(port: int, topic: str, n: int) -> List[Any]:
    conns = []
    for _ in range(n):
        ws = await ws_connect(f"ws://127.0.0.1:{port}/sub/{topic}", max_size=None)
        assert (await ws.recv()).startswith("ready")
        conns.append(ws)
    return conns


def test_publish_on_any_node_reaches_all_60_subscribers_once_in_order(
        redis: RedisServer, nodes: List[Node]) -> None:
    for _ in range(3):
        nodes.append(Node(redis.url, NO_PROBE))
    for n in nodes:
        n.wait(up, what="broker up")
    per_node, per_publisher = 20, 50

    async def main() -> None:
        groups = [await subscribe(n.port, "t", per_node) for n in nodes]
        for n in nodes:  # each node subscribed, before anyone publishes
            n.wait(lambda st: st["broker"]["topics"] == 1, what="subscribed")
        assert redis.numsub("pyws:t") == {"pyws:t": 3}
        before = redis.commandstats().get("publish", 0)
        # the first connection of each node publishes, all three at once
        await asyncio.gather(*[
            asyncio.gather(*[g[0].send(f"p{i}:{seq}") for seq in range(per_publisher)])
            for i, g in enumerate(groups)])
        total = 3 * per_publisher

        async def collect(ws: Any) -> List[str]:
            got = []
            while len(got) < total:
                got.append(await asyncio.wait_for(ws.recv(), 10))
            return got

        results = await asyncio.gather(*[collect(ws) for g in groups for ws in g])
        assert len(results) == 60
        for got in results:
            assert sorted(got) == sorted(f"p{i}:{s}" for i in range(3)
                                         for s in range(per_publisher))  # each exactly once
            for i in range(3):  # per publisher, in its order
                seqs = [int(m.split(":")[1]) for m in got if m.startswith(f"p{i}:")]
                assert seqs == list(range(per_publisher))
        await asyncio.sleep(0.2)
        for g in groups:
            for ws in g:
                with pytest.raises(asyncio.TimeoutError):  # nothing more (no duplicates)
                    await asyncio.wait_for(ws.recv(), 0.05)
        # one PUBLISH per publish, whatever the number of subscribers and nodes
        assert redis.commandstats()["publish"] - before == total
        for g in groups:
            for ws in g:
                await ws.close()

    asyncio.run(main())
    stats = [n.stats()["broker"] for n in nodes]
    assert [s["published"] for s in stats] == [per_publisher] * 3
    assert [s["echoes"] for s in stats] == [per_publisher] * 3  # own copies dropped
    assert [s["delivered"] for s in stats] == [2 * per_publisher * 20] * 3
    assert all(s["dropped"] == 0 and s["bad_messages"] == 0 for s in stats)


def test_a_node_is_subscribed_only_while_it_has_subscribers_also_after_churn(
        redis: RedisServer, nodes: List[Node]) -> None:
    nodes.append(Node(redis.url, NO_PROBE))
    nodes.append(Node(redis.url, NO_PROBE))
    a, b = nodes
    for n in nodes:
        n.wait(up, what="broker up")

    async def main() -> None:
        stay = await subscribe(a.port, "a", 2)
        a.wait(lambda st: st["broker"]["topics"] == 1, what="a subscribed")
        assert redis.numsub("pyws:a", "pyws:b") == {"pyws:a": 1, "pyws:b": 0}
        for _ in range(10):  # churn on b: come and go, several at once
            conns = await subscribe(b.port, "a", 3) + await subscribe(b.port, "b", 2)
            await asyncio.gather(*[c.close() for c in conns])
        b.wait(lambda st: st["broker"]["topics"] == 0 and st["subscribers"]["a"] == 0,
               what="b unsubscribed")
        redis.wait_numsub({"pyws:a": 1, "pyws:b": 0})
        # b receives nothing for a topic it has no subscriber to
        received_before = b.stats()["broker"]["received"]
        await stay[0].send("hello")
        assert await asyncio.wait_for(stay[1].recv(), 5) == "hello"
        await asyncio.sleep(0.2)
        assert b.stats()["broker"]["received"] == received_before
        await asyncio.gather(*[c.close() for c in stay])
        redis.wait_numsub({"pyws:a": 0})

    asyncio.run(main())
    st = b.stats()["broker"]
    assert st["subscribes"] == st["unsubscribes"] == 20  # 10 rounds x (a, b): one each


def test_redis_killed_and_restarted(redis: RedisServer, nodes: List[Node]) -> None:
    nodes.append(Node(redis.url, NO_PROBE))
    nodes.append(Node(redis.url, NO_PROBE))
    a, b = nodes
    for n in nodes:
        n.wait(up, what="broker up")

    async def main() -> None:
        sa = await subscribe(a.port, "t", 2)
        sb = await subscribe(b.port, "t", 2)
        for n in nodes:
            n.wait(lambda st: st["broker"]["topics"] == 1, what="subscribed")
        redis.kill()
        for n in nodes:
            n.wait(lambda st: any(not e["up"] for e in st["events"]), what="down event")
        # local delivery goes on while Redis is away; the remote copy waits in the queue
        await sa[0].send("during")
        assert await asyncio.wait_for(sa[1].recv(), 5) == "during"
        assert await asyncio.wait_for(sa[0].recv(), 5) == "during"  # the sender is subscribed
        a.wait(lambda st: st["broker"]["queued"] == 1, what="queued")
        redis.start()
        t0 = time.monotonic()
        for n in nodes:
            n.wait(up, timeout=5, what="up again")
        redis.wait_numsub({"pyws:t": 2}, timeout=5 - (time.monotonic() - t0))
        back = time.monotonic() - t0
        assert back < 2.0, f"subscriptions back {back:.2f} s after Redis was up"
        for n in nodes:
            ev = n.wait(lambda st: any(e["up"] for e in st["events"]), what="up event")
            up_ev = [e for e in ev["events"] if e["up"]][-1]
            assert up_ev["topics"] == ["t"] and up_ev["down_for"] > 0
        st = a.stats()["broker"]
        assert st["queued"] == 0 and st["sent"] >= 1 and st["reconnects"] >= 2
        # and the broker path works again, both ways
        while True:  # drain what may have come from the queued publish
            try:
                await asyncio.wait_for(sb[0].recv(), 0.3)
            except asyncio.TimeoutError:
                break
        await sb[1].send("after")
        assert await asyncio.wait_for(sa[0].recv(), 5) == "after"
        for c in sa + sb:
            await c.close()

    asyncio.run(main())


def test_redis_paused_with_sigstop_does_not_stall_the_loop(
        redis: RedisServer, nodes: List[Node]) -> None:
    nodes.append(Node(redis.url, {"probe_interval": 0.5, "probe_timeout": 0.5,
                                  "connect_timeout": 1.0}))
    a = nodes[0]
    a.wait(up, what="broker up")

    async def main() -> None:
        s = await subscribe(a.port, "t", 2)
        redis.pause()
        try:
            worst = 0.0
            t_end = time.monotonic() + 3.0
            n = 0
            while time.monotonic() < t_end:  # local traffic, timed by the client
                t0 = time.monotonic()
                await s[0].send(f"m{n}")
                assert await asyncio.wait_for(s[1].recv(), 5) == f"m{n}"
                assert await asyncio.wait_for(s[0].recv(), 5) == f"m{n}"  # the sender's copy
                worst = max(worst, time.monotonic() - t0)
                n += 1
                await asyncio.sleep(0.005)
            st = a.stats()
            # the probe found the silent Redis and the node keeps retrying: nothing blocked
            assert st["broker"]["state"] != "up"
            assert st["broker"]["probe_failures"] + st["broker"]["reconnects"] >= 1
            assert worst < 0.5, f"a local round trip took {worst * 1000:.0f} ms"
            assert st["lag_ms"] < 250, f"the loop stalled {st['lag_ms']:.0f} ms"
        finally:
            redis.resume()
        a.wait(up, timeout=10, what="up after SIGCONT")
        for c in s:
            await c.close()

    asyncio.run(main())


def test_unreachable_at_start_serves_local_and_connects_later(
        nodes: List[Node]) -> None:
    port = free_port()
    nodes.append(Node(f"redis://127.0.0.1:{port}/0", NO_PROBE))
    a = nodes[0]
    a.wait(lambda st: any(not e["up"] for e in st["events"]), what="down event at start")

    async def main() -> None:
        s = await subscribe(a.port, "t", 2)
        await s[0].send("local")
        assert await asyncio.wait_for(s[1].recv(), 5) == "local"
        r = RedisServer(port=port)
        try:
            t0 = time.monotonic()
            a.wait(up, timeout=5, what="up")
            assert time.monotonic() - t0 < 2.0
            r.wait_numsub({"pyws:t": 1}, timeout=2)
            ev = [e for e in a.stats()["events"] if e["up"]]
            assert ev and ev[-1]["topics"] == ["t"]
        finally:
            r.close()
        for c in s:
            await c.close()

    asyncio.run(main())


def test_bad_input_from_the_broker_is_dropped_counted_and_never_reaches_a_client(
        redis: RedisServer, nodes: List[Node]) -> None:
    nodes.append(Node(redis.url, dict(NO_PROBE, max_message=1000)))
    nodes.append(Node(redis.url, NO_PROBE))
    a, b = nodes
    for n in nodes:
        n.wait(up, what="broker up")

    async def main() -> None:
        s = await subscribe(a.port, "t", 1)
        pub = await subscribe(b.port, "t", 1)
        a.wait(lambda st: st["broker"]["topics"] == 1, what="subscribed")
        node = b"\x01" * 8
        for bad in (b"garbage", b"pw\x01t" + node + b"\xff\xfe not UTF-8",
                    b"pw\x01x" + node + b"unknown type", b"pw\x01" + b"short",
                    b"pw\x01b" + node + b"x" * 2000):
            redis.command("PUBLISH", "pyws:t", bad)
        await pub[0].send("good")
        assert await asyncio.wait_for(s[0].recv(), 5) == "good"  # the first thing it gets
        await asyncio.sleep(0.1)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(s[0].recv(), 0.1)
        for c in s + pub:
            await c.close()

    asyncio.run(main())
    st = a.stats()["broker"]
    assert st["bad_messages"] == 4 and st["oversize"] == 1
    assert "dropped" in "".join(a.output)  # logged


def test_publishes_while_away_wait_in_a_bounded_queue_and_overflow_is_counted(
        redis: RedisServer, nodes: List[Node]) -> None:
    nodes.append(Node(redis.url, dict(NO_PROBE, queue_items=5)))
    a = nodes[0]
    a.wait(up, what="broker up")

    async def main() -> None:
        s = await subscribe(a.port, "t", 2)
        redis.kill()
        a.wait(lambda st: st["broker"]["state"] != "up", what="down")
        for i in range(12):
            await s[0].send(f"m{i}")
        for i in range(12):  # every one delivered locally
            assert await asyncio.wait_for(s[1].recv(), 5) == f"m{i}"
        st = a.wait(lambda st: st["broker"]["published"] == 12, what="published")["broker"]
        assert st["queued"] == 5 and st["dropped"] == 7
        redis.start()
        ev = a.wait(lambda st: any(e["up"] for e in st["events"]), what="up event")
        assert [e for e in ev["events"] if e["up"]][-1]["dropped"] == 7
        a.wait(lambda st: st["broker"]["queued"] == 0 and st["broker"]["sent"] == 5,
               what="queue flushed")
        assert redis.commandstats()["publish"] == 5
        for c in s:
            await c.close()

    asyncio.run(main())
    assert "queue for Redis is full" in "".join(a.output)


class Blackhole:
    """A TCP relay to Redis that can stop passing Redis's bytes to the client on live
    connections without closing them: a subscription that goes silent, as after a failover.
    New connections relay normally."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.silenced: List[socket.socket] = []
        self.live: List[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            self.live.append(u)
            threading.Thread(target=self._pipe, args=(c, u, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_redis: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_redis and src in self.silenced:
                    continue  # swallowed
                dst.sendall(data)
        except OSError:
            pass

    def silence_all(self) -> None:
        self.silenced.extend(self.live)

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def test_a_subscription_that_went_silent_is_found_by_the_probe_and_remade(
        redis: RedisServer, nodes: List[Node]) -> None:
    relay = Blackhole(redis.port)
    try:
        nodes.append(Node(f"redis://127.0.0.1:{relay.port}/0",
                          {"probe_interval": 0.3, "probe_timeout": 0.5}))
        nodes.append(Node(redis.url, NO_PROBE))
        a, b = nodes
        for n in nodes:
            n.wait(up, what="broker up")

        async def main() -> None:
            sa = await subscribe(a.port, "t", 1)
            sb = await subscribe(b.port, "t", 1)
            a.wait(lambda st: st["broker"]["topics"] == 1, what="subscribed")
            relay.silence_all()  # the connections stay open; nothing comes back
            st = a.wait(lambda st: st["broker"]["probe_failures"] >= 1, timeout=5,
                        what="probe failure")
            a.wait(up, timeout=5, what="up again")
            deadline = time.monotonic() + 5
            while True:  # b's messages reach a again, through the new connection
                await sb[0].send("x")
                try:
                    if await asyncio.wait_for(sa[0].recv(), 0.3) == "x":
                        break
                except asyncio.TimeoutError:
                    assert time.monotonic() < deadline, a.stats()
            ev = [e for e in a.stats()["events"] if e["up"]]
            assert ev and ev[-1]["topics"] == ["t"]
            assert st["broker"]["probes"] >= 1
            for c in sa + sb:
                await c.close()

        asyncio.run(main())
        assert "stopped delivering" in "".join(a.output)
    finally:
        relay.close()
