"""Fault plans, the faults stage and mock latency schedules, driven by a seeded RNG and a clock the
test moves by hand."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from pygw.config.load import ConfigError, parse_config
from pygw.config.model import FaultsConfig, ScheduleStep
from pygw.context import RequestContext
from pygw.errors import GatewayError
from pygw.faults import Timeline, build_plan
from pygw.integrations.mock import Latency, MockIntegration
from pygw.request import Request
from pygw.stages.faults import FaultCounters, FaultStage


class Count:
    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ctx(headers: dict[str, str] | None = None) -> RequestContext:
    request = Request.build("GET", "/items", headers=headers or {})
    return RequestContext(request, "rid", "/items", {}, {}, "127.0.0.1", 0.0)


def counters() -> tuple[FaultCounters, Count, Count, Count]:
    delay, abort, reset = Count(), Count(), Count()
    return FaultCounters(delay, abort, reset), delay, abort, reset


def stage_for(
    spec: dict[str, Any], clock: Clock, seed: int = 7
) -> tuple[FaultStage, Count, Count, Count]:
    rng = random.Random(seed)
    plan = build_plan(FaultsConfig.model_validate(spec), rng, clock())
    found, delay, abort, reset = counters()
    return FaultStage(plan, found, rng=rng, clock=clock), delay, abort, reset


def six_sigma(n: int, p: float) -> tuple[float, float]:
    """Bounds a binomial count leaves with probability below 1e-8."""
    sigma = math.sqrt(n * p * (1 - p))
    return n * p - 6 * sigma, n * p + 6 * sigma


def test_timeline_moves_at_the_stated_times() -> None:
    line = Timeline.of(
        10.0, [ScheduleStep(after_s=30, percent=50), ScheduleStep(after_s=60, percent=0)]
    )
    assert [line.percent_at(t) for t in (0, 29.999, 30, 59.9, 60, 1e9)] == [10, 10, 50, 50, 0, 0]
    assert Timeline(25.0).percent_at(1e6) == 25.0


async def test_abort_percentage_within_binomial_bounds() -> None:
    clock = Clock()
    stage, _, abort, _ = stage_for({"abort": {"status": 503, "percent": 30}}, clock)
    n = 20_000
    answered = 0
    for _ in range(n):
        response = await stage(ctx())
        if response is not None:
            assert response.status == 503
            answered += 1
    low, high = six_sigma(n, 0.3)
    assert low <= answered <= high
    assert abort.value == answered


async def test_abort_schedule_moves_with_the_clock() -> None:
    clock = Clock()
    spec = {
        "abort": {
            "status": 500,
            "percent": 0,
            "schedule": [{"after_s": 30, "percent": 100}, {"after_s": 60, "percent": 0}],
        }
    }
    stage, _, abort, _ = stage_for(spec, clock)

    async def aborted(k: int) -> int:
        return sum([await stage(ctx()) is not None for _ in range(k)])

    assert await aborted(50) == 0
    clock.now += 29.99
    assert await aborted(50) == 0
    clock.now += 0.01  # exactly 30 s after the plan started
    assert await aborted(50) == 50
    clock.now += 29.99
    assert await aborted(50) == 50
    clock.now += 0.01
    assert await aborted(50) == 0
    assert abort.value == 100


async def test_delay_schedule_ramps_the_share_delayed() -> None:
    clock = Clock()
    ramp = [{"after_s": 10, "percent": 50}]
    spec = {"delay": {"fixed_ms": 0.001, "percent": 0, "schedule": ramp}}
    stage, delay, _, _ = stage_for(spec, clock)
    for _ in range(100):
        assert await stage(ctx()) is None
    assert delay.value == 0
    clock.now += 10
    n = 4000
    for _ in range(n):
        await stage(ctx())
    low, high = six_sigma(n, 0.5)
    assert low <= delay.value <= high


async def test_headers_are_ignored_unless_the_plan_allows_them() -> None:
    clock = Clock()
    asked = {"x-pygw-fault-abort": "503", "x-pygw-fault-delay-ms": "1"}
    closed, delay, abort, _ = stage_for({"delay": {"fixed_ms": 0, "percent": 0}}, clock)
    assert await closed(ctx(asked)) is None
    assert delay.value == abort.value == 0

    opened, delay, abort, _ = stage_for({"headers": True}, clock)
    one = ctx(asked)
    response = await opened(one)
    assert response is not None and response.status == 503
    assert response.headers["x-pygw-fault"] == "abort"
    assert delay.value == abort.value == 1
    # Envoy's header names work too, and a percentage of 0 lets the request through.
    envoy = await opened(ctx({"x-envoy-fault-abort-request": "418"}))
    assert envoy is not None and envoy.status == 418
    spared = {"x-envoy-fault-abort-request": "418", "x-envoy-fault-abort-request-percentage": "0"}
    assert await opened(ctx(spared)) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"x-pygw-fault-abort": "teapot"},
        {"x-pygw-fault-abort": "99"},
        {"x-envoy-fault-abort-request": "reset"},
        {"x-pygw-fault-delay-ms": "-5"},
        {"x-pygw-fault-delay-ms": "120000"},  # above max_header_delay_ms
        {"x-pygw-fault-abort": "503", "x-pygw-fault-abort-percent": "150"},
    ],
)
async def test_malformed_fault_headers_are_a_400(headers: dict[str, str]) -> None:
    stage, _, _, _ = stage_for({"headers": True}, Clock())
    with pytest.raises(GatewayError) as refused:
        await stage(ctx(headers))
    assert refused.value.error.value == "BAD_REQUEST"
    assert next(iter(headers)) in (refused.value.detail or "")


async def test_no_plan_lets_everything_through() -> None:
    found, delay, abort, reset = counters()
    stage = FaultStage(None, found)
    assert await stage(ctx({"x-pygw-fault-abort": "503"})) is None
    assert delay.value == abort.value == reset.value == 0


async def test_mock_latency_schedule_with_an_injected_clock() -> None:
    clock = Clock()
    mock = MockIntegration(
        status=200,
        headers={},
        body=b"ok",
        latency=Latency(fixed_ms=0.001),
        latency_timeline=Timeline.of(100.0, [ScheduleStep(after_s=5, percent=0)]),
        clock=clock,
        rng=random.Random(3),
    )
    early = ctx()
    await mock(early)
    assert early.integration_latency_s > 0
    clock.now += 5
    late = ctx()
    await mock(late)
    assert late.integration_latency_s == 0.0


CONFIG = """
apis:
  - name: shop
    type: {style}
    routes:
      "GET /items":
        integration: {{type: mock}}
        faults: {faults}
"""


@pytest.mark.parametrize(
    ("faults", "where", "said"),
    [
        ("{abort: {percent: 5}}", "faults.abort", "exactly one of status and reset"),
        ("{delay: {fixed_ms: 5, p50_ms: 3, p99_ms: 9}}", "faults.delay", "both fixed_ms"),
        ("{delay: {percent: 5}}", "faults.delay", "needs fixed_ms"),
        ("{abort: {status: 503, percent: 101}}", "faults.abort.percent", "100"),
        (
            "{abort: {status: 503, schedule: [{after_s: 9, percent: 1}, "
            "{after_s: 3, percent: 2}]}}",
            "faults.abort",
            "not in order",
        ),
        ("{abort: {status: 503, pct: 5}}", "faults.abort.pct", "pct"),
    ],
)
def test_bad_faults_config_names_the_field(faults: str, where: str, said: str) -> None:
    with pytest.raises(ConfigError) as failed:
        parse_config(CONFIG.format(style="http", faults=faults), "gw.yaml")
    text = str(failed.value)
    assert "gw.yaml" in text and where in text and said in text


def test_websocket_apis_take_no_faults() -> None:
    with pytest.raises(ConfigError) as failed:
        parse_config(
            CONFIG.format(style="websocket", faults="{abort: {status: 503}}").replace(
                "GET /items", "$default"
            ),
            "gw.yaml",
        )
    assert "faults" in str(failed.value)


def test_mock_latency_schedule_in_config() -> None:
    text = """
apis:
  - name: shop
    routes:
      "GET /items":
        integration:
          type: mock
          latency_ms: {fixed: 50, schedule: [{after_s: 30, percent: 50}, {after_s: 60, percent: 0}]}
"""
    config = parse_config(text, "gw.yaml")
    latency = config.apis[0].routes["GET /items"].integration.latency_ms  # type: ignore[union-attr]
    assert latency is not None and [s.percent for s in latency.schedule] == [50, 0]


RUNTIME_CONFIG = """
throttle: null
apis:
  - name: shop
    stages: [{name: v1}]
    routes:
      "GET /ramp":
        integration: {type: mock, body: ramp}
        faults:
          abort: {status: 503, percent: 0, schedule: [{after_s: 30, percent: 100}]}
      "GET /lean":
        integration: {type: mock, body: lean}
"""


def compiled(tmp_path: Any, clock: Clock) -> Any:
    from pygw.config.load import load_config
    from pygw.observe.metrics import Metrics
    from pygw.runtime import compile_runtime

    path = tmp_path / "gw.yaml"
    path.write_text(RUNTIME_CONFIG)
    return compile_runtime(load_config(path), Metrics(), clock=clock)


def route_of(runtime: Any, key: str) -> Any:
    return next(r for r in runtime.routes if r.key == key)


async def test_compiled_schedule_counts_from_load_with_the_runtime_clock(tmp_path: Any) -> None:
    clock = Clock()
    runtime = compiled(tmp_path, clock)
    ramp = route_of(runtime, "GET /ramp")
    assert (await ramp.primary.pipeline.run(ctx())).status == 200
    clock.now += 30
    assert (await ramp.primary.pipeline.run(ctx())).status == 503
    # A route without faults has no faults stage at all.
    lean = route_of(runtime, "GET /lean")
    assert lean.faults is None
    assert not any(isinstance(s, FaultStage) for s in lean.primary.pipeline.stages)


async def test_set_faults_adds_a_stage_then_lets_everything_through(tmp_path: Any) -> None:
    from pygw.fault_control import FaultControl, parse_faults

    clock = Clock()
    runtime = compiled(tmp_path, clock)
    control = FaultControl()
    before = route_of(runtime, "GET /lean").primary
    spec = parse_faults(
        b'{"abort": {"status": 502, "percent": 0, "schedule": [{"after_s": 5, "percent": 100}]}}'
    )
    assert control.put(runtime, ("shop", "v1", "GET /lean"), spec)
    lean = route_of(runtime, "GET /lean")
    assert lean.primary is not before  # swapped whole, not changed in place
    assert (await lean.primary.pipeline.run(ctx())).status == 200
    clock.now += 5  # the schedule counts from the PUT
    assert (await lean.primary.pipeline.run(ctx())).status == 502
    [row] = [r for r in control.listing(runtime) if r["route"] == "GET /lean"]
    assert row["source"] == "admin" and row["now"] == {"abort_percent": 100.0}
    assert control.delete(runtime, ("shop", "v1", "GET /lean"))
    assert (await lean.primary.pipeline.run(ctx())).status == 200
    assert not control.put(runtime, ("shop", "v1", "GET /none"), spec)
    assert not control.delete(runtime, ("shop", "v2", "GET /lean"))
