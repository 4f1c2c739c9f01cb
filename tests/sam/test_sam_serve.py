"""`pygw serve --sam TEMPLATE` as a user runs it: templates in tests/sam/ served by a child process.

hello_world, http_jwt and rest_auth have the shapes of SAM's own examples (the `sam init` Python
hello world; an HTTP API with a JWT authorizer and CORS; a REST API with a Lambda TOKEN
authorizer, CORS, an API key and usage plan, throttling and caching); mapping touches each
construct the importer maps, including a Node function run out of process through the test's
Invoke API server (tests/lambda_runtime/invoke_api.py).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.e2e.gateway_process import GatewayProcess
from tests.lambda_runtime.invoke_api import HERE as RUNTIME
from tests.lambda_runtime.invoke_api import InvokeApiServer, node_function
from tests.ws_client import receive_json

SAM = Path(__file__).resolve().parent


class SamGateway(GatewayProcess):
    def __init__(self, template: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        super().__init__(template, env=env)
        self.extra = list(extra)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pygw",
            "serve",
            "--sam",
            str(self.config),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            *self.extra,
        ]


async def _started(template: Path, *extra: str, env: dict[str, str] | None = None) -> SamGateway:
    process = SamGateway(template, *extra, env=env)
    await asyncio.to_thread(process.start)
    return process


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=20)
    ) as client:
        yield client


async def test_hello_world_template(session: aiohttp.ClientSession) -> None:
    gateway = await _started(SAM / "hello_world" / "template.yaml")
    try:
        # Served where the template's Outputs say: the implicit API's Prod stage.
        async with session.get(f"{gateway.url}/Prod/hello") as answer:
            assert answer.status == 200
            assert await answer.json() == {"message": "hello world"}
        async with session.post(f"{gateway.url}/Prod/hello") as answer:
            assert answer.status == 403  # REST-style: no such method
        async with session.get(f"{gateway.url}/hello") as answer:
            assert answer.status == 404  # not under the stage: no API serves it
    finally:
        gateway.stop()


# ------------------------------------------------------------------------------ HTTP API, JWT


@pytest.fixture
async def idp() -> AsyncIterator[tuple[str, rsa.RSAPrivateKey]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "alg": "RS256"}

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response({"keys": [jwk]})

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", key
    await runner.cleanup()


async def test_http_api_with_jwt_authorizer_and_cors(
    session: aiohttp.ClientSession, idp: tuple[str, rsa.RSAPrivateKey]
) -> None:
    issuer, key = idp
    gateway = await _started(
        SAM / "http_jwt" / "template.yaml", "--parameter-overrides", f"Issuer={issuer}"
    )
    now = int(time.time())
    good = jwt.encode(
        {"iss": issuer, "aud": "shop", "sub": "ada", "exp": now + 300},
        key,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    wrong_audience = jwt.encode(
        {"iss": issuer, "aud": "other", "sub": "ada", "exp": now + 300},
        key,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    try:
        # Auth: NONE on the event opts out of the default authorizer.
        async with session.get(f"{gateway.url}/public") as answer:
            assert answer.status == 200
            assert await answer.json() == {"message": "public", "routeKey": "GET /public"}
        async with session.get(f"{gateway.url}/me") as answer:
            assert answer.status == 401
        async with session.get(
            f"{gateway.url}/me", headers={"Authorization": f"Bearer {wrong_audience}"}
        ) as answer:
            assert answer.status == 401
        async with session.get(
            f"{gateway.url}/me", headers={"Authorization": f"Bearer {good}"}
        ) as answer:
            assert answer.status == 200
            assert await answer.json() == {"sub": "ada", "routeKey": "GET /me"}
        # The event without Path and Method is the API's $default route, behind the authorizer.
        async with session.delete(
            f"{gateway.url}/anything/else", headers={"Authorization": f"Bearer {good}"}
        ) as answer:
            assert answer.status == 200
            assert (await answer.json())["routeKey"] == "$default"
        # CORS from Globals.HttpApi.CorsConfiguration, the origin from a parameter's default.
        preflight = {
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        async with session.options(f"{gateway.url}/me", headers=preflight) as answer:
            assert answer.status == 204
            assert answer.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
            assert answer.headers["Access-Control-Max-Age"] == "600"
        async with session.get(
            f"{gateway.url}/public", headers={"Origin": "https://app.example.com"}
        ) as answer:
            assert answer.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        async with session.get(
            f"{gateway.url}/public", headers={"Origin": "https://evil.example"}
        ) as answer:
            assert "Access-Control-Allow-Origin" not in answer.headers
    finally:
        gateway.stop()


# ---------------------------------------------------------------------- REST API, authorizer


async def test_rest_api_with_token_authorizer_api_key_cors_and_cache(
    session: aiohttp.ClientSession,
) -> None:
    gateway = await _started(
        SAM / "rest_auth" / "template.yaml", env={"PYGW_API_KEY": "key-for-tests"}
    )
    allowed = {"Authorization": "Bearer let-me-in"}
    base = f"{gateway.url}/dev"
    try:
        async with session.get(f"{base}/items/7") as answer:
            assert answer.status == 401  # no token: the TOKEN authorizer's identity is missing
        async with session.get(f"{base}/items/7", headers={"Authorization": "Basic x"}) as answer:
            assert answer.status == 401  # ValidationExpression refuses before the function runs
        async with session.get(
            f"{base}/items/7", headers={"Authorization": "Bearer nope"}
        ) as answer:
            assert answer.status == 403  # the authorizer's Deny
        async with session.get(f"{base}/items/7", headers=allowed) as answer:
            assert answer.status == 200
            first = await answer.json()
        assert first["id"] == "7"
        assert first["resource"] == "/items/{id}"
        assert first["stage"] == "dev"
        assert first["table"] == "items-dev"  # stage variable from !Sub
        assert first["principal"] == "user-1"
        assert first["greeting"] == "hello from dev"  # Globals env through !FindInMap
        assert first["memory"] == 256
        assert first["function"] == "ItemsFunction"
        # MethodSettings cache GET /items/{id} for 60 s: the second answer is the first one.
        async with session.get(f"{base}/items/7", headers=allowed) as answer:
            assert (await answer.json())["call"] == first["call"]
        # /health opts out of the authorizer and is not cached.
        async with session.get(f"{base}/health") as answer:
            assert answer.status == 200
            health = await answer.json()
        async with session.get(f"{base}/health") as answer:
            assert (await answer.json())["call"] > health["call"]
        # ApiKeyRequired: the key from PYGW_API_KEY, in x-api-key.
        async with session.post(f"{base}/admin", headers=allowed) as answer:
            assert answer.status == 403
        async with session.post(
            f"{base}/admin", headers={**allowed, "x-api-key": "key-for-tests"}
        ) as answer:
            assert answer.status == 200
        # Cors with AWS's quoted values.
        preflight = {
            "Origin": "https://shop.example.com",
            "Access-Control-Request-Method": "GET",
        }
        async with session.options(f"{base}/items/7", headers=preflight) as answer:
            assert answer.status in (200, 204)
            assert answer.headers["Access-Control-Allow-Origin"] == "https://shop.example.com"
            assert answer.headers["Access-Control-Max-Age"] == "300"
    finally:
        gateway.stop()


async def test_rest_api_parameter_override_changes_stage_and_mapping(
    session: aiohttp.ClientSession,
) -> None:
    gateway = await _started(
        SAM / "rest_auth" / "template.yaml",
        "--parameter-overrides",
        "StageName=prod",
        env={"PYGW_API_KEY": "k"},
    )
    try:
        async with session.get(
            f"{gateway.url}/prod/items/1", headers={"Authorization": "Bearer let-me-in"}
        ) as answer:
            assert answer.status == 200
            got = await answer.json()
        assert got["greeting"] == "hello from prod"
        assert got["table"] == "items-prod"
    finally:
        gateway.stop()


# ------------------------------------------------------------------- the mapping template


@pytest.fixture
async def invoke_api() -> AsyncIterator[InvokeApiServer]:
    server = InvokeApiServer({"NodeFunction": node_function(RUNTIME / "hello.js")})
    await server.start()
    yield server
    await server.stop()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (nodejs)")
async def test_mapping_template_served(
    session: aiohttp.ClientSession, invoke_api: InvokeApiServer, tmp_path: Path
) -> None:
    env_file = tmp_path / "env.json"
    env_file.write_text(
        json.dumps({"EchoFunction": {"FROM_FILE": "file-value"}, "Parameters": {"X": "1"}})
    )
    gateway = await _started(
        SAM / "mapping" / "template.yaml",
        "--lambda-endpoint",
        invoke_api.url,
        "--env-vars",
        str(env_file),
    )
    try:
        # Said at start: which function runs out of process, and where.
        assert f"function NodeFunction runs out of process, invoked at {invoke_api.url}" in (
            gateway.text()
        )
        # HttpApi stage from !If (dev: test), variables from !Select/!Split/!Join.
        async with session.post(f"{gateway.url}/test/echo/ada") as answer:
            assert answer.status == 200
            got = await answer.json()
        assert got["version"] == "1.0"  # the event's PayloadFormatVersion
        assert got["stage"] == "test"
        assert got["stageVariables"] == {"zone": "b", "team": "team", "joined": "dev-c"}
        assert got["env"] == "dev"
        assert got["memory"] == 512
        assert got["function"] == "EchoFunction"
        # The Lambda REQUEST authorizer of the template (simple responses).
        async with session.get(f"{gateway.url}/test/guarded") as answer:
            assert answer.status == 401
        async with session.get(
            f"{gateway.url}/test/guarded", headers={"x-secret": "wrong"}
        ) as answer:
            assert answer.status == 403
        async with session.get(
            f"{gateway.url}/test/guarded", headers={"x-secret": "open sesame"}
        ) as answer:
            assert answer.status == 200
        # The function's Timeout (1 s) bounds the wait: HTTP-style timeout answer, 503.
        async with session.get(f"{gateway.url}/test/slow") as answer:
            assert answer.status == 503
            assert await answer.json() == {"message": "Service Unavailable"}
        # The Node function, through the Invoke API.
        async with session.get(f"{gateway.url}/test/node") as answer:
            assert answer.status == 200
            got = await answer.json()
        assert got["functionName"] == "NodeFunction"
        assert got["routeKey"] == "GET /node"
        # A function under a false Condition is not served.
        async with session.get(f"{gateway.url}/test/prod-only") as answer:
            assert answer.status == 404
        # The implicit REST API and the DefinitionBody API, each under its own stage.
        async with session.get(f"{gateway.url}/Prod/echo/a/b") as answer:
            assert answer.status == 200
            assert (await answer.json())["fromFile"] == "file-value"
        async with session.get(f"{gateway.url}/v1/defined") as answer:
            assert answer.status == 200
            assert (await answer.json())["stage"] == "v1"
        async with session.get(f"{gateway.url}/v1/static") as answer:
            assert answer.status == 200
            assert await answer.json() == {"static": True}
    finally:
        gateway.stop()


# ------------------------------------------------------------------------------------ --watch


async def _eventually(
    session: aiohttp.ClientSession, url: str, expected: int, text: str | None = None
) -> str:
    """Polls until the gateway answers `expected` (and `text`, when given); the reload is
    asynchronous, so the test waits for it rather than for a fixed time."""
    body = ""
    for _ in range(200):
        async with session.get(url) as answer:
            body = await answer.text()
            if answer.status == expected and (text is None or text in body):
                return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered {expected} {text or ''}; last: {body}")


async def test_watch_reloads_handler_code_and_template(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    project = tmp_path / "sam-app"
    shutil.copytree(SAM / "hello_world", project)
    template = project / "template.yaml"
    app = project / "hello_world" / "app.py"
    gateway = await _started(template, "--watch")
    try:
        await _eventually(session, f"{gateway.url}/Prod/hello", 200, "hello world")
        # The handler's code changes: the next snapshot imports it afresh.
        app.write_text(
            "import json\n\ndef lambda_handler(event, context):\n"
            "    return {'statusCode': 200, 'body': json.dumps({'message': 'hello again'})}\n"
        )
        await _eventually(session, f"{gateway.url}/Prod/hello", 200, "hello again")
        # The template changes: a new event is served.
        text = template.read_text()
        template.write_text(
            text.replace(
                "            Method: get\n",
                "            Method: get\n        Bye:\n          Type: Api\n"
                "          Properties:\n            Path: /bye\n            Method: get\n",
                1,
            )
        )
        await _eventually(session, f"{gateway.url}/Prod/bye", 200, "hello again")
        # A broken template is refused; the previous snapshot keeps serving.
        template.write_text("Resources: [unclosed\n")
        for _ in range(200):
            if "reload refused" in gateway.text():
                break
            await asyncio.sleep(0.05)
        assert "reload refused" in gateway.text()
        async with session.get(f"{gateway.url}/Prod/bye") as answer:
            assert answer.status == 200
    finally:
        gateway.stop()


# ------------------------------------------------------- plain API Gateway resources (CDK)


async def test_cdk_shaped_template_http_rest_and_websocket(
    session: aiohttp.ClientSession,
) -> None:
    gateway = await _started(SAM / "cdk" / "template.json")
    try:
        # Nothing to say: every resource is mapped or configures AWS itself.
        assert "WARNING" not in gateway.text()
        # AWS::ApiGatewayV2 HTTP API: a route to a Lambda function from CDK's asset folder.
        async with session.get(f"{gateway.url}/items/9") as answer:
            assert answer.status == 200
            assert await answer.json() == {
                "routeKey": "GET /items/{id}",
                "resource": None,
                "id": "9",
                "function": "ItemsFn",
            }
        # ... and one behind its REQUEST authorizer (simple responses).
        async with session.post(f"{gateway.url}/items", headers={"x-token": "no"}) as answer:
            assert answer.status == 403
        async with session.post(f"{gateway.url}/items", headers={"x-token": "ok"}) as answer:
            assert answer.status == 200
        # AWS::ApiGateway REST API: resource tree, AWS_PROXY method, MOCK preflight, stage prod.
        async with session.get(f"{gateway.url}/prod/items/4") as answer:
            assert answer.status == 200
            got = await answer.json()
            assert got["resource"] == "/items/{id}" and got["id"] == "4"
        async with session.options(f"{gateway.url}/prod/items") as answer:
            assert answer.status == 204
            assert answer.headers["Access-Control-Allow-Methods"] == "GET,OPTIONS"
        # AWS::ApiGatewayV2 WebSocket API on stage production, routed by $request.body.action.
        async with session.ws_connect(f"{gateway.url}/production") as ws:
            await ws.send_json({"action": "echo", "text": "hi"})
            assert await receive_json(ws) == {"route": "echo", "echo": "hi"}
    finally:
        gateway.stop()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (nodejs)")
async def test_node_authorizer_of_the_template_runs_out_of_process(
    session: aiohttp.ClientSession,
) -> None:
    server = InvokeApiServer({"NodeAuthFunction": node_function(RUNTIME / "authorizer.js")})
    await server.start()
    gateway = await _started(SAM / "node_auth" / "template.yaml", "--lambda-endpoint", server.url)
    try:
        url = f"{gateway.url}/v1/who"
        async with session.get(url) as answer:
            assert answer.status == 401  # no token
        async with session.get(url, headers={"Authorization": "unauthorized"}) as answer:
            assert answer.status == 401  # the function raised Unauthorized
        async with session.get(url, headers={"Authorization": "nope"}) as answer:
            assert answer.status == 403  # its policy denies
        async with session.get(url, headers={"Authorization": "allow"}) as answer:
            assert answer.status == 200
            assert await answer.json() == {"principal": "node-user", "via": "node"}
        assert [name for name, _ in server.invocations] == ["NodeAuthFunction"] * 3
    finally:
        gateway.stop()
        await server.stop()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (nodejs)")
async def test_websocket_api_with_a_node_function(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    invocation = {
        "Fn::Sub": "arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31"
        "/functions/${WsNode.Arn}/invocations"
    }
    target = {"Fn::Join": ["", ["integrations/", {"Ref": "Integration"}]]}
    template = {
        "Resources": {
            "WsNode": {
                "Type": "AWS::Lambda::Function",
                "Properties": {"Runtime": "nodejs20.x", "Handler": "ws_echo.handler"},
            },
            "Ws": {
                "Type": "AWS::ApiGatewayV2::Api",
                "Properties": {
                    "ProtocolType": "WEBSOCKET",
                    "RouteSelectionExpression": "$request.body.action",
                },
            },
            "Integration": {
                "Type": "AWS::ApiGatewayV2::Integration",
                "Properties": {
                    "ApiId": {"Ref": "Ws"},
                    "IntegrationType": "AWS_PROXY",
                    "IntegrationUri": invocation,
                },
            },
            "Connect": {
                "Type": "AWS::ApiGatewayV2::Route",
                "Properties": {"ApiId": {"Ref": "Ws"}, "RouteKey": "$connect", "Target": target},
            },
            "Say": {
                "Type": "AWS::ApiGatewayV2::Route",
                "Properties": {
                    "ApiId": {"Ref": "Ws"},
                    "RouteKey": "say",
                    "RouteResponseSelectionExpression": "$default",
                    "Target": target,
                },
            },
            "Stage": {
                "Type": "AWS::ApiGatewayV2::Stage",
                "Properties": {"ApiId": {"Ref": "Ws"}, "StageName": "live"},
            },
        }
    }
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    server = InvokeApiServer({"WsNode": node_function(RUNTIME / "ws_echo.js")})
    await server.start()
    gateway = await _started(path, "--lambda-endpoint", server.url)
    try:
        async with session.ws_connect(f"{gateway.url}/live") as ws:
            await ws.send_json({"action": "say", "text": "hello"})
            assert await receive_json(ws) == {"route": "say", "echo": "hello", "runtime": "node"}
        assert [name for name, _ in server.invocations][:2] == ["WsNode", "WsNode"]
    finally:
        gateway.stop()
        await server.stop()
