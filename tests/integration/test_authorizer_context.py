"""A Lambda authorizer's context as backends see it behind the running gateway, compared with what
AWS documents: REST-style (1.0) events and mapping templates get every context value as a string
(``true`` -> ``"true"``, ``3`` -> ``"3"``) beside ``principalId`` and a numeric
``integrationLatency``; HTTP APIs' 2.0 ``authorizer.lambda`` keeps the types; a WebSocket API's
``$connect`` authorizer is told the ``connectionId`` the integration then sees.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from pygw.server import Gateway

AUTHZ = """
import json
from pathlib import Path

CONTEXT = {"isAdmin": True, "level": 3, "ratio": 0.5, "name": "zoe"}


def policy(event, context):
    if event.get("requestContext", {}).get("eventType") == "CONNECT":
        Path(__file__).with_name("authorizer-event.json").write_text(json.dumps(event))
    return {
        "principalId": "zoe",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": event["methodArn"]}
            ],
        },
        "context": CONTEXT,
    }


def simple(event):
    return {"isAuthorized": True, "context": {**CONTEXT, "tags": ["a", "b"]}}
"""

ECHO = """
import json
from pathlib import Path


def handler(event, context):
    if event["requestContext"].get("eventType") == "CONNECT":
        Path(__file__).with_name("connect-event.json").write_text(json.dumps(event))
    return {"statusCode": 200, "body": json.dumps(event)}
"""

REST = """
apis:
  - name: shop
    type: rest
    authorizers:
      gate: {type: custom, kind: TOKEN, handler: "authz:policy", ttl_s: 0}
      cached: {type: custom, kind: TOKEN, handler: "authz:policy", ttl_s: 300}
    routes:
      "GET /me": {integration: {type: function, handler: "echo:handler"}, authorizer: gate}
      "GET /again": {integration: {type: function, handler: "echo:handler"}, authorizer: cached}
      "GET /greeting":
        integration: {type: mock, status: 200}
        authorizer: gate
        templates:
          response:
            application/json: >-
              {"admin": "$context.authorizer.isAdmin", "level": "$context.authorizer.level",
               "branch": "#if($context.authorizer.isAdmin == 'true')admin#{else}user#end"}
"""

HTTP = """
apis:
  - name: shop
    type: http
    authorizers:
      gate: {type: custom, handler: "authz:simple", simple_responses: true, ttl_s: 0}
    routes:
      "GET /me": {integration: {type: function, handler: "echo:handler"}, authorizer: gate}
"""

WEBSOCKET = """
apis:
  - name: chat
    type: websocket
    authorizers:
      gate: {type: custom, handler: "authz:policy", payload_format: "1.0", ttl_s: 0,
             identity_source: [header.authorization]}
    routes:
      $connect: {integration: {type: function, handler: "echo:handler"}, authorizer: gate}
      $default: {integration: {type: function, handler: "echo:handler"}}
"""

Start = Callable[[str], Awaitable[str]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    (tmp_path / "authz.py").write_text(AUTHZ)
    (tmp_path / "echo.py").write_text(ECHO)
    gateways: list[Gateway] = []

    async def run(apis: str) -> str:
        config = tmp_path / f"gateway-{len(gateways)}.yaml"
        head = (
            'server: {listen: "127.0.0.1:0"}\nadmin: {listen: "127.0.0.1:0"}\n'
            'access_log: null\npython_path: ["."]\n'
        )
        config.write_text(head + textwrap.dedent(apis))
        gateway = Gateway(config)
        await gateway.start()
        gateways.append(gateway)
        return f"http://127.0.0.1:{gateway.bound[1]}"

    try:
        yield run
    finally:
        for gateway in gateways:
            await gateway.drain()


async def get(url: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as client,
        client.get(url, headers={"Authorization": "token-1"}) as response,
    ):
        return response.status, orjson.loads(await response.read())


async def test_rest_events_get_the_context_stringified(start: Start) -> None:
    base = await start(REST)
    status, event = await get(base + "/me")
    assert status == 200
    found = event["requestContext"]["authorizer"]
    latency = found.pop("integrationLatency")
    assert isinstance(latency, int) and latency >= 0
    assert found == {
        "isAdmin": "true",
        "level": "3",
        "ratio": "0.5",
        "name": "zoe",
        "principalId": "zoe",
    }
    # A cached answer too: still strings, and the authorizer took no time.
    await get(base + "/again")
    status, event = await get(base + "/again")
    cached = event["requestContext"]["authorizer"]
    assert (cached["isAdmin"], cached["level"], cached["integrationLatency"]) == ("true", "3", 0)


async def test_templates_see_the_same_strings(start: Start) -> None:
    base = await start(REST)
    status, body = await get(base + "/greeting")
    assert status == 200
    # `isAdmin == 'true'` takes the branch it takes behind AWS.
    assert body == {"admin": "true", "level": "3", "branch": "admin"}


async def test_http_api_events_keep_the_types(start: Start) -> None:
    base = await start(HTTP)
    status, event = await get(base + "/me")
    assert status == 200
    assert event["requestContext"]["authorizer"] == {
        "lambda": {"isAdmin": True, "level": 3, "ratio": 0.5, "name": "zoe", "tags": ["a", "b"]}
    }


async def test_websocket_connect_authorizer_names_the_connection(
    start: Start, tmp_path: Path
) -> None:
    base = await start(WEBSOCKET)
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(base + "/", headers={"Authorization": "token-1"}) as ws,
    ):
        # The handshake completes after the authorizer and the $connect integration ran.
        assert not ws.closed
    authorizer_event = json.loads((tmp_path / "authorizer-event.json").read_text())
    connect_event = json.loads((tmp_path / "connect-event.json").read_text())
    assert authorizer_event["type"] == "REQUEST"
    assert authorizer_event["methodArn"].endswith("/$default/$connect")
    context = authorizer_event["requestContext"]
    assert context["routeKey"] == "$connect" and context["eventType"] == "CONNECT"
    assert context["connectionId"] == connect_event["requestContext"]["connectionId"]
    assert context["connectedAt"] == connect_event["requestContext"]["connectedAt"]
    assert authorizer_event["headers"]["Authorization"] == "token-1"
    # The integration sees the context as REST APIs pass it on.
    found = connect_event["requestContext"]["authorizer"]
    assert (found["isAdmin"], found["level"], found["principalId"]) == ("true", "3", "zoe")
    assert isinstance(found["integrationLatency"], int)
