"""Stage protocol and Pipeline: what runs between the route match and the integration.

A route's pipeline is built once at load with only the stages its config uses, so per-request code
never tests feature flags. A stage either lets the request go on (returns None) or answers it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Protocol

from aiohttp import web

from pygw.context import RequestContext

Stage = Callable[[RequestContext], Awaitable[web.StreamResponse | None]]


class Integration(Protocol):
    async def __call__(self, ctx: RequestContext) -> web.StreamResponse: ...

    async def close(self) -> None: ...


class StageTimer(Protocol):
    def observe(self, value: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Pipeline:
    stages: tuple[Stage, ...]
    integration: Integration

    async def run(self, ctx: RequestContext) -> web.StreamResponse:
        for stage in self.stages:
            answered = await stage(ctx)
            if answered is not None:
                return answered
        return await self.integration(ctx)


@dataclass(frozen=True, slots=True)
class TimedPipeline(Pipeline):
    """A Pipeline that records each stage's time (`timed[i]` pairs `stages[i]` with its
    histogram), whether the stage passes the request on, answers it or refuses it. A separate
    class so that untimed pipelines run exactly as before."""

    timed: tuple[tuple[Stage, StageTimer], ...]

    async def run(self, ctx: RequestContext) -> web.StreamResponse:
        clock = perf_counter
        # One clock reading per stage: each stage's end is the next one's start.
        started = clock()
        for stage, timer in self.timed:
            try:
                answered = await stage(ctx)
            finally:
                ended = clock()
                timer.observe(ended - started)
                started = ended
            if answered is not None:
                return answered
        return await self.integration(ctx)
