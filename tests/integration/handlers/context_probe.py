"""An async Lambda handler and an async authorizer that each remember a value in a context
variable, to show whether one request's context reaches the next on the same connection."""

from __future__ import annotations

import contextvars
import json
from typing import Any

handler_saw: contextvars.ContextVar[str] = contextvars.ContextVar("handler_saw", default="unset")
authorizer_saw: contextvars.ContextVar[str] = contextvars.ContextVar(
    "authorizer_saw", default="unset"
)


async def authorize(event: dict[str, Any], context: Any) -> dict[str, Any]:
    before = authorizer_saw.get()
    authorizer_saw.set(event["requestContext"]["requestId"])
    return {"isAuthorized": True, "context": {"before": before}}


async def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    before = handler_saw.get()
    handler_saw.set(event["requestContext"]["requestId"])
    seen_by_authorizer = event["requestContext"]["authorizer"]["lambda"]["before"]
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"handler_before": before, "authorizer_before": seen_by_authorizer}),
    }
