"""OpenAPI import (SPEC.md section 11): Swagger 2.0 / OpenAPI 3 with AWS extensions → pygw config.

`import_openapi` turns a definition into plain data in the shape of pygw's YAML configuration
(SPEC.md section 2) plus a list of warnings. Whatever pygw cannot do as the definition asks is a
warning naming the construct's JSON pointer and what pygw does instead; every
``x-amazon-apigateway-*`` key the importer does not consume is reported by a final sweep, so nothing
is dropped silently.

Choices a user should know about:

- Routes that cannot be served as written (an ``aws`` integration, ``aws_proxy`` without a local
  handler, a uri still holding a deployment-time placeholder such as ``${uri}``, a stage
  variable without a value) are kept as mock routes answering 501, so the API's shape stays visible.
- Authorizers fail closed: a Lambda authorizer without ``x-pygw-handler``, or a Cognito authorizer
  whose user pool is unknown (HTTP-style: or whose app clients are), becomes a custom authorizer
  that refuses every request (401), never an open route.
- A Cognito authorizer (REST-style) becomes a ``cognito_user_pools`` authorizer: its tokens are
  checked with the pool's JWKS, or the one ``--jwks NAME=PATH_OR_URL`` (``jwks``) or the scheme's
  ``x-pygw-jwks`` names; ``--user-pool NAME=ARN`` (``user_pools``) gives the pool when the
  definition holds a deployment-time placeholder; ``x-pygw-audience`` lists accepted app
  clients. NAME is the security scheme's name, an entry of its providerARNs, or ``*``.
- ``--upstream KEY=URL`` (``upstreams``) rewrites integration uris: KEY is a host name (the uri's
  scheme and host are replaced), a URL prefix (replaced), a template placeholder such as ``${uri}``
  (replaced wherever it appears), or ``stageVariables.NAME`` (the value of that stage variable).
  Operations without an integration proxy to an upstream given for the API's server URL or host.
- A Lambda (``aws_proxy`` integration or Lambda authorizer) runs a local Python callable named by
  ``x-pygw-handler: module:callable`` on the operation or security scheme, or by
  ``--handler KEY=module:callable`` (``handlers``), KEY being the integration's full uri (ARN) or
  the Lambda function name inside it.
- REST-style mock integrations answer through their integration response: its static
  ``responseParameters`` become the mock's headers and its ``responseTemplates`` become the route's
  ``templates.response``, rendered per request (``$context.stage`` and friends are filled in).
- ``ImportResult.errors`` lists why an API could not work at all (no route that serves); the
  ``import-openapi`` command exits non-zero only then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from pygw.config.load import ConfigError, ConfigIssue, LoadedConfig, parse_config
from pygw.config.model import (
    MAX_COMPRESSION_SIZE,
    CorsConfig,
    RouteKeyError,
    StageConfig,
    cognito_issuer,
    parse_route_key,
)

__all__ = [
    "ImportResult",
    "import_openapi",
    "import_openapi_document",
    "load_openapi_config",
    "parse_handlers",
    "parse_jwks",
    "parse_upstreams",
    "parse_user_pools",
    "read_definition",
    "refuse_unresolved",
]

log = logging.getLogger("pygw.openapi")

AWS = "x-amazon-apigateway-"
HANDLER_KEY = "x-pygw-handler"
AUDIENCE_KEY = "x-pygw-audience"
JWKS_KEY = "x-pygw-jwks"
REFUSING_HANDLER = "pygw.config.openapi:refuse_unresolved"
API_KEY_ENV = "PYGW_API_KEY"
# Where an imported definition with AWS_IAM routes expects its SigV4 keys.
IAM_CREDENTIALS_FILE = "iam-credentials.yaml"

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
_HANDLER_RE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*$"
)
_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]+")
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_STAGE_VAR = re.compile(r"^stageVariables\.([A-Za-z0-9_]+)$")
_STATUS_IN_TEMPLATE = re.compile(r'"?statusCode"?\s*:\s*"?(\d{3})')
_VTL = re.compile(r"[$#][A-Za-z{!]")
# The function name inside a Lambda ARN, alone or wrapped in an API Gateway invocation uri:
# ...:function:NAME[:ALIAS_OR_VERSION][/invocations].
_LAMBDA_NAME = re.compile(r":function:([A-Za-z0-9_-]+)(?::[A-Za-z0-9_$-]+)?(?:/invocations)?$")
_STAND_IN = "Not Implemented: "

# Keys of x-amazon-apigateway-integration the importer applies (per integration type) or that
# carry no behaviour for pygw.
_INTEGRATION_HANDLED = {
    "type",
    "uri",
    "httpMethod",
    "requestParameters",
    "timeoutInMillis",
    "passthroughBehavior",
    "payloadFormatVersion",
    "responses",
    "requestTemplates",
    "tlsConfig",
    HANDLER_KEY,
}
# Informational keys: they configure AWS itself (roles, ARNs) and mean nothing to pygw.
_INFORMATIONAL = {
    f"{AWS}authtype",
    f"{AWS}importexport-version",
}


def refuse_unresolved(event: Any, context: Any = None) -> Any:
    """The authorizer of routes whose own authorizer pygw cannot run: refuses every request."""
    raise Exception("Unauthorized")


@dataclass
class ImportResult:
    config: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    source: str = ""
    # Why the API could not work at all; empty when at least one route serves.
    errors: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        lines = [f"# pygw configuration imported from {self.source or 'an OpenAPI definition'}"]
        for error in self.errors:
            lines.append(f"# ERROR: {' '.join(error.split())}")
        if self.warnings:
            lines.append(f"# {len(self.warnings)} warning(s): what pygw does differently")
            for warning in self.warnings:
                text = " ".join(warning.split())
                lines.append(f"#  - {text}")
        else:
            lines.append("# No warnings: every construct was imported.")
        body = yaml.safe_dump(self.config, sort_keys=False, allow_unicode=True, width=100)
        return "\n".join(lines) + "\n" + body


def parse_upstreams(items: list[str] | None) -> dict[str, str]:
    """``KEY=URL`` strings (``--upstream``) as a mapping; raises ValueError naming a bad one."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(
                f"--upstream {item!r} is not KEY=URL (e.g. api.example.com=http://127.0.0.1:9001)"
            )
        out[key.strip()] = value.strip()
    return out


def parse_handlers(items: list[str] | None) -> dict[str, str]:
    """``ARN_OR_NAME=module:callable`` strings (``--handler``) as a mapping; raises ValueError."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.rpartition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not _HANDLER_RE.match(value):
            raise ValueError(
                f"--handler {item!r} is not ARN_OR_NAME=module:callable "
                "(e.g. GetProductFunction=handlers:get_product)"
            )
        out[key] = value
    return out


def parse_jwks(items: list[str] | None, cwd: Path | None = None) -> dict[str, str]:
    """``NAME=LOCATION`` strings (``--jwks``): LOCATION an http(s) URL or a file, made absolute
    here (relative to ``cwd``) since the imported config may be written elsewhere."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(
                f"--jwks {item!r} is not NAME=PATH_OR_URL (e.g. pool=keys/pool-jwks.json, or "
                "*=https://idp.example/jwks.json for every Cognito authorizer)"
            )
        if not value.startswith(("https://", "http://")):
            path = Path(value[len("file://") :] if value.startswith("file://") else value)
            path = path.expanduser()
            if not path.is_absolute():
                path = (cwd or Path.cwd()) / path
            if not path.is_file():
                raise ValueError(f"--jwks {key}: no file {path}")
            value = "file://" + str(path.resolve())
        out[key] = value
    return out


def parse_user_pools(items: list[str] | None) -> dict[str, str]:
    """``NAME=ARN`` strings (``--user-pool``) as a mapping; raises ValueError naming a bad one."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.rpartition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or cognito_issuer(value) is None:
            raise ValueError(
                f"--user-pool {item!r} is not NAME=ARN (e.g. "
                "pool=arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_Ab12)"
            )
        out[key] = value
    return out


def lambda_name(uri: str) -> str | None:
    """The Lambda function name in an ARN or API Gateway invocation uri, or None."""
    found = _LAMBDA_NAME.search(uri.strip())
    return found.group(1) if found else None


# --------------------------------------------------------------------------------------------------
# Helpers


def pointer(*parts: str | int) -> str:
    """A JSON pointer (RFC 6901) in URI-fragment form, e.g. ``#/paths/~1pets/get``."""
    escaped = [str(p).replace("~", "~0").replace("/", "~1") for p in parts]
    return "#/" + "/".join(escaped) if escaped else "#"


def _quoted_literal(value: Any) -> str | None:
    """AWS writes static values as ``'text'``; anything else is a reference."""
    if isinstance(value, str) and len(value) >= 2 and value.startswith("'") and value.endswith("'"):
        return value[1:-1]
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _api_name(title: Any) -> str:
    name = _NAME_BAD.sub("-", str(title or "")).strip("-.")
    if not name or not re.match(r"^[A-Za-z0-9_]", name):
        return "imported"
    return name[:64]


def _escape_env(value: Any) -> Any:
    # parse_config interpolates ${env:...}: text taken from the definition must stay text.
    if isinstance(value, str):
        return value.replace("${env:", "$${env:")
    if isinstance(value, dict):
        return {k: _escape_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_env(v) for v in value]
    return value


def read_definition(path: Path) -> Any:
    """An OpenAPI file as data (JSON or YAML); raises ConfigError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [ConfigIssue(str(path), "", "file not found", "check the path of the OpenAPI file")]
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            [ConfigIssue(str(path), "", f"cannot read the file: {err}", "check the file")]
        ) from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(
            [
                ConfigIssue(
                    str(path),
                    "",
                    f"not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                    + " ".join(str(err).split()),
                    "fix the syntax of the OpenAPI file",
                )
            ]
        ) from None


@dataclass
class _Auth:
    """How a security scheme is imported: an authorizer, an API key requirement, or nothing."""

    kind: str  # "authorizer" | "api_key" | "iam" | "none"
    name: str | None = None
    is_jwt: bool = False


class _Importer:
    def __init__(
        self,
        doc: dict[str, Any],
        source: Path,
        stage: str | None,
        upstreams: Mapping[str, str],
        style: str,
        handlers: Mapping[str, str] | None = None,
        jwks: Mapping[str, str] | None = None,
        user_pools: Mapping[str, str] | None = None,
    ) -> None:
        self.doc = doc
        self.jwks = dict(jwks or {})
        self.jwks_used: set[str] = set()
        self.user_pools = dict(user_pools or {})
        self.user_pools_used: set[str] = set()
        self.source = source
        self.stage = stage
        self.upstreams = dict(upstreams)
        self.style = style
        self.handlers = dict(handlers or {})
        self.handlers_used: set[str] = set()
        # Set while importing one operation: its integration is a 501 stand-in.
        self.stood_in = False
        # Authorizers that refuse every request.
        self.refused: set[str] = set()
        # Route keys that can answer as the definition asks.
        self.serving: list[str] = []
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.consumed: set[str] = set()
        self.swagger = str(doc.get("swagger", "")).startswith("2")
        self.api: dict[str, Any] = {}
        self.routes: dict[str, Any] = {}
        self.shapes: dict[str, str] = {}
        self.authorizers: dict[str, Any] = {}
        self.auth_cache: dict[str, _Auth] = {}
        self.models: dict[str, Any] = {}
        self.stage_variables: dict[str, str] = {}
        self.uses_handlers = False
        self.needs_api_keys = False
        self.needs_iam = False
        # HTTP-style parameter mapping of the operation being imported.
        self.mapping: dict[str, str] = {}
        # REST-style response templates of the operation being imported (mock integrations).
        self.response_templates: dict[str, str] = {}

    def local_handler(self, uri: Any) -> str | None:
        """The --handler callable for a Lambda uri: by the full uri, or the function name in it."""
        if not isinstance(uri, str) or not self.handlers:
            return None
        for key in (uri.strip(), lambda_name(uri)):
            if key is not None and key in self.handlers:
                self.handlers_used.add(key)
                return self.handlers[key]
        return None

    # ---------------------------------------------------------------------------------- basics

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{where}: {message}")

    def use(self, where: str) -> None:
        self.consumed.add(where)

    def resolve(self, node: Any, where: str, seen: frozenset[str] = frozenset()) -> Any:
        """Follow a local ``$ref`` (``#/...``); other refs are warned about and yield None."""
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if not ref.startswith("#/"):
                self.warn(where, f"$ref {ref!r} points outside this file; pygw skips it")
                return None
            if ref in seen:
                self.warn(where, f"$ref {ref!r} is circular; pygw skips it")
                return None
            seen = seen | {ref}
            target: Any = self.doc
            for raw in ref[2:].split("/"):
                part = raw.replace("~1", "/").replace("~0", "~")
                if isinstance(target, dict) and part in target:
                    target = target[part]
                elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                    target = target[int(part)]
                else:
                    self.warn(where, f"$ref {ref!r} does not resolve; pygw skips it")
                    return None
            node = target
        return node

    def inline(self, schema: Any, where: str, seen: frozenset[str] = frozenset()) -> Any:
        """A schema with every local $ref replaced by its target (pygw's models are standalone)."""
        if isinstance(schema, dict):
            ref = schema.get("$ref")
            if isinstance(ref, str):
                if ref in seen:
                    self.warn(
                        where, f"schema $ref {ref!r} is recursive; pygw accepts any value there"
                    )
                    return {}
                target = self.resolve({"$ref": ref}, where)
                return {} if target is None else self.inline(target, where, seen | {ref})
            return {k: self.inline(v, where, seen) for k, v in schema.items()}
        if isinstance(schema, list):
            return [self.inline(v, where, seen) for v in schema]
        return schema

    # ----------------------------------------------------------------------------------- run

    def run(self) -> dict[str, Any]:
        doc = self.doc
        info = _dict(doc.get("info"))
        api: dict[str, Any] = {"name": _api_name(info.get("title")), "type": self.style}
        self.api = api
        base_path = self.base_path()
        if base_path:
            api["base_path"] = base_path
        self.api_level()
        paths = doc.get("paths")
        if not isinstance(paths, dict) or not paths:
            self.warn(pointer("paths"), "no paths: the API has no routes")
            paths = {}
        for raw_path, item in paths.items():
            self.path_item(str(raw_path), item)
        if self.authorizers:
            api["authorizers"] = self.authorizers
        if self.needs_api_keys:
            api["api_keys"] = [{"id": "default", "value": "__API_KEY__"}]
        if self.models:
            api["models"] = self.models
        stage: dict[str, Any] = {"name": self.stage or "$default"}
        if self.stage_variables:
            stage["variables"] = dict(sorted(self.stage_variables.items()))
        api["stages"] = [stage]
        api["routes"] = self.routes
        self.unused_schemes()
        self.sweep(doc, ())
        for option, table, used in (
            ("--jwks", self.jwks, self.jwks_used),
            ("--user-pool", self.user_pools, self.user_pools_used),
        ):
            for key in table:
                if key not in used:
                    self.warn(
                        f"{option} {key}",
                        "matches no Cognito authorizer (give the security scheme's name, an "
                        "entry of its providerARNs, or *)",
                    )
        for key in self.handlers:
            if key not in self.handlers_used:
                self.warn(
                    f"--handler {key}",
                    "matches no aws_proxy integration uri or Lambda authorizer uri (give the full "
                    "uri or the function name inside its ARN)",
                )
        # CORS preflight mocks alone do not make an API work.
        wanted = [k for k in self.routes if not k.startswith("OPTIONS ")] or list(self.routes)
        if not self.routes:
            self.errors.append("the definition yields no route: there is nothing to serve")
        elif not any(k in self.serving for k in wanted):
            besides = " besides OPTIONS preflight answers" if len(wanted) < len(self.routes) else ""
            self.errors.append(
                f"none of the {len(wanted)} route(s){besides} can answer as the definition asks "
                "(each is a 501 stand-in or behind an authorizer that refuses every request); "
                "see the warnings for what to add (--upstream, --handler, x-pygw-handler)"
            )
        config: dict[str, Any] = {}
        if self.uses_handlers:
            config["python_path"] = [str(self.source.resolve().parent)]
        if self.needs_iam:
            config["iam"] = {"region": "us-east-1", "credentials_file": IAM_CREDENTIALS_FILE}
            self.warn(
                "#",
                f"routes use AWS_IAM (SigV4): list the keys that may sign in "
                f"{IAM_CREDENTIALS_FILE} next to the config (access_key_id, secret_access_key, "
                "arn, account_id), and set iam.region to the region clients sign for",
            )
        config["apis"] = [api]
        config = _escape_env(config)
        if self.needs_api_keys:
            config["apis"][0]["api_keys"][0]["value"] = f"${{env:{API_KEY_ENV}}}"
        return config

    def unused_schemes(self) -> None:
        if self.swagger:
            schemes = _dict(self.doc.get("securityDefinitions"))
            base: tuple[str, ...] = ("securityDefinitions",)
        else:
            schemes = _dict(_dict(self.doc.get("components")).get("securitySchemes"))
            base = ("components", "securitySchemes")
        for name, scheme in schemes.items():
            if name in self.auth_cache or not isinstance(scheme, dict):
                continue
            if f"{AWS}authorizer" in scheme:
                where = pointer(*base, name, f"{AWS}authorizer")
                self.use(where)
                self.warn(where, f"no operation uses {name!r}; pygw imports no authorizer for it")

    def sweep(self, node: Any, parts: tuple[str | int, ...]) -> None:
        """Every AWS extension the importer did not consume is a warning."""
        if isinstance(node, dict):
            for key, value in node.items():
                here = (*parts, str(key))
                where = pointer(*here)
                if isinstance(key, str) and key.startswith(AWS):
                    if key in _INFORMATIONAL or where in self.consumed:
                        continue
                    self.warn(where, f"{key} is not supported; pygw ignores it")
                    continue
                self.sweep(value, here)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                self.sweep(value, (*parts, i))

    # ------------------------------------------------------------------------------- API level

    def base_path(self) -> str | None:
        doc = self.doc
        if self.swagger:
            raw = doc.get("basePath")
            where = pointer("basePath")
        else:
            servers = doc.get("servers")
            if not isinstance(servers, list) or not servers or not isinstance(servers[0], dict):
                return None
            if len(servers) > 1:
                self.warn(
                    pointer("servers"),
                    f"{len(servers)} servers; pygw takes the base path from the first only",
                )
            server = servers[0]
            url = str(server.get("url", ""))
            variables = _dict(server.get("variables"))

            def value_of(match: re.Match[str]) -> str:
                var = variables.get(match.group(1))
                if isinstance(var, dict) and "default" in var:
                    return str(var["default"])
                return match.group(0)

            resolved = re.sub(r"\{([^{}]+)\}", value_of, url)
            parsed = urlsplit(resolved if "://" in resolved else "http://host" + resolved)
            raw = parsed.path
            # AWS: a lone `basePath` variable is the base path even when the url does not use it.
            if (
                raw in ("", "/")
                and "basePath" in variables
                and "{basePath}" not in url
                and isinstance(variables["basePath"], dict)
            ):
                raw = str(variables["basePath"].get("default", ""))
            where = pointer("servers", 0, "url")
        if not isinstance(raw, str) or raw.strip("/") == "":
            return None
        path = "/" + raw.strip("/")
        if "{" in path or "}" in path:
            self.warn(
                where, f"base path {path!r} keeps an unresolved variable; pygw serves at the root"
            )
            return None
        segments = path[1:].split("/")
        if any(
            not s or s in (".", "..") or not re.match(r"^[A-Za-z0-9._~:@!$&'()*+,;=%-]+$", s)
            for s in segments
        ):
            self.warn(where, f"base path {path!r} is not a plain path; pygw serves at the root")
            return None
        return path

    def api_level(self) -> None:
        doc = self.doc
        api = self.api
        cors = doc.get(f"{AWS}cors")
        if cors is not None:
            where = pointer(f"{AWS}cors")
            self.use(where)
            self.cors(cors, where)
        binary = doc.get(f"{AWS}binary-media-types")
        if binary is not None:
            where = pointer(f"{AWS}binary-media-types")
            self.use(where)
            kept = []
            for i, media in enumerate(binary if isinstance(binary, list) else [binary]):
                if isinstance(media, str) and "/" in media:
                    kept.append(media.replace("~1", "/"))
                else:
                    self.warn(f"{where}/{i}", f"{media!r} is not a media type; pygw skips it")
            if kept:
                api["binary_media_types"] = kept
        size = doc.get(f"{AWS}minimum-compression-size")
        if size is not None:
            where = pointer(f"{AWS}minimum-compression-size")
            self.use(where)
            if self.style != "rest":
                self.warn(
                    where,
                    "HTTP-style APIs do not compress answers (AWS's HTTP APIs do not); "
                    "pygw ignores it",
                )
            elif (
                isinstance(size, int)
                and not isinstance(size, bool)
                and 0 <= size <= MAX_COMPRESSION_SIZE
            ):
                api["minimum_compression_size"] = size
            else:
                self.warn(
                    where,
                    f"{size!r} is not a size from 0 to {MAX_COMPRESSION_SIZE} bytes; "
                    "pygw does not compress this API's answers",
                )
        source = doc.get(f"{AWS}api-key-source")
        if source is not None:
            where = pointer(f"{AWS}api-key-source")
            self.use(where)
            if str(source).upper() == "AUTHORIZER":
                self.warn(
                    where,
                    "API keys from the authorizer (usageIdentifierKey) are not supported; "
                    "pygw reads API keys from the x-api-key header",
                )
            elif str(source).upper() != "HEADER":
                self.warn(where, f"unknown API key source {source!r}; pygw reads x-api-key")
            elif self.style != "rest":
                self.warn(where, "API keys are REST-style only; this HTTP-style API ignores them")
        responses = doc.get(f"{AWS}gateway-responses")
        if isinstance(responses, dict):
            where = pointer(f"{AWS}gateway-responses")
            self.use(where)
            for name in responses:
                self.warn(
                    f"{where}/{name}",
                    f"custom gateway response {name} is not supported; pygw answers with its "
                    "standard gateway response (SPEC.md section 9)",
                )
        validators = doc.get(f"{AWS}request-validators")
        if validators is not None:
            self.use(pointer(f"{AWS}request-validators"))
        if doc.get(f"{AWS}request-validator") is not None:
            self.use(pointer(f"{AWS}request-validator"))
        if doc.get(f"{AWS}integrations") is not None:
            self.use(pointer(f"{AWS}integrations"))
        components = doc.get("components")
        if isinstance(components, dict) and f"{AWS}integrations" in components:
            self.use(pointer("components", f"{AWS}integrations"))

    def cors(self, cors: Any, where: str) -> None:
        if not isinstance(cors, dict):
            self.warn(where, "is not a mapping; pygw adds no CORS")
            return
        names = {
            "allowOrigins": "allow_origins",
            "allowMethods": "allow_methods",
            "allowHeaders": "allow_headers",
            "exposeHeaders": "expose_headers",
            "maxAge": "max_age",
            "allowCredentials": "allow_credentials",
        }
        out: dict[str, Any] = {}
        for key, value in cors.items():
            if key not in names:
                self.warn(f"{where}/{key}", f"unknown CORS key {key!r}; pygw ignores it")
                continue
            out[names[key]] = value
        if "allow_methods" in out and isinstance(out["allow_methods"], list):
            out["allow_methods"] = [
                "*" if m == "*" else str(m).upper() for m in out["allow_methods"]
            ]
        try:
            CorsConfig.model_validate(out)
        except ValidationError as err:
            problems = "; ".join(
                str(e.get("ctx", {}).get("message", e["msg"])) for e in err.errors()
            )
            self.warn(where, f"CORS settings pygw cannot apply ({problems}); pygw adds no CORS")
            return
        self.api["cors"] = out

    # ---------------------------------------------------------------------------------- paths

    def path_item(self, raw_path: str, item: Any) -> None:
        item_where = pointer("paths", raw_path)
        item = self.resolve(item, item_where)
        if not isinstance(item, dict):
            return
        shared_params = _list(item.get("parameters"))
        path = raw_path if raw_path.startswith("/") else "/" + raw_path
        if len(path) > 1:
            path = path.rstrip("/") or "/"
        for key, op in item.items():
            if key in ("parameters", "summary", "description", "servers", "$ref") or (
                key.startswith("x-") and not key.startswith(AWS)
            ):
                continue
            where = f"{item_where}/{key}"
            if key == f"{AWS}any-method":
                self.use(where)
                method = "ANY"
            elif key in _METHODS:
                method = key.upper()
            elif key.startswith(AWS):
                continue  # the sweep reports it
            else:
                self.warn(where, f"method {key!r} is not supported; pygw has no route for it")
                continue
            if not isinstance(op, dict):
                continue
            self.operation(method, path, op, shared_params, where)

    def operation(
        self, method: str, path: str, op: dict[str, Any], shared: list[Any], where: str
    ) -> None:
        route_key = f"{method} {path}"
        try:
            parsed = parse_route_key(route_key, "rest")
        except RouteKeyError as err:
            self.warn(where, f"route {route_key!r} cannot be served: {err.message} ({err.fix})")
            return
        if parsed.shape in self.shapes:
            self.warn(
                where,
                f"route {route_key!r} cannot be told apart from {self.shapes[parsed.shape]!r}; "
                "pygw keeps the first",
            )
            return
        self.shapes[parsed.shape] = route_key
        params = self.parameters(shared, op, where)
        route: dict[str, Any] = {}
        self.mapping = {}
        self.response_templates = {}
        self.stood_in = False
        route["integration"] = self.integration(method, path, parsed.params, op, where)
        if self.mapping and route["integration"]["type"] == "http_proxy":
            route["mapping"] = {"request": dict(self.mapping)}
        if self.response_templates:
            route["templates"] = {"response": dict(self.response_templates)}
        self.security(op, route, where)
        self.method_auth(op, route, where)
        self.validation(op, params, route, where)
        self.routes[route_key] = route
        if not self.stood_in and route.get("authorizer") not in self.refused:
            self.serving.append(route_key)

    def parameters(self, shared: list[Any], op: dict[str, Any], where: str) -> list[dict[str, Any]]:
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for source in (shared, op.get("parameters") or []):
            for i, raw in enumerate(source if isinstance(source, list) else []):
                param = self.resolve(raw, f"{where}/parameters/{i}")
                if isinstance(param, dict) and "name" in param and "in" in param:
                    merged[(str(param["in"]), str(param["name"]))] = param
        return list(merged.values())

    # ---------------------------------------------------------------------------- integrations

    def stand_in(self, reason: str) -> dict[str, Any]:
        self.stood_in = True
        return {"type": "mock", "status": 501, "body": {"message": f"{_STAND_IN}{reason}"}}

    def integration(
        self, method: str, path: str, route_params: tuple[str, ...], op: dict[str, Any], where: str
    ) -> dict[str, Any]:
        handler = op.get(HANDLER_KEY)
        spec_where = f"{where}/{AWS}integration"
        raw = op.get(f"{AWS}integration")
        if raw is None:
            if handler is not None:
                return self.function(handler, {}, f"{where}/{HANDLER_KEY}")
            proxied = self.server_upstream(path)
            if proxied is not None:
                return {"type": "http_proxy", "uri": proxied}
            self.warn(
                where,
                "no x-amazon-apigateway-integration; pygw answers 501 (add one, x-pygw-handler, "
                "or --upstream for the server URL)",
            )
            return self.stand_in("no integration")
        self.use(spec_where)
        spec = self.resolve(raw, spec_where)
        if not isinstance(spec, dict):
            return self.stand_in("integration not readable")
        if handler is None:
            handler = spec.get(HANDLER_KEY)
        kind = str(spec.get("type", "")).lower()
        for key in spec:
            if key not in _INTEGRATION_HANDLED:
                self.warn(
                    f"{spec_where}/{key}",
                    f"integration setting {key!r} is not supported; pygw ignores it",
                )
        if kind == "mock":
            return self.mock(spec, spec_where)
        if kind in ("http", "http_proxy"):
            return self.http(kind, method, route_params, spec, spec_where)
        if kind == "aws_proxy":
            if handler is None:
                handler = self.local_handler(spec.get("uri"))
            if handler is not None:
                return self.function(handler, spec, spec_where)
            uri = spec.get("uri", "no uri")
            name = lambda_name(uri) if isinstance(uri, str) else None
            self.warn(
                spec_where,
                f"aws_proxy integration ({uri}) names no local handler; pygw answers 501 (add "
                "x-pygw-handler: module:callable to the operation, or pass --handler "
                f"{name or 'URI'}=module:callable)",
            )
            return self.stand_in("aws_proxy integration without a local handler")
        self.warn(
            spec_where,
            f"integration type {spec.get('type')!r} is not supported; pygw answers 501",
        )
        return self.stand_in(f"integration type {spec.get('type')}")

    def function(self, handler: Any, spec: dict[str, Any], where: str) -> dict[str, Any]:
        if not isinstance(handler, str) or not _HANDLER_RE.match(handler):
            self.warn(where, f"x-pygw-handler {handler!r} is not module:callable; pygw answers 501")
            return self.stand_in("x-pygw-handler is not module:callable")
        self.uses_handlers = True
        out: dict[str, Any] = {"type": "function", "handler": handler}
        fmt = spec.get("payloadFormatVersion")
        if fmt is not None:
            fmt_text = f"{float(fmt):.1f}" if isinstance(fmt, int | float) else str(fmt)
            if self.style == "rest" and fmt_text != "1.0":
                self.warn(
                    f"{where}/payloadFormatVersion",
                    f"payload format {fmt_text} in a REST-style API; pygw sends 1.0",
                )
            elif self.style == "http" and fmt_text in ("1.0", "2.0"):
                out["payload_format"] = fmt_text
        timeout = spec.get("timeoutInMillis")
        if isinstance(timeout, int) and timeout > 0:
            out["timeout_ms"] = timeout
        for key in ("requestParameters", "requestTemplates", "responses"):
            if spec.get(key):
                self.warn(
                    f"{where}/{key}",
                    f"{key} of a Lambda proxy integration are not applied; pygw passes the "
                    "Lambda proxy event and result unchanged",
                )
        return out

    def mock(self, spec: dict[str, Any], where: str) -> dict[str, Any]:
        requested = 200
        templates = spec.get("requestTemplates")
        if isinstance(templates, dict) and templates:
            text = templates.get("application/json", next(iter(templates.values())))
            found = _STATUS_IN_TEMPLATE.search(str(text))
            if found:
                requested = int(found.group(1))
        if spec.get("requestParameters"):
            self.warn(
                f"{where}/requestParameters",
                "request parameters of a mock integration have no effect; pygw ignores them",
            )
        responses = _dict(spec.get("responses"))
        chosen_key, chosen = self.select_response(responses, requested)
        out: dict[str, Any] = {"type": "mock", "status": requested}
        if chosen is None:
            return out
        rwhere = f"{where}/responses/{chosen_key}"
        status = chosen.get("statusCode", requested)
        try:
            out["status"] = int(status)
        except (TypeError, ValueError):
            self.warn(
                f"{rwhere}/statusCode", f"status {status!r} is not a number; pygw uses {requested}"
            )
        headers = self.response_headers(chosen, rwhere)
        rtemplates = chosen.get("responseTemplates")
        if self.style == "rest" and isinstance(rtemplates, dict) and rtemplates:
            self.mock_templates(rtemplates, headers, f"{rwhere}/responseTemplates")
        elif isinstance(rtemplates, dict) and rtemplates:
            media = (
                "application/json" if "application/json" in rtemplates else next(iter(rtemplates))
            )
            body = rtemplates[media]
            if len(rtemplates) > 1:
                self.warn(
                    f"{rwhere}/responseTemplates",
                    f"{len(rtemplates)} response templates; pygw's mock answers with the "
                    f"{media} one",
                )
            if isinstance(body, str) and body.strip():
                if _VTL.search(body):
                    self.warn(
                        f"{rwhere}/responseTemplates/{media.replace('/', '~1')}",
                        "the response template uses VTL, which HTTP-style APIs do not render; "
                        "pygw's mock returns the template text as written",
                    )
                out["body"] = body
                if not any(h.lower() == "content-type" for h in headers):
                    headers["Content-Type"] = media
        for key in chosen:
            if key not in (
                "statusCode",
                "responseParameters",
                "responseTemplates",
                "selectionPattern",
                "contentHandling",
            ):
                self.warn(
                    f"{rwhere}/{key}", f"integration response setting {key!r} is not supported"
                )
        if headers:
            out["headers"] = headers
        others = [k for k in responses if k != chosen_key]
        if others:
            self.warn(
                f"{where}/responses",
                f"integration responses {', '.join(map(str, others))} are never selected by the "
                f"mock's status {requested}; pygw drops them",
            )
        return out

    def mock_templates(
        self, templates: dict[Any, Any], headers: dict[str, str], where: str
    ) -> None:
        """A REST-style mock answers through its response templates, rendered per request."""
        kept: dict[str, str] = {}
        for media, text in templates.items():
            if not isinstance(text, str) or "/" not in str(media):
                self.warn(
                    f"{where}/{str(media).replace('/', '~1')}",
                    "is not a media type with a template text; pygw skips it",
                )
                continue
            kept[str(media)] = text
        if not kept:
            return
        self.response_templates = kept
        # The response transform picks the template by the answer's Content-Type, then Accept,
        # then application/json; one template must be chosen whatever the client accepts.
        has_type = any(h.lower() == "content-type" for h in headers)
        if not has_type and (len(kept) == 1 or "application/json" not in kept):
            headers["Content-Type"] = (
                "application/json" if "application/json" in kept else next(iter(kept))
            )

    def select_response(
        self, responses: dict[Any, Any], status: int
    ) -> tuple[str, dict[str, Any] | None]:
        default: tuple[str, dict[str, Any] | None] = ("", None)
        for key, value in responses.items():
            if not isinstance(value, dict):
                continue
            pattern = value.get("selectionPattern")
            if key == "default" or pattern in (None, ""):
                if default[1] is None or key == "default":
                    default = (str(key), value)
                continue
            try:
                if re.fullmatch(str(pattern), str(status)):
                    return str(key), value
            except re.error:
                continue
        return default

    def response_headers(self, response: dict[str, Any], where: str) -> dict[str, str]:
        headers: dict[str, str] = {}
        params = response.get("responseParameters")
        if not isinstance(params, dict):
            return headers
        for target, value in params.items():
            name = str(target)
            literal = _quoted_literal(value)
            if name.startswith("method.response.header.") and literal is not None:
                headers[name[len("method.response.header.") :]] = literal
            else:
                self.warn(
                    f"{where}/responseParameters/{name}",
                    f"response parameter {name} = {value!r} is not a static header; pygw skips it",
                )
        return headers

    def http(
        self,
        kind: str,
        method: str,
        route_params: tuple[str, ...],
        spec: dict[str, Any],
        where: str,
    ) -> dict[str, Any]:
        uri = spec.get("uri")
        if not isinstance(uri, str) or not uri:
            self.warn(where, f"{kind} integration without a uri; pygw answers 501")
            return self.stand_in(f"{kind} integration without uri")
        uri = self.apply_upstreams(uri)
        http_method = str(spec.get("httpMethod", method)).upper()
        if http_method not in (method, "ANY") and method != "ANY":
            self.warn(
                f"{where}/httpMethod",
                f"the upstream is called with {http_method} in AWS; pygw forwards the client's "
                f"method ({method})",
            )
        renames, mapping = self.request_parameters(
            spec.get("requestParameters"), f"{where}/requestParameters"
        )

        def rename(match: re.Match[str]) -> str:
            name = match.group(1)
            return "{" + renames.get(name, name).rstrip("+") + "}"

        uri = re.sub(r"(?<!\$)\{([^{}]+)\}", rename, uri)
        for name in _PLACEHOLDER.findall(uri):
            var = _STAGE_VAR.match(name)
            if var is None:
                self.warn(
                    f"{where}/uri",
                    f"uri {spec['uri']!r} holds the placeholder ${{{name}}}, filled in at "
                    f"deployment; pygw answers 501 (pass --upstream '${{{name}}}=http://HOST:PORT')",
                )
                return self.stand_in(f"uri placeholder ${{{name}}} has no value")
            value = self.upstreams.get(f"stageVariables.{var.group(1)}")
            if value is None:
                self.warn(
                    f"{where}/uri",
                    f"stage variable {var.group(1)} in uri {spec['uri']!r} has no value; pygw "
                    f"answers 501 (pass --upstream stageVariables.{var.group(1)}=VALUE)",
                )
                return self.stand_in(f"stage variable {var.group(1)} has no value")
            self.stage_variables[var.group(1)] = value
        used = re.findall(r"(?<!\$)\{([^{}]+)\}", uri)
        missing = [p for p in used if p not in route_params]
        if missing:
            self.warn(
                f"{where}/uri",
                f"uri uses {', '.join('{' + m + '}' for m in missing)}, which the route does not "
                "capture; pygw answers 501",
            )
            return self.stand_in("uri uses a parameter the route does not capture")
        if not re.match(r"^(https?://[^/\s]+|\$\{stageVariables\.)", uri):
            self.warn(f"{where}/uri", f"uri {uri!r} is not an http(s) URL; pygw answers 501")
            return self.stand_in("uri is not an http(s) URL")
        out: dict[str, Any] = {"type": "http_proxy", "uri": uri}
        timeout = spec.get("timeoutInMillis")
        if isinstance(timeout, int) and timeout > 0:
            out["timeout_ms"] = timeout
        tls = spec.get("tlsConfig")
        if isinstance(tls, dict) and tls.get("insecureSkipVerification") is True:
            out["tls_verify"] = False
        if kind == "http":
            for key in ("requestTemplates",):
                if spec.get(key):
                    self.warn(
                        f"{where}/{key}",
                        "request templates of an http integration are not applied; pygw passes "
                        "the request body through",
                    )
            responses = spec.get("responses")
            if isinstance(responses, dict) and responses:
                # The default response's literal headers go on every answer; AWS would pick a
                # response per upstream status and render its templates.
                key, default = self.select_response(responses, 200)
                if default is not None:
                    static = self.response_headers(default, f"{where}/responses/{key}")
                    if static:
                        out["response_headers"] = static
                self.warn(
                    f"{where}/responses",
                    "integration responses' status selection and templates are not applied; "
                    "pygw passes the upstream response through, with the default response's "
                    "static headers",
                )
        self.mapping.update(mapping)
        return out

    def request_parameters(self, params: Any, where: str) -> tuple[dict[str, str], dict[str, str]]:
        """Path renames for the uri, and (HTTP-style) mapping entries for the rest."""
        renames: dict[str, str] = {}
        mapping: dict[str, str] = {}
        if not isinstance(params, dict):
            return renames, mapping
        for target, value in params.items():
            here = f"{where}/{target}"
            name = str(target)
            source = value if isinstance(value, str) else None
            literal = _quoted_literal(value)
            dest = re.match(r"^integration\.request\.(path|querystring|header)\.(.+)$", name)
            if dest is None:
                # HTTP APIs write `append:header.x` / `overwrite:querystring.x` directly.
                http_form = re.match(
                    r"^(append|overwrite|remove):(header|querystring)\.(.+)$|^overwrite:path$", name
                )
                if http_form and self.style == "http" and source is not None:
                    mapping[name] = source
                else:
                    self.warn(here, f"request parameter {name!r} is not supported; pygw skips it")
                continue
            where_to, dest_name = dest.group(1), dest.group(2)
            src = re.match(
                r"^method\.request\.(path|querystring|header|multivaluequerystring|multivalueheader)\.(.+)$",
                source or "",
            )
            if where_to == "path":
                if src is not None and src.group(1) == "path":
                    renames[dest_name] = src.group(2)
                else:
                    self.warn(
                        here,
                        f"path parameter {dest_name} from {value!r} is not supported; the uri's "
                        f"{{{dest_name}}} must be a route parameter",
                    )
                continue
            if (
                src is not None
                and src.group(1).replace("multivalue", "") == where_to
                and src.group(2).lower() == dest_name.lower()
            ):
                continue  # pygw forwards headers and query parameters unchanged anyway
            if self.style == "http":
                if literal is not None:
                    mapping[f"overwrite:{where_to}.{dest_name}"] = literal
                    continue
                if src is not None:
                    kind = src.group(1).replace("multivalue", "")
                    mapping[f"overwrite:{where_to}.{dest_name}"] = f"$request.{kind}.{src.group(2)}"
                    continue
                if source and re.match(r"^(context|stageVariables)\.", source):
                    mapping[f"overwrite:{where_to}.{dest_name}"] = "$" + source
                    continue
            self.warn(
                here,
                f"request parameter {name} = {value!r} is not applied; pygw forwards the "
                "client's headers and query string unchanged"
                + (
                    " (HTTP-style APIs can express it as a mapping)" if self.style == "rest" else ""
                ),
            )
        return renames, mapping

    def apply_upstreams(self, uri: str) -> str:
        for key, local in self.upstreams.items():
            if key.startswith("${") and key in uri:
                uri = uri.replace(key, local.rstrip("/"))
        prefixes = sorted((k for k in self.upstreams if "://" in k), key=len, reverse=True)
        for key in prefixes:
            if uri.startswith(key.rstrip("/")):
                return self.upstreams[key].rstrip("/") + uri[len(key.rstrip("/")) :]
        parts = urlsplit(uri) if "://" in uri else None
        if parts is not None and parts.netloc:
            for key, local in self.upstreams.items():
                if "://" in key or key.startswith("${") or key.startswith("stageVariables."):
                    continue
                if key.lower() in (parts.netloc.lower(), (parts.hostname or "").lower()):
                    rest = uri[len(f"{parts.scheme}://{parts.netloc}") :]
                    return local.rstrip("/") + rest
        return uri

    def server_upstream(self, path: str) -> str | None:
        """For an operation without integration: the upstream given for the API's server."""
        candidates: list[str] = []
        if self.swagger:
            host = self.doc.get("host")
            if isinstance(host, str):
                candidates.append(host)
        else:
            for server in self.doc.get("servers") or []:
                if isinstance(server, dict) and isinstance(server.get("url"), str):
                    candidates.append(server["url"])
        for candidate in candidates:
            for key, local in self.upstreams.items():
                host = urlsplit(candidate).hostname if "://" in candidate else candidate
                if key.rstrip("/") == candidate.rstrip("/") or (
                    host and key.lower() == host.lower()
                ):
                    return local.rstrip("/") + path
        return None

    # -------------------------------------------------------------------------------- security

    def security(self, op: dict[str, Any], route: dict[str, Any], where: str) -> None:
        if "security" in op:
            requirements = op.get("security")
            req_where = f"{where}/security"
        else:
            requirements = self.doc.get("security")
            req_where = pointer("security")
        if not isinstance(requirements, list) or not requirements:
            return
        if len(requirements) > 1:
            self.warn(
                req_where,
                f"{len(requirements)} alternative security requirements; pygw enforces the first",
            )
        first = requirements[0]
        if not isinstance(first, dict) or not first:
            return
        authorizer: tuple[str, list[str], bool] | None = None
        for scheme_name, scopes in first.items():
            auth = self.scheme(str(scheme_name))
            if auth.kind == "iam":
                self.use_iam(route)
                continue
            if auth.kind == "api_key":
                if self.style == "rest":
                    route["api_key_required"] = True
                    self.needs_api_keys = True
                else:
                    self.warn(req_where, "API keys are REST-style only; pygw does not require one")
            elif auth.kind == "authorizer" and auth.name is not None:
                if authorizer is not None:
                    self.warn(
                        req_where,
                        "several authorizers required together; pygw enforces "
                        f"{authorizer[0]!r} only",
                    )
                    continue
                authorizer = (auth.name, list(scopes or []), auth.is_jwt)
        if authorizer is not None and route.get("authorization") == "aws_iam":
            self.warn(req_where, "SigV4 (AWS_IAM) and an authorizer together; pygw enforces SigV4")
        elif authorizer is not None:
            name, scopes, is_jwt = authorizer
            route["authorizer"] = name
            if scopes and is_jwt:
                route["scopes"] = [str(s) for s in scopes]
            elif scopes:
                self.warn(
                    req_where, f"scopes {scopes} apply to JWT authorizers only; pygw ignores them"
                )
        # Swagger/OAS `apiKeyRequired`-style flag on the operation (rare, but AWS exports it).

    def method_auth(self, op: dict[str, Any], route: dict[str, Any], where: str) -> None:
        """`x-amazon-apigateway-auth` on an operation: AWS_IAM (SigV4), or NONE."""
        auth = op.get(f"{AWS}auth")
        if not isinstance(auth, dict):
            return
        kind = str(auth.get("type", "")).upper()
        if kind not in ("AWS_IAM", "NONE"):
            return  # left for the sweep to warn about
        self.use(f"{where}/{AWS}auth")
        if kind == "AWS_IAM":
            self.use_iam(route)
        else:
            route.pop("authorization", None)

    def use_iam(self, route: dict[str, Any]) -> None:
        route["authorization"] = "aws_iam"
        route.pop("authorizer", None)
        route.pop("scopes", None)
        self.needs_iam = True

    def scheme(self, name: str) -> _Auth:
        if name in self.auth_cache:
            return self.auth_cache[name]
        if self.swagger:
            schemes = self.doc.get("securityDefinitions") or {}
            where = pointer("securityDefinitions", name)
        else:
            components = self.doc.get("components") or {}
            schemes = (
                components.get("securitySchemes") or {} if isinstance(components, dict) else {}
            )
            where = pointer("components", "securitySchemes", name)
        raw = schemes.get(name) if isinstance(schemes, dict) else None
        scheme = self.resolve(raw, where)
        auth = self.import_scheme(name, scheme, where)
        self.auth_cache[name] = auth
        return auth

    def import_scheme(self, name: str, scheme: Any, where: str) -> _Auth:
        if not isinstance(scheme, dict):
            self.warn(
                where, f"security scheme {name!r} is not defined; pygw enforces nothing for it"
            )
            return _Auth("none")
        spec = scheme.get(f"{AWS}authorizer")
        if spec is None and str(scheme.get(f"{AWS}authtype", "")).lower() == "awssigv4":
            return _Auth("iam")
        if spec is None:
            if (
                scheme.get("type") == "apiKey"
                and str(scheme.get("name", "")).lower() == "x-api-key"
                and scheme.get("in") == "header"
            ):
                return _Auth("api_key")
            self.warn(
                where,
                f"security scheme {name!r} has no x-amazon-apigateway-authorizer; pygw does not "
                "enforce it",
            )
            return _Auth("none")
        awhere = f"{where}/{AWS}authorizer"
        self.use(awhere)
        if not isinstance(spec, dict):
            return self.refusing(name, awhere, "the authorizer is not a mapping")
        kind = str(spec.get("type", "")).lower()
        handler = scheme.get(HANDLER_KEY, spec.get(HANDLER_KEY))
        if kind == "cognito_user_pools":
            return self.cognito(name, spec, scheme, awhere)
        if kind == "jwt":
            return self.jwt(name, spec, awhere)
        if kind in ("token", "request"):
            if handler is None:
                handler = self.local_handler(spec.get("authorizerUri"))
            if handler is None or not isinstance(handler, str) or not _HANDLER_RE.match(handler):
                uri = spec.get("authorizerUri", "no uri")
                fn = lambda_name(uri) if isinstance(uri, str) else None
                return self.refusing(
                    name,
                    awhere,
                    f"Lambda authorizer ({uri}) names no local callable (add x-pygw-handler: "
                    f"module:callable to the security scheme, or pass --handler "
                    f"{fn or 'URI'}=module:callable)",
                )
            return self.custom(name, kind.upper(), handler, spec, scheme, awhere)
        return self.refusing(name, awhere, f"authorizer type {spec.get('type')!r} is not supported")

    def refusing(self, name: str, where: str, reason: str) -> _Auth:
        self.warn(where, f"{reason}; routes using {name!r} refuse every request with 401")
        self.refused.add(name)
        self.authorizers[name] = {
            "type": "custom",
            "handler": REFUSING_HANDLER,
            "kind": "REQUEST",
            "identity_source": [],
            "ttl_s": 0,
        }
        return _Auth("authorizer", name)

    def identity_sources(self, raw: Any, scheme: dict[str, Any]) -> list[str]:
        out: list[str] = []
        if isinstance(raw, str):
            items = [s.strip() for s in raw.split(",") if s.strip()]
        elif isinstance(raw, list):
            items = [str(s).strip() for s in raw]
        else:
            items = []
        for item in items:
            for prefix in ("method.request.", "$request.", "$"):
                if item.startswith(prefix):
                    item = item[len(prefix) :]
                    break
            if item.startswith(("header.", "querystring.", "path.", "context.", "stageVariables.")):
                out.append(item.lower() if item.startswith("header.") else item)
        if not out and scheme.get("in") in ("header", "query") and scheme.get("name"):
            place = "header" if scheme["in"] == "header" else "querystring"
            name = str(scheme["name"])
            out.append(f"{place}.{name.lower() if place == 'header' else name}")
        return out

    def custom(
        self,
        name: str,
        kind: str,
        handler: str,
        spec: dict[str, Any],
        scheme: dict[str, Any],
        where: str,
    ) -> _Auth:
        self.uses_handlers = True
        sources = self.identity_sources(spec.get("identitySource"), scheme)
        out: dict[str, Any] = {"type": "custom", "handler": handler, "kind": kind}
        if kind == "TOKEN":
            headers = [s for s in sources if s.startswith("header.")]
            out["identity_source"] = headers[:1] or ["header.authorization"]
            regex = spec.get("identityValidationExpression")
            if isinstance(regex, str) and regex:
                try:
                    re.compile(regex)
                    out["validation_regex"] = regex
                except re.error:
                    self.warn(
                        f"{where}/identityValidationExpression", "does not compile; pygw skips it"
                    )
        else:
            out["identity_source"] = sources
        ttl = spec.get("authorizerResultTtlInSeconds")
        if isinstance(ttl, int) and not isinstance(ttl, bool):
            out["ttl_s"] = max(0, min(ttl, 3600))
        if self.style == "http":
            fmt = spec.get("authorizerPayloadFormatVersion")
            if fmt is not None:
                out["payload_format"] = (
                    f"{float(fmt):.1f}" if isinstance(fmt, int | float) else str(fmt)
                )
            if (
                spec.get("enableSimpleResponses") is True
                and out.get("payload_format", "2.0") == "2.0"
            ):
                out["simple_responses"] = True
        elif spec.get("enableSimpleResponses") is True:
            self.warn(
                f"{where}/enableSimpleResponses",
                "simple responses are HTTP-style only; pygw expects a policy",
            )
        for key in spec:
            if key not in (
                "type",
                "authorizerUri",
                "authorizerCredentials",
                "identitySource",
                "identityValidationExpression",
                "authorizerResultTtlInSeconds",
                "authorizerPayloadFormatVersion",
                "enableSimpleResponses",
                HANDLER_KEY,
            ):
                self.warn(f"{where}/{key}", f"authorizer setting {key!r} is not supported")
        self.authorizers[name] = out
        return _Auth("authorizer", name)

    def override(self, table: dict[str, str], used: set[str], name: str, arns: list[Any]) -> Any:
        """The --user-pool / --jwks value for a Cognito scheme: by its name, by one of its
        providerARNs entries (a placeholder such as ${cognito_pool_arn}), or ``*``."""
        for key in (name, *(str(a) for a in arns), "*"):
            if key in table:
                used.add(key)
                return table[key]
        return None

    def cognito(self, name: str, spec: dict[str, Any], scheme: dict[str, Any], where: str) -> _Auth:
        raw = spec.get("providerARNs")
        listed: list[Any] = raw if isinstance(raw, list) else []
        given = self.override(self.user_pools, self.user_pools_used, name, listed)
        arns = [given] if given is not None else [str(a) for a in listed]
        readable = [a for a in arns if cognito_issuer(a) is not None]
        if not readable:
            return self.refusing(
                name,
                where,
                f"Cognito user pool {listed!r} is not a user pool ARN pygw can read "
                "(arn:aws:cognito-idp:REGION:ACCOUNT:userpool/POOL_ID; pass --user-pool "
                f"{name}=ARN for a deployment-time placeholder)",
            )
        for arn in arns:
            if arn not in readable:
                self.warn(where, f"provider ARN {arn!r} is not a user pool ARN; pygw skips it")
        audience = scheme.get(AUDIENCE_KEY, spec.get(AUDIENCE_KEY))
        if isinstance(audience, str):
            audience = [audience]
        jwks = self.override(self.jwks, self.jwks_used, name, listed)
        if jwks is None:
            jwks = scheme.get(JWKS_KEY, spec.get(JWKS_KEY))
        sources = self.identity_sources(spec.get("identitySource"), scheme)
        if self.style != "rest":
            # HTTP APIs authorise Cognito tokens with a JWT authorizer, which needs an audience.
            if not audience:
                return self.refusing(
                    name,
                    where,
                    "an HTTP-style JWT authorizer checks a token's audience and this Cognito "
                    "authorizer names none (add x-pygw-audience: [APP_CLIENT_ID] to the security "
                    "scheme)",
                )
            out: dict[str, Any] = {
                "type": "jwt",
                "issuer": cognito_issuer(readable[0]),
                "audience": [str(a) for a in audience],
            }
            if len(readable) > 1:
                self.warn(where, "an HTTP-style JWT authorizer has one issuer: pygw uses the first")
        else:
            out = {"type": "cognito_user_pools", "provider_arns": readable}
            if audience:
                out["app_clients"] = [str(a) for a in audience]
        if isinstance(jwks, str) and jwks:
            out["jwks"] = jwks
        if sources:
            out["identity_source"] = sources[:1]
        for key in spec:
            if key not in ("type", "providerARNs", "identitySource", AUDIENCE_KEY, JWKS_KEY):
                self.warn(f"{where}/{key}", f"authorizer setting {key!r} is not supported")
        self.authorizers[name] = out
        return _Auth("authorizer", name, is_jwt=True)

    def jwt(self, name: str, spec: dict[str, Any], where: str) -> _Auth:
        conf = _dict(spec.get("jwtConfiguration"))
        issuer = conf.get("issuer")
        audience = conf.get("audience")
        if isinstance(audience, str):
            audience = [audience]
        if (
            not isinstance(issuer, str)
            or not issuer.startswith(("https://", "http://"))
            or not audience
        ):
            return self.refusing(
                name, where, "the JWT authorizer lacks an issuer URL or an audience"
            )
        out: dict[str, Any] = {
            "type": "jwt",
            "issuer": issuer,
            "audience": [str(a) for a in audience],
        }
        sources = self.identity_sources(spec.get("identitySource"), {})
        if sources:
            out["identity_source"] = sources
        self.authorizers[name] = out
        return _Auth("authorizer", name, is_jwt=True)

    # ------------------------------------------------------------------------------ validation

    def validation(
        self, op: dict[str, Any], params: list[dict[str, Any]], route: dict[str, Any], where: str
    ) -> None:
        op_where = f"{where}/{AWS}request-validator"
        name = op.get(f"{AWS}request-validator")
        if name is not None:
            self.use(op_where)
        else:
            name = self.doc.get(f"{AWS}request-validator")
            op_where = pointer(f"{AWS}request-validator")
        if name is None:
            return
        validators = self.doc.get(f"{AWS}request-validators")
        validator = validators.get(name) if isinstance(validators, dict) else None
        if not isinstance(validator, dict):
            self.warn(
                op_where, f"request validator {name!r} is not defined; pygw validates nothing"
            )
            return
        check_params = validator.get("validateRequestParameters") is True
        check_body = validator.get("validateRequestBody") is True
        if not (check_params or check_body):
            return
        if self.style != "rest":
            self.warn(op_where, "request validation is REST-style only; pygw does not validate")
            return
        validate: dict[str, Any] = {}
        if check_params:
            required = []
            for param in params:
                place = {"query": "querystring", "header": "header"}.get(str(param.get("in")))
                if place and param.get("required") is True:
                    pname = str(param["name"])
                    required.append(f"{place}.{pname.lower() if place == 'header' else pname}")
            if required:
                validate["params"] = required
        if check_body:
            model = self.body_model(op, params, where)
            if model is not None:
                validate["body"] = model
        if validate:
            route["validate"] = validate

    def body_model(
        self, op: dict[str, Any], params: list[dict[str, Any]], where: str
    ) -> str | None:
        schema: Any = None
        if self.swagger:
            for param in params:
                if param.get("in") == "body":
                    schema = param.get("schema")
        else:
            body = self.resolve(op.get("requestBody"), f"{where}/requestBody")
            content = body.get("content") if isinstance(body, dict) else None
            if isinstance(content, dict) and content:
                media = content.get("application/json") or next(iter(content.values()))
                if isinstance(media, dict):
                    schema = media.get("schema")
                if len(content) > 1:
                    self.warn(
                        f"{where}/requestBody/content",
                        "several media types; pygw validates bodies against the application/json "
                        "schema (or the first)",
                    )
        if not isinstance(schema, dict):
            return None
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            name = ref.rsplit("/", 1)[-1]
        else:
            digest = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:8]
            name = f"body-{digest}"
        name = _NAME_BAD.sub("-", name)
        if name not in self.models:
            self.models[name] = self.inline(schema, f"{where}")
        return name


def import_openapi(
    path: Path,
    *,
    stage: str | None = None,
    upstreams: dict[str, str] | None = None,
    style: str = "rest",
    handlers: dict[str, str] | None = None,
    jwks: dict[str, str] | None = None,
    user_pools: dict[str, str] | None = None,
) -> ImportResult:
    """Import an OpenAPI 3 / Swagger 2.0 definition; raises ConfigError when it cannot be read."""
    path = Path(path)
    if style not in ("rest", "http"):
        raise ValueError(f"style {style!r}: write rest or http")
    if stage is not None:
        try:
            StageConfig(name=stage)
        except ValidationError as err:
            message = err.errors()[0].get("ctx", {}).get("message", "invalid stage name")
            raise ConfigError(
                [ConfigIssue(str(path), "", f"--stage: {message}", "use letters, digits, '-', '_'")]
            ) from None
    doc = read_definition(path)
    if not isinstance(doc, dict) or not (
        str(doc.get("swagger", "")).startswith("2") or str(doc.get("openapi", "")).startswith("3")
    ):
        raise ConfigError(
            [
                ConfigIssue(
                    str(path),
                    "",
                    "not an OpenAPI 3 or Swagger 2.0 definition (no 'openapi: 3.x' or "
                    "'swagger: \"2.0\"')",
                    "import an OpenAPI 3.0 or Swagger 2.0 file",
                )
            ]
        )
    return import_openapi_document(
        doc,
        path,
        stage=stage,
        upstreams=upstreams,
        style=style,
        handlers=handlers,
        jwks=jwks,
        user_pools=user_pools,
    )


def import_openapi_document(
    doc: dict[str, Any],
    path: Path,
    *,
    stage: str | None = None,
    upstreams: dict[str, str] | None = None,
    style: str = "rest",
    handlers: dict[str, str] | None = None,
    jwks: dict[str, str] | None = None,
    user_pools: dict[str, str] | None = None,
) -> ImportResult:
    """Import a definition already read (a SAM template's DefinitionBody); `path` is where it
    came from, for messages and the handlers' folder."""
    importer = _Importer(doc, path, stage, upstreams or {}, style, handlers, jwks, user_pools)
    config = importer.run()
    errors = list(importer.errors)
    try:
        # The import must always be a configuration pygw accepts; say so if it is not.
        parse_config(yaml.safe_dump(config), str(path), env={API_KEY_ENV: "check"})
    except ConfigError as failure:
        errors.extend(f"the imported configuration is invalid: {issue}" for issue in failure.errors)
    return ImportResult(config=config, warnings=importer.warnings, source=str(path), errors=errors)


def load_openapi_config(
    path: str | Path,
    stage: str | None = None,
    upstreams: dict[str, str] | None = None,
    *,
    style: str = "rest",
    admin_listen: str | None = None,
    handlers: dict[str, str] | None = None,
    jwks: dict[str, str] | None = None,
    user_pools: dict[str, str] | None = None,
) -> LoadedConfig:
    """What `pygw serve --openapi` serves: the imported config, validated, warnings logged."""
    spec = Path(path)
    result = import_openapi(
        spec,
        stage=stage,
        upstreams=upstreams,
        style=style,
        handlers=handlers,
        jwks=jwks,
        user_pools=user_pools,
    )
    for warning in result.warnings:
        log.warning("%s: %s", spec, warning)
    for error in result.errors:
        log.error("%s: %s", spec, error)
    config = dict(result.config)
    if admin_listen is not None:
        config["admin"] = {"listen": admin_listen}
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    parsed = parse_config(text, str(spec))
    absolute = spec.resolve()
    return LoadedConfig(config=parsed, path=absolute, folder=absolute.parent)
