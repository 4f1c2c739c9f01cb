"""`pygw serve --openapi SPEC` as a user runs it: a child process serving an imported definition."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.e2e.gateway_process import GatewayProcess
from tests.integration import test_cognito as cognito

SHARED_TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"
TESTDATA = SHARED_TESTDATA / "openapi"


class OpenApiGateway(GatewayProcess):
    """`python -m pygw serve --openapi SPEC --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0`."""

    def __init__(self, spec: Path, *extra: str) -> None:
        super().__init__(spec)
        self.extra = list(extra)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pygw",
            "serve",
            "--openapi",
            str(self.config),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            *self.extra,
        ]


async def _started(spec: Path, *extra: str) -> OpenApiGateway:
    process = OpenApiGateway(spec, *extra)
    await asyncio.to_thread(process.start)
    return process


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # One connection per request: a gateway's drain then has no idle keep-alive to wait out.
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        yield client


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"path": request.raw_path, "method": request.method})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _write(folder: Path, spec: dict[str, Any]) -> Path:
    path = folder / "api.json"
    path.write_text(json.dumps(spec))
    return path


SPEC: dict[str, Any] = {
    "openapi": "3.0.1",
    "info": {"title": "shop", "version": "1"},
    "servers": [{"url": "https://shop.example.com/shop"}],
    "paths": {
        "/hello": {
            "get": {
                "x-amazon-apigateway-integration": {
                    "type": "mock",
                    "requestTemplates": {"application/json": '{"statusCode": 200}'},
                    "responses": {
                        "default": {
                            "statusCode": "200",
                            "responseParameters": {"method.response.header.x-kind": "'mock'"},
                            "responseTemplates": {"application/json": '{"hello": "world"}'},
                        }
                    },
                }
            }
        },
        "/items/{id}": {
            "get": {
                "x-pygw-handler": "shop_handlers:get_item",
                "x-amazon-apigateway-integration": {
                    "type": "aws_proxy",
                    "httpMethod": "POST",
                    "uri": "arn:aws:apigateway:us-east-1:lambda:path/functions/get/invocations",
                },
            }
        },
        "/backend/{rest+}": {
            "x-amazon-apigateway-any-method": {
                "x-amazon-apigateway-integration": {
                    "type": "http_proxy",
                    "httpMethod": "ANY",
                    "uri": "https://backend.example.com/api/{rest}",
                }
            }
        },
        "/private": {
            "get": {
                "security": [{"lambda": []}],
                "x-amazon-apigateway-integration": {"type": "mock"},
            }
        },
    },
    "components": {
        "securitySchemes": {
            "lambda": {
                "type": "apiKey",
                "name": "Authorization",
                "in": "header",
                "x-amazon-apigateway-authorizer": {"type": "token", "authorizerUri": "arn:x"},
            }
        }
    },
}

HANDLERS = """
import json


def get_item(event, context):
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(
            {"id": event["pathParameters"]["id"], "stage": event["requestContext"]["stage"]}
        ),
    }
"""


async def test_serve_openapi_routes(
    tmp_path: Path, session: aiohttp.ClientSession, upstream: str
) -> None:
    (tmp_path / "shop_handlers.py").write_text(HANDLERS)
    spec = _write(tmp_path, SPEC)
    gateway = await _started(spec, "--stage", "v1", "--upstream", f"backend.example.com={upstream}")
    try:
        base = gateway.url + "/shop/v1"
        async with session.get(base + "/hello") as response:
            assert response.status == 200
            assert response.headers["x-kind"] == "mock"
            assert response.headers["Content-Type"].startswith("application/json")
            assert await response.json() == {"hello": "world"}
        async with session.get(base + "/items/42") as response:
            assert response.status == 200
            assert await response.json() == {"id": "42", "stage": "v1"}
        async with session.post(base + "/backend/a/b?x=1") as response:
            assert response.status == 200
            assert await response.json() == {"path": "/api/a/b?x=1", "method": "POST"}
        # The Lambda authorizer names no local callable: the route fails closed.
        async with session.get(base + "/private", headers={"Authorization": "t"}) as response:
            assert response.status == 401
        # REST-style: an unknown path is 403 Missing Authentication Token.
        async with session.get(base + "/nowhere") as response:
            assert response.status == 403
        # The import's warnings are logged when the definition is loaded.
        assert "x-pygw-handler" in gateway.text()
    finally:
        await asyncio.to_thread(gateway.stop)


@pytest.mark.skipif(not TESTDATA.is_dir(), reason=f"{TESTDATA} is absent (shared test data)")
async def test_serve_openapi_testdata_mock(session: aiohttp.ClientSession) -> None:
    gateway = await _started(TESTDATA / "openapi-basepath-server-variable.yaml")
    try:
        async with session.get(gateway.url + "/base-var/test") as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "*"
        async with session.options(gateway.url + "/base-var/test") as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Methods"] == "GET,OPTIONS"
    finally:
        await asyncio.to_thread(gateway.stop)
    gateway = await _started(TESTDATA / "openapi-mock.json", "--style", "http")
    try:
        async with session.delete(gateway.url + "/echo/abc") as response:
            assert response.status == 200
            assert "mocked" in await response.text()
        async with session.get(gateway.url + "/nowhere") as response:
            assert response.status == 404  # HTTP-style not found
    finally:
        await asyncio.to_thread(gateway.stop)


def test_import_openapi_command(tmp_path: Path) -> None:
    spec = _write(tmp_path, SPEC)
    out = tmp_path / "pygw.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "pygw", "import-openapi", str(spec), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.startswith("# pygw configuration imported from")
    assert "#/components/securitySchemes/lambda/x-amazon-apigateway-authorizer" in text
    assert "x-pygw-handler" in done.stderr  # warnings also go to stderr
    (tmp_path / "shop_handlers.py").write_text(HANDLERS)
    checked = subprocess.run(
        [sys.executable, "-m", "pygw", "check", "-c", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "pygw", "import-openapi", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "file not found" in bad.stderr


PETSTORE = SHARED_TESTDATA / "openapi" / "petstore-swagger.json"
PETS = [{"id": 1, "type": "dog", "price": 249.99}, {"id": 2, "type": "cat", "price": 124.99}]


@pytest.fixture
async def petstore_upstream() -> AsyncIterator[tuple[str, list[str]]]:
    """A stand-in for the PetStore demo endpoint (`${uri}` = .../petstore/pets in AWS's sample)."""
    seen: list[str] = []

    async def pets(request: web.Request) -> web.StreamResponse:
        # Chunked, as a larger listing would be: pygw relays it as a stream.
        seen.append(request.path_qs)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        body = json.dumps(PETS).encode()
        await response.write(body[:10])
        await response.write(body[10:])
        await response.write_eof()
        return response

    async def pet(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        found = [p for p in PETS if str(p["id"]) == request.match_info["pet_id"]]
        if not found:
            return web.json_response({"message": "no such pet"}, status=404)
        return web.json_response(found[0])

    app = web.Application()
    app.router.add_get("/petstore/pets", pets)
    app.router.add_get("/petstore/pets/{pet_id}", pet)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


@pytest.mark.skipif(not PETSTORE.is_file(), reason=f"{PETSTORE} is absent (shared test data)")
async def test_serve_aws_petstore(
    session: aiohttp.ClientSession, petstore_upstream: tuple[str, list[str]]
) -> None:
    upstream, seen = petstore_upstream
    gateway = await _started(
        PETSTORE, "--stage", "test", "--upstream", f"${{uri}}={upstream}/petstore/pets"
    )
    try:
        base = gateway.url + "/test"
        # The mock's HTML page, its response template rendered with $context.stage.
        async with session.get(base + "/") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/html")
            page = await response.text()
            assert page.startswith("<html>")
            assert '<a href="/test/pets/" target="_blank">' in page
            assert '<a href="/test/pets/1" target="_blank">' in page
            assert "$context" not in page
        # /pets and /pets/{petId} go to the stand-in upstream, the query string with them.
        # The integration response's static header (Access-Control-Allow-Origin: '*') is on
        # the proxied answers, the streamed one too.
        async with session.get(base + "/pets", params={"type": "dog", "page": "1"}) as response:
            assert response.status == 200
            assert await response.json() == PETS
            assert response.headers["Access-Control-Allow-Origin"] == "*"
        async with session.get(base + "/pets/1") as response:
            assert response.status == 200
            assert await response.json() == PETS[0]
            assert response.headers["Access-Control-Allow-Origin"] == "*"
        async with session.get(base + "/pets/9") as response:
            assert response.status == 404
        assert seen == ["/petstore/pets?type=dog&page=1", "/petstore/pets/1", "/petstore/pets/9"]
        # The OPTIONS mocks answer preflights with the CORS headers the definition declares.
        preflight = {
            "Origin": "https://example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Content-Type",
        }
        async with session.options(base + "/pets", headers=preflight) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            assert response.headers["Access-Control-Allow-Methods"] == "POST,GET,OPTIONS"
            assert response.headers["Access-Control-Allow-Headers"] == (
                "Content-Type,X-Amz-Date,Authorization,X-Api-Key"
            )
        async with session.options(base + "/pets/1", headers=preflight) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "*"
            assert response.headers["Access-Control-Allow-Methods"] == "GET,OPTIONS"
        # POST /pets is proxied too; the stand-in has no POST route.
        async with session.post(base + "/pets", json={"type": "cat", "price": 1}) as response:
            assert response.status == 405
    finally:
        await asyncio.to_thread(gateway.stop)


CART = SHARED_TESTDATA / "openapi" / "swagger-mock-cors.json"
GET_PRODUCT = "aws-serverless-shopping-cart-produc-GetProductFunction-28378339"
GET_PRODUCTS = "aws-serverless-shopping-cart-produ-GetProductsFunction-c1359550"
CART_HANDLERS = """
import json


def get_product(event, context):
    return {"statusCode": 200, "body": json.dumps({"id": event["pathParameters"]["product_id"]})}


def list_products(event, context):
    return {"statusCode": 200, "body": json.dumps({"products": []})}
"""


def _pygw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pygw", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(not CART.is_file(), reason=f"{CART} is absent (shared test data)")
def test_import_openapi_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "cart.yaml"
    # Its Lambda routes have no local handler: only CORS preflight mocks would answer.
    failed = _pygw("import-openapi", str(CART), "-o", str(out))
    assert failed.returncode == 1
    assert f"--handler {GET_PRODUCT}=module:callable" in failed.stderr
    assert "error: none of the 2 route(s) besides OPTIONS preflight answers" in failed.stderr
    assert "# ERROR: " in out.read_text()  # the configuration is still written, to be edited
    given = _pygw(
        "import-openapi",
        str(CART),
        "-o",
        str(out),
        "--handler",
        f"{GET_PRODUCT}=cart:get_product",
        "--handler",
        f"{GET_PRODUCTS}=cart:list_products",
    )
    assert given.returncode == 0, given.stderr
    assert "warning:" not in given.stderr and "error:" not in given.stderr
    assert "handler: cart:get_product" in out.read_text()
    # Unsupported elements alone are warnings: PetStore without upstreams still serves its page.
    if PETSTORE.is_file():
        partial = _pygw("import-openapi", str(PETSTORE), "-o", str(tmp_path / "pets.yaml"))
        assert partial.returncode == 0, partial.stderr
        assert "${uri}" in partial.stderr and "error:" not in partial.stderr
    bad = _pygw("import-openapi", str(CART), "--handler", "no-callable")
    assert bad.returncode == 2
    assert "ARN_OR_NAME=module:callable" in bad.stderr


@pytest.mark.skipif(not CART.is_file(), reason=f"{CART} is absent (shared test data)")
async def test_serve_openapi_with_handler_option(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    # Handlers are imported from the definition's folder.
    spec = tmp_path / CART.name
    spec.write_text(CART.read_text())
    (tmp_path / "cart.py").write_text(CART_HANDLERS)
    gateway = await _started(
        spec,
        "--handler",
        f"{GET_PRODUCT}=cart:get_product",
        "--handler",
        f"arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:"
        f"000000000000:function:{GET_PRODUCTS}:live/invocations=cart:list_products",
    )
    try:
        async with session.get(gateway.url + "/product/abc") as response:
            assert response.status == 200
            assert await response.json() == {"id": "abc"}
        async with session.get(gateway.url + "/product") as response:
            assert response.status == 200
            assert await response.json() == {"products": []}
        async with session.options(gateway.url + "/product") as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:8080"
            assert response.headers["Access-Control-Allow-Methods"] == "OPTIONS,POST,GET"
    finally:
        await asyncio.to_thread(gateway.stop)


COGNITO = TESTDATA / "openapi.cognito-auth.json"


@pytest.mark.skipif(not COGNITO.is_file(), reason=f"{COGNITO} is absent (shared test data)")
async def test_serve_cognito_definition_with_a_jwks(
    session: aiohttp.ClientSession, upstream: str, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "alg": "RS256"}
    jwks = tmp_path / "pool-jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    gateway = await _started(
        COGNITO,
        "--jwks",
        f"*={jwks}",
        # The definition's providerARNs is a deployment-time placeholder.
        "--user-pool",
        f"${{cognito_pool_arn}}={cognito.POOL_ARN}",
        "--upstream",
        f"petstore-demo-endpoint.execute-api.com={upstream}",
        "--upstream",
        f"petstore.execute-api.us-west-1.amazonaws.com={upstream}",
    )

    async def status(path: str, token: str | None) -> int:
        # The security schemes name the header the token comes in.
        headers = {} if token is None else {"TestHeaderAuth": token}
        async with session.get(gateway.url + path, headers=headers) as response:
            return response.status

    id_token = cognito.id_token(key)
    email = cognito.access_token(key, scope="openid email")
    openid = cognito.access_token(key, scope="openid")
    try:
        assert await status("/default-no-scope", id_token) == 200
        assert await status("/default-no-scope", None) == 401
        assert await status("/default-no-scope", cognito.id_token(key, exp=1)) == 401
        # Scopes on the operation: an access token carrying one of them.
        assert await status("/default-scope-override", openid) == 200
        assert await status("/default-scope-override", id_token) == 401
        assert await status("/non-default-authorizer", email) == 200
        # The API-wide requirement (scope email) for an operation without its own.
        assert await status("/pets", email) == 200
        assert await status("/pets", openid) == 401
    finally:
        await asyncio.to_thread(gateway.stop)
