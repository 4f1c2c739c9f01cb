"""Prometheus metrics mirroring the managed gateway's (Count, 4XX/5XX, Latency, IntegrationLatency).

One registry lives as long as the process, so counters survive reloads. Label children are resolved
once per route when a config is compiled (`RouteMetrics`), keeping label lookups off the hot path.

The per-request families (requests, latencies, overhead, canary requests, stage timings) are
updated in place, counters as plain Python numbers and histograms in native lock-free children
(`pygw._native.Histogram`), and turned into Prometheus families only when scraped
(`_RequestFamilies`). prometheus_client's own Counter and Histogram take a lock and validate on
every update, which cost more than the rest of the metrics work on the hot path; the gateway
updates them from a single event loop thread, so no lock is needed. The exposition is the same
as prometheus_client's (names, labels, `_created` samples, cumulative buckets).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from pygw._native import Histogram, RequestTimings

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# Upper bounds, +Inf last: a value counts in the first bucket whose bound is >= the value, which is
# Prometheus' `le` (less than or equal) rule.
_BOUNDS = (*_LATENCY_BUCKETS, float("inf"))
_go_string: Callable[[float], str] = floatToGoString  # untyped in prometheus_client
# One pipeline stage costs microseconds; an authorizer or a body read may wait for milliseconds.
_STAGE_BUCKETS = (
    1e-6,
    2.5e-6,
    5e-6,
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    0.001,
    0.005,
    0.025,
    0.1,
    1.0,
)


class CounterChild:
    """One labelled counter: `inc()` is an addition, nothing more."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


# One labelled histogram: `observe(value)`, per-bucket counts (not cumulative) and the sum.
# Native: a request updates several of them (latency, integration latency, overhead, each
# timed stage), and done in Python those updates were a measurable share of a cache hit.
HistogramChild = Histogram


def new_histogram(bounds: tuple[float, ...] = _BOUNDS) -> HistogramChild:
    return Histogram(list(bounds), time.time())


class _Family:
    """Children by label values: the same labels give the same child, so reloads keep counts."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames

    def _check(self, values: tuple[str, ...]) -> None:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values!r}")


class CounterFamily(_Family):
    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        super().__init__(name, documentation, labelnames)
        self.children: dict[tuple[str, ...], CounterChild] = {}

    def labels(self, *values: str) -> CounterChild:
        key = tuple(str(v) for v in values)
        child = self.children.get(key)
        if child is None:
            self._check(key)
            child = self.children[key] = CounterChild()
        return child

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self.children.items()):
            family.add_metric(values, child.value, created=child.created)
        return family


class HistogramFamily(_Family):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...] = _LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.children: dict[tuple[str, ...], HistogramChild] = {}
        self._bounds = _BOUNDS if buckets == _LATENCY_BUCKETS else (*buckets, float("inf"))
        self._bucket_labels = tuple(_go_string(b) for b in self._bounds)

    def labels(self, *values: str) -> HistogramChild:
        key = tuple(str(v) for v in values)
        child = self.children.get(key)
        if child is None:
            self._check(key)
            child = self.children[key] = new_histogram(self._bounds)
        return child

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self.children.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip(self._bucket_labels, child.counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric(values, buckets, child.sum)
            family.samples.append(
                Sample(
                    f"{self.name}_created",
                    dict(zip(self.labelnames, values, strict=True)),
                    child.created,
                )
            )
        return family


class _RequestFamilies:
    """The prometheus_client collector for the hot-path families."""

    def __init__(self, families: Iterable[CounterFamily | HistogramFamily]) -> None:
        self._families = tuple(families)

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield family.collect()

    def describe(self) -> Iterator[Metric]:
        for family in self._families:
            if isinstance(family, CounterFamily):
                yield CounterMetricFamily(family.name, family.documentation)
            else:
                yield HistogramMetricFamily(family.name, family.documentation)


class _UpstreamCollector:
    """`pygw_upstream_health{target}` and `pygw_upstream_queue_length{target}` at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        health = GaugeMetricFamily(
            "pygw_upstream_health",
            "1 when an upstream target is taking traffic, 0 while it is ejected.",
            labels=["target"],
        )
        queue = GaugeMetricFamily(
            "pygw_upstream_queue_length",
            "Requests waiting for a pooled upstream connection, per integration's targets.",
            labels=["target"],
        )
        healthy: dict[str, bool] = {}
        waiting: dict[str, int] = {}
        for target, up, queued in self._metrics.upstreams():
            healthy[target] = healthy.get(target, True) and up
            waiting[target] = waiting.get(target, 0) + queued
        for target, up in healthy.items():
            health.add_metric([target], 1.0 if up else 0.0)
            queue.add_metric([target], float(waiting[target]))
        yield health
        yield queue


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        route_labels = ("api", "stage", "route", "style")
        self.requests = CounterFamily(
            "pygw_requests",
            "Requests answered, by route and status.",
            ("api", "stage", "route", "method", "status"),
        )
        self.latency = HistogramFamily(
            "pygw_latency_seconds",
            "Time from request received to response handed to the client.",
            route_labels,
        )
        self.integration_latency = HistogramFamily(
            "pygw_integration_latency_seconds",
            "Time spent waiting for the integration (upstream, function, mock).",
            route_labels,
        )
        self.overhead = HistogramFamily(
            "pygw_overhead_seconds",
            "The gateway's own time: latency minus integration latency.",
            ("style",),
        )
        self.canary = CounterFamily(
            "pygw_canary_requests",
            "Requests served with a stage's canary settings.",
            ("api", "stage"),
        )
        self.throttled = CounterFamily(
            "pygw_throttled",
            "Requests refused with 429, by the level that refused (account, stage, route, "
            "usage_plan, quota; unavailable: the Redis state could not be reached).",
            ("api", "stage", "route", "level"),
        )
        self.stage_seconds = HistogramFamily(
            "pygw_stage_seconds",
            "Time spent in each pipeline stage (step) of a route, before the integration.",
            ("api", "stage", "route", "step"),
            _STAGE_BUCKETS,
        )
        self.faults_injected = CounterFamily(
            "pygw_faults_injected",
            "Faults injected by a route's faults stage, by kind (delay, abort, reset).",
            ("api", "stage", "route", "kind"),
        )
        # Counted on every cacheable request: lock-free like the per-request families.
        self.cache_hits = CounterFamily(
            "pygw_cache_hits",
            "Responses served from the response cache.",
            ("api", "stage"),
        )
        self.cache_misses = CounterFamily(
            "pygw_cache_misses",
            "Cacheable requests the response cache could not answer.",
            ("api", "stage"),
        )
        self.registry.register(
            _RequestFamilies(
                (
                    self.requests,
                    self.latency,
                    self.integration_latency,
                    self.overhead,
                    self.canary,
                    self.throttled,
                    self.stage_seconds,
                    self.cache_hits,
                    self.cache_misses,
                    self.faults_injected,
                )
            )
        )
        self.spans_dropped = Counter(
            "pygw_trace_spans_dropped",
            "OpenTelemetry spans lost before export, by reason (queue_full, export_failed).",
            ["reason"],
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "pygw_config_reloads",
            "Configuration reload attempts, by result.",
            ["result"],
            registry=self.registry,
        )
        # Both results from the start: a series that appears at 1 shows no increase to an
        # alert rule's increase(), so the first refused reload would go unnoticed.
        for result in ("ok", "error"):
            self.config_reloads.labels(result)
        # WebSocket families: `messages` and `integration_latency` move per client message, so
        # they are lock-free families like the per-request ones. See README "Observability".
        self.websocket_messages = CounterFamily(
            "pygw_websocket_messages",
            "WebSocket client messages routed, by route and outcome "
            "(ok, error, timeout, throttled, no_route).",
            ("api", "stage", "route", "outcome"),
        )
        self.websocket_connections = Gauge(
            "pygw_websocket_connections",
            "WebSocket connections open.",
            registry=self.registry,
        )
        self.websocket_connects = CounterFamily(
            "pygw_websocket_connects",
            "WebSocket handshakes, by outcome (accepted, refused).",
            ("api", "stage", "outcome"),
        )
        self.websocket_messages_sent = CounterFamily(
            "pygw_websocket_messages_sent",
            "Messages sent to WebSocket clients: route responses, error frames, @connections "
            "and in-process sends.",
            ("api", "stage"),
        )
        self.websocket_integration_latency = HistogramFamily(
            "pygw_websocket_integration_latency_seconds",
            "Time spent in a WebSocket route's integration ($connect and $disconnect included).",
            ("api", "stage", "route"),
        )
        self.websocket_client_errors = CounterFamily(
            "pygw_websocket_client_errors",
            "WebSocket events refused before any integration ran, by reason "
            "(unauthorized, no_route, throttled, too_large).",
            ("api", "stage", "reason"),
        )
        self.websocket_integration_errors = CounterFamily(
            "pygw_websocket_integration_errors",
            "WebSocket integrations that failed, by route and reason (error, timeout).",
            ("api", "stage", "route", "reason"),
        )
        self.registry.register(
            _RequestFamilies(
                (
                    self.websocket_messages,
                    self.websocket_connects,
                    self.websocket_messages_sent,
                    self.websocket_integration_latency,
                    self.websocket_client_errors,
                    self.websocket_integration_errors,
                )
            )
        )
        # Upstream health is read from the live snapshot's pools when scraped, not pushed.
        self.upstreams: Callable[[], Iterable[tuple[str, bool, int]]] = lambda: ()
        self.registry.register(_UpstreamCollector(self))

    def route(self, api: str, stage: str, route: str, style: str) -> RouteMetrics:
        return RouteMetrics(self, api, stage, route, style)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RouteMetrics:
    """The label children of one route, resolved at compile time."""

    __slots__ = (
        "_labels",
        "_metrics",
        "by_status",
        "canary",
        "integration_latency",
        "latency",
        "timings",
    )

    def __init__(self, metrics: Metrics, api: str, stage: str, route: str, style: str) -> None:
        self._metrics = metrics
        self._labels = (api, stage, route)
        self.latency = metrics.latency.labels(api, stage, route, style)
        self.integration_latency = metrics.integration_latency.labels(api, stage, route, style)
        # Latency, integration latency and the style's overhead in one native call per request.
        self.timings = RequestTimings(
            self.latency, self.integration_latency, metrics.overhead.labels(style)
        )
        self.canary = metrics.canary.labels(api, stage)
        # The requests counter's child by (method, status): a request's conclusion may add to
        # one found here itself, without calling count.
        self.by_status: dict[tuple[str, int], CounterChild] = {}

    def count(self, method: str, status: int) -> None:
        child = self.by_status.get((method, status))
        if child is None:
            api, stage, route = self._labels
            child = self._metrics.requests.labels(api, stage, route, method, str(status))
            self.by_status[(method, status)] = child
        child.value += 1.0
