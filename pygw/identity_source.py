"""Identity sources: where an authorizer reads its token or identity (`header.authorization`,
`querystring.token`, `context.identity.sourceIp`, ...), read from a request's context. Shared by
the JWT, Cognito and custom authorizers."""

from __future__ import annotations

from collections.abc import Callable

from pygw.context import RequestContext

IdentityGetter = Callable[[RequestContext], str | None]

_CONTEXT_SOURCES: dict[str, IdentityGetter] = {
    "requestId": lambda ctx: ctx.request_id,
    "identity.sourceIp": lambda ctx: ctx.client_ip,
    "httpMethod": lambda ctx: ctx.request.method,
    "path": lambda ctx: ctx.path,
}


def identity_getter(source: str) -> IdentityGetter:
    """A function reading one normalised identity source (``header.authorization``, ...).

    Raises ValueError for a source it cannot read, so that the problem shows at load.
    """
    kind, _, name = source.partition(".")
    if not name:
        raise ValueError(f"identity source {source!r} names no parameter")
    if kind == "header":
        return lambda ctx: ctx.request.headers.get(name)
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
