"""Fault injection: the last stage before the integration delays requests, answers them with an
error status or resets their connection, as the route's fault plan says.

The stage reads one attribute, `plan`, per request: the admin API changes a route's faults by
assigning a new immutable FaultPlan there (or None, to let every request through), so a request
sees one plan whole, never half of an old one and half of a new one.

With `headers` in the plan, a client may ask for faults per request, as Envoy's fault filter
allows: `x-pygw-fault-delay-ms` / `x-envoy-fault-delay-request` (milliseconds, capped at the
plan's `max_header_delay_s`), `x-pygw-fault-abort` (a status, or `reset`) /
`x-envoy-fault-abort-request` (a status), each with an optional `...-percent` /
`...-percentage` header (0-100, default 100). A header overrides the plan's own delay or abort
for that request.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Protocol

from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.faults import Clock, ConnectionResetByFault, FaultPlan, reset_connection
from pygw.response import Response

FAULT_HEADER = "x-pygw-fault"  # on answers the stage delayed or aborted: "delay" / "abort"
_FAULT_BODY = b'{"message":"Injected fault"}'

_DELAY_HEADERS = (b"x-pygw-fault-delay-ms", b"x-envoy-fault-delay-request")
_DELAY_PERCENT_HEADERS = (b"x-pygw-fault-delay-percent", b"x-envoy-fault-delay-request-percentage")
_ABORT_HEADERS = (b"x-pygw-fault-abort", b"x-envoy-fault-abort-request")
_ABORT_PERCENT_HEADERS = (b"x-pygw-fault-abort-percent", b"x-envoy-fault-abort-request-percentage")


class Counter(Protocol):
    def inc(self, amount: float = 1.0) -> None: ...


@dataclass(frozen=True, slots=True)
class FaultCounters:
    """The route's pygw_faults_injected_total children, by kind."""

    delay: Counter
    abort: Counter
    reset: Counter


def _first(ctx: RequestContext, names: tuple[bytes, ...]) -> tuple[bytes, bytes] | None:
    request = ctx.request
    for name in names:
        value = request.header(name)
        if value is not None:
            return name, value
    return None


def _number(name: bytes, value: bytes, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not low <= number <= high:
        raise GatewayError(
            ErrorType.BAD_REQUEST,
            f"{name.decode()} must be a number from {low:g} to {high:g}",
        )
    return number


class FaultStage:
    __slots__ = ("_clock", "_counters", "_rng", "plan")

    def __init__(
        self,
        plan: FaultPlan | None,
        counters: FaultCounters,
        rng: random.Random | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.plan = plan
        self._counters = counters
        self._rng = rng or random.Random()
        self._clock = clock

    @property
    def clock(self) -> Clock:
        return self._clock

    def _roll(self, percent: float) -> bool:
        return percent >= 100.0 or self._rng.random() * 100.0 < percent

    def _percent_header(self, ctx: RequestContext, names: tuple[bytes, ...]) -> float:
        found = _first(ctx, names)
        return 100.0 if found is None else _number(found[0], found[1], 0.0, 100.0)

    async def __call__(self, ctx: RequestContext) -> Response | None:
        plan = self.plan
        if plan is None:
            return None
        delay_s = 0.0
        abort_status: int | None = None
        reset = False
        asked_delay = asked_abort = None
        if plan.headers:
            asked_delay = _first(ctx, _DELAY_HEADERS)
            asked_abort = _first(ctx, _ABORT_HEADERS)
        elapsed = -1.0
        if asked_delay is not None:
            ms = _number(asked_delay[0], asked_delay[1], 0.0, plan.max_header_delay_s * 1000.0)
            if self._roll(self._percent_header(ctx, _DELAY_PERCENT_HEADERS)):
                delay_s = ms / 1000.0
        elif plan.delay is not None:
            elapsed = self._clock() - plan.started
            if self._roll(plan.delay.timeline.percent_at(elapsed)):
                delay_s = plan.delay.sample()
        if asked_abort is not None:
            name, value = asked_abort
            if value.strip().lower() == b"reset" and name == _ABORT_HEADERS[0]:
                wanted_reset, wanted_status = True, None
            elif value.strip().isdigit():
                wanted_reset, wanted_status = False, int(_number(name, value, 200, 599))
            else:
                raise GatewayError(
                    ErrorType.BAD_REQUEST,
                    f"{name.decode()} must be an HTTP status from 200 to 599"
                    + (" or reset" if name == _ABORT_HEADERS[0] else ""),
                )
            if self._roll(self._percent_header(ctx, _ABORT_PERCENT_HEADERS)):
                reset, abort_status = wanted_reset, wanted_status
        elif plan.abort is not None:
            if elapsed < 0:
                elapsed = self._clock() - plan.started
            if self._roll(plan.abort.timeline.percent_at(elapsed)):
                reset, abort_status = plan.abort.reset, plan.abort.status
        if delay_s > 0.0:
            self._counters.delay.inc()
            ctx.response_headers[FAULT_HEADER] = "delay"
            await asyncio.sleep(delay_s)
        if reset:
            self._counters.reset.inc()
            reset_connection(ctx.request)
            raise ConnectionResetByFault
        if abort_status is not None:
            self._counters.abort.inc()
            ctx.response_headers[FAULT_HEADER] = "abort"
            response = Response(
                status=abort_status, body=_FAULT_BODY, content_type="application/json"
            )
            ctx.apply_response_headers(response)
            return response
        return None
