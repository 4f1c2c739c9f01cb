"""The `lambda` integration: a Node function behind `pygw serve`, reached through an Invoke API.

The Invoke API is tests/lambda_runtime/invoke_api.py (the Runtime Interface Emulator is not
installable here from PyPI or Debian), started by each test on 127.0.0.1; it runs the Node
handler as a subprocess per invocation. Skips when `node` is absent (`make system-packages`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.gateway_process import GatewayProcess
from tests.lambda_runtime.invoke_api import HERE, InvokeApiServer, node_function

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None, reason="node is not installed (Debian package nodejs)"
)


@pytest.fixture
async def invoke_api() -> AsyncIterator[InvokeApiServer]:
    server = InvokeApiServer(
        {
            "hello": node_function(HERE / "hello.js", {"GREETING": "hi from node"}),
            "slow": node_function(HERE / "hello.js", timeout_ms=10_000),
        }
    )
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        yield client


def _config(tmp_path: Path, endpoint: str) -> Path:
    def route(name: str, timeout_ms: int = 10_000) -> dict[str, object]:
        return {
            "integration": {
                "type": "lambda",
                "function_name": name,
                "endpoint": endpoint,
                "timeout_ms": timeout_ms,
            }
        }

    config = {
        "admin": {"listen": "127.0.0.1:0"},
        "apis": [
            {
                "name": "rest",
                "type": "rest",
                "base_path": "/rest",
                "stages": [{"name": "prod"}],
                "routes": {
                    "ANY /hello": route("hello"),
                    "GET /slow": route("slow", 500),
                    "GET /missing": route("no-such-function"),
                },
            },
            {
                "name": "http",
                "type": "http",
                "base_path": "/http",
                "routes": {"ANY /hello/{name}": route("hello")},
            },
        ],
    }
    path = tmp_path / "pygw.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


async def _gateway(config: Path) -> GatewayProcess:
    process = GatewayProcess(config)
    await asyncio.to_thread(process.start)
    return process


async def test_node_function_answers_rest_and_http_routes(
    tmp_path: Path, invoke_api: InvokeApiServer, session: aiohttp.ClientSession
) -> None:
    gateway = await _gateway(_config(tmp_path, invoke_api.url))
    try:
        async with session.post(f"{gateway.url}/rest/prod/hello", data=b"ping") as answer:
            assert answer.status == 200
            assert answer.headers["x-runtime"].startswith("node v")
            got = await answer.json()
        # A REST-style event (payload 1.0) with the path below the stage and the resource.
        assert got["version"] == "1.0"
        assert got["resource"] == "/hello"
        assert got["path"] == "/hello"
        assert got["body"] == "ping"
        assert got["stage"] == "prod"
        assert got["greeting"] == "hi from node"
        assert got["functionName"] == "hello"

        async with session.get(f"{gateway.url}/http/hello/ada?status=201") as answer:
            assert answer.status == 201
            got = await answer.json()
        assert got["version"] == "2.0"
        assert got["routeKey"] == "ANY /hello/{name}"
        assert got["stage"] == "$default"

        # HTTP-style 2.0 reads a bare string result as a 200 JSON body, as AWS does.
        async with session.get(f"{gateway.url}/http/hello/ada?raw=1") as answer:
            assert answer.status == 200
            assert await answer.text() == "just a string"

        # Each request went through the Invoke API; the HTTP route's second request reused the
        # first one's connection (each route keeps its own pool).
        assert [name for name, _ in invoke_api.invocations] == ["hello"] * 3
        assert invoke_api.peers[1] == invoke_api.peers[2]
    finally:
        gateway.stop()


async def test_function_error_and_timeout_answer_as_the_style_does(
    tmp_path: Path, invoke_api: InvokeApiServer, session: aiohttp.ClientSession
) -> None:
    gateway = await _gateway(_config(tmp_path, invoke_api.url))
    try:
        # X-Amz-Function-Error: REST-style 502 Internal server error, HTTP-style 500.
        async with session.get(f"{gateway.url}/rest/prod/hello?fail=1") as answer:
            assert answer.status == 502
            assert await answer.json() == {"message": "Internal server error"}
        async with session.get(f"{gateway.url}/http/hello/x?fail=1") as answer:
            assert answer.status == 500
            assert await answer.json() == {"message": "Internal Server Error"}
        # A function slower than the route's timeout_ms: 504.
        async with session.get(f"{gateway.url}/rest/prod/slow?sleep_ms=3000") as answer:
            assert answer.status == 504
            assert await answer.json() == {"message": "Endpoint request timed out"}
        # A function the Invoke API does not know: 502.
        async with session.get(f"{gateway.url}/rest/prod/missing") as answer:
            assert answer.status == 502
        # The function error was logged with what the function said.
        assert "asked to fail" in gateway.text()
    finally:
        gateway.stop()


async def test_unreachable_endpoint_is_an_integration_failure(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    # A port nothing listens on (bound, then closed).
    server = InvokeApiServer({})
    await server.start()
    dead = server.url
    await server.stop()
    gateway = await _gateway(_config(tmp_path, dead))
    try:
        async with session.get(f"{gateway.url}/rest/prod/hello") as answer:
            assert answer.status == 502
    finally:
        gateway.stop()
