"""Routing precedence, hosts, stages and hostile input, end to end through `pygw serve`."""

from __future__ import annotations

import asyncio
import json
import signal
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.gateway_process import GatewayProcess

ROUTING = """
admin: {listen: "127.0.0.1:0"}
access_log: null
apis:
  - name: catalog
    type: http
    routes:
      "GET /pets/{id}": {integration: {type: mock, body: "pets-param"}}
      "GET /pets/mine": {integration: {type: mock, body: "pets-static"}}
      "ANY /pets/mine": {integration: {type: mock, body: "pets-static-any"}}
      "GET /pets/{id}/toys/{toy}": {integration: {type: mock, body: "toys"}}
      "GET /{a}/b": {integration: {type: mock, body: "param-then-static"}}
      "GET /a/{b}": {integration: {type: mock, body: "static-then-param"}}
      "ANY /{proxy+}": {integration: {type: mock, body: "greedy"}}
  - name: tenant
    type: http
    hosts: [api.example.com, "*.tenants.example.com"]
    routes:
      "GET /who": {integration: {type: mock, body: "tenant-host"}}
  - name: versions
    type: rest
    base_path: /svc
    stages:
      - {name: v1, variables: {tag: one}}
      - {name: v2, variables: {tag: two}}
    routes:
      "GET /tag": {integration: {type: mock, body: "versioned"}}
"""


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    config = tmp_path / "routing.yaml"
    config.write_text(textwrap.dedent(ROUTING))
    process = GatewayProcess(config)
    await asyncio.to_thread(process.start)
    yield process
    await asyncio.to_thread(process.stop)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/pets/mine", "pets-static"),
        ("POST", "/pets/mine", "pets-static-any"),
        ("GET", "/pets/7", "pets-param"),
        ("GET", "/pets/7/", "pets-param"),
        ("GET", "/pets/7/toys/ball", "toys"),
        ("GET", "/a/b", "static-then-param"),
        ("GET", "/x/b", "param-then-static"),
        ("DELETE", "/pets/7", "greedy"),
        ("GET", "/anything/at//all", "greedy"),
        ("GET", "//pets/mine", "pets-static"),
        ("GET", "/pets/./mine", "pets-static"),
        ("GET", "/svc/v1/../../pets/mine", "pets-static"),
    ],
)
async def test_precedence(gateway: GatewayProcess, method: str, path: str, expected: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), raw
    assert body.decode() == expected


async def test_hosts_filter_without_falling_through(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as client:
        for host in ("api.example.com", "API.example.com:8443", "eu.tenants.example.com"):
            async with client.get(gateway.url + "/who", headers={"Host": host}) as response:
                assert await response.text() == "tenant-host", host
        # The tenant host serves only its own API: the catalog's greedy route is not reachable.
        async with client.get(gateway.url + "/pets/mine", headers={"Host": "api.example.com"}) as r:
            assert r.status == 404
        async with client.get(gateway.url + "/who", headers={"Host": "other.example"}) as r:
            assert await r.text() == "greedy"


async def test_stages_are_separate_mounts(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as client:
        for stage in ("v1", "v2"):
            async with client.get(f"{gateway.url}/svc/{stage}/tag") as response:
                assert await response.text() == "versioned"
        # Under a REST mount, an unknown path is that API's 403, never the root greedy route.
        async with client.get(gateway.url + "/svc/v1/nope") as response:
            assert response.status == 403
            assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
        async with client.get(gateway.url + "/svc/v3/tag") as response:
            assert await response.text() == "greedy"


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /pets/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        b"GET /pets/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /pets/\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
async def test_malformed_requests_get_400_and_a_closed_connection(
    gateway: GatewayProcess, raw: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", answer
    assert b"application/json" in head
    assert json.loads(body) == {"message": "Bad Request"}


async def test_reload_under_load_fails_no_request(gateway: GatewayProcess) -> None:
    """Valid and invalid configs alternate while four clients keep requesting: nothing fails."""
    valid = gateway.config.read_text()
    invalid = valid.replace('type: mock, body: "pets-static"', "type: mock, status: 9")
    assert invalid != valid
    failures: list[int] = []
    done = asyncio.Event()

    async def load() -> int:
        sent = 0
        async with aiohttp.ClientSession() as client:
            while not done.is_set():
                async with client.get(gateway.url + "/pets/mine") as response:
                    await response.read()
                    if response.status != 200:
                        failures.append(response.status)
                sent += 1
        return sent

    workers = [asyncio.create_task(load()) for _ in range(4)]
    for round_ in range(6):
        gateway.config.write_text(invalid if round_ % 2 else valid)
        await asyncio.sleep(0.1)
        gateway.signal(signal.SIGHUP)
        # One reload at a time, so each reads the file written for it.
        for _ in range(200):
            log = gateway.text()
            if log.count("config reloaded") + log.count("reload refused") > round_:
                break
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    done.set()
    sent = sum(await asyncio.gather(*workers))
    assert sent > 50
    assert failures == []
    assert gateway.text().count("config reloaded") == 3
    assert gateway.text().count("reload refused") == 3


async def test_reload_right_after_ready(gateway: GatewayProcess) -> None:
    """A SIGHUP sent the moment the ready line shows reloads; it must not meet the default
    action, which ends the process."""
    gateway.signal(signal.SIGHUP)
    for _ in range(200):
        if "config reloaded" in gateway.text():
            break
        await asyncio.sleep(0.05)
    assert gateway.proc is not None and gateway.proc.poll() is None
    assert "config reloaded" in gateway.text()
