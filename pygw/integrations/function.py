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
import inspect
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError, Style
from pygw.integrations.lambda_events import (
    ACCOUNT_ID,
    EventBuilder,
    LambdaResult,
    MalformedResult,
    RouteInfo,
    read_result_v1,
    read_result_v2,
)
from pygw.loader import load_callable
from pygw.response import Response

__all__ = [
    "FunctionIntegration",
    "LambdaContext",
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


def _is_async(handler: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(handler):
        return True
    # An object whose class defines `async def __call__`.
    call = inspect.getattr_static(type(handler), "__call__", None)
    return inspect.iscoroutinefunction(call)


# ---------------------------------------------------------------------------------------------
# The context object


class LambdaContext:
    """What a Lambda handler receives as `context`, with the same attribute names."""

    __slots__ = (
        "_deadline",
        "aws_request_id",
        "client_context",
        "function_name",
        "function_version",
        "identity",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
    )

    def __init__(
        self,
        request_id: str,
        function_name: str,
        timeout_ms: int,
        log_stream_name: str,
        memory_mb: int = 128,
    ) -> None:
        self.aws_request_id = request_id
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:local:{ACCOUNT_ID}:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_ms / 1000.0

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return (
            f"LambdaContext(aws_request_id={self.aws_request_id!r}, "
            f"function_name={self.function_name!r})"
        )


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
        self._timeout_s = timeout_ms / 1000.0
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
        self.function_name = function_name
        self.memory_mb = memory_mb
        day = time.strftime("%Y/%m/%d", time.gmtime())
        self._log_stream = f"{day}/[$LATEST]{uuid.uuid4().hex}"

    @property
    def payload_format(self) -> str:
        return "2.0" if self._v2 else "1.0"

    def build_event(self, ctx: RequestContext, body: bytes) -> dict[str, Any]:
        return self._events.build(ctx, body)

    async def __call__(self, ctx: RequestContext) -> Response:
        request = ctx.request
        # A stage that read the body (validation, a request template) left the bytes to send.
        body = ctx.body
        if body is None:
            body = await request.read() if request.body_exists else b""
        event = self._events.build(ctx, body)
        started = time.perf_counter()  # uvloop's loop clock counts whole milliseconds
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
        self._handler = handler
        self._async = _is_async(handler)
        self._executor = None if self._async else shared_executor()

    async def invoke(self, event: dict[str, Any], request_id: str) -> Any:
        context = LambdaContext(
            request_id, self.function_name, self._timeout_ms, self._log_stream, self.memory_mb
        )
        if self._async:
            return await self._handler(event, context)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._handler, event, context)

    async def close(self) -> None:
        # The thread pool is shared by every route and every reload: it lives as long as the
        # process.
        return None
