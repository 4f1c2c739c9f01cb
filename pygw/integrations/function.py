"""The `function` integration: a local Python callable run the way AWS Lambda runs a handler.

`handler: "module:callable"` is imported at config load from the config file's folder or the
`python_path` folders, so project-local code needs no installation. Each request becomes an
API Gateway proxy event (payload format 1.0 or 2.0, see `lambda_events`) and a Lambda-like context
object; the result is read as API Gateway reads it. Sync handlers run in one bounded thread pool
shared by every route (each worker thread owns an event loop, as Lambda's runtime thread does, so
adapters such as Mangum that drive asyncio themselves work); async handlers run on the loop.

A handler that raises, or returns something API Gateway would refuse, answers with
INTEGRATION_FAILURE (REST-style 502 "Internal server error", HTTP-style 500); the reason and the
traceback go to the log only. A handler slower than `timeout_ms` answers INTEGRATION_TIMEOUT. A
sync handler cannot be stopped from outside: its thread finishes in the background and its
result is dropped, which is what an abandoned Lambda invocation looks like to the caller too.

Reads `ctx.authorizer` (JWT: {"jwt": {"claims": {...}, "scopes": [...]}}; custom
authorizers: their context dict plus "principalId").
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError, Style
from pygw.integrations.lambda_events import (
    EventBuilder,
    LambdaResult,
    MalformedResult,
    RouteInfo,
    read_result_v1,
    read_result_v2,
)
from pygw.lambda_context import LambdaContext, new_log_stream
from pygw.loader import is_async, load_callable
from pygw.response import Response

__all__ = [
    "FunctionIntegration",
    "LambdaContext",
    "LambdaRunner",
    "ProxyEventIntegration",
    "load_handler",
    "shared_executor",
]

log = logging.getLogger("pygw.function")

# Enough threads to overlap handlers that wait on I/O, few enough that a flood of slow handlers
# queues instead of exhausting the process. Override with PYGW_FUNCTION_THREADS.
_DEFAULT_THREADS: Final = 32
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _thread_start() -> None:
    # asyncio.get_event_loop() raises in a worker thread that has no loop; Lambda's runtime
    # thread always has one, and handlers written for it (Mangum, for instance) rely on that.
    asyncio.set_event_loop(asyncio.new_event_loop())


def shared_executor() -> ThreadPoolExecutor:
    """The one thread pool every sync handler in this process runs in (created on first use)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            size = _DEFAULT_THREADS
            configured = os.environ.get("PYGW_FUNCTION_THREADS", "")
            if configured.isdigit() and int(configured) > 0:
                size = int(configured)
            _executor = ThreadPoolExecutor(
                max_workers=size, thread_name_prefix="pygw-function", initializer=_thread_start
            )
        return _executor


# ---------------------------------------------------------------------------------------------
# Loading


def load_handler(spec: str, search_paths: Sequence[Path]) -> Callable[..., Any]:
    """Import a `module:callable` handler from the config's folders; see pygw.loader."""
    return load_callable(spec, search_paths)


# ---------------------------------------------------------------------------------------------
# The context object


class LambdaRunner:
    """Runs one handler as Lambda would: async handlers on the loop, sync ones in the shared
    thread pool, each call with its own `LambdaContext` and a deadline of `timeout_ms`. Used by
    the HTTP `function` integration and by WebSocket message routes alike."""

    __slots__ = (
        "_async",
        "_executor",
        "_handler",
        "_log_stream",
        "_timeout_s",
        "memory_mb",
        "name",
        "timeout_ms",
    )

    def __init__(
        self, handler: Callable[..., Any], name: str, timeout_ms: int, memory_mb: int = 128
    ) -> None:
        if timeout_ms <= 0:
            raise ValueError("timeout_ms must be positive")
        self._handler = handler
        self._async = is_async(handler)
        self._executor = None if self._async else shared_executor()
        self.name = name
        self.timeout_ms = timeout_ms
        self.memory_mb = memory_mb
        self._timeout_s = timeout_ms / 1000.0
        self._log_stream = new_log_stream()

    async def run(self, event: dict[str, Any], request_id: str) -> Any:
        """The handler's result. Raises TimeoutError past the deadline, or what the handler
        raised."""
        return await asyncio.wait_for(self.call(event, request_id), self._timeout_s)

    async def call(self, event: dict[str, Any], request_id: str) -> Any:
        """The handler's result, with no deadline of its own (the caller bounds the wait)."""
        context = LambdaContext(
            request_id, self.name, self.timeout_ms, self._log_stream, self.memory_mb
        )
        if self._async:
            return await self._handler(event, context)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._handler, event, context)


def _default_function_name(handler: Callable[..., Any]) -> str:
    module = getattr(handler, "__module__", None) or "handler"
    name = getattr(handler, "__qualname__", None) or type(handler).__name__
    return f"{module}.{name}".replace(".", "-").replace("<", "").replace(">", "")


# ---------------------------------------------------------------------------------------------
# The integration


class ProxyEventIntegration:
    """What every Lambda-proxy integration shares: the event built from the request, the wait
    bounded by `timeout_ms`, and the result read as API Gateway reads it. Subclasses say how the
    function is invoked (`invoke`); an exception from it is the style's integration failure."""

    def __init__(
        self,
        *,
        function_name: str,
        payload_format: str,
        timeout_ms: int,
        style: Style,
        api_name: str,
        stage: str,
        route_key: str,
        binary_media_types: Sequence[str] = (),
        memory_mb: int = 128,
    ) -> None:
        if timeout_ms <= 0:
            raise ValueError("timeout_ms must be positive")
        self._timeout_ms = timeout_ms
        self._style = style
        self._events = EventBuilder(
            RouteInfo(route_key, stage, api_name, style, tuple(binary_media_types)),
            payload_format,
        )
        self._v2 = payload_format == "2.0"
        # REST-style APIs decode a base64 result only for their binary media types.
        self._binary: tuple[str, ...] | None = (
            tuple(binary_media_types) if style is Style.REST else None
        )
        self._timeout_s = timeout_ms / 1000.0
        self.function_name = function_name
        self.memory_mb = memory_mb

    @property
    def payload_format(self) -> str:
        return "2.0" if self._v2 else "1.0"

    async def __call__(self, ctx: RequestContext) -> Response:
        request = ctx.request
        # A stage that read the body (validation, a request template) left the bytes to send.
        body = ctx.body
        if body is None:
            body = await request.read() if request.body_exists else b""
        event = self._events.build(ctx, body)
        started = ctx.integration_started = time.perf_counter()  # uvloop's clock counts ms
        try:
            result = await asyncio.wait_for(self.invoke(event, ctx.request_id), self._timeout_s)
        except TimeoutError:
            ctx.integration_latency_s = time.perf_counter() - started
            log.warning(
                "request %s: function %s timed out after %d ms",
                ctx.request_id,
                self.function_name,
                self._timeout_ms,
            )
            raise GatewayError(ErrorType.INTEGRATION_TIMEOUT) from None
        except Exception:
            ctx.integration_latency_s = time.perf_counter() - started
            log.exception("request %s: function %s failed", ctx.request_id, self.function_name)
            raise GatewayError(ErrorType.INTEGRATION_FAILURE) from None
        ctx.integration_latency_s = time.perf_counter() - started
        # $context.integrationStatus: what the Lambda service answered (the invocation's
        # status), not the status the function's result asks for.
        ctx.integration_status = 200
        try:
            read = self._read(result, request.headers.get("Accept", ""))
        except MalformedResult as bad:
            log.error(
                "request %s: function %s returned a malformed result: %s",
                ctx.request_id,
                self.function_name,
                bad,
            )
            raise GatewayError(ErrorType.INTEGRATION_FAILURE) from None
        response = Response(status=read.status, body=read.body, headers=read.headers)
        ctx.apply_response_headers(response)
        return response

    def _read(self, result: Any, accept: str) -> LambdaResult:
        if self._v2:
            return read_result_v2(result)
        return read_result_v1(result, self._binary, accept)

    async def invoke(self, event: dict[str, Any], request_id: str) -> Any:
        """Run the function on `event` and give back its result (any JSON value)."""
        raise NotImplementedError

    async def close(self) -> None:
        return None


class FunctionIntegration(ProxyEventIntegration):
    def __init__(
        self,
        handler: Callable[..., Any],
        *,
        payload_format: str,
        timeout_ms: int,
        style: Style,
        api_name: str,
        stage: str,
        route_key: str,
        binary_media_types: Sequence[str] = (),
        function_name: str | None = None,
        memory_mb: int = 128,
    ) -> None:
        super().__init__(
            function_name=function_name or _default_function_name(handler),
            payload_format=payload_format,
            timeout_ms=timeout_ms,
            style=style,
            api_name=api_name,
            stage=stage,
            route_key=route_key,
            binary_media_types=binary_media_types,
            memory_mb=memory_mb,
        )
        self._runner = LambdaRunner(handler, self.function_name, timeout_ms, memory_mb)

    async def invoke(self, event: dict[str, Any], request_id: str) -> Any:
        # The deadline is the caller's (ProxyEventIntegration), as for out-of-process functions.
        return await self._runner.call(event, request_id)

    async def close(self) -> None:
        # The thread pool is shared by every route and every reload: it lives as long as the
        # process.
        return None
