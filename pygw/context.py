"""RequestContext: the one object that flows through a route's stages and its integration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pygw.errors import GatewayError
from pygw.request import Request
from pygw.response import Response, ResponseStream, merge_vary

if TYPE_CHECKING:
    from aiohttp import web

    from pygw.sigv4 import IamPrincipal


# A hand-written __init__ (init=False): the generated one, with a keyword parameter and its
# default for every field, cost about 230 ns more per request than storing the defaults here.
@dataclass(slots=True, init=False)
class RequestContext:
    request: Request
    request_id: str
    # Path below the stage prefix, as matched (normalised, trailing slash kept, never decoded).
    path: str
    # Path parameters with their raw (undecoded) values; a greedy `{name+}` is stored under `name`.
    params: dict[str, str]
    stage_variables: dict[str, str]
    client_ip: str
    received_at: float  # time.perf_counter() when the request arrived
    canary: bool
    # Headers every response to this request carries (request ids, CORS, rate-limit headers).
    response_headers: dict[str, str]
    # The request's trace (pygw/trace.py): its id in W3C's 32 hex digits and the gateway's own
    # span id; the caller's span id and sampled flag when the client sent a trace.
    trace_id: str
    span_id: str
    trace_parent: str | None
    trace_sampled: bool
    integration_latency_s: float
    integration_started: float  # perf_counter() when the integration was called
    # The status the integration answered with (an upstream's, a function's), for the access log.
    integration_status: int | None
    # The gateway response the request was answered with, when it was one (the access log's
    # $context.error.*).
    error: GatewayError | None
    # Child spans of a sampled request (the authorizer, the cache), when telemetry is on:
    # (name, started, ended, attributes), perf_counter() seconds.
    spans: list[tuple[str, float, float, dict[str, str | int | bool]]] | None
    # What stages hand each other and the integration (each written by one stage):
    api_key_id: str | None  # api_key: the id (never the value) of the request's key
    authorizer: dict[str, Any] | None  # jwt_auth / custom_auth: claims or context
    usage_identifier_key: str | None  # custom_auth: the key a usage plan meters
    iam: IamPrincipal | None  # iam_auth: who signed the request (SigV4)
    # websocket: the connection a $connect request opens, for its authorizer's event
    connection_id: str | None
    connected_at_ms: int
    body: bytes | None  # validate / transform: the body read, or the one to send
    body_content_type: str | None  # transform: the media type of a rendered body
    request_overrides: dict[str, Any] | None  # transform: path, query, headers to send
    response_override: dict[str, Any] | None  # transform: status and headers to answer
    cache_state: str | None  # cache: "hit" or "miss", for the access log
    # Set by a stage that needs a copy of a streamed response body (the response cache): an
    # integration that streams calls it with every chunk it sends to the client (an answer sent
    # whole, as a OneWriteResponse, carries its body instead).
    body_sink: Callable[[bytes], None] | None
    # compress: the content coding this answer may be sent in (None: uncompressed), and, while
    # the integration runs, what starts a streamed answer in it (see start_stream).
    content_coding: str | None
    stream_encoder: Callable[[RequestContext, Response, bool], ResponseStream] | None

    def __init__(
        self,
        request: Request,
        request_id: str,
        path: str,
        params: dict[str, str],
        stage_variables: dict[str, str],
        client_ip: str,
        received_at: float,
        canary: bool = False,
        response_headers: dict[str, str] | None = None,
        trace_id: str = "",
        span_id: str = "",
    ) -> None:
        """The dispatcher passes these positionally (it is the hot path): keep their order, or
        change the call in pygw/dispatch.py with them. What stages hand each other starts
        unset."""
        self.request = request
        self.request_id = request_id
        self.path = path
        self.params = params
        self.stage_variables = stage_variables
        self.client_ip = client_ip
        self.received_at = received_at
        self.canary = canary
        self.response_headers = {} if response_headers is None else response_headers
        self.trace_id = trace_id
        self.span_id = span_id
        self.trace_parent = None
        self.trace_sampled = False
        self.integration_latency_s = 0.0
        self.integration_started = 0.0
        self.integration_status = None
        self.error = None
        self.spans = None
        self.api_key_id = None
        self.authorizer = None
        self.usage_identifier_key = None
        self.iam = None
        self.connection_id = None
        self.connected_at_ms = 0
        self.body = None
        self.body_content_type = None
        self.request_overrides = None
        self.response_override = None
        self.cache_state = None
        self.body_sink = None
        self.content_coding = None
        self.stream_encoder = None

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
