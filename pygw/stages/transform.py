"""Transformation: REST-style VTL mapping templates and HTTP-style parameter mapping.

REST-style (`templates`): Velocity templates (rendered by airspeed) with API Gateway's variables:
``$input.body``, ``$input.json(path)``, ``$input.path(path)``, ``$input.params()`` /
``$input.params(name)``, ``$context.*`` (with ``requestOverride`` / ``responseOverride``),
``$stageVariables.*`` and ``$util.escapeJavaScript / parseJson / urlEncode / urlDecode /
base64Encode / base64Decode``. Values print as API Gateway prints them (recorded in
testdata/aws-parity): a JSON object as a Java map ``{a=1, b=[{"c":5}]}``, a JSON array as compact
JSON, booleans as ``true``/``false``, and a null or undefined reference as nothing.

The request template is chosen by the request's media type (none sent: application/json, as AWS
does); without a match `passthrough` decides: ``when_no_match`` sends the body unchanged,
``when_no_templates`` answers 415 when the route has request templates, ``never`` always answers
415 ``{"message": "Unsupported Media Type"}``.

HTTP-style (`mapping`): ``ACTION:LOCATION.NAME`` → value, where the value mixes literal text with
``$request.header.x``, ``$request.querystring.x``, ``$request.path.x``, ``$request.path``,
``$request.body.x``, ``$context.x``, ``$stageVariables.x`` (``${...}`` delimits a name). An
operation whose value refers to something the request lacks is skipped. Response mappings, keyed
by upstream status, may also use ``$response.header.x``, ``$response.body.x`` and
``$response.statuscode``.

Writes (RequestContext fields):
- `body` (bytes): what the integration sends as the request body (see pygw.body.read_body);
- `body_content_type` (str): the Content-Type of a body a request template produced;
- `request_overrides`: {"headers": CIMultiDict[str] | None, "query": str | None,
  "path": str | None}: the complete header set, the complete encoded query string (no "?") and
  the path the integration sends instead of the client's; None = unchanged;
- `response_override`: {"status": int | None, "header": dict[str, str]} set by a request
  template through ``$context.responseOverride``, applied by the response transform.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlencode

import airspeed  # type: ignore[import-untyped]
import orjson
from multidict import CIMultiDict

from pygw.authorizer_view import COGNITO_KEY, rest_authorizer
from pygw.body import DEFAULT_MAX_BODY_BYTES, parse_json_body, read_body
from pygw.config.model import ApiConfig, MappingConfig, RouteConfig, TemplatesConfig
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.response import Response

__all__ = [
    "MappingStage",
    "RequestTemplateStage",
    "ResponseMapping",
    "ResponseTemplates",
    "VtlTemplate",
    "build_request_transform_stage",
    "build_response_transform",
    "escape_javascript",
    "json_path",
]

log = logging.getLogger("pygw")

_DEFAULT_MEDIA = "application/json"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# --------------------------------------------------------------------------------------------------
# JSONPath (the subset API Gateway templates use: $, .name, ['name'], [n], [*], .*, ..name)

_PATH_STEP = re.compile(
    r"\.\.(?P<deep>[^.\[\]]+)"
    r"|\.(?P<name>[^.\[\]]+)"
    r"|\[\s*(?:(?P<index>-?\d+)|'(?P<sq>(?:[^'\\]|\\.)*)'|\"(?P<dq>(?:[^\"\\]|\\.)*)\"|(?P<star>\*))"
    r"\s*\]"
)
_NOTHING = object()


def _descend(node: Any, name: str) -> Iterable[Any]:
    if isinstance(node, dict):
        if name == "*":
            yield from node.values()
        elif name in node:
            yield node[name]
        for value in node.values():
            yield from _descend(value, name)
    elif isinstance(node, list):
        for item in node:
            yield from _descend(item, name)


def json_path(document: Any, path: str) -> Any:
    """The value at `path` (None when absent); a list of matches for wildcard or deep paths.
    Raises ValueError for a path it cannot read."""
    path = path.strip()
    if not path.startswith("$"):
        path = "$" + (path if path.startswith("[") else "." + path)
    nodes: list[Any] = [document]
    multi = False
    pos = 1
    while pos < len(path):
        step = _PATH_STEP.match(path, pos)
        if step is None:
            raise ValueError(f"JSONPath {path!r} is not supported")
        pos = step.end()
        found: list[Any] = []
        if step.group("deep") is not None:
            multi = True
            for node in nodes:
                found.extend(_descend(node, step.group("deep")))
        else:
            name = step.group("name")
            if name is None:
                name = step.group("sq") if step.group("sq") is not None else step.group("dq")
            index = step.group("index")
            for node in nodes:
                if name == "*" or step.group("star") is not None:
                    multi = True
                    if isinstance(node, dict):
                        found.extend(node.values())
                    elif isinstance(node, list):
                        found.extend(node)
                elif index is not None:
                    if isinstance(node, list) and -len(node) <= int(index) < len(node):
                        found.append(node[int(index)])
                elif isinstance(node, dict) and name in node:
                    found.append(node[name])
        nodes = found
    if multi:
        return nodes
    return nodes[0] if nodes else None


# --------------------------------------------------------------------------------------------------
# VTL values printed as API Gateway (Java) prints them


def _text(value: Any) -> str:
    """A $util argument as text: null is the empty string (recorded: $util.urlEncode of a
    missing value prints nothing)."""
    return "" if value is None else _java_str(value)


def _java_str(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, VtlBool):
        return bool(value)
    raise TypeError


def _to_json(value: Any) -> str:
    return orjson.dumps(value, default=_plain).decode()


class VtlBool:
    """A JSON boolean in a template: prints as `true`/`false`, compares with Python booleans."""

    __slots__ = ("_value",)

    def __init__(self, value: bool) -> None:
        self._value = value

    def __bool__(self) -> bool:
        return self._value

    def __eq__(self, other: object) -> bool:
        return bool(other) is self._value if isinstance(other, bool | VtlBool) else False

    def __hash__(self) -> int:
        return hash(self._value)

    def __str__(self) -> str:
        return "true" if self._value else "false"

    def toString(self) -> str:
        return str(self)


class VtlMap(dict[str, Any]):
    """A JSON object or a parameter map: prints as a Java map, offers Java Map's methods."""

    def __str__(self) -> str:
        return "{" + ", ".join(f"{k}={_java_str(v)}" for k, v in self.items()) + "}"

    def toString(self) -> str:
        return str(self)

    def keySet(self) -> list[str]:
        return list(self.keys())

    def entrySet(self) -> list[VtlMap]:
        return [VtlMap(key=k, value=v) for k, v in self.items()]

    def size(self) -> int:
        return len(self)

    def isEmpty(self) -> bool:
        return not self

    def containsKey(self, key: str) -> bool:
        return self.get(key) is not None or key in self

    def put(self, key: str, value: Any) -> Any:
        previous = self.get(key)
        self[key] = value
        return previous

    def putAll(self, values: Mapping[str, Any]) -> None:
        self.update(values)

    def remove(self, key: str) -> Any:
        return self.pop(key, None)


class _HeaderMap(VtlMap):
    """Request headers keep the client's spelling but are found whatever the case asked."""

    def get(self, key: str, default: Any = None) -> Any:
        if key in self:
            return self[key]
        lowered = key.lower()
        for name, value in self.items():
            if name.lower() == lowered:
                return value
        return default


class VtlList(list[Any]):
    """A JSON array in a template: prints as compact JSON, offers Java List's methods."""

    def __str__(self) -> str:
        return _to_json(self)

    def toString(self) -> str:
        return str(self)

    def size(self) -> int:
        return len(self)

    def isEmpty(self) -> bool:
        return not self

    def get(self, index: int) -> Any:
        return self[index]

    def contains(self, value: Any) -> bool:
        return value in self

    def add(self, value: Any) -> bool:
        self.append(value)
        return True


def vtl_value(value: Any) -> Any:
    """A parsed JSON value as templates see it."""
    if isinstance(value, dict):
        return VtlMap((k, vtl_value(v)) for k, v in value.items())
    if isinstance(value, list):
        return VtlList(vtl_value(v) for v in value)
    if isinstance(value, bool):
        return VtlBool(value)
    return value


# Java String methods templates call on plain strings (airspeed knows only a few).
_STRING_METHODS: dict[str, Callable[..., Any]] = {
    "toLowerCase": str.lower,
    "toUpperCase": str.upper,
    "trim": str.strip,
    "endsWith": str.endswith,
    "indexOf": str.find,
    "isEmpty": lambda s: not s,
    "equals": lambda s, other: s == other,
    "equalsIgnoreCase": lambda s, other: isinstance(other, str) and s.lower() == other.lower(),
    "substring": lambda s, start, end=None: s[start:end],
    "split": lambda s, pattern: VtlList(re.split(pattern, s)),
    "replace": lambda s, old, new: s.replace(old, new),
    "concat": lambda s, other: s + str(other),
    "toString": lambda s: s,
}
for _name, _method in _STRING_METHODS.items():
    airspeed.__additional_methods__[str].setdefault(_name, _method)


def escape_javascript(value: Any) -> str | None:
    """Java's StringEscapeUtils.escapeJavaScript, as API Gateway's $util.escapeJavaScript."""
    if value is None:
        return None
    text = _java_str(value)
    out: list[str] = []
    for unit in _utf16_units(text):
        if unit > 0x7F:
            out.append(f"\\u{unit:04X}")
        elif unit < 32:
            out.append(_CONTROL_ESCAPES.get(unit) or f"\\u{unit:04X}")
        else:
            ch = chr(unit)
            out.append(_SPECIAL_ESCAPES.get(ch, ch))
    return "".join(out)


_CONTROL_ESCAPES = {8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}
_SPECIAL_ESCAPES = {"'": "\\'", '"': '\\"', "\\": "\\\\", "/": "\\/"}


def _utf16_units(text: str) -> Iterable[int]:
    for ch in text:
        code = ord(ch)
        if code > 0xFFFF:
            # Java strings are UTF-16: a character outside the BMP escapes as its two surrogates.
            code -= 0x10000
            yield 0xD800 + (code >> 10)
            yield 0xDC00 + (code & 0x3FF)
        else:
            yield code


class _Util:
    """$util."""

    @staticmethod
    def escapeJavaScript(value: Any) -> str | None:
        return escape_javascript(value)

    @staticmethod
    def parseJson(value: Any) -> Any:
        return vtl_value(json.loads(str(value)))

    @staticmethod
    def urlEncode(value: Any) -> str:
        # java.net.URLEncoder: '*' stays, '~' is encoded, space becomes '+'.
        return quote_plus(_text(value), safe="*").replace("~", "%7E")

    @staticmethod
    def urlDecode(value: Any) -> str:
        return unquote_plus(_text(value))

    @staticmethod
    def base64Encode(value: Any) -> str:
        return base64.b64encode(_text(value).encode()).decode("ascii")

    @staticmethod
    def base64Decode(value: Any) -> str:
        try:
            return base64.b64decode(_text(value)).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return ""


_UTIL = _Util()


class _Input:
    """$input over one body (the request's, or the integration response's)."""

    __slots__ = ("_body", "_params", "_parsed", "_strict", "_text")

    def __init__(self, body: bytes, params: VtlMap, strict: bool) -> None:
        self._body = body
        self._text: str | None = None
        self._parsed: Any = _NOTHING
        self._params = params
        self._strict = strict

    def _document(self) -> Any:
        if self._parsed is _NOTHING:
            try:
                self._parsed = parse_json_body(self._body)
            except ValueError:
                if self._strict:
                    raise GatewayError(ErrorType.BAD_REQUEST_BODY) from None
                self._parsed = None
        return self._parsed

    @property
    def body(self) -> str:
        if self._text is None:
            # An empty body reads as "{}" (recorded: test_input_body_formatting).
            self._text = self._body.decode("utf-8", "replace") if self._body else "{}"
        return self._text

    def json(self, path: str = "$") -> str:
        try:
            return _to_json(json_path(self._document(), path or "$"))
        except ValueError:
            return "null"

    def path(self, path: str = "$") -> Any:
        if not self._body.strip():
            return None
        try:
            return vtl_value(json_path(self._document(), path or "$"))
        except ValueError:
            return None

    def params(self, name: str | None = None) -> Any:
        if name is None:
            return self._params
        for location in ("path", "querystring", "header"):
            found = self._params[location].get(name)
            if found is not None:
                return found
        return ""


def _request_params(ctx: RequestContext) -> VtlMap:
    request = ctx.request
    headers = _HeaderMap()
    for name, value in request.headers.items():
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    query = VtlMap()
    for name, value in parse_qsl(request.query_string, keep_blank_values=True):
        query[name] = value
    path = VtlMap((name, unquote(value)) for name, value in ctx.params.items())
    return VtlMap(path=path, querystring=query, header=headers)


@dataclass(frozen=True, slots=True)
class _RouteInfo:
    api_id: str
    stage: str
    resource_path: str
    route_key: str


def _request_time(now: float) -> tuple[str, int]:
    t = time.gmtime(now)
    text = (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )
    return text, int(now * 1000)


def _authorizer(ctx: RequestContext) -> dict[str, Any]:
    found = ctx.authorizer
    if not isinstance(found, dict):
        return {}
    jwt = found.get("jwt")
    if isinstance(jwt, dict):
        return {"claims": jwt.get("claims", {}), "scopes": jwt.get("scopes", [])}
    cognito = found.get(COGNITO_KEY)
    if isinstance(cognito, dict):
        return {"claims": cognito.get("claims", {})}
    # Templates are REST-style: a Lambda authorizer's context values read as strings there.
    return rest_authorizer(found)


def _context(ctx: RequestContext, route: _RouteInfo) -> VtlMap:
    request = ctx.request
    request_time, epoch = _request_time(time.time())
    host = request.headers.get("Host", "")
    override = ctx.response_override
    response_override = VtlMap(status=None, header=VtlMap())
    if isinstance(override, dict):
        response_override["status"] = override.get("status")
        response_override["header"].update(override.get("header", {}))
    return VtlMap(
        accountId="",
        apiId=route.api_id,
        authorizer=vtl_value(_authorizer(ctx)),
        domainName=host.rsplit(":", 1)[0] if not host.endswith("]") else host,
        extendedRequestId=ctx.request_id,
        httpMethod=request.method,
        identity=VtlMap(
            sourceIp=ctx.client_ip,
            userAgent=request.headers.get("User-Agent", ""),
            apiKeyId=ctx.api_key_id,
        ),
        path=request.raw_path.partition("?")[0],
        protocol=f"HTTP/{request.version.major}.{request.version.minor}",
        requestId=ctx.request_id,
        requestTime=request_time,
        requestTimeEpoch=epoch,
        resourcePath=route.resource_path,
        routeKey=route.route_key,
        stage=route.stage,
        requestOverride=VtlMap(header=VtlMap(), querystring=VtlMap(), path=VtlMap()),
        responseOverride=response_override,
    )


# --------------------------------------------------------------------------------------------------
# Templates

# Velocity prints an undefined reference as its own text; API Gateway prints nothing (recorded:
# `"body": ,` for a null $input.path). Every reference is made quiet (`$x` → `$!x`) at load, except
# the names #set, #foreach and #macro assign to.
_REFERENCE = re.compile(r"(#(?:set|foreach)\s*\(\s*\$|#macro\s*\([^)]*\))|\$(?=\{?[A-Za-z_])")


def _quiet(source: str) -> str:
    return _REFERENCE.sub(lambda m: m.group(1) or "$!", source)


class VtlTemplate:
    """One mapping template, parsed at load."""

    __slots__ = ("_template",)

    def __init__(self, source: str, where: str) -> None:
        self._template = airspeed.Template(_quiet(source))
        try:
            self._template.ensure_compiled()
        except airspeed.TemplateError as exc:
            raise ValueError(f"{where}: template does not parse: {exc}") from None

    def render(self, namespace: dict[str, Any]) -> str:
        try:
            return str(self._template.merge(namespace))
        except GatewayError:
            raise
        except Exception as exc:
            cause = exc.__cause__
            while isinstance(cause, airspeed.TemplateExecutionError):
                cause = cause.__cause__
            if isinstance(cause, GatewayError):
                raise cause from None
            # A template that fails at run time (a bad method call, a bad index) is the API's
            # fault, not the client's: AWS answers 500 too.
            log.warning("mapping template failed: %r", exc)
            raise GatewayError(ErrorType.INTEGRATION_FAILURE) from None


def _media_type(content_type: str | None) -> str:
    if not content_type:
        return _DEFAULT_MEDIA
    return content_type.partition(";")[0].strip().lower() or _DEFAULT_MEDIA


def _unsupported_media_type(ctx: RequestContext) -> Response:
    response = Response(
        status=415,
        body=b'{"message":"Unsupported Media Type"}',
        content_type="application/json",
    )
    response.headers["x-amzn-ErrorType"] = "UnsupportedMediaTypeException"
    response.headers["x-amzn-RequestId"] = ctx.request_id
    ctx.apply_response_headers(response)
    return response


def _overrides(ctx: RequestContext) -> dict[str, Any]:
    found = ctx.request_overrides
    if found is None:
        found = {"headers": None, "query": None, "path": None}
        ctx.request_overrides = found
    return found


def _check_header_value(value: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise GatewayError(ErrorType.BAD_REQUEST, "Invalid header value in parameter mapping")
    return value


class RequestTemplateStage:
    __slots__ = ("_max_body_bytes", "_passthrough_refused", "_route", "_templates")

    def __init__(
        self,
        templates: dict[str, VtlTemplate],
        passthrough: str,
        route: _RouteInfo,
        max_body_bytes: int,
    ) -> None:
        self._templates = templates
        self._passthrough_refused = passthrough == "never" or (
            passthrough == "when_no_templates" and bool(templates)
        )
        self._route = route
        self._max_body_bytes = max_body_bytes

    async def __call__(self, ctx: RequestContext) -> Response | None:
        media = _media_type(ctx.request.headers.get("Content-Type"))
        template = self._templates.get(media)
        if template is None:
            if self._passthrough_refused:
                return _unsupported_media_type(ctx)
            return None
        body = await read_body(ctx, self._max_body_bytes)
        context = _context(ctx, self._route)
        namespace = {
            "input": _Input(body, _request_params(ctx), strict=True),
            "context": context,
            "stageVariables": VtlMap(ctx.stage_variables),
            "util": _UTIL,
        }
        rendered = template.render(namespace)
        ctx.body = rendered.encode("utf-8")
        ctx.body_content_type = media
        _apply_request_override(ctx, context["requestOverride"])
        response_override = context["responseOverride"]
        if response_override.get("status") is not None or response_override.get("header"):
            ctx.response_override = {
                "status": _status(response_override.get("status")),
                "header": {str(k): _java_str(v) for k, v in response_override["header"].items()},
            }
        return None


def _status(value: Any) -> int | None:
    try:
        status = int(str(value))
    except ValueError:
        return None
    return status if 100 <= status <= 599 else None


def _apply_request_override(ctx: RequestContext, override: VtlMap) -> None:
    headers = override.get("header") or {}
    query = override.get("querystring") or {}
    path = override.get("path") or {}
    if not (headers or query or path):
        return
    found = _overrides(ctx)
    if headers:
        merged = CIMultiDict(found["headers"] or ctx.request.headers)
        for name, value in headers.items():
            merged[str(name)] = _check_header_value(_java_str(value))
        found["headers"] = merged
    if query:
        pairs = dict(parse_qsl(found["query"] or ctx.request.query_string, keep_blank_values=True))
        pairs.update((str(k), _java_str(v)) for k, v in query.items())
        found["query"] = urlencode(list(pairs.items()), quote_via=quote)
    for name, value in path.items():
        # A path parameter override fills one segment of the integration's URI.
        ctx.params[str(name)] = quote(_java_str(value), safe="")


class ResponseTemplates:
    """REST-style response templates applied to a buffered response."""

    __slots__ = ("_route", "_templates")
    needs_body = True

    def __init__(self, templates: dict[str, VtlTemplate], route: _RouteInfo) -> None:
        self._templates = templates
        self._route = route

    def _pick(self, ctx: RequestContext, response: Response) -> tuple[str, VtlTemplate] | None:
        media = _media_type(response.headers.get("Content-Type"))
        found = self._templates.get(media)
        if found is not None:
            return media, found
        for accept in ctx.request.headers.get("Accept", "").split(","):
            media = _media_type(accept)
            found = self._templates.get(media)
            if found is not None:
                return media, found
        found = self._templates.get(_DEFAULT_MEDIA)
        return (_DEFAULT_MEDIA, found) if found is not None else None

    def __call__(self, ctx: RequestContext, response: Response) -> Response:
        picked = self._pick(ctx, response)
        override = ctx.response_override
        if picked is None:
            if isinstance(override, dict):
                _apply_response_override(response, override)
            return response
        media, template = picked
        body = response.body if isinstance(response.body, bytes | bytearray) else b""
        context = _context(ctx, self._route)
        namespace = {
            "input": _Input(bytes(body), _request_params(ctx), strict=False),
            "context": context,
            "stageVariables": VtlMap(ctx.stage_variables),
            "util": _UTIL,
        }
        rendered = template.render(namespace).encode("utf-8")
        answer = Response(status=response.status, body=rendered)
        for name, value in response.headers.items():
            if name.lower() not in ("content-length", "content-type", "transfer-encoding"):
                answer.headers.add(name, value)
        answer.headers["Content-Type"] = media
        result = context["responseOverride"]
        _apply_response_override(
            answer,
            {
                "status": _status(result.get("status")),
                "header": {str(k): _java_str(v) for k, v in result["header"].items()},
            },
        )
        return answer


def _apply_response_override(response: Response, override: dict[str, Any]) -> None:
    status = override.get("status")
    if isinstance(status, int):
        response.status = status
    for name, value in override.get("header", {}).items():
        response.headers[name] = _check_header_value(value)


# --------------------------------------------------------------------------------------------------
# HTTP-style parameter mapping

_HEADER_CHARS = r"[A-Za-z0-9!#%&'*+^_`|~.-]+"
_VARIABLE = re.compile(
    r"\$\{(?P<braced>[^}]*)\}|\$(?P<bare>"
    rf"request\.(?:header|querystring|path)\.{_HEADER_CHARS}"
    r"|request\.body\.[A-Za-z0-9_.\[\]*'\"-]+"
    r"|request\.path"
    rf"|response\.header\.{_HEADER_CHARS}"
    r"|response\.body\.[A-Za-z0-9_.\[\]*'\"-]+"
    r"|response\.statuscode"
    r"|context\.[A-Za-z0-9_.]+"
    r"|stageVariables\.[A-Za-z0-9_]+)"
)


@dataclass(slots=True)
class _Sources:
    ctx: RequestContext
    route: _RouteInfo
    request_body: Any = _NOTHING
    response: Response | None = None
    response_body: Any = _NOTHING


Getter = Callable[[_Sources], str | None]


def _joined(values: list[str]) -> str | None:
    return ",".join(values) if values else None


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)


def _context_getter(name: str) -> Getter:
    simple: dict[str, Callable[[_Sources], Any]] = {
        "requestId": lambda s: s.ctx.request_id,
        "extendedRequestId": lambda s: s.ctx.request_id,
        "stage": lambda s: s.route.stage,
        "apiId": lambda s: s.route.api_id,
        "routeKey": lambda s: s.route.route_key,
        "resourcePath": lambda s: s.route.resource_path,
        "httpMethod": lambda s: s.ctx.request.method,
        "path": lambda s: s.ctx.request.raw_path.partition("?")[0],
        "protocol": lambda s: f"HTTP/{s.ctx.request.version.major}.{s.ctx.request.version.minor}",
        "domainName": lambda s: s.ctx.request.headers.get("Host", "").rsplit(":", 1)[0] or None,
        "domainPrefix": lambda s: (
            s.ctx.request.headers.get("Host", "").rsplit(":", 1)[0].split(".")[0] or None
        ),
        "requestTime": lambda s: _request_time(time.time())[0],
        "requestTimeEpoch": lambda s: _request_time(time.time())[1],
        "identity.sourceIp": lambda s: s.ctx.client_ip,
        "identity.userAgent": lambda s: s.ctx.request.headers.get("User-Agent"),
        "authorizer.principalId": lambda s: _authorizer(s.ctx).get("principalId"),
    }
    getter = simple.get(name)
    if getter is not None:
        found = getter
        return lambda s: _json_text(found(s))
    if name.startswith("authorizer.") and len(name) > len("authorizer."):
        path = name[len("authorizer.") :].split(".")

        def authorizer_value(s: _Sources) -> str | None:
            node: Any = _authorizer(s.ctx)
            for part in path:
                if not isinstance(node, dict) or part not in node:
                    return None
                node = node[part]
            return _json_text(node)

        return authorizer_value
    raise ValueError(f"$context.{name} is not a context variable")


def _variable_getter(name: str, response_side: bool) -> Getter:
    kind, _, rest = name.partition(".")
    if kind == "context":
        return _context_getter(rest)
    if kind == "stageVariables" and rest:
        return lambda s: s.ctx.stage_variables.get(rest)
    if kind == "request":
        location, _, key = rest.partition(".")
        if location == "header" and key:
            return lambda s: _joined(s.ctx.request.headers.getall(key, []))
        if location == "querystring" and key:
            return lambda s: _joined(s.ctx.request.query.getall(key, []))
        if location == "path":
            if not key:
                return lambda s: s.ctx.path
            return lambda s: s.ctx.params.get(key)
        if location == "body" and key:
            return lambda s: _body_value(s.request_body, key)
    if kind == "response" and response_side:
        location, _, key = rest.partition(".")
        if location == "statuscode" and not key:
            return lambda s: str(s.response.status) if s.response is not None else None
        if location == "header" and key:
            return lambda s: (
                _joined(s.response.headers.getall(key, [])) if s.response is not None else None
            )
        if location == "body" and key:
            return lambda s: _body_value(s.response_body, key)
    raise ValueError(f"${name} is not a mapping variable")


def _body_value(document: Any, path: str) -> str | None:
    if document is _NOTHING or document is None:
        return None
    try:
        return _json_text(json_path(document, "$." + path))
    except ValueError:
        return None


class _Value:
    """A mapping value compiled to literal pieces and variable getters."""

    __slots__ = ("needs_request_body", "needs_response_body", "parts")

    def __init__(self, source: str, response_side: bool) -> None:
        self.parts: list[str | Getter] = []
        self.needs_request_body = False
        self.needs_response_body = False
        pos = 0
        for match in _VARIABLE.finditer(source):
            name = match.group("braced") if match.group("braced") is not None else match["bare"]
            trailing = ""
            if match.group("bare") is not None:
                stripped = name.rstrip(".")
                trailing, name = name[len(stripped) :], stripped
            if match.start() > pos:
                self.parts.append(source[pos : match.start()])
            self.parts.append(_variable_getter(name, response_side))
            self.needs_request_body |= name.startswith("request.body.")
            self.needs_response_body |= name.startswith("response.body.")
            if trailing:
                self.parts.append(trailing)
            pos = match.end()
        if pos < len(source):
            self.parts.append(source[pos:])

    def resolve(self, sources: _Sources) -> str | None:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = part(sources)
            if value is None:
                return None
            out.append(value)
        return "".join(out)


@dataclass(frozen=True, slots=True)
class _Op:
    action: str  # append | overwrite | remove
    location: str  # header | querystring | path | statuscode
    name: str
    value: _Value | None


def _compile_ops(mapping: Mapping[str, str], response_side: bool, where: str) -> list[_Op]:
    ops: list[_Op] = []
    for key, source in mapping.items():
        action, _, target = key.partition(":")
        location, _, name = target.partition(".")
        try:
            value = None if action == "remove" else _Value(str(source), response_side)
        except ValueError as exc:
            raise ValueError(f"{where}: {key!r}: {exc}") from None
        ops.append(_Op(action, location, name, value))
    return ops


def _header_ops(headers: CIMultiDict[str], op: _Op, value: str | None) -> None:
    if op.action == "remove":
        headers.popall(op.name, None)
    elif value is not None:
        _check_header_value(value)
        if op.action == "overwrite":
            headers[op.name] = value
        else:
            headers.add(op.name, value)


def _safe_path(value: str) -> str:
    if not value.startswith("/"):
        value = "/" + value
    for segment in value.split("/"):
        if unquote(segment) in (".", ".."):
            raise GatewayError(ErrorType.BAD_REQUEST, "Invalid path in parameter mapping")
    if any(ch in value for ch in "\r\n\x00?#"):
        raise GatewayError(ErrorType.BAD_REQUEST, "Invalid path in parameter mapping")
    return value


class MappingStage:
    """HTTP-style request parameter mapping: fills ctx.request_overrides."""

    __slots__ = (
        "_header_ops",
        "_max_body_bytes",
        "_needs_body",
        "_path_op",
        "_query_ops",
        "_route",
    )

    def __init__(self, ops: list[_Op], route: _RouteInfo, max_body_bytes: int) -> None:
        self._header_ops = [op for op in ops if op.location == "header"]
        self._query_ops = [op for op in ops if op.location == "querystring"]
        paths = [op for op in ops if op.location == "path"]
        self._path_op = paths[-1] if paths else None
        self._needs_body = any(op.value is not None and op.value.needs_request_body for op in ops)
        self._route = route
        self._max_body_bytes = max_body_bytes

    async def __call__(self, ctx: RequestContext) -> Response | None:
        sources = _Sources(ctx, self._route)
        if self._needs_body:
            body = await read_body(ctx, self._max_body_bytes)
            try:
                sources.request_body = parse_json_body(body)
            except ValueError:
                sources.request_body = None
        found = _overrides(ctx)
        if self._header_ops:
            headers = CIMultiDict(found["headers"] or ctx.request.headers)
            for op in self._header_ops:
                _header_ops(headers, op, op.value.resolve(sources) if op.value else None)
            found["headers"] = headers
        if self._query_ops:
            current = found["query"]
            raw = current if current is not None else ctx.request.query_string
            pairs = parse_qsl(raw, keep_blank_values=True)
            for op in self._query_ops:
                if op.action == "remove":
                    pairs = [p for p in pairs if p[0] != op.name]
                    continue
                value = op.value.resolve(sources) if op.value else None
                if value is None:
                    continue
                if op.action == "overwrite":
                    pairs = [p for p in pairs if p[0] != op.name]
                pairs.append((op.name, value))
            found["query"] = urlencode(pairs, quote_via=quote)
        if self._path_op is not None and self._path_op.value is not None:
            value = self._path_op.value.resolve(sources)
            if value is not None:
                found["path"] = _safe_path(value)
        return None


class ResponseMapping:
    """HTTP-style response parameter mapping, chosen by the integration's status.

    `apply_head` works before a streamed response is prepared (no `$response.body` used);
    `__call__` works on a buffered response."""

    __slots__ = ("_by_status", "_route", "needs_body")

    def __init__(self, by_status: dict[int, list[_Op]], route: _RouteInfo) -> None:
        self._by_status = by_status
        self._route = route
        self.needs_body = any(
            op.value is not None and op.value.needs_response_body
            for ops in by_status.values()
            for op in ops
        )

    def apply_head(self, ctx: RequestContext, response: Response) -> None:
        self._apply(ctx, response, _NOTHING)

    def __call__(self, ctx: RequestContext, response: Response) -> Response:
        document: Any = _NOTHING
        if self.needs_body and isinstance(response.body, bytes | bytearray):
            try:
                document = parse_json_body(bytes(response.body))
            except ValueError:
                document = None
        self._apply(ctx, response, document)
        return response

    def _apply(self, ctx: RequestContext, response: Response, document: Any) -> None:
        ops = self._by_status.get(response.status)
        if not ops:
            return
        sources = _Sources(ctx, self._route, response=response, response_body=document)
        status: int | None = None
        for op in ops:
            value = op.value.resolve(sources) if op.value else None
            if op.location == "statuscode":
                status = _status(value) if value is not None else None
                continue
            headers = response.headers
            if op.action == "remove":
                headers.popall(op.name, None)
            elif value is not None:
                _check_header_value(value)
                if op.action == "overwrite":
                    headers[op.name] = value
                else:
                    headers.add(op.name, value)
        if status is not None:
            response.status = status


# --------------------------------------------------------------------------------------------------
# Factories


def _route_info(
    api_cfg: ApiConfig, route_cfg: RouteConfig, stage_name: str, route_key: str | None = None
) -> _RouteInfo:
    # Searching the routes is linear: callers compiling many routes pass the key.
    if route_key is None:
        route_key = next((key for key, cfg in api_cfg.routes.items() if cfg is route_cfg), "")
    if route_key == "":
        route_key = next((key for key, cfg in api_cfg.routes.items() if cfg == route_cfg), "")
    _, _, resource = route_key.partition(" ")
    return _RouteInfo(api_cfg.name, stage_name, resource or "/", route_key)


def _compile_templates(templates: Mapping[str, str], where: str) -> dict[str, VtlTemplate]:
    return {
        _media_type(media): VtlTemplate(source, f"{where} {media}")
        for media, source in templates.items()
    }


def build_request_transform_stage(
    api_cfg: ApiConfig,
    route_cfg: RouteConfig,
    stage_name: str,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    route_key: str | None = None,
) -> RequestTemplateStage | MappingStage | None:
    """The route's request transformation (templates for REST-style routes, parameter mapping for
    HTTP-style ones), or None. Raises ValueError for a template that does not parse or a mapping
    value naming an unknown variable."""
    if route_cfg.templates is None and (route_cfg.mapping is None or not route_cfg.mapping.request):
        return None
    route = _route_info(api_cfg, route_cfg, stage_name, route_key)
    templates: TemplatesConfig | None = route_cfg.templates
    if templates is not None:
        compiled = _compile_templates(templates.request, f"route {route.route_key!r} request")
        if not compiled and templates.passthrough != "never":
            return None
        return RequestTemplateStage(compiled, templates.passthrough, route, max_body_bytes)
    mapping: MappingConfig | None = route_cfg.mapping
    if mapping is not None and mapping.request:
        ops = _compile_ops(mapping.request, False, f"route {route.route_key!r} mapping.request")
        return MappingStage(ops, route, max_body_bytes)
    return None


def build_response_transform(
    api_cfg: ApiConfig, route_cfg: RouteConfig, stage_name: str, route_key: str | None = None
) -> ResponseTemplates | ResponseMapping | None:
    """The route's response transformation, or None. Both kinds are called as
    `transform(ctx, response: Response) -> Response` on a buffered response and have
    `needs_body`; a ResponseMapping with `needs_body` False can instead be applied to a streamed
    response before it is prepared, with `apply_head(ctx, response)`. A request template's
    `$context.responseOverride` is applied by ResponseTemplates, also when no response template
    matches."""
    if route_cfg.templates is None and (
        route_cfg.mapping is None or not route_cfg.mapping.response
    ):
        return None
    route = _route_info(api_cfg, route_cfg, stage_name, route_key)
    templates = route_cfg.templates
    if templates is not None and (templates.response or templates.request):
        compiled = _compile_templates(templates.response, f"route {route.route_key!r} response")
        return ResponseTemplates(compiled, route)
    mapping = route_cfg.mapping
    if mapping is not None and mapping.response:
        by_status = {
            int(status): _compile_ops(
                ops, True, f"route {route.route_key!r} mapping.response.{status}"
            )
            for status, ops in mapping.response.items()
        }
        return ResponseMapping(by_status, route)
    return None
