"""Buckets and quotas shared by every host of a fleet through Redis (`state.backend: redis`).

Each decision is one server-side Lua script over all levels of the request: every bucket must give
a token and the quota must have room, otherwise nothing is taken (as `pygw._native.Throttle`). The
script reads the time with `TIME`, so skew between gateway hosts cannot issue extra tokens. Bucket
keys expire once they would be full again (PEXPIRE = time to refill), quota keys when their UTC
DAY / WEEK (from Monday) / MONTH period ends.

Local fast path (leases). When a request goes to Redis anyway, the script may also hand this process
up to ``L - 1`` spare tokens per bucket, ``L = max(1, min(floor(rate * LEASE_WINDOW_S), burst //
4))``; they are really taken from the shared bucket, and later requests spend them without a round
trip. A spare token is dropped, not returned, once ``LEASE_TTL_S`` has passed since the request that
leased it was sent. Every token, leased or not, leaves the shared bucket exactly once, so a lease
can only move a token in time, by at most ``LEASE_TTL_S``. Hence for any interval of length T the
fleet grants at most::

    B + R*T + min(N * (L - 1), R * LEASE_TTL_S)

(N hosts; the last term is the worst-case overshoot: at the interval's start every host may hold
``L - 1`` spare tokens taken during the previous ``LEASE_TTL_S``.) With the defaults
(``LEASE_WINDOW_S = LEASE_TTL_S = 0.05``) the overshoot is below 5 % of one second's rate; at rates
under 1 / LEASE_WINDOW_S (20/s) L is 1 and every request goes to Redis, which is exact. Spare tokens
that expire unspent are lost until the bucket refills (under-use, never overshoot).

Quotas lease units the same way (``Lq = max(1, min(limit // 1000, 100))``). Leased units are counted
in Redis when leased, and a lease dies before its period ends, so a quota never overshoots; units
left unspent are given back on this process's next call for that quota (or by `close`), and at most
``Lq - 1`` per host are lost if a host stops without closing.

When Redis cannot be reached within ``timeout_s`` the request is decided by ``on_error`` (``allow``:
granted; ``deny``: throttled, Retry-After 1 s), and Redis is not tried again for
``ERROR_BACKOFF_S`` so an outage adds no latency; the next attempt after that restores the shared
limits.

Redis Cluster (``cluster: true``): a script may only touch keys of one hash slot, and every decision
includes the account bucket, so all of a gateway's keys carry the key prefix as their hash tag
(``{pygw:}tb:...``) and live in one slot. The cluster then gives the limits failover to a replica
and room for other gateways (other prefixes) and applications; one gateway's decisions are served
by one primary at a time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeVar, cast

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from pygw.config.model import StateConfig
from pygw.context import RequestContext
from pygw.response import Response
from pygw.stages.throttle import (
    UNAVAILABLE,
    CountFor,
    Decision,
    _decide,
    by_key,
    on_first_use,
    route_refusals,
)

logger = logging.getLogger(__name__)

GRANTED: Final = 0
THROTTLED: Final = 1
QUOTA_EXCEEDED: Final = 2

LEASE_WINDOW_S: Final = 0.05
LEASE_TTL_S: Final = 0.05
QUOTA_LEASE_TTL_S: Final = 1.0
ERROR_BACKOFF_S: Final = 0.25
DENY_RETRY_AFTER_S: Final = 1.0
DEFAULT_TIMEOUT_S: Final = 0.05
TOKEN_EPSILON: Final = 1e-9
_MAX_BURST: Final = 2**32 - 1
_PERIODS: Final = {"DAY": 0, "WEEK": 1, "MONTH": 2}

# Calendar helpers shared by the decision script and the tests: `period(ptype, day)` gives the
# period index of a day number (days since 1970-01-01) and the day its next period starts.
CALENDAR_LUA: Final = """
local function floor(x) return math.floor(x) end
local function civil(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local m
  if mp < 10 then m = mp + 3 else m = mp - 9 end
  if m <= 2 then y = y + 1 end
  return y, m
end
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp
  if m > 2 then mp = m - 3 else mp = m + 9 end
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
local function period(ptype, day)
  if ptype == 0 then
    return day, day + 1
  elseif ptype == 1 then
    -- 1970-01-01 was a Thursday; +3 makes Monday the first day of a week.
    local w = floor((day + 3) / 7)
    return w, (w + 1) * 7 - 3
  end
  local y, m = civil(day)
  if m == 12 then return y * 12 + 11, days_from_civil(y + 1, 1, 1) end
  return y * 12 + m - 1, days_from_civil(y, m + 1, 1)
end
"""

# KEYS: the buckets, then the quota if any.
# ARGV: nb, then per bucket rate burst need want, then (if a quota) limit ptype need want
# give_back give_back_period.
# Returns: status, retry_after, quota period, quota units leased, seconds to the next period,
# then per bucket: tokens left, tokens leased; last, the first refusing bucket (1-based; 0: none).
_DECIDE_LUA: Final = (
    CALENDAR_LUA
    + """
if redis.replicate_commands then redis.replicate_commands() end
local eps = 1e-9
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = now_us / 1000000
local nb = tonumber(ARGV[1])
local tok, ts, extra = {}, {}, {}
local refused, wait, first = false, 0, 0
for i = 1, nb do
  local a = 1 + (i - 1) * 4
  local rate, burst, need = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local st = redis.call('HMGET', KEYS[i], 't', 'ts')
  local x, last = burst, now_us
  if st[1] then
    x, last = tonumber(st[1]), tonumber(st[2])
    if now_us > last then
      if rate > 0 then x = x + (now_us - last) / 1000000 * rate end
      last = now_us
    end
    if x > burst then x = burst end
  end
  tok[i], ts[i], extra[i] = x, last, 0
  if x < need - eps then
    refused = true
    if first == 0 then first = i end
    local w
    if rate <= 0 or burst == 0 then w = math.huge else w = (need - x) / rate end
    if w > wait then wait = w end
  end
end
local status, retry = 0, 0
local qpid, qextra, qreset = 0, 0, 0
if #KEYS > nb then
  local a = 2 + nb * 4
  local limit, ptype = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local qneed, qwant = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local back, back_pid = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local day = math.floor(now / 86400)
  local next_day
  qpid, next_day = period(ptype, day)
  qreset = next_day * 86400 - now
  local st = redis.call('HMGET', KEYS[nb + 1], 'p', 'n')
  local used = 0
  if st[1] and tonumber(st[1]) == qpid then used = tonumber(st[2]) end
  local dirty = false
  if back > 0 and back_pid == qpid and used > 0 then
    used = math.max(0, used - back)
    dirty = true
  end
  if not refused then
    if used + qneed > limit then
      status, retry = 2, qreset
    else
      qextra = math.max(0, math.min(qwant, limit - used - qneed))
      used = used + qneed + qextra
      dirty = dirty or qneed + qextra > 0
    end
  end
  if dirty then
    redis.call('HSET', KEYS[nb + 1], 'p', string.format('%d', qpid), 'n', string.format('%d', used))
    redis.call('PEXPIRE', KEYS[nb + 1], math.ceil(qreset * 1000) + 1000)
  end
end
if refused then
  status, retry = 1, wait
elseif status == 0 then
  for i = 1, nb do
    local a = 1 + (i - 1) * 4
    local rate, burst = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local need, want = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
    local e = math.max(0, math.min(want, math.floor(tok[i] - need + eps)))
    if need + e > 0 then
      extra[i] = e
      tok[i] = math.max(0, tok[i] - need - e)
      redis.call('HSET', KEYS[i], 't', string.format('%.17g', tok[i]),
        'ts', string.format('%d', ts[i]))
      if rate > 0 then
        redis.call('PEXPIRE', KEYS[i], math.ceil((burst - tok[i]) / rate * 1000) + 1)
      else
        redis.call('PERSIST', KEYS[i])
      end
    end
  end
end
local out = {status, string.format('%.17g', retry), string.format('%d', qpid), qextra,
  string.format('%.17g', qreset)}
for i = 1, nb do
  out[#out + 1] = string.format('%.17g', tok[i])
  out[#out + 1] = extra[i]
end
out[#out + 1] = first
return out
"""
)

# One pool per URL and event loop in this process: reloads build new RedisThrottle objects over the
# same connections. (A pool's connections belong to the loop that opened them.)
_Shared = TypeVar("_Shared", ConnectionPool, RedisCluster)
_POOLS: dict[str, tuple[asyncio.AbstractEventLoop, ConnectionPool]] = {}
_CLUSTERS: dict[str, tuple[asyncio.AbstractEventLoop, RedisCluster]] = {}


def _options(timeout_s: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        # A failed call is decided by on_error at once; retrying would only add latency.
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }


def _on_this_loop(
    made: dict[str, tuple[asyncio.AbstractEventLoop, _Shared]],
    url: str,
    make: Callable[[], _Shared],
) -> _Shared:
    """The process's object for `url`, made on first use on the running loop (and again when
    that loop has closed)."""
    loop = asyncio.get_running_loop()
    found = made.get(url)
    if found is not None and found[0] is loop and not loop.is_closed():
        return found[1]
    fresh = make()
    made[url] = (loop, fresh)
    return fresh


def connection_pool(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> ConnectionPool:
    """The process's pool for `url` (created on first use, on the running loop; the first caller's
    `timeout_s` applies to it)."""
    return _on_this_loop(_POOLS, url, lambda: ConnectionPool.from_url(url, **_options(timeout_s)))


def cluster_client(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> RedisCluster:
    """The process's Redis Cluster client for `url` (any node of the cluster; the client learns
    the others and follows MOVED answers), shared like `connection_pool`."""
    return _on_this_loop(_CLUSTERS, url, lambda: RedisCluster.from_url(url, **_options(timeout_s)))


async def close_pools() -> None:
    """Disconnects every pool and cluster client of this process (at shutdown, not on reload)."""
    pools = list(_POOLS.values())
    _POOLS.clear()
    clusters = list(_CLUSTERS.values())
    _CLUSTERS.clear()
    running = asyncio.get_running_loop()
    for loop, pool in pools:
        if loop is running:
            await pool.disconnect()
    for loop, cluster in clusters:
        if loop is running:
            await cluster.aclose()


@dataclass(slots=True)
class _Bucket:
    key: str
    rate: float
    burst: int
    lease: int
    spare: int = 0
    spare_until: float = 0.0
    pending: int = 0
    # The shared bucket's tokens as last seen, and when (local monotonic): the RateLimit-* headers
    # of requests decided locally are estimated from them.
    seen_tokens: float = 0.0
    seen_at: float = -math.inf

    def tokens_now(self, now: float) -> float:
        shared = self.seen_tokens
        if now > self.seen_at and self.rate > 0:
            shared = min(float(self.burst), shared + (now - self.seen_at) * self.rate)
        elif self.seen_at == -math.inf:
            shared = float(self.burst)
        return min(float(self.burst), shared + self.spare)


@dataclass(slots=True)
class _Quota:
    key: str
    limit: int
    ptype: int
    lease: int
    spare: int = 0
    spare_until: float = 0.0
    spare_period: int = 0
    pending: int = 0
    give_back: int = 0
    give_back_period: int = 0

    def expire(self, now: float) -> None:
        if self.spare and now >= self.spare_until:
            self.surrender()

    def surrender(self) -> None:
        """Unspent units become owed back to Redis (for their own period only)."""
        if self.give_back and self.give_back_period != self.spare_period:
            self.give_back = 0
        self.give_back += self.spare
        self.give_back_period = self.spare_period
        self.spare = 0


@dataclass(slots=True)
class Stats:
    """Counters for tests and metrics."""

    round_trips: int = 0
    local: int = 0
    errors: int = 0
    max_round_trip_s: float = 0.0
    last_error: str = ""
    by_status: list[int] = field(default_factory=lambda: [0, 0, 0])


class RedisThrottle:
    """Token buckets and quotas in Redis; `acquire` returns what `pygw._native.Throttle.acquire`
    does. Names given to `register_*` are the shared identity of a bucket or quota: every host
    using the same name and key prefix draws from the same one."""

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "pygw:",
        on_error: str = "allow",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        lease: bool = True,
        cluster: bool = False,
    ) -> None:
        if on_error not in ("allow", "deny"):
            raise ValueError(f"on_error must be allow or deny, not {on_error!r}")
        self._url = url
        self._cluster = cluster
        # In a cluster the prefix is the hash tag that keeps one decision's keys in one slot.
        self._prefix = f"{{{key_prefix}}}" if cluster else key_prefix
        self._deny = on_error == "deny"
        self._timeout_s = timeout_s
        self._leasing = lease
        self._buckets: list[_Bucket] = []
        self._quotas: list[_Quota] = []
        self._bucket_ids: dict[tuple[str, float, int], int] = {}
        self._quota_ids: dict[tuple[str, int, str], int] = {}
        self._client: Redis | RedisCluster | None = None
        self._script: Any = None
        self._down_until = -math.inf
        self.stats = Stats()

    def register_bucket(self, name: str, rate: float, burst: int) -> int:
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"invalid rate {rate!r}")
        if not 0 <= burst <= _MAX_BURST:
            raise ValueError(f"invalid burst {burst!r}")
        found = self._bucket_ids.get((name, rate, burst))
        if found is not None:
            return found
        lease = 1
        if self._leasing:
            lease = max(1, min(math.floor(rate * LEASE_WINDOW_S), burst // 4))
        self._buckets.append(_Bucket(f"{self._prefix}tb:{name}", rate, burst, lease))
        self._bucket_ids[(name, rate, burst)] = len(self._buckets) - 1
        return len(self._buckets) - 1

    def register_quota(self, name: str, limit: int, period: str) -> int:
        ptype = _PERIODS.get(period)
        if ptype is None:
            raise ValueError(f"invalid quota period {period!r}")
        if limit < 0:
            raise ValueError(f"invalid quota limit {limit!r}")
        found = self._quota_ids.get((name, limit, period))
        if found is not None:
            return found
        lease = max(1, min(limit // 1000, 100)) if self._leasing else 1
        self._quotas.append(_Quota(f"{self._prefix}q:{name}:{period}", limit, ptype, lease))
        self._quota_ids[(name, limit, period)] = len(self._quotas) - 1
        return len(self._quotas) - 1

    async def acquire(self, bucket_ids: Sequence[int], quota_id: int | None = None) -> Decision:
        """Decides one request: GRANTED only if every bucket has a token and the quota has room;
        then one token is taken from each and one unit from the quota, otherwise nothing is
        taken. A THROTTLED decision names the first refusing bucket by its position in
        `bucket_ids` (None when `on_error: deny` refused it). IndexError for an unknown id."""
        all_buckets = self._buckets
        buckets = [all_buckets[i] for i in dict.fromkeys(bucket_ids)]
        quota = self._quotas[quota_id] if quota_id is not None else None
        now = time.monotonic()
        local = True
        for b in buckets:
            if b.spare and now >= b.spare_until:
                b.spare = 0
            if not b.spare:
                local = False
        if quota is not None:
            quota.expire(now)
            if not quota.spare:
                local = False
        if local:
            for b in buckets:
                b.spare -= 1
            if quota is not None:
                quota.spare -= 1
            self.stats.local += 1
            return self._result(GRANTED, 0.0, buckets, now)
        if now < self._down_until:
            return self._fallback(buckets, now)
        return await self._remote(bucket_ids, buckets, quota, now)

    async def _remote(
        self,
        bucket_ids: Sequence[int],
        buckets: list[_Bucket],
        quota: _Quota | None,
        sent: float,
    ) -> Decision:
        keys: list[str] = []
        args: list[Any] = [len(buckets)]
        # Spare tokens this request spends, put back if it is refused.
        reserved: list[tuple[_Bucket, float]] = []
        wants: list[int] = []
        for b in buckets:
            need = 1
            if b.spare:
                b.spare -= 1
                reserved.append((b, b.spare_until))
                need = 0
            want = max(0, b.lease - 1 - b.spare - b.pending)
            b.pending += want
            wants.append(want)
            keys.append(b.key)
            args += [repr(b.rate), b.burst, need, want]
        q_reserved = False
        q_want = 0
        q_back = 0
        if quota is not None:
            q_need = 1
            if quota.spare:
                quota.spare -= 1
                q_reserved = True
                q_need = 0
            q_want = max(0, quota.lease - 1 - quota.spare - quota.pending)
            quota.pending += q_want
            q_back = quota.give_back
            quota.give_back = 0
            keys.append(quota.key)
            args += [quota.limit, quota.ptype, q_need, q_want, q_back, quota.give_back_period]
        try:
            reply = await self._call(keys, args)
        except (RedisError, OSError) as exc:  # OSError includes TimeoutError
            self._undo(buckets, wants, reserved, quota, q_want, q_reserved, q_back)
            self.stats.errors += 1
            self.stats.last_error = repr(exc)
            now = time.monotonic()
            if self._down_until < now:
                logger.warning("redis throttle unavailable (%s): on_error decides", exc)
            self._down_until = now + ERROR_BACKOFF_S
            return self._fallback(buckets, now)
        now = time.monotonic()
        self.stats.round_trips += 1
        self.stats.max_round_trip_s = max(self.stats.max_round_trip_s, now - sent)
        status = int(reply[0])
        retry_after_s = float(reply[1])
        for i, b in enumerate(buckets):
            b.pending -= wants[i]
            b.seen_tokens = float(reply[5 + 2 * i])
            b.seen_at = now
            extra = int(reply[6 + 2 * i])
            if extra:
                until = sent + LEASE_TTL_S
                # Older spare tokens keep their earlier deadline: no token outlives its lease.
                b.spare_until = min(b.spare_until, until) if b.spare else until
                b.spare += extra
        if status != GRANTED:
            for b, until in reserved:
                if b.spare_until == until or not b.spare:
                    b.spare_until = until
                    b.spare += 1
        if quota is not None:
            quota.pending -= q_want
            period = int(reply[2])
            q_extra = int(reply[3])
            if q_reserved and status != GRANTED:
                quota.spare += 1
            if q_extra:
                if quota.spare and quota.spare_period != period:
                    quota.spare = 0
                until = sent + min(QUOTA_LEASE_TTL_S, float(reply[4]))
                quota.spare_until = min(quota.spare_until, until) if quota.spare else until
                quota.spare_period = period
                quota.spare += q_extra
        self.stats.by_status[status] += 1
        refused_by = None
        first = int(reply[5 + 2 * len(buckets)])
        if first:
            # `buckets` has each id once, in the order first named.
            refusing = buckets[first - 1]
            all_buckets = self._buckets
            refused_by = next(i for i, bid in enumerate(bucket_ids) if all_buckets[bid] is refusing)
        return self._result(status, retry_after_s, buckets, now, refused_by)

    async def _call(self, keys: list[str], args: list[Any]) -> list[Any]:
        if self._client is None:
            if self._cluster:
                self._client = cluster_client(self._url, self._timeout_s)
            else:
                self._client = Redis(connection_pool=connection_pool(self._url, self._timeout_s))
            # redis-py types register_script for Redis only; RedisCluster has the same method.
            self._script = cast(Any, self._client).register_script(_DECIDE_LUA)
        reply = await asyncio.wait_for(
            self._script(keys=keys, args=args), timeout=self._timeout_s * 2
        )
        return list(reply)

    @staticmethod
    def _undo(
        buckets: list[_Bucket],
        wants: list[int],
        reserved: list[tuple[_Bucket, float]],
        quota: _Quota | None,
        q_want: int,
        q_reserved: bool,
        q_back: int,
    ) -> None:
        for b, want in zip(buckets, wants, strict=True):
            b.pending -= want
        for b, until in reserved:
            if b.spare_until == until or not b.spare:
                b.spare_until = until
                b.spare += 1
        if quota is not None:
            quota.pending -= q_want
            if q_reserved:
                quota.spare += 1
            quota.give_back += q_back

    def _fallback(self, buckets: list[_Bucket], now: float) -> Decision:
        if self._deny:
            return self._result(THROTTLED, DENY_RETRY_AFTER_S, buckets, now)
        return self._result(GRANTED, 0.0, buckets, now)

    @staticmethod
    def _result(
        status: int,
        retry_after_s: float,
        buckets: list[_Bucket],
        now: float,
        refused_by: int | None = None,
    ) -> Decision:
        # The tightest bucket: fewest whole tokens, then slowest to be full again.
        best: tuple[int, float, int] | None = None
        for b in buckets:
            tokens = b.tokens_now(now)
            whole = min(max(math.floor(tokens + TOKEN_EPSILON), 0), b.burst)
            if tokens >= b.burst:
                reset = 0.0
            elif b.rate <= 0:
                reset = math.inf
            else:
                reset = (b.burst - tokens) / b.rate
            if best is None or (whole, -reset) < (best[0], -best[1]):
                best = (whole, reset, b.burst)
        if best is None:
            return (status, retry_after_s, 0, 0, 0.0, refused_by)
        return (status, retry_after_s, best[2], best[0], best[1], refused_by)

    async def close(self) -> None:
        """Gives unspent quota units back (best effort) and drops spare tokens. The connection
        pool stays open for the next configuration; `close_pools` ends it."""
        backs: list[tuple[_Quota, int, int]] = []
        now = time.monotonic()
        for q in self._quotas:
            if q.spare:
                q.surrender()
            if q.give_back:
                backs.append((q, q.give_back, q.give_back_period))
                q.give_back = 0
        for b in self._buckets:
            b.spare = 0
        if backs and now >= self._down_until:
            try:
                for q, n, period in backs:
                    await self._call([q.key], [0, q.limit, q.ptype, 0, 0, n, period])
            except (RedisError, OSError) as exc:  # OSError includes TimeoutError
                logger.warning("redis throttle: quota units not given back (%s)", exc)
        self._client = None


class RedisThrottleStage:
    """The throttle stage over `RedisThrottle`: same headers, errors, usage-plan handling and
    refusal counts as `pygw.stages.throttle.KeyedThrottleStage` (or `ThrottleStage` when
    `key_limits` is None), plus refusals by `on_error: deny` counted as level UNAVAILABLE.
    `key_limits` maps an API key id to its plan's (bucket id, quota id) in this `RedisThrottle`."""

    __slots__ = ("_acquire", "_bucket_ids", "_by_key", "_refusals")

    def __init__(
        self,
        throttle: RedisThrottle,
        bucket_ids: list[int],
        key_limits: Mapping[str, tuple[int | None, int | None]] | None = None,
        levels: Sequence[str] = (),
        count: CountFor | None = None,
    ) -> None:
        self._acquire = throttle.acquire
        self._bucket_ids = bucket_ids
        plain, with_plan = route_refusals(bucket_ids, levels, count, key_limits)
        unavailable = on_first_use(count, UNAVAILABLE)
        plain = replace(plain, unavailable=unavailable)
        with_plan = replace(with_plan, unavailable=unavailable)
        self._refusals = plain
        self._by_key = by_key(bucket_ids, key_limits, plain, with_plan)

    async def __call__(self, ctx: RequestContext) -> Response | None:
        found = self._by_key.get(ctx.api_key_id or "") if self._by_key else None
        if found is None:
            if not self._bucket_ids:
                return None  # a key in no usage plan, on a route with no limit of its own
            _decide(ctx, await self._acquire(self._bucket_ids), self._refusals)
        else:
            _decide(ctx, await self._acquire(found[0], found[1]), found[2])
        return None


def redis_throttle_from_config(state: StateConfig) -> RedisThrottle:
    """The `RedisThrottle` for `state.backend: redis`."""
    if state.backend != "redis" or not state.url:
        raise ValueError("state.backend is not redis")
    return RedisThrottle(
        state.url,
        key_prefix=state.key_prefix,
        on_error=state.on_error,
        timeout_s=state.timeout_ms / 1000,
        cluster=state.cluster,
    )
