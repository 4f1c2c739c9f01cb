"""OpenTelemetry spans exported to a real OTLP/HTTP receiver started here (an aiohttp server that
decodes what it receives with OpenTelemetry's own protobuf definitions): the server span with
the forwarded trace's ids, its children, their attributes; and a dead collector that costs no
request, only counted drops."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pygw.server import Gateway

HANDLERS = Path(__file__).resolve().parent / "handlers"

CONFIG = """
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
throttle: null
access_log: null
telemetry: {otlp_endpoint: "%(collector)s", sample_ratio: %(ratio)s, service_name: edge,
            max_queue: %(queue)d, export_timeout_s: 1}
python_path: [%(handlers)s]
apis:
  - name: shop
    type: http
    authorizers:
      probe: {type: custom, handler: "context_probe:authorize", simple_responses: true,
              identity_source: ["header.x-user"], ttl_s: 0}
    routes:
      "GET /items/{id}":
        integration: {type: http_proxy, uri: "http://127.0.0.1:%(upstream)d/items/{id}"}
        authorizer: probe
"""


@dataclass
class Received:
    spans: list[tuple[dict[str, Any], Span]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    upstream_headers: list[dict[str, str]] = field(default_factory=list)


def _attributes(attributes: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in attributes:
        value = item.value
        kind = value.WhichOneof("value")
        found[item.key] = getattr(value, kind) if kind is not None else None
    return found


@pytest.fixture
async def received() -> AsyncIterator[tuple[Received, str, int]]:
    got = Received()

    async def collect(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource_spans in export.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    got.spans.append((resource, span))
        got.arrived.set()
        return web.Response(
            body=b"", content_type="application/x-protobuf"
        )  # an empty ExportTraceServiceResponse

    async def upstream(request: web.Request) -> web.Response:
        got.upstream_headers.append(dict(request.headers))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    app.router.add_get("/items/{id}", upstream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield got, f"http://127.0.0.1:{port}/v1/traces", port
    finally:
        await runner.cleanup()


async def _gateway(
    tmp_path: Path, collector: str, upstream: int, ratio: float = 1.0, queue: int = 2048
) -> Gateway:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        CONFIG
        % {
            "collector": collector,
            "ratio": ratio,
            "queue": queue,
            "upstream": upstream,
            "handlers": json.dumps(str(HANDLERS)),
        }
    )
    gateway = Gateway(config)
    await gateway.start()
    return gateway


async def test_spans_reach_the_collector_with_links_and_attributes(
    tmp_path: Path, received: tuple[Received, str, int]
) -> None:
    got, collector, upstream_port = received
    gateway = await _gateway(tmp_path, collector, upstream_port)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"http://127.0.0.1:{gateway.bound[1]}/items/7?q=1",
                headers={
                    "x-user": "u1",
                    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                },
            ) as resp:
                assert resp.status == 200
                request_id = resp.headers["apigw-requestid"]
    finally:
        await gateway.drain()  # exports what is queued
    await asyncio.wait_for(got.arrived.wait(), 10)
    spans = {span.name: (resource, span) for resource, span in got.spans}
    assert set(spans) == {"GET /items/{id}", "authorizer", "integration"}
    resource, server = spans["GET /items/{id}"]
    assert resource["service.name"] == "edge"
    assert server.kind == Span.SPAN_KIND_SERVER
    assert server.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert server.parent_span_id.hex() == "00f067aa0ba902b7"  # the caller's span
    # The span the upstream was told is its parent is the gateway's server span.
    forwarded = got.upstream_headers[0]["traceparent"]
    assert forwarded == f"00-4bf92f3577b34da6a3ce929d0e0e4736-{server.span_id.hex()}-01"
    assert _attributes(server.attributes) == {
        "http.request.method": "GET",
        "url.path": "/items/7",
        "http.route": "/items/{id}",
        "http.response.status_code": 200,
        "pygw.api": "shop",
        "pygw.stage": "$default",
        "pygw.style": "http",
        "pygw.canary": False,
        "pygw.request_id": request_id,
    }
    for child in ("authorizer", "integration"):
        _, span = spans[child]
        assert span.trace_id == server.trace_id
        assert span.parent_span_id == server.span_id
        assert server.start_time_unix_nano <= span.start_time_unix_nano
        assert span.end_time_unix_nano <= server.end_time_unix_nano
    _, integration = spans["integration"]
    assert integration.kind == Span.SPAN_KIND_CLIENT
    assert _attributes(integration.attributes) == {
        "pygw.integration": "http_proxy",
        "http.response.status_code": 200,
    }
    _, authorizer = spans["authorizer"]
    assert authorizer.end_time_unix_nano <= integration.start_time_unix_nano


async def test_sample_ratio_zero_sends_nothing_unless_the_caller_sampled(
    tmp_path: Path, received: tuple[Received, str, int]
) -> None:
    got, collector, upstream_port = received
    gateway = await _gateway(tmp_path, collector, upstream_port, ratio=0.0)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(5):
                async with session.get(
                    f"http://127.0.0.1:{gateway.bound[1]}/items/1", headers={"x-user": "u"}
                ) as resp:
                    assert resp.status == 200
            async with session.get(
                f"http://127.0.0.1:{gateway.bound[1]}/items/2",
                headers={
                    "x-user": "u",
                    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                },
            ) as resp:
                assert resp.status == 200
    finally:
        await gateway.drain()
    await asyncio.wait_for(got.arrived.wait(), 10)
    assert {span.trace_id.hex() for _, span in got.spans} == {"4bf92f3577b34da6a3ce929d0e0e4736"}
    # Unsampled requests told the upstream so.
    flags = [h["traceparent"][-2:] for h in got.upstream_headers]
    assert flags == ["00"] * 5 + ["01"]


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_dead_collector_costs_no_request(
    tmp_path: Path, received: tuple[Received, str, int]
) -> None:
    _, _, upstream_port = received
    dead = f"http://127.0.0.1:{_dead_port()}/v1/traces"
    gateway = await _gateway(tmp_path, dead, upstream_port, queue=4)
    try:
        async with aiohttp.ClientSession() as session:

            async def one(n: int) -> int:
                async with session.get(
                    f"http://127.0.0.1:{gateway.bound[1]}/items/{n}", headers={"x-user": "u"}
                ) as resp:
                    await resp.read()
                    return resp.status

            statuses = await asyncio.gather(*(one(n) for n in range(60)))
        assert statuses == [200] * 60
        text = gateway.metrics.render().decode()
        dropped = {
            line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("pygw_trace_spans_dropped_total{")
        }
        # 60 requests, a queue of 4: most requests' spans were dropped, and counted.
        assert dropped.get('reason="queue_full"', 0) > 0
    finally:
        await gateway.drain()
