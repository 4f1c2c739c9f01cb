"""OpenTelemetry spans for sampled requests, exported over OTLP/HTTP off the request path.

A request is sampled when its caller's trace says so (the sampled flag of `traceparent` or
`X-Amzn-Trace-Id`) or, for a trace the gateway started, when the low 64 bits of its trace id
fall under `sample_ratio` (OpenTelemetry's TraceIdRatioBased rule, so every service that applies
the rule to the same trace agrees). An unsampled request costs one comparison.

A sampled request leaves one small record in a bounded queue; a worker thread turns queued
records into the SDK's spans (the server span, with the authorizer, cache and integration as
children), batches them and exports them with the SDK's OTLP/HTTP exporter. A full queue drops
the request's spans and counts them, as does a failed export: a slow, failing or absent
collector never holds up a request.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Coroutine, Sequence
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

if TYPE_CHECKING:
    from collections.abc import Callable

    from pygw.context import RequestContext

__all__ = ["RequestSpans", "Telemetry", "TracedCache", "TracedStage"]

log = logging.getLogger("pygw.telemetry")

# (name, started, ended, attributes) of a child span, perf_counter() seconds.
Mark = tuple[str, float, float, dict[str, str | int | bool]]


class RequestSpans:
    """What the worker needs to build one request's spans (built only for sampled requests)."""

    __slots__ = (
        "attributes",
        "children",
        "ended",
        "error",
        "name",
        "parent_id",
        "span_id",
        "started",
        "trace_id",
    )

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        parent_id: str | None,
        name: str,
        started: float,
        ended: float,
        attributes: dict[str, str | int | bool],
        children: Sequence[Mark],
        error: bool,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.name = name
        self.started = started
        self.ended = ended
        self.attributes = attributes
        self.children = children
        self.error = error


_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_ERROR: Final = Status(StatusCode.ERROR)
_UNSET: Final = Status(StatusCode.UNSET)


class Telemetry:
    def __init__(
        self,
        endpoint: str,
        sample_ratio: float,
        service_name: str,
        on_drop: Callable[[str, int], None],
        *,
        max_queue: int = 2048,
        batch_size: int = 256,
        flush_s: float = 1.0,
        export_timeout_s: float = 5.0,
        exporter: SpanExporter | None = None,
    ) -> None:
        """`on_drop(reason, spans)` counts what is lost: "queue_full" or "export_failed"."""
        # Sampled when the trace id's low 64 bits are below this (2**64: every trace).
        self.threshold: Final = round(min(max(sample_ratio, 0.0), 1.0) * (1 << 64))
        self._queue: collections.deque[RequestSpans] = collections.deque()
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_s = flush_s
        self._on_drop = on_drop
        self._wake = threading.Event()
        self._stopping = False
        self._exporter = exporter or OTLPSpanExporter(endpoint=endpoint, timeout=export_timeout_s)
        self._resource = Resource.create({"service.name": service_name})
        self._scope = InstrumentationScope("pygw")
        # perf_counter() seconds + this = epoch seconds (the request path reads perf_counter).
        self._epoch_offset = time.time() - time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="pygw-telemetry", daemon=True)
        self._thread.start()

    def sampled(self, trace_id: str) -> bool:
        return int(trace_id[16:], 16) < self.threshold

    def record(self, spans: RequestSpans) -> None:
        """Called on the event loop: queue the request's spans, or count them dropped."""
        queue = self._queue
        if len(queue) >= self._max_queue:
            self._on_drop("queue_full", 1 + len(spans.children))
            return
        queue.append(spans)
        if len(queue) == self._batch_size:
            self._wake.set()

    # -- the worker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_s)
            self._wake.clear()
            stopping = self._stopping
            while self._queue:
                self._export_batch()
            if stopping:
                return

    def _export_batch(self) -> None:
        queue = self._queue
        batch: list[ReadableSpan] = []
        taken = 0
        while queue and taken < self._batch_size:
            self._build(queue.popleft(), batch)
            taken += 1
        if not batch:
            return
        try:
            result = self._exporter.export(batch)
        except Exception:  # an exporter bug must not end the worker
            log.exception("exporting %d spans failed", len(batch))
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._on_drop("export_failed", len(batch))

    def _ns(self, perf_s: float) -> int:
        return int((perf_s + self._epoch_offset) * 1e9)

    def _build(self, spans: RequestSpans, batch: list[ReadableSpan]) -> None:
        """The request's finished spans, made directly as the SDK's ReadableSpan: the ids and
        times are already known, so the tracer's machinery (sampler, id generator, processors,
        locks) would only add cost."""
        trace_id = int(spans.trace_id, 16)
        server = SpanContext(trace_id, int(spans.span_id, 16), False, _SAMPLED)
        caller = (
            None
            if spans.parent_id is None
            else SpanContext(trace_id, int(spans.parent_id, 16), True, _SAMPLED)
        )
        resource = self._resource
        scope = self._scope
        batch.append(
            ReadableSpan(
                spans.name,
                server,
                caller,
                resource,
                spans.attributes,
                kind=SpanKind.SERVER,
                status=_ERROR if spans.error else _UNSET,
                start_time=self._ns(spans.started),
                end_time=self._ns(spans.ended),
                instrumentation_scope=scope,
            )
        )
        for name, started, ended, attributes in spans.children:
            child = SpanContext(trace_id, random.getrandbits(64) or 1, False, _SAMPLED)
            batch.append(
                ReadableSpan(
                    name,
                    child,
                    server,
                    resource,
                    attributes,
                    kind=SpanKind.CLIENT if name == "integration" else SpanKind.INTERNAL,
                    start_time=self._ns(started),
                    end_time=self._ns(ended),
                    instrumentation_scope=scope,
                )
            )

    def close(self, timeout_s: float = 5.0) -> None:
        """Exports what is queued (bounded by `timeout_s`), then stops the worker."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
        self._exporter.shutdown()


class TracedStage:
    """A stage (the authorizer) whose time becomes a child span of sampled requests. Built at
    load only when telemetry is configured; a stage that never waits keeps its plain `check`."""

    def __init__(self, name: str, stage: Any) -> None:
        self._name = name
        self._stage = stage
        inner_check = getattr(stage, "check", None)
        if callable(inner_check):
            self._inner_check = inner_check
            self.check = self._check

    def _check(self, ctx: RequestContext) -> Any:
        started = time.perf_counter()
        try:
            answered = self._inner_check(ctx)
        except BaseException:
            self._record(ctx, started)
            raise
        if isinstance(answered, CoroutineType):
            # The stage waits for this request (pygw/pipeline.py): its span ends with the wait.
            return self._finished(ctx, answered, started)
        self._record(ctx, started)
        return answered

    async def _finished(
        self, ctx: RequestContext, pending: Coroutine[Any, Any, Any], started: float
    ) -> Any:
        try:
            return await pending
        finally:
            self._record(ctx, started)

    async def __call__(self, ctx: RequestContext) -> Any:
        started = time.perf_counter()
        try:
            return await self._stage(ctx)
        finally:
            self._record(ctx, started)

    def _record(self, ctx: RequestContext, started: float) -> None:
        spans = ctx.spans
        if spans is not None:
            spans.append((self._name, started, time.perf_counter(), {}))


class TracedCache:
    """The cache in front of an integration: its lookup (and, on a miss, the store around the
    integration's call) as a child span with the outcome."""

    def __init__(self, cached: Any) -> None:
        self._cached = cached

    async def __call__(self, ctx: RequestContext) -> Any:
        started = time.perf_counter()
        try:
            return await self._cached(ctx)
        finally:
            spans = ctx.spans
            if spans is not None:
                outcome: dict[str, str | int | bool] = {"pygw.cache": ctx.cache_state or "none"}
                spans.append(("cache", started, time.perf_counter(), outcome))

    async def close(self) -> None:
        await self._cached.close()

    # The lookup is timed here, so it is always awaited (Pipeline would find the cache's own).
    answer_now = None
    start_now = None

    def __getattr__(self, name: str) -> Any:
        # health(), queue_length() and the like of the integration behind the cache.
        return getattr(self._cached, name)
