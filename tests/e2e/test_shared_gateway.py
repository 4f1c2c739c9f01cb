"""`state.backend: shared` through `pygw serve` with two workers: one limit for the whole host."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import aiohttp

from tests.e2e.gateway_process import GatewayProcess

CONFIG = """
server: {workers: 2}
admin: {listen: "127.0.0.1:0"}
access_log: null
state: {backend: shared}
apis:
  - name: scarce
    type: http
    routes:
      "GET /one":
        integration: {type: mock, body: ok}
        throttle: {rate: 0, burst: 8}
"""


async def test_two_workers_share_one_bucket(tmp_path: Path) -> None:
    config = tmp_path / "shared.yaml"
    config.write_text(textwrap.dedent(CONFIG))
    gateway = GatewayProcess(config)
    await asyncio.to_thread(gateway.start)
    try:
        statuses: list[int] = []
        workers: set[str] = set()
        # New connections spread over both workers (SO_REUSEPORT); each takes from one bucket.
        for _ in range(40):
            async with aiohttp.ClientSession() as client:
                async with client.get(gateway.url + "/one") as response:
                    statuses.append(response.status)
                    workers.add(response.headers["x-pygw-worker"])
        assert len(workers) == 2, "the load should reach both workers"
        # Burst 8, no refill: eight answers in total, not eight per worker.
        assert statuses.count(200) == 8
        assert statuses.count(429) == 32
    finally:
        await asyncio.to_thread(gateway.stop)
