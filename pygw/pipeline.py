"""Stage protocol and Pipeline: what runs between the route match and the integration.

A route's pipeline is built once at load with only the stages its config uses, so per-request code
never tests feature flags. A stage either lets the request go on (returns None) or answers it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from pygw.context import RequestContext

Stage = Callable[[RequestContext], Awaitable[web.StreamResponse | None]]


class Integration(Protocol):
    async def __call__(self, ctx: RequestContext) -> web.StreamResponse: ...

    async def close(self) -> None: ...


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
