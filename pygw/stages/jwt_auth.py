"""JWT authorizers: a bearer token verified against the issuer's keys, as AWS HTTP APIs do.

The token comes from the authorizer's first identity source (``header.authorization`` by
default; a ``Bearer `` prefix is optional). It must be signed with one of the configured
algorithms by a key of the authorizer's JWKS, found by the token's ``kid``; its ``iss`` must be
the issuer, its ``aud`` (or, without ``aud``, its ``client_id``) one of the audiences, and
``exp``/``nbf``/``iat`` must hold within ``leeway_s``. A route with ``scopes`` also needs one of
them among the token's ``scope`` (space-separated) or ``scp`` (list) claim.

Keys come from ``file://path`` (relative to the config folder, read at load so that a missing
file is a config error) or ``http(s)://`` (fetched on first use). They are kept for
``jwks_cache_s`` and fetched again, when a token names an unknown ``kid``, at most once every
``min_refresh_s`` (10 s): random kids sent by an attacker cost one fetch per interval, not one per
request. A failed fetch keeps the keys already known.

No token, or a token that does not verify: UNAUTHORIZED (401). A valid token without a required
scope: ACCESS_DENIED (403). On success, ``ctx.authorizer = {"jwt": {"claims": {...},
"scopes": [...] | None}}`` (the token's claims as decoded; integrations present them the way
their event format needs).

``CognitoAuthStage`` is the same check configured as AWS's COGNITO_USER_POOLS authorizer: the
issuers come from the user pool ARNs (one key store per pool), ``token_use`` decides which tokens a
route takes, every refusal is 401, and the claims go on already shaped as AWS's strings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from aiohttp import ClientSession, ClientTimeout

from pygw.authorizer_view import COGNITO_KEY, cognito_claims
from pygw.config.load import LoadedConfig
from pygw.config.model import CognitoAuthorizerConfig, JwtAuthorizerConfig, RouteConfig
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.identity_source import IdentityGetter, identity_getter
from pygw.pipeline import Stage, checked_to_the_end
from pygw.response import Response

__all__ = [
    "CognitoAuthStage",
    "JwksKeys",
    "JwtAuthStage",
    "StaticKeys",
    "VerifyingKey",
    "build_cognito_stage",
    "build_jwt_stage",
    "token_scopes",
]

log = logging.getLogger("pygw.auth")

MIN_REFRESH_S = 10.0
FETCH_TIMEOUT_S = 5.0
# A JWKS is a few kilobytes; a larger answer is a misconfigured URL or a hostile server.
_MAX_JWKS_BYTES = 1 << 20

# The key types each algorithm family may be verified with: a token cannot pick an RSA public key
# as an HMAC secret (algorithm confusion).
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "HS": "oct"}


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    kid: str | None
    kty: str
    alg: str | None  # the JWK's own "alg", when it names one
    key: Any  # what PyJWT verifies with: a cryptography public key, or bytes for HMAC


def _parse_jwks(document: Any) -> dict[str | None, VerifyingKey]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (an object with a 'keys' list)")
    keys: dict[str | None, VerifyingKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kty = entry.get("kty")
        if not isinstance(kty, str) or kty not in _KEY_TYPES.values():
            continue
        try:
            parsed = jwt.PyJWK(entry)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            # One unusable key must not take the issuer's other keys down with it.
            continue
        kid = entry.get("kid")
        alg = entry.get("alg")
        keys[kid if isinstance(kid, str) else None] = VerifyingKey(
            kid if isinstance(kid, str) else None,
            kty,
            alg if isinstance(alg, str) else None,
            parsed.key,
        )
    return keys


def _pick(keys: Mapping[str | None, VerifyingKey], kid: str | None) -> VerifyingKey | None:
    if kid is None:
        # A token without kid is verifiable only when the issuer has a single key.
        return next(iter(keys.values())) if len(keys) == 1 else None
    return keys.get(kid)


class StaticKeys:
    """One fixed key (an HMAC secret from the config): nothing to fetch."""

    __slots__ = ("_key",)

    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        self._key = VerifyingKey(None, "oct", None, raw)

    async def key_for(self, kid: str | None) -> VerifyingKey | None:
        return self._key

    def still_holds(self, key: VerifyingKey) -> bool:
        return key is self._key


class JwksKeys:
    """The keys of one JWKS location, cached and refreshed at a bounded rate."""

    __slots__ = (
        "__weakref__",
        "_cache_s",
        "_clock",
        "_expires_at",
        "_fetch_timeout_s",
        "_fetching",
        "_keys",
        "_last_attempt",
        "_min_refresh_s",
        "fetches",
        "location",
    )

    def __init__(
        self,
        location: str,
        folder: Path | None = None,
        *,
        cache_s: float = 300.0,
        min_refresh_s: float = MIN_REFRESH_S,
        fetch_timeout_s: float = FETCH_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``location``: ``file://path`` (relative to ``folder``) or an http(s) URL.

        A file is read here: a missing or invalid file raises ValueError naming it.
        """
        self._cache_s = cache_s
        self._min_refresh_s = min_refresh_s
        self._fetch_timeout_s = fetch_timeout_s
        self._clock = clock
        self._keys: dict[str | None, VerifyingKey] = {}
        self._expires_at = float("-inf")
        self._last_attempt = float("-inf")
        self._fetching: asyncio.Future[None] | None = None
        self.fetches = 0
        if location.startswith("file://"):
            path = Path(location[len("file://") :]).expanduser()
            if not path.is_absolute() and folder is not None:
                path = folder / path
            self.location: str | Path = path
            self._keys = self._read_file(path)
            now = clock()
            self._expires_at = now + cache_s
            self._last_attempt = now
        elif location.startswith(("http://", "https://")):
            self.location = location
        else:
            raise ValueError(f"jwks {location!r} is neither file:// nor http(s)://")

    @staticmethod
    def _read_file(path: Path) -> dict[str | None, VerifyingKey]:
        try:
            document = json.loads(path.read_bytes())
        except OSError as err:
            raise ValueError(f"cannot read JWKS file {path}: {err.strerror or err}") from None
        except ValueError as err:
            raise ValueError(f"JWKS file {path} is not JSON: {err}") from None
        try:
            keys = _parse_jwks(document)
        except ValueError as err:
            raise ValueError(f"JWKS file {path}: {err}") from None
        if not keys:
            raise ValueError(f"JWKS file {path} holds no usable signing key")
        return keys

    def still_holds(self, key: VerifyingKey) -> bool:
        """Whether a token verified with `key` may be trusted without checking it again: the key
        is still in the set and the set is not due for a refresh."""
        return self._clock() < self._expires_at and any(k is key for k in self._keys.values())

    async def key_for(self, kid: str | None) -> VerifyingKey | None:
        now = self._clock()
        found = _pick(self._keys, kid)
        if found is not None and now < self._expires_at:
            return found
        # Stale keys, or an unknown kid: fetch again, but never more often than min_refresh_s.
        if self._fetching is not None:
            await asyncio.shield(self._fetching)
        elif now - self._last_attempt >= self._min_refresh_s:
            await self._refresh()
        return _pick(self._keys, kid)

    async def _refresh(self) -> None:
        loop = asyncio.get_running_loop()
        self._fetching = done = loop.create_future()
        self._last_attempt = self._clock()
        self.fetches += 1
        try:
            keys = await self._load()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            # Keep serving with the keys already known; the next attempt waits min_refresh_s.
            log.warning("could not refresh JWKS from %s: %s", self.location, err)
        else:
            self._keys = keys
            self._expires_at = self._clock() + self._cache_s
        finally:
            self._fetching = None
            done.set_result(None)

    async def _load(self) -> dict[str | None, VerifyingKey]:
        location = self.location
        if isinstance(location, Path):
            return await asyncio.to_thread(self._read_file, location)
        timeout = ClientTimeout(total=self._fetch_timeout_s)
        async with (
            ClientSession(timeout=timeout) as session,
            session.get(location, headers={"Accept": "application/json"}) as response,
        ):
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                body += chunk
                if len(body) > _MAX_JWKS_BYTES:
                    raise ValueError(f"answer larger than {_MAX_JWKS_BYTES} bytes")
        try:
            keys = _parse_jwks(json.loads(body))
        except ValueError as err:
            raise ValueError(f"invalid JWKS: {err}") from None
        return keys


def token_scopes(claims: Mapping[str, Any]) -> list[str] | None:
    """The token's scopes: ``scope`` (space-separated) or ``scp`` (a list, or a string)."""
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            return value.split()
        if isinstance(value, list):
            return [v for v in value if isinstance(v, str)]
    return None


def _strip_bearer(value: str) -> str:
    value = value.strip()
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    return value


class JwtAuthStage:
    """Verifies the request's JWT; see the module docstring for what it answers."""

    __slots__ = (
        "_algorithms",
        "_audience",
        "_get_token",
        "_issuers",
        "_leeway",
        "_scopes",
        "_verified",
    )

    # Verified tokens are kept until they expire: a signature check costs more than the rest of
    # the request (about 180 us for RS256). Only tokens that passed every check get in, so
    # attacker-made tokens cannot fill it; the oldest go first when it is full.
    _VERIFIED_MAX = 4096

    def __init__(
        self,
        cfg: JwtAuthorizerConfig,
        keys: JwksKeys | StaticKeys,
        scopes: list[str] | tuple[str, ...] = (),
    ) -> None:
        self._setup(
            {cfg.issuer: keys},
            identity_getter(cfg.identity_source[0]),
            cfg.algorithms,
            cfg.audience,
            cfg.leeway_s,
            scopes,
        )

    def _setup(
        self,
        issuers: Mapping[str, JwksKeys | StaticKeys],
        get_token: IdentityGetter,
        algorithms: list[str] | tuple[str, ...],
        audience: list[str] | tuple[str, ...],
        leeway_s: float,
        scopes: list[str] | tuple[str, ...],
    ) -> None:
        self._issuers = dict(issuers)
        self._get_token = get_token
        self._algorithms = frozenset(algorithms)
        self._audience = frozenset(audience)
        self._leeway = float(leeway_s)
        self._scopes = frozenset(scopes)
        # token -> (claims, the view of them the stage hands on, expiry, key, its key store)
        self._verified: dict[
            str, tuple[dict[str, Any], Any, float, VerifyingKey, JwksKeys | StaticKeys]
        ] = {}

    async def __call__(self, ctx: RequestContext) -> Response | None:
        return await checked_to_the_end(self.check, ctx)

    def check(self, ctx: RequestContext) -> Coroutine[Any, Any, None] | None:
        """A token verified before passes (or is refused) at once; any other is verified by the
        coroutine returned, which may have to fetch the issuer's keys (see pygw/pipeline.py)."""
        raw = self._get_token(ctx)
        token = _strip_bearer(raw) if raw else ""
        if not token:
            raise GatewayError(ErrorType.UNAUTHORIZED)
        known = self._verified.get(token)
        if known is not None and known[2] > time.time() and known[4].still_holds(known[3]):
            self._grant(ctx, known[0], known[1])
            return None
        return self._verify_and_grant(ctx, token)

    async def _verify_and_grant(self, ctx: RequestContext, token: str) -> None:
        verified = await self._verify(token)
        if verified is None:
            raise GatewayError(ErrorType.UNAUTHORIZED)
        claims, key, keys = verified
        view = self._view(claims)
        self._remember(token, claims, view, key, keys)
        self._grant(ctx, claims, view)

    def _view(self, claims: dict[str, Any]) -> Any:
        """What of a verified token's claims the stage hands on, computed once per token."""
        return claims

    def _grant(self, ctx: RequestContext, claims: dict[str, Any], view: Any) -> None:
        """The route's own checks of a verified token; sets ctx.authorizer when they pass."""
        scopes = token_scopes(claims)
        if self._scopes and not (scopes and self._scopes.intersection(scopes)):
            raise GatewayError(ErrorType.ACCESS_DENIED)
        ctx.authorizer = {"jwt": {"claims": claims, "scopes": scopes}}

    def _remember(
        self,
        token: str,
        claims: dict[str, Any],
        view: Any,
        key: VerifyingKey,
        keys: JwksKeys | StaticKeys,
    ) -> None:
        exp = claims.get("exp")
        if not isinstance(exp, int | float):
            return
        verified = self._verified
        if len(verified) >= self._VERIFIED_MAX:
            del verified[next(iter(verified))]
        verified[token] = (claims, view, float(exp) + self._leeway, key, keys)

    def _keys_for(self, token: str) -> tuple[str, JwksKeys | StaticKeys] | None:
        """The issuer the token must name and the keys to verify it with."""
        if len(self._issuers) == 1:
            return next(iter(self._issuers.items()))
        # Several issuers (a Cognito authorizer over several pools): the unverified iss picks
        # the key set; the signature and the iss check below still decide.
        try:
            iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except (jwt.PyJWTError, ValueError, TypeError, AttributeError):
            return None
        keys = self._issuers.get(iss) if isinstance(iss, str) else None
        return (iss, keys) if isinstance(iss, str) and keys is not None else None

    async def _verify(
        self, token: str
    ) -> tuple[dict[str, Any], VerifyingKey, JwksKeys | StaticKeys] | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        alg = header.get("alg")
        kid = header.get("kid")
        if not isinstance(alg, str) or alg not in self._algorithms:
            return None
        if kid is not None and not isinstance(kid, str):
            return None
        found = self._keys_for(token)
        if found is None:
            return None
        issuer, keys = found
        key = await keys.key_for(kid)
        if key is None:
            return None
        if _KEY_TYPES.get(alg[:2]) != key.kty or (key.alg is not None and key.alg != alg):
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                issuer=issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss"], "verify_aud": False},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        return (claims, key, keys) if self._audience_ok(claims) else None

    def _audience_ok(self, claims: Mapping[str, Any]) -> bool:
        aud = claims.get("aud")
        if aud is None:
            # Cognito access tokens carry the app client in client_id instead of aud.
            client_id = claims.get("client_id")
            return isinstance(client_id, str) and client_id in self._audience
        if isinstance(aud, str):
            return aud in self._audience
        if isinstance(aud, list):
            return any(isinstance(a, str) and a in self._audience for a in aud)
        return False


class CognitoAuthStage(JwtAuthStage):
    """AWS's COGNITO_USER_POOLS authorizer: a JWT check whose issuers are user pools.

    The token is the identity source header's value (a ``Bearer `` prefix is allowed, as AWS's
    console test accepts it). A route without scopes takes ID tokens (``token_use: id``) only; a
    route with scopes takes access tokens (``token_use: access``) carrying one of them, as AWS
    treats a token as an access token exactly when the method has OAuth scopes. With
    ``app_clients`` set, an ID token's ``aud`` or an access token's ``client_id`` must be one of
    them. Every refusal is AWS's 401 ``{"message":"Unauthorized"}``: its REST Cognito authorizer
    has no 403 of its own. The claims go on as ``{"cognito": {"claims": {...}}}``, already
    stringified as AWS shows them (pygw.authorizer_view).
    """

    __slots__ = ()

    def __init__(
        self,
        cfg: CognitoAuthorizerConfig,
        issuers: Mapping[str, JwksKeys],
        scopes: list[str] | tuple[str, ...] = (),
    ) -> None:
        self._setup(
            issuers,
            identity_getter(cfg.identity_source[0]),
            _COGNITO_ALGORITHMS,
            cfg.app_clients,
            cfg.leeway_s,
            scopes,
        )

    def _audience_ok(self, claims: Mapping[str, Any]) -> bool:
        use = claims.get("token_use")
        if use == "id":
            client = claims.get("aud")
        elif use == "access":
            client = claims.get("client_id")
        else:
            return False
        if not self._audience:
            return True
        if isinstance(client, list):
            return any(isinstance(c, str) and c in self._audience for c in client)
        return isinstance(client, str) and client in self._audience

    def _view(self, claims: dict[str, Any]) -> Any:
        return {COGNITO_KEY: {"claims": cognito_claims(claims)}}

    def _grant(self, ctx: RequestContext, claims: dict[str, Any], view: Any) -> None:
        use = claims.get("token_use")
        if self._scopes:
            scopes = token_scopes(claims)
            if use != "access" or not (scopes and self._scopes.intersection(scopes)):
                raise GatewayError(ErrorType.UNAUTHORIZED)
        elif use != "id":
            raise GatewayError(ErrorType.UNAUTHORIZED)
        ctx.authorizer = view


# Cognito signs its tokens with RS256 only.
_COGNITO_ALGORITHMS = ("RS256",)


# One key store per authorizer config object (and issuer), shared by its routes; it holds the
# config, so the id cannot be reused while the entry exists.
_SHARED: weakref.WeakValueDictionary[tuple[int, str], JwksKeys] = weakref.WeakValueDictionary()
_SHARED_CFG: weakref.WeakKeyDictionary[JwksKeys, JwtAuthorizerConfig | CognitoAuthorizerConfig] = (
    weakref.WeakKeyDictionary()
)


def _shared_keys(
    cfg: JwtAuthorizerConfig | CognitoAuthorizerConfig,
    issuer: str,
    location: str,
    loaded_config: LoadedConfig,
) -> JwksKeys:
    slot = (id(cfg), issuer)
    found = _SHARED.get(slot)
    if found is None or _SHARED_CFG.get(found) is not cfg:
        found = JwksKeys(location, loaded_config.folder, cache_s=cfg.jwks_cache_s)
        _SHARED[slot] = found
        _SHARED_CFG[found] = cfg
    return found


def build_jwt_stage(
    authorizer_cfg: JwtAuthorizerConfig, route_cfg: RouteConfig, loaded_config: LoadedConfig
) -> Stage:
    """The JWT stage of one route. Raises ValueError for a JWKS file that is missing or holds no
    usable key, or an identity source that cannot be read."""
    secret = getattr(authorizer_cfg, "secret", None)
    keys: JwksKeys | StaticKeys
    if isinstance(secret, str | bytes) and secret:
        keys = StaticKeys(secret)
    else:
        keys = _shared_keys(
            authorizer_cfg, authorizer_cfg.issuer, authorizer_cfg.jwks_url, loaded_config
        )
    return JwtAuthStage(authorizer_cfg, keys, list(route_cfg.scopes))


def build_cognito_stage(
    authorizer_cfg: CognitoAuthorizerConfig, route_cfg: RouteConfig, loaded_config: LoadedConfig
) -> Stage:
    """The Cognito user pool stage of one route. Raises ValueError for a JWKS file that is
    missing or holds no usable key."""
    issuers = {
        issuer: _shared_keys(authorizer_cfg, issuer, authorizer_cfg.jwks_for(issuer), loaded_config)
        for issuer in authorizer_cfg.issuers
    }
    return CognitoAuthStage(authorizer_cfg, issuers, list(route_cfg.scopes))
