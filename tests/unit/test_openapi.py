"""OpenAPI import (SPEC.md section 11): definitions with AWS extensions → pygw configuration."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from pygw.config.load import ConfigError, LoadedConfig, parse_config
from pygw.config.openapi import (
    REFUSING_HANDLER,
    ImportResult,
    import_openapi,
    lambda_name,
    load_openapi_config,
    parse_handlers,
    parse_jwks,
    parse_upstreams,
    parse_user_pools,
    pointer,
    refuse_unresolved,
)
from pygw.observe.metrics import Metrics
from pygw.runtime import compile_runtime

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "openapi"
SPEC_FILES = (
    sorted(p for p in TESTDATA.iterdir() if p.suffix in (".json", ".yaml", ".yml"))
    if TESTDATA.is_dir()
    else []
)
needs_testdata = pytest.mark.skipif(
    not TESTDATA.is_dir(), reason=f"{TESTDATA} is absent (shared test data)"
)

# What the runtime refuses until a stage is wired in; an import using it is still a valid config.
NOT_BUILT = "is not available in this version"


def check(result: ImportResult, folder: Path, env: dict[str, str] | None = None) -> None:
    """What `pygw check` does: parse the YAML and compile it."""
    text = yaml.safe_dump(result.config)
    config = parse_config(text, "<imported>", env=env if env is not None else {})
    loaded = LoadedConfig(config=config, path=folder / "imported.yaml", folder=folder)
    try:
        compile_runtime(loaded, Metrics())
    except ConfigError as failure:
        if all(NOT_BUILT in issue.message for issue in failure.errors):
            pytest.skip(f"imported config uses a stage not wired yet: {failure}")
        raise


def write_spec(folder: Path, spec: dict[str, Any], name: str = "api.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(spec))
    return path


def oas(paths: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"openapi": "3.0.1", "info": {"title": "t", "version": "1"}, "paths": paths, **extra}


def mock_op(**extra: Any) -> dict[str, Any]:
    return {
        "x-amazon-apigateway-integration": {
            "type": "mock",
            "requestTemplates": {"application/json": '{"statusCode": 200}'},
            "responses": {"default": {"statusCode": "200"}},
        },
        **extra,
    }


def api_of(result: ImportResult) -> dict[str, Any]:
    apis = result.config["apis"]
    assert len(apis) == 1
    api: dict[str, Any] = apis[0]
    return api


def warned(result: ImportResult, *fragments: str) -> bool:
    return any(all(f in w for f in fragments) for w in result.warnings)


# --------------------------------------------------------------------------------------------------
# Every file of the shared test data


@needs_testdata
@pytest.mark.parametrize("style", ["rest", "http"])
@pytest.mark.parametrize("spec", SPEC_FILES, ids=lambda p: p.name)
def test_every_testdata_file_imports_and_compiles(spec: Path, style: str) -> None:
    result = import_openapi(spec, style=style)
    assert api_of(result)["type"] == style
    assert api_of(result)["routes"], "every test file defines at least one route"
    for warning in result.warnings:
        assert warning.startswith("#"), warning  # each names the JSON pointer of its construct
    check(result, spec.parent)
    assert result.to_yaml().startswith("# pygw configuration imported from")


@needs_testdata
def test_petstore_swagger_routes_and_placeholders() -> None:
    result = import_openapi(TESTDATA / "petstore-swagger.json")
    routes = api_of(result)["routes"]
    assert set(routes) == {
        "GET /",
        "GET /pets",
        "POST /pets",
        "OPTIONS /pets",
        "GET /pets/{petId}",
        "OPTIONS /pets/{petId}",
    }
    root = routes["GET /"]["integration"]
    assert root["type"] == "mock" and root["status"] == 200
    assert root["headers"] == {"Content-Type": "text/html"}
    assert "body" not in root
    # The page is a response template, rendered per request ($context.stage).
    page = routes["GET /"]["templates"]["response"]["text/html"]
    assert page.startswith("<html>") and "/$context.stage/pets/" in page
    assert not warned(result, "unrendered")
    assert routes["OPTIONS /pets"]["integration"]["headers"] == {
        "Access-Control-Allow-Methods": "POST,GET,OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type,X-Amz-Date,Authorization,X-Api-Key",
        "Access-Control-Allow-Origin": "*",
    }
    # `${uri}` is filled in at deployment: a 501 stand-in until an upstream is given for it.
    assert routes["GET /pets"]["integration"]["status"] == 501
    assert warned(result, "#/paths/~1pets/get/x-amazon-apigateway-integration/uri", "${uri}")
    assert warned(result, "#/x-amazon-apigateway-documentation", "not supported")

    given = import_openapi(
        TESTDATA / "petstore-swagger.json", upstreams={"${uri}": "http://127.0.0.1:9001/pets"}
    )
    routes = api_of(given)["routes"]
    assert routes["GET /pets"]["integration"] == {
        "type": "http_proxy",
        "uri": "http://127.0.0.1:9001/pets",
        "response_headers": {"Access-Control-Allow-Origin": "*"},
    }
    # integration.request.path.petId = method.request.path.petId: the uri keeps {petId}.
    assert routes["GET /pets/{petId}"]["integration"]["uri"] == "http://127.0.0.1:9001/pets/{petId}"
    assert not warned(given, "uri")
    check(given, TESTDATA)


@needs_testdata
def test_petstore_authorizer_fails_closed_without_handler() -> None:
    result = import_openapi(TESTDATA / "petstore-authorizer.swagger.json")
    api = api_of(result)
    assert api["routes"]["GET /pets"]["authorizer"] == "test-authorizer"
    assert api["authorizers"]["test-authorizer"]["handler"] == REFUSING_HANDLER
    assert "authorizer" not in api["routes"]["POST /pets"]
    assert warned(
        result,
        "#/securityDefinitions/test-authorizer/x-amazon-apigateway-authorizer",
        "x-pygw-handler",
        "401",
    )
    assert warned(result, "test-authorizer-not-used", "no operation uses")
    assert "test-authorizer-not-used" not in api["authorizers"]


@needs_testdata
def test_openapi_spec_cors_refs_and_authorizer() -> None:
    result = import_openapi(TESTDATA / "openapi.spec.json")
    api = api_of(result)
    assert api["cors"]["allow_origins"] == ["*"]
    assert api["cors"]["allow_methods"] == ["GET", "OPTIONS", "POST"]
    assert "content-type" in api["cors"]["allow_headers"]
    # POST /pets's integration is a $ref into components/x-amazon-apigateway-integrations.
    assert api["routes"]["POST /pets"]["integration"] == {
        "type": "http_proxy",
        "uri": "http://petstore.execute-api.us-west-1.amazonaws.com/petstore/pets",
    }
    assert api["routes"]["GET /pets/{petId}"]["authorizer"] == "myAuthorizer"
    local = import_openapi(
        TESTDATA / "openapi.spec.json",
        upstreams={"petstore.execute-api.us-west-1.amazonaws.com": "http://127.0.0.1:7000"},
    )
    routes = api_of(local)["routes"]
    assert routes["GET /pets/{petId}"]["integration"]["uri"] == (
        "http://127.0.0.1:7000/petstore/pets/{petId}"
    )


@needs_testdata
def test_mock_any_method_and_vtl_warning() -> None:
    result = import_openapi(TESTDATA / "openapi-mock.json")
    routes = api_of(result)["routes"]
    assert list(routes) == ["ANY /echo/{data}"]
    route = routes["ANY /echo/{data}"]
    integration = route["integration"]
    assert integration == {
        "type": "mock",
        "status": 200,
        "headers": {"Content-Type": "application/json"},
    }
    # REST-style: the template is rendered by the transform stage.
    assert '"response": "mocked"' in route["templates"]["response"]["application/json"]
    assert not warned(result, "VTL")
    # HTTP-style APIs have no templates: the text is returned as written, with a warning.
    http = import_openapi(TESTDATA / "openapi-mock.json", style="http")
    integration = api_of(http)["routes"]["ANY /echo/{data}"]["integration"]
    assert '"response": "mocked"' in integration["body"]
    assert warned(http, "responseTemplates/application~1json", "VTL")


@needs_testdata
def test_base_paths() -> None:
    url = api_of(import_openapi(TESTDATA / "openapi-basepath-url.yaml"))
    assert url["base_path"] == "/base-url/part"
    variable = api_of(import_openapi(TESTDATA / "openapi-basepath-server-variable.yaml"))
    assert variable["base_path"] == "/base-var"
    swagger = api_of(import_openapi(TESTDATA / "swagger.json"))
    assert swagger["base_path"] == "/base"
    assert "base_path" not in api_of(import_openapi(TESTDATA / "openapi.spec.json"))


@needs_testdata
def test_integer_status_codes_in_yaml() -> None:
    result = import_openapi(TESTDATA / "openapi-method-int.spec.yaml")
    integration = api_of(result)["routes"]["GET /test"]["integration"]
    assert integration["status"] == 200
    assert integration["headers"] == {"Access-Control-Allow-Origin": "*"}
    assert warned(result, "requestParameters", "mock")


@needs_testdata
def test_unsupported_integrations_answer_501() -> None:
    aws = import_openapi(TESTDATA / "openapi-http-method-integration.json")
    assert api_of(aws)["routes"]["GET /"]["integration"]["status"] == 501
    assert warned(aws, "#/paths/~1/get/x-amazon-apigateway-integration", "'aws'")
    assert warned(aws, "contentHandling")
    lambdas = import_openapi(TESTDATA / "swagger-mock-cors.json")
    routes = api_of(lambdas)["routes"]
    assert routes["GET /product"]["integration"]["status"] == 501
    assert warned(lambdas, "#/paths/~1product/get", "aws_proxy", "x-pygw-handler")
    assert routes["OPTIONS /product"]["integration"]["headers"]["Access-Control-Allow-Origin"] == (
        "http://localhost:8080"
    )


@needs_testdata
def test_cognito_pool_placeholder_fails_closed() -> None:
    result = import_openapi(TESTDATA / "openapi.cognito-auth.json")
    api = api_of(result)
    # The API-wide `security` applies to operations without their own.
    assert api["routes"]["GET /pets"]["authorizer"] == "cognito-test-identity-source"
    assert api["routes"]["GET /non-default-authorizer"]["authorizer"] == (
        "extra-test-identity-source"
    )
    assert all(a["handler"] == REFUSING_HANDLER for a in api["authorizers"].values())
    assert warned(result, "cognito-test-identity-source", "${cognito_pool_arn}")


POOL_ARN = "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_Ab12"


@needs_testdata
def test_cognito_testdata_imports_with_a_pool_and_jwks(tmp_path: Path) -> None:
    jwks_file = tmp_path / "pool-jwks.json"
    jwks_file.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    jwks = parse_jwks([f"*={jwks_file.name}"], cwd=tmp_path)
    pools = parse_user_pools([f"${{cognito_pool_arn}}={POOL_ARN}"])
    result = import_openapi(TESTDATA / "openapi.cognito-auth.json", jwks=jwks, user_pools=pools)
    assert result.errors == []
    api = api_of(result)
    for name in ("cognito-test-identity-source", "extra-test-identity-source"):
        assert api["authorizers"][name] == {
            "type": "cognito_user_pools",
            "provider_arns": [POOL_ARN],
            "jwks": f"file://{jwks_file.resolve()}",
            # The scheme's apiKey header carries the token.
            "identity_source": ["header.testheaderauth"],
        }
    routes = api["routes"]
    assert "scopes" not in routes["GET /default-no-scope"]
    assert routes["GET /default-scope-override"]["scopes"] == ["openid"]
    assert routes["GET /non-default-authorizer"]["scopes"] == ["email", "openid"]
    assert routes["GET /pets"]["scopes"] == ["email"]  # the API-wide requirement
    assert not warned(result, "--jwks") and not warned(result, "--user-pool")

    unused = import_openapi(
        TESTDATA / "openapi.cognito-auth.json",
        jwks=jwks,
        user_pools={**pools, "nobody": POOL_ARN},
    )
    assert warned(unused, "--user-pool nobody", "matches no Cognito authorizer")


def test_jwks_and_user_pool_options_refuse_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no file"):
        parse_jwks(["pool=missing.json"], cwd=tmp_path)
    with pytest.raises(ValueError, match="NAME=PATH_OR_URL"):
        parse_jwks(["pool"])
    assert parse_jwks(["pool=https://idp.example/jwks.json"]) == {
        "pool": "https://idp.example/jwks.json"
    }
    with pytest.raises(ValueError, match="NAME=ARN"):
        parse_user_pools(["pool=arn:aws:iam::123:role/x"])


@needs_testdata
def test_stage_variables_in_uris() -> None:
    spec = TESTDATA / "openapi.spec.stage-variables.json"
    missing = import_openapi(spec)
    assert api_of(missing)["routes"]["GET /path1"]["integration"]["status"] == 501
    assert warned(missing, "stage variable TestHost", "stageVariables.TestHost=")
    given = import_openapi(
        spec,
        stage="prod",
        upstreams={
            "stageVariables.TestHost": "127.0.0.1:9001",
            "stageVariables.testPath": "items",
            "stageVariables.querystring": "a=1",
        },
    )
    api = api_of(given)
    assert api["stages"] == [
        {
            "name": "prod",
            "variables": {"TestHost": "127.0.0.1:9001", "querystring": "a=1", "testPath": "items"},
        }
    ]
    assert api["routes"]["GET /path1"]["integration"]["uri"] == (
        "https://${stageVariables.TestHost}/${stageVariables.testPath}?${stageVariables.querystring}"
    )
    assert warned(given, "httpMethod", "POST")
    check(given, TESTDATA)


# --------------------------------------------------------------------------------------------------
# Constructs the shared files do not use


def test_request_validators_become_validate(tmp_path: Path) -> None:
    spec = oas(
        {
            "/items": {
                "post": mock_op(
                    **{
                        "x-amazon-apigateway-request-validator": "all",
                        "parameters": [
                            {"name": "lang", "in": "query", "required": True},
                            {"name": "X-Tenant", "in": "header", "required": True},
                            {"name": "page", "in": "query"},
                        ],
                        "requestBody": {
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Item"}
                                }
                            }
                        },
                    }
                ),
                "get": mock_op(),
            },
            "/other": {"put": mock_op()},
        },
        components={
            "schemas": {
                "Item": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"$ref": "#/components/schemas/Name"}},
                },
                "Name": {"type": "string"},
            }
        },
        **{
            "x-amazon-apigateway-request-validators": {
                "all": {"validateRequestBody": True, "validateRequestParameters": True},
                "params": {"validateRequestBody": False, "validateRequestParameters": True},
            },
            "x-amazon-apigateway-request-validator": "params",
        },
    )
    result = import_openapi(write_spec(tmp_path, spec))
    api = api_of(result)
    assert api["routes"]["POST /items"]["validate"] == {
        "params": ["querystring.lang", "header.x-tenant"],
        "body": "Item",
    }
    # Refs inside a model are inlined: models are standalone JSON Schemas.
    assert api["models"]["Item"]["properties"]["name"] == {"type": "string"}
    # The API-wide default validator checks parameters only, and these routes require none.
    assert "validate" not in api["routes"]["GET /items"]
    assert not result.warnings

    http = import_openapi(write_spec(tmp_path, spec), style="http")
    assert "validate" not in api_of(http)["routes"]["POST /items"]
    assert warned(http, "x-amazon-apigateway-request-validator", "REST-style only")
    check(http, tmp_path)
    check(result, tmp_path)


def test_swagger_body_validator_with_inline_schema(tmp_path: Path) -> None:
    spec = {
        "swagger": "2.0",
        "info": {"title": "s"},
        "x-amazon-apigateway-request-validators": {"body": {"validateRequestBody": True}},
        "paths": {
            "/things": {
                "post": mock_op(
                    **{
                        "x-amazon-apigateway-request-validator": "body",
                        "parameters": [
                            {"in": "body", "name": "b", "schema": {"type": "object"}},
                        ],
                    }
                )
            }
        },
    }
    result = import_openapi(write_spec(tmp_path, spec))
    api = api_of(result)
    model = api["routes"]["POST /things"]["validate"]["body"]
    assert api["models"][model] == {"type": "object"}
    check(result, tmp_path)


def test_unknown_validator_is_a_warning(tmp_path: Path) -> None:
    spec = oas({"/a": {"get": mock_op(**{"x-amazon-apigateway-request-validator": "nope"})}})
    result = import_openapi(write_spec(tmp_path, spec))
    assert warned(result, "/get/x-amazon-apigateway-request-validator", "'nope'", "not defined")


def test_aws_proxy_with_local_handler_becomes_function(tmp_path: Path) -> None:
    (tmp_path / "shop_handlers.py").write_text(
        "def get_item(event, context):\n    return {'statusCode': 200, 'body': 'ok'}\n"
    )
    spec = oas(
        {
            "/items/{id}": {
                "get": {
                    "x-pygw-handler": "shop_handlers:get_item",
                    "x-amazon-apigateway-integration": {
                        "type": "aws_proxy",
                        "httpMethod": "POST",
                        "uri": "arn:aws:apigateway:us-east-1:lambda:path/functions/x/invocations",
                        "payloadFormatVersion": "2.0",
                        "timeoutInMillis": 5000,
                    },
                }
            }
        }
    )
    rest = import_openapi(write_spec(tmp_path, spec))
    assert api_of(rest)["routes"]["GET /items/{id}"]["integration"] == {
        "type": "function",
        "handler": "shop_handlers:get_item",
        "timeout_ms": 5000,
    }
    assert warned(rest, "payloadFormatVersion", "1.0")
    assert rest.config["python_path"] == [str(tmp_path.resolve())]
    check(rest, tmp_path)
    http = import_openapi(write_spec(tmp_path, spec), style="http")
    assert api_of(http)["routes"]["GET /items/{id}"]["integration"]["payload_format"] == "2.0"
    assert not http.warnings
    check(http, tmp_path)


def test_lambda_authorizer_with_handler_becomes_custom(tmp_path: Path) -> None:
    (tmp_path / "authz.py").write_text("def check(event, context):\n    raise Exception('no')\n")
    spec = {
        "swagger": "2.0",
        "info": {"title": "a"},
        "securityDefinitions": {
            "tok": {
                "type": "apiKey",
                "name": "Authorization",
                "in": "header",
                "x-pygw-handler": "authz:check",
                "x-amazon-apigateway-authtype": "custom",
                "x-amazon-apigateway-authorizer": {
                    "type": "token",
                    "authorizerUri": "arn:aws:lambda:...",
                    "identitySource": "method.request.header.X-Token",
                    "identityValidationExpression": "^Bearer .+$",
                    "authorizerResultTtlInSeconds": 60,
                },
            },
            "req": {
                "type": "apiKey",
                "name": "auth",
                "in": "query",
                "x-amazon-apigateway-authorizer": {
                    "type": "request",
                    "x-pygw-handler": "authz:check",
                    "identitySource": "method.request.header.X-A, method.request.querystring.b",
                    "authorizerResultTtlInSeconds": 0,
                },
            },
        },
        "paths": {
            "/t": {"get": mock_op(security=[{"tok": []}])},
            "/r": {"get": mock_op(security=[{"req": []}])},
        },
    }
    result = import_openapi(write_spec(tmp_path, spec))
    api = api_of(result)
    assert api["authorizers"]["tok"] == {
        "type": "custom",
        "handler": "authz:check",
        "kind": "TOKEN",
        "identity_source": ["header.x-token"],
        "validation_regex": "^Bearer .+$",
        "ttl_s": 60,
    }
    assert api["authorizers"]["req"]["kind"] == "REQUEST"
    assert api["authorizers"]["req"]["identity_source"] == ["header.x-a", "querystring.b"]
    assert api["routes"]["GET /r"]["authorizer"] == "req"
    assert not result.warnings
    check(result, tmp_path)


def test_cognito_with_pool_arn_imports_as_cognito_user_pools(tmp_path: Path) -> None:
    spec = oas(
        {
            "/me": {"get": mock_op(security=[{"pool": ["email", "openid"]}])},
            "/open": {"get": mock_op(security=[])},
        },
        security=[{"pool": []}],
        components={
            "securitySchemes": {
                "pool": {
                    "type": "apiKey",
                    "name": "Authorization",
                    "in": "header",
                    "x-pygw-audience": ["client-1"],
                    "x-amazon-apigateway-authorizer": {
                        "type": "cognito_user_pools",
                        "providerARNs": [
                            "arn:aws:cognito-idp:eu-west-1:123456789012:userpool/eu-west-1_AbC"
                        ],
                    },
                }
            }
        },
    )
    result = import_openapi(write_spec(tmp_path, spec))
    api = api_of(result)
    # REST-style: AWS's own Cognito authorizer, the audience as its accepted app clients.
    assert api["authorizers"]["pool"] == {
        "type": "cognito_user_pools",
        "provider_arns": ["arn:aws:cognito-idp:eu-west-1:123456789012:userpool/eu-west-1_AbC"],
        "app_clients": ["client-1"],
        "identity_source": ["header.authorization"],
    }
    assert api["routes"]["GET /me"]["scopes"] == ["email", "openid"]
    assert "authorizer" not in api["routes"]["GET /open"]  # `security: []` opts out
    check(result, tmp_path)

    # HTTP-style: a JWT authorizer with the pool as issuer, which needs the audience.
    http = import_openapi(write_spec(tmp_path, spec), style="http")
    assert api_of(http)["authorizers"]["pool"] == {
        "type": "jwt",
        "issuer": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC",
        "audience": ["client-1"],
        "identity_source": ["header.authorization"],
    }
    check(http, tmp_path)

    del spec["components"]["securitySchemes"]["pool"]["x-pygw-audience"]
    # AWS's REST Cognito authorizer takes tokens of any app client of the pool.
    any_client = import_openapi(write_spec(tmp_path, spec))
    assert "app_clients" not in api_of(any_client)["authorizers"]["pool"]
    assert api_of(any_client)["authorizers"]["pool"]["type"] == "cognito_user_pools"
    closed = import_openapi(write_spec(tmp_path, spec), style="http")
    assert api_of(closed)["authorizers"]["pool"]["handler"] == REFUSING_HANDLER
    assert warned(closed, "x-pygw-audience")
    check(closed, tmp_path)


def test_http_api_jwt_authorizer(tmp_path: Path) -> None:
    spec = oas(
        {"/x": {"get": mock_op(security=[{"jwt": ["read"]}])}},
        components={
            "securitySchemes": {
                "jwt": {
                    "type": "oauth2",
                    "flows": {},
                    "x-amazon-apigateway-authorizer": {
                        "type": "jwt",
                        "identitySource": "$request.header.Authorization",
                        "jwtConfiguration": {
                            "issuer": "https://idp.example",
                            "audience": ["shop"],
                        },
                    },
                }
            }
        },
    )
    result = import_openapi(write_spec(tmp_path, spec), style="http")
    api = api_of(result)
    assert api["authorizers"]["jwt"]["issuer"] == "https://idp.example"
    assert api["authorizers"]["jwt"]["identity_source"] == ["header.authorization"]
    assert api["routes"]["GET /x"]["scopes"] == ["read"]
    check(result, tmp_path)


def test_api_keys(tmp_path: Path) -> None:
    spec = oas(
        {"/k": {"get": mock_op(security=[{"key": []}])}},
        components={
            "securitySchemes": {"key": {"type": "apiKey", "name": "x-api-key", "in": "header"}}
        },
        **{"x-amazon-apigateway-api-key-source": "HEADER"},
    )
    result = import_openapi(write_spec(tmp_path, spec))
    api = api_of(result)
    assert api["routes"]["GET /k"]["api_key_required"] is True
    assert api["api_keys"] == [{"id": "default", "value": "${env:PYGW_API_KEY}"}]
    assert not result.warnings
    check(result, tmp_path, env={"PYGW_API_KEY": "secret"})
    with pytest.raises(ConfigError, match="PYGW_API_KEY"):
        parse_config(yaml.safe_dump(result.config), "<imported>", env={})

    spec["x-amazon-apigateway-api-key-source"] = "AUTHORIZER"
    authorizer_source = import_openapi(write_spec(tmp_path, spec))
    assert warned(authorizer_source, "#/x-amazon-apigateway-api-key-source", "x-api-key header")


def test_binary_media_types_gateway_responses_and_unknown_extensions(tmp_path: Path) -> None:
    spec = oas(
        {"/a": {"get": mock_op(**{"x-amazon-apigateway-auth": {"type": "NOT_A_KIND"}})}},
        **{
            "x-amazon-apigateway-binary-media-types": ["image/png", "*/*", "nonsense"],
            "x-amazon-apigateway-gateway-responses": {
                "DEFAULT_4XX": {"statusCode": 400},
                "THROTTLED": {"statusCode": 429},
            },
            "x-amazon-apigateway-policy": {"Version": "2012-10-17"},
            "x-amazon-apigateway-minimum-compression-size": 0,
        },
    )
    result = import_openapi(write_spec(tmp_path, spec))
    api = api_of(result)
    assert api["binary_media_types"] == ["image/png", "*/*"]
    assert warned(result, "#/x-amazon-apigateway-binary-media-types/2", "nonsense")
    assert warned(
        result, "#/x-amazon-apigateway-gateway-responses/DEFAULT_4XX", "standard gateway response"
    )
    assert warned(result, "#/x-amazon-apigateway-gateway-responses/THROTTLED")
    assert warned(result, "#/x-amazon-apigateway-policy", "not supported")
    assert api["minimum_compression_size"] == 0
    assert not warned(result, "#/x-amazon-apigateway-minimum-compression-size")
    assert warned(result, "#/paths/~1a/get/x-amazon-apigateway-auth", "not supported")
    check(result, tmp_path)


def test_cors_extension_that_pygw_refuses_is_a_warning(tmp_path: Path) -> None:
    spec = oas(
        {"/a": {"get": mock_op()}},
        **{"x-amazon-apigateway-cors": {"allowOrigins": ["*"], "allowCredentials": True}},
    )
    result = import_openapi(write_spec(tmp_path, spec))
    assert "cors" not in api_of(result)
    assert warned(result, "#/x-amazon-apigateway-cors", "no CORS")


def test_http_request_parameters(tmp_path: Path) -> None:
    spec = oas(
        {
            "/u/{id}": {
                "get": {
                    "x-amazon-apigateway-integration": {
                        "type": "http_proxy",
                        "uri": "http://backend.example/users/{userId}",
                        "requestParameters": {
                            "integration.request.path.userId": "method.request.path.id",
                            "integration.request.header.X-Source": "'gateway'",
                            "integration.request.querystring.q": "method.request.querystring.q",
                            "integration.request.header.X-Q": "method.request.querystring.q",
                        },
                    }
                }
            }
        }
    )
    rest = import_openapi(write_spec(tmp_path, spec), upstreams={"backend.example": "http://l:1"})
    route = api_of(rest)["routes"]["GET /u/{id}"]
    assert route["integration"] == {"type": "http_proxy", "uri": "http://l:1/users/{id}"}
    assert "mapping" not in route
    assert warned(rest, "requestParameters/integration.request.header.X-Source", "not applied")
    assert not warned(rest, "integration.request.querystring.q")
    check(rest, tmp_path)
    http = import_openapi(write_spec(tmp_path, spec), style="http")
    assert api_of(http)["routes"]["GET /u/{id}"]["mapping"] == {
        "request": {
            "overwrite:header.X-Source": "gateway",
            "overwrite:header.X-Q": "$request.querystring.q",
        }
    }
    assert not http.warnings
    check(http, tmp_path)


def test_uri_param_the_route_does_not_capture(tmp_path: Path) -> None:
    spec = oas(
        {
            "/a": {
                "get": {
                    "x-amazon-apigateway-integration": {
                        "type": "http_proxy",
                        "uri": "http://b.example/{nope}",
                    }
                }
            }
        }
    )
    result = import_openapi(write_spec(tmp_path, spec))
    assert api_of(result)["routes"]["GET /a"]["integration"]["status"] == 501
    assert warned(result, "/uri", "{nope}")
    check(result, tmp_path)


def test_operation_without_integration_uses_server_upstream(tmp_path: Path) -> None:
    spec = oas(
        {"/items/{id}": {"get": {"responses": {}}}, "/x": {"trace": {}}},
        servers=[{"url": "https://api.example.com/{ver}", "variables": {"ver": {"default": "v2"}}}],
    )
    plain = import_openapi(write_spec(tmp_path, spec))
    api = api_of(plain)
    assert api["base_path"] == "/v2"
    assert api["routes"]["GET /items/{id}"]["integration"]["status"] == 501
    assert warned(plain, "#/paths/~1items~1{id}/get", "no x-amazon-apigateway-integration")
    assert warned(plain, "#/paths/~1x/trace", "not supported")
    proxied = import_openapi(
        write_spec(tmp_path, spec), upstreams={"api.example.com": "http://127.0.0.1:9"}
    )
    assert api_of(proxied)["routes"]["GET /items/{id}"]["integration"] == {
        "type": "http_proxy",
        "uri": "http://127.0.0.1:9/items/{id}",
    }


def test_conflicting_and_invalid_paths_are_warnings(tmp_path: Path) -> None:
    spec = oas(
        {
            "/a/{x}": {"get": mock_op()},
            "/a/{y}": {"get": mock_op()},
            "/b{c}": {"get": mock_op()},
            "/p/{proxy+}": {"x-amazon-apigateway-any-method": mock_op()},
        }
    )
    result = import_openapi(write_spec(tmp_path, spec))
    assert set(api_of(result)["routes"]) == {"GET /a/{x}", "ANY /p/{proxy+}"}
    assert warned(result, "#/paths/~1a~1{y}/get", "GET /a/{x}")
    assert warned(result, "#/paths/~1b{c}/get", "cannot be served")
    check(result, tmp_path)


def test_env_references_in_the_definition_stay_text(tmp_path: Path) -> None:
    op = mock_op()
    op["x-amazon-apigateway-integration"]["responses"]["default"]["responseTemplates"] = {
        "text/plain": "home is ${env:HOME}"
    }
    result = import_openapi(write_spec(tmp_path, oas({"/a": {"get": op}})))
    config = parse_config(yaml.safe_dump(result.config), "<x>", env={"HOME": "/root"})
    route = config.apis[0].routes["GET /a"]
    assert route.templates is not None
    assert route.templates.response == {"text/plain": "home is ${env:HOME}"}


def test_yaml_output_carries_warnings_as_comments(tmp_path: Path) -> None:
    spec = oas({"/a": {"get": mock_op()}}, **{"x-amazon-apigateway-policy": {}})
    result = import_openapi(write_spec(tmp_path, spec))
    text = result.to_yaml()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("#/x-amazon-apigateway-policy" in line for line in header)
    assert yaml.safe_load(text) == result.config


def test_yaml_definition(tmp_path: Path) -> None:
    path = tmp_path / "api.yaml"
    path.write_text(
        textwrap.dedent(
            """
            openapi: 3.0.1
            info: {title: my api, version: '1'}
            paths:
              /hello:
                get:
                  x-amazon-apigateway-integration:
                    type: mock
                    requestTemplates: {application/json: '{"statusCode": 201}'}
                    responses:
                      "2\\\\d{2}": {statusCode: 201, selectionPattern: "2\\\\d{2}"}
                      default: {statusCode: 500}
            """
        )
    )
    result = import_openapi(path)
    api = api_of(result)
    assert api["name"] == "my-api"
    assert api["routes"]["GET /hello"]["integration"]["status"] == 201
    assert warned(result, "responses", "never selected")


def test_unreadable_inputs_raise_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        import_openapi(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        import_openapi(bad)
    other = write_spec(tmp_path, {"hello": "world"}, "other.json")
    with pytest.raises(ConfigError, match=r"not an OpenAPI 3 or Swagger 2\.0"):
        import_openapi(other)
    good = write_spec(tmp_path, oas({"/a": {"get": mock_op()}}))
    with pytest.raises(ConfigError, match="stage"):
        import_openapi(good, stage="a/b")
    with pytest.raises(ValueError, match="style"):
        import_openapi(good, style="websocket")


def test_load_openapi_config(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, oas({"/a": {"get": mock_op()}}))
    loaded = load_openapi_config(spec, "v1", None, admin_listen="127.0.0.1:0")
    assert loaded.path == spec.resolve()
    assert loaded.folder == tmp_path.resolve()
    assert loaded.config.apis[0].stages[0].name == "v1"
    assert loaded.config.admin.listen == "127.0.0.1:0"
    assert list(loaded.config.apis[0].routes) == ["GET /a"]
    default = load_openapi_config(spec)
    assert default.config.apis[0].stages[0].name == "$default"
    runtime = compile_runtime(default, Metrics())
    assert any(row["route"] == "GET /a" for row in runtime.route_table())


def test_parse_upstreams_and_helpers() -> None:
    assert parse_upstreams(["a.example=http://127.0.0.1:1", "${uri}=http://x:2/p"]) == {
        "a.example": "http://127.0.0.1:1",
        "${uri}": "http://x:2/p",
    }
    with pytest.raises(ValueError, match="KEY=URL"):
        parse_upstreams(["nothing"])
    assert pointer("paths", "/a~b", "get") == "#/paths/~1a~0b/get"
    with pytest.raises(Exception, match="Unauthorized"):
        refuse_unresolved({}, None)


# --------------------------------------------------------------------------------------------------
# --handler, mock response templates, and when an import fails

LAMBDA_URI = (
    "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
    "arn:aws:lambda:us-east-1:123456789012:function:{name}/invocations"
)


def aws_proxy(uri: str) -> dict[str, Any]:
    return {
        "x-amazon-apigateway-integration": {"type": "aws_proxy", "httpMethod": "POST", "uri": uri}
    }


def test_parse_handlers_and_lambda_names() -> None:
    assert parse_handlers(["GetItem=shop:get_item", "arn:aws:lambda:x:function:f=m.n:f"]) == {
        "GetItem": "shop:get_item",
        "arn:aws:lambda:x:function:f": "m.n:f",
    }
    for bad in ("GetItem", "=shop:get", "GetItem=shop", "GetItem=shop:get-item"):
        with pytest.raises(ValueError, match="ARN_OR_NAME=module:callable"):
            parse_handlers([bad])
    assert lambda_name(LAMBDA_URI.format(name="GetItem")) == "GetItem"
    assert lambda_name(LAMBDA_URI.format(name="GetItem:live")) == "GetItem"
    assert lambda_name("arn:aws:lambda:us-east-1:1:function:fn-1") == "fn-1"
    assert lambda_name("${lambda_arn}") is None


def test_handler_option_matches_uri_or_function_name(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(
        "def get(event, context):\n    return {'statusCode': 200, 'body': 'ok'}\n"
        "def auth(event, context):\n    return {'principalId': 'u', 'policyDocument': {}}\n"
    )
    spec = oas(
        {
            "/by-name": {"get": aws_proxy(LAMBDA_URI.format(name="GetItem:live"))},
            "/by-uri": {"get": aws_proxy("${lambda_arn}")},
            "/none": {"get": aws_proxy(LAMBDA_URI.format(name="Other"))},
            "/secured": {"get": {**mock_op(), "security": [{"lambda": []}]}},
        },
        components={
            "securitySchemes": {
                "lambda": {
                    "type": "apiKey",
                    "name": "Authorization",
                    "in": "header",
                    "x-amazon-apigateway-authorizer": {
                        "type": "token",
                        "authorizerUri": LAMBDA_URI.format(name="Authorizer"),
                    },
                }
            }
        },
    )
    path = write_spec(tmp_path, spec)
    handlers = {
        "GetItem": "shop:get",
        "${lambda_arn}": "shop:get",
        "Authorizer": "shop:auth",
        "Unused": "shop:get",
    }
    result = import_openapi(path, handlers=handlers)
    routes = api_of(result)["routes"]
    assert routes["GET /by-name"]["integration"] == {"type": "function", "handler": "shop:get"}
    assert routes["GET /by-uri"]["integration"] == {"type": "function", "handler": "shop:get"}
    assert routes["GET /none"]["integration"]["status"] == 501
    assert warned(result, "~1none/get/x-amazon-apigateway-integration", "--handler Other=")
    assert api_of(result)["authorizers"]["lambda"]["handler"] == "shop:auth"
    assert warned(result, "--handler Unused", "matches no")
    assert not warned(result, "--handler GetItem") and not warned(result, "Authorizer=")
    assert result.errors == []
    assert result.config["python_path"] == [str(tmp_path.resolve())]
    check(result, tmp_path)
    # Without handlers: every route is a stand-in or refuses; the authorizer names its fix.
    bare = import_openapi(path)
    assert warned(bare, "securitySchemes/lambda", "--handler Authorizer=module:callable")
    assert bare.errors and "none of the 4 route(s)" in bare.errors[0]


def test_mock_response_templates_and_parameters(tmp_path: Path) -> None:
    op = mock_op()
    op["x-amazon-apigateway-integration"]["responses"]["default"].update(
        {
            "responseParameters": {
                "method.response.header.Access-Control-Allow-Origin": "'*'",
                "method.response.header.X-Request": "context.requestId",
            },
            "responseTemplates": {
                "application/json": '{"stage": "$context.stage"}',
                "application/xml": "<stage>$context.stage</stage>",
            },
        }
    )
    result = import_openapi(write_spec(tmp_path, oas({"/a": {"get": op}})), stage="v1")
    route = api_of(result)["routes"]["GET /a"]
    # Several templates: no fixed Content-Type, so the client's Accept picks one.
    assert route["integration"] == {
        "type": "mock",
        "status": 200,
        "headers": {"Access-Control-Allow-Origin": "*"},
    }
    assert route["templates"] == {
        "response": {
            "application/json": '{"stage": "$context.stage"}',
            "application/xml": "<stage>$context.stage</stage>",
        }
    }
    assert warned(result, "responseParameters/method.response.header.X-Request", "not a static")
    assert not warned(result, "responseTemplates")
    check(result, tmp_path)
    # A static Content-Type response parameter is kept as the mock's header.
    op["x-amazon-apigateway-integration"]["responses"]["default"]["responseParameters"] = {
        "method.response.header.Content-Type": "'text/html'"
    }
    op["x-amazon-apigateway-integration"]["responses"]["default"]["responseTemplates"] = {
        "text/html": "<p>$context.stage</p>",
        "": "not a media type",
    }
    result = import_openapi(write_spec(tmp_path, oas({"/a": {"get": op}})))
    route = api_of(result)["routes"]["GET /a"]
    assert route["integration"]["headers"] == {"Content-Type": "text/html"}
    assert route["templates"] == {"response": {"text/html": "<p>$context.stage</p>"}}
    assert warned(result, "responseTemplates/", "not a media type")


def test_errors_only_when_the_api_cannot_work(tmp_path: Path) -> None:
    lam = aws_proxy(LAMBDA_URI.format(name="Fn"))
    preflight = mock_op()
    # Some routes work: warnings, no errors.
    mixed = import_openapi(
        write_spec(tmp_path, oas({"/a": {"get": mock_op()}, "/b": {"get": lam}}))
    )
    assert mixed.warnings and mixed.errors == []
    # Only stand-ins (CORS preflight mocks do not count): an error naming what to add.
    broken = import_openapi(write_spec(tmp_path, oas({"/b": {"get": lam, "options": preflight}})))
    assert len(broken.errors) == 1
    assert "besides OPTIONS" in broken.errors[0] and "--handler" in broken.errors[0]
    assert "# ERROR: none of the 1 route(s)" in broken.to_yaml()
    # An API of OPTIONS mocks only still works.
    assert import_openapi(write_spec(tmp_path, oas({"/c": {"options": preflight}}))).errors == []
    # No paths at all.
    empty = import_openapi(write_spec(tmp_path, oas({})))
    assert empty.errors == ["the definition yields no route: there is nothing to serve"]


def test_minimum_compression_size_is_imported_for_rest_apis_only(tmp_path: Path) -> None:
    spec = oas({"/a": {"get": mock_op()}}, **{"x-amazon-apigateway-minimum-compression-size": 1024})
    rest = import_openapi(write_spec(tmp_path, spec))
    assert api_of(rest)["minimum_compression_size"] == 1024
    check(rest, tmp_path)
    http = import_openapi(write_spec(tmp_path, spec), style="http")
    assert "minimum_compression_size" not in api_of(http)
    assert warned(http, "#/x-amazon-apigateway-minimum-compression-size", "HTTP-style")
    check(http, tmp_path)
    spec["x-amazon-apigateway-minimum-compression-size"] = 10_485_761
    too_large = import_openapi(write_spec(tmp_path, spec))
    assert "minimum_compression_size" not in api_of(too_large)
    assert warned(too_large, "#/x-amazon-apigateway-minimum-compression-size", "10485760")
