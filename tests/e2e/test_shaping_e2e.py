"""Validation and parameter mapping in front of a real http_proxy upstream."""

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
  - name: orders
    type: rest
    base_path: /orders
    models:
      Order: {type: object, required: [item], properties: {item: {type: string}}}
    routes:
      "POST /new":
        integration: {type: http_proxy, uri: "%(upstream)s/echo/new"}
        validate: {params: [header.x-tenant], body: Order}
  - name: mapped
    type: http
    routes:
      "GET /m/{id}":
        integration: {type: http_proxy, uri: "%(upstream)s/echo/m/{id}"}
        mapping:
          request:
            "overwrite:header.x-stage": "$context.stage"
            "append:querystring.tag": "v1"
            "remove:header.x-drop": "''"
"""


async def _echo(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "path": request.path,
            "query": request.query_string,
            "body": (await request.read()).decode(),
            "headers": {k.lower(): v for k, v in request.headers.items()},
        }
    )


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    app = web.Application()
    app.router.add_route("*", "/echo/{tail:.*}", _echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream = f"http://127.0.0.1:{runner.addresses[0][1]}"
    config = tmp_path / "shaping.yaml"
    config.write_text(textwrap.dedent(CONFIG) % {"upstream": upstream})
    process = GatewayProcess(config)
    await asyncio.to_thread(process.start)
    yield process
    await asyncio.to_thread(process.stop)
    await runner.cleanup()


async def test_validated_body_reaches_the_upstream_intact(gateway: GatewayProcess) -> None:
    url = gateway.url + "/orders/new"
    async with aiohttp.ClientSession() as client:
        async with client.post(url, json={"item": "teapot"}, headers={"x-tenant": "t1"}) as r:
            assert r.status == 200
            echoed = await r.json()
            assert echoed["body"] == '{"item": "teapot"}'
            assert echoed["headers"]["content-length"] == str(len(echoed["body"]))
        async with client.post(url, json={"nope": 1}, headers={"x-tenant": "t1"}) as r:
            assert r.status == 400
            assert await r.json() == {"message": "Invalid request body"}
        async with client.post(url, json={"item": "teapot"}) as r:
            assert r.status == 400
            assert await r.json() == {"message": "Missing required request parameters: [x-tenant]"}


async def test_parameter_mapping_rewrites_what_the_upstream_sees(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(
            gateway.url + "/m/7?a=1", headers={"x-drop": "secret", "x-keep": "yes"}
        ) as r:
            assert r.status == 200
            echoed = await r.json()
    assert echoed["path"] == "/echo/m/7"
    assert echoed["query"] == "a=1&tag=v1"
    assert echoed["headers"]["x-stage"] == "$default"
    assert echoed["headers"]["x-keep"] == "yes"
    assert "x-drop" not in echoed["headers"]
