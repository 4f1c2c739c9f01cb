"""Request validation stage: required parameters, JSON Schema bodies, body reading."""

from __future__ import annotations

from typing import Any

import pytest

from pygw.body import read_body
from pygw.config.model import ApiConfig
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.request import Request
from pygw.stages.validate import build_validate_stage, compile_model

ITEM = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "tags": {"type": "array"}},
}


def make_ctx(
    method: str = "POST",
    path: str = "/items",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    params: dict[str, str] | None = None,
) -> RequestContext:
    if body is not None:
        headers = {"Content-Length": str(len(body)), **(headers or {})}
    request = Request.build(method, path, headers=headers or {}, body=body or b"")
    return RequestContext(
        request=request,
        request_id="rid-1",
        path=path.partition("?")[0],
        params=params or {},
        stage_variables={},
        client_ip="127.0.0.1",
        received_at=0.0,
    )


def api(validate: dict[str, Any], models: dict[str, Any] | None = None) -> ApiConfig:
    return ApiConfig.model_validate(
        {
            "name": "shop",
            "type": "rest",
            "models": models if models is not None else {"Item": ITEM},
            "routes": {"POST /items/{id}": {"integration": {"type": "mock"}, "validate": validate}},
        }
    )


def stage_for(validate: dict[str, Any], models: dict[str, Any] | None = None, **kw: Any) -> Any:
    cfg = api(validate, models)
    return build_validate_stage(cfg, cfg.routes["POST /items/{id}"], **kw)


async def refused(stage: Any, ctx: RequestContext) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await stage(ctx)
    return caught.value


def test_nothing_to_validate_builds_no_stage() -> None:
    assert stage_for({}) is None


async def test_missing_params_listed_headers_path_then_query() -> None:
    stage = stage_for({"params": ["querystring.lang", "header.X-Tenant", "path.id", "path.other"]})
    err = await refused(stage, make_ctx(params={"id": "1"}))
    assert err.error is ErrorType.BAD_REQUEST_PARAMETERS
    assert err.detail == "Missing required request parameters: [x-tenant, other, lang]"


async def test_params_present_pass() -> None:
    stage = stage_for({"params": ["querystring.lang", "header.x-tenant", "path.id"]})
    ctx = make_ctx(path="/items/1?lang=", headers={"X-TENANT": "t"}, params={"id": "1"})
    assert await stage(ctx) is None


async def test_valid_body_passes_and_is_kept_for_the_integration() -> None:
    stage = stage_for({"body": "Item"})
    ctx = make_ctx(body=b'{"name": "x"}')
    assert await stage(ctx) is None
    assert ctx.body == b'{"name": "x"}'


@pytest.mark.parametrize(
    "body",
    [b'{"name": 1}', b"{}", b"", b"not json", b"[1, 2]", b'{"name": "x", "tags": {}}'],
)
async def test_invalid_bodies_are_refused(body: bytes) -> None:
    err = await refused(stage_for({"body": "Item"}), make_ctx(body=body))
    assert err.error is ErrorType.BAD_REQUEST_BODY
    assert err.detail is None  # the table's "Invalid request body"


async def test_missing_body_is_checked_as_empty_object() -> None:
    assert await stage_for({"body": "Loose"}, {"Loose": {"type": "object"}})(make_ctx()) is None


async def test_params_are_checked_before_the_body() -> None:
    stage = stage_for({"params": ["header.x-tenant"], "body": "Item"})
    err = await refused(stage, make_ctx(body=b"nope"))
    assert err.error is ErrorType.BAD_REQUEST_PARAMETERS


async def test_big_integers_are_json() -> None:
    stage = stage_for({"body": "N"}, {"N": {"type": "object", "required": ["n"]}})
    assert await stage(make_ctx(body=b'{"n": 123456789012345678901234567890}')) is None


async def test_body_over_the_limit_is_refused() -> None:
    stage = stage_for({"body": "Item"}, max_body_bytes=8)
    err = await refused(stage, make_ctx(body=b'{"name": "0123456789"}'))
    assert err.error is ErrorType.REQUEST_TOO_LARGE


async def test_read_body_reads_once() -> None:
    ctx = make_ctx(body=b"abc")
    assert await read_body(ctx, 100) == b"abc"
    assert await read_body(ctx, 100) == b"abc"


def test_refs_between_models_both_spellings() -> None:
    models = {
        "Item": ITEM,
        "AwsList": {
            "type": "array",
            "items": {"$ref": "https://apigateway.amazonaws.com/restapis/abc123/models/Item"},
        },
        "LocalList": {"type": "array", "items": {"$ref": "#/definitions/Item"}},
    }
    for name in ("AwsList", "LocalList"):
        check = compile_model(models, name)
        check([{"name": "a"}])
        with pytest.raises(Exception, match="must contain"):
            check([{"nope": 1}])


def test_model_with_own_definitions() -> None:
    models = {
        "M": {
            "type": "object",
            "properties": {"a": {"$ref": "#/definitions/pos"}},
            "definitions": {"pos": {"type": "integer", "minimum": 0}},
        }
    }
    check = compile_model(models, "M")
    check({"a": 1})
    with pytest.raises(Exception, match="bigger than or equal"):
        check({"a": -1})


def test_draft04_semantics() -> None:
    check = compile_model({"M": {"type": "number", "maximum": 5, "exclusiveMaximum": True}}, "M")
    check(4)
    with pytest.raises(Exception, match="smaller than"):
        check(5)


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"Item": {"type": "objectt"}}, "model 'Item' is not a valid JSON Schema"),
        (
            {"Item": {"properties": {"a": {"$ref": "http://example.com/x.json"}}}},
            "model 'Item': \\$ref 'http://example.com/x.json' is outside",
        ),
        (
            {"Item": {"items": {"$ref": "https://apigateway.amazonaws.com/restapis/a/models/No"}}},
            "unknown model 'No'",
        ),
        ({"Item": {"items": {"$ref": "#/definitions/Nope"}}}, "names no model or definition"),
    ],
)
def test_bad_schemas_name_the_model(models: dict[str, Any], message: str) -> None:
    cfg = api({"body": "Item"}, models)
    with pytest.raises(ValueError, match=message):
        build_validate_stage(cfg, cfg.routes["POST /items/{id}"])


def test_compiled_once_per_schema() -> None:
    models = {"Item": ITEM}
    assert compile_model(models, "Item") is compile_model(dict(models), "Item")
