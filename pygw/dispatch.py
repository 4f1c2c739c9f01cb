"""One request, start to end: match, pipeline, integration, then metrics and the access log.

The runtime snapshot is read once at the start, so a reload never changes a request mid-flight.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from typing import TYPE_CHECKING

from pygw._native import RequestIds
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError, Style, gateway_response
from pygw.faults import ConnectionResetByFault
from pygw.request import Request, RequestBodyError
from pygw.response import Response

if TYPE_CHECKING:
    from pygw.observe.access_log import AccessLog
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
    ) -> None:
        self.runtime = runtime
        self._access_log = access_log
        # Answers of a worker process name it; aiohttp sends a WebSocket handshake's answer,
        # so for those the header travels with the stages' response headers.
        self._worker_id = worker_id
        # uvloop's loop.time() counts whole milliseconds: too coarse for gateway overhead.
        self._loop_time = time.perf_counter

    async def __call__(self, request: Request) -> Response:
        # One coroutine for the whole request (no inner await chain): every resumption of a
        # suspended request walks the chain of awaiting frames.
        started = self._loop_time()
        runtime = self.runtime
        runtime.in_flight += 1
        try:
            # A well-formed id the client sent is kept (inlined: every request passes here).
            offered = request.request_id_header
            if offered is not None and _REQUEST_ID.fullmatch(offered):
                request_id = offered.decode("ascii")
            else:
                request_id = new_request_id()
            raw_path = request.raw_path
            q = raw_path.find("?")
            if q >= 0:
                raw_path = raw_path[:q]
            try:
                host = request.host_header
                found = runtime.router.lookup(
                    "" if host is None else host.decode("latin-1"), request.method, raw_path
                )
            except ValueError:
                bad_path = error_response(ErrorType.BAD_REQUEST, Style.HTTP, request_id)
                return self._unrouted(request, bad_path, request_id, started)
            if found is None:
                nowhere = error_response(ErrorType.RESOURCE_NOT_FOUND, Style.HTTP, request_id)
                return self._unrouted(request, nowhere, request_id, started)

            route_id, params, path = found
            route = runtime.routes[route_id]
            variant = route.primary if route.canary_variant is None else route.pick_variant()
            # Positional, in field order: matching nine keywords cost about as much as the
            # construction itself.
            ctx = RequestContext(
                request,
                request_id,
                path,
                dict(params),
                variant.stage_variables,
                request.client_ip,
                started,
                variant.canary,
                {route.request_id_header: request_id, "x-request-id": request_id},
            )
            if request.upgrade is not None and self._worker_id is not None:
                ctx.response_headers["x-pygw-worker"] = self._worker_id
            response: Response
            pipeline = variant.pipeline
            try:
                if pipeline.waits:
                    response = await pipeline.run(ctx)
                else:
                    answered = pipeline.check(ctx)
                    response = answered if answered is not None else await pipeline.integration(ctx)
            except GatewayError as failure:
                response = error_response(
                    failure.error, route.style, request_id, failure.detail, failure.headers
                )
                ctx.apply_response_headers(response)
            except RequestBodyError as unread:
                # The body could not be read whole (too large, too slow, cut off): the
                # connection closes after this answer.
                error = _BODY_ERRORS.get(unread.status, ErrorType.BAD_REQUEST)
                response = error_response(error, route.style, request_id)
                ctx.apply_response_headers(response)
                response.force_close()
            except ConnectionResetByFault:
                response = Response(status=499)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("request %s on %s failed", request_id, route.key)
                response = error_response(ErrorType.INTEGRATION_FAILURE, route.style, request_id)

            latency_s = self._loop_time() - started
            integration_s = ctx.integration_latency_s
            metrics = route.metrics
            metrics.count(request.method, response.status)
            metrics.timings.observe(latency_s, integration_s)
            if ctx.canary:
                metrics.canary.inc()
            if self._access_log is not None:
                self._write_log(
                    request,
                    route,
                    response,
                    request_id,
                    latency_s,
                    integration_s,
                    ctx.canary,
                    ctx.cache_state,
                )
            return response
        finally:
            runtime.in_flight -= 1

    def _unrouted(
        self, request: Request, response: Response, request_id: str, started: float
    ) -> Response:
        self._log(request, None, response, request_id, started, 0.0, False)
        return response

    def _log(
        self,
        request: Request,
        route: CompiledRoute | None,
        response: Response,
        request_id: str,
        started: float,
        integration_latency_s: float,
        canary: bool,
    ) -> None:
        latency_s = self._loop_time() - started
        if route is not None:
            metrics = route.metrics
            metrics.count(request.method, response.status)
            metrics.timings.observe(latency_s, integration_latency_s)
            if canary:
                metrics.canary.inc()
        if self._access_log is not None:
            self._write_log(
                request, route, response, request_id, latency_s, integration_latency_s, canary, None
            )

    def _write_log(
        self,
        request: Request,
        route: CompiledRoute | None,
        response: Response,
        request_id: str,
        latency_s: float,
        integration_latency_s: float,
        canary: bool,
        ctx_cache: str | None,
    ) -> None:
        assert self._access_log is not None
        body_length = response.body_length
        self._access_log.write(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "request_id": request_id,
                "client_ip": request.client_ip,
                "method": request.method,
                # The query string stays out of the log: it may carry credentials.
                "path": request.raw_path.partition("?")[0],
                "route": route.key if route is not None else None,
                "status": response.status,
                "bytes": body_length,
                "latency_ms": round(latency_s * 1000.0, 3),
                "integration_latency_ms": round(integration_latency_s * 1000.0, 3),
                "api": route.api if route is not None else None,
                "stage": route.stage if route is not None else None,
                "style": route.style.value if route is not None else None,
                "canary": canary,
                "cache": ctx_cache,
                "user_agent": request.headers.get("User-Agent"),
            }
        )
