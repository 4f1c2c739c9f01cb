"""WebSocket APIs (`type: websocket`): one integration per API mount.

The runtime compiles each mount (base path + stage) into a single `$default` HTTP route whose
integration is a `WebSocketApiIntegration`, and hands it the message routes it compiled as for any
other API: each `WsRoute` carries its target (pygw.websocket.targets), its throttle stage (the
runtime's backend: local, shared memory or Redis) and, for $connect, its authorizer stage. It
upgrades the request itself and then runs the connection's message
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
connection whose client does not answer. Each message takes a token from the account's, the
stage's and its route's buckets, shared by every connection (and, with a shared state backend,
every worker and host) as AWS's limits are; a refusal answers "Too Many Requests". Messages of one
connection are handled in order, one at a time; a client that sends faster than its messages are
handled gets "Too Many Requests" frames once ``4 * max_message_bytes`` (at least 1 MiB) are
waiting.

Observability (`pygw.websocket.telemetry`): the pygw_websocket_* metric families, and, when the
gateway writes an access log, one line per CONNECT, routed MESSAGE and DISCONNECT (ids, route key,
status, outcome, integration latency, sizes; never a message body or a header).

Reads `ctx.authorizer` (set by the $connect authorizer; every event of the connection
carries it as ``requestContext.authorizer``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp
import orjson
from aiohttp import web

from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError, Style, gateway_response
from pygw.observe.metrics import Metrics
from pygw.pipeline import Stage
from pygw.response import Response, UpgradedResponse
from pygw.websocket.connections import Connection, ConnectionRegistry, new_id
from pygw.websocket.events import Event
from pygw.websocket.selection import CONNECT, DEFAULT, DISCONNECT, select_route
from pygw.websocket.session import Pending, Session, Watchdog, domain_name
from pygw.websocket.targets import IntegrationFailed, IntegrationTimedOut, Target
from pygw.websocket.telemetry import STATUS_OF, Telemetry

__all__ = ["WebSocketApiIntegration", "WsRoute"]

log = logging.getLogger("pygw.websocket")

_JSON: Final = "application/json"
_MAX_HEARTBEAT_S: Final = 30.0
_MIN_PENDING_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class WsRoute:
    key: str
    target: Target
    route_response: bool
    # $connect only: the route's authorizer, built by the runtime as for an HTTP route.
    auth: Stage | None = None
    # Message routes: the account's, stage's and route's buckets in the runtime's backend; it
    # raises GatewayError when a bucket refuses, and counts pygw_throttled_total{level}.
    throttle: Stage | None = None


def _frame(message: str, session: Session, request_id: str) -> str:
    return orjson.dumps(
        {"message": message, "connectionId": session.connection_id, "requestId": request_id}
    ).decode()


def _as_message(body: bytes) -> str | bytes:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body


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
        self._telemetry = Telemetry(api_name, stage, metrics or Metrics(), registry)
        self._live = 0
        self._closed = False
        self._ending: set[asyncio.Task[None]] = set()

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
            domain_name=domain_name(request.headers.get("Host", "")),
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
        watch = Watchdog(loop, connection, self._idle_s, self._max_duration_s)
        pending: collections.deque[tuple[str, str | bytes, str]] = collections.deque()
        state = Pending()
        try:
            while True:
                msg = await ws.receive()
                kind = msg.type
                if kind is web.WSMsgType.TEXT or kind is web.WSMsgType.BINARY:
                    watch.active = loop.time()
                    connection.touch()
                    data: str | bytes = msg.data
                    await self._accept(connection, session, data, pending, state)
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

    async def _accept(
        self,
        connection: Connection,
        session: Session,
        data: str | bytes,
        pending: collections.deque[tuple[str, str | bytes, str]],
        state: Pending,
    ) -> None:
        request_id = new_id()
        route = self._route_for(data)
        if route is None:
            self._refuse(connection, session, request_id, DEFAULT, "no_route", len(data))
            return
        throttle = route.throttle
        if throttle is not None:
            # Decided on arrival, in arrival order; the context only carries what the stage
            # reads and writes (the rate-limit headers it writes have nowhere to go).
            ctx = RequestContext(
                session.request, request_id, "", {}, {}, session.source_ip, time.perf_counter()
            )
            try:
                await throttle(ctx)
            except GatewayError:
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
            STATUS_OF[outcome],
            size,
            None,
            len(frame),
        )

    async def _work(
        self,
        connection: Connection,
        session: Session,
        pending: collections.deque[tuple[str, str | bytes, str]],
        state: Pending,
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
            status if result == "ok" else STATUS_OF[result],
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
