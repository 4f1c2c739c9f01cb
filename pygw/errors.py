"""Gateway responses: every error type the gateway itself answers with, in one table.

Statuses and messages are AWS API Gateway's recorded values; the REST-style and
HTTP-style rows differ where AWS's REST and HTTP APIs differ.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import orjson


class Style(enum.StrEnum):
    REST = "rest"
    HTTP = "http"
    WEBSOCKET = "websocket"


class ErrorType(enum.Enum):
    MISSING_AUTHENTICATION_TOKEN = "MISSING_AUTHENTICATION_TOKEN"
    RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
    INVALID_API_KEY = "INVALID_API_KEY"
    UNAUTHORIZED = "UNAUTHORIZED"
    ACCESS_DENIED = "ACCESS_DENIED"
    AUTHORIZER_DENIED = "AUTHORIZER_DENIED"
    THROTTLED = "THROTTLED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    BAD_REQUEST_BODY = "BAD_REQUEST_BODY"
    BAD_REQUEST_PARAMETERS = "BAD_REQUEST_PARAMETERS"
    BAD_REQUEST = "BAD_REQUEST"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    HEADERS_TOO_LARGE = "HEADERS_TOO_LARGE"
    UPSTREAM_FAILURE = "UPSTREAM_FAILURE"
    INTEGRATION_FAILURE = "INTEGRATION_FAILURE"
    INTEGRATION_TIMEOUT = "INTEGRATION_TIMEOUT"
    AUTHORIZER_FAILURE = "AUTHORIZER_FAILURE"
    UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class GatewayResponse:
    status: int
    message: str
    aws_error_type: str | None  # x-amzn-ErrorType, sent by REST-style APIs only
    message_key: str = "message"

    def body(self, detail: str | None = None) -> bytes:
        return orjson.dumps({self.message_key: detail if detail is not None else self.message})


_R = GatewayResponse

# (error type, style) -> response. A style missing from a row falls back to the REST row.
_TABLE: dict[tuple[ErrorType, Style], GatewayResponse] = {
    (ErrorType.MISSING_AUTHENTICATION_TOKEN, Style.REST): _R(
        403, "Missing Authentication Token", "MissingAuthenticationTokenException"
    ),
    (ErrorType.RESOURCE_NOT_FOUND, Style.HTTP): _R(404, "Not Found", None),
    (ErrorType.INVALID_API_KEY, Style.REST): _R(403, "Forbidden", "ForbiddenException"),
    (ErrorType.UNAUTHORIZED, Style.REST): _R(401, "Unauthorized", "UnauthorizedException"),
    (ErrorType.UNAUTHORIZED, Style.HTTP): _R(401, "Unauthorized", None),
    (ErrorType.ACCESS_DENIED, Style.REST): _R(403, "Forbidden", "AccessDeniedException"),
    (ErrorType.ACCESS_DENIED, Style.HTTP): _R(403, "Forbidden", None),
    (ErrorType.AUTHORIZER_DENIED, Style.REST): _R(
        403, "User is not authorized to access this resource", "AccessDeniedException", "Message"
    ),
    (ErrorType.AUTHORIZER_DENIED, Style.HTTP): _R(403, "Forbidden", None),
    (ErrorType.THROTTLED, Style.REST): _R(429, "Too Many Requests", "TooManyRequestsException"),
    (ErrorType.THROTTLED, Style.HTTP): _R(429, "Too Many Requests", None),
    (ErrorType.QUOTA_EXCEEDED, Style.REST): _R(429, "Limit Exceeded", "LimitExceededException"),
    (ErrorType.BAD_REQUEST_BODY, Style.REST): _R(
        400, "Invalid request body", "BadRequestException"
    ),
    (ErrorType.BAD_REQUEST_PARAMETERS, Style.REST): _R(
        400, "Missing required request parameters", "BadRequestException"
    ),
    (ErrorType.BAD_REQUEST, Style.REST): _R(400, "Bad Request", "BadRequestException"),
    (ErrorType.BAD_REQUEST, Style.HTTP): _R(400, "Bad Request", None),
    (ErrorType.REQUEST_TOO_LARGE, Style.REST): _R(413, "Request Too Long", None),
    # A request body in a content coding the gateway cannot decode, or not in the coding it
    # names: AWS answers 415 (REST APIs' payload decompression).
    (ErrorType.UNSUPPORTED_MEDIA_TYPE, Style.REST): _R(
        415, "Unsupported Media Type", "UnsupportedMediaTypeException"
    ),
    (ErrorType.REQUEST_TIMEOUT, Style.REST): _R(408, "Request Timeout", None),
    (ErrorType.HEADERS_TOO_LARGE, Style.REST): _R(431, "Request Header Fields Too Large", None),
    (ErrorType.UPSTREAM_FAILURE, Style.REST): _R(502, "Bad Gateway", None),
    (ErrorType.INTEGRATION_FAILURE, Style.REST): _R(
        502, "Internal server error", "InternalServerErrorException"
    ),
    (ErrorType.INTEGRATION_FAILURE, Style.HTTP): _R(500, "Internal Server Error", None),
    (ErrorType.INTEGRATION_TIMEOUT, Style.REST): _R(
        504, "Endpoint request timed out", "InternalServerErrorException"
    ),
    (ErrorType.INTEGRATION_TIMEOUT, Style.HTTP): _R(503, "Service Unavailable", None),
    # A custom authorizer that raises, times out or answers malformed: 500 in both styles (AWS).
    (ErrorType.AUTHORIZER_FAILURE, Style.REST): _R(
        500, "Internal Server Error", "AuthorizerConfigurationException"
    ),
    (ErrorType.AUTHORIZER_FAILURE, Style.HTTP): _R(500, "Internal Server Error", None),
    # http_proxy timeouts answer 504 in both styles.
    (ErrorType.UPSTREAM_TIMEOUT, Style.REST): _R(504, "Endpoint request timed out", None),
    (ErrorType.UNAVAILABLE, Style.REST): _R(503, "Service Unavailable", None),
}


def gateway_response(error: ErrorType, style: Style) -> GatewayResponse:
    found = _TABLE.get((error, style))
    if found is not None:
        return found
    rest = _TABLE[(error, Style.REST)]
    if style is Style.REST:
        return rest
    # Only REST-style APIs send x-amzn-ErrorType; other styles keep the status and message.
    return GatewayResponse(rest.status, rest.message, None, "message")


class GatewayError(Exception):
    """Raised by a stage or an integration to answer with a gateway response."""

    def __init__(
        self,
        error: ErrorType,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or error.value)
        self.error = error
        self.detail = detail
        self.headers = headers or {}
