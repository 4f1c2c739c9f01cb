"""Fault injection in real `pygw serve` processes on 127.0.0.1: percentages over many requests,
header control, connection resets, the admin API switching faults under load (one process and a
supervisor of two workers), reloads, and the Prometheus counts."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.gateway_process import GatewayProcess
from tests.integration.conftest import StartUpstream, Upstream

pytestmark = pytest.mark.timeout(120)

TOKEN = "faults-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

CONFIG = """
server: {workers: %(workers)d, drain_timeout_s: 2}
admin: {listen: "127.0.0.1:0", token: %(token)s}
access_log: null
throttle: null
apis:
  - name: shop
    type: rest
    stages: [{name: v1}]
    routes:
      "GET /proxied/{id}":
        integration: {type: http_proxy, uri: "%(upstream)s/echo/{id}"}
      "GET /plain":
        integration: {type: mock, body: plain}
      "GET /chosen":
        integration: {type: mock, body: chosen}
        faults: {headers: true}
      "GET /odds":
        integration: {type: mock, body: odds}
        faults: {abort: {status: 503, percent: 30}, delay: {fixed_ms: 0.01, percent: 40}}
      "GET /reset":
        integration: {type: mock}
        faults: {abort: {reset: true}}
"""


def write(folder: Path, upstream: str, workers: int = 1) -> Path:
    path = folder / "gateway.yaml"
    path.write_text(
        textwrap.dedent(CONFIG) % {"workers": workers, "token": TOKEN, "upstream": upstream}
    )
    return path


def six_sigma(n: int, p: float) -> tuple[float, float]:
    """Bounds a binomial count leaves with probability below 1e-8."""
    sigma = math.sqrt(n * p * (1 - p))
    return n * p - 6 * sigma, n * p + 6 * sigma


def route_path(api: str, stage: str, key: str) -> str:
    return f"/faults/{api}/{quote(stage, safe='$')}/{quote(key, safe='/$')}"


async def admin(
    process: GatewayProcess, method: str, path: str, body: Any = None, auth: bool = True
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as client,
        client.request(
            method, process.admin_url + path, json=body, headers=AUTH if auth else {}
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


async def fault_counts(process: GatewayProcess) -> dict[tuple[str, str], float]:
    async with (
        aiohttp.ClientSession() as client,
        client.get(process.admin_url + "/metrics", headers=AUTH) as response,
    ):
        text = await response.text()
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "pygw_faults_injected_total":
                counts[(sample.labels["route"], sample.labels["kind"])] = sample.value
    return counts


@pytest.fixture
async def upstream(start_upstream: StartUpstream) -> Upstream:
    return await start_upstream()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: Upstream) -> AsyncIterator[GatewayProcess]:
    process = GatewayProcess(write(tmp_path, upstream.url))
    await asyncio.to_thread(process.start)
    yield process
    await asyncio.to_thread(process.stop)


async def test_configured_percentages_within_binomial_bounds(gateway: GatewayProcess) -> None:
    n = 2000
    aborted = delayed = 0
    connector = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def one() -> tuple[int, str | None]:
            async with client.get(gateway.url + "/v1/odds") as response:
                await response.read()
                return response.status, response.headers.get("x-pygw-fault")

        for _ in range(n // 100):
            for status, fault in await asyncio.gather(*(one() for _ in range(100))):
                if status == 503:
                    assert fault == "abort"
                    aborted += 1
                else:
                    assert status == 200
                    delayed += fault == "delay"
    low, high = six_sigma(n, 0.3)
    assert low <= aborted <= high
    counts = await fault_counts(gateway)
    assert counts[("GET /odds", "abort")] == aborted
    # A delayed request that was then aborted shows only the abort: the counter has them all.
    low, high = six_sigma(n, 0.4)
    assert low <= counts[("GET /odds", "delay")] <= high
    assert delayed <= counts[("GET /odds", "delay")]
    assert ("GET /plain", "abort") not in counts  # a route without faults has no stage


async def test_header_control_only_where_enabled(gateway: GatewayProcess) -> None:
    asked = {"x-pygw-fault-abort": "503"}
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway.url + "/v1/plain", headers=asked) as plain:
            assert (plain.status, await plain.text()) == (200, "plain")
        # A route with configured faults but no `headers: true` ignores them too.
        async with client.get(
            gateway.url + "/v1/odds", headers={"x-pygw-fault-abort-percent": "0", **asked}
        ) as odds:
            assert odds.status in (200, 503)
        async with client.get(gateway.url + "/v1/chosen", headers=asked) as chosen:
            assert chosen.status == 503
            assert await chosen.json() == {"message": "Injected fault"}
            assert chosen.headers["x-pygw-fault"] == "abort"
            assert chosen.headers["x-amzn-RequestId"]
        envoy = {"x-envoy-fault-abort-request": "429"}
        async with client.get(gateway.url + "/v1/chosen", headers=envoy) as limited:
            assert limited.status == 429
        async with client.get(
            gateway.url + "/v1/chosen", headers={"x-pygw-fault-delay-ms": "5"}
        ) as late:
            assert (late.status, late.headers["x-pygw-fault"]) == (200, "delay")
        async with client.get(
            gateway.url + "/v1/chosen", headers={"x-pygw-fault-abort": "often"}
        ) as bad:
            assert bad.status == 400
            assert "x-pygw-fault-abort" in (await bad.json())["message"]
        async with client.get(gateway.url + "/v1/chosen") as untouched:
            assert (untouched.status, await untouched.text()) == (200, "chosen")
    with pytest.raises(ConnectionResetError):
        await raw_get(gateway.port, "/v1/chosen", "x-pygw-fault-abort: reset\r\n")
    counts = await fault_counts(gateway)
    assert counts[("GET /chosen", "abort")] == 2
    assert counts[("GET /chosen", "delay")] == 1
    assert counts[("GET /chosen", "reset")] == 1
    assert ("GET /plain", "abort") not in counts


async def raw_get(port: int, path: str, extra: str = "") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def test_reset_resets_the_connection(gateway: GatewayProcess) -> None:
    for _ in range(3):
        # RST, not FIN: the read fails rather than returning an empty answer.
        with pytest.raises(ConnectionResetError):
            await raw_get(gateway.port, "/v1/reset")
    # The connection's neighbours are unaffected.
    assert (await raw_get(gateway.port, "/v1/plain")).startswith(b"HTTP/1.1 200")
    assert (await fault_counts(gateway))[("GET /reset", "reset")] == 3


async def test_admin_put_list_delete(gateway: GatewayProcess) -> None:
    path = route_path("shop", "v1", "GET /plain")
    body = {"abort": {"status": 502, "percent": 100}}
    assert (await admin(gateway, "PUT", path, body, auth=False))[0] == 401
    status, answer = await admin(gateway, "PUT", path, body)
    assert status == 200
    assert answer == {"api": "shop", "stage": "v1", "route": "GET /plain", "faults": body}
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway.url + "/v1/plain") as response:
            assert response.status == 502
    status, listed = await admin(gateway, "GET", "/faults")
    assert status == 200
    rows = {row["route"]: row for row in listed["faults"]}
    assert rows["GET /plain"]["source"] == "admin"
    assert rows["GET /plain"]["now"] == {"abort_percent": 100.0}
    assert rows["GET /odds"]["source"] == "config"
    assert rows["GET /odds"]["now"] == {"abort_percent": 30.0, "delay_percent": 40.0}

    # A config route's faults can be replaced, then given back by DELETE.
    odds = route_path("shop", "v1", "GET /odds")
    assert (await admin(gateway, "PUT", odds, {"abort": {"status": 500, "percent": 0}}))[0] == 200
    async with aiohttp.ClientSession() as client:
        for _ in range(20):
            async with client.get(gateway.url + "/v1/odds") as response:
                assert response.status == 200
    assert (await admin(gateway, "DELETE", odds))[0] == 200
    rows = {row["route"]: row for row in (await admin(gateway, "GET", "/faults"))[1]["faults"]}
    assert rows["GET /odds"]["source"] == "config"

    assert (await admin(gateway, "DELETE", path))[0] == 200
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway.url + "/v1/plain") as response:
            assert response.status == 200
    rows = {row["route"]: row for row in (await admin(gateway, "GET", "/faults"))[1]["faults"]}
    assert "GET /plain" not in rows

    missing = await admin(gateway, "PUT", route_path("shop", "v1", "GET /nope"), body)
    assert missing[0] == 404 and "GET /nope" in missing[1]["message"]
    bad = await admin(gateway, "PUT", path, {"abort": {"status": 503, "pct": 1}})
    assert bad[0] == 400 and "abort.pct" in bad[1]["message"]
    bad = await admin(gateway, "PUT", path, {"delay": {"percent": 1}})
    assert bad[0] == 400 and "fixed_ms" in bad[1]["message"]


@dataclass
class Outcome:
    started: float
    ended: float
    status: int
    fault: str | None
    body: bytes


async def load(
    url: str, paths: list[str], stop: asyncio.Event, outcomes: list[Outcome], clients: int = 6
) -> None:
    """`clients` concurrent keep-alive clients, each one request at a time, until `stop`."""
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(index: int) -> None:
            n = index
            while not stop.is_set():
                n += clients
                path = paths[n % len(paths)]
                started = time.monotonic()
                async with session.get(url + path) as response:
                    body = await response.read()
                    outcomes.append(
                        Outcome(
                            started,
                            time.monotonic(),
                            response.status,
                            response.headers.get("x-pygw-fault"),
                            body,
                        )
                    )

        await asyncio.gather(*(client(i) for i in range(clients)))


async def wait_for_more(outcomes: list[Outcome], more: int) -> None:
    target = len(outcomes) + more
    deadline = time.monotonic() + 60
    while len(outcomes) < target:
        assert time.monotonic() < deadline, "the load stalled"
        await asyncio.sleep(0.01)


async def switch_under_load(process: GatewayProcess, paths: list[str]) -> list[Outcome]:
    """Faults on, then off, while clients keep sending; returns what they saw, checked."""
    outcomes: list[Outcome] = []
    stop = asyncio.Event()
    traffic = asyncio.create_task(load(process.url, paths, stop, outcomes))
    try:
        await wait_for_more(outcomes, 150)
        path = route_path("shop", "v1", "GET /proxied/{id}")
        put_sent = time.monotonic()
        status, _ = await admin(process, "PUT", path, {"abort": {"status": 503, "percent": 50}})
        assert status == 200
        put_done = time.monotonic()
        await wait_for_more(outcomes, 300)
        delete_sent = time.monotonic()
        assert (await admin(process, "DELETE", path))[0] == 200
        delete_done = time.monotonic()
        await wait_for_more(outcomes, 150)
    finally:
        stop.set()
        await traffic
    for outcome in outcomes:
        # Every request is answered: by the upstream, or by the injected fault, never otherwise.
        if outcome.fault == "abort":
            assert (outcome.status, outcome.body) == (503, b'{"message":"Injected fault"}')
        else:
            assert outcome.status == 200, outcome
            assert b'"/echo/' in outcome.body
    before = [o for o in outcomes if o.ended < put_sent]
    during = [o for o in outcomes if o.started > put_done and o.ended < delete_sent]
    after = [o for o in outcomes if o.started > delete_done]
    assert before and after and len(during) >= 100
    assert not any(o.fault for o in before + after)
    low, high = six_sigma(len(during), 0.5)
    assert low <= sum(o.fault == "abort" for o in during) <= high
    return outcomes


async def test_admin_switches_faults_under_load(gateway: GatewayProcess) -> None:
    outcomes = await switch_under_load(gateway, [f"/v1/proxied/{i}" for i in range(10)])
    aborted = sum(o.fault == "abort" for o in outcomes)
    assert (await fault_counts(gateway))[("GET /proxied/{id}", "abort")] == aborted


async def test_reload_drops_admin_faults_unless_kept(tmp_path: Path, upstream: Upstream) -> None:
    path = route_path("shop", "v1", "GET /plain")
    for keep, expected in ((False, 200), (True, 418)):
        folder = tmp_path / str(keep)
        folder.mkdir()
        process = GatewayProcess(
            write(folder, upstream.url), args=("--keep-faults",) if keep else ()
        )
        await asyncio.to_thread(process.start)
        try:
            assert (await admin(process, "PUT", path, {"abort": {"status": 418}}))[0] == 200
            assert (await admin(process, "POST", "/reload"))[0] == 200
            async with (
                aiohttp.ClientSession() as client,
                client.get(process.url + "/v1/plain") as response,
            ):
                assert response.status == expected
            # Config faults are compiled again either way.
            rows = {r["route"] for r in (await admin(process, "GET", "/faults"))[1]["faults"]}
            assert "GET /odds" in rows
        finally:
            await asyncio.to_thread(process.stop)


async def test_supervisor_sets_faults_in_every_worker(tmp_path: Path, upstream: Upstream) -> None:
    process = GatewayProcess(write(tmp_path, upstream.url, workers=2))
    await asyncio.to_thread(process.start)
    try:
        outcomes = await switch_under_load(process, [f"/v1/proxied/{i}" for i in range(10)])
        aborted = sum(o.fault == "abort" for o in outcomes)
        # The supervisor's /metrics sums the workers'.
        assert (await fault_counts(process))[("GET /proxied/{id}", "abort")] == aborted

        # Both workers abort, and a worker that restarts is given the faults again.
        path = route_path("shop", "v1", "GET /plain")
        status, answer = await admin(process, "PUT", path, {"abort": {"status": 418}})
        assert (status, answer["workers"]) == (200, 2)
        assert await workers_answering(process, 418) == await worker_pids(process)
        victim = next(iter(await worker_pids(process)))
        os.kill(int(victim), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            pids = await worker_pids(process)
            status, _ = await admin(process, "GET", "/health")
            if victim not in pids and status == 200:
                break
            assert time.monotonic() < deadline, "the worker was not restarted"
            await asyncio.sleep(0.1)
        assert await workers_answering(process, 418) == pids
        status, listed = await admin(process, "GET", "/faults")
        assert "GET /plain" in {row["route"] for row in listed["faults"]}
    finally:
        await asyncio.to_thread(process.stop)


async def worker_pids(process: GatewayProcess) -> set[str]:
    _, workers = await admin(process, "GET", "/workers")
    return {str(worker["pid"]) for worker in workers}


async def workers_answering(process: GatewayProcess, status: int) -> set[str]:
    """The workers seen answering /v1/plain, each with `status` (new connections spread over
    the workers; 200 attempts leave a worker unseen with probability 2^-200)."""
    seen: set[str] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
        for _ in range(200):
            async with client.get(process.url + "/v1/plain") as response:
                assert response.status == status
                seen.add(response.headers["x-pygw-worker"])
            if len(seen) == 2:
                break
    return seen
