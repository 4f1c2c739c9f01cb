"""The live dashboard's figures, computed from the same metric families `/metrics` exports.

A `Snapshot` is one reading of the counters, histograms and gauges (from the registry in one
process, from the summed exposition under a supervisor). Rates, error ratios and p50/p99 come
from the difference between two snapshots: the one taken now and the oldest one still inside
the sliding window. Percentiles are read from the histogram buckets the way PromQL's
`histogram_quantile` reads them (linear inside the bucket the rank falls in), so the dashboard
and a Grafana panel over the same window agree.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric

Labels = tuple[tuple[str, str], ...]

# The families the dashboard reads; everything else in the exposition is left out of snapshots.
_COUNTERS = (
    "pygw_requests_total",
    "pygw_throttled_total",
    "pygw_cache_hits_total",
    "pygw_cache_misses_total",
    "pygw_config_reloads_total",
    "pygw_supervisor_reloads_total",
    "pygw_websocket_messages_total",
    "pygw_websocket_connects_total",
)
_HISTOGRAMS = (
    "pygw_latency_seconds",
    "pygw_integration_latency_seconds",
    "pygw_overhead_seconds",
    "pygw_stage_seconds",
)
_GAUGES = (
    "pygw_upstream_health",
    "pygw_upstream_queue_length",
    "pygw_websocket_connections",
    "pygw_workers",
)
_WANTED = frozenset(
    (
        *_COUNTERS,
        *_GAUGES,
        *(f"{h}{suffix}" for h in _HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")),
    )
)


@dataclass
class Snapshot:
    """Sample values by (sample name, sorted labels), taken at `at` (seconds, monotonic)."""

    at: float
    values: dict[tuple[str, Labels], float] = field(default_factory=dict)

    @classmethod
    def of(cls, at: float, families: Iterable[Metric]) -> Snapshot:
        values: dict[tuple[str, Labels], float] = {}
        for family in families:
            for sample in family.samples:
                if sample.name in _WANTED:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    values[key] = values.get(key, 0.0) + float(sample.value)
        return cls(at, values)


def _delta(now: Snapshot, base: Snapshot, key: tuple[str, Labels]) -> float:
    current = now.values.get(key, 0.0)
    before = base.values.get(key, 0.0)
    # A counter below its earlier value was reset (a worker restarted): it counted from zero.
    return current - before if current >= before else current


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile from cumulative bucket counts by upper bound (+Inf included), None when
    the buckets counted nothing. Like `histogram_quantile`: linear interpolation inside the
    bucket, the lowest bucket starting at 0, and a rank in +Inf answered with the largest
    finite bound."""
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != math.inf:
        return None
    total = buckets[math.inf]
    if total <= 0:
        return None
    rank = q * total
    previous_bound = 0.0
    previous_count = 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == math.inf:
                return previous_bound
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (
                count - previous_count
            )
        previous_bound, previous_count = bound, count
    return previous_bound


class _Window:
    """Differences between two snapshots, grouped by label subsets."""

    def __init__(self, now: Snapshot, base: Snapshot) -> None:
        self.now = now
        self.base = base
        self.seconds = max(now.at - base.at, 1e-9)
        self._by_name: dict[str, list[tuple[str, Labels]]] = defaultdict(list)
        for key in now.values:
            self._by_name[key[0]].append(key)

    def _keys(self, name: str) -> Iterable[tuple[tuple[str, Labels], dict[str, str]]]:
        for key in self._by_name.get(name, ()):
            yield key, dict(key[1])

    def counter(self, name: str, by: tuple[str, ...]) -> dict[tuple[str, ...], tuple[float, float]]:
        """(window increase, total) of a counter, summed by the `by` labels."""
        found: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for key, labels in self._keys(name):
            group = tuple(labels.get(label, "") for label in by)
            entry = found[group]
            entry[0] += _delta(self.now, self.base, key)
            entry[1] += self.now.values[key]
        return {group: (pair[0], pair[1]) for group, pair in found.items()}

    def gauge(self, name: str, by: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        found: dict[tuple[str, ...], float] = defaultdict(float)
        for key, labels in self._keys(name):
            found[tuple(labels.get(label, "") for label in by)] += self.now.values[key]
        return dict(found)

    def histogram(self, name: str, by: tuple[str, ...]) -> dict[tuple[str, ...], _Distribution]:
        """Window bucket counts, sum and count of a histogram, summed by the `by` labels."""
        found: dict[tuple[str, ...], _Distribution] = defaultdict(_Distribution)
        for key, labels in self._keys(f"{name}_bucket"):
            bound = float(labels.pop("le"))
            group = tuple(labels.get(label, "") for label in by)
            buckets = found[group].buckets
            buckets[bound] = buckets.get(bound, 0.0) + _delta(self.now, self.base, key)
        for suffix in ("_sum", "_count"):
            for key, labels in self._keys(f"{name}{suffix}"):
                group = tuple(labels.get(label, "") for label in by)
                distribution = found[group]
                value = _delta(self.now, self.base, key)
                if suffix == "_sum":
                    distribution.sum += value
                else:
                    distribution.count += value
        return dict(found)


@dataclass
class _Distribution:
    buckets: dict[float, float] = field(default_factory=dict)
    sum: float = 0.0
    count: float = 0.0

    def quantile(self, q: float) -> float | None:
        return quantile(q, self.buckets)

    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _route_key(row: Mapping[str, Any]) -> tuple[str, str, str]:
    route = str(row.get("route", ""))
    # The route table marks the synthetic `$default` of an API; its metrics carry the bare key.
    return str(row.get("api", "")), str(row.get("stage", "")), route.removesuffix(" (implicit)")


def figures(
    now: Snapshot,
    base: Snapshot,
    route_table: list[dict[str, Any]],
    reloads: list[dict[str, Any]],
) -> dict[str, Any]:
    """Everything the dashboard page shows, over the window from `base` to `now`."""
    window = _Window(now, base)
    seconds = window.seconds
    route_labels = ("api", "stage", "route")

    requests = window.counter("pygw_requests_total", (*route_labels, "status"))
    per_route: dict[tuple[str, ...], dict[str, float]] = defaultdict(
        lambda: {"window": 0.0, "total": 0.0, "errors_4xx": 0.0, "errors_5xx": 0.0, "errors": 0.0}
    )
    for (api, stage, route, status), (increase, total) in requests.items():
        entry = per_route[(api, stage, route)]
        entry["window"] += increase
        entry["total"] += total
        if status.startswith("4"):
            entry["errors_4xx"] += increase
        elif status.startswith("5"):
            entry["errors_5xx"] += increase
    latency = window.histogram("pygw_latency_seconds", route_labels)
    integration = window.histogram("pygw_integration_latency_seconds", route_labels)
    stages = window.histogram("pygw_stage_seconds", (*route_labels, "step"))

    routes: list[dict[str, Any]] = []
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in route_table:
        key = _route_key(row)
        shown = seen.get(key)
        if shown is not None:
            # One route under several hosts or domain mappings: one row, its hosts listed.
            host = row.get("host")
            if host and host not in shown["hosts"]:
                shown["hosts"].append(host)
            continue
        counted = per_route.get(key, {})
        done = counted.get("window", 0.0)
        errors = counted.get("errors_4xx", 0.0) + counted.get("errors_5xx", 0.0)
        spread = latency.get(key)
        waited = integration.get(key)
        step_times = {
            step: (dist.mean(), dist.count)
            for (api, stage, route, step), dist in stages.items()
            if (api, stage, route) == key
        }
        shown = {
            "api": key[0],
            "stage": key[1],
            "route": row.get("route"),
            "hosts": [row["host"]] if row.get("host") else [],
            "path_prefix": row.get("path_prefix", ""),
            "style": row.get("style"),
            "integration": row.get("integration"),
            "pipeline": list(row.get("pipeline", [])),
            "canary_percent": row.get("canary_percent", 0.0),
            "requests": done,
            "requests_total": counted.get("total", 0.0),
            "rate": done / seconds,
            "errors_4xx": counted.get("errors_4xx", 0.0),
            "errors_5xx": counted.get("errors_5xx", 0.0),
            "error_rate": _ratio(errors, done),
            "p50": spread.quantile(0.5) if spread else None,
            "p99": spread.quantile(0.99) if spread else None,
            "integration_p50": waited.quantile(0.5) if waited else None,
            "stage_mean": {step: mean for step, (mean, count) in step_times.items() if count},
        }
        seen[key] = shown
        routes.append(shown)

    all_requests = sum(entry["window"] for entry in per_route.values())
    all_errors = sum(entry["errors_4xx"] + entry["errors_5xx"] for entry in per_route.values())
    everything = _Distribution()
    for dist in latency.values():
        for bound, count in dist.buckets.items():
            everything.buckets[bound] = everything.buckets.get(bound, 0.0) + count

    # Overhead per style, and how the gateway's own time splits: each timed stage's total
    # against the style's overhead total; the rest is routing, parsing and writing.
    style_of = {key: row["style"] for key, row in ((_route_key(r), r) for r in route_table)}
    overhead = window.histogram("pygw_overhead_seconds", ("style",))
    by_style_latency = window.histogram("pygw_latency_seconds", ("style",))
    by_style_integration = window.histogram("pygw_integration_latency_seconds", ("style",))
    step_totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for (api, stage, route, step), dist in stages.items():
        style = style_of.get((api, stage, route))
        if style is not None:
            step_totals[style][step] += dist.sum
    styles: dict[str, Any] = {}
    for (style,), dist in sorted(overhead.items()):
        spent = step_totals.get(style, {})
        shares: dict[str, float] = {}
        if dist.sum > 0:
            staged = sum(spent.values())
            shares = {step: total / dist.sum for step, total in sorted(spent.items())}
            shares["other"] = max(dist.sum - staged, 0.0) / dist.sum
        lat = by_style_latency.get((style,))
        waited = by_style_integration.get((style,))
        styles[style] = {
            "requests": dist.count,
            "overhead_mean": dist.mean(),
            "overhead_p50": dist.quantile(0.5),
            "overhead_p99": dist.quantile(0.99),
            "latency_mean": lat.mean() if lat else None,
            "integration_mean": waited.mean() if waited else None,
            "stage_share": shares,
        }

    throttled = window.counter("pygw_throttled_total", ("level",))
    hits = window.counter("pygw_cache_hits_total", ("api", "stage"))
    misses = window.counter("pygw_cache_misses_total", ("api", "stage"))
    hit_window = sum(v[0] for v in hits.values())
    miss_window = sum(v[0] for v in misses.values())
    hit_total = sum(v[1] for v in hits.values())
    miss_total = sum(v[1] for v in misses.values())
    caches = []
    for api, stage in sorted({*hits, *misses}):
        hit = hits.get((api, stage), (0.0, 0.0))
        miss = misses.get((api, stage), (0.0, 0.0))
        if hit[1] + miss[1] == 0:
            # Every route with a cache has its counters; one that never looked is left out.
            continue
        caches.append(
            {
                "api": api,
                "stage": stage,
                "hits": hit[0],
                "misses": miss[0],
                "hit_ratio": _ratio(hit[0], hit[0] + miss[0]),
                "hit_ratio_total": _ratio(hit[1], hit[1] + miss[1]),
            }
        )

    workers = window.gauge("pygw_workers", ()).get((), 0.0)
    # Under a supervisor each worker reports each target once: the sum is how many see it up.
    seeing = max(workers, 1.0)
    health = window.gauge("pygw_upstream_health", ("target",))
    queues = window.gauge("pygw_upstream_queue_length", ("target",))
    upstreams = [
        {
            "target": target,
            "healthy": up >= seeing,
            "healthy_fraction": up / seeing,
            "queue_length": queues.get((target,), 0.0),
        }
        for (target,), up in sorted(health.items())
    ]

    # Under a supervisor its own count: each worker counts the reloads it applied, and one the
    # supervisor refused reaches no worker.
    reload_counts = window.counter(
        "pygw_supervisor_reloads_total" if workers else "pygw_config_reloads_total", ("result",)
    )
    messages = window.counter("pygw_websocket_messages_total", ("outcome",))
    connects = window.counter("pygw_websocket_connects_total", ("outcome",))
    return {
        "window_seconds": seconds,
        "workers": int(workers) if workers else None,
        "totals": {
            "requests": all_requests,
            "requests_total": sum(entry["total"] for entry in per_route.values()),
            "rate": all_requests / seconds,
            "errors": all_errors,
            "error_rate": _ratio(all_errors, all_requests),
            "p50": everything.quantile(0.5),
            "p99": everything.quantile(0.99),
        },
        "routes": routes,
        "styles": styles,
        "throttled": {
            level: {"requests": increase, "rate": increase / seconds, "total": total}
            for (level,), (increase, total) in sorted(throttled.items())
        },
        "cache": {
            "hits": hit_window,
            "misses": miss_window,
            "hit_ratio": _ratio(hit_window, hit_window + miss_window),
            "hit_ratio_total": _ratio(hit_total, hit_total + miss_total),
            "by_stage": caches,
        },
        "upstreams": upstreams,
        "websocket": {
            "connections": window.gauge("pygw_websocket_connections", ()).get((), 0.0),
            "messages": sum(v[0] for v in messages.values()),
            "message_rate": sum(v[0] for v in messages.values()) / seconds,
            "connects": {outcome: v[0] for (outcome,), v in connects.items()},
        },
        "reloads": {
            "ok": reload_counts.get(("ok",), (0.0, 0.0))[1],
            "error": reload_counts.get(("error",), (0.0, 0.0))[1],
            "recent": reloads,
        },
    }
