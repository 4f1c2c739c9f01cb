"""Faults set at run time through the admin API (`PUT /faults/{api}/{stage}/{route}`), for one
gateway process.

A PUT builds a new immutable plan and swaps it into the route's faults stage (pygw/runtime.py
`Runtime.set_faults`); DELETE returns the route to the faults its config gives it (none, for most
routes). A schedule in a plan set here counts from the PUT. A reload compiles a fresh runtime
from the config, which has none of these: the gateway re-applies them only when started with
`--keep-faults` (their schedules keep counting from the original PUT).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from pygw.config.model import FaultsConfig
from pygw.faults import FaultPlan, build_plan
from pygw.runtime import Runtime

log = logging.getLogger("pygw.faults")


class FaultRequestError(ValueError):
    """A PUT body that is not a valid faults object; the message names the field and the fix."""


def parse_faults(body: bytes) -> FaultsConfig:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as bad:
        raise FaultRequestError(f"the body is not JSON: {bad}") from None
    if not isinstance(data, dict):
        raise FaultRequestError(
            'the body must be a JSON object such as {"abort": {"status": 503, "percent": 10}}'
        )
    try:
        return FaultsConfig.model_validate(data)
    except ValidationError as invalid:
        raise FaultRequestError("; ".join(_describe(e) for e in invalid.errors())) from None


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "body"
    ctx = error.get("ctx") or {}
    if error["type"] == "pygw":
        return f"{where}: {ctx.get('message')} ({ctx.get('fix')})"
    if error["type"] == "extra_forbidden":
        return (
            f"{where}: unknown key (faults take delay, abort, headers, max_header_delay_ms; "
            "delay takes fixed_ms or p50_ms/p99_ms, percent, schedule; abort takes status or "
            "reset, percent, schedule)"
        )
    return f"{where}: {error['msg']}"


@dataclass(frozen=True, slots=True)
class _Override:
    spec: FaultsConfig
    started: float  # a reading of the runtime's fault clock at the PUT


RouteName = tuple[str, str, str]  # (api, stage, route key)


class FaultControl:
    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self._overrides: dict[RouteName, _Override] = {}
        self._rng = random.Random()

    def put(self, runtime: Runtime, name: RouteName, spec: FaultsConfig) -> bool:
        """Applies `spec` to the route now; False when the route does not exist."""
        started = runtime.fault_clock()
        if not runtime.set_faults(*name, self._plan(spec, started)):
            return False
        self._overrides[name] = _Override(spec, started)
        return True

    def delete(self, runtime: Runtime, name: RouteName) -> bool:
        """Back to the route's config faults; False when the route does not exist."""
        routes = runtime.fault_routes(*name)
        if not routes:
            return False
        self._overrides.pop(name, None)
        runtime.set_faults(*name, routes[0].config_faults)
        return True

    def listing(self, runtime: Runtime) -> list[dict[str, Any]]:
        """Every route with faults: its plan's shape, who set it, and the percentages now."""
        rows: list[dict[str, Any]] = []
        seen: set[RouteName] = set()
        for route in runtime.routes:
            name = (route.api, route.stage, route.key)
            stage = route.faults
            if name in seen or stage is None or stage.plan is None:
                continue
            seen.add(name)
            plan = stage.plan
            rows.append(
                {
                    "api": route.api,
                    "stage": route.stage,
                    "route": route.key,
                    "source": plan.origin,
                    "faults": plan.source,
                    "now": _now(plan, stage.clock() - plan.started),
                }
            )
        return rows

    def after_reload(self, runtime: Runtime) -> None:
        """A fresh runtime has the config's faults only: re-apply ours when asked to keep them."""
        if not self.keep:
            self._overrides.clear()
            return
        for name, override in list(self._overrides.items()):
            if not runtime.set_faults(*name, self._plan(override.spec, override.started)):
                log.warning("faults of %s %s %r dropped: the route is gone", *name)
                del self._overrides[name]

    def _plan(self, spec: FaultsConfig, started: float) -> FaultPlan:
        return build_plan(spec, self._rng, started, origin="admin")


def _now(plan: FaultPlan, elapsed: float) -> dict[str, float]:
    now: dict[str, float] = {}
    if plan.delay is not None:
        now["delay_percent"] = plan.delay.timeline.percent_at(elapsed)
    if plan.abort is not None:
        now["abort_percent"] = plan.abort.timeline.percent_at(elapsed)
    return now
