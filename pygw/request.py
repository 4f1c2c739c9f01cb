"""Request: what stages and integrations see of one HTTP request, built lazily.

The connection (pygw/http1.py) fills in what it parsed (method, target, version, raw headers,
peer) and hands over a `RequestBody` that the body's bytes are fed into as they arrive. Anything
derived (the header map, the decoded path, the query) is computed on first use: a proxied request
that no stage looks at never pays for it.

A WebSocket handshake is handed to aiohttp's WebSocket machinery: its Request wraps the request
aiohttp parsed (`Request.from_aiohttp`), and `upgrade` is that aiohttp request.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qsl

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from yarl import URL

from pygw.http_version import HTTP_10, HTTP_11, HttpVersion

if TYPE_CHECKING:
    from aiohttp import web

    from pygw.response import Response, ResponseStream

__all__ = [
    "HTTP_10",
    "HTTP_11",
    "BodyStream",
    "HttpVersion",
    "Request",
    "RequestBody",
    "RequestBodyError",
]


# Buffered request bytes above which the client's socket stops being read (back-pressure);
# reading resumes once the consumer has taken what was buffered.
_BODY_HIGH_WATER = 256 * 1024


_QUERY_MEMO: dict[str, MultiDictProxy[str]] = {}


class RequestBodyError(Exception):
    """The request body cannot be read to its end: `status` says why (408 too slow, 413 too
    large, 400 malformed or cut off)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BodyStream(Protocol):
    """What the gateway reads a request body through (aiohttp's StreamReader has the same)."""

    async def readany(self) -> bytes: ...

    async def read(self, n: int = -1) -> bytes: ...

    def at_eof(self) -> bool: ...


class RequestBody:
    """A request body arriving from the connection: fed by the parser, read by one consumer.

    Reading pauses the socket above `_BODY_HIGH_WATER` buffered bytes and resumes it when the
    consumer catches up; a body whose client sent `Expect: 100-continue` asks for it only when
    someone first reads."""

    __slots__ = (
        "_buffer_limit",
        "_chunks",
        "_continue",
        "_eof",
        "_error",
        "_on_pause",
        "_timeout_s",
        "_waiter",
        "buffered",
        "discarding",
        "received",
    )

    def __init__(
        self,
        on_pause: Callable[[bool], None] | None = None,
        send_continue: Callable[[], None] | None = None,
        *,
        buffer_limit: int = 65_536,
        timeout_s: float | None = None,
    ) -> None:
        """`timeout_s` bounds each wait for more of the body (then RequestBodyError 408);
        `buffer_limit` is what `prefetch` buffers before a proxy takes an upstream connection."""
        self._chunks: collections.deque[bytes] = collections.deque()
        self._eof = False
        self._error: RequestBodyError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._on_pause = on_pause
        self._continue = send_continue
        self._buffer_limit = buffer_limit
        self._timeout_s = timeout_s
        self.buffered = 0
        self.received = 0
        # Set once the request was answered: what still arrives is read and dropped.
        self.discarding = False

    # -- fed by the connection -----------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.discarding:
            return
        self._chunks.append(data)
        self.buffered += len(data)
        if self.buffered > _BODY_HIGH_WATER and self._on_pause is not None:
            self._on_pause(True)
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def fail(self, error: RequestBodyError) -> None:
        if not self._eof and self._error is None:
            self._error = error
            self._wake()

    def discard(self) -> None:
        self.discarding = True
        self._chunks.clear()
        if self.buffered > _BODY_HIGH_WATER and self._on_pause is not None:
            self._on_pause(False)
        self.buffered = 0

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by one consumer ------------------------------------------------------------------

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    @property
    def complete(self) -> bool:
        """Every byte of the body has arrived (it may not have been read yet)."""
        return self._eof

    async def _wait(self, within_s: float | None = None) -> None:
        if within_s is None:
            within_s = self._timeout_s
        if self._continue is not None:
            send, self._continue = self._continue, None
            send()
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if within_s is None else loop.call_later(within_s, self._timed_out, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self.fail(RequestBodyError(408, "the request body took too long to arrive"))

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        if self.buffered > _BODY_HIGH_WATER and self._on_pause is not None:
            self._on_pause(False)
        self.buffered = 0
        return data

    async def readany(self) -> bytes:
        """What has arrived since the last read (waiting for something); b"" at the end."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            await self._wait()
        return self._take()

    async def read(self, n: int = -1) -> bytes:
        """The whole body (n < 0), or up to n bytes of it."""
        if n < 0:
            parts: list[bytes] = []
            while True:
                chunk = await self.readany()
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            await self._wait()
        data = self._take()
        if len(data) > n:
            self._chunks.appendleft(data[n:])
            self.buffered = len(data) - n
            data = data[:n]
        return data

    async def iter_any(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self.readany()
            if not chunk:
                return
            yield chunk

    async def prefetch(self) -> None:
        """Waits until the body has arrived whole or `buffer_limit` bytes of it are buffered;
        raises RequestBodyError(408) when that takes longer than the body timeout.

        A slow client then costs only its own connection: an upstream connection is taken once
        enough of the body is here to be sent at upstream speed."""
        loop = asyncio.get_running_loop()
        limit = self._buffer_limit
        deadline = loop.time() + (self._timeout_s or 30.0)
        while not self._eof and self.buffered < limit:
            if self._error is not None:
                raise self._error
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.fail(RequestBodyError(408, "the request body took too long to arrive"))
                continue
            await self._wait(remaining)
        if self._error is not None and not self._chunks:
            raise self._error


class _Connection(Protocol):
    """What a Request asks of the connection it arrived on."""

    def start_stream(
        self, request: Request, response: Response, at_once: bool
    ) -> ResponseStream: ...


class Request:
    """One request. Attribute names follow aiohttp's where they mean the same thing, so code
    that read either kind reads this one."""

    __slots__ = (
        "_connection",
        "_headers",
        "_query",
        "_url",
        "_wire",
        "amzn_trace_header",
        "body_present",
        "client_ip",
        "content",
        "content_length",
        "host_header",
        "keep_alive",
        "method",
        "raw_headers",
        "raw_path",
        "remote",
        "request_id_header",
        "routed",
        "scheme",
        "traceparent_header",
        "transport",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: str,
        raw_path: str,
        version: HttpVersion,
        raw_headers: tuple[tuple[bytes, bytes], ...],
        remote: str,
        transport: asyncio.Transport | None,
        content: BodyStream,
        content_length: int | None = None,
        body_present: bool = False,
        keep_alive: bool = True,
        scheme: str = "http",
        connection: _Connection | None = None,
        client_ip: str | None = None,
        host: bytes | None = None,
        request_id: bytes | None = None,
        traceparent: bytes | None = None,
        amzn_trace: bytes | None = None,
    ) -> None:
        """`host`, `request_id`, `traceparent` and `amzn_trace`: the Host, x-request-id,
        traceparent and X-Amzn-Trace-Id values, when the parser noted them (the dispatcher reads
        them for every request)."""
        self.method = method
        self.raw_path = raw_path
        self.version = version
        self.raw_headers = raw_headers
        self.remote = remote
        self.client_ip = remote if client_ip is None else client_ip
        self.transport = transport
        self.content = content
        self.content_length = content_length
        self.body_present = body_present
        self.keep_alive = keep_alive
        self.scheme = scheme
        self._connection = connection
        self.host_header = host
        self.request_id_header = request_id
        self.traceparent_header = traceparent
        self.amzn_trace_header = amzn_trace
        self._headers: CIMultiDictProxy[str] | None = None
        self._url: URL | None = None
        self._query: MultiDictProxy[str] | None = None
        self.upgrade: web.BaseRequest | None = None
        self._wire: BodyStream | None = None
        # The router's match, when the connection looked it up already (Dispatcher.serve_lean).
        self.routed: tuple[int, dict[str, str], str] | None = None

    @classmethod
    def from_aiohttp(cls, request: web.BaseRequest) -> Request:
        """A WebSocket handshake aiohttp parsed (the connection was handed to it)."""
        remote = request.remote or ""
        wrapped = cls(
            request.method,
            request.raw_path,
            HttpVersion(request.version.major, request.version.minor),
            tuple(request.raw_headers),
            remote,
            request.transport,
            request.content,
            content_length=request.content_length,
            body_present=request.body_exists,
            keep_alive=request.keep_alive,
            scheme=request.scheme,
        )
        wrapped._headers = request.headers
        wrapped.upgrade = request
        wrapped._note_headers()
        return wrapped

    @staticmethod
    def build(
        method: str,
        target: str,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        remote: str = "127.0.0.1",
        version: HttpVersion = HTTP_11,
    ) -> Request:
        """A request that did not come over a connection: for tools and tests."""
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or ())
        raw = tuple((k.encode("latin-1"), v.encode("utf-8")) for k, v in pairs)
        stream = RequestBody()
        if body:
            stream.feed(body)
        stream.feed_eof()
        built = Request(
            method,
            target,
            version,
            raw,
            remote,
            None,
            stream,
            content_length=len(body) if body else None,
            body_present=bool(body),
        )
        built._note_headers()
        return built

    def _note_headers(self) -> None:
        """Host, x-request-id and the trace headers, as the connection's parser notes them."""
        self.host_header = self.header(b"host")
        self.request_id_header = self.header(b"x-request-id")
        self.traceparent_header = self.header(b"traceparent")
        self.amzn_trace_header = self.header(b"x-amzn-trace-id")

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        headers = self._headers
        if headers is None:
            built: CIMultiDict[str] = CIMultiDict()
            for name, value in self.raw_headers:
                built.add(name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
            headers = self._headers = CIMultiDictProxy(built)
        return headers

    def header(self, lower_name: bytes) -> bytes | None:
        """The first raw value of a header (its name given lower-cased), without building the
        header map."""
        for name, value in self.raw_headers:
            if len(name) == len(lower_name) and name.lower() == lower_name:
                return value
        return None

    def replace_headers(self, raw_headers: tuple[tuple[bytes, bytes], ...]) -> None:
        """The request as a stage rewrote it for whoever reads it next (a request body decoded
        from its content coding no longer has that Content-Encoding, nor its length)."""
        self.raw_headers = raw_headers
        self._headers = None

    def replace_content(self, content: BodyStream) -> None:
        """The body as a stage hands it on (decoded as it is read); `wire_body` keeps the one
        the connection feeds."""
        if self._wire is None:
            self._wire = self.content
        self.content = content

    @property
    def wire_body(self) -> RequestBody | None:
        """The body as the connection feeds it (None for a request parsed by aiohttp): what the
        connection discards when the request is answered before its body was read."""
        content = self.content if self._wire is None else self._wire
        return content if isinstance(content, RequestBody) else None

    @property
    def rel_url(self) -> URL:
        url = self._url
        if url is None:
            url = self._url = URL(self.raw_path, encoded=True)
        return url

    @property
    def path(self) -> str:
        return self.rel_url.path

    @property
    def raw_query_string(self) -> str:
        """The query as sent, still percent-encoded ("" without one)."""
        return self.raw_path.partition("?")[2]

    @property
    def query(self) -> MultiDictProxy[str]:
        """The query's parameters, decoded as yarl does (`+` is a space; blank values kept),
        without building a URL object."""
        query = self._query
        if query is None:
            raw = self.raw_path.partition("?")[2]
            query = _QUERY_MEMO.get(raw)
            if query is None:
                # Clients repeat their query strings (polling, pagination, cache keys): a
                # bounded memo of read-only views, as yarl keeps of the URLs it parsed.
                query = MultiDictProxy(MultiDict(parse_qsl(raw, keep_blank_values=True)))
                if len(raw) <= 512:
                    if len(_QUERY_MEMO) >= 1024:
                        _QUERY_MEMO.clear()
                    _QUERY_MEMO[raw] = query
            self._query = query
        return query

    @property
    def query_string(self) -> str:
        return self.rel_url.query_string

    @property
    def host(self) -> str:
        return self.headers.get("Host") or ""

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    @property
    def body_exists(self) -> bool:
        return self.body_present

    async def read(self) -> bytes:
        return await self.content.read()

    def start_stream(self, response: Response, at_once: bool = True) -> ResponseStream:
        """Starts `response` and returns the stream its body is written to. Its head is sent
        now, or (`at_once` False: the first piece of the body is at hand) with that piece."""
        if self._connection is None:
            raise RuntimeError("this request has no connection to stream a response on")
        return self._connection.start_stream(self, response, at_once)
