"""WebSocket APIs under `pygw serve --workers 2`: the supervisor's `@connections` API reaches the
worker holding each connection, the chat example broadcasts to members held by either worker,
and the workers' access-log lines and metrics add up."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.gateway_process import GatewayProcess
from tests.ws_client import close_frame_code, receive_json

CHAT = Path(__file__).resolve().parents[2] / "examples" / "chat"
TOKEN = "connections-admin-token"

CONFIG = """
server: {workers: 2, drain_timeout_s: 5}
admin: {listen: "127.0.0.1:0", token: %(token)s}
access_log: {path: %(log)s}
python_path: [%(chat)s]
apis:
  - name: chat
    type: websocket
    stages: [{name: prod}]
    routes:
      $connect: {integration: {type: function, handler: "chat:connect"}}
      $disconnect: {integration: {type: function, handler: "chat:disconnect"}}
      sendmessage: {integration: {type: function, handler: "chat:send_message"}}
      $default: {integration: {type: function, handler: "chat:default"}, route_response: true}
"""

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("ws-workers")
    config = folder / "ws.yaml"
    config.write_text(
        textwrap.dedent(CONFIG)
        % {
            "token": json.dumps(TOKEN),
            "log": json.dumps(str(folder / "access.log")),
            "chat": json.dumps(str(CHAT)),
        }
    )
    # The room is shared by the two workers through SQLite (each has its own module state).
    env = {"CHAT_ROOM_DB": str(folder / "room.db")}
    with GatewayProcess(config, env=env) as process:
        yield process


@pytest.fixture
async def client() -> AsyncIterator[tuple[aiohttp.ClientSession, dict[str, str]]]:
    """A client session that remembers which worker (x-pygw-worker) answered each handshake."""
    answered: dict[str, str] = {}

    async def on_end(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
        worker = params.response.headers.get("x-pygw-worker")
        if worker is not None:
            answered[str(params.url)] = worker

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=True),
        timeout=aiohttp.ClientTimeout(total=30),
        trace_configs=[trace],
    ) as session:
        yield session, answered


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def test_connections_api_and_broadcast_across_workers(
    gateway: GatewayProcess, client: tuple[aiohttp.ClientSession, dict[str, str]]
) -> None:
    session, answered = client
    async with session.get(gateway.admin_url + "/workers", headers=AUTH) as response:
        pids = {str(worker["pid"]) for worker in await response.json()}
    assert len(pids) == 2
    base = gateway.url.replace("http://", "ws://") + "/prod"

    # Connect until each worker holds at least two connections (the kernel picks the worker).
    members: dict[str, tuple[aiohttp.ClientWebSocketResponse, str]] = {}  # name -> (ws, pid)
    for number in range(60):
        name = f"user{number}"
        url = f"{base}?name={name}"
        ws = await session.ws_connect(url, autoclose=False)
        members[name] = (ws, answered[url])
        held = [pid for _, pid in members.values()]
        if all(held.count(pid) >= 2 for pid in pids):
            break
    by_worker = {pid: [n for n, (_, p) in members.items() if p == pid] for pid in pids}
    assert all(len(names) >= 2 for names in by_worker.values()), by_worker

    # Each member learns its connection id from $default (chat's "unknown action" answer).
    ids: dict[str, str] = {}
    for name, (ws, _) in members.items():
        await ws.send_str('{"action": "whoami"}')
        ids[name] = (await receive_json(ws))["connectionId"]
    assert len(set(ids.values())) == len(ids)

    admin = gateway.admin_url + "/@connections/"
    # POST reaches every connection, whichever worker holds it.
    for name in members:
        async with session.post(
            admin + ids[name], data=f'{{"to": "{name}"}}'.encode(), headers=AUTH
        ) as response:
            assert response.status == 200, await response.text()
    for name, (ws, _) in members.items():
        assert await receive_json(ws) == {"to": name}

    # GET describes each of them.
    for name in members:
        async with session.get(admin + ids[name], headers=AUTH) as response:
            assert response.status == 200
            described = await response.json()
        assert described["identity"]["sourceIp"] == "127.0.0.1"
        assert described["connectedAt"].endswith("Z") and described["lastActiveAt"]

    # A function route on one worker broadcasts to the members both workers hold.
    first, second = sorted(pids)
    speaker = by_worker[first][0]
    await members[speaker][0].send_str('{"action": "sendmessage", "message": "hi all"}')
    for _name, (ws, _) in members.items():
        assert await receive_json(ws) == {"from": speaker, "message": "hi all"}
    speaker = by_worker[second][0]
    await members[speaker][0].send_str('{"action": "sendmessage", "message": "and back"}')
    for _name, (ws, _) in members.items():
        assert await receive_json(ws) == {"from": speaker, "message": "and back"}

    # DELETE closes one connection on each worker; afterwards it is gone (410).
    for pid in pids:
        name = by_worker[pid][-1]
        ws, _ = members.pop(name)
        async with session.delete(admin + ids[name], headers=AUTH) as response:
            assert response.status == 204
        assert await close_frame_code(ws) == 1000
        for method in ("POST", "GET", "DELETE"):
            async with session.request(method, admin + ids[name], headers=AUTH) as response:
                assert response.status == 410
                assert response.headers["x-amzn-ErrorType"] == "GoneException"

    # The remaining members still hear broadcasts; the closed ones left the room.
    speaker = next(iter(members))
    await members[speaker][0].send_str('{"action": "sendmessage", "message": "still here"}')
    for _name, (ws, _) in members.items():
        assert await receive_json(ws) == {"from": speaker, "message": "still here"}

    # Unknown ids, ids of a worker that does not exist, and the admin token.
    for unknown in ("AAAAAAAAAAAAAAA=", "AQAAAAAAAAAAAAA=", "BQAAAAAAAAAAAAA=", "not-an-id"):
        async with session.post(admin + unknown, data=b"x", headers=AUTH) as response:
            assert response.status == 410, unknown
    async with session.post(admin + ids[speaker], data=b"x") as response:
        assert response.status == 401
    async with session.post(admin + ids[speaker], data=b"y" * 200_000, headers=AUTH) as response:
        assert response.status == 413

    opened = len(ids)
    for ws, _ in members.values():
        await ws.close()

    # Metrics of both workers, summed by the supervisor.
    async with session.get(gateway.admin_url + "/metrics", headers=AUTH) as response:
        metrics = await response.text()
    assert _sample(metrics, "pygw_websocket_connects_total", outcome="accepted") == opened
    # Every member received its POST and three or two broadcasts, plus its whoami answer.
    assert _sample(metrics, "pygw_websocket_messages_sent_total") >= opened * 4
    assert _sample(metrics, "pygw_websocket_messages_total", route="sendmessage") == 3
    assert (
        _sample(metrics, "pygw_websocket_integration_latency_seconds_count", route="sendmessage")
        == 3
    )

    # Both workers wrote their lines to the one access log.
    log = Path(str(gateway.config.parent / "access.log"))

    def lines() -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in log.read_bytes().splitlines()]

    for _ in range(100):
        found = [line for line in lines() if line.get("event_type") == "DISCONNECT"]
        if len(found) == opened:
            break
        await asyncio.sleep(0.1)
    events = lines()
    connected = {e["connection_id"] for e in events if e.get("event_type") == "CONNECT"}
    assert connected == set(ids.values())
    disconnects = [e for e in events if e.get("event_type") == "DISCONNECT"]
    assert {e["connection_id"] for e in disconnects} == set(ids.values())
    # $disconnect ran for every one, also when the client dropped its TCP connection at once.
    assert all(
        (e["route"], e["status"], e["outcome"]) == ("$disconnect", 200, "ok") for e in disconnects
    )
    assert sorted(e["close_code"] for e in disconnects).count(1000) == opened
    routed = [e for e in events if e.get("event_type") == "MESSAGE"]
    assert sum(1 for e in routed if e["route"] == "sendmessage" and e["status"] == 200) == 3
    assert all("hi all" not in json.dumps(e) for e in events)
