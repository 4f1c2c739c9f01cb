"""Custom authorizers: a Python callable decides access, as an AWS Lambda authorizer would.

The callable (``module:function``, sync or async, taking ``(event)`` or ``(event, context)``) is
imported once at load and called with the event AWS sends its Lambda authorizers:

- ``TOKEN`` (REST-style): ``{"type": "TOKEN", "authorizationToken": ..., "methodArn": ...}``;
- ``REQUEST``, payload format 1.0: ``methodArn``, ``resource``, ``path``, ``httpMethod``,
  ``headers``, ``multiValueHeaders``, ``queryStringParameters``, ``pathParameters``,
  ``stageVariables``, ``requestContext``, ...;
- ``REQUEST``, payload format 2.0 (HTTP-style): ``routeArn``, ``identitySource``, ``routeKey``,
  ``rawPath``, ``rawQueryString``, ``cookies``, ``headers``, ``requestContext``, ...

It answers with an IAM policy (``principalId``, ``policyDocument``, ``context``), evaluated against
the request's method ARN with ``*``/``?`` wildcards and an explicit Deny winning, or, with
``simple_responses``, ``{"isAuthorized": bool, "context": {...}}``. Raising
``Exception("Unauthorized")`` answers 401, as in AWS.

Answers are cached per authorizer for ``ttl_s`` by the identity source values (a policy is cached,
then evaluated against each request's ARN, so one answer serves every route it names). A missing
identity source answers 401 without calling the authorizer; a denial answers AUTHORIZER_DENIED; an
exception, a timeout or a malformed answer answers AUTHORIZER_FAILURE, and only the log learns why.

Writes on success ``ctx.authorizer`` = ``{**context, "principalId": ..., "integrationLatency":
MS}`` whatever the authorizer's payload format (``principalId`` left out of simple responses,
which have none); the integration presents it as its own event format wants (REST-style 1.0 flat
and stringified, 2.0 under ``lambda`` with types kept: pygw.authorizer_view). On a WebSocket API's
``$connect`` the event is AWS's WebSocket form: ``methodArn`` ends with ``$connect`` and
``requestContext`` names the ``connectionId`` being opened. A policy's
``usageIdentifierKey`` goes to ``ctx.usage_identifier_key``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp

from pygw.authorizer_view import INTEGRATION_LATENCY
from pygw.aws_ids import ACCOUNT_ID, api_id_for
from pygw.aws_time import request_time
from pygw.config.load import LoadedConfig
from pygw.config.model import ApiConfig, CustomAuthorizerConfig, RouteConfig
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.identity_source import IdentityGetter, identity_getter
from pygw.lambda_client import FunctionError, invocation_url, invoke
from pygw.lambda_context import LambdaContext, new_log_stream
from pygw.loader import is_async, load_callable
from pygw.pipeline import Stage, checked_to_the_end
from pygw.request import Request
from pygw.response import Response
from pygw.tls import client_certificate

__all__ = [
    "ACCOUNT_ID",
    "AUTHORIZER_FAILURE",
    "REGION",
    "AuthorizerAnswer",
    "CustomAuthStage",
    "CustomAuthorizer",
    "IdentityGetter",
    "build_custom_auth_stage",
    "identity_getter",
    "load_callable",
    "method_arn",
    "parse_answer",
]

log = logging.getLogger("pygw.auth")


# Authorizers written for AWS split and rebuild method ARNs, so ARNs keep AWS's shape, with the
# same fixed account and API ids the function integration's events carry.
REGION = "local"

# AWS answers an authorizer that fails (raises, times out, answers garbage) with a 500 of its own;
# the table's INTEGRATION_FAILURE row is the closest existing one.
AUTHORIZER_FAILURE = ErrorType.AUTHORIZER_FAILURE

# What AWS's Lambda authorizers raise to ask for a 401 rather than a failure.
_UNAUTHORIZED_MESSAGE = "Unauthorized"
# Identities are attacker-chosen: a flood of distinct tokens must not grow the cache without end.
_CACHE_ENTRIES = 10_000
# The route key of a WebSocket API's connection request, the only one AWS lets authorize.
WEBSOCKET_CONNECT = "$connect"


# --------------------------------------------------------------------------------------------------
# Loading the callable


def _takes_context(fn: Callable[..., Any]) -> bool:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    try:
        signature.bind(None, None)
    except TypeError:
        return False
    return True


def _remote_authorizer(endpoint: str, function_name: str) -> Callable[..., Any]:
    """An authorizer function behind the Lambda Invoke API, called as a Python one would be.

    Each call opens its own connection: answers are cached by identity (ttl_s), so authorizer
    calls are few, and a per-call session leaves nothing to close when a snapshot retires."""
    url = invocation_url(endpoint, function_name)

    async def call(event: dict[str, Any]) -> Any:
        async with aiohttp.ClientSession() as session:
            try:
                return await invoke(session, url, event, "")
            except FunctionError as failed:
                # "Unauthorized" raised by the function is the 401 answer, as on AWS.
                raise Exception(str(failed)) from None

    return call


# --------------------------------------------------------------------------------------------------
# Answers


class _MalformedAnswer(ValueError):
    pass


def _wildcard(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.compile("".join(parts), flags)


def _strings(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise _MalformedAnswer(f"{what} must be a string or a list of strings")


_INVOKE = "execute-api:Invoke"


@dataclass(frozen=True, slots=True)
class AuthorizerAnswer:
    """An authorizer's answer, parsed once and cached; ``allows`` is evaluated per request."""

    principal_id: str | None
    context: dict[str, Any]
    # None: a simple response, whose verdict is `authorized`.
    allow: tuple[re.Pattern[str], ...] | None
    deny: tuple[re.Pattern[str], ...]
    authorized: bool
    usage_identifier_key: str | None = None

    def allows(self, arn: str) -> bool:
        if self.allow is None:
            return self.authorized
        if any(p.fullmatch(arn) for p in self.deny):
            return False
        return any(p.fullmatch(arn) for p in self.allow)


def parse_answer(answer: Any, simple: bool, payload_format: str) -> AuthorizerAnswer:
    """Read an authorizer's return value as AWS does; raises ValueError when it is malformed."""
    if not isinstance(answer, dict):
        raise _MalformedAnswer(f"the answer is a {type(answer).__name__}, not an object")
    context = answer.get("context")
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise _MalformedAnswer("context must be an object")
    if payload_format == "1.0":
        for key, value in context.items():
            # REST-style APIs refuse nested values in an authorizer's context.
            if not isinstance(value, str | int | float | bool) and value is not None:
                raise _MalformedAnswer(f"context value {key!r} is not a string, number or bool")
    if simple:
        authorized = answer.get("isAuthorized")
        if not isinstance(authorized, bool):
            raise _MalformedAnswer("isAuthorized must be true or false")
        return AuthorizerAnswer(None, context, None, (), authorized)

    principal = answer.get("principalId")
    if principal is not None and not isinstance(principal, str | int):
        raise _MalformedAnswer("principalId must be a string")
    if principal is None and payload_format == "1.0":
        raise _MalformedAnswer("principalId is missing")
    document = answer.get("policyDocument")
    if not isinstance(document, dict):
        raise _MalformedAnswer("policyDocument is missing")
    statements = document.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        raise _MalformedAnswer("policyDocument.Statement must be a list")
    allow: list[re.Pattern[str]] = []
    deny: list[re.Pattern[str]] = []
    for statement in statements:
        if not isinstance(statement, dict):
            raise _MalformedAnswer("a Statement is not an object")
        effect = statement.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise _MalformedAnswer("a Statement's Effect must be Allow or Deny")
        actions = _strings(statement.get("Action"), "Action")
        resources = _strings(statement.get("Resource"), "Resource")
        if not any(_wildcard(a, ignore_case=True).fullmatch(_INVOKE) for a in actions):
            continue
        (allow if effect == "Allow" else deny).extend(_wildcard(r) for r in resources)
    usage_key = answer.get("usageIdentifierKey")
    return AuthorizerAnswer(
        str(principal) if principal is not None else None,
        context,
        tuple(allow),
        tuple(deny),
        False,
        usage_key if isinstance(usage_key, str) else None,
    )


def method_arn(api_id: str, stage: str, method: str, path: str) -> str:
    """arn:aws:execute-api:{region}:{account}:{api}/{stage}/{METHOD}/{path without leading /}."""
    resource = path[1:] if path.startswith("/") else path
    return f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{api_id}/{stage}/{method}/{resource}"


# --------------------------------------------------------------------------------------------------
# The authorizer (one per configured authorizer, shared by the routes that use it)


class CustomAuthorizer:
    """The loaded callable, its settings and its answer cache."""

    __slots__ = (
        "__weakref__",
        "_cache",
        "_call",
        "_getters",
        "_is_async",
        "_log_stream",
        "_pass_context",
        "_regex",
        "_timeout_s",
        "_ttl_s",
        "api_id",
        "cfg",
        "kind",
        "name",
        "payload_format",
        "simple",
        "stage",
    )

    def __init__(
        self,
        cfg: CustomAuthorizerConfig,
        search_paths: Sequence[Path | str],
        *,
        api_id: str,
        stage: str,
        name: str = "authorizer",
        cache_entries: int = _CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self._call: Callable[..., Any] = (
            load_callable(cfg.handler, search_paths)
            if cfg.handler is not None
            else _remote_authorizer(cfg.endpoint or "", cfg.function_name or "")
        )
        self._is_async = is_async(self._call)
        self._pass_context = _takes_context(self._call)
        self._getters = tuple(identity_getter(source) for source in cfg.identity_source)
        self._regex = re.compile(cfg.validation_regex) if cfg.validation_regex else None
        self._timeout_s = cfg.timeout_ms / 1000.0
        self._log_stream = new_log_stream()
        # Without identity sources there is nothing to key a cached answer by.
        self._ttl_s = float(cfg.ttl_s) if self._getters else 0.0
        self._cache: _AnswerCache = _AnswerCache(cache_entries, clock)
        self.kind = cfg.kind
        self.payload_format = cfg.payload_format
        self.simple = cfg.simple_responses
        self.api_id = api_id
        self.stage = stage
        self.name = name

    def identity(self, ctx: RequestContext) -> tuple[str, ...] | None:
        """The identity source values, or None when one is missing or empty (AWS: 401)."""
        values = []
        for getter in self._getters:
            value = getter(ctx)
            if not value:
                return None
            values.append(value)
        if self._regex is not None and not self._regex.fullmatch(values[0]):
            return None
        return tuple(values)

    def cached(self, identity: tuple[str, ...]) -> AuthorizerAnswer | None:
        """The answer kept for `identity`, while its time to live lasts."""
        return self._cache.get(identity) if self._ttl_s > 0 else None

    async def answer(
        self, identity: tuple[str, ...], event_for: Callable[[], dict[str, Any]], request_id: str
    ) -> AuthorizerAnswer:
        cached = self.cached(identity)
        if cached is not None:
            return cached
        answer = await self._invoke(event_for(), request_id)
        if self._ttl_s > 0:
            self._cache.put(identity, answer, self._ttl_s)
        return answer

    async def _invoke(self, event: dict[str, Any], request_id: str) -> AuthorizerAnswer:
        args: tuple[Any, ...] = (event,)
        if self._pass_context:
            timeout_ms = int(self._timeout_s * 1000)
            args = (event, LambdaContext(request_id, self.name, timeout_ms, self._log_stream))
        try:
            async with asyncio.timeout(self._timeout_s):
                if self._is_async:
                    # Its own task, so context variables it sets stay with this call.
                    result = await asyncio.create_task(self._call(*args))
                else:
                    # A sync authorizer may block (I/O to an identity store): keep it off the loop.
                    result = await asyncio.to_thread(self._call, *args)
                    if inspect.isawaitable(result):
                        result = await result
        except TimeoutError:
            log.error(
                "authorizer %s timed out after %.0f ms (request %s)",
                self.name,
                self._timeout_s * 1000,
                request_id,
            )
            raise GatewayError(AUTHORIZER_FAILURE) from None
        except Exception as err:
            if str(err) == _UNAUTHORIZED_MESSAGE:
                raise GatewayError(ErrorType.UNAUTHORIZED) from None
            log.exception("authorizer %s failed (request %s)", self.name, request_id)
            raise GatewayError(AUTHORIZER_FAILURE) from None
        try:
            return parse_answer(result, self.simple, self.payload_format)
        except _MalformedAnswer as err:
            log.error(
                "authorizer %s answered malformed (request %s): %s", self.name, request_id, err
            )
            raise GatewayError(AUTHORIZER_FAILURE) from None

    def cached_entries(self) -> int:
        return len(self._cache)


class _AnswerCache:
    __slots__ = ("_clock", "_entries", "_max")

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self._entries: OrderedDict[tuple[str, ...], tuple[float, AuthorizerAnswer]] = OrderedDict()
        self._max = max(max_entries, 1)
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, ...]) -> AuthorizerAnswer | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires_at, answer = found
        if self._clock() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return answer

    def put(self, key: tuple[str, ...], answer: AuthorizerAnswer, ttl_s: float) -> None:
        entries = self._entries
        entries[key] = (self._clock() + ttl_s, answer)
        entries.move_to_end(key)
        while len(entries) > self._max:
            entries.popitem(last=False)


# --------------------------------------------------------------------------------------------------
# Events


def _single_headers(request: Request) -> dict[str, str]:
    # Payload 1.0: the last value of a repeated header.
    return {str(name): value for name, value in request.headers.items()}


def _multi_headers(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        out.setdefault(str(name), []).append(value)
    return out


def _joined(pairs: Iterable[tuple[str, str]], lower: bool) -> dict[str, str]:
    # Payload 2.0: repeats joined with commas (and header names lower-cased).
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower() if lower else str(name)
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def _query_last(request: Request) -> dict[str, str] | None:
    query = request.query
    if not query:
        return None
    return {name: query.getall(name)[-1] for name in query}


def _query_multi(request: Request) -> dict[str, list[str]] | None:
    query = request.query
    if not query:
        return None
    return {name: list(query.getall(name)) for name in query}


class _EventBuilder:
    """Builds the authorizer event of one route; what is fixed per route is computed once."""

    __slots__ = ("_auth", "_connect_arn", "_resource", "_route_key", "_stage_prefix")

    def __init__(self, authorizer: CustomAuthorizer, route_key: str) -> None:
        self._auth = authorizer
        self._route_key = route_key
        _method, _, path = route_key.partition(" ")
        self._resource = path if path else route_key
        stage = authorizer.stage
        self._stage_prefix = "" if stage == "$default" else f"/{stage}"
        # A WebSocket API's $connect: AWS's ARN has no method, it ends with the route key.
        self._connect_arn = (
            f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{authorizer.api_id}/{stage}/{route_key}"
            if route_key == WEBSOCKET_CONNECT
            else None
        )

    def arn(self, ctx: RequestContext) -> str:
        if self._connect_arn is not None:
            return self._connect_arn
        auth = self._auth
        return method_arn(auth.api_id, auth.stage, ctx.request.method, ctx.path)

    def build(self, ctx: RequestContext, arn: str, identity: tuple[str, ...]) -> dict[str, Any]:
        auth = self._auth
        if auth.kind == "TOKEN":
            return {"type": "TOKEN", "authorizationToken": identity[0], "methodArn": arn}
        if self._connect_arn is not None:
            if auth.payload_format == "1.0":
                return self._connect_v1(ctx, arn)
            event = self._request_v2(ctx, arn, identity)
            event["requestContext"]["connectionId"] = ctx.connection_id
            event["requestContext"]["eventType"] = "CONNECT"
            return event
        if auth.payload_format == "1.0":
            return self._request_v1(ctx, arn)
        return self._request_v2(ctx, arn, identity)

    def _connect_v1(self, ctx: RequestContext, arn: str) -> dict[str, Any]:
        """AWS's WebSocket REQUEST authorizer event: REST-like, with the connection's context."""
        request = ctx.request
        auth = self._auth
        now = time.time()
        return {
            "type": "REQUEST",
            "methodArn": arn,
            "headers": _single_headers(request),
            "multiValueHeaders": _multi_headers(request),
            "queryStringParameters": _query_last(request) or {},
            "multiValueQueryStringParameters": _query_multi(request) or {},
            "stageVariables": dict(ctx.stage_variables),
            "requestContext": {
                "routeKey": self._route_key,
                "eventType": "CONNECT",
                "extendedRequestId": ctx.request_id,
                "requestTime": request_time(now),
                "messageDirection": "IN",
                "stage": auth.stage,
                "connectedAt": ctx.connected_at_ms or int(now * 1000),
                "requestTimeEpoch": int(now * 1000),
                "identity": {
                    "sourceIp": ctx.client_ip,
                    "userAgent": request.headers.get("User-Agent", ""),
                },
                "requestId": ctx.request_id,
                "domainName": request.host,
                "connectionId": ctx.connection_id,
                "apiId": auth.api_id,
            },
        }

    def _request_v1(self, ctx: RequestContext, arn: str) -> dict[str, Any]:
        request = ctx.request
        auth = self._auth
        now = time.time()
        full_path = self._stage_prefix + ctx.path
        identity: dict[str, Any] = {
            "sourceIp": ctx.client_ip,
            "userAgent": request.headers.get("User-Agent"),
        }
        client_cert = client_certificate(request)
        if client_cert is not None:
            identity["clientCert"] = client_cert
        return {
            "type": "REQUEST",
            "methodArn": arn,
            "resource": self._resource,
            "path": full_path,
            "httpMethod": request.method,
            "headers": _single_headers(request),
            "multiValueHeaders": _multi_headers(request),
            "queryStringParameters": _query_last(request),
            "multiValueQueryStringParameters": _query_multi(request),
            "pathParameters": dict(ctx.params) or None,
            "stageVariables": dict(ctx.stage_variables) or None,
            "requestContext": {
                "accountId": ACCOUNT_ID,
                "apiId": auth.api_id,
                "domainName": request.host,
                "domainPrefix": request.host.split(".", 1)[0],
                "extendedRequestId": ctx.request_id,
                "httpMethod": request.method,
                "identity": identity,
                "path": full_path,
                "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
                "requestId": ctx.request_id,
                "requestTime": request_time(now),
                "requestTimeEpoch": int(now * 1000),
                "resourceId": self._route_key,
                "resourcePath": self._resource,
                "stage": auth.stage,
            },
        }

    def _request_v2(
        self, ctx: RequestContext, arn: str, identity: tuple[str, ...]
    ) -> dict[str, Any]:
        request = ctx.request
        auth = self._auth
        now = time.time()
        raw_path = self._stage_prefix + ctx.path
        headers = _joined(request.headers.items(), lower=True)
        cookies = headers.pop("cookie", None)
        query = request.query
        event: dict[str, Any] = {
            "version": "2.0",
            "type": "REQUEST",
            "routeArn": arn,
            "identitySource": list(identity),
            "routeKey": self._route_key,
            "rawPath": raw_path,
            "rawQueryString": request.raw_query_string,
        }
        if cookies is not None:
            event["cookies"] = [c.strip() for c in cookies.split(";") if c.strip()]
        event["headers"] = headers
        if query:
            event["queryStringParameters"] = _joined(query.items(), lower=False)
        event["requestContext"] = {
            "accountId": ACCOUNT_ID,
            "apiId": auth.api_id,
            "domainName": request.host,
            "domainPrefix": request.host.split(".", 1)[0],
            "http": {
                "method": request.method,
                "path": raw_path,
                "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
                "sourceIp": ctx.client_ip,
                "userAgent": request.headers.get("User-Agent", ""),
            },
            "requestId": ctx.request_id,
            "routeKey": self._route_key,
            "stage": auth.stage,
            "time": request_time(now),
            "timeEpoch": int(now * 1000),
        }
        client_cert = client_certificate(request)
        if client_cert is not None:
            event["requestContext"]["authentication"] = {"clientCert": client_cert}
        if ctx.params:
            event["pathParameters"] = {k: unquote(v) for k, v in ctx.params.items()}
        if ctx.stage_variables:
            event["stageVariables"] = dict(ctx.stage_variables)
        return event


# --------------------------------------------------------------------------------------------------
# The stage


class CustomAuthStage:
    """Runs a route's custom authorizer; see the module docstring for what it answers."""

    __slots__ = ("_authorizer", "_events")

    def __init__(self, authorizer: CustomAuthorizer, route_key: str) -> None:
        self._authorizer = authorizer
        self._events = _EventBuilder(authorizer, route_key)

    @property
    def authorizer(self) -> CustomAuthorizer:
        return self._authorizer

    async def __call__(self, ctx: RequestContext) -> Response | None:
        return await checked_to_the_end(self.check, ctx)

    def check(self, ctx: RequestContext) -> Coroutine[Any, Any, None] | None:
        """A request whose identity has a cached answer is decided at once; any other gets the
        coroutine that asks the authorizer (see pygw/pipeline.py)."""
        authorizer = self._authorizer
        identity = authorizer.identity(ctx)
        if identity is None:
            raise GatewayError(ErrorType.UNAUTHORIZED)
        arn = self._events.arn(ctx)
        started = time.perf_counter()
        known = authorizer.cached(identity)
        if known is None:
            return self._ask(ctx, identity, arn, started)
        self._grant(ctx, arn, known, started)
        return None

    async def _ask(
        self, ctx: RequestContext, identity: tuple[str, ...], arn: str, started: float
    ) -> None:
        events = self._events
        answer = await self._authorizer.answer(
            identity, lambda: events.build(ctx, arn, identity), ctx.request_id
        )
        self._grant(ctx, arn, answer, started)

    @staticmethod
    def _grant(ctx: RequestContext, arn: str, answer: AuthorizerAnswer, started: float) -> None:
        if not answer.allows(arn):
            raise GatewayError(ErrorType.AUTHORIZER_DENIED)
        found: dict[str, Any] = dict(answer.context)
        if answer.principal_id is not None:
            found["principalId"] = answer.principal_id
        # The authorizer's own run time, as AWS reports it beside the context (a cached answer
        # takes no time).
        found[INTEGRATION_LATENCY] = int((time.perf_counter() - started) * 1000)
        ctx.authorizer = found
        if answer.usage_identifier_key is not None:
            ctx.usage_identifier_key = answer.usage_identifier_key


# One CustomAuthorizer per authorizer config object and stage: the routes of an authorizer share its
# callable and its cache, as AWS caches per authorizer, not per route. An entry lives as long as
# the stages holding it (a runtime snapshot), and holds its config, so the id cannot be reused
# while the entry exists.
_SHARED: weakref.WeakValueDictionary[tuple[int, str, str], CustomAuthorizer] = (
    weakref.WeakValueDictionary()
)


def _route_key_of(api_cfg: ApiConfig, route_cfg: RouteConfig) -> str:
    for key, route in api_cfg.routes.items():
        if route is route_cfg:
            return key
    for key, route in api_cfg.routes.items():
        if route == route_cfg:
            return key
    return "$default"


def build_custom_auth_stage(
    authorizer_cfg: CustomAuthorizerConfig,
    route_cfg: RouteConfig,
    api_cfg: ApiConfig,
    stage_name: str,
    loaded_config: LoadedConfig,
    route_key: str | None = None,
) -> Stage:
    """The custom authorizer stage of one route. Raises ValueError when the handler cannot be
    loaded (missing module or attribute, import error) or an identity source is not readable."""
    name = route_cfg.authorizer or "authorizer"
    shared_key = (id(authorizer_cfg), api_cfg.name, stage_name)
    authorizer = _SHARED.get(shared_key)
    if authorizer is None or authorizer.cfg is not authorizer_cfg:
        authorizer = CustomAuthorizer(
            authorizer_cfg,
            [
                *(loaded_config.resolve(p) for p in authorizer_cfg.python_path),
                *loaded_config.python_paths(),
            ],
            api_id=api_id_for(api_cfg.name),
            stage=stage_name,
            name=name,
        )
        _SHARED[shared_key] = authorizer
    key = route_key if route_key is not None else _route_key_of(api_cfg, route_cfg)
    return CustomAuthStage(authorizer, key)
