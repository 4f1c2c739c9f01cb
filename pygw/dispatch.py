"""One request, start to end: match, pipeline, integration, then metrics and the access log.

The runtime snapshot is read once at the start, so a reload never changes a request mid-flight.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from pygw._native import RequestIds
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError, Style, gateway_response
from pygw.faults import ConnectionResetByFault
from pygw.observe.access_log import LogEntry
from pygw.observe.telemetry import RequestSpans
from pygw.pipeline import Outcome, Pipeline
from pygw.request import Request, RequestBodyError
from pygw.response import OneWriteResponse, Response, ResponseHead
from pygw.serving import PENDING, Later, LeanClient, Resume, Routed, Sent, Served, SimpleParts
from pygw.trace import incoming, new_trace

if TYPE_CHECKING:
    from pygw.observe.access_log import AccessLog
    from pygw.observe.telemetry import Telemetry
    from pygw.runtime import CompiledRoute, Runtime

log = logging.getLogger("pygw")

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_JSON = "application/json"


def _request_id_seed() -> tuple[str, int]:
    """A random prefix shaped like the start of a version-4 UUID (74 random bits) and a random
    start for the 48-bit sequence after it: as unique as uuid4 in practice, at a fraction of
    its cost (uuid4 reads the OS random source for every request)."""
    bits = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 of them used
    a = bits & 0xFFFFFFFF
    b = (bits >> 32) & 0xFFFF
    c = (bits >> 48) & 0x0FFF
    d = 0x8000 | ((bits >> 60) & 0x3FFF)  # RFC 9562 variant bits 10
    return f"{a:08x}-{b:04x}-4{c:03x}-{d:04x}-", int.from_bytes(os.urandom(4), "big")


# Native: formatting the id in Python was about half of a request id's cost.
_ids = RequestIds(*_request_id_seed())
# A forked child must not repeat its parent's ids.
os.register_at_fork(after_in_child=lambda: _ids.reseed(*_request_id_seed()))
new_request_id = _ids.next


def error_response(
    error: ErrorType,
    style: Style,
    request_id: str,
    detail: str | None = None,
    extra_headers: dict[str, str] | None = None,
) -> Response:
    answer = gateway_response(error, style)
    response = Response(status=answer.status, body=answer.body(detail), content_type=_JSON)
    headers = response.headers
    if answer.aws_error_type is not None:
        headers["x-amzn-ErrorType"] = answer.aws_error_type
    if style is Style.REST:
        headers["x-amzn-RequestId"] = request_id
    else:
        headers["apigw-requestid"] = request_id
    headers["x-request-id"] = request_id
    if extra_headers:
        headers.update(extra_headers)
    return response


def refusal_response(status: int, message: str) -> Response:
    """The answer to a request refused by the connection before it was routed (malformed,
    too large, an unsupported version): JSON like every other gateway error, with a request id."""
    request_id = new_request_id()
    response = Response(
        status=status,
        body=b'{"message":"%s"}' % message.encode("ascii", "replace"),
        content_type=_JSON,
        headers={"x-request-id": request_id, "apigw-requestid": request_id},
    )
    response.force_close()
    return response


_BODY_ERRORS = {
    413: ErrorType.REQUEST_TOO_LARGE,
    408: ErrorType.REQUEST_TIMEOUT,
    415: ErrorType.UNSUPPORTED_MEDIA_TYPE,
}


class Dispatcher:
    def __init__(
        self,
        runtime: Runtime,
        access_log: AccessLog | None,
        worker_id: str | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.runtime = runtime
        self._access_log = access_log
        self._telemetry = telemetry
        # Answers of a worker process name it; aiohttp sends a WebSocket handshake's answer,
        # so for those the header travels with the stages' response headers.
        self._worker_id = worker_id
        # uvloop's loop.time() counts whole milliseconds: too coarse for gateway overhead.
        self._loop_time = time.perf_counter

    async def __call__(self, request: Request) -> Response:
        served = self.serve_now(request, None)
        if isinstance(served, Response):
            return served
        assert served is not PENDING  # only handed out to a caller that can be resumed
        return await served

    def lean_possible(self) -> bool:
        """Whether serve_lean may serve any request under the current config: a connection
        asks it only then (it would cost every other request a call)."""
        return self._telemetry is None and any(
            route.primary.pipeline.start_lean is not None
            or route.primary.pipeline.fixed is not None
            or route.primary.pipeline.answer_lean is not None
            for route in self.runtime.routes
        )

    def serve_lean(self, client: LeanClient, simple: SimpleParts) -> Routed | Sent | None:
        """Serves a simple request (pygw._native.simple_request's parts) without a Request, a
        RequestContext or an awaited step, where its route allows: on a route without stages a
        fixed answer (a mock's) is sent at once and a request to one upstream goes out over a
        pooled connection; on a route whose stages all have a `check_lean`, those check it and
        a cache answers it from memory. PENDING when it was served so, or went on from there
        the full way (a stage's refusal, a miss). Otherwise the route it matched (None for
        none), which serve_now then need not look up again.

        Only without tracing (its spans need the request's objects), and for a request that
        continues no trace."""
        started = self._loop_time()
        runtime = self.runtime
        method, target, _, _, host, offered, traceparent, amzn, _ = simple
        if traceparent is not None or amzn is not None:
            return None
        raw_path = target.partition("?")[0] if "?" in target else target
        try:
            found = runtime.router.lookup(host.decode("latin-1"), method, raw_path)
        except ValueError:
            return None  # serve_now answers it
        if found is None:
            return None
        route = runtime.routes[found[0]]
        if route.canary_variant is not None:
            return found
        # Looked up per request: a faults stage may be added to a route at run time.
        pipeline = route.primary.pipeline
        start_lean = pipeline.start_lean
        fixed = pipeline.fixed
        answer_lean = pipeline.answer_lean
        if start_lean is None and answer_lean is None and (fixed is None or method == "HEAD"):
            return found
        if offered is not None and _REQUEST_ID.fullmatch(offered):
            request_id = offered.decode("ascii")
        else:
            request_id = new_request_id()
        if answer_lean is not None:
            checked = CheckedLeanRequest(
                self, runtime, route, client, simple, found, request_id, started
            )
            runtime.in_flight += 1
            check_lean = pipeline.check_lean
            if check_lean is not None:
                try:
                    check_lean(checked)
                except Exception as failure:
                    checked.refused(failure)
                    return PENDING
            answered = answer_lean(checked)
            if not answered:
                # None: nothing in memory for it, so the integration's answer_now is skipped.
                checked.integrate(pipeline, answered is False)
            return PENDING
        lean = LeanRequest(self, runtime, route, client, simple, found, request_id, started)
        runtime.in_flight += 1
        if fixed is not None:
            # Answered here: the answer is the same for every request but for its ids.
            status, head, body = fixed
            lean.answered(status, b"", head, body, lean.own_headers(), 0.0, None)
            return PENDING
        assert start_lean is not None
        if not start_lean(lean):
            runtime.in_flight -= 1
            return found
        return PENDING

    def serve_now(self, request: Request, resume: Resume | None) -> Served:
        """Serves `request` as far as it can go without waiting: its answer, or the coroutine
        that finishes it, or (`resume` given) PENDING when the integration took the request and
        hands its answer to `resume` from a socket callback. A request answered from memory
        (a mock, a cache hit, a refusal) or proxied over a pooled connection thus needs no task
        and no coroutine: those cost more than the rest of such a request."""
        started = self._loop_time()
        runtime = self.runtime
        # A well-formed id the client sent is kept (inlined: every request passes here).
        offered = request.request_id_header
        if offered is not None and _REQUEST_ID.fullmatch(offered):
            request_id = offered.decode("ascii")
        else:
            request_id = new_request_id()
        # The trace the client sent goes on, with the gateway's span as the new parent; a
        # request without one starts one (inlined: every request passes here).
        trace_parent: str | None = None
        sampled = False
        trace_id, span_id = new_trace()
        if request.traceparent_header is not None or request.amzn_trace_header is not None:
            continued = incoming(request.traceparent_header, request.amzn_trace_header)
            if continued is not None:
                trace_id, trace_parent, sampled = continued
        telemetry = self._telemetry
        if telemetry is not None and trace_parent is None and not sampled:
            # A trace this gateway decides (no caller's decision to follow): the trace id's
            # low 64 bits against the ratio (Telemetry.sampled, inlined).
            sampled = int(trace_id[16:], 16) < telemetry.threshold
        raw_path = request.raw_path
        # `in` and partition rather than find: str.find parses its arguments the slow way.
        if "?" in raw_path:
            raw_path = raw_path.partition("?")[0]
        try:
            found = request.routed
            if found is None:
                host = request.host_header
                found = runtime.router.lookup(
                    "" if host is None else host.decode("latin-1"), request.method, raw_path
                )
        except ValueError:
            bad_path = error_response(ErrorType.BAD_REQUEST, Style.HTTP, request_id)
            return self._unrouted(
                request, bad_path, request_id, trace_id, started, ErrorType.BAD_REQUEST
            )
        if found is None:
            nowhere = error_response(ErrorType.RESOURCE_NOT_FOUND, Style.HTTP, request_id)
            return self._unrouted(
                request, nowhere, request_id, trace_id, started, ErrorType.RESOURCE_NOT_FOUND
            )

        route_id, params, path = found
        route = runtime.routes[route_id]
        variant = route.primary if route.canary_variant is None else route.pick_variant()
        # Positional, in field order: matching eleven keywords cost about as much as the
        # construction itself.
        ctx = RequestContext(
            request,
            request_id,
            path,
            params,
            variant.stage_variables,
            request.client_ip,
            started,
            variant.canary,
            {route.request_id_header: request_id, "x-request-id": request_id},
            trace_id,
            span_id,
        )
        if trace_parent is not None or sampled:
            ctx.trace_parent = trace_parent
            ctx.trace_sampled = sampled
            if sampled and telemetry is not None:
                ctx.spans = []
        if request.upgrade is not None and self._worker_id is not None:
            ctx.response_headers["x-pygw-worker"] = self._worker_id
        pipeline = variant.pipeline
        if pipeline.waits:
            return self._awaited(pipeline.run(ctx), runtime, route, ctx)
        try:
            check = pipeline.check
            checked = check(ctx) if check is not None else None
            if checked is not None and not isinstance(checked, Response):
                # A stage waits for this request (a token not verified yet): the rest of the
                # pipeline and the integration are awaited.
                return self._awaited(checked, runtime, route, ctx)
        except Exception as failure:
            return self._concluded(route, ctx, self._failed(failure, route, ctx))
        if checked is not None:
            return self._concluded(route, ctx, checked)
        return self._integrated(runtime, route, ctx, pipeline, resume, True)

    def _integrated(
        self,
        runtime: Runtime,
        route: CompiledRoute,
        ctx: RequestContext,
        pipeline: Pipeline,
        resume: Resume | None,
        from_memory: bool,
    ) -> Served:
        """serve_now from the integration on, for a request its stages let through; its
        `answer_now` asked first when `from_memory`."""
        response: Response | None = None
        try:
            answer_now = pipeline.answer_now
            if answer_now is not None and from_memory:
                response = answer_now(ctx)
            if response is None:
                start_now = pipeline.start_now
                if start_now is not None and resume is not None:
                    exchange = _Exchange(self, runtime, route, ctx, resume)
                    # Counted while the exchange is out (a reload waits for it).
                    runtime.in_flight += 1
                    try:
                        instead = start_now(ctx, exchange.settle)
                    except BaseException:
                        runtime.in_flight -= 1
                        raise
                    if instead is None:
                        return PENDING
                    runtime.in_flight -= 1
                    return self._awaited(instead, runtime, route, ctx)
                return self._awaited(pipeline.integration(ctx), runtime, route, ctx)
        except Exception as failure:
            response = self._failed(failure, route, ctx)
        return self._concluded(route, ctx, response)

    async def _awaited(
        self,
        answer: Coroutine[Any, Any, Response],
        runtime: Runtime,
        route: CompiledRoute,
        ctx: RequestContext,
    ) -> Response:
        """The rest of a request whose pipeline or integration waits."""
        runtime.in_flight += 1
        try:
            try:
                response = await answer
            except asyncio.CancelledError:
                raise
            except Exception as failure:
                response = self._failed(failure, route, ctx)
            return self._concluded(route, ctx, response)
        finally:
            runtime.in_flight -= 1

    @staticmethod
    def _failed(failure: Exception, route: CompiledRoute, ctx: RequestContext) -> Response:
        """The answer to a request whose pipeline or integration raised `failure`."""
        request_id = ctx.request_id
        if isinstance(failure, GatewayError):
            response = error_response(
                failure.error, route.style, request_id, failure.detail, failure.headers
            )
            ctx.apply_response_headers(response)
            ctx.error = failure
        elif isinstance(failure, RequestBodyError):
            # The body could not be read whole (too large, too slow, cut off): the
            # connection closes after this answer.
            error = _BODY_ERRORS.get(failure.status, ErrorType.BAD_REQUEST)
            response = error_response(error, route.style, request_id)
            ctx.apply_response_headers(response)
            response.force_close()
            ctx.error = GatewayError(error, failure.message)
        elif isinstance(failure, ConnectionResetByFault):
            response = Response(status=499)
        else:
            log.error("request %s on %s failed", request_id, route.key, exc_info=failure)
            response = error_response(ErrorType.INTEGRATION_FAILURE, route.style, request_id)
            ctx.error = GatewayError(ErrorType.INTEGRATION_FAILURE)
        return response

    def _concluded(self, route: CompiledRoute, ctx: RequestContext, response: Response) -> Response:
        """`response`, once its request is counted, traced and logged."""
        request = ctx.request
        latency_s = self._loop_time() - ctx.received_at
        integration_s = ctx.integration_latency_s
        metrics = route.metrics
        metrics.count(request.method, response.status)
        metrics.timings.observe(latency_s, integration_s)
        if ctx.canary:
            metrics.canary.inc()
        telemetry = self._telemetry
        if ctx.spans is not None and telemetry is not None:
            self._record_spans(telemetry, ctx, route, response, latency_s)
        access_log = self._access_log
        if access_log is not None:
            failure_seen = ctx.error
            access_log.entry(
                LogEntry(
                    request,
                    route,
                    response,
                    ctx,
                    ctx.request_id,
                    ctx.trace_id,
                    latency_s,
                    integration_s,
                    None if failure_seen is None else failure_seen.error,
                    None if failure_seen is None else failure_seen.detail,
                )
            )
        return response

    @staticmethod
    def _record_spans(
        telemetry: Telemetry,
        ctx: RequestContext,
        route: CompiledRoute,
        response: Response,
        latency_s: float,
    ) -> None:
        request = ctx.request
        attributes: dict[str, str | int | bool] = {
            "http.request.method": request.method,
            "url.path": request.raw_path.partition("?")[0],
            "http.route": route.resource_path,
            "http.response.status_code": response.status,
            "pygw.api": route.api,
            "pygw.stage": route.stage,
            "pygw.style": route.style.value,
            "pygw.canary": ctx.canary,
            "pygw.request_id": ctx.request_id,
        }
        if ctx.cache_state is not None:
            attributes["pygw.cache"] = ctx.cache_state
        children = list(ctx.spans or ())
        if ctx.integration_started:
            integration: dict[str, str | int | bool] = {"pygw.integration": route.integration_kind}
            if ctx.integration_status is not None:
                integration["http.response.status_code"] = ctx.integration_status
            children.append(
                (
                    "integration",
                    ctx.integration_started,
                    ctx.integration_started + ctx.integration_latency_s,
                    integration,
                )
            )
        telemetry.record(
            RequestSpans(
                ctx.trace_id,
                ctx.span_id,
                ctx.trace_parent,
                route.key,
                ctx.received_at,
                ctx.received_at + latency_s,
                attributes,
                children,
                response.status >= 500,
            )
        )

    def _unrouted(
        self,
        request: Request,
        response: Response,
        request_id: str,
        trace_id: str,
        started: float,
        error: ErrorType,
    ) -> Response:
        if self._access_log is not None:
            latency_s = self._loop_time() - started
            self._access_log.entry(
                LogEntry(request, None, response, None, request_id, trace_id, latency_s, 0.0, error)
            )
        return response


class _Exchange:
    """A request whose integration answers from a socket callback (serve_now's PENDING): its
    outcome is concluded here and handed to the connection's `resume`."""

    __slots__ = ("ctx", "dispatcher", "resume", "route", "runtime")

    def __init__(
        self,
        dispatcher: Dispatcher,
        runtime: Runtime,
        route: CompiledRoute,
        ctx: RequestContext,
        resume: Resume,
    ) -> None:
        self.dispatcher = dispatcher
        self.runtime = runtime
        self.route = route
        self.ctx = ctx
        self.resume = resume

    def settle(self, outcome: Outcome) -> None:
        """The integration's answer, its failure, or the coroutine that finishes it."""
        self.runtime.in_flight -= 1
        dispatcher = self.dispatcher
        route = self.route
        ctx = self.ctx
        served: Response | Later
        try:
            if isinstance(outcome, Response):
                served = dispatcher._concluded(route, ctx, outcome)
            elif isinstance(outcome, Exception):
                served = dispatcher._concluded(route, ctx, dispatcher._failed(outcome, route, ctx))
            else:
                served = dispatcher._awaited(outcome, self.runtime, route, ctx)
        except Exception:
            # Called from a socket callback: nothing above would answer the client.
            log.exception("request %s on %s failed", ctx.request_id, route.key)
            served = error_response(ErrorType.INTEGRATION_FAILURE, route.style, ctx.request_id)
        self.resume(ctx.request, served)


class LeanRequest:
    """A request serve_lean sent on: what its integration needs to send it, and, should its
    answer not come whole in one read (or not come), the request's objects made after all."""

    __slots__ = (
        "_trace",
        "client",
        "dispatcher",
        "found",
        "request_id",
        "route",
        "runtime",
        "simple",
        "started",
    )

    def __init__(
        self,
        dispatcher: Dispatcher,
        runtime: Runtime,
        route: CompiledRoute,
        client: LeanClient,
        simple: SimpleParts,
        found: Routed,
        request_id: str,
        started: float,
    ) -> None:
        self.dispatcher = dispatcher
        self.runtime = runtime
        self.route = route
        self.client = client
        self.simple = simple
        self.found = found
        self.request_id = request_id
        self._trace: tuple[str, str] | None = None
        self.started = started

    def trace(self) -> tuple[str, str]:
        """The request's trace id and the id of the gateway's span in it, made when first asked
        for: an answer from memory that no log line records needs neither."""
        trace = self._trace
        if trace is None:
            trace = self._trace = new_trace()
        return trace

    def own_headers(self) -> dict[str, str]:
        """The headers the gateway adds to the answer (as RequestContext.response_headers)."""
        request_id = self.request_id
        return {self.route.request_id_header: request_id, "x-request-id": request_id}

    def answered(
        self,
        status: int,
        reason: bytes,
        head: ResponseHead,
        body: bytes,
        own: dict[str, str],
        integration_s: float,
        integration_status: int | None,
    ) -> None:
        """The whole answer (an upstream's, whose status is `integration_status`, or a fixed
        one): counted and logged as _concluded does, and sent."""
        self.runtime.in_flight -= 1
        simple = self.simple
        dispatcher = self.dispatcher
        latency_s = dispatcher._loop_time() - self.started
        metrics = self.route.metrics
        # RouteMetrics.count inlined for a status counted before: a hit's every call counts.
        counted = metrics.by_status.get((simple[0], status))
        if counted is None:
            metrics.count(simple[0], status)
        else:
            counted.value += 1.0
        metrics.timings.observe(latency_s, integration_s)
        access_log = dispatcher._access_log
        if access_log is not None:
            # The log's line reads the request's objects: made for it alone.
            ctx = self._context()
            if integration_status is not None:
                ctx.integration_started = time.perf_counter() - integration_s
                ctx.integration_latency_s = integration_s
                ctx.integration_status = integration_status
            answer = OneWriteResponse(status, head, body, own, reason)
            access_log.entry(
                LogEntry(
                    ctx.request,
                    self.route,
                    answer,
                    ctx,
                    self.request_id,
                    ctx.trace_id,
                    latency_s,
                    integration_s,
                    None,
                    None,
                )
            )
        self.client.send_whole(status, reason, head, body, own, simple[2], simple[8])

    def context(self) -> tuple[RequestContext, Callable[[Outcome], None]]:
        """The request's context as serve_now makes it, and the callback that concludes and
        answers its outcome: the way on for an answer that is not whole or did not come."""
        ctx = self._context()
        # runtime.in_flight, counted by serve_lean, is given back by the exchange's settle.
        exchange = _Exchange(self.dispatcher, self.runtime, self.route, ctx, self.client.resume)
        return ctx, exchange.settle

    def _context(self) -> RequestContext:
        request = self.client.request_of(self.simple)
        _, params, path = self.found
        route = self.route
        variant = route.primary
        request_id = self.request_id
        trace_id, span_id = self.trace()
        ctx = RequestContext(
            request,
            request_id,
            path,
            params,
            variant.stage_variables,
            request.client_ip,
            self.started,
            False,
            self.own_headers(),
            trace_id,
            span_id,
        )
        return ctx


class CheckedLeanRequest(LeanRequest):
    """A simple request whose route's stages all check it without its objects, and whose
    integration may answer it from memory (a cache hit): the LeanView they read and set. A
    refusal or an answer not found in memory makes the request's objects after all."""

    __slots__ = (
        "api_key_id",
        "cache_state",
        "method",
        "params",
        "path",
        "raw_headers",
        "raw_query",
        "response_headers",
    )

    def __init__(
        self,
        dispatcher: Dispatcher,
        runtime: Runtime,
        route: CompiledRoute,
        client: LeanClient,
        simple: SimpleParts,
        found: Routed,
        request_id: str,
        started: float,
    ) -> None:
        # LeanRequest.__init__'s assignments, inlined: a cache hit's every call counts.
        self.dispatcher = dispatcher
        self.runtime = runtime
        self.route = route
        self.client = client
        self.simple = simple
        self.found = found
        self.request_id = request_id
        self._trace = None
        self.started = started
        target = simple[1]
        self.method = simple[0]
        self.raw_query = target.partition("?")[2] if "?" in target else ""
        self.raw_headers = simple[3]
        _, self.params, self.path = found
        self.response_headers = {route.request_id_header: request_id, "x-request-id": request_id}
        self.api_key_id: str | None = None
        self.cache_state: str | None = None

    def own_headers(self) -> dict[str, str]:
        return self.response_headers

    def refused(self, failure: Exception) -> None:
        """A stage refused the request (raised `failure`): answered as serve_now does."""
        self.runtime.in_flight -= 1
        ctx = self._context()
        dispatcher = self.dispatcher
        route = self.route
        response = dispatcher._concluded(route, ctx, dispatcher._failed(failure, route, ctx))
        self.client.resume(ctx.request, response)

    def integrate(self, pipeline: Pipeline, from_memory: bool) -> None:
        """Its stages let the request through and answer_lean did not answer it: the
        integration serves it the full way (its answer_now asked first when `from_memory`)."""
        self.runtime.in_flight -= 1
        ctx = self._context()
        resume = self.client.resume
        served = self.dispatcher._integrated(
            self.runtime, self.route, ctx, pipeline, resume, from_memory
        )
        if served is not PENDING:
            resume(ctx.request, served)

    def _context(self) -> RequestContext:
        ctx = LeanRequest._context(self)
        ctx.api_key_id = self.api_key_id
        ctx.cache_state = self.cache_state
        return ctx
