"""WebSocket APIs behind `pygw serve`: the chat-room example, the admin @connections API,
refusals, limits, and 1 000 connections held open (the gateway's RSS is measured and printed).
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.gateway_process import GatewayProcess
from tests.ws_client import close_frame_code, receive_json, until_closed

CHAT = Path(__file__).resolve().parents[2] / "examples" / "chat"

CONFIG = """
admin: {listen: "127.0.0.1:0"}
access_log: null
python_path: [%(chat)s]
apis:
  - name: chat
    type: websocket
    stages: [{name: prod}]
    routes:
      $connect: {integration: {type: function, handler: "chat:connect"}}
      $disconnect: {integration: {type: function, handler: "chat:disconnect"}}
      sendmessage: {integration: {type: function, handler: "chat:send_message"}}
      echo: {integration: {type: function, handler: "chat:echo"}, route_response: true}
      $default: {integration: {type: function, handler: "chat:default"}, route_response: true}
  - name: short
    type: websocket
    base_path: /short
    stages: [{name: prod}]
    websocket: {idle_timeout_s: 0.5, max_duration_s: 60, max_message_bytes: 1024}
    routes:
      echo: {integration: {type: function, handler: "chat:echo"}, route_response: true}
  - name: many
    type: websocket
    base_path: /many
    stages: [{name: prod}]
    routes:
      $default: {integration: {type: mock, body: "pong"}, route_response: true}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("ws")
    config = folder / "ws.yaml"
    config.write_text(textwrap.dedent(CONFIG % {"chat": json.dumps(str(CHAT))}))
    with GatewayProcess(config) as process:
        yield process


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as client:
        yield client


def _ws_url(gateway: GatewayProcess, path: str) -> str:
    return gateway.url.replace("http://", "ws://") + path


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def test_chat_room(gateway: GatewayProcess, session: aiohttp.ClientSession) -> None:
    alice = await session.ws_connect(_ws_url(gateway, "/prod?name=alice"))
    bob = await session.ws_connect(_ws_url(gateway, "/prod?name=bob"))
    # Both are members once $connect has run; a round trip on each makes sure of it.
    for ws in (alice, bob):
        await ws.send_str('{"action": "echo", "message": "ready"}')
        assert await receive_json(ws) == {"echo": "ready"}
    await alice.send_str(json.dumps({"action": "sendmessage", "message": "hello"}))
    assert await receive_json(alice) == {"from": "alice", "message": "hello"}
    assert await receive_json(bob) == {"from": "alice", "message": "hello"}
    await bob.send_str("not json")
    assert (await receive_json(bob))["message"] == "unknown action"
    await bob.send_str('{"action": "juggle"}')
    assert (await receive_json(bob))["message"] == "unknown action"
    await alice.close()
    await bob.close()
    async with session.get(gateway.admin_url + "/metrics") as response:
        text = await response.text()
    sent = [
        line
        for line in text.splitlines()
        if line.startswith("pygw_websocket_messages_total{") and 'route="sendmessage"' in line
    ]
    assert sent and 'outcome="ok"' in sent[0]
    assert float(sent[0].rsplit(" ", 1)[1]) >= 1.0


async def test_refused_connect_and_plain_http(
    gateway: GatewayProcess, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(_ws_url(gateway, "/prod"))
    assert refused.value.status == 403
    async with session.get(gateway.url + "/prod?name=x") as response:
        assert response.status == 426
        assert (await response.json())["message"] == "Upgrade Required"


async def test_backend_pushes_through_admin_api(
    gateway: GatewayProcess, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(_ws_url(gateway, "/prod?name=erin"), autoclose=False) as ws:
        await ws.send_str("who am i")
        connection_id = (await receive_json(ws))["connectionId"]
        admin = f"{gateway.admin_url}/@connections/{connection_id}"
        async with session.post(admin, data=b'{"note": "from the backend"}') as response:
            assert response.status == 200
        assert await receive_json(ws) == {"note": "from the backend"}
        async with session.get(admin) as response:
            assert response.status == 200
            assert (await response.json())["identity"]["sourceIp"] == "127.0.0.1"
        async with session.delete(admin) as response:
            assert response.status == 204
        assert await close_frame_code(ws) == 1000
    async with session.post(admin, data=b"late") as response:
        assert response.status == 410


async def test_idle_timeout_and_oversize(
    gateway: GatewayProcess, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(_ws_url(gateway, "/short/prod")) as ws:
        assert await until_closed(ws) == 1001
    async with session.ws_connect(_ws_url(gateway, "/short/prod")) as ws:
        await ws.send_str(json.dumps({"action": "echo", "message": "y" * 2000}))
        assert await until_closed(ws) == 1009


async def test_thousand_connections_bounded_memory(
    gateway: GatewayProcess, session: aiohttp.ClientSession
) -> None:
    assert gateway.proc is not None
    pid = gateway.proc.pid
    before = _rss_mib(pid)
    count = 1000
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    for start in range(0, count, 100):
        sockets += await asyncio.gather(
            *(session.ws_connect(_ws_url(gateway, "/many/prod")) for _ in range(start, start + 100))
        )

    async def roundtrip(ws: aiohttp.ClientWebSocketResponse) -> str:
        await ws.send_str("ping")
        msg = await ws.receive(timeout=30)
        return str(msg.data)

    assert await asyncio.gather(*(roundtrip(ws) for ws in sockets)) == ["pong"] * count
    held = _rss_mib(pid)
    await asyncio.gather(*(ws.close() for ws in sockets))
    grown = held - before
    print(f"gateway RSS: {before:.1f} MiB idle, {held:.1f} MiB with {count} connections open")
    assert grown < 150, f"gateway grew {grown:.1f} MiB for {count} connections"
