"""`pygw_throttled_total{level}` and `pygw_stage_seconds{step}` through a real `pygw serve`: the
refusals a client sees, counted by the level that refused, on every state backend; and one timing
per pipeline stage a request went through."""

from __future__ import annotations

import asyncio
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.gateway_process import GatewayProcess
from tests.e2e.test_shared_gateway import CONFIG as WORKERS_CONFIG
from tests.integration.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.timeout(120)

ALICE = "alice-0123456789abcdef"
BOB = "bob-fedcba9876543210"

CONFIG = """
admin: {listen: "127.0.0.1:0"}
access_log: null
%(state)s
throttle: {rate: 1000, burst: 1000}
apis:
  - name: bare
    type: http
    base_path: /bare
    routes:
      "GET /x":
        integration: {type: mock, status: 200, body: ok}
  - name: mapped
    type: http
    base_path: /mapped
    cors: {allow_origins: ["https://shop.example"]}
    routes:
      "GET /m":
        integration: {type: mock, status: 200, body: ok}
        mapping: {request: {"overwrite:header.x-stage": "$context.stage"}}
  - name: shop
    type: rest
    base_path: /shop
    stages:
      - {name: v1}
      - {name: lim, throttle: {rate: 0.001, burst: 2}}
    resource_policy: {allow_cidrs: ["127.0.0.0/8", "::1/128"]}
    models:
      Order: {type: object, required: [item], properties: {item: {type: string}}}
    api_keys:
      - {id: alice, value: "%(alice)s"}
      - {id: bob, value: "%(bob)s"}
    usage_plans:
      - {name: gold, keys: [alice], throttle: {rate: 0.001, burst: 3}}
      - {name: tiny, keys: [bob], quota: {limit: 2, period: MONTH}}
    routes:
      "GET /limited":
        integration: {type: mock, status: 200, body: ok}
        throttle: {rate: 0.001, burst: 2}
      "GET /items":
        integration: {type: mock, status: 200, body: ok}
        api_key_required: true
      "POST /orders":
        integration: {type: mock, status: 201}
        validate: {body: Order}
      "GET /open":
        integration: {type: mock, status: 200, body: ok}
"""

# The account bucket is tiny here, and one route also has its own.
ACCOUNT_CONFIG = """
admin: {listen: "127.0.0.1:0"}
access_log: null
throttle: {rate: 0.001, burst: 3}
apis:
  - name: web
    type: http
    routes:
      "GET /x":
        integration: {type: mock, status: 200, body: ok}
      "GET /y":
        integration: {type: mock, status: 200, body: ok}
        throttle: {rate: 0.001, burst: 1}
  - name: sock
    type: websocket
    base_path: /ws
    stages: [{name: prod}]
    routes:
      $default: {integration: {type: mock, body: pong}, route_response: true}
"""

Series = dict[tuple[tuple[str, str], ...], float]


@asynccontextmanager
async def serving(config: Path) -> AsyncIterator[GatewayProcess]:
    process = GatewayProcess(config)
    await asyncio.to_thread(process.start)
    try:
        yield process
    finally:
        await asyncio.to_thread(process.stop)


async def scrape(gateway: GatewayProcess) -> dict[str, Series]:
    """Every sample on admin /metrics: sample name -> (sorted labels -> value)."""
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway.admin_url + "/metrics") as response:
            assert response.status == 200
            text = await response.text()
    samples: dict[str, Series] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def throttled(samples: dict[str, Series]) -> Counter[tuple[str, str, str, str]]:
    """(api, stage, route, level) -> refusals counted."""
    found: Counter[tuple[str, str, str, str]] = Counter()
    for key, value in samples.get("pygw_throttled_total", {}).items():
        labels = dict(key)
        found[(labels["api"], labels["stage"], labels["route"], labels["level"])] = int(value)
    return found


def stage_counts(samples: dict[str, Series], api: str) -> dict[tuple[str, str, str], int]:
    """(stage, route, step) -> observations, for one API."""
    found: dict[tuple[str, str, str], int] = {}
    for key, value in samples.get("pygw_stage_seconds_count", {}).items():
        labels = dict(key)
        if labels["api"] == api:
            found[(labels["stage"], labels["route"], labels["step"])] = int(value)
    return found


async def call(
    client: aiohttp.ClientSession,
    method: str,
    url: str,
    seen: Counter[tuple[int, str]],
    **kwargs: object,
) -> int:
    async with client.request(method, url, **kwargs) as response:  # type: ignore[arg-type]
        body = await response.text()
        seen[(response.status, body if response.status == 429 else "")] += 1
        return response.status


@pytest.fixture(params=["local", "shared", "redis"])
def state(request: pytest.FixtureRequest) -> Iterator[tuple[str, RedisServer | None]]:
    with ExitStack() as stack:
        if request.param == "local":
            yield "", None
        elif request.param == "shared":
            yield "state: {backend: shared}", None
        else:
            server = stack.enter_context(running_redis())
            yield f'state: {{backend: redis, url: "{server.url}", on_error: deny}}', server


async def test_refusals_counted_by_level_and_stages_timed(
    state: tuple[str, RedisServer | None], tmp_path: Path
) -> None:
    state_line, redis = state
    config = tmp_path / "gateway.yaml"
    config.write_text(textwrap.dedent(CONFIG) % {"state": state_line, "alice": ALICE, "bob": BOB})
    seen: Counter[tuple[int, str]] = Counter()
    too_many = (429, '{"message":"Too Many Requests"}')
    spent = (429, '{"message":"Limit Exceeded"}')
    async with serving(config) as gateway, aiohttp.ClientSession() as client:
        url = gateway.url
        # Route bucket: burst 2.
        statuses = [await call(client, "GET", url + "/shop/v1/limited", seen) for _ in range(5)]
        assert statuses == [200, 200, 429, 429, 429]
        # Stage bucket of stage `lim`: burst 2, shared by its routes.
        statuses = [await call(client, "GET", url + "/shop/lim/open", seen) for _ in range(4)]
        assert statuses == [200, 200, 429, 429]
        # Alice's usage-plan bucket: burst 3.
        alice = {"x-api-key": ALICE}
        statuses = [
            await call(client, "GET", url + "/shop/v1/items", seen, headers=alice) for _ in range(5)
        ]
        assert statuses == [200, 200, 200, 429, 429]
        # Bob's quota: 2 a month.
        bob = {"x-api-key": BOB}
        statuses = [
            await call(client, "GET", url + "/shop/v1/items", seen, headers=bob) for _ in range(4)
        ]
        assert statuses == [200, 200, 429, 429]
        assert seen[spent] == 2
        # No key: refused by the API key stage, before the throttle.
        for _ in range(2):
            assert await call(client, "GET", url + "/shop/v1/items", seen) == 403
        # Validation passes one body and refuses the other.
        assert await call(client, "POST", url + "/shop/v1/orders", seen, json={"item": "a"}) == 201
        assert await call(client, "POST", url + "/shop/v1/orders", seen, json={"no": 1}) == 400
        for _ in range(3):
            assert await call(client, "GET", url + "/mapped/m", seen) == 200
            assert await call(client, "GET", url + "/bare/x", seen) == 200

        samples = await scrape(gateway)
        counted = throttled(samples)
        assert counted[("shop", "v1", "GET /limited", "route")] == 3
        assert counted[("shop", "lim", "GET /open", "stage")] == 2
        assert counted[("shop", "v1", "GET /items", "usage_plan")] == 2
        assert counted[("shop", "v1", "GET /items", "quota")] == 2
        # Every 429 the client saw is counted once, at one level.
        assert sum(counted.values()) == seen[too_many] + seen[spent] == 9
        assert sum(v for k, v in counted.items() if k[3] == "quota") == seen[spent]
        # Levels that apply but never refused are there at zero; others are absent.
        assert ("shop", "v1", "GET /items", "account") in counted
        assert not any(k[3] == "stage" for k in counted if k[1] == "v1")
        assert not any(k[3] in ("usage_plan", "quota") for k in counted if k[2] != "GET /items")

        shop = stage_counts(samples, "shop")
        assert shop == {
            ("v1", "GET /limited", "resource_policy"): 5,
            ("v1", "GET /limited", "throttle"): 5,
            ("lim", "GET /open", "resource_policy"): 4,
            ("lim", "GET /open", "throttle"): 4,
            ("v1", "GET /items", "resource_policy"): 11,
            ("v1", "GET /items", "api_key"): 11,
            # The two requests without a key never reached the throttle.
            ("v1", "GET /items", "throttle"): 9,
            ("v1", "POST /orders", "resource_policy"): 2,
            ("v1", "POST /orders", "throttle"): 2,
            ("v1", "POST /orders", "validate"): 2,
            # Routes and stages that were never requested have series at zero.
            **{
                (stage, route, step): 0
                for stage, route, steps in (
                    ("v1", "GET /open", ("resource_policy", "throttle")),
                    ("lim", "GET /limited", ("resource_policy", "throttle")),
                    ("lim", "GET /items", ("resource_policy", "api_key", "throttle")),
                    ("lim", "POST /orders", ("resource_policy", "throttle", "validate")),
                    ("v1", "$default", ("resource_policy",)),
                    ("lim", "$default", ("resource_policy",)),
                )
                for step in steps
            },
        }
        assert stage_counts(samples, "mapped") == {
            ("$default", "GET /m", "cors"): 3,
            ("$default", "GET /m", "throttle"): 3,
            ("$default", "GET /m", "transform"): 3,
            ("$default", "$default", "cors"): 0,
        }
        # The bare route configures no stage: not timed at all.
        assert stage_counts(samples, "bare") == {}
        timed = {
            k: v
            for k, v in samples["pygw_stage_seconds_sum"].items()
            if dict(k)["api"] == "shop"
            and dict(k)["route"] == "GET /items"
            and dict(k)["stage"] == "v1"
        }
        assert len(timed) == 3 and all(0.0 < v < 1.0 for v in timed.values()), timed
        buckets = {
            dict(k)["le"]
            for k in samples["pygw_stage_seconds_bucket"]
            if dict(k)["step"] == "api_key"
        }
        assert {"1e-06", "0.0001", "1.0", "+Inf"} <= buckets

        if redis is not None:
            # Redis gone with on_error: deny: refused, and counted as such.
            redis.stop()
            assert await call(client, "GET", url + "/shop/v1/open", seen) == 429
            counted = throttled(await scrape(gateway))
            assert counted[("shop", "v1", "GET /open", "unavailable")] == 1
            assert sum(counted.values()) == 10


async def test_account_level_and_the_first_refusing_level(tmp_path: Path) -> None:
    config = tmp_path / "account.yaml"
    config.write_text(textwrap.dedent(ACCOUNT_CONFIG))
    seen: Counter[tuple[int, str]] = Counter()
    async with serving(config) as gateway, aiohttp.ClientSession() as client:
        url = gateway.url
        # Account burst 3, route /y burst 1.
        assert await call(client, "GET", url + "/y", seen) == 200
        assert await call(client, "GET", url + "/y", seen) == 429  # the route's bucket
        assert await call(client, "GET", url + "/x", seen) == 200
        assert await call(client, "GET", url + "/x", seen) == 200
        assert await call(client, "GET", url + "/x", seen) == 429  # the account's
        # Both empty: the account, named first, is the level reported.
        assert await call(client, "GET", url + "/y", seen) == 429
        # A WebSocket handshake is throttled by the account too.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(url + "/ws/prod")
        assert refused.value.status == 429
        samples = await scrape(gateway)
    assert throttled(samples) == {
        ("web", "$default", "GET /x", "account"): 1,
        ("web", "$default", "GET /y", "account"): 1,
        ("web", "$default", "GET /y", "route"): 1,
        ("sock", "prod", "$default", "account"): 1,
    }
    assert sum(n for (status, _), n in seen.items() if status == 429) == 3
    # /x has only the account-wide throttle (the lean path): untimed; /y has a route limit.
    assert stage_counts(samples, "web") == {("$default", "GET /y", "throttle"): 3}


# No account-wide limit: only the route and the usage plan throttle.
NO_ACCOUNT_CONFIG = """
admin: {listen: "127.0.0.1:0"}
access_log: null
throttle: null
apis:
  - name: web
    type: http
    routes:
      "GET /free":
        integration: {type: mock, status: 200, body: ok}
      "GET /limited":
        integration: {type: mock, status: 200, body: ok}
        throttle: {rate: 0.001, burst: 2}
  - name: keyed
    type: rest
    base_path: /keyed
    api_keys_need_usage_plan: false   # carol, in no plan, is accepted
    api_keys:
      - {id: alice, value: "%(alice)s"}
      - {id: bob, value: "%(bob)s"}
      - {id: carol, value: "%(carol)s"}
    usage_plans:
      - {name: gold, keys: [alice], throttle: {rate: 0.001, burst: 1}}
      - {name: tiny, keys: [bob], quota: {limit: 2, period: MONTH}}
    routes:
      "GET /k":
        integration: {type: mock, status: 200, body: ok}
        api_key_required: true
  - name: sock
    type: websocket
    base_path: /ws
    stages: [{name: prod}]
    routes:
      $default: {integration: {type: mock, body: pong}, route_response: true}
"""


async def test_no_account_limit(tmp_path: Path) -> None:
    config = tmp_path / "no-account.yaml"
    carol = "carol-00112233445566778899"
    config.write_text(
        textwrap.dedent(NO_ACCOUNT_CONFIG % {"alice": ALICE, "bob": BOB, "carol": carol})
    )
    seen: Counter[tuple[int, str]] = Counter()
    async with serving(config) as gateway, aiohttp.ClientSession() as client:
        url = gateway.url
        # Far past what any default account limit would allow in one burst.
        statuses = await asyncio.gather(
            *(call(client, "GET", url + "/free", seen) for _ in range(300))
        )
        assert set(statuses) == {200}
        async with client.get(url + "/free") as response:
            # Nothing throttles this route, so there is no rate limit to announce.
            assert "RateLimit-Limit" not in response.headers
        assert [await call(client, "GET", url + "/limited", seen) for _ in range(3)] == [
            200,
            200,
            429,
        ]
        key = {"x-api-key": ALICE}
        assert await call(client, "GET", url + "/keyed/k", seen, headers=key) == 200
        assert await call(client, "GET", url + "/keyed/k", seen, headers=key) == 429
        # A key whose plan has a quota alone, and a key in no plan: nothing announces a rate
        # limit that does not exist.
        for value, expected in ((BOB, [200, 200, 429]), (carol, [200, 200, 200])):
            statuses = []
            for _ in range(3):
                async with client.get(url + "/keyed/k", headers={"x-api-key": value}) as response:
                    statuses.append(response.status)
                    assert "RateLimit-Limit" not in response.headers
            assert statuses == expected
        async with client.ws_connect(url + "/ws/prod") as ws:
            await ws.send_str("ping")
            assert (await ws.receive(timeout=5)).data == "pong"
        samples = await scrape(gateway)
    counted = throttled(samples)
    assert counted[("web", "$default", "GET /limited", "route")] == 1
    assert counted[("keyed", "$default", "GET /k", "usage_plan")] == 1
    assert counted[("keyed", "$default", "GET /k", "quota")] == 1
    assert not any(level == "account" for (_, _, _, level) in counted)
    # A route with no stage at all runs no throttle stage and is not timed.
    assert ("$default", "GET /free", "throttle") not in stage_counts(samples, "web")


async def test_two_workers_refusals_and_timings_summed(tmp_path: Path) -> None:
    config = tmp_path / "workers.yaml"
    config.write_text(textwrap.dedent(WORKERS_CONFIG))
    seen: Counter[tuple[int, str]] = Counter()
    workers: set[str] = set()
    async with serving(config) as gateway:
        # New connections spread over both workers (SO_REUSEPORT).
        for _ in range(30):
            async with aiohttp.ClientSession() as client:
                async with client.get(gateway.url + "/one") as response:
                    seen[(response.status, "")] += 1
                    workers.add(response.headers["x-pygw-worker"])
        samples = await scrape(gateway)
    assert len(workers) == 2, "the load should reach both workers"
    assert seen[(200, "")] == 8
    assert throttled(samples) == {
        ("scarce", "$default", "GET /one", "account"): 0,
        ("scarce", "$default", "GET /one", "route"): 22,
    }
    assert stage_counts(samples, "scarce") == {("$default", "GET /one", "throttle"): 30}
