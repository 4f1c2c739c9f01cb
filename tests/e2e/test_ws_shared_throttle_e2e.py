"""A WebSocket route's throttle through the shared state backends, under `pygw serve`: two
gateways on one Redis, and two workers on `state.backend: shared`, each take from the one
bucket of the route, so its burst is granted once in total and every other message is answered
with AWS's "Too Many Requests" frame."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pygw.websocket.connections import worker_of
from tests.e2e.gateway_process import GatewayProcess
from tests.integration.redis_server import RedisServer, running_redis

BURST = 5

API = """
python_path: [%(handlers)s]
apis:
  - name: ws
    type: websocket
    stages: [{name: prod}]
    routes:
      whoami: {integration: {type: function, handler: "whoami:handler"}, route_response: true}
      echo:
        integration: {type: mock, body: pong}
        route_response: true
        throttle: {rate: 0, burst: %(burst)d}
"""

WHOAMI = """\
def handler(event, context):
    return {"statusCode": 200, "body": event["requestContext"]["connectionId"]}
"""


def _config(folder: Path, head: str, **values: str) -> Path:
    handlers = folder / "handlers"
    handlers.mkdir()
    (handlers / "whoami.py").write_text(WHOAMI)
    config = folder / "ws.yaml"
    config.write_text(
        textwrap.dedent(head) % values
        + textwrap.dedent(API) % {"handlers": json.dumps(str(handlers)), "burst": BURST}
    )
    return config


async def _send_echo(ws: aiohttp.ClientWebSocketResponse) -> bool:
    """True when the route answered, False when the gateway refused with its throttle frame."""
    await ws.send_str('{"action": "echo"}')
    msg = await ws.receive(timeout=10)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    if msg.data == "pong":
        return True
    frame = orjson.loads(msg.data)
    assert frame["message"] == "Too Many Requests" and frame["requestId"], frame
    return False


async def _refused_by_route(client: aiohttp.ClientSession, admin_url: str) -> float:
    async with client.get(admin_url + "/metrics") as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "pygw_throttled_total"
        and sample.labels.get("route") == "echo"
        and sample.labels.get("level") == "route"
    )


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


async def test_two_gateways_share_a_websocket_route_limit(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    head = """
    admin: {listen: "127.0.0.1:0"}
    access_log: null
    state: {backend: redis, url: "%(url)s", on_error: deny}
    """
    config = _config(tmp_path, head, url=redis_server.url)
    first, second = GatewayProcess(config), GatewayProcess(config)
    await asyncio.to_thread(first.start)
    await asyncio.to_thread(second.start)
    try:
        async with aiohttp.ClientSession() as client:
            sockets = [
                await client.ws_connect(gateway.url + "/prod")
                for gateway in (first, second, first, second)
            ]
            answered = [await _send_echo(ws) for _ in range(3) for ws in sockets]
            # Burst 5, no refill, one bucket across both hosts and all four connections: the
            # first five messages are routed, the other seven get the throttled frame.
            assert answered == [True] * BURST + [False] * (len(answered) - BURST)
            # Another route is not limited by echo's bucket.
            await sockets[0].send_str('{"action": "whoami"}')
            assert (await sockets[0].receive(timeout=10)).type is aiohttp.WSMsgType.TEXT
            refused = [await _refused_by_route(client, g.admin_url) for g in (first, second)]
            assert sum(refused) == len(answered) - BURST
            assert all(count > 0 for count in refused), refused
            for ws in sockets:
                await ws.close()
    finally:
        await asyncio.to_thread(first.stop)
        await asyncio.to_thread(second.stop)


async def test_two_workers_share_a_websocket_route_limit(tmp_path: Path) -> None:
    head = """
    server: {workers: 2}
    admin: {listen: "127.0.0.1:0"}
    access_log: null
    state: {backend: shared}
    """
    config = _config(tmp_path, head)
    gateway = GatewayProcess(config)
    await asyncio.to_thread(gateway.start)
    try:
        async with aiohttp.ClientSession() as client:
            # New connections spread over both workers (SO_REUSEPORT): keep one on each.
            held: dict[int, aiohttp.ClientWebSocketResponse] = {}
            for _ in range(40):
                ws = await client.ws_connect(gateway.url + "/prod")
                await ws.send_str('{"action": "whoami"}')
                worker = worker_of((await ws.receive(timeout=10)).data)
                assert worker is not None
                if worker in held:
                    await ws.close()
                else:
                    held[worker] = ws
                if len(held) == 2:
                    break
            assert len(held) == 2, "the connections should reach both workers"
            sockets = list(held.values())
            answered = [await _send_echo(ws) for _ in range(4) for ws in sockets]
            # Burst 5 for the route, not 5 per worker.
            assert answered.count(True) == BURST
            assert answered == [True] * BURST + [False] * (len(answered) - BURST)
            for ws in sockets:
                await ws.close()
    finally:
        await asyncio.to_thread(gateway.stop)
