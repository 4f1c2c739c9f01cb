"""REST-style payload compression (`minimum_compression_size`) through the whole gateway: a config
compiled as `pygw serve` compiles it, served by pygw's own front end, in front of a real upstream
on 127.0.0.1, a mock and a function integration. The client never decompresses on its own: each
test decodes what arrived and compares it with what the upstream sent."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import textwrap
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, ClientTimeout, web
from multidict import CIMultiDict

from pygw.codings import BROTLI
from pygw.config.load import load_config
from pygw.dispatch import Dispatcher
from pygw.http1 import ConnectionLimits
from pygw.observe.metrics import Metrics
from pygw.runtime import compile_runtime
from tests.front import serve_front
from tests.integration.conftest import StartUpstream, Upstream

HANDLERS = Path(__file__).parent / "handlers"
# Text that compresses well, and is not the same at every offset.
TEXT = b"".join(b"line %05d of a compressible answer\n" % i for i in range(400))
STREAM_PIECES = [b"event: %d\n" % i + b"data: " + b"x" * 300 + b"\n\n" for i in range(8)]
MAX_BODY = 65_536
IDENTITY = {"Accept-Encoding": "identity"}
# Set by a test once its client decoded the first event of a gated stream.
GATES: list[asyncio.Event] = []


async def upstream_behaviour(request: web.BaseRequest, upstream: Upstream) -> web.StreamResponse:
    path = request.path
    if path == "/text":
        size = int(request.rel_url.query.get("size", len(TEXT)))
        return web.Response(body=TEXT[:size], content_type="text/plain", headers={"ETag": '"v1"'})
    if path == "/pregz":
        # An upstream that compresses on its own: the gateway must relay it as it is.
        return web.Response(
            body=gzip.compress(TEXT),
            content_type="text/plain",
            headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding, Cookie"},
        )
    if path == "/vary":
        return web.Response(body=TEXT, content_type="text/plain", headers={"Vary": "Cookie"})
    if path == "/stream":
        resp = web.StreamResponse()
        resp.content_type = "text/event-stream"
        await resp.prepare(request)
        for number, piece in enumerate(STREAM_PIECES):
            await resp.write(piece)
            if number == 0 and "gated" in request.rel_url.query:
                # The rest waits until the client has decoded the first event.
                await GATES[-1].wait()
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp
    if path == "/big":
        # Larger than one read of the upstream leg: streamed, with its length announced.
        body = TEXT * 200
        resp = web.StreamResponse()
        resp.content_length = len(body)
        resp.content_type = "text/plain"
        await resp.prepare(request)
        for start in range(0, len(body), 32_768):
            await resp.write(body[start : start + 32_768])
        await resp.write_eof()
        return resp
    body = await request.read()
    return web.json_response(
        {
            "body": body.decode("utf-8", "replace"),
            "sha256": hashlib.sha256(body).hexdigest(),
            "content_encoding": request.headers.get("Content-Encoding"),
            "content_length": request.headers.get("Content-Length"),
            "accept_encoding": request.headers.get("Accept-Encoding"),
        }
    )


CONFIG = """\
server:
  limits: {{max_body_bytes: {max_body}}}
python_path: [{handlers}]
apis:
  - name: shop
    type: rest
    minimum_compression_size: 1000
    models:
      Pet:
        type: object
        required: [name]
        properties: {{name: {{type: string}}}}
    routes:
      "GET /text": {{integration: {{type: http_proxy, uri: "{up}/text"}}}}
      "GET /pregz": {{integration: {{type: http_proxy, uri: "{up}/pregz"}}}}
      "ANY /any": {{integration: {{type: http_proxy, uri: "{up}/text"}}}}
      "GET /vary": {{integration: {{type: http_proxy, uri: "{up}/vary"}}}}
      "GET /stream": {{integration: {{type: http_proxy, uri: "{up}/stream"}}}}
      "GET /big": {{integration: {{type: http_proxy, uri: "{up}/big"}}}}
      "POST /pets":
        integration: {{type: http_proxy, uri: "{up}/echo"}}
        validate: {{body: Pet}}
      "POST /raw": {{integration: {{type: http_proxy, uri: "{up}/echo"}}}}
      "POST /fn": {{integration: {{type: function, handler: "lambda_echo:echo_event"}}}}
      "GET /mock":
        integration:
          {{type: mock, status: 200, headers: {{Content-Type: text/plain}}, body: "{mock}"}}
  - name: cached
    type: rest
    base_path: /cached
    minimum_compression_size: 0
    cache: {{ttl_s: 60}}
    routes:
      "GET /text": {{integration: {{type: http_proxy, uri: "{up}/text"}}}}
      "GET /stream": {{integration: {{type: http_proxy, uri: "{up}/stream"}}}}
      "GET /mock":
        integration: {{type: mock, headers: {{Vary: Cookie}}, body: "{mock}"}}
      "GET /fn": {{integration: {{type: function, handler: "lambda_echo:echo_event"}}}}
  - name: plain
    type: rest
    base_path: /plain
    routes:
      "GET /text": {{integration: {{type: http_proxy, uri: "{up}/text"}}}}
"""
MOCK_BODY = "mock answer " * 200


Fetch = Callable[..., Awaitable[tuple[int, CIMultiDict[str], bytes]]]


@pytest.fixture
async def gateway(
    start_upstream: StartUpstream, tmp_path: Path
) -> AsyncIterator[tuple[str, Upstream]]:
    upstream = await start_upstream(upstream_behaviour)
    config = tmp_path / "pygw.yaml"
    config.write_text(
        CONFIG.format(
            max_body=MAX_BODY,
            handlers=json.dumps(str(HANDLERS)),
            up=upstream.url,
            mock=MOCK_BODY,
        )
    )
    runtime = compile_runtime(load_config(config), Metrics())
    dispatcher = Dispatcher(runtime, None)
    server = await serve_front(dispatcher, ConnectionLimits(max_body_bytes=MAX_BODY))
    try:
        yield server.url, upstream
    finally:
        await server.cleanup()
        await runtime.close()


@pytest.fixture
async def fetch(gateway: tuple[str, Upstream]) -> AsyncIterator[Fetch]:
    base = gateway[0]
    async with ClientSession(auto_decompress=False, timeout=ClientTimeout(total=20)) as session:

        async def call(
            method: str, path: str, *, accept: str | None = None, **kw: Any
        ) -> tuple[int, CIMultiDict[str], bytes]:
            headers = dict(kw.pop("headers", {}))
            if accept is not None:
                headers["Accept-Encoding"] = accept
            # aiohttp adds `Accept-Encoding: gzip, deflate` unless told otherwise.
            skip = ("Accept-Encoding",) if accept is None else ()
            async with session.request(
                method, base + path, headers=headers, skip_auto_headers=skip, **kw
            ) as resp:
                return resp.status, CIMultiDict(resp.headers), await resp.read()

        yield call


def decode(coding: str | None, body: bytes) -> bytes:
    if coding is None:
        return body
    if coding == "gzip":
        return gzip.decompress(body)
    if coding == "deflate":
        return zlib.decompress(body)
    if coding == "br":
        import brotli

        return bytes(brotli.decompress(body))
    raise AssertionError(f"unexpected coding {coding}")


# -- AWS's Accept-Encoding rule -------------------------------------------------------------------

ACCEPT_CASES = [
    (None, None),  # no header: `*` by RFC 9110, and AWS does not compress
    ("", None),
    ("*", None),
    ("gzip", "gzip"),
    ("deflate", "deflate"),
    ("x-gzip", "gzip"),
    ("gzip, deflate, br", "gzip"),  # equal preference: the first supported one
    ("br, gzip", "br" if BROTLI else "gzip"),
    ("deflate;q=0.5, gzip;q=1.0", "gzip"),
    ("gzip;q=0.2, deflate;q=0.8", "deflate"),
    ("gzip;q=1.0, identity;q=0.5, *;q=0", "gzip"),
    ("identity;q=0, deflate", "deflate"),
    ("gzip;q=0", None),
    ("gzip;q=0, identity;q=0", None),  # nothing acceptable: AWS answers uncompressed
    ("zstd, gzip;q=0.5", None),  # the top preference is not supported: identity
    ("*;q=1, gzip;q=0.5", None),  # `*` names no coding
    ("identity, gzip", None),
    ("GZIP", "gzip"),
    ("gzip;q=abc, deflate;q=0.1", "deflate"),  # a malformed q drops its element
]


@pytest.mark.parametrize(("accept", "expected"), ACCEPT_CASES)
async def test_accept_encoding_rule(fetch: Fetch, accept: str | None, expected: str | None) -> None:
    status, headers, body = await fetch("GET", "/text", accept=accept)
    assert status == 200
    assert headers.get("Content-Encoding") == expected
    assert decode(expected, body) == TEXT
    assert int(headers["Content-Length"]) == len(body)
    if expected is not None:
        assert len(body) < len(TEXT) // 4
    assert "Accept-Encoding" in headers["Vary"]


async def test_brotli_when_installed(fetch: Fetch) -> None:
    status, headers, body = await fetch("GET", "/text", accept="br, gzip;q=0.9")
    assert status == 200
    if not BROTLI:
        # br is the top preference and not supported here: uncompressed, as AWS answers.
        assert "Content-Encoding" not in headers
        assert body == TEXT
        pytest.skip("the brotli package is not installed: br not offered")
    assert headers["Content-Encoding"] == "br"
    assert decode("br", body) == TEXT


# -- the size threshold ---------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "compressed"), [(999, False), (1000, True), (1001, True)])
async def test_threshold(fetch: Fetch, size: int, compressed: bool) -> None:
    status, headers, body = await fetch("GET", f"/text?size={size}", accept="gzip")
    assert status == 200
    if compressed:
        assert headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(body) == TEXT[:size]
    else:
        assert "Content-Encoding" not in headers
        assert body == TEXT[:size]
    # Below the threshold the answer still varies by Accept-Encoding (a larger one would not).
    assert headers["Vary"] == "Accept-Encoding"


async def test_strong_etag_is_made_weak_when_encoded(fetch: Fetch) -> None:
    _, headers, _ = await fetch("GET", "/text", accept="gzip")
    assert headers["ETag"] == 'W/"v1"'
    _, headers, _ = await fetch("GET", "/text", accept="identity")
    assert headers["ETag"] == '"v1"'


async def test_api_without_the_key_never_compresses(fetch: Fetch) -> None:
    status, headers, body = await fetch("GET", "/plain/text", accept="gzip")
    assert status == 200
    assert body == TEXT
    assert "Content-Encoding" not in headers
    assert "Vary" not in headers


# -- no double compression, Vary ------------------------------------------------------------------


async def test_upstream_encoded_answer_is_relayed_as_is(fetch: Fetch) -> None:
    status, headers, body = await fetch("GET", "/pregz", accept="gzip")
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    # Decoded once, it is the original: the gateway did not encode it a second time.
    assert gzip.decompress(body) == TEXT
    # Even for a client that asked for another coding, the upstream's answer is left alone.
    status, headers, body = await fetch("GET", "/pregz", accept="deflate")
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == TEXT


async def test_vary_is_merged_with_the_upstreams(fetch: Fetch) -> None:
    _, headers, _ = await fetch("GET", "/pregz", accept="gzip")
    assert headers["Vary"] == "Accept-Encoding, Cookie"
    _, headers, body = await fetch("GET", "/vary", accept="gzip")
    assert headers["Vary"] == "Cookie, Accept-Encoding"
    assert gzip.decompress(body) == TEXT


# -- streamed answers -----------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_streamed_answer_is_encoded_as_it_streams(
    gateway: tuple[str, Upstream], coding: str
) -> None:
    base = gateway[0]
    gate = asyncio.Event()
    GATES.append(gate)
    headers = {"Accept-Encoding": coding}
    async with ClientSession(auto_decompress=False, timeout=ClientTimeout(total=20)) as session:
        async with session.get(base + "/stream?gated", headers=headers) as resp:
            assert resp.headers["Content-Encoding"] == coding
            assert "Content-Length" not in resp.headers
            decoder = zlib.decompressobj(31 if coding == "gzip" else 15)
            # Each piece is flushed as it comes: the first event decodes while the upstream
            # holds the rest back (the session's timeout fails the test otherwise).
            first = b""
            while len(first) < len(STREAM_PIECES[0]):
                chunk = await resp.content.readany()
                assert chunk, "the stream ended before its first event decoded"
                first += decoder.decompress(chunk)
            assert first.startswith(STREAM_PIECES[0])
            gate.set()
            rest = await resp.read()
    whole = first + decoder.decompress(rest) + decoder.flush()
    assert decoder.eof
    assert whole == b"".join(STREAM_PIECES)


async def test_streamed_answer_with_length_below_or_above_threshold(fetch: Fetch) -> None:
    status, headers, body = await fetch("GET", "/big", accept="gzip")
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == TEXT * 200


# -- the response cache ---------------------------------------------------------------------------


async def test_cache_entries_per_coding(fetch: Fetch, gateway: tuple[str, Upstream]) -> None:
    upstream = gateway[1]
    path = "/cached/text"
    # A gzip client fills the gzip entry; an identity client must not be given it.
    status, headers, body = await fetch("GET", path, accept="gzip")
    assert (status, headers["X-Cache"], headers["Content-Encoding"]) == (200, "Miss", "gzip")
    assert gzip.decompress(body) == TEXT
    status, headers, body = await fetch("GET", path)
    assert (status, headers["X-Cache"]) == (200, "Miss")
    assert "Content-Encoding" not in headers
    assert body == TEXT
    fetched = len(upstream.requests)
    for _ in range(2):
        status, headers, body = await fetch("GET", path, accept="gzip")
        assert (headers["X-Cache"], headers["Content-Encoding"]) == ("Hit", "gzip")
        assert gzip.decompress(body) == TEXT
        assert "Accept-Encoding" in headers["Vary"]
        status, headers, body = await fetch("GET", path, accept="identity")
        assert headers["X-Cache"] == "Hit"
        assert "Content-Encoding" not in headers
        assert body == TEXT
        # Another client that chooses gzip by another Accept-Encoding shares the gzip entry.
        status, headers, body = await fetch("GET", path, accept="deflate;q=0.1, gzip")
        assert (headers["X-Cache"], headers["Content-Encoding"]) == ("Hit", "gzip")
        assert gzip.decompress(body) == TEXT
    assert len(upstream.requests) == fetched
    # deflate is an entry of its own.
    status, headers, body = await fetch("GET", path, accept="deflate")
    assert (headers["X-Cache"], headers["Content-Encoding"]) == ("Miss", "deflate")
    assert zlib.decompress(body) == TEXT


async def test_cached_streamed_answer_keeps_the_encoded_bytes(fetch: Fetch) -> None:
    path = "/cached/stream"
    status, headers, first = await fetch("GET", path, accept="gzip")
    assert (status, headers["X-Cache"]) == (200, "Miss")
    assert gzip.decompress(first) == b"".join(STREAM_PIECES)
    status, headers, again = await fetch("GET", path, accept="gzip")
    assert (headers["X-Cache"], headers["Content-Encoding"]) == ("Hit", "gzip")
    assert gzip.decompress(again) == b"".join(STREAM_PIECES)
    status, headers, plain = await fetch("GET", path, accept="identity")
    assert headers["X-Cache"] == "Miss"
    assert plain == b"".join(STREAM_PIECES)


@pytest.mark.parametrize("path", ["/cached/mock", "/cached/fn"])
async def test_cached_mock_and_function_answers_per_coding(fetch: Fetch, path: str) -> None:
    status, headers, body = await fetch("GET", path, accept="gzip")
    assert (status, headers["X-Cache"], headers["Content-Encoding"]) == (200, "Miss", "gzip")
    miss = gzip.decompress(body)
    for _ in range(2):
        status, headers, body = await fetch("GET", path, accept="gzip")
        assert (headers["X-Cache"], headers["Content-Encoding"]) == ("Hit", "gzip")
        assert gzip.decompress(body) == miss
        vary = [name.strip() for name in headers["Vary"].split(",")]
        assert "Accept-Encoding" in vary
        assert len(vary) == len(set(vary))
        if path == "/cached/mock":
            # The integration's own Vary survives the cache and the merge.
            assert "Cookie" in vary
    status, headers, body = await fetch("GET", path, accept="identity")
    assert "Content-Encoding" not in headers
    if path == "/cached/mock":
        assert body == MOCK_BODY.encode()


# -- compressed request bodies --------------------------------------------------------------------


async def test_gzip_request_body_is_validated_decoded(fetch: Fetch) -> None:
    pet = orjson.dumps({"name": "rex"})
    status, _, body = await fetch(
        "POST", "/pets", data=gzip.compress(pet), headers={"Content-Encoding": "gzip"}
    )
    assert status == 200, body
    seen = orjson.loads(body)
    # The upstream gets the decoded body, without the coding it no longer has.
    assert seen["body"] == pet.decode()
    assert seen["content_encoding"] is None
    assert seen["content_length"] == str(len(pet))
    # Decoded, the body must still match the model.
    status, _, body = await fetch(
        "POST",
        "/pets",
        data=gzip.compress(orjson.dumps({"age": 3})),
        headers={"Content-Encoding": "gzip"},
    )
    assert status == 400
    assert orjson.loads(body) == {"message": "Invalid request body"}


@pytest.mark.parametrize(
    ("encoding", "payload"),
    [
        ("gzip", b"this is not gzip at all"),
        ("gzip", gzip.compress(b'{"name": "rex"}')[:-6]),  # cut short
        ("gzip", gzip.compress(b'{"name": "rex"}') + b"junk"),
        ("deflate", b"\x00\x01\x02 not deflate"),
        ("compress", b"whatever"),
        ("gzip, deflate", b"stacked"),
    ],
)
async def test_bad_encoded_request_body_is_refused(
    fetch: Fetch, encoding: str, payload: bytes
) -> None:
    status, headers, body = await fetch(
        "POST", "/pets", data=payload, headers={"Content-Encoding": encoding}
    )
    # AWS answers 415 Unsupported Media Type for a coding it cannot decode and for a body not in
    # the coding named.
    assert status == 415
    assert orjson.loads(body) == {"message": "Unsupported Media Type"}
    assert headers["x-amzn-ErrorType"] == "UnsupportedMediaTypeException"


async def test_decoded_body_is_bounded(fetch: Fetch) -> None:
    # 64 KiB + 1 of zeros compress to a few hundred bytes: the decoded size is what counts.
    bomb = gzip.compress(bytes(MAX_BODY + 1))
    assert len(bomb) < 1024
    status, _, body = await fetch("POST", "/raw", data=bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413
    assert orjson.loads(body) == {"message": "Request Too Long"}
    # Exactly the limit is fine, streamed to the upstream decoded.
    fits = bytes(MAX_BODY)
    status, _, body = await fetch(
        "POST", "/raw", data=gzip.compress(fits), headers={"Content-Encoding": "gzip"}
    )
    assert status == 200
    seen = orjson.loads(body)
    assert seen["sha256"] == hashlib.sha256(fits).hexdigest()
    assert seen["content_encoding"] is None


async def test_deflate_request_body_zlib_or_raw(fetch: Fetch) -> None:
    payload = b"some text to send " * 50
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    for encoded in (zlib.compress(payload), raw.compress(payload) + raw.flush()):
        status, _, body = await fetch(
            "POST", "/raw", data=encoded, headers={"Content-Encoding": "deflate"}
        )
        assert status == 200
        assert orjson.loads(body)["body"] == payload.decode()


async def test_identity_request_body_passes_untouched(fetch: Fetch) -> None:
    status, _, body = await fetch(
        "POST", "/raw", data=b"plain", headers={"Content-Encoding": "identity"}
    )
    assert status == 200
    assert orjson.loads(body)["body"] == "plain"


# -- function and mock integrations ---------------------------------------------------------------


async def test_function_integration_sees_decoded_body_and_answer_is_encoded(
    fetch: Fetch,
) -> None:
    sent = orjson.dumps({"text": "hello " * 300})
    status, headers, body = await fetch(
        "POST",
        "/fn",
        data=gzip.compress(sent),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        accept="gzip",
    )
    assert status == 200
    # The event (echoed back) is larger than the threshold: the answer is encoded.
    assert headers["Content-Encoding"] == "gzip"
    event = orjson.loads(gzip.decompress(body))
    assert event["body"] == sent.decode()
    assert "Content-Encoding" not in event["headers"]


async def test_mock_integration_answer_is_encoded(fetch: Fetch) -> None:
    status, headers, body = await fetch("GET", "/mock", accept="deflate")
    assert status == 200
    assert headers["Content-Encoding"] == "deflate"
    assert zlib.decompress(body) == MOCK_BODY.encode()
    status, headers, body = await fetch("GET", "/mock")
    assert "Content-Encoding" not in headers
    assert body == MOCK_BODY.encode()


async def test_head_is_never_encoded(fetch: Fetch) -> None:
    status, headers, body = await fetch("HEAD", "/any", accept="gzip")
    assert status == 200
    assert "Content-Encoding" not in headers
    assert headers["Content-Length"] == str(len(TEXT))
    assert body == b""
    status, headers, body = await fetch("GET", "/any", accept="gzip")
    assert headers["Content-Encoding"] == "gzip"


async def test_encoded_body_left_unread_is_discarded(
    start_upstream: StartUpstream, tmp_path: Path
) -> None:
    # A stage answers before the (decoded) body is read: the connection must still drop the
    # body's bytes as they come, or a large upload stalls and the connection with it.
    upstream = await start_upstream(upstream_behaviour)
    config = tmp_path / "pygw.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            server: {{limits: {{max_body_bytes: 8388608}}}}
            apis:
              - name: shop
                type: rest
                minimum_compression_size: 0
                routes:
                  "POST /needs":
                    integration: {{type: http_proxy, uri: "{upstream.url}/echo"}}
                    validate: {{params: [querystring.x]}}
                  "GET /text": {{integration: {{type: http_proxy, uri: "{upstream.url}/text"}}}}
            """
        )
    )
    runtime = compile_runtime(load_config(config), Metrics())
    server = await serve_front(Dispatcher(runtime, None), ConnectionLimits(max_body_bytes=8 << 20))
    # Random bytes do not compress: about 2 MiB on the wire.
    upload = gzip.compress(os.urandom(2 << 20), compresslevel=1)
    try:
        # One connection, as a raw client: the second request must be answered on it.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = (
            b"POST /needs HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n" % len(upload)
        )
        writer.write(head + upload)
        # A hang guard, not a time limit: without the discard the upload never drains.
        await asyncio.wait_for(writer.drain(), 15)
        status, _ = await asyncio.wait_for(_read_answer(reader), 15)
        assert status == 400
        writer.write(b"GET /text HTTP/1.1\r\nHost: t\r\n\r\n")
        status, body = await asyncio.wait_for(_read_answer(reader), 15)
        assert status == 200
        assert body == TEXT
        writer.close()
    finally:
        await server.cleanup()
        await runtime.close()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(line.partition(":")[2]) for line in lines if line.lower().startswith("content-length:")
    )
    return int(lines[0].split()[1]), await reader.readexactly(length)
