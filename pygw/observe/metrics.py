"""Prometheus metrics mirroring the managed gateway's (Count, 4XX/5XX, Latency, IntegrationLatency).

One registry lives as long as the process, so counters survive reloads. Label children are resolved
once per route when a config is compiled (`RouteMetrics`), keeping `labels()` off the hot path.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

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


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "pygw_requests",
            "Requests answered, by route and status.",
            ["api", "stage", "route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pygw_latency_seconds",
            "Time from request received to response handed to the client.",
            ["api", "stage", "route", "style"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.integration_latency = Histogram(
            "pygw_integration_latency_seconds",
            "Time spent waiting for the integration (upstream, function, mock).",
            ["api", "stage", "route", "style"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.overhead = Histogram(
            "pygw_overhead_seconds",
            "The gateway's own time: latency minus integration latency.",
            ["style"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.canary = Counter(
            "pygw_canary_requests",
            "Requests served with a stage's canary settings.",
            ["api", "stage"],
            registry=self.registry,
        )
        self.upstream_health = Gauge(
            "pygw_upstream_health",
            "1 when an upstream target is taking traffic, 0 while it is ejected.",
            ["target"],
            registry=self.registry,
        )
        self.upstream_queue = Gauge(
            "pygw_upstream_queue_length",
            "Requests waiting for a pooled upstream connection.",
            ["api", "route"],
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "pygw_config_reloads",
            "Configuration reload attempts, by result.",
            ["result"],
            registry=self.registry,
        )

    def route(self, api: str, stage: str, route: str, style: str) -> RouteMetrics:
        return RouteMetrics(self, api, stage, route, style)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RouteMetrics:
    """The label children of one route, resolved at compile time."""

    __slots__ = ("_by_status", "_labels", "_metrics", "canary", "integration_latency", "latency")

    def __init__(self, metrics: Metrics, api: str, stage: str, route: str, style: str) -> None:
        self._metrics = metrics
        self._labels = (api, stage, route)
        self.latency = metrics.latency.labels(api, stage, route, style)
        self.integration_latency = metrics.integration_latency.labels(api, stage, route, style)
        self.canary = metrics.canary.labels(api, stage)
        self._by_status: dict[tuple[str, int], Counter] = {}

    def count(self, method: str, status: int) -> None:
        child = self._by_status.get((method, status))
        if child is None:
            api, stage, route = self._labels
            child = self._metrics.requests.labels(api, stage, route, method, str(status))
            self._by_status[(method, status)] = child
        child.inc()
