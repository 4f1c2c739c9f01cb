"""Request validation (REST-style): required parameters and a JSON Schema body model.

Answers as AWS API Gateway's request validators were recorded answering
(testdata/aws-parity/test_apigateway_common.snapshot.json):

- missing parameters: 400 ``{"message": "Missing required request parameters: [a, b]"}``, names
  listed headers first, then path parameters, then query strings (each in config order);
- a body that is not JSON or does not match the model: 400 ``{"message": "Invalid request body"}``.
  An empty body is checked as ``{}`` (AWS refuses an empty body when the model requires
  properties). The body is checked whatever its content type: the route declares its model.

Models are JSON Schema draft-04 (as AWS's are). A model may refer to another model of the API as
``#/definitions/Other`` or AWS's ``https://apigateway.amazonaws.com/restapis/{id}/models/Other``;
anything else outside the document is refused at load (no schema is ever fetched).

Writes `ctx.body` (the request body bytes: reading it consumes the client's stream, so
integrations send these bytes instead of reading the request; see `read_body`).
"""

from __future__ import annotations

import copy
import functools
import logging
import re
from collections.abc import Callable
from typing import Any

import fastjsonschema
import orjson

from pygw._native import ParamsCheck, header_value
from pygw.body import DEFAULT_MAX_BODY_BYTES, parse_json_body, read_body
from pygw.config.model import ApiConfig, RouteConfig
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.pipeline import LeanView
from pygw.query_params import QueryNames
from pygw.response import Response

__all__ = [
    "ValidateStage",
    "build_validate_stage",
    "compile_model",
]

log = logging.getLogger("pygw")

_MISSING_PARAMS = "Missing required request parameters: [{}]"
_AWS_MODEL_REF = re.compile(r"^https?://apigateway\.amazonaws\.com/restapis/[^/]+/models/([^/#]+)$")
_LOCAL_MODEL_REF = re.compile(r"^#/definitions/([^/]+)$")
_DRAFT_04 = "http://json-schema.org/draft-04/schema#"


def _rewrite_refs(node: Any, models: dict[str, dict[str, Any]], owner: str) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                out[key] = _model_ref(value, models, owner)
            else:
                out[key] = _rewrite_refs(value, models, owner)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, models, owner) for item in node]
    return node


def _model_ref(ref: str, models: dict[str, dict[str, Any]], owner: str) -> str:
    aws = _AWS_MODEL_REF.match(ref)
    if aws is not None:
        name = aws.group(1)
        if name not in models:
            raise ValueError(f"model {owner!r}: $ref {ref!r} names unknown model {name!r}")
        return f"#/definitions/{name}"
    if ref.startswith("#"):
        return ref
    raise ValueError(
        f"model {owner!r}: $ref {ref!r} is outside the API's models "
        "(write #/definitions/NAME or https://apigateway.amazonaws.com/restapis/ID/models/NAME)"
    )


def _check_local_refs(node: Any, document: dict[str, Any], owner: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                local = _LOCAL_MODEL_REF.match(value)
                if local is not None and local.group(1) not in document.get("definitions", {}):
                    raise ValueError(
                        f"model {owner!r}: $ref {value!r} names no model or definition"
                    )
            else:
                _check_local_refs(value, document, owner)
    elif isinstance(node, list):
        for item in node:
            _check_local_refs(item, document, owner)


def model_document(models: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """One self-contained draft-04 document for model `name`: every model of the API is in its
    `definitions` (the model's own definitions win a clash), so `#/definitions/Other` resolves."""
    if name not in models:
        raise ValueError(f"unknown model {name!r}")
    definitions: dict[str, Any] = {}
    for other, schema in models.items():
        embedded = {k: v for k, v in schema.items() if k not in ("$schema", "id", "$id")}
        definitions[other] = _rewrite_refs(embedded, models, other)
    root: dict[str, Any] = _rewrite_refs(copy.deepcopy(models[name]), models, name)
    own = root.get("definitions")
    root["definitions"] = {**definitions, **own} if isinstance(own, dict) else definitions
    root.pop("id", None)
    root.pop("$id", None)
    root.setdefault("$schema", _DRAFT_04)
    _check_local_refs(root, root, name)
    return root


def _refuse_remote(uri: str) -> Any:
    raise ValueError(f"remote $ref {uri!r} is not fetched")


@functools.lru_cache(maxsize=256)
def _compile_document(document_json: str, name: str) -> Callable[[Any], Any]:
    try:
        return fastjsonschema.compile(
            orjson.loads(document_json),
            handlers={"http": _refuse_remote, "https": _refuse_remote},
            use_default=False,
        )
    except (fastjsonschema.JsonSchemaDefinitionException, ValueError, TypeError) as exc:
        raise ValueError(f"model {name!r} is not a valid JSON Schema: {exc}") from None
    except RecursionError:
        raise ValueError(f"model {name!r} refers to itself without end") from None


def compile_model(models: dict[str, dict[str, Any]], name: str) -> Callable[[Any], Any]:
    """A validator for model `name` (raises fastjsonschema.JsonSchemaException on bad data);
    raises ValueError naming the model when the schema is not usable. Compiled once per distinct
    schema, so routes and reloads that share a model share the code."""
    document = model_document(models, name)
    return _compile_document(orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode(), name)


# Query strings whose missing names are remembered, and the longest one remembered (a request
# repeats a query string seen before far more often than not; a bounded memo whatever the traffic).
_QUERY_MEMO_SIZE = 4096
_QUERY_MEMO_MAX_LEN = 256


def _raw_name(name: str) -> bytes:
    """The lower-cased header name as header_value takes it (a name that is not ASCII, never a
    valid HTTP token, as UTF-8: it matches only those bytes, ASCII letters folded)."""
    return name.encode("utf-8")


class ValidateStage:
    __slots__ = (
        "_headers",
        "_max_body_bytes",
        "_missing_query",
        "_model",
        "_path",
        "_query",
        "_query_names",
        "_validator",
        "check",
        "check_lean",
        "native_check_lean",
    )

    def __init__(
        self,
        params: list[str],
        validator: Callable[[Any], Any] | None,
        model: str | None,
        max_body_bytes: int,
    ) -> None:
        self._headers: tuple[tuple[str, bytes], ...] = ()
        self._path: tuple[str, ...] = ()
        self._query: tuple[str, ...] = ()
        for ref in params:
            location, _, name = ref.partition(".")
            if location == "header":
                lower = name.lower()
                self._headers += ((lower, _raw_name(lower)),)
            elif location == "path":
                self._path += (name,)
            else:
                self._query += (name,)
        self._query_names = QueryNames(self._query)
        # raw query string -> the configured query names it lacks, in config order
        self._missing_query: dict[str, tuple[str, ...]] = {}
        self._validator = validator
        self._model = model
        self._max_body_bytes = max_body_bytes
        # Without a body model nothing waits: the pipeline may call the check directly.
        self.check: Callable[[RequestContext], None] | None = (
            self._check_params if validator is None else None
        )
        self.check_lean: Callable[[LeanView], None] | None = (
            self._check_lean if validator is None else None
        )
        # That check in one native step for a request with every parameter (Pipeline.check_lean).
        self.native_check_lean: ParamsCheck | None = (
            ParamsCheck(
                [raw for _, raw in self._headers],
                list(self._path),
                list(self._query),
                self._check_lean,
            )
            if validator is None
            else None
        )

    async def __call__(self, ctx: RequestContext) -> Response | None:
        self._check_params(ctx)
        validator = self._validator
        if validator is None:
            return None
        body = await read_body(ctx, self._max_body_bytes)
        try:
            validator(parse_json_body(body))
        except (ValueError, fastjsonschema.JsonSchemaException, RecursionError) as exc:
            log.debug("request %s: body fails model %s: %s", ctx.request_id, self._model, exc)
            raise GatewayError(ErrorType.BAD_REQUEST_BODY) from None
        return None

    def _check_params(self, ctx: RequestContext) -> None:
        request = ctx.request
        self._check_raw(request.raw_headers, ctx.params, request.raw_path.partition("?")[2])

    def _check_lean(self, lean: LeanView) -> None:
        self._check_raw(lean.raw_headers, lean.params, lean.raw_query)

    def _check_raw(
        self,
        raw_headers: tuple[tuple[bytes, bytes], ...],
        params: dict[str, str],
        raw_query: str,
    ) -> None:
        # Plain loops: the usual request has everything, and a generator per location costs
        # more than the checks themselves. Headers are looked up as sent, and the query's
        # names read from the raw string: neither the header map nor the query's MultiDict is
        # built for a presence check.
        missing: list[str] = []
        if self._headers:
            for name, raw in self._headers:
                if header_value(raw_headers, raw) is None:
                    missing.append(name)
        if self._path:
            for name in self._path:
                if not params.get(name):
                    missing.append(name)
        if self._query:
            memo = self._missing_query
            lacking = memo.get(raw_query)
            if lacking is None:
                lacking = self._query_names.missing(raw_query)
                if len(raw_query) <= _QUERY_MEMO_MAX_LEN:
                    if len(memo) >= _QUERY_MEMO_SIZE:
                        memo.clear()
                    memo[raw_query] = lacking
            if lacking:
                missing += lacking
        if missing:
            raise GatewayError(
                ErrorType.BAD_REQUEST_PARAMETERS, detail=_MISSING_PARAMS.format(", ".join(missing))
            )


def build_validate_stage(
    api_cfg: ApiConfig,
    route_cfg: RouteConfig,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> ValidateStage | None:
    """The route's validation stage, or None when it validates nothing. Raises ValueError naming
    the model when the body model is unknown or is not a usable JSON Schema."""
    config = route_cfg.validation
    if config is None or (not config.params and config.body is None):
        return None
    validator = None
    if config.body is not None:
        validator = compile_model(api_cfg.models, config.body)
    return ValidateStage(list(config.params), validator, config.body, max_body_bytes)
