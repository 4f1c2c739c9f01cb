"""The `http_proxy` integration: forwards requests to upstreams over pooled keep-alive connections.

The upstream leg is a small asyncio protocol whose responses httptools parses, not aiohttp's
ClientSession: on the hot path the client side of a proxy costs about twice what the server side
does, and a lean protocol triples throughput (DESIGN.md, "What the hot path costs"). What it
gives up (cookies, redirects, decompression, proxies) is what a reverse proxy must not do anyway.

Bodies stream both ways with bounded buffers: the upstream socket stops being read while more than
`_HIGH_WATER` bytes wait for a slow client, and the client's body is read chunk by chunk while the
upstream socket drains.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import ssl
import time
from collections.abc import Callable, Collection, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

import httptools
from yarl import URL

from pygw._native import (
    HOP_BY_HOP,
    TargetTemplate,
    header_block_size,
    is_framed,
    relayed_head,
    request_head_tail,
    whole_answer,
)
from pygw.codings import DecodedBody
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.integrations.ws_passthrough import WsPassthrough, is_websocket_upgrade
from pygw.pipeline import LeanSend, Outcome, StartLean
from pygw.request import BodyStream, RequestBody
from pygw.response import OneWriteResponse, Response, ResponseHead, ResponseStream

if TYPE_CHECKING:
    from pygw.upstream_tls import UpstreamTls

__all__ = ["HttpProxyIntegration"]

BALANCE_MODES: Final = ("round_robin", "least_request", "weighted")

# Retrying these cannot repeat a side effect the upstream has not already been asked to tolerate.
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Body mode for bytes a stage read (validation) or produced (a request template).
_BODY_BYTES: Final = 3

# Read-side flow control for response bodies: stop reading the upstream above this many buffered
# bytes; the consumer takes everything buffered at once, so reading resumes at zero.
_HIGH_WATER: Final = 256 * 1024
# An upstream answer's header block beyond this is a failed exchange (502), not relayed.
_MAX_RESPONSE_HEAD: Final = 64 * 1024
# Bytes that can never appear in a request target; escaped so no value can split the request line.
_UNSAFE_TARGET: Final = re.compile(rb"[\x00-\x20\x7f]")
_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")
_PARAM_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]+\+?")


# Bodies read from the client that can be buffered ahead (a tuple: isinstance with a union
# type costs more per request).
_PREFETCHABLE: Final = (RequestBody, DecodedBody)


class _ConnectFailedError(Exception):
    """No connection could be opened: nothing was sent, so another target may be tried."""


class _UpstreamBrokenError(Exception):
    """The upstream connection failed or stalled after the request was (partly) sent."""


def _escape_target(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match.group()[0]


# The values nearly every response carries, parsed once.
_COMMON_CONNECTION: Final = {
    b"keep-alive": frozenset({b"keep-alive"}),
    b"close": frozenset({b"close"}),
}


def _connection_named(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The (lower-cased) names an answer's Connection headers list: hop-by-hop for it."""
    named: frozenset[bytes] = frozenset()
    for name, value in headers:
        if name.lower() == b"connection":
            common = _COMMON_CONNECTION.get(value)
            tokens = (
                common
                if common is not None
                else frozenset(t.strip().lower() for t in value.split(b",") if t.strip())
            )
            named = named | tokens
    return named


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


class _Upstream(asyncio.Protocol):
    """One upstream connection, carrying one exchange at a time (no pipelining)."""

    def __init__(self, target: _Target, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.counted = False  # holds one of its target's connection slots
        self.active = False
        self.idle_since = 0.0
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.reading_paused = False
        self.renew_parser = False
        self.deadline = 0.0
        # The request this connection carries for HttpProxyIntegration.start_now, settled from
        # this protocol's callbacks (or the deadline sweep) rather than awaited.
        self.exchange: _Exchange | _LeanExchange | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        # (name, value) as received
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.head_ready = False
        self.done = False
        self.keep_alive = False
        self.exc: BaseException | None = None
        self.is_head = False
        self.informational = False
        self.until_eof = False
        self.received_any = False
        self.request_complete = False

    # -- exchange API ---------------------------------------------------------------------------

    def begin(self, is_head: bool) -> None:
        if self.renew_parser:
            # A HEAD response announced a body that never came: the old parser still expects it.
            self.parser = httptools.HttpResponseParser(self)
            self.renew_parser = False
        self.deadline = 0.0
        # _reset, inlined: every exchange passes here (the reason and the header list are
        # reset by on_message_begin, for the answers the callback parser reads).
        self.status = 0
        self.head_bytes = 0
        self.head_ready = False
        self.done = False
        self.keep_alive = False
        self.exc = None
        self.informational = False
        self.until_eof = False
        self.received_any = False
        self.request_complete = False
        self.chunks.clear()
        self.buffered = 0
        self.is_head = is_head
        self.active = True

    def reusable(self) -> bool:
        return (
            self.done
            and self.keep_alive
            and self.request_complete
            and self.exc is None
            and not self.closed
            and not self.chunks
        )

    async def wait_head(self, deadline: float) -> bool:
        """True once the response head is here, False if the exchange failed first; raises
        TimeoutError at `deadline` (loop time, kept by the target's deadline sweep)."""
        while not self.head_ready and self.exc is None and not self.closed:
            loop = self.loop
            if loop.time() >= deadline:
                raise TimeoutError
            fut = loop.create_future()
            self.waiter = fut
            self.deadline = deadline
            deadlines = self.target.deadlines
            deadlines.watch(self, loop)
            try:
                await fut
            finally:
                deadlines.waiting.discard(self)
                self.waiter = None
        return self.head_ready

    async def read(self, idle_timeout: float) -> bytes:
        """The next piece of the response body; b"" at its end."""
        chunks = self.chunks
        if not chunks:
            if self.done:
                return b""
            if self.exc is not None or self.closed:
                raise _UpstreamBrokenError(repr(self.exc))
            fut = self.loop.create_future()
            self.waiter = fut
            timer = self.loop.call_later(idle_timeout, _wake, fut)
            try:
                await fut
            finally:
                timer.cancel()
                self.waiter = None
            if not chunks:
                return self._end_of_body()
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()
        return data

    def _end_of_body(self) -> bytes:
        if self.done:
            return b""
        raise _UpstreamBrokenError(repr(self.exc) if self.exc else "body stalled")

    async def drain(self) -> None:
        while self.write_paused and not self.closed:
            fut = self.loop.create_future()
            self.drain_waiter = fut
            try:
                await fut
            finally:
                self.drain_waiter = None

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.active:
            # An idle connection has nothing to say; whatever this is, the connection is unusable.
            self.abort()
            return
        exchange = self.exchange
        if exchange is not None and not self.received_any and not self.is_head:
            # The usual answer, whole in this read: taken apart in one call, not by callbacks.
            whole = whole_answer(data, exchange.own, _MAX_RESPONSE_HEAD)
            if whole is not None:
                self.received_any = True
                exchange.answered(*whole)
                return
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            self.abort()
        else:
            if not self.head_ready:
                # A head still incomplete after this many bytes will not be relayed anyway.
                self.head_bytes += len(data)
                if self.head_bytes > _MAX_RESPONSE_HEAD:
                    self._fail(_UpstreamBrokenError("upstream response header block too large"))
                    self.abort()
        if self.exchange is not None:
            self._settle_exchange()

    def _settle_exchange(self) -> None:
        """Hands a started exchange on once its answer's head is here (with as much of the
        body as this read brought) or the exchange failed before it."""
        exchange = self.exchange
        if exchange is None:
            return
        if self.head_ready:
            exchange.headed()
        elif self.exc is not None or self.closed:
            exchange.failed()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.target.forget(self)
        if self.active and not self.done:
            if self.head_ready and self.until_eof and exc is None:
                self.done = True
                self.keep_alive = False
                _wake(self.waiter)
            else:
                self._fail(exc or ConnectionResetError("upstream closed the connection"))
        _wake(self.drain_waiter)
        if self.exchange is not None:
            self._settle_exchange()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        _wake(self.drain_waiter)

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.reason = b""
        self.headers = []

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if header_block_size(self.headers) > _MAX_RESPONSE_HEAD:
            # A header block no client should be sent (nginx's proxy_buffer_size: 4-8 KiB).
            raise _UpstreamBrokenError("upstream response header block too large")
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            # Interim responses (100 Continue, 103 Early Hints) are not relayed.
            self.informational = True
            return
        self.status = status
        self.head_ready = True
        if self.is_head:
            self.done = True
            self.keep_alive = self.parser.should_keep_alive()
            self.renew_parser = True
        elif status not in (204, 304):
            self.until_eof = not is_framed(self.headers)
        _wake(self.waiter)

    def on_body(self, body: bytes) -> None:
        if self.done or self.informational:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        _wake(self.waiter)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        if self.done:
            return
        self.done = True
        self.keep_alive = self.parser.should_keep_alive()
        _wake(self.waiter)

    def _fail(self, exc: BaseException) -> None:
        if self.exc is None:
            self.exc = exc
        _wake(self.waiter)


class _Exchange:
    """A request sent by HttpProxyIntegration.start_now, settled once from its connection's
    callbacks or the deadline sweep: the answer, a failure, or a coroutine to finish it."""

    __slots__ = ("conn", "ctx", "done", "integration", "own", "sent_at", "target")

    def __init__(
        self,
        integration: HttpProxyIntegration,
        conn: _Upstream,
        target: _Target,
        ctx: RequestContext,
        done: Callable[[Outcome], None],
        sent_at: float,
    ) -> None:
        self.integration = integration
        self.conn = conn
        self.target = target
        self.ctx = ctx
        self.done = done
        self.sent_at = sent_at
        # The headers whole_answer leaves out of the upstream's (the gateway sets them).
        self.own = ctx.response_headers

    def _end(self) -> None:
        conn = self.conn
        conn.exchange = None
        self.target.deadlines.waiting.discard(conn)

    def _arrived(self, status: int) -> None:
        """The answer's head came: the exchange leaves the deadline sweep, and its timing and
        the target's health are noted."""
        self._end()
        ctx = self.ctx
        ctx.integration_started = self.sent_at
        ctx.integration_latency_s = time.perf_counter() - self.sent_at
        ctx.integration_status = status
        self.integration._succeeded(self.target)

    def headed(self) -> None:
        """The answer's head is here: the whole answer when its body came with it."""
        conn = self.conn
        target = self.target
        ctx = self.ctx
        integration = self.integration
        self._arrived(conn.status)
        if conn.done and not conn.is_head and conn.status not in (204, 304):
            try:
                answer: Outcome = integration._respond_whole(ctx, conn, target)
            except Exception as failure:  # answered by the dispatcher, as an awaited one is
                target.release(conn, False)
                answer = failure
            target.in_flight -= 1
            self.done(answer)
        else:
            self.done(integration._relayed(ctx, conn, target))

    def answered(
        self, status: int, reason: bytes, head: ResponseHead, body: bytes, keep_alive: bool
    ) -> None:
        """The whole answer came in one read (pygw._native.whole_answer took it apart)."""
        conn = self.conn
        target = self.target
        self._arrived(status)
        conn.status = status
        conn.head_ready = conn.done = True
        conn.keep_alive = keep_alive
        # The exchange is complete and nothing is buffered: reusable() comes down to these.
        target.release(conn, keep_alive and conn.exc is None and not conn.closed)
        target.in_flight -= 1
        # No ctx.body_sink call: the body is not streamed, and the OneWriteResponse carries it.
        own = self.ctx.response_headers
        self.done(OneWriteResponse(status, head, body, own, reason))

    def failed(self) -> None:
        """No answer came: a pooled connection the upstream had just closed is not the
        target's fault, so a request that may be repeated goes the awaited way (which tries a
        fresh connection); any other is answered 502."""
        self._end()
        target = self.target
        target.in_flight -= 1
        target.release(self.conn, False)
        ctx = self.ctx
        if ctx.request.method in _IDEMPOTENT:
            self.done(self.integration(ctx))
            return
        self.integration._failed(target, self.conn.loop.time())
        self.done(GatewayError(ErrorType.UPSTREAM_FAILURE))

    def expired(self) -> None:
        """No head by the deadline: 504, as for an awaited exchange."""
        self._end()
        target = self.target
        target.in_flight -= 1
        self.integration._failed(target, self.conn.loop.time())
        target.release(self.conn, False)
        self.done(GatewayError(ErrorType.UPSTREAM_TIMEOUT))


class _LeanExchange:
    """A request sent by HttpProxyIntegration.start_lean: its whole answer goes to the client
    from here; anything else (an answer that is not whole in one read, a failure, no answer
    by the deadline) makes the request's objects after all and goes on as an _Exchange."""

    __slots__ = ("conn", "integration", "lean", "own", "sent_at", "target")

    def __init__(
        self,
        integration: HttpProxyIntegration,
        conn: _Upstream,
        target: _Target,
        lean: LeanSend,
        own: dict[str, str],
        sent_at: float,
    ) -> None:
        self.integration = integration
        self.conn = conn
        self.target = target
        self.lean = lean
        self.own = own
        self.sent_at = sent_at

    def answered(
        self, status: int, reason: bytes, head: ResponseHead, body: bytes, keep_alive: bool
    ) -> None:
        """The whole answer came in one read (as _Exchange.answered)."""
        conn = self.conn
        target = self.target
        conn.exchange = None
        target.deadlines.waiting.discard(conn)
        integration_s = time.perf_counter() - self.sent_at
        # _succeeded, inlined: every lean answer passes here.
        target.failures = 0
        target.probing = False
        conn.status = status
        conn.head_ready = conn.done = True
        conn.keep_alive = keep_alive
        target.release(conn, keep_alive and conn.exc is None and not conn.closed)
        target.in_flight -= 1
        self.lean.answered(status, reason, head, body, self.own, integration_s, status)

    def _as_exchange(self) -> _Exchange:
        ctx, done = self.lean.context()
        exchange = _Exchange(self.integration, self.conn, self.target, ctx, done, self.sent_at)
        self.conn.exchange = exchange
        return exchange

    def headed(self) -> None:
        self._as_exchange().headed()

    def failed(self) -> None:
        self._as_exchange().failed()

    def expired(self) -> None:
        self._as_exchange().expired()


class _HeadDeadlines:
    """Wakes the exchanges whose answer is overdue, by one sweep every `step_s` while any wait:
    a timer per request cost more than the rest of waiting for the answer. A deadline is kept
    to within `step_s` (an eighth of the timeout, at most 100 ms)."""

    def __init__(self, timeout_s: float) -> None:
        self.step_s = min(max(timeout_s / 8, 0.005), 0.1)
        self.waiting: set[_Upstream] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, conn: _Upstream, loop: asyncio.AbstractEventLoop) -> None:
        self.waiting.add(conn)
        if self._timer is None:
            self._timer = loop.call_later(self.step_s, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for conn in [c for c in self.waiting if c.deadline <= now]:
            exchange = conn.exchange
            if exchange is not None:
                exchange.expired()
            else:
                _wake(conn.waiter)
        self._timer = loop.call_later(self.step_s, self._sweep, loop) if self.waiting else None

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Target:
    """One upstream base URL: its connection pool, its balancing state and its passive health."""

    def __init__(
        self,
        base: str,
        weight: int,
        limit: int,
        deadlines: _HeadDeadlines,
        tls: UpstreamTls | None = None,
    ) -> None:
        url = URL(base)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"upstream target must be an http(s) URL with a host: {base!r}")
        if url.raw_query_string or url.raw_fragment:
            raise ValueError(f"upstream target must not carry a query or fragment: {base!r}")
        if weight <= 0:
            raise ValueError(f"target weight must be positive: {base!r} has {weight}")
        self.label = base
        self.host = url.host
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = None
        # SNI and the name the upstream's certificate must carry.
        self.server_name: str | None = None
        if url.scheme == "https":
            self.ssl = tls.context if tls is not None else ssl.create_default_context()
            server_name = tls.server_name if tls is not None else None
            self.server_name = server_name if server_name is not None else url.host
        elif tls is not None:
            raise ValueError(f"tls settings given for a plain http target: {base!r}")
        host = f"[{url.host}]" if ":" in url.host else url.host
        if url.explicit_port is not None:
            host = f"{host}:{url.explicit_port}"
        # Completes the request line and starts the header block.
        self.version_host = b" HTTP/1.1\r\nHost: " + host.encode(
            "ascii" if host.isascii() else "idna"
        )
        self.prefix = url.raw_path.rstrip("/").encode("ascii")
        # method -> `METHOD /base`, made once per method rather than concatenated per request.
        self._line_starts: dict[str, bytes] = {}
        self.deadlines = deadlines
        self.weight = weight
        self.current_weight = 0
        self.limit = limit
        self.open = 0
        self.idle: list[_Upstream] = []
        self.waiters: collections.deque[asyncio.Future[_Upstream | None]] = collections.deque()
        self.in_flight = 0
        self.failures = 0
        self.ejected_at = 0.0
        self.ejected_until = 0.0
        self.probing = False
        self.closed = False

    def request_head(self, method: str, target_path: bytes, tail: bytes) -> bytes:
        """The request line for `target_path` below the target's base, its Host line and
        `tail` (the rest of the header block)."""
        start = self._line_starts.get(method)
        if start is None:
            start = self._line_starts[method] = method.encode("ascii") + b" " + self.prefix
        return b"".join((start, target_path, self.version_host, tail))

    def take_idle(self, now: float, idle_max: float) -> _Upstream | None:
        """A pooled connection ready for reuse, if there is one (never waits)."""
        if self.closed:
            return None
        idle = self.idle
        while idle:
            conn = idle.pop()  # the most recently used one is the least likely to be stale
            if conn.closed:
                continue
            if now - conn.idle_since < idle_max:
                return conn
            conn.close()
        return None

    async def acquire(
        self, loop: asyncio.AbstractEventLoop, connect_timeout: float, idle_max: float
    ) -> tuple[_Upstream, bool]:
        """A connection and whether it was reused; waits in line when the limit is reached."""
        while True:
            if self.closed:
                raise _ConnectFailedError("integration closed")
            pooled = self.take_idle(loop.time(), idle_max)
            if pooled is not None:
                return pooled, True
            if self.open < self.limit:
                self.open += 1
                try:
                    return await self._connect(loop, connect_timeout), False
                except BaseException:
                    self.open -= 1
                    self._wake_one()
                    raise
            fut: asyncio.Future[_Upstream | None] = loop.create_future()
            self.waiters.append(fut)
            try:
                handed = await fut
            except BaseException:
                if fut.done() and not fut.cancelled() and (passed := fut.result()) is not None:
                    self.release(passed, True)
                else:
                    with contextlib.suppress(ValueError):
                        self.waiters.remove(fut)
                raise
            if handed is not None:
                return handed, True

    async def _connect(self, loop: asyncio.AbstractEventLoop, limit_s: float) -> _Upstream:
        try:
            async with asyncio.timeout(limit_s):
                _, proto = await loop.create_connection(
                    lambda: _Upstream(self, loop),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.server_name,
                )
        except TimeoutError as exc:
            raise _ConnectFailedError(f"connect to {self.label} timed out") from exc
        except OSError as exc:
            raise _ConnectFailedError(f"connect to {self.label} failed: {exc}") from exc
        if proto.closed:
            raise _ConnectFailedError(f"connection to {self.label} closed at once")
        proto.counted = True
        return proto

    def release(self, conn: _Upstream, reusable: bool) -> None:
        conn.active = False
        if not reusable or self.closed or conn.closed:
            # connection_lost gives the slot back and wakes a waiter.
            conn.close()
            return
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        conn.idle_since = conn.loop.time()
        self.idle.append(conn)

    def forget(self, conn: _Upstream) -> None:
        if conn.counted:
            conn.counted = False
            self.open -= 1
            self._wake_one()

    def _wake_one(self) -> None:
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def shutdown(self) -> None:
        self.closed = True
        for conn in self.idle:
            conn.close()
        self.idle.clear()
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)


def _compile_template(
    template: str, known: Collection[str] | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Literal pieces and placeholder names, alternating: lit0 name0 lit1 name1 ... litN."""
    literals: list[str] = []
    names: list[str] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(template):
        raw = match.group(1)
        if not _PARAM_NAME.fullmatch(raw):
            raise ValueError(f"invalid placeholder {{{raw}}} in uri {template!r}")
        name = raw.removesuffix("+")
        if known is not None and name not in known:
            raise ValueError(
                f"uri {template!r} names {{{name}}}, which is not a path parameter of the route"
                f" (known: {', '.join(sorted(known)) or 'none'})"
            )
        literals.append(template[pos : match.start()])
        names.append(name)
        pos = match.end()
    literals.append(template[pos:])
    for literal in literals:
        if "{" in literal or "}" in literal:
            raise ValueError(f"unbalanced brace in uri {template!r}")
    return tuple(literals), tuple(names)


class HttpProxyIntegration:
    """Forwards requests to one upstream URL or to a balanced set of targets."""

    def __init__(
        self,
        *,
        uri: str | None,
        targets: Sequence[tuple[str, int]] = (),
        balance: str = "round_robin",
        timeout_ms: int = 29000,
        connect_timeout_ms: int = 5000,
        max_connections: int = 100,
        retries: int = 1,
        failure_threshold: int = 5,
        cooldown_s: float = 10.0,
        body_idle_timeout_ms: int | None = None,
        idle_keepalive_s: float = 30.0,
        route_params: Collection[str] | None = None,
        tls: UpstreamTls | None = None,
        target_tls: Sequence[UpstreamTls | None] = (),
        websocket_max_message_bytes: int | None = None,
    ) -> None:
        """`body_idle_timeout_ms` (default `timeout_ms`) bounds the silence between two pieces of a
        response body; `idle_keepalive_s` how long a pooled connection may sit unused; when
        `route_params` is given, a placeholder of `uri` outside it is refused here. `tls` is how
        the https `uri` or every https target is reached, `target_tls` (one per target, None for
        `tls`) replaces it per target; without either, system CAs and the URL's host are used."""
        if balance not in BALANCE_MODES:
            raise ValueError(f"balance must be one of {', '.join(BALANCE_MODES)}, not {balance!r}")
        if timeout_ms <= 0 or connect_timeout_ms <= 0:
            raise ValueError("timeouts must be positive")
        if max_connections <= 0:
            raise ValueError("max_connections must be positive")
        if retries < 0 or failure_threshold <= 0 or cooldown_s < 0:
            raise ValueError("retries, failure_threshold and cooldown_s must not be negative")
        if targets:
            path_template = uri
            if path_template is not None and not path_template.startswith("/"):
                raise ValueError(f"with targets, uri must be a path starting with '/': {uri!r}")
            bases = list(targets)
        else:
            if uri is None:
                raise ValueError("http_proxy needs a uri or at least one target")
            scheme_end = uri.find("://")
            if scheme_end < 0:
                raise ValueError(f"uri must be an absolute http(s) URL: {uri!r}")
            path_start = uri.find("/", scheme_end + 3)
            authority_end = len(uri) if path_start < 0 else path_start
            query_start = uri.find("?", scheme_end + 3)
            if 0 <= query_start < authority_end:
                authority_end = query_start
            base = uri[:authority_end]
            if "{" in base or "}" in base:
                raise ValueError(f"uri placeholders may only appear in the path: {uri!r}")
            path_template = uri[authority_end:] or "/"
            if path_template.startswith("?"):
                path_template = "/" + path_template
            bases = [(base, 1)]
        self._deadlines = _HeadDeadlines(timeout_ms / 1000)
        if target_tls and len(target_tls) != len(bases):
            raise ValueError("target_tls must have one entry per target")
        own_tls = list(target_tls) or [None] * len(bases)
        self._targets = [
            _Target(base, weight, max_connections, self._deadlines, own or tls)
            for (base, weight), own in zip(bases, own_tls, strict=True)
        ]
        self._single = self._targets[0] if len(self._targets) == 1 else None
        # Offered (Pipeline.start_lean, a cache's lean miss) only with one target: a choice
        # among several is start_now's, so such a route keeps to the full way from the start.
        self.start_lean: StartLean | None = self._start_lean if self._single is not None else None
        if path_template is None:
            self._literals: tuple[str, ...] = ()
            self._names: tuple[str, ...] = ()
            self._template_query = False
        else:
            self._literals, self._names = _compile_template(path_template, route_params)
            self._template_query = "?" in path_template
        # A template ending in a parameter (`.../{proxy}`) ends the target with the end of the
        # client's path: a trailing slash the client sent stays (the router leaves it out of
        # the parameter's value).
        self._param_tail = path_template is not None and path_template.endswith("}")
        self._pieces = tuple(zip(self._names, self._literals[1:], strict=True))
        # The usual request's target is rendered natively; _render_in_python is the same in
        # Python, for stage overrides and text that is not valid UTF-8.
        self._target_template = TargetTemplate(
            list(self._literals), list(self._names), self._param_tail, self._template_query
        )
        self._balance = balance
        self._timeout_s = timeout_ms / 1000
        self._connect_timeout_s = connect_timeout_ms / 1000
        self._body_idle_s = (body_idle_timeout_ms or timeout_ms) / 1000
        self._idle_max_s = idle_keepalive_s
        self._retries = retries
        self._threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._rr = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        # Made on the first WebSocket upgrade; the runtime may set one with its own limits.
        # WebSocket upgrades on this route, relayed to the same targets (messages bounded by
        # `websocket_max_message_bytes`, aiohttp's 4 MiB when None).
        self.websocket = WsPassthrough(self, max_message_bytes=websocket_max_message_bytes)

    # -- public API ---------------------------------------------------------------------------

    def health(self) -> dict[str, bool]:
        return {t.label: t.failures < self._threshold for t in self._targets}

    def queue_length(self) -> int:
        return sum(len(t.waiters) for t in self._targets)

    async def close(self) -> None:
        self._deadlines.stop()
        for target in self._targets:
            target.shutdown()
        await self.websocket.close()

    async def __call__(self, ctx: RequestContext, chosen: _Target | None = None) -> Response:
        """The awaited exchange; `chosen` is the target start_now picked already (the first
        attempt goes there, so that balancing counts each request once)."""
        request = ctx.request
        if request.upgrade is not None and is_websocket_upgrade(request):
            return await self.websocket(ctx)
        loop = self._loop
        if loop is None or loop.is_closed():
            # Cached: on Python 3.11 every get_running_loop() costs a getpid() system call.
            loop = self._loop = asyncio.get_running_loop()
        method = request.method
        # A stage that read or rewrote the request (validation, a template, parameter mapping)
        # leaves the bytes and headers to send (ctx.body, ctx.request_overrides).
        body = ctx.body
        overrides = ctx.request_overrides
        target_path = self._render(ctx, overrides)
        tail, body_mode = self._head_tail(ctx, overrides, body)
        content = request.content
        if body_mode and body_mode != _BODY_BYTES and isinstance(content, _PREFETCHABLE):
            # A slow client must hold only its own connection, not one of the upstream's:
            # the body is buffered up to a bound before a connection is taken.
            await content.prefetch()
        is_head = method == "HEAD"
        attempts = self._retries + 1 if method in _IDEMPOTENT else 1
        stale_retry = method in _IDEMPOTENT and body_mode == 0
        tried: list[_Target] = []
        # One deadline for the whole exchange up to the response head. The usual path (a pooled
        # connection, no request body) only waits in wait_head, which keeps the deadline itself;
        # asyncio.timeout, with its task lookups, guards only the waits that may come before.
        deadline = loop.time() + self._timeout_s

        target: _Target | None = None
        conn: _Upstream | None = None
        try:
            while True:
                if chosen is not None:
                    target = self._probe_if_due(chosen, loop.time())
                    chosen = None
                else:
                    target = self._pick(loop.time(), tried)
                target.in_flight += 1
                conn = target.take_idle(loop.time(), self._idle_max_s)
                reused = True
                if conn is None:
                    try:
                        async with asyncio.timeout_at(deadline):
                            conn, reused = await target.acquire(
                                loop, self._connect_timeout_s, self._idle_max_s
                            )
                    except _ConnectFailedError:
                        target.in_flight -= 1
                        self._failed(target, loop.time())
                        target = None
                        attempts -= 1
                        if attempts <= 0:
                            raise GatewayError(ErrorType.UPSTREAM_FAILURE) from None
                        continue
                conn.begin(is_head)
                sent_at = time.perf_counter()
                assert conn.transport is not None
                conn.transport.write(target.request_head(method, target_path, tail))
                if body_mode == _BODY_BYTES:
                    assert body is not None
                    conn.transport.write(body)
                    conn.request_complete = True
                elif body_mode:
                    async with asyncio.timeout_at(deadline):
                        await self._send_body(content, conn, body_mode == 2)
                else:
                    conn.request_complete = True
                if await conn.wait_head(deadline):
                    break
                # Failed before any response. A pooled connection the upstream had just
                # closed is not the target's fault: one fresh connection may be tried.
                target.in_flight -= 1
                target.release(conn, False)
                conn = None
                if reused and stale_retry:
                    stale_retry = False
                    tried.append(target)
                    target = None
                    continue
                self._failed(target, loop.time())
                target = None
                raise GatewayError(ErrorType.UPSTREAM_FAILURE)
        except TimeoutError:
            if target is not None:
                target.in_flight -= 1
                self._failed(target, loop.time())
            if conn is not None and target is not None:
                target.release(conn, False)
            raise GatewayError(ErrorType.UPSTREAM_TIMEOUT) from None
        except BaseException:
            if target is not None:
                target.in_flight -= 1
                target.probing = False
                if conn is not None:
                    target.release(conn, False)
            raise

        # perf_counter: uvloop's loop.time() only ticks in whole milliseconds.
        ctx.integration_started = sent_at
        ctx.integration_latency_s = time.perf_counter() - sent_at
        ctx.integration_status = conn.status
        self._succeeded(target)
        try:
            return await self._respond(ctx, conn, target)
        finally:
            target.in_flight -= 1

    def start_now(
        self, ctx: RequestContext, done: Callable[[Outcome], None]
    ) -> Coroutine[Any, Any, Response] | None:
        """Sends a bodiless request over a pooled connection and returns None; `done` gets the
        answer from the connection's callbacks (Pipeline.start_now). A request that needs the
        awaited path (a body, no pooled connection, an ejected target) gets its coroutine
        instead, with nothing sent and the target already chosen kept."""
        request = ctx.request
        if request.body_present or ctx.body is not None or request.upgrade is not None:
            return self(ctx)
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        target = self._single
        if target is None:
            target = self._choose(now, ())
            if target is None:
                return self(ctx)
        if target.failures >= self._threshold:
            return self(ctx, target)  # ejected or half-open: the awaited path decides
        conn = target.take_idle(now, self._idle_max_s)
        if conn is None or conn.transport is None:
            return self(ctx, target)
        overrides = ctx.request_overrides
        try:
            target_path = self._render(ctx, overrides)
        except BaseException:
            target.release(conn, True)
            raise
        tail, _ = self._head_tail(ctx, overrides, None)
        target.in_flight += 1
        conn.begin(request.method == "HEAD")
        sent_at = time.perf_counter()
        conn.transport.write(target.request_head(request.method, target_path, tail))
        conn.request_complete = True
        conn.exchange = _Exchange(self, conn, target, ctx, done, sent_at)
        conn.deadline = now + self._timeout_s
        self._deadlines.watch(conn, loop)
        return None

    def _start_lean(self, lean: LeanSend) -> bool:
        """Sends a simple request on over a pooled connection, as start_now does, for a route
        without stages (Pipeline.start_lean); False, with nothing sent, when start_now's way
        is needed (no pooled connection, an ejected target, a path that does not render
        natively)."""
        target = self._single
        if target is None or target.failures >= self._threshold:
            return False
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        conn = target.take_idle(now, self._idle_max_s)
        if conn is None:
            return False
        transport = conn.transport
        if transport is None:
            target.release(conn, False)
            return False
        method, raw_path, _, headers, _, _, _, _, _ = lean.simple
        _, params, path = lean.found
        try:
            rendered = self._target_template.render(params, path, raw_path)
        except KeyError:
            rendered = None  # start_now names the missing parameter
        if rendered is None:
            target.release(conn, True)
            return False
        request_id = lean.request_id
        trace_id, span_id = lean.trace()
        tail, _ = request_head_tail(
            headers,
            lean.client.peer,
            lean.client.https,
            request_id,
            None,
            None,
            trace_id,
            span_id,
            False,
        )
        target.in_flight += 1
        conn.begin(method == "HEAD")
        sent_at = time.perf_counter()
        transport.write(target.request_head(method, rendered, tail))
        conn.request_complete = True
        conn.exchange = _LeanExchange(self, conn, target, lean, lean.own_headers(), sent_at)
        conn.deadline = now + self._timeout_s
        self._deadlines.watch(conn, loop)
        return True

    async def _relayed(self, ctx: RequestContext, conn: _Upstream, target: _Target) -> Response:
        """The rest of a started exchange whose body is still on its way: streamed."""
        try:
            return await self._respond(ctx, conn, target)
        finally:
            target.in_flight -= 1

    # -- request side -------------------------------------------------------------------------

    # The upstream side the WebSocket pass-through shares (ws_passthrough.Upstreams).
    @property
    def connect_timeout_s(self) -> float:
        return self._connect_timeout_s

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    @property
    def retries(self) -> int:
        return self._retries

    def render_path(self, ctx: RequestContext, overrides: dict[str, Any] | None) -> bytes:
        return self._render(ctx, overrides)

    def pick(self, now: float, tried: list[Any]) -> _Target:
        return self._pick(now, tried)

    def succeeded(self, target: Any) -> None:
        self._succeeded(target)

    def failed(self, target: Any, now: float) -> None:
        self._failed(target, now)

    def _render(self, ctx: RequestContext, overrides: dict[str, Any] | None) -> bytes:
        """Request target below the target's base path, with the client's query appended."""
        if not overrides:
            try:
                rendered = self._target_template.render(ctx.params, ctx.path, ctx.request.raw_path)
            except KeyError as exc:
                raise GatewayError(
                    ErrorType.INTEGRATION_FAILURE, f"missing path parameter {exc}"
                ) from None
            if rendered is not None:
                return rendered
        return self._render_in_python(ctx, overrides)

    def _render_in_python(self, ctx: RequestContext, overrides: dict[str, Any] | None) -> bytes:
        path_override: str | None = overrides.get("path") if overrides else None
        path: str
        if path_override is not None:
            path = path_override
        elif not self._literals:
            path = ctx.path
        elif not self._pieces:
            path = self._literals[0]
        else:
            params = ctx.params
            parts = [self._literals[0]]
            try:
                for name, literal in self._pieces:
                    parts.append(params[name])
                    parts.append(literal)
            except KeyError as exc:
                raise GatewayError(
                    ErrorType.INTEGRATION_FAILURE, f"missing path parameter {exc}"
                ) from None
            path = "".join(parts)
            if self._param_tail and ctx.path[-1:] == "/" and path[-1:] != "/":
                path += "/"
        query_override: str | None = overrides.get("query") if overrides else None
        if query_override is not None:
            if query_override:
                path = path + ("&" if self._template_query else "?") + query_override
        else:
            raw = ctx.request.raw_path
            # `in` and partition rather than find: str.find parses its arguments the slow way.
            if "?" in raw:
                query = raw.partition("?")[2]
                if query:
                    path = path + ("&" if self._template_query else "?") + query
        target = path.encode("utf-8", "surrogateescape")
        if _UNSAFE_TARGET.search(target) is not None:
            target = _UNSAFE_TARGET.sub(_escape_target, target)
        return target

    @staticmethod
    def _head_tail(
        ctx: RequestContext, overrides: dict[str, Any] | None, body: bytes | None
    ) -> tuple[bytes, int]:
        """Header lines after Host through the blank line; body mode 0 none, 1 length,
        2 chunked, 3 the bytes a stage left in ctx.body."""
        request = ctx.request
        raw_headers: Iterable[tuple[bytes, bytes]] = request.raw_headers
        mapped = overrides.get("headers") if overrides else None
        if mapped is not None:
            raw_headers = [
                (name.encode("latin-1"), value.encode("utf-8")) for name, value in mapped.items()
            ]
        # The trace goes on with the gateway's span as its parent ("" outside a dispatcher).
        trace_id = ctx.trace_id or None
        if body is None:
            return request_head_tail(
                raw_headers,
                request.remote,
                request.scheme == "https",
                ctx.request_id,
                None,
                None,
                trace_id,
                ctx.span_id,
                ctx.trace_sampled,
            )
        content_type: str | None = ctx.body_content_type
        return request_head_tail(
            raw_headers,
            request.remote,
            request.scheme == "https",
            ctx.request_id,
            len(body),
            None if content_type is None else content_type.encode("latin-1"),
            trace_id,
            ctx.span_id,
            ctx.trace_sampled,
        )

    @staticmethod
    async def _send_body(content: BodyStream, conn: _Upstream, chunked: bool) -> None:
        transport = conn.transport
        assert transport is not None
        while True:
            chunk = await content.readany()
            if not chunk:
                break
            if conn.closed or conn.done:
                # The upstream answered or went away mid-upload; the rest has nowhere to go.
                return
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            if conn.write_paused:
                await conn.drain()
        if conn.closed:
            return
        if chunked:
            transport.write(b"0\r\n\r\n")
        conn.request_complete = True

    # -- response side ------------------------------------------------------------------------

    async def _respond(self, ctx: RequestContext, conn: _Upstream, target: _Target) -> Response:
        if conn.done and not conn.is_head and conn.status not in (204, 304):
            return self._respond_whole(ctx, conn, target)
        reason = conn.reason.decode("latin-1") if conn.reason.isascii() else None
        resp = Response(status=conn.status, reason=reason or None)
        headers = resp.headers
        drop = _connection_named(conn.headers)
        for name, value in conn.headers:
            lname = name.lower()
            if lname in HOP_BY_HOP or lname in drop:
                continue
            headers.add(name.decode("latin-1"), value.decode("utf-8", "replace"))
        ctx.apply_response_headers(resp)
        released = False
        stream: ResponseStream | None = None
        try:
            # The head leaves with the first piece of the body (or with its end) when they are
            # here already; otherwise at once, as a stream's should.
            stream = ctx.start_stream(resp, at_once=not (conn.chunks or conn.done))
            idle = self._body_idle_s
            write = stream.write
            sink = ctx.body_sink
            while True:
                try:
                    chunk = await conn.read(idle)
                except _UpstreamBrokenError:
                    # Headers are out: the only honest signal left is to cut the client off.
                    self._failed(target, conn.loop.time())
                    stream.abort()
                    return resp
                if not chunk:
                    break
                if sink is not None:
                    sink(chunk)
                await write(chunk)
            await stream.finish()
            target.release(conn, conn.reusable())
            released = True
        except ConnectionError:
            pass  # the client went away; the upstream connection is dropped below
        finally:
            if not released:
                target.release(conn, False)
        return resp

    @staticmethod
    def _respond_whole(ctx: RequestContext, conn: _Upstream, target: _Target) -> Response:
        """The usual small answer: the whole body is here, so the upstream's header lines are
        relayed as they came (no decoding) and everything leaves in one write."""
        chunks = conn.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        conn.buffered = 0
        if conn.reading_paused and conn.transport is not None and not conn.closed:
            conn.reading_paused = False
            conn.transport.resume_reading()
        head: ResponseHead = relayed_head(conn.headers, ctx.response_headers)
        # No ctx.body_sink call: the body is not streamed, and the OneWriteResponse carries it.
        target.release(conn, conn.reusable())
        reason = conn.reason if conn.reason.isascii() else b""
        return OneWriteResponse(conn.status, head, body, ctx.response_headers, reason)

    # -- balancing and passive health -----------------------------------------------------------

    def _available(self, target: _Target, now: float) -> bool:
        return target.failures < self._threshold or (
            now >= target.ejected_until and not target.probing
        )

    def _pick(self, now: float, tried: list[_Target]) -> _Target:
        target = self._single
        if target is None:
            target = self._choose(now, tried)
            if target is None and tried:
                target = self._choose(now, ())
            if target is None:
                # Everything is ejected: trying the longest-ejected target beats failing untried.
                target = min(self._targets, key=lambda t: t.ejected_at)
        return self._probe_if_due(target, now)

    def _probe_if_due(self, target: _Target, now: float) -> _Target:
        if target.failures >= self._threshold and now >= target.ejected_until:
            target.probing = True  # half-open: this request is the probe
        return target

    def _choose(self, now: float, tried: Sequence[_Target]) -> _Target | None:
        targets = self._targets
        n = len(targets)
        if self._balance == "weighted":
            total = 0
            best: _Target | None = None
            for t in targets:
                if t in tried or not self._available(t, now):
                    continue
                t.current_weight += t.weight
                total += t.weight
                if best is None or t.current_weight > best.current_weight:
                    best = t
            if best is not None:
                best.current_weight -= total
            return best
        start = self._rr
        if self._balance == "least_request":
            self._rr = (start + 1) % n
            best = None
            for i in range(n):
                t = targets[(start + i) % n]
                if t in tried or not self._available(t, now):
                    continue
                if best is None or t.in_flight < best.in_flight:
                    best = t
            return best
        for i in range(n):
            t = targets[(start + i) % n]
            if t not in tried and self._available(t, now):
                self._rr = (start + i + 1) % n
                return t
        return None

    def _failed(self, target: _Target, now: float) -> None:
        target.failures += 1
        target.probing = False
        if target.failures >= self._threshold:
            target.ejected_at = now
            target.ejected_until = now + self._cooldown_s

    @staticmethod
    def _succeeded(target: _Target) -> None:
        target.failures = 0
        target.probing = False
