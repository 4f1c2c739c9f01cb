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

Under ``pygw serve --workers N`` every worker holds its own connections. A worker's connection
ids carry its index (the first of the id's 11 bytes), so the supervisor's ``@connections`` API
forwards to the worker holding the id, and `send`, `describe` and `close` called in a worker for
a sibling's connection go to that sibling's private admin socket (`join_workers`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import orjson
from aiohttp import web

from pygw.admin_auth import bearer_matches

if TYPE_CHECKING:
    from pygw.observe.access_log import AccessLog
    from pygw.observe.metrics import CounterChild

__all__ = [
    "Connection",
    "ConnectionRegistry",
    "WorkerPeers",
    "connections",
    "join_workers",
    "management_error",
    "new_id",
    "worker_of",
]

log = logging.getLogger("pygw.websocket")

# Outbound bytes a connection may have queued before it counts as a slow consumer.
DEFAULT_MAX_QUEUED_BYTES: Final = 4 * 1024 * 1024
# AWS's limit for a message posted to a connection (and the default message size limit).
DEFAULT_MAX_POST_BYTES: Final = 128 * 1024
_JSON: Final = "application/json"
_ID_BYTES: Final = 11
# A sibling worker answering slower than this counts as unreachable for an in-process call.
_PEER_TIMEOUT_S: Final = 5.0

_current: ConnectionRegistry | None = None
_PeerCall = Coroutine[Any, Any, "tuple[int, bytes] | None"]


def new_id() -> str:
    """An id shaped like AWS's connection and request ids: 16 characters, URL-safe."""
    return base64.urlsafe_b64encode(os.urandom(_ID_BYTES)).decode()


@dataclass(frozen=True, slots=True)
class WorkerPeers:
    """This worker's index and every worker's private admin socket, by index."""

    index: int
    sockets: tuple[str, ...]


_peers: WorkerPeers | None = None


def join_workers(index: int, sockets: Sequence[str]) -> None:
    """Make this process worker `index` of `len(sockets)`: registries created afterwards tag
    their connection ids with the index and reach siblings' connections through `sockets`.
    Called by a supervised worker before its gateway starts."""
    global _peers
    if not 0 <= index < len(sockets) or len(sockets) > 256:
        raise ValueError(f"worker index {index} of {len(sockets)} does not fit a connection id")
    _peers = WorkerPeers(index, tuple(sockets))


def worker_of(connection_id: str) -> int | None:
    """The index of the worker that made a connection id (under `--workers N`), or None for
    something that is not a connection id."""
    try:
        raw = base64.urlsafe_b64decode(connection_id)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _ID_BYTES or base64.urlsafe_b64encode(raw).decode() != connection_id:
        return None
    return raw[0]


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
        "sent",
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
        sent: CounterChild | None = None,
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
        # Frames written to the client (pygw_websocket_messages_sent_total of its API).
        self.sent = sent
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
        sent = self.sent
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
                if sent is not None:
                    sent.value += 1.0
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
    `handle_admin`. `access_log`, when set, receives the WebSocket APIs' access-log lines.
    `peers` (default: what `join_workers` set) makes this a worker's registry.
    """

    def __init__(
        self,
        on_count: Callable[[int], None] | None = None,
        admin_token: str = "",
        peers: WorkerPeers | None = None,
    ) -> None:
        self._connections: dict[str, Connection] = {}
        self._on_count = on_count
        self.admin_token = admin_token
        self.access_log: AccessLog | None = None
        self._peers = peers if peers is not None else _peers
        self._peer_sessions: dict[int, aiohttp.ClientSession] = {}
        self._peer_calls: set[asyncio.Task[Any]] = set()
        self._stopped = False
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def install(self) -> None:
        """Make this the registry `connections()` returns to in-process handlers."""
        global _current
        _current = self

    def __len__(self) -> int:
        return len(self._connections)

    def ids(self) -> list[str]:
        return list(self._connections)

    def new_connection_id(self) -> str:
        """A fresh id; a worker's ids start with its index so the supervisor can find it."""
        peers = self._peers
        if peers is None:
            return new_id()
        raw = bytes((peers.index,)) + os.urandom(_ID_BYTES - 1)
        return base64.urlsafe_b64encode(raw).decode()

    def add(self, connection: Connection) -> None:
        self._connections[connection.id] = connection
        self._loop = connection.loop
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

    def _sibling(self, connection_id: str) -> int | None:
        """The index of the sibling worker holding `connection_id`, None when it is ours."""
        peers = self._peers
        if peers is None or connection_id in self._connections:
            return None
        index = worker_of(connection_id)
        if index is None or index == peers.index or index >= len(peers.sockets):
            return None
        return index

    # -- in-process calls (function handlers) ------------------------------------------------

    def send(self, connection_id: str, data: bytes | str) -> bool:
        """Queue one message (bytes valid as UTF-8 go as a text frame, others as binary).
        False when the connection is unknown or closed (the Management API's 410 Gone).
        Safe from any thread. A connection of a sibling worker is reached through its admin
        socket: from a thread this waits for the answer; on the event loop it cannot wait, so
        the message is sent in the background and True means "sent unless gone" (use
        `send_async` there)."""
        sibling = self._sibling(connection_id)
        if sibling is not None:
            body = data.encode() if isinstance(data, str) else bytes(data)
            return self._call_sibling(sibling, "POST", connection_id, body, 200)
        return self._send_local(connection_id, data)

    def describe(self, connection_id: str) -> dict[str, Any] | None:
        """connectedAt, lastActiveAt and identity, or None when unknown or closed. Safe from any
        thread; for a sibling's connection on the event loop use `describe_async`."""
        sibling = self._sibling(connection_id)
        if sibling is None:
            found = self._open(connection_id)
            return found.describe() if found is not None else None
        if self._on_own_loop():
            raise RuntimeError(
                f"connection {connection_id} is held by worker {sibling}: "
                "use `await describe_async(...)` on the event loop"
            )
        answer = self._wait(self._peer_request(sibling, "GET", connection_id, b""))
        if answer is None or answer[0] != 200:
            return None
        described: dict[str, Any] = orjson.loads(answer[1])
        return described

    def close(self, connection_id: str, code: int = 1000, reason: str = "") -> bool:
        """Close a connection (its $disconnect route runs). False when unknown or closed.
        Safe from any thread (a sibling's connection closes with 1000)."""
        sibling = self._sibling(connection_id)
        if sibling is not None:
            return self._call_sibling(sibling, "DELETE", connection_id, b"", 204)
        found = self._open(connection_id)
        if found is None:
            return False
        _on_loop(found.loop, found.request_close, code, reason)
        return True

    async def send_async(self, connection_id: str, data: bytes | str) -> bool:
        """`send` for coroutines: waits for a sibling worker's answer without blocking."""
        sibling = self._sibling(connection_id)
        if sibling is None:
            return self._send_local(connection_id, data)
        body = data.encode() if isinstance(data, str) else bytes(data)
        answer = await self._peer_request_safe(sibling, "POST", connection_id, body)
        return answer is not None and answer[0] == 200

    async def describe_async(self, connection_id: str) -> dict[str, Any] | None:
        sibling = self._sibling(connection_id)
        if sibling is None:
            return self.describe(connection_id)
        answer = await self._peer_request_safe(sibling, "GET", connection_id, b"")
        if answer is None or answer[0] != 200:
            return None
        described: dict[str, Any] = orjson.loads(answer[1])
        return described

    async def close_async(self, connection_id: str) -> bool:
        sibling = self._sibling(connection_id)
        if sibling is None:
            return self.close(connection_id)
        answer = await self._peer_request_safe(sibling, "DELETE", connection_id, b"")
        return answer is not None and answer[0] == 204

    def _send_local(self, connection_id: str, data: bytes | str) -> bool:
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

    # -- sibling workers ---------------------------------------------------------------------

    def _on_own_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _call_sibling(
        self, index: int, method: str, connection_id: str, body: bytes, ok: int
    ) -> bool:
        call = self._peer_request_safe(index, method, connection_id, body)
        if self._on_own_loop():
            task = asyncio.get_running_loop().create_task(call)
            self._peer_calls.add(task)
            task.add_done_callback(self._peer_calls.discard)
            return True
        answer = self._wait(call)
        return answer is not None and answer[0] == ok

    def _wait(self, call: _PeerCall) -> tuple[int, bytes] | None:
        loop = self._loop
        if loop is None or loop.is_closed():
            call.close()
            return None
        future = asyncio.run_coroutine_threadsafe(call, loop)
        try:
            return future.result(_PEER_TIMEOUT_S + 1.0)
        except (TimeoutError, asyncio.CancelledError):
            future.cancel()
            return None

    async def _peer_request_safe(
        self, index: int, method: str, connection_id: str, body: bytes
    ) -> tuple[int, bytes] | None:
        try:
            return await self._peer_request(index, method, connection_id, body)
        except (aiohttp.ClientError, OSError, TimeoutError) as failed:
            # A sibling that cannot be reached has lost its connections (it died or is
            # restarting): the connection is gone either way.
            log.warning("worker %d unreachable for connection %s: %s", index, connection_id, failed)
            return None

    async def _peer_request(
        self, index: int, method: str, connection_id: str, body: bytes
    ) -> tuple[int, bytes] | None:
        peers = self._peers
        if peers is None or self._stopped:
            return None
        session = self._peer_sessions.get(index)
        if session is None or session.closed:
            # force_close: a restarted sibling listens on the same path, and a pooled
            # connection to its predecessor would fail the next call.
            connector = aiohttp.UnixConnector(path=peers.sockets[index], force_close=True)
            session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=_PEER_TIMEOUT_S)
            )
            self._peer_sessions[index] = session
        async with session.request(
            method, f"http://worker/@connections/{connection_id}", data=body or None
        ) as response:
            if response.status == 413:
                log.warning(
                    "connection %s: message refused by worker %d (too long)", connection_id, index
                )
            return response.status, await response.read()

    async def close_all(self, code: int = 1001, reason: str = "Going away") -> None:
        """Close every connection (on shutdown, before the server drains) and wait for them."""
        found = list(self._connections.values())
        for connection in found:
            connection.request_close(code, reason)
        for _ in range(100):
            if not self._connections:
                break
            await asyncio.sleep(0.05)
        self._stopped = True
        sessions = list(self._peer_sessions.values())
        self._peer_sessions.clear()
        for session in sessions:
            await session.close()

    # ---------------------------------------------------------------------------------------
    # The @connections API (admin listener): this process's connections only.

    async def handle_admin(self, request: web.Request) -> web.Response:
        """``POST|GET|DELETE /@connections/{connection_id}`` as AWS's Management API answers."""
        if self.admin_token and not bearer_matches(
            request.headers.get("Authorization"), self.admin_token
        ):
            return management_error(401, "Unauthorized", "UnauthorizedException")
        connection_id = request.match_info.get("connection_id") or request.path.rsplit("/", 1)[-1]
        method = request.method
        if method == "POST":
            found = self._open(connection_id)
            if found is None:
                return _gone()
            limit = found.max_post_bytes
            if request.content_length is not None and request.content_length > limit:
                return management_error(413, "Message too long", "PayloadTooLargeException")
            body = await request.content.read(limit + 1)
            if len(body) > limit:
                return management_error(413, "Message too long", "PayloadTooLargeException")
            if not self._send_local(connection_id, body):
                return _gone()
            return web.Response(status=200)
        if method == "GET":
            described = self._open(connection_id)
            if described is None:
                return _gone()
            return web.Response(body=orjson.dumps(described.describe()), content_type=_JSON)
        if method == "DELETE":
            closing = self._open(connection_id)
            if closing is None:
                return _gone()
            closing.request_close(1000, "")
            return web.Response(status=204)
        return management_error(405, "Method Not Allowed", None, {"Allow": "GET, POST, DELETE"})


def _on_loop(loop: asyncio.AbstractEventLoop, call: Callable[..., None], *args: Any) -> None:
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        call(*args)
    else:
        loop.call_soon_threadsafe(call, *args)


def management_error(
    status: int, message: str, error_type: str | None, headers: dict[str, str] | None = None
) -> web.Response:
    """An answer shaped like the Management API's errors (`x-amzn-ErrorType`)."""
    response = web.Response(
        status=status, body=orjson.dumps({"message": message}), content_type=_JSON
    )
    if error_type is not None:
        response.headers["x-amzn-ErrorType"] = error_type
    if headers:
        response.headers.update(headers)
    return response


def _gone() -> web.Response:
    return management_error(410, "Gone", "GoneException")


def connections() -> ConnectionRegistry:
    """The process's registry, for in-process handlers (raises RuntimeError before the gateway
    has built one)."""
    if _current is None:
        raise RuntimeError("no WebSocket connection registry in this process")
    return _current
