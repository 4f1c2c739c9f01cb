"""Mapping templates (REST-style) and parameter mapping (HTTP-style)."""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson
import pytest

from pygw.config.model import ApiConfig
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.request import Request
from pygw.response import Response
from pygw.stages.transform import (
    MappingStage,
    RequestTemplateStage,
    ResponseMapping,
    ResponseTemplates,
    build_request_transform_stage,
    build_response_transform,
    escape_javascript,
    json_path,
)

ROUTE = "POST /items/{id}"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status=status,
        text=orjson.dumps(data).decode(),
        headers=headers,
        content_type="application/json",
    )


def make_ctx(
    path: str = "/dev/items/1",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    params: dict[str, str] | None = None,
    method: str = "POST",
) -> RequestContext:
    headers = dict(headers or {})
    if body is not None:
        headers.setdefault("Content-Length", str(len(body)))
    request = Request.build(method, path, headers=headers, body=body or b"")
    return RequestContext(
        request=request,
        request_id="rid-1",
        path=path.partition("?")[0].removeprefix("/dev"),
        params=params if params is not None else {"id": "1"},
        stage_variables={"backend": "b1"},
        client_ip="10.0.0.7",
        received_at=0.0,
    )


def rest(route: dict[str, Any]) -> tuple[ApiConfig, Any]:
    cfg = ApiConfig.model_validate(
        {
            "name": "shop",
            "type": "rest",
            "routes": {ROUTE: {"integration": {"type": "mock"}, **route}},
        }
    )
    return cfg, cfg.routes[ROUTE]


def http(route: dict[str, Any]) -> tuple[ApiConfig, Any]:
    cfg = ApiConfig.model_validate(
        {
            "name": "shop",
            "type": "http",
            "routes": {ROUTE: {"integration": {"type": "mock"}, **route}},
        }
    )
    return cfg, cfg.routes[ROUTE]


def request_stage(templates: dict[str, Any]) -> RequestTemplateStage:
    stage = build_request_transform_stage(*rest({"templates": templates}), "dev")
    assert isinstance(stage, RequestTemplateStage)
    return stage


async def render_request(template: str, ctx: RequestContext) -> str:
    stage = request_stage({"request": {"application/json": template}})
    assert await stage(ctx) is None
    body: bytes = ctx.body
    return body.decode()


# -- JSONPath and helpers ----------------------------------------------------------------------

DOC = {"a": {"b": [{"c": 1}, {"c": 2}]}, "k y": True}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", DOC),
        ("$.a.b[1].c", 2),
        ("$.a.b[-1]", {"c": 2}),
        ("$['k y']", True),
        ('$["a"]["b"][0]', {"c": 1}),
        ("$.a.b[*].c", [1, 2]),
        ("$..c", [1, 2]),
        ("a.b[0].c", 1),
        ("$.missing", None),
        ("$.a.b[9]", None),
    ],
)
def test_json_path(path: str, expected: Any) -> None:
    assert json_path(DOC, path) == expected


def test_json_path_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError):
        json_path(DOC, "$.a[?(@.b)]")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('it\'s "q" \\ /', 'it\\\'s \\"q\\" \\\\ \\/'),
        ("a\nb\tc\r\x01", "a\\nb\\tc\\r\\u0001"),
        ("é€😀", "\\u00E9\\u20AC\\uD83D\\uDE00"),
        (True, "true"),
        (None, None),
    ],
)
def test_escape_javascript_as_java(value: Any, expected: str | None) -> None:
    assert escape_javascript(value) == expected


# -- request templates -------------------------------------------------------------------------


async def test_input_variables() -> None:
    ctx = make_ctx(
        "/dev/items/a%20b?lang=en&tag=x+y&lang=fr",
        headers={"Content-Type": "application/json", "X-Tenant": "t1"},
        body=b'{"name": "pen", "qty": 2, "ok": false, "tags": ["a"], "n": null}',
        params={"id": "a%20b"},
    )
    out = await render_request(
        "$input.json('$.name')|$input.path('$.qty')|$input.path('$.ok')|$input.path('$.tags')"
        "|$input.path('$.n')|$input.params('lang')|$input.params('X-TENANT')"
        "|$input.params().path.id|$input.params().querystring.tag|$input.params('nope')|",
        ctx,
    )
    assert out == '"pen"|2|false|["a"]||fr|t1|a b|x y||'
    assert ctx.body_content_type == "application/json"


async def test_input_body_and_util() -> None:
    ctx = make_ctx(headers={"Content-Type": "application/json"}, body=b'{"s": "a b&c~*"}')
    out = await render_request(
        "$input.body|$util.urlEncode($input.path('$.s'))|$util.urlDecode('a+b%26')"
        "|$util.base64Encode('hi')|$util.base64Decode('aGk=')|$util.escapeJavaScript($input.body)"
        "|#set($p = $util.parseJson($input.body))$p.s",
        ctx,
    )
    assert out == ('{"s": "a b&c~*"}|a+b%26c%7E*|a b&|aGk=|hi|{\\"s\\": \\"a b&c~*\\"}|a b&c~*')


async def test_context_and_stage_variables() -> None:
    ctx = make_ctx(headers={"User-Agent": "ua/1", "Host": "api.example:8080"})
    ctx.authorizer = {"jwt": {"claims": {"sub": "u1"}, "scopes": []}}
    out = await render_request(
        "$context.requestId $context.stage $context.httpMethod $context.resourcePath "
        "$context.path $context.apiId $context.identity.sourceIp $context.identity.userAgent "
        "$context.domainName $context.authorizer.claims.sub $stageVariables.backend "
        "$context.nothing.here",
        ctx,
    )
    assert out == ("rid-1 dev POST /items/{id} /dev/items/1 shop 10.0.0.7 ua/1 api.example u1 b1 ")
    when = await render_request("$context.requestTime|$context.requestTimeEpoch", make_ctx())
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\|\d{13}", when)


async def test_velocity_directives() -> None:
    ctx = make_ctx(body=b'{"items": [{"id": 1}, {"id": 2}], "m": {"x": 1, "y": "z"}}')
    out = await render_request(
        "#foreach($i in $input.path('$.items'))$i.id#if($foreach.hasNext),#end#end;"
        "#set($m = $input.path('$.m'))$m.size() $m.keySet() $m.containsKey('x') $m;"
        "#if($input.path('$.items').size() == 2)two#{else}other#end;"
        "#set($s = 'AbC')$s.toLowerCase() $s.length()",
        ctx,
    )
    assert out == "1,2;2 ['x', 'y'] True {x=1, y=z};two;abc 3"


async def test_empty_body() -> None:
    out = await render_request(
        "[$input.body][$input.json('$')][$input.path('$')][$input.path('$.a')]", make_ctx()
    )
    assert out == "[{}][{}][][]"


async def test_invalid_json_with_json_access_is_a_bad_body() -> None:
    with pytest.raises(GatewayError) as caught:
        await render_request("$input.json('$')", make_ctx(body=b"{oops"))
    assert caught.value.error is ErrorType.BAD_REQUEST_BODY
    assert await render_request("raw=$input.body", make_ctx(body=b"{oops")) == "raw={oops"


async def test_template_chosen_by_media_type() -> None:
    stage = request_stage(
        {"request": {"application/json": "json", "Application/X-WWW-Form-Urlencoded": "form"}}
    )
    for content_type, expected in [
        ("application/x-www-form-urlencoded; charset=utf-8", b"form"),
        (None, b"json"),  # no Content-Type: application/json, as AWS
    ]:
        ctx = make_ctx(headers={"Content-Type": content_type} if content_type else {}, body=b"")
        assert await stage(ctx) is None
        assert ctx.body == expected


@pytest.mark.parametrize(
    ("passthrough", "templates", "status"),
    [
        ("when_no_match", {"application/json": "x"}, None),
        ("when_no_templates", {"application/json": "x"}, 415),
        ("never", {"application/json": "x"}, 415),
        ("never", {}, 415),
    ],
)
async def test_passthrough(passthrough: str, templates: dict[str, str], status: int | None) -> None:
    stage = request_stage({"request": templates, "passthrough": passthrough})
    ctx = make_ctx(headers={"Content-Type": "text/plain"}, body=b"hello")
    answer = await stage(ctx)
    if status is None:
        assert answer is None
        assert ctx.body is None  # the client's stream is left for the integration
        return
    assert isinstance(answer, Response)
    assert answer.status == status
    assert answer.body == b'{"message":"Unsupported Media Type"}'
    assert answer.headers["x-amzn-ErrorType"] == "UnsupportedMediaTypeException"
    assert answer.headers["x-amzn-RequestId"] == "rid-1"


def test_no_request_templates_no_stage() -> None:
    assert build_request_transform_stage(*rest({"templates": {"response": {}}}), "dev") is None
    assert build_request_transform_stage(*rest({}), "dev") is None


def test_bad_template_fails_at_load() -> None:
    with pytest.raises(ValueError, match="template does not parse"):
        request_stage({"request": {"application/json": "#if($x) no end"}})


async def test_template_failure_at_run_time_is_the_apis_fault() -> None:
    with pytest.raises(GatewayError) as caught:
        await render_request("$input.path('$.a').get(5)", make_ctx(body=b'{"a": [1]}'))
    assert caught.value.error is ErrorType.INTEGRATION_FAILURE


async def test_request_overrides_from_a_template() -> None:
    ctx = make_ctx("/dev/items/1?a=1", params={"id": "1"})
    await render_request(
        "#set($context.requestOverride.header.XExtra = 'v')"
        "#set($context.requestOverride.querystring.b = 'two words')"
        "#set($context.requestOverride.path.id = 'x/y')"
        "#set($context.responseOverride.status = 444)"
        "#set($context.responseOverride.header.XR = 'r')",
        ctx,
    )
    overrides = ctx.request_overrides
    assert overrides["headers"]["xextra"] == "v"
    assert overrides["query"] == "a=1&b=two%20words"
    assert overrides["path"] is None
    assert ctx.params["id"] == "x%2Fy"
    assert ctx.response_override == {"status": 444, "header": {"XR": "r"}}


async def test_header_injection_is_refused() -> None:
    with pytest.raises(GatewayError) as caught:
        await render_request(
            "#set($context.requestOverride.header.X = $util.urlDecode('a%0D%0Ab'))", make_ctx()
        )
    assert caught.value.error is ErrorType.BAD_REQUEST


# -- response templates ------------------------------------------------------------------------


def response_transform(templates: dict[str, Any]) -> ResponseTemplates:
    found = build_response_transform(*rest({"templates": templates}), "dev")
    assert isinstance(found, ResponseTemplates)
    return found


async def test_response_template() -> None:
    transform = response_transform(
        {
            "response": {
                "application/json": '{"n": $input.path(\'$.items\').size(), "id": '
                "\"$input.params('id')\"}#if($input.path('$.items').size() == 0)"
                "#set($context.responseOverride.status = 404)#end"
            }
        }
    )
    upstream = json_response({"items": [1, 2]}, headers={"X-Up": "1"})
    answer = transform(make_ctx(), upstream)
    assert answer.status == 200
    assert orjson.loads(answer.body) == {"n": 2, "id": "1"}  # type: ignore[arg-type]
    assert answer.headers["X-Up"] == "1"
    assert answer.content_type == "application/json"
    empty = transform(make_ctx(), json_response({"items": []}))
    assert empty.status == 404


async def test_response_template_by_accept_then_default() -> None:
    transform = response_transform({"response": {"text/html": "<b>$input.path('$.a')</b>"}})
    ctx = make_ctx(headers={"Accept": "text/plain, text/html"})
    answer = transform(ctx, json_response({"a": 1}))
    assert answer.body == b"<b>1</b>"
    assert answer.content_type == "text/html"
    untouched = json_response({"a": 1})
    assert transform(make_ctx(), untouched) is untouched


async def test_request_template_status_override_reaches_the_response() -> None:
    transform = response_transform({"request": {"application/json": "x"}})
    ctx = make_ctx()
    ctx.response_override = {"status": 444, "header": {"X-O": "1"}}
    answer = transform(ctx, Response(status=200, body=b"{}"))
    assert answer.status == 444
    assert answer.headers["X-O"] == "1"


# -- HTTP-style parameter mapping --------------------------------------------------------------


def mapping_stage(request: dict[str, str]) -> MappingStage:
    stage = build_request_transform_stage(*http({"mapping": {"request": request}}), "v1")
    assert isinstance(stage, MappingStage)
    return stage


async def test_request_mapping() -> None:
    stage = mapping_stage(
        {
            "overwrite:header.x-stage": "$context.stage",
            "append:header.x-multi": "two",
            "remove:header.cookie": "''",
            "overwrite:header.x-from": "${request.querystring.who}-$request.header.x-tenant",
            "append:querystring.tag": "v1",
            "overwrite:querystring.lang": "$stageVariables.backend",
            "remove:querystring.drop": "''",
            "overwrite:path": "/new/$request.path.id/$context.requestId",
            "overwrite:header.x-missing": "$request.header.absent",
        }
    )
    ctx = make_ctx(
        "/dev/items/7?who=me&tag=v0&lang=en&drop=1",
        headers={"Cookie": "a=b", "X-Multi": "one", "X-Tenant": "t"},
        params={"id": "7"},
    )
    assert await stage(ctx) is None
    overrides = ctx.request_overrides
    headers = overrides["headers"]
    assert headers["x-stage"] == "v1"
    assert headers.getall("x-multi") == ["one", "two"]
    assert "cookie" not in headers
    assert headers["x-from"] == "me-t"
    assert "x-missing" not in headers
    assert overrides["query"] == "who=me&tag=v0&tag=v1&lang=b1"
    assert overrides["path"] == "/new/7/rid-1"


async def test_request_mapping_from_body() -> None:
    stage = mapping_stage({"overwrite:header.x-name": "$request.body.user.name"})
    ctx = make_ctx(body=b'{"user": {"name": "ann"}}')
    await stage(ctx)
    assert ctx.request_overrides["headers"]["x-name"] == "ann"
    assert ctx.body == b'{"user": {"name": "ann"}}'


async def test_mapped_path_cannot_climb() -> None:
    stage = mapping_stage({"overwrite:path": "/api/$request.querystring.p"})
    with pytest.raises(GatewayError) as caught:
        await stage(make_ctx("/dev/items/1?p=..%2Fadmin"))
    assert caught.value.error is ErrorType.BAD_REQUEST


async def test_mapped_header_cannot_inject() -> None:
    stage = mapping_stage({"overwrite:header.x": "$request.querystring.v"})
    with pytest.raises(GatewayError):
        await stage(make_ctx("/dev/items/1?v=a%0D%0AHost:%20evil"))


def test_unknown_mapping_variable_fails_at_load() -> None:
    with pytest.raises(ValueError, match=r"\$context.nope is not a context variable"):
        mapping_stage({"overwrite:header.x": "$context.nope"})


async def test_response_mapping() -> None:
    found = build_response_transform(
        *http(
            {
                "mapping": {
                    "response": {
                        "200": {
                            "overwrite:header.x-id": "${response.header.x-up}-$response.body.id",
                            "remove:header.server": "''",
                            "overwrite:statuscode": "201",
                        }
                    }
                }
            }
        ),
        "v1",
    )
    assert isinstance(found, ResponseMapping)
    assert found.needs_body
    upstream = json_response({"id": 5}, headers={"X-Up": "u", "Server": "s"})
    answer = found(make_ctx(), upstream)
    assert answer.status == 201
    assert answer.headers["x-id"] == "u-5"
    assert "Server" not in answer.headers
    other = json_response({}, status=500, headers={"Server": "s"})
    assert found(make_ctx(), other).headers["Server"] == "s"


async def test_response_mapping_on_a_streamed_head() -> None:
    found = build_response_transform(
        *http({"mapping": {"response": {"200": {"append:header.x-a": "$context.stage"}}}}), "v1"
    )
    assert isinstance(found, ResponseMapping)
    assert not found.needs_body
    streamed = Response()
    found.apply_head(make_ctx(), streamed)
    assert streamed.headers["x-a"] == "v1"


def test_base64_roundtrip_non_ascii() -> None:
    assert base64.b64decode("w6k=").decode() == "é"
