"""Real HTTP servers on 127.0.0.1 for integration tests: upstreams, and a tiny gateway front end.

`start_upstream()` runs an aiohttp low-level server whose default handler echoes what it received
(method, raw path, raw headers, body size) and offers a few behaviours selected by path:
`/slow?ms=N` answers after N ms, `/big?size=N` streams N bytes, `/sink` consumes the body as a
stream and reports its length and digest, `/drop?after=N` sends N bytes of a longer body then
resets, `/stall?after=N` sends N bytes then goes silent, `/hop` answers with hop-by-hop headers.

`start_gateway(integration)` serves `integration` behind an aiohttp low-level server whose handler
builds a RequestContext and turns a GatewayError into the HTTP-style gateway response.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
import pytest
from aiohttp import ClientSession, ClientTimeout, web

from pygw.context import RequestContext
from pygw.dispatch import refusal_response
from pygw.errors import GatewayError, Style, gateway_response
from pygw.http1 import ConnectionLimits, Http1Server
from pygw.pipeline import AnswerNow, Outcome, StartNow
from pygw.request import Request
from pygw.response import Response
from pygw.server import Gateway as ServedGateway
from pygw.server import upgrade_server
from pygw.serving import PENDING, Resume, Served

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

_ZEROS = bytes(64 * 1024)


@dataclass
class Upstream:
    url: str
    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)  # one per request
    in_flight: int = 0
    max_in_flight: int = 0

    @property
    def connections(self) -> int:
        return len(set(self.peers))


def _query_int(request: web.BaseRequest, name: str, default: int) -> int:
    value = request.rel_url.query.get(name)
    return int(value) if value is not None else default


async def echo_behaviour(request: web.BaseRequest, upstream: Upstream) -> web.StreamResponse:
    path = request.path
    if path.startswith("/slow"):
        await asyncio.sleep(_query_int(request, "ms", 1000) / 1000)
    elif path.startswith("/big"):
        size = _query_int(request, "size", 1024 * 1024)
        resp = web.StreamResponse()
        if request.rel_url.query.get("chunked") is None:
            resp.content_length = size
        resp.content_type = "application/octet-stream"
        await resp.prepare(request)
        remaining = size
        while remaining > 0:
            piece = _ZEROS if remaining >= len(_ZEROS) else _ZEROS[:remaining]
            await resp.write(piece)
            remaining -= len(piece)
        await resp.write_eof()
        return resp
    elif path.startswith("/sink"):
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        return web.json_response(
            {
                "size": size,
                "sha256": digest.hexdigest(),
                "content_length": request.headers.get("Content-Length"),
                "transfer_encoding": request.headers.get("Transfer-Encoding"),
            }
        )
    elif path.startswith(("/drop", "/stall")):
        after = _query_int(request, "after", 65536)
        resp = web.StreamResponse()
        resp.content_length = after * 4
        await resp.prepare(request)
        await resp.write(bytes(after))
        if path.startswith("/drop"):
            await asyncio.sleep(0.05)
            transport = request.transport
            assert transport is not None
            transport.abort()
        else:
            await asyncio.sleep(5)
        return resp
    elif path.startswith("/hop"):
        return web.Response(
            text="hop",
            headers={
                "Connection": "keep-alive, X-Up-Drop",
                "X-Up-Drop": "1",
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic",
                "Trailer": "X-Checksum",
                "Upgrade": "h2c",
                "X-Up-Keep": "1",
            },
        )
    body = await request.read()
    payload = {
        "method": request.method,
        "raw_path": request.raw_path,
        "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
        "body_size": len(body),
        "port": upstream.port,
    }
    return web.Response(
        body=orjson.dumps(payload),
        content_type="application/json",
        headers={"X-Upstream-Port": str(upstream.port)},
    )


class StartUpstream(Protocol):
    def __call__(
        self,
        behaviour: Callable[[web.BaseRequest, Upstream], Awaitable[web.StreamResponse]] = ...,
        port: int = ...,
    ) -> Awaitable[Upstream]: ...


@pytest.fixture
async def start_upstream() -> AsyncIterator[StartUpstream]:
    runners: list[web.BaseRunner] = []

    async def start(
        behaviour: Callable[
            [web.BaseRequest, Upstream], Awaitable[web.StreamResponse]
        ] = echo_behaviour,
        port: int = 0,
    ) -> Upstream:
        upstream = Upstream(url="", port=port)

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            peer = request.transport.get_extra_info("peername") if request.transport else None
            upstream.peers.append(tuple(peer) if peer else ("?", 0))
            upstream.in_flight += 1
            upstream.max_in_flight = max(upstream.max_in_flight, upstream.in_flight)
            try:
                response = await behaviour(request, upstream)
            finally:
                upstream.in_flight -= 1
            upstream.requests.append({"method": request.method, "raw_path": request.raw_path})
            return response

        runner = web.ServerRunner(
            web.Server(handle, handler_cancellation=True), shutdown_timeout=0.2
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        runners.append(runner)
        bound = runner.addresses[0][1]
        upstream.port = bound
        upstream.url = f"http://127.0.0.1:{bound}"
        return upstream

    yield start
    for runner in runners:
        await runner.cleanup()


class Proxied(Protocol):
    async def __call__(self, ctx: RequestContext) -> Response: ...
    async def close(self) -> None: ...


@dataclass
class Gateway:
    url: str
    contexts: list[RequestContext] = field(default_factory=list)


class StartGateway(Protocol):
    def __call__(
        self,
        integration: Proxied,
        params: Callable[[str], dict[str, str]] | None = ...,
    ) -> Awaitable[Gateway]: ...


@pytest.fixture
def front_mode() -> str:
    """How the test gateway hands requests to the integration: "awaited" always, or
    "callbacks" as `pygw serve` does where it can (the integration's answer_now, or its
    start_now with the answer handed back from its socket callbacks; pygw/serving.py). A
    module may parametrize it."""
    return "awaited"


def _gateway_answer(err: GatewayError, ctx: RequestContext) -> Response:
    found = gateway_response(err.error, Style.HTTP)
    resp = Response(status=found.status, body=found.body(), content_type="application/json")
    ctx.apply_response_headers(resp)
    return resp


@pytest.fixture
async def start_gateway(front_mode: str) -> AsyncIterator[StartGateway]:
    servers: list[tuple[asyncio.Server, Http1Server, web.Server]] = []
    integrations: list[Proxied] = []
    ids = itertools.count(1)

    async def start(
        integration: Proxied, params: Callable[[str], dict[str, str]] | None = None
    ) -> Gateway:
        gateway = Gateway(url="")

        def context(request: Request) -> RequestContext:
            request_id = f"req-{next(ids)}"
            path = request.raw_path.partition("?")[0]
            ctx = RequestContext(
                request=request,
                request_id=request_id,
                path=path,
                params=params(path) if params is not None else {},
                stage_variables={},
                client_ip=request.client_ip,
                received_at=asyncio.get_running_loop().time(),
                response_headers={"apigw-requestid": request_id, "x-request-id": request_id},
            )
            gateway.contexts.append(ctx)
            return ctx

        async def answer(ctx: RequestContext, pending: Awaitable[Response]) -> Response:
            try:
                return await pending
            except GatewayError as err:
                return _gateway_answer(err, ctx)

        async def handle(request: Request) -> Response:
            ctx = context(request)
            return await answer(ctx, integration(ctx))

        def handle_now(request: Request, resume: Resume | None) -> Served:
            ctx = context(request)
            answer_now: AnswerNow | None = getattr(integration, "answer_now", None)
            if answer_now is not None:
                try:
                    answered = answer_now(ctx)
                except GatewayError as err:
                    return _gateway_answer(err, ctx)
                if answered is not None:
                    return answered
            start_now: StartNow | None = getattr(integration, "start_now", None)
            if start_now is None or resume is None:
                return answer(ctx, integration(ctx))

            def done(outcome: Outcome) -> None:
                if isinstance(outcome, GatewayError):
                    resume(request, _gateway_answer(outcome, ctx))
                elif isinstance(outcome, Exception):
                    raise AssertionError("the integration failed") from outcome
                elif isinstance(outcome, Response):
                    resume(request, outcome)
                else:
                    resume(request, answer(ctx, outcome))

            instead = start_now(ctx, done)
            return PENDING if instead is None else answer(ctx, instead)

        # The gateway's own front end: pygw's HTTP/1.1 protocol, WebSocket handshakes handed
        # to aiohttp as `pygw serve` does.
        upgrades = upgrade_server(handle)
        # Bodies of any size: these tests stream gigabytes' worth through integrations.
        limits = ConnectionLimits(max_body_bytes=1 << 40)
        front = Http1Server(
            handle,
            limits,
            refusal_response,
            upgrade=upgrades,
            serve_now=handle_now if front_mode == "callbacks" else None,
        )
        listener = await asyncio.get_running_loop().create_server(front, "127.0.0.1", 0)
        servers.append((listener, front, upgrades))
        integrations.append(integration)
        gateway.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        return gateway

    yield start
    for listener, front, upgrades in servers:
        listener.close()
        await front.shutdown(0.2)
        await upgrades.shutdown(0.2)
    for integration in integrations:
        await integration.close()
    await asyncio.sleep(0)  # let closed transports report connection_lost


@pytest.fixture
async def client() -> AsyncIterator[ClientSession]:
    async with ClientSession(auto_decompress=False, timeout=ClientTimeout(total=20)) as session:
        yield session


async def pipelined_answers(url: str, requests: bytes, answers: int) -> list[tuple[int, bytes]]:
    """Sends `requests` (one or more, pipelined) in one write to `url` (http://host:port) and
    reads `answers` answers: (status, body) each."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(requests)
        got: list[tuple[int, bytes]] = []
        for _ in range(answers):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            got.append((status, await reader.readexactly(length)))
        return got
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def closing_upstream() -> AsyncIterator[tuple[int, list[bytes]]]:
    """An upstream on 127.0.0.1 that answers the first request on each connection ("fresh")
    and closes the connection as the next one arrives on it (its keep-alive timeout racing the
    request): its port, and the methods of the requests it answered."""
    answered: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        first = await reader.readuntil(b"\r\n\r\n")
        answered.append(first.split(b" ", 2)[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")  # the next request: dropped with the connection
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], answered
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def serving(config: Path) -> AsyncIterator[str]:
    """A whole gateway serving `config` (its listeners on free ports): its URL, until drained."""
    gateway = ServedGateway(config)
    await gateway.start()
    assert isinstance(gateway.bound, tuple)
    try:
        yield f"http://127.0.0.1:{gateway.bound[1]}"
    finally:
        await gateway.drain()
