"""The shared-memory SharedThrottle decides like the pure-Python reference model (one process here;
tests/e2e/test_shared_workers.py covers several).

The shared buckets keep time in whole nanoseconds and refill intervals rounded to whole nanoseconds,
where the reference uses floats. On a grid of times (whole milliseconds) and rates (whose intervals
are whole nanoseconds) both are exact up to float noise, so the decisions must agree every time. For
arbitrary floats they may differ only where a bucket is within rounding of a whole token, and the
comparison stops at the first such step, because the two states have parted ways.

Time only goes forward here: the shared clock is host-wide, and an earlier reading is deliberately
decided at the latest time seen (a Rust unit test covers that), unlike the per-bucket reference.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import math
import os
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pygw import _native
from tests.property.reference_throttle import PERIODS, Bucket, Decision, ReferenceThrottle

BOUNDARIES = [
    dt.datetime(2024, 2, 28, 23, 59, 50, tzinfo=dt.UTC),
    dt.datetime(2024, 2, 29, 23, 59, 50, tzinfo=dt.UTC),
    dt.datetime(2024, 12, 29, 23, 59, 50, tzinfo=dt.UTC),
    dt.datetime(2024, 12, 31, 23, 59, 50, tzinfo=dt.UTC),
    dt.datetime(1970, 1, 4, 23, 59, 50, tzinfo=dt.UTC),
    dt.datetime(1969, 12, 31, 23, 59, 50, tzinfo=dt.UTC),
]
# 1e9 / rate is a whole number of nanoseconds for each of these.
GRID_RATES = [0.0, 0.1, 0.5, 1.0, 2.0, 2.5, 4.0, 5.0, 8.0, 10.0, 20.0, 25.0, 50.0, 100.0]
# Two tokens counts within this of a whole token may round either way in the two models.
BORDERLINE = 1e-5

quota_specs = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from(PERIODS)), min_size=0, max_size=2
)
unix_steps = st.one_of(
    st.sampled_from([0.0, 1.0, 5.0, 10.0, -20.0, 86_400.0, 7 * 86_400.0, 31 * 86_400.0]),
    st.floats(min_value=-3_600.0, max_value=40 * 86_400.0, allow_nan=False),
)
ids = st.lists(st.integers(0, 4), max_size=4)  # 4 (and above the bucket count) is unknown
quota_ids = st.one_of(st.none(), st.integers(0, 2))

_dir = tempfile.TemporaryDirectory(prefix="pygw-shared-prop-")
_names = itertools.count()


def _open(
    buckets: list[tuple[float, int]], quotas: list[tuple[int, str]]
) -> Iterator[tuple[_native.SharedThrottle, ReferenceThrottle]]:
    path = os.path.join(_dir.name, f"t{next(_names)}")
    shared = _native.SharedThrottle(path, buckets, quotas)
    ref = ReferenceThrottle()
    for rate, burst in buckets:
        ref.add_bucket(rate, burst)
    for limit, period in quotas:
        ref.add_quota(limit, period)
    try:
        yield shared, ref
    finally:
        os.unlink(path)


def _close(a: float, b: float, abs_tol: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=1e-6, abs_tol=abs_tol)


def _call(
    shared: _native.SharedThrottle,
    ref: ReferenceThrottle,
    bucket_ids: list[int],
    quota_id: int | None,
    now: float,
    unix_now: float,
) -> tuple[Decision | type[Exception], Decision | type[Exception]]:
    results: list[Decision | type[Exception]] = []
    for call in (shared.acquire, ref.acquire):
        try:
            results.append(call(bucket_ids, quota_id, now, unix_now))
        except (IndexError, ValueError) as e:
            results.append(type(e))
    return results[0], results[1]


def _agrees(got: Decision, want: Decision, ref: ReferenceThrottle, named: list[int]) -> bool:
    """Same status, retry time and refusing level, and the reported bucket is one the reference
    ranks tightest (ties in whole tokens and reset time may fall either way within float noise)."""
    if got[0] != want[0] or not _close(got[1], want[1], 1e-4) or got[5] != want[5]:
        return False
    if not named:
        return got[2:5] == (0, 0, 0.0)
    buckets = [ref.buckets[i] for i in dict.fromkeys(named)]
    tightest = [b for b in buckets if b.whole() == want[3] and _close(b.reset_s(), want[4], 1e-4)]
    return any(
        (got[2], got[3]) == (b.burst, b.whole()) and _close(got[4], b.reset_s(), 1e-4)
        for b in tightest
    )


def _borderline(ref: ReferenceThrottle, named: list[int], now: float) -> bool:
    for i in named:
        if 0 <= i < len(ref.buckets):
            probe: Bucket = copy.copy(ref.buckets[i])
            probe.refill(now)
            if abs(probe.tokens - round(probe.tokens)) < BORDERLINE:
                return True
    return False


grid_steps_ms = st.one_of(st.sampled_from([0, 0, 1, 100, 250, 1000, 60_000]), st.integers(0, 5_000))


@settings(max_examples=500, deadline=None)
@given(
    buckets=st.lists(
        st.tuples(st.sampled_from(GRID_RATES), st.integers(0, 5)), min_size=1, max_size=4
    ),
    quotas=quota_specs,
    start=st.sampled_from(BOUNDARIES),
    start_ms=st.integers(-100_000, 100_000),
    reqs=st.lists(st.tuples(ids, quota_ids, grid_steps_ms, unix_steps), min_size=1, max_size=40),
)
def test_matches_reference_on_a_grid(
    buckets: list[tuple[float, int]],
    quotas: list[tuple[int, str]],
    start: dt.datetime,
    start_ms: int,
    reqs: list[tuple[list[int], int | None, int, float]],
) -> None:
    for shared, ref in _open(buckets, quotas):
        now_ms, unix_now = start_ms, start.timestamp()
        for bucket_ids, quota_id, step_ms, unix_step in reqs:
            now_ms += step_ms
            unix_now += unix_step
            got, want = _call(shared, ref, bucket_ids, quota_id, now_ms / 1000, unix_now)
            if isinstance(got, type) or isinstance(want, type):
                assert got == want
                continue
            assert _agrees(got, want, ref, bucket_ids), (got, want)


@settings(max_examples=500, deadline=None)
@given(
    buckets=st.lists(
        st.tuples(
            st.one_of(st.just(0.0), st.floats(min_value=0.1, max_value=50.0, allow_nan=False)),
            st.integers(0, 5),
        ),
        min_size=1,
        max_size=4,
    ),
    quotas=quota_specs,
    start=st.sampled_from(BOUNDARIES),
    start_now=st.floats(min_value=-100.0, max_value=100.0, allow_nan=False),
    reqs=st.lists(
        st.tuples(
            ids,
            quota_ids,
            st.one_of(
                st.sampled_from([0.0, 0.1, 0.25, 1.0]),
                st.floats(min_value=0.0, max_value=20.0, allow_nan=False),
            ),
            unix_steps,
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_matches_reference_within_rounding(
    buckets: list[tuple[float, int]],
    quotas: list[tuple[int, str]],
    start: dt.datetime,
    start_now: float,
    reqs: list[tuple[list[int], int | None, float, float]],
) -> None:
    for shared, ref in _open(buckets, quotas):
        now, unix_now = start_now, start.timestamp()
        for bucket_ids, quota_id, step, unix_step in reqs:
            now += step
            unix_now += unix_step
            borderline = _borderline(ref, bucket_ids, now)
            got, want = _call(shared, ref, bucket_ids, quota_id, now, unix_now)
            if isinstance(got, type) or isinstance(want, type):
                assert got == want
                continue
            if not _agrees(got, want, ref, bucket_ids):
                assert borderline, (got, want)
                return


def test_same_table_same_layout_other_table_refused() -> None:
    for shared, _ in _open([(1.0, 2), (0.0, 3)], [(5, "DAY")]):
        again = _native.SharedThrottle(shared.path, [(1.0, 2), (0.0, 3)], [(5, "DAY")])
        assert again.layout == shared.layout
        assert (again.bucket_count, again.quota_count) == (2, 1)
        assert shared.acquire([1], 0)[3] == 2
        assert again.acquire([1], 0)[3] == 1
        with pytest.raises(ValueError, match="another bucket/quota table"):
            _native.SharedThrottle(shared.path, [(1.0, 2), (0.0, 4)], [(5, "DAY")])
        with pytest.raises(ValueError):
            _native.SharedThrottle(shared.path, [(1.0, 2)], [(5, "WEEKLY")])
        with pytest.raises(ValueError):
            _native.SharedThrottle(shared.path, [(1.0, -1)], [])
        with pytest.raises(IndexError):
            shared.acquire([-1])
        with pytest.raises(FileNotFoundError):
            _native.SharedThrottle(os.path.join(_dir.name, "no", "such"), [], [])


def test_default_clock_is_the_host_monotonic_clock() -> None:
    import time

    before = time.monotonic()
    reading = _native.host_monotonic()
    assert before <= reading <= time.monotonic()


def test_acquire_into_writes_the_rate_limit_headers_and_says_none_on_a_grant() -> None:
    for shared, _ in _open([(0.0, 2), (0.5, 10)], [(1, "DAY")]):
        headers: dict[str, str] = {}
        assert shared.acquire_into([0], headers, None, 0.0, 1_700_000_000.0) is None
        assert headers == {
            "RateLimit-Limit": "2",
            "RateLimit-Remaining": "1",
            "RateLimit-Reset": "86400",
        }
        headers = {}
        assert shared.acquire_into([1], headers, None, 0.0, 1_700_000_000.0) is None
        assert headers["RateLimit-Reset"] == "2"  # one token short of 10 at 0.5/s
        headers = {}
        assert shared.acquire_into([], headers, 0, 0.0, 1_700_000_000.0) is None
        assert headers == {}  # a quota alone announces no rate limit
        refused = shared.acquire_into([], headers, 0, 0.0, 1_700_000_000.0)
        assert refused is not None and refused[0] == _native.QUOTA_EXCEEDED
