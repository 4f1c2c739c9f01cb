"""Cognito user pool authorizers (REST-style) against the running gateway on 127.0.0.1.

Tokens shaped like Cognito's (ID and access tokens) are signed in the test with an RSA key whose
JWKS the configuration points at; a function integration echoes the event it receives, so the
tests see the claims exactly as a Lambda function behind AWS would.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import ClientSession
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from pygw.server import Gateway

REGION = "us-east-1"
POOL_ID = "us-east-1_Ab12"
POOL_ARN = f"arn:aws:cognito-idp:{REGION}:123456789012:userpool/{POOL_ID}"
ISSUER = f"https://cognito-idp.{REGION}.amazonaws.com/{POOL_ID}"
OTHER_ISSUER = f"https://cognito-idp.{REGION}.amazonaws.com/us-east-1_Other"
SCOPE = "shop/orders.read"

ECHO = """
import json


def handler(event, context):
    return {"statusCode": 200, "body": json.dumps(event)}
"""

CONFIG = """
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
access_log: null
python_path: ["."]
apis:
  - name: shop
    type: rest
    authorizers:
      pool: {type: cognito_user_pools, provider_arns: ["%(arn)s"], jwks: keys/pool-jwks.json}
      clients:
        type: cognito_user_pools
        provider_arns: ["%(arn)s"]
        jwks: keys/pool-jwks.json
        app_clients: [client-a]
    routes:
      "GET /me":
        integration: {type: function, handler: "echo:handler"}
        authorizer: pool
      "GET /orders":
        integration: {type: function, handler: "echo:handler"}
        authorizer: pool
        authorization_scopes: ["%(scope)s"]
      "GET /client":
        integration: {type: function, handler: "echo:handler"}
        authorizer: clients
      "GET /client-orders":
        integration: {type: function, handler: "echo:handler"}
        authorizer: clients
        authorization_scopes: ["%(scope)s"]
      "GET /greeting":
        integration: {type: mock, status: 200}
        authorizer: pool
        templates:
          response:
            application/json: >-
              {"user": "$context.authorizer.claims['cognito:username']",
               "groups": "$context.authorizer.claims['cognito:groups']"}
"""


@dataclass
class Served:
    url: str
    key: rsa.RSAPrivateKey
    other_key: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@pytest.fixture
async def served(
    tmp_path: Path, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> AsyncIterator[Served]:
    key, other = keys
    (tmp_path / "keys").mkdir()
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "alg": "RS256"}
    (tmp_path / "keys" / "pool-jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (tmp_path / "echo.py").write_text(ECHO)
    config = tmp_path / "gateway.yaml"
    config.write_text(textwrap.dedent(CONFIG % {"arn": POOL_ARN, "scope": SCOPE}))
    gateway = Gateway(config)
    await gateway.start()
    try:
        yield Served(f"http://127.0.0.1:{gateway.bound[1]}", key, other)
    finally:
        await gateway.drain()


NOW = int(time.time())


def id_token(key: rsa.RSAPrivateKey, **changes: Any) -> str:
    claims: dict[str, Any] = {
        "sub": "7d8ca528-4931-4254-9273-ea5ee853f271",
        "cognito:groups": ["admin", "users"],
        "email_verified": True,
        "iss": ISSUER,
        "cognito:username": "zoe",
        "aud": "client-a",
        "event_id": "cd5c1cab-e2ea-11e7-9614-c1a21c8b3f9a",
        "token_use": "id",
        "auth_time": NOW,
        "exp": NOW + 3600,
        "iat": NOW,
        "email": "zoe@example.com",
    }
    claims.update(changes)
    return jwt.encode(
        {k: v for k, v in claims.items() if v is not None},
        key,
        algorithm="RS256",
        headers={"kid": "k1"},
    )


def access_token(key: rsa.RSAPrivateKey, **changes: Any) -> str:
    claims: dict[str, Any] = {
        "sub": "7d8ca528-4931-4254-9273-ea5ee853f271",
        "iss": ISSUER,
        "client_id": "client-a",
        "token_use": "access",
        "scope": f"openid {SCOPE}",
        "auth_time": NOW,
        "exp": NOW + 3600,
        "iat": NOW,
        "jti": "5b2b1d2e-1111-2222-3333-444455556666",
        "username": "zoe",
    }
    claims.update(changes)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


async def call(url: str, token: str | None) -> tuple[int, dict[str, str], Any]:
    headers = {} if token is None else {"Authorization": token}
    async with ClientSession() as client, client.get(url, headers=headers) as response:
        body = await response.read()
        return response.status, dict(response.headers), orjson.loads(body) if body else None


def java_date(epoch_s: int) -> str:
    return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(epoch_s))


async def test_id_token_claims_reach_the_function_as_aws_shapes_them(served: Served) -> None:
    status, _, event = await call(served.url + "/me", id_token(served.key))
    assert status == 200
    authorizer = event["requestContext"]["authorizer"]
    assert authorizer == {
        "claims": {
            "sub": "7d8ca528-4931-4254-9273-ea5ee853f271",
            # Lists joined with commas, booleans and numbers as text, exp/iat as Java dates.
            "cognito:groups": "admin,users",
            "email_verified": "true",
            "iss": ISSUER,
            "cognito:username": "zoe",
            "aud": "client-a",
            "event_id": "cd5c1cab-e2ea-11e7-9614-c1a21c8b3f9a",
            "token_use": "id",
            "auth_time": str(NOW),
            "exp": java_date(NOW + 3600),
            "iat": java_date(NOW),
            "email": "zoe@example.com",
        }
    }
    # The raw token is what AWS takes; a "Bearer " prefix is accepted too.
    status, _, _ = await call(served.url + "/me", "Bearer " + id_token(served.key))
    assert status == 200


async def test_templates_see_the_same_claims(served: Served) -> None:
    status, _, body = await call(served.url + "/greeting", id_token(served.key))
    assert status == 200
    assert body == {"user": "zoe", "groups": "admin,users"}


@pytest.mark.parametrize(
    ("case", "token"),
    [
        ("missing", None),
        ("not a JWT", "not-a-token"),
        ("another pool", "id:iss=" + OTHER_ISSUER),
        ("expired", "id:exp=-60"),
        ("other key", "other"),
        ("access token without scopes on the route", "access"),
        ("unknown token_use", "id:token_use=refresh"),
    ],
)
async def test_refusals_are_401(served: Served, case: str, token: str | None) -> None:
    raw: str | None
    if token is None or token == "not-a-token":
        raw = token
    elif token == "other":
        raw = id_token(served.other_key)
    elif token == "access":
        raw = access_token(served.key)
    else:
        name, _, value = token.partition(":")[2].partition("=")
        changed: Any = NOW + int(value) if name == "exp" else value
        raw = id_token(served.key, **{name: changed})
    status, headers, body = await call(served.url + "/me", raw)
    assert (status, body) == (401, {"message": "Unauthorized"}), case
    assert headers["x-amzn-ErrorType"] == "UnauthorizedException"


async def test_scopes_need_an_access_token_with_one_of_them(served: Served) -> None:
    status, _, event = await call(served.url + "/orders", access_token(served.key))
    assert status == 200
    claims = event["requestContext"]["authorizer"]["claims"]
    assert claims["token_use"] == "access" and claims["scope"] == f"openid {SCOPE}"
    assert claims["client_id"] == "client-a"
    # An ID token, or an access token without the route's scope: AWS's 401.
    for token in (id_token(served.key), access_token(served.key, scope="openid profile")):
        status, _, body = await call(served.url + "/orders", token)
        assert (status, body) == (401, {"message": "Unauthorized"})


async def test_app_clients_check_aud_of_id_tokens_and_client_id_of_access_tokens(
    served: Served,
) -> None:
    assert (await call(served.url + "/client", id_token(served.key)))[0] == 200
    status, _, _ = await call(served.url + "/client", id_token(served.key, aud="client-b"))
    assert status == 401
    assert (await call(served.url + "/client-orders", access_token(served.key)))[0] == 200
    other_client = access_token(served.key, client_id="client-b")
    assert (await call(served.url + "/client-orders", other_client))[0] == 401
