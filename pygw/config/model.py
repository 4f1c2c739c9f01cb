"""The configuration model: typed, validated, immutable.

Every class refuses unknown keys and cannot be changed after validation. Checks that need more
than one field (route keys against the API style, authorizer names, usage-plan keys, ...) run in
the model validators and report every problem they find, each at the path of the offending key, so
that a user sees all of a file's problems at once. Problems are raised as pydantic errors of type
``pygw`` whose context carries ``message`` and ``fix``; ``pygw.config.load`` turns them into
``FILE: path: message (fix)``.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from pygw.observe.access_log import FormatError, compile_format

__all__ = [
    "COGNITO_POOL_ARN",
    "METHODS",
    "AccessLogConfig",
    "AdminConfig",
    "ApiCacheConfig",
    "ApiConfig",
    "ApiKeyConfig",
    "ApiStyle",
    "AuthorizerConfig",
    "CanaryConfig",
    "CognitoAuthorizerConfig",
    "ConnectionsApiConfig",
    "CorsConfig",
    "CustomAuthorizerConfig",
    "DomainConfig",
    "FaultAbortConfig",
    "FaultConfig",
    "FaultDelayConfig",
    "FaultsConfig",
    "FunctionSpec",
    "GatewayConfig",
    "HealthConfig",
    "HttpProxySpec",
    "HttpTarget",
    "IamConfig",
    "IamPolicyStatement",
    "IntegrationConfig",
    "JwtAuthorizerConfig",
    "LambdaSpec",
    "LatencyConfig",
    "LimitsConfig",
    "ListenAddress",
    "MappingConfig",
    "MockSpec",
    "MutualTlsConfig",
    "QuotaConfig",
    "ResourcePolicyConfig",
    "RouteCacheConfig",
    "RouteConfig",
    "RouteKey",
    "RouteKeyError",
    "ScheduleStep",
    "ServerConfig",
    "StageConfig",
    "StateConfig",
    "TelemetryConfig",
    "TemplatesConfig",
    "ThrottleConfig",
    "TlsCertificateConfig",
    "TlsConfig",
    "UsagePlanConfig",
    "ValidateConfig",
    "WebSocketSettings",
    "cognito_issuer",
    "parse_listen",
    "parse_route_key",
]

ApiStyle = Literal["http", "rest", "websocket"]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY"]
METHODS: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY")
PayloadFormat = Literal["1.0", "2.0"]
WEBSOCKET_SPECIAL_KEYS = ("$connect", "$disconnect", "$default")
DEFAULT_STAGE = "$default"
# AWS's bound for minimumCompressionSize (10 MiB).
MAX_COMPRESSION_SIZE = 10_485_760


# --------------------------------------------------------------------------------------------------
# Error helpers


def problem(message: str, fix: str) -> PydanticCustomError:
    """A validation error carrying its own fix; the loader prints it as ``message (fix)``."""
    return PydanticCustomError("pygw", "{message}", {"message": message, "fix": fix})


def _check_segments(value: str, path: str, fix: str) -> None:
    """A base path's segments (`path` without its leading '/') are plain, non-empty names."""
    for seg in path.split("/"):
        if not seg:
            raise problem(f"base_path {value!r} has an empty segment", "remove the doubled '/'")
        if not _STATIC_SEGMENT_RE.match(seg) or seg in (".", ".."):
            raise problem(f"base_path segment {seg!r} is not allowed", fix)


class _Problems:
    """Collects several problems, each at its own location, and raises them together."""

    def __init__(self) -> None:
        self.items: list[InitErrorDetails] = []

    def add(self, loc: tuple[str | int, ...], message: str, fix: str, value: Any = None) -> None:
        self.items.append(InitErrorDetails(type=problem(message, fix), loc=loc, input=value))

    def raise_if_any(self, title: str) -> None:
        if self.items:
            # A ValidationError raised inside a validator is merged into the outer one with the
            # locations prefixed, which is how one check can point at several fields at once.
            raise ValidationError.from_exception_data(title, self.items)


def closest(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def _one_of(word: str, choices: list[str] | tuple[str, ...]) -> str:
    near = closest(word, choices)
    listed = ", ".join(choices)
    return f"did you mean {near!r}? valid: {listed}" if near else f"use one of: {listed}"


def _reference_fix(word: str, choices: list[str], section: str) -> str:
    if not choices:
        return f"define {word!r} under {section}, or remove the reference"
    near = closest(word, choices)
    if near:
        return f"did you mean {near!r}? (defined under {section}: {', '.join(choices)})"
    return f"use one of the names under {section}: {', '.join(choices)}"


# --------------------------------------------------------------------------------------------------
# Small value types


def _scalar_to_str(value: Any) -> Any:
    # YAML reads `port: 9001` or `x: 1.5` as numbers where a string is meant (variables, headers).
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _str_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_scalar_to_str(k): v for k, v in value.items()}
    return value


def _payload_format(value: Any) -> Any:
    # `payload_format: 2.0` unquoted is a float in YAML.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{float(value):.1f}"
    return value


def _str_to_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


StrScalar = Annotated[str, BeforeValidator(_scalar_to_str)]
StrMap = Annotated[dict[StrScalar, StrScalar], BeforeValidator(_str_keys)]
StrList = Annotated[list[str], BeforeValidator(_str_to_list)]
PayloadFormatField = Annotated[PayloadFormat, BeforeValidator(_payload_format)]

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_VAR_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
_HANDLER_RE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*$"
)
_HOST_RE = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_STATIC_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._~:@!$&'()*+,;=%-]+$")
_STAGE_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _check_handler(value: str | None) -> str | None:
    if value is not None and not _HANDLER_RE.match(value):
        raise problem(
            f"{value!r} is not a handler reference",
            "write module:callable, e.g. shop.handlers:create",
        )
    return value


# --------------------------------------------------------------------------------------------------
# Listen addresses


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A parsed ``HOST:PORT`` or ``unix:/path``: either host and port, or unix_path, is set."""

    host: str | None
    port: int | None
    unix_path: str | None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(value: str) -> ListenAddress:
    """Parse a listen address; raises a pydantic error (message + fix) when malformed."""
    fix = "write HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8080) or unix:/path/to.sock"
    if value.startswith("unix:"):
        path = value[len("unix:") :]
        if not path:
            raise problem("unix: needs a socket path", fix)
        return ListenAddress(None, None, path)
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise problem(f"{value!r} is not a listen address", fix)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise problem(f"{host!r} is not an IPv6 address", fix) from None
    elif ":" in host:
        raise problem(f"IPv6 address {host!r} must be in brackets", f"write [{host}]:{port_text}")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise problem(f"port {port_text!r} is not a number from 0 to 65535", fix)
    return ListenAddress(host, int(port_text), None)


def _check_listen(value: str) -> str:
    parse_listen(value)
    return value


# --------------------------------------------------------------------------------------------------
# Route keys


class RouteKeyError(ValueError):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


@dataclass(frozen=True, slots=True)
class RouteKey:
    """A parsed route key.

    ``method`` and ``path`` are None for ``$default`` and the WebSocket keys; ``params`` are the
    path parameter names in order (a greedy ``{proxy+}`` is listed as ``proxy``, with ``greedy``).
    """

    key: str
    method: str | None
    path: str | None
    segments: tuple[str, ...]
    params: tuple[str, ...]
    greedy: bool

    @property
    def is_default(self) -> bool:
        return self.key == "$default"

    @property
    def shape(self) -> str:
        """The key with parameter names erased: two keys of one shape can never be told apart."""
        if self.path is None:
            return self.key
        parts = []
        for seg in self.segments:
            if seg.startswith("{"):
                parts.append("{+}" if seg.endswith("+}") else "{}")
            else:
                parts.append(seg)
        return f"{self.method} /" + "/".join(parts)


def parse_route_key(key: str, style: ApiStyle = "http") -> RouteKey:
    """Parse ``METHOD /path``, ``ANY /path``, ``$default`` (WebSocket APIs: an action value)."""
    if style == "websocket":
        if key.startswith("$"):
            if key not in WEBSOCKET_SPECIAL_KEYS:
                raise RouteKeyError(
                    f"{key!r} is not a WebSocket route key",
                    "use $connect, $disconnect, $default or a value of the route selection field"
                    + (
                        f" (did you mean {near!r}?)"
                        if (near := closest(key, WEBSOCKET_SPECIAL_KEYS))
                        else ""
                    ),
                )
        elif not key or any(c.isspace() for c in key):
            raise RouteKeyError(
                f"{key!r} is not a WebSocket route key",
                "a WebSocket route key is a value of the route selection field, without spaces",
            )
        return RouteKey(key, None, None, (), (), False)

    if key == "$default":
        return RouteKey(key, None, None, (), (), False)
    if key.startswith("$"):
        raise RouteKeyError(
            f"{key!r} is not a route key of a {style.upper()} API",
            "use METHOD /path, ANY /path or $default ($connect and $disconnect belong to "
            "websocket APIs)",
        )
    method, sep, path = key.partition(" ")
    if not sep:
        if "/" in key:
            m, _slash, rest = key.partition("/")
            hint = f"write '{m.upper()} /{rest}'" if m else f"write 'GET {key}' or 'ANY {key}'"
            raise RouteKeyError(f"route key {key!r} has no method", hint)
        raise RouteKeyError(f"{key!r} is not a route key", "write METHOD /path, e.g. 'GET /items'")
    if method not in METHODS:
        if method.upper() in METHODS:
            fix = f"methods are upper case: write '{method.upper()} {path}'"
        else:
            fix = _one_of(method.upper(), METHODS)
        raise RouteKeyError(f"unknown method {method!r} in route key {key!r}", fix)
    if path != path.strip() or " " in path:
        raise RouteKeyError(
            f"route key {key!r} has extra spaces", "write exactly one space between method and path"
        )
    if not path.startswith("/"):
        raise RouteKeyError(
            f"the path of route key {key!r} does not start with '/'", f"write '{method} /{path}'"
        )
    if path == "/":
        return RouteKey(key, method, "/", (), (), False)
    if path.endswith("/"):
        raise RouteKeyError(
            f"the path of route key {key!r} ends with '/'",
            f"write '{method} {path.rstrip('/')}' (a trailing slash is ignored when matching)",
        )
    segments = tuple(path[1:].split("/"))
    params: list[str] = []
    greedy = False
    for i, seg in enumerate(segments):
        if not seg:
            raise RouteKeyError(
                f"the path of route key {key!r} has an empty segment ('//')",
                "remove the doubled '/'",
            )
        if "{" in seg or "}" in seg:
            if not (seg.startswith("{") and seg.endswith("}")):
                raise RouteKeyError(
                    f"segment {seg!r} of route key {key!r} mixes text and a parameter",
                    "a parameter must be a whole segment, e.g. /items/{id}",
                )
            name = seg[1:-1]
            is_greedy = name.endswith("+")
            if is_greedy:
                name = name[:-1]
                if i != len(segments) - 1:
                    raise RouteKeyError(
                        f"greedy parameter {seg!r} of route key {key!r} is not the last segment",
                        "a {name+} parameter can only be the last segment",
                    )
                greedy = True
            if not _PARAM_NAME_RE.match(name):
                raise RouteKeyError(
                    f"{seg!r} in route key {key!r} is not a valid parameter",
                    "write {name} or {name+}; names use letters, digits, '_' and '-'",
                )
            if name in params:
                raise RouteKeyError(
                    f"parameter {name!r} appears twice in route key {key!r}",
                    "give each parameter its own name",
                )
            params.append(name)
        elif not _STATIC_SEGMENT_RE.match(seg):
            raise RouteKeyError(
                f"segment {seg!r} of route key {key!r} has characters not allowed in a path",
                "use letters, digits and -._~ (percent-encode anything else)",
            )
    return RouteKey(key, method, path, segments, tuple(params), greedy)


def _check_route_key_syntax(key: Any) -> Any:
    # Style-independent syntax check, run per key so that it is reported alongside other errors;
    # whether the key suits the API's style is checked by ApiConfig.
    if not isinstance(key, str):
        return key
    if not key:
        raise problem("a route key is empty", "write METHOD /path or $default")
    if key.startswith("$"):
        if key not in WEBSOCKET_SPECIAL_KEYS:
            raise problem(
                f"{key!r} is not a route key",
                _one_of(key, ["$default", "$connect", "$disconnect"]),
            )
    elif " " in key or "/" in key:
        try:
            parse_route_key(key, "http")
        except RouteKeyError as err:
            raise problem(err.message, err.fix) from None
    return key


RouteKeyStr = Annotated[str, BeforeValidator(_scalar_to_str)]


# --------------------------------------------------------------------------------------------------
# Base


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------------
# Gateway-wide sections


class LimitsConfig(_Model):
    max_body_bytes: int = Field(default=10_485_760, ge=0)
    max_header_bytes: int = Field(default=16_384, ge=1024)
    header_timeout_s: float = Field(default=10.0, gt=0)
    idle_timeout_s: float = Field(default=75.0, gt=0)
    # More header lines than this is answered 431, like a header block over max_header_bytes.
    max_header_count: int = Field(default=100, ge=8, le=10_000)
    # A proxied body is buffered up to this many bytes before an upstream connection is taken,
    # so a slow client holds only its own connection (nginx's request buffering).
    request_buffer_bytes: int = Field(default=65_536, ge=0)
    # How long that buffering, or any wait for more of a request body, may take (then 408).
    body_timeout_s: float = Field(default=30.0, gt=0)
    # Names such as Content_Length read as Content-Length to backends that map _ to -.
    allow_underscores_in_headers: bool = False
    # Streams one HTTP/2 client may have open at once on a connection (SETTINGS_MAX_CONCURRENT_
    # STREAMS); more are refused with REFUSED_STREAM.
    max_concurrent_streams: int = Field(default=100, ge=1, le=10_000)


class TlsCertificateConfig(_Model):
    """A certificate chain (leaf first) and its private key, PEM files relative to the config
    file's folder. Which names it serves is read from the certificate itself."""

    cert: str = Field(min_length=1)
    key: str = Field(min_length=1)


TlsVersion = Literal["1.2", "1.3"]


def _tls_version(value: Any) -> Any:
    # `min_version: 1.2` unquoted is a float in YAML.
    if isinstance(value, float):
        return f"{value:.1f}"
    return value


class TlsConfig(_Model):
    # Chosen by the client's server name (SNI); the first is served when none matches.
    certificates: list[TlsCertificateConfig] = Field(min_length=1)
    min_version: Annotated[TlsVersion, BeforeValidator(_tls_version)] = "1.2"
    alpn: StrList = ["http/1.1"]

    @field_validator("alpn")
    @classmethod
    def _check_alpn(cls, value: list[str]) -> list[str]:
        for protocol in value:
            if protocol == "h2c":
                raise problem(
                    "ALPN protocol 'h2c' (cleartext HTTP/2) is not served: HTTP/2 is offered on "
                    "HTTPS listeners only",
                    "write alpn: [h2, http/1.1]",
                )
            if protocol not in ("h2", "http/1.1"):
                raise problem(f"unknown ALPN protocol {protocol!r}", "write alpn: [h2, http/1.1]")
        if not value:
            raise problem("alpn is empty", "write alpn: [h2, http/1.1] or alpn: [http/1.1]")
        if len(set(value)) != len(value):
            raise problem("alpn names a protocol twice", "write alpn: [h2, http/1.1]")
        return value


class ServerConfig(_Model):
    listen: str = "127.0.0.1:8080"
    workers: int = Field(default=1, ge=1, le=1024)
    limits: LimitsConfig = LimitsConfig()
    drain_timeout_s: float = Field(default=10.0, ge=0)
    # Peers (CIDRs) whose Forwarded, X-Real-IP and X-Forwarded-For headers are believed.
    trusted_proxies: list[str] = Field(default_factory=list)
    # HTTPS on `listen` (see pygw/tls.py).
    tls: TlsConfig | None = None
    # A plain listener answering every request with a redirect to the HTTPS one.
    redirect_http: str | None = None
    # The Server header of pygw's answers; none by default, so pygw does not advertise itself.
    server_header: str | None = None

    _listen = field_validator("listen")(_check_listen)

    @field_validator("server_header")
    @classmethod
    def _check_server_header(cls, value: str | None) -> str | None:
        if value is not None and (
            not value or len(value) > 256 or not all(" " <= c <= "~" for c in value)
        ):
            raise problem(
                f"server_header {value!r} is not a header value",
                "use up to 256 printable ASCII characters, e.g. pygw, or remove the key",
            )
        return value

    @field_validator("redirect_http")
    @classmethod
    def _check_redirect(cls, value: str | None) -> str | None:
        if value is not None and parse_listen(value).unix_path is not None:
            raise problem("redirect_http must be a TCP address", "write HOST:PORT, e.g. 0.0.0.0:80")
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        if self.redirect_http is not None and self.tls is None:
            raise problem(
                "redirect_http sends clients to HTTPS, but the server has no tls section",
                "add server.tls with certificates, or remove redirect_http",
            )
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise problem(
                    f"trusted_proxies entry {cidr!r} is not an IP network",
                    "write an address or a CIDR such as 10.0.0.0/8 or ::1",
                ) from None
        return value

    @property
    def address(self) -> ListenAddress:
        return parse_listen(self.listen)


class AdminConfig(_Model):
    listen: str = "127.0.0.1:9901"
    token: str = ""

    _listen = field_validator("listen")(_check_listen)

    @property
    def address(self) -> ListenAddress:
        return parse_listen(self.listen)


class StateConfig(_Model):
    backend: Literal["local", "shared", "redis"] = "local"
    url: str | None = None
    on_error: Literal["allow", "deny"] = "allow"
    key_prefix: str = "pygw:"
    # `url` names any node of a Redis Cluster; the client finds the others.
    cluster: bool = False
    # A decision waits this long for Redis before on_error decides it.
    timeout_ms: float = Field(default=50, gt=0, le=10_000, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.cluster and self.backend != "redis":
            raise problem(
                f"cluster is used only by backend redis (backend is {self.backend})",
                "remove cluster, or set backend: redis",
            )
        if self.cluster and ("{" in self.key_prefix or "}" in self.key_prefix):
            raise problem(
                f"key_prefix {self.key_prefix!r} has braces; with cluster: true the prefix is "
                "already the keys' hash tag",
                "remove { and } from key_prefix",
            )
        if self.backend == "redis":
            if not self.url:
                raise problem(
                    "backend redis needs a url", "add url: redis://HOST:6379/0 to the state section"
                )
            if not self.url.startswith(("redis://", "rediss://", "unix://")):
                raise problem(
                    f"url {self.url!r} is not a Redis URL",
                    "write redis://HOST:PORT/DB, rediss://... or unix:///path",
                )
        elif self.url is not None:
            raise problem(
                f"url is used only by backend redis (backend is {self.backend})",
                "remove url, or set backend: redis",
            )
        return self


class ThrottleConfig(_Model):
    """Token bucket: refill ``rate`` tokens per second up to ``burst``; a request takes one."""

    rate: float = Field(ge=0, allow_inf_nan=False)
    burst: int = Field(ge=0)

    @model_validator(mode="before")
    @classmethod
    def _default_burst(cls, data: Any) -> Any:
        # An omitted burst is one second's worth of requests.
        if isinstance(data, dict) and "burst" not in data:
            rate = data.get("rate")
            burst = 1
            if isinstance(rate, int | float) and not isinstance(rate, bool) and math.isfinite(rate):
                burst = max(1, math.ceil(rate))
            return {**data, "burst": burst}
        return data


class AccessLogConfig(_Model):
    path: str = "-"
    # "json" (pygw's own line), a preset of AWS's console (clf, aws_json, xml, csv), or a format
    # string of AWS's $context variables (pygw/observe/access_log.py).
    format: str = "json"

    @field_validator("format")
    @classmethod
    def _check_format(cls, value: str) -> str:
        try:
            compile_format(value)
        except FormatError as bad:
            raise problem(str(bad), bad.fix) from None
        return value


class TelemetryConfig(_Model):
    """OpenTelemetry spans exported over OTLP/HTTP (pygw/observe/telemetry.py)."""

    # The collector's traces URL, e.g. http://127.0.0.1:4318/v1/traces.
    otlp_endpoint: str
    sample_ratio: float = Field(default=1.0, ge=0, le=1, allow_inf_nan=False)
    service_name: str = "pygw"
    # Requests whose spans wait for export; beyond it spans are dropped and counted.
    max_queue: int = Field(default=2048, gt=0)
    export_timeout_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)

    @field_validator("otlp_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise problem(
                f"otlp_endpoint {value!r} is not an http(s) URL",
                "write the collector's OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces",
            )
        return value


# --------------------------------------------------------------------------------------------------
# API sections


class CanaryConfig(_Model):
    percent: float = Field(default=0.0, ge=0, le=100)
    variables: StrMap = {}


class StageConfig(_Model):
    name: str
    variables: StrMap = {}
    throttle: ThrottleConfig | None = None
    canary: CanaryConfig | None = None
    # Faults for every route of the stage that sets none of its own.
    faults: FaultsConfig | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if value == DEFAULT_STAGE:
            return value
        if "/" in value:
            raise problem(
                f"stage name {value!r} contains '/'",
                f"write {value.strip('/').replace('/', '-')!r}: a stage name is one path segment"
                if value.strip("/")
                else "use a name such as v1, or $default to serve at the root",
            )
        if not _STAGE_RE.match(value):
            raise problem(
                f"stage name {value!r} is not valid",
                "use letters, digits, '-' and '_' (up to 128), or $default to serve at the root",
            )
        return value

    @field_validator("variables")
    @classmethod
    def _check_variables(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _VAR_NAME_RE.match(name):
                raise problem(
                    f"stage variable name {name!r} is not valid", "use letters, digits and '_'"
                )
        return value


_ORIGIN_RE = re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s]+$")


class CorsConfig(_Model):
    allow_origins: StrList = []
    allow_methods: StrList = ["*"]
    allow_headers: StrList = []
    expose_headers: StrList = []
    max_age: int = Field(default=0, ge=0, le=86400)
    allow_credentials: bool = False

    @field_validator("allow_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*":
                continue
            if origin.endswith("/"):
                raise problem(
                    f"origin {origin!r} ends with '/'",
                    f"write {origin.rstrip('/')!r}: browsers send origins without a path",
                )
            if not _ORIGIN_RE.match(origin):
                raise problem(
                    f"{origin!r} is not an origin", "write scheme://host[:port], or '*' for any"
                )
        return value

    @field_validator("allow_methods")
    @classmethod
    def _check_methods(cls, value: list[str]) -> list[str]:
        allowed = [m for m in METHODS if m != "ANY"]
        out = []
        for method in value:
            upper = method.upper()
            if upper != "*" and upper not in allowed:
                raise problem(f"{method!r} is not an HTTP method", _one_of(upper, allowed))
            out.append(upper)
        return out

    @field_validator("allow_headers", "expose_headers")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [h.lower() for h in value]

    @model_validator(mode="after")
    def _check_credentials(self) -> Self:
        if self.allow_credentials and "*" in self.allow_origins:
            raise problem(
                "allow_credentials cannot be combined with allow_origins '*'",
                "list the allowed origins explicitly (browsers refuse credentials for '*')",
            )
        return self


_IDENTITY_PREFIXES = ("header.", "querystring.", "path.", "stageVariables.", "context.")
_AWS_IDENTITY_PREFIXES = ("$request.", "method.request.")


def _normalise_source(value: str, prefixes: tuple[str, ...]) -> str:
    for aws in _AWS_IDENTITY_PREFIXES:
        if value.startswith(aws):
            value = value[len(aws) :]
            break
    if value.startswith("$"):
        value = value[1:]
    for prefix in prefixes:
        if value.startswith(prefix) and len(value) > len(prefix):
            if prefix == "header.":
                return value.lower()
            return value
    raise problem(
        f"{value!r} is not a request parameter reference",
        "write " + ", ".join(p + "NAME" for p in prefixes),
    )


def _identity_sources(value: list[str]) -> list[str]:
    return [_normalise_source(v, _IDENTITY_PREFIXES) for v in value]


_PARAM_PREFIXES = ("querystring.", "header.", "path.")


def _param_refs(value: list[str]) -> list[str]:
    return [_normalise_source(v, _PARAM_PREFIXES) for v in value]


JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
# Shared-secret algorithms are allowed only when asked for: a default that accepts them invites
# algorithm-confusion attacks against public keys.
JWT_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")


class JwtAuthorizerConfig(_Model):
    type: Literal["jwt"]
    issuer: str
    audience: StrList
    # None: the issuer's `/.well-known/jwks.json`. file:// paths are relative to the config file.
    jwks: str | None = None
    identity_source: StrList = ["header.authorization"]
    algorithms: StrList = list(JWT_ALGORITHMS)
    leeway_s: float = Field(default=60.0, ge=0)
    jwks_cache_s: float = Field(default=300.0, ge=0)
    # HMAC secret for HS256/384/512 (use ${env:NAME}); needs those algorithms listed explicitly.
    secret: str | None = None

    _sources = field_validator("identity_source")(_identity_sources)

    @field_validator("issuer")
    @classmethod
    def _check_issuer(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise problem(f"issuer {value!r} is not a URL", "write https://your-idp.example")
        return value

    @field_validator("audience")
    @classmethod
    def _check_audience(cls, value: list[str]) -> list[str]:
        if not value:
            raise problem("audience is empty", "list the accepted aud values, e.g. [shop]")
        return value

    @field_validator("jwks")
    @classmethod
    def _check_jwks(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://", "file://")):
            raise problem(
                f"jwks {value!r} is not a URL",
                "write https://.../jwks.json or file://path/to/jwks.json",
            )
        return value

    @field_validator("algorithms")
    @classmethod
    def _check_algorithms(cls, value: list[str]) -> list[str]:
        known = JWT_ALGORITHMS + JWT_HMAC_ALGORITHMS
        for alg in value:
            if alg not in known:
                raise problem(f"unsupported JWT algorithm {alg!r}", _one_of(alg.upper(), known))
        if not value:
            raise problem("algorithms is empty", "omit it to accept the asymmetric algorithms")
        return value

    @property
    def jwks_url(self) -> str:
        return self.jwks or self.issuer.rstrip("/") + "/.well-known/jwks.json"


class CustomAuthorizerConfig(_Model):
    """A Python callable deciding access, its answer cached for ``ttl_s`` per identity."""

    type: Literal["custom"]
    # A Python callable (module:callable), or a function behind the Lambda Invoke API
    # (function_name at endpoint), e.g. a SAM template's Node authorizer.
    handler: str | None = None
    function_name: str | None = None
    endpoint: str | None = None
    # AWS's TOKEN (one header's value) or REQUEST (the whole request) authorizer.
    kind: Literal["TOKEN", "REQUEST"] = "REQUEST"
    identity_source: StrList = ["header.authorization"]
    ttl_s: int = Field(default=300, ge=0, le=3600)
    # Filled with the API style's default by ApiConfig: REST 1.0, HTTP 2.0.
    payload_format: PayloadFormatField = "2.0"
    simple_responses: bool = False
    validation_regex: str | None = None
    timeout_ms: int = Field(default=10_000, ge=1)
    # Folders searched for the handler's module before the config's own (see function).
    python_path: StrList = []

    _handler = field_validator("handler")(_check_handler)
    _sources = field_validator("identity_source")(_identity_sources)

    @field_validator("validation_regex")
    @classmethod
    def _check_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise problem(
                    f"validation_regex does not compile: {err}", "fix the regular expression"
                ) from None
        return value

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+/?$", value):
            raise problem(
                f"endpoint {value!r} is not an http(s) base URL",
                "write the Invoke API's address, e.g. http://127.0.0.1:9001 (no path)",
            )
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _check(self) -> Self:
        remote = self.function_name is not None or self.endpoint is not None
        if self.handler is None and not remote:
            raise problem(
                "a custom authorizer needs handler, or function_name and endpoint",
                "add handler: module:callable, or function_name: NAME with endpoint: URL",
            )
        if self.handler is not None and remote:
            raise problem(
                "handler and function_name/endpoint are both given",
                "keep handler (in-process) or function_name with endpoint (Invoke API)",
            )
        if remote and (self.function_name is None or self.endpoint is None):
            raise problem(
                "function_name and endpoint go together",
                "give both: the function's name and the Invoke API's address",
            )
        if self.kind == "TOKEN" and (
            len(self.identity_source) != 1 or not self.identity_source[0].startswith("header.")
        ):
            raise problem(
                "a TOKEN authorizer reads exactly one header",
                "set identity_source: [header.NAME], or use kind: REQUEST",
            )
        if self.validation_regex is not None and self.kind != "TOKEN":
            raise problem(
                "validation_regex applies to TOKEN authorizers only",
                "remove validation_regex, or set kind: TOKEN",
            )
        if self.simple_responses and self.payload_format != "2.0":
            raise problem(
                "simple_responses needs payload_format 2.0",
                "remove simple_responses, or set payload_format: '2.0'",
            )
        return self


# arn:aws:cognito-idp:REGION:ACCOUNT:userpool/POOL_ID (any partition: aws, aws-cn, aws-us-gov).
COGNITO_POOL_ARN = re.compile(
    r"^arn:aws[a-z-]*:cognito-idp:([a-z0-9-]+):(\d*):userpool/([A-Za-z0-9_-]+)$"
)


def cognito_issuer(arn: str) -> str | None:
    """The token issuer of a user pool ARN (``https://cognito-idp.REGION.amazonaws.com/POOL``)."""
    found = COGNITO_POOL_ARN.match(arn)
    if found is None:
        return None
    return f"https://cognito-idp.{found.group(1)}.amazonaws.com/{found.group(3)}"


class CognitoAuthorizerConfig(_Model):
    """AWS's COGNITO_USER_POOLS authorizer (REST-style): tokens a listed user pool issued."""

    type: Literal["cognito_user_pools"]
    provider_arns: StrList
    # A JWKS for every listed pool: an http(s) URL, file://path or a plain path (relative to the
    # config file). None: each pool's own `ISSUER/.well-known/jwks.json`.
    jwks: str | None = None
    # App client ids accepted (id tokens' aud, access tokens' client_id); empty: any client of
    # the pool, as AWS has it.
    app_clients: StrList = []
    identity_source: StrList = ["header.authorization"]
    leeway_s: float = Field(default=0.0, ge=0)
    jwks_cache_s: float = Field(default=300.0, ge=0)

    _sources = field_validator("identity_source")(_identity_sources)

    @field_validator("provider_arns")
    @classmethod
    def _check_arns(cls, value: list[str]) -> list[str]:
        if not value:
            raise problem(
                "provider_arns is empty",
                "list the user pools, e.g. [arn:aws:cognito-idp:us-east-1:123456789012:"
                "userpool/us-east-1_Ab12]",
            )
        for arn in value:
            if cognito_issuer(arn) is None:
                raise problem(
                    f"{arn!r} is not a Cognito user pool ARN",
                    "write arn:aws:cognito-idp:REGION:ACCOUNT:userpool/POOL_ID",
                )
        return value

    @field_validator("identity_source")
    @classmethod
    def _one_header(cls, value: list[str]) -> list[str]:
        if len(value) != 1 or not value[0].startswith("header."):
            raise problem(
                "a Cognito authorizer reads its token from exactly one header",
                "set identity_source: [header.NAME] (AWS's default is header.Authorization)",
            )
        return value

    @field_validator("jwks")
    @classmethod
    def _check_jwks(cls, value: str | None) -> str | None:
        if value is None or value.startswith(("https://", "http://", "file://")):
            return value
        if not value.strip() or "://" in value:
            raise problem(
                f"jwks {value!r} is neither a URL nor a file path",
                "write https://.../jwks.json, or a path such as keys/pool-jwks.json",
            )
        return "file://" + value

    @property
    def issuers(self) -> list[str]:
        """The pools' issuers, in the order listed, without repeats."""
        out: list[str] = []
        for arn in self.provider_arns:
            issuer = cognito_issuer(arn)
            if issuer is not None and issuer not in out:
                out.append(issuer)
        return out

    def jwks_for(self, issuer: str) -> str:
        return self.jwks or issuer + "/.well-known/jwks.json"


AuthorizerConfig = Annotated[
    JwtAuthorizerConfig | CognitoAuthorizerConfig | CustomAuthorizerConfig,
    Field(discriminator="type"),
]


class ApiKeyConfig(_Model):
    id: str
    value: str | None = None
    value_sha256: str | None = None
    enabled: bool = True

    @field_validator("value", mode="before")
    @classmethod
    def _value_str(cls, value: Any) -> Any:
        return _scalar_to_str(value)

    @field_validator("value_sha256")
    @classmethod
    def _check_digest(cls, value: str | None) -> str | None:
        if value is not None:
            value = value.lower()
            if not _HEX64_RE.match(value):
                raise problem(
                    "value_sha256 is not a SHA-256 hex digest",
                    "write the 64 hex digits of sha256(key), e.g. from `sha256sum`",
                )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.value is None) == (self.value_sha256 is None):
            raise problem(
                f"API key {self.id!r} needs exactly one of value and value_sha256",
                "keep value (the key itself) or value_sha256 (its hex digest), not both"
                if self.value is not None
                else "add value: KEY or value_sha256: HEX",
            )
        if self.value == "":
            raise problem(
                f"API key {self.id!r} has an empty value",
                "set a value (check that its environment variable is set)",
            )
        return self

    @property
    def digest(self) -> str:
        """The key's SHA-256 hex digest (keys are compared by digest, never stored in clear)."""
        if self.value_sha256 is not None:
            return self.value_sha256
        return hashlib.sha256((self.value or "").encode()).hexdigest()


class QuotaConfig(_Model):
    limit: int = Field(ge=0)
    period: Literal["DAY", "WEEK", "MONTH"] = "DAY"


class UsagePlanConfig(_Model):
    name: str
    keys: list[str] = []
    throttle: ThrottleConfig | None = None
    quota: QuotaConfig | None = None


class ApiCacheConfig(_Model):
    """The API's response cache; GET routes are cached for ``ttl_s`` unless a route overrides it."""

    capacity_mb: float = Field(default=64.0, gt=0, le=1_048_576)
    ttl_s: int = Field(default=300, ge=0, le=3600)
    allow_invalidation: bool = False

    @property
    def capacity_bytes(self) -> int:
        return int(self.capacity_mb * 1024 * 1024)


_POLICY_RESOURCE_RE = re.compile(
    r"^(arn:aws:execute-api:[^:]*:[^:]*:[^/]+(/.*)?|execute-api:/.*|\*)$"
)


def _principal_list(value: Any) -> Any:
    # AWS's shapes: "*", {"AWS": "arn"}, {"AWS": ["arn", ...]}; pygw's own: a list of ARNs.
    if isinstance(value, dict) and set(value) == {"AWS"}:
        value = value["AWS"]
    if isinstance(value, str):
        return [value]
    return value


class IamPolicyStatement(_Model):
    """One statement of a resource policy, in AWS's own shape (keys as AWS spells them), for
    callers authenticated by SigV4 (routes with `authorization: aws_iam`)."""

    effect: Literal["Allow", "Deny"] = Field(alias="Effect")
    # ARNs of IAM principals (users, roles, assumed-role sessions), account ids or
    # arn:aws:iam::ACCOUNT:root, with * and ? wildcards; "*" is everyone.
    principal: Annotated[list[str], BeforeValidator(_principal_list)] = Field(alias="Principal")
    action: StrList = Field(default=["execute-api:Invoke"], alias="Action")
    # arn:aws:execute-api:REGION:ACCOUNT:API_ID/STAGE/METHOD/PATH or execute-api:/STAGE/METHOD/PATH
    resource: StrList = Field(alias="Resource")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("action")
    @classmethod
    def _check_action(cls, value: list[str]) -> list[str]:
        for action in value:
            if action not in ("execute-api:Invoke", "execute-api:*", "*"):
                raise problem(
                    f"action {action!r} is not one pygw enforces",
                    "use execute-api:Invoke (the only action a resource policy of an API controls)",
                )
        return value

    @field_validator("resource")
    @classmethod
    def _check_resource(cls, value: list[str]) -> list[str]:
        for resource in value:
            if not _POLICY_RESOURCE_RE.match(resource):
                raise problem(
                    f"resource {resource!r} is not an execute-api resource ARN",
                    "write arn:aws:execute-api:REGION:ACCOUNT:API_ID/STAGE/METHOD/PATH or "
                    "execute-api:/STAGE/METHOD/PATH (wildcards * and ? allowed)",
                )
        return value


class ResourcePolicyConfig(_Model):
    allow_cidrs: StrList = []
    deny_cidrs: StrList = []
    # Allow and Deny statements on the IAM principal of SigV4-signed requests.
    statements: list[IamPolicyStatement] = []

    @field_validator("allow_cidrs", "deny_cidrs")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        out = []
        for cidr in value:
            try:
                out.append(str(ipaddress.ip_network(cidr, strict=False)))
            except ValueError:
                raise problem(
                    f"{cidr!r} is not an IP network",
                    "write a CIDR such as 10.0.0.0/8 or 2001:db8::/32",
                ) from None
        return out


class ConnectionsApiConfig(_Model):
    """The @connections API at /{stage}/@connections/{id} on the WebSocket API's own listener."""

    # aws_iam: SigV4-signed with a key of the top-level iam credentials (what boto3 sends);
    # none: open to whoever reaches the listener (a local run).
    authorization: Literal["none", "aws_iam"] = "aws_iam"


class IamConfig(_Model):
    """SigV4 (AWS_IAM) authorization: the region requests are signed for, and the keys."""

    region: str = "us-east-1"
    # YAML list of {access_key_id, secret_access_key, arn, account_id, [session_token]},
    # relative to the config's folder.
    credentials_file: str = Field(min_length=1)

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        if not re.match(r"^[a-z]{2}(-[a-z]+)+-\d+$", value):
            raise problem(f"{value!r} is not an AWS region", "write e.g. us-east-1")
        return value


class WebSocketSettings(_Model):
    idle_timeout_s: float = Field(default=600.0, gt=0)
    max_duration_s: float = Field(default=7200.0, gt=0)
    max_message_bytes: int = Field(default=131_072, ge=1)


# --------------------------------------------------------------------------------------------------
# Integrations


class UpstreamTlsConfig(_Model):
    """How the gateway speaks TLS to an https upstream. Paths are PEM files relative to the config
    file's folder; a field left out of a target's block is taken from the integration's block."""

    # CA bundle the upstream's certificate must chain to (default: the system's CAs).
    ca: str | None = Field(default=None, min_length=1)
    # Client certificate (leaf first) and its key, for upstreams that require mutual TLS.
    cert: str | None = Field(default=None, min_length=1)
    key: str | None = Field(default=None, min_length=1)
    # Sent as SNI and the name the certificate must carry (default: the URL's host).
    server_name: str | None = Field(default=None, min_length=1)
    # False accepts any certificate: for testing only (`pygw check` warns). None inherits.
    verify: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.cert is None) != (self.key is None):
            missing = "key" if self.key is None else "cert"
            raise problem(
                f"tls.{missing} is missing: a client certificate needs both cert and key",
                f"add tls.{missing}, or remove tls.{'cert' if missing == 'key' else 'key'}",
            )
        return self


class HttpTarget(_Model):
    url: str
    weight: int = Field(default=1, ge=0)
    # Overrides the integration's `tls` field by field for this target.
    tls: UpstreamTlsConfig | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value) and not value.startswith("${stageVariables."):
            raise problem(
                f"target url {value!r} is not an http(s) URL", "write http://HOST:PORT[/prefix]"
            )
        return value.rstrip("/")


class HealthConfig(_Model):
    """Passive health: a target failing ``failures`` times in a row rests for ``cooldown_s``."""

    failures: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=10.0, gt=0)


# An HTTP header name (RFC 9110 token).
_HTTP_TOKEN: Final = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_URI_PLACEHOLDER_RE = re.compile(r"(\$?)\{([^{}]*)\}")


def uri_placeholders(uri: str) -> tuple[list[str], list[str]]:
    """Path parameter names and stage variable names used in an integration uri."""
    params: list[str] = []
    variables: list[str] = []
    for dollar, inner in _URI_PLACEHOLDER_RE.findall(uri):
        if dollar:
            if inner.startswith("stageVariables."):
                variables.append(inner[len("stageVariables.") :])
        else:
            params.append(inner)
    return params, variables


class HttpProxySpec(_Model):
    type: Literal["http_proxy"]
    # With a scheme: the full upstream URL template. With targets: a path template (or None to
    # send the request path unchanged).
    uri: str | None = None
    targets: list[HttpTarget] = []
    balance: Literal["round_robin", "least_request", "weighted"] = "round_robin"
    timeout_ms: int = Field(default=29_000, ge=1)
    connect_timeout_ms: int = Field(default=5_000, ge=1)
    max_connections: int = Field(default=100, ge=1)
    retries: int = Field(default=1, ge=0, le=10)
    health: HealthConfig = HealthConfig()
    # `tls_verify: false` is the OpenAPI import's insecureSkipVerification: as `tls.verify: false`.
    tls_verify: bool = True
    # Static headers set on every answer of the integration (AWS's integration response
    # parameters with literal values), replacing the upstream's header of the same name.
    response_headers: dict[str, str] = {}

    @field_validator("response_headers")
    @classmethod
    def _check_response_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header in value.items():
            if not _HTTP_TOKEN.match(name):
                raise problem(
                    f"{name!r} is not a header name", "write e.g. Access-Control-Allow-Origin"
                )
            if "\r" in header or "\n" in header:
                raise problem(f"the value of {name} has a line break", "write it on one line")
        return value

    # For the https `uri`, or every target (each may override it).
    tls: UpstreamTlsConfig | None = None

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str | None) -> str | None:
        if value is None:
            return value
        for dollar, inner in _URI_PLACEHOLDER_RE.findall(value):
            if dollar:
                if not inner.startswith("stageVariables.") or not _VAR_NAME_RE.match(
                    inner[len("stageVariables.") :]
                ):
                    raise problem(
                        f"${{{inner}}} in uri is not a stage variable reference",
                        "write ${stageVariables.NAME}",
                    )
            elif inner.endswith("+"):
                raise problem(
                    f"{{{inner}}} in uri: a greedy parameter is written without '+'",
                    f"write {{{inner[:-1]}}}",
                )
            elif not _PARAM_NAME_RE.match(inner):
                raise problem(f"{{{inner}}} in uri is not a parameter", "write {name}")
        stripped = _URI_PLACEHOLDER_RE.sub("", value)
        if "{" in stripped or "}" in stripped:
            raise problem("uri has an unbalanced '{' or '}'", "write parameters as {name}")
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        uri = self.uri
        has_scheme = uri is not None and (
            re.match(r"^[a-z][a-z0-9+.-]*://", uri) is not None
            or uri.startswith("${stageVariables.")
        )
        if self.targets:
            if uri is not None and has_scheme:
                raise problem(
                    "uri has a scheme and host, but targets are given too",
                    "with targets, write uri as a path such as /items/{id} (or omit it)",
                )
            if uri is not None and not uri.startswith("/"):
                raise problem(
                    f"uri {uri!r} must be a path starting with '/' when targets are given",
                    f"write /{uri}",
                )
            if all(t.weight == 0 for t in self.targets):
                raise problem("every target has weight 0", "give at least one target a weight")
        else:
            if uri is None:
                raise problem(
                    "an http_proxy integration needs uri or targets",
                    "add uri: http://HOST:PORT/path, or targets: [{url: http://HOST:PORT}]",
                )
            if not has_scheme:
                raise problem(
                    f"uri {uri!r} has no scheme and host",
                    "write http://HOST:PORT/path (a bare path needs targets)",
                )
            if not uri.startswith(("http://", "https://", "${stageVariables.")):
                raise problem(
                    f"uri {uri!r} is not http or https", "write http://... or https://..."
                )
        return self


class LatencyConfig(_Model):
    """Added latency: ``fixed`` ms, or a log-normal distribution given by ``p50`` and ``p99``."""

    fixed: float | None = Field(default=None, ge=0)
    p50: float | None = Field(default=None, ge=0)
    p99: float | None = Field(default=None, ge=0)
    # The share of requests delayed, over time (see ScheduleStep); all of them when empty.
    schedule: list[ScheduleStep] = []

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_schedule(self.schedule, "latency_ms")
        if self.fixed is not None:
            if self.p50 is not None or self.p99 is not None:
                raise problem(
                    "latency_ms has both fixed and p50/p99",
                    "keep {fixed: MS} or {p50: MS, p99: MS}",
                )
        elif self.p50 is None or self.p99 is None:
            raise problem(
                "latency_ms needs fixed, or both p50 and p99",
                "write {fixed: 5} or {p50: 5, p99: 50}",
            )
        elif self.p99 < self.p50:
            raise problem(
                f"p99 ({self.p99}) is below p50 ({self.p50})", "make p99 at least as large as p50"
            )
        return self


class ScheduleStep(_Model):
    """From ``after_s`` seconds after the config was loaded (or the fault was set through the
    admin API) on, ``percent`` of requests get the fault."""

    after_s: float = Field(ge=0)
    percent: float = Field(ge=0, le=100)


def _check_schedule(steps: list[ScheduleStep], where: str) -> None:
    for earlier, later in itertools.pairwise(steps):
        if later.after_s <= earlier.after_s:
            raise problem(
                f"{where} schedule steps are not in order: after_s {later.after_s} follows "
                f"{earlier.after_s}",
                "list the steps by increasing after_s",
            )


class FaultDelayConfig(_Model):
    """Injected delay: ``fixed_ms``, or a log-normal distribution given by ``p50_ms`` and
    ``p99_ms``, for ``percent`` of requests (following ``schedule`` when given)."""

    fixed_ms: float | None = Field(default=None, ge=0)
    p50_ms: float | None = Field(default=None, ge=0)
    p99_ms: float | None = Field(default=None, ge=0)
    percent: float = Field(default=100.0, ge=0, le=100)
    schedule: list[ScheduleStep] = []

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.fixed_ms is not None:
            if self.p50_ms is not None or self.p99_ms is not None:
                raise problem(
                    "delay has both fixed_ms and p50_ms/p99_ms",
                    "keep {fixed_ms: MS} or {p50_ms: MS, p99_ms: MS}",
                )
        elif self.p50_ms is None or self.p99_ms is None:
            raise problem(
                "delay needs fixed_ms, or both p50_ms and p99_ms",
                "write {fixed_ms: 100, percent: 10} or {p50_ms: 20, p99_ms: 500}",
            )
        elif self.p99_ms < self.p50_ms:
            raise problem(
                f"p99_ms ({self.p99_ms}) is below p50_ms ({self.p50_ms})",
                "make p99_ms at least as large as p50_ms",
            )
        _check_schedule(self.schedule, "delay")
        return self


class FaultAbortConfig(_Model):
    """Requests answered with ``status`` (or their connection reset, ``reset: true``) instead
    of reaching the integration, for ``percent`` of requests (following ``schedule``)."""

    status: int | None = Field(default=None, ge=200, le=599)
    reset: bool = False
    percent: float = Field(default=100.0, ge=0, le=100)
    schedule: list[ScheduleStep] = []

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.status is None) == (not self.reset):
            raise problem(
                "abort needs exactly one of status and reset: true",
                "write {status: 503, percent: 5} or {reset: true, percent: 5}",
            )
        _check_schedule(self.schedule, "abort")
        return self


class FaultsConfig(_Model):
    """Fault injection before a route's integration (any integration type). ``headers: true``
    lets clients ask for faults per request (x-pygw-fault-* and x-envoy-fault-* headers), with
    header delays capped at ``max_header_delay_ms``."""

    delay: FaultDelayConfig | None = None
    abort: FaultAbortConfig | None = None
    headers: bool = False
    max_header_delay_ms: float = Field(default=60_000.0, ge=0)


class FaultConfig(_Model):
    """A fraction ``rate`` of requests fail: answered with ``status``, or their connection reset."""

    rate: float = Field(ge=0, le=1)
    status: int | None = Field(default=None, ge=100, le=599)
    reset: bool = False

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.status is None) == (not self.reset):
            raise problem(
                "faults need exactly one of status and reset: true",
                "write {rate: 0.01, status: 503} or {rate: 0.01, reset: true}",
            )
        return self


class MockSpec(_Model):
    type: Literal["mock"]
    status: int = Field(default=200, ge=100, le=599)
    headers: StrMap = {}
    body: Any = None
    latency_ms: LatencyConfig | None = None
    faults: FaultConfig | None = None

    @field_validator("body")
    @classmethod
    def _check_body(cls, value: Any) -> Any:
        if value is None or isinstance(value, str | dict | list):
            return value
        if isinstance(value, int | float | bool):
            # A bare number or boolean is valid JSON; keep it as such.
            return value
        raise problem(
            f"body of type {type(value).__name__} is not supported",
            "write a string, a mapping or a list",
        )

    def encoded_body(self) -> tuple[bytes, str | None]:
        """The body as bytes and its default content type (JSON for mappings and lists)."""
        if self.body is None:
            return b"", None
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return (
            json.dumps(self.body, separators=(",", ":"), ensure_ascii=False).encode(),
            "application/json",
        )


class FunctionSpec(_Model):
    type: Literal["function"]
    handler: str
    # Filled with the API style's default by ApiConfig: REST 1.0, HTTP 2.0.
    payload_format: PayloadFormatField = "2.0"
    timeout_ms: int = Field(default=29_000, ge=1)
    # Folders searched for the handler's module before the config's own (relative to the config
    # file): a SAM function's CodeUri, so two functions may each have their own `app` module.
    python_path: StrList = []
    # What `context` reports; the name defaults to the handler's dotted name.
    function_name: str | None = None
    memory_mb: int = Field(default=128, ge=1)
    # Set in the process environment when the config is loaded (before the module is imported):
    # in-process functions share one environment.
    environment: StrMap = {}

    _handler = field_validator("handler")(_check_handler)


_FUNCTION_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,140}$|^arn:aws[a-z-]*:lambda:[A-Za-z0-9:_$-]+$")


class LambdaSpec(_Model):
    """A function reached through the Lambda Invoke API at `endpoint` (the Runtime Interface
    Emulator, LocalStack, moto, or a server of your own speaking the same API)."""

    type: Literal["lambda"]
    function_name: str
    endpoint: str
    qualifier: str | None = None
    # Filled with the API style's default by ApiConfig: REST 1.0, HTTP 2.0.
    payload_format: PayloadFormatField = "2.0"
    timeout_ms: int = Field(default=29_000, ge=1)
    max_connections: int = Field(default=64, ge=1)

    @field_validator("function_name")
    @classmethod
    def _check_function_name(cls, value: str) -> str:
        if not _FUNCTION_NAME_RE.match(value):
            raise problem(
                f"function_name {value!r} is not a Lambda function name",
                "use letters, digits, '-' and '_' (up to 140), or the function's ARN",
            )
        return value

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+/?$", value):
            raise problem(
                f"endpoint {value!r} is not an http(s) base URL",
                "write the Invoke API's address, e.g. http://127.0.0.1:9001 (no path)",
            )
        return value.rstrip("/")


IntegrationConfig = Annotated[
    HttpProxySpec | MockSpec | FunctionSpec | LambdaSpec,
    Field(discriminator="type"),
]


# --------------------------------------------------------------------------------------------------
# Routes


class RouteCacheConfig(_Model):
    # None: the API cache's ttl_s (300 s by default); 0 disables caching for this route.
    ttl_s: int | None = Field(default=None, ge=0, le=3600)
    key_params: StrList = []

    _params = field_validator("key_params")(_param_refs)


class ValidateConfig(_Model):
    params: StrList = []
    body: str | None = None  # the name of a model in the API's `models`

    _params = field_validator("params")(_param_refs)


class TemplatesConfig(_Model):
    """VTL mapping templates by content type."""

    request: StrMap = {}
    response: StrMap = {}
    passthrough: Literal["when_no_match", "when_no_templates", "never"] = "when_no_match"


_MAPPING_REQUEST_RE = re.compile(
    r"^(append|overwrite|remove):(header|querystring)\.[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
    r"|^overwrite:path$"
)
_MAPPING_RESPONSE_RE = re.compile(
    r"^(append|overwrite|remove):header\.[A-Za-z0-9!#$%&'*+.^_`|~-]+$|^overwrite:statuscode$"
)


class MappingConfig(_Model):
    """HTTP-style parameter mapping: ``ACTION:LOCATION.NAME`` → value (may use ``$context.x`` etc.).

    ``response`` is keyed by upstream status code.
    """

    request: StrMap = {}
    response: Annotated[dict[StrScalar, StrMap], BeforeValidator(_str_keys)] = {}

    @field_validator("request")
    @classmethod
    def _check_request(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _MAPPING_REQUEST_RE.match(key):
                raise problem(
                    f"{key!r} is not a request mapping key",
                    "write append|overwrite|remove:header.NAME, ...:querystring.NAME or "
                    "overwrite:path",
                )
        return value

    @field_validator("response")
    @classmethod
    def _check_response(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for status, mapping in value.items():
            if not (status.isdigit() and 100 <= int(status) <= 599):
                raise problem(
                    f"response mapping key {status!r} is not a status code",
                    "key response mappings by the upstream status, e.g. '500'",
                )
            for key in mapping:
                if not _MAPPING_RESPONSE_RE.match(key):
                    raise problem(
                        f"{key!r} is not a response mapping key",
                        "write append|overwrite|remove:header.NAME or overwrite:statuscode",
                    )
        return value


class RouteConfig(_Model):
    integration: IntegrationConfig
    authorizer: str | None = None
    # OAuth scopes the token needs one of (jwt and cognito_user_pools authorizers); AWS calls
    # them the method's authorization scopes.
    scopes: StrList = Field(default=[], alias="authorization_scopes")
    throttle: ThrottleConfig | None = None
    cache: RouteCacheConfig | None = None  # REST-style
    api_key_required: bool = False  # REST-style
    validation: ValidateConfig | None = Field(default=None, alias="validate")  # REST-style
    templates: TemplatesConfig | None = None  # REST-style
    mapping: MappingConfig | None = None  # HTTP-style
    route_response: bool = False  # WebSocket
    # aws_iam: the request must be SigV4-signed with a key of the top-level iam credentials.
    authorization: Literal["none", "aws_iam"] = "none"
    faults: FaultsConfig | None = None  # REST- and HTTP-style

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# Keys allowed only in one style of API: field name -> (YAML key, styles allowed).
_API_STYLE_KEYS: dict[str, tuple[str, tuple[ApiStyle, ...]]] = {
    "api_keys": ("api_keys", ("rest",)),
    "usage_plans": ("usage_plans", ("rest",)),
    "api_keys_need_usage_plan": ("api_keys_need_usage_plan", ("rest",)),
    "cache": ("cache", ("rest",)),
    "minimum_compression_size": ("minimum_compression_size", ("rest",)),
    "route_selection": ("route_selection", ("websocket",)),
    "websocket": ("websocket", ("websocket",)),
    "connections_api": ("connections_api", ("websocket",)),
    "faults": ("faults", ("rest", "http")),
}
_ROUTE_STYLE_KEYS: dict[str, tuple[str, tuple[ApiStyle, ...]]] = {
    "cache": ("cache", ("rest",)),
    "api_key_required": ("api_key_required", ("rest",)),
    "validation": ("validate", ("rest",)),
    "templates": ("templates", ("rest",)),
    "mapping": ("mapping", ("http",)),
    "route_response": ("route_response", ("websocket",)),
    "authorization": ("authorization", ("rest", "http")),
    "faults": ("faults", ("rest", "http")),
}
# Why a key is refused on other styles, where the bare rule would puzzle.
_STYLE_KEY_NOTES = {
    "minimum_compression_size": ", and only REST-style APIs compress (AWS's HTTP APIs do not)",
}
_STYLE_NAMES = {"rest": "REST-style", "http": "HTTP-style", "websocket": "WebSocket"}


def _style_default_formats(data: Any) -> Any:
    """Give function integrations and custom authorizers the payload format of the API's style."""
    if not isinstance(data, dict):
        return data
    style = data.get("type", "http")
    fmt = "1.0" if style == "rest" else "2.0"
    out = dict(data)
    routes = data.get("routes")
    if isinstance(routes, dict):
        new_routes = {}
        for key, route in routes.items():
            integration = route.get("integration") if isinstance(route, dict) else None
            if (
                isinstance(integration, dict)
                and integration.get("type") in ("function", "lambda")
                and "payload_format" not in integration
            ):
                route = {**route, "integration": {**integration, "payload_format": fmt}}
            new_routes[key] = route
        out["routes"] = new_routes
    authorizers = data.get("authorizers")
    if isinstance(authorizers, dict):
        out["authorizers"] = {
            name: (
                {**auth, "payload_format": fmt}
                if isinstance(auth, dict)
                and auth.get("type") == "custom"
                and "payload_format" not in auth
                else auth
            )
            for name, auth in authorizers.items()
        }
    return out


class ApiConfig(_Model):
    name: str
    type: ApiStyle = "http"
    hosts: StrList = []
    base_path: str | None = None
    stages: list[StageConfig] = [StageConfig(name=DEFAULT_STAGE)]
    cors: CorsConfig | None = None
    authorizers: dict[str, AuthorizerConfig] = {}
    api_keys: list[ApiKeyConfig] = []  # REST-style
    usage_plans: list[UsagePlanConfig] = []  # REST-style
    # AWS refuses a key that no usage plan of the API's stage lists; false accepts it.
    api_keys_need_usage_plan: bool = True  # REST-style
    cache: ApiCacheConfig | None = None  # REST-style
    # Bytes from which answers are compressed (0: any size); None: no compression (REST-style).
    minimum_compression_size: int | None = Field(default=None, ge=0, le=MAX_COMPRESSION_SIZE)
    models: dict[str, dict[str, Any]] = {}
    resource_policy: ResourcePolicyConfig | None = None
    binary_media_types: StrList = []
    route_selection: str = "$request.body.action"  # WebSocket
    websocket: WebSocketSettings = WebSocketSettings()  # WebSocket
    connections_api: ConnectionsApiConfig | None = None  # WebSocket
    routes: dict[Annotated[RouteKeyStr, BeforeValidator(_check_route_key_syntax)], RouteConfig] = {}
    # Faults for every route whose stage and route set none (REST- and HTTP-style).
    faults: FaultsConfig | None = None

    _formats = model_validator(mode="before")(_style_default_formats)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise problem(f"API name {value!r} is not valid", "use letters, digits, '.', '-', '_'")
        return value

    @field_validator("hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        out = []
        for host in value:
            lowered = host.lower()
            name, sep, port = lowered.rpartition(":")
            if sep and port.isdigit():
                raise problem(
                    f"host {host!r} has a port", f"write {name!r}: hosts match without the port"
                )
            if not _HOST_RE.match(lowered):
                raise problem(
                    f"{host!r} is not a host name",
                    "write a name such as api.example.com, or *.example.com for any subdomain",
                )
            out.append(lowered)
        return out

    @field_validator("base_path")
    @classmethod
    def _check_base_path(cls, value: str | None) -> str | None:
        if value is None or value == "/":
            return None
        if not value.startswith("/"):
            raise problem(f"base_path {value!r} does not start with '/'", f"write /{value}")
        if value.endswith("/"):
            raise problem(f"base_path {value!r} ends with '/'", f"write {value.rstrip('/')}")
        _check_segments(value, value[1:], "use letters, digits and -._~ (no parameters)")
        return value

    @field_validator("stages")
    @classmethod
    def _check_stages(cls, value: list[StageConfig]) -> list[StageConfig]:
        if not value:
            raise problem("stages is empty", "omit stages to serve on $default, or list one stage")
        return value

    @field_validator("models")
    @classmethod
    def _check_models(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, schema in value.items():
            kind = schema.get("type")
            if kind is not None and not isinstance(kind, str | list):
                raise problem(
                    f"model {name!r} has an invalid 'type'", "write a JSON Schema type, e.g. object"
                )
        return value

    @field_validator("binary_media_types")
    @classmethod
    def _check_media_types(cls, value: list[str]) -> list[str]:
        for media in value:
            if "/" not in media:
                raise problem(
                    f"{media!r} is not a media type", "write type/subtype, e.g. image/png"
                )
        return value

    @field_validator("route_selection")
    @classmethod
    def _check_route_selection(cls, value: str) -> str:
        if not re.match(r"^\$request\.body\.[A-Za-z0-9_.]+$", value):
            raise problem(
                f"route_selection {value!r} is not supported", "write $request.body.FIELD"
            )
        return value

    def stage(self, name: str) -> StageConfig | None:
        return next((s for s in self.stages if s.name == name), None)

    @model_validator(mode="after")
    def _check(self) -> Self:
        found = _Problems()
        style = self.type
        style_name = _STYLE_NAMES[style]

        def refuse(loc: tuple[str | int, ...], key: str, allowed: tuple[ApiStyle, ...]) -> None:
            others = " or ".join(_STYLE_NAMES[s] for s in allowed)
            note = _STYLE_KEY_NOTES.get(key, "")
            found.add(
                loc,
                f"{key} is {others} only; this API is {style_name} (type: {style}){note}",
                f"remove {key}, or move it to an API of type {' or '.join(allowed)}",
            )

        for field, (key, allowed) in _API_STYLE_KEYS.items():
            if field in self.model_fields_set and style not in allowed:
                refuse((key,), key, allowed)

        seen_stages: set[str] = set()
        for i, stage in enumerate(self.stages):
            if stage.faults is not None and style == "websocket":
                refuse(("stages", i, "faults"), "faults", ("rest", "http"))
            if stage.name in seen_stages:
                found.add(
                    ("stages", i, "name"),
                    f"stage {stage.name!r} is defined twice",
                    "give each stage its own name",
                )
            seen_stages.add(stage.name)

        # API keys and usage plans.
        key_ids: set[str] = set()
        key_values: set[str] = set()
        for i, api_key in enumerate(self.api_keys):
            if api_key.id in key_ids:
                found.add(
                    ("api_keys", i, "id"),
                    f"API key id {api_key.id!r} is used twice",
                    "give each key its own id",
                )
            key_ids.add(api_key.id)
            secret = api_key.digest
            if secret in key_values:
                found.add(
                    ("api_keys", i),
                    f"API key {api_key.id!r} has the same value as another key",
                    "give each key its own value",
                )
            key_values.add(secret)
        plan_names: set[str] = set()
        key_plan: dict[str, str] = {}
        for i, plan in enumerate(self.usage_plans):
            if plan.name in plan_names:
                found.add(
                    ("usage_plans", i, "name"),
                    f"usage plan {plan.name!r} is defined twice",
                    "give each plan its own name",
                )
            plan_names.add(plan.name)
            for j, key_id in enumerate(plan.keys):
                if key_id not in key_ids:
                    found.add(
                        ("usage_plans", i, "keys", j),
                        f"usage plan {plan.name!r} names unknown API key {key_id!r}",
                        _reference_fix(key_id, sorted(key_ids), "api_keys"),
                    )
                elif key_id in key_plan and key_plan[key_id] != plan.name:
                    found.add(
                        ("usage_plans", i, "keys", j),
                        f"API key {key_id!r} is already in usage plan {key_plan[key_id]!r}",
                        "put each key in one usage plan",
                    )
                key_plan.setdefault(key_id, plan.name)

        for name, auth in self.authorizers.items():
            if (
                isinstance(auth, CustomAuthorizerConfig)
                and style == "rest"
                and auth.payload_format != "1.0"
            ):
                found.add(
                    ("authorizers", name, "payload_format"),
                    "REST-style APIs call custom authorizers with payload format 1.0",
                    "remove payload_format",
                )

        # Routes.
        shapes: dict[str, str] = {}
        for key, route in self.routes.items():
            loc: tuple[str | int, ...] = ("routes", key)
            try:
                parsed = parse_route_key(key, style)
            except RouteKeyError as err:
                found.add(loc, err.message, err.fix, key)
                continue
            if parsed.shape in shapes:
                other = shapes[parsed.shape]
                found.add(
                    loc,
                    f"route {key!r} can never be told apart from route {other!r}",
                    "remove one of them, or make their paths differ by more than parameter names",
                )
            shapes.setdefault(parsed.shape, key)

            for field, (yaml_key, allowed) in _ROUTE_STYLE_KEYS.items():
                if field in route.model_fields_set and style not in allowed:
                    refuse((*loc, yaml_key), yaml_key, allowed)

            if route.authorization == "aws_iam" and route.authorizer is not None:
                found.add(
                    (*loc, "authorization"),
                    "a route is authorized either by SigV4 (aws_iam) or by an authorizer",
                    "remove authorizer, or remove authorization: aws_iam",
                )
            if route.authorizer is not None and route.authorizer not in self.authorizers:
                found.add(
                    (*loc, "authorizer"),
                    f"unknown authorizer {route.authorizer!r}",
                    _reference_fix(route.authorizer, sorted(self.authorizers), "authorizers"),
                )
            if route.scopes:
                route_auth = self.authorizers.get(route.authorizer or "")
                if route.authorizer is None:
                    found.add(
                        (*loc, "scopes"),
                        "scopes need a jwt or cognito_user_pools authorizer on the route",
                        "add authorizer: NAME, or remove scopes",
                    )
                elif route_auth is not None and isinstance(route_auth, CustomAuthorizerConfig):
                    found.add(
                        (*loc, "scopes"),
                        f"scopes apply to jwt authorizers; {route.authorizer!r} is custom",
                        "remove scopes (a custom authorizer decides access itself)",
                    )
            route_auth = self.authorizers.get(route.authorizer or "")
            if isinstance(route_auth, CognitoAuthorizerConfig) and style != "rest":
                found.add(
                    (*loc, "authorizer"),
                    f"{route.authorizer!r} is a cognito_user_pools authorizer, which AWS offers "
                    "to REST APIs only",
                    "use type: jwt with issuer https://cognito-idp.REGION.amazonaws.com/POOL_ID "
                    "(what HTTP APIs use for Cognito), or make the API type: rest",
                )
            if route.api_key_required and style == "rest" and not self.api_keys:
                found.add(
                    (*loc, "api_key_required"),
                    "api_key_required is true but the API has no api_keys",
                    "add api_keys to the API, or remove api_key_required",
                )
            body_model = route.validation.body if route.validation is not None else None
            if body_model is not None and body_model not in self.models:
                found.add(
                    (*loc, "validate", "body"),
                    f"unknown model {body_model!r}",
                    _reference_fix(body_model, sorted(self.models), "models"),
                )
            if (
                route.cache is not None
                and style == "rest"
                and parsed.method
                not in (
                    "GET",
                    "ANY",
                    None,
                )
            ):
                found.add(
                    (*loc, "cache"),
                    f"only GET responses are cached; this route is {parsed.method}",
                    "remove cache from this route",
                )

            integration = route.integration
            if isinstance(integration, HttpProxySpec) and integration.uri:
                params, _ = uri_placeholders(integration.uri)
                for param in params:
                    if param not in parsed.params:
                        known = ", ".join("{" + p + "}" for p in parsed.params) or "none"
                        found.add(
                            (*loc, "integration", "uri"),
                            f"uri uses {{{param}}}, which route {key!r} does not capture",
                            f"use a parameter of the route key (here: {known})",
                        )
            if (
                isinstance(integration, FunctionSpec)
                and style == "rest"
                and integration.payload_format != "1.0"
            ):
                found.add(
                    (*loc, "integration", "payload_format"),
                    "REST-style APIs send payload format 1.0",
                    "remove payload_format, or use an API of type http for 2.0",
                )

        found.raise_if_any("ApiConfig")
        return self


class MutualTlsConfig(_Model):
    # PEM file of the CAs a client certificate must chain to (relative to the config's folder).
    truststore: str = Field(min_length=1)
    # Forward the client certificate (URL-encoded PEM) to http_proxy upstreams in this header;
    # off unless named.
    forward_header: str | None = None

    @field_validator("forward_header")
    @classmethod
    def _check_header(cls, value: str | None) -> str | None:
        if value is not None and not _HTTP_TOKEN.match(value):
            raise problem(f"{value!r} is not a header name", "write e.g. X-Client-Cert")
        return value


class DomainMappingConfig(_Model):
    """One API mapping of a custom domain: requests under `base_path` go to `api`'s `stage`,
    with the base path taken off the path."""

    # "" (the domain's root) or segments such as "shop" or "shop/v2"; a leading '/' is accepted.
    base_path: str = ""
    api: str
    stage: str = DEFAULT_STAGE

    @field_validator("base_path", mode="before")
    @classmethod
    def _check_base_path(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        path = value[1:] if value.startswith("/") else value
        if not path:
            return ""
        plain = path.strip("/")
        if path.endswith("/"):
            raise problem(f"base_path {value!r} ends with '/'", f"write {plain!r}")
        _check_segments(
            value, path, "use path segments of letters, digits and -._~ (no parameters), e.g. shop"
        )
        return path

    @property
    def prefix(self) -> str:
        """The mount prefix in the router: "" for the root, else "/" and the base path."""
        return f"/{self.base_path}" if self.base_path else ""


class DomainConfig(_Model):
    """A custom domain name (exact, or `*.` and one label) with its API mappings and, on the TLS
    listener, optional mutual TLS."""

    name: str
    mutual_tls: MutualTlsConfig | None = None
    mappings: list[DomainMappingConfig] = []

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        lowered = value.lower().rstrip(".")
        if not _HOST_RE.match(lowered):
            raise problem(
                f"{value!r} is not a domain name",
                "write a name such as api.example.com or *.example.com",
            )
        return lowered


class GatewayConfig(_Model):
    server: ServerConfig = ServerConfig()
    admin: AdminConfig = AdminConfig()
    state: StateConfig = StateConfig()
    # The account-wide limit every route shares; null turns it off (a gateway whose only
    # limits are per stage, route or usage plan, or none at all).
    throttle: ThrottleConfig | None = ThrottleConfig(rate=10_000, burst=5_000)
    access_log: AccessLogConfig | None = AccessLogConfig()
    telemetry: TelemetryConfig | None = None
    python_path: StrList = []
    iam: IamConfig | None = None
    domains: list[DomainConfig] = []
    apis: list[ApiConfig] = []

    def api(self, name: str) -> ApiConfig | None:
        return next((a for a in self.apis if a.name == name), None)

    @model_validator(mode="after")
    def _check(self) -> Self:
        found = _Problems()
        names: set[str] = set()
        # (host or "*", base path, stage) -> API name: two APIs may not serve the same prefix.
        mounts: dict[tuple[str, str, str], str] = {}
        for i, api in enumerate(self.apis):
            if api.name in names:
                found.add(
                    ("apis", i, "name"),
                    f"API name {api.name!r} is used twice",
                    "give each API its own name",
                )
            names.add(api.name)
            if self.iam is None:
                self._check_iam_needed(found, i, api)
            for host in api.hosts or ["*"]:
                for stage in api.stages:
                    mount = (host, api.base_path or "", stage.name)
                    other = mounts.get(mount)
                    if other is not None and other != api.name:
                        where = f"host {host}" if host != "*" else "any host"
                        found.add(
                            ("apis", i),
                            f"APIs {other!r} and {api.name!r} both serve stage {stage.name!r} "
                            f"under base path {api.base_path or '(none)'} on {where}",
                            "give one of them a different base_path, stage or hosts",
                        )
                    mounts.setdefault(mount, api.name)
        seen_domains: set[str] = set()
        for i, domain in enumerate(self.domains):
            if domain.name in seen_domains:
                found.add(
                    ("domains", i, "name"),
                    f"domain {domain.name!r} is listed twice",
                    "list each domain once",
                )
            seen_domains.add(domain.name)
            self._check_mappings(found, i, domain)
            if domain.mutual_tls is not None and self.server.tls is None:
                found.add(
                    ("domains", i, "mutual_tls"),
                    "mutual_tls needs the server to speak TLS",
                    "add server.tls with certificates, or remove mutual_tls",
                )
        redirect = self.server.redirect_http
        if (
            redirect is not None
            and parse_listen(redirect).port != 0
            and parse_listen(redirect) in (self.server.address, self.admin.address)
        ):
            found.add(
                ("server", "redirect_http"),
                f"redirect_http uses an address already listened on ({redirect})",
                "use another port, e.g. 0.0.0.0:80",
            )
        if (
            self.server.address.unix_path is None
            and self.server.address == self.admin.address
            and self.server.address.port != 0
        ):
            found.add(
                ("admin", "listen"),
                f"admin listens on the same address as the server ({self.admin.listen})",
                "use another port, e.g. 127.0.0.1:9901",
            )
        found.raise_if_any("GatewayConfig")
        return self

    @staticmethod
    def _check_iam_needed(found: _Problems, index: int, api: ApiConfig) -> None:
        fix = "add iam: {region: us-east-1, credentials_file: iam-credentials.yaml}"
        for key, route in api.routes.items():
            if route.authorization == "aws_iam":
                found.add(
                    ("apis", index, "routes", key, "authorization"),
                    "aws_iam authorization needs the top-level iam section",
                    fix,
                )
        connections = api.connections_api
        if connections is not None and connections.authorization == "aws_iam":
            found.add(
                ("apis", index, "connections_api", "authorization"),
                "aws_iam authorization needs the top-level iam section",
                fix + ", or set authorization: none",
            )
        policy = api.resource_policy
        if policy is not None and policy.statements:
            found.add(
                ("apis", index, "resource_policy", "statements"),
                "policy statements apply to SigV4-signed callers, which need the iam section",
                fix,
            )

    def _check_mappings(self, found: _Problems, index: int, domain: DomainConfig) -> None:
        by_path: dict[str, int] = {}
        api_names = [a.name for a in self.apis]
        for j, mapping in enumerate(domain.mappings):
            loc: tuple[str | int, ...] = ("domains", index, "mappings", j)
            shown = mapping.base_path or "(none)"
            earlier = by_path.get(mapping.base_path)
            if earlier is not None:
                found.add(
                    (*loc, "base_path"),
                    f"base path {shown} is mapped twice on {domain.name} "
                    f"(also mappings[{earlier}])",
                    "give each mapping of a domain its own base_path",
                )
            else:
                by_path[mapping.base_path] = j
            api = self.api(mapping.api)
            if api is None:
                found.add(
                    (*loc, "api"),
                    f"API {mapping.api!r} does not exist",
                    _reference_fix(mapping.api, api_names, "apis"),
                )
                continue
            if api.stage(mapping.stage) is None:
                found.add(
                    (*loc, "stage"),
                    f"API {api.name!r} has no stage {mapping.stage!r}",
                    _reference_fix(
                        mapping.stage,
                        [s.name for s in api.stages],
                        f"the stages of API {api.name!r}",
                    ),
                )
