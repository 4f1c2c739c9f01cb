"""AWS Lambda proxy events (payload formats 1.0 and 2.0) and the reading of a function's result.

The shapes follow what API Gateway was recorded sending and answering (SPEC.md section 7,
`testdata/aws-parity/test_apigateway_lambda.snapshot.json`):

- 1.0 (REST-style, and HTTP-style when selected): header names as the client sent them (AWS
  spells `Authorization` its own way), the last of repeated headers and query keys in the
  single-value maps and every value in the `multiValue*` maps, query values decoded (`+` is a
  space), the path and path parameters left percent-encoded. In a REST-style event `path` is the
  path below the stage and `requestContext.path` the request path with the stage.
- 2.0: header names lower-cased and repeats comma-joined, cookies moved out of the headers into
  `cookies`, `rawQueryString` kept encoded, query values decoded and comma-joined, path
  parameters decoded, `rawPath` and `requestContext.http.path` decoded and starting with the stage
  for a named stage; keys AWS leaves out when empty are left out.

Bodies: 2.0 sends text only for text/*, application/json, application/xml and
application/javascript and base64 otherwise; REST-style 1.0 base64-encodes the media types the
API lists in `binary_media_types`. A body that is not UTF-8 is always sent base64 (it could not be
carried as text without losing bytes).

Results are read as AWS reads them: a malformed result raises `MalformedResult`, which the
integration answers with INTEGRATION_FAILURE (the reason goes to the log only).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, unquote_plus

import orjson
from multidict import CIMultiDict

from pygw._native import normalize_path
from pygw.authorizer_view import COGNITO_KEY, INTEGRATION_LATENCY, rest_authorizer
from pygw.aws_ids import ACCOUNT_ID, api_id_for
from pygw.context import RequestContext
from pygw.errors import Style
from pygw.sigv4 import iam_authorizer_v2, iam_identity_v1
from pygw.tls import client_certificate

__all__ = [
    "ACCOUNT_ID",
    "EventBuilder",
    "LambdaResult",
    "MalformedResult",
    "RouteInfo",
    "api_id_for",
    "media_type_matches",
    "read_result_v1",
    "read_result_v2",
]

# Handlers run locally: there is no account. A fixed, obviously-fake one keeps ARNs well-formed.

_TEXT_TYPES_V2: Final = frozenset({"application/json", "application/xml", "application/javascript"})
_V1_RESULT_KEYS: Final = frozenset(
    {"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"}
)
# Framing is the gateway's business: a handler's idea of it would contradict the real body.
_RESPONSE_DROPPED: Final = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "trailer", "te"}
)
_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_JSON: Final = "application/json"


class MalformedResult(ValueError):
    """The function's result is not something API Gateway would accept."""


def media_type_matches(media: str, patterns: Sequence[str]) -> bool:
    """Whether `media` (parameters ignored) matches one of `patterns` (`*/*`, `image/*`, exact)."""
    base = media.partition(";")[0].strip().lower()
    if not base:
        return False
    kind = base.partition("/")[0]
    for pattern in patterns:
        p = pattern.strip().lower()
        if p in ("*/*", base) or (p.endswith("/*") and p[:-2] == kind):
            return True
    return False


def request_time(now: float) -> str:
    """`requestContext.requestTime` as AWS writes it: `25/Nov/2026:16:14:40 +0000`."""
    t = time.gmtime(now)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def _host_without_port(host: str) -> str:
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _parse_query(raw: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    if not raw:
        return pairs
    for part in raw.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote_plus(name), unquote_plus(value)))
    return pairs


def _trace_id(now: float) -> str:
    return f"Root=1-{int(now):08x}-{os.urandom(12).hex()}"


def jwt_claim_text(value: Any) -> str:
    """A JWT claim as API Gateway renders it in events: always a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        # API Gateway prints arrays the way Go prints slices: `[admin users]`.
        return "[" + " ".join(jwt_claim_text(item) for item in value) + "]"
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """What every event of one route shares, fixed at config load."""

    route_key: str  # "GET /items/{id}", "ANY /{proxy+}", "$default"
    stage: str
    api_name: str
    style: Style
    binary_media_types: tuple[str, ...] = ()

    @property
    def resource(self) -> str:
        """The route's path template (1.0 `resource`), or `$default`."""
        _method, sep, path = self.route_key.partition(" ")
        return path if sep else self.route_key


class EventBuilder:
    """Builds one route's events; everything static is computed here, once."""

    def __init__(self, info: RouteInfo, payload_format: str) -> None:
        if payload_format not in ("1.0", "2.0"):
            raise ValueError(f"payload_format must be '1.0' or '2.0', not {payload_format!r}")
        self.info = info
        self.payload_format = payload_format
        self._api_id = api_id_for(info.api_name)
        self._resource = info.resource
        seed = f"{info.api_name}\0{info.stage}\0{info.route_key}".encode()
        self._resource_id = hashlib.sha256(seed).hexdigest()[:6]
        # A deployment is one config load.
        self._deployment_id = os.urandom(3).hex()
        self._stage_variables_null = info.style is Style.REST
        self._binary_types = info.binary_media_types

    # -- shared pieces ------------------------------------------------------------------------

    def _body_v1(self, body: bytes, content_type: str) -> tuple[str | None, bool]:
        if not body:
            return None, False
        if self.info.style is Style.REST:
            binary = bool(self._binary_types) and media_type_matches(
                content_type, self._binary_types
            )
        else:
            binary = not _is_text_v2(content_type)
        if not binary:
            try:
                return body.decode("utf-8"), False
            except UnicodeDecodeError:
                pass
        return base64.b64encode(body).decode("ascii"), True

    def _full_path(self, ctx: RequestContext) -> str:
        raw = ctx.request.raw_path.partition("?")[0]
        try:
            return normalize_path(raw)
        except ValueError:
            return raw

    # -- 1.0 ----------------------------------------------------------------------------------

    def build_v1(self, ctx: RequestContext, body: bytes, now: float) -> dict[str, Any]:
        request = ctx.request
        headers: dict[str, str] = {}
        multi_headers: dict[str, list[str]] = {}
        spelled: dict[str, str] = {}  # lower-case name -> the spelling the event uses
        rest = self.info.style is Style.REST
        for raw_name, raw_value in request.raw_headers:
            name = raw_name.decode("latin-1")
            value = raw_value.decode("latin-1")
            lower = name.lower()
            if rest and lower == "content-length":
                # Recorded: REST APIs do not pass the client's Content-Length to the function.
                continue
            key = spelled.get(lower)
            if key is None:
                key = "Authorization" if lower == "authorization" else name
                spelled[lower] = key
                multi_headers[key] = [value]
            else:
                multi_headers[key].append(value)
            headers[key] = value
        self._forwarded_v1(ctx, headers, multi_headers, spelled, now)

        query = _parse_query(request.raw_path.partition("?")[2].partition("#")[0])
        single_query: dict[str, str] | None = None
        multi_query: dict[str, list[str]] | None = None
        if query:
            single_query = {}
            multi_query = {}
            for name, value in query:
                single_query[name] = value
                multi_query.setdefault(name, []).append(value)

        text, is_b64 = self._body_v1(body, request.headers.get("Content-Type", ""))
        full_path = self._full_path(ctx)
        user_agent = request.headers.get("User-Agent")
        domain = _host_without_port(request.headers.get("Host", ""))
        request_context: dict[str, Any] = {
            "accountId": ACCOUNT_ID,
            "apiId": self._api_id,
            "deploymentId": self._deployment_id,
            "domainName": domain,
            "domainPrefix": domain.partition(".")[0],
            "extendedRequestId": ctx.request_id,
            "httpMethod": request.method,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "principalOrgId": None,
                "sourceIp": ctx.client_ip,
                "user": None,
                "userAgent": user_agent,
                "userArn": None,
            },
            "path": full_path,
            "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
            "requestId": ctx.request_id,
            "requestTime": request_time(now),
            "requestTimeEpoch": int(now * 1000),
            "resourceId": self._resource_id,
            "resourcePath": self._resource,
            "stage": self.info.stage,
        }
        client_cert = client_certificate(request)
        if client_cert is not None:
            request_context["identity"]["clientCert"] = client_cert
        if ctx.iam is not None:
            request_context["identity"].update(iam_identity_v1(ctx.iam))
        authorizer = ctx.authorizer
        if authorizer is not None:
            request_context["authorizer"] = _authorizer_v1(authorizer, self.info.style)
        event: dict[str, Any] = {}
        if self.info.style is not Style.REST:
            event["version"] = "1.0"
        event.update(
            {
                "resource": self._resource,
                # REST-style: the path below the stage; HTTP-style APIs send the whole path.
                "path": ctx.path if self.info.style is Style.REST else full_path,
                "httpMethod": request.method,
                "headers": headers,
                "multiValueHeaders": multi_headers,
                "queryStringParameters": single_query,
                "multiValueQueryStringParameters": multi_query,
                "pathParameters": dict(ctx.params) if ctx.params else None,
                "stageVariables": dict(ctx.stage_variables) if ctx.stage_variables else None,
                "requestContext": request_context,
                "body": text,
                "isBase64Encoded": is_b64,
            }
        )
        return event

    def _forwarded_v1(
        self,
        ctx: RequestContext,
        headers: dict[str, str],
        multi: dict[str, list[str]],
        spelled: dict[str, str],
        now: float,
    ) -> None:
        """The headers API Gateway adds in front of every function (handlers read them)."""

        def put(name: str, value: str) -> None:
            key = spelled.setdefault(name.lower(), name)
            headers[key] = value
            multi[key] = [value]

        forwarded = spelled.get("x-forwarded-for")
        if forwarded is not None and ctx.client_ip:
            put(forwarded, f"{headers[forwarded]}, {ctx.client_ip}")
        elif ctx.client_ip:
            put("X-Forwarded-For", ctx.client_ip)
        secure = ctx.request.secure
        put("X-Forwarded-Proto", "https" if secure else "http")
        put("X-Forwarded-Port", str(_local_port(ctx, secure)))
        if "x-amzn-trace-id" not in spelled:
            put("X-Amzn-Trace-Id", _trace_id(now))

    # -- 2.0 ----------------------------------------------------------------------------------

    def build_v2(self, ctx: RequestContext, body: bytes, now: float) -> dict[str, Any]:
        request = ctx.request
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for raw_name, raw_value in request.raw_headers:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            if name == "cookie":
                cookies.extend(c.strip() for c in value.split(";") if c.strip())
                continue
            found = headers.get(name)
            headers[name] = value if found is None else f"{found},{value}"
        if ctx.client_ip:
            found = headers.get("x-forwarded-for")
            headers["x-forwarded-for"] = (
                ctx.client_ip if found is None else f"{found}, {ctx.client_ip}"
            )
        secure = request.secure
        headers["x-forwarded-proto"] = "https" if secure else "http"
        headers["x-forwarded-port"] = str(_local_port(ctx, secure))
        headers.setdefault("x-amzn-trace-id", _trace_id(now))

        raw_query = request.raw_path.partition("?")[2].partition("#")[0]
        full_path = unquote(self._full_path(ctx))
        domain = _host_without_port(request.headers.get("Host", ""))
        request_context: dict[str, Any] = {
            "accountId": ACCOUNT_ID,
            "apiId": self._api_id,
            "domainName": domain,
            "domainPrefix": domain.partition(".")[0],
            "http": {
                "method": request.method,
                "path": full_path,
                "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
                "sourceIp": ctx.client_ip,
                "userAgent": request.headers.get("User-Agent", ""),
            },
            "requestId": ctx.request_id,
            "routeKey": self.info.route_key,
            "stage": self.info.stage,
            "time": request_time(now),
            "timeEpoch": int(now * 1000),
        }
        client_cert = client_certificate(request)
        if client_cert is not None:
            request_context["authentication"] = {"clientCert": client_cert}
        authorizer = ctx.authorizer
        if authorizer is not None:
            request_context["authorizer"] = _authorizer_v2(authorizer)
        elif ctx.iam is not None:
            request_context["authorizer"] = iam_authorizer_v2(ctx.iam)
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": self.info.route_key,
            "rawPath": full_path,
            "rawQueryString": raw_query,
        }
        if cookies:
            event["cookies"] = cookies
        event["headers"] = headers
        query = _parse_query(raw_query)
        if query:
            joined: dict[str, str] = {}
            for name, value in query:
                found = joined.get(name)
                joined[name] = value if found is None else f"{found},{value}"
            event["queryStringParameters"] = joined
        event["requestContext"] = request_context
        if body:
            content_type = request.headers.get("Content-Type", "")
            text: str | None = None
            if _is_text_v2(content_type):
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError:
                    text = None
            if text is not None:
                event["body"] = text
                event["isBase64Encoded"] = False
            else:
                event["body"] = base64.b64encode(body).decode("ascii")
                event["isBase64Encoded"] = True
        else:
            event["isBase64Encoded"] = False
        if ctx.params:
            event["pathParameters"] = {name: unquote(v) for name, v in ctx.params.items()}
        if ctx.stage_variables:
            event["stageVariables"] = dict(ctx.stage_variables)
        return event

    def build(self, ctx: RequestContext, body: bytes, now: float | None = None) -> dict[str, Any]:
        moment = time.time() if now is None else now
        if self.payload_format == "2.0":
            return self.build_v2(ctx, body, moment)
        return self.build_v1(ctx, body, moment)


def _local_port(ctx: RequestContext, secure: bool) -> int:
    transport = ctx.request.transport
    sock = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sock, tuple) and len(sock) >= 2 and isinstance(sock[1], int):
        return sock[1]
    return 443 if secure else 80


def _is_text_v2(content_type: str) -> bool:
    base = content_type.partition(";")[0].strip().lower()
    return base.startswith("text/") or base in _TEXT_TYPES_V2


def _authorizer_v1(found: Mapping[str, Any], style: Style) -> dict[str, Any]:
    jwt = found.get("jwt")
    if isinstance(jwt, Mapping):
        claims = jwt.get("claims") or {}
        scopes = jwt.get("scopes")
        return {
            "claims": {name: jwt_claim_text(v) for name, v in claims.items()},
            "scopes": list(scopes) if scopes else None,
        }
    cognito = found.get(COGNITO_KEY)
    if isinstance(cognito, Mapping):
        # Already shaped as AWS's REST Cognito authorizer passes claims on.
        return {"claims": dict(cognito.get("claims") or {})}
    if style is Style.REST:
        # A Lambda authorizer's context reaches REST events flat and stringified, beside its
        # principalId and integrationLatency.
        return rest_authorizer(found)
    return {k: v for k, v in found.items() if k != INTEGRATION_LATENCY}


def _authorizer_v2(found: Mapping[str, Any]) -> dict[str, Any]:
    jwt = found.get("jwt")
    if isinstance(jwt, Mapping):
        claims = jwt.get("claims") or {}
        return {
            "jwt": {
                "claims": {name: jwt_claim_text(v) for name, v in claims.items()},
                "scopes": list(jwt.get("scopes") or []) or None,
            }
        }
    # HTTP APIs pass a Lambda authorizer's context on with its types kept.
    return {
        "lambda": {k: v for k, v in found.items() if k not in ("principalId", INTEGRATION_LATENCY)}
    }


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(slots=True)
class LambdaResult:
    status: int
    headers: CIMultiDict[str]
    body: bytes


def _status(value: Any) -> int:
    if isinstance(value, bool):
        raise MalformedResult(f"statusCode {value!r} is not a number")
    if isinstance(value, int):
        status = value
    elif isinstance(value, float) and value.is_integer():
        status = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        status = int(value.strip())
    else:
        raise MalformedResult(f"statusCode {value!r} is not a number")
    if not 100 <= status <= 599:
        raise MalformedResult(f"statusCode {status} is not an HTTP status")
    return status


def _header_text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = str(value)
    else:
        raise MalformedResult(f"header {name!r} has a value of type {type(value).__name__}")
    if "\r" in text or "\n" in text:
        raise MalformedResult(f"header {name!r} holds a line break")
    return text


def _checked_name(name: Any) -> str:
    if not isinstance(name, str) or not name or any(c in name for c in "\r\n:\0 "):
        raise MalformedResult(f"{name!r} is not a header name")
    return name


def _body_bytes(body: Any, is_b64: Any, decode_b64: bool) -> bytes:
    if body is None:
        return b""
    if not isinstance(body, str):
        raise MalformedResult(f"body is a {type(body).__name__}, not a string")
    if is_b64 is True and decode_b64:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as bad:
            raise MalformedResult(f"isBase64Encoded body is not base64: {bad}") from None
    return body.encode("utf-8")


def _finish(headers: CIMultiDict[str]) -> CIMultiDict[str]:
    for name in _RESPONSE_DROPPED:
        headers.popall(name, None)
    if "content-type" not in headers:
        headers["Content-Type"] = _JSON
    return headers


def read_result_v1(
    result: Any, binary_media_types: Sequence[str] | None, accept: str
) -> LambdaResult:
    """A 1.0 result. `binary_media_types` None: decode base64 always (HTTP-style APIs); else
    decode only when the request's Accept is a listed binary type (REST-style APIs pass the
    base64 text through otherwise, as AWS does)."""
    if not isinstance(result, dict) or not result:
        raise MalformedResult(f"the result is {_kind(result)}, not a non-empty object")
    unknown = set(result) - _V1_RESULT_KEYS
    if unknown:
        raise MalformedResult(f"the result has unknown keys {sorted(unknown)}")
    status = _status(result["statusCode"]) if "statusCode" in result else 200

    headers: CIMultiDict[str] = CIMultiDict()
    multi = result.get("multiValueHeaders")
    if multi is not None:
        if not isinstance(multi, dict):
            raise MalformedResult("multiValueHeaders is not an object")
        for name, values in multi.items():
            checked = _checked_name(name)
            if not isinstance(values, list):
                raise MalformedResult(f"multiValueHeaders[{name!r}] is not a list")
            for value in values:
                headers.add(checked, _header_text(checked, value))
    single = result.get("headers")
    if single is not None:
        if not isinstance(single, dict):
            raise MalformedResult("headers is not an object")
        for name, value in single.items():
            checked = _checked_name(name)
            if value is None:
                continue
            text = _header_text(checked, value)
            if checked in headers:
                # The multi-value spelling and values come first, as AWS merges them.
                first = next(k for k in headers if k.lower() == checked.lower())
                headers.add(first, text)
            else:
                headers.add(checked, text)

    is_b64 = result.get("isBase64Encoded")
    if is_b64 is not None and not isinstance(is_b64, bool):
        raise MalformedResult("isBase64Encoded is not a boolean")
    if binary_media_types is None:
        decode = True
    else:
        # AWS converts by the request's (first) Accept type only: a browser asking for
        # text/html gets the base64 text even from an image route.
        decode = bool(binary_media_types) and media_type_matches(
            accept.partition(",")[0], binary_media_types
        )
    body = _body_bytes(result.get("body"), is_b64, decode)
    return LambdaResult(status, _finish(headers), body)


def read_result_v2(result: Any) -> LambdaResult:
    """A 2.0 result: an object with statusCode is read field by field; anything else that is
    JSON becomes a 200 application/json body (a bare string is sent as it is)."""
    if isinstance(result, str):
        headers: CIMultiDict[str] = CIMultiDict()
        return LambdaResult(200, _finish(headers), result.encode("utf-8"))
    if not (isinstance(result, dict) and "statusCode" in result):
        try:
            payload = orjson.dumps(result)
        except TypeError as bad:
            raise MalformedResult(f"the result is not JSON: {bad}") from None
        return LambdaResult(200, _finish(CIMultiDict()), payload)
    status = _status(result["statusCode"])
    headers = CIMultiDict()
    found = result.get("headers")
    if found is not None:
        if not isinstance(found, dict):
            raise MalformedResult("headers is not an object")
        for name, value in found.items():
            checked = _checked_name(name)
            if value is not None:
                headers.add(checked, _header_text(checked, value))
    cookies = result.get("cookies")
    if cookies is not None:
        if not isinstance(cookies, list):
            raise MalformedResult("cookies is not a list")
        for cookie in cookies:
            if not isinstance(cookie, str):
                raise MalformedResult("cookies holds a value that is not a string")
            headers.add("Set-Cookie", _header_text("Set-Cookie", cookie))
    is_b64 = result.get("isBase64Encoded")
    if is_b64 is not None and not isinstance(is_b64, bool):
        raise MalformedResult("isBase64Encoded is not a boolean")
    body = _body_bytes(result.get("body"), is_b64, True)
    return LambdaResult(status, _finish(headers), body)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an empty object"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"
