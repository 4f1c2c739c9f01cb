"""What a WebSocket route hands its events to: the `function`, `http_proxy` and `mock`
integrations as a message route runs them.

``function`` runs the handler through the same `LambdaRunner` as an HTTP route (one thread pool,
one timeout rule, one Lambda context class) with AWS's WebSocket event; ``lambda`` the same event
through the Lambda Invoke API. ``http_proxy`` POSTs each
event to ``uri`` (already substituted by the runtime) with the connection id in the
``connectionId`` header, the event type and route key in ``x-pygw-event-type`` /
``x-pygw-route-key``: one POST per event, not a relayed HTTP request, so it is a small client of
its own rather than the HTTP proxy, whose whole job is relaying a client's request. ``mock``
answers a fixed status and body.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiohttp
from multidict import CIMultiDict

from pygw._native import HOP_BY_HOP
from pygw.integrations.lambda_events import MalformedResult, read_result_v2
from pygw.lambda_client import invoke
from pygw.websocket.events import Event, EventFormat

__all__ = [
    "FunctionTarget",
    "HttpTarget",
    "IntegrationFailed",
    "IntegrationTimedOut",
    "InvokeApiRunner",
    "MockTarget",
    "Outcome",
    "Target",
]

log = logging.getLogger("pygw.websocket")

# The client's hop to the gateway and its handshake, not something an upstream should see.
_NOT_FORWARDED: Final = frozenset(name.decode("ascii") for name in HOP_BY_HOP) | {
    "host",
    "content-length",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
}


class IntegrationFailed(Exception):
    """A route's integration raised, answered malformed or could not be reached."""


class IntegrationTimedOut(Exception):
    pass


@dataclass(slots=True)
class Outcome:
    status: int
    body: bytes | None  # None: nothing to send back


class Target(Protocol):
    async def __call__(self, event: Event) -> Outcome: ...

    async def close(self) -> None: ...


class Invoker(Protocol):
    """Runs a function on an event within its timeout: `LambdaRunner` in process, or
    `InvokeApiRunner` through the Lambda Invoke API."""

    name: str

    async def run(self, event: dict[str, Any], request_id: str) -> Any: ...


class InvokeApiRunner:
    """A function behind the Lambda Invoke API (a `lambda` integration), any language."""

    def __init__(self, url: str, name: str, timeout_ms: int, max_connections: int) -> None:
        self._url = url
        self.name = name
        self._timeout_s = timeout_ms / 1000.0
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def run(self, event: dict[str, Any], request_id: str) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return await asyncio.wait_for(
            invoke(self._session, self._url, event, request_id), self._timeout_s
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class FunctionTarget:
    """A function invoked with the WebSocket event, as Lambda would invoke it."""

    def __init__(self, runner: Invoker, events: EventFormat) -> None:
        self._runner = runner
        self._events = events

    async def __call__(self, event: Event) -> Outcome:
        runner = self._runner
        try:
            result: Any = await runner.run(self._events.build(event), event.request_id)
        except TimeoutError:
            log.warning(
                "connection %s: function %s timed out on %s",
                event.session.connection_id,
                runner.name,
                event.route_key,
            )
            raise IntegrationTimedOut from None
        except Exception as broken:
            log.exception(
                "connection %s: function %s raised on %s",
                event.session.connection_id,
                runner.name,
                event.route_key,
            )
            raise IntegrationFailed from broken
        if result is None:
            return Outcome(200, None)
        try:
            read = read_result_v2(result)
        except MalformedResult as bad:
            log.error("function %s returned a malformed result: %s", runner.name, bad)
            raise IntegrationFailed from None
        return Outcome(read.status, read.body)

    async def close(self) -> None:
        if isinstance(self._runner, InvokeApiRunner):
            await self._runner.close()


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
