"""WebSocket pass-through of http_proxy: a real upstream WebSocket server, a real front end."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import pytest
from aiohttp import ClientSession, WSMsgType, web

from pygw.integrations.http_proxy import HttpProxyIntegration
from pygw.integrations.ws_passthrough import WsPassthrough

if TYPE_CHECKING:
    from conftest import StartGateway, StartUpstream, Upstream

pytestmark = pytest.mark.timeout(20)


@dataclass
class WsState:
    """What the upstream saw: handshake headers and the close codes its peers sent."""

    handshakes: list[dict[str, str]] = field(default_factory=list)
    closes: list[tuple[int | None, str]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


def ws_echo(
    state: WsState,
) -> Callable[[web.BaseRequest, Any], Awaitable[web.StreamResponse]]:
    """Echoes text and binary messages. `?deny=1` refuses the handshake with 403; the text
    `close CODE REASON` makes it close with that code; `headers` answers with its handshake's
    headers as JSON. A request that is not an upgrade gets a JSON echo of its method and path."""

    async def handle(request: web.BaseRequest, _: Any) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.json_response({"method": request.method, "path": request.raw_path})
        if request.rel_url.query.get("deny"):
            return web.Response(status=403, text="nope", headers={"X-Denied": "1"})
        seen = {str(k): v for k, v in request.headers.items()}
        state.handshakes.append(seen)
        ws = web.WebSocketResponse(protocols=("chat.v2", "chat.v1"))
        await ws.prepare(request)
        reason = ""
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.CLOSE:
                reason = msg.extra or ""
                break
            if msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            if msg.type is WSMsgType.TEXT:
                if msg.data.startswith("close "):
                    _, code, reason = msg.data.split(" ", 2)
                    await ws.close(code=int(code), message=reason.encode())
                    break
                if msg.data == "headers":
                    await ws.send_str(orjson.dumps(seen).decode())
                else:
                    await ws.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        state.closes.append((ws.close_code, reason))
        state.closed.set()
        return ws

    return handle


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _setup(
    start_upstream: StartUpstream, start_gateway: StartGateway, path: str = "/ws"
) -> tuple[WsState, Upstream, str, HttpProxyIntegration]:
    state = WsState()
    up = await start_upstream(ws_echo(state))
    proxy = HttpProxyIntegration(uri=f"{up.url}{path}")
    gw = await start_gateway(proxy)
    return state, up, gw.url.replace("http://", "ws://"), proxy


async def test_text_and_binary_echo(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    state, _, url, proxy = await _setup(start_upstream, start_gateway)
    async with client.ws_connect(url + "/anything?x=1") as ws:
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=5) == "hello"
        await ws.send_bytes(b"\x00\x01\xff")
        assert await ws.receive_bytes(timeout=5) == b"\x00\x01\xff"
        await ws.send_str("headers")
        seen = {k.lower(): v for k, v in orjson.loads(await ws.receive_str(timeout=5)).items()}
        assert proxy.websocket is not None and proxy.websocket.live == 1
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-request-id"].startswith("req-")
    assert seen["x-forwarded-host"].startswith("127.0.0.1:")
    assert seen["upgrade"].lower() == "websocket"
    await asyncio.wait_for(state.closed.wait(), 5)
    assert state.closes == [(1000, "")]


async def test_subprotocol_negotiated_with_upstream(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    state, _, url, _ = await _setup(start_upstream, start_gateway)
    async with client.ws_connect(url, protocols=("other", "chat.v1")) as ws:
        assert ws.protocol == "chat.v1"
    assert state.handshakes[0]["Sec-WebSocket-Protocol"] == "other,chat.v1"
    async with client.ws_connect(url, protocols=("nothing",)) as ws:
        assert ws.protocol is None
    async with client.ws_connect(url) as ws:
        assert ws.protocol is None


async def test_client_close_code_reaches_upstream(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    state, _, url, _ = await _setup(start_upstream, start_gateway)
    ws = await client.ws_connect(url)
    await ws.send_str("ping")
    assert await ws.receive_str(timeout=5) == "ping"
    await ws.close(code=4001, message=b"bye")
    await asyncio.wait_for(state.closed.wait(), 5)
    assert state.closes == [(4001, "bye")]
    assert ws.close_code == 4001  # the gateway answers with the same code


async def test_upstream_close_code_reaches_client(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    _, _, url, _ = await _setup(start_upstream, start_gateway)
    async with client.ws_connect(url) as ws:
        await ws.send_str("close 1011 upstream broke")
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 1011
        assert msg.extra == "upstream broke"


async def test_upstream_refusal_status_relayed(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    _, _, url, _ = await _setup(start_upstream, start_gateway)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(url + "?deny=1")
    assert refused.value.status == 403
    assert refused.value.headers is not None and refused.value.headers.get("X-Denied") == "1"


async def test_upstream_down_is_502(start_gateway: StartGateway, client: ClientSession) -> None:
    proxy = HttpProxyIntegration(uri=f"http://127.0.0.1:{free_port()}/ws")
    gw = await start_gateway(proxy)
    with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
        await client.ws_connect(gw.url.replace("http://", "ws://"))
    assert failed.value.status == 502


async def test_plain_http_still_proxied(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    _, _, url, proxy = await _setup(start_upstream, start_gateway)
    async with client.get(url.replace("ws://", "http://") + "/x") as resp:
        assert resp.status == 200
        assert await resp.json() == {"method": "GET", "path": "/ws"}
    # An Upgrade to something other than WebSocket is not a WebSocket: proxied (minus Upgrade).
    async with client.get(url.replace("ws://", "http://"), headers={"Upgrade": "h2c"}) as resp:
        assert resp.status == 200
    assert proxy.websocket.live == 0  # nothing was relayed as a WebSocket


async def test_large_messages_and_many_in_flight(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    _, _, url, _ = await _setup(start_upstream, start_gateway)
    async with client.ws_connect(url) as ws:
        big = bytes(range(256)) * 4096  # 1 MiB
        for _ in range(3):
            await ws.send_bytes(big)
        for _ in range(3):
            assert await ws.receive_bytes(timeout=10) == big
        for i in range(200):
            await ws.send_str(str(i))
        assert [await ws.receive_str(timeout=5) for _ in range(200)] == [str(i) for i in range(200)]


async def test_client_vanishing_closes_upstream_going_away(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    state, _, url, proxy = await _setup(start_upstream, start_gateway)
    ws = await client.ws_connect(url)
    await ws.send_str("x")
    assert await ws.receive_str(timeout=5) == "x"
    conn = ws._response.connection
    assert conn is not None and conn.transport is not None
    conn.transport.abort()
    await asyncio.wait_for(state.closed.wait(), 5)
    assert state.closes == [(1001, "")]
    assert proxy.websocket is not None
    for _ in range(50):
        if proxy.websocket.live == 0:
            break
        await asyncio.sleep(0.02)
    assert proxy.websocket.live == 0


async def test_oversized_message_closes_1009(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    state = WsState()
    up = await start_upstream(ws_echo(state))
    proxy = HttpProxyIntegration(uri=f"{up.url}/ws")
    proxy.websocket = WsPassthrough(proxy, max_message_bytes=1024)
    gw = await start_gateway(proxy)
    async with client.ws_connect(gw.url.replace("http://", "ws://")) as ws:
        await ws.send_bytes(bytes(2048))
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1009
    await asyncio.wait_for(state.closed.wait(), 5)
    assert state.closes[0][0] == 1009
