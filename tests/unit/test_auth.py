"""JWT and custom authorizer stages, run directly on RequestContexts around mocked requests."""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from pygw.authorizer_view import cognito_claims, context_text, rest_authorizer
from pygw.config.load import LoadedConfig
from pygw.config.model import (
    ApiConfig,
    CustomAuthorizerConfig,
    GatewayConfig,
    JwtAuthorizerConfig,
)
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.identity_source import identity_getter
from pygw.pipeline import Pipeline
from pygw.request import Request
from pygw.response import Response
from pygw.stages.custom_auth import (
    AUTHORIZER_FAILURE,
    CustomAuthorizer,
    CustomAuthStage,
    build_custom_auth_stage,
    load_callable,
    method_arn,
    parse_answer,
)
from pygw.stages.jwt_auth import (
    JwksKeys,
    JwtAuthStage,
    StaticKeys,
    build_jwt_stage,
    token_scopes,
)

AUTHORIZERS = Path(__file__).resolve().parent.parent / "integration" / "authorizers"
ISSUER = "https://idp.test"
HMAC_SECRET = "an-hmac-secret-of-at-least-thirty-two-bytes!"


# --------------------------------------------------------------------------------------------------
# Helpers


def make_ctx(
    method: str = "GET",
    path: str = "/items/1",
    headers: dict[str, str] | None = None,
    query: str = "",
    params: dict[str, str] | None = None,
    stage_variables: dict[str, str] | None = None,
) -> RequestContext:
    target = path + (f"?{query}" if query else "")
    request = Request.build(method, target, headers=headers or {})
    return RequestContext(
        request=request,
        request_id="req-1",
        path=path,
        params=params if params is not None else {},
        stage_variables=stage_variables or {},
        client_ip="192.0.2.7",
        received_at=0.0,
    )


def found_context(ctx: RequestContext) -> dict[str, Any]:
    """What a custom authorizer left on the request, its run time (a number, as AWS's
    integrationLatency) checked and left out."""
    assert ctx.authorizer is not None
    found = dict(ctx.authorizer)
    latency = found.pop("integrationLatency")
    assert isinstance(latency, int) and latency >= 0
    return found


async def refused(stage: Any, ctx: RequestContext) -> ErrorType:
    with pytest.raises(GatewayError) as caught:
        await stage(ctx)
    return caught.value.error


class Keys:
    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True)
        ec_jwk = ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True)
        return {
            "keys": [
                {**rsa_jwk, "kid": "rsa1", "alg": "RS256", "use": "sig"},
                {**ec_jwk, "kid": "ec1", "alg": "ES256"},
                {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
                {**rsa_jwk, "kid": "enc1", "use": "enc"},
            ]
        }

    def rsa_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"iss": ISSUER, "aud": "shop", "sub": "u1", "exp": now + 300}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def sign(keys: Keys, kid: str | None = "rsa1", alg: str = "RS256", **extra: Any) -> str:
    key: Any = {"RS256": keys.rsa, "ES256": keys.ec}[alg]
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims(**extra), key, algorithm=alg, headers=headers)


@pytest.fixture
def jwks_file(tmp_path: Path, keys: Keys) -> Path:
    path = tmp_path / "keys" / "jwks.json"
    path.parent.mkdir()
    path.write_text(json.dumps(keys.jwks()))
    return path


def jwt_cfg(**overrides: Any) -> JwtAuthorizerConfig:
    values: dict[str, Any] = {"type": "jwt", "issuer": ISSUER, "audience": ["shop"]}
    values.update(overrides)
    return JwtAuthorizerConfig.model_validate(values)


def jwt_stage(jwks_file: Path, scopes: tuple[str, ...] = (), **overrides: Any) -> JwtAuthStage:
    cfg = jwt_cfg(jwks=f"file://{jwks_file}", **overrides)
    return JwtAuthStage(cfg, JwksKeys(cfg.jwks_url, cache_s=cfg.jwks_cache_s), scopes)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------------------------------
# JWT: accepted tokens


async def test_rs256_token_is_accepted_and_claims_recorded(keys: Keys, jwks_file: Path) -> None:
    stage = jwt_stage(jwks_file)
    ctx = make_ctx(headers=bearer(sign(keys, scope="items/read items/write")))
    assert await stage(ctx) is None
    presented = ctx.authorizer["jwt"]
    assert presented["claims"]["sub"] == "u1"
    assert presented["claims"]["iss"] == ISSUER
    assert presented["scopes"] == ["items/read", "items/write"]


async def test_a_verified_token_is_not_checked_again_until_it_expires(
    keys: Keys, jwks_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pygw.stages.jwt_auth as jwt_auth

    decoded: list[str] = []
    real_decode = jwt_auth.jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt_auth.jwt, "decode", counting_decode)
    stage = jwt_stage(jwks_file, scopes=("items/read",))
    good = sign(keys, scope="items/read")
    for _ in range(5):
        assert await stage(make_ctx(headers=bearer(good))) is None
    assert len(decoded) == 1
    # The remembered claims still go through the scope check of each route.
    other = jwt_stage(jwks_file, scopes=("admin",))
    assert await refused(other, make_ctx(headers=bearer(good))) is ErrorType.ACCESS_DENIED
    # An expired token is checked again (and refused), whatever was remembered.
    old = sign(keys, exp=int(time.time()) - 3600)
    assert await refused(stage, make_ctx(headers=bearer(old))) is ErrorType.UNAUTHORIZED
    assert await refused(stage, make_ctx(headers=bearer(old))) is ErrorType.UNAUTHORIZED
    assert decoded.count(old) == 2


async def test_a_verified_token_passes_without_waiting(keys: Keys, jwks_file: Path) -> None:
    """The stage's plain check answers a token it verified before at once (the request then
    needs no coroutine); a new token gets the coroutine that verifies it, and a missing one is
    refused at once."""
    stage = jwt_stage(jwks_file, scopes=("items/read",))
    good = sign(keys, scope="items/read")
    first = make_ctx(headers=bearer(good))
    pending = stage.check(first)
    assert pending is not None and first.authorizer is None
    await pending
    assert first.authorizer is not None
    again = make_ctx(headers=bearer(good))
    assert stage.check(again) is None
    assert again.authorizer is not None
    assert again.authorizer["jwt"]["claims"]["sub"] == "u1"
    with pytest.raises(GatewayError) as missing:
        stage.check(make_ctx())
    assert missing.value.error is ErrorType.UNAUTHORIZED
    forged = make_ctx(headers=bearer(good[:-4] + "AAAA"))
    forged_check = stage.check(forged)
    assert forged_check is not None
    with pytest.raises(GatewayError):
        await forged_check
    # A pipeline of such stages does not wait as a whole (see pygw/pipeline.py).

    class Unreached:
        async def __call__(self, ctx: RequestContext) -> Response:
            raise AssertionError("not called")

        async def close(self) -> None:
            return None

    assert not Pipeline((stage,), Unreached()).waits


async def test_es256_token_is_accepted(keys: Keys, jwks_file: Path) -> None:
    stage = jwt_stage(jwks_file)
    ctx = make_ctx(headers=bearer(sign(keys, kid="ec1", alg="ES256")))
    assert await stage(ctx) is None
    assert ctx.authorizer["jwt"]["scopes"] is None


async def test_bearer_prefix_is_optional_and_case_insensitive(keys: Keys, jwks_file: Path) -> None:
    stage = jwt_stage(jwks_file)
    token = sign(keys)
    for value in (token, f"bearer {token}", f"BEARER  {token} "):
        assert await stage(make_ctx(headers={"Authorization": value})) is None


async def test_hs256_with_an_oct_key_in_the_jwks(tmp_path: Path) -> None:
    import base64

    k = base64.urlsafe_b64encode(HMAC_SECRET.encode()).rstrip(b"=").decode()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "h1", "k": k}]}))
    # The model offers the asymmetric algorithms only; the stage itself handles HMAC too.
    cfg = JwtAuthorizerConfig.model_construct(
        type="jwt",
        issuer=ISSUER,
        audience=["shop"],
        jwks=f"file://{path}",
        algorithms=["HS256"],
    )
    stage = JwtAuthStage(cfg, JwksKeys(cfg.jwks_url))
    token = jwt.encode(claims(), HMAC_SECRET, algorithm="HS256", headers={"kid": "h1"})
    assert await stage(make_ctx(headers=bearer(token))) is None
    forged = jwt.encode(claims(), HMAC_SECRET + "x", algorithm="HS256", headers={"kid": "h1"})
    assert await refused(stage, make_ctx(headers=bearer(forged))) is ErrorType.UNAUTHORIZED


async def test_hs256_with_a_static_secret() -> None:
    cfg = JwtAuthorizerConfig.model_construct(
        type="jwt", issuer=ISSUER, audience=["shop"], algorithms=["HS256"]
    )
    stage = JwtAuthStage(cfg, StaticKeys(HMAC_SECRET))
    token = jwt.encode(claims(), HMAC_SECRET, algorithm="HS256")
    assert await stage(make_ctx(headers=bearer(token))) is None


async def test_audience_list_and_client_id(keys: Keys, jwks_file: Path) -> None:
    stage = jwt_stage(jwks_file, audience=["shop", "admin"])
    assert await stage(make_ctx(headers=bearer(sign(keys, aud=["other", "admin"])))) is None
    cognito = sign(keys, aud=None, client_id="shop")
    assert await stage(make_ctx(headers=bearer(cognito))) is None
    wrong_client = sign(keys, aud=None, client_id="nope")
    assert await refused(stage, make_ctx(headers=bearer(wrong_client))) is ErrorType.UNAUTHORIZED


async def test_expiry_within_leeway_is_accepted(keys: Keys, jwks_file: Path) -> None:
    stage = jwt_stage(jwks_file, leeway_s=60)
    token = sign(keys, exp=int(time.time()) - 20)
    assert await stage(make_ctx(headers=bearer(token))) is None


async def test_token_from_a_query_string_identity_source(keys: Keys, jwks_file: Path) -> None:
    stage = jwt_stage(jwks_file, identity_source=["$request.querystring.access_token"])
    ctx = make_ctx(query=f"access_token={sign(keys)}")
    assert await stage(ctx) is None


# --------------------------------------------------------------------------------------------------
# JWT: refused tokens


@pytest.mark.parametrize(
    "token_extra",
    [
        pytest.param({"exp": -3600}, id="expired"),
        pytest.param({"nbf": 3600}, id="not-yet-valid"),
        pytest.param({"iat": 3600}, id="issued-in-the-future"),
        pytest.param({"iss": "https://evil.test"}, id="wrong-issuer"),
        pytest.param({"iss": None}, id="no-issuer"),
        pytest.param({"aud": "billing"}, id="wrong-audience"),
        pytest.param({"aud": None}, id="no-audience"),
        pytest.param({"exp": None}, id="no-expiry"),
    ],
)
async def test_invalid_claims_are_unauthorized(
    keys: Keys, jwks_file: Path, token_extra: dict[str, Any]
) -> None:
    now = int(time.time())
    extra = {
        k: (now + v if k in ("exp", "nbf", "iat") and v is not None else v)
        for k, v in token_extra.items()
    }
    stage = jwt_stage(jwks_file, leeway_s=5)
    ctx = make_ctx(headers=bearer(sign(keys, **extra)))
    assert await refused(stage, ctx) is ErrorType.UNAUTHORIZED
    assert ctx.authorizer is None


async def test_missing_or_malformed_tokens_are_unauthorized(jwks_file: Path) -> None:
    stage = jwt_stage(jwks_file)
    for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer "}, bearer("a.b.c")):
        assert await refused(stage, make_ctx(headers=headers)) is ErrorType.UNAUTHORIZED


async def test_wrong_key_unknown_kid_and_missing_kid(keys: Keys, jwks_file: Path) -> None:
    stage = jwt_stage(jwks_file)
    forged = jwt.encode(claims(), keys.rsa_other, algorithm="RS256", headers={"kid": "rsa1"})
    unknown = jwt.encode(claims(), keys.rsa, algorithm="RS256", headers={"kid": "nope"})
    no_kid = sign(keys, kid=None)  # the JWKS has two signing keys: which one is not known
    enc_key = jwt.encode(claims(), keys.rsa, algorithm="RS256", headers={"kid": "enc1"})
    for token in (forged, unknown, no_kid, enc_key):
        assert await refused(stage, make_ctx(headers=bearer(token))) is ErrorType.UNAUTHORIZED


async def test_algorithm_outside_the_allowed_list(keys: Keys, jwks_file: Path) -> None:
    stage = jwt_stage(jwks_file, algorithms=["ES256"])
    assert await refused(stage, make_ctx(headers=bearer(sign(keys)))) is ErrorType.UNAUTHORIZED
    unsigned = jwt.encode(claims(), None, algorithm="none", headers={"kid": "rsa1"})
    assert await refused(stage, make_ctx(headers=bearer(unsigned))) is ErrorType.UNAUTHORIZED


async def test_algorithm_confusion_is_refused(keys: Keys, jwks_file: Path) -> None:
    cfg = JwtAuthorizerConfig.model_construct(
        type="jwt",
        issuer=ISSUER,
        audience=["shop"],
        jwks=f"file://{jwks_file}",
        algorithms=["RS256", "HS256"],
    )
    stage = JwtAuthStage(cfg, JwksKeys(cfg.jwks_url))
    # An HMAC token "signed" with the RSA public key, naming the RSA key's kid.
    import hashlib
    import hmac as hmac_mod

    header = jwt.utils.base64url_encode(
        json.dumps({"alg": "HS256", "kid": "rsa1", "typ": "JWT"}).encode()
    )
    payload = jwt.utils.base64url_encode(json.dumps(claims()).encode())
    signing_input = header + b"." + payload
    mac = hmac_mod.new(keys.rsa_pem(), signing_input, hashlib.sha256).digest()
    token = (signing_input + b"." + jwt.utils.base64url_encode(mac)).decode()
    assert await refused(stage, make_ctx(headers=bearer(token))) is ErrorType.UNAUTHORIZED


async def test_jwk_alg_must_match_the_token_alg(keys: Keys, tmp_path: Path) -> None:
    rsa_jwk = RSAAlgorithm.to_jwk(keys.rsa.public_key(), as_dict=True)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**rsa_jwk, "kid": "rsa1", "alg": "RS512"}]}))
    stage = jwt_stage(path)
    assert await refused(stage, make_ctx(headers=bearer(sign(keys)))) is ErrorType.UNAUTHORIZED


# --------------------------------------------------------------------------------------------------
# JWT: scopes


async def test_route_scopes(keys: Keys, jwks_file: Path) -> None:
    stage = jwt_stage(jwks_file, scopes=("items/read", "items/admin"))
    ok = sign(keys, scope="openid items/read")
    assert await stage(make_ctx(headers=bearer(ok))) is None
    scp = sign(keys, scp=["items/admin"])
    assert await stage(make_ctx(headers=bearer(scp))) is None
    lacking = sign(keys, scope="openid items/write")
    assert await refused(stage, make_ctx(headers=bearer(lacking))) is ErrorType.ACCESS_DENIED
    none = sign(keys)
    assert await refused(stage, make_ctx(headers=bearer(none))) is ErrorType.ACCESS_DENIED


def test_token_scopes() -> None:
    assert token_scopes({"scope": "a  b"}) == ["a", "b"]
    assert token_scopes({"scp": ["a", 1, "b"]}) == ["a", "b"]
    assert token_scopes({"scp": "a b"}) == ["a", "b"]
    assert token_scopes({}) is None


# --------------------------------------------------------------------------------------------------
# JWT: factory and key files


def loaded(tmp_path: Path, config: GatewayConfig | None = None) -> LoadedConfig:
    return LoadedConfig(config or GatewayConfig(), tmp_path / "pygw.yaml", tmp_path)


async def test_build_jwt_stage_resolves_relative_files_and_shares_keys(
    keys: Keys, jwks_file: Path, tmp_path: Path
) -> None:
    api = ApiConfig.model_validate(
        {
            "name": "shop",
            "authorizers": {
                "users": {
                    "type": "jwt",
                    "issuer": ISSUER,
                    "audience": ["shop"],
                    "jwks": "file://keys/jwks.json",
                }
            },
            "routes": {
                "GET /items": {"integration": {"type": "mock"}, "authorizer": "users"},
                "POST /items": {
                    "integration": {"type": "mock"},
                    "authorizer": "users",
                    "scopes": ["items/write"],
                },
            },
        }
    )
    auth = api.authorizers["users"]
    assert isinstance(auth, JwtAuthorizerConfig)
    where = loaded(tmp_path)
    read = build_jwt_stage(auth, api.routes["GET /items"], where)
    write = build_jwt_stage(auth, api.routes["POST /items"], where)
    assert isinstance(read, JwtAuthStage) and isinstance(write, JwtAuthStage)
    assert read._issuers[ISSUER] is write._issuers[ISSUER]
    token = sign(keys, scope="items/read")
    assert await read(make_ctx(headers=bearer(token))) is None
    assert await refused(write, make_ctx(headers=bearer(token))) is ErrorType.ACCESS_DENIED


def test_build_jwt_stage_refuses_a_missing_or_empty_file(tmp_path: Path) -> None:
    route = ApiConfig.model_validate(
        {"name": "a", "routes": {"GET /": {"integration": {"type": "mock"}}}}
    ).routes["GET /"]
    with pytest.raises(ValueError, match=r"missing\.json"):
        build_jwt_stage(jwt_cfg(jwks="file://missing.json"), route, loaded(tmp_path))
    (tmp_path / "empty.json").write_text('{"keys": []}')
    with pytest.raises(ValueError, match="no usable signing key"):
        build_jwt_stage(jwt_cfg(jwks="file://empty.json"), route, loaded(tmp_path))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        build_jwt_stage(jwt_cfg(jwks="file://bad.json"), route, loaded(tmp_path))


async def test_file_keys_are_read_again_on_an_unknown_kid(keys: Keys, tmp_path: Path) -> None:
    rsa_jwk = RSAAlgorithm.to_jwk(keys.rsa.public_key(), as_dict=True)
    other_jwk = RSAAlgorithm.to_jwk(keys.rsa_other.public_key(), as_dict=True)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**rsa_jwk, "kid": "rsa1"}]}))
    now = [1000.0]
    store = JwksKeys(f"file://{path}", min_refresh_s=10, clock=lambda: now[0])
    stage = JwtAuthStage(jwt_cfg(jwks=f"file://{path}"), store)
    rotated = jwt.encode(claims(), keys.rsa_other, algorithm="RS256", headers={"kid": "rsa2"})
    path.write_text(
        json.dumps({"keys": [{**rsa_jwk, "kid": "rsa1"}, {**other_jwk, "kid": "rsa2"}]})
    )
    # Read at load a moment ago: not again before min_refresh_s.
    assert await refused(stage, make_ctx(headers=bearer(rotated))) is ErrorType.UNAUTHORIZED
    assert store.fetches == 0
    now[0] += 10
    assert await stage(make_ctx(headers=bearer(rotated))) is None
    assert store.fetches == 1


# --------------------------------------------------------------------------------------------------
# Custom authorizers: loading


@pytest.fixture
def samples() -> Iterator[ModuleType]:
    if str(AUTHORIZERS) not in sys.path:
        sys.path.insert(0, str(AUTHORIZERS))
    module = importlib.import_module("authz_samples")
    module.CALLS.clear()
    yield module
    module.CALLS.clear()


def test_load_callable(samples: ModuleType) -> None:
    assert load_callable("authz_samples:token_policy", [AUTHORIZERS]) is samples.token_policy
    obj = load_callable("authz_samples:callable_object.__call__", [AUTHORIZERS])
    assert callable(obj)
    with pytest.raises(ValueError, match="module 'authz_nowhere' not found"):
        load_callable("authz_nowhere:check", [AUTHORIZERS])
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        load_callable("authz_samples:nope", [AUTHORIZERS])
    with pytest.raises(ValueError, match="not callable"):
        load_callable("authz_samples:NOT_CALLABLE", [AUTHORIZERS])
    with pytest.raises(ValueError, match="failed: RuntimeError: this authorizer"):
        load_callable("authz_broken:check", [AUTHORIZERS])
    with pytest.raises(ValueError, match="is not module:callable"):
        load_callable("no_colon", [AUTHORIZERS])


def test_identity_getter_reads_headers_as_the_header_map_does() -> None:
    """A header identity source gives the first value, whatever the case of the name as sent,
    decoded as the request's header map decodes it (bytes that are not UTF-8 kept as escapes)."""
    ctx = make_ctx()
    ctx.request.replace_headers(
        (
            (b"Host", b"h"),
            (b"Authorization", b"Bearer caf\xe9"),
            (b"authorization", b"second"),
            (b"x-auth", b""),
        )
    )
    for source in ("header.authorization", "header.x-auth", "header.absent"):
        name = source.partition(".")[2]
        assert identity_getter(source)(ctx) == ctx.request.headers.get(name)
    assert identity_getter("header.authorization")(ctx) == "Bearer caf\udce9"
    assert identity_getter("header.x-auth")(ctx) == ""


def test_identity_getter_refuses_unknown_sources() -> None:
    with pytest.raises(ValueError, match=r"context\.nope"):
        identity_getter("context.nope")
    with pytest.raises(ValueError, match=r"cookie\.x"):
        identity_getter("cookie.x")


# --------------------------------------------------------------------------------------------------
# Custom authorizers: TOKEN and policies


def custom_cfg(**values: Any) -> CustomAuthorizerConfig:
    base: dict[str, Any] = {"type": "custom", "handler": "authz_samples:token_policy"}
    base.update(values)
    return CustomAuthorizerConfig.model_validate(base)


def custom_stage(
    route_key: str = "GET /items/{id}",
    stage: str = "v1",
    clock: Any = time.monotonic,
    cache_entries: int = 100,
    **values: Any,
) -> CustomAuthStage:
    values.setdefault("kind", "TOKEN")
    values.setdefault("payload_format", "1.0")
    authorizer = CustomAuthorizer(
        custom_cfg(**values),
        [AUTHORIZERS],
        api_id="shop",
        stage=stage,
        name="legacy",
        clock=clock,
        cache_entries=cache_entries,
    )
    return CustomAuthStage(authorizer, route_key)


def token(value: str) -> dict[str, str]:
    return {"Authorization": value}


async def test_token_allow_sends_the_aws_token_event(samples: ModuleType) -> None:
    stage = custom_stage()
    ctx = make_ctx(headers=token("allow"))
    assert await stage(ctx) is None
    assert samples.CALLS == [
        {
            "type": "TOKEN",
            "authorizationToken": "allow",
            "methodArn": "arn:aws:execute-api:local:000000000000:shop/v1/GET/items/1",
        }
    ]
    assert found_context(ctx) == {
        "user": "alice",
        "level": 3,
        "admin": False,
        "principalId": "user-allow",
    }


async def test_token_deny_and_other_actions(samples: ModuleType) -> None:
    stage = custom_stage(ttl_s=0)
    for value in ("deny", "other-action", "whoever"):
        ctx = make_ctx(headers=token(value))
        assert await refused(stage, ctx) is ErrorType.AUTHORIZER_DENIED
        assert ctx.authorizer is None


async def test_wildcards_in_resources(samples: ModuleType) -> None:
    stage = custom_stage(ttl_s=0)
    assert await stage(make_ctx(headers=token("wild-get"))) is None
    post = make_ctx("POST", headers=token("wild-get"))
    assert await refused(stage, post) is ErrorType.AUTHORIZER_DENIED
    assert await stage(make_ctx(path="/items/7", headers=token("wild-q"))) is None
    long_id = make_ctx(path="/items/77", headers=token("wild-q"))
    assert await refused(stage, long_id) is ErrorType.AUTHORIZER_DENIED


async def test_explicit_deny_wins(samples: ModuleType) -> None:
    stage = custom_stage(ttl_s=0)
    assert await stage(make_ctx(path="/items", headers=token("allow-but-deny-admin"))) is None
    admin = make_ctx("DELETE", path="/admin/users", headers=token("allow-but-deny-admin"))
    assert await refused(stage, admin) is ErrorType.AUTHORIZER_DENIED


async def test_missing_or_invalid_token_is_unauthorized_without_a_call(
    samples: ModuleType,
) -> None:
    stage = custom_stage(validation_regex=r"[a-z-]+")
    assert await refused(stage, make_ctx()) is ErrorType.UNAUTHORIZED
    assert await refused(stage, make_ctx(headers=token(""))) is ErrorType.UNAUTHORIZED
    assert await refused(stage, make_ctx(headers=token("Bad Token!"))) is ErrorType.UNAUTHORIZED
    assert samples.CALLS == []


async def test_unauthorized_exception_answers_401(samples: ModuleType) -> None:
    stage = custom_stage()
    assert await refused(stage, make_ctx(headers=token("unauthorized"))) is ErrorType.UNAUTHORIZED


async def test_failures_leak_nothing(samples: ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    stage = custom_stage(ttl_s=0)
    caplog.set_level(logging.ERROR, "pygw.auth")
    for value in ("boom", "garbage", "nested-context"):
        with pytest.raises(GatewayError) as caught:
            await stage(make_ctx(headers=token(value)))
        assert caught.value.error is AUTHORIZER_FAILURE
        assert caught.value.detail is None
        assert "hunter2" not in str(caught.value)
    assert "RuntimeError" in caplog.text


async def test_sync_and_async_timeouts(samples: ModuleType) -> None:
    slow_sync = custom_stage(timeout_ms=50)
    with pytest.raises(GatewayError) as caught:
        await slow_sync(make_ctx(headers=token("slow")))
    assert caught.value.error is AUTHORIZER_FAILURE
    slow_async = custom_stage(
        handler="authz_samples:async_slow",
        kind="REQUEST",
        payload_format="2.0",
        simple_responses=True,
        timeout_ms=50,
    )
    with pytest.raises(GatewayError) as caught:
        await slow_async(make_ctx(headers=token("x")))
    assert caught.value.error is AUTHORIZER_FAILURE


async def test_context_object_reports_remaining_time(samples: ModuleType) -> None:
    stage = custom_stage(timeout_ms=5000)
    ctx = make_ctx(headers=token("remaining"))
    assert await stage(ctx) is None
    assert 0 < ctx.authorizer["remaining_ms"] <= 5000


async def test_usage_identifier_key(samples: ModuleType) -> None:
    ctx = make_ctx(headers=token("usage-key"))
    assert await custom_stage()(ctx) is None
    assert ctx.usage_identifier_key == "key-from-authorizer"


# --------------------------------------------------------------------------------------------------
# Custom authorizers: caching


async def test_answers_are_cached_by_identity(samples: ModuleType) -> None:
    now = [0.0]
    stage = custom_stage(ttl_s=300, clock=lambda: now[0])
    for _ in range(3):
        assert await stage(make_ctx(headers=token("allow"))) is None
    assert len(samples.CALLS) == 1
    for _ in range(2):
        assert await refused(stage, make_ctx(headers=token("deny"))) is ErrorType.AUTHORIZER_DENIED
    assert len(samples.CALLS) == 2
    now[0] += 301
    assert await stage(make_ctx(headers=token("allow"))) is None
    assert len(samples.CALLS) == 3


async def test_a_cached_answer_is_applied_without_waiting(samples: ModuleType) -> None:
    """An identity with a cached answer is decided by the plain check (allowed, with the
    authorizer's context set, or denied at once); an identity without one, or any request
    when nothing is cached, gets the coroutine that calls the authorizer."""
    stage = custom_stage(ttl_s=300)
    first = make_ctx(headers=token("allow"))
    pending = stage.check(first)
    assert pending is not None and len(samples.CALLS) == 0
    await pending
    assert len(samples.CALLS) == 1 and first.authorizer is not None
    again = make_ctx(headers=token("allow"))
    assert stage.check(again) is None
    assert again.authorizer is not None
    assert again.authorizer["principalId"] == first.authorizer["principalId"]
    assert len(samples.CALLS) == 1
    deny = stage.check(make_ctx(headers=token("deny")))
    assert deny is not None
    with pytest.raises(GatewayError):
        await deny
    with pytest.raises(GatewayError) as denied:
        stage.check(make_ctx(headers=token("deny")))
    assert denied.value.error is ErrorType.AUTHORIZER_DENIED
    assert len(samples.CALLS) == 2
    uncached = custom_stage(ttl_s=0)
    for _ in range(2):
        call = uncached.check(make_ctx(headers=token("allow")))
        assert call is not None
        await call
    assert len(samples.CALLS) == 4


async def test_a_cached_policy_is_evaluated_per_request(samples: ModuleType) -> None:
    stage = custom_stage(ttl_s=300)
    assert await stage(make_ctx(headers=token("wild-get"))) is None
    post = make_ctx("POST", headers=token("wild-get"))
    assert await refused(stage, post) is ErrorType.AUTHORIZER_DENIED
    assert len(samples.CALLS) == 1


async def test_ttl_zero_calls_every_time(samples: ModuleType) -> None:
    stage = custom_stage(ttl_s=0)
    for _ in range(3):
        assert await stage(make_ctx(headers=token("allow"))) is None
    assert len(samples.CALLS) == 3


async def test_cache_is_bounded(samples: ModuleType) -> None:
    stage = custom_stage(ttl_s=300, cache_entries=2)
    for value in ("allow", "usage-key", "wild-get", "allow"):
        assert await stage(make_ctx(headers=token(value))) is None
    assert len(samples.CALLS) == 4  # "allow" was evicted by the two after it
    assert stage.authorizer.cached_entries() == 2


async def test_failures_are_not_cached(samples: ModuleType) -> None:
    stage = custom_stage(ttl_s=300)
    for _ in range(2):
        with pytest.raises(GatewayError):
            await stage(make_ctx(headers=token("boom")))
    assert len(samples.CALLS) == 2


# --------------------------------------------------------------------------------------------------
# Custom authorizers: REQUEST events


async def test_request_v1_event(samples: ModuleType) -> None:
    stage = custom_stage(
        handler="authz_samples:request_policy",
        kind="REQUEST",
        identity_source=["header.x-user", "querystring.t"],
    )
    ctx = make_ctx(
        headers={"X-User": "alice", "User-Agent": "test-agent", "Host": "api.example.com"},
        query="t=ok&t=ok&x=1",
        params={"id": "1"},
        stage_variables={"backend": "b1"},
    )
    assert await stage(ctx) is None
    assert found_context(ctx) == {"via": "request", "principalId": "alice"}
    event = samples.CALLS[0]
    arn = "arn:aws:execute-api:local:000000000000:shop/v1/GET/items/1"
    assert event["type"] == "REQUEST"
    assert event["methodArn"] == arn
    assert event["resource"] == "/items/{id}"
    assert event["path"] == "/v1/items/1"
    assert event["httpMethod"] == "GET"
    assert event["headers"]["X-User"] == "alice"
    assert event["multiValueHeaders"]["X-User"] == ["alice"]
    assert event["queryStringParameters"] == {"t": "ok", "x": "1"}
    assert event["multiValueQueryStringParameters"] == {"t": ["ok", "ok"], "x": ["1"]}
    assert event["pathParameters"] == {"id": "1"}
    assert event["stageVariables"] == {"backend": "b1"}
    context = event["requestContext"]
    assert context["stage"] == "v1"
    assert context["resourcePath"] == "/items/{id}"
    assert context["httpMethod"] == "GET"
    assert context["identity"]["sourceIp"] == "192.0.2.7"
    assert context["identity"]["userAgent"] == "test-agent"
    assert context["requestId"] == "req-1"
    assert context["apiId"] == "shop"
    assert context["accountId"] == "000000000000"


async def test_request_missing_identity_source_is_unauthorized(samples: ModuleType) -> None:
    stage = custom_stage(
        handler="authz_samples:request_policy",
        kind="REQUEST",
        identity_source=["header.x-user", "querystring.t"],
    )
    ctx = make_ctx(headers={"X-User": "alice"})
    assert await refused(stage, ctx) is ErrorType.UNAUTHORIZED
    assert samples.CALLS == []


async def test_request_v2_simple_event(samples: ModuleType) -> None:
    stage = custom_stage(
        route_key="GET /items/{id}",
        stage="$default",
        handler="authz_samples:request_simple",
        kind="REQUEST",
        payload_format="2.0",
        simple_responses=True,
        identity_source=["header.x-user"],
    )
    ctx = make_ctx(
        headers={"X-User": "alice", "Cookie": "a=1; b=2", "X-Multi": "1"},
        query="q=a%20b&q=c",
        params={"id": "a%20b"},
    )
    assert await stage(ctx) is None
    assert found_context(ctx) == {"user": "alice", "tags": ["a", "b"]}
    event = samples.CALLS[0]
    assert event["version"] == "2.0"
    assert event["type"] == "REQUEST"
    assert event["routeArn"] == "arn:aws:execute-api:local:000000000000:shop/$default/GET/items/1"
    assert event["identitySource"] == ["alice"]
    assert event["routeKey"] == "GET /items/{id}"
    assert event["rawPath"] == "/items/1"
    assert event["rawQueryString"] == "q=a%20b&q=c"
    assert event["cookies"] == ["a=1", "b=2"]
    assert event["headers"]["x-user"] == "alice"
    assert "cookie" not in event["headers"]
    assert event["queryStringParameters"] == {"q": "a b,c"}
    assert event["pathParameters"] == {"id": "a b"}
    assert event["requestContext"]["http"]["method"] == "GET"
    assert event["requestContext"]["http"]["sourceIp"] == "192.0.2.7"
    assert event["requestContext"]["routeKey"] == "GET /items/{id}"
    assert event["requestContext"]["stage"] == "$default"

    denied = make_ctx(headers={"X-User": "mallory"})
    assert await refused(stage, denied) is ErrorType.AUTHORIZER_DENIED


async def test_request_v2_named_stage_raw_path_and_policy(samples: ModuleType) -> None:
    stage = custom_stage(
        stage="v1",
        handler="authz_samples:request_policy",
        kind="REQUEST",
        payload_format="2.0",
        identity_source=["header.x-user"],
    )
    ctx = make_ctx(headers={"X-User": "alice"}, query="t=ok")
    assert await stage(ctx) is None
    assert found_context(ctx) == {"via": "request", "principalId": "alice"}
    assert samples.CALLS[0]["rawPath"] == "/v1/items/1"


async def test_malformed_simple_response_and_callable_objects(samples: ModuleType) -> None:
    malformed = custom_stage(
        handler="authz_samples:simple_malformed",
        kind="REQUEST",
        payload_format="2.0",
        simple_responses=True,
    )
    with pytest.raises(GatewayError) as caught:
        await malformed(make_ctx(headers=token("x")))
    assert caught.value.error is AUTHORIZER_FAILURE
    obj = custom_stage(
        handler="authz_samples:callable_object",
        kind="REQUEST",
        payload_format="2.0",
        simple_responses=True,
    )
    ctx = make_ctx(headers=token("x"))
    assert await obj(ctx) is None
    assert found_context(ctx) == {"kind": "object"}


def test_parse_answer_edge_cases() -> None:
    arn = method_arn("shop", "v1", "GET", "/items/1")
    single = {
        "principalId": 7,
        "policyDocument": {
            "Statement": {"Action": ["execute-api:*"], "Effect": "Allow", "Resource": ["*"]}
        },
    }
    answer = parse_answer(single, simple=False, payload_format="1.0")
    assert answer.principal_id == "7"
    assert answer.allows(arn)
    for bad in (
        {"policyDocument": single["policyDocument"]},  # no principalId in 1.0
        {"principalId": "p"},
        {"principalId": "p", "policyDocument": {"Statement": [{"Effect": "Maybe"}]}},
        {"principalId": "p", "policyDocument": {"Statement": "x"}},
        {"principalId": "p", "policyDocument": single["policyDocument"], "context": [1]},
    ):
        with pytest.raises(ValueError):
            parse_answer(bad, simple=False, payload_format="1.0")
    # Payload 2.0 policies may leave principalId out.
    assert parse_answer(
        {"policyDocument": single["policyDocument"]}, simple=False, payload_format="2.0"
    ).allows(arn)
    assert method_arn("shop", "v1", "GET", "/") == (
        "arn:aws:execute-api:local:000000000000:shop/v1/GET/"
    )


# --------------------------------------------------------------------------------------------------
# Custom authorizers: factory


def _gateway(python_path: list[str], handler: str = "authz_samples:token_policy") -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "python_path": python_path,
            "apis": [
                {
                    "name": "shop",
                    "type": "rest",
                    "stages": [{"name": "v1"}],
                    "authorizers": {
                        "legacy": {
                            "type": "custom",
                            "handler": handler,
                            "kind": "TOKEN",
                            "ttl_s": 300,
                        }
                    },
                    "routes": {
                        "GET /items/{id}": {
                            "integration": {"type": "mock"},
                            "authorizer": "legacy",
                        },
                        "DELETE /items/{id}": {
                            "integration": {"type": "mock"},
                            "authorizer": "legacy",
                        },
                    },
                }
            ],
        }
    )


async def test_build_custom_auth_stage_shares_one_authorizer(
    samples: ModuleType, tmp_path: Path
) -> None:
    config = _gateway([str(AUTHORIZERS)])
    where = loaded(tmp_path, config)
    api = config.apis[0]
    auth = api.authorizers["legacy"]
    assert isinstance(auth, CustomAuthorizerConfig)
    assert auth.payload_format == "1.0"
    get = build_custom_auth_stage(auth, api.routes["GET /items/{id}"], api, "v1", where)
    delete = build_custom_auth_stage(auth, api.routes["DELETE /items/{id}"], api, "v1", where)
    assert isinstance(get, CustomAuthStage) and isinstance(delete, CustomAuthStage)
    assert get.authorizer is delete.authorizer
    assert await get(make_ctx(headers=token("wild-get"))) is None
    # The DELETE route reuses the cached policy, which allows GET only.
    ctx = make_ctx("DELETE", headers=token("wild-get"))
    assert await refused(delete, ctx) is ErrorType.AUTHORIZER_DENIED
    assert len(samples.CALLS) == 1


def test_build_custom_auth_stage_names_a_missing_handler(tmp_path: Path) -> None:
    config = _gateway([str(AUTHORIZERS)], handler="authz_samples:missing_function")
    api = config.apis[0]
    auth = api.authorizers["legacy"]
    assert isinstance(auth, CustomAuthorizerConfig)
    with pytest.raises(ValueError, match="missing_function"):
        build_custom_auth_stage(
            auth, api.routes["GET /items/{id}"], api, "v1", loaded(tmp_path, config)
        )


def test_authorizer_values_as_aws_rest_apis_write_them() -> None:
    assert [context_text(v) for v in (True, False, 123, 2.0, 0.5, "x", None)] == [
        "true",
        "false",
        "123",
        "2",
        "0.5",
        "x",
        None,
    ]
    found = {"isAdmin": True, "principalId": "zoe", "integrationLatency": 7}
    assert rest_authorizer(found) == {
        "isAdmin": "true",
        "principalId": "zoe",
        "integrationLatency": 7,
    }
    claims = cognito_claims(
        {
            "cognito:groups": ["a", "b"],
            "exp": 1513495692,
            "iat": 1513492092.0,
            "auth_time": 1513492092,
            "email_verified": False,
            "address": {"country": "NZ"},
        }
    )
    assert claims == {
        "cognito:groups": "a,b",
        "exp": "Sun Dec 17 07:28:12 UTC 2017",
        "iat": "Sun Dec 17 06:28:12 UTC 2017",
        "auth_time": "1513492092",
        "email_verified": "false",
        "address": '{"country":"NZ"}',
    }
