"""Throttling: every level that applies (account → stage → route) decided in one native call."""

from __future__ import annotations

import math

from aiohttp import web

from pygw._native import GRANTED, Throttle
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError

# A bucket that never refills (rate 0) has no meaningful retry time; cap what clients are told.
_MAX_RETRY_AFTER_S = 86_400


class ThrottleStage:
    __slots__ = ("_acquire", "_bucket_ids")

    def __init__(self, throttle: Throttle, bucket_ids: list[int]) -> None:
        self._acquire = throttle.acquire
        self._bucket_ids = bucket_ids

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse | None:
        status, retry_after_s, limit, remaining, reset_s = self._acquire(self._bucket_ids)
        headers = ctx.response_headers
        headers["RateLimit-Limit"] = str(limit)
        headers["RateLimit-Remaining"] = str(remaining)
        headers["RateLimit-Reset"] = str(_whole_seconds(reset_s))
        if status == GRANTED:
            return None
        raise GatewayError(
            ErrorType.THROTTLED, headers={"Retry-After": str(_whole_seconds(retry_after_s))}
        )


def _whole_seconds(seconds: float) -> int:
    if not math.isfinite(seconds):
        return _MAX_RETRY_AFTER_S
    return min(max(math.ceil(seconds), 0), _MAX_RETRY_AFTER_S)
