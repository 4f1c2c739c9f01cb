"""SAM import: an AWS SAM template (CloudFormation with the Serverless transform) → pygw config.

`import_sam` reads the template (`pygw.config.cfn`: short-form tags, JSON, intrinsics against
Parameters, Mappings and Conditions), applies `Globals`, and maps what a gateway serves:

- `AWS::Serverless::Function` with `Api` events (REST-style) and `HttpApi` events (HTTP-style),
  onto the implicit `ServerlessRestApi` (stage `Prod`, as SAM deploys it) and `ServerlessHttpApi`
  (`$default`), or onto the `AWS::Serverless::Api` / `AWS::Serverless::HttpApi` named by
  `RestApiId` / `ApiId`, with their stage, variables, CORS, authorizers, API keys and usage plan,
  method-settings throttling and caching, binary media types, and a `DefinitionBody` or local
  `DefinitionUri` imported by the OpenAPI importer.
- A Python function (`Runtime: python3.x`, `CodeUri` + `Handler`) runs in-process: the `function`
  integration with the CodeUri folder searched first (its `requirements.txt` is not installed).
  Any other runtime, or a container image, is a `lambda` integration invoking the function by its
  logical id at the Lambda Invoke API given by `lambda_endpoint` (or a per-function endpoint).
- `Environment.Variables` (overridable from a `sam local --env-vars` file), `Timeout` and
  `MemorySize` become the function's environment, timeout and `context`.
- Plain `AWS::ApiGateway::*` / `AWS::ApiGatewayV2::*` resources and `AWS::Lambda::Function`
  (what CDK synthesises) through `pygw.config.cfn_apigw`.

Everything pygw does not do is a warning naming its path in the template (`Resources/Fn/...`);
`ImportResult.errors` is non-empty only when no route can answer as the template asks.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from pygw.config.cfn import NO_VALUE, Resolver, read_template
from pygw.config.cfn_apigw import PlainApis, refusing_authorizer, throttle_spec
from pygw.config.load import ConfigError, ConfigIssue, LoadedConfig, parse_config
from pygw.config.openapi import (
    API_KEY_ENV,
    REFUSING_HANDLER,
    ImportResult,
    import_openapi_document,
    lambda_name,
    read_definition,
)

__all__ = ["SamOptions", "import_sam", "load_sam_config", "parse_assignments", "read_env_vars"]

log = logging.getLogger("pygw.sam")

IMPLICIT_REST: Final = "ServerlessRestApi"
IMPLICIT_HTTP: Final = "ServerlessHttpApi"
# The integration timeout API Gateway allows by default: a longer function Timeout still ends
# at the gateway here, as on AWS.
_MAX_TIMEOUT_MS: Final = {"rest": 29_000, "http": 30_000, "websocket": 29_000}
_MARKER: Final = "pygw_sam_function_"
_PY_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLAIN_API_TYPES: Final = frozenset(
    {
        "AWS::ApiGatewayV2::Api",
        "AWS::ApiGatewayV2::Route",
        "AWS::ApiGatewayV2::Integration",
        "AWS::ApiGatewayV2::Authorizer",
        "AWS::ApiGatewayV2::Stage",
        "AWS::ApiGatewayV2::Deployment",
        "AWS::ApiGateway::RestApi",
        "AWS::ApiGateway::Resource",
        "AWS::ApiGateway::Method",
        "AWS::ApiGateway::Authorizer",
        "AWS::ApiGateway::Stage",
        "AWS::ApiGateway::Deployment",
        "AWS::ApiGateway::UsagePlan",
        "AWS::ApiGateway::UsagePlanKey",
        "AWS::ApiGateway::ApiKey",
        "AWS::ApiGateway::Account",
    }
)
# Resources that configure AWS itself (permissions, logs, CDK's bookkeeping): nothing to serve
# and nothing a request would notice.
_INFO_TYPES: Final = (
    "AWS::IAM::",
    "AWS::Lambda::Permission",
    "AWS::CDK::Metadata",
    "AWS::Logs::",
)

# Properties that configure AWS itself (permissions, tracing, deployment) and change nothing in
# what a request gets back.
_FUNCTION_INFO: Final = frozenset(
    {
        "Description",
        "FunctionName",
        "Role",
        "Policies",
        "Tags",
        "Tracing",
        "Architectures",
        "AutoPublishAlias",
        "DeploymentPreference",
        "PermissionsBoundary",
        "ReservedConcurrentExecutions",
        "ProvisionedConcurrencyConfig",
        "VpcConfig",
        "KmsKeyArn",
        "LoggingConfig",
        "RuntimeManagementConfig",
        "EphemeralStorage",
        "DeadLetterQueue",
        "EventInvokeConfig",
        "PropagateTags",
        "AssumeRolePolicyDocument",
        "Metadata",
    }
)
_FUNCTION_HANDLED: Final = frozenset(
    {
        "Runtime",
        "Handler",
        "CodeUri",
        "PackageType",
        "ImageUri",
        "Timeout",
        "MemorySize",
        "Environment",
        "Events",
    }
)
_API_INFO: Final = frozenset(
    {
        "Name",
        "Description",
        "EndpointConfiguration",
        "TracingEnabled",
        "OpenApiVersion",
        "Tags",
        "AccessLogSetting",
        "AccessLogSettings",
        "FailOnWarnings",
        "PropagateTags",
        "DisableExecuteApiEndpoint",
        "MinimumCompressionSize",
        "Mode",
        "AlwaysDeploy",
        "MergeDefinitions",
        "CanarySetting",
    }
)


@dataclass
class SamOptions:
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    # `sam local --env-vars` shape: {"FunctionId": {"VAR": "v"}, "Parameters": {"VAR": "v"}}.
    env_vars: dict[str, Any] = field(default_factory=dict)
    lambda_endpoint: str | None = None
    # Per-function endpoints, by logical id.
    function_endpoints: dict[str, str] = field(default_factory=dict)
    # Folder relative paths in the output are written against (None: absolute paths).
    relative_to: Path | None = None


def parse_assignments(items: list[str] | None, option: str) -> dict[str, str]:
    """`KEY=VALUE` strings (also several in one item, space-separated, as sam takes them)."""
    out: dict[str, str] = {}
    for item in items or []:
        for part in item.split():
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise ValueError(f"{option} {part!r} is not KEY=VALUE")
            # sam's own spelling: ParameterKey=K,ParameterValue=V
            if key == "ParameterKey" and ",ParameterValue=" in value:
                key, _, value = value.partition(",ParameterValue=")
            out[key] = value
    return out


def read_env_vars(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"--env-vars {path}: cannot read it as JSON: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(
            f'--env-vars {path}: write {{"FunctionId": {{"NAME": "value"}}, '
            f'"Parameters": {{"NAME": "value"}}}}'
        )
    return data


@dataclass
class _Function:
    logical_id: str
    where: str
    integration: dict[str, Any] | None  # None: cannot run (a 501 stand-in is served)
    python: bool
    handler: str | None  # module:callable for Python
    python_path: list[str]
    reason: str = ""


@dataclass
class _Api:
    logical_id: str
    style: str  # rest | http
    where: str
    props: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    routes: dict[str, Any] = field(default_factory=dict)
    default_authorizer: str | None = None
    api_key_required: bool = False
    method_settings: list[dict[str, Any]] = field(default_factory=list)
    caching: bool = False


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _unquote(value: Any) -> str:
    text = str(value).strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    return text


def _merge(base: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """Globals under a resource's own properties: maps merge, everything else is replaced."""
    out = dict(base)
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class _SamImporter:
    def __init__(self, template: dict[str, Any], source: Path, options: SamOptions) -> None:
        self.template = template
        self.source = source
        self.folder = source.resolve().parent
        self.options = options
        self.warnings: list[str] = []
        self.errors: list[str] = []
        self.resolver = Resolver(
            template, options.parameter_overrides, _stack_name(source), self.warn
        )
        self.functions: dict[str, _Function] = {}
        self.apis: dict[str, _Api] = {}
        self.needs_api_keys = False
        self.api_key_values: list[str] = []
        self.env_seen: dict[str, tuple[str, str]] = {}

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{where}: {message}")

    # ------------------------------------------------------------------------------------ run

    def run(self) -> dict[str, Any]:
        resources = _mapping(self.template.get("Resources"))
        if not resources:
            self.errors.append("the template has no Resources: there is nothing to serve")
        globals_ = _mapping(self.template.get("Globals"))
        for section in globals_:
            if section not in ("Function", "Api", "HttpApi", "SimpleTable", "LayerVersion"):
                self.warn(f"Globals/{section}", "is not a Globals section pygw knows; ignored")
        live: dict[str, tuple[str, dict[str, Any]]] = {}
        for logical_id, spec in resources.items():
            spec = _mapping(spec)
            kind = str(spec.get("Type", ""))
            where = f"Resources/{logical_id}"
            condition = spec.get("Condition")
            if condition is not None and not self.resolver.condition(
                condition, f"{where}/Condition"
            ):
                continue
            kind_globals = {
                "AWS::Serverless::Function": "Function",
                "AWS::Serverless::Api": "Api",
                "AWS::Serverless::HttpApi": "HttpApi",
            }.get(kind)
            props = _mapping(spec.get("Properties"))
            if kind_globals is not None:
                props = _merge(_mapping(globals_.get(kind_globals)), props)
            live[logical_id] = (kind, props)
        for logical_id, (kind, props) in live.items():
            where = f"Resources/{logical_id}"
            if kind == "AWS::Serverless::Api":
                self.explicit_api(logical_id, "rest", props, where)
            elif kind == "AWS::Serverless::HttpApi":
                self.explicit_api(logical_id, "http", props, where)
        for logical_id, (kind, props) in live.items():
            if kind == "AWS::Serverless::Function":
                self.function(logical_id, props, f"Resources/{logical_id}")
            elif kind == "AWS::Lambda::Function":
                spec = _mapping(resources.get(logical_id))
                self.function(logical_id, _lambda_function(spec, props), f"Resources/{logical_id}")
        for logical_id, (kind, props) in live.items():
            where = f"Resources/{logical_id}"
            if kind == "AWS::Serverless::Function":
                self.events(logical_id, props, where)
            elif kind == "AWS::ApiGateway::ApiKey":
                value = self.resolver.resolve(props.get("Value"), f"{where}/Properties/Value")
                if isinstance(value, str) and value:
                    self.api_key_values.append(value)
            elif (
                kind in ("AWS::Serverless::Api", "AWS::Serverless::HttpApi")
                or kind in _PLAIN_API_TYPES
                or kind == "AWS::Lambda::Function"
            ):
                continue
            elif kind.startswith(("AWS::ApiGateway::", "AWS::ApiGatewayV2::")):
                self.warn(where, f"{kind} is not supported; pygw ignores it")
            elif kind.startswith(_INFO_TYPES):
                continue
            else:
                self.warn(where, f"{kind or 'a resource without Type'} is not served by pygw")
        for key, _ in self.options.function_endpoints.items():
            if key not in self.functions:
                self.warn(f"--function-endpoint {key}", "names no function of the template")
        finished = [self.finish_api(api) for api in self.apis.values()]
        apis = [api for api in finished if api is not None]
        apis.extend(self.plain_apis(live))
        self.separate_mounts(apis)
        serving = sum(
            1
            for api in apis
            for route in api["routes"].values()
            if route["integration"].get("status") != 501 or route["integration"]["type"] != "mock"
        )
        if not apis and not self.errors:
            self.errors.append(
                "the template has no Api or HttpApi events: there is nothing to serve"
            )
        elif apis and serving == 0:
            self.errors.append(
                "no route can answer as the template asks (each function is a 501 stand-in); "
                "see the warnings (--lambda-endpoint for functions not written in Python)"
            )
        config: dict[str, Any] = {"apis": apis}
        return config

    def plain_apis(self, live: dict[str, tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """`AWS::ApiGateway::*` and `AWS::ApiGatewayV2::*` resources (CDK's output)."""
        plain = PlainApis(live, self.resolver.resolve, self.warn, _FunctionLookup(self))
        out = plain.v2_apis() + plain.rest_apis()
        for logical_id, style, body, stage, where in plain.bodies:
            if style == "websocket":
                self.warn(f"{where}/Body", "a WebSocket API's Body is not supported; not served")
                continue
            api = _Api(logical_id, style, f"Resources/{logical_id}", {})
            imported = self.definition(api, body, None, stage, where)
            if imported is not None:
                imported["name"] = logical_id
                imported["stages"] = imported.get("stages") or [{"name": stage}]
                out.append(imported)
        if plain.needs_api_keys:
            self.needs_api_keys = True
        return out

    def authorizer_target(self, function_id: str) -> dict[str, Any] | None:
        """How a custom authorizer runs a function of the template: in-process (Python), at its
        Invoke API endpoint (other runtimes), or None when it cannot run."""
        fn = self.functions.get(function_id)
        if fn is None:
            return None
        if fn.python and fn.handler is not None:
            return {"handler": fn.handler, "python_path": fn.python_path}
        if fn.integration is not None and fn.integration.get("type") == "lambda":
            return {
                "function_name": fn.integration["function_name"],
                "endpoint": fn.integration["endpoint"],
            }
        return None

    # ------------------------------------------------------------------------------ functions

    def path(self, absolute: Path) -> str:
        if self.options.relative_to is None:
            return str(absolute)
        return os.path.relpath(absolute, self.options.relative_to.resolve())

    def function(self, logical_id: str, raw: dict[str, Any], where: str) -> None:
        pwhere = f"{where}/Properties"
        props = _mapping(self.resolver.resolve(raw, pwhere))
        for key in props:
            if key not in _FUNCTION_HANDLED and key not in _FUNCTION_INFO:
                self.warn(f"{pwhere}/{key}", "is not supported; pygw ignores it")
        runtime = str(props.get("Runtime", ""))
        image = str(props.get("PackageType", "Zip")) == "Image"
        timeout_s = props.get("Timeout", 3)
        memory = props.get("MemorySize", 128)
        try:
            timeout_ms = max(1, int(float(timeout_s) * 1000))
        except (TypeError, ValueError):
            self.warn(f"{pwhere}/Timeout", f"{timeout_s!r} is not a number; pygw uses 3")
            timeout_ms = 3000
        try:
            memory_mb = max(1, int(memory))
        except (TypeError, ValueError):
            self.warn(f"{pwhere}/MemorySize", f"{memory!r} is not a number; pygw uses 128")
            memory_mb = 128
        env = self.environment(logical_id, props, pwhere)
        fn = _Function(logical_id, where, None, False, None, [])
        self.functions[logical_id] = fn
        if runtime.startswith("python") and not image:
            handler = str(props.get("Handler", ""))
            module, _, attribute = handler.rpartition(".")
            code = props.get("CodeUri", ".")
            inline = props.get("InlineCode")
            if inline is not None:
                fn.reason = "InlineCode is not supported (put the code in a CodeUri folder)"
                self.warn(f"{pwhere}/InlineCode", fn.reason)
                return
            if not isinstance(code, str):
                fn.reason = "CodeUri is not a local folder (an S3 location cannot be read)"
                self.warn(f"{pwhere}/CodeUri", fn.reason)
                return
            if not module or not all(_PY_IDENT.match(p) for p in [*module.split("."), attribute]):
                fn.reason = f"Handler {handler!r} is not module.function"
                self.warn(f"{pwhere}/Handler", fn.reason)
                return
            folder = (self.folder / code).resolve()
            if not folder.is_dir():
                fn.reason = f"CodeUri {code!r} is not a folder next to the template"
                self.warn(f"{pwhere}/CodeUri", fn.reason)
                return
            if (folder / "requirements.txt").is_file():
                self.warn(
                    f"{pwhere}/CodeUri",
                    f"{code}/requirements.txt is not installed by pygw: install its packages "
                    "into the environment pygw runs in",
                )
            fn.python = True
            fn.handler = f"{module}:{attribute}"
            fn.python_path = [self.path(folder)]
            integration: dict[str, Any] = {
                "type": "function",
                "handler": fn.handler,
                "python_path": fn.python_path,
                "function_name": logical_id,
                "memory_mb": memory_mb,
                "timeout_ms": timeout_ms,
            }
            if env:
                integration["environment"] = env
                self.shared_environment(logical_id, env, f"{pwhere}/Environment/Variables")
            fn.integration = integration
            return
        endpoint = self.options.function_endpoints.get(logical_id, self.options.lambda_endpoint)
        what = "a container image" if image else f"runtime {runtime or '(none)'}"
        if endpoint is None:
            fn.reason = (
                f"{what} runs out of process: give --lambda-endpoint URL (a Lambda Invoke API "
                f"such as the Runtime Interface Emulator) or --function-endpoint {logical_id}=URL"
            )
            self.warn(f"{pwhere}/Runtime" if not image else f"{pwhere}/PackageType", fn.reason)
            return
        if env:
            self.warn(
                f"{pwhere}/Environment",
                f"{what}: the function's environment is set where it runs (the Invoke API's "
                "side), not by pygw",
            )
        fn.integration = {
            "type": "lambda",
            "function_name": logical_id,
            "endpoint": endpoint,
            "timeout_ms": timeout_ms,
        }

    def shared_environment(self, logical_id: str, env: dict[str, str], where: str) -> None:
        for name, value in env.items():
            other = self.env_seen.get(name)
            if other is not None and other[0] != value:
                self.warn(
                    f"{where}/{name}",
                    f"differs from {other[1]}'s value: in-process functions share one process "
                    "environment, so the value of the function loaded last is what both see",
                )
            self.env_seen.setdefault(name, (value, logical_id))

    def environment(self, logical_id: str, props: dict[str, Any], where: str) -> dict[str, str]:
        declared = _mapping(_mapping(props.get("Environment")).get("Variables"))
        env = {str(k): _scalar(v) for k, v in declared.items()}
        overrides = {
            **_mapping(self.options.env_vars.get("Parameters")),
            **_mapping(self.options.env_vars.get(logical_id)),
        }
        for name, value in overrides.items():
            # As sam: only variables the template declares are set from the file.
            if name in env:
                env[name] = _scalar(value)
        return env

    # ---------------------------------------------------------------------------------- APIs

    def explicit_api(self, logical_id: str, style: str, raw: dict[str, Any], where: str) -> None:
        pwhere = f"{where}/Properties"
        # A DefinitionBody keeps its own intrinsics for the OpenAPI import (resolved there).
        props = _mapping(self.resolver.resolve(raw, pwhere))
        self.apis[logical_id] = _Api(logical_id, style, where, props)

    def api_for(self, ref: Any, style: str, where: str) -> _Api | None:
        if ref is None:
            implicit = IMPLICIT_REST if style == "rest" else IMPLICIT_HTTP
            api = self.apis.get(implicit)
            if api is None:
                globals_ = _mapping(
                    _mapping(self.template.get("Globals")).get(
                        "Api" if style == "rest" else "HttpApi"
                    )
                )
                props = _mapping(self.resolver.resolve(globals_, f"Globals/{implicit}"))
                props.setdefault("StageName", "Prod" if style == "rest" else "$default")
                api = _Api(implicit, style, f"Resources/{implicit}", props)
                self.apis[implicit] = api
            return api
        name = ref if isinstance(ref, str) else None
        api = self.apis.get(name or "")
        if api is None:
            self.warn(
                where,
                f"{ref!r} names no AWS::Serverless::{'Api' if style == 'rest' else 'HttpApi'} "
                "in the template; the event is skipped",
            )
            return None
        if api.style != style:
            self.warn(where, f"{ref!r} is not an API of this event's kind; the event is skipped")
            return None
        return api

    def events(self, logical_id: str, raw: dict[str, Any], where: str) -> None:
        fn = self.functions[logical_id]
        events = _mapping(raw.get("Events"))
        for name, event in events.items():
            ewhere = f"{where}/Properties/Events/{name}"
            event = _mapping(self.resolver.resolve(event, ewhere))
            kind = str(event.get("Type", ""))
            props = _mapping(event.get("Properties"))
            pwhere = f"{ewhere}/Properties"
            if kind == "Api":
                api = self.api_for(props.get("RestApiId"), "rest", f"{pwhere}/RestApiId")
                method = str(props.get("Method", "")).upper()
                path = str(props.get("Path", ""))
                if not method or not path.startswith("/"):
                    self.warn(ewhere, "an Api event needs Path and Method; skipped")
                    continue
                if method == "ANY" or method == "X-AMAZON-APIGATEWAY-ANY-METHOD":
                    method = "ANY"
                key = f"{method} {path}"
            elif kind == "HttpApi":
                api = self.api_for(props.get("ApiId"), "http", f"{pwhere}/ApiId")
                method = str(props.get("Method", "")).upper()
                path = str(props.get("Path", ""))
                if not method and not path:
                    key = "$default"
                else:
                    if method in ("", "X-AMAZON-APIGATEWAY-ANY-METHOD"):
                        method = "ANY"
                    key = f"{method} {path or '/'}"
            else:
                self.warn(
                    ewhere, f"a {kind or 'typeless'} event is not an API request; pygw skips it"
                )
                continue
            if api is None:
                continue
            for extra in props:
                if extra not in (
                    "Path",
                    "Method",
                    "RestApiId",
                    "ApiId",
                    "Auth",
                    "PayloadFormatVersion",
                    "TimeoutInMillis",
                    "RouteSettings",
                ):
                    self.warn(f"{pwhere}/{extra}", "is not supported; pygw ignores it")
            route: dict[str, Any] = {
                "integration": self.integration_for(fn, api.style, props, pwhere)
            }
            auth = _mapping(props.get("Auth"))
            authorizer = auth.get("Authorizer")
            if authorizer is not None:
                route["authorizer"] = str(authorizer)
            scopes = auth.get("AuthorizationScopes")
            if isinstance(scopes, list) and scopes:
                route["scopes"] = [str(s) for s in scopes]
            if api.style == "rest" and "ApiKeyRequired" in auth:
                route["api_key_required"] = bool(auth["ApiKeyRequired"])
            for extra in auth:
                if extra not in ("Authorizer", "AuthorizationScopes", "ApiKeyRequired"):
                    self.warn(f"{pwhere}/Auth/{extra}", "is not supported; pygw ignores it")
            throttle = _mapping(props.get("RouteSettings"))
            if throttle:
                found = throttle_spec(
                    throttle.get("ThrottlingRateLimit"), throttle.get("ThrottlingBurstLimit")
                )
                if found:
                    route["throttle"] = found
            if key in api.routes:
                self.warn(ewhere, f"route {key} is already served by another event; skipped")
                continue
            api.routes[key] = route

    def integration_for(
        self, fn: _Function, style: str, props: dict[str, Any], where: str
    ) -> dict[str, Any]:
        if fn.integration is None:
            return {
                "type": "mock",
                "status": 501,
                "body": {"message": f"Not Implemented: {fn.logical_id}: {fn.reason}"},
            }
        out = dict(fn.integration)
        out["timeout_ms"] = min(out["timeout_ms"], _MAX_TIMEOUT_MS[style])
        timeout = props.get("TimeoutInMillis")
        if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0:
            out["timeout_ms"] = min(out["timeout_ms"], timeout)
        if style == "http":
            fmt = props.get("PayloadFormatVersion")
            if fmt is not None:
                out["payload_format"] = str(fmt)
        return out

    # ----------------------------------------------------------------------------- API level

    def finish_api(self, api: _Api) -> dict[str, Any] | None:
        props = api.props
        pwhere = f"{api.where}/Properties"
        style = api.style
        body = props.get("DefinitionBody")
        uri = props.get("DefinitionUri")
        stage_name = str(props.get("StageName", "Prod" if style == "rest" else "$default"))
        if stage_name == "$default" and style == "rest":
            self.warn(f"{pwhere}/StageName", "a REST API needs a stage name; pygw uses Prod")
            stage_name = "Prod"
        out: dict[str, Any] = {"name": api.logical_id, "type": style}
        if body is not None or uri is not None:
            imported = self.definition(api, body, uri, stage_name, pwhere)
            if imported is not None:
                out = imported
                out["name"] = api.logical_id
        for key in props:
            if key in _API_INFO:
                continue
            if key not in (
                "StageName",
                "Variables",
                "StageVariables",
                "Cors",
                "CorsConfiguration",
                "Auth",
                "MethodSettings",
                "DefaultRouteSettings",
                "RouteSettings",
                "BinaryMediaTypes",
                "CacheClusterEnabled",
                "CacheClusterSize",
                "DefinitionBody",
                "DefinitionUri",
                "GatewayResponses",
                "Models",
                "Domain",
                "ApiKeySourceType",
            ):
                self.warn(f"{pwhere}/{key}", "is not supported; pygw ignores it")
        for key in ("GatewayResponses", "Models", "Domain"):
            if key in props:
                self.warn(f"{pwhere}/{key}", "is not supported; pygw ignores it")
        stages = out.get("stages") or [{"name": stage_name}]
        stage: dict[str, Any] = dict(stages[0])
        stage["name"] = stage_name
        variables = _mapping(props.get("Variables") or props.get("StageVariables"))
        if variables:
            stage["variables"] = {
                **stage.get("variables", {}),
                **{str(k): _scalar(v) for k, v in variables.items()},
            }
        out["stages"] = [stage]
        self.cors(api, out, pwhere)
        self.auth(api, out, pwhere)
        if style == "rest":
            self.rest_settings(api, out, stage, pwhere)
        else:
            settings = _mapping(props.get("DefaultRouteSettings"))
            found = throttle_spec(
                settings.get("ThrottlingRateLimit"), settings.get("ThrottlingBurstLimit")
            )
            if found:
                stage["throttle"] = found
            for key in settings:
                if key not in ("ThrottlingRateLimit", "ThrottlingBurstLimit"):
                    self.warn(f"{pwhere}/DefaultRouteSettings/{key}", "is not supported; ignored")
            if "RouteSettings" in props:
                self.warn(
                    f"{pwhere}/RouteSettings", "is not supported; use the event's RouteSettings"
                )
        binary = props.get("BinaryMediaTypes")
        if isinstance(binary, list):
            kept = [str(m).replace("~1", "/") for m in binary if "/" in str(m).replace("~1", "/")]
            if kept:
                out["binary_media_types"] = sorted({*out.get("binary_media_types", []), *kept})
        routes = dict(out.get("routes") or {})
        for key, route in api.routes.items():
            if key in routes:
                self.warn(
                    f"{api.where}",
                    f"route {key} is in the DefinitionBody and an event; the definition's is kept",
                )
                continue
            routes[key] = route
        if api.default_authorizer:
            for key, route in routes.items():
                if key.startswith("OPTIONS ") and "cors" in out:
                    continue
                if "authorizer" not in route:
                    route["authorizer"] = api.default_authorizer
        for route in routes.values():
            if route.get("authorizer") == "NONE":
                del route["authorizer"]
                route.pop("scopes", None)
            if api.api_key_required and style == "rest":
                route.setdefault("api_key_required", True)
            if route.get("api_key_required"):
                self.needs_api_keys = True
        self.caching(api, out, routes)
        if not routes:
            self.warn(api.where, "has no routes (no event and no DefinitionBody path); not served")
            return None
        out["routes"] = routes
        return out

    def definition(
        self, api: _Api, body: Any, uri: Any, stage: str, where: str
    ) -> dict[str, Any] | None:
        source = self.source
        if body is None:
            if not isinstance(uri, str):
                self.warn(
                    f"{where}/DefinitionUri",
                    "an S3 location cannot be read; pygw uses the events only",
                )
                return None
            path = (self.folder / uri).resolve()
            try:
                body = read_definition(path)
            except ConfigError as failure:
                self.warn(f"{where}/DefinitionUri", str(failure))
                return None
            source = path
        if not isinstance(body, dict):
            self.warn(f"{where}/DefinitionBody", "is not a mapping; pygw uses the events only")
            return None
        handlers = {
            fid: f"{_MARKER}{fid}:handler" for fid in self.functions if _PY_IDENT.match(fid)
        }
        result = import_openapi_document(
            body,
            source,
            stage=stage if stage != "$default" else None,
            style=api.style,
            handlers=handlers,
        )
        prefix = f"{where}/{'DefinitionBody' if uri is None else 'DefinitionUri'}"
        for warning in result.warnings:
            if warning.startswith("--handler "):
                continue
            self.warnings.append(f"{prefix}{warning.removeprefix('#')}")
        imported: dict[str, Any] = result.config["apis"][0]
        for route in (imported.get("routes") or {}).values():
            integration = route.get("integration", {})
            handler = str(integration.get("handler", ""))
            if integration.get("type") == "function" and handler.startswith(_MARKER):
                fn = self.functions[handler[len(_MARKER) :].partition(":")[0]]
                fmt = integration.get("payload_format")
                route["integration"] = self.integration_for(fn, api.style, {}, where)
                if fmt is not None and route["integration"]["type"] != "mock":
                    route["integration"]["payload_format"] = fmt
        for name, auth in (imported.get("authorizers") or {}).items():
            handler = str(auth.get("handler", ""))
            if handler.startswith(_MARKER):
                fn = self.functions[handler[len(_MARKER) :].partition(":")[0]]
                if fn.python and fn.handler:
                    auth["handler"] = fn.handler
                    auth["python_path"] = fn.python_path
                else:
                    self.warn(
                        f"{prefix}",
                        f"authorizer {name!r} is not a Python function in the template; "
                        "routes using it refuse every request with 401",
                    )
                    auth["handler"] = REFUSING_HANDLER
        if any(r.get("api_key_required") for r in (imported.get("routes") or {}).values()):
            self.needs_api_keys = True
            imported.pop("api_keys", None)
        return imported

    def cors(self, api: _Api, out: dict[str, Any], where: str) -> None:
        props = api.props
        if api.style == "rest":
            cors = props.get("Cors")
            if cors is None:
                return
            cwhere = f"{where}/Cors"
            if isinstance(cors, str):
                cors = {"AllowOrigin": cors}
            cors = _mapping(cors)
            result: dict[str, Any] = {}
            origin = cors.get("AllowOrigin")
            if origin is not None:
                result["allow_origins"] = [_unquote(origin)]
            for key, name in (("AllowMethods", "allow_methods"), ("AllowHeaders", "allow_headers")):
                if key in cors:
                    result[name] = [v.strip() for v in _unquote(cors[key]).split(",") if v.strip()]
            if "MaxAge" in cors:
                age = _unquote(cors["MaxAge"])
                if age.isdigit():
                    result["max_age"] = min(int(age), 86400)
            if "AllowCredentials" in cors:
                result["allow_credentials"] = str(cors["AllowCredentials"]).lower() == "true"
            for key in cors:
                if key not in (
                    "AllowOrigin",
                    "AllowMethods",
                    "AllowHeaders",
                    "MaxAge",
                    "AllowCredentials",
                ):
                    self.warn(f"{cwhere}/{key}", "is not supported; ignored")
            out["cors"] = result
            return
        cors = props.get("CorsConfiguration")
        if cors is None or cors is False:
            return
        if cors is True:
            out["cors"] = {"allow_origins": ["*"], "allow_methods": ["*"], "allow_headers": ["*"]}
            return
        cors = _mapping(cors)
        result = {}
        for key, name in (
            ("AllowOrigins", "allow_origins"),
            ("AllowMethods", "allow_methods"),
            ("AllowHeaders", "allow_headers"),
            ("ExposeHeaders", "expose_headers"),
        ):
            if key in cors:
                value = cors[key]
                result[name] = [str(v) for v in value] if isinstance(value, list) else [str(value)]
        if "MaxAge" in cors:
            result["max_age"] = int(cors["MaxAge"])
        if "AllowCredentials" in cors:
            result["allow_credentials"] = bool(cors["AllowCredentials"])
        for key in cors:
            if key not in (
                "AllowOrigins",
                "AllowMethods",
                "AllowHeaders",
                "ExposeHeaders",
                "MaxAge",
                "AllowCredentials",
            ):
                self.warn(f"{where}/CorsConfiguration/{key}", "is not supported; ignored")
        out["cors"] = result

    def auth(self, api: _Api, out: dict[str, Any], where: str) -> None:
        auth = _mapping(api.props.get("Auth"))
        awhere = f"{where}/Auth"
        authorizers = dict(out.get("authorizers") or {})
        for name, spec in _mapping(auth.get("Authorizers")).items():
            spec = _mapping(spec)
            here = f"{awhere}/Authorizers/{name}"
            if "JwtConfiguration" in spec:
                jwt = _mapping(spec["JwtConfiguration"])
                audience = jwt.get("audience") or jwt.get("Audience") or []
                issuer = jwt.get("issuer") or jwt.get("Issuer")
                result: dict[str, Any] = {
                    "type": "jwt",
                    "issuer": str(issuer),
                    "audience": [
                        str(a) for a in (audience if isinstance(audience, list) else [audience])
                    ],
                }
                source = spec.get("IdentitySource")
                if isinstance(source, str):
                    result["identity_source"] = [source]
                authorizers[name] = result
            elif "FunctionArn" in spec:
                authorizers[name] = self.lambda_authorizer(api, name, spec, here)
            elif "UserPoolArn" in spec:
                self.warn(
                    here,
                    "Cognito user pool authorizers are not supported; routes using it refuse "
                    "every request with 401",
                )
                authorizers[name] = refusing_authorizer()
            else:
                self.warn(
                    here,
                    "is not a JWT, Lambda or Cognito authorizer; routes using it refuse every "
                    "request with 401",
                )
                authorizers[name] = refusing_authorizer()
        if authorizers:
            out["authorizers"] = authorizers
        default = auth.get("DefaultAuthorizer")
        if default is not None and str(default) != "NONE" and str(default) != "AWS_IAM":
            if str(default) not in authorizers:
                self.warn(
                    f"{awhere}/DefaultAuthorizer",
                    f"{default!r} is not one of the API's Authorizers; ignored",
                )
            else:
                api.default_authorizer = str(default)
        elif str(default) == "AWS_IAM":
            self.warn(
                f"{awhere}/DefaultAuthorizer",
                "AWS_IAM (SigV4) authorization is not supported; routes are not authorized",
            )
        if auth.get("ApiKeyRequired") is True:
            api.api_key_required = True
        plan = _mapping(auth.get("UsagePlan"))
        if plan and api.style == "rest":
            created = str(plan.get("CreateUsagePlan", "NONE"))
            if created in ("PER_API", "SHARED"):
                usage: dict[str, Any] = {
                    "name": str(plan.get("UsagePlanName", f"{api.logical_id}UsagePlan")),
                    "keys": ["default"],
                }
                throttle = _mapping(plan.get("Throttle"))
                found = throttle_spec(throttle.get("RateLimit"), throttle.get("BurstLimit"))
                if found:
                    usage["throttle"] = found
                quota = _mapping(plan.get("Quota"))
                if "Limit" in quota:
                    usage["quota"] = {
                        "limit": int(quota["Limit"]),
                        "period": str(quota.get("Period", "DAY")).upper(),
                    }
                    if "Offset" in quota:
                        self.warn(f"{awhere}/UsagePlan/Quota/Offset", "is not supported; ignored")
                out["usage_plans"] = [usage]
                self.needs_api_keys = True
        for key in auth:
            if key not in (
                "Authorizers",
                "DefaultAuthorizer",
                "ApiKeyRequired",
                "UsagePlan",
                "AddDefaultAuthorizerToCorsPreflight",
                "EnableIamAuthorizer",
            ):
                self.warn(f"{awhere}/{key}", "is not supported; ignored")
        if auth.get("EnableIamAuthorizer"):
            self.warn(
                f"{awhere}/EnableIamAuthorizer", "AWS_IAM (SigV4) authorization is not supported"
            )

    def lambda_authorizer(
        self, api: _Api, name: str, spec: dict[str, Any], where: str
    ) -> dict[str, Any]:
        arn = str(spec.get("FunctionArn", ""))
        fid = lambda_name(arn) or arn
        target = self.authorizer_target(fid)
        if target is None:
            why = (
                "is not a function of this template"
                if fid not in self.functions
                else "is not a Python function and has no --lambda-endpoint to run at"
            )
            self.warn(
                f"{where}/FunctionArn",
                f"{fid} {why}; routes using {name!r} refuse every request with 401",
            )
            return refusing_authorizer()
        identity = _mapping(spec.get("Identity"))
        out: dict[str, Any] = {"type": "custom", **target}
        if api.style == "rest":
            kind = str(spec.get("FunctionPayloadType", "TOKEN")).upper()
            out["kind"] = kind
            if kind == "TOKEN":
                out["identity_source"] = [f"header.{identity.get('Header', 'Authorization')}"]
                regex = identity.get("ValidationExpression")
                if isinstance(regex, str) and regex:
                    out["validation_regex"] = regex
            else:
                sources = [f"header.{h}" for h in identity.get("Headers", [])]
                sources += [f"querystring.{q}" for q in identity.get("QueryStrings", [])]
                sources += [f"stageVariables.{v}" for v in identity.get("StageVariables", [])]
                sources += [f"context.{c}" for c in identity.get("Context", [])]
                out["identity_source"] = sources
        else:
            out["kind"] = "REQUEST"
            sources = [f"header.{h}" for h in identity.get("Headers", [])]
            sources += [f"querystring.{q}" for q in identity.get("QueryStrings", [])]
            out["identity_source"] = sources
            fmt = str(spec.get("AuthorizerPayloadFormatVersion", "2.0"))
            out["payload_format"] = "1.0" if fmt.startswith("1") else "2.0"
            if spec.get("EnableSimpleResponses") and out["payload_format"] == "2.0":
                out["simple_responses"] = True
        ttl = identity.get("ReauthorizeEvery")
        if ttl is not None:
            out["ttl_s"] = max(0, min(int(ttl), 3600))
        return out

    def rest_settings(
        self, api: _Api, out: dict[str, Any], stage: dict[str, Any], where: str
    ) -> None:
        props = api.props
        api.caching = bool(props.get("CacheClusterEnabled"))
        for i, setting in enumerate(props.get("MethodSettings") or []):
            setting = _mapping(setting)
            swhere = f"{where}/MethodSettings/{i}"
            raw_path = str(setting.get("ResourcePath", "/*"))
            # "/~1items~1{id}": a '/' separator, then the resource path with '/' written '~1'.
            path = raw_path[1:].replace("~1", "/") if raw_path.startswith("/~1") else raw_path
            method = str(setting.get("HttpMethod", "*")).upper()
            found = throttle_spec(
                setting.get("ThrottlingRateLimit"), setting.get("ThrottlingBurstLimit")
            )
            if found:
                if path == "/*" and method == "*":
                    stage["throttle"] = found
                else:
                    matched = False
                    for key, route in api.routes.items():
                        rmethod, _, rpath = key.partition(" ")
                        if (path in ("/*", rpath)) and method in ("*", rmethod):
                            route["throttle"] = found
                            matched = True
                    if not matched:
                        self.warn(swhere, f"matches no route ({method} {path}); ignored")
            api.method_settings.append({"path": path, "method": method, **setting})
            for key in setting:
                if key not in (
                    "ResourcePath",
                    "HttpMethod",
                    "ThrottlingRateLimit",
                    "ThrottlingBurstLimit",
                    "CachingEnabled",
                    "CacheTtlInSeconds",
                    "LoggingLevel",
                    "MetricsEnabled",
                    "DataTraceEnabled",
                    "CacheDataEncrypted",
                ):
                    self.warn(f"{swhere}/{key}", "is not supported; ignored")
        size = props.get("CacheClusterSize")
        if api.caching:
            out["cache"] = {"capacity_mb": float(size) * 1024 if size else 512.0}

    def caching(self, api: _Api, out: dict[str, Any], routes: dict[str, Any]) -> None:
        if api.style != "rest":
            return
        enabled = [s for s in api.method_settings if s.get("CachingEnabled")]
        if enabled and not api.caching:
            self.warn(
                f"{api.where}/Properties/MethodSettings",
                "CachingEnabled needs CacheClusterEnabled: true; pygw caches nothing",
            )
            return
        if not api.caching:
            return
        for key, route in routes.items():
            rmethod, _, rpath = key.partition(" ")
            if rmethod != "GET":
                continue  # pygw caches GET answers only, as API Gateway does by default
            chosen = None
            for setting in api.method_settings:
                if setting["path"] in ("/*", rpath) and setting["method"] in ("*", rmethod):
                    chosen = setting
            if chosen is None or not chosen.get("CachingEnabled"):
                route["cache"] = {"ttl_s": 0}
            else:
                route["cache"] = {"ttl_s": int(chosen.get("CacheTtlInSeconds", 300))}

    def separate_mounts(self, apis: list[dict[str, Any]]) -> None:
        seen: dict[str, str] = {}
        for api in apis:
            mount = api["stages"][0]["name"]
            if mount in seen:
                base = "/" + re.sub(r"[^A-Za-z0-9._~-]", "-", api["name"])
                api["base_path"] = base
                self.warn(
                    f"Resources/{api['name']}",
                    f"serves stage {mount} like {seen[mount]}; pygw mounts it under {base}",
                )
            else:
                seen[mount] = api["name"]


class _FunctionLookup:
    """The functions of the template, as the plain API Gateway import asks for them."""

    def __init__(self, importer: _SamImporter) -> None:
        self.importer = importer

    def route(
        self, function_id: str, style: str, props: dict[str, Any], where: str
    ) -> dict[str, Any]:
        fn = self.importer.functions.get(function_id)
        if fn is None:
            self.importer.warn(
                where, f"{function_id} is not a function of this template; the route answers 501"
            )
            return {
                "type": "mock",
                "status": 501,
                "body": {"message": f"Not Implemented: {function_id}"},
            }
        return self.importer.integration_for(fn, style, props, where)

    def authorizer(self, function_id: str) -> dict[str, Any] | None:
        return self.importer.authorizer_target(function_id)


def _lambda_function(spec: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    """An `AWS::Lambda::Function` in the Serverless function's terms: CDK's asset folder (its
    `aws:asset:path` metadata, relative to the template) as CodeUri, inline code as InlineCode."""
    out = {k: v for k, v in props.items() if k != "Code"}
    code = _mapping(props.get("Code"))
    asset = _mapping(spec.get("Metadata")).get("aws:asset:path")
    if isinstance(asset, str):
        out["CodeUri"] = asset
    elif "ZipFile" in code:
        out["InlineCode"] = code["ZipFile"]
    elif code:
        out["CodeUri"] = code
    if "ImageUri" in code:
        out["PackageType"] = "Image"
    return out


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is NO_VALUE or value is None:
        return ""
    return str(value)


def _stack_name(source: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9-]", "-", source.resolve().parent.name or "local").strip("-")
    return name or "local"


def _escape(value: Any) -> Any:
    # parse_config interpolates ${env:...}: text taken from the template must stay text.
    if isinstance(value, str):
        return value.replace("${env:", "$${env:")
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def import_sam(path: Path, options: SamOptions | None = None) -> ImportResult:
    """Import a SAM template; raises ConfigError when it cannot be read."""
    path = Path(path)
    options = options or SamOptions()
    template = read_template(path)
    if not isinstance(template, dict) or "Resources" not in template:
        raise ConfigError(
            [
                ConfigIssue(
                    str(path),
                    "",
                    "not a CloudFormation template (no Resources)",
                    "import a SAM template.yaml",
                )
            ]
        )
    transform = template.get("Transform")
    transforms = transform if isinstance(transform, list) else [transform]
    importer = _SamImporter(template, path, options)
    serverless = any(
        str(_mapping(r).get("Type", "")).startswith("AWS::Serverless::")
        for r in _mapping(template.get("Resources")).values()
    )
    if serverless and not any(
        isinstance(t, str) and t.startswith("AWS::Serverless") for t in transforms
    ):
        importer.warn(
            "Transform", "is not AWS::Serverless-2016-10-31; pygw reads the template as SAM anyway"
        )
    config = _escape(importer.run())
    errors = list(importer.errors)
    env = {API_KEY_ENV: "check"}
    if importer.needs_api_keys:
        for api in config["apis"]:
            if api.get("type") == "rest":
                keys = [{"id": "default", "value": f"${{env:{API_KEY_ENV}}}"}]
                for i, value in enumerate(importer.api_key_values):
                    keys.append({"id": f"template-key-{i + 1}", "value": value})
                api["api_keys"] = keys
                for plan in api.get("usage_plans", []):
                    plan["keys"] = [k["id"] for k in keys]
        if not importer.api_key_values:
            importer.warn(
                "Resources",
                f"routes require an API key: pygw accepts the value of the {API_KEY_ENV} "
                "environment variable in x-api-key",
            )
    try:
        parse_config(yaml.safe_dump(config), str(path), env=env)
    except ConfigError as failure:
        errors.extend(f"the imported configuration is invalid: {issue}" for issue in failure.errors)
    return ImportResult(config=config, warnings=importer.warnings, source=str(path), errors=errors)


def load_sam_config(
    path: str | Path, options: SamOptions | None = None, *, admin_listen: str | None = None
) -> LoadedConfig:
    """What `pygw serve --sam` serves: the imported config, validated, warnings logged."""
    template = Path(path)
    options = options or SamOptions()
    result = import_sam(template, options)
    for warning in result.warnings:
        log.warning("%s: %s", template, warning)
    if result.errors:
        # Nothing could be served: refuse, as a configuration with errors is refused.
        raise ConfigError(
            [
                ConfigIssue(str(template), "", error, "see the warnings above for what to add")
                for error in result.errors
            ]
        )
    config = dict(result.config)
    if admin_listen is not None:
        config["admin"] = {"listen": admin_listen}
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    parsed = parse_config(text, str(template))
    absolute = template.resolve()
    return LoadedConfig(config=parsed, path=absolute, folder=absolute.parent)
