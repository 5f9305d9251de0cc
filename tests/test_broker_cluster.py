"""Topics spread over a real three-master Redis Cluster (redis-server --cluster-enabled,
joined with redis-cli --cluster create): sharded pub/sub, SSUBSCRIBE/SPUBLISH by hash slot,
with one master restarted in the middle."""
from __future__ import annotations

import asyncio
from typing import Any, Dict, Iterator, List

import pytest

from _redis import RedisCluster
from pyws.broker import key_slot
from test_broker import NO_PROBE, Node, subscribe, up

TOPICS = [f"t{i}" for i in range(30)]


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    c = RedisCluster(3)
    yield c
    c.close()


def spublish_calls(cluster: RedisCluster) -> List[int]:
    return [r.commandstats().get("spublish", 0) for r in cluster.nodes]


async def exchange(a_conns: Dict[str, Any], b_conns: Dict[str, Any], tag: str) -> None:
    """One publish per topic from node a; node b's subscriber of each gets it exactly once."""
    for t in TOPICS:
        await a_conns[t].send(f"{tag}:{t}")
    for t in TOPICS:
        assert await asyncio.wait_for(b_conns[t].recv(), 10) == f"{tag}:{t}"
        assert await asyncio.wait_for(a_conns[t].recv(), 10) == f"{tag}:{t}"
    await asyncio.sleep(0.1)
    for ws in list(a_conns.values()) + list(b_conns.values()):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.01)


@pytest.mark.slow
def test_topics_spread_over_a_cluster_and_survive_a_master_restart(
        cluster: RedisCluster) -> None:
    nodes = [Node(cluster.url, NO_PROBE), Node(cluster.url, NO_PROBE)]
    try:
        a, b = nodes
        for n in nodes:
            n.wait(lambda st: up(st) and st["broker"]["shards"] == 3, what="3 shards up")

        async def main() -> None:
            a_conns = {t: (await subscribe(a.port, t, 1))[0] for t in TOPICS}
            b_conns = {t: (await subscribe(b.port, t, 1))[0] for t in TOPICS}
            for n in nodes:
                n.wait(lambda st: st["broker"]["topics"] == len(TOPICS), what="subscribed")
            # every master carries some of the channels, each subscribed by both nodes
            for r in cluster.nodes:
                mine = [t for t in TOPICS if cluster.owner(key_slot(f"pyws:{t}".encode()))
                        is r]
                assert mine, "the 30 topics should spread over the 3 masters"
                r.wait_numsub({f"pyws:{t}": 2 for t in mine}, shard=True)
            before = spublish_calls(cluster)
            await exchange(a_conns, b_conns, "first")
            after = spublish_calls(cluster)
            per_node = [x - y for x, y in zip(after, before)]
            assert sum(per_node) == len(TOPICS) and all(per_node), per_node
            assert sum(r.commandstats().get("publish", 0) for r in cluster.nodes) == 0
            # restart the master of t0's slot; its topics are away meanwhile
            victim = cluster.owner(key_slot(b"pyws:t0"))
            victim.kill()
            a.wait(lambda st: st["broker"]["state"] != "up", what="down")
            victim.start()
            cluster.wait_ok()
            for n in nodes:
                n.wait(up, timeout=15, what="up again")
            ev = [e for e in a.stats()["events"] if e["up"]]
            assert ev and "t0" in ev[-1]["topics"]
            # subscriptions on the restarted master come back
            mine = [t for t in TOPICS if cluster.owner(key_slot(f"pyws:{t}".encode()))
                    is victim]
            victim.wait_numsub({f"pyws:{t}": 2 for t in mine}, shard=True)
            await exchange(a_conns, b_conns, "second")
            for ws in list(a_conns.values()) + list(b_conns.values()):
                await ws.close()

        asyncio.run(main())
        st = a.stats()["broker"]
        assert st["shards"] == 3 and st["reconnects"] >= 2 and st["bad_messages"] == 0
    finally:
        for n in nodes:
            n.stop()
