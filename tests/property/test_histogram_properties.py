"""The native Histogram against the Python histogram it replaced (bisect_left on the bounds:
Prometheus' `le` rule), for any bounds and any values, NaN and infinities included."""

from __future__ import annotations

import math
from bisect import bisect_left

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pygw._native import Histogram, monotonic

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
bounds_strategy = st.lists(finite, min_size=0, max_size=16, unique=True).map(
    lambda b: [*sorted(b), math.inf]
)
values_strategy = st.lists(st.floats(allow_nan=True, allow_infinity=True) | finite, max_size=64)


@settings(max_examples=500)
@given(bounds=bounds_strategy, values=values_strategy)
def test_buckets_and_sum_match_bisect_left(bounds: list[float], values: list[float]) -> None:
    histogram = Histogram(bounds, 0.0)
    counts = [0] * len(bounds)
    total = 0.0
    for value in values:
        histogram.observe(value)
        counts[bisect_left(bounds, value)] += 1
        total += value
    assert histogram.counts == counts
    assert histogram.sum == total or (math.isnan(histogram.sum) and math.isnan(total))


@pytest.mark.parametrize(
    "bounds", [[0.1, 1.0], [1.0, 0.5, math.inf], [0.5, 0.5, math.inf], [math.nan, math.inf], []]
)
def test_bounds_that_leave_values_without_a_bucket_are_refused(bounds: list[float]) -> None:
    with pytest.raises(ValueError, match="bound"):
        Histogram(bounds, 0.0)


def test_a_lap_records_the_time_since_its_start_and_returns_the_end() -> None:
    histogram = Histogram([0.25, 1.0, math.inf], 0.0)
    started = monotonic() - 0.5  # half a second ago
    ended = histogram.lap(started)
    assert histogram.counts == [0, 1, 0]
    assert 0.5 <= histogram.sum == ended - started < 1.0
    # The end is the next step's start: laps chain without a gap or an overlap.
    histogram.lap(ended)
    assert histogram.counts[0] == 1
