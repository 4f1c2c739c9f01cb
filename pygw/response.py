"""The one response shape of the gateway: what stages, integrations and gateway errors answer.

- `Response`: status, headers and a body known in full (mocks, functions, errors, CORS
  preflights). The connection serializes it and sends it in one write.
- `OneWriteResponse`: the same, with header lines that never change kept serialized
  (`ResponseHead`): a response-cache hit, an upstream answer that arrived whole. Only the
  per-request headers (request ids, rate limits, CORS, X-Cache) are serialized per answer.
- A streamed answer (an upstream body still arriving) is a `Response` whose head was sent
  through `Request.start_stream`; its body goes through the `ResponseStream` that returns, and
  the connection sends nothing more for it (`streamed`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Final, Protocol

from multidict import CIMultiDict

from pygw._native import WholeAnswers, date_line, header_lines, whole_answer_bytes
from pygw.http_version import HttpVersion

__all__ = [
    "OneWriteResponse",
    "Response",
    "ResponseHead",
    "ResponseStream",
    "UpgradedResponse",
    "date_line",
    "encode_whole",
    "head_from_pairs",
    "merge_vary",
    "status_line",
    "whole_bytes",
]

_REASONS: Final = {status.value: status.phrase for status in HTTPStatus}
_CONTENT_TYPE_LINE: Final = b"Content-Type: application/octet-stream\r\n"
_CLOSE_LINE: Final = b"Connection: close\r\n"
_KEEP_ALIVE_LINE: Final = b"Connection: keep-alive\r\n"
_FRAMING: Final = ("Content-Length", "Transfer-Encoding", "Connection")
_STATUS_LINES: dict[tuple[int, int, int, bytes], bytes] = {}
# Answers to these carry no body, whatever their headers say.
_BODILESS: Final = frozenset({204, 304})


def status_line(version: HttpVersion, status: int, reason: bytes) -> bytes:
    key = (version[0], version[1], status, reason)
    line = _STATUS_LINES.get(key)
    if line is None:
        if not reason:
            reason = _REASONS.get(status, "Unknown").encode("ascii")
        line = b"HTTP/%d.%d %d %s\r\n" % (version[0], version[1], status, reason)
        if len(_STATUS_LINES) < 1024:  # reasons come from upstreams: keep the memo bounded
            _STATUS_LINES[key] = line
    return line


def _connection_line(version: HttpVersion, keep_alive: bool) -> bytes:
    if not keep_alive:
        return _CLOSE_LINE if version >= (1, 1) else b""
    return _KEEP_ALIVE_LINE if version < (1, 1) else b""


# Header lines that are the same for every answer built from them: (lines, vary,
# has_content_type, has_server, has_date). `lines` holds `Name: value\r\n` lines without
# Content-Length, Transfer-Encoding, Connection and Vary; the Vary value is kept apart because a
# stage may add to it per request (CORS's `Vary: Origin`). A plain tuple of bytes, a string and
# flags on purpose: the garbage collector stops tracking exact tuples of such values after one
# pass, and response caches hold very many of them (a NamedTuple would stay tracked).
ResponseHead = tuple[bytes, str | None, bool, bool, bool]


def head_from_pairs(pairs: Iterable[tuple[str, str]]) -> ResponseHead:
    """A ResponseHead from decoded header pairs; raises ValueError on a line break in a value."""
    lines: list[bytes] = []
    vary: list[str] = []
    names: set[str] = set()
    for name, value in pairs:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} cannot be serialized")
        lname = name.lower()
        if lname in ("content-length", "transfer-encoding", "connection"):
            continue
        if lname == "vary":
            vary.append(value)
            continue
        names.add(lname)
        lines.append(f"{name}: {value}\r\n".encode())
    return (
        b"".join(lines),
        ", ".join(vary) if vary else None,
        "content-type" in names,
        "server" in names,
        "date" in names,
    )


class Response:
    """A complete answer. The constructor takes aiohttp's `web.Response` arguments."""

    __slots__ = (
        "_headers",
        "body",
        "close_connection",
        "reason",
        "status",
        "streamed",
        "streamed_length",
    )

    def __init__(
        self,
        *,
        status: int = 200,
        reason: str | None = None,
        body: bytes | bytearray | None = None,
        text: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        content_type: str | None = None,
        charset: str | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self._headers: CIMultiDict[str] | None = (
            CIMultiDict(headers) if headers is not None else None
        )
        if text is not None:
            self.body = text.encode(charset or "utf-8")
            if content_type is None and "Content-Type" not in self.headers:
                content_type = "text/plain"
            if content_type is not None:
                self.headers["Content-Type"] = f"{content_type}; charset={charset or 'utf-8'}"
        else:
            self.body = bytes(body) if body is not None else b""
            if content_type is not None:
                self.headers["Content-Type"] = (
                    content_type if charset is None else f"{content_type}; charset={charset}"
                )
        self.close_connection = False
        # True once the head went out through a ResponseStream (which counts the body's bytes).
        self.streamed = False
        self.streamed_length = 0

    @property
    def headers(self) -> CIMultiDict[str]:
        headers = self._headers
        if headers is None:
            headers = self._headers = CIMultiDict()
        return headers

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "application/octet-stream").partition(";")[0]

    @content_type.setter
    def content_type(self, value: str) -> None:
        self.headers["Content-Type"] = value

    @property
    def body_length(self) -> int:
        return self.streamed_length if self.streamed else len(self.body)

    def force_close(self) -> None:
        """The connection closes after this answer."""
        self.close_connection = True

    def _reason_bytes(self) -> bytes:
        reason = self.reason
        return reason.encode("latin-1", "replace") if reason else b""

    def encode(
        self, version: HttpVersion, keep_alive: bool, head_only: bool, extra: bytes
    ) -> bytes:
        """The whole answer as sent: status line, headers, framing and (unless `head_only`,
        for HEAD) the body. `extra` is header lines every answer of the server carries.
        Raises ValueError when a header name or value holds a line break."""
        body = self.body
        status = self.status
        headers = self._headers
        parts = [status_line(version, status, self._reason_bytes())]
        length = len(body)
        if headers:
            if head_only and not body:
                # A HEAD answer keeps the length the resource announced (a cached HEAD entry).
                announced = headers.get("Content-Length")
                if announced is not None and announced.isdigit():
                    length = int(announced)
            for name in _FRAMING:
                if name in headers:
                    headers.popall(name)
            parts.append(header_lines(headers))
            has_type = "Content-Type" in headers
            has_date = "Date" in headers
            if extra.startswith(SERVER_PREFIX) and "Server" in headers:
                extra = without_server_line(extra)
        else:
            has_type = has_date = False
        parts.append(extra)
        if status in _BODILESS or status < 200:
            body = b""
            length = -1
        return _ended(parts, body, length, has_type, has_date, version, keep_alive, head_only)

    def stream_head(self, version: HttpVersion, keep_alive: bool, extra: bytes) -> bytes:
        """The head of a streamed answer (framing left to the caller: `Content-Length` kept
        when the headers have one, else the caller adds `Transfer-Encoding: chunked`)."""
        headers = self.headers
        headers.popall("Transfer-Encoding", None)
        headers.popall("Connection", None)
        parts = [status_line(version, self.status, self._reason_bytes())]
        parts.append(header_lines(headers))
        if extra.startswith(SERVER_PREFIX) and "Server" in headers:
            extra = without_server_line(extra)
        parts.append(extra)
        if "Date" not in headers:
            parts.append(date_line())
        parts.append(_connection_line(version, keep_alive))
        return b"".join(parts)


# `server.server_header` is the first line of the listener's `extra` head lines; an answer that
# names its own Server (an upstream's, a function's) keeps that one instead.
SERVER_PREFIX: Final = b"Server: "


def without_server_line(extra: bytes) -> bytes:
    return extra[extra.index(b"\r\n") + 2 :]


def _ended(
    parts: list[bytes],
    body: bytes,
    length: int,
    has_type: bool,
    has_date: bool,
    version: HttpVersion,
    keep_alive: bool,
    head_only: bool,
) -> bytes:
    """A whole answer's head completed (framing, Date, Connection) and joined with its body;
    `length` -1 for an answer that has no body by its status."""
    if length >= 0:
        if body and not has_type:
            parts.append(_CONTENT_TYPE_LINE)
        parts.append(b"Content-Length: %d\r\n" % length)
    if not has_date:
        parts.append(date_line())
    parts.append(_connection_line(version, keep_alive))
    parts.append(b"\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)


def merge_vary(theirs: str, ours: str) -> str:
    """`theirs` (a Vary value) followed by the names of `ours` it does not list already."""
    if ours.lower() == theirs.lower():
        return theirs
    listed = {name.strip().lower() for name in theirs.split(",")}
    if "*" in listed:
        return theirs
    added = [name.strip() for name in ours.split(",") if name.strip().lower() not in listed]
    return ", ".join([theirs, *added]) if added else theirs


def _with_vary(extra: Mapping[str, str], own_vary: str) -> Mapping[str, str]:
    """The per-request headers, with a stage's Vary (CORS: Origin, compression:
    Accept-Encoding) merged into the integration's own Vary rather than replacing it."""
    stage_vary = extra.get("Vary")
    return {
        **extra,
        "Vary": own_vary if stage_vary is None else merge_vary(own_vary, stage_vary),
    }


class OneWriteResponse(Response):
    """A whole answer whose unchanging header lines are already serialized.

    `headers` is built only when something asks for it (the response cache, on a miss); after
    that it is the source of the serialized head, so changes made through it are honoured."""

    __slots__ = ("_head", "_raw_reason", "extra")

    def __init__(
        self,
        status: int,
        head: ResponseHead,
        body: bytes,
        extra: Mapping[str, str],
        reason: bytes = b"",
    ) -> None:
        self.status = status
        self.reason = None
        self._raw_reason = reason
        self._head = head
        self.extra = extra
        self.body = body
        self._headers = None
        self.close_connection = False
        self.streamed = False
        self.streamed_length = 0

    def recode(self, head: ResponseHead, body: bytes) -> None:
        """Replaces the head and body of an answer whose head is unchanged (an encoder's)."""
        self._head = head
        self.body = body

    @property
    def unchanged_head(self) -> ResponseHead | None:
        """The head as built, or None once `headers` was read (it may have been changed since)."""
        return self._head if self._headers is None else None

    @property
    def headers(self) -> CIMultiDict[str]:
        headers = self._headers
        if headers is None:
            headers = CIMultiDict()
            lines, vary = self._head[:2]
            for line in lines.decode("utf-8", "replace").split("\r\n"):
                if line:
                    name, _, value = line.partition(": ")
                    headers.add(name, value)
            if vary is not None:
                headers.add("Vary", vary)
            headers.update(self.extra)
            self._headers = headers
        return headers

    def _reason_bytes(self) -> bytes:
        return self._raw_reason

    def encode(
        self, version: HttpVersion, keep_alive: bool, head_only: bool, extra: bytes
    ) -> bytes:
        if self._headers is not None:
            return Response.encode(self, version, keep_alive, head_only, extra)
        # whole_bytes does this for the lean way; kept inline here, where the mock, the cache
        # hit and the proxied answers of the full way pass: a call more costs them about 1%.
        lines, vary, has_content_type, has_server, has_date = self._head
        if has_server and extra[:8] == SERVER_PREFIX:  # startswith parses its arguments slowly
            extra = without_server_line(extra)
        own = self.extra
        if vary is not None:
            own = _with_vary(own, vary)
        # status_line's memo, looked up inline: the usual status line was made before.
        line = _STATUS_LINES.get((version[0], version[1], self.status, self._raw_reason))
        # Native, in one piece: the answers of the hot paths (proxied, cached, mocked) end here.
        return whole_answer_bytes(
            line if line is not None else status_line(version, self.status, self._raw_reason),
            lines,
            own,
            extra,
            has_content_type,
            has_date,
            version[1],
            keep_alive,
            self.body,
            head_only,
        )


# whole_bytes in one native call, for the usual head (one without a Vary of its own).
encode_whole: Final = WholeAnswers(_REASONS).encode


def whole_bytes(
    version: HttpVersion,
    status: int,
    reason: bytes,
    head: ResponseHead,
    body: bytes,
    own: Mapping[str, str],
    keep_alive: bool,
    extra: bytes,
) -> bytes:
    """OneWriteResponse(status, head, body, own, reason).encode(version, keep_alive, False,
    extra), without the response: for an upstream's whole answer relayed as it came."""
    lines, vary, has_content_type, has_server, has_date = head
    if has_server and extra[:8] == SERVER_PREFIX:  # startswith parses its arguments slowly
        extra = without_server_line(extra)
    if vary is not None:
        own = _with_vary(own, vary)
    line = _STATUS_LINES.get((version[0], version[1], status, reason))
    return whole_answer_bytes(
        line if line is not None else status_line(version, status, reason),
        lines,
        own,
        extra,
        has_content_type,
        has_date,
        version[1],
        keep_alive,
        body,
        False,
    )


class UpgradedResponse(Response):
    """A WebSocket session that ran to its end on a connection handed to aiohttp; `websocket`
    is aiohttp's response for it, which its server finishes."""

    __slots__ = ("websocket",)

    def __init__(self, websocket: object) -> None:
        super().__init__(status=101)
        self.streamed = True
        self.websocket = websocket


class ResponseStream(Protocol):
    """The body of a streamed answer, written piece by piece."""

    async def write(self, data: bytes) -> None:
        """Sends `data`, waiting while the client's socket buffer is full; raises
        ConnectionResetError when the client went away."""
        ...

    async def finish(self) -> None:
        """Ends the body (the last chunk, for a chunked answer)."""
        ...

    def abort(self) -> None:
        """Cuts the client off: the body cannot be completed (an upstream broke mid-body)."""
        ...
