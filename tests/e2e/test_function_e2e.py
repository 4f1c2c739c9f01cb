"""Real Lambda code behind `pygw serve`: a FastAPI app wrapped by Mangum, and Powertools resolvers.

The handlers (tests/integration/handlers/) are written exactly as they would be deployed on
Lambda; the assertions are on the HTTP responses a client sees: path parameters, query strings,
JSON bodies, cookies, binary responses and error statuses, in payload formats 1.0 and 2.0.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from tests.e2e.gateway_process import GatewayProcess

HANDLERS = Path(__file__).resolve().parents[1] / "integration" / "handlers"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

CONFIG = """
admin: {listen: "127.0.0.1:0"}
access_log: null
python_path: [%(handlers)s]
apis:
  - name: fastapi-http
    type: http
    hosts: [fastapi-http.test]
    routes:
      "$default":
        integration: {type: function, handler: "asgi_app:handler"}
  - name: fastapi-rest
    type: rest
    hosts: [fastapi-rest.test]
    stages: [{name: prod}]
    binary_media_types: [image/png]
    routes:
      "ANY /{proxy+}":
        integration: {type: function, handler: "asgi_app:handler"}
  - name: powertools-http
    type: http
    hosts: [powertools-http.test]
    routes:
      "ANY /{proxy+}":
        integration: {type: function, handler: "powertools_app:http_handler", payload_format: "2.0"}
  - name: powertools-rest
    type: rest
    hosts: [powertools-rest.test]
    stages: [{name: prod}]
    binary_media_types: [image/png]
    routes:
      "GET /users/{id}":
        integration: {type: function, handler: "powertools_app:rest_handler"}
      "ANY /{proxy+}":
        integration: {type: function, handler: "powertools_app:rest_handler"}
"""

HTTP_APPS = ["fastapi-http.test", "powertools-http.test"]
REST_APPS = ["fastapi-rest.test", "powertools-rest.test"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("functions")
    config = folder / "pygw.yaml"
    config.write_text(textwrap.dedent(CONFIG % {"handlers": json.dumps(str(HANDLERS))}))
    process = GatewayProcess(config)
    try:
        process.start()
    except RuntimeError as failed:
        if "'function' is not available" in str(failed):
            pytest.skip("the function integration is not wired into the runtime yet")
        raise
    yield process
    process.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as client:
        yield client


def _prefix(host: str) -> str:
    return "/prod" if host in REST_APPS else ""


async def _call(
    session: aiohttp.ClientSession,
    gateway: GatewayProcess,
    host: str,
    method: str,
    path: str,
    **kwargs: Any,
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    headers = {"Host": host, **kwargs.pop("headers", {})}
    async with session.request(
        method, gateway.url + _prefix(host) + path, headers=headers, **kwargs
    ) as resp:
        return resp.status, resp.headers, await resp.read()


def _users(host: str) -> str:
    return "/items" if host.startswith("fastapi") else "/users"


@pytest.mark.parametrize("host", HTTP_APPS + REST_APPS)
async def test_path_parameters_and_query(
    gateway: GatewayProcess, session: aiohttp.ClientSession, host: str
) -> None:
    if host.startswith("fastapi"):
        status, _, body = await _call(session, gateway, host, "GET", "/items/42?q=a+b")
        assert status == 200
        assert json.loads(body) == {"item_id": 42, "q": "a b"}
        status, _, _ = await _call(session, gateway, host, "GET", "/items/not-a-number")
        assert status == 422
    else:
        status, _, body = await _call(session, gateway, host, "GET", "/users/42?verbose=yes")
        assert status == 200
        assert json.loads(body) == {"user_id": "42", "verbose": "yes"}


@pytest.mark.parametrize("host", HTTP_APPS + REST_APPS)
async def test_json_body(
    gateway: GatewayProcess, session: aiohttp.ClientSession, host: str
) -> None:
    payload = {"name": "widget", "price": 9.5}
    status, headers, body = await _call(session, gateway, host, "POST", _users(host), json=payload)
    assert status == 201
    assert headers["Content-Type"].startswith("application/json")
    expected = (
        {"created": "widget", "price": 9.5} if host.startswith("fastapi") else {"created": "widget"}
    )
    assert json.loads(body) == expected


@pytest.mark.parametrize("host", HTTP_APPS + REST_APPS)
async def test_cookies_both_ways(
    gateway: GatewayProcess, session: aiohttp.ClientSession, host: str
) -> None:
    async with session.get(
        gateway.url + _prefix(host) + "/cookies",
        headers={"Host": host, "Cookie": "a=1; b=2"},
    ) as resp:
        assert resp.status == 200
        seen = await resp.json()
        set_cookies = resp.headers.getall("Set-Cookie")
    assert any(c.startswith("session=abc") for c in set_cookies)
    assert any(c.startswith("theme=dark") for c in set_cookies)
    if host.startswith("fastapi"):
        assert seen == {"seen": {"a": "1", "b": "2"}}
    elif host in HTTP_APPS:
        assert seen["cookies"] == ["a=1", "b=2"]
    else:
        assert seen["header"] == "a=1; b=2"


@pytest.mark.parametrize("host", HTTP_APPS + REST_APPS)
async def test_binary_response(
    gateway: GatewayProcess, session: aiohttp.ClientSession, host: str
) -> None:
    status, headers, body = await _call(
        session, gateway, host, "GET", "/image", headers={"Accept": "image/png"}
    )
    assert status == 200
    assert headers["Content-Type"] == "image/png"
    assert body.startswith(PNG_MAGIC)


@pytest.mark.parametrize("host", HTTP_APPS + REST_APPS)
async def test_error_statuses(
    gateway: GatewayProcess, session: aiohttp.ClientSession, host: str
) -> None:
    status, _, body = await _call(session, gateway, host, "GET", "/missing")
    assert status == 404
    if host.startswith("fastapi"):
        assert json.loads(body) == {"detail": "no such thing"}
    else:
        assert json.loads(body)["message"] == "nothing here"
    status, headers, body = await _call(session, gateway, host, "GET", "/boom")
    if host.startswith("fastapi"):
        # Starlette answers an unhandled error itself; Mangum returns that answer.
        assert (status, body) == (500, b"Internal Server Error")
    elif host in REST_APPS:
        assert (status, json.loads(body)) == (502, {"message": "Internal server error"})
        assert headers["x-amzn-ErrorType"] == "InternalServerErrorException"
    else:
        assert status == 500
    assert b"unhandled" not in body


async def test_powertools_custom_status(
    gateway: GatewayProcess, session: aiohttp.ClientSession
) -> None:
    for host in ("powertools-http.test", "powertools-rest.test"):
        status, headers, body = await _call(session, gateway, host, "GET", "/teapot")
        assert (status, body) == (418, b"short and stout")
        assert headers["Content-Type"].startswith("text/plain")


async def test_rest_binary_needs_a_binary_accept(
    gateway: GatewayProcess, session: aiohttp.ClientSession
) -> None:
    # A REST API hands base64 back as text unless the client accepts a binary media type.
    status, _, body = await _call(
        session, gateway, "powertools-rest.test", "GET", "/image", headers={"Accept": "text/html"}
    )
    assert status == 200
    assert not body.startswith(PNG_MAGIC)
