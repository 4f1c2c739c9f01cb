"""Hostile HTTP/1 over raw sockets against a running gateway (pygw/http1.py in front of an
http_proxy catch-all), each case checked three ways: the answer the client gets, whether the
connection closed where it must, and what an upstream recording every request it got saw.

The bytes quoted by the hardening probe are sent as they were."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from pygw.server import Gateway
from tests.integration.conftest import StartUpstream, Upstream

MAX_BODY = 1024 * 1024
HANDLERS = Path(__file__).resolve().parent / "handlers"

CONFIG = """
server:
  listen: "127.0.0.1:0"
  limits: {max_body_bytes: %(max_body)d, header_timeout_s: 0.5, idle_timeout_s: 5,
           max_header_count: 40, body_timeout_s: 2}
admin: {listen: "127.0.0.1:0"}
access_log: null
apis:
  - name: edge
    type: http
    routes:
      "ANY /{proxy+}":
        integration: {type: http_proxy, uri: "%(upstream)s/{proxy}", timeout_ms: 3000,
                      max_connections: 100}
      "GET /mock":
        integration: {type: mock, status: 200, body: {ok: true}}
"""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the gateway closed the connection after this answer


@dataclass
class Edge:
    port: int
    upstream: Upstream

    def seen(self, fragment: str) -> list[str]:
        """The raw paths the upstream received that contain `fragment`."""
        return [r["raw_path"] for r in self.upstream.requests if fragment in r["raw_path"]]


@pytest.fixture
async def edge(tmp_path: Path, start_upstream: StartUpstream) -> AsyncIterator[Edge]:
    upstream = await start_upstream()
    config = tmp_path / "edge.yaml"
    config.write_text(CONFIG % {"max_body": MAX_BODY, "upstream": upstream.url})
    gateway = Gateway(config)
    await gateway.start()
    assert isinstance(gateway.bound, tuple)
    try:
        yield Edge(gateway.bound[1], upstream)
    finally:
        await gateway.drain()


async def _read_answer(reader: asyncio.StreamReader) -> Answer | None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return None
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(int(status_line.split()[1]), headers, body, closed=False)


async def exchange(port: int, *pieces: bytes, answers: int = 1, pause: float = 0) -> list[Answer]:
    """Sends the pieces (with `pause` seconds between them) and reads `answers` answers; each
    answer's `closed` says whether the connection ended after it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for piece in pieces:
            try:
                writer.write(piece)
                await writer.drain()
            except ConnectionError:
                break
            if pause:
                await asyncio.sleep(pause)
        got: list[Answer] = []
        for _ in range(answers):
            answer = await _read_answer(reader)
            if answer is None:
                break
            got.append(answer)
        if got:
            try:
                rest = await asyncio.wait_for(reader.read(1), 1.0)
                got[-1].closed = rest == b""
            except TimeoutError:
                got[-1].closed = False
            except ConnectionResetError:
                got[-1].closed = True
        return got
    finally:
        writer.close()


async def refused(edge: Edge, raw: bytes, status: int = 400) -> Answer:
    """`raw` is answered `status` with a JSON body and a request id, and the connection closes."""
    (answer,) = await exchange(edge.port, raw)
    assert answer.status == status, answer
    assert json.loads(answer.body)["message"]
    assert answer.headers["x-request-id"]
    assert answer.headers["content-type"] == "application/json"
    assert answer.closed
    return answer


# -- request lines --------------------------------------------------------------------------


async def test_request_line_without_version_cannot_inject_headers(edge: Edge) -> None:
    await refused(edge, b"GET /inj/a\nX-Injected: 1 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert edge.seen("inj") == []


async def test_http09_request_is_refused(edge: Edge) -> None:
    await refused(edge, b"GET /nine\r\n\r\n")
    assert edge.seen("nine") == []


async def test_http2_in_http1_text_is_505(edge: Edge) -> None:
    await refused(edge, b"GET /two HTTP/2.0\r\nHost: h\r\n\r\n", 505)
    assert edge.seen("two") == []


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /lf HTTP/1.1\nHost: h\r\n\r\n",  # bare LF after the request line
        b"GET /lf HTTP/1.1\r\nHost: h\nX-A: 1\r\n\r\n",  # bare LF after a header
        b"GET /lf HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n continued\r\n\r\n",  # obs-fold
        b"GET /lf HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n",  # NUL in a value
        b"GET /lf HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n",  # bare CR in a value
        b"GET /lf HTTP/1.1\r\nHost: h\r\nX A: 1\r\n\r\n",  # space in a name
        b"GET /lf HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /lf HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two Hosts
        b"GET http://user@evil/lf HTTP/1.1\r\nHost: h\r\n\r\n",  # userinfo in the authority
    ],
)
async def test_malformed_heads_are_refused(edge: Edge, raw: bytes) -> None:
    await refused(edge, raw)
    assert edge.seen("lf") == []


# -- framing: nothing smuggled ----------------------------------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"


@pytest.mark.parametrize(
    ("framing", "status"),
    [
        (b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", 400),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", 400),
        (b"Transfer-Encoding:  chunked\r\n", 400),
        (b"Transfer-Encoding:\tchunked\r\n", 400),
        (b"Transfer-Encoding: chunked, identity\r\n", 400),
        (b"Transfer-Encoding: xchunked\r\n", 400),
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400),
        (b"Transfer-Encoding : chunked\r\n", 400),
        (b"Transfer-Encoding: gzip, chunked\r\n", 501),
        (b"Content-Length: 4\r\nContent-Length: 5\r\n", 400),
        (b"Content-Length: 4\r\nContent-Length: 4\r\n", 400),
        (b"Content-Length: +4\r\n", 400),
        (b"Content-Length: 004\r\n", 400),
        (b"Content-Length: -4\r\n", 400),
    ],
)
async def test_ambiguous_framing_is_refused(edge: Edge, framing: bytes, status: int) -> None:
    raw = b"POST /frame HTTP/1.1\r\nHost: h\r\n" + framing + b"\r\n0\r\n\r\n" + SMUGGLED
    await refused(edge, raw, status)
    assert edge.seen("frame") == []
    assert edge.seen("smuggled") == []


async def test_chunk_size_overflow_is_refused(edge: Edge) -> None:
    raw = (
        b"POST /overflow HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"FFFFFFFFFFFFFFFFF1\r\nab\r\n0\r\n\r\n" + SMUGGLED
    )
    (answer,) = await exchange(edge.port, raw)
    assert answer.status == 400
    assert answer.closed
    assert edge.seen("smuggled") == []


async def test_oversized_chunk_extension_is_refused(edge: Edge) -> None:
    raw = (
        b"POST /ext HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2;" + b"a" * 200_000 + b"\r\nab\r\n0\r\n\r\n"
    )
    (answer,) = await exchange(edge.port, raw)
    assert answer.status == 400
    assert answer.closed
    assert [r for r in edge.upstream.requests if r["raw_path"] == "/ext"] == []


async def test_chunked_body_is_forwarded_rechunked(edge: Edge) -> None:
    raw = (
        b"POST /sink HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    (answer,) = await exchange(edge.port, raw)
    assert answer.status == 200
    assert json.loads(answer.body)["size"] == 11
    assert not answer.closed


async def test_http10_with_transfer_encoding_is_read_then_closed(edge: Edge) -> None:
    raw = (
        b"POST /ten HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
    )
    (answer,) = await exchange(edge.port, raw)
    assert answer.status == 200
    assert json.loads(answer.body)["body_size"] == 2
    assert answer.closed


async def test_a_close_option_closes_whatever_else_the_connection_header_says(
    edge: Edge,
) -> None:
    """An HTTP/1.0 request naming both keep-alive and close is answered and the connection
    closed, read by the native parse of the usual request (a GET alone in its read) or by the
    callback parser (a POST with a body)."""
    both = b"Connection: close\r\nConnection: keep-alive\r\n"
    for raw in (
        b"GET /both HTTP/1.0\r\nHost: h\r\n" + both + b"\r\n",
        b"POST /both HTTP/1.0\r\nHost: h\r\n" + both + b"Content-Length: 2\r\n\r\nab",
        b"GET /both HTTP/1.0\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n",
    ):
        (answer,) = await exchange(edge.port, raw)
        assert answer.status == 200
        assert answer.closed


# -- sizes --------------------------------------------------------------------------------------


async def test_content_length_over_the_limit_is_413(edge: Edge) -> None:
    raw = b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)
    await refused(edge, raw, 413)
    assert edge.seen("big") == []


async def test_chunked_body_over_the_limit_is_413_and_not_forwarded_whole(edge: Edge) -> None:
    head = b"POST /chunked-big HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
    pieces = [head] + [piece] * (MAX_BODY // (64 * 1024) + 4) + [b"0\r\n\r\n"]
    answers = await exchange(edge.port, *pieces)
    assert answers, "no answer"
    assert answers[0].status == 413
    assert answers[0].closed
    # The upstream's echo handler records a request only once it read the body whole.
    assert edge.seen("chunked-big") == []


async def test_too_many_header_lines_is_431(edge: Edge) -> None:
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(60))
    await refused(edge, b"GET /many HTTP/1.1\r\nHost: h\r\n" + lines + b"\r\n", 431)


async def test_header_block_over_the_limit_is_431(edge: Edge) -> None:
    await refused(
        edge, b"GET /huge HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431
    )


# -- what reaches the upstream ------------------------------------------------------------------


async def test_underscore_and_client_proxy_headers_are_dropped(edge: Edge) -> None:
    raw = (
        b"GET /headers HTTP/1.1\r\nHost: h\r\nContent_Length: 5\r\nX_Forwarded_For: 6.6.6.6\r\n"
        b"Forwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Kept: yes\r\n\r\n"
    )
    (answer,) = await exchange(edge.port, raw)
    assert answer.status == 200
    sent = {name.lower(): value for name, value in json.loads(answer.body)["headers"]}
    assert sent["x-kept"] == "yes"
    for dropped in ("content_length", "x_forwarded_for", "forwarded", "x-real-ip"):
        assert dropped not in sent
    assert "6.6.6.6" not in sent.get("x-forwarded-for", "")


async def test_absolute_form_target_is_served_by_its_path(edge: Edge) -> None:
    (answer,) = await exchange(
        edge.port, b"GET http://example.test/abs/x?q=1 HTTP/1.1\r\nHost: other\r\n\r\n"
    )
    assert answer.status == 200
    echoed = json.loads(answer.body)
    assert echoed["raw_path"] == "/abs/x?q=1"


async def test_greedy_route_keeps_the_trailing_slash(edge: Edge) -> None:
    (answer,) = await exchange(edge.port, b"GET /metrics/ HTTP/1.1\r\nHost: h\r\n\r\n")
    assert answer.status == 200
    assert json.loads(answer.body)["raw_path"] == "/metrics/"


async def test_oversized_upstream_header_is_502(
    tmp_path: Path, start_upstream: StartUpstream
) -> None:
    async def huge_header(request: web.BaseRequest, upstream: Upstream) -> web.StreamResponse:
        return web.Response(text="x", headers={"X-Huge": "h" * 100_000})

    upstream = await start_upstream(huge_header)
    config = tmp_path / "edge.yaml"
    config.write_text(CONFIG % {"max_body": MAX_BODY, "upstream": upstream.url})
    gateway = Gateway(config)
    await gateway.start()
    assert isinstance(gateway.bound, tuple)
    try:
        (answer,) = await exchange(gateway.bound[1], b"GET /h HTTP/1.1\r\nHost: h\r\n\r\n")
        assert answer.status == 502
        assert "x-huge" not in answer.headers
    finally:
        await gateway.drain()


# -- the connection -------------------------------------------------------------------------------


async def test_pipelined_requests_are_answered_in_order(edge: Edge) -> None:
    raw = (
        b"".join(b"GET /order/%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(5))
        + b"GET /mock HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    answers = await exchange(edge.port, raw, answers=6)
    assert [a.status for a in answers] == [200] * 6
    assert [json.loads(a.body).get("raw_path") for a in answers[:5]] == [
        f"/order/{i}" for i in range(5)
    ]
    assert json.loads(answers[5].body) == {"ok": True}
    assert answers[5].closed


async def test_expect_100_continue(edge: Edge) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    try:
        writer.write(
            b"POST /sink HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        answer = await _read_answer(reader)
        assert answer is not None and answer.status == 200
        assert json.loads(answer.body)["size"] == 5
    finally:
        writer.close()


async def test_head_answer_has_no_body(edge: Edge) -> None:
    raw = b"HEAD /mock HTTP/1.1\r\nHost: h\r\n\r\nGET /mock HTTP/1.1\r\nHost: h\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    try:
        writer.write(raw)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Content-Length: " in head  # the length a GET would get, and no body
        # The next bytes are the second answer, not a body for the first.
        second = await _read_answer(reader)
        assert second is not None and second.body == b'{"ok":true}'
    finally:
        writer.close()


async def test_slow_header_is_cut_off(edge: Edge) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: h\r\n")
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert time.monotonic() - started < 3
    finally:
        writer.close()


async def test_slow_uploads_do_not_hold_upstream_connections(
    tmp_path: Path, start_upstream: StartUpstream
) -> None:
    """120 clients trickling 10 kB bodies on a route with max_connections 100 while ordinary
    requests on the same route keep a p99 under 100 ms."""
    upstream = await start_upstream()
    config = tmp_path / "edge.yaml"
    config.write_text(
        (CONFIG % {"max_body": MAX_BODY, "upstream": upstream.url}).replace(
            "body_timeout_s: 2", "body_timeout_s: 20"
        )
    )
    gateway = Gateway(config)
    await gateway.start()
    assert isinstance(gateway.bound, tuple)
    port = gateway.bound[1]
    slow: list[asyncio.StreamWriter] = []
    try:
        for _ in range(120):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 10000\r\n\r\nx")
            slow.append(writer)
        await asyncio.sleep(0.3)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        latencies: list[float] = []
        for i in range(100):
            started = time.perf_counter()
            writer.write(b"GET /fast/%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
            answer = await _read_answer(reader)
            latencies.append(time.perf_counter() - started)
            assert answer is not None and answer.status == 200
            if i % 10 == 0:
                for trickling in slow:
                    trickling.write(b"x")
        writer.close()
        latencies.sort()
        assert latencies[98] < 0.1, latencies[-5:]
        assert edge_seen_uploads(upstream) == 0
    finally:
        for trickling in slow:
            trickling.close()
        await gateway.drain()


def edge_seen_uploads(upstream: Upstream) -> int:
    return sum(1 for r in upstream.requests if r["raw_path"] == "/upload")


# -- trusted proxies ------------------------------------------------------------------------------

TRUSTED = """
server:
  listen: "127.0.0.1:0"
  trusted_proxies: [%(trusted)s]
admin: {listen: "127.0.0.1:0"}
access_log: null
python_path: [%(handlers)s]
apis:
  - name: edge
    type: http
    routes:
      "GET /event":
        integration: {type: function, handler: "lambda_echo:echo_event", payload_format: "1.0"}
      "ANY /{proxy+}":
        integration: {type: http_proxy, uri: "%(upstream)s/{proxy}"}
"""


@pytest.mark.parametrize("trusted", ["", '"127.0.0.0/8"'])
async def test_client_address_from_a_trusted_proxy_only(
    tmp_path: Path, start_upstream: StartUpstream, trusted: str
) -> None:
    upstream = await start_upstream()
    config = tmp_path / "edge.yaml"
    config.write_text(
        TRUSTED
        % {"trusted": trusted, "upstream": upstream.url, "handlers": json.dumps(str(HANDLERS))}
    )
    gateway = Gateway(config)
    await gateway.start()
    assert isinstance(gateway.bound, tuple)
    claimed = b"X-Forwarded-For: 198.51.100.7, 203.0.113.9\r\nX-Real-IP: 203.0.113.9\r\n"
    try:
        (event,) = await exchange(
            gateway.bound[1], b"GET /event HTTP/1.1\r\nHost: h\r\n" + claimed + b"\r\n"
        )
        source_ip = json.loads(event.body)["requestContext"]["identity"]["sourceIp"]
        (proxied,) = await exchange(
            gateway.bound[1], b"GET /up HTTP/1.1\r\nHost: h\r\n" + claimed + b"\r\n"
        )
        sent = {name.lower(): value for name, value in json.loads(proxied.body)["headers"]}
    finally:
        await gateway.drain()
    # AWS's append behaviour either way: the peer is added to what the client claimed.
    assert sent["x-forwarded-for"] == "198.51.100.7, 203.0.113.9, 127.0.0.1"
    if trusted:
        assert source_ip == "203.0.113.9"  # the nearest hop that is not a trusted proxy
        assert sent["x-real-ip"] == "203.0.113.9"
    else:
        assert source_ip == "127.0.0.1"
        assert "x-real-ip" not in sent


async def test_a_connection_quiet_for_a_while_still_serves(edge: Edge) -> None:
    """A keep-alive connection's serving task ends after about a second of quiet (the sweep
    frees it); the next request on the connection starts another."""
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    try:
        for pause in (0.0, 2.5, 0.0):
            await asyncio.sleep(pause)
            writer.write(b"GET /mock HTTP/1.1\r\nHost: h\r\n\r\n")
            answer = await _read_answer(reader)
            assert answer is not None and answer.body == b'{"ok":true}'
    finally:
        writer.close()


async def test_a_body_that_stops_arriving_is_408(edge: Edge) -> None:
    """body_timeout_s (2 s here) bounds the wait for more of a body; nothing goes upstream."""
    started = time.monotonic()
    (answer,) = await exchange(
        edge.port, b"POST /stalled HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nx"
    )
    assert answer.status == 408
    assert answer.headers["x-request-id"]
    assert answer.closed
    assert time.monotonic() - started < 5
    assert edge.seen("stalled") == []


async def test_a_target_longer_than_the_header_limit_is_414(edge: Edge) -> None:
    await refused(edge, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414)


async def test_an_expectation_other_than_100_continue_is_417(edge: Edge) -> None:
    await refused(edge, b"GET /x HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n", 417)
