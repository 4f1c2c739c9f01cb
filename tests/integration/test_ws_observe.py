"""WebSocket access-log lines and metrics: the integration mounted in a small aiohttp server with
a real AccessLog file and a real Metrics registry, real clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pygw.config.load import load_config
from pygw.observe.access_log import AccessLog
from pygw.observe.metrics import Metrics
from pygw.websocket.connections import ConnectionRegistry
from tests.integration.conftest import StartGateway
from tests.ws_api import websocket_api

HERE = "tests.integration.test_ws_observe"
SECRET = "s3cret-payload"


def admit(event: dict[str, Any], context: Any) -> dict[str, Any]:
    query = event.get("queryStringParameters") or {}
    return {"statusCode": 200 if query.get("name") else 403}


def reply(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "body": '{"ok": true}'}


def explode(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise RuntimeError("handler failure")


async def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
    await asyncio.sleep(5)
    return {"statusCode": 200}


def authorize(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    token = (event.get("headers") or {}).get("authorization", "")
    return {"isAuthorized": token == "Bearer good"}


CONFIG = f"""\
apis:
  - name: room
    type: websocket
    stages: [{{name: prod}}]
    websocket: {{max_message_bytes: 512}}
    routes:
      $connect: {{integration: {{type: function, handler: "{HERE}:admit"}}}}
      $disconnect: {{integration: {{type: function, handler: "{HERE}:reply"}}}}
      echo: {{integration: {{type: function, handler: "{HERE}:reply"}}, route_response: true}}
      quiet: {{integration: {{type: function, handler: "{HERE}:reply"}}}}
      boom: {{integration: {{type: function, handler: "{HERE}:explode"}}}}
      slow: {{integration: {{type: function, handler: "{HERE}:slow", timeout_ms: 200}}}}
      limited:
        integration: {{type: function, handler: "{HERE}:reply"}}
        throttle: {{rate: 0, burst: 1}}
  - name: gated
    type: websocket
    base_path: /gated
    stages: [{{name: prod}}]
    authorizers: {{gate: {{type: custom, handler: "{HERE}:authorize", simple_responses: true}}}}
    routes:
      $connect: {{integration: {{type: function, handler: "{HERE}:admit"}}, authorizer: gate}}
      $default: {{integration: {{type: function, handler: "{HERE}:reply"}}}}
"""


class Observed:
    def __init__(self, urls: dict[str, str], metrics: Metrics, log: AccessLog, path: Path):
        self.urls = urls
        self.metrics = metrics
        self.log = log
        self.path = path

    def lines(self) -> list[dict[str, Any]]:
        self.log.flush()
        return [orjson.loads(line) for line in self.path.read_bytes().splitlines()]

    def sample(self, name: str, **labels: str) -> float:
        total = 0.0
        found = False
        for family in text_string_to_metric_families(self.metrics.render().decode()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
                    found = True
        assert found, f"no sample {name} {labels}"
        return total


@pytest.fixture
async def observed(tmp_path: Path, start_gateway: StartGateway) -> AsyncIterator[Observed]:
    config = tmp_path / "ws.yaml"
    config.write_text(textwrap.dedent(CONFIG))
    loaded = load_config(config)
    metrics = Metrics()
    registry = ConnectionRegistry()
    path = tmp_path / "access.log"
    log = AccessLog(str(path), flush_s=0.05)
    registry.access_log = log
    urls: dict[str, str] = {}
    for api in loaded.config.apis:
        integration = websocket_api(loaded, registry, api=api.name, metrics=metrics)
        urls[api.name] = (await start_gateway(integration)).url
    yield Observed(urls, metrics, log, path)
    log.close()


async def _receive_all(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[Any]:
    return [orjson.loads((await ws.receive(timeout=10)).data) for _ in range(count)]


async def _until_closed(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return ws.close_code


async def _eventually(check: Any) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError("condition not reached")


async def test_access_log_lines_and_metrics(observed: Observed) -> None:
    url = observed.urls["room"]
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(url + "/?token=" + SECRET)
        assert refused.value.status == 403

        ws = await client.ws_connect(url + "/?name=alice&token=" + SECRET)
        sent = [
            f'{{"action": "echo", "secret": "{SECRET}"}}',  # answered (route response)
            '{"action": "quiet"}',  # one-way
            '{"action": "nothing"}',  # no route, no $default: Forbidden frame
            '{"action": "boom"}',  # Internal server error frame
            '{"action": "slow"}',  # Endpoint request timed out frame
            '{"action": "limited"}',
            '{"action": "limited"}',  # over the burst of 1: Too Many Requests frame
        ]
        for message in sent:
            await ws.send_str(message)
        frames = await _receive_all(ws, 5)
        # Refusals (no route, throttled) are answered on arrival, before queued messages.
        assert sorted(str(f.get("message", f)) for f in frames) == sorted(
            [
                "{'ok': True}",
                "Forbidden",
                "Internal server error",
                "Endpoint request timed out",
                "Too Many Requests",
            ]
        )
        connection_id = next(f["connectionId"] for f in frames if "connectionId" in f)
        await ws.close()

        big = await client.ws_connect(url + "/?name=bob")
        await big.send_str("x" * 600)
        assert await _until_closed(big) == 1009

    def disconnects() -> list[dict[str, Any]]:
        return [line for line in observed.lines() if line["event_type"] == "DISCONNECT"]

    await _eventually(lambda: len(disconnects()) == 2)
    lines = observed.lines()
    text = observed.path.read_text()
    assert SECRET not in text  # neither bodies nor query strings are logged
    connects = [line for line in lines if line["event_type"] == "CONNECT"]
    assert [(c["status"], c["outcome"]) for c in connects] == [
        (403, "refused"),
        (101, "accepted"),
        (101, "accepted"),
    ]
    assert connects[1]["connection_id"] == connection_id
    assert all(c["api"] == "room" and c["stage"] == "prod" for c in connects)
    assert all(c["client_ip"] == "127.0.0.1" and c["route"] == "$connect" for c in connects)
    assert connects[1]["integration_latency_ms"] >= 0.0

    messages = [
        line
        for line in lines
        if line["event_type"] == "MESSAGE" and line["connection_id"] == connection_id
    ]
    by_outcome = {(m["route"], m["outcome"]): m for m in messages}
    assert len(messages) == 7
    assert {key: m["status"] for key, m in by_outcome.items()} == {
        ("echo", "ok"): 200,
        ("quiet", "ok"): 200,
        ("$default", "no_route"): 403,
        ("boom", "error"): 500,
        ("slow", "timeout"): 504,
        ("limited", "ok"): 200,
        ("limited", "throttled"): 429,
    }
    assert sorted(m["bytes"] for m in messages) == sorted(len(s) for s in sent)
    assert by_outcome[("echo", "ok")]["response_bytes"] == len('{"ok": true}')
    assert by_outcome[("quiet", "ok")]["response_bytes"] == 0
    assert by_outcome[("slow", "timeout")]["integration_latency_ms"] >= 200.0
    refused_line = by_outcome[("$default", "no_route")]
    assert refused_line["integration_latency_ms"] is None  # no integration ran
    assert refused_line["message_id"] is None and by_outcome[("echo", "ok")]["message_id"]
    assert refused_line["response_bytes"] > 0  # the Forbidden frame
    assert len({m["request_id"] for m in messages}) == len(messages)

    closed = {line["connection_id"]: line for line in disconnects()}
    mine = closed[connection_id]
    assert (mine["close_code"], mine["route"], mine["status"], mine["outcome"]) == (
        1000,
        "$disconnect",
        200,
        "ok",
    )
    assert mine["duration_ms"] >= 0
    (other,) = (line for cid, line in closed.items() if cid != connection_id)
    assert other["close_code"] == 1009

    sample = observed.sample
    assert sample("pygw_websocket_connects_total", api="room", outcome="accepted") == 2
    assert sample("pygw_websocket_connects_total", api="room", outcome="refused") == 1
    # Every frame the client received was counted as sent, and nothing else.
    assert sample("pygw_websocket_messages_sent_total", api="room") == len(frames)
    assert sample("pygw_websocket_messages_total", route="limited", outcome="throttled") == 1
    assert sample("pygw_websocket_messages_total", route="echo", outcome="ok") == 1
    assert sample("pygw_websocket_client_errors_total", reason="no_route") == 1
    assert sample("pygw_websocket_client_errors_total", reason="throttled") == 1
    # The route's throttle is the runtime's, counted as any route's refusals are.
    assert sample("pygw_throttled_total", api="room", route="limited", level="route") == 1
    assert sample("pygw_websocket_client_errors_total", reason="too_large") == 1
    assert sample("pygw_websocket_integration_errors_total", route="boom", reason="error") == 1
    assert sample("pygw_websocket_integration_errors_total", route="slow", reason="timeout") == 1
    latency = "pygw_websocket_integration_latency_seconds"
    assert sample(f"{latency}_count", route="slow") == 1
    assert sample(f"{latency}_sum", route="slow") >= 0.2
    assert sample(f"{latency}_count", route="$connect") == 3
    assert sample(f"{latency}_count", route="$disconnect") == 2
    assert sample(f"{latency}_bucket", route="echo", le="+Inf") == 1


async def test_authorizer_refusal_is_a_client_error(observed: Observed) -> None:
    url = observed.urls["gated"]
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as denied:
            await client.ws_connect(url + "/?name=x", headers={"Authorization": "Bearer bad"})
        assert denied.value.status == 403
        async with client.ws_connect(
            url + "/?name=x", headers={"Authorization": "Bearer good"}
        ) as ws:
            await ws.send_str("hello")
    line = next(line for line in observed.lines() if line["event_type"] == "CONNECT")
    assert (line["status"], line["outcome"], line["api"]) == (403, "unauthorized", "gated")
    assert "Bearer" not in observed.path.read_text()
    sample = observed.sample
    assert sample("pygw_websocket_client_errors_total", api="gated", reason="unauthorized") == 1
    assert sample("pygw_websocket_connects_total", api="gated", outcome="refused") == 1
    assert sample("pygw_websocket_connects_total", api="gated", outcome="accepted") == 1


async def test_nothing_is_logged_without_an_access_log(
    tmp_path: Path, start_gateway: StartGateway
) -> None:
    config = tmp_path / "ws.yaml"
    config.write_text(textwrap.dedent(CONFIG))
    loaded = load_config(config)
    registry = ConnectionRegistry()
    metrics = Metrics()
    gateway = await start_gateway(websocket_api(loaded, registry, metrics=metrics))
    async with aiohttp.ClientSession() as client:
        async with client.ws_connect(gateway.url + "/?name=a") as ws:
            await ws.send_str('{"action": "echo"}')
            assert orjson.loads((await ws.receive(timeout=10)).data) == {"ok": True}
    assert registry.access_log is None
    assert sorted(
        path.name for path in await asyncio.to_thread(lambda: list(tmp_path.iterdir()))
    ) == ["ws.yaml"]
    assert 'pygw_websocket_messages_sent_total{api="room",stage="prod"} 1.0' in (
        metrics.render().decode()
    )
