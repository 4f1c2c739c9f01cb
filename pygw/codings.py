"""Content codings (gzip, deflate, and br when the `brotli` package is installed): choosing one
from a client's Accept-Encoding as AWS API Gateway's REST APIs do, encoding answers whole or as
they stream, and decoding request bodies with a bound on what they expand to.

AWS's rule (the developer guide's "Content codings supported by API Gateway" and "Receive an API
response with a compressed payload"): the coding the client prefers most must be one the gateway
supports, or the answer goes out uncompressed. No Accept-Encoding (which RFC 9110 reads as `*`),
an empty one, or a bare `*` never turns compression on: a client must name a coding. A coding
with q=0 is refused by the client and never chosen; `identity;q=0` is not honoured by refusing
the request (no 406), the answer is then sent uncompressed as AWS does.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from typing import Final, Protocol

from pygw.request import BodyStream, RequestBody, RequestBodyError

try:
    import brotli
except ImportError:  # optional: br is offered only when the package is installed
    brotli = None

__all__ = [
    "BROTLI",
    "CODINGS",
    "DecodedBody",
    "Encoder",
    "choose_coding",
    "encode_whole",
    "new_encoder",
    "request_decoder",
    "weak_etag_lines",
]

BROTLI: Final = brotli is not None
# The codings answers may be sent in, by the names clients write.
CODINGS: Final = ("gzip", "deflate", "br") if BROTLI else ("gzip", "deflate")
_ALIASES: Final = {"x-gzip": "gzip"}
# zlib's default level; brotli's quality 4 is the usual choice for answers made per request
# (its default, 11, is meant for static files and costs tens of times more).
_ZLIB_LEVEL: Final = 6
_BROTLI_QUALITY: Final = 4
_WBITS: Final = {"gzip": 31, "deflate": 15}
# Decoded bytes handed out per read: a small compressed body cannot make one read allocate more.
_DECODE_STEP: Final = 65_536
_Q_VALUE: Final = re.compile(r"^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$")
_MEMO_SIZE: Final = 256
_chosen: dict[str, str | None] = {}


def _parse(value: str) -> list[tuple[str, float]]:
    """(coding, q) of each well-formed element, in order; a malformed q drops its element."""
    found: list[tuple[str, float]] = []
    for element in value.split(","):
        coding, _, params = element.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        for param in params.split(";") if params else ():
            name, _, raw = param.partition("=")
            if name.strip().lower() == "q":
                raw = raw.strip()
                if not _Q_VALUE.match(raw):
                    q = -1.0
                    break
                q = float(raw)
        if q >= 0.0:
            found.append((_ALIASES.get(coding, coding), q))
    return found


def _choose(value: str) -> str | None:
    offered = [(coding, q) for coding, q in _parse(value) if q > 0.0]
    if not offered:
        return None
    top = max(q for _, q in offered)
    # Codings sharing the highest q are equally preferred: the first the gateway supports wins
    # (`gzip, deflate, br` from a browser compresses with gzip). `*` and identity name no coding.
    for coding, q in offered:
        if q == top and coding in CODINGS:
            return coding
        if q == top and coding == "identity":
            return None
    return None


def choose_coding(accept_encoding: str | None) -> str | None:
    """The coding to answer in for this Accept-Encoding value (None: uncompressed)."""
    if accept_encoding is None:
        return None
    found = _chosen.get(accept_encoding, "")
    if found != "":
        return found
    chosen = _choose(accept_encoding)
    if len(accept_encoding) <= 256:
        # Clients repeat the few values their libraries send.
        if len(_chosen) >= _MEMO_SIZE:
            _chosen.clear()
        _chosen[accept_encoding] = chosen
    return chosen


class Encoder(Protocol):
    def __call__(self, data: bytes) -> bytes:
        """The encoded bytes for `data`, flushed so the client can decode all of it now."""
        ...

    def finish(self) -> bytes:
        """The end of the encoded stream."""
        ...


class _ZlibEncoder:
    __slots__ = ("_compress", "_flush")

    def __init__(self, coding: str) -> None:
        encoder = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, _WBITS[coding])
        self._compress = encoder.compress
        self._flush = encoder.flush

    def __call__(self, data: bytes) -> bytes:
        return self._compress(data) + self._flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._flush(zlib.Z_FINISH)


class _BrotliEncoder:
    __slots__ = ("_encoder",)

    def __init__(self) -> None:
        assert brotli is not None
        self._encoder = brotli.Compressor(quality=_BROTLI_QUALITY)

    def __call__(self, data: bytes) -> bytes:
        encoder = self._encoder
        return bytes(encoder.process(data)) + bytes(encoder.flush())

    def finish(self) -> bytes:
        return bytes(self._encoder.finish())


def new_encoder(coding: str) -> Encoder:
    """A streaming encoder for one of CODINGS."""
    if coding == "br":
        return _BrotliEncoder()
    return _ZlibEncoder(coding)


def encode_whole(coding: str, data: bytes) -> bytes:
    if coding == "br":
        assert brotli is not None
        return bytes(brotli.compress(data, quality=_BROTLI_QUALITY))
    return zlib.compress(data, _ZLIB_LEVEL, _WBITS[coding])


_ETAG_LINE: Final = re.compile(rb'^(etag:[ \t]*)(")', re.IGNORECASE | re.MULTILINE)


def weak_etag_lines(lines: bytes) -> bytes:
    """Header lines with a strong ETag made weak: the encoded body is not the byte sequence the
    upstream's strong validator names (RFC 9110 section 8.8.1), as nginx's gzip module does."""
    return _ETAG_LINE.sub(rb"\1W/\2", lines)


# -- request bodies ------------------------------------------------------------------------------


class _Decoder(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def more(self) -> bytes:
        """Output still held back from input already fed (b"" when it needs more input)."""
        ...

    def end(self) -> None:
        """Raises ValueError when the input stopped before the encoded stream's end."""
        ...


class _ZlibStream(Protocol):
    """What zlib.decompressobj returns, as used here."""

    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    @property
    def unconsumed_tail(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


class _ZlibDecoder:
    __slots__ = ("_decoder", "_wbits")

    def __init__(self, coding: str) -> None:
        self._wbits = _WBITS[coding]
        self._decoder: _ZlibStream | None = None

    def feed(self, data: bytes) -> bytes:
        decoder = self._decoder
        if decoder is None:
            wbits = self._wbits
            # `deflate` means a zlib stream (RFC 9110 section 8.4.1.2); some clients send raw
            # deflate data under that name, which has no zlib header.
            if wbits == 15 and len(data) >= 2 and not _zlib_header(data):
                wbits = -15
            decoder = self._decoder = zlib.decompressobj(wbits)
        elif decoder.eof:
            raise ValueError("data after the end of the encoded body")
        else:
            tail = decoder.unconsumed_tail
            if tail:
                data = tail + data
        try:
            out = decoder.decompress(data, _DECODE_STEP)
        except zlib.error as bad:
            raise ValueError(str(bad)) from None
        if decoder.eof and decoder.unused_data:
            raise ValueError("data after the end of the encoded body")
        return out

    def more(self) -> bytes:
        decoder = self._decoder
        if decoder is None or not decoder.unconsumed_tail:
            return b""
        try:
            return decoder.decompress(decoder.unconsumed_tail, _DECODE_STEP)
        except zlib.error as bad:
            raise ValueError(str(bad)) from None

    def end(self) -> None:
        if self._decoder is None or not self._decoder.eof:
            raise ValueError("the encoded body is cut short")


def _zlib_header(data: bytes) -> bool:
    return data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0


class _BrotliDecoder:
    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        assert brotli is not None
        self._decoder = brotli.Decompressor()

    def feed(self, data: bytes) -> bytes:
        decoder = self._decoder
        if decoder.is_finished():
            raise ValueError("data after the end of the encoded body")
        try:
            return bytes(decoder.process(data, output_buffer_limit=_DECODE_STEP))
        except brotli.error as bad:
            raise ValueError(str(bad)) from None

    def more(self) -> bytes:
        decoder = self._decoder
        if decoder.can_accept_more_data():
            return b""
        try:
            return bytes(decoder.process(b"", output_buffer_limit=_DECODE_STEP))
        except brotli.error as bad:
            raise ValueError(str(bad)) from None

    def end(self) -> None:
        if not self._decoder.is_finished():
            raise ValueError("the encoded body is cut short")


def request_decoder(content_encoding: str) -> Callable[[], _Decoder] | None:
    """What decodes a request body sent with this Content-Encoding value; None for identity.
    Raises ValueError for a coding the gateway cannot decode (or several stacked)."""
    codings = [
        _ALIASES.get(c, c)
        for c in (part.strip().lower() for part in content_encoding.split(","))
        if c and c != "identity"
    ]
    if not codings:
        return None
    if len(codings) > 1:
        raise ValueError(f"stacked content codings {content_encoding!r} are not supported")
    coding = codings[0]
    if coding == "br" and BROTLI:
        return _BrotliDecoder
    if coding in _WBITS:
        return lambda: _ZlibDecoder(coding)
    raise ValueError(f"content coding {coding!r} is not supported")


_BAD_BODY: Final = "the request body is not in the content coding it names"


class DecodedBody:
    """A request body decoded as it is read, bounded by `limit` decoded bytes (413 beyond it,
    the defence against a small body that expands enormously); a body that is not in its coding
    fails the read with 415, as AWS answers."""

    __slots__ = ("_decoder", "_done", "_held", "_inner", "_limit", "_size")

    def __init__(self, inner: BodyStream, decoder: _Decoder, limit: int) -> None:
        self._inner = inner
        self._decoder = decoder
        self._limit = limit
        self._size = 0
        self._done = False
        self._held = b""

    async def readany(self) -> bytes:
        held = self._held
        if held:
            self._held = b""
            return held
        decoder = self._decoder
        while not self._done:
            try:
                out = decoder.more()
                if not out:
                    chunk = await self._inner.readany()
                    if not chunk:
                        decoder.end()
                        self._done = True
                        break
                    out = decoder.feed(chunk)
            except ValueError:
                raise RequestBodyError(415, _BAD_BODY) from None
            if out:
                self._size += len(out)
                if self._size > self._limit:
                    raise RequestBodyError(413, "the decoded request body is larger than allowed")
                return out
        return b""

    async def read(self, n: int = -1) -> bytes:
        if n >= 0:
            data = await self.readany()
            if len(data) > n:
                self._held = data[n:]
                data = data[:n]
            return data
        parts: list[bytes] = []
        while True:
            chunk = await self.readany()
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)

    def at_eof(self) -> bool:
        return self._done and not self._held

    async def prefetch(self) -> None:
        """As RequestBody.prefetch, for the encoded bytes still arriving."""
        inner = self._inner
        if isinstance(inner, RequestBody):
            await inner.prefetch()
