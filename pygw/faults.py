"""Injected faults as immutable plans: delays drawn from a distribution, aborts with a status or
a connection reset, and timelines that change the share of requests affected as time passes.

Shared by the faults stage (pygw/stages/faults.py) and the mock integration, which neither may
import the other. A plan is built once (at config load, or when the admin API sets one) and
never changed: whoever changes a route's faults swaps in a new plan.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import random
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pygw.config.model import FaultsConfig, ScheduleStep
from pygw.request import Request

# Standard normal quantile at 0.99: a log-normal with median p50 reaches p99 at
# p50 * exp(sigma * Z99).
_Z99 = 2.3263478740408408

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Latency:
    """Delay in milliseconds: fixed, or log-normal fitted to a median and a p99."""

    fixed_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None

    def sampler(self, rng: random.Random) -> Sampler:
        if self.fixed_ms is not None:
            return Fixed(self.fixed_ms / 1000.0)
        if self.p50_ms is None or self.p99_ms is None:
            raise ValueError("latency needs either fixed, or both p50 and p99")
        if self.p50_ms <= 0:
            return Fixed(0.0)
        sigma = math.log(max(self.p99_ms, self.p50_ms) / self.p50_ms) / _Z99
        return LogNormal(math.log(self.p50_ms / 1000.0), sigma, rng)


class Sampler:
    """Draws one delay, in seconds."""

    def __call__(self) -> float:
        raise NotImplementedError


class Fixed(Sampler):
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def __call__(self) -> float:
        return self._seconds


class LogNormal(Sampler):
    def __init__(self, mu: float, sigma: float, rng: random.Random) -> None:
        self._mu = mu
        self._sigma = sigma
        self._rng = rng

    def __call__(self) -> float:
        return self._rng.lognormvariate(self._mu, self._sigma)


@dataclass(frozen=True, slots=True)
class Timeline:
    """The percentage of requests affected `elapsed` seconds after the plan started: `base`
    until the first step, then each step's percent from its `after_s` on."""

    base: float
    after_s: tuple[float, ...] = ()
    percents: tuple[float, ...] = ()

    @classmethod
    def of(cls, base: float, steps: Sequence[ScheduleStep]) -> Timeline:
        return cls(base, tuple(s.after_s for s in steps), tuple(s.percent for s in steps))

    def percent_at(self, elapsed: float) -> float:
        if not self.after_s:
            return self.base
        index = bisect.bisect_right(self.after_s, elapsed)
        return self.base if index == 0 else self.percents[index - 1]


@dataclass(frozen=True, slots=True)
class DelayFault:
    sample: Sampler
    timeline: Timeline


@dataclass(frozen=True, slots=True)
class AbortFault:
    status: int | None  # answer with this status...
    reset: bool  # ...or reset the connection
    timeline: Timeline


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What the faults stage does to a route's requests. `started` is a reading of the stage's
    clock, which timelines count from; `source` is the JSON shape the plan was built from (what
    `GET /faults` shows); `origin` says who set it (config or admin)."""

    delay: DelayFault | None
    abort: AbortFault | None
    headers: bool
    max_header_delay_s: float
    started: float
    source: dict[str, Any] = field(default_factory=dict)
    origin: str = "config"


def build_plan(
    spec: FaultsConfig, rng: random.Random, started: float, origin: str = "config"
) -> FaultPlan:
    delay = None
    if spec.delay is not None:
        d = spec.delay
        latency = Latency(fixed_ms=d.fixed_ms, p50_ms=d.p50_ms, p99_ms=d.p99_ms)
        delay = DelayFault(latency.sampler(rng), Timeline.of(d.percent, d.schedule))
    abort = None
    if spec.abort is not None:
        a = spec.abort
        abort = AbortFault(a.status, a.reset, Timeline.of(a.percent, a.schedule))
    return FaultPlan(
        delay=delay,
        abort=abort,
        headers=spec.headers,
        max_header_delay_s=spec.max_header_delay_ms / 1000.0,
        started=started,
        source=spec.model_dump(mode="json", exclude_unset=True),
        origin=origin,
    )


class ConnectionResetByFault(Exception):
    """The client connection was reset on purpose; there is nothing left to answer."""


_LINGER_RESET = struct.pack("ii", 1, 0)


def reset_connection(request: Request) -> None:
    """Close with RST rather than FIN, as a crashed backend would (SO_LINGER, zero timeout)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()
