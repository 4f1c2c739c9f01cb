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

from aiohttp import web

from pygw._native import RequestIds, header_block_size
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError, Style, gateway_response
from pygw.integrations.mock import ConnectionResetByFault
from pygw.one_write import OneWriteResponse

if TYPE_CHECKING:
    from pygw.observe.access_log import AccessLog
    from pygw.runtime import CompiledRoute, Runtime

log = logging.getLogger("pygw")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
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
) -> web.Response:
    answer = gateway_response(error, style)
    response = web.Response(status=answer.status, body=answer.body(detail), content_type=_JSON)
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


class Dispatcher:
    def __init__(
        self,
        runtime: Runtime,
        access_log: AccessLog | None,
        max_body_bytes: int,
        max_header_bytes: int,
    ) -> None:
        self.runtime = runtime
        self._access_log = access_log
        self._max_body_bytes = max_body_bytes
        self._max_header_bytes = max_header_bytes
        # uvloop's loop.time() counts whole milliseconds: too coarse for gateway overhead.
        self._loop_time = time.perf_counter

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        # One coroutine for the whole request (no inner await chain): every resumption of a
        # suspended request walks the chain of awaiting frames.
        started = self._loop_time()
        runtime = self.runtime
        runtime.in_flight += 1
        try:
            # A well-formed id the client sent is kept (inlined: every request passes here).
            offered = request.headers.get("x-request-id")
            if offered is not None and _REQUEST_ID.fullmatch(offered):
                request_id = offered
            else:
                request_id = new_request_id()
            refused = self._check_limits(request)
            if refused is not None:
                too_large = error_response(refused, Style.REST, request_id)
                too_large.force_close()
                return self._unrouted(request, too_large, request_id, started)

            raw_path = request.raw_path
            q = raw_path.find("?")
            if q >= 0:
                raw_path = raw_path[:q]
            try:
                found = runtime.router.lookup(
                    request.headers.get("Host", ""), request.method, raw_path
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
                request.remote or "",
                started,
                variant.canary,
                {route.request_id_header: request_id, "x-request-id": request_id},
            )
            response: web.StreamResponse
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
            except ConnectionResetByFault:
                response = web.Response(status=499)
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
                    ctx.extras.get("cache"),
                )
            return response
        finally:
            runtime.in_flight -= 1

    def _unrouted(
        self, request: web.BaseRequest, response: web.Response, request_id: str, started: float
    ) -> web.Response:
        self._log(request, None, response, request_id, started, 0.0, False)
        return response

    def _check_limits(self, request: web.BaseRequest) -> ErrorType | None:
        length = request.content_length
        if length is not None and length > self._max_body_bytes:
            return ErrorType.REQUEST_TOO_LARGE
        if header_block_size(request.raw_headers) > self._max_header_bytes:
            return ErrorType.HEADERS_TOO_LARGE
        return None

    def _log(
        self,
        request: web.BaseRequest,
        route: CompiledRoute | None,
        response: web.StreamResponse,
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
        request: web.BaseRequest,
        route: CompiledRoute | None,
        response: web.StreamResponse,
        request_id: str,
        latency_s: float,
        integration_latency_s: float,
        canary: bool,
        ctx_cache: str | None,
    ) -> None:
        assert self._access_log is not None
        body_length = response.body_length if response.prepared else 0
        if isinstance(response, OneWriteResponse):
            body_length = len(response.body)
        elif not body_length and isinstance(response, web.Response) and response.body is not None:
            body = response.body
            body_length = len(body) if isinstance(body, bytes | bytearray) else 0
        self._access_log.write(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "request_id": request_id,
                "client_ip": request.remote,
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
