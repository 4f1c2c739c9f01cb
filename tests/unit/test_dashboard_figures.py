"""The dashboard's arithmetic: percentiles read from buckets the way PromQL's histogram_quantile
reads them, and windows as differences between snapshots of the metric families."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest
from prometheus_client.metrics_core import Metric

from pygw.observe.dashboard import SPACING_S, DashboardFeed, ReloadHistory
from pygw.observe.figures import Snapshot, figures, quantile
from pygw.observe.metrics import Metrics

ROUTES = [
    {
        "host": None,
        "path_prefix": "",
        "route": "GET /a",
        "api": "web",
        "stage": "$default",
        "style": "http",
        "integration": "mock",
        "canary_percent": 0.0,
        "pipeline": ["throttle"],
    }
]


def test_quantile_interpolates_inside_the_bucket_like_promql() -> None:
    # 10 under 1 s, 90 more under 2.5 s: the 99th of 100 is 89/90 of the way into (1, 2.5].
    buckets = {1.0: 10.0, 2.5: 100.0, math.inf: 100.0}
    assert quantile(0.99, buckets) == pytest.approx(1 + 1.5 * 89 / 90)
    assert quantile(0.05, buckets) == pytest.approx(0.5)  # the first bucket starts at 0
    # A rank in +Inf answers the largest finite bound, as histogram_quantile does.
    assert quantile(0.99, {1.0: 10.0, math.inf: 100.0}) == 1.0
    assert quantile(0.5, {1.0: 0.0, math.inf: 0.0}) is None
    assert quantile(0.5, {1.0: 3.0}) is None  # no +Inf bucket: not a histogram


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_windows_are_differences_between_snapshots() -> None:
    metrics = Metrics()
    route = metrics.route("web", "$default", "GET /a", "http")
    clock = Clock()

    async def families() -> Iterable[Metric]:
        return metrics.registry.collect()

    async def routes() -> list[dict[str, object]]:
        return ROUTES

    feed = DashboardFeed(families, routes, ReloadHistory().recent, clock)
    for _ in range(8):
        route.count("GET", 200)
        route.timings.observe(0.002, 0.001)
    route.count("GET", 502)
    route.timings.observe(0.2, 0.19)
    clock.now += 10
    first = await feed.figures(30)
    row = first["routes"][0]
    # The first look: everything since the feed started, over the 10 s since.
    assert (row["requests"], row["errors_5xx"], row["rate"]) == (9, 1, pytest.approx(0.9))
    assert row["error_rate"] == pytest.approx(1 / 9)
    assert row["p50"] == pytest.approx(0.001 + 0.0015 * (4.5 - 0) / 8)
    assert 0.1 < row["p99"] <= 0.25
    assert first["styles"]["http"]["overhead_mean"] == pytest.approx((8 * 0.001 + 0.01) / 9)

    for _ in range(5):
        route.count("GET", 200)
        route.timings.observe(0.002, 0.001)
    clock.now += SPACING_S
    second = await feed.figures(30)
    row = second["routes"][0]
    assert (row["requests"], row["requests_total"], row["error_rate"]) == (5, 14, 0.0)
    assert second["window_seconds"] == pytest.approx(SPACING_S)
    # After a quiet spell longer than the window: nothing counted, not the whole history.
    clock.now += 400
    quiet = await feed.figures(30)
    assert quiet["routes"][0]["requests"] == 0 and quiet["totals"]["p99"] is None


def test_a_counter_that_went_back_was_reset() -> None:
    key = (
        "pygw_requests_total",
        (("api", "web"), ("route", "GET /a"), ("stage", "$default"), ("status", "200")),
    )
    before = Snapshot(0.0, {key: 50.0})
    after = Snapshot(10.0, {key: 7.0})  # a worker restarted and counted 7 since
    found = figures(after, before, ROUTES, [])
    assert found["routes"][0]["requests"] == 7


def test_reload_history_keeps_the_newest_first() -> None:
    history = ReloadHistory(keep=2)
    history.record(True, "1 api(s), 2 route(s)")
    history.record(False, "gateway.yaml: apis[0].routes: bad\n\n  fix it")
    history.record(True, "1 api(s), 3 route(s)")
    recent = history.recent()
    assert [event["ok"] for event in recent] == [True, False]
    assert recent[1]["detail"] == "gateway.yaml: apis[0].routes: bad\n  fix it"
