"""The @connections API where AWS has it: `/{stage}/@connections/{connectionId}` on the WebSocket
API's own listener, so boto3's `apigatewaymanagementapi` client, given the stage URL as
`endpoint_url`, works unchanged.

`POST` sends the body to the connection as one message, `GET` describes it (connectedAt,
lastActiveAt, identity), `DELETE` closes it. AWS's answers: 410 GoneException for an unknown or
closed connection, 413 PayloadTooLargeException past the API's message limit (128 KiB unless
`websocket.max_message_bytes` says otherwise), 403 for a caller SigV4 does not admit. Under
`--workers N` the registry forwards a call for a sibling's connection to that worker.

With `connections_api: {authorization: aws_iam}` (the default) every call must be SigV4-signed by
a key of the iam credentials, as boto3 signs it; a request without a signature is 403
ForbiddenException, a bad one 403 with the SigV4 error type (InvalidSignatureException, ...).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote

import orjson

from pygw.context import RequestContext
from pygw.integrations.ws_connections import ConnectionRegistry, worker_of
from pygw.response import Response
from pygw.sigv4 import MISSING_TOKEN, SigV4Error, SigV4Verifier

__all__ = ["CONNECTIONS_ROUTE_KEYS", "ConnectionsApi"]

# `@` as sent by botocore (left bare) and as percent-encoding clients may send it.
CONNECTIONS_ROUTE_KEYS: Final = (
    "ANY /@connections/{connectionId}",
    "ANY /%40connections/{connectionId}",
)
_JSON: Final = "application/json"


def _error(
    status: int, message: str, error_type: str | None, headers: dict[str, str] | None = None
) -> Response:
    response = Response(status=status, body=orjson.dumps({"message": message}), content_type=_JSON)
    if error_type is not None:
        response.headers["x-amzn-ErrorType"] = error_type
    if headers:
        response.headers.update(headers)
    return response


class ConnectionsApi:
    """One WebSocket API stage's @connections endpoint (an integration of its own route)."""

    __slots__ = ("_max_message_bytes", "_registry", "_verifier")

    def __init__(
        self, registry: ConnectionRegistry, verifier: SigV4Verifier | None, max_message_bytes: int
    ) -> None:
        """`verifier` None: the endpoint is open (authorization: none)."""
        self._registry = registry
        self._verifier = verifier
        self._max_message_bytes = max_message_bytes

    async def __call__(self, ctx: RequestContext) -> Response:
        response = await self._answer(ctx)
        ctx.apply_response_headers(response)
        return response

    async def _answer(self, ctx: RequestContext) -> Response:
        request = ctx.request
        method = request.method
        body = b""
        if request.body_exists:
            read = await self._read(ctx)
            if read is None:
                return _error(413, "Message too long", "PayloadTooLargeException")
            body = read
        verifier = self._verifier
        if verifier is not None:
            headers = SigV4Verifier.header_table(request.raw_headers)
            try:
                ctx.iam = verifier.verify(method, request.raw_path, headers, body)
            except SigV4Error as refused:
                if refused.error_type == MISSING_TOKEN:
                    return _error(403, "Forbidden", "ForbiddenException")
                return _error(403, refused.message, refused.error_type)
        connection_id = unquote(ctx.params.get("connectionId", ""))
        if method == "POST":
            if worker_of(connection_id) is None or not await self._registry.send_async(
                connection_id, body
            ):
                return _gone()
            return Response(status=200)
        if method == "GET":
            described = (
                await self._registry.describe_async(connection_id)
                if worker_of(connection_id) is not None
                else None
            )
            if described is None:
                return _gone()
            return Response(status=200, body=orjson.dumps(described), content_type=_JSON)
        if method == "DELETE":
            if worker_of(connection_id) is None or not await self._registry.close_async(
                connection_id
            ):
                return _gone()
            return Response(status=204)
        return _error(405, "Method Not Allowed", None, {"Allow": "GET, POST, DELETE"})

    async def _read(self, ctx: RequestContext) -> bytes | None:
        """The body, or None past the message limit (refused before it is all read: a message
        that cannot be sent is not worth hashing for its signature)."""
        found = ctx.body
        if found is not None:
            return found
        declared = ctx.request.content_length
        if declared is not None and declared > self._max_message_bytes:
            return None
        parts: list[bytes] = []
        size = 0
        content = ctx.request.content
        while True:
            chunk = await content.readany()
            if not chunk:
                break
            size += len(chunk)
            if size > self._max_message_bytes:
                return None
            parts.append(chunk)
        body = b"".join(parts)
        ctx.body = body
        return body

    async def close(self) -> None:
        return None


def _gone() -> Response:
    return _error(410, "Gone", "GoneException")
