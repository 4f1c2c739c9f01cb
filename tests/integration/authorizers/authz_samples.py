"""Sample custom authorizers, written as Lambda authorizers for AWS would be.

Every call is recorded in CALLS (the event received) so tests can count calls and read events.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

CALLS: list[dict[str, Any]] = []


def _policy(principal: str, effect: str, resources: list[str] | str) -> dict[str, Any]:
    return {
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Action": "execute-api:Invoke", "Effect": effect, "Resource": resources}
            ],
        },
    }


def token_policy(event: dict[str, Any], context: Any) -> Any:
    """TOKEN authorizer in the style of AWS's blueprint: the token selects the answer."""
    CALLS.append(event)
    token = event["authorizationToken"]
    arn = event["methodArn"]
    api_prefix, _, _ = arn.partition("/")
    if token == "allow":
        answer = _policy("user-allow", "Allow", arn)
        answer["context"] = {"user": "alice", "level": 3, "admin": False}
        return answer
    if token == "deny":
        return _policy("user-deny", "Deny", arn)
    if token == "wild-get":
        # Any stage, GET only, any path: `*` and `?` wildcards.
        return _policy("user-wild", "Allow", f"{api_prefix}/*/GET/*")
    if token == "wild-q":
        return _policy("user-q", "Allow", f"{api_prefix}/*/GET/items/?")
    if token == "allow-but-deny-admin":
        answer = _policy("user-mixed", "Allow", f"{api_prefix}/*")
        answer["policyDocument"]["Statement"].append(
            {
                "Action": "execute-api:Invoke",
                "Effect": "Deny",
                "Resource": f"{api_prefix}/*/*/admin*",
            }
        )
        return answer
    if token == "other-action":
        answer = _policy("user-other", "Allow", arn)
        answer["policyDocument"]["Statement"][0]["Action"] = "s3:GetObject"
        return answer
    if token == "usage-key":
        answer = _policy("user-key", "Allow", arn)
        answer["usageIdentifierKey"] = "key-from-authorizer"
        return answer
    if token == "nested-context":
        answer = _policy("user-nested", "Allow", arn)
        answer["context"] = {"user": {"name": "alice"}}
        return answer
    if token == "unauthorized":
        raise Exception("Unauthorized")
    if token == "boom":
        raise RuntimeError("database password is hunter2")
    if token == "garbage":
        return "not a policy"
    if token == "slow":
        time.sleep(1.0)
        return _policy("user-slow", "Allow", arn)
    if token == "remaining":
        answer = _policy("user-time", "Allow", arn)
        answer["context"] = {"remaining_ms": context.get_remaining_time_in_millis()}
        return answer
    return _policy("user-default", "Deny", arn)


async def request_simple(event: dict[str, Any]) -> dict[str, Any]:
    """HTTP API REQUEST authorizer, simple responses, async, taking the event only."""
    CALLS.append(event)
    user = event["headers"].get("x-user")
    return {"isAuthorized": user == "alice", "context": {"user": user, "tags": ["a", "b"]}}


def request_policy(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """REQUEST authorizer answering a policy from a header and a query parameter."""
    CALLS.append(event)
    headers = event.get("headers") or {}
    query = event.get("queryStringParameters") or {}
    arn = event.get("methodArn") or event.get("routeArn") or ""
    allowed = headers.get("x-user", headers.get("X-User")) == "alice" and query.get("t") == "ok"
    answer = _policy("alice", "Allow" if allowed else "Deny", arn)
    answer["context"] = {"via": "request"}
    return answer


async def async_slow(event: dict[str, Any]) -> dict[str, Any]:
    CALLS.append(event)
    await asyncio.sleep(5)
    return {"isAuthorized": True}


def simple_malformed(event: dict[str, Any]) -> dict[str, Any]:
    CALLS.append(event)
    return {"isAuthorized": "yes"}


class CallableAuthorizer:
    """An object with an async __call__ counts as an async authorizer."""

    async def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        CALLS.append(event)
        return {"isAuthorized": True, "context": {"kind": "object"}}


callable_object = CallableAuthorizer()

NOT_CALLABLE = 42
