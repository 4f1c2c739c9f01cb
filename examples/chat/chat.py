"""A chat room behind a WebSocket API, written as it would be for AWS Lambda.

Clients connect with `?name=alice` (a connection without a name is refused with 403), then send
`{"action": "sendmessage", "message": "hi"}`: every member of the room receives
`{"from": "alice", "message": "hi"}`. `{"action": "echo", ...}` is answered to the sender only
(the route has `route_response: true`), and anything else reaches `$default`, which tells the
sender what it can do.

The room is what a table would hold on AWS: a dict in this module, or, when `CHAT_ROOM_DB` names
a file, an SQLite table every worker process of `pygw serve --workers N` shares (each worker has
its own module state). Messages go out through the gateway's connection registry, the in-process
equivalent of the Management API's `post_to_connection`: it reaches a member connected to another
worker too. A send that returns False means the member is gone (AWS's GoneException).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

from pygw.websocket.connections import connections

_lock = threading.Lock()
_members: dict[str, str] = {}  # connection id -> name
_DB = os.environ.get("CHAT_ROOM_DB", "")


@contextlib.contextmanager
def _db() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(_DB, timeout=10, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS members (id TEXT PRIMARY KEY, name TEXT)")
        yield db
    finally:
        db.close()


def _join(connection_id: str, name: str) -> None:
    if not _DB:
        with _lock:
            _members[connection_id] = name
        return
    with _lock, _db() as db:
        db.execute("INSERT OR REPLACE INTO members VALUES (?, ?)", (connection_id, name))


def _leave(connection_id: str) -> None:
    if not _DB:
        with _lock:
            _members.pop(connection_id, None)
        return
    with _lock, _db() as db:
        db.execute("DELETE FROM members WHERE id = ?", (connection_id,))


def members() -> dict[str, str]:
    if not _DB:
        with _lock:
            return dict(_members)
    with _lock, _db() as db:
        return dict(db.execute("SELECT id, name FROM members").fetchall())


def connect(event: dict[str, Any], context: Any) -> dict[str, Any]:
    query = event.get("queryStringParameters") or {}
    name = query.get("name", "").strip()
    if not name:
        return {"statusCode": 403, "body": json.dumps({"message": "a name is required"})}
    _join(event["requestContext"]["connectionId"], name[:64])
    return {"statusCode": 200}


def disconnect(event: dict[str, Any], context: Any) -> dict[str, Any]:
    _leave(event["requestContext"]["connectionId"])
    return {"statusCode": 200}


def send_message(event: dict[str, Any], context: Any) -> dict[str, Any]:
    sender = event["requestContext"]["connectionId"]
    body = json.loads(event.get("body") or "{}")
    room = members()
    payload = json.dumps({"from": room.get(sender, "?"), "message": body.get("message")}).encode()
    registry = connections()
    for connection_id in room:
        if not registry.send(connection_id, payload):
            _leave(connection_id)
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
