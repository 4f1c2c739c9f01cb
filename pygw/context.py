"""RequestContext: the one object that flows through a route's stages and its integration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pygw.request import Request
from pygw.response import Response, ResponseStream, merge_vary

if TYPE_CHECKING:
    from aiohttp import web

    from pygw.sigv4 import IamPrincipal


@dataclass(slots=True)
class RequestContext:
    # The dispatcher passes the first nine fields positionally (it is the hot path): keep their
    # order, or change the call in pygw/dispatch.py with them.
    request: Request
    request_id: str
    # Path below the stage prefix, as matched (normalised, trailing slash kept, never decoded).
    path: str
    # Path parameters with their raw (undecoded) values; a greedy `{name+}` is stored under `name`.
    params: dict[str, str]
    stage_variables: dict[str, str]
    client_ip: str
    received_at: float  # time.perf_counter() when the request arrived
    canary: bool = False
    # Headers every response to this request carries (request ids, CORS, rate-limit headers).
    response_headers: dict[str, str] = field(default_factory=dict)
    integration_latency_s: float = 0.0
    # What stages hand each other and the integration (each written by one stage):
    api_key_id: str | None = None  # api_key: the id (never the value) of the request's key
    authorizer: dict[str, Any] | None = None  # jwt_auth / custom_auth: claims or context
    usage_identifier_key: str | None = None  # custom_auth: the key a usage plan meters
    iam: IamPrincipal | None = None  # iam_auth: who signed the request (SigV4)
    # websocket: the connection a $connect request opens, for its authorizer's event
    connection_id: str | None = None
    connected_at_ms: int = 0
    body: bytes | None = None  # validate / transform: the body read, or the one to send
    body_content_type: str | None = None  # transform: the media type of a rendered body
    request_overrides: dict[str, Any] | None = None  # transform: path, query, headers to send
    response_override: dict[str, Any] | None = None  # transform: status and headers to answer
    cache_state: str | None = None  # cache: "hit" or "miss", for the access log
    # Set by a stage that needs a copy of a streamed response body (the response cache): an
    # integration that streams calls it with every chunk it sends to the client (an answer sent
    # whole, as a OneWriteResponse, carries its body instead).
    body_sink: Callable[[bytes], None] | None = None
    # compress: the content coding this answer may be sent in (None: uncompressed), and, while
    # the integration runs, what starts a streamed answer in it (see start_stream).
    content_coding: str | None = None
    stream_encoder: Callable[[RequestContext, Response, bool], ResponseStream] | None = None

    def start_stream(self, response: Response, at_once: bool = True) -> ResponseStream:
        """Request.start_stream for an integration's streamed answer, through the route's
        encoder when it has one. Read `body_sink` after this call: an encoder takes it over, so
        that it is fed the bytes the client gets."""
        encoder = self.stream_encoder
        if encoder is None:
            return self.request.start_stream(response, at_once)
        return encoder(self, response, at_once)

    def apply_response_headers(self, response: Response | web.StreamResponse) -> None:
        """Called by whoever builds the response, before it is prepared (headers go out first)."""
        extra = self.response_headers
        headers = response.headers
        vary = extra.get("Vary")
        if vary is not None:
            # The integration's own Vary (say Accept-Encoding) must survive CORS's Vary: Origin.
            theirs = headers.get("Vary")
            if theirs is not None:
                extra = {**extra, "Vary": merge_vary(theirs, vary)}
        # update() replaces like item assignment does, in one call.
        headers.update(extra)
