"""The `function` integration over real HTTP: events, results, context, timeouts, failures.

Each test serves one FunctionIntegration behind a small aiohttp server that matches the route
with the native Router (as the dispatcher does) and answers GatewayErrors with the gateway's
error responses, then drives it with an aiohttp client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout
from yarl import URL

from pygw._native import Router
from pygw.context import RequestContext
from pygw.dispatch import error_response
from pygw.errors import GatewayError, Style
from pygw.integrations.function import (
    FunctionIntegration,
    LambdaContext,
    load_handler,
    shared_executor,
)
from pygw.integrations.lambda_events import jwt_claim_text, media_type_matches
from pygw.request import Request
from pygw.response import Response
from tests.front import FrontServer, serve_front

HANDLERS = Path(__file__).resolve().parent / "handlers"


def handler(name: str) -> Callable[..., Any]:
    return load_handler(f"lambda_echo:{name}", [HANDLERS])


Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[FrontServer] = []
    integrations: list[FunctionIntegration] = []

    async def start(
        fn: Callable[..., Any] | str,
        *,
        style: Style = Style.HTTP,
        payload_format: str | None = None,
        stage: str = "$default",
        route_key: str = "ANY /{proxy+}",
        timeout_ms: int = 5000,
        binary_media_types: tuple[str, ...] = (),
        stage_variables: dict[str, str] | None = None,
        authorizer: dict[str, Any] | None = None,
        function_name: str | None = None,
    ) -> str:
        callable_ = handler(fn) if isinstance(fn, str) else fn
        fmt = payload_format or ("1.0" if style is Style.REST else "2.0")
        integration = FunctionIntegration(
            callable_,
            payload_format=fmt,
            timeout_ms=timeout_ms,
            style=style,
            api_name="testapi",
            stage=stage,
            route_key=route_key,
            binary_media_types=binary_media_types,
            function_name=function_name,
        )
        integrations.append(integration)
        prefix = "" if stage == "$default" else f"/{stage}"
        router = Router([(None, prefix, route_key, 0)])
        counter = iter(range(1, 1_000_000))

        async def handle(request: Request) -> Response:
            request_id = f"req-{next(counter)}"
            found = router.lookup("", request.method, request.raw_path.partition("?")[0])
            assert found is not None, request.raw_path
            _, params, path = found
            header = "x-amzn-RequestId" if style is Style.REST else "apigw-requestid"
            ctx = RequestContext(
                request=request,
                request_id=request_id,
                path=path,
                params=dict(params),
                stage_variables=dict(stage_variables or {}),
                client_ip=request.client_ip,
                received_at=asyncio.get_running_loop().time(),
                response_headers={header: request_id, "x-request-id": request_id},
            )
            ctx.authorizer = authorizer
            try:
                return await integration(ctx)
            except GatewayError as failure:
                response = error_response(failure.error, style, request_id, failure.detail)
                ctx.apply_response_headers(response)
                return response

        front = await serve_front(handle)
        runners.append(front)
        return front.url

    yield start
    for runner in runners:
        await runner.cleanup()
    for integration in integrations:
        await integration.close()


@pytest.fixture
async def client() -> AsyncIterator[ClientSession]:
    async with ClientSession(timeout=ClientTimeout(total=20)) as session:
        yield session


def url(base: str, target: str) -> URL:
    return URL(base + target, encoded=True)


async def raw_request(
    base: str, target: str, headers: list[tuple[str, str]], method: str = "GET"
) -> tuple[int, bytes]:
    """One request over a plain socket: the aiohttp client merges repeated header names."""
    host, _, port = URL(base).raw_authority.partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def event_of(client: ClientSession, base: str, target: str, **kwargs: Any) -> Any:
    method = kwargs.pop("method", "GET")
    async with client.request(method, url(base, target), **kwargs) as resp:
        assert resp.status == 200, await resp.text()
        return json.loads(await resp.text())


# ---------------------------------------------------------------------------------------------
# Loading handlers


def test_load_handler_finds_project_local_modules() -> None:
    found = load_handler("lambda_echo:echo_event", [HANDLERS])
    assert found.__name__ == "echo_event"
    assert load_handler("lambda_echo:Handlers.greet", [HANDLERS])({}, None) == "hello"


def test_load_handler_names_a_missing_module(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"module 'no_such_module_here' not found"):
        load_handler("no_such_module_here:handler", [tmp_path])


def test_load_handler_names_a_missing_attribute() -> None:
    with pytest.raises(ValueError, match=r"has no attribute 'nope'"):
        load_handler("lambda_echo:nope", [HANDLERS])
    with pytest.raises(ValueError, match=r"'not_callable' .* is not callable"):
        load_handler("lambda_echo:not_callable", [HANDLERS])


def test_load_handler_reports_an_import_failure() -> None:
    with pytest.raises(ValueError, match=r"importing module 'broken_module' failed"):
        load_handler("broken_module:handler", [HANDLERS])


def test_load_handler_searches_folders_in_order(tmp_path: Path) -> None:
    first = tmp_path / "first"
    second = tmp_path / "second"
    for folder, answer in ((first, "first"), (second, "second")):
        folder.mkdir()
        (folder / "pygw_order_probe.py").write_text(f"def handler(e, c):\n    return {answer!r}\n")
    found = load_handler("pygw_order_probe:handler", [first, second])
    assert found({}, None) == "first"


def test_shared_executor_is_created_once() -> None:
    assert shared_executor() is shared_executor()


# ---------------------------------------------------------------------------------------------
# Payload format 1.0


async def test_rest_v1_event_shape(serve: Serve, client: ClientSession) -> None:
    base = await serve(
        "echo_event",
        style=Style.REST,
        stage="prod",
        route_key="GET /items/{id}",
        stage_variables={"color": "blue"},
    )
    status, body = await raw_request(
        base,
        "/prod/items/a%20b%2Fc/?q=1+2&q=3&e=&flag&sp=x%2By",
        [("tEsT-HEADeR", "one"), ("test-header", "two"), ("authorization", "tok")],
    )
    assert status == 200
    event = json.loads(body)
    assert "version" not in event
    assert event["resource"] == "/items/{id}"
    assert event["path"] == "/items/a%20b%2Fc/"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"id": "a%20b%2Fc"}
    assert event["stageVariables"] == {"color": "blue"}
    assert event["queryStringParameters"] == {"q": "3", "e": "", "flag": "", "sp": "x+y"}
    assert event["multiValueQueryStringParameters"] == {
        "q": ["1 2", "3"],
        "e": [""],
        "flag": [""],
        "sp": ["x+y"],
    }
    assert event["headers"]["tEsT-HEADeR"] == "two"
    assert event["multiValueHeaders"]["tEsT-HEADeR"] == ["one", "two"]
    assert event["headers"]["Authorization"] == "tok"
    assert event["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert event["headers"]["X-Forwarded-Proto"] == "http"
    assert event["headers"]["X-Amzn-Trace-Id"].startswith("Root=1-")
    assert event["body"] is None
    assert event["isBase64Encoded"] is False
    rc = event["requestContext"]
    assert rc["path"] == "/prod/items/a%20b%2Fc/"
    assert rc["resourcePath"] == "/items/{id}"
    assert rc["stage"] == "prod"
    assert rc["httpMethod"] == "GET"
    assert rc["protocol"] == "HTTP/1.1"
    assert rc["requestId"] == rc["extendedRequestId"] == "req-1"
    assert rc["identity"]["userAgent"] is None
    assert rc["identity"]["sourceIp"] == "127.0.0.1"
    assert rc["domainName"] == "127.0.0.1"
    assert len(rc["apiId"]) == 10
    assert isinstance(rc["requestTimeEpoch"], int)
    assert rc["requestTime"].endswith(" +0000")
    assert "authorizer" not in rc


async def test_v1_bodies_text_and_binary_media_types(serve: Serve, client: ClientSession) -> None:
    base = await serve("echo_event", style=Style.REST, binary_media_types=("image/*",))
    text = await event_of(
        client, base, "/x", method="POST", data=b'{"a": 1}', headers={"Content-Type": "text/json"}
    )
    assert text["body"] == '{"a": 1}'
    assert text["isBase64Encoded"] is False
    image = await event_of(
        client, base, "/x", method="POST", data=b"\x89PNG", headers={"Content-Type": "image/png"}
    )
    assert image["isBase64Encoded"] is True
    assert base64.b64decode(image["body"]) == b"\x89PNG"
    # Not a binary type, but not UTF-8 either: base64 rather than lost bytes.
    raw = await event_of(
        client, base, "/x", method="POST", data=b"\xff\xfe", headers={"Content-Type": "text/plain"}
    )
    assert raw["isBase64Encoded"] is True


async def test_http_style_v1_event(serve: Serve, client: ClientSession) -> None:
    base = await serve("echo_event", style=Style.HTTP, payload_format="1.0", stage="beta")
    event = await event_of(client, base, "/beta/a/b?x=1")
    assert event["version"] == "1.0"
    assert event["path"] == "/beta/a/b"
    assert event["pathParameters"] == {"proxy": "a/b"}
    assert event["stageVariables"] is None


# ---------------------------------------------------------------------------------------------
# Payload format 2.0


async def test_v2_event_shape(serve: Serve, client: ClientSession) -> None:
    base = await serve(
        "echo_event",
        stage="v1",
        route_key="GET /items/{id}",
        stage_variables={"color": "blue"},
    )
    status, body = await raw_request(
        base,
        "/v1/items/a%20b?q=1+2&q=3&e=x%26y",
        [("X-Multi", "one"), ("x-multi", "two"), ("Cookie", "a=1; b=2"), ("User-Agent", "agent/1")],
    )
    assert status == 200
    event = json.loads(body)
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /items/{id}"
    assert event["rawPath"] == "/v1/items/a b"
    assert event["rawQueryString"] == "q=1+2&q=3&e=x%26y"
    assert event["queryStringParameters"] == {"q": "1 2,3", "e": "x&y"}
    assert event["pathParameters"] == {"id": "a b"}
    assert event["stageVariables"] == {"color": "blue"}
    assert event["cookies"] == ["a=1", "b=2"]
    headers = event["headers"]
    assert all(name == name.lower() for name in headers)
    assert headers["x-multi"] == "one,two"
    assert "cookie" not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert "body" not in event
    assert event["isBase64Encoded"] is False
    rc = event["requestContext"]
    assert rc["http"] == {
        "method": "GET",
        "path": "/v1/items/a b",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "agent/1",
    }
    assert rc["routeKey"] == "GET /items/{id}"
    assert rc["stage"] == "v1"
    assert rc["requestId"] == "req-1"
    assert isinstance(rc["timeEpoch"], int)
    assert "authorizer" not in rc


async def test_v2_default_stage_leaves_out_empty_keys(serve: Serve, client: ClientSession) -> None:
    base = await serve("echo_event", route_key="$default")
    event = await event_of(client, base, "/anything/here")
    assert event["rawPath"] == "/anything/here"
    assert event["rawQueryString"] == ""
    assert event["routeKey"] == "$default"
    for absent in ("queryStringParameters", "pathParameters", "stageVariables", "cookies", "body"):
        assert absent not in event


@pytest.mark.parametrize(
    ("content_type", "text"),
    [
        ("application/json; charset=utf-8", True),
        ("text/csv", True),
        ("application/xml", True),
        ("application/javascript", True),
        ("application/x-www-form-urlencoded", False),
        ("application/octet-stream", False),
        ("application/vnd.api+json", False),
    ],
)
async def test_v2_body_encoding_by_content_type(
    serve: Serve, client: ClientSession, content_type: str, text: bool
) -> None:
    base = await serve("echo_event")
    event = await event_of(
        client, base, "/x", method="POST", data=b"a=1", headers={"Content-Type": content_type}
    )
    assert event["isBase64Encoded"] is (not text)
    assert (event["body"] if text else base64.b64decode(event["body"]).decode()) == "a=1"


# ---------------------------------------------------------------------------------------------
# Authorizer results


JWT: dict[str, Any] = {
    "jwt": {
        "claims": {"sub": "u1", "exp": 1700000000, "admin": True, "groups": ["a", "b"]},
        "scopes": ["items/read"],
    }
}
# What a custom authorizer leaves on the request: its context with the types it returned, its
# principalId and its run time.
CUSTOM = {
    "principalId": "user-7",
    "tenant": "acme",
    "tier": 2,
    "ratio": 0.5,
    "isAdmin": True,
    "integrationLatency": 3,
}


async def test_authorizer_in_v1_events(serve: Serve, client: ClientSession) -> None:
    base = await serve("echo_event", style=Style.REST, authorizer=JWT)
    jwt = (await event_of(client, base, "/x"))["requestContext"]["authorizer"]
    assert jwt == {
        "claims": {"sub": "u1", "exp": "1700000000", "admin": "true", "groups": "[a b]"},
        "scopes": ["items/read"],
    }
    base = await serve("echo_event", style=Style.REST, authorizer=CUSTOM)
    custom = (await event_of(client, base, "/x"))["requestContext"]["authorizer"]
    # AWS documents REST events' context values as strings ("1", "true"); the latency a number.
    assert custom == {
        "principalId": "user-7",
        "tenant": "acme",
        "tier": "2",
        "ratio": "0.5",
        "isAdmin": "true",
        "integrationLatency": 3,
    }


async def test_authorizer_in_v2_events(serve: Serve, client: ClientSession) -> None:
    base = await serve("echo_event", authorizer=JWT)
    jwt = (await event_of(client, base, "/x"))["requestContext"]["authorizer"]
    assert jwt == {
        "jwt": {
            "claims": {"sub": "u1", "exp": "1700000000", "admin": "true", "groups": "[a b]"},
            "scopes": ["items/read"],
        }
    }
    base = await serve("echo_event", authorizer=CUSTOM)
    custom = (await event_of(client, base, "/x"))["requestContext"]["authorizer"]
    # HTTP APIs keep the types; principalId and integrationLatency are not part of it.
    assert custom == {"lambda": {"tenant": "acme", "tier": 2, "ratio": 0.5, "isAdmin": True}}


def test_claim_rendering() -> None:
    assert jwt_claim_text(1.0) == "1"
    assert jwt_claim_text(1.5) == "1.5"
    assert jwt_claim_text({"k": "v"}) == '{"k":"v"}'


def test_media_type_matching() -> None:
    assert media_type_matches("image/png; q=1", ["image/*"])
    assert media_type_matches("anything/at-all", ["*/*"])
    assert media_type_matches("Application/PDF", ["application/pdf"])
    assert not media_type_matches("text/plain", ["image/*", "application/pdf"])
    assert not media_type_matches("", ["*/*"])


# ---------------------------------------------------------------------------------------------
# Context object, threads, timeouts, failures


async def test_context_object(serve: Serve, client: ClientSession) -> None:
    base = await serve("describe_context", timeout_ms=3000, function_name="shop-create")
    async with client.get(base + "/x") as resp:
        assert resp.status == 200
        seen = await resp.json()
        request_id = resp.headers["apigw-requestid"]
    assert seen["aws_request_id"] == request_id
    assert seen["function_name"] == "shop-create"
    assert seen["function_version"] == "$LATEST"
    assert seen["memory_limit_in_mb"] == 128
    assert seen["invoked_function_arn"].endswith(":function:shop-create")
    assert seen["log_group_name"] == "/aws/lambda/shop-create"
    assert "[$LATEST]" in seen["log_stream_name"]
    assert 0 < seen["remaining_ms"] <= 3000
    assert seen["thread"].startswith("pygw-function")


def test_context_remaining_time_never_negative() -> None:
    context = LambdaContext("id", "fn", 1, "stream")
    assert 0 <= context.get_remaining_time_in_millis() <= 1


async def test_async_handlers_run_on_the_loop(serve: Serve, client: ClientSession) -> None:
    for name in ("async_thread_name", "async_callable"):
        base = await serve(name)
        async with client.get(base + "/x") as resp:
            assert resp.status == 200
            assert await resp.text() == "MainThread"


@pytest.mark.parametrize("name", ["sleeps", "async_sleeps"])
@pytest.mark.parametrize(
    ("style", "status", "message"),
    [(Style.REST, 504, "Endpoint request timed out"), (Style.HTTP, 503, "Service Unavailable")],
)
async def test_timeout(
    serve: Serve, client: ClientSession, name: str, style: Style, status: int, message: str
) -> None:
    base = await serve(name, style=style, timeout_ms=100)
    async with client.get(base + "/x?s=0.6") as resp:
        assert resp.status == status
        assert await resp.json() == {"message": message}
        assert resp.headers["x-request-id"]


@pytest.mark.parametrize(
    ("style", "status", "message"),
    [(Style.REST, 502, "Internal server error"), (Style.HTTP, 500, "Internal Server Error")],
)
async def test_exception_is_logged_not_sent(
    serve: Serve,
    client: ClientSession,
    caplog: pytest.LogCaptureFixture,
    style: Style,
    status: int,
    message: str,
) -> None:
    base = await serve("fails", style=style)
    with caplog.at_level(logging.ERROR, logger="pygw.function"):
        async with client.get(base + "/x") as resp:
            assert resp.status == status
            body = await resp.text()
    assert json.loads(body) == {"message": message}
    assert "secret detail" not in body
    assert "secret detail that must stay in the log" in caplog.text
    assert "Traceback" in caplog.text
    if style is Style.REST:
        assert resp.headers["x-amzn-ErrorType"] == "InternalServerErrorException"


# ---------------------------------------------------------------------------------------------
# Results


async def call_with_result(
    client: ClientSession, base: str, result: Any, accept: str = "*/*"
) -> tuple[int, Any, bytes]:
    async with client.post(
        base + "/x",
        data=json.dumps(result),
        headers={"Content-Type": "text/plain", "Accept": accept},
    ) as resp:
        return resp.status, resp.headers, await resp.read()


async def test_v2_result_inference(serve: Serve, client: ClientSession) -> None:
    base = await serve("result_from_body")
    status, headers, body = await call_with_result(client, base, "just text")
    assert (status, body, headers["Content-Type"]) == (200, b"just text", "application/json")
    status, headers, body = await call_with_result(client, base, {"message": "hi"})
    assert (status, json.loads(body)) == (200, {"message": "hi"})
    status, _, body = await call_with_result(client, base, [1, 2])
    assert (status, json.loads(body)) == (200, [1, 2])
    status, _, body = await call_with_result(client, base, {})
    assert (status, body) == (200, b"{}")


async def test_v2_structured_result(serve: Serve, client: ClientSession) -> None:
    base = await serve("result_from_body")
    status, headers, body = await call_with_result(
        client,
        base,
        {
            "statusCode": 201,
            "headers": {"X-A": "1", "X-Flag": True, "Content-Length": "999"},
            "cookies": ["a=1; Path=/", "b=2"],
            "body": base64.b64encode(b"\x00\x01").decode(),
            "isBase64Encoded": True,
        },
    )
    assert status == 201
    assert body == b"\x00\x01"
    assert headers["X-A"] == "1"
    assert headers["X-Flag"] == "true"
    assert headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2"]
    assert headers["apigw-requestid"]
    status, headers, body = await call_with_result(client, base, {"statusCode": "204"})
    assert (status, body) == (204, b"")


@pytest.mark.parametrize(
    "result",
    [
        {"statusCode": "abc"},
        {"statusCode": 99},
        {"statusCode": True},
        {"statusCode": 200, "headers": ["x"]},
        {"statusCode": 200, "headers": {"x": {"nested": 1}}},
        {"statusCode": 200, "cookies": "a=1"},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 200, "body": "!!", "isBase64Encoded": True},
        {"statusCode": 200, "isBase64Encoded": "yes"},
    ],
)
async def test_v2_malformed_results(serve: Serve, client: ClientSession, result: Any) -> None:
    base = await serve("result_from_body")
    status, _, body = await call_with_result(client, base, result)
    assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})


@pytest.mark.parametrize(
    "result",
    [
        "justAString",
        {},
        [],
        {"statusCode": 200, "wrongValue": "value"},
        {"statusCode": 200, "multiValueHeaders": {"a": "not-a-list"}},
        {"statusCode": 200, "cookies": ["a=1"]},
        {"statusCode": 1000},
    ],
)
async def test_v1_malformed_results(serve: Serve, client: ClientSession, result: Any) -> None:
    base = await serve("result_from_body", style=Style.REST)
    status, headers, body = await call_with_result(client, base, result)
    assert (status, json.loads(body)) == (502, {"message": "Internal server error"})
    assert headers["x-amzn-RequestId"]


async def test_v1_headers_merge(serve: Serve, client: ClientSession) -> None:
    base = await serve("result_from_body", style=Style.REST)
    async with client.post(
        base + "/x",
        data=json.dumps(
            {
                "statusCode": 200,
                "multiValueHeaders": {"tesT-Multi": ["value-multi"]},
                "headers": {"test-multi": "value-solo", "b": False, "gone": None},
            }
        ),
    ) as resp:
        assert resp.status == 200
        names = [(k.decode(), v.decode()) for k, v in resp.raw_headers]
    assert ("tesT-Multi", "value-multi") in names
    assert ("tesT-Multi", "value-solo") in names
    assert ("b", "false") in names
    assert not any(k == "gone" for k, _ in names)
    assert ("Content-Type", "application/json") in names


async def test_v1_base64_follows_binary_media_types(serve: Serve, client: ClientSession) -> None:
    result = {
        "statusCode": 200,
        "body": base64.b64encode(b"\x89PNG").decode(),
        "isBase64Encoded": True,
    }
    plain = await serve("result_from_body", style=Style.REST)
    _, _, body = await call_with_result(client, plain, result)
    assert body == base64.b64encode(b"\x89PNG")  # REST-style without binary types: text
    binary = await serve("result_from_body", style=Style.REST, binary_media_types=("image/png",))
    _, _, body = await call_with_result(client, binary, result, accept="image/png")
    assert body == b"\x89PNG"
    _, _, body = await call_with_result(client, binary, result, accept="text/html")
    assert body == base64.b64encode(b"\x89PNG")
    http = await serve("result_from_body", style=Style.HTTP, payload_format="1.0")
    _, _, body = await call_with_result(client, http, result)
    assert body == b"\x89PNG"  # HTTP-style APIs always decode


async def test_head_request(serve: Serve, client: ClientSession) -> None:
    base = await serve("png")
    async with client.head(base + "/x") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/png"
        assert await resp.read() == b""


async def test_async_result_reader(serve: Serve, client: ClientSession) -> None:
    base = await serve("async_result_from_body", style=Style.REST)
    status, _, body = await call_with_result(client, base, {"statusCode": 202, "body": "ok"})
    assert (status, body) == (202, b"ok")


def test_constructor_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="payload_format"):
        FunctionIntegration(
            handler("echo_event"),
            payload_format="3.0",
            timeout_ms=10,
            style=Style.HTTP,
            api_name="a",
            stage="$default",
            route_key="$default",
        )
    with pytest.raises(ValueError, match="timeout_ms"):
        FunctionIntegration(
            handler("echo_event"),
            payload_format="2.0",
            timeout_ms=0,
            style=Style.HTTP,
            api_name="a",
            stage="$default",
            route_key="$default",
        )
