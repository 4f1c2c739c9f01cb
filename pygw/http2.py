"""pygw's HTTP/2 connection protocol (HTTPS listeners, ALPN `h2`): frames in, `Request` to the
same handler as HTTP/1.1, `Response` out as HEADERS and DATA frames.

Framing, HPACK and the stream state machines are the `h2` package's (sans-I/O); this module
owns the socket, builds one `Request` per stream (the checks pygw/http1.py makes of a request
head, made here on the decoded header list) and serves each stream in a task of its own, so
streams on one connection are answered concurrently. Answers respect HTTP/2 flow control: a
body is sent as the client's windows open, and a streamed upstream answer waits for them as it
waits for a slow HTTP/1.1 socket. A request body's bytes are acknowledged (the client's window
reopened) only as the handler reads them once more than `RequestBody`'s high-water mark is
buffered, which is the same back-pressure as pausing an HTTP/1.1 socket.

h2's own inbound header validation is off: it makes every malformed request a connection error,
where RFC 9113 section 8.1.1 makes it a stream error; the checks below answer such a stream 400
and leave the connection's other streams alone.

Graceful shutdown refuses new streams with REFUSED_STREAM (a client retries those elsewhere),
answers the streams in flight, then sends GOAWAY and closes. GOAWAY comes last because a client
built on the `h2` package (httpx's) stops reading a connection once it got one, so streams still
being answered would be lost to it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Final, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hpack import NeverIndexedHeaderTuple

from pygw.http1 import PROXY_HEADERS, Refusal, WriteFlow, accepted_peer, client_ip_behind
from pygw.request import HttpVersion, Request, RequestBody, RequestBodyError
from pygw.response import Response

if TYPE_CHECKING:
    from pygw.http1 import Http1Server

__all__ = ["HTTP_2", "Http2Connection"]

log = logging.getLogger("pygw")

HTTP_2 = HttpVersion(2, 0)

# Windows offered to the client for request bodies: a stream may send this much before its
# handler reads, and all streams together the connection's.
_STREAM_WINDOW: Final = 256 * 1024
_CONNECTION_WINDOW: Final = 1024 * 1024
_DEFAULT_WINDOW: Final = 65_535
# How long the rest of a request body answered early is read and dropped (as pygw/http1.py).
_LINGER_S: Final = 2.0
# Body bytes framed but not yet written above which they are written at once (and the client's
# socket buffer is waited on) rather than with the other frames of this loop pass.
_FLUSH_AT: Final = 64 * 1024
# Connection-specific header fields, malformed in HTTP/2 requests (RFC 9113 section 8.2.2)
# and dropped from answers.
_CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_PSEUDO: Final = frozenset({b":method", b":scheme", b":path", b":authority"})
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_BAD_VALUE: Final = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")
_BAD_TARGET: Final = re.compile(rb"[\x00-\x20\x7f]")
_METHOD: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# Answers' header fields kept out of HPACK's dynamic table: values new with every answer
# (request ids) would each take a table entry, pushing out the ones that repeat (content-type,
# server) and lengthening every table search; cookies are kept out as RFC 7541 section 7.1.3
# advises.
_NOT_INDEXED: Final = frozenset(
    {
        b"x-request-id",
        b"apigw-requestid",
        b"x-amzn-requestid",
        b"x-amz-apigw-id",
        b"x-amzn-trace-id",
        b"set-cookie",
    }
)

_CONFIG: Final = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
    # Answers' fields are built here (`_answer_headers`) already as HTTP/2 wants them.
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)


def _answer_headers(status: int, head: bytes) -> list[tuple[bytes, bytes]]:
    """HTTP/2 header fields from an HTTP/1.1 head (status line and header lines) as
    pygw/response.py serializes it: one encoder of answers for both protocols. Names come
    lower-cased and values trimmed (h2's own normalizing is off), and pygw/response.py refuses
    line breaks in values."""
    headers = [(b":status", b"%d" % status)]
    for line in head.split(b"\r\n")[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname in _CONNECTION_SPECIFIC:
            continue
        if lname in _NOT_INDEXED:
            headers.append(NeverIndexedHeaderTuple(lname, value.strip()))
        else:
            headers.append((lname, value.strip()))
    return headers


class _Head:
    """A request's header list checked and sorted out."""

    __slots__ = (
        "authority",
        "content_length",
        "headers",
        "method",
        "path",
        "request_id",
    )

    def __init__(self) -> None:
        self.method = b""
        self.path = b""
        self.authority: bytes | None = None
        self.content_length: int | None = None
        self.request_id: bytes | None = None
        self.headers: list[tuple[bytes, bytes]] = []


class _Stream:
    """One request/answer exchange on the connection; the `Request`'s connection (it starts
    streamed answers) and, once one is started, their body stream."""

    __slots__ = (
        "_head_only",
        "_pending_head",
        "_response",
        "body",
        "conn",
        "content_length",
        "done",
        "paused",
        "pending_ack",
        "remote_ended",
        "reset",
        "stream_id",
        "waiter",
    )

    def __init__(self, conn: Http2Connection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.body: RequestBody | None = None
        self.content_length: int | None = None
        self.remote_ended = False
        self.reset = False  # the client reset the stream (or the connection is gone)
        self.paused = False
        self.pending_ack = 0
        self.waiter: asyncio.Future[None] | None = None
        self.done = False
        self._pending_head: list[tuple[bytes, bytes]] | None = None
        self._response: Response | None = None
        self._head_only = False

    # -- the request body's back-pressure -----------------------------------------------------

    def pause_body(self, pause: bool) -> None:
        self.paused = pause
        if not pause and self.pending_ack:
            pending, self.pending_ack = self.pending_ack, 0
            self.conn.acknowledge(self.stream_id, pending)

    # -- a streamed answer (ResponseStream) ------------------------------------------------

    def start_stream(self, request: Request, response: Response, at_once: bool) -> _Stream:
        response.streamed = True
        self._response = response
        self._head_only = request.method == "HEAD" or response.status in (204, 304)
        length = response.headers.get("Content-Length")
        if length is None or not length.isdigit():
            response.headers.popall("Content-Length", None)
        head = response.stream_head(HTTP_2, True, self.conn.server.extra_head)
        self._pending_head = _answer_headers(response.status, head)
        if at_once:
            self._send_head(end=False)
        return self

    def _send_head(self, end: bool) -> None:
        head = self._pending_head
        if head is None:
            return
        self._pending_head = None
        if self.reset:
            raise ConnectionResetError("the client reset the stream")
        self.conn.send_headers(self.stream_id, head, end)

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self._send_head(end=False)
        if self._head_only:
            return
        if self._response is not None:
            self._response.streamed_length += len(data)
        await self.conn.send_data(self, data, end=False)

    async def finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self._pending_head is not None:
            self._send_head(end=True)
        elif not self.reset:
            self.conn.end_stream(self.stream_id)

    def abort(self) -> None:
        self.done = True
        self.conn.reset_stream(self.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)


class Http2Connection(WriteFlow):
    """One HTTP/2 connection of an HTTPS listener; `server` is the listener's Http1Server
    (handler, limits, error answers and the set of open connections the drain closes)."""

    __slots__ = (
        "_flush_pending",
        "_idle_since",
        "_last_stream_id",
        "_tasks",
        "_trusted_peer",
        "_unflushed",
        "closing",
        "h2",
        "head_since",
        "limits",
        "loop",
        "peer",
        "server",
        "streams",
        "transport",
    )

    def __init__(self, server: Http1Server) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.h2 = h2.connection.H2Connection(config=_CONFIG)
        self.streams: dict[int, _Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.peer = ""
        self._trusted_peer = False
        self._last_stream_id = 0
        self._flush_pending = False
        self._unflushed = 0
        self._idle_since: float | None = None
        self.head_since: float | None = None
        self.closing = False  # GOAWAY sent or received: no new streams
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer, self._trusted_peer = accepted_peer(transport, self.limits)
        self.head_since = self.loop.time()
        conn = self.h2
        conn.initiate_connection()
        conn.update_settings(
            {
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.limits.max_concurrent_streams,
                # HPACK's bound (a larger header list is a connection error); up to it, a
                # list over max_header_bytes is answered 431 on its stream.
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 2 * self.limits.max_header_bytes,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
            }
        )
        conn.increment_flow_control_window(_CONNECTION_WINDOW - _DEFAULT_WINDOW)
        self.flush()
        self.server.track(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self.transport = None
        self.closing = True
        for stream in self.streams.values():
            stream.reset = True
            body = stream.body
            if body is not None and not body.complete:
                body.fail(RequestBodyError(400, "the client closed the connection mid-body"))
            self._wake(stream)
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            # h2 has queued a GOAWAY naming the error: send it and close.
            log.info("HTTP/2 connection error from %s: %s", self.peer, error)
            self.flush()
            self._close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._request(event)
            elif isinstance(event, h2.events.DataReceived):
                self._data(event)
            elif isinstance(event, h2.events.StreamEnded):
                self._ended(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._reset(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                if event.stream_id:
                    stream = self.streams.get(event.stream_id)
                    if stream is not None:
                        self._wake(stream)
                else:
                    self._wake_all()
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._wake_all()  # the initial window may have grown
            elif isinstance(event, h2.events.ConnectionTerminated):
                # The client's GOAWAY: h2 sends nothing more on this connection.
                self.closing = True
                self.flush()
                self._close()
                return
        self.flush()

    # -- sending ------------------------------------------------------------------------------

    def flush(self) -> None:
        self._unflushed = 0
        data = self.h2.data_to_send()
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def flush_soon(self) -> None:
        """Frames of the streams answered in one pass of the event loop go out in one write
        (one TLS record and system call rather than one per frame)."""
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_pending = False
        self.flush()

    def send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        try:
            self.h2.send_headers(stream_id, headers, end_stream=end)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as gone:
            raise ConnectionResetError("the stream is closed") from gone
        self.flush_soon()

    def end_stream(self, stream_id: int) -> None:
        try:
            self.h2.end_stream(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as gone:
            raise ConnectionResetError("the stream is closed") from gone
        self.flush_soon()

    def reset_stream(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return  # closed already
        self.flush_soon()

    async def send_data(self, stream: _Stream, data: bytes, end: bool) -> None:
        """Sends `data` on `stream` as the flow-control windows allow."""
        conn = self.h2
        offset = 0
        total = len(data)
        while offset < total:
            if stream.reset or self.transport is None:
                raise ConnectionResetError("the client reset the stream")
            try:
                window = conn.local_flow_control_window(stream.stream_id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as gone:
                raise ConnectionResetError("the stream is closed") from gone
            if window <= 0:
                waiter = stream.waiter = self.loop.create_future()
                try:
                    await waiter
                finally:
                    stream.waiter = None
                continue
            size = min(window, conn.max_outbound_frame_size, total - offset)
            last = offset + size >= total
            try:
                conn.send_data(
                    stream.stream_id, data[offset : offset + size], end_stream=end and last
                )
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as gone:
                raise ConnectionResetError("the stream is closed") from gone
            offset += size
            self._unflushed += size
            if self._unflushed >= _FLUSH_AT:
                self.flush()
                if self.write_paused:
                    await self.drain()
            else:
                self.flush_soon()

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Reopens the client's windows for `size` bytes of a request body taken."""
        try:
            self.h2.acknowledge_received_data(size, stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self.flush_soon()

    def _wake(self, stream: _Stream) -> None:
        waiter = stream.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_all(self) -> None:
        for stream in self.streams.values():
            self._wake(stream)

    # -- receiving ----------------------------------------------------------------------------

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        limits = self.limits
        # Streams whose handler still runs count, also once the client reset them: resetting
        # streams as fast as they are opened cannot pile up work (the "rapid reset" attack).
        if self.closing or len(self.streams) >= limits.max_concurrent_streams:
            self.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        self._last_stream_id = max(self._last_stream_id, stream_id)
        self.head_since = None
        self._idle_since = None
        stream = _Stream(self, stream_id)
        self.streams[stream_id] = stream
        ended = event.stream_ended is not None
        stream.remote_ended = ended
        item: Request | Refusal
        try:
            item = self._build(stream, event.headers or [], ended)
        except Refusal as refusal:
            item = refusal
        task = self.loop.create_task(self._serve(stream, item))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _build(self, stream: _Stream, fields: list[tuple[bytes, bytes]], ended: bool) -> Request:
        head = self._check(fields)
        limits = self.limits
        length = head.content_length
        if length is not None:
            if length > limits.max_body_bytes:
                raise Refusal(413, "Request Too Long")
            if ended and length:
                raise Refusal(400, "Bad Request")
        content: RequestBody
        if ended:
            content = _EMPTY_BODY
        else:
            if length is None:
                # The HTTP/1.1 framing of a body whose length is known at its end: what an
                # integration forwarding to an HTTP/1.1 upstream reads to stream it on.
                head.headers.append((b"transfer-encoding", b"chunked"))
            content = stream.body = RequestBody(
                stream.pause_body,
                buffer_limit=limits.request_buffer_bytes,
                timeout_s=limits.body_timeout_s,
            )
            stream.content_length = length
        client_ip = self.peer
        if self._trusted_peer:
            client_ip = client_ip_behind(self.peer, head.headers, limits.trusted_proxies)
        return Request(
            head.method.decode("ascii"),
            head.path.decode("utf-8", "surrogateescape"),
            HTTP_2,
            tuple(head.headers),
            self.peer,
            self.transport,
            content,
            content_length=length,
            body_present=not ended,
            keep_alive=True,
            scheme=self.server.scheme,
            connection=stream,
            client_ip=client_ip,
            host=head.authority,
            request_id=head.request_id,
        )

    def _check(self, fields: list[tuple[bytes, bytes]]) -> _Head:
        """The request's header list checked as RFC 9113 section 8 asks (a malformed one is
        refused 400) and against the listener's header limits (431)."""
        limits = self.limits
        head = _Head()
        scheme: bytes | None = None
        path: bytes | None = None
        method: bytes | None = None
        seen: set[bytes] = set()
        regular = False
        size = 0
        count = 0
        host: bytes | None = None
        hosts = 0
        lengths: list[bytes] = []
        cookies: list[bytes] = []
        headers = head.headers
        for name, value in fields:
            size += len(name) + len(value) + 4
            if name[:1] == b":":
                if regular or name not in _PSEUDO or name in seen:
                    raise Refusal(400, "Bad Request")
                seen.add(name)
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":scheme":
                    scheme = value
                else:
                    head.authority = value
                continue
            regular = True
            count += 1
            if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
                raise Refusal(400, "Bad Request")
            if name in _CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
                raise Refusal(400, "Bad Request")
            if name == b"host":
                hosts += 1
                host = value
                continue
            if name == b"content-length":
                lengths.append(value)
            elif name == b"x-request-id":
                head.request_id = value
            elif name == b"cookie":
                # RFC 9113 section 8.2.3: crumbs may come as separate fields; joined for the
                # integrations, which read one Cookie header as HTTP/1.1 carries it.
                cookies.append(value)
                continue
            # b"_" as an int: bytes search an int without first failing to read it as one.
            elif (0x5F in name and not limits.allow_underscores) or (
                name in PROXY_HEADERS and not self._trusted_peer
            ):
                continue  # as pygw/http1.py drops them
            headers.append((name, value))
        if size > limits.max_header_bytes or count > limits.max_header_count:
            raise Refusal(431, "Request Header Fields Too Large")
        if method is None or scheme is None or path is None:
            raise Refusal(400, "Bad Request")
        if not _METHOD.fullmatch(method) or scheme not in (b"https", b"http"):
            raise Refusal(400, "Bad Request")
        if _BAD_TARGET.search(path) or not (
            path[:1] == b"/" or (path == b"*" and method == b"OPTIONS")
        ):
            raise Refusal(400, "Bad Request")
        authority = head.authority
        if authority is not None:
            if not authority or b"@" in authority or _BAD_TARGET.search(authority):
                raise Refusal(400, "Bad Request")
            if host is not None and host != authority:
                raise Refusal(400, "Bad Request")
        elif hosts == 1 and host:
            authority = head.authority = host
        else:
            raise Refusal(400, "Bad Request")
        if hosts > 1:
            raise Refusal(400, "Bad Request")
        headers.insert(0, (b"host", authority))
        if cookies:
            headers.append((b"cookie", b"; ".join(cookies)))
        if lengths:
            raw = lengths[0]
            if any(other != raw for other in lengths) or not raw.isdigit() or len(raw) > 18:
                raise Refusal(400, "Bad Request")
            head.content_length = int(raw)
        head.method = method
        head.path = path
        return head

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        size = event.flow_controlled_length or 0
        stream = self.streams.get(stream_id)
        body = stream.body if stream is not None else None
        if stream is None or body is None or body.complete:
            # Not read by anyone (the stream was answered or refused): the windows reopen.
            self.acknowledge(stream_id, size)
            return
        data = event.data or b""
        if body.received + len(data) > self.limits.max_body_bytes:
            body.fail(RequestBodyError(413, "the request body is larger than allowed"))
            stream.body = None
            self.acknowledge(stream_id, size)
            return
        body.feed(data)
        if stream.paused:
            stream.pending_ack += size
        else:
            self.acknowledge(stream_id, size)

    def _ended(self, stream_id: int | None) -> None:
        stream = self.streams.get(stream_id) if stream_id is not None else None
        if stream is None:
            return
        stream.remote_ended = True
        body = stream.body
        if body is None or body.complete:
            return
        length = stream.content_length
        if length is not None and body.received != length:
            body.fail(RequestBodyError(400, "the request body does not match its Content-Length"))
        else:
            body.feed_eof()

    def _reset(self, stream_id: int | None) -> None:
        stream = self.streams.get(stream_id) if stream_id is not None else None
        if stream is None:
            return
        stream.reset = True
        body = stream.body
        if body is not None and not body.complete:
            body.fail(RequestBodyError(400, "the client reset the stream mid-body"))
        self._wake(stream)

    # -- serving ------------------------------------------------------------------------------

    async def _serve(self, stream: _Stream, item: Request | Refusal) -> None:
        server = self.server
        try:
            if isinstance(item, Refusal):
                response = server.error_answer(item.status, item.message)
                head_only = False
            else:
                head_only = item.method == "HEAD"
                try:
                    response = await server.handler(item)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("request handler failed")
                    response = server.error_answer(500, "Internal Server Error")
            if not response.streamed:
                await self._send_whole(stream, response, head_only)
            elif not stream.done and not stream.reset:
                await stream.finish()
            if not stream.remote_ended and not stream.reset:
                # Answered before the body arrived whole. What still comes is acknowledged and
                # dropped for a moment, then the stream is reset (NO_ERROR): some clients (httpx)
                # read no answer before they have sent the whole body, and a reset at once
                # would leave them waiting on a window that never opens.
                body = stream.body
                if body is not None:
                    body.discard()
                self.loop.call_later(
                    _LINGER_S, self.reset_stream, stream.stream_id, h2.errors.ErrorCodes.NO_ERROR
                )
        except ConnectionResetError:
            pass
        except Exception:
            log.exception("answering an HTTP/2 stream failed")
            self.reset_stream(stream.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        finally:
            self.streams.pop(stream.stream_id, None)
            body = stream.body
            if body is not None and not body.complete:
                body.fail(RequestBodyError(400, "the stream was closed"))
            if not self.streams:
                self._idle_since = self.loop.time()
                if self.closing:
                    self._close()

    async def _send_whole(self, stream: _Stream, response: Response, head_only: bool) -> None:
        extra = self.server.extra_head
        try:
            data = response.encode(HTTP_2, True, head_only, extra)
        except ValueError:
            log.error("an answer with a line break in a header was refused")
            response = self.server.error_answer(502, "Bad Gateway")
            data = response.encode(HTTP_2, True, head_only, extra)
        head, _, body = data.partition(b"\r\n\r\n")
        headers = _answer_headers(response.status, head)
        if stream.reset:
            return
        self.send_headers(stream.stream_id, headers, end=not body)
        if body:
            await self.send_data(stream, body, end=True)

    def _close(self) -> None:
        """GOAWAY naming the last stream served (if h2 has not sent one), then the close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.h2.state_machine.state is not h2.connection.ConnectionState.CLOSED:
            self.h2.close_connection(last_stream_id=self._last_stream_id)
            self.flush()
        transport.close()

    # -- what Http1Server asks of its connections (deadlines, drain) -------------------------

    def overdue(self, head_before: float, idle_before: float) -> bool:
        if self.streams:
            return False
        head_since = self.head_since
        if head_since is not None and head_since < head_before:
            return True
        idle_since = self._idle_since
        return idle_since is not None and idle_since < idle_before

    def end_idle_task(self, idle_before: float) -> None:
        """Nothing to end: an idle HTTP/2 connection holds no task."""

    def close_overdue(self) -> None:
        """Idle past `idle_timeout_s`, or no request within `header_timeout_s`: GOAWAY, close."""
        self.closing = True
        self._close()

    def close_when_idle(self) -> None:
        """Draining: new streams are refused (REFUSED_STREAM, which a client retries), the
        streams in flight are answered, then GOAWAY and the connection closes."""
        self.closing = True
        if not self.streams:
            self._close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


_EMPTY_BODY = RequestBody()
_EMPTY_BODY.feed_eof()
