"""Trace context through a whole gateway: W3C traceparent and X-Amzn-Trace-Id forwarded to a real
upstream that records what it received, started when the client sent none, handed to functions in
their events' headers, and written in the access log."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from pygw.server import Gateway

HANDLERS = Path(__file__).resolve().parent / "handlers"

CONFIG = """
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
throttle: null
access_log: {path: %(log)s}
python_path: [%(handlers)s]
apis:
  - name: shop
    type: http
    routes:
      "GET /items/{id}":
        integration: {type: http_proxy, uri: "http://127.0.0.1:%(port)d/items/{id}"}
      "GET /fn2":
        integration: {type: function, handler: "lambda_echo:echo_event"}
      "GET /fn1":
        integration: {type: function, handler: "lambda_echo:echo_event", payload_format: "1.0"}
"""

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])")
AMZN = re.compile(r"Root=1-([0-9a-f]{8})-([0-9a-f]{24});Parent=([0-9a-f]{16});Sampled=([01])")


@dataclass
class Recorded:
    headers: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Setup:
    port: int
    log: Path
    upstream: Recorded
    gateway: Gateway


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    recorded = Recorded()

    async def record(request: web.Request) -> web.Response:
        recorded.headers.append(dict(request.headers))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream_port = runner.addresses[0][1]
    log = tmp_path / "access.log"
    config = tmp_path / "gateway.yaml"
    config.write_text(
        CONFIG
        % {
            "log": json.dumps(str(log)),
            "handlers": json.dumps(str(HANDLERS)),
            "port": upstream_port,
        }
    )
    served = Gateway(config)
    await served.start()
    try:
        yield Setup(served.bound[1], log, recorded, served)
    finally:
        await served.drain()
        await runner.cleanup()


async def _get(
    setup: Setup, path: str, headers: dict[str, str] | None = None
) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{setup.port}{path}", headers=headers) as resp:
            await resp.read()
            return resp


async def _log_lines(setup: Setup) -> list[dict[str, object]]:
    await setup.gateway.drain()  # flushes and closes the access log
    return [json.loads(line) for line in setup.log.read_text().splitlines()]


def _trace_headers(received: dict[str, str]) -> tuple[re.Match[str], re.Match[str]]:
    parent = TRACEPARENT.fullmatch(received["traceparent"])
    amzn = AMZN.fullmatch(received["X-Amzn-Trace-Id"])
    assert parent is not None, received["traceparent"]
    assert amzn is not None, received["X-Amzn-Trace-Id"]
    return parent, amzn


async def test_a_trace_is_started_when_none_came(setup: Setup) -> None:
    before = int(time.time())
    resp = await _get(setup, "/items/1")
    after = int(time.time())
    assert resp.status == 200
    parent, amzn = _trace_headers(setup.upstream.headers[0])
    trace_id, span_id, flags = parent.groups()
    # One trace, two spellings: X-Ray's root is the W3C id split after its epoch-second prefix.
    assert amzn[1] + amzn[2] == trace_id
    assert amzn[3] == span_id
    assert before <= int(trace_id[:8], 16) <= after
    assert flags == "00" and amzn[4] == "0"

    await _get(setup, "/items/2")
    second, _ = _trace_headers(setup.upstream.headers[1])
    assert second[1] != trace_id and second[2] != span_id

    lines = await _log_lines(setup)
    assert [line["trace_id"] for line in lines] == [trace_id, second[1]]


async def test_an_incoming_traceparent_is_continued(setup: Setup) -> None:
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await _get(
        setup,
        "/items/1",
        {"traceparent": incoming, "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"},
    )
    received = setup.upstream.headers[0]
    parent, amzn = _trace_headers(received)
    assert parent[1] == "4bf92f3577b34da6a3ce929d0e0e4736"  # the trace goes on
    assert parent[2] != "00f067aa0ba902b7"  # with the gateway's span as the parent
    assert parent[3] == "01"  # the caller's sampling decision is kept
    assert amzn.group(0) == (
        f"Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent={parent[2]};Sampled=1"
    )
    assert received["tracestate"] == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    # One traceparent reaches the upstream, not the client's beside the gateway's.
    assert received["traceparent"].count("00-") == 1


async def test_an_incoming_xray_header_is_continued(setup: Setup) -> None:
    await _get(
        setup,
        "/items/1",
        {
            "X-Amzn-Trace-Id": "Root=1-5759e988-bd862e3fe1be46a994272793;"
            "Parent=53995c3f42cd8ad8;Sampled=1"
        },
    )
    parent, amzn = _trace_headers(setup.upstream.headers[0])
    assert parent[1] == "5759e988bd862e3fe1be46a994272793"
    assert amzn[1] == "5759e988" and amzn[2] == "bd862e3fe1be46a994272793"
    assert amzn[3] != "53995c3f42cd8ad8" and amzn[4] == "1"


async def test_malformed_trace_headers_start_a_new_trace(setup: Setup) -> None:
    await _get(setup, "/items/1", {"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"})
    await _get(setup, "/items/1", {"X-Amzn-Trace-Id": "Root=garbage"})
    for received in setup.upstream.headers:
        parent, _ = _trace_headers(received)
        assert parent[1] != "0" * 32
        assert parent[3] == "00"


@pytest.mark.parametrize("route", ["/fn1", "/fn2"])
async def test_a_function_event_carries_the_trace(setup: Setup, route: str) -> None:
    root = "Root=1-5759e988-bd862e3fe1be46a994272793"
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"http://127.0.0.1:{setup.port}{route}", headers={"X-Amzn-Trace-Id": root}
        ) as resp:
            event = await resp.json(content_type=None)
    headers = {name.lower(): value for name, value in event["headers"].items()}
    found = AMZN.fullmatch(headers["x-amzn-trace-id"])
    assert found is not None, headers["x-amzn-trace-id"]
    assert found[1] == "5759e988" and found[2] == "bd862e3fe1be46a994272793"
    if route == "/fn1":
        assert event["multiValueHeaders"]["X-Amzn-Trace-Id"] == [headers["x-amzn-trace-id"]]
    lines = await _log_lines(setup)
    assert lines[0]["trace_id"] == "5759e988bd862e3fe1be46a994272793"


async def test_a_function_event_gets_a_trace_when_none_came(setup: Setup) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{setup.port}/fn2") as resp:
            event = await resp.json(content_type=None)
    found = AMZN.fullmatch(event["headers"]["x-amzn-trace-id"])
    assert found is not None
    lines = await _log_lines(setup)
    assert lines[0]["trace_id"] == found[1] + found[2]


async def test_concurrent_requests_keep_their_own_traces(setup: Setup) -> None:
    sent = [f"00-{n:032x}-{n:016x}-01" for n in range(1, 9)]

    async def one(session: aiohttp.ClientSession, value: str) -> None:
        async with session.get(
            f"http://127.0.0.1:{setup.port}/items/1", headers={"traceparent": value}
        ) as resp:
            await resp.read()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, value) for value in sent))
    got = sorted(h["traceparent"][3:35] for h in setup.upstream.headers)
    assert got == sorted(value[3:35] for value in sent)
