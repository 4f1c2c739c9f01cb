"""CORS: preflight answers and the headers of actual cross-origin requests.

A preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered by the gateway and
never reaches an integration, whether or not the API has an OPTIONS route: the dispatcher calls the
function from `build_preflight_answer` before routing, and `CorsStage` answers the preflights that
reach a route anyway. An allowed preflight gets 204 with the Access-Control-Allow-* headers; one
for an origin, method or header the API does not allow gets 204 without them, which a browser
reads as a refusal (the request itself is then never sent).

Credentials: `*` is never sent with Access-Control-Allow-Credentials (browsers refuse it; the
config model already forbids the combination for origins), so allowed origins are echoed and
wildcard methods and headers are answered with concrete lists. Whenever an answer depends on the
Origin header, `Vary: Origin` says so to caches, also on responses to requests without Origin.
"""

from __future__ import annotations

from collections.abc import Callable

from pygw._native import header_value
from pygw.config.model import METHODS, ApiConfig, CorsConfig
from pygw.context import RequestContext
from pygw.request import Request
from pygw.response import Response

ALLOW_ORIGIN = "Access-Control-Allow-Origin"
ALLOW_METHODS = "Access-Control-Allow-Methods"
ALLOW_HEADERS = "Access-Control-Allow-Headers"
ALLOW_CREDENTIALS = "Access-Control-Allow-Credentials"
EXPOSE_HEADERS = "Access-Control-Expose-Headers"
MAX_AGE = "Access-Control-Max-Age"
REQUEST_METHOD = "Access-Control-Request-Method"
REQUEST_HEADERS = "Access-Control-Request-Headers"

# What a wildcard in allow_methods stands for, spelt out so that it also holds with credentials.
_EVERY_METHOD = ", ".join(m for m in METHODS if m != "ANY")

PreflightAnswer = Callable[[Request], Response | None]


def is_preflight(request: Request) -> bool:
    # The method first: any other request is told apart without building the header map.
    if request.method != "OPTIONS":
        return False
    headers = request.headers
    return "Origin" in headers and REQUEST_METHOD in headers


class CorsPolicy:
    """One API's CORS configuration, compiled: every header value that can be is built here."""

    __slots__ = (
        "_actual_allowed",
        "_any_header",
        "_any_method",
        "_any_origin",
        "_headers",
        "_methods",
        "_origins",
        "_preflight_allowed",
        "_refused",
        "vary_origin",
    )

    def __init__(self, cors: CorsConfig) -> None:
        self._any_origin = "*" in cors.allow_origins
        self._origins = frozenset(o.lower() for o in cors.allow_origins if o != "*")
        self._any_method = "*" in cors.allow_methods
        self._methods = frozenset(cors.allow_methods)
        self._any_header = "*" in cors.allow_headers
        self._headers = frozenset(cors.allow_headers)
        credentials = cors.allow_credentials and not self._any_origin
        self.vary_origin = not self._any_origin

        # Headers on actual requests from an allowed origin (the origin itself added per request
        # unless it is the wildcard).
        actual: dict[str, str] = {}
        if self._any_origin:
            actual[ALLOW_ORIGIN] = "*"
        if cors.expose_headers:
            actual[EXPOSE_HEADERS] = ", ".join(cors.expose_headers)
        if credentials:
            actual[ALLOW_CREDENTIALS] = "true"
        self._actual_allowed = actual

        preflight: dict[str, str] = {}
        if self._any_origin:
            preflight[ALLOW_ORIGIN] = "*"
        preflight[ALLOW_METHODS] = (
            _EVERY_METHOD if self._any_method else ", ".join(cors.allow_methods)
        )
        listed_headers = [h for h in cors.allow_headers if h != "*"]
        if listed_headers and not self._any_header:
            preflight[ALLOW_HEADERS] = ", ".join(listed_headers)
        if cors.max_age > 0:
            preflight[MAX_AGE] = str(cors.max_age)
        if credentials:
            preflight[ALLOW_CREDENTIALS] = "true"
        if self.vary_origin:
            preflight["Vary"] = "Origin"
        self._preflight_allowed = preflight
        self._refused: dict[str, str] = {"Vary": "Origin"} if self.vary_origin else {}

    def origin_allowed(self, origin: str) -> bool:
        return self._any_origin or origin.lower() in self._origins

    def preflight(self, request: Request) -> Response | None:
        """The answer to a preflight request, or None if `request` is not one."""
        if not is_preflight(request):
            return None
        headers = request.headers
        origin = headers["Origin"]
        method = headers[REQUEST_METHOD].strip().upper()
        asked = _header_names(headers.get(REQUEST_HEADERS, ""))
        if (
            not self.origin_allowed(origin)
            or not (self._any_method or method in self._methods)
            or not (self._any_header or self._headers.issuperset(asked))
        ):
            return Response(status=204, headers=self._refused)
        answer = dict(self._preflight_allowed)
        if not self._any_origin:
            answer[ALLOW_ORIGIN] = origin
        if self._any_header and asked:
            # `*` would not cover Authorization, nor anything with credentials: echo instead.
            answer[ALLOW_HEADERS] = ", ".join(asked)
            answer["Vary"] = (
                "Origin, Access-Control-Request-Headers"
                if self.vary_origin
                else "Access-Control-Request-Headers"
            )
        return Response(status=204, headers=answer)

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """The CORS headers of a response to an actual request sent with this Origin (or none).
        The result may be shared: read it, do not change it."""
        if self._any_origin:
            # Sent with or without Origin, so that the response does not depend on it.
            return self._actual_allowed
        if origin is None or origin.lower() not in self._origins:
            return self._refused
        found = {**self._refused, **self._actual_allowed}
        found[ALLOW_ORIGIN] = origin
        return found


def _header_names(value: str) -> list[str]:
    return [name for name in (part.strip().lower() for part in value.split(",")) if name]


class CorsStage:
    """Answers preflights that reach the route and adds CORS headers to every other response
    (errors from later stages included, so that a browser can read them)."""

    __slots__ = ("_policy",)

    def __init__(self, cors: CorsConfig) -> None:
        self._policy = CorsPolicy(cors)

    @property
    def policy(self) -> CorsPolicy:
        return self._policy

    async def __call__(self, ctx: RequestContext) -> Response | None:
        return self.check(ctx)

    def check(self, ctx: RequestContext) -> Response | None:
        request = ctx.request
        policy = self._policy
        answer = policy.preflight(request)
        if answer is not None:
            ctx.apply_response_headers(answer)
            return answer
        # The Origin as sent, decoded as the header map decodes it (which is not built for it).
        origin = header_value(request.raw_headers, b"origin")
        ctx.response_headers.update(
            policy.response_headers(
                None if origin is None else origin.decode("utf-8", "surrogateescape")
            )
        )
        return None


def build_preflight_answer(cors: CorsConfig) -> PreflightAnswer:
    """A function answering a preflight request (None for any other request), for the dispatcher
    to call before routing: preflights are answered even where no route has the OPTIONS method."""
    return CorsPolicy(cors).preflight


def build_cors_stage(api: ApiConfig) -> CorsStage | None:
    """The API's CORS stage (HTTP-style and REST-style alike), or None when `cors` is not set."""
    if api.cors is None:
        return None
    return CorsStage(api.cors)
