"""Validation and mapping templates against AWS API Gateway's recorded answers.

The recordings (testdata/aws-parity, from LocalStack's AWS-validated test suite) hold what AWS
returned; the requests and templates that produced them are not recorded, so each case below
restates the request and the template the recorded answer implies. Requests go over HTTP to a real
server on 127.0.0.1 that runs the stages and answers errors as the gateway does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession

from pygw.config.model import ApiConfig
from pygw.context import RequestContext
from pygw.dispatch import error_response
from pygw.errors import GatewayError, Style
from pygw.request import Request
from pygw.response import Response
from pygw.stages.transform import build_request_transform_stage, build_response_transform
from pygw.stages.validate import build_validate_stage
from tests.front import FrontServer, serve_front

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"
PARITY = TESTDATA / "aws-parity"
COMMON = PARITY / "test_apigateway_common.snapshot.json"
INTEGRATIONS = PARITY / "test_apigateway_integrations.snapshot.json"
OPENAPI = TESTDATA / "openapi"

pytestmark = pytest.mark.skipif(
    not COMMON.exists(), reason=f"AWS parity recordings not found under {PARITY}"
)

ROUTE = "ANY /nested/{test}"


def recorded(path: Path, test: str) -> dict[str, Any]:
    data = json.loads(path.read_text())
    for key, value in data.items():
        if key.endswith("::" + test):
            found: dict[str, Any] = value["recorded-content"]
            return found
    raise AssertionError(f"{test} not recorded in {path.name}")


Serve = Callable[[dict[str, Any], dict[str, Any]], Any]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """serve(route, models) → base URL of a server running that REST-style route's stages and
    an integration that echoes the body it is given."""
    servers: list[FrontServer] = []
    session = ClientSession()

    async def start(route: dict[str, Any], models: dict[str, Any] | None = None) -> str:
        cfg = ApiConfig.model_validate(
            {
                "name": "parity",
                "type": "rest",
                "models": models or {},
                "routes": {ROUTE: {"integration": {"type": "mock"}, **route}},
            }
        )
        route_cfg = cfg.routes[ROUTE]
        stages = [
            s
            for s in (
                build_validate_stage(cfg, route_cfg),
                build_request_transform_stage(cfg, route_cfg, "local"),
            )
            if s is not None
        ]
        respond = build_response_transform(cfg, route_cfg, "local")

        async def handler(request: Request) -> Response:
            segments = request.path.split("/")
            ctx = RequestContext(
                request=request,
                request_id="rid",
                path=request.path,
                params={"test": segments[2]} if len(segments) > 2 and segments[2] else {},
                stage_variables={},
                client_ip=request.client_ip,
                received_at=0.0,
            )
            try:
                for stage in stages:
                    answered = await stage(ctx)
                    if answered is not None:
                        return answered
                body = ctx.body
                if body is None:
                    body = await request.read()
                answer = Response(body=body, content_type="application/json")
                return respond(ctx, answer) if respond is not None else answer
            except GatewayError as failure:
                return error_response(failure.error, Style.REST, "rid", failure.detail)

        server = await serve_front(handler)
        servers.append(server)
        return server.url

    start.session = session  # type: ignore[attr-defined]
    yield start
    await session.close()
    for server in servers:
        await server.cleanup()


async def call(serve: Any, base: str, method: str, path: str, **kw: Any) -> tuple[int, bytes, Any]:
    async with serve.session.request(method, base + path, **kw) as resp:
        return resp.status, await resp.read(), resp.headers


# -- request validators ------------------------------------------------------------------------


async def test_missing_required_parameters(serve: Any) -> None:
    rec = recorded(COMMON, "TestApiGatewayCommon::test_api_gateway_request_validator")
    # After the change the POST method requires header.x-header-param, path.issuer (a path part
    # the resource does not have) and querystring.qs1; the GET method still requires path.test.
    post = await serve(
        {"validate": {"params": ["querystring.qs1", "path.issuer", "header.x-header-param"]}}
    )
    get = await serve(
        {"validate": {"params": ["path.test", "querystring.qs1", "header.x-header-param"]}}
    )
    status, body, headers = await call(serve, post, "POST", "/nested/value", json={"test": "test"})
    assert status == 400
    assert orjson.loads(body) == rec["missing-all-required-request-params-post"]
    assert headers["x-amzn-ErrorType"] == "BadRequestException"
    status, body, _ = await call(serve, get, "GET", "/nested/value", params={"qs1": "test"})
    assert (status, orjson.loads(body)) == (400, rec["missing-required-headers-request-params-get"])
    status, body, _ = await call(
        serve, get, "GET", "/nested/value", headers={"x-header-param": "test"}
    )
    assert (status, orjson.loads(body)) == (400, rec["missing-required-qs-request-params-get"])
    status, body, _ = await call(
        serve, get, "GET", "/nested/value", headers={"x-header-param": "t"}, params={"qs1": "t"}
    )
    assert status == 200


async def test_invalid_request_body(serve: Any) -> None:
    rec = recorded(COMMON, "TestApiGatewayCommon::test_api_gateway_request_validator")
    schema = {
        "title": "testSchema",
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    }
    base = await serve(
        {
            "validate": {
                "params": ["querystring.qs1", "header.x-header-param"],
                "body": "testSchema",
            }
        },
        {"testSchema": schema},
    )
    ok = {"headers": {"x-header-param": "test"}, "params": {"qs1": "test"}}
    status, body, _ = await call(serve, base, "POST", "/nested/value", json={"test": "test"}, **ok)
    assert (status, orjson.loads(body)) == (400, rec["invalid-request-body"])
    # GET with an empty body, with and without a JSON content type: refused too.
    for extra in ({}, {"Content-Type": "application/json"}):
        status, _, _ = await call(
            serve,
            base,
            "GET",
            "/nested/value",
            headers={"x-header-param": "t", **extra},
            params={"qs1": "t"},
        )
        assert status == 400
    status, body, _ = await call(serve, base, "POST", "/nested/value", json={"a": 1, "b": 2}, **ok)
    assert (status, orjson.loads(body)) == (200, {"a": 1, "b": 2})


def _models(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        item["name"]: json.loads(json.dumps(item["schema"]).replace("<api-id>", "abc123"))
        for item in items
    }


async def test_validator_with_aws_style_ref_models(serve: Any) -> None:
    rec = recorded(
        COMMON, "TestApiGatewayCommon::test_api_gateway_request_validator_with_ref_models"
    )
    models = _models(rec["get-models-with-ref"]["items"])
    base = await serve({"validate": {"body": "testSchemaList"}}, models)
    status, _, _ = await call(serve, base, "POST", "/nested/x", json=[{"a": 1, "b": 2}])
    assert status == 200
    status, body, _ = await call(serve, base, "POST", "/nested/x", json=[{"a": 1}])
    assert (status, orjson.loads(body)) == (400, rec["failed-validation"])


async def test_validator_with_ref_in_one_of(serve: Any) -> None:
    rec = recorded(
        COMMON, "TestApiGatewayCommon::test_api_gateway_request_validator_with_ref_one_ofmodels"
    )
    models = _models(rec["get-models-with-ref"]["items"])
    base = await serve({"validate": {"body": "TestModel"}}, models)
    for good in ({"status": None}, {"status": {"Status": "OK", "Order": 1}}):
        status, _, _ = await call(serve, base, "POST", "/nested/x", json=good)
        assert status == 200, good
    for bad, key in (
        ({}, "failed-validation-no-data"),
        ({"status": {"Status": "x"}}, "failed-validation-bad-data"),
    ):
        status, body, _ = await call(serve, base, "POST", "/nested/x", json=bad)
        assert (status, orjson.loads(body)) == (400, rec[key])


# -- mapping templates -------------------------------------------------------------------------

# recorded key → (response template, integration response body)
PATH_FORMATTING = {
    "dict-response": ("$input.path('$')", {"foo": "bar"}),
    "json-list": ("$input.path('$')", [{"foo": "bar"}]),
    "nested-dict": ("$input.path('$.nested')", {"nested": {"foo": "bar"}}),
    "nested-list": ("$input.path('$.nested')", {"nested": [{"foo": "bar"}]}),
    "dict-in-list": ("$input.path('$[0]')", [{"foo": "bar"}]),
    "list-with-nested-list": ("$input.path('$[0]')", [[{"foo": "bar"}]]),
    "dict-with-nested-list": ("$input.path('$')", {"foo": [{"nested": "bar"}]}),
    "bigger-dict": ("$input.path('$')", {"bigger": "dict", "to": "test", "with": "separators"}),
    "to-string": ("$input.path('$').toString()", {"foo": "bar"}),
    "list-to-string": ("$input.path('$').toString()", {"list": [{"foo": "bar"}]}),
}


@pytest.mark.parametrize("key", sorted(PATH_FORMATTING))
async def test_input_path_formatting(serve: Any, key: str) -> None:
    rec = recorded(COMMON, "TestApiGatewayCommon::test_input_path_template_formatting")
    template, document = PATH_FORMATTING[key]
    base = await serve({"templates": {"response": {"application/json": template}}})
    status, body, _ = await call(serve, base, "POST", "/nested/x", json=document)
    assert (status, body.decode()) == (200, rec[key])


@pytest.mark.parametrize(
    ("key", "body"),
    [("empty-body", b""), ("nested-empty-list", b"[]"), ("nested-null-list", b"null")],
)
async def test_input_path_of_empty_and_null(serve: Any, key: str, body: bytes) -> None:
    rec = recorded(COMMON, "TestApiGatewayCommon::test_input_path_template_formatting")
    template = "{\"body\": $input.path('$'), \"nested\": $input.path('$.nested'), "
    base = await serve({"templates": {"response": {"application/json": template}}})
    status, answer, _ = await call(serve, base, "POST", "/nested/x", data=body)
    assert status == 200
    assert rec[key].startswith(answer.decode())


STR_BODY = "Action=SendMessage&MessageBody=$input.body"
URL_ENCODE = (
    "EncodedBody=$util.urlEncode($input.body)&EncodedBodyAccess=$util.urlEncode($input.body.some)"
)
BODIES = {"empty-body": b"", "json-body": b'{"some": "value"}', "str-body": b"some raw data"}


@pytest.mark.parametrize(
    ("key", "templates"),
    [
        ("response-raw-body", {"response": {"application/json": "$input.body"}}),
        ("response-str-body-input", {"request": {"application/json": STR_BODY}}),
        ("response-str-body-output", {"response": {"application/json": STR_BODY}}),
        (
            "response-str-body-all",
            {"request": {"application/json": STR_BODY}, "response": {"application/json": STR_BODY}},
        ),
        ("response-url-encode", {"response": {"application/json": URL_ENCODE}}),
    ],
)
async def test_input_body_formatting(serve: Any, key: str, templates: dict[str, Any]) -> None:
    rec = recorded(COMMON, "TestApiGatewayCommon::test_input_body_formatting")[key]
    base = await serve({"templates": templates})
    for name, sent in BODIES.items():
        # $input.body of an empty body is "{}", in request and response templates alike.
        status, body, _ = await call(
            serve,
            base,
            "POST",
            "/nested/x",
            data=sent,
            headers={"Content-Type": "application/json"},
        )
        assert status == 200
        assert repr(body) == rec[name], name


@pytest.mark.skipif(not INTEGRATIONS.exists(), reason="integration recordings not found")
async def test_response_override_in_request_template(serve: Any) -> None:
    rec = recorded(
        INTEGRATIONS, "test_integration_mock_with_response_override_in_request_template[False]"
    )["response"]
    base = await serve(
        {
            "templates": {
                "request": {"application/json": "#set($context.responseOverride.status = 444)"}
            }
        }
    )
    status, body, _ = await call(serve, base, "POST", "/nested/x", json={})
    assert (status, repr(body)) == (rec["status_code"], rec["body"])


@pytest.mark.skipif(not INTEGRATIONS.exists(), reason="integration recordings not found")
async def test_vtl_map_assignation(serve: Any) -> None:
    rec = recorded(INTEGRATIONS, "test_integration_mock_with_vtl_map_assignation")["response"]
    template = (
        "#set($map = {})#set($map.value = 'bar')#set($ignored = $map.put('value2', 'putBar'))"
        "#set($nested = {'foo': 'nestedFoo'})#set($map.value3 = $nested.foo)"
        '{"value": "$map.value", "value2": "$map.value2", "value3": "$map.value3"}'
    )
    base = await serve({"templates": {"response": {"application/json": template}}})
    status, body, _ = await call(serve, base, "POST", "/nested/x", json={})
    assert (status, orjson.loads(body)) == (rec["status_code"], rec["body"])


@pytest.mark.skipif(not (OPENAPI / "request-template.vm").exists(), reason="templates not found")
async def test_openapi_request_template(serve: Any) -> None:
    template = (OPENAPI / "request-template.vm").read_text()
    base = await serve({"templates": {"request": {"application/json": template}}})
    status, body, _ = await call(
        serve,
        base,
        "POST",
        "/nested/v%20x?q=1&q=2",
        json={"pet": "cat"},
        headers={"X-Quote": 'say "hi"', "User-Agent": "ua"},
    )
    assert status == 200
    sent = orjson.loads(body)
    assert sent["apiContext"]["apiId"] == "parity"
    assert sent["apiContext"]["method"] == "POST"
    assert sent["apiContext"]["stage"] == "local"
    assert sent["apiContext"]["requestId"] == "rid"
    assert sent["apiContext"]["userAgent"] == "ua"
    assert sent["path"]["parameterMap"] == {"test": "v x"}
    assert sent["querystring"]["parameterMap"] == {"q": "2"}
    assert sent["header"]["parameterMap"]["X-Quote"] == 'say "hi"'
    assert sent["body"] == {"pet": "cat"}


@pytest.mark.skipif(not (OPENAPI / "response-template.vm").exists(), reason="templates not found")
async def test_openapi_response_template(serve: Any) -> None:
    template = (OPENAPI / "response-template.vm").read_text()
    base = await serve({"templates": {"response": {"application/json": template}}})
    status, body, _ = await call(serve, base, "POST", "/nested/x", json={"e": "customerror"})
    assert status == 400
    assert orjson.loads(body) == {"e": "customerror"}
    status, _, _ = await call(serve, base, "POST", "/nested/x", json={"e": "fine"})
    assert status == 202
