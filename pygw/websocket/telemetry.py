"""Metrics and access-log lines of one WebSocket API mount: the pygw_websocket_* families and,
when the gateway writes an access log, one line per CONNECT, routed MESSAGE and DISCONNECT (ids,
route key, status, outcome, integration latency, sizes; never a message body or a header)."""

from __future__ import annotations

import time
from typing import Any, Final

from pygw.observe.metrics import CounterChild, HistogramChild, Metrics
from pygw.websocket.connections import ConnectionRegistry
from pygw.websocket.selection import CONNECT, DISCONNECT
from pygw.websocket.session import Session

__all__ = ["STATUS_OF", "Telemetry"]

# Status written to the access log for the messages the gateway answers itself.
STATUS_OF: Final = {"no_route": 403, "throttled": 429, "error": 500, "timeout": 504}
_time_text: tuple[int, str] = (0, "")


def _now_text() -> str:
    """The access log's `time`, formatted once per second rather than once per message."""
    global _time_text
    now = int(time.time())
    if _time_text[0] != now:
        _time_text = (now, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)))
    return _time_text[1]


class Telemetry:
    """Metrics and access-log lines of one WebSocket API mount. Label children are resolved
    once; the access log is looked up on the registry per event (the gateway attaches it
    after compiling) and is skipped entirely when there is none."""

    __slots__ = (
        "_client_errors",
        "_connects",
        "_integration_errors",
        "_latency",
        "_messages",
        "_metrics",
        "_registry",
        "api",
        "sent",
        "stage",
    )

    def __init__(
        self, api: str, stage: str, metrics: Metrics, registry: ConnectionRegistry
    ) -> None:
        self.api = api
        self.stage = stage
        self._metrics = metrics
        self._registry = registry
        self.sent: CounterChild = metrics.websocket_messages_sent.labels(api, stage)
        self._messages: dict[tuple[str, str], CounterChild] = {}
        self._latency: dict[str, HistogramChild] = {}
        self._connects: dict[str, CounterChild] = {}
        self._client_errors: dict[str, CounterChild] = {}
        self._integration_errors: dict[tuple[str, str], CounterChild] = {}

    def _count_message(self, route: str, outcome: str) -> None:
        child = self._messages.get((route, outcome))
        if child is None:
            child = self._metrics.websocket_messages.labels(self.api, self.stage, route, outcome)
            self._messages[(route, outcome)] = child
        child.value += 1.0

    def _observe(self, route: str, latency_s: float) -> None:
        child = self._latency.get(route)
        if child is None:
            child = self._metrics.websocket_integration_latency.labels(self.api, self.stage, route)
            self._latency[route] = child
        child.observe(latency_s)

    def client_error(self, reason: str) -> None:
        child = self._client_errors.get(reason)
        if child is None:
            child = self._metrics.websocket_client_errors.labels(self.api, self.stage, reason)
            self._client_errors[reason] = child
        child.value += 1.0

    def _integration_error(self, route: str, reason: str) -> None:
        child = self._integration_errors.get((route, reason))
        if child is None:
            child = self._metrics.websocket_integration_errors.labels(
                self.api, self.stage, route, reason
            )
            self._integration_errors[(route, reason)] = child
        child.value += 1.0

    def _write(
        self,
        session: Session,
        event_type: str,
        request_id: str,
        route: str | None,
        status: int | None,
        outcome: str,
        latency_s: float | None,
        **more: Any,
    ) -> None:
        access_log = self._registry.access_log
        if access_log is None:
            return
        record: dict[str, Any] = {
            "time": _now_text(),
            "request_id": request_id,
            "connection_id": session.connection_id,
            "event_type": event_type,
            "route": route,
            "status": status,
            "outcome": outcome,
            "integration_latency_ms": (
                round(latency_s * 1000.0, 3) if latency_s is not None else None
            ),
            "api": self.api,
            "stage": self.stage,
            "style": "websocket",
            "client_ip": session.source_ip,
        }
        record.update(more)
        access_log.write(record)

    def connect(
        self,
        session: Session,
        request_id: str,
        status: int,
        latency_s: float | None,
        failure: str | None = None,
    ) -> None:
        """`status` is what the client's handshake got (101 when upgraded). `failure`: why the
        gateway refused ("unauthorized" before the integration, "error"/"timeout" in it)."""
        accepted = status == 101
        outcome = "accepted" if accepted else "refused"
        child = self._connects.get(outcome)
        if child is None:
            child = self._metrics.websocket_connects.labels(self.api, self.stage, outcome)
            self._connects[outcome] = child
        child.value += 1.0
        if latency_s is not None:
            self._observe(CONNECT, latency_s)
        if failure == "unauthorized":
            self.client_error(failure)
        elif failure is not None:
            self._integration_error(CONNECT, failure)
        self._write(
            session,
            "CONNECT",
            request_id,
            CONNECT,
            status,
            failure or outcome,
            latency_s,
            user_agent=session.user_agent,
        )

    def message(
        self,
        session: Session,
        request_id: str,
        message_id: str | None,
        route: str,
        outcome: str,
        status: int,
        size: int,
        latency_s: float | None,
        response_bytes: int,
    ) -> None:
        self._count_message(route, outcome)
        if latency_s is not None:
            self._observe(route, latency_s)
        if outcome == "error" or outcome == "timeout":
            self._integration_error(route, outcome)
        elif outcome != "ok":
            self.client_error(outcome)
        if self._registry.access_log is not None:
            self._write(
                session,
                "MESSAGE",
                request_id,
                route,
                status,
                outcome,
                latency_s,
                message_id=message_id,
                bytes=size,
                response_bytes=response_bytes,
            )

    def disconnect(
        self,
        session: Session,
        request_id: str,
        close_code: int,
        reason: str,
        route: str | None,
        status: int | None,
        outcome: str,
        latency_s: float | None,
    ) -> None:
        if close_code == 1009:
            # aiohttp refused a message over max_message_bytes and closed the connection.
            self.client_error("too_large")
        if latency_s is not None and route is not None:
            self._observe(route, latency_s)
        if outcome == "error" or outcome == "timeout":
            self._integration_error(DISCONNECT, outcome)
        self._write(
            session,
            "DISCONNECT",
            request_id,
            route,
            status,
            outcome,
            latency_s,
            close_code=close_code,
            reason=reason,
            duration_ms=int(time.time() * 1000) - session.connected_at_ms,
        )
