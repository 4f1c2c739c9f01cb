"""One WebSocket connection's side of the gateway: what every event of it repeats (`Session`),
the timer that closes it when idle or too old (`Watchdog`), and the bookkeeping of the messages
waiting to be handled in order (`Pending`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pygw.request import Request
from pygw.websocket.connections import Connection

__all__ = ["Pending", "Session", "Watchdog", "domain_name"]


@dataclass(slots=True)
class Session:
    """What every event of one connection repeats."""

    connection_id: str
    connected_at_ms: int
    source_ip: str
    user_agent: str
    domain_name: str
    request: Request
    authorizer: dict[str, Any] | None = None


class Watchdog:
    """Closes a connection idle for `idle_s` or open for `max_s`, with 1001 as AWS does. One
    timer per connection, moved only when it fires: activity is a float written per message."""

    __slots__ = ("_connection", "_end", "_handle", "_idle_s", "_loop", "active", "reason")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        connection: Connection,
        idle_s: float,
        max_s: float,
    ) -> None:
        now = loop.time()
        self._loop = loop
        self._connection = connection
        self._idle_s = idle_s
        self._end = now + max_s
        self.active = now
        self.reason = ""
        self._handle: asyncio.TimerHandle | None = loop.call_at(
            min(now + idle_s, self._end), self._check
        )

    def _check(self) -> None:
        now = self._loop.time()
        if now >= self._end:
            self.reason = "Going away (maximum connection duration)"
        elif now >= self.active + self._idle_s:
            self.reason = "Going away (idle timeout)"
        else:
            self._handle = self._loop.call_at(
                min(self.active + self._idle_s, self._end), self._check
            )
            return
        self._handle = None
        self._connection.request_close(1001, "Going away")

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


@dataclass(slots=True)
class Pending:
    bytes: int = 0
    running: bool = False


def domain_name(host: str) -> str:
    # Kept as the client sent it, port included: handlers build the @connections endpoint from
    # it (`https://{domainName}/{stage}`), which must reach this listener.
    return host or "localhost"
