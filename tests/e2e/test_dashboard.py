"""The live dashboard on the admin listener of a real `pygw serve` (one process, and a supervisor of
two workers) on 127.0.0.1 with a real upstream: its figures after known traffic, the admin token
in front of it, and the page itself in headless Chromium while traffic runs."""

from __future__ import annotations

import asyncio
import os
import re
import textwrap
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.browser import Browser, find_chromium
from tests.e2e.gateway_process import GatewayProcess

pytestmark = pytest.mark.timeout(90)

TOKEN = "dash-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

CONFIG = """
server: {workers: %(workers)d, drain_timeout_s: 2}
admin: {listen: "127.0.0.1:0", token: %(token)s}
access_log: null
apis:
  - name: shop
    type: rest
    stages: [{name: v1}]
    cache: {capacity_mb: 1, ttl_s: 300}
    routes:
      "GET /cached":
        integration: {type: http_proxy, uri: "%(upstream)s/cached"}
      "GET /items":
        integration: {type: http_proxy, uri: "%(upstream)s/items"}
        cache: {ttl_s: 0}
        throttle: {rate: 1, burst: 1}
  - name: web
    type: http
    routes:
      "GET /hello":
        integration: {type: mock, status: 200, body: {hello: world}}
      "GET /broken":
        integration: {type: mock, status: 500, body: {message: broke}}
"""


@dataclass
class Deployment:
    gateway: GatewayProcess
    upstream: str
    config: Path
    workers: int


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def deploy(folder: Path, upstream: str, workers: int) -> Deployment:
    config = folder / "gateway.yaml"
    config.write_text(
        textwrap.dedent(CONFIG) % {"workers": workers, "token": TOKEN, "upstream": upstream}
    )
    gateway = GatewayProcess(config)
    await asyncio.to_thread(gateway.start, 30.0)
    return Deployment(gateway, upstream, config, workers)


@pytest.fixture(params=[1, 2], ids=["single", "supervisor"])
async def deployed(
    request: pytest.FixtureRequest, tmp_path: Path, upstream: str
) -> AsyncIterator[Deployment]:
    deployment = await deploy(tmp_path, upstream, request.param)
    try:
        yield deployment
    finally:
        await asyncio.to_thread(deployment.gateway.stop)


@pytest.fixture
async def single(tmp_path: Path, upstream: str) -> AsyncIterator[Deployment]:
    deployment = await deploy(tmp_path, upstream, 1)
    try:
        yield deployment
    finally:
        await asyncio.to_thread(deployment.gateway.stop)


async def send(client: aiohttp.ClientSession, url: str, path: str, times: int) -> Counter[int]:
    seen: Counter[int] = Counter()
    for _ in range(times):
        async with client.get(url + path) as response:
            await response.read()
            seen[response.status] += 1
    return seen


async def figures(client: aiohttp.ClientSession, admin: str, query: str = "") -> dict[str, Any]:
    async with client.get(f"{admin}/dashboard.json{query}", headers=AUTH) as response:
        assert response.status == 200, await response.text()
        found: dict[str, Any] = await response.json()
        return found


def route(found: dict[str, Any], api: str, key: str) -> dict[str, Any]:
    rows = [r for r in found["routes"] if r["api"] == api and r["route"] == key]
    assert len(rows) == 1, (api, key, found["routes"])
    return rows[0]


async def test_figures_after_known_traffic(deployed: Deployment) -> None:
    gateway = deployed.gateway
    async with aiohttp.ClientSession() as client:
        hello = await send(client, gateway.url, "/hello", 12)
        broken = await send(client, gateway.url, "/broken", 4)
        cached = await send(client, gateway.url, "/v1/cached", 6)
        items = await send(client, gateway.url, "/v1/items", 5)
        assert hello == {200: 12} and broken == {500: 4} and cached == {200: 6}
        # A bucket of one request per second, five requests back to back: at least one refused.
        refused = items[429]
        assert refused >= 1 and refused + items[200] == 5

        found = await figures(client, gateway.admin_url)

    sent = 12 + 4 + 6 + 5
    # The first look covers everything since the listener started.
    assert found["totals"]["requests"] == sent
    assert found["totals"]["requests_total"] == sent
    assert found["totals"]["errors"] == 4 + refused
    assert found["totals"]["error_rate"] == pytest.approx((4 + refused) / sent)
    assert found["totals"]["rate"] > 0
    assert found["workers"] == (deployed.workers if deployed.workers > 1 else None)

    ok = route(found, "web", "GET /hello")
    assert (ok["requests_total"], ok["error_rate"], ok["style"]) == (12, 0.0, "http")
    assert ok["integration"] == "mock"
    assert 0 < ok["p50"] <= ok["p99"]
    bad = route(found, "web", "GET /broken")
    assert (bad["errors_5xx"], bad["errors_4xx"], bad["error_rate"]) == (4, 0, 1.0)
    throttled = route(found, "shop", "GET /items")
    assert throttled["errors_4xx"] == refused
    assert throttled["style"] == "rest" and throttled["integration"] == "http_proxy"
    # The route's own bucket is a timed stage: its mean time per request is shown.
    assert "throttle" in throttled["pipeline"] and throttled["stage_mean"]["throttle"] > 0
    cache_row = route(found, "shop", "GET /cached")
    assert cache_row["pipeline"][-1] == "cache"
    assert route(found, "shop", "$default (implicit)")["integration"] == "not_found"

    assert found["throttled"]["route"]["total"] == refused
    cache = found["cache"]
    assert cache["hits"] + cache["misses"] == 6
    # Each worker has its own cache: one miss per worker at most.
    assert cache["misses"] <= deployed.workers
    assert cache["hit_ratio"] == pytest.approx(cache["hits"] / 6)
    assert [(u["target"], u["healthy"]) for u in found["upstreams"]] == [(deployed.upstream, True)]
    assert found["websocket"]["connections"] == 0

    rest, http = found["styles"]["rest"], found["styles"]["http"]
    assert rest["requests"] == 6 + 5 and http["requests"] == 12 + 4
    assert rest["overhead_p50"] > 0 and http["overhead_p50"] > 0
    # The timed stages and the rest of the gateway's time make up all of its overhead.
    assert sum(rest["stage_share"].values()) == pytest.approx(1.0)
    assert rest["stage_share"]["throttle"] > 0


async def test_reloads_are_listed_newest_first(deployed: Deployment) -> None:
    admin = deployed.gateway.admin_url
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{admin}/reload", headers=AUTH) as response:
            assert response.status == 200
        good = deployed.config.read_text()
        deployed.config.write_text(good.replace("type: mock", "type: nonsense", 1))
        async with client.post(f"{admin}/reload", headers=AUTH) as response:
            assert response.status == 400
        deployed.config.write_text(good)
        found = await figures(client, admin)
    reloads = found["reloads"]
    assert [event["ok"] for event in reloads["recent"]] == [False, True]
    assert "nonsense" in reloads["recent"][0]["detail"]
    assert "4 route(s)" in reloads["recent"][1]["detail"]
    assert (reloads["ok"], reloads["error"]) == (1, 1)


async def test_window_is_the_difference_between_snapshots(single: Deployment) -> None:
    gateway = single.gateway
    async with aiohttp.ClientSession() as client:
        await send(client, gateway.url, "/hello", 3)
        first = await figures(client, gateway.admin_url)
        await send(client, gateway.url, "/hello", 2)
        second = await figures(client, gateway.admin_url)
        async with client.get(f"{gateway.admin_url}/dashboard.json?window=x", headers=AUTH) as r:
            assert r.status == 400 and "window" in (await r.json())["message"]
    assert route(first, "web", "GET /hello")["requests"] == 3
    # The second look starts where the first one's snapshot was taken.
    row = route(second, "web", "GET /hello")
    assert (row["requests"], row["requests_total"]) == (2, 5)
    assert second["window_seconds"] < first["window_seconds"] + 60


async def test_the_dashboard_needs_the_admin_token(single: Deployment) -> None:
    admin = single.gateway.admin_url
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1 too
    async with aiohttp.ClientSession(cookie_jar=jar) as client:
        for path in ("/dashboard.json", "/dashboard/dashboard.js", "/dashboard/chart.umd.min.js"):
            async with client.get(admin + path) as response:
                assert response.status == 401, path
                assert await response.json() == {"message": "Unauthorized"}
        # The page asks for the token with a form, and says so when a wrong one came.
        async with client.get(admin + "/") as response:
            assert response.status == 401 and response.content_type == "text/html"
            assert 'name="token"' in await response.text()
        async with client.get(admin + "/?token=wrong") as response:
            assert response.status == 401
            assert "not right" in await response.text()
        assert not jar.filter_cookies(admin)  # type: ignore[arg-type]
        async with client.get(admin + "/?token=" + TOKEN, allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/"
            cookie = response.cookies["pygw_admin"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
            assert TOKEN not in cookie.value
        # With the cookie: the page, its files and its figures...
        async with client.get(admin + "/") as response:
            assert response.status == 200 and "<canvas" in await response.text()
        for path in ("/dashboard.json", "/dashboard/dashboard.css", "/dashboard/chart.umd.min.js"):
            async with client.get(admin + path) as response:
                assert response.status == 200, path
        # ...but not the rest of the admin API: that still wants the Bearer header.
        for method, path in (("GET", "/metrics"), ("GET", "/routes"), ("POST", "/reload")):
            async with client.request(method, admin + path) as response:
                assert response.status == 401, (method, path)
        async with client.get(admin + "/dashboard/../admin.py", headers=AUTH) as response:
            assert response.status == 404
    async with aiohttp.ClientSession() as client:
        async with client.get(admin + "/", cookies={"pygw_admin": "forged"}) as response:
            assert response.status == 401
        async with client.get(admin + "/", headers=AUTH) as response:
            assert response.status == 200
        async with client.get(admin + "/health") as response:
            assert response.status == 200


def deploy_files() -> tuple[str, ...]:
    root = Path(__file__).resolve().parents[2] / "deploy"
    return (
        (root / "grafana" / "pygw-dashboard.json").read_text(),
        (root / "prometheus" / "pygw-alerts.yml").read_text(),
    )


async def test_grafana_and_alert_rules_use_metrics_pygw_exports(
    tmp_path: Path, upstream: str
) -> None:
    """Every metric the Grafana dashboard and the alert rules query is in pygw's `/metrics` after
    traffic (through a supervisor, which adds `pygw_workers`), so neither can drift."""
    deployment = await deploy(tmp_path, upstream, 2)
    try:
        gateway = deployment.gateway
        async with aiohttp.ClientSession() as client:
            await send(client, gateway.url, "/hello", 2)
            await send(client, gateway.url, "/broken", 1)
            await send(client, gateway.url, "/v1/cached", 2)
            await send(client, gateway.url, "/v1/items", 4)
            async with client.post(f"{gateway.admin_url}/reload", headers=AUTH) as response:
                assert response.status == 200
            async with client.get(f"{gateway.admin_url}/metrics", headers=AUTH) as response:
                exported = await response.text()
    finally:
        await asyncio.to_thread(deployment.gateway.stop)
    names = set(re.findall(r"^(pygw_[a-z_]+)", exported, re.MULTILINE))
    used: set[str] = set()
    for text in deploy_files():
        used |= set(re.findall(r"\b(pygw_[a-z_]+)\b", text))
    assert len(used) >= 10, used
    assert used <= names, sorted(used - names)


async def test_the_page_in_chromium_while_traffic_runs(single: Deployment) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "no Chromium binary (Debian's chromium, or PYGW_CHROMIUM); make system-packages"
        )
    gateway = single.gateway
    stop = asyncio.Event()

    async def traffic() -> None:
        # Bounded: stops when the test is done looking, and after 2000 rounds whatever happens.
        async with aiohttp.ClientSession() as client:
            for _ in range(2000):
                if stop.is_set():
                    return
                for path in ("/hello", "/hello", "/broken", "/v1/cached", "/v1/items"):
                    async with client.get(gateway.url + path) as response:
                        await response.read()
                await asyncio.sleep(0.02)

    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{gateway.admin_url}/reload", headers=AUTH) as reloaded,
    ):
        assert reloaded.status == 200
    running = asyncio.get_running_loop().create_task(traffic())
    try:
        async with Browser(binary) as browser:
            page = await browser.page()
            # The token once in the address: the page sets its cookie and drops it from there.
            await page.open(f"{gateway.admin_url}/?token={TOKEN}&refresh=250")
            await page.wait_for("Number(document.body.dataset.updates) >= 3")
            assert await page.evaluate("location.search") == "?refresh=250"
            rows = await page.evaluate(
                "[...document.querySelectorAll('#routes tbody tr')].map(r => r.dataset.route)"
            )
            assert "web/$default GET /hello" in rows and "shop/v1 GET /items" in rows
            pipeline = await page.evaluate(
                'document.querySelector(\'#routes tr[data-route="shop/v1 GET /cached"] '
                ".pipeline').textContent"
            )
            assert pipeline.endswith("cache→http_proxy"), pipeline
            charts = "window.pygwDashboard.charts"
            before = await page.evaluate(f"{charts}.rate.data.labels.length")
            updates = int(await page.evaluate("document.body.dataset.updates"))
            await page.wait_for(f"Number(document.body.dataset.updates) >= {updates + 3}")
            after = await page.evaluate(f"{charts}.rate.data.labels.length")
            assert after >= before + 3
            # Drawn series carry the traffic: a request rate for /hello, errors for /broken,
            # an overhead per style and the throttled requests' level.
            hello_rates = await page.evaluate(
                f"{charts}.rate.data.datasets.find(d => d.label === 'web/$default GET /hello')"
                ".data.filter(v => v > 0).length"
            )
            assert hello_rates >= 3
            styles = await page.evaluate(f"{charts}.overhead.data.datasets.map(d => d.label)")
            assert sorted(styles) == ["HTTP", "REST"]
            levels = await page.evaluate(f"{charts}.throttled.data.datasets.map(d => d.label)")
            assert "route" in levels
            errors = await page.evaluate("document.getElementById('t-errors').textContent")
            assert errors.endswith("%") and errors != "0.0%", errors
            reloads = await page.evaluate("document.querySelector('#reloads tbody').innerText")
            assert "reloaded" in reloads and "route(s)" in reloads
            upstreams = await page.evaluate("document.querySelector('#upstreams tbody').innerText")
            assert single.upstream in upstreams and "up" in upstreams
            assert await page.evaluate("window.pygwDashboard.failures") == 0
            # PYGW_DASHBOARD_SCREENSHOT=docs/dashboard.png renews the documentation's picture.
            shot = os.environ.get("PYGW_DASHBOARD_SCREENSHOT")
            await page.screenshot(Path(shot) if shot else single.config.parent / "dashboard.png")
            assert page.errors == []
    finally:
        stop.set()
        await running
