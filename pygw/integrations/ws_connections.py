"""Live WebSocket connections of this process, and the `@connections` API that reaches them.

Backends push to clients the way they would through AWS's API Gateway Management API:
``POST /@connections/{id}`` sends the request body as one message, ``GET`` describes the
connection, ``DELETE`` closes it; an unknown or closed id answers 410 Gone. In-process handlers
use the same registry directly (`connections()` returns it): ``send`` and ``close`` are safe to
call from any thread (sync function handlers run in a thread pool), so a handler broadcasting to
every member of a chat room needs no HTTP round trip.

Each connection has one outbound queue drained by one task, so a message is never interleaved
with another and order is kept per connection. The queue is bounded: a client that does not read
(or reads slower than it is written to) is disconnected with 1008 instead of holding the
gateway's memory.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
from aiohttp import web

__all__ = ["Connection", "ConnectionRegistry", "connections", "new_id"]

log = logging.getLogger("pygw.websocket")

# Outbound bytes a connection may have queued before it counts as a slow consumer.
DEFAULT_MAX_QUEUED_BYTES: Final = 4 * 1024 * 1024
# AWS's limit for a message posted to a connection (and the default message size limit).
DEFAULT_MAX_POST_BYTES: Final = 128 * 1024
_JSON: Final = "application/json"

_current: ConnectionRegistry | None = None


def new_id() -> str:
    """An id shaped like AWS's connection and request ids: 16 characters, URL-safe."""
    return base64.urlsafe_b64encode(os.urandom(11)).decode()


def _iso(epoch_ms: int) -> str:
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class Connection:
    """One upgraded client connection; created and owned by the WebSocket integration."""

    __slots__ = (
        "_draining",
        "_queue",
        "_queued_bytes",
        "closing",
        "connected_at_ms",
        "id",
        "last_active_at_ms",
        "loop",
        "max_post_bytes",
        "max_queued_bytes",
        "source_ip",
        "user_agent",
        "ws",
    )

    def __init__(
        self,
        connection_id: str,
        ws: web.WebSocketResponse,
        *,
        source_ip: str,
        user_agent: str,
        connected_at_ms: int,
        max_post_bytes: int = DEFAULT_MAX_POST_BYTES,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
    ) -> None:
        self.id = connection_id
        self.ws = ws
        self.loop = asyncio.get_running_loop()
        self.source_ip = source_ip
        self.user_agent = user_agent
        self.connected_at_ms = connected_at_ms
        self.last_active_at_ms = connected_at_ms
        self.max_post_bytes = max_post_bytes
        self.max_queued_bytes = max_queued_bytes
        self.closing = False
        self._queue: collections.deque[str | bytes] = collections.deque()
        self._queued_bytes = 0
        self._draining = False

    def touch(self) -> None:
        self.last_active_at_ms = int(time.time() * 1000)

    def describe(self) -> dict[str, Any]:
        # The field names of the Management API's GetConnection answer.
        return {
            "connectedAt": _iso(self.connected_at_ms),
            "identity": {"sourceIp": self.source_ip, "userAgent": self.user_agent},
            "lastActiveAt": _iso(self.last_active_at_ms),
        }

    # Everything below runs on the connection's loop.

    def enqueue(self, data: str | bytes) -> None:
        if self.closing or self.ws.closed:
            return
        size = len(data)
        if self._queued_bytes + size > self.max_queued_bytes:
            log.warning("connection %s: client is not reading, disconnecting", self.id)
            self.request_close(1008, "Slow consumer")
            return
        self._queue.append(data)
        self._queued_bytes += size
        if not self._draining:
            self._draining = True
            self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        ws = self.ws
        try:
            while self._queue:
                data = self._queue.popleft()
                self._queued_bytes -= len(data)
                if ws.closed:
                    break
                if isinstance(data, str):
                    await ws.send_str(data)
                else:
                    await ws.send_bytes(data)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            self._queue.clear()
            self._queued_bytes = 0
            self._draining = False

    def request_close(self, code: int = 1000, reason: str = "") -> None:
        if self.closing:
            return
        self.closing = True
        self.loop.create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=reason.encode())


class ConnectionRegistry:
    """Connections by id, for the process. One registry serves every WebSocket API and survives
    reloads (connections keep running on the snapshot they started on).

    `on_count` is called with the number of open connections whenever it changes (a gauge's
    ``set``). `admin_token`, when set, is required as ``Authorization: Bearer TOKEN`` by
    `handle_admin`.
    """

    def __init__(
        self,
        on_count: Callable[[int], None] | None = None,
        admin_token: str = "",
    ) -> None:
        self._connections: dict[str, Connection] = {}
        self._on_count = on_count
        self.admin_token = admin_token

    def install(self) -> None:
        """Make this the registry `connections()` returns to in-process handlers."""
        global _current
        _current = self

    def __len__(self) -> int:
        return len(self._connections)

    def ids(self) -> list[str]:
        return list(self._connections)

    def add(self, connection: Connection) -> None:
        self._connections[connection.id] = connection
        if self._on_count is not None:
            self._on_count(len(self._connections))

    def remove(self, connection_id: str) -> None:
        if self._connections.pop(connection_id, None) is not None and self._on_count is not None:
            self._on_count(len(self._connections))

    def get(self, connection_id: str) -> Connection | None:
        return self._connections.get(connection_id)

    def _open(self, connection_id: str) -> Connection | None:
        found = self._connections.get(connection_id)
        if found is None or found.closing or found.ws.closed:
            return None
        return found

    def send(self, connection_id: str, data: bytes | str) -> bool:
        """Queue one message (bytes valid as UTF-8 go as a text frame, others as binary).
        False when the connection is unknown or closed (the Management API's 410 Gone).
        Safe from any thread."""
        found = self._open(connection_id)
        if found is None:
            return False
        message: str | bytes = data
        if isinstance(data, bytes | bytearray | memoryview):
            raw = bytes(data)
            try:
                message = raw.decode("utf-8")
            except UnicodeDecodeError:
                message = raw
        _on_loop(found.loop, found.enqueue, message)
        return True

    def describe(self, connection_id: str) -> dict[str, Any] | None:
        found = self._open(connection_id)
        return found.describe() if found is not None else None

    def close(self, connection_id: str, code: int = 1000, reason: str = "") -> bool:
        """Close a connection (its $disconnect route runs). False when unknown or closed.
        Safe from any thread."""
        found = self._open(connection_id)
        if found is None:
            return False
        _on_loop(found.loop, found.request_close, code, reason)
        return True

    async def close_all(self, code: int = 1001, reason: str = "Going away") -> None:
        """Close every connection (on shutdown, before the server drains) and wait for them."""
        found = list(self._connections.values())
        for connection in found:
            connection.request_close(code, reason)
        for _ in range(100):
            if not self._connections:
                return
            await asyncio.sleep(0.05)

    # ---------------------------------------------------------------------------------------
    # The @connections API (admin listener)

    async def handle_admin(self, request: web.Request) -> web.Response:
        """``POST|GET|DELETE /@connections/{connection_id}`` as AWS's Management API answers."""
        if self.admin_token:
            offered = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(offered.encode(), self.admin_token.encode()):
                return _error(401, "Unauthorized", "UnauthorizedException")
        connection_id = request.match_info.get("connection_id") or request.path.rsplit("/", 1)[-1]
        method = request.method
        if method == "POST":
            found = self._open(connection_id)
            if found is None:
                return _gone()
            limit = found.max_post_bytes
            if request.content_length is not None and request.content_length > limit:
                return _error(413, "Message too long", "PayloadTooLargeException")
            body = await request.content.read(limit + 1)
            if len(body) > limit:
                return _error(413, "Message too long", "PayloadTooLargeException")
            if not self.send(connection_id, body):
                return _gone()
            return web.Response(status=200)
        if method == "GET":
            described = self.describe(connection_id)
            if described is None:
                return _gone()
            return web.Response(body=orjson.dumps(described), content_type=_JSON)
        if method == "DELETE":
            if not self.close(connection_id):
                return _gone()
            return web.Response(status=204)
        return _error(405, "Method Not Allowed", None, {"Allow": "GET, POST, DELETE"})


def _on_loop(loop: asyncio.AbstractEventLoop, call: Callable[..., None], *args: Any) -> None:
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        call(*args)
    else:
        loop.call_soon_threadsafe(call, *args)


def _error(
    status: int, message: str, error_type: str | None, headers: dict[str, str] | None = None
) -> web.Response:
    response = web.Response(
        status=status, body=orjson.dumps({"message": message}), content_type=_JSON
    )
    if error_type is not None:
        response.headers["x-amzn-ErrorType"] = error_type
    if headers:
        response.headers.update(headers)
    return response


def _gone() -> web.Response:
    return _error(410, "Gone", "GoneException")


def connections() -> ConnectionRegistry:
    """The process's registry, for in-process handlers (raises RuntimeError before the gateway
    has built one)."""
    if _current is None:
        raise RuntimeError("no WebSocket connection registry in this process")
    return _current
