"""A worker's connection registry reaching a sibling worker's connections: two registries as
workers 0 and 1, each with its private admin API on a real unix socket, a real client connected
to worker 1, and in-process calls made in worker 0 from a thread and from the event loop."""

from __future__ import annotations

import asyncio
import base64
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from pygw.config.load import load_config
from pygw.websocket.connections import ConnectionRegistry, WorkerPeers, worker_of
from tests.integration.conftest import StartGateway
from tests.ws_api import websocket_api

CONFIG = """\
apis:
  - name: room
    type: websocket
    stages: [{name: prod}]
    routes:
      $default: {integration: {type: mock, body: "pong"}, route_response: true}
"""


class Workers:
    def __init__(self, first: ConnectionRegistry, second: ConnectionRegistry, url: str) -> None:
        self.first = first
        self.second = second
        self.url = url
        self.runners: list[web.AppRunner] = []


@pytest.fixture
async def workers(tmp_path: Path, start_gateway: StartGateway) -> AsyncIterator[Workers]:
    sockets = (str(tmp_path / "worker-0.sock"), str(tmp_path / "worker-1.sock"))
    first = ConnectionRegistry(peers=WorkerPeers(0, sockets))
    second = ConnectionRegistry(peers=WorkerPeers(1, sockets))
    config = tmp_path / "ws.yaml"
    config.write_text(textwrap.dedent(CONFIG))
    loaded = load_config(config)
    gateway = await start_gateway(websocket_api(loaded, second))
    found = Workers(first, second, gateway.url)
    for registry, path in zip((first, second), sockets, strict=True):
        app = web.Application()
        app.router.add_route("*", "/@connections/{connection_id}", registry.handle_admin)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.UnixSite(runner, path).start()
        found.runners.append(runner)
    yield found
    await first.close_all()
    await second.close_all()
    for runner in found.runners:
        await runner.cleanup()


async def _next(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    return await ws.receive(timeout=10)


async def test_sibling_connections_from_threads_and_the_loop(workers: Workers) -> None:
    first, second = workers.first, workers.second
    async with aiohttp.ClientSession() as client:
        ws = await client.ws_connect(workers.url + "/")
        await ws.send_str("hi")
        assert (await _next(ws)).data == "pong"
        (connection_id,) = second.ids()
        assert worker_of(connection_id) == 1 and first.ids() == []

        # A sync handler in worker 0's thread pool waits for worker 1's answer.
        assert await asyncio.to_thread(first.send, connection_id, b'{"from": "thread"}')
        assert (await _next(ws)).data == '{"from": "thread"}'
        described = await asyncio.to_thread(first.describe, connection_id)
        assert described is not None and described["identity"]["sourceIp"] == "127.0.0.1"

        # On the loop the sync call cannot wait: the message goes in the background.
        assert first.send(connection_id, "from the loop")
        assert (await _next(ws)).data == "from the loop"
        with pytest.raises(RuntimeError, match="describe_async"):
            first.describe(connection_id)
        assert await first.send_async(connection_id, b"\x00\xffbinary")
        binary = await _next(ws)
        assert binary.type is aiohttp.WSMsgType.BINARY and binary.data == b"\x00\xffbinary"
        assert (await first.describe_async(connection_id) or {})["identity"]["sourceIp"]

        # Ids worker 1 does not hold are gone, from either side.
        unknown = base64.urlsafe_b64encode(b"\x01" + b"\x07" * 10).decode()
        assert worker_of(unknown) == 1
        assert not await asyncio.to_thread(first.send, unknown, b"x")
        assert not await first.send_async(unknown, b"x")
        assert await first.describe_async(unknown) is None
        assert not first.send("garbage", b"x")

        assert await first.close_async(connection_id)
        assert (await _next(ws)).type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1000
        await ws.close()
        assert not await asyncio.to_thread(first.close, connection_id)
        assert not await first.send_async(connection_id, b"late")


async def test_unreachable_sibling_counts_as_gone(workers: Workers) -> None:
    await workers.runners[1].cleanup()
    workers.runners.pop()
    someone = base64.urlsafe_b64encode(b"\x01" + b"\x05" * 10).decode()
    assert not await asyncio.to_thread(workers.first.send, someone, b"x")
    assert not await workers.first.send_async(someone, b"x")
