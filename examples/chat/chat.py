"""A chat room behind a WebSocket API, written as it would be for AWS Lambda.

Clients connect with `?name=alice` (a connection without a name is refused with 403), then send
`{"action": "sendmessage", "message": "hi"}`: every member of the room receives
`{"from": "alice", "message": "hi"}`. `{"action": "echo", ...}` is answered to the sender only
(the route has `route_response: true`), and anything else reaches `$default`, which tells the
sender what it can do.

The room is kept in this module, as it would be in a table on AWS. Messages go out through the
gateway's connection registry, the in-process equivalent of the Management API's
`post_to_connection`; a send that returns False means the member is gone (AWS's GoneException).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from pygw.integrations.ws_connections import connections

_lock = threading.Lock()
_members: dict[str, str] = {}  # connection id -> name


def members() -> dict[str, str]:
    with _lock:
        return dict(_members)


def connect(event: dict[str, Any], context: Any) -> dict[str, Any]:
    query = event.get("queryStringParameters") or {}
    name = query.get("name", "").strip()
    if not name:
        return {"statusCode": 403, "body": json.dumps({"message": "a name is required"})}
    with _lock:
        _members[event["requestContext"]["connectionId"]] = name[:64]
    return {"statusCode": 200}


def disconnect(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with _lock:
        _members.pop(event["requestContext"]["connectionId"], None)
    return {"statusCode": 200}


def send_message(event: dict[str, Any], context: Any) -> dict[str, Any]:
    sender = event["requestContext"]["connectionId"]
    body = json.loads(event.get("body") or "{}")
    room = members()
    payload = json.dumps({"from": room.get(sender, "?"), "message": body.get("message")}).encode()
    registry = connections()
    for connection_id in room:
        if not registry.send(connection_id, payload):
            with _lock:
                _members.pop(connection_id, None)
    return {"statusCode": 200}


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = json.loads(event.get("body") or "{}")
    return {"statusCode": 200, "body": json.dumps({"echo": body.get("message")})}


def default(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "statusCode": 200,
        "body": json.dumps(
            {
                "message": "unknown action",
                "actions": ["sendmessage", "echo"],
                "connectionId": event["requestContext"]["connectionId"],
            }
        ),
    }
