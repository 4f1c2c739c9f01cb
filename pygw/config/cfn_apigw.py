"""Plain CloudFormation API Gateway resources (what CDK synthesises) → pygw API sections.

`AWS::ApiGatewayV2::Api` with its `Route`, `Integration`, `Authorizer` and `Stage` resources
(`ProtocolType: HTTP` or `WEBSOCKET`, with its route selection expression), and
`AWS::ApiGateway::RestApi` with its `Resource` tree, `Method`s (and their `Integration`),
`Authorizer`s, `Stage` or `Deployment`, `UsagePlan` and `ApiKey`. A `Body` (an OpenAPI
definition) is left to the caller, which imports it with the OpenAPI importer.

Functions are found by the ARN in an integration's or authorizer's uri, so the caller supplies
the integration of a function (`Functions.route`) and how an authorizer runs one
(`Functions.authorizer`). Whatever is not mapped is a warning at its path, as everywhere in the SAM
import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pygw.config.openapi import REFUSING_HANDLER, lambda_name

__all__ = ["Functions", "PlainApis", "refusing_authorizer", "throttle_spec"]

_ROOT = re.compile(r"^(?P<api>[A-Za-z0-9]+)\.RootResourceId$")


class Functions(Protocol):
    def route(
        self, function_id: str, style: str, props: dict[str, Any], where: str
    ) -> dict[str, Any]:
        """The integration of a route invoking the function (a 501 stand-in when it cannot)."""
        ...

    def authorizer(self, function_id: str) -> dict[str, Any] | None:
        """A custom authorizer's keys running the function (`handler` and `python_path`, or
        `function_name` and `endpoint`), or None when it cannot run."""
        ...


@dataclass
class _Resource:
    logical_id: str
    where: str
    props: dict[str, Any]


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def refusing_authorizer() -> dict[str, Any]:
    """An authorizer that refuses every request: where the template's cannot run here."""
    return {
        "type": "custom",
        "handler": REFUSING_HANDLER,
        "kind": "REQUEST",
        "identity_source": [],
        "ttl_s": 0,
    }


def throttle_spec(rate: Any, burst: Any) -> dict[str, Any] | None:
    """A pygw throttle from a template's rate and burst limits (None when neither is set or
    they are not numbers)."""
    if rate is None and burst is None:
        return None
    try:
        out: dict[str, Any] = {"rate": float(rate) if rate is not None else 10_000.0}
        if burst is not None:
            out["burst"] = int(burst)
    except (TypeError, ValueError):
        return None
    return out


def _sources(raw: Any) -> list[str]:
    items = raw if isinstance(raw, list) else str(raw or "").split(",")
    return [str(s).strip() for s in items if str(s).strip()]


class PlainApis:
    def __init__(
        self,
        resources: Mapping[str, tuple[str, dict[str, Any]]],
        resolve: Callable[[Any, str], Any],
        warn: Callable[[str, str], None],
        functions: Functions,
    ) -> None:
        self.warn = warn
        self.functions = functions
        self.by_type: dict[str, list[_Resource]] = {}
        for logical_id, (kind, props) in resources.items():
            if not kind.startswith(("AWS::ApiGateway::", "AWS::ApiGatewayV2::")):
                continue
            where = f"Resources/{logical_id}"
            resolved = _mapping(resolve(props, f"{where}/Properties"))
            self.by_type.setdefault(kind, []).append(_Resource(logical_id, where, resolved))
        self.api_keys: list[str] = [
            str(r.props["Value"])
            for r in self.by_type.get("AWS::ApiGateway::ApiKey", [])
            if isinstance(r.props.get("Value"), str)
        ]
        self.needs_api_keys = False
        # Bodies (OpenAPI) the caller imports: (api logical id, style, body, stage, where).
        self.bodies: list[tuple[str, str, dict[str, Any], str, str]] = []

    def of(self, kind: str, api_id: str, key: str = "ApiId") -> list[_Resource]:
        return [r for r in self.by_type.get(kind, []) if str(r.props.get(key)) == api_id]

    def function_of(self, uri: Any) -> str | None:
        return lambda_name(uri) if isinstance(uri, str) else None

    # ----------------------------------------------------------------------------------- V2

    def v2_apis(self) -> list[dict[str, Any]]:
        out = []
        for api in self.by_type.get("AWS::ApiGatewayV2::Api", []):
            done = self.v2_api(api)
            if done is not None:
                out.append(done)
        return out

    def v2_api(self, api: _Resource) -> dict[str, Any] | None:
        props = api.props
        pwhere = f"{api.where}/Properties"
        protocol = str(props.get("ProtocolType", "HTTP")).upper()
        style = "websocket" if protocol == "WEBSOCKET" else "http"
        stages = self.of("AWS::ApiGatewayV2::Stage", api.logical_id)
        stage: dict[str, Any] = {"name": "$default" if style == "http" else "production"}
        if stages:
            sprops = stages[0].props
            stage["name"] = str(sprops.get("StageName", stage["name"]))
            variables = _mapping(sprops.get("StageVariables"))
            if variables:
                stage["variables"] = {str(k): str(v) for k, v in variables.items()}
            settings = _mapping(sprops.get("DefaultRouteSettings"))
            found = throttle_spec(
                settings.get("ThrottlingRateLimit"), settings.get("ThrottlingBurstLimit")
            )
            if found:
                stage["throttle"] = found
            for extra in stages[1:]:
                self.warn(extra.where, "a second stage of the API; pygw serves the first only")
        out: dict[str, Any] = {"name": api.logical_id, "type": style, "stages": [stage]}
        if isinstance(props.get("Body"), dict):
            self.bodies.append((api.logical_id, style, props["Body"], stage["name"], pwhere))
            return None
        for key in props:
            if key not in (
                "Name",
                "ProtocolType",
                "RouteSelectionExpression",
                "CorsConfiguration",
                "Description",
                "Tags",
                "Target",
                "RouteKey",
                "DisableExecuteApiEndpoint",
                "ApiKeySelectionExpression",
                "Version",
            ):
                self.warn(f"{pwhere}/{key}", "is not supported; pygw ignores it")
        if style == "websocket":
            expression = str(props.get("RouteSelectionExpression", "$request.body.action"))
            if re.match(r"^\$request\.body\.[A-Za-z0-9_.]+$", expression):
                out["route_selection"] = expression
            else:
                self.warn(
                    f"{pwhere}/RouteSelectionExpression",
                    f"{expression!r} is not supported (pygw selects by $request.body.FIELD); "
                    "pygw uses $request.body.action",
                )
        cors = _mapping(props.get("CorsConfiguration"))
        if cors and style == "http":
            result: dict[str, Any] = {}
            for key, name in (
                ("AllowOrigins", "allow_origins"),
                ("AllowMethods", "allow_methods"),
                ("AllowHeaders", "allow_headers"),
                ("ExposeHeaders", "expose_headers"),
            ):
                if key in cors:
                    value = cors[key]
                    result[name] = [str(v) for v in (value if isinstance(value, list) else [value])]
            if "MaxAge" in cors:
                result["max_age"] = int(cors["MaxAge"])
            if "AllowCredentials" in cors:
                result["allow_credentials"] = bool(cors["AllowCredentials"])
            out["cors"] = result
        authorizers = self.v2_authorizers(api.logical_id, style)
        if authorizers:
            out["authorizers"] = authorizers
        integrations = {
            r.logical_id: r for r in self.of("AWS::ApiGatewayV2::Integration", api.logical_id)
        }
        routes: dict[str, Any] = {}
        target = props.get("Target")
        if isinstance(target, str) and style == "http":
            # Quick create: one route (default $default) proxying to the target function.
            fid = self.function_of(target)
            key = str(props.get("RouteKey", "$default"))
            if fid is not None:
                routes[key] = {"integration": self.functions.route(fid, style, {}, pwhere)}
        for route in self.of("AWS::ApiGatewayV2::Route", api.logical_id):
            made = self.v2_route(route, style, integrations, authorizers)
            if made is not None:
                routes[str(route.props.get("RouteKey"))] = made
        if not routes:
            self.warn(api.where, "has no route pygw can serve; not served")
            return None
        out["routes"] = routes
        return out

    def v2_authorizers(self, api_id: str, style: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for auth in self.of("AWS::ApiGatewayV2::Authorizer", api_id):
            props = auth.props
            kind = str(props.get("AuthorizerType", "")).upper()
            sources = _sources(props.get("IdentitySource"))
            if kind == "JWT":
                jwt = _mapping(props.get("JwtConfiguration"))
                audience = jwt.get("Audience") or []
                out[auth.logical_id] = {
                    "type": "jwt",
                    "issuer": str(jwt.get("Issuer", "")),
                    "audience": [
                        str(a) for a in (audience if isinstance(audience, list) else [audience])
                    ],
                    **({"identity_source": sources} if sources else {}),
                }
            elif kind == "REQUEST":
                fid = self.function_of(props.get("AuthorizerUri"))
                target = self.functions.authorizer(fid) if fid else None
                if target is None:
                    self.warn(
                        f"{auth.where}/Properties/AuthorizerUri",
                        "names no function of the template pygw can run; routes using it "
                        "refuse every request with 401",
                    )
                    out[auth.logical_id] = refusing_authorizer()
                    continue
                result: dict[str, Any] = {
                    "type": "custom",
                    **target,
                    "kind": "REQUEST",
                    "identity_source": sources,
                }
                if style == "http":
                    fmt = str(props.get("AuthorizerPayloadFormatVersion", "2.0"))
                    result["payload_format"] = "1.0" if fmt.startswith("1") else "2.0"
                    if props.get("EnableSimpleResponses") and result["payload_format"] == "2.0":
                        result["simple_responses"] = True
                ttl = props.get("AuthorizerResultTtlInSeconds")
                if ttl is not None:
                    result["ttl_s"] = max(0, min(int(ttl), 3600))
                out[auth.logical_id] = result
            else:
                self.warn(
                    f"{auth.where}/Properties/AuthorizerType",
                    f"{kind or 'no type'} is not supported; routes using it refuse every request",
                )
                out[auth.logical_id] = refusing_authorizer()
        return out

    def v2_route(
        self,
        route: _Resource,
        style: str,
        integrations: dict[str, _Resource],
        authorizers: dict[str, Any],
    ) -> dict[str, Any] | None:
        props = route.props
        pwhere = f"{route.where}/Properties"
        target = str(props.get("Target", ""))
        integration_id = target.removeprefix("integrations/")
        integration = integrations.get(integration_id)
        if integration is None:
            self.warn(f"{pwhere}/Target", f"{target!r} names no integration of the API; skipped")
            return None
        made = self.v2_integration(integration, style)
        if made is None:
            return None
        out: dict[str, Any] = {"integration": made}
        kind = str(props.get("AuthorizationType", "NONE")).upper()
        if kind in ("JWT", "CUSTOM"):
            name = str(props.get("AuthorizerId", ""))
            if name in authorizers:
                out["authorizer"] = name
                scopes = props.get("AuthorizationScopes")
                if isinstance(scopes, list) and scopes:
                    out["scopes"] = [str(s) for s in scopes]
            else:
                self.warn(f"{pwhere}/AuthorizerId", f"{name!r} names no authorizer; refused")
                authorizers[name or "missing"] = refusing_authorizer()
                out["authorizer"] = name or "missing"
        elif kind == "AWS_IAM":
            self.warn(f"{pwhere}/AuthorizationType", "AWS_IAM is not supported; not authorized")
        if style == "websocket" and props.get("RouteResponseSelectionExpression"):
            out["route_response"] = True
        return out

    def v2_integration(self, integration: _Resource, style: str) -> dict[str, Any] | None:
        props = integration.props
        pwhere = f"{integration.where}/Properties"
        kind = str(props.get("IntegrationType", "")).upper()
        uri = props.get("IntegrationUri")
        if kind == "AWS_PROXY":
            fid = self.function_of(uri)
            if fid is None:
                self.warn(f"{pwhere}/IntegrationUri", f"{uri!r} names no function; skipped")
                return None
            return self.functions.route(
                fid,
                style,
                {
                    "PayloadFormatVersion": props.get("PayloadFormatVersion"),
                    "TimeoutInMillis": props.get("TimeoutInMillis"),
                },
                pwhere,
            )
        if (
            kind == "HTTP_PROXY"
            and isinstance(uri, str)
            and uri.startswith(("http://", "https://"))
        ):
            return {"type": "http_proxy", "uri": uri}
        self.warn(
            f"{pwhere}/IntegrationType",
            f"{kind or 'no type'} with uri {uri!r} is not supported; skipped",
        )
        return None

    # ----------------------------------------------------------------------------------- V1

    def rest_apis(self) -> list[dict[str, Any]]:
        out = []
        for api in self.by_type.get("AWS::ApiGateway::RestApi", []):
            done = self.rest_api(api)
            if done is not None:
                out.append(done)
        return out

    def rest_stage(self, api_id: str) -> dict[str, Any]:
        stages = self.of("AWS::ApiGateway::Stage", api_id, "RestApiId")
        stage: dict[str, Any] = {"name": "prod"}
        if stages:
            props = stages[0].props
            stage["name"] = str(props.get("StageName", "prod"))
            variables = _mapping(props.get("Variables"))
            if variables:
                stage["variables"] = {str(k): str(v) for k, v in variables.items()}
            for setting in props.get("MethodSettings") or []:
                setting = _mapping(setting)
                if (
                    str(setting.get("ResourcePath", "/*")) == "/*"
                    and str(setting.get("HttpMethod", "*")) == "*"
                ):
                    found = throttle_spec(
                        setting.get("ThrottlingRateLimit"), setting.get("ThrottlingBurstLimit")
                    )
                    if found:
                        stage["throttle"] = found
        else:
            for deployment in self.of("AWS::ApiGateway::Deployment", api_id, "RestApiId"):
                if deployment.props.get("StageName"):
                    stage["name"] = str(deployment.props["StageName"])
        return stage

    def rest_api(self, api: _Resource) -> dict[str, Any] | None:
        props = api.props
        pwhere = f"{api.where}/Properties"
        stage = self.rest_stage(api.logical_id)
        if isinstance(props.get("Body"), dict):
            self.bodies.append((api.logical_id, "rest", props["Body"], stage["name"], pwhere))
            return None
        out: dict[str, Any] = {"name": api.logical_id, "type": "rest", "stages": [stage]}
        binary = props.get("BinaryMediaTypes")
        if isinstance(binary, list) and binary:
            out["binary_media_types"] = [str(m).replace("~1", "/") for m in binary]
        for key in props:
            if key not in (
                "Name",
                "Description",
                "EndpointConfiguration",
                "BinaryMediaTypes",
                "Tags",
                "Policy",
                "ApiKeySourceType",
                "DisableExecuteApiEndpoint",
                "MinimumCompressionSize",
                "CloneFrom",
                "FailOnWarnings",
                "Mode",
            ):
                self.warn(f"{pwhere}/{key}", "is not supported; pygw ignores it")
        resources = {
            r.logical_id: r
            for r in self.of("AWS::ApiGateway::Resource", api.logical_id, "RestApiId")
        }
        authorizers = self.rest_authorizers(api.logical_id)
        if authorizers:
            out["authorizers"] = authorizers
        routes: dict[str, Any] = {}
        for method in self.of("AWS::ApiGateway::Method", api.logical_id, "RestApiId"):
            path = self.rest_path(str(method.props.get("ResourceId", "")), resources, set())
            if path is None:
                self.warn(
                    f"{method.where}/Properties/ResourceId", "names no resource of the API; skipped"
                )
                continue
            made = self.rest_method(method, authorizers)
            if made is not None:
                routes[f"{str(method.props.get('HttpMethod', 'ANY')).upper()} {path}"] = made
        plans = []
        for plan in self.by_type.get("AWS::ApiGateway::UsagePlan", []):
            stages = plan.props.get("ApiStages") or []
            if any(str(_mapping(s).get("ApiId")) == api.logical_id for s in stages):
                usage: dict[str, Any] = {"name": plan.logical_id}
                throttle = _mapping(plan.props.get("Throttle"))
                found = throttle_spec(throttle.get("RateLimit"), throttle.get("BurstLimit"))
                if found:
                    usage["throttle"] = found
                quota = _mapping(plan.props.get("Quota"))
                if "Limit" in quota:
                    usage["quota"] = {
                        "limit": int(quota["Limit"]),
                        "period": str(quota.get("Period", "DAY")).upper(),
                    }
                plans.append(usage)
        if plans:
            out["usage_plans"] = plans
            self.needs_api_keys = True
        if not routes:
            self.warn(api.where, "has no method pygw can serve; not served")
            return None
        out["routes"] = routes
        return out

    def rest_path(
        self, resource_id: str, resources: dict[str, _Resource], seen: set[str]
    ) -> str | None:
        if _ROOT.match(resource_id):
            return "/"
        resource = resources.get(resource_id)
        if resource is None or resource_id in seen:
            return None
        parent = self.rest_path(
            str(resource.props.get("ParentId", "")), resources, seen | {resource_id}
        )
        if parent is None:
            return None
        return parent.rstrip("/") + "/" + str(resource.props.get("PathPart", ""))

    def rest_authorizers(self, api_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for auth in self.of("AWS::ApiGateway::Authorizer", api_id, "RestApiId"):
            props = auth.props
            kind = str(props.get("Type", "")).upper()
            if kind not in ("TOKEN", "REQUEST"):
                self.warn(
                    f"{auth.where}/Properties/Type",
                    f"{kind or 'no type'} authorizers are not supported; routes using it refuse "
                    "every request with 401",
                )
                out[auth.logical_id] = refusing_authorizer()
                continue
            fid = self.function_of(props.get("AuthorizerUri"))
            target = self.functions.authorizer(fid) if fid else None
            if target is None:
                self.warn(
                    f"{auth.where}/Properties/AuthorizerUri",
                    "names no function of the template pygw can run; routes using it refuse "
                    "every request with 401",
                )
                out[auth.logical_id] = refusing_authorizer()
                continue
            sources = _sources(props.get("IdentitySource") or "method.request.header.Authorization")
            result: dict[str, Any] = {
                "type": "custom",
                **target,
                "kind": kind,
                "identity_source": sources[:1] if kind == "TOKEN" else sources,
            }
            regex = props.get("IdentityValidationExpression")
            if kind == "TOKEN" and isinstance(regex, str) and regex:
                result["validation_regex"] = regex
            ttl = props.get("AuthorizerResultTtlInSeconds")
            if ttl is not None:
                result["ttl_s"] = max(0, min(int(ttl), 3600))
            out[auth.logical_id] = result
        return out

    def rest_method(self, method: _Resource, authorizers: dict[str, Any]) -> dict[str, Any] | None:
        props = method.props
        pwhere = f"{method.where}/Properties"
        integration = _mapping(props.get("Integration"))
        kind = str(integration.get("Type", "")).upper()
        out: dict[str, Any]
        if kind == "AWS_PROXY":
            fid = self.function_of(integration.get("Uri"))
            if fid is None:
                self.warn(f"{pwhere}/Integration/Uri", "names no function; skipped")
                return None
            out = {
                "integration": self.functions.route(
                    fid, "rest", {"TimeoutInMillis": integration.get("TimeoutInMillis")}, pwhere
                )
            }
        elif kind == "MOCK":
            responses = integration.get("IntegrationResponses") or [{}]
            first = _mapping(responses[0])
            status = int(str(first.get("StatusCode", "200")))
            headers = {
                name.removeprefix("method.response.header."): value.strip("'")
                for name, value in _mapping(first.get("ResponseParameters")).items()
                if isinstance(value, str) and name.startswith("method.response.header.")
            }
            body = next(iter(_mapping(first.get("ResponseTemplates")).values()), None)
            mock: dict[str, Any] = {"type": "mock", "status": status}
            if headers:
                mock["headers"] = headers
            if isinstance(body, str) and body:
                mock["body"] = body
            out = {"integration": mock}
        elif kind == "HTTP_PROXY" and str(integration.get("Uri", "")).startswith(
            ("http://", "https://")
        ):
            out = {"integration": {"type": "http_proxy", "uri": str(integration["Uri"])}}
        else:
            self.warn(
                f"{pwhere}/Integration/Type", f"{kind or 'no type'} is not supported; skipped"
            )
            return None
        auth = str(props.get("AuthorizationType", "NONE")).upper()
        if auth in ("CUSTOM", "COGNITO_USER_POOLS"):
            name = str(props.get("AuthorizerId", ""))
            if name not in authorizers:
                authorizers[name or "missing"] = refusing_authorizer()
                self.warn(f"{pwhere}/AuthorizerId", f"{name!r} is not supported; refused")
            out["authorizer"] = name or "missing"
        elif auth == "AWS_IAM":
            self.warn(f"{pwhere}/AuthorizationType", "AWS_IAM is not supported; not authorized")
        if props.get("ApiKeyRequired") is True:
            out["api_key_required"] = True
            self.needs_api_keys = True
        return out
