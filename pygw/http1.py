"""pygw's HTTP/1.1 connection protocol: bytes in, `Request` to the handler, `Response` out.

Parsing is httptools (llhttp, in C): strict about line endings, header syntax, chunk framing and
Content-Length, and it hands over plain bytes through callbacks, so a request costs no objects
beyond the ones built here. aiohttp's parser is the same llhttp but builds aiohttp's message and
header objects per request; a Rust parser (httparse) alone would need a chunked decoder of our
own and reads some malformed heads differently. What llhttp lets through and a gateway must not
is refused here: HTTP/0.9 and versions other than 1.0 and 1.1, obfuscated Transfer-Encoding,
transfer codings other than chunked, padded Content-Length, oversized chunk extensions, too many
header lines, missing or repeated Host.

The usual request (bodiless, plain, alone and whole in its read) skips the callbacks, about one
Python call per header line: `pygw._native.simple_request` takes it apart with httparse in one
call, behind a gate that hands every other shape to llhttp (tests/property checks that whatever
it takes, llhttp reads the same way).

A request on an idle connection is served through the handler's `serve_now` (pygw/serving.py)
from the parser's callback: an answer from memory is written at once, a proxied one from the
upstream connection's callback, and only a request that waits otherwise (a body, a stage that
awaits) goes to the connection's task.

Requests on one connection are answered in order (pipelining): one task serves the connection's
requests one after another and ends when none is waiting. A WebSocket handshake is handed, with
its connection, to aiohttp's WebSocket machinery (the `upgrade` protocol factory).

Deadlines (headers, keep-alive idle) are checked by one periodic sweep per server rather than a
timer per request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, Protocol, cast

import httptools

from pygw._native import simple_request
from pygw.http_version import HttpVersion
from pygw.request import HTTP_10, HTTP_11, Request, RequestBody, RequestBodyError
from pygw.response import Response, ResponseHead, encode_whole, whole_bytes
from pygw.serving import PENDING, Later, Routed, Sent, ServeLean, ServeNow, SimpleParts

# A request whose serving serve_now began, with the coroutine that finishes it.
Started = tuple[Request, Later]

__all__ = [
    "PROXY_HEADERS",
    "ConnectionLimits",
    "Http1Server",
    "Refusal",
    "ServedConnection",
    "client_ip_behind",
    "is_trusted",
]

log = logging.getLogger("pygw")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Handler = Callable[[Request], Awaitable[Response]]
# Builds the JSON answer for a request refused before it reached the handler (status, message).
ErrorAnswer = Callable[[int, str], Response]

# A pipelining client may queue this many requests before its socket stops being read.
_MAX_QUEUED: Final = 16
# Bytes of chunk framing (size line, extensions, CRLFs) allowed per chunk, and in all beyond it.
_CHUNK_FRAMING_PER_CHUNK: Final = 1024
_CHUNK_FRAMING_SLACK: Final = 4096
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
# A connection's task outlives its last answer by about this long before a sweep ends it.
_TASK_IDLE_S: Final = 1.0
# How long a refused client's remaining bytes are read and dropped before the socket closes.
_LINGER_S: Final = 2.0
_TE_LINE: Final = re.compile(rb"\r\ntransfer-encoding:([^\r\n]*)\r\n", re.IGNORECASE)
_CODINGS: Final = frozenset({b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress", b"br"})
_WELL_FORMED_VERSION: Final = frozenset({"0.9", "1.0", "1.1", "2.0", "3.0"})


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int = 16_384
    max_header_count: int = 100
    max_body_bytes: int = 10_485_760
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 75.0
    body_timeout_s: float = 30.0
    request_buffer_bytes: int = 65_536
    allow_underscores: bool = False
    trusted_proxies: tuple[IpNetwork, ...] = ()
    # Streams one HTTP/2 connection may have open at once (pygw/http2.py).
    max_concurrent_streams: int = 100


class ServedConnection(Protocol):
    """What a listener asks of each of its connections, HTTP/1.1 or HTTP/2 (pygw/http2.py):
    the deadline sweep and the drain."""

    transport: asyncio.Transport | None

    def overdue(self, head_before: float, idle_before: float) -> bool: ...

    def end_idle_task(self, idle_before: float) -> None: ...

    def close_overdue(self) -> None: ...

    def close_when_idle(self) -> None: ...

    def abort(self) -> None: ...


class Refusal(Exception):
    """A request refused while it is parsed: answered with `status` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Stream:
    """The body of a streamed answer on one connection (chunked unless it has a length)."""

    __slots__ = ("_chunked", "_conn", "_head", "_head_only", "_response", "done")

    def __init__(
        self,
        conn: Http1Connection,
        response: Response,
        head: bytes,
        chunked: bool,
        head_only: bool,
    ) -> None:
        self._conn = conn
        self._response = response
        self._head = head
        self._chunked = chunked
        self._head_only = head_only
        self.done = False

    def send_head(self) -> None:
        self._send(b"")

    def _send(self, data: bytes) -> None:
        transport = self._conn.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        head = self._head
        if head:
            self._head = b""
            data = head + data
        if data:
            transport.write(data)

    async def write(self, data: bytes) -> None:
        if not data or self._head_only:
            return
        self._response.streamed_length += len(data)
        if self._chunked:
            self._send(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self._send(data)
        if self._conn.write_paused:
            await self._conn.drain()

    async def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self._send(b"0\r\n\r\n" if self._chunked and not self._head_only else b"")

    def abort(self) -> None:
        self.done = True
        self._conn.abort()


def _names_close(connection: bytes) -> bool:
    """Whether a Connection header's value lists the `close` option."""
    return any(token.strip().lower() == b"close" for token in connection.split(b","))


def accepted_peer(transport: asyncio.BaseTransport, limits: ConnectionLimits) -> tuple[str, bool]:
    """A new connection's peer address, and whether it is a trusted proxy (whose forwarding
    headers are believed)."""
    peer = transport.get_extra_info("peername")
    address = peer[0] if isinstance(peer, tuple) else ""
    trusted = limits.trusted_proxies
    return address, bool(trusted) and is_trusted(address, trusted)


class WriteFlow(asyncio.Protocol):
    """Writing paused by the transport's buffer limits, and `drain` to wait until it may go on.
    The connection classes hold the state (`write_paused`, `drain_waiter`) in their slots."""

    __slots__ = ("drain_waiter", "write_paused")
    write_paused: bool
    drain_waiter: asyncio.Future[None] | None
    transport: asyncio.BaseTransport | None
    loop: asyncio.AbstractEventLoop

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        while self.write_paused and self.transport is not None:
            waiter = self.drain_waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self.drain_waiter = None


class Http1Connection(WriteFlow):
    __slots__ = (
        "_amzn_trace",
        "_body",
        "_busy",
        "_chunks_seen",
        "_close_asked",
        "_content_lengths",
        "_data",
        "_expect",
        "_framing",
        "_framing_bytes",
        "_has_host",
        "_head_size",
        "_header_bytes",
        "_headers",
        "_host",
        "_idle_since",
        "_in_message",
        "_last",
        "_paused",
        "_queue",
        "_refused",
        "_request_id",
        "_task",
        "_te",
        "_traceparent",
        "_trusted_peer",
        "_url",
        "_wakeup",
        "closing",
        "head_since",
        "https",
        "limits",
        "loop",
        "parser",
        "peer",
        "server",
        "transport",
    )

    def __init__(self, server: Http1Server) -> None:
        self.server = server
        # Read for every header and body chunk: the listener's limits, looked up once.
        self.limits = server.limits
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.https = server.scheme == "https"
        self._queue: collections.deque[Request | Refusal] = collections.deque()
        # One task per connection serves its requests in turn and waits on `_wakeup` between
        # them: a task per request cost more (its creation and its registration among all tasks).
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._wakeup: asyncio.Future[Request | Refusal | Started | None] | None = None
        self._body: RequestBody | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._te: list[bytes] = []
        self._content_lengths: list[bytes] = []
        self._has_host = 0
        self._host: bytes | None = None
        self._request_id: bytes | None = None
        self._traceparent: bytes | None = None
        self._amzn_trace: bytes | None = None
        self._trusted_peer = False
        self._expect = False
        self._close_asked = False
        self._framing = 0
        self._framing_bytes = 0
        self._head_size = 0
        self._last: Request | None = None
        # Between on_message_begin and on_message_complete: the parser holds part of a message.
        self._in_message = False
        self._chunks_seen = 0
        self._data = b""
        self._refused = False
        self._paused = False
        self._idle_since: float | None = None
        self.head_since: float | None = None
        self.closing = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer, self._trusted_peer = accepted_peer(transport, self.limits)
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        self.head_since = self.loop.time()
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self.transport = None
        self.closing = True
        body = self._body
        if body is not None and not body.complete:
            body.fail(RequestBodyError(400, "the client closed the connection mid-body"))
        for queued in self._queue:
            if isinstance(queued, Request) and isinstance(queued.content, RequestBody):
                queued.content.fail(RequestBodyError(400, "the client went away"))
        self._queue.clear()
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.cancel()  # the connection's task ends
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # refused: nothing more is read from this client
        if not self._in_message:
            # The usual request, alone and whole in this read: taken apart in one native call
            # rather than by a callback per line (anything else goes to the parser).
            limits = self.limits
            simple = simple_request(
                data,
                limits.max_header_bytes,
                limits.max_header_count,
                limits.allow_underscores,
                self._trusted_peer,
            )
            if simple is not None:
                self.head_since = None
                serve_lean = self.server.serve_lean
                if serve_lean is not None and not self._busy and not self.closing:
                    # Sent on the lean way when its route allows it (inlined here: a cache
                    # hit or a mock answer is done within this call).
                    self._busy = True
                    self._idle_since = None
                    try:
                        routed = serve_lean(self, simple)
                    except Exception:
                        log.exception("request handler failed")
                        routed = None
                    if routed is not PENDING:
                        self._serve_not_lean(routed, simple)
                    return
                # What on_headers_complete makes of the callbacks' parts, for such a request
                # (request_of, inlined: every request passes here).
                (
                    method,
                    target,
                    minor,
                    headers,
                    host,
                    request_id,
                    traceparent,
                    amzn,
                    keep_alive,
                ) = simple
                request = self._request(
                    method,
                    target,
                    HTTP_11 if minor == 1 else HTTP_10,
                    headers,
                    _EMPTY_BODY,
                    None,
                    keep_alive,
                    host,
                    request_id,
                    traceparent,
                    amzn,
                )
                self._accept(request, False)
                return
        body_before = self._body
        if self.head_since is None and body_before is None:
            self.head_since = self.loop.time()
        received_before = body_before.received if body_before is not None else 0
        self._data = data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgraded(data[upgrade.args[0] :] if upgrade.args else b"")
            return
        except httptools.HttpParserCallbackError as failed:
            cause = failed.__context__
            if isinstance(cause, Refusal):
                self._refuse(cause)
            else:
                log.error("request parsing failed on the gateway's side", exc_info=cause)
                self._refuse(Refusal(500, "Internal Server Error"))
            return
        except httptools.HttpParserError:
            self._refuse(Refusal(400, "Bad Request"))
            return
        finally:
            self._data = b""
        body = self._body
        if body is not None and self._framing == 2:
            # llhttp reads chunk extensions without a callback: bound them by what the bytes
            # that were not body cost (the head's size is known from its parts).
            if body is body_before:
                framing = len(data) - (body.received - received_before)
            else:
                framing = len(data) - self._head_size - body.received
            self._framing_bytes += framing
            allowed = _CHUNK_FRAMING_SLACK + _CHUNK_FRAMING_PER_CHUNK * self._chunks_seen
            if self._framing_bytes > allowed:
                self._refuse(Refusal(400, "Bad Request"))

    def eof_received(self) -> bool | None:
        body = self._body
        if body is not None and not body.complete:
            body.fail(RequestBodyError(400, "the client closed the connection mid-body"))
        # Half-closed by the client: answer what is in flight, then close.
        self.closing = True
        if not self._busy and not self._queue and self.transport is not None:
            self.transport.close()
        return True

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        if self.head_since is None:
            self.head_since = self.loop.time()
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._te = []
        self._content_lengths = []
        self._has_host = 0
        self._host = None
        self._request_id = None
        self._traceparent = None
        self._amzn_trace = None
        self._expect = False
        self._close_asked = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_header_bytes:
            raise Refusal(414, "URI Too Long")

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self.limits
        headers = self._headers
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > limits.max_header_bytes:
            raise Refusal(431, "Request Header Fields Too Large")
        if len(headers) >= limits.max_header_count:
            raise Refusal(431, "Request Header Fields Too Large")
        lname = name.lower()
        if lname == b"transfer-encoding":
            self._te.append(value)
        elif lname == b"content-length":
            self._content_lengths.append(value)
        elif lname == b"host":
            self._has_host += 1
            self._host = value
        elif lname == b"x-request-id":
            self._request_id = value
        elif lname == b"traceparent":
            self._traceparent = value
        elif lname == b"x-amzn-trace-id":
            self._amzn_trace = value
        elif lname == b"expect":
            if value.lower() != b"100-continue":
                raise Refusal(417, "Expectation Failed")
            self._expect = True
        elif lname == b"connection":
            if _names_close(value):
                self._close_asked = True
        elif 0x5F in name and not limits.allow_underscores:  # b"_" as an int: a cheaper search
            return  # as nginx does: a backend may read Content_Length as Content-Length
        elif lname in PROXY_HEADERS and not self._trusted_peer:
            return  # a client that is no trusted proxy cannot say who the client is
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        version_text = parser.get_http_version()
        if version_text == "1.1":
            version = HTTP_11
        elif version_text == "1.0":
            version = HTTP_10
        elif version_text in _WELL_FORMED_VERSION and version_text != "0.9":
            raise Refusal(505, "HTTP Version Not Supported")
        else:
            raise Refusal(400, "Bad Request")
        if version is HTTP_11 and self._has_host != 1:
            raise Refusal(400, "Bad Request")
        if self._has_host > 1:
            raise Refusal(400, "Bad Request")
        # llhttp keeps an HTTP/1.0 request that names both keep-alive and close alive: close
        # wins here, as in the native parse of the usual request.
        keep_alive = parser.should_keep_alive() and not self._close_asked
        limits = self.limits
        content_length: int | None = None
        framing = 0
        if self._te:
            self._check_transfer_encoding()
            framing = 2
            if version is HTTP_10:
                keep_alive = False  # RFC 9112 section 6.1: read it, then close
        elif self._content_lengths:
            raw = self._content_lengths[0]
            if not raw.isdigit() or (len(raw) > 1 and raw[0] == 0x30) or len(raw) > 18:
                raise Refusal(400, "Bad Request")
            content_length = int(raw)
            if content_length > limits.max_body_bytes:
                raise Refusal(413, "Request Too Long")
            framing = 1 if content_length else 0
        method = parser.get_method().decode("ascii")
        url = self._url
        headers = self._headers
        if url[:1] != b"/":
            url, headers = self._origin_form(url, method, headers)
        upgrade = parser.should_upgrade()
        if upgrade:
            keep_alive = False  # the rest of the connection speaks whatever it upgraded to
        self._framing = framing
        self._chunks_seen = 0
        self._framing_bytes = 0
        # The request line and header block as sent, less any whitespace llhttp trimmed.
        self._head_size = len(method) + len(self._url) + 13 + self._header_bytes
        body: RequestBody | None = None
        content: RequestBody
        if framing:
            body = content = RequestBody(
                self._pause_for_body,
                self._send_continue if self._expect else None,
                buffer_limit=limits.request_buffer_bytes,
                timeout_s=limits.body_timeout_s,
            )
        else:
            content = _EMPTY_BODY
        self._body = body
        self.head_since = None
        request = self._request(
            method,
            url.decode("utf-8", "surrogateescape"),
            version,
            tuple(headers),
            content,
            content_length,
            keep_alive,
            self._host,
            self._request_id,
            self._traceparent,
            self._amzn_trace,
        )
        self._accept(request, framing != 0 or upgrade)

    def _request(
        self,
        method: str,
        target: str,
        version: HttpVersion,
        headers: tuple[tuple[bytes, bytes], ...],
        content: RequestBody,
        content_length: int | None,
        keep_alive: bool,
        host: bytes | None,
        request_id: bytes | None,
        traceparent: bytes | None,
        amzn_trace: bytes | None,
    ) -> Request:
        """The request a parsed head makes, on this connection (`content` _EMPTY_BODY for a
        bodiless one)."""
        client_ip = self.peer
        if self._trusted_peer:
            client_ip = client_ip_behind(self.peer, headers, self.limits.trusted_proxies)
        # Positional, in the parameters' order: matching keywords costs more than the call.
        request = Request(
            method,
            target,
            version,
            headers,
            self.peer,
            self.transport,
            content,
            content_length,
            content is not _EMPTY_BODY,
            keep_alive,
            self.server.scheme,
            self,
            client_ip,
            host,
            request_id,
        )
        # Set here rather than passed: most requests carry no trace, and a keyword costs more.
        if traceparent is not None or amzn_trace is not None:
            request.traceparent_header = traceparent
            request.amzn_trace_header = amzn_trace
        return request

    def _serve_not_lean(self, routed: Routed | Sent | None, simple: SimpleParts) -> None:
        """A simple request serve_lean did not send on: served as any other (with the route
        serve_lean found, `routed`, not looked up again)."""
        self._busy = False
        request = self.request_of(simple)
        if isinstance(routed, tuple):
            request.routed = routed
        self._accept(request, False)

    def request_of(self, simple: SimpleParts) -> Request:
        """What on_headers_complete makes of the callbacks' parts, for a simple request."""
        (
            method,
            target,
            minor,
            headers,
            host,
            request_id,
            traceparent,
            amzn,
            keep_alive,
        ) = simple
        return self._request(
            method,
            target,
            HTTP_11 if minor == 1 else HTTP_10,
            headers,
            _EMPTY_BODY,
            None,
            keep_alive,
            host,
            request_id,
            traceparent,
            amzn,
        )

    def send_whole(
        self,
        status: int,
        reason: bytes,
        head: ResponseHead,
        body: bytes,
        own: dict[str, str],
        minor: int,
        keep_alive: bool,
    ) -> None:
        """_resume and _finish for an answer to a request serve_lean sent on (bodiless, so
        nothing of it is left to read)."""
        transport = self.transport
        if transport is None:
            self._busy = False
            return
        keep_alive = keep_alive and not self.closing
        extra = self.server.extra_head
        try:
            data = encode_whole(minor, status, reason, head, body, own, keep_alive, extra)
            if data is None:  # a Vary of the answer's own, merged with a stage's
                data = whole_bytes(
                    HTTP_11 if minor == 1 else HTTP_10,
                    status,
                    reason,
                    head,
                    body,
                    own,
                    keep_alive,
                    extra,
                )
        except ValueError:
            log.error("an answer with a line break in a header was refused")
            keep_alive = False
            data = self.server.error_answer(502, "Bad Gateway").encode(
                HTTP_11, False, False, self.server.extra_head
            )
        transport.write(data)
        if not keep_alive:
            self._busy = False
            if self._refused:
                self._linger()
            else:
                self.closing = True
                transport.close()
            return
        queue = self._queue
        if queue:
            # Pipelined behind this one while it was out: they are served by the task.
            item = queue.popleft()
            self._resume_reading_if_room()
            self._to_task(item)
            return
        self._busy = False
        if not self.closing:
            self._idle_since = self.loop.time()

    def _accept(self, request: Request, awaited: bool) -> None:
        """A parsed request: served now when the connection is idle and it has no body or
        upgrade (`awaited` False), without the connection's task when its answer needs none
        (pygw/serving.py); else queued for the task."""
        self._last = request
        serve_now = self.server.serve_now
        if self._busy or awaited or serve_now is None:
            self._enqueue(request)
            return
        if self.closing:
            return  # dropped, as requests queued behind a last answer are
        self._busy = True
        self._idle_since = None
        try:
            served = serve_now(request, self._resume)
        except Exception:
            log.exception("request handler failed")
            served = self.server.error_answer(500, "Internal Server Error")
        if served is not PENDING:
            self._resume(request, served)

    def on_body(self, data: bytes) -> None:
        body = self._body
        if body is None:
            return
        if body.received + len(data) > self.limits.max_body_bytes:
            body.fail(RequestBodyError(413, "the request body is larger than allowed"))
            raise Refusal(413, "Request Too Long")
        body.feed(data)

    def on_chunk_header(self) -> None:
        self._chunks_seen += 1

    def on_message_complete(self) -> None:
        self._in_message = False
        body = self._body
        if body is not None:
            body.feed_eof()
            self._body = None
        self._framing = 0

    # -- parsing helpers ----------------------------------------------------------------------

    def _check_transfer_encoding(self) -> None:
        if self._content_lengths or len(self._te) > 1:
            raise Refusal(400, "Bad Request")
        value = self._te[0].lower()
        if value != b"chunked":
            codings = [token.strip() for token in value.split(b",")]
            if codings[-1] == b"chunked" and all(c in _CODINGS for c in codings[:-1]):
                raise Refusal(501, "Not Implemented")
            raise Refusal(400, "Bad Request")
        # llhttp trims whitespace around the value: only `Transfer-Encoding: chunked` (one
        # optional space) is taken, as anything else may be read otherwise by another server.
        found = _TE_LINE.search(self._data)
        if found is None or found.group(1).lower() not in (b"chunked", b" chunked"):
            raise Refusal(400, "Bad Request")

    def _origin_form(
        self, url: bytes, method: str, headers: list[tuple[bytes, bytes]]
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """An absolute-form target (`GET http://host/path`): the path and query are the target
        and the authority is the Host (RFC 9112 section 3.2.2)."""
        lower = url[:8].lower()
        if lower.startswith(b"http://") or lower.startswith(b"https://"):
            rest = url[url.index(b"//") + 2 :]
            cut = len(rest)
            for sep in (b"/", b"?"):
                at = rest.find(sep)
                if 0 <= at < cut:
                    cut = at
            authority = rest[:cut]
            if not authority or b"@" in authority:
                raise Refusal(400, "Bad Request")
            path = rest[cut:]
            if not path.startswith(b"/"):
                path = b"/" + path
            kept = [(n, v) for n, v in headers if n.lower() != b"host"]
            kept.append((b"Host", authority))
            self._host = authority
            return path, kept
        if url == b"*" and method == "OPTIONS":
            return url, headers
        raise Refusal(400, "Bad Request")

    def _pause_for_body(self, pause: bool) -> None:
        transport = self.transport
        if transport is None or pause == self._paused:
            return
        self._paused = pause
        if pause:
            transport.pause_reading()
        elif not self._queue_full():
            transport.resume_reading()

    def _send_continue(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(_CONTINUE)

    def _queue_full(self) -> bool:
        return len(self._queue) >= _MAX_QUEUED

    # -- serving ------------------------------------------------------------------------------

    def _resume(self, request: Request, served: Response | Later) -> None:
        """`request`'s answer, or the coroutine that gives it (awaited by the task)."""
        if not isinstance(served, Response):
            self._to_task((request, served))
            return
        try:
            answered = self._finish(request, served)
        except Exception:
            # Called from an upstream's socket callback too: nothing above would close it.
            log.exception("sending an answer failed")
            self.abort()
            answered = False
        if not answered:
            self._busy = False
            return
        queue = self._queue
        if queue:
            # Pipelined behind this one while it was out: they are served by the task.
            item = queue.popleft()
            self._resume_reading_if_room()
            self._to_task(item)
            return
        self._busy = False
        if self.transport is not None and not self.closing:
            self._idle_since = self.loop.time()

    resume = _resume

    def _to_task(self, item: Request | Refusal | Started) -> None:
        """The connection's task serves `item` (and what is queued behind it): woken if it
        waits for a request, started otherwise."""
        self._busy = True
        self._idle_since = None
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set_result(item)
        else:
            self._task = self.loop.create_task(self._serve(item))

    def _enqueue(self, item: Request | Refusal) -> None:
        if not self._busy:
            self._to_task(item)
        else:
            self._queue.append(item)
            if self._queue_full() and self.transport is not None and not self._paused:
                self._paused = True
                self.transport.pause_reading()

    def _resume_reading_if_room(self) -> None:
        if self._paused and not self._queue_full() and self.transport is not None:
            body = self._body
            if body is None or body.buffered == 0:
                self._paused = False
                self.transport.resume_reading()

    def _refuse(self, refusal: Refusal) -> None:
        """Stops reading; the refusal is answered after the requests before it."""
        self._refused = True
        self.head_since = None
        body = self._body
        self._body = None
        if body is not None:
            # Mid-body: the request's handler learns it from its body and answers; the
            # connection closes after that answer (or now, if it was answered already).
            body.fail(RequestBodyError(refusal.status, refusal.message))
            self.closing = True
            if not self._busy and not self._queue and self.transport is not None:
                self.transport.close()
            return
        self._enqueue(refusal)

    def _upgraded(self, rest: bytes) -> None:
        """llhttp stopped after an upgrade request's head; `rest` is what followed it."""
        upgrade = self.server.upgrade
        request = self._last
        is_websocket = False
        if request is not None:
            value = request.header(b"upgrade")
            is_websocket = value is not None and value.lower() == b"websocket"
        if not is_websocket or upgrade is None or self._queue or request is None:
            # Not ours to upgrade (or behind other requests): it is answered as plain HTTP and
            # the connection closes after it (its keep_alive is off).
            self._refused = True
            return
        # Hand the connection, with the handshake as it came, to aiohttp's WebSocket server.
        task = self._task
        if task is not None:
            task.cancel()
            self._task = None
        self._busy = False
        transport = self.transport
        if transport is None:
            return
        self.server.connections.discard(self)
        self._refused = True
        head = b"%s %s HTTP/%d.%d\r\n%s\r\n" % (
            request.method.encode("ascii"),
            request.raw_path.encode("utf-8", "surrogateescape"),
            request.version.major,
            request.version.minor,
            b"".join(b"%s: %s\r\n" % pair for pair in request.raw_headers),
        )
        protocol = upgrade()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(head + rest)
        self.transport = None  # aiohttp's now

    async def _serve(self, item: Request | Refusal | Started) -> None:
        server = self.server
        handler = server.handler
        loop = self.loop
        try:
            while True:
                if isinstance(item, Refusal):
                    self._answer_refusal(item)
                    return
                answer: Awaitable[Response]
                if isinstance(item, tuple):
                    request, answer = item  # begun by serve_now, to be awaited here
                else:
                    request, answer = item, handler(item)
                try:
                    response = await answer
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("request handler failed")
                    response = server.error_answer(500, "Internal Server Error")
                if not self._finish(request, response):
                    return
                queue = self._queue
                if queue:
                    item = queue.popleft()
                    self._resume_reading_if_room()
                    continue
                # Idle: wait for the next request that needs the task (or its end).
                self._busy = False
                if self.transport is None or self.closing:
                    return
                self._idle_since = loop.time()
                wakeup = self._wakeup = loop.create_future()
                waited = await wakeup
                if waited is None:
                    return  # idle for a while: the task goes (see end_idle_task)
                item = waited
        finally:
            # A task ended by end_idle_task may run its end after a new one took over.
            if self._task is asyncio.current_task():
                self._task = None
                self._busy = False
                self._wakeup = None
                if self.transport is not None and self.closing and not self._queue:
                    self.transport.close()

    def _finish(self, request: Request, response: Response) -> bool:
        """Sends a whole answer (a streamed one has gone out already); False when the
        connection is done."""
        transport = self.transport
        if transport is None:
            return False
        # A bodiless request has nothing left to read (asked only of those with a body).
        content = request.wire_body if request.body_present else None
        incomplete = content is not None and not content.complete
        keep_alive = request.keep_alive and not response.close_connection and not self.closing
        if not response.streamed:
            try:
                data = response.encode(
                    request.version, keep_alive, request.method == "HEAD", self.server.extra_head
                )
            except ValueError:
                log.error("an answer with a line break in a header was refused")
                response = self.server.error_answer(502, "Bad Gateway")
                keep_alive = False
                data = response.encode(request.version, False, False, self.server.extra_head)
            transport.write(data)
        if incomplete:
            assert content is not None
            content.discard()
        if not keep_alive:
            if incomplete or self._refused:
                self._linger()
            else:
                self.closing = True
                transport.close()
            return False
        return True

    def _answer_refusal(self, refusal: Refusal) -> None:
        transport = self.transport
        self.closing = True
        if transport is None:
            return
        response = self.server.error_answer(refusal.status, refusal.message)
        transport.write(response.encode(HTTP_11, False, False, self.server.extra_head))
        self._linger()

    def _linger(self) -> None:
        """Closes after an answer sent while the client may still be sending: closing at once
        with unread bytes makes the kernel reset the connection, and the client can lose the
        answer. Our side is shut, and what still arrives is read and dropped for a moment."""
        transport = self.transport
        self.closing = True
        self._refused = True  # data_received drops everything from now on
        if transport is None:
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        if self._paused:
            self._paused = False
            transport.resume_reading()
        self.loop.call_later(_LINGER_S, transport.close)

    def start_stream(self, request: Request, response: Response, at_once: bool) -> _Stream:
        """Sends `response`'s head now (or, `at_once` False, with the first piece of the body)."""
        response.streamed = True
        keep_alive = request.keep_alive and not self.closing and not response.close_connection
        head_only = request.method == "HEAD" or response.status in (204, 304)
        length = response.headers.get("Content-Length")
        chunked = False
        framing = b""
        if head_only:
            pass
        elif length is not None and length.isdigit():
            framing = b""
        elif request.version >= (1, 1):
            response.headers.popall("Content-Length", None)
            chunked = True
            framing = b"Transfer-Encoding: chunked\r\n"
        else:
            response.headers.popall("Content-Length", None)
            keep_alive = False  # the body ends when the connection does
        if not keep_alive:
            response.force_close()
        head = response.stream_head(request.version, keep_alive, self.server.extra_head)
        stream = _Stream(self, response, head + framing + b"\r\n", chunked, head_only)
        if at_once:
            stream.send_head()
        return stream

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # -- deadlines ----------------------------------------------------------------------------

    def overdue(self, head_before: float, idle_before: float) -> bool:
        head_since = self.head_since
        if head_since is not None and head_since < head_before and not self._busy:
            return True
        idle_since = self._idle_since
        return (
            not self._busy
            and not self._queue
            and idle_since is not None
            and idle_since < idle_before
        )

    def end_idle_task(self, idle_before: float) -> None:
        """Ends the connection's task when it has waited since before `idle_before`: a
        connection kept alive but silent then holds no task (about 3 KiB), and its next
        request starts one."""
        wakeup = self._wakeup
        idle_since = self._idle_since
        if wakeup is not None and idle_since is not None and idle_since < idle_before:
            self._wakeup = None
            wakeup.set_result(None)

    def close_overdue(self) -> None:
        """A deadline passed (see `overdue`)."""
        if self.transport is not None:
            self.transport.close()

    def close_when_idle(self) -> None:
        """Draining: close now if nothing is in flight, else after the current answer."""
        self.closing = True
        if not self._busy and self.transport is not None:
            self.transport.close()


_EMPTY_BODY = RequestBody()
_EMPTY_BODY.feed_eof()

PROXY_HEADERS: Final = frozenset({b"forwarded", b"x-real-ip"})


def client_ip_behind(
    peer: str, headers: Iterable[tuple[bytes, bytes]], trusted: tuple[IpNetwork, ...]
) -> str:
    """The client's address when the peer is a trusted proxy: the nearest X-Forwarded-For
    entry that is not one (else the peer)."""
    forwarded: list[str] = []
    for name, value in headers:
        if name.lower() == b"x-forwarded-for":
            forwarded.extend(
                part.strip() for part in value.decode("latin-1").split(",") if part.strip()
            )
    for hop in reversed(forwarded):
        if not is_trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                break
    return peer


def is_trusted(address: str, trusted: tuple[IpNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class Http1Server:
    """The protocol factory for one listener, and the connections it made."""

    def __init__(
        self,
        handler: Handler,
        limits: ConnectionLimits,
        error_answer: ErrorAnswer,
        *,
        upgrade: Callable[[], asyncio.Protocol] | None = None,
        extra_head: bytes = b"",
        loop: asyncio.AbstractEventLoop | None = None,
        scheme: str = "http",
        serve_now: ServeNow | None = None,
        serve_lean: ServeLean | None = None,
    ) -> None:
        """`serve_now`, when given, is `handler`'s way to answer without a task (see
        pygw/serving.py): bodiless requests on idle connections go through it. `serve_lean`,
        when given, comes before it for the simple requests that allow it (see
        Dispatcher.serve_lean)."""
        self.handler = handler
        self.serve_now = serve_now
        self.serve_lean = serve_lean
        self.scheme = scheme  # "https" behind a TLS listener (pygw/tls.py)
        self.limits = limits
        self.error_answer = error_answer
        self.upgrade = upgrade
        self.extra_head = extra_head
        self.loop = loop or asyncio.get_running_loop()
        self.connections: set[ServedConnection] = set()
        # Checking a few times per timeout bounds the overshoot to a quarter of it.
        shortest = min(limits.header_timeout_s, limits.idle_timeout_s)
        self._sweep_every_s = min(max(shortest / 4, 0.05), 1.0)
        self._sweeper: asyncio.TimerHandle | None = None
        self._drained: asyncio.Event | None = None

    def track(self, conn: ServedConnection) -> None:
        """`conn` is swept for deadlines and closed by the drain."""
        self.connections.add(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._sweep_every_s, self._sweep)

    def forget(self, conn: ServedConnection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._drained is not None:
            self._drained.set()

    def __call__(self) -> Http1Connection:
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._sweep_every_s, self._sweep)
        return Http1Connection(self)

    def _sweep(self) -> None:
        now = self.loop.time()
        head_before = now - self.limits.header_timeout_s
        idle_before = now - self.limits.idle_timeout_s
        quiet_before = now - _TASK_IDLE_S
        for conn in list(self.connections):
            if conn.overdue(head_before, idle_before) and conn.transport is not None:
                conn.close_overdue()
            else:
                conn.end_idle_task(quiet_before)
        self._sweeper = self.loop.call_later(self._sweep_every_s, self._sweep)

    def stop_sweeping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def shutdown(self, within_s: float) -> None:
        """Closes idle connections now and busy ones after their answer; after
        `within_s` seconds whatever is left is cut off."""
        self.stop_sweeping()
        for conn in list(self.connections):
            conn.close_when_idle()
        if self.connections:
            self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within_s):
                    await self._drained.wait()
        for conn in list(self.connections):
            conn.abort()
