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
from typing import Any, Final

from pygw.request import Request
from pygw.response import Response

__all__ = ["PENDING", "Later", "Resume", "ServeNow", "Served"]


class _Pending(enum.Enum):
    PENDING = 0


PENDING: Final = _Pending.PENDING

# The rest of a request that waits: awaited for its answer.
Later = Coroutine[Any, Any, Response]
Served = Response | Later | _Pending
# Called once with a PENDING request's answer.
Resume = Callable[[Request, Response | Later], None]
# `Resume` None: the caller can only await (PENDING is never answered then).
ServeNow = Callable[[Request, Resume | None], Served]
