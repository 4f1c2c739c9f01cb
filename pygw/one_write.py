"""OneWriteResponse: a complete in-memory response, serialized by pygw and sent in one write.

aiohttp's `Response` copies its headers into a CIMultiDict, fills in Date, Server,
Content-Length and Connection there, serializes them and hands the bytes through its
StreamWriter; for a small answer that is about a third of what the whole request costs the
gateway (bench/README.md, "Where the time goes"). When the status, the headers and the body are
all known before the response starts (a response-cache hit, an upstream answer that arrived
whole) the same bytes can be put together with a few joins: header lines that never change are
kept serialized (`ResponseHead`), and only the per-request headers (request ids, rate limits,
CORS, X-Cache) are serialized per answer.

`headers` is built only when something asks for it (the response cache, on a miss); after that
it is the source of the serialized head, so changes made through it are honoured.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict

from pygw._native import header_lines

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter

__all__ = ["OneWriteResponse", "ResponseHead", "head_from_pairs", "per_request_names"]

_REASONS: Final = {status.value: status.phrase for status in HTTPStatus}
_SERVER_LINE: Final = f"Server: {SERVER_SOFTWARE}\r\n".encode()
_CONTENT_TYPE_LINE: Final = b"Content-Type: application/octet-stream\r\n"
_CLOSE_LINE: Final = b"Connection: close\r\n"
_KEEP_ALIVE_LINE: Final = b"Connection: keep-alive\r\n"
_STATUS_LINES: dict[tuple[int, int, int, bytes], bytes] = {}


class _DateLine:
    """`Date: ...\\r\\n`, formatted once per second (RFC 9110 IMF-fixdate)."""

    __slots__ = ("line", "second")

    def __init__(self) -> None:
        self.second = -1
        self.line = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            stamp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
            self.line = f"Date: {stamp}\r\n".encode("ascii")
            self.second = now
        return self.line


_date = _DateLine()


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


_NAMES_MEMO: dict[tuple[str, ...], frozenset[bytes]] = {}


def per_request_names(extra: Iterable[str]) -> frozenset[bytes]:
    """The lower-cased names of the per-request headers, as bytes: an upstream's header of the
    same name must not be relayed or stored beside them (with aiohttp's Response the stage's
    value replaces it). A route's stages set the same few names on almost every request, so the
    sets are remembered (a bounded number of them)."""
    names = tuple(extra)
    found = _NAMES_MEMO.get(names)
    if found is None:
        found = frozenset(name.lower().encode("latin-1") for name in names)
        if len(_NAMES_MEMO) < 256:
            _NAMES_MEMO[names] = found
    return found


def _status_line(version: tuple[int, int], status: int, reason: bytes) -> bytes:
    key = (version[0], version[1], status, reason)
    line = _STATUS_LINES.get(key)
    if line is None:
        if not reason:
            reason = _REASONS.get(status, "").encode("ascii")
        line = b"HTTP/%d.%d %d %s\r\n" % (version[0], version[1], status, reason)
        if len(_STATUS_LINES) < 1024:  # reasons come from upstreams: keep the memo bounded
            _STATUS_LINES[key] = line
    return line


def _extra_lines(extra: Mapping[str, str], own_vary: str | None) -> bytes:
    """The per-request headers, with a stage's Vary (CORS: Origin) merged into the integration's
    own Vary (say Accept-Encoding) rather than replacing it."""
    if own_vary is not None:
        stage_vary = extra.get("Vary")
        if stage_vary is None or stage_vary.lower() in own_vary.lower():
            extra = {**extra, "Vary": own_vary}
        else:
            extra = {**extra, "Vary": f"{own_vary}, {stage_vary}"}
    # Native: formatting the lines and looking for line breaks took about 1 µs in Python for
    # the seven headers of a REST cache hit. A line break refuses the response (ValueError).
    return header_lines(extra)


class OneWriteResponse(web.StreamResponse):
    """A response whose head and body leave in one `transport.write`.

    For statuses and methods that carry a body (not HEAD, 1xx, 204 or 304): callers check."""

    def __init__(
        self,
        status: int,
        head: ResponseHead,
        body: bytes,
        extra: Mapping[str, str],
        reason: bytes = b"",
    ) -> None:
        # StreamResponse.__init__ would build an empty CIMultiDict for headers nobody reads.
        self._state = {}
        self._status = status
        self._reason = ""
        self._raw_reason = reason
        self._head = head
        self._extra = extra
        self._one_body = body
        self._materialised: CIMultiDict[str] | None = None

    @property
    def reason(self) -> str:
        return self._raw_reason.decode("latin-1") or _REASONS.get(self._status, "")

    @property
    def body(self) -> bytes:
        return self._one_body

    @property
    def unchanged_head(self) -> ResponseHead | None:
        """The head as built, or None once `headers` was read (it may have been changed since)."""
        return self._head if self._materialised is None else None

    @property
    def headers(self) -> CIMultiDict[str]:
        headers = self._materialised
        if headers is None:
            headers = CIMultiDict()
            lines, vary = self._head[:2]
            for line in lines.decode("utf-8", "replace").split("\r\n"):
                if line:
                    name, _, value = line.partition(": ")
                    headers.add(name, value)
            if vary is not None:
                headers.add("Vary", vary)
            headers.update(self._extra)
            self._materialised = headers
        return headers

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        self.send(request)
        return None

    def send(self, request: web.BaseRequest) -> None:
        """prepare() without a coroutine: the server's request handler calls this directly."""
        if self._eof_sent:
            return
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        keep_alive = request.keep_alive
        self._keep_alive = keep_alive
        version = request.version
        body = self._one_body
        parts = [_status_line(version, self._status, self._raw_reason)]
        materialised = self._materialised
        if materialised is None:
            lines, vary, has_content_type, has_server, has_date = self._head
            parts.append(lines)
            parts.append(_extra_lines(self._extra, vary))
        else:
            materialised.popall("Content-Length", None)
            materialised.popall("Transfer-Encoding", None)
            parts.append(_extra_lines(materialised, None))
            has_content_type = "Content-Type" in materialised
            has_server = "Server" in materialised
            has_date = "Date" in materialised
        worker_line: bytes | None = getattr(request, "response_line", None)
        if worker_line is not None:
            parts.append(worker_line)
        if body and not has_content_type:
            parts.append(_CONTENT_TYPE_LINE)
        parts.append(b"Content-Length: %d\r\n" % len(body))
        if not has_date:
            parts.append(_date.get())
        if not has_server:
            parts.append(_SERVER_LINE)
        if not keep_alive:
            if version >= (1, 1):
                parts.append(_CLOSE_LINE)
        elif version < (1, 1):
            parts.append(_KEEP_ALIVE_LINE)
        parts.append(b"\r\n")
        parts.append(body)
        transport.write(b"".join(parts))
        self._eof_sent = True
        self._body_length = len(body)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        raise RuntimeError("a OneWriteResponse is sent whole; it cannot be written to")

    async def write_eof(self, data: bytes = b"") -> None:
        return None
