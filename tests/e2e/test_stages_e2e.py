"""Resource policy, CORS, API keys and usage plans through a real `pygw serve` child process."""

from __future__ import annotations

import asyncio
import hashlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.gateway_process import GatewayProcess

SHOP = "https://shop.example"
ALICE = "alice-0123456789abcdef"
BOB = "bob-fedcba9876543210"
CAROL = "carol-disabled-key"

CONFIG = """
admin: {listen: "127.0.0.1:0"}
access_log: {path: "%(log)s"}
apis:
  - name: web
    type: http
    cors:
      allow_origins: ["https://shop.example"]
      allow_methods: [GET, POST]
      allow_headers: [authorization, content-type]
      expose_headers: [x-total]
      max_age: 600
      allow_credentials: true
    resource_policy: {allow_cidrs: ["127.0.0.0/8", "::1/128"], deny_cidrs: ["10.0.0.0/8"]}
    routes:
      "GET /items":
        integration: {type: mock, status: 200, body: {items: []}, headers: {x-total: "0"}}
      "POST /items":
        integration: {type: mock, status: 201}
  - name: closed
    type: http
    base_path: /closed
    resource_policy: {deny_cidrs: ["127.0.0.0/8", "::1/128"]}
    routes:
      "GET /x":
        integration: {type: mock, status: 200}
  - name: shop
    type: rest
    base_path: /shop
    stages: [{name: v1}, {name: v2}]
    cors: {allow_origins: ["*"]}
    api_keys:
      - {id: alice, value: "${env:PYGW_TEST_ALICE_KEY}"}
      - {id: bob, value_sha256: "%(bob_digest)s"}
      - {id: carol, value: "%(carol)s", enabled: false}
    usage_plans:
      - name: gold
        keys: [alice]
        throttle: {rate: 0.001, burst: 3}
        quota: {limit: 1000, period: DAY}
      - {name: tiny, keys: [bob], quota: {limit: 2, period: MONTH}}
    routes:
      "GET /items":
        integration: {type: mock, status: 200, body: {from: shop}}
        api_key_required: true
      "POST /items":
        integration: {type: mock, status: 201}
        api_key_required: true
      "GET /open":
        integration: {type: mock, status: 200, body: open}
"""


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        textwrap.dedent(CONFIG)
        % {
            "log": str(tmp_path / "access.log"),
            "bob_digest": hashlib.sha256(BOB.encode()).hexdigest(),
            "carol": CAROL,
        }
    )
    process = GatewayProcess(config, env={"PYGW_TEST_ALICE_KEY": ALICE})
    await asyncio.to_thread(process.start)
    yield process
    await asyncio.to_thread(process.stop)


def cors_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("Access-Control-")}


async def test_preflight_is_answered_without_an_options_route(gateway: GatewayProcess) -> None:
    preflight = {
        "Origin": SHOP,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    async with aiohttp.ClientSession() as client:
        async with client.options(gateway.url + "/items", headers=preflight) as response:
            assert response.status == 204
            assert cors_headers(response) == {
                "Access-Control-Allow-Origin": SHOP,
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": "authorization, content-type",
                "Access-Control-Max-Age": "600",
                "Access-Control-Allow-Credentials": "true",
            }
            assert response.headers["Vary"] == "Origin"
            assert "apigw-requestid" in response.headers
            assert await response.read() == b""
        refused = {**preflight, "Origin": "https://evil.example"}
        async with client.options(gateway.url + "/items", headers=refused) as response:
            assert response.status == 204
            assert cors_headers(response) == {}
        wrong_method = {**preflight, "Access-Control-Request-Method": "DELETE"}
        async with client.options(gateway.url + "/items", headers=wrong_method) as response:
            assert response.status == 204
            assert cors_headers(response) == {}
        # A plain OPTIONS (not a preflight) is routed as usual: no such route here.
        async with client.options(gateway.url + "/items") as response:
            assert response.status == 404


async def test_actual_requests_carry_cors_headers(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway.url + "/items", headers={"Origin": SHOP}) as response:
            assert response.status == 200
            assert cors_headers(response) == {
                "Access-Control-Allow-Origin": SHOP,
                "Access-Control-Expose-Headers": "x-total",
                "Access-Control-Allow-Credentials": "true",
            }
            assert response.headers["Vary"] == "Origin"
            assert response.headers["x-total"] == "0"
        async with client.get(gateway.url + "/items") as response:
            assert response.status == 200
            assert cors_headers(response) == {}
            assert response.headers["Vary"] == "Origin"
        # REST-style, wildcard origin: error responses carry it too, so a browser can read them.
        async with client.get(
            gateway.url + "/shop/v1/items", headers={"Origin": "https://a.example"}
        ) as response:
            assert response.status == 403
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            assert "Vary" not in response.headers


async def test_resource_policy(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway.url + "/closed/x") as response:
            assert response.status == 403
            assert await response.json() == {"message": "Forbidden"}
        async with client.get(gateway.url + "/items") as response:
            assert response.status == 200


async def test_api_keys(gateway: GatewayProcess, tmp_path: Path) -> None:
    url = gateway.url + "/shop/v1/items"
    async with aiohttp.ClientSession() as client:
        for headers in ({}, {"x-api-key": "nope"}, {"x-api-key": CAROL}):
            async with client.get(url, headers=headers) as response:
                assert response.status == 403
                assert await response.json() == {"message": "Forbidden"}
                assert response.headers["x-amzn-ErrorType"] == "ForbiddenException"
        async with client.get(url, headers={"x-api-key": ALICE}) as response:
            assert response.status == 200
            assert await response.json() == {"from": "shop"}
        async with client.get(url, headers={"X-Api-Key": BOB}) as response:
            assert response.status == 200
        async with client.get(gateway.url + "/shop/v1/open") as response:
            assert response.status == 200
    await asyncio.sleep(0.5)  # the access log is flushed every 200 ms
    log = (tmp_path / "access.log").read_text()
    assert log.count("\n") >= 6
    for value in (ALICE, BOB, CAROL):
        assert value not in log
        assert value not in gateway.text()


async def test_usage_plan_throttle_is_per_key_across_routes_and_stages(
    gateway: GatewayProcess,
) -> None:
    alice = {"x-api-key": ALICE}
    async with aiohttp.ClientSession() as client:
        # Alice's plan bucket (burst 3, nearly no refill) is shared by every route and stage.
        for url in ("/shop/v1/items", "/shop/v2/items"):
            async with client.get(gateway.url + url, headers=alice) as response:
                assert response.status == 200
        async with client.post(gateway.url + "/shop/v1/items", headers=alice) as response:
            assert response.status == 201
            assert response.headers["RateLimit-Limit"] == "3"
            assert response.headers["RateLimit-Remaining"] == "0"
        async with client.get(gateway.url + "/shop/v2/items", headers=alice) as response:
            assert response.status == 429
            assert await response.json() == {"message": "Too Many Requests"}
            assert response.headers["x-amzn-ErrorType"] == "TooManyRequestsException"
            assert int(response.headers["Retry-After"]) >= 1
        # Other keys, and routes without a key, are not held back by Alice's bucket.
        async with client.get(gateway.url + "/shop/v1/items", headers={"x-api-key": BOB}) as r:
            assert r.status == 200
        async with client.get(gateway.url + "/shop/v1/open", headers=alice) as response:
            assert response.status == 200


async def test_quota_spent_is_limit_exceeded(gateway: GatewayProcess) -> None:
    bob = {"x-api-key": BOB}
    async with aiohttp.ClientSession() as client:
        for url in ("/shop/v1/items", "/shop/v2/items"):
            async with client.get(gateway.url + url, headers=bob) as response:
                assert response.status == 200
        async with client.get(gateway.url + "/shop/v1/items", headers=bob) as response:
            assert response.status == 429
            assert await response.json() == {"message": "Limit Exceeded"}
            assert response.headers["x-amzn-ErrorType"] == "LimitExceededException"
            assert int(response.headers["Retry-After"]) >= 1
        async with client.get(gateway.url + "/shop/v1/items", headers={"x-api-key": ALICE}) as r:
            assert r.status == 200
