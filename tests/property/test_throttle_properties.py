"""The native Throttle decides exactly like the pure-Python reference model, whatever the sequence
of requests, clock readings (equal, backwards, huge jumps) and UTC period boundaries."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pygw import _native
from pygw.context import RequestContext
from pygw.errors import GatewayError
from pygw.stages.throttle import Refusals, _decide
from tests.property.reference_throttle import PERIODS, Decision, ReferenceThrottle

# Starting wall-clock times just before UTC day / ISO week / month / year / leap-day boundaries.
BOUNDARIES = [
    dt.datetime(2024, 2, 28, 23, 59, 50, tzinfo=dt.UTC),  # -> leap day
    dt.datetime(2024, 2, 29, 23, 59, 50, tzinfo=dt.UTC),  # leap day -> March
    dt.datetime(2024, 12, 29, 23, 59, 50, tzinfo=dt.UTC),  # Sun -> Mon, week straddles a year
    dt.datetime(2024, 12, 31, 23, 59, 50, tzinfo=dt.UTC),  # Dec -> Jan
    dt.datetime(2023, 2, 28, 23, 59, 50, tzinfo=dt.UTC),  # Feb -> March, no leap day
    dt.datetime(1970, 1, 4, 23, 59, 50, tzinfo=dt.UTC),  # first ISO week boundary after the epoch
    dt.datetime(1969, 12, 31, 23, 59, 50, tzinfo=dt.UTC),  # negative Unix times
]

rates = st.one_of(
    st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.5, 10.0, 1000.0]),
    st.floats(min_value=0.0, max_value=50.0, allow_nan=False, allow_infinity=False),
)
bucket_specs = st.lists(st.tuples(rates, st.integers(0, 5)), min_size=1, max_size=4)
quota_specs = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from(PERIODS)), min_size=0, max_size=2
)
# Monotonic-clock steps: repeats, small and large forward steps, and steps backwards.
now_steps = st.one_of(
    st.sampled_from([0.0, 0.0, 0.1, 0.25, 1.0, -0.5, -10.0, 1e6]),
    st.floats(min_value=-5.0, max_value=20.0, allow_nan=False, allow_infinity=False),
)
# Wall-clock steps: crossing the boundary in seconds, by days, by months, and backwards.
unix_steps = st.one_of(
    st.sampled_from([0.0, 1.0, 5.0, 10.0, -20.0, 86_400.0, 7 * 86_400.0, 31 * 86_400.0]),
    st.sampled_from([-20.0, -86_400.0, -7 * 86_400.0]),
    st.floats(min_value=-3_600.0, max_value=40 * 86_400.0, allow_nan=False),
)
requests = st.lists(
    st.tuples(
        st.lists(st.integers(0, 4), max_size=4),  # ids 4 (and above the bucket count) are unknown
        st.one_of(st.none(), st.integers(0, 2)),
        now_steps,
        unix_steps,
    ),
    min_size=1,
    max_size=40,
)


def on_the_clocks(
    reqs: list[tuple[list[int], int | None, float, float]], start_now: float, start: dt.datetime
) -> Iterator[tuple[list[int], int | None, float, float]]:
    """Each request with its monotonic and wall-clock readings, the clocks stepped as drawn."""
    now, unix_now = start_now, start.timestamp()
    for ids, quota_id, dnow, dunix in reqs:
        now += dnow
        unix_now += dunix
        yield ids, quota_id, now, unix_now


def assert_same(got: Decision, want: Decision) -> None:
    assert got[0] == want[0]
    assert got[2:4] == want[2:4]
    assert got[5] == want[5], (got, want)
    for g, w in ((got[1], want[1]), (got[4], want[4])):
        assert g == w or math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-9), (got, want)


@settings(max_examples=500, deadline=None)
@given(
    buckets=bucket_specs,
    quotas=quota_specs,
    start=st.sampled_from(BOUNDARIES),
    start_now=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    reqs=requests,
)
def test_matches_reference(
    buckets: list[tuple[float, int]],
    quotas: list[tuple[int, str]],
    start: dt.datetime,
    start_now: float,
    reqs: list[tuple[list[int], int | None, float, float]],
) -> None:
    native = _native.Throttle()
    model = ReferenceThrottle()
    for rate, burst in buckets:
        assert native.add_bucket(rate, burst) == model.add_bucket(rate, burst)
    for limit, period in quotas:
        assert native.add_quota(limit, period) == model.add_quota(limit, period)

    for ids, quota_id, now, unix_now in on_the_clocks(reqs, start_now, start):
        try:
            want = model.acquire(ids, quota_id, now, unix_now)
        except IndexError:
            with pytest.raises(IndexError):
                native.acquire(ids, quota_id, now, unix_now)
            continue
        assert_same(native.acquire(ids, quota_id, now, unix_now), want)


@settings(max_examples=500, deadline=None)
@given(
    rate=rates,
    burst=st.integers(0, 5),
    steps=st.lists(now_steps, min_size=1, max_size=30),
)
def test_granted_never_exceeds_burst_plus_refill(
    rate: float, burst: int, steps: list[float]
) -> None:
    """Over any run, grants <= burst + rate * (time the clock moved forward)."""
    native = _native.Throttle()
    b = native.add_bucket(rate, burst)
    now = 0.0
    latest: float | None = None  # the bucket starts counting at its first reading
    forward = 0.0
    granted = 0
    for step in steps:
        now += step
        if latest is None or now > latest:
            forward += 0.0 if latest is None else now - latest
            latest = now
        status, retry, limit, remaining, reset, refused_by = native.acquire([b], None, now, 0.0)
        assert limit == burst and 0 <= remaining <= burst
        assert refused_by == (0 if status == _native.THROTTLED else None)
        assert retry >= 0.0 and reset >= 0.0
        granted += status == _native.GRANTED
        assert granted <= burst + rate * forward + 1e-6


@settings(max_examples=500, deadline=None)
@given(bad=st.sampled_from([math.nan, math.inf, -math.inf]), which=st.booleans())
def test_non_finite_times_rejected(bad: float, which: bool) -> None:
    native = _native.Throttle()
    b = native.add_bucket(1.0, 1)
    with pytest.raises(ValueError):
        native.acquire([b], None, bad if which else 0.0, 0.0 if which else bad)
    # Nothing was taken.
    assert native.acquire([b], None, 0.0, 0.0)[0] == _native.GRANTED


def test_binding_errors_and_defaults() -> None:
    native = _native.Throttle()
    for bad_rate in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            native.add_bucket(bad_rate, 1)
    with pytest.raises(ValueError):
        native.add_bucket(1.0, -1)
    with pytest.raises(ValueError):
        native.add_quota(1, "HOUR")
    with pytest.raises(ValueError):
        native.add_quota(-1, "DAY")
    b = native.add_bucket(1.0, 2)
    q = native.add_quota(1, "DAY")
    with pytest.raises(IndexError):
        native.acquire([b, 9])
    with pytest.raises(IndexError):
        native.acquire([-1])
    with pytest.raises(IndexError):
        native.acquire([b], 5)
    # Real clocks when none are given.
    status, retry, limit, remaining, reset, refused_by = native.acquire([b], q)
    assert (status, retry, limit, remaining, refused_by) == (_native.GRANTED, 0.0, 2, 1, None)
    assert 0.9 <= reset <= 1.0
    status, retry, *_, refused_by = native.acquire([b], q)
    assert status == _native.QUOTA_EXCEEDED and 0.0 < retry <= 86_400.0
    assert refused_by is None
    assert (_native.GRANTED, _native.THROTTLED, _native.QUOTA_EXCEEDED) == (0, 1, 2)
    t0 = _native.monotonic()
    assert _native.monotonic() >= t0


def _python_headers(decision: Decision) -> dict[str, str]:
    """The rate-limit headers pygw/stages/throttle.py's `_decide` writes for a decision."""
    ctx = RequestContext(None, "r", "/", {}, {}, "127.0.0.1", 0.0)  # type: ignore[arg-type]
    # A refusal raises after the headers are written.
    with contextlib.suppress(GatewayError):
        _decide(ctx, decision, Refusals(buckets=(_Uncounted(),) * 8))
    return ctx.response_headers


class _Uncounted:
    def inc(self, amount: float = 1.0) -> None:
        return None


@settings(max_examples=300, deadline=None)
@given(
    buckets=bucket_specs,
    quotas=quota_specs,
    start=st.sampled_from(BOUNDARIES),
    start_now=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    reqs=requests,
)
def test_acquire_into_writes_the_headers_the_python_stage_wrote(
    buckets: list[tuple[float, int]],
    quotas: list[tuple[int, str]],
    start: dt.datetime,
    start_now: float,
    reqs: list[tuple[list[int], int | None, float, float]],
) -> None:
    """`acquire_into` decides as `acquire` and writes the RateLimit-* headers the Python stage
    wrote from its tuple (Limit, Remaining, Reset in whole seconds up to a day; none at all when
    no bucket was named), returning None exactly when the request was granted."""
    plain, into = _native.Throttle(), _native.Throttle()
    for rate, burst in buckets:
        plain.add_bucket(rate, burst)
        into.add_bucket(rate, burst)
    for limit, period in quotas:
        plain.add_quota(limit, period)
        into.add_quota(limit, period)
    for ids, quota_id, now, unix_now in on_the_clocks(reqs, start_now, start):
        try:
            decision = plain.acquire(ids, quota_id, now, unix_now)
        except IndexError:
            with pytest.raises(IndexError):
                into.acquire_into(ids, {}, quota_id, now, unix_now)
            continue
        headers: dict[str, str] = {}
        refused = into.acquire_into(ids, headers, quota_id, now, unix_now)
        assert headers == _python_headers(decision)
        if decision[0] == _native.GRANTED:
            assert refused is None
        else:
            assert refused is not None
            assert_same(refused, decision)
