"""WebSocket APIs (`type: websocket`, SPEC.md section 8): one integration per API mount.

The runtime gives each mount (base path + stage) a single `$default` route whose integration is a
`WebSocketApiIntegration`. It upgrades the request itself and then runs the connection's message
loop until the connection closes, so the request "lasts" as long as the connection:

- ``$connect`` runs the route's authorizer (a refusal answers the handshake with the
  authorizer's status) and its integration; a non-2xx answer refuses the handshake with that
  status and nothing is upgraded.
- Each text or binary message is routed by ``route_selection`` (``$request.body.a.b``) evaluated
  on the message as JSON: the selected value names a route, anything else (not JSON, no such field,
  a value no route has) goes to ``$default``, or is answered with AWS's error frame
  ``{"message": "Forbidden", "connectionId": ..., "requestId": ...}`` when there is none.
- A route with ``route_response: true`` sends its integration's response body back (two-way);
  others are one-way. Integration failures are answered with AWS's error frames ("Internal
  server error", "Endpoint request timed out"), throttled messages with "Too Many Requests".
- ``$disconnect`` runs after the connection closed, best effort (its answer is ignored).

Integrations: ``function`` (AWS's WebSocket event: ``requestContext.routeKey``, ``eventType``
CONNECT|MESSAGE|DISCONNECT, ``connectionId``, ...; headers and query on CONNECT), ``http_proxy``
(each event POSTed to ``uri`` with the connection id in the ``connectionId`` header, the event type
and route key in ``x-pygw-event-type`` / ``x-pygw-route-key``) and ``mock``.

Limits (``websocket:`` of the API): ``idle_timeout_s`` (no message from the client: closed with
1001), ``max_duration_s`` (closed with 1001), ``max_message_bytes`` (a longer message closes the
connection with 1009). The gateway pings every ``min(30 s, idle_timeout_s / 2)`` and closes a
connection whose client does not answer. Route and stage ``throttle`` settings apply per
connection (a route's bucket limits the messages one client sends to that route, the stage's
bucket all messages of one client). Messages of one connection are handled in order, one at a
time; a client that sends faster than its messages are handled gets "Too Many Requests" frames
once ``4 * max_message_bytes`` (at least 1 MiB) are waiting.

Observability (`_Telemetry`): the pygw_websocket_* metric families, and, when the gateway writes
an access log, one line per CONNECT, routed MESSAGE and DISCONNECT (ids, route key, status,
outcome, integration latency, sizes; never a message body or a header).

Reads `ctx.authorizer` (set by the $connect authorizer; every event of the connection
carries it as ``requestContext.authorizer``).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import inspect
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from pygw._native import GRANTED, Throttle
from pygw.authorizer_view import rest_authorizer
from pygw.config.load import LoadedConfig
from pygw.config.model import ApiConfig, RouteConfig
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError, Style, gateway_response
from pygw.integrations.function import LambdaContext, load_handler, shared_executor
from pygw.integrations.lambda_events import (
    MalformedResult,
    api_id_for,
    read_result_v2,
    request_time,
)
from pygw.integrations.ws_connections import Connection, ConnectionRegistry, new_id
from pygw.lambda_client import invocation_url, invoke
from pygw.observe.metrics import CounterChild, HistogramChild, Metrics
from pygw.pipeline import Stage
from pygw.request import Request
from pygw.response import Response, UpgradedResponse

__all__ = [
    "Event",
    "EventFormat",
    "Outcome",
    "Session",
    "WebSocketApiIntegration",
    "WsRoute",
    "build_websocket_api",
    "select_route",
]

log = logging.getLogger("pygw.websocket")

CONNECT: Final = "$connect"
DISCONNECT: Final = "$disconnect"
DEFAULT: Final = "$default"
_JSON: Final = "application/json"
_MAX_HEARTBEAT_S: Final = 30.0
_MIN_PENDING_BYTES: Final = 1024 * 1024
_STAGE_VARIABLE = re.compile(r"\$\{stageVariables\.([A-Za-z0-9_.\-]+)\}")
# Headers that describe the client's hop to the gateway, not something an upstream should see.
_NOT_FORWARDED: Final = frozenset(
    {
        "connection",
        "upgrade",
        "host",
        "content-length",
        "transfer-encoding",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)


class IntegrationFailed(Exception):
    """A route's integration raised, answered malformed or could not be reached."""


class IntegrationTimedOut(Exception):
    pass


@dataclass(slots=True)
class Outcome:
    status: int
    body: bytes | None  # None: nothing to send back


@dataclass(slots=True)
class Session:
    """What every event of one connection repeats."""

    connection_id: str
    connected_at_ms: int
    source_ip: str
    user_agent: str
    domain_name: str
    request: Request
    authorizer: dict[str, Any] | None = None
    throttle: Throttle | None = None
    buckets: dict[str, list[int]] = field(default_factory=dict)


@dataclass(slots=True)
class Event:
    route_key: str
    event_type: str  # CONNECT | MESSAGE | DISCONNECT
    request_id: str
    session: Session
    message: str | bytes | None = None
    message_id: str | None = None
    close_code: int | None = None
    close_reason: str | None = None


class Target(Protocol):
    async def __call__(self, event: Event) -> Outcome: ...

    async def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Events in AWS's WebSocket format


def _authorizer_view(found: Mapping[str, Any]) -> dict[str, Any]:
    jwt = found.get("jwt")
    if isinstance(jwt, Mapping):
        return {"jwt": {"claims": dict(jwt.get("claims") or {}), "scopes": jwt.get("scopes")}}
    # WebSocket APIs pass a Lambda authorizer's context on as REST APIs do: stringified, beside
    # principalId and integrationLatency.
    return rest_authorizer(found)


class EventFormat:
    def __init__(self, api_name: str, stage: str, stage_variables: Mapping[str, str]) -> None:
        self.api_id = api_id_for(api_name)
        self.stage = stage
        self.stage_variables = dict(stage_variables)

    def build(self, event: Event, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        session = event.session
        context: dict[str, Any] = {
            "routeKey": event.route_key,
            "eventType": event.event_type,
            "extendedRequestId": event.request_id,
            "requestTime": request_time(now),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": session.connected_at_ms,
            "requestTimeEpoch": int(now * 1000),
            "identity": {"sourceIp": session.source_ip, "userAgent": session.user_agent},
            "requestId": event.request_id,
            "domainName": session.domain_name,
            "connectionId": session.connection_id,
            "apiId": self.api_id,
        }
        if event.message_id is not None:
            context["messageId"] = event.message_id
        if event.event_type == "DISCONNECT":
            context["disconnectStatusCode"] = event.close_code
            context["disconnectReason"] = event.close_reason or ""
        if session.authorizer is not None:
            context["authorizer"] = _authorizer_view(session.authorizer)
        out: dict[str, Any] = {}
        if event.event_type == "CONNECT":
            request = session.request
            single: dict[str, str] = {}
            multi: dict[str, list[str]] = {}
            for name, value in request.headers.items():
                single[name] = value
                multi.setdefault(name, []).append(value)
            out["headers"] = single
            out["multiValueHeaders"] = multi
            if request.query_string:
                query: dict[str, str] = {}
                multi_query: dict[str, list[str]] = {}
                for key, value in request.query.items():
                    query[key] = value
                    multi_query.setdefault(key, []).append(value)
                out["queryStringParameters"] = query
                out["multiValueQueryStringParameters"] = multi_query
        out["requestContext"] = context
        if self.stage_variables:
            out["stageVariables"] = dict(self.stage_variables)
        message = event.message
        if message is not None:
            if isinstance(message, str):
                out["body"] = message
                out["isBase64Encoded"] = False
            else:
                out["body"] = base64.b64encode(message).decode()
                out["isBase64Encoded"] = True
        else:
            out["isBase64Encoded"] = False
        return out


# ---------------------------------------------------------------------------------------------
# Route targets


def _is_async(handler: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(handler):
        return True
    call = inspect.getattr_static(type(handler), "__call__", None)
    return inspect.iscoroutinefunction(call)


class _LambdaTarget:
    """Runs a function on the WebSocket event and reads its result as API Gateway does; the
    subclasses say how the function is invoked."""

    def __init__(self, events: EventFormat, timeout_ms: int, name: str) -> None:
        self._events = events
        self._timeout_ms = timeout_ms
        self._name = name
        day = time.strftime("%Y/%m/%d", time.gmtime())
        self._log_stream = f"{day}/[$LATEST]{new_id()}"

    async def __call__(self, event: Event) -> Outcome:
        payload = self._events.build(event)
        try:
            result = await asyncio.wait_for(self._run(payload, event), self._timeout_ms / 1000.0)
        except TimeoutError:
            log.warning(
                "connection %s: function %s timed out on %s",
                event.session.connection_id,
                self._name,
                event.route_key,
            )
            raise IntegrationTimedOut from None
        except Exception as broken:
            log.exception(
                "connection %s: function %s failed on %s",
                event.session.connection_id,
                self._name,
                event.route_key,
            )
            raise IntegrationFailed from broken
        if result is None:
            return Outcome(200, None)
        try:
            read = read_result_v2(result)
        except MalformedResult as bad:
            log.error("function %s returned a malformed result: %s", self._name, bad)
            raise IntegrationFailed from None
        return Outcome(read.status, read.body)

    async def _run(self, payload: dict[str, Any], event: Event) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class FunctionTarget(_LambdaTarget):
    """A local callable invoked with the WebSocket event, as Lambda would invoke it."""

    def __init__(
        self, handler: Callable[..., Any], events: EventFormat, timeout_ms: int, name: str
    ) -> None:
        super().__init__(events, timeout_ms, name)
        self._handler = handler
        self._async = _is_async(handler)
        self._executor = None if self._async else shared_executor()

    async def _run(self, payload: dict[str, Any], event: Event) -> Any:
        context = LambdaContext(event.request_id, self._name, self._timeout_ms, self._log_stream)
        if self._async:
            return await self._handler(payload, context)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._handler, payload, context)


class InvokeTarget(_LambdaTarget):
    """A function behind the Lambda Invoke API (a `lambda` integration), any language."""

    def __init__(
        self, url: str, events: EventFormat, timeout_ms: int, name: str, max_connections: int
    ) -> None:
        super().__init__(events, timeout_ms, name)
        self._url = url
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def _run(self, payload: dict[str, Any], event: Event) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return await invoke(self._session, self._url, payload, event.request_id)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpTarget:
    """Each event POSTed to an upstream; its status decides $connect, its body is the reply."""

    def __init__(self, uri: str, timeout_ms: int, connect_timeout_ms: int) -> None:
        self._uri = uri
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_ms / 1000.0, connect=connect_timeout_ms / 1000.0
        )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def __call__(self, event: Event) -> Outcome:
        session = event.session
        headers: CIMultiDict[str] = CIMultiDict()
        if event.event_type == "CONNECT":
            for name, value in session.request.headers.items():
                if name.lower() not in _NOT_FORWARDED:
                    headers.add(name, value)
        headers["connectionId"] = session.connection_id
        headers["x-pygw-event-type"] = event.event_type
        headers["x-pygw-route-key"] = event.route_key
        headers["x-request-id"] = event.request_id
        headers["X-Forwarded-For"] = session.source_ip
        body = b""
        message = event.message
        if isinstance(message, str):
            body = message.encode()
            headers["Content-Type"] = "application/json; charset=utf-8"
        elif isinstance(message, bytes):
            body = message
            headers["Content-Type"] = "application/octet-stream"
        uri = self._uri
        if event.event_type == "CONNECT" and session.request.query_string:
            uri = f"{uri}{'&' if '?' in uri else '?'}{session.request.query_string}"
        try:
            async with self._client().post(uri, data=body, headers=headers) as response:
                answer = await response.read()
                return Outcome(response.status, answer)
        except TimeoutError:
            raise IntegrationTimedOut from None
        except aiohttp.ClientError as failed:
            log.warning("connection %s: upstream %s failed: %s", session.connection_id, uri, failed)
            raise IntegrationFailed from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class MockTarget:
    def __init__(self, status: int, body: bytes) -> None:
        self._outcome = Outcome(status, body)

    async def __call__(self, event: Event) -> Outcome:
        return self._outcome

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------------------------------------
# Routes and route selection


@dataclass(frozen=True, slots=True)
class WsRoute:
    key: str
    target: Target
    route_response: bool
    auth: Stage | None


def _selection_path(expression: str) -> tuple[str, ...]:
    prefix = "$request.body."
    if not expression.startswith(prefix) or len(expression) == len(prefix):
        raise ValueError(f"route_selection {expression!r} is not $request.body.FIELD")
    return tuple(expression[len(prefix) :].split("."))


def select_route(text: str | bytes, path: tuple[str, ...]) -> str | None:
    """The value `$request.body.<path>` selects in a message, or None (not JSON, no such field,
    not a string)."""
    try:
        found: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    for part in path:
        if not isinstance(found, dict):
            return None
        found = found.get(part)
    return found if isinstance(found, str) else None


def _frame(message: str, session: Session, request_id: str) -> str:
    return orjson.dumps(
        {"message": message, "connectionId": session.connection_id, "requestId": request_id}
    ).decode()


def _as_message(body: bytes) -> str | bytes:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body


# Status written to the access log for the messages the gateway answers itself.
_STATUS_OF: Final = {"no_route": 403, "throttled": 429, "error": 500, "timeout": 504}
_time_text: tuple[int, str] = (0, "")


def _now_text() -> str:
    """The access log's `time`, formatted once per second rather than once per message."""
    global _time_text
    now = int(time.time())
    if _time_text[0] != now:
        _time_text = (now, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)))
    return _time_text[1]


class _Telemetry:
    """Metrics and access-log lines of one WebSocket API mount. Label children are resolved
    once; the access log is looked up on the registry per event (the gateway attaches it
    after compiling) and is skipped entirely when there is none."""

    __slots__ = (
        "_client_errors",
        "_connects",
        "_integration_errors",
        "_latency",
        "_messages",
        "_metrics",
        "_registry",
        "api",
        "sent",
        "stage",
    )

    def __init__(
        self, api: str, stage: str, metrics: Metrics, registry: ConnectionRegistry
    ) -> None:
        self.api = api
        self.stage = stage
        self._metrics = metrics
        self._registry = registry
        self.sent: CounterChild = metrics.websocket_messages_sent.labels(api, stage)
        self._messages: dict[tuple[str, str], CounterChild] = {}
        self._latency: dict[str, HistogramChild] = {}
        self._connects: dict[str, CounterChild] = {}
        self._client_errors: dict[str, CounterChild] = {}
        self._integration_errors: dict[tuple[str, str], CounterChild] = {}

    def _count_message(self, route: str, outcome: str) -> None:
        child = self._messages.get((route, outcome))
        if child is None:
            child = self._metrics.websocket_messages.labels(self.api, self.stage, route, outcome)
            self._messages[(route, outcome)] = child
        child.value += 1.0

    def _observe(self, route: str, latency_s: float) -> None:
        child = self._latency.get(route)
        if child is None:
            child = self._metrics.websocket_integration_latency.labels(self.api, self.stage, route)
            self._latency[route] = child
        child.observe(latency_s)

    def client_error(self, reason: str) -> None:
        child = self._client_errors.get(reason)
        if child is None:
            child = self._metrics.websocket_client_errors.labels(self.api, self.stage, reason)
            self._client_errors[reason] = child
        child.value += 1.0

    def _integration_error(self, route: str, reason: str) -> None:
        child = self._integration_errors.get((route, reason))
        if child is None:
            child = self._metrics.websocket_integration_errors.labels(
                self.api, self.stage, route, reason
            )
            self._integration_errors[(route, reason)] = child
        child.value += 1.0

    def _write(
        self,
        session: Session,
        event_type: str,
        request_id: str,
        route: str | None,
        status: int | None,
        outcome: str,
        latency_s: float | None,
        **more: Any,
    ) -> None:
        access_log = self._registry.access_log
        if access_log is None:
            return
        record: dict[str, Any] = {
            "time": _now_text(),
            "request_id": request_id,
            "connection_id": session.connection_id,
            "event_type": event_type,
            "route": route,
            "status": status,
            "outcome": outcome,
            "integration_latency_ms": (
                round(latency_s * 1000.0, 3) if latency_s is not None else None
            ),
            "api": self.api,
            "stage": self.stage,
            "style": "websocket",
            "client_ip": session.source_ip,
        }
        record.update(more)
        access_log.write(record)

    def connect(
        self,
        session: Session,
        request_id: str,
        status: int,
        latency_s: float | None,
        failure: str | None = None,
    ) -> None:
        """`status` is what the client's handshake got (101 when upgraded). `failure`: why the
        gateway refused ("unauthorized" before the integration, "error"/"timeout" in it)."""
        accepted = status == 101
        outcome = "accepted" if accepted else "refused"
        child = self._connects.get(outcome)
        if child is None:
            child = self._metrics.websocket_connects.labels(self.api, self.stage, outcome)
            self._connects[outcome] = child
        child.value += 1.0
        if latency_s is not None:
            self._observe(CONNECT, latency_s)
        if failure == "unauthorized":
            self.client_error(failure)
        elif failure is not None:
            self._integration_error(CONNECT, failure)
        self._write(
            session,
            "CONNECT",
            request_id,
            CONNECT,
            status,
            failure or outcome,
            latency_s,
            user_agent=session.user_agent,
        )

    def message(
        self,
        session: Session,
        request_id: str,
        message_id: str | None,
        route: str,
        outcome: str,
        status: int,
        size: int,
        latency_s: float | None,
        response_bytes: int,
    ) -> None:
        self._count_message(route, outcome)
        if latency_s is not None:
            self._observe(route, latency_s)
        if outcome == "error" or outcome == "timeout":
            self._integration_error(route, outcome)
        elif outcome != "ok":
            self.client_error(outcome)
        if self._registry.access_log is not None:
            self._write(
                session,
                "MESSAGE",
                request_id,
                route,
                status,
                outcome,
                latency_s,
                message_id=message_id,
                bytes=size,
                response_bytes=response_bytes,
            )

    def disconnect(
        self,
        session: Session,
        request_id: str,
        close_code: int,
        reason: str,
        route: str | None,
        status: int | None,
        outcome: str,
        latency_s: float | None,
    ) -> None:
        if close_code == 1009:
            # aiohttp refused a message over max_message_bytes and closed the connection.
            self.client_error("too_large")
        if latency_s is not None and route is not None:
            self._observe(route, latency_s)
        if outcome == "error" or outcome == "timeout":
            self._integration_error(DISCONNECT, outcome)
        self._write(
            session,
            "DISCONNECT",
            request_id,
            route,
            status,
            outcome,
            latency_s,
            close_code=close_code,
            reason=reason,
            duration_ms=int(time.time() * 1000) - session.connected_at_ms,
        )


# ---------------------------------------------------------------------------------------------
# The integration


class WebSocketApiIntegration:
    """Upgrades, routes and limits the connections of one WebSocket API mount."""

    def __init__(
        self,
        *,
        api_name: str,
        stage: str,
        routes: Mapping[str, WsRoute],
        selection: tuple[str, ...],
        registry: ConnectionRegistry,
        idle_timeout_s: float,
        max_duration_s: float,
        max_message_bytes: int,
        route_throttles: Mapping[str, tuple[float, int]] | None = None,
        stage_throttle: tuple[float, int] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.api_name = api_name
        self.stage = stage
        self._routes = dict(routes)
        self._connect = self._routes.get(CONNECT)
        self._disconnect = self._routes.get(DISCONNECT)
        self._default = self._routes.get(DEFAULT)
        self._selection = selection
        self._registry = registry
        self._idle_s = idle_timeout_s
        self._max_duration_s = max_duration_s
        self._max_message = max_message_bytes
        self._max_pending = max(4 * max_message_bytes, _MIN_PENDING_BYTES)
        self._heartbeat_s = min(_MAX_HEARTBEAT_S, idle_timeout_s / 2.0)
        self._route_throttles = dict(route_throttles or {})
        self._stage_throttle = stage_throttle
        self._telemetry = _Telemetry(api_name, stage, metrics or Metrics(), registry)
        self._live = 0
        self._closed = False
        self._ending: set[asyncio.Task[None]] = set()

    @property
    def live_connections(self) -> int:
        return self._live

    # Per-connection throttle buckets: created only for APIs that configure a throttle.
    def _throttle_for(self, session: Session) -> None:
        if not self._route_throttles and self._stage_throttle is None:
            return
        throttle = Throttle()
        common: list[int] = []
        if self._stage_throttle is not None:
            common.append(throttle.add_bucket(*self._stage_throttle))
        buckets: dict[str, list[int]] = {}
        for key in self._routes:
            if key in (CONNECT, DISCONNECT):
                continue
            limits = self._route_throttles.get(key)
            ids = [*common, throttle.add_bucket(*limits)] if limits is not None else common
            if ids:
                buckets[key] = ids
        session.throttle = throttle
        session.buckets = buckets

    async def __call__(self, ctx: RequestContext) -> Response:
        request = ctx.request
        handshake = request.upgrade
        ws = web.WebSocketResponse(
            heartbeat=self._heartbeat_s,
            max_msg_size=self._max_message,
            autoping=True,
            # permessage-deflate keeps a zlib context per direction and connection: too much
            # memory for many mostly idle connections.
            compress=False,
        )
        if handshake is None or not ws.can_prepare(handshake).ok:
            return self._upgrade_required(ctx)
        now = time.time()
        session = Session(
            connection_id=self._registry.new_connection_id(),
            connected_at_ms=int(now * 1000),
            source_ip=ctx.client_ip,
            user_agent=request.headers.get("User-Agent", ""),
            domain_name=_domain(request.headers.get("Host", "")),
            request=request,
        )
        telemetry = self._telemetry
        connect = self._connect
        connect_latency_s: float | None = None
        if connect is not None:
            if connect.auth is not None:
                ctx.connection_id = session.connection_id
                ctx.connected_at_ms = session.connected_at_ms
                try:
                    await connect.auth(ctx)  # a refusal raises GatewayError: the handshake fails
                except GatewayError as refusal:
                    status = gateway_response(refusal.error, Style.WEBSOCKET).status
                    failure = "unauthorized" if status < 500 else "error"
                    telemetry.connect(session, ctx.request_id, status, None, failure)
                    raise
                found = ctx.authorizer
                if isinstance(found, dict):
                    session.authorizer = found
            event = Event(CONNECT, "CONNECT", ctx.request_id, session)
            started = time.perf_counter()
            try:
                outcome = await connect.target(event)
            except (IntegrationTimedOut, IntegrationFailed) as failed:
                timed_out = isinstance(failed, IntegrationTimedOut)
                error = (
                    ErrorType.INTEGRATION_TIMEOUT if timed_out else ErrorType.INTEGRATION_FAILURE
                )
                ctx.integration_latency_s = time.perf_counter() - started
                telemetry.connect(
                    session,
                    ctx.request_id,
                    gateway_response(error, Style.WEBSOCKET).status,
                    ctx.integration_latency_s,
                    "timeout" if timed_out else "error",
                )
                raise GatewayError(error) from None
            connect_latency_s = ctx.integration_latency_s = time.perf_counter() - started
            if not 200 <= outcome.status < 300:
                refused = Response(
                    status=outcome.status,
                    body=outcome.body or None,
                    content_type=_JSON if outcome.body else None,
                )
                ctx.apply_response_headers(refused)
                telemetry.connect(session, ctx.request_id, outcome.status, connect_latency_s)
                return refused
        self._throttle_for(session)
        ctx.apply_response_headers(ws)
        await ws.prepare(handshake)
        telemetry.connect(session, ctx.request_id, 101, connect_latency_s)
        connection = Connection(
            session.connection_id,
            ws,
            source_ip=session.source_ip,
            user_agent=session.user_agent,
            connected_at_ms=session.connected_at_ms,
            max_post_bytes=self._max_message,
            sent=telemetry.sent,
        )
        self._registry.add(connection)
        self._live += 1
        log.debug("connection %s opened on %s/%s", connection.id, self.api_name, self.stage)
        close_reason = ""
        # aiohttp's close code after a protocol error (1009: too long) is 1006 once the client
        # drops the connection; the code the gateway closed with is the one that explains it.
        error_code: int | None = None
        try:
            close_reason, error_code = await self._serve(ws, connection, session)
        finally:
            self._registry.remove(connection.id)
            self._live -= 1
            connection.closing = True
            code = error_code if error_code is not None else ws.close_code
            # A client dropping its TCP connection cancels this handler (the gateway's server
            # cancels handlers of lost connections): $disconnect must run all the same.
            ending = asyncio.get_running_loop().create_task(
                self._ended(session, code, close_reason)
            )
            self._ending.add(ending)
            ending.add_done_callback(self._ending.discard)
            await asyncio.shield(ending)
        return UpgradedResponse(ws)

    async def _ended(self, session: Session, code: int | None, reason: str) -> None:
        await self._disconnected(session, code, reason)
        if self._closed and self._live == 0:
            await self._close_targets()

    def _upgrade_required(self, ctx: RequestContext) -> Response:
        response = Response(
            status=426,
            body=orjson.dumps({"message": "Upgrade Required"}),
            content_type=_JSON,
            headers={"Upgrade": "websocket", "Sec-WebSocket-Version": "13"},
        )
        ctx.apply_response_headers(response)
        return response

    async def _serve(
        self, ws: web.WebSocketResponse, connection: Connection, session: Session
    ) -> tuple[str, int | None]:
        loop = asyncio.get_running_loop()
        watch = _Watchdog(loop, connection, self._idle_s, self._max_duration_s)
        pending: collections.deque[tuple[str, str | bytes, str]] = collections.deque()
        state = _Pending()
        try:
            while True:
                msg = await ws.receive()
                kind = msg.type
                if kind is web.WSMsgType.TEXT or kind is web.WSMsgType.BINARY:
                    watch.active = loop.time()
                    connection.touch()
                    data: str | bytes = msg.data
                    self._accept(connection, session, data, pending, state)
                elif kind is web.WSMsgType.ERROR:
                    error = msg.data
                    code = error.code if isinstance(error, aiohttp.WebSocketError) else None
                    return (str(error) if error is not None else "Error"), code
                elif watch.reason:
                    return watch.reason, None
                else:
                    closed = "Closed" if connection.closing else "Client closed the connection"
                    return closed, None
        finally:
            watch.cancel()

    def _route_for(self, data: str | bytes) -> WsRoute | None:
        key = select_route(data, self._selection) if self._selection else None
        if key is not None and key not in (CONNECT, DISCONNECT):
            found = self._routes.get(key)
            if found is not None:
                return found
        return self._default

    def _accept(
        self,
        connection: Connection,
        session: Session,
        data: str | bytes,
        pending: collections.deque[tuple[str, str | bytes, str]],
        state: _Pending,
    ) -> None:
        request_id = new_id()
        route = self._route_for(data)
        if route is None:
            self._refuse(connection, session, request_id, DEFAULT, "no_route", len(data))
            return
        throttle = session.throttle
        if throttle is not None:
            buckets = session.buckets.get(route.key)
            if buckets and throttle.acquire(buckets)[0] != GRANTED:
                self._refuse(connection, session, request_id, route.key, "throttled", len(data))
                return
        size = len(data)
        if state.bytes + size > self._max_pending:
            self._refuse(connection, session, request_id, route.key, "throttled", size)
            return
        pending.append((route.key, data, request_id))
        state.bytes += size
        if not state.running:
            state.running = True
            asyncio.get_running_loop().create_task(self._work(connection, session, pending, state))

    def _refuse(
        self,
        connection: Connection,
        session: Session,
        request_id: str,
        route_key: str,
        outcome: str,
        size: int,
    ) -> None:
        frame = _frame(
            "Forbidden" if outcome == "no_route" else "Too Many Requests", session, request_id
        )
        connection.enqueue(frame)
        self._telemetry.message(
            session,
            request_id,
            None,
            route_key,
            outcome,
            _STATUS_OF[outcome],
            size,
            None,
            len(frame),
        )

    async def _work(
        self,
        connection: Connection,
        session: Session,
        pending: collections.deque[tuple[str, str | bytes, str]],
        state: _Pending,
    ) -> None:
        try:
            while pending:
                key, data, request_id = pending.popleft()
                state.bytes -= len(data)
                if connection.closing or connection.ws.closed:
                    continue
                await self._message(connection, session, self._routes[key], data, request_id)
        finally:
            pending.clear()
            state.bytes = 0
            state.running = False

    async def _message(
        self,
        connection: Connection,
        session: Session,
        route: WsRoute,
        data: str | bytes,
        request_id: str,
    ) -> None:
        message_id = new_id()
        event = Event(route.key, "MESSAGE", request_id, session, data, message_id)
        started = time.perf_counter()
        reply: str | bytes | None = None
        status = 200
        try:
            outcome = await route.target(event)
        except IntegrationTimedOut:
            reply = _frame("Endpoint request timed out", session, request_id)
            result = "timeout"
        except IntegrationFailed:
            reply = _frame("Internal server error", session, request_id)
            result = "error"
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("connection %s: route %s failed", session.connection_id, route.key)
            reply = _frame("Internal server error", session, request_id)
            result = "error"
        else:
            result = "ok"
            status = outcome.status
            if route.route_response and outcome.body:
                reply = _as_message(outcome.body)
        latency_s = time.perf_counter() - started
        if reply is not None:
            connection.enqueue(reply)
        self._telemetry.message(
            session,
            request_id,
            message_id,
            route.key,
            result,
            status if result == "ok" else _STATUS_OF[result],
            len(data),
            latency_s,
            len(reply) if reply is not None else 0,
        )

    async def _disconnected(self, session: Session, code: int | None, reason: str) -> None:
        route = self._disconnect
        close_code = code if code is not None else 1005
        request_id = new_id()
        if route is None:
            self._telemetry.disconnect(
                session, request_id, close_code, reason, None, None, "closed", None
            )
            return
        event = Event(
            DISCONNECT,
            "DISCONNECT",
            request_id,
            session,
            close_code=close_code,
            close_reason=reason,
        )
        started = time.perf_counter()
        status: int | None = None
        try:
            status = (await route.target(event)).status
            outcome = "ok"
        except IntegrationTimedOut:
            outcome = "timeout"
        except IntegrationFailed:
            outcome = "error"
        except Exception:
            log.exception("connection %s: $disconnect failed", session.connection_id)
            outcome = "error"
        self._telemetry.disconnect(
            session,
            request_id,
            close_code,
            reason,
            DISCONNECT,
            status,
            outcome,
            time.perf_counter() - started,
        )

    async def _close_targets(self) -> None:
        await asyncio.gather(*(route.target.close() for route in self._routes.values()))

    async def close(self) -> None:
        """A retired snapshot: live connections keep their targets until they end."""
        self._closed = True
        if self._live == 0:
            await self._close_targets()


class _Watchdog:
    """Closes a connection idle for `idle_s` or open for `max_s`, with 1001 as AWS does. One
    timer per connection, moved only when it fires: activity is a float written per message."""

    __slots__ = ("_connection", "_end", "_handle", "_idle_s", "_loop", "active", "reason")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        connection: Connection,
        idle_s: float,
        max_s: float,
    ) -> None:
        now = loop.time()
        self._loop = loop
        self._connection = connection
        self._idle_s = idle_s
        self._end = now + max_s
        self.active = now
        self.reason = ""
        self._handle: asyncio.TimerHandle | None = loop.call_at(
            min(now + idle_s, self._end), self._check
        )

    def _check(self) -> None:
        now = self._loop.time()
        if now >= self._end:
            self.reason = "Going away (maximum connection duration)"
        elif now >= self.active + self._idle_s:
            self.reason = "Going away (idle timeout)"
        else:
            self._handle = self._loop.call_at(
                min(self.active + self._idle_s, self._end), self._check
            )
            return
        self._handle = None
        self._connection.request_close(1001, "Going away")

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


@dataclass(slots=True)
class _Pending:
    bytes: int = 0
    running: bool = False


def _domain(host: str) -> str:
    # Kept as the client sent it, port included: handlers build the @connections endpoint from
    # it (`https://{domainName}/{stage}`), which must reach this listener.
    return host or "localhost"


# ---------------------------------------------------------------------------------------------
# Building from the config


def _substitute(text: str, variables: Mapping[str, str], where: str) -> str:
    def replace(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in variables:
            raise ValueError(f"{where}: stage has no variable {name!r}")
        return variables[name]

    return _STAGE_VARIABLE.sub(replace, text)


def _target(
    key: str,
    route: RouteConfig,
    events: EventFormat,
    variables: Mapping[str, str],
    loaded: LoadedConfig,
) -> Target:
    spec: Any = route.integration
    kind = spec.type
    if kind == "function":
        os.environ.update(spec.environment)
        own = [loaded.resolve(p) for p in spec.python_path]
        handler = load_handler(spec.handler, [*own, *loaded.python_paths()])
        name = spec.function_name or spec.handler.replace(":", "-").replace(".", "-")
        return FunctionTarget(handler, events, spec.timeout_ms, name)
    if kind == "lambda":
        url = invocation_url(spec.endpoint, spec.function_name, spec.qualifier)
        return InvokeTarget(url, events, spec.timeout_ms, spec.function_name, spec.max_connections)
    if kind == "http_proxy":
        uri = spec.uri
        if uri is None and spec.targets:
            uri = spec.targets[0].url
        if not uri:
            raise ValueError(f"route {key!r}: http_proxy needs a uri")
        uri = _substitute(uri, variables, f"route {key!r}")
        if not re.match(r"^https?://", uri) or "{" in uri:
            raise ValueError(f"route {key!r}: uri {uri!r} is not a full http(s) URL")
        return HttpTarget(uri, spec.timeout_ms, spec.connect_timeout_ms)
    if kind == "mock":
        body, _ = spec.encoded_body()
        return MockTarget(spec.status, body)
    raise ValueError(f"route {key!r}: integration type {kind!r} is not available")


def _auth_stage(
    api_cfg: ApiConfig, route: RouteConfig, stage: str, loaded: LoadedConfig
) -> Stage | None:
    if route.authorizer is None:
        return None
    # Imported here: the authorizer stages import the config loader and are only needed by APIs
    # that authorise their $connect route.
    from pygw.stages.custom_auth import build_custom_auth_stage
    from pygw.stages.jwt_auth import build_jwt_stage

    authorizer: Any = api_cfg.authorizers[route.authorizer]
    try:
        if authorizer.type == "jwt":
            return build_jwt_stage(authorizer, route, loaded)
        return build_custom_auth_stage(authorizer, route, api_cfg, stage, loaded, CONNECT)
    except ValueError as bad:
        raise ValueError(f"authorizer {route.authorizer!r}: {bad}") from None


def build_websocket_api(
    api_cfg: ApiConfig,
    stage: str,
    loaded: LoadedConfig,
    registry: ConnectionRegistry,
    *,
    metrics: Metrics | None = None,
) -> WebSocketApiIntegration:
    """The integration serving one mount (API + stage). Raises ValueError, naming the route, for
    a handler that cannot be loaded, an unusable uri, an authorizer on a route other than
    $connect, or an unknown integration type.

    `metrics` receives the pygw_websocket_* families of this mount (a private set when None);
    the access log is the one `registry.access_log` holds when an event happens.
    """
    stage_cfg = api_cfg.stage(stage)
    variables: dict[str, str] = dict(stage_cfg.variables or {}) if stage_cfg is not None else {}
    events = EventFormat(api_cfg.name, stage, variables)
    routes: dict[str, WsRoute] = {}
    throttles: dict[str, tuple[float, int]] = {}
    for key, route in api_cfg.routes.items():
        if route.authorizer is not None and key != CONNECT:
            raise ValueError(
                f"route {key!r}: only $connect can have an authorizer in a WebSocket API"
            )
        try:
            target = _target(key, route, events, variables, loaded)
        except ValueError as bad:
            text = str(bad)
            raise ValueError(
                text if text.startswith("route ") else f"route {key!r}: {text}"
            ) from None
        auth = _auth_stage(api_cfg, route, stage, loaded) if key == CONNECT else None
        routes[key] = WsRoute(key, target, route.route_response, auth)
        if route.throttle is not None and key not in (CONNECT, DISCONNECT):
            throttles[key] = (float(route.throttle.rate), int(route.throttle.burst))
    stage_throttle = None
    if stage_cfg is not None and stage_cfg.throttle is not None:
        stage_throttle = (float(stage_cfg.throttle.rate), int(stage_cfg.throttle.burst))
    settings = api_cfg.websocket
    return WebSocketApiIntegration(
        api_name=api_cfg.name,
        stage=stage,
        routes=routes,
        selection=_selection_path(api_cfg.route_selection),
        registry=registry,
        idle_timeout_s=settings.idle_timeout_s,
        max_duration_s=settings.max_duration_s,
        max_message_bytes=settings.max_message_bytes,
        route_throttles=throttles,
        stage_throttle=stage_throttle,
        metrics=metrics,
    )
