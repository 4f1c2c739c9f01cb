"""The upstream leg of a WebSocket pass-through handshake: what the upstream is sent, and what the
client is answered when the upstream does not upgrade. Real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from aiohttp import ClientSession, WSMsgType, web
from multidict import CIMultiDict

from pygw.integrations.http_proxy import HttpProxyIntegration

if TYPE_CHECKING:
    from conftest import StartGateway, StartUpstream, Upstream

pytestmark = pytest.mark.timeout(20)

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Behaviour = Callable[[web.BaseRequest, Any], Awaitable[web.StreamResponse]]


def recording_echo(seen: list[list[tuple[str, str]]]) -> Behaviour:
    """Accepts the upgrade (offering chat.v1), records the handshake's raw header lines, echoes."""

    async def handle(request: web.BaseRequest, _: Upstream) -> web.StreamResponse:
        seen.append([(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers])
        ws = web.WebSocketResponse(protocols=("chat.v1",))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    return handle


def refusing(answer: Callable[[], web.Response]) -> Behaviour:
    """Answers an upgrade to /ws with a (non-101) HTTP response; any other path is 404."""

    async def handle(request: web.BaseRequest, _: Upstream) -> web.StreamResponse:
        if request.path != "/ws":
            return web.Response(status=404, text=f"followed to {request.path}")
        return answer()

    return handle


def handshake_headers(key: str, **extra: str) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict(
        {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13",
        }
    )
    headers.update(extra)
    return headers


async def gateway_for(
    start_upstream: StartUpstream, start_gateway: StartGateway, behaviour: Behaviour
) -> str:
    up = await start_upstream(behaviour)
    gw = await start_gateway(HttpProxyIntegration(uri=f"{up.url}/ws"))
    url: str = gw.url
    return url


async def test_upstream_handshake_carries_the_clients_headers(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    seen: list[list[tuple[str, str]]] = []
    url = await gateway_for(start_upstream, start_gateway, recording_echo(seen))
    sent = {
        "Origin": "https://app.example",
        "Cookie": "session=abc; theme=dark",
        "User-Agent": "probe-browser/7.1",
        "Accept-Language": "fr-CH",
        "X-Custom": "kept",
        # Hop-by-hop: for the gateway, not the upstream.
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic c2VjcmV0",
    }
    ws_url = url.replace("http://", "ws://")
    # A client that sends neither Accept nor Accept-Encoding: the upstream must not see them.
    async with (
        ClientSession(skip_auto_headers=("Accept", "Accept-Encoding")) as client,
        client.ws_connect(ws_url, headers=sent, protocols=("other", "chat.v1")) as ws,
    ):
        assert ws.protocol == "chat.v1"
        await ws.send_str("hi")
        assert await ws.receive_str(timeout=5) == "hi"
    lines = seen[0]
    received = {name.lower(): value for name, value in lines}
    for name in ("Origin", "Cookie", "User-Agent", "Accept-Language", "X-Custom"):
        assert received[name.lower()] == sent[name], name
    assert received["sec-websocket-version"] == "13"
    assert received["sec-websocket-protocol"] == "other,chat.v1"
    assert "keep-alive" not in received and "proxy-authorization" not in received
    # Only what the client sent: no header the gateway's HTTP client would add on its own.
    names = [name.lower() for name, _ in lines]
    assert names.count("user-agent") == 1
    assert "aiohttp" not in received["user-agent"]
    assert "accept-encoding" not in received and "accept" not in received


async def test_handshake_without_user_agent_gets_none_added(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    seen: list[list[tuple[str, str]]] = []
    url = await gateway_for(start_upstream, start_gateway, recording_echo(seen))
    key = base64.b64encode(os.urandom(16)).decode()
    async with (
        ClientSession(skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding")) as bare,
        bare.get(url + "/", headers=handshake_headers(key)) as response,
    ):
        assert response.status == 101
        # The client's key answered correctly: the client can trust the handshake.
        expected = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()
        assert response.headers["Sec-WebSocket-Accept"] == expected
    received = {name.lower(): value for name, value in seen[0]}
    assert "user-agent" not in received


async def test_extensions_are_not_negotiated(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    seen: list[list[tuple[str, str]]] = []
    url = await gateway_for(start_upstream, start_gateway, recording_echo(seen))
    # A compressing client still gets an uncompressed, working connection.
    async with client.ws_connect(url.replace("http://", "ws://"), compress=15) as ws:
        await ws.send_str("x" * 1000)
        assert await ws.receive_str(timeout=5) == "x" * 1000
    received = {name.lower(): value for name, value in seen[0]}
    assert "sec-websocket-extensions" not in received


@pytest.mark.parametrize(
    ("status", "reason", "content_type", "body", "extra"),
    [
        (200, "OK", "application/json", orjson.dumps({"hint": "use /v2"}), {}),
        (403, "Forbidden", "text/plain", b"origin not allowed", {"X-Denied": "origin"}),
        (426, "Upgrade Required", "text/plain", b"", {"Sec-WebSocket-Version": "13"}),
        # A redirect is the client's to follow, not the gateway's.
        (302, "Found", "text/html", b"<a href=/elsewhere>moved</a>", {"Location": "/elsewhere"}),
    ],
)
async def test_upstream_non_101_answer_reaches_the_client(
    start_upstream: StartUpstream,
    start_gateway: StartGateway,
    status: int,
    reason: str,
    content_type: str,
    body: bytes,
    extra: dict[str, str],
) -> None:
    def answer() -> web.Response:
        return web.Response(status=status, body=body, content_type=content_type, headers=extra)

    url = await gateway_for(start_upstream, start_gateway, refusing(answer))
    key = base64.b64encode(os.urandom(16)).decode()
    async with (
        ClientSession() as plain,
        plain.get(url + "/", headers=handshake_headers(key), allow_redirects=False) as response,
    ):
        assert response.status == status
        assert response.reason == reason
        assert response.content_type == content_type
        assert await response.read() == body
        for name, value in extra.items():
            assert response.headers[name] == value
        assert "Sec-WebSocket-Accept" not in response.headers
        # The gateway's own response headers are still set.
        assert response.headers["x-request-id"].startswith("req-")


async def test_refusal_body_larger_than_the_message_limit_is_502(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    from pygw.integrations.ws_passthrough import WsPassthrough

    def huge() -> web.Response:
        return web.Response(status=403, body=bytes(64 * 1024), content_type="text/plain")

    up = await start_upstream(refusing(huge))
    proxy = HttpProxyIntegration(uri=f"{up.url}/ws")
    proxy.websocket = WsPassthrough(proxy, max_message_bytes=1024)
    gw = await start_gateway(proxy)
    key = base64.b64encode(os.urandom(16)).decode()
    async with (
        ClientSession() as plain,
        plain.get(gw.url + "/", headers=handshake_headers(key)) as response,
    ):
        assert response.status == 502
        assert await response.json() == {"message": "Bad Gateway"}
