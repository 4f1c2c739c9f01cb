"""Stage protocol and Pipeline: what runs between the route match and the integration.

A route's pipeline is built once at load with only the stages its config uses, so per-request code
never tests feature flags. A stage either lets the request go on (returns None) or answers it.

A stage that never waits (an API key, a token bucket, a CIDR list, parameter checks) also offers
its work as a plain method, `check`; the pipeline calls that directly. Awaiting a coroutine per
stage costs more than what such a stage does. When no stage of a pipeline waits (`waits` is
False), the dispatcher runs them with the plain `check` and awaits the integration itself, so the
request's chain of coroutines, resumed at every wait on the upstream, is one level shorter.

A stage that waits only sometimes (a JWT authorizer, which waits only for a token it has not
verified yet) offers a `check` too, which returns, for a request it cannot finish at once, the
coroutine that does (a `Pending`). The pipeline's `check` then hands back the rest of the
request, that coroutine, the stages after it and the integration, as one coroutine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from types import CoroutineType
from typing import Any, Protocol

from pygw._native import Histogram, TimedChecks, monotonic
from pygw.context import RequestContext
from pygw.response import Response, ResponseHead
from pygw.serving import LeanClient, Routed, SimpleParts

Stage = Callable[[RequestContext], Awaitable[Response | None]]


class Integration(Protocol):
    async def __call__(self, ctx: RequestContext) -> Response: ...

    async def close(self) -> None: ...


class StageTimer(Protocol):
    def lap(self, started: float) -> float:
        """Records the time since `started` (a `monotonic()` reading); returns the time now."""
        ...


# What an integration that answers from a callback (`StartNow`) hands over: its answer, the
# failure to answer with, or the coroutine that finishes the answer (a body still streaming).
Outcome = Response | Exception | Coroutine[Any, Any, Response]
# An integration's answer when it has one without waiting (a mock, a cache hit), else None.
AnswerNow = Callable[[RequestContext], Response | None]
# Takes the request and calls the callback once, later (never before returning), with its
# Outcome, and returns None; or, when it cannot answer this request that way, returns the
# coroutine to await for the answer instead (having called nothing).
StartNow = Callable[
    [RequestContext, Callable[[Outcome], None]], Coroutine[Any, Any, Response] | None
]


class LeanAnswered(Protocol):
    """A request served the lean way (Dispatcher.serve_lean), as its answer is handed back."""

    def answered(
        self,
        status: int,
        reason: bytes,
        head: ResponseHead,
        body: bytes,
        own: dict[str, str],
        integration_s: float,
        integration_status: int | None,
    ) -> None:
        """The whole answer (as whole_answer took an upstream's apart, whose status is then
        `integration_status`): counted, logged and sent."""


class LeanSend(LeanAnswered, Protocol):
    """A simple request on a route without stages, as Dispatcher.serve_lean hands it to its
    integration's `start_lean` (no Request, no RequestContext made for it)."""

    simple: SimpleParts
    found: Routed
    request_id: str
    client: LeanClient

    def own_headers(self) -> dict[str, str]:
        """The headers the gateway adds to the answer."""

    def trace(self) -> tuple[str, str]:
        """The request's trace id and the id of the gateway's span in it."""

    def context(self) -> tuple[RequestContext, Callable[[Outcome], None]]:
        """The request's context after all, and the callback its Outcome goes to (as
        StartNow's): for an answer that is not whole in one read, or a failure."""


class LeanView(LeanSend, Protocol):
    """A simple request on a route whose stages all check it without its objects (`check_lean`)
    and whose integration may answer it from memory or send it on (`answer_lean`): what those
    read and set (Dispatcher.serve_lean hands it over; no Request, no RequestContext made for
    it)."""

    method: str
    path: str  # below the stage's prefix, as RequestContext.path
    params: dict[str, str]
    raw_headers: tuple[tuple[bytes, bytes], ...]
    raw_query: str
    # As RequestContext's: the headers the gateway adds to the answer.
    response_headers: dict[str, str]
    api_key_id: str | None
    cache_state: str | None


# A stage's check of a LeanView: None to go on; raises GatewayError to refuse (as `check`).
CheckLean = Callable[[LeanView], None]
# Answers the request from memory, or sends it on to the integration it wraps (`start_lean`, a
# miss), and returns True; or, having sent nothing, returns None when memory holds nothing for it
# as far as it looked (the integration proper serves it, as on a miss) or False when the
# integration's `answer_now` may still answer it (an answer this way cannot send). The request
# then goes on to the integration the full way, its stages done.
AnswerLean = Callable[[LeanView], bool | None]

# Sends the request on and returns True; or returns False, having sent nothing, when it
# cannot (no pooled connection, a target it would not send to): serve_now serves it then.
StartLean = Callable[[LeanSend], bool]
# An answer the same for every request (a mock's): status, serialized head, body.
Fixed = tuple[int, ResponseHead, bytes]

# What a stage that waits only sometimes returns from `check` for a request it cannot finish
# at once: the coroutine that finishes its work (its answer or None, as an awaited stage's).
Pending = Coroutine[Any, Any, Response | None]
SyncCheck = Callable[[RequestContext], Response | Pending | None]
# What a pipeline's `check` gives: an answer, None (on to the integration), or the coroutine
# that serves the rest of the request when one of its stages waits for it.
Checked = Response | Coroutine[Any, Any, Response] | None
# (the stage's `check`, None) for a stage that has one, else (None, the stage)
Step = tuple[SyncCheck | None, Stage | None]


async def checked_to_the_end(check: SyncCheck, ctx: RequestContext) -> Response | None:
    """A stage's `check` awaited to its end: the `__call__` of a stage that waits only
    sometimes."""
    answered = check(ctx)
    if answered is not None and not isinstance(answered, Response):
        return await answered
    return answered


def _steps(stages: tuple[Stage, ...]) -> tuple[Step, ...]:
    steps: list[Step] = []
    for stage in stages:
        check = getattr(stage, "check", None)
        steps.append((check, None) if callable(check) else (None, stage))
    return tuple(steps)


def _lean_checks(stages: tuple[Stage, ...]) -> list[CheckLean] | None:
    """Each stage's `check_lean`, or None when a stage has none."""
    checks: list[CheckLean] = []
    for stage in stages:
        # A stage's native check first: it runs without a Python call under TimedChecks.
        check = getattr(stage, "native_check_lean", None) or getattr(stage, "check_lean", None)
        if check is None:
            return None
        checks.append(check)
    return checks


def _checked_in_order(checks: list[CheckLean]) -> Callable[[LeanView], object]:
    if len(checks) == 1:
        return checks[0]

    def check_each(lean: LeanView) -> None:
        for check in checks:
            check(lean)

    return check_each


@dataclass(frozen=True, slots=True)
class Pipeline:
    stages: tuple[Stage, ...]
    integration: Integration
    steps: tuple[Step, ...] = field(init=False, repr=False, compare=False)
    waits: bool = field(init=False, repr=False, compare=False)
    # The stages of a pipeline that never waits: an answer, or None to call the integration;
    # None for a pipeline without stages. Only for `waits` False (a waiting stage would be
    # skipped). A field, not a method, so that a timed pipeline can hand out its native loop
    # and the dispatcher calls it directly.
    check: Callable[[RequestContext], Checked] | None = field(init=False, repr=False, compare=False)
    # The integration's ways to answer without being awaited, when it has them (looked up once
    # here rather than per request).
    answer_now: AnswerNow | None = field(init=False, repr=False, compare=False)
    start_now: StartNow | None = field(init=False, repr=False, compare=False)
    # For a pipeline without stages: the integration's way to send a simple request on
    # without its objects (Dispatcher.serve_lean), when it has one.
    start_lean: StartLean | None = field(init=False, repr=False, compare=False)
    # For a pipeline without stages: the integration's answer when it is the same for every
    # request, given the request's own headers (Dispatcher.serve_lean answers it at once).
    fixed: Fixed | None = field(init=False, repr=False, compare=False)
    # For a pipeline whose stages all have a `check_lean` and whose integration has an
    # `answer_lean` (a cache): that answer, and the stages' checks of a LeanView in order
    # (None for a pipeline without stages). Dispatcher.serve_lean answers a cache hit, or
    # sends a miss on, so.
    answer_lean: AnswerLean | None = field(init=False, repr=False, compare=False)
    check_lean: Callable[[LeanView], object] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        steps = _steps(self.stages)
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "waits", any(check is None for check, _ in steps))
        object.__setattr__(self, "check", self._check_each if steps else None)
        object.__setattr__(self, "answer_now", getattr(self.integration, "answer_now", None))
        object.__setattr__(self, "start_now", getattr(self.integration, "start_now", None))
        lean = None if steps else getattr(self.integration, "start_lean", None)
        object.__setattr__(self, "start_lean", lean)
        object.__setattr__(
            self, "fixed", None if steps else getattr(self.integration, "fixed", None)
        )
        lean_checks = _lean_checks(self.stages)
        answer_lean = getattr(self.integration, "answer_lean", None)
        if lean_checks is None or answer_lean is None:
            answer_lean = lean_checks = None
        object.__setattr__(self, "answer_lean", answer_lean)
        object.__setattr__(
            self, "check_lean", _checked_in_order(lean_checks) if lean_checks else None
        )

    async def run(self, ctx: RequestContext, start: int = 0) -> Response:
        """The request from its stage `start` on, then the integration."""
        for check, stage in self.steps[start:] if start else self.steps:
            answered = check(ctx) if check is not None else await stage(ctx)  # type: ignore[misc]
            if answered is not None and not isinstance(answered, Response):
                answered = await answered
            if answered is not None:
                return answered
        return await self.integration(ctx)

    def _check_each(self, ctx: RequestContext) -> Checked:
        for index, (check, _) in enumerate(self.steps):
            answered = check(ctx)  # type: ignore[misc]
            if answered is not None:
                if isinstance(answered, Response):
                    return answered
                return self.resume_at(ctx, index, answered, 0.0)
        return None

    async def resume_at(
        self, ctx: RequestContext, index: int, pending: Pending, started: float
    ) -> Response:
        """The rest of a request whose stage `index` waits: `pending` (that stage's work,
        begun at `started`, a `monotonic()` reading), the stages after it, the integration."""
        answered = await pending
        return answered if answered is not None else await self.run(ctx, index + 1)


@dataclass(frozen=True, slots=True)
class TimedPipeline(Pipeline):
    """A Pipeline that records each stage's time (`timed[i]` pairs `stages[i]` with its
    histogram), whether the stage passes the request on, answers it or refuses it. A separate
    class so that untimed pipelines pay nothing for timing."""

    timed: tuple[tuple[Stage, StageTimer], ...]
    timed_steps: tuple[tuple[SyncCheck | None, Stage | None, StageTimer], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        Pipeline.__post_init__(self)
        # `timed` pairs each of `stages`, in order, with its timer (zip's strict checks the count).
        timed_steps = tuple(
            (check, stage, timer)
            for (check, stage), (_, timer) in zip(self.steps, self.timed, strict=True)
        )
        object.__setattr__(self, "timed_steps", timed_steps)
        checks = [check for check, _, _ in timed_steps if check is not None]
        histograms = [timer for _, _, timer in timed_steps if isinstance(timer, Histogram)]
        if timed_steps and len(checks) == len(histograms) == len(timed_steps):
            native = TimedChecks(checks, histograms, CoroutineType, self.resume_at)
            object.__setattr__(self, "check", native.run)
            lean_checks = _lean_checks(self.stages)
            if self.check_lean is not None and lean_checks is not None:
                # Timed into the same histograms as the full way's checks.
                timed_lean = TimedChecks(lean_checks, histograms, CoroutineType, self.resume_at)
                object.__setattr__(self, "check_lean", timed_lean.run)
        elif self.check_lean is not None:
            # Stage timers that are not native histograms: the full way times these.
            object.__setattr__(self, "answer_lean", None)
            object.__setattr__(self, "check_lean", None)

    async def run(self, ctx: RequestContext, start: int = 0) -> Response:
        # One clock reading per stage, taken by the timer as it records: each stage's end is
        # the next one's start.
        started = monotonic()
        for check, stage, timer in self.timed_steps[start:] if start else self.timed_steps:
            try:
                answered = check(ctx) if check is not None else await stage(ctx)  # type: ignore[misc]
                if answered is not None and not isinstance(answered, Response):
                    answered = await answered
            finally:
                started = timer.lap(started)
            if answered is not None:
                return answered
        return await self.integration(ctx)

    def _check_each(self, ctx: RequestContext) -> Checked:
        # run()'s loop without the await, for timers that are not native histograms (the
        # native TimedChecks does the same loop): it must stay a plain function (see
        # Pipeline.check), and a coroutine cannot share a loop body with one.
        started = monotonic()
        for index, (check, _, timer) in enumerate(self.timed_steps):
            try:
                answered = check(ctx)  # type: ignore[misc]
            except BaseException:
                timer.lap(started)
                raise
            if answered is not None and not isinstance(answered, Response):
                return self.resume_at(ctx, index, answered, started)
            started = timer.lap(started)
            if answered is not None:
                return answered
        return None

    async def resume_at(
        self, ctx: RequestContext, index: int, pending: Pending, started: float
    ) -> Response:
        try:
            answered = await pending
        finally:
            self.timed_steps[index][2].lap(started)
        return answered if answered is not None else await self.run(ctx, index + 1)
