"""`state.backend: redis` with `cluster: true` against a real three-node Redis Cluster: one
decision's keys (account, stage, route, usage-plan buckets and a quota) hash to one slot, so the
script runs where a plain prefix would be refused with CROSSSLOT, and hosts share it exactly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster as ClusterClient

from pygw.state import RedisThrottle
from pygw.state.redis_throttle import GRANTED, QUOTA_EXCEEDED, THROTTLED, close_pools
from tests.integration.redis_server import RedisCluster, running_redis_cluster

pytestmark = pytest.mark.timeout(90)

TIMEOUT_S = 2.0
NAMES = ("account", "stage:shop/v1", "route:shop/v1/GET /items", "plan:gold")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    with running_redis_cluster(str(tmp_path)) as c:
        yield c


@pytest.fixture(autouse=True)
async def pools_closed() -> AsyncIterator[None]:
    yield
    await close_pools()


@pytest.fixture
async def client(cluster: RedisCluster) -> AsyncIterator[ClusterClient]:
    c = ClusterClient.from_url(cluster.url)
    yield c
    await c.aclose()


def fleet(cluster: RedisCluster, n: int) -> list[RedisThrottle]:
    return [
        RedisThrottle(cluster.url, key_prefix="gw:", timeout_s=TIMEOUT_S, cluster=True)
        for _ in range(n)
    ]


async def test_bucket_names_alone_would_span_slots(client: ClusterClient) -> None:
    # The premise of the hash tag: without it these keys are on different slots.
    slots = {client.keyslot(f"gw:tb:{name}") for name in NAMES}
    assert len(slots) > 1


async def test_one_decision_over_every_level_and_a_quota(
    cluster: RedisCluster, client: ClusterClient
) -> None:
    hosts = fleet(cluster, 2)
    ids = [[h.register_bucket(name, 0.0, 6) for name in NAMES] for h in hosts]
    quotas = [h.register_quota("key:alice", 4, "DAY") for h in hosts]
    decisions = []
    for _ in range(3):
        for h, bids, q in zip(hosts, ids, quotas, strict=True):
            decisions.append(await h.acquire(bids, q))
    statuses = [d[0] for d in decisions]
    # The quota (4) is the tightest level: four grants across both hosts, then Limit Exceeded.
    assert statuses.count(GRANTED) == 4
    assert set(statuses[4:]) == {QUOTA_EXCEEDED}
    assert sum(h.stats.errors for h in hosts) == 0
    # Every key of the decision is in the prefix's slot, on one primary.
    keys = [k.decode() for k in await client.keys("{gw:}*", target_nodes=ClusterClient.ALL_NODES)]
    assert len(keys) == len(NAMES) + 1
    assert {client.keyslot(k) for k in keys} == {client.keyslot("{gw:}")}
    for h in hosts:
        await h.close()


async def test_hosts_share_a_burst_exactly(cluster: RedisCluster) -> None:
    hosts = fleet(cluster, 4)
    ids = [h.register_bucket("account", 0.0, 20) for h in hosts]

    async def hammer(h: RedisThrottle, bid: int) -> list[int]:
        return [(await h.acquire([bid]))[0] for _ in range(12)]

    results = await asyncio.gather(*(hammer(h, i) for h, i in zip(hosts, ids, strict=True)))
    flat = [s for rs in results for s in rs]
    assert flat.count(GRANTED) == 20
    assert set(flat) == {GRANTED, THROTTLED}
    assert sum(h.stats.errors for h in hosts) == 0
    for h in hosts:
        await h.close()


async def test_a_plain_prefix_is_refused_by_the_cluster(cluster: RedisCluster) -> None:
    # What `cluster: true` prevents: the same decision sent with untagged keys.
    plain = RedisThrottle(cluster.url, key_prefix="gw:", timeout_s=TIMEOUT_S)
    ids = [plain.register_bucket(name, 0.0, 6) for name in NAMES]
    status = (await plain.acquire(ids))[0]
    # The cluster refuses keys of several slots in one script; on_error (allow) decides.
    assert plain.stats.errors == 1
    assert status == GRANTED
    assert "crossslot" in plain.stats.last_error.lower()
    await plain.close()
