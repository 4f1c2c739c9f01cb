"""Identity sources: where an authorizer reads its token or identity (`header.authorization`,
`querystring.token`, `context.identity.sourceIp`, ...), read from a request's context. Shared by
the JWT, Cognito and custom authorizers."""

from __future__ import annotations

from collections.abc import Callable

from pygw._native import header_value
from pygw.context import RequestContext

IdentityGetter = Callable[[RequestContext], str | None]

_CONTEXT_SOURCES: dict[str, IdentityGetter] = {
    "requestId": lambda ctx: ctx.request_id,
    "identity.sourceIp": lambda ctx: ctx.client_ip,
    "httpMethod": lambda ctx: ctx.request.method,
    "path": lambda ctx: ctx.path,
}


def _header_getter(name: str) -> IdentityGetter:
    """The header's first value as the header map decodes it, read from the headers as sent:
    the map is not built for an authorizer's token. A name that is not ASCII (never a valid
    HTTP token) is looked up in the map."""
    lower = name.lower()
    if not lower.isascii():
        return lambda ctx: ctx.request.headers.get(lower)
    raw_name = lower.encode("ascii")

    def header(ctx: RequestContext) -> str | None:
        value = header_value(ctx.request.raw_headers, raw_name)
        return None if value is None else value.decode("utf-8", "surrogateescape")

    return header


def identity_getter(source: str) -> IdentityGetter:
    """A function reading one normalised identity source (``header.authorization``, ...).

    Raises ValueError for a source it cannot read, so that the problem shows at load.
    """
    kind, _, name = source.partition(".")
    if not name:
        raise ValueError(f"identity source {source!r} names no parameter")
    if kind == "header":
        return _header_getter(name)
    if kind == "querystring":

        def query(ctx: RequestContext) -> str | None:
            values = ctx.request.query.getall(name, ())
            return values[-1] if values else None

        return query
    if kind == "path":
        return lambda ctx: ctx.params.get(name)
    if kind == "stageVariables":
        return lambda ctx: ctx.stage_variables.get(name)
    if kind == "context":
        found = _CONTEXT_SOURCES.get(name)
        if found is None:
            known = ", ".join("context." + k for k in _CONTEXT_SOURCES)
            raise ValueError(f"identity source {source!r} is not supported (use one of {known})")
        return found
    raise ValueError(f"identity source {source!r} is not a request parameter reference")
