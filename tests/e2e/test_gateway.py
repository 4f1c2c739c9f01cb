"""The gateway as a user runs it: `pygw serve` in a child process, real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.gateway_process import GatewayProcess

BASIC = """
server:
  limits: {max_body_bytes: 1000, max_header_bytes: 4096, header_timeout_s: 1, idle_timeout_s: 5}
  drain_timeout_s: 5
admin: {listen: "127.0.0.1:0"}
access_log: {path: "%(log)s"}
apis:
  - name: web
    type: http
    routes:
      "GET /hello":
        integration: {type: mock, status: 200, body: {hello: world}}
      "GET /items/{id}":
        integration: {type: mock, status: 200, body: "item", headers: {x-kind: item}}
      "GET /slow":
        integration: {type: mock, status: 200, body: "late", latency_ms: {fixed: 700}}
      "POST /upload":
        integration: {type: mock, status: 201}
  - name: shop
    type: rest
    base_path: /shop
    stages:
      - name: v1
        variables: {greeting: hello-v1}
        canary: {percent: 30, variables: {greeting: hello-canary}}
    routes:
      "GET /items/{id}":
        integration: {type: mock, status: 200, body: {from: shop}}
      "GET /limited":
        integration: {type: mock, status: 200, body: ok}
        throttle: {rate: 0.5, burst: 2}
      "ANY /proxy/{rest+}":
        integration: {type: http_proxy, uri: "%(upstream)s/echo/{rest}"}
"""


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "path": request.raw_path,
            "method": request.method,
            "body": body.decode(),
            "forwarded_for": request.headers.get("X-Forwarded-For"),
            "request_id": request.headers.get("x-request-id"),
        }
    )


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/echo/{tail:.*}", _echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
def write_config(tmp_path: Path) -> Iterator[object]:
    def write(text: str, **values: str) -> Path:
        path = tmp_path / "gateway.yaml"
        values.setdefault("log", str(tmp_path / "access.log"))
        values.setdefault("upstream", "http://127.0.0.1:9")
        path.write_text(textwrap.dedent(text) % values)
        return path

    yield write


@pytest.fixture
async def gateway(write_config: object, upstream: str) -> AsyncIterator[GatewayProcess]:
    config = write_config(BASIC, upstream=upstream)  # type: ignore[operator]
    process = GatewayProcess(config)
    await asyncio.to_thread(process.start)
    yield process
    await asyncio.to_thread(process.stop)


async def test_mock_routes_and_path_parameters(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway.url + "/hello") as response:
            assert response.status == 200
            assert await response.json() == {"hello": "world"}
            assert response.headers["Content-Type"].startswith("application/json")
            assert response.headers["apigw-requestid"] == response.headers["x-request-id"]
        async with client.get(gateway.url + "/items/7") as response:
            assert response.status == 200
            assert response.headers["x-kind"] == "item"
            assert await response.text() == "item"


async def test_not_found_in_each_style(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway.url + "/nowhere") as response:
            assert response.status == 404
            assert await response.json() == {"message": "Not Found"}
        # Wrong method on a known path is the same as no match.
        async with client.delete(gateway.url + "/hello") as response:
            assert response.status == 404
        async with client.get(gateway.url + "/shop/v1/nowhere") as response:
            assert response.status == 403
            assert await response.json() == {"message": "Missing Authentication Token"}
            assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
            assert "x-amzn-RequestId" in response.headers


async def test_client_request_id_kept_when_well_formed(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway.url + "/hello", headers={"x-request-id": "abc-123"}) as r:
            assert r.headers["x-request-id"] == "abc-123"
        async with client.get(gateway.url + "/hello", headers={"x-request-id": "bad id!"}) as r:
            assert r.headers["x-request-id"] != "bad id!"
            assert len(r.headers["x-request-id"]) == 36


async def test_stage_prefix_and_proxy_to_upstream(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway.url + "/shop/v1/items/9") as response:
            assert response.status == 200
            assert await response.json() == {"from": "shop"}
        async with client.post(
            gateway.url + "/shop/v1/proxy/a/b%2Fc?q=1",
            data=b"payload",
            headers={"x-request-id": "req-1"},
        ) as response:
            assert response.status == 200
            echoed = await response.json()
            assert echoed["path"] == "/echo/a/b%2Fc?q=1"
            assert echoed["method"] == "POST"
            assert echoed["body"] == "payload"
            assert echoed["forwarded_for"] == "127.0.0.1"
            assert echoed["request_id"] == "req-1"
        # Without the stage prefix nothing of the REST api matches.
        async with client.get(gateway.url + "/shop/items/9") as response:
            assert response.status == 404


async def test_route_throttle_answers_429_with_retry_after(gateway: GatewayProcess) -> None:
    url = gateway.url + "/shop/v1/limited"
    async with aiohttp.ClientSession() as client:
        for remaining in (1, 0):
            async with client.get(url) as response:
                assert response.status == 200
                assert response.headers["RateLimit-Limit"] == "2"
                assert response.headers["RateLimit-Remaining"] == str(remaining)
        async with client.get(url) as response:
            assert response.status == 429
            assert await response.json() == {"message": "Too Many Requests"}
            assert response.headers["x-amzn-ErrorType"] == "TooManyRequestsException"
            assert 1 <= int(response.headers["Retry-After"]) <= 2
        # Other routes of the stage have their own (larger) buckets.
        async with client.get(gateway.url + "/shop/v1/items/1") as response:
            assert response.status == 200


async def test_upstream_down_is_a_502(write_config: object) -> None:
    config = write_config(BASIC, upstream="http://127.0.0.1:1")  # type: ignore[operator]
    with GatewayProcess(config) as process:
        async with aiohttp.ClientSession() as client:
            async with client.get(process.url + "/shop/v1/proxy/x") as response:
                assert response.status == 502
                assert await response.json() == {"message": "Bad Gateway"}


async def test_body_and_header_limits(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.post(gateway.url + "/upload", data=b"x" * 1001) as response:
            assert response.status == 413
            assert await response.json() == {"message": "Request Too Long"}
        async with client.post(gateway.url + "/upload", data=b"x" * 1000) as response:
            assert response.status == 201
        many = {f"x-h{i}": "v" * 60 for i in range(80)}
        async with client.get(gateway.url + "/hello", headers=many) as response:
            assert response.status == 431


async def test_slow_headers_are_cut_off(gateway: GatewayProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), timeout=5)
    assert data == b""  # closed by the gateway, nothing answered
    assert time.monotonic() - started < 4
    writer.close()


async def test_canary_share_and_access_log(gateway: GatewayProcess, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as client:
        for _ in range(400):
            async with client.get(gateway.url + "/shop/v1/items/1") as response:
                assert response.status == 200
    await asyncio.sleep(0.5)  # the access log is flushed every 200 ms
    lines = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    shop = [line for line in lines if line["api"] == "shop"]
    assert len(shop) == 400
    canary_share = sum(1 for line in shop if line["canary"]) / len(shop)
    assert 0.2 < canary_share < 0.4
    first = shop[0]
    assert first["route"] == "GET /items/{id}"
    assert first["stage"] == "v1"
    assert first["style"] == "rest"
    assert first["status"] == 200
    assert first["latency_ms"] >= 0
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway.admin_url + "/metrics") as response:
            text = await response.text()
    assert (
        'pygw_requests_total{api="shop",method="GET",route="GET /items/{id}",stage="v1",'
        'status="200"} 400.0'
    ) in text
    assert 'pygw_canary_requests_total{api="shop",stage="v1"}' in text


async def test_sigterm_drains_requests_in_flight(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as client:
        slow = asyncio.create_task(client.get(gateway.url + "/slow"))
        await asyncio.sleep(0.2)
        gateway.signal(signal.SIGTERM)
        response = await slow
        assert response.status == 200
        assert await response.text() == "late"
    assert await asyncio.to_thread(gateway.wait) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gateway.port), timeout=1).close()


async def test_reload_swaps_config_and_keeps_old_one_on_error(
    gateway: GatewayProcess, write_config: object, upstream: str
) -> None:
    changed = BASIC.replace("{hello: world}", "{hello: again}")
    write_config(changed, upstream=upstream)  # type: ignore[operator]
    async with aiohttp.ClientSession() as client:
        async with client.post(gateway.admin_url + "/reload") as response:
            assert response.status == 200
        async with client.get(gateway.url + "/hello") as response:
            assert await response.json() == {"hello": "again"}
        write_config(
            changed.replace("type: mock, status: 201", "type: mock, status: 9"), upstream=upstream
        )  # type: ignore[operator]
        async with client.post(gateway.admin_url + "/reload") as response:
            assert response.status == 400
            assert "status" in json.dumps(await response.json())
        async with client.get(gateway.url + "/hello") as response:
            assert await response.json() == {"hello": "again"}
        # SIGHUP reloads too.
        write_config(BASIC, upstream=upstream)  # type: ignore[operator]
        gateway.signal(signal.SIGHUP)
        for _ in range(100):
            async with client.get(gateway.url + "/hello") as response:
                if (await response.json()) == {"hello": "world"}:
                    break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("SIGHUP did not reload")


def test_check_reports_errors_with_file_field_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent("""
        apis:
          - name: web
            type: http
            routes:
              "GET /a":
                integration: {type: mock, stauts: 200}
              "GET /b/{x":
                integration: {type: mock}
    """)
    )
    result = subprocess.run(
        [sys.executable, "-m", "pygw", "check", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 2
    assert all(line.startswith(f"{bad}: ") for line in lines)
    assert any("stauts" in line and "status" in line for line in lines)


def test_check_and_routes_on_the_quickstart() -> None:
    quickstart = Path(__file__).parents[2] / "examples" / "quickstart.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "pygw", "check", "-c", str(quickstart)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    routes = subprocess.run(
        [sys.executable, "-m", "pygw", "routes", "-c", str(quickstart), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    table = json.loads(routes.stdout)
    keys = [row["route"] for row in table]
    assert "GET /hello" in keys
