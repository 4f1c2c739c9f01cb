"""The request body as stages read it: once per request, bounded, kept in `ctx.body` (which the
integration then sends instead of reading the request again)."""

from __future__ import annotations

import json
from typing import Any

import orjson

from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError

DEFAULT_MAX_BODY_BYTES = 10_485_760


async def read_body(ctx: RequestContext, max_body_bytes: int) -> bytes:
    """The request body, read once per request and kept in ctx.body.

    Bounded by `max_body_bytes` also for chunked uploads, which carry no Content-Length for the
    dispatcher to check."""
    found = ctx.body
    if isinstance(found, bytes):
        return found
    request = ctx.request
    if not request.body_exists:
        ctx.body = b""
        return b""
    parts: list[bytes] = []
    size = 0
    content = request.content
    while True:
        chunk = await content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > max_body_bytes:
            raise GatewayError(ErrorType.REQUEST_TOO_LARGE)
        parts.append(chunk)
    body = b"".join(parts)
    ctx.body = body
    return body


def parse_json_body(body: bytes) -> Any:
    """The body as JSON (empty → {}); raises ValueError when it is not JSON."""
    if not body.strip():
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses integers beyond 64 bits, which are valid JSON.
        return json.loads(body)
