"""WebSocket pass-through behind `pygw serve`: an http API route with an http_proxy integration
relays a WebSocket upgrade to a real upstream WebSocket server."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import textwrap
from collections.abc import AsyncIterator, Iterator

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType, web

from tests.e2e.gateway_process import GatewayProcess
from tests.integration.test_ws_passthrough import WsState, free_port, ws_echo

pytestmark = pytest.mark.timeout(60)

CONFIG = """
admin: {listen: "127.0.0.1:0"}
access_log: null
apis:
  - name: web
    type: http
    routes:
      "GET /ws":
        integration: {type: http_proxy, uri: "http://127.0.0.1:%(port)d/ws"}
      "ANY /deep/{proxy+}":
        integration: {type: http_proxy, uri: "http://127.0.0.1:%(port)d/ws/{proxy}"}
      "GET /down":
        integration: {type: http_proxy, uri: "http://127.0.0.1:%(down)d/ws", retries: 0}
"""


class Upstream:
    def __init__(self, port: int) -> None:
        self.state = WsState()
        self.port = port
        self.runner: web.ServerRunner | None = None

    async def start(self) -> None:
        self.state = WsState()
        echo = ws_echo(self.state)

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            return await echo(request, None)

        self.runner = web.ServerRunner(web.Server(handle), shutdown_timeout=0.2)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, ports: tuple[int, int]
) -> Iterator[GatewayProcess]:
    config = tmp_path_factory.mktemp("wspass") / "gw.yaml"
    config.write_text(textwrap.dedent(CONFIG % {"port": ports[0], "down": ports[1]}))
    with GatewayProcess(config) as process:
        yield process


@pytest.fixture
async def upstream(ports: tuple[int, int]) -> AsyncIterator[Upstream]:
    up = Upstream(ports[0])
    await up.start()
    yield up
    await up.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        yield client


def _ws(gateway: GatewayProcess, path: str) -> str:
    return gateway.url.replace("http://", "ws://") + path


async def test_echo_text_and_binary(
    gateway: GatewayProcess, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(_ws(gateway, "/ws")) as ws:
        await ws.send_str("hi")
        assert await ws.receive_str(timeout=5) == "hi"
        await ws.send_bytes(b"\x00bin\xff")
        assert await ws.receive_bytes(timeout=5) == b"\x00bin\xff"
        await ws.send_str("headers")
        seen = {k.lower(): v for k, v in orjson.loads(await ws.receive_str(timeout=5)).items()}
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-request-id"]
    async with session.ws_connect(_ws(gateway, "/deep/a/b?q=1")) as ws:
        await ws.send_str("deep")
        assert await ws.receive_str(timeout=5) == "deep"


async def test_subprotocol(
    gateway: GatewayProcess, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(_ws(gateway, "/ws"), protocols=("x", "chat.v2")) as ws:
        assert ws.protocol == "chat.v2"


async def test_close_codes_both_ways(
    gateway: GatewayProcess, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    ws = await session.ws_connect(_ws(gateway, "/ws"))
    await ws.close(code=4001, message=b"client done")
    await asyncio.wait_for(upstream.state.closed.wait(), 10)
    assert upstream.state.closes == [(4001, "client done")]
    assert ws.close_code == 4001

    async with session.ws_connect(_ws(gateway, "/ws")) as ws:
        await ws.send_str("close 1011 boom")
        msg = await ws.receive(timeout=10)
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1011, "boom")


async def test_refused_and_down(
    gateway: GatewayProcess, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(_ws(gateway, "/ws?deny=1"))
    assert refused.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as down:
        await session.ws_connect(_ws(gateway, "/down"))
    assert down.value.status == 502
    async with session.get(gateway.url + "/down") as resp:
        assert resp.status == 502
        assert await resp.json() == {"message": "Bad Gateway"}


async def test_plain_http_on_same_route(
    gateway: GatewayProcess, upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    async with session.get(gateway.url + "/ws") as resp:
        assert resp.status == 200
        assert await resp.json() == {"method": "GET", "path": "/ws"}
    async with session.post(gateway.url + "/deep/x", data=b"body") as resp:
        assert await resp.json() == {"method": "POST", "path": "/ws/x"}


def _raw_handshake(port: int, connection: str) -> tuple[bytes, bytes]:
    """A hand-written handshake (with `connection` as the Connection header), one text frame
    sent; the response head and what followed it."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            (
                "GET /ws HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                f"Connection: {connection}\r\n"
                "Upgrade: websocket\r\n"
                f"Sec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 101"):
            mask = os.urandom(4)
            payload = b"raw"
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
            while len(rest) < 2 + len(payload):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                rest += chunk
        return head, rest


async def test_keep_alive_in_connection_still_upgrades(
    gateway: GatewayProcess, upstream: Upstream
) -> None:
    head, rest = await asyncio.to_thread(_raw_handshake, gateway.port, "keep-alive, Upgrade")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 101"), head
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()
    assert rest[:5] == b"\x81\x03raw"
