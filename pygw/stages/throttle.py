"""Throttling: every level that applies (account → stage → route → usage-plan key) and the key's
quota, decided in one native call."""

from __future__ import annotations

import math
from collections.abc import Mapping

from aiohttp import web

from pygw._native import GRANTED, THROTTLED, Throttle
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.stages.api_key import API_KEY_ID

# A bucket that never refills (rate 0) has no meaningful retry time; cap what clients are told.
_MAX_RETRY_AFTER_S = 86_400
# A quota's retry time is the wait for its next period, at most a month.
_MAX_QUOTA_RETRY_AFTER_S = 32 * 86_400


class ThrottleStage:
    __slots__ = ("_acquire", "_bucket_ids")

    def __init__(self, throttle: Throttle, bucket_ids: list[int]) -> None:
        self._acquire = throttle.acquire
        self._bucket_ids = bucket_ids

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse | None:
        _decide(ctx, self._acquire(self._bucket_ids))
        return None


class KeyedThrottleStage:
    """For routes that require an API key: the identified key's usage-plan bucket joins the
    route's buckets, and its quota is counted, in the same call (so a refusal at any level takes
    nothing from the others). A key without a plan is throttled by the route's buckets alone."""

    __slots__ = ("_acquire", "_bucket_ids", "_by_key")

    def __init__(
        self,
        throttle: Throttle,
        bucket_ids: list[int],
        key_limits: Mapping[str, tuple[int | None, int | None]],
    ) -> None:
        self._acquire = throttle.acquire
        self._bucket_ids = bucket_ids
        self._by_key: dict[str, tuple[list[int], int | None]] = {
            key_id: (bucket_ids if bucket is None else [*bucket_ids, bucket], quota)
            for key_id, (bucket, quota) in key_limits.items()
        }

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse | None:
        found = self._by_key.get(ctx.extras.get(API_KEY_ID, ""))
        if found is None:
            _decide(ctx, self._acquire(self._bucket_ids))
        else:
            _decide(ctx, self._acquire(found[0], found[1]))
        return None


def build_throttle_stage(
    throttle: Throttle,
    bucket_ids: list[int],
    key_limits: Mapping[str, tuple[int | None, int | None]] | None = None,
) -> ThrottleStage | KeyedThrottleStage:
    """The route's throttle stage; `key_limits` (from `ApiKeys.for_route`) only for routes that
    require an API key."""
    if key_limits is None:
        return ThrottleStage(throttle, bucket_ids)
    return KeyedThrottleStage(throttle, bucket_ids, key_limits)


def _decide(ctx: RequestContext, decision: tuple[int, float, int, int, float]) -> None:
    status, retry_after_s, limit, remaining, reset_s = decision
    # The usual reset (0 < s <= 1 s with a high-rate bucket) skips the general conversion.
    reset = "1" if 0.0 < reset_s <= 1.0 else str(_whole_seconds(reset_s))
    ctx.response_headers.update(
        {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": reset,
        }
    )
    if status == GRANTED:
        return
    if status == THROTTLED:
        retry = _whole_seconds(retry_after_s)
        raise GatewayError(ErrorType.THROTTLED, headers={"Retry-After": str(retry)})
    retry = _whole_seconds(retry_after_s, _MAX_QUOTA_RETRY_AFTER_S)
    raise GatewayError(ErrorType.QUOTA_EXCEEDED, headers={"Retry-After": str(retry)})


def _whole_seconds(seconds: float, cap: int = _MAX_RETRY_AFTER_S) -> int:
    if 0.0 <= seconds <= cap:  # the usual case; false for NaN
        return math.ceil(seconds)
    if not math.isfinite(seconds):
        return cap
    return min(max(math.ceil(seconds), 0), cap)
