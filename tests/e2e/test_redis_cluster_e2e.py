"""`state: {backend: redis, cluster: true}` through `pygw serve`: two gateways share a usage plan's
quota and a route's bucket held in a real three-node Redis Cluster."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.gateway_process import GatewayProcess
from tests.integration.redis_server import RedisCluster, running_redis_cluster

pytestmark = pytest.mark.timeout(120)

CONFIG = """
admin: {listen: "127.0.0.1:0"}
access_log: null
state: {backend: redis, url: "%(url)s", cluster: true, on_error: deny, timeout_ms: 2000}
apis:
  - name: shop
    type: rest
    api_keys:
      - {id: alice, value: alice-key-0123456789}
    usage_plans:
      - name: gold
        keys: [alice]
        throttle: {rate: 100, burst: 100}
        quota: {limit: 7, period: DAY}
    stages:
      - name: v1
        throttle: {rate: 100, burst: 100}
    routes:
      "GET /items":
        integration: {type: mock, body: ok}
        api_key_required: true
        throttle: {rate: 100, burst: 100}
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    with running_redis_cluster(str(tmp_path)) as c:
        yield c


async def test_two_gateways_share_a_quota_in_a_cluster(
    cluster: RedisCluster, tmp_path: Path
) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(textwrap.dedent(CONFIG) % {"url": cluster.url})
    first, second = GatewayProcess(config), GatewayProcess(config)
    await asyncio.to_thread(first.start)
    await asyncio.to_thread(second.start)
    try:
        answers: list[tuple[int, str]] = []
        async with aiohttp.ClientSession() as client:
            for _ in range(5):
                for gateway in (first, second):
                    async with client.get(
                        gateway.url + "/v1/items", headers={"x-api-key": "alice-key-0123456789"}
                    ) as response:
                        answers.append((response.status, await response.text()))
        statuses = [status for status, _ in answers]
        # Quota 7 across both gateways: seven answers, then AWS's Limit Exceeded.
        assert statuses[:7] == [200] * 7
        assert set(statuses[7:]) == {429}
        assert all("Limit Exceeded" in body for _, body in answers[7:])
    finally:
        await asyncio.to_thread(first.stop)
        await asyncio.to_thread(second.stop)
