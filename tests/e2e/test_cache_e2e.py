"""The REST-style response cache through a real `pygw serve` child process and a real upstream
that counts the requests it gets."""

from __future__ import annotations

import asyncio
import collections
import json
import re
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.gateway_process import GatewayProcess

CONFIG = """
admin: {listen: "127.0.0.1:0"}
access_log: {path: "%(log)s"}
apis:
  - name: shop
    type: rest
    stages: [{name: v1}]
    cache: {capacity_mb: 1, ttl_s: 60, allow_invalidation: true}
    routes:
      "GET /items/{id}":
        integration: {type: http_proxy, uri: "%(upstream)s/items/{id}"}
      "POST /items/{id}":
        integration: {type: http_proxy, uri: "%(upstream)s/items/{id}"}
      "GET /lang":
        integration: {type: http_proxy, uri: "%(upstream)s/lang"}
        cache: {key_params: [querystring.lang]}
      "GET /live":
        integration: {type: http_proxy, uri: "%(upstream)s/live"}
        cache: {ttl_s: 0}
      "GET /private":
        integration: {type: http_proxy, uri: "%(upstream)s/private"}
  - name: plain
    type: rest
    base_path: /plain
    stages: [{name: v1}]
    cache: {capacity_mb: 1, ttl_s: 60}
    routes:
      "GET /items/{id}":
        integration: {type: http_proxy, uri: "%(upstream)s/items/{id}"}
"""


@dataclass
class CountingUpstream:
    url: str = ""
    hits: collections.Counter[str] = field(default_factory=collections.Counter)
    failures_left: int = 0


@pytest.fixture
async def upstream() -> AsyncIterator[CountingUpstream]:
    state = CountingUpstream()

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        state.hits[path] += 1
        count = state.hits[path]
        if "slow" in path:
            await asyncio.sleep(0.3)
        if "flaky" in path and state.failures_left > 0:
            state.failures_left -= 1
            return web.Response(status=503, text="busy")
        headers = {}
        if path == "/private":
            headers["Cache-Control"] = "private, max-age=60"
        payload = {"path": path, "query": request.query_string, "count": count}
        return web.json_response(payload, headers=headers)

    runner = web.ServerRunner(web.Server(handle), shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: CountingUpstream) -> AsyncIterator[GatewayProcess]:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        textwrap.dedent(CONFIG) % {"log": str(tmp_path / "access.log"), "upstream": upstream.url}
    )
    process = GatewayProcess(config)
    await asyncio.to_thread(process.start)
    yield process
    await asyncio.to_thread(process.stop)


async def get(
    client: aiohttp.ClientSession, url: str, **kwargs: object
) -> tuple[int, str | None, dict[str, object], str | None]:
    async with client.get(url, **kwargs) as response:  # type: ignore[arg-type]
        body = await response.json() if response.status == 200 else {}
        return (
            response.status,
            response.headers.get("X-Cache"),
            body,
            response.headers.get("x-amzn-RequestId"),
        )


async def test_second_get_is_a_hit(gateway: GatewayProcess, upstream: CountingUpstream) -> None:
    async with aiohttp.ClientSession() as client:
        status, state, first, first_id = await get(client, gateway.url + "/v1/items/1")
        assert (status, state, first["count"]) == (200, "Miss", 1)
        status, state, second, second_id = await get(client, gateway.url + "/v1/items/1")
        assert (status, state) == (200, "Hit")
        assert second == first
        assert second_id is not None and second_id != first_id
        status, state, other, _ = await get(client, gateway.url + "/v1/items/2")
        assert (status, state, other["path"]) == (200, "Miss", "/items/2")
    assert upstream.hits["/items/1"] == 1
    assert upstream.hits["/items/2"] == 1


async def test_concurrent_misses_make_one_upstream_request(
    gateway: GatewayProcess, upstream: CountingUpstream
) -> None:
    async with aiohttp.ClientSession() as client:
        answers = await asyncio.gather(
            *(get(client, gateway.url + "/v1/items/slow") for _ in range(20))
        )
    assert upstream.hits["/items/slow"] == 1
    assert {status for status, _, _, _ in answers} == {200}
    assert {body["count"] for _, _, body, _ in answers} == {1}
    assert sorted(state or "" for _, state, _, _ in answers) == ["Hit"] * 19 + ["Miss"]


async def test_waiters_survive_a_failing_leader(
    gateway: GatewayProcess, upstream: CountingUpstream
) -> None:
    upstream.failures_left = 1
    async with aiohttp.ClientSession() as client:
        answers = await asyncio.gather(
            *(get(client, gateway.url + "/v1/items/slow-flaky") for _ in range(10))
        )
    statuses = sorted(status for status, _, _, _ in answers)
    # The leader answers its own client with the upstream's 503; the others get the retry's 200.
    assert statuses == [200] * 9 + [503]
    assert upstream.hits["/items/slow-flaky"] == 2


async def test_key_params_split_entries(
    gateway: GatewayProcess, upstream: CountingUpstream
) -> None:
    async with aiohttp.ClientSession() as client:
        assert (await get(client, gateway.url + "/v1/lang?lang=en"))[1] == "Miss"
        assert (await get(client, gateway.url + "/v1/lang?lang=de"))[1] == "Miss"
        _, state, body, _ = await get(client, gateway.url + "/v1/lang?lang=en&page=3")
        assert (state, body["query"]) == ("Hit", "lang=en")
    assert upstream.hits["/lang"] == 2


async def test_what_is_never_cached(gateway: GatewayProcess, upstream: CountingUpstream) -> None:
    async with aiohttp.ClientSession() as client:
        for _ in range(2):
            status, _, _, _ = await get(client, gateway.url + "/v1/live")
            assert status == 200
            status, state, _, _ = await get(client, gateway.url + "/v1/private")
            assert (status, state) == (200, "Miss")
            async with client.post(gateway.url + "/v1/items/9") as response:
                assert response.status == 200
                assert "X-Cache" not in response.headers
    assert upstream.hits["/live"] == 2
    assert upstream.hits["/private"] == 2
    assert upstream.hits["/items/9"] == 2


async def test_max_age_zero_refreshes_only_where_allowed(
    gateway: GatewayProcess, upstream: CountingUpstream
) -> None:
    refresh = {"Cache-Control": "max-age=0"}
    async with aiohttp.ClientSession() as client:
        # Both APIs proxy to the same upstream path, which counts its requests: 1, then 2.
        for count, prefix in enumerate(("/v1", "/plain/v1"), start=1):
            assert (await get(client, gateway.url + prefix + "/items/r"))[2]["count"] == count
        # allow_invalidation: true → the entry is fetched again and replaced.
        _, state, body, _ = await get(client, gateway.url + "/v1/items/r", headers=refresh)
        assert (state, body["count"]) == ("Miss", 3)
        _, state, body, _ = await get(client, gateway.url + "/v1/items/r")
        assert (state, body["count"]) == ("Hit", 3)
        # allow_invalidation: false (the default) → the header is ignored.
        _, state, body, _ = await get(client, gateway.url + "/plain/v1/items/r", headers=refresh)
        assert (state, body["count"]) == ("Hit", 2)
    assert upstream.hits["/items/r"] == 3


async def test_metrics_and_access_log(
    gateway: GatewayProcess, upstream: CountingUpstream, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession() as client:
        for _ in range(3):
            await get(client, gateway.url + "/v1/items/m")
        async with client.get(gateway.admin_url + "/metrics") as response:
            text = await response.text()

    def total(name: str) -> float:
        found = re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.MULTILINE)
        return sum(float(value) for value in found)

    assert total("pygw_cache_hits_total") == 2
    assert total("pygw_cache_misses_total") == 1

    await asyncio.sleep(0.5)  # the access log is flushed every 200 ms
    lines = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    cached = [line["cache"] for line in lines if line["path"] == "/v1/items/m"]
    assert cached == ["miss", "hit", "hit"]
