"""Pure-Python model of ``pygw._native.Throttle`` for the property tests.

Float token buckets (same arithmetic, so decisions match bit for bit) with the all-or-nothing rule,
and quota counters over UTC calendar periods computed with ``datetime`` rather than day arithmetic.
A throttled decision names the first bucket, in the order the ids were given, that had no token.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

GRANTED = 0
THROTTLED = 1
QUOTA_EXCEEDED = 2

TOKEN_EPSILON = 1e-9
MAX_UNIX_ABS_S = 1.0e13
EPOCH = dt.date(1970, 1, 1)
PERIODS = ("DAY", "WEEK", "MONTH")

# (status, retry_after_s, limit, remaining, reset_s, refused_by)
Decision = tuple[int, float, int, int, float, int | None]


@dataclass
class Bucket:
    rate: float
    burst: int
    tokens: float
    last: float | None = None

    def refill(self, now: float) -> None:
        if self.last is None:
            self.last = now
        elif now > self.last:
            if self.rate > 0.0:
                self.tokens = min(self.tokens + (now - self.last) * self.rate, float(self.burst))
            self.last = now

    def has_token(self) -> bool:
        return self.tokens >= 1.0 - TOKEN_EPSILON

    def wait_s(self) -> float:
        if self.rate <= 0.0 or self.burst == 0:
            return math.inf
        return (1.0 - self.tokens) / self.rate

    def whole(self) -> int:
        return max(0, min(self.burst, math.floor(self.tokens + TOKEN_EPSILON)))

    def reset_s(self) -> float:
        if self.tokens >= self.burst:
            return 0.0
        if self.rate <= 0.0:
            return math.inf
        return (self.burst - self.tokens) / self.rate


def period_start(day: dt.date, period: str) -> dt.date:
    if period == "DAY":
        return day
    if period == "WEEK":
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)


def next_period_start(start: dt.date, period: str) -> dt.date:
    if period == "DAY":
        return start + dt.timedelta(days=1)
    if period == "WEEK":
        return start + dt.timedelta(days=7)
    if start.month == 12:
        return dt.date(start.year + 1, 1, 1)
    return dt.date(start.year, start.month + 1, 1)


@dataclass
class Quota:
    limit: int
    period: str
    current: dt.date | None = None
    used: int = 0

    def check(self, unix_now: float) -> tuple[bool, float]:
        day = EPOCH + dt.timedelta(days=math.floor(unix_now / 86400.0))
        start = period_start(day, self.period)
        if self.current is None or start > self.current:
            self.current = start
            self.used = 0
        next_start = next_period_start(self.current, self.period)
        return self.used < self.limit, float((next_start - EPOCH).days * 86400) - unix_now


class ReferenceThrottle:
    def __init__(self) -> None:
        self.buckets: list[Bucket] = []
        self.quotas: list[Quota] = []

    def add_bucket(self, rate: float, burst: int) -> int:
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(rate)
        if not 0 <= burst <= 2**32 - 1:
            raise ValueError(burst)
        self.buckets.append(Bucket(rate, burst, float(burst)))
        return len(self.buckets) - 1

    def add_quota(self, limit: int, period: str) -> int:
        if limit < 0 or period not in PERIODS:
            raise ValueError(period)
        self.quotas.append(Quota(limit, period))
        return len(self.quotas) - 1

    def acquire(
        self, bucket_ids: list[int], quota_id: int | None, now: float, unix_now: float
    ) -> Decision:
        if not (math.isfinite(now) and math.isfinite(unix_now)) or abs(unix_now) > MAX_UNIX_ABS_S:
            raise ValueError("time")
        for i in bucket_ids:
            if not 0 <= i < len(self.buckets):
                raise IndexError(i)
        if quota_id is not None and not 0 <= quota_id < len(self.quotas):
            raise IndexError(quota_id)
        named = [self.buckets[i] for i in dict.fromkeys(bucket_ids)]
        for b in named:
            b.refill(now)
        refusing = [b for b in named if not b.has_token()]
        refused_by = None
        if refusing:
            status, retry = THROTTLED, max(b.wait_s() for b in refusing)
            refused_by = next(
                at for at, i in enumerate(bucket_ids) if not self.buckets[i].has_token()
            )
        else:
            room, retry = True, 0.0
            if quota_id is not None:
                room, retry = self.quotas[quota_id].check(unix_now)
            if room:
                if quota_id is not None:
                    self.quotas[quota_id].used += 1
                for b in named:
                    b.tokens = max(b.tokens - 1.0, 0.0)
                status, retry = GRANTED, 0.0
            else:
                status = QUOTA_EXCEEDED
        if not named:
            return status, retry, 0, 0, 0.0, refused_by
        tight = min(named, key=lambda b: (b.whole(), -b.reset_s()))
        return status, retry, tight.burst, tight.whole(), tight.reset_s(), refused_by
