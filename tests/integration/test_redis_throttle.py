"""`state.backend: redis` against a real private redis-server: shared buckets and quotas across
several "hosts" (separate RedisThrottle objects), all-or-nothing decisions, the leased fast path's
overshoot, and on_error when Redis goes away and comes back."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.request import Request
from pygw.stages.throttle import Decision
from pygw.state import RedisThrottle, RedisThrottleStage
from pygw.state.redis_throttle import (
    CALENDAR_LUA,
    GRANTED,
    LEASE_TTL_S,
    LEASE_WINDOW_S,
    QUOTA_EXCEEDED,
    THROTTLED,
    close_pools,
    connection_pool,
)
from tests.integration.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.timeout(60)

# Generous for a loaded test machine: these tests are about limits, not about the 50 ms default.
TIMEOUT_S = 2.0


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(autouse=True)
async def pools_closed() -> AsyncIterator[None]:
    """Each test's pools end with its event loop, rather than as warnings in a later test."""
    yield
    await close_pools()


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    r = Redis.from_url(redis_server.url)
    yield r
    await r.aclose()


def hosts(server: RedisServer, n: int, **kwargs: object) -> list[RedisThrottle]:
    opts: dict[str, object] = {"key_prefix": "t:", "on_error": "allow", "timeout_s": TIMEOUT_S}
    opts.update(kwargs)
    return [RedisThrottle(server.url, **opts) for _ in range(n)]  # type: ignore[arg-type]


async def redis_now(r: Redis) -> float:
    sec, usec = await r.time()
    return float(sec) + float(usec) / 1e6


def make_ctx(key_id: str | None = None) -> RequestContext:
    ctx = RequestContext(
        request=Request.build("GET", "/x"),
        request_id="rid",
        path="/x",
        params={},
        stage_variables={},
        client_ip="127.0.0.1",
        received_at=0.0,
    )
    if key_id is not None:
        ctx.api_key_id = key_id
    return ctx


def next_period_start(unix: float, period: str) -> float:
    d = dt.datetime.fromtimestamp(unix, dt.UTC).date()
    if period == "DAY":
        nxt = d + dt.timedelta(days=1)
    elif period == "WEEK":
        nxt = d + dt.timedelta(days=7 - d.weekday())
    else:
        nxt = dt.date(d.year + d.month // 12, d.month % 12 + 1, 1)
    return dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=dt.UTC).timestamp()


async def test_calendar_matches_python(client: Redis) -> None:
    days = [*range(-800, 800, 7), *range(10_900, 12_500, 3), 19_000, 20_088, 47_540, 2_932_500]
    script = (
        CALENDAR_LUA
        + """
local out = {}
for i = 1, #ARGV do
  for p = 0, 2 do
    local pid, nxt = period(p, tonumber(ARGV[i]))
    out[#out + 1] = string.format('%d %d', pid, nxt)
  end
end
return out
"""
    )
    reply = await client.eval(script, 0, *days)  # type: ignore[misc]
    epoch = dt.date(1970, 1, 1)
    for i, day in enumerate(days):
        unix = day * 86400.0 + 43_200
        for p, name in enumerate(("DAY", "WEEK", "MONTH")):
            _, nxt = map(int, reply[3 * i + p].split())
            assert nxt * 86400.0 == next_period_start(unix, name), (day, name)
        d = epoch + dt.timedelta(days=day)
        # Period ids differ between consecutive periods only.
        pid_month = int(reply[3 * i + 2].split()[0])
        assert pid_month == d.year * 12 + d.month - 1


async def test_burst_shared_exactly_across_hosts(redis_server: RedisServer) -> None:
    fleet = hosts(redis_server, 4)
    ids = [h.register_bucket("acct", 0.0, 20) for h in fleet]

    async def hammer(h: RedisThrottle, bid: int) -> list[Decision]:
        return [await h.acquire([bid]) for _ in range(15)]

    results = await asyncio.gather(*(hammer(h, i) for h, i in zip(fleet, ids, strict=True)))
    flat = [d for rs in results for d in rs]
    assert sum(d[0] == GRANTED for d in flat) == 20
    refused = [d for d in flat if d[0] != GRANTED]
    assert all(d[0] == THROTTLED and d[1] == math.inf for d in refused)
    assert all(d[2:] == (20, 0, math.inf, 0) for d in refused)
    assert sum(h.stats.errors for h in fleet) == 0
    for h in fleet:
        await h.close()


async def test_refusal_takes_nothing_at_any_level(redis_server: RedisServer) -> None:
    a, b = hosts(redis_server, 2)
    acct, route = a.register_bucket("acct", 0.0, 5), a.register_bucket("route", 0.0, 2)
    b_acct = b.register_bucket("acct", 0.0, 5)
    decisions = [await a.acquire([acct, route, acct]) for _ in range(3)]
    assert [d[0] for d in decisions] == [GRANTED, GRANTED, THROTTLED]
    assert decisions[0][2:4] == (2, 1)  # the tightest level: the route
    # The refused request took nothing from the account: 3 tokens are left for another host.
    later = [await b.acquire([b_acct]) for _ in range(4)]
    assert [d[0] for d in later] == [GRANTED, GRANTED, GRANTED, THROTTLED]
    assert [d[3] for d in later[:3]] == [2, 1, 0]


async def test_bucket_refills_from_redis_time(redis_server: RedisServer, client: Redis) -> None:
    (h,) = hosts(redis_server, 1)
    bid = h.register_bucket("slow", 10.0, 1)
    assert (await h.acquire([bid]))[0] == GRANTED
    refused = await h.acquire([bid])
    assert refused[0] == THROTTLED and 0 < refused[1] <= 0.1
    ttl = await client.pttl("t:tb:slow")
    assert 0 < ttl <= 101  # the key expires once the bucket would be full again
    for _ in range(100):
        await asyncio.sleep(0.02)
        if (await h.acquire([bid]))[0] == GRANTED:
            break
    else:
        pytest.fail("the bucket never refilled")


async def test_quota_shared_and_exact_with_leases(redis_server: RedisServer) -> None:
    fleet = hosts(redis_server, 3)
    qids = [h.register_quota("plan/gold/key/alice", 3000, "DAY") for h in fleet]
    bids = [h.register_bucket("plan/gold/key/alice", 1e6, 1_000_000) for h in fleet]
    granted = 0
    while True:
        round_ = [
            await h.acquire([b], q) for h, b, q in zip(fleet, bids, qids, strict=True) for _ in "ab"
        ]
        granted += sum(d[0] == GRANTED for d in round_)
        if all(d[0] == QUOTA_EXCEEDED for d in round_):
            break
    assert granted == 3000
    assert round_[0][1] > 0
    assert fleet[0].stats.local > 0  # units were leased and spent without a round trip


async def test_quota_units_given_back_on_close(redis_server: RedisServer) -> None:
    a, b = hosts(redis_server, 2)
    qa, qb = a.register_quota("k", 5000, "MONTH"), b.register_quota("k", 5000, "MONTH")
    assert (await a.acquire([], qa))[0] == GRANTED  # leases 4 more units
    await a.close()
    got = 0
    while (await b.acquire([], qb))[0] == GRANTED:
        got += 1
    assert got == 4999


@pytest.mark.parametrize("period", ["DAY", "WEEK", "MONTH"])
async def test_quota_retry_after_is_next_utc_period(
    redis_server: RedisServer, client: Redis, period: str
) -> None:
    (h,) = hosts(redis_server, 1)
    qid = h.register_quota("none", 0, period)
    before = await redis_now(client)
    status, retry, *_ = await h.acquire([], qid)
    after = await redis_now(client)
    assert status == QUOTA_EXCEEDED
    assert next_period_start(after, period) - after <= retry
    assert retry <= next_period_start(before, period) - before


async def test_leased_overshoot_within_stated_bound(redis_server: RedisServer) -> None:
    """N hosts, each with several concurrent clients, hammer one bucket. Over every interval of
    grants the count stays within B + R*T + min(N*(L-1), R*LEASE_TTL_S) (the module's bound),
    plus R * (slowest round trip), since a grant is timed when its reply arrives."""
    rate, burst, n_hosts, per_host, attempts = 400.0, 40, 4, 4, 300
    fleet = hosts(redis_server, n_hosts)
    ids = [h.register_bucket("api/shop/stage/v1", rate, burst) for h in fleet]
    lease = max(1, min(math.floor(rate * LEASE_WINDOW_S), burst // 4))
    bound = min(n_hosts * (lease - 1), rate * LEASE_TTL_S)
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def client_task(h: RedisThrottle, bid: int) -> None:
        for _ in range(attempts):
            status, retry, *_ = await h.acquire([bid])
            if status == GRANTED:
                times.append(loop.time())
            # A refused client backs off a little, as real ones do: hosts then hold spare tokens
            # at interval boundaries, the case the bound is about.
            await asyncio.sleep(min(retry, 0.005))

    await asyncio.gather(
        *(client_task(h, b) for h, b in zip(fleet, ids, strict=True) for _ in range(per_host))
    )
    assert sum(h.stats.errors for h in fleet) == 0
    times.sort()
    # max over i <= j of (j - i + 1) - R * (t_j - t_i), in one pass.
    best, best_start = -math.inf, -math.inf
    for j, t in enumerate(times):
        best_start = max(best_start, rate * t - j + 1)
        best = max(best, j - rate * t + best_start)
    overshoot = best - burst
    slack = rate * max(h.stats.max_round_trip_s for h in fleet)
    round_trips = sum(h.stats.round_trips for h in fleet)
    local = sum(h.stats.local for h in fleet)
    print(
        f"granted={len(times)} lease={lease} stated_bound={bound:.1f} "
        f"measured_overshoot={overshoot:.2f} timing_slack={slack:.2f} "
        f"round_trips={round_trips} local={local}"
    )
    assert overshoot <= bound + slack + 1e-9
    assert local > 0


async def test_fast_path_spares_round_trips(redis_server: RedisServer) -> None:
    (h,) = hosts(redis_server, 1)
    bid = h.register_bucket("acct", 1000.0, 1000)  # lease: 50 tokens
    decisions = [await h.acquire([bid]) for _ in range(200)]
    assert all(d[0] == GRANTED for d in decisions)
    assert h.stats.round_trips <= 100 and h.stats.local >= 100


async def test_on_error_allow_then_recovers(redis_server: RedisServer) -> None:
    (h,) = hosts(redis_server, 1, timeout_s=0.05)
    bid = h.register_bucket("acct", 0.0, 2)
    assert [(await h.acquire([bid]))[0] for _ in range(3)] == [GRANTED, GRANTED, THROTTLED]
    redis_server.stop()
    assert [(await h.acquire([bid]))[0] for _ in range(5)] == [GRANTED] * 5
    assert h.stats.errors >= 1
    redis_server.start()  # same port, empty data: the bucket starts full again
    trips = h.stats.round_trips
    for _ in range(500):
        if h.stats.round_trips > trips:
            break
        await h.acquire([bid])
        await asyncio.sleep(0.01)
    assert h.stats.round_trips > trips
    statuses = [(await h.acquire([bid]))[0] for _ in range(3)]
    assert statuses[-1] == THROTTLED and statuses.count(GRANTED) <= 2


async def test_on_error_deny_answers_429_then_recovers(redis_server: RedisServer) -> None:
    (h,) = hosts(redis_server, 1, on_error="deny", timeout_s=0.05)
    bid = h.register_bucket("acct", 0.0, 100)
    stage = RedisThrottleStage(h, [bid])
    assert await stage(make_ctx()) is None
    redis_server.stop()
    with pytest.raises(GatewayError) as info:
        await stage(make_ctx())
    assert info.value.error == ErrorType.THROTTLED
    assert info.value.headers == {"Retry-After": "1"}
    redis_server.start()
    for _ in range(500):
        try:
            await stage(make_ctx())
            break
        except GatewayError:
            await asyncio.sleep(0.01)
    else:
        pytest.fail("limits did not come back with Redis")


async def test_stage_headers_errors_and_plan_keys(redis_server: RedisServer) -> None:
    (h,) = hosts(redis_server, 1)
    route = h.register_bucket("api/shop/stage/v1/route/GET /x", 0.0, 3)
    plan = h.register_bucket("plan/gold/key/alice", 0.0, 10)
    quota = h.register_quota("plan/gold/key/alice", 1, "DAY")
    stage = RedisThrottleStage(h, [route], {"alice": (plan, quota), "bob": (None, None)})

    ctx = make_ctx("alice")
    assert await stage(ctx) is None
    assert ctx.response_headers == {
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "2",
        "RateLimit-Reset": "86400",  # a bucket that never refills: the capped wait
    }
    ctx = make_ctx("alice")
    with pytest.raises(GatewayError) as info:
        await stage(ctx)
    assert info.value.error == ErrorType.QUOTA_EXCEEDED
    retry = int(info.value.headers["Retry-After"])
    assert 0 < retry <= 86_400
    assert ctx.response_headers["RateLimit-Remaining"] == "2"  # the quota refusal took no token

    assert await stage(make_ctx("bob")) is None  # no plan: the route's bucket alone
    assert await stage(make_ctx()) is None
    ctx = make_ctx("bob")
    with pytest.raises(GatewayError) as info:
        await stage(ctx)
    assert info.value.error == ErrorType.THROTTLED
    assert info.value.headers == {"Retry-After": "86400"}  # never refills: the capped wait
    assert ctx.response_headers["RateLimit-Remaining"] == "0"


async def test_one_pool_per_url_reused_across_reloads(redis_server: RedisServer) -> None:
    old, new = hosts(redis_server, 2)
    bo, bn = old.register_bucket("acct", 0.0, 3), new.register_bucket("acct", 0.0, 3)
    assert (await old.acquire([bo]))[0] == GRANTED
    await old.close()  # a reload: the old object goes, the shared bucket and pool stay
    assert [(await new.acquire([bn]))[3] for _ in range(2)] == [1, 0]
    assert connection_pool(redis_server.url) is connection_pool(redis_server.url)
