"""Payload compression of REST-style APIs (`minimum_compression_size`), as AWS API Gateway does it.

Two parts, both built at load only for routes of an API that sets the key:

- `CompressionStage`, in the route's pipeline before validation and templates: picks the coding
  the answer may be sent in from Accept-Encoding (pygw/codings.py has AWS's rule) into
  `ctx.content_coding`, adds `Vary: Accept-Encoding` to every answer, and has a request body sent
  with a Content-Encoding decoded as it is read (bounded by `server.limits.max_body_bytes`), so
  that validation, templates and integrations see the decoded body.
- `CompressingIntegration`, wrapped around the route's integration (inside the response cache,
  outside response templates: AWS compresses what the templates produced, and the cache keeps
  what the client got, one entry per coding): encodes an answer of at least the minimum size
  that carries no Content-Encoding yet, whole or, for a streamed answer, chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from pygw.codings import (
    DecodedBody,
    choose_coding,
    encode_whole,
    new_encoder,
    request_decoder,
    weak_etag_lines,
)
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.pipeline import Integration
from pygw.response import OneWriteResponse, Response, ResponseStream, merge_vary

__all__ = ["CompressingIntegration", "CompressionStage", "EncodingStream"]

_VARY: Final = "Accept-Encoding"
# Answers whose body is not a representation to encode: no body, or a byte range of the
# unencoded one.
_NOT_ENCODED: Final = frozenset({204, 206, 304})


def _joined(raw_headers: tuple[tuple[bytes, bytes], ...], lower_name: bytes) -> str | None:
    """Every value of one header, comma-joined (a list may span several lines)."""
    found: list[bytes] = []
    for name, value in raw_headers:
        if len(name) == len(lower_name) and name.lower() == lower_name:
            found.append(value)
    if not found:
        return None
    return b", ".join(found).decode("latin-1")


class CompressionStage:
    """Chooses the answer's coding and decodes an encoded request body (see the module)."""

    __slots__ = ("_max_body_bytes",)

    def __init__(self, max_body_bytes: int) -> None:
        self._max_body_bytes = max_body_bytes

    async def __call__(self, ctx: RequestContext) -> Response | None:
        return self.check(ctx)

    def check(self, ctx: RequestContext) -> Response | None:
        request = ctx.request
        raw = request.raw_headers
        if request.method != "HEAD":
            ctx.content_coding = choose_coding(_joined(raw, b"accept-encoding"))
        extra = ctx.response_headers
        vary = extra.get("Vary")
        extra["Vary"] = _VARY if vary is None else merge_vary(vary, _VARY)
        if request.body_present:
            encoding = _joined(raw, b"content-encoding")
            if encoding is not None:
                self._decode(ctx, encoding)
        return None

    def _decode(self, ctx: RequestContext, encoding: str) -> None:
        try:
            decoder = request_decoder(encoding)
        except ValueError as unsupported:
            raise GatewayError(ErrorType.UNSUPPORTED_MEDIA_TYPE) from unsupported
        request = ctx.request
        if decoder is None:
            return
        request.replace_content(DecodedBody(request.content, decoder(), self._max_body_bytes))
        # The decoded body's length is known once it is read: it is sent on chunked (or, read
        # by a stage, with its length) and without the coding it no longer has.
        kept = tuple(
            (name, value)
            for name, value in request.raw_headers
            if name.lower() not in (b"content-encoding", b"content-length", b"transfer-encoding")
        )
        request.replace_headers((*kept, (b"Transfer-Encoding", b"chunked")))
        request.content_length = None


class EncodingStream:
    """A streamed answer's body, encoded as it goes: each piece is flushed to the client as it
    comes (a server-sent event is not held back), and `sink` (the cache's copy) sees the
    encoded bytes the client gets."""

    __slots__ = ("_encode", "_inner", "_sink")

    def __init__(
        self,
        inner: ResponseStream,
        coding: str,
        sink: Callable[[bytes], None] | None,
    ) -> None:
        self._inner = inner
        self._encode = new_encoder(coding)
        self._sink = sink

    async def write(self, data: bytes) -> None:
        out = self._encode(data)
        if out:
            if self._sink is not None:
                self._sink(out)
            await self._inner.write(out)

    async def finish(self) -> None:
        out = self._encode.finish()
        if out:
            if self._sink is not None:
                self._sink(out)
            await self._inner.write(out)
        await self._inner.finish()

    def abort(self) -> None:
        self._inner.abort()


class CompressingIntegration:
    """Encodes `inner`'s answers in the coding CompressionStage chose (see the module)."""

    __slots__ = ("_minimum", "inner")

    def __init__(self, inner: Integration, minimum_size: int) -> None:
        self.inner = inner
        self._minimum = minimum_size

    async def close(self) -> None:
        await self.inner.close()

    async def __call__(self, ctx: RequestContext) -> Response:
        coding = ctx.content_coding
        if coding is None:
            return await self.inner(ctx)
        ctx.stream_encoder = self._start_stream
        try:
            response = await self.inner(ctx)
        finally:
            ctx.stream_encoder = None
        if response.streamed or response.status in _NOT_ENCODED or response.status < 200:
            return response
        body = response.body
        if not body or len(body) < self._minimum:
            return response
        if isinstance(response, OneWriteResponse):
            head = response.unchanged_head
            if head is not None:
                lines = head[0]
                lowered = b"\n" + lines.lower()
                # find, not `in`: bytes.__contains__ tries its argument as an int first and
                # builds a TypeError's message before searching (about 1 000 instructions).
                if lowered.find(b"\ncontent-encoding:") >= 0:
                    return response
                if lowered.find(b"\netag:") >= 0:
                    lines = weak_etag_lines(lines)
                lines += b"Content-Encoding: %s\r\n" % coding.encode("ascii")
                response.recode((lines, *head[1:]), encode_whole(coding, body))
                return response
        headers = response.headers
        if "Content-Encoding" in headers:
            return response
        _weaken_etag(response)
        headers["Content-Encoding"] = coding
        response.body = encode_whole(coding, body)
        return response

    def _start_stream(
        self, ctx: RequestContext, response: Response, at_once: bool
    ) -> ResponseStream:
        coding = ctx.content_coding
        headers = response.headers
        status = response.status
        if (
            coding is None
            or status in _NOT_ENCODED
            or status < 200
            or "Content-Encoding" in headers
        ):
            return ctx.request.start_stream(response, at_once)
        length = headers.get("Content-Length")
        # An answer of unknown length is encoded (nginx's gzip_min_length reads the length the
        # same way): holding it back to count would delay a stream's first bytes.
        if length is not None and length.isdigit() and int(length) < self._minimum:
            return ctx.request.start_stream(response, at_once)
        headers.popall("Content-Length", None)
        _weaken_etag(response)
        headers["Content-Encoding"] = coding
        sink = ctx.body_sink
        ctx.body_sink = None
        return EncodingStream(ctx.request.start_stream(response, at_once), coding, sink)


def _weaken_etag(response: Response) -> None:
    headers = response.headers
    etag = headers.get("ETag")
    if etag is not None and etag.startswith('"'):
        headers["ETag"] = "W/" + etag
