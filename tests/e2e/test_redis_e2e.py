"""`state.backend: redis` through `pygw serve`: two gateways share one route's bucket."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.gateway_process import GatewayProcess
from tests.integration.redis_server import RedisServer, running_redis

CONFIG = """
admin: {listen: "127.0.0.1:0"}
access_log: null
state: {backend: redis, url: "%(url)s", on_error: deny}
apis:
  - name: shared
    type: http
    routes:
      "GET /scarce":
        integration: {type: mock, body: ok}
        throttle: {rate: 0, burst: 5}
"""


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


async def test_two_gateways_share_one_bucket(redis_server: RedisServer, tmp_path: Path) -> None:
    config = tmp_path / "redis.yaml"
    config.write_text(textwrap.dedent(CONFIG) % {"url": redis_server.url})
    first, second = GatewayProcess(config), GatewayProcess(config)
    await asyncio.to_thread(first.start)
    await asyncio.to_thread(second.start)
    try:
        statuses: list[int] = []
        async with aiohttp.ClientSession() as client:
            for _ in range(6):
                for gateway in (first, second):
                    async with client.get(gateway.url + "/scarce") as response:
                        statuses.append(response.status)
                        if response.status == 429:
                            assert response.headers["Retry-After"]
        # Burst 5 and no refill, across both hosts together: five answers, then refusals.
        assert statuses.count(200) == 5
        assert statuses[:5] == [200] * 5
        assert set(statuses[5:]) == {429}
        # Redis gone with on_error: deny: refused, not hung, and the gateway keeps answering.
        redis_server.stop()
        async with aiohttp.ClientSession() as client:
            async with client.get(first.url + "/scarce") as response:
                assert response.status == 429
    finally:
        await asyncio.to_thread(first.stop)
        await asyncio.to_thread(second.stop)
