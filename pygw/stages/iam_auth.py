"""SigV4 (AWS_IAM) authorization: the request must be signed by a key of the iam credentials.

A request without an Authorization header is answered as AWS answers it on an AWS_IAM method:
403 `Missing Authentication Token`. Every other refusal is a 403 with AWS's `x-amzn-ErrorType`
(IncompleteSignatureException, InvalidSignatureException, UnrecognizedClientException) and its
message in a JSON body (see pygw/sigv4.py for how the signature is checked).

The body is read (and kept in `ctx.body` for the integration) only when the payload is signed;
`x-amz-content-sha256: UNSIGNED-PAYLOAD` leaves it streaming. On success `ctx.iam` holds the
principal, which integrations put in their events.
"""

from __future__ import annotations

from pygw.body import read_body
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.response import Response
from pygw.sigv4 import MISSING_TOKEN, SigV4Error, SigV4Verifier

__all__ = ["IamAuthStage"]


class IamAuthStage:
    __slots__ = ("_max_body_bytes", "_verifier")

    def __init__(self, verifier: SigV4Verifier, max_body_bytes: int) -> None:
        self._verifier = verifier
        self._max_body_bytes = max_body_bytes

    async def __call__(self, ctx: RequestContext) -> Response | None:
        request = ctx.request
        headers = SigV4Verifier.header_table(request.raw_headers)
        body: bytes | None = None
        if request.body_exists and SigV4Verifier.payload_needed(headers):
            body = await read_body(ctx, self._max_body_bytes)
        try:
            ctx.iam = self._verifier.verify(request.method, request.raw_path, headers, body)
        except SigV4Error as refused:
            if refused.error_type == MISSING_TOKEN:
                raise GatewayError(
                    ErrorType.MISSING_AUTHENTICATION_TOKEN,
                    None,
                    {"x-amzn-ErrorType": MISSING_TOKEN},
                ) from None
            raise GatewayError(
                ErrorType.ACCESS_DENIED, refused.message, {"x-amzn-ErrorType": refused.error_type}
            ) from None
        return None
