"""Authorizers against real servers on 127.0.0.1: a JWKS endpoint, and a small gateway front end.

The JWKS server counts its requests, so the tests can check that keys are fetched once, again on
an unknown kid, and never more often than the refresh interval however many kids are tried.
Time is a fake clock handed to the key store: no test depends on wall-clock timing.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import ClientSession, web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from pygw.config.load import LoadedConfig
from pygw.config.model import CustomAuthorizerConfig, GatewayConfig, JwtAuthorizerConfig
from pygw.context import RequestContext
from pygw.dispatch import error_response
from pygw.errors import GatewayError, Style
from pygw.integrations.lambda_events import api_id_for
from pygw.pipeline import Stage
from pygw.request import Request
from pygw.response import Response
from pygw.stages.custom_auth import build_custom_auth_stage
from pygw.stages.jwt_auth import JwksKeys, JwtAuthStage, build_jwt_stage
from tests.front import FrontServer, serve_front
from tests.integration.conftest import StartUpstream, pipelined_answers, serving
from tests.unit.test_auth import make_ctx, refused

AUTHORIZERS = Path(__file__).resolve().parent / "authorizers"
ISSUER = "https://idp.test"


@dataclass
class Idp:
    url: str = ""
    keys: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    status: int = 200
    delay_s: float = 0.0
    body: bytes | None = None


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": "RS256"}


@pytest.fixture(scope="module")
def signing_keys() -> dict[str, rsa.RSAPrivateKey]:
    return {
        kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in ("k1", "k2")
    }


@pytest.fixture
async def idp() -> AsyncIterator[Idp]:
    state = Idp()

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        state.requests += 1
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        if state.body is not None:
            return web.Response(body=state.body, content_type="application/json")
        return web.Response(
            status=state.status,
            body=orjson.dumps({"keys": state.keys}),
            content_type="application/json",
        )

    runner = web.ServerRunner(web.Server(handle), shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/.well-known/jwks.json"
    yield state
    await runner.cleanup()


def token(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "shop", "sub": "u1", "exp": now + 300, **extra}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _shop_api(jwks: str, routes: dict[str, Any]) -> dict[str, Any]:
    """An HTTP-style API whose `users` authorizer checks the test issuer's tokens."""
    authorizer = {"type": "jwt", "issuer": ISSUER, "audience": ["shop"], "jwks": jwks}
    return {"name": "shop", "type": "http", "authorizers": {"users": authorizer}, "routes": routes}


def jwt_cfg(jwks: str) -> JwtAuthorizerConfig:
    return JwtAuthorizerConfig(type="jwt", issuer=ISSUER, audience=["shop"], jwks=jwks)


def store(idp: Idp, clock: Clock, **kwargs: Any) -> JwksKeys:
    return JwksKeys(idp.url, cache_s=kwargs.pop("cache_s", 300.0), clock=clock, **kwargs)


# --------------------------------------------------------------------------------------------------
# A gateway front end: runs the stages, then echoes what they left in the context.


@dataclass
class Front:
    url: str
    style: Style


StartFront = Callable[[list[Stage], Style], Awaitable[Front]]


@pytest.fixture
async def start_front() -> AsyncIterator[StartFront]:
    runners: list[FrontServer] = []

    async def start(stages: list[Stage], style: Style) -> Front:
        async def handle(request: Request) -> Response:
            path = request.raw_path.partition("?")[0]
            ctx = RequestContext(
                request=request,
                request_id="req-1",
                path=path,
                params={},
                stage_variables={},
                client_ip=request.client_ip,
                received_at=0.0,
            )
            try:
                for stage in stages:
                    answered = await stage(ctx)
                    if answered is not None:
                        return answered
            except GatewayError as err:
                return error_response(err.error, style, ctx.request_id, err.detail, err.headers)
            return Response(
                body=orjson.dumps(
                    {
                        name: getattr(ctx, name)
                        for name in ("authorizer", "api_key_id", "usage_identifier_key")
                        if getattr(ctx, name) is not None
                    },
                    default=str,
                ),
                content_type="application/json",
            )

        front = await serve_front(handle)
        runners.append(front)
        return Front(front.url, style)

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session


# --------------------------------------------------------------------------------------------------
# JWKS over HTTP


async def test_keys_are_fetched_once_then_cached(
    idp: Idp, signing_keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    idp.keys = [_jwk(signing_keys["k1"], "k1")]
    clock = Clock()
    keys = store(idp, clock)
    stage = JwtAuthStage(jwt_cfg(idp.url), keys)

    good = {"Authorization": f"Bearer {token(signing_keys['k1'], 'k1')}"}
    assert idp.requests == 0  # nothing fetched before the first request
    for _ in range(5):
        assert await stage(make_ctx(headers=good)) is None
    assert idp.requests == 1
    # After jwks_cache_s the keys are fetched again on use.
    clock.now += 301
    assert await stage(make_ctx(headers=good)) is None
    assert idp.requests == 2


async def test_unknown_kid_refreshes_at_a_bounded_rate(
    idp: Idp, signing_keys: dict[str, rsa.RSAPrivateKey]
) -> None:

    idp.keys = [_jwk(signing_keys["k1"], "k1")]
    clock = Clock()
    keys = store(idp, clock, min_refresh_s=10.0)
    stage = JwtAuthStage(jwt_cfg(idp.url), keys)
    first = {"Authorization": token(signing_keys["k1"], "k1")}
    assert await stage(make_ctx(headers=first)) is None
    assert idp.requests == 1

    # The IdP rotates in k2; a token signed with k2 arrives a second later: too soon to refetch.
    idp.keys.append(_jwk(signing_keys["k2"], "k2"))
    rotated = {"Authorization": token(signing_keys["k2"], "k2")}
    clock.now += 1
    assert (await refused(stage, make_ctx(headers=rotated))).value == "UNAUTHORIZED"
    # An attacker's random kids cost nothing more within the interval.
    for i in range(50):
        forged = {"Authorization": token(signing_keys["k1"], f"random-{i}")}
        assert (await refused(stage, make_ctx(headers=forged))).value == "UNAUTHORIZED"
    assert idp.requests == 1

    clock.now += 10
    assert await stage(make_ctx(headers=rotated)) is None
    assert idp.requests == 2
    # Random kids again: one fetch per interval at most.
    for i in range(50):
        clock.now += 0.5
        forged = {"Authorization": token(signing_keys["k1"], f"again-{i}")}
        await refused(stage, make_ctx(headers=forged))
    # 25 s of attempts after the fetch at the interval's start: fetches at +10 s and +20 s.
    assert idp.requests == 4
    # Known keys keep working throughout.
    assert await stage(make_ctx(headers=first)) is None


async def test_concurrent_unknown_kids_share_one_fetch(
    idp: Idp, signing_keys: dict[str, rsa.RSAPrivateKey]
) -> None:

    idp.keys = [_jwk(signing_keys["k1"], "k1")]
    idp.delay_s = 0.05
    keys = store(idp, Clock())
    stage = JwtAuthStage(jwt_cfg(idp.url), keys)
    headers = {"Authorization": token(signing_keys["k1"], "k1")}
    results = await asyncio.gather(*(stage(make_ctx(headers=headers)) for _ in range(20)))
    assert results == [None] * 20
    assert idp.requests == 1


async def test_failed_refresh_keeps_the_known_keys(
    idp: Idp, signing_keys: dict[str, rsa.RSAPrivateKey]
) -> None:

    idp.keys = [_jwk(signing_keys["k1"], "k1")]
    clock = Clock()
    keys = store(idp, clock, cache_s=60.0)
    stage = JwtAuthStage(jwt_cfg(idp.url), keys)
    good = {"Authorization": token(signing_keys["k1"], "k1")}
    assert await stage(make_ctx(headers=good)) is None
    idp.status = 500
    clock.now += 61
    assert await stage(make_ctx(headers=good)) is None  # stale but known: still accepted
    assert idp.requests == 2
    idp.body = b'{"keys": "nope"}'
    clock.now += 11
    assert await stage(make_ctx(headers=good)) is None
    assert idp.requests == 3
    other = {"Authorization": token(signing_keys["k2"], "k2")}
    clock.now += 11
    await refused(stage, make_ctx(headers=other))


async def test_unreachable_or_slow_idp_answers_401(
    idp: Idp, signing_keys: dict[str, rsa.RSAPrivateKey]
) -> None:

    idp.keys = [_jwk(signing_keys["k1"], "k1")]
    idp.delay_s = 2.0
    keys = store(idp, Clock(), fetch_timeout_s=0.1)
    stage = JwtAuthStage(jwt_cfg(idp.url), keys)
    good = {"Authorization": token(signing_keys["k1"], "k1")}
    await refused(stage, make_ctx(headers=good))
    assert keys.fetches == 1
    closed = JwksKeys("http://127.0.0.1:9/jwks.json", clock=Clock(), fetch_timeout_s=1.0)
    stage = JwtAuthStage(jwt_cfg("http://127.0.0.1:9/jwks.json"), closed)
    await refused(stage, make_ctx(headers=good))


async def test_oversized_jwks_is_refused(
    idp: Idp, signing_keys: dict[str, rsa.RSAPrivateKey]
) -> None:

    idp.body = b'{"keys": [' + b" " * (2 << 20) + b"]}"
    stage = JwtAuthStage(jwt_cfg(idp.url), store(idp, Clock()))
    await refused(stage, make_ctx(headers={"Authorization": token(signing_keys["k1"], "k1")}))


# --------------------------------------------------------------------------------------------------
# Through HTTP: status codes and bodies per style


async def test_jwt_stage_over_http(
    idp: Idp,
    signing_keys: dict[str, rsa.RSAPrivateKey],
    start_front: StartFront,
    client: ClientSession,
    tmp_path: Path,
) -> None:
    idp.keys = [_jwk(signing_keys["k1"], "k1")]
    route = GatewayConfig.model_validate(
        {
            "apis": [
                _shop_api(
                    idp.url,
                    {
                        "GET /items": {
                            "integration": {"type": "mock"},
                            "authorizer": "users",
                            "scopes": ["items/read"],
                        }
                    },
                )
            ]
        }
    )
    api = route.apis[0]
    auth = api.authorizers["users"]
    assert isinstance(auth, JwtAuthorizerConfig)
    loaded = LoadedConfig(route, tmp_path / "pygw.yaml", tmp_path)
    stage = build_jwt_stage(auth, api.routes["GET /items"], loaded)
    http = await start_front([stage], Style.HTTP)
    rest = await start_front([stage], Style.REST)

    ok = token(signing_keys["k1"], "k1", scope="items/read", tenant=7)
    async with client.get(f"{http.url}/items", headers={"Authorization": f"Bearer {ok}"}) as r:
        assert r.status == 200
        body = await r.json()
    assert body["authorizer"]["jwt"]["claims"]["tenant"] == 7
    assert body["authorizer"]["jwt"]["scopes"] == ["items/read"]

    async with client.get(f"{http.url}/items") as r:
        assert r.status == 401
        assert await r.json() == {"message": "Unauthorized"}
    async with client.get(f"{rest.url}/items") as r:
        assert r.status == 401
        assert r.headers["x-amzn-ErrorType"] == "UnauthorizedException"
    lacking = token(signing_keys["k1"], "k1", scope="items/write")
    async with client.get(f"{http.url}/items", headers={"Authorization": lacking}) as r:
        assert r.status == 403
        assert await r.json() == {"message": "Forbidden"}
    assert idp.requests == 1


async def test_custom_authorizer_over_http(
    start_front: StartFront, client: ClientSession, tmp_path: Path
) -> None:
    config = GatewayConfig.model_validate(
        {
            "python_path": [str(AUTHORIZERS)],
            "apis": [
                {
                    "name": "legacy",
                    "type": "rest",
                    "authorizers": {
                        "tok": {
                            "type": "custom",
                            "handler": "authz_samples:token_policy",
                            "kind": "TOKEN",
                            "identity_source": ["method.request.header.Authorization"],
                            "timeout_ms": 200,
                        }
                    },
                    "routes": {
                        "ANY /{proxy+}": {"integration": {"type": "mock"}, "authorizer": "tok"}
                    },
                }
            ],
        }
    )
    api = config.apis[0]
    auth = api.authorizers["tok"]
    assert isinstance(auth, CustomAuthorizerConfig)
    loaded = LoadedConfig(config, tmp_path / "pygw.yaml", tmp_path)
    stage = build_custom_auth_stage(auth, api.routes["ANY /{proxy+}"], api, "$default", loaded)
    rest = await start_front([stage], Style.REST)
    samples = sys.modules["authz_samples"]
    samples.CALLS.clear()

    async with client.get(f"{rest.url}/items/1", headers={"Authorization": "allow"}) as r:
        assert r.status == 200
        extras = await r.json()
    assert extras["authorizer"]["principalId"] == "user-allow"
    arn = f"arn:aws:execute-api:local:000000000000:{api_id_for('legacy')}/$default/GET/items/1"
    assert samples.CALLS[0]["methodArn"] == arn

    async with client.get(f"{rest.url}/items/1", headers={"Authorization": "deny"}) as r:
        assert r.status == 403
        assert r.headers["x-amzn-ErrorType"] == "AccessDeniedException"
        assert await r.json() == {"Message": "User is not authorized to access this resource"}
    async with client.get(f"{rest.url}/items/1") as r:
        assert r.status == 401
    async with client.get(f"{rest.url}/items/1", headers={"Authorization": "boom"}) as r:
        assert r.status >= 500
        text = await r.text()
        assert "hunter2" not in text and "RuntimeError" not in text
    async with client.get(f"{rest.url}/items/1", headers={"Authorization": "slow"}) as r:
        assert r.status >= 500
    samples.CALLS.clear()


# --------------------------------------------------------------------------------------------------
# A whole gateway: requests whose authorizer waits and requests it decides at once, on one
# connection


async def test_pipelined_requests_whether_or_not_their_authorizer_waits(
    idp: Idp,
    signing_keys: dict[str, rsa.RSAPrivateKey],
    start_upstream: StartUpstream,
    tmp_path: Path,
) -> None:
    """On one connection, a token the authorizer has not seen (it fetches the keys and waits),
    the same token again (decided at once), a token refused at once, and a second new token
    are answered in order, each as its authorizer decided; the upstream sees the allowed ones
    only, with the claims the route forwards."""
    idp.keys = [_jwk(signing_keys["k1"], "k1")]
    upstream = await start_upstream()
    config = tmp_path / "jwt.yaml"
    config.write_text(
        orjson.dumps(
            {
                "server": {"listen": "127.0.0.1:0"},
                "admin": {"listen": "127.0.0.1:0"},
                "access_log": None,
                "apis": [
                    _shop_api(
                        idp.url,
                        {
                            "GET /items/{id}": {
                                "integration": {
                                    "type": "http_proxy",
                                    "uri": f"{upstream.url}/items/{{id}}",
                                },
                                "authorizer": "users",
                                "throttle": {"rate": 1000, "burst": 1000},
                            }
                        },
                    )
                ],
            }
        ).decode()
    )
    first = token(signing_keys["k1"], "k1", sub="ann")
    second = token(signing_keys["k1"], "k1", sub="bob")

    def get(item: str, bearer: str | None) -> bytes:
        auth = b"" if bearer is None else b"Authorization: Bearer %s\r\n" % bearer.encode()
        return b"GET /items/%s HTTP/1.1\r\nHost: gw\r\n%s\r\n" % (item.encode(), auth)

    async with serving(config) as url:
        raw = get("1", first) + get("2", first) + get("3", None) + get("4", second)
        got = await pipelined_answers(url, raw, 4)
        assert [status for status, _ in got] == [200, 200, 401, 200]
        assert orjson.loads(got[2][1]) == {"message": "Unauthorized"}
        # Both tokens known now: each request is decided without waiting, one at a time.
        for item, bearer in (("5", second), ("6", first)):
            ((status, _),) = await pipelined_answers(url, get(item, bearer), 1)
            assert status == 200
    assert idp.requests == 1
    assert [r["raw_path"] for r in upstream.requests] == [
        "/items/1",
        "/items/2",
        "/items/4",
        "/items/5",
        "/items/6",
    ]
