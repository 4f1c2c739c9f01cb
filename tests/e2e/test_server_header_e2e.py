"""`server.server_header`: pygw names itself only when configured, and never hides the Server
header of an answer that has one (an upstream's, a function's)."""

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
server: {listen: "127.0.0.1:0"%(server_header)s}
admin: {listen: "127.0.0.1:0"}
access_log: null
python_path: ["."]
apis:
  - name: plain
    type: http
    routes:
      "GET /mock": {integration: {type: mock, body: ok}}
      "GET /named": {integration: {type: function, handler: "named:handler"}}
      "GET /up": {integration: {type: http_proxy, uri: "%(upstream)s/up"}}
"""

HANDLER = """
def handler(event, context):
    return {"statusCode": 200, "headers": {"Server": "my-function"}, "body": "hi"}
"""


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async def up(request: web.Request) -> web.Response:
        return web.Response(text="up", headers={"Server": "upstream/1.0"})

    app = web.Application()
    app.router.add_get("/up", up)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def server_headers(gateway: GatewayProcess) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    async with aiohttp.ClientSession() as client:
        for path in ("/mock", "/named", "/up", "/missing"):
            async with client.get(gateway.url + path) as response:
                await response.read()
                found[path] = response.headers.getall("Server", [])
    return found


def write_config(tmp_path: Path, upstream: str, server_header: str | None) -> Path:
    (tmp_path / "named.py").write_text(HANDLER)
    config = tmp_path / "gateway.yaml"
    line = "" if server_header is None else f", server_header: {server_header!r}"
    config.write_text(textwrap.dedent(CONFIG) % {"server_header": line, "upstream": upstream})
    return config


async def test_no_server_header_unless_configured(upstream: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, upstream, None)
    gateway = await asyncio.to_thread(GatewayProcess(config).start)
    try:
        assert await server_headers(gateway) == {
            "/mock": [],
            "/named": ["my-function"],
            "/up": ["upstream/1.0"],
            "/missing": [],
        }
    finally:
        await asyncio.to_thread(gateway.stop)


async def test_configured_server_header_and_reload(upstream: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, upstream, "edge-gw")
    gateway = await asyncio.to_thread(GatewayProcess(config).start)
    try:
        assert await server_headers(gateway) == {
            "/mock": ["edge-gw"],
            "/named": ["my-function"],
            "/up": ["upstream/1.0"],
            "/missing": ["edge-gw"],
        }
        write_config(tmp_path, upstream, None)
        async with aiohttp.ClientSession() as client:
            async with client.post(gateway.admin_url + "/reload") as response:
                assert response.status == 200
        assert (await server_headers(gateway))["/mock"] == []
    finally:
        await asyncio.to_thread(gateway.stop)
