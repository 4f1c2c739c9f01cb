"""How a connection and the dispatcher hand a request's answer to each other without a task.

`ServeNow` serves a request as far as it goes without waiting and answers with one of:
- a `Response`: the request is answered (a mock, a cache hit, a refusal by a stage);
- a coroutine: await it for the answer (a stage or an integration that waits);
- `PENDING`: an integration took the request and will hand the answer (a `Response`, or a
  coroutine to await for it) to the connection's `Resume` callback later, from a socket or
  timer callback of its own (a proxied request on a pooled upstream connection).

A connection whose request was answered either way needs no task of its own for it: the
asyncio task, its coroutine frames and futures cost more than everything else such a request
does.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol

from pygw.request import Request
from pygw.response import Response, ResponseHead

__all__ = [
    "PENDING",
    "Later",
    "LeanClient",
    "Resume",
    "Routed",
    "Sent",
    "ServeLean",
    "ServeNow",
    "Served",
    "SimpleParts",
]


class _Pending(enum.Enum):
    PENDING = 0


PENDING: Final = _Pending.PENDING

# The rest of a request that waits: awaited for its answer.
Later = Coroutine[Any, Any, Response]
Served = Response | Later | _Pending
# PENDING: the request went on its way, and its answer will be sent from a callback.
Sent = _Pending
# Called once with a PENDING request's answer.
Resume = Callable[[Request, Response | Later], None]
# `Resume` None: the caller can only await (PENDING is never answered then).
ServeNow = Callable[[Request, Resume | None], Served]

# pygw._native.simple_request's parts of a request: method, target, HTTP/1 minor version,
# headers, Host, and the x-request-id, traceparent and X-Amzn-Trace-Id values; keep-alive.
SimpleParts = tuple[
    str,
    str,
    int,
    tuple[tuple[bytes, bytes], ...],
    bytes,
    bytes | None,
    bytes | None,
    bytes | None,
    bool,
]
# The router's match: route id, path parameters, the path below the stage's prefix.
Routed = tuple[int, dict[str, str], str]


class LeanClient(Protocol):
    """The client connection of a request the dispatcher's serve_lean sent on."""

    peer: str
    https: bool  # came over TLS

    def request_of(self, simple: SimpleParts) -> Request:
        """The Request those parts make on this connection."""

    def send_whole(
        self,
        status: int,
        reason: bytes,
        head: ResponseHead,
        body: bytes,
        own: dict[str, str],
        minor: int,
        keep_alive: bool,
    ) -> None:
        """Sends an upstream's whole answer (as whole_answer took it apart) and goes on with
        the connection's next request."""

    def resume(self, request: Request, served: Response | Later) -> None:
        """As `Resume`: a request's answer, or the coroutine that gives it."""


ServeLean = Callable[[LeanClient, SimpleParts], Routed | Sent | None]
