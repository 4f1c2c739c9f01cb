"""An http_proxy integration's static `response_headers` (AWS's integration response parameters
with literal values) on every answer: whole, streamed, and replayed from the response cache."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.gateway_process import GatewayProcess

CONFIG = """
admin: {listen: "127.0.0.1:0"}
access_log: null
apis:
  - name: shop
    type: rest
    cache: {capacity_mb: 1, ttl_s: 60}
    stages: [{name: v1}]
    routes:
      "GET /whole":
        integration:
          type: http_proxy
          uri: "%(upstream)s/whole"
          response_headers: {X-Static: gateway, Access-Control-Allow-Origin: "*"}
        cache: {ttl_s: 60}
      "GET /streamed":
        integration:
          type: http_proxy
          uri: "%(upstream)s/streamed"
          response_headers: {X-Static: gateway}
"""


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def whole(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text="whole", headers={"X-Static": "upstream"})

    async def streamed(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        response = web.StreamResponse(headers={"X-Static": "upstream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in (b"str", b"eam", b"ed"):
            await response.write(piece)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/whole", whole)
    app.router.add_get("/streamed", streamed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


async def test_static_headers_on_whole_streamed_and_cached_answers(
    upstream: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, seen = upstream
    config = tmp_path / "gateway.yaml"
    config.write_text(textwrap.dedent(CONFIG) % {"upstream": url})
    gateway = await asyncio.to_thread(GatewayProcess(config).start)
    try:
        async with aiohttp.ClientSession() as client:
            for expected_cache in ("Miss", "Hit"):
                async with client.get(gateway.url + "/v1/whole") as response:
                    assert await response.text() == "whole"
                    assert response.headers["X-Cache"] == expected_cache
                    assert response.headers.getall("X-Static") == ["gateway"]
                    assert response.headers["Access-Control-Allow-Origin"] == "*"
            async with client.get(gateway.url + "/v1/streamed") as response:
                assert await response.text() == "streamed"
                assert response.headers.getall("X-Static") == ["gateway"]
        assert seen == ["/whole", "/streamed"]
    finally:
        await asyncio.to_thread(gateway.stop)
