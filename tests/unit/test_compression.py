"""Content codings (pygw/codings.py) and what the compiler builds for `minimum_compression_size`."""

from __future__ import annotations

import gzip
import textwrap
import zlib
from pathlib import Path

import pytest

from pygw import codings
from pygw.codings import (
    BROTLI,
    DecodedBody,
    choose_coding,
    encode_whole,
    new_encoder,
    request_decoder,
    weak_etag_lines,
)
from pygw.config.load import load_config
from pygw.observe.metrics import Metrics
from pygw.request import RequestBody, RequestBodyError
from pygw.response import merge_vary
from pygw.runtime import compile_runtime
from pygw.stages.cache import CachingIntegration
from pygw.stages.compress import CompressingIntegration, CompressionStage


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, None),
        ("", None),
        (" , ,", None),
        ("*", None),
        ("*;q=0", None),
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("Deflate", "deflate"),
        ("deflate,gzip", "deflate"),
        ("gzip, deflate, br", "gzip"),
        ("deflate;q=0.5,gzip;q=1.0", "gzip"),
        ("gzip;q=1.0,identity;q=0.5,*;q=0", "gzip"),
        ("gzip;q=0.001, identity;q=0.002", None),
        ("identity;q=0", None),
        ("identity;q=0, gzip;q=0.5", "gzip"),
        ("compress, gzip;q=0.9", None),
        ("gzip;q=1.5", None),  # out of range: the element is dropped
        ("gzip;q=0.1234", None),  # more than three decimals
        ("gzip ; q=0.5 , deflate ; q=0.4", "gzip"),
        ("gzip;level=1", "gzip"),
    ],
)
def test_choose_coding(accept: str | None, chosen: str | None) -> None:
    assert choose_coding(accept) == chosen
    assert choose_coding(accept) == chosen  # the remembered answer is the same


def test_brotli_offered_only_when_installed() -> None:
    assert choose_coding("br") == ("br" if BROTLI else None)
    assert choose_coding("br;q=0.9, deflate;q=0.8") == ("br" if BROTLI else None)


def test_choice_memo_is_bounded() -> None:
    for i in range(2000):
        choose_coding(f"gzip;q=0.{i % 1000:03d}, x{i}")
    assert len(codings._chosen) <= 256


@pytest.mark.parametrize("coding", ["gzip", "deflate", *(["br"] if BROTLI else [])])
def test_stream_encoder_flushes_each_piece(coding: str) -> None:
    encode = new_encoder(coding)
    pieces = [b"first piece " * 20, b"second " * 30, b"", b"third"]
    decoded = b""
    decode = _stream_decoder(coding)
    for piece in pieces:
        decoded += decode(encode(piece))
        # Everything written so far decodes without waiting for more.
        assert decoded == b"".join(pieces[: pieces.index(piece) + 1])
    decode(encode.finish())
    assert encode_whole(coding, b"".join(pieces))  # the one-shot form as well
    assert _whole_decode(coding, encode_whole(coding, b"x" * 5000)) == b"x" * 5000


def _stream_decoder(coding: str):  # type: ignore[no-untyped-def]
    if coding == "br":
        import brotli

        return brotli.Decompressor().process
    return zlib.decompressobj(31 if coding == "gzip" else 15).decompress


def _whole_decode(coding: str, data: bytes) -> bytes:
    if coding == "br":
        import brotli

        return bytes(brotli.decompress(data))
    return zlib.decompress(data, 31 if coding == "gzip" else 15)


def test_weak_etag_lines() -> None:
    lines = b'Content-Type: text/plain\r\nETag: "abc"\r\nX-ETag: "keep"\r\n'
    assert weak_etag_lines(lines) == (
        b'Content-Type: text/plain\r\nETag: W/"abc"\r\nX-ETag: "keep"\r\n'
    )
    assert weak_etag_lines(b'etag: W/"x"\r\n') == b'etag: W/"x"\r\n'


def test_merge_vary() -> None:
    assert merge_vary("Accept-Encoding", "Accept-Encoding") == "Accept-Encoding"
    assert merge_vary("Cookie", "Accept-Encoding") == "Cookie, Accept-Encoding"
    assert merge_vary("accept-encoding, Cookie", "Origin, Accept-Encoding") == (
        "accept-encoding, Cookie, Origin"
    )
    assert merge_vary("*", "Accept-Encoding") == "*"


# -- request bodies --------------------------------------------------------------------------------


def _body(*chunks: bytes) -> RequestBody:
    body = RequestBody()
    for chunk in chunks:
        body.feed(chunk)
    body.feed_eof()
    return body


def _decoded(encoding: str, *chunks: bytes, limit: int = 1 << 20) -> DecodedBody:
    make = request_decoder(encoding)
    assert make is not None
    return DecodedBody(_body(*chunks), make(), limit)


async def test_decoded_body_in_pieces() -> None:
    payload = bytes(range(256)) * 1000
    encoded = gzip.compress(payload)
    pieces = [encoded[i : i + 100] for i in range(0, len(encoded), 100)]
    body = _decoded("gzip", *pieces)
    assert await body.read() == payload
    assert body.at_eof()


async def test_decoded_body_reads_are_bounded_per_call() -> None:
    # One small piece that expands to 1 MiB is handed out in steps, never whole.
    body = _decoded("gzip", gzip.compress(bytes(1 << 20)), limit=2 << 20)
    sizes = []
    while chunk := await body.readany():
        sizes.append(len(chunk))
    assert sum(sizes) == 1 << 20
    assert max(sizes) <= 65_536


async def test_decoded_body_limit() -> None:
    body = _decoded("deflate", zlib.compress(bytes(10_001)), limit=10_000)
    with pytest.raises(RequestBodyError) as refused:
        await body.read()
    assert refused.value.status == 413


async def test_decoded_body_read_n() -> None:
    body = _decoded("gzip", gzip.compress(b"abcdefgh"))
    assert await body.read(3) == b"abc"
    assert not body.at_eof()
    assert await body.read() == b"defgh"


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("gzip", b"not gzip"),
        ("gzip", gzip.compress(b"abc")[:-3]),
        ("gzip", gzip.compress(b"abc") + b"more"),
        ("gzip", b""),
        ("deflate", zlib.compress(b"abc")[:-2]),
        *([("br", b"\xff\xff\xff not brotli")] if BROTLI else []),
    ],
)
async def test_bad_encoded_bodies(encoding: str, data: bytes) -> None:
    body = _decoded(encoding, data) if data else _decoded(encoding)
    with pytest.raises(RequestBodyError) as refused:
        await body.read()
    assert refused.value.status == 415


def test_request_decoder_names() -> None:
    assert request_decoder("identity") is None
    assert request_decoder(" Identity , ") is None
    assert request_decoder("x-gzip") is not None
    assert request_decoder("gzip, identity") is not None
    for unsupported in ("compress", "zstd", "gzip, gzip", "gzip, deflate"):
        with pytest.raises(ValueError):
            request_decoder(unsupported)
    if not BROTLI:
        with pytest.raises(ValueError):
            request_decoder("br")


# -- compiled at load ------------------------------------------------------------------------------


def test_only_apis_with_the_key_get_compression(tmp_path: Path) -> None:
    config = tmp_path / "pygw.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            apis:
              - name: zipped
                type: rest
                base_path: /z
                minimum_compression_size: 0
                cache: {ttl_s: 30}
                routes:
                  "GET /a": {integration: {type: mock, body: "x"}}
              - name: plain
                type: rest
                base_path: /p
                cache: {ttl_s: 30}
                routes:
                  "GET /a": {integration: {type: mock, body: "x"}}
              - name: lean
                type: http
                base_path: /h
                routes:
                  "GET /a": {integration: {type: mock, body: "x"}}
            """
        )
    )
    runtime = compile_runtime(load_config(config), Metrics())
    by_api = {route.api: route for route in runtime.routes if not route.synthetic}
    zipped = by_api["zipped"].primary.pipeline
    assert any(isinstance(stage, CompressionStage) for stage in zipped.stages)
    assert isinstance(zipped.integration, CachingIntegration)
    assert isinstance(zipped.integration.inner, CompressingIntegration)
    for name in ("plain", "lean"):
        pipeline = by_api[name].primary.pipeline
        assert not any(isinstance(stage, CompressionStage) for stage in pipeline.stages)
        inner = pipeline.integration
        if isinstance(inner, CachingIntegration):
            inner = inner.inner
        assert not isinstance(inner, CompressingIntegration)
