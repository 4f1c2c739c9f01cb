"""Throttling: every level that applies (account → stage → route → usage-plan key) and the key's
quota, decided in one native call.

Each refusal is counted by the level that refused (`pygw_throttled_total{level}`): the acquire
names the first refusing bucket by its position in the ids it was given, and the stage keeps, in
the same order, the level of each id and its counter (resolved when the route is compiled).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NoReturn, Protocol

from pygw._native import GRANTED, THROTTLED, KeyedThrottleCheck, Throttle, rate_limit_headers
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.pipeline import LeanView
from pygw.response import Response

# A bucket that never refills (rate 0) has no meaningful retry time; cap what clients are told.
_MAX_RETRY_AFTER_S = 86_400
# A quota's retry time is the wait for its next period, at most a month.
_MAX_QUOTA_RETRY_AFTER_S = 32 * 86_400

# The `level` label values of pygw_throttled_total. UNAVAILABLE: refused because the shared state
# (Redis) could not be reached and `on_error: deny` decided.
ACCOUNT: Final = "account"
STAGE: Final = "stage"
ROUTE: Final = "route"
USAGE_PLAN: Final = "usage_plan"
QUOTA: Final = "quota"
UNAVAILABLE: Final = "unavailable"

# (status, retry_after_s, limit, remaining, reset_s, refused_by): what every acquire returns.
Decision = tuple[int, float, int, int, float, int | None]


class RefusalCounter(Protocol):
    def inc(self, amount: float = 1.0) -> None: ...


# A level name → its counter for this route (pygw_throttled_total{api,stage,route,level}).
CountFor = Callable[[str], RefusalCounter]


class _Uncounted:
    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        return None


_UNCOUNTED: Final = _Uncounted()


class _OnFirstUse:
    """A counter created only when first counted: for a level that may never refuse here."""

    __slots__ = ("_child", "_count", "_level")

    def __init__(self, count: CountFor, level: str) -> None:
        self._count = count
        self._level = level
        self._child: RefusalCounter | None = None

    def inc(self, amount: float = 1.0) -> None:
        if self._child is None:
            self._child = self._count(self._level)
        self._child.inc(amount)


@dataclass(frozen=True, slots=True)
class Refusals:
    """The counters one acquire's refusal goes to: `buckets[i]` for the i-th bucket id given."""

    buckets: tuple[RefusalCounter, ...]
    quota: RefusalCounter = _UNCOUNTED
    unavailable: RefusalCounter = _UNCOUNTED


def route_refusals(
    bucket_ids: Sequence[int],
    levels: Sequence[str],
    count: CountFor | None,
    key_limits: Mapping[str, tuple[int | None, int | None]] | None = None,
) -> tuple[Refusals, Refusals]:
    """(refusals for the route's own ids, refusals for the ids plus a key's usage-plan bucket).
    `levels` names the level of each of `bucket_ids`; without `count` nothing is counted."""
    if count is None:
        plain = Refusals((_UNCOUNTED,) * len(bucket_ids))
        return plain, Refusals((*plain.buckets, _UNCOUNTED))
    if len(levels) != len(bucket_ids):
        raise ValueError(f"{len(bucket_ids)} bucket ids but levels {list(levels)!r}")
    limits = (key_limits or {}).values()
    own = tuple(count(level) for level in levels)
    quota = count(QUOTA) if any(q is not None for _, q in limits) else _UNCOUNTED
    plan = count(USAGE_PLAN) if any(b is not None for b, _ in limits) else _UNCOUNTED
    return Refusals(own, quota), Refusals((*own, plan), quota)


def on_first_use(count: CountFor | None, level: str) -> RefusalCounter:
    return _UNCOUNTED if count is None else _OnFirstUse(count, level)


def by_key(
    bucket_ids: list[int],
    key_limits: Mapping[str, tuple[int | None, int | None]] | None,
    plain: Refusals,
    with_plan: Refusals,
) -> dict[str, tuple[list[int], int | None, Refusals]]:
    """For each API key: the bucket ids to take from (the route's, plus the key's usage-plan
    bucket when it has one), its quota, and where a refusal is counted."""
    return {
        key_id: (
            (bucket_ids, quota, plain)
            if bucket is None
            else ([*bucket_ids, bucket], quota, with_plan)
        )
        for key_id, (bucket, quota) in (key_limits or {}).items()
    }


class ThrottleStage:
    __slots__ = ("_acquire_into", "_bucket_ids", "_refusals")

    def __init__(
        self,
        throttle: Throttle,
        bucket_ids: list[int],
        levels: Sequence[str] = (),
        count: CountFor | None = None,
    ) -> None:
        # Native: the decision's rate-limit headers are written straight into the response's
        # (what _decide does for the Redis backend), and a grant returns None.
        self._acquire_into = throttle.acquire_into
        self._bucket_ids = bucket_ids
        self._refusals = route_refusals(bucket_ids, levels, count)[0]

    async def __call__(self, ctx: RequestContext) -> Response | None:
        return self.check(ctx)

    def check(self, ctx: RequestContext) -> Response | None:
        refused = self._acquire_into(self._bucket_ids, ctx.response_headers)
        if refused is not None:
            _refuse(refused, self._refusals)
        return None

    def check_lean(self, lean: LeanView) -> None:
        refused = self._acquire_into(self._bucket_ids, lean.response_headers)
        if refused is not None:
            _refuse(refused, self._refusals)


class KeyedThrottleStage:
    """For routes that require an API key: the identified key's usage-plan bucket joins the
    route's buckets, and its quota is counted, in the same call (so a refusal at any level takes
    nothing from the others). A key without a plan is throttled by the route's buckets alone."""

    __slots__ = ("_acquire_into", "_bucket_ids", "_by_key", "_refusals", "native_check_lean")

    def __init__(
        self,
        throttle: Throttle,
        bucket_ids: list[int],
        key_limits: Mapping[str, tuple[int | None, int | None]],
        levels: Sequence[str] = (),
        count: CountFor | None = None,
    ) -> None:
        self._acquire_into = throttle.acquire_into
        self._bucket_ids = bucket_ids
        plain, with_plan = route_refusals(bucket_ids, levels, count, key_limits)
        self._refusals = plain
        self._by_key = by_key(bucket_ids, key_limits, plain, with_plan)
        # check_lean in one native step for a key in a plan (Pipeline.check_lean); the Redis
        # fleet's buckets are not in this process.
        self.native_check_lean = (
            KeyedThrottleCheck(throttle, self._by_key, _refuse, self.check_lean)
            if isinstance(throttle, Throttle)
            else None
        )

    async def __call__(self, ctx: RequestContext) -> Response | None:
        return self.check(ctx)

    def check(self, ctx: RequestContext) -> Response | None:
        self._acquire(ctx.api_key_id, ctx.response_headers)
        return None

    def check_lean(self, lean: LeanView) -> None:
        self._acquire(lean.api_key_id, lean.response_headers)

    def _acquire(self, api_key_id: str | None, response_headers: dict[str, str]) -> None:
        found = self._by_key.get(api_key_id or "")
        if found is None:
            if not self._bucket_ids:
                return  # a key in no usage plan, on a route with no limit of its own
            refused = self._acquire_into(self._bucket_ids, response_headers)
            if refused is not None:
                _refuse(refused, self._refusals)
        else:
            refused = self._acquire_into(found[0], response_headers, found[1])
            if refused is not None:
                _refuse(refused, found[2])


def build_throttle_stage(
    throttle: Throttle,
    bucket_ids: list[int],
    key_limits: Mapping[str, tuple[int | None, int | None]] | None = None,
    levels: Sequence[str] = (),
    count: CountFor | None = None,
) -> ThrottleStage | KeyedThrottleStage:
    """The route's throttle stage; `key_limits` (from `ApiKeys.for_route`) only for routes that
    require an API key. `levels` names the level of each bucket id (ACCOUNT, STAGE, ROUTE) and
    `count` gives the route's refusal counter for a level; refusals are not counted without it."""
    if key_limits is None:
        return ThrottleStage(throttle, bucket_ids, levels, count)
    return KeyedThrottleStage(throttle, bucket_ids, key_limits, levels, count)


def _decide(ctx: RequestContext, decision: Decision, refusals: Refusals) -> None:
    status, _, limit, remaining, reset_s, _ = decision
    rate_limit_headers(ctx.response_headers, limit, remaining, reset_s)
    if status != GRANTED:
        _refuse(decision, refusals)


def _refuse(decision: Decision, refusals: Refusals) -> NoReturn:
    """Counts a refusal by the level that refused and raises the gateway's 429 for it."""
    status, retry_after_s, _, _, _, refused_by = decision
    if status == THROTTLED:
        if refused_by is None:
            refusals.unavailable.inc()
        else:
            refusals.buckets[refused_by].inc()
        retry = _whole_seconds(retry_after_s)
        raise GatewayError(ErrorType.THROTTLED, headers={"Retry-After": str(retry)})
    refusals.quota.inc()
    retry = _whole_seconds(retry_after_s, _MAX_QUOTA_RETRY_AFTER_S)
    raise GatewayError(ErrorType.QUOTA_EXCEEDED, headers={"Retry-After": str(retry)})


def _whole_seconds(seconds: float, cap: int = _MAX_RETRY_AFTER_S) -> int:
    if 0.0 <= seconds <= cap:  # the usual case; false for NaN
        return math.ceil(seconds)
    if not math.isfinite(seconds):
        return cap
    return min(max(math.ceil(seconds), 0), cap)
