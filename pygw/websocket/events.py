"""The events of a WebSocket API in AWS's format: one event (`Event`) of a connection's `Session`,
and the Lambda payload built from them (`EventFormat`): one place for CONNECT, MESSAGE and
DISCONNECT events, whatever integration receives them."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pygw.authorizer_view import rest_authorizer
from pygw.aws_ids import api_id_for
from pygw.aws_time import request_time
from pygw.websocket.session import Session

__all__ = ["Event", "EventFormat"]


@dataclass(slots=True)
class Event:
    route_key: str
    event_type: str  # CONNECT | MESSAGE | DISCONNECT
    request_id: str
    session: Session
    message: str | bytes | None = None
    message_id: str | None = None
    close_code: int | None = None
    close_reason: str | None = None


def _authorizer_view(found: Mapping[str, Any]) -> dict[str, Any]:
    jwt = found.get("jwt")
    if isinstance(jwt, Mapping):
        return {"jwt": {"claims": dict(jwt.get("claims") or {}), "scopes": jwt.get("scopes")}}
    # WebSocket APIs pass a Lambda authorizer's context on as REST APIs do: stringified, beside
    # principalId and integrationLatency.
    return rest_authorizer(found)


class EventFormat:
    def __init__(self, api_name: str, stage: str, stage_variables: Mapping[str, str]) -> None:
        self.api_id = api_id_for(api_name)
        self.stage = stage
        self.stage_variables = dict(stage_variables)

    def build(self, event: Event, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        session = event.session
        context: dict[str, Any] = {
            "routeKey": event.route_key,
            "eventType": event.event_type,
            "extendedRequestId": event.request_id,
            "requestTime": request_time(now),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": session.connected_at_ms,
            "requestTimeEpoch": int(now * 1000),
            "identity": {"sourceIp": session.source_ip, "userAgent": session.user_agent},
            "requestId": event.request_id,
            "domainName": session.domain_name,
            "connectionId": session.connection_id,
            "apiId": self.api_id,
        }
        if event.message_id is not None:
            context["messageId"] = event.message_id
        if event.event_type == "DISCONNECT":
            context["disconnectStatusCode"] = event.close_code
            context["disconnectReason"] = event.close_reason or ""
        if session.authorizer is not None:
            context["authorizer"] = _authorizer_view(session.authorizer)
        out: dict[str, Any] = {}
        if event.event_type == "CONNECT":
            request = session.request
            single: dict[str, str] = {}
            multi: dict[str, list[str]] = {}
            for name, value in request.headers.items():
                single[name] = value
                multi.setdefault(name, []).append(value)
            out["headers"] = single
            out["multiValueHeaders"] = multi
            if request.query_string:
                query: dict[str, str] = {}
                multi_query: dict[str, list[str]] = {}
                for key, value in request.query.items():
                    query[key] = value
                    multi_query.setdefault(key, []).append(value)
                out["queryStringParameters"] = query
                out["multiValueQueryStringParameters"] = multi_query
        out["requestContext"] = context
        if self.stage_variables:
            out["stageVariables"] = dict(self.stage_variables)
        message = event.message
        if message is not None:
            if isinstance(message, str):
                out["body"] = message
                out["isBase64Encoded"] = False
            else:
                out["body"] = base64.b64encode(message).decode()
                out["isBase64Encoded"] = True
        else:
            out["isBase64Encoded"] = False
        return out
