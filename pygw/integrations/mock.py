"""Mock integration: a fixed answer, optionally late or faulty, standing in for a backend."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from pygw.context import RequestContext
from pygw.faults import (
    Clock,
    ConnectionResetByFault,
    Latency,
    Timeline,
    reset_connection,
)
from pygw.pipeline import AnswerNow, Fixed
from pygw.response import OneWriteResponse, Response, ResponseHead, head_from_pairs

__all__ = ["ConnectionResetByFault", "Faults", "Latency", "MockIntegration", "reset_connection"]


@dataclass(frozen=True, slots=True)
class Faults:
    rate: float
    status: int | None = None  # answer with this status...
    reset: bool = False  # ...or reset the connection


class MockIntegration:
    def __init__(
        self,
        *,
        status: int,
        headers: dict[str, str],
        body: bytes,
        latency: Latency | None = None,
        faults: Faults | None = None,
        rng: random.Random | None = None,
        latency_timeline: Timeline | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._status = status
        self._headers = dict(headers)
        self._body = body
        self._rng = rng or random.Random()
        self._delay = latency.sampler(self._rng) if latency is not None else None
        # A latency schedule: the share of requests delayed, counted from now (config load).
        self._latency_timeline = latency_timeline
        self._clock = clock
        self._started = clock()
        self._faults = faults if faults is not None and faults.rate > 0 else None
        self._fault_body = b'{"message":"Injected fault"}'
        # The answer without a coroutine (Pipeline.answer_now), for a mock that never waits nor
        # resets the connection, its fixed header lines serialized once: only the request's own
        # headers (ids, CORS) are written per answer.
        self.answer_now: AnswerNow | None = None
        # The same answer's parts (status, head, body), for the lean way (Pipeline.fixed).
        self.fixed: Fixed | None = None
        self._head: ResponseHead = (b"", None, False, False, False)
        if self._delay is None and self._faults is None:
            try:
                self._head = head_from_pairs(self._headers.items())
                self.answer_now = self._fixed_answer
                self.fixed = (self._status, self._head, self._body)
            except ValueError:
                pass  # a header no answer can carry: refused when it is sent

    def _fixed_answer(self, ctx: RequestContext) -> Response | None:
        return OneWriteResponse(self._status, self._head, self._body, ctx.response_headers)

    async def __call__(self, ctx: RequestContext) -> Response:
        timeline = self._latency_timeline
        if self._delay is not None and (
            timeline is None
            or self._rng.random() * 100.0 < timeline.percent_at(self._clock() - self._started)
        ):
            started = time.perf_counter()
            await asyncio.sleep(self._delay())
            ctx.integration_latency_s = time.perf_counter() - started
        faults = self._faults
        if faults is not None and self._rng.random() < faults.rate:
            if faults.reset:
                reset_connection(ctx.request)
                raise ConnectionResetByFault
            response = Response(
                status=faults.status or 500,
                body=self._fault_body,
                content_type="application/json",
            )
        else:
            response = Response(status=self._status, body=self._body, headers=self._headers)
        ctx.apply_response_headers(response)
        return response

    async def close(self) -> None:
        return None
