"""Access log: one line per request, buffered and flushed off the request path.

The default line is pygw's own JSON object. `access_log.format` may instead be a format string of
AWS's `$context.*` variables, in whatever shape the user writes around them (AWS's console offers
CLF, JSON, XML and CSV examples, available here as the presets `clf`, `aws_json`, `xml`, `csv`).
A format string is compiled once at load into a list of literal pieces and getters; per request,
each getter reads one value off the `LogEntry` and the pieces are joined. A value the gateway does
not have is written `-`, as AWS writes it.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Final, Protocol

import orjson

from pygw._native import header_value
from pygw.aws_time import request_time
from pygw.errors import ErrorType, Style, gateway_response
from pygw.trace import xray_trace_id

if TYPE_CHECKING:
    from pygw.context import RequestContext
    from pygw.request import Request
    from pygw.response import Response

__all__ = [
    "PRESETS",
    "AccessLog",
    "FormatError",
    "LogEntry",
    "compile_format",
    "default_line",
]


class RouteView(Protocol):
    """What the access log reads of a compiled route."""

    key: str
    api: str
    api_id: str
    stage: str
    style: Style
    resource_path: str


class LogEntry:
    """What one request leaves for its access-log line; built only when a log is configured."""

    __slots__ = (
        "ctx",
        "error",
        "error_detail",
        "integration_s",
        "latency_s",
        "request",
        "request_id",
        "response",
        "route",
        "trace_id",
    )

    def __init__(
        self,
        request: Request,
        route: RouteView | None,
        response: Response,
        ctx: RequestContext | None,
        request_id: str,
        trace_id: str,
        latency_s: float,
        integration_s: float,
        error: ErrorType | None = None,
        error_detail: str | None = None,
    ) -> None:
        self.request = request
        self.route = route
        self.response = response
        self.ctx = ctx
        self.request_id = request_id
        self.trace_id = trace_id
        self.latency_s = latency_s
        self.integration_s = integration_s
        self.error = error
        self.error_detail = error_detail


Formatter = Callable[[LogEntry], bytes]
Getter = Callable[[LogEntry], "str | None"]


class _SecondClock:
    """The current second as the default line writes it, formatted once per second: strftime
    for every line cost about a microsecond."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def text(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
            self._second = second
        return self._text


_NOW = _SecondClock()


def default_line(entry: LogEntry) -> bytes:
    """pygw's own line: one JSON object (the default when no format is set)."""
    request = entry.request
    route = entry.route
    ctx = entry.ctx
    # Read from the raw headers: the header map would be built for this one value.
    user_agent = header_value(request.raw_headers, b"user-agent")
    return orjson.dumps(
        {
            "time": _NOW.text(),
            "request_id": entry.request_id,
            "trace_id": entry.trace_id,
            "client_ip": request.client_ip,
            "method": request.method,
            # The query string stays out of the log: it may carry credentials.
            "path": request.raw_path.partition("?")[0],
            "route": route.key if route is not None else None,
            "status": entry.response.status,
            "bytes": entry.response.body_length,
            "latency_ms": round(entry.latency_s * 1000.0, 3),
            "integration_latency_ms": round(entry.integration_s * 1000.0, 3),
            "api": route.api if route is not None else None,
            "stage": route.stage if route is not None else None,
            "style": route.style.value if route is not None else None,
            "canary": ctx.canary if ctx is not None else False,
            "cache": ctx.cache_state if ctx is not None else None,
            "user_agent": (
                None if user_agent is None else user_agent.decode("utf-8", "surrogateescape")
            ),
        }
    )


# --------------------------------------------------------------------------------------------------
# AWS format strings

# The examples AWS's console offers for REST APIs (each one line; AWS's docs wrap them).
PRESETS: Final[dict[str, str]] = {
    "clf": (
        "$context.identity.sourceIp $context.identity.caller $context.identity.user "
        '[$context.requestTime]"$context.httpMethod $context.resourcePath $context.protocol" '
        "$context.status $context.responseLength $context.requestId $context.extendedRequestId"
    ),
    "aws_json": (
        '{ "requestId":"$context.requestId", "extendedRequestId":"$context.extendedRequestId",'
        '"ip": "$context.identity.sourceIp", "caller":"$context.identity.caller", '
        '"user":"$context.identity.user", "requestTime":"$context.requestTime", '
        '"httpMethod":"$context.httpMethod", "resourcePath":"$context.resourcePath", '
        '"status":"$context.status", "protocol":"$context.protocol", '
        '"responseLength":"$context.responseLength" }'
    ),
    "xml": (
        '<request id="$context.requestId"> '
        "<extendedRequestId>$context.extendedRequestId</extendedRequestId> "
        "<ip>$context.identity.sourceIp</ip> <caller>$context.identity.caller</caller> "
        "<user>$context.identity.user</user> <requestTime>$context.requestTime</requestTime> "
        "<httpMethod>$context.httpMethod</httpMethod> "
        "<resourcePath>$context.resourcePath</resourcePath> <status>$context.status</status> "
        "<protocol>$context.protocol</protocol> "
        "<responseLength>$context.responseLength</responseLength> </request>"
    ),
    "csv": (
        "$context.identity.sourceIp,$context.identity.caller,$context.identity.user,"
        "$context.requestTime,$context.httpMethod,$context.resourcePath,$context.protocol,"
        "$context.status,$context.responseLength,$context.requestId,$context.extendedRequestId"
    ),
}

# A variable runs to the first character that cannot be in its name; a trailing dot is prose.
_VARIABLE: Final = re.compile(r"\$context\.([A-Za-z0-9_.\-]+)")
_GATEWAY_ERRORS: Final = frozenset(
    {"UPSTREAM_FAILURE", "UPSTREAM_TIMEOUT", "INTEGRATION_FAILURE", "INTEGRATION_TIMEOUT"}
)


class FormatError(ValueError):
    """A format string that cannot be compiled; `fix` says what to do."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


def _ms(seconds: float) -> str:
    return str(round(seconds * 1000.0))


def _host(entry: LogEntry) -> str | None:
    host = entry.request.host_header
    if not host:
        return None
    text = host.decode("latin-1")
    if text.startswith("["):
        return text.partition("]")[0] + "]"
    return text.rpartition(":")[0] if text.count(":") == 1 else text


def _domain_prefix(entry: LogEntry) -> str | None:
    host = _host(entry)
    return None if host is None else host.partition(".")[0]


def _arrival(entry: LogEntry) -> float:
    return time.time() - entry.latency_s


def _integration_ran(entry: LogEntry) -> bool:
    ctx = entry.ctx
    return ctx is not None and (ctx.integration_status is not None or entry.integration_s > 0)


def _integration_status(entry: LogEntry) -> str | None:
    ctx = entry.ctx
    status = None if ctx is None else ctx.integration_status
    return None if status is None else str(status)


def _integration_latency(entry: LogEntry) -> str | None:
    return _ms(entry.integration_s) if _integration_ran(entry) else None


def _integration_error(entry: LogEntry) -> str | None:
    error = entry.error
    if error is None or error.value not in _GATEWAY_ERRORS:
        return None
    return _error_message(entry)


def _error_message(entry: LogEntry) -> str | None:
    error = entry.error
    if error is None:
        return None
    if entry.error_detail is not None:
        return entry.error_detail
    route = entry.route
    return gateway_response(error, route.style if route is not None else Style.HTTP).message


def _response_type(entry: LogEntry) -> str | None:
    error = entry.error
    return None if error is None else error.value


def _response_length(entry: LogEntry) -> str:
    return str(entry.response.body_length)


def _text(value: Any) -> str | None:
    """A value as AWS stringifies authorizer output: strings as they are, booleans lower-case."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _authorizer_getter(path: tuple[str, ...]) -> Getter:
    """`authorizer.claims.<name>` reads a JWT's claims; `authorizer.<key>` a custom
    authorizer's context (or its principalId)."""

    def get(entry: LogEntry) -> str | None:
        ctx = entry.ctx
        node: Any = None if ctx is None else ctx.authorizer
        if not isinstance(node, dict):
            return None
        jwt = node.get("jwt")
        if path[0] == "claims" and isinstance(jwt, dict):
            node = jwt
        for part in path:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return None if isinstance(node, dict) and path == ("claims",) else _text(node)

    return get


def _absent(entry: LogEntry) -> None:
    """AWS-only values (IAM callers, Cognito identities, WAF, VPC endpoints): written `-`."""
    return None


def _protocol(entry: LogEntry) -> str:
    version = entry.request.version
    return f"HTTP/{version.major}.{version.minor}"


def _route_key(entry: LogEntry) -> str | None:
    route = entry.route
    return None if route is None else route.key


_GETTERS: Final[dict[str, Getter]] = {
    "requestId": lambda e: e.request_id,
    "extendedRequestId": lambda e: e.request_id,
    "identity.sourceIp": lambda e: e.request.client_ip,
    "identity.userAgent": lambda e: e.request.headers.get("User-Agent"),
    "identity.apiKeyId": lambda e: None if e.ctx is None else e.ctx.api_key_id,
    "requestTime": lambda e: request_time(_arrival(e)),
    "requestTimeEpoch": lambda e: str(int(_arrival(e) * 1000)),
    "httpMethod": lambda e: e.request.method,
    "routeKey": _route_key,
    "resourcePath": lambda e: None if e.route is None else e.route.resource_path,
    "path": lambda e: e.request.raw_path.partition("?")[0],
    "protocol": _protocol,
    "status": lambda e: str(e.response.status),
    "responseLength": _response_length,
    "responseLatency": lambda e: _ms(e.latency_s),
    "integrationLatency": _integration_latency,
    "integration.latency": _integration_latency,
    "integrationStatus": _integration_status,
    "integration.status": _integration_status,
    "integration.integrationStatus": _integration_status,
    "integration.error": _integration_error,
    "integrationErrorMessage": _integration_error,
    "error.message": _error_message,
    "error.messageString": _error_message,
    "error.responseType": _response_type,
    "error.validationErrorString": lambda e: (
        e.error_detail if e.error is not None and e.error.value.startswith("BAD_REQUEST") else None
    ),
    "stage": lambda e: None if e.route is None else e.route.stage,
    "apiId": lambda e: None if e.route is None else e.route.api_id,
    "domainName": _host,
    "domainPrefix": _domain_prefix,
    "xrayTraceId": lambda e: xray_trace_id(e.trace_id) if e.trace_id else None,
    # pygw's own: the same trace id in W3C's spelling, as traceparent carries it.
    "traceId": lambda e: e.trace_id or None,
    "isCanaryRequest": lambda e: None if e.ctx is None else ("true" if e.ctx.canary else "false"),
    "integration.requestId": _absent,
    "accountId": _absent,
    "awsEndpointRequestId": _absent,
    "awsEndpointRequestId2": _absent,
    "customDomain.basePathMatched": _absent,
    "dataProcessed": _absent,
    "endpointType": _absent,
    "resourceId": _absent,
    "identity.accountId": _absent,
    "identity.apiKey": _absent,  # never written: it is a credential
    "identity.caller": _absent,
    "identity.user": _absent,
    "identity.userArn": _absent,
    "identity.principalOrgId": _absent,
    "identity.cognitoAuthenticationProvider": _absent,
    "identity.cognitoAuthenticationType": _absent,
    "identity.cognitoIdentityId": _absent,
    "identity.cognitoIdentityPoolId": _absent,
    "identity.vpceId": _absent,
    "identity.vpcId": _absent,
    "identity.clientCert.clientCertPem": _absent,
    "identity.clientCert.subjectDN": _absent,
    "identity.clientCert.issuerDN": _absent,
    "identity.clientCert.serialNumber": _absent,
    "identity.clientCert.validity.notBefore": _absent,
    "identity.clientCert.validity.notAfter": _absent,
    "authorize.error": _absent,
    "authorize.latency": _absent,
    "authorize.status": _absent,
    "authenticate.error": _absent,
    "authenticate.latency": _absent,
    "authenticate.status": _absent,
    "waf.error": _absent,
    "waf.latency": _absent,
    "waf.status": _absent,
    "wafResponseCode": _absent,
    "webaclArn": _absent,
}

# Written in double quotes (the value escaped inside them), to stand unquoted in a JSON format.
_QUOTED: Final = frozenset({"error.messageString"})

# The authorizer's own bookkeeping, not a key of its output.
_AUTHORIZER_ABSENT: Final = frozenset(
    {"error", "integrationLatency", "integrationStatus", "latency", "requestId", "status"}
)


def variables() -> tuple[str, ...]:
    """The `$context` variable names a format may use (besides `authorizer.*`)."""
    return tuple(_GETTERS)


def _getter(name: str) -> Getter:
    found = _GETTERS.get(name)
    if found is not None:
        return found
    if name.startswith("authorizer.") and len(name) > len("authorizer."):
        path = tuple(name[len("authorizer.") :].split("."))
        if len(path) == 1 and path[0] in _AUTHORIZER_ABSENT:
            return _absent
        if all(path):
            return _authorizer_getter(path)
    raise FormatError(
        f"$context.{name} is not an access-log variable",
        "use one of AWS's $context variables (docs/observability.md lists them), "
        "or $context.authorizer.<key>",
    )


def _json_escape(text: str) -> str:
    return orjson.dumps(text).decode()[1:-1]


_XML_ESCAPES: Final = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}
)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def _xml_escape(text: str) -> str:
    return _plain(text.translate(_XML_ESCAPES))


def _plain(text: str) -> str:
    # One request, one line: a control character in a value (a header, an authorizer's
    # context) is written as an escape, never as a line break.
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def compile_format(format_text: str) -> Formatter:
    """A formatter for `format_text` (a preset name or a `$context` format string), or
    FormatError naming the first variable that is not one."""
    if format_text == "json":
        return default_line
    template = PRESETS.get(format_text, format_text)
    if "\n" in template or "\r" in template:
        raise FormatError("the format has a line break", "write the format on one line")
    literals: list[str] = []
    getters: list[Getter] = []
    names: list[str] = []
    at = 0
    for found in _VARIABLE.finditer(template):
        name = found[1].rstrip(".")
        literals.append(template[at : found.start()])
        getters.append(_getter(name))
        names.append(name)
        at = found.start() + len("$context.") + len(name)
    literals.append(template[at:])
    if "requestId" not in names and "extendedRequestId" not in names:
        raise FormatError(
            "the format has neither $context.requestId nor $context.extendedRequestId",
            "add $context.requestId (AWS requires one of them, so lines can be told apart)",
        )
    stripped = template.lstrip()
    escape = (
        _json_escape
        if stripped.startswith(("{", "["))
        else _xml_escape
        if stripped.startswith("<")
        else _plain
    )
    first = literals[0]
    pairs = tuple(
        (get, literal, name in _QUOTED)
        for get, literal, name in zip(getters, literals[1:], names, strict=True)
    )

    def format_line(entry: LogEntry) -> bytes:
        parts = [first]
        for get, literal, quoted in pairs:
            value = get(entry)
            text = "-" if value is None else escape(value)
            parts.append(f'"{text}"' if quoted else text)
            parts.append(literal)
        return "".join(parts).encode("utf-8", "replace")

    return format_line


class AccessLog:
    """Writes lines to a file or stdout. Lines are buffered and flushed every `flush_s`,
    so a burst of requests costs one write call, not one per request."""

    def __init__(
        self,
        path: str,
        flush_s: float = 0.2,
        max_buffer: int = 1 << 16,
        formatter: Formatter = default_line,
    ) -> None:
        self._path = path
        self._stream: IO[bytes] = (
            sys.stdout.buffer if path == "-" else open(path, "ab")  # noqa: SIM115
        )
        self._buffer = bytearray()
        self._max_buffer = max_buffer
        self._flush_s = flush_s
        self._flusher: asyncio.TimerHandle | None = None
        self._format = formatter

    def entry(self, entry: LogEntry) -> None:
        """One request's line, in the configured format."""
        self._append(self._format(entry))

    def write(self, record: dict[str, Any]) -> None:
        """A line of pygw's own JSON (WebSocket events write these whatever the format)."""
        self._append(orjson.dumps(record))

    def _append(self, line: bytes) -> None:
        self._buffer += line
        self._buffer += b"\n"
        if len(self._buffer) >= self._max_buffer:
            self.flush()
        elif self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_later(self._flush_s, self.flush)

    def flush(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if self._buffer:
            self._stream.write(self._buffer)
            self._stream.flush()
            self._buffer.clear()

    def close(self) -> None:
        self.flush()
        if self._path != "-":
            self._stream.close()
