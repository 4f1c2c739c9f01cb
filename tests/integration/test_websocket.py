"""WebSocket APIs: the integration mounted in a small aiohttp server, real clients on 127.0.0.1.

Covers the chat-room example (examples/chat), route selection and AWS's error frames, $connect
refusals, route responses, the WebSocket event format, http_proxy routes, the @connections API,
idle timeout, maximum duration, oversize messages (1009), per-connection throttling, and 1 000
connections held open at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import textwrap
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pygw.config.load import load_config
from pygw.integrations.websocket import WebSocketApiIntegration, build_websocket_api, select_route
from pygw.integrations.ws_connections import ConnectionRegistry
from tests.integration.conftest import Gateway, StartGateway, StartUpstream, Upstream
from tests.ws_client import close_frame_code, receive_json, until_closed

CHAT = Path(__file__).resolve().parents[2] / "examples" / "chat"
HERE = "tests.integration.test_websocket"

# Events seen by the recording handlers below (they run in the function thread pool).
EVENTS: list[dict[str, Any]] = []
_events_lock = threading.Lock()


def record(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with _events_lock:
        EVENTS.append(event)
    return {"statusCode": 200, "body": event.get("body") or ""}


def explode(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise RuntimeError("handler failure")


async def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
    await asyncio.sleep(5)
    return {"statusCode": 200}


def refuse_unless_token(event: dict[str, Any], context: Any) -> dict[str, Any]:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    if headers.get("x-token") != "open-sesame":
        return {"statusCode": 401, "body": '{"message": "no token"}'}
    return {"statusCode": 200}


def _rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


Build = Callable[..., Awaitable[tuple[Gateway, WebSocketApiIntegration, ConnectionRegistry]]]


@pytest.fixture
async def build(tmp_path: Path, start_gateway: StartGateway) -> AsyncIterator[Build]:
    async def make(
        routes: str, extra: str = "", stages: str = "[{name: prod}]"
    ) -> tuple[Gateway, WebSocketApiIntegration, ConnectionRegistry]:
        config = tmp_path / "ws.yaml"
        config.write_text(
            textwrap.dedent(
                """\
                python_path: [%s]
                apis:
                  - name: chat
                    type: websocket
                    stages: %s
                """
            )
            % (json.dumps(str(CHAT)), stages)
            + textwrap.indent(textwrap.dedent(extra), "    ")
            + "    routes:\n"
            + textwrap.indent(textwrap.dedent(routes), "      ")
        )
        loaded = load_config(config)
        registry = ConnectionRegistry()
        registry.install()
        integration = build_websocket_api(loaded.config.apis[0], "prod", loaded, registry)
        gateway = await start_gateway(integration)
        return gateway, integration, registry

    with _events_lock:
        EVENTS.clear()
    yield make


CHAT_ROUTES = """\
$connect: {integration: {type: function, handler: "chat:connect"}}
$disconnect: {integration: {type: function, handler: "chat:disconnect"}}
sendmessage: {integration: {type: function, handler: "chat:send_message"}}
echo: {integration: {type: function, handler: "chat:echo"}, route_response: true}
$default: {integration: {type: function, handler: "chat:default"}, route_response: true}
"""


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        yield client


async def _wait_for(check: Callable[[], bool]) -> None:
    for _ in range(400):
        if check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError("condition not reached")


def test_select_route() -> None:
    path = ("action",)
    assert select_route('{"action": "x"}', path) == "x"
    assert select_route(b'{"action": "x"}', path) == "x"
    assert select_route("not json", path) is None
    assert select_route('{"action": 3}', path) is None
    assert select_route("[1, 2]", path) is None
    assert select_route('{"a": {"b": "deep"}}', ("a", "b")) == "deep"
    assert select_route('{"a": "flat"}', ("a", "b")) is None


async def test_chat_room_broadcast(build: Build, session: aiohttp.ClientSession) -> None:
    gateway, _, registry = await build(CHAT_ROUTES)
    alice = await session.ws_connect(gateway.url + "/?name=alice")
    bob = await session.ws_connect(gateway.url + "/?name=bob")
    await _wait_for(lambda: len(registry) == 2)
    await alice.send_str(json.dumps({"action": "sendmessage", "message": "hello room"}))
    assert await receive_json(alice) == {"from": "alice", "message": "hello room"}
    assert await receive_json(bob) == {"from": "alice", "message": "hello room"}
    await bob.send_str(json.dumps({"action": "sendmessage", "message": "hi alice"}))
    assert await receive_json(alice) == {"from": "bob", "message": "hi alice"}
    assert await receive_json(bob) == {"from": "bob", "message": "hi alice"}
    # echo has route_response: only the sender hears it.
    await bob.send_str(json.dumps({"action": "echo", "message": "me"}))
    assert await receive_json(bob) == {"echo": "me"}
    await alice.close()
    await _wait_for(lambda: len(registry) == 1)
    await bob.close()
    await _wait_for(lambda: len(registry) == 0)


async def test_unknown_action_and_non_json_go_to_default(
    build: Build, session: aiohttp.ClientSession
) -> None:
    gateway, _, _ = await build(CHAT_ROUTES)
    async with session.ws_connect(gateway.url + "/?name=carol") as ws:
        await ws.send_str(json.dumps({"action": "dance"}))
        first = await receive_json(ws)
        assert first["message"] == "unknown action"
        await ws.send_str("this is not json")
        assert (await receive_json(ws))["message"] == "unknown action"
        await ws.send_bytes(b"\x00\x01binary")
        assert (await receive_json(ws))["message"] == "unknown action"


async def test_no_default_route_answers_forbidden_frame(
    build: Build, session: aiohttp.ClientSession
) -> None:
    gateway, _, _ = await build(
        'echo: {integration: {type: function, handler: "chat:echo"}, route_response: true}\n'
    )
    async with session.ws_connect(gateway.url + "/") as ws:
        await ws.send_str('{"action": "nothing-here"}')
        frame = await receive_json(ws)
        assert frame["message"] == "Forbidden"
        assert frame["connectionId"] and frame["requestId"]
        await ws.send_str("garbage")
        assert (await receive_json(ws))["message"] == "Forbidden"
        # The connection stays usable.
        await ws.send_str('{"action": "echo", "message": 1}')
        assert await receive_json(ws) == {"echo": 1}


async def test_refused_connect(build: Build, session: aiohttp.ClientSession) -> None:
    gateway, _, registry = await build(CHAT_ROUTES)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(gateway.url + "/")  # no name
    assert refused.value.status == 403
    assert len(registry) == 0


async def test_connect_refusal_by_header(build: Build, session: aiohttp.ClientSession) -> None:
    gateway, _, _ = await build(
        f'$connect: {{integration: {{type: function, handler: "{HERE}:refuse_unless_token"}}}}\n'
        f'$default: {{integration: {{type: function, handler: "{HERE}:record"}}, '
        "route_response: true}\n"
    )
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(gateway.url + "/")
    assert refused.value.status == 401
    async with session.ws_connect(gateway.url + "/", headers={"X-Token": "open-sesame"}) as ws:
        await ws.send_str("ping")
        msg = await ws.receive(timeout=10)
        assert msg.data == "ping"


async def test_plain_http_request_is_refused(build: Build, session: aiohttp.ClientSession) -> None:
    gateway, _, _ = await build(CHAT_ROUTES)
    async with session.get(gateway.url + "/?name=x") as response:
        assert response.status == 426
        assert await response.json() == {"message": "Upgrade Required"}
        assert response.headers["Upgrade"] == "websocket"


async def test_event_format(build: Build, session: aiohttp.ClientSession) -> None:
    routes = "".join(
        f'{key}: {{integration: {{type: function, handler: "{HERE}:record"}}{extra}}}\n'
        for key, extra in (
            ("$connect", ""),
            ("$disconnect", ""),
            ("chat", ", route_response: true"),
        )
    )
    gateway, _, _ = await build(routes, stages="[{name: prod, variables: {color: blue}}]")
    ws = await session.ws_connect(
        gateway.url + "/?room=1&room=2&x=y", headers={"User-Agent": "probe/1", "X-Custom": "v"}
    )
    await ws.send_str('{"action": "chat", "message": "Hello"}')
    assert (await receive_json(ws)) == {"action": "chat", "message": "Hello"}
    await ws.close()
    await _wait_for(lambda: len(EVENTS) == 3)
    connect, message, disconnect = EVENTS
    ctx = connect["requestContext"]
    assert ctx["routeKey"] == "$connect" and ctx["eventType"] == "CONNECT"
    assert ctx["stage"] == "prod" and ctx["messageDirection"] == "IN"
    assert ctx["identity"] == {"sourceIp": "127.0.0.1", "userAgent": "probe/1"}
    # The Host as the client sent it, port included: `http://{domainName}/{stage}` reaches us.
    assert ctx["domainName"] == gateway.url.removeprefix("http://")
    assert isinstance(ctx["connectedAt"], int) and isinstance(ctx["requestTimeEpoch"], int)
    assert len(ctx["apiId"]) == 10 and ctx["requestId"]
    assert connect["headers"]["X-Custom"] == "v"
    assert connect["multiValueHeaders"]["X-Custom"] == ["v"]
    assert connect["queryStringParameters"] == {"room": "2", "x": "y"}
    assert connect["multiValueQueryStringParameters"] == {"room": ["1", "2"], "x": ["y"]}
    assert connect["stageVariables"] == {"color": "blue"}
    assert connect["isBase64Encoded"] is False
    mctx = message["requestContext"]
    assert mctx["routeKey"] == "chat" and mctx["eventType"] == "MESSAGE"
    assert mctx["messageId"] and mctx["connectionId"] == ctx["connectionId"]
    assert mctx["connectedAt"] == ctx["connectedAt"]
    assert message["body"] == '{"action": "chat", "message": "Hello"}'
    assert "headers" not in message
    dctx = disconnect["requestContext"]
    assert dctx["routeKey"] == "$disconnect" and dctx["eventType"] == "DISCONNECT"
    assert dctx["disconnectStatusCode"] == 1000
    assert dctx["connectionId"] == ctx["connectionId"]


async def test_function_failure_and_timeout_frames(
    build: Build, session: aiohttp.ClientSession
) -> None:
    gateway, _, _ = await build(
        f'boom: {{integration: {{type: function, handler: "{HERE}:explode"}}}}\n'
        f'slow: {{integration: {{type: function, handler: "{HERE}:slow", timeout_ms: 200}}}}\n'
    )
    async with session.ws_connect(gateway.url + "/") as ws:
        await ws.send_str('{"action": "boom"}')
        frame = await receive_json(ws)
        assert frame["message"] == "Internal server error" and frame["connectionId"]
        await ws.send_str('{"action": "slow"}')
        assert (await receive_json(ws))["message"] == "Endpoint request timed out"


async def test_connections_api(build: Build, session: aiohttp.ClientSession) -> None:
    gateway, _, registry = await build(CHAT_ROUTES)
    app = web.Application()
    app.router.add_route("*", "/@connections/{connection_id}", registry.handle_admin)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    admin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        ws = await session.ws_connect(
            gateway.url + "/?name=dave", headers={"User-Agent": "ua/2"}, autoclose=False
        )
        await _wait_for(lambda: len(registry) == 1)
        (connection_id,) = registry.ids()
        # A backend pushes over HTTP, as with AWS's post_to_connection.
        async with session.post(f"{admin}/@connections/{connection_id}", data=b"pushed") as r:
            assert r.status == 200
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.TEXT and msg.data == "pushed"
        async with session.post(f"{admin}/@connections/{connection_id}", data=b"\xff\x00") as r:
            assert r.status == 200
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.BINARY and msg.data == b"\xff\x00"
        async with session.get(f"{admin}/@connections/{connection_id}") as r:
            assert r.status == 200
            described = await r.json()
        assert described["identity"] == {"sourceIp": "127.0.0.1", "userAgent": "ua/2"}
        assert described["connectedAt"].endswith("Z") and described["lastActiveAt"]
        too_big = b"x" * (128 * 1024 + 1)
        async with session.post(f"{admin}/@connections/{connection_id}", data=too_big) as r:
            assert r.status == 413
        async with session.delete(f"{admin}/@connections/{connection_id}") as r:
            assert r.status == 204
        assert await close_frame_code(ws) == 1000
        await _wait_for(lambda: len(registry) == 0)
        for method in ("POST", "GET", "DELETE"):
            async with session.request(method, f"{admin}/@connections/{connection_id}") as r:
                assert r.status == 410
                assert r.headers["x-amzn-ErrorType"] == "GoneException"
        async with session.get(f"{admin}/@connections/nosuchconnection") as r:
            assert r.status == 410
        assert registry.send("nosuchconnection", b"x") is False
    finally:
        await runner.cleanup()


async def test_admin_token(build: Build, session: aiohttp.ClientSession) -> None:
    _, _, registry = await build(CHAT_ROUTES)
    registry.admin_token = "s3cret"
    app = web.Application()
    app.router.add_route("*", "/@connections/{connection_id}", registry.handle_admin)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    admin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with session.get(f"{admin}/@connections/abc") as r:
            assert r.status == 401
        auth = {"Authorization": "Bearer s3cret"}
        async with session.get(f"{admin}/@connections/abc", headers=auth) as r:
            assert r.status == 410
    finally:
        await runner.cleanup()


async def test_idle_timeout(build: Build, session: aiohttp.ClientSession) -> None:
    gateway, _, registry = await build(
        CHAT_ROUTES, extra="websocket: {idle_timeout_s: 0.4, max_duration_s: 60}\n"
    )
    async with session.ws_connect(gateway.url + "/?name=idle", autoping=True) as ws:
        # Activity postpones the timeout.
        for _ in range(3):
            await asyncio.sleep(0.2)
            await ws.send_str('{"action": "echo", "message": "still here"}')
            assert await receive_json(ws) == {"echo": "still here"}
        assert await until_closed(ws) == 1001
    await _wait_for(lambda: len(registry) == 0)


async def test_max_duration(build: Build, session: aiohttp.ClientSession) -> None:
    gateway, _, _ = await build(
        CHAT_ROUTES, extra="websocket: {idle_timeout_s: 60, max_duration_s: 0.6}\n"
    )
    async with session.ws_connect(gateway.url + "/?name=busy") as ws:

        async def keep_busy() -> None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                while not ws.closed:
                    await ws.send_str('{"action": "echo", "message": 1}')
                    await asyncio.sleep(0.05)

        busy = asyncio.create_task(keep_busy())
        # Echo answers arrive until the maximum duration closes the connection, busy or not.
        assert await until_closed(ws) == 1001
        busy.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await busy


async def test_oversize_message_closes_1009(build: Build, session: aiohttp.ClientSession) -> None:
    gateway, _, registry = await build(CHAT_ROUTES, extra="websocket: {max_message_bytes: 1024}\n")
    async with session.ws_connect(gateway.url + "/?name=big") as ws:
        await ws.send_str(json.dumps({"action": "echo", "message": "x" * 900}))
        assert await receive_json(ws) == {"echo": "x" * 900}
        await ws.send_str(json.dumps({"action": "echo", "message": "x" * 2000}))
        assert await until_closed(ws) == 1009
    await _wait_for(lambda: len(registry) == 0)


async def test_per_connection_throttle(build: Build, session: aiohttp.ClientSession) -> None:
    gateway, _, _ = await build(
        'echo: {integration: {type: function, handler: "chat:echo"}, route_response: true,\n'
        "       throttle: {rate: 0, burst: 2}}\n"
        '$default: {integration: {type: mock, body: "default"}, route_response: true}\n'
    )
    first = await session.ws_connect(gateway.url + "/")
    second = await session.ws_connect(gateway.url + "/")
    for _ in range(2):
        await first.send_str('{"action": "echo", "message": "a"}')
        assert await receive_json(first) == {"echo": "a"}
    await first.send_str('{"action": "echo", "message": "a"}')
    frame = await receive_json(first)
    assert frame["message"] == "Too Many Requests" and frame["requestId"]
    # Other routes and other connections have their own buckets.
    await first.send_str("x")
    assert (await first.receive(timeout=10)).data == "default"
    await second.send_str('{"action": "echo", "message": "b"}')
    assert await receive_json(second) == {"echo": "b"}
    await first.close()
    await second.close()


async def test_http_proxy_routes(
    build: Build, session: aiohttp.ClientSession, start_upstream: StartUpstream
) -> None:
    seen: list[dict[str, Any]] = []

    async def backend(request: web.BaseRequest, upstream: Upstream) -> web.StreamResponse:
        body = await request.read()
        seen.append(
            {
                "path": request.path,
                "headers": dict(request.headers),
                "body": body,
                "query": request.query_string,
            }
        )
        if request.path == "/connect":
            ok = request.query.get("ticket") == "yes"
            return web.Response(status=200 if ok else 403)
        return web.Response(body=b"upstream says: " + body)

    upstream = await start_upstream(backend)
    gateway, _, _ = await build(
        f'$connect: {{integration: {{type: http_proxy, uri: "{upstream.url}/connect"}}}}\n'
        f'say: {{integration: {{type: http_proxy, uri: "{upstream.url}/say"}}, '
        "route_response: true}\n"
        f'$default: {{integration: {{type: http_proxy, uri: "{upstream.url}/quiet"}}}}\n'
    )
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(gateway.url + "/?ticket=no")
    assert refused.value.status == 403
    async with session.ws_connect(gateway.url + "/?ticket=yes") as ws:
        await ws.send_str('{"action": "say", "text": "hi"}')
        msg = await ws.receive(timeout=10)
        assert msg.data == 'upstream says: {"action": "say", "text": "hi"}'
        await ws.send_str("one-way")
        await _wait_for(lambda: len(seen) == 4)
        # One-way: nothing comes back; the next two-way answer is the next frame.
        await ws.send_str('{"action": "say", "text": "again"}')
        msg = await ws.receive(timeout=10)
        assert msg.data.endswith('"again"}')
    connect = seen[1]
    assert connect["path"] == "/connect" and connect["query"] == "ticket=yes"
    connection_id = connect["headers"]["connectionId"]
    assert connect["headers"]["x-pygw-event-type"] == "CONNECT"
    say = seen[2]
    assert say["headers"]["connectionId"] == connection_id
    assert say["headers"]["x-pygw-route-key"] == "say"
    assert say["body"] == b'{"action": "say", "text": "hi"}'
    assert seen[3]["path"] == "/quiet" and seen[3]["body"] == b"one-way"


async def test_upstream_down_answers_error_frame(
    build: Build, session: aiohttp.ClientSession
) -> None:
    gateway, _, _ = await build(
        '$default: {integration: {type: http_proxy, uri: "http://127.0.0.1:9/x"}, '
        "route_response: true}\n"
    )
    async with session.ws_connect(gateway.url + "/") as ws:
        await ws.send_str("hello")
        assert (await receive_json(ws))["message"] == "Internal server error"


async def test_bad_config_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            apis:
              - name: chat
                type: websocket
                routes:
                  $default: {integration: {type: function, handler: "no_such_module:fn"}}
            """
        )
    )
    loaded = load_config(config)
    with pytest.raises(ValueError, match=r"\$default.*no_such_module"):
        build_websocket_api(loaded.config.apis[0], "$default", loaded, ConnectionRegistry())


async def test_thousand_connections(build: Build, session: aiohttp.ClientSession) -> None:
    gateway, _, registry = await build(
        'echo: {integration: {type: mock, body: "pong"}, route_response: true}\n'
    )
    count = 1000
    before = _rss_kib()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as many:
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        for start in range(0, count, 100):
            sockets += await asyncio.gather(
                *(many.ws_connect(gateway.url + "/") for _ in range(start, start + 100))
            )
        await _wait_for(lambda: len(registry) == count)
        during = _rss_kib()

        async def roundtrip(ws: aiohttp.ClientWebSocketResponse) -> str:
            await ws.send_str('{"action": "echo"}')
            msg = await ws.receive(timeout=20)
            return str(msg.data)

        answers = await asyncio.gather(*(roundtrip(ws) for ws in sockets))
        assert answers == ["pong"] * count
        await asyncio.gather(*(ws.close() for ws in sockets))
    await _wait_for(lambda: len(registry) == 0)
    # Client and server share this process: the growth covers both ends of 1 000 connections.
    grown_mib = (during - before) / 1024
    print(f"1000 connections: RSS grew {grown_mib:.1f} MiB (client and server)")
    assert grown_mib < 200


def authorize(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    token = (event.get("headers") or {}).get("authorization", "")
    return {"isAuthorized": token == "Bearer good", "context": {"user": "zoe"}}


async def test_connect_authorizer(build: Build, session: aiohttp.ClientSession) -> None:
    gateway, _, _ = await build(
        f'$connect: {{integration: {{type: function, handler: "{HERE}:record"}}, '
        "authorizer: gate}\n"
        f'$default: {{integration: {{type: function, handler: "{HERE}:record"}}}}\n',
        extra=(
            f'authorizers: {{gate: {{type: custom, handler: "{HERE}:authorize", '
            "simple_responses: true}}\n"
        ),
    )
    with pytest.raises(aiohttp.WSServerHandshakeError) as missing:
        await session.ws_connect(gateway.url + "/")
    assert missing.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as denied:
        await session.ws_connect(gateway.url + "/", headers={"Authorization": "Bearer bad"})
    assert denied.value.status == 403
    async with session.ws_connect(
        gateway.url + "/", headers={"Authorization": "Bearer good"}
    ) as ws:
        await ws.send_str("hello")
        await _wait_for(lambda: len(EVENTS) == 2)
    for event in EVENTS:
        assert event["requestContext"]["authorizer"]["user"] == "zoe"
