"""A client of the Lambda Invoke API (`POST /2015-03-31/functions/NAME/invocations`).

Shared by the `lambda` integration and by custom authorizers whose function runs out of process:
it posts an event, reads the function's result (any JSON value) and raises `InvokeFailed` when
the Invoke API answered something else than a result, or `FunctionError` (carrying the
function's `errorMessage`) when the result carries `X-Amz-Function-Error`.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

import aiohttp
import orjson

__all__ = ["FunctionError", "InvokeFailed", "invocation_url", "invoke"]

_HEADERS: Final = {
    "Content-Type": "application/json",
    "X-Amz-Invocation-Type": "RequestResponse",
    "X-Amz-Log-Type": "None",
}


class InvokeFailed(Exception):
    """The Invoke API answered, but not with the function's result."""


class FunctionError(InvokeFailed):
    """The function raised (or its runtime failed); the message is the function's own."""


def invocation_url(endpoint: str, function_name: str, qualifier: str | None = None) -> str:
    url = f"{endpoint.rstrip('/')}/2015-03-31/functions/{quote(function_name, safe='')}"
    url += "/invocations"
    if qualifier:
        url += f"?Qualifier={quote(qualifier, safe='')}"
    return url


async def invoke(session: aiohttp.ClientSession, url: str, event: Any, request_id: str) -> Any:
    headers = {**_HEADERS, "X-Amz-Request-Id": request_id}
    # Header maps may be keyed by str subclasses (multidict's istr), which orjson refuses
    # without OPT_NON_STR_KEYS.
    body = orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS)
    async with session.post(url, data=body, headers=headers) as answer:
        payload = await answer.read()
        if answer.status != 200:
            kind = answer.headers.get("X-Amzn-ErrorType", "")
            raise InvokeFailed(
                f"Invoke API answered {answer.status} {kind}: "
                f"{payload[:300].decode('utf-8', 'replace')}"
            )
        error = answer.headers.get("X-Amz-Function-Error")
    if error is not None:
        message = payload[:1000].decode("utf-8", "replace")
        try:
            found = orjson.loads(payload)
        except orjson.JSONDecodeError:
            found = None
        if isinstance(found, dict) and isinstance(found.get("errorMessage"), str):
            message = found["errorMessage"]
        raise FunctionError(message)
    if not payload:
        return None
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise InvokeFailed(
            f"result is not JSON: {payload[:300].decode('utf-8', 'replace')}"
        ) from None
