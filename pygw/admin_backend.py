"""What the admin listener (pygw/admin.py) asks of the process it serves.

A gateway process (pygw/server.py) and the supervisor of `pygw serve --workers N`
(pygw/supervisor.py) each implement `AdminBackend`: the admin listener owns the URLs, the token
check and the answers' shapes, the backend owns where the figures come from (this process, or
every worker at once)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client.metrics_core import Metric

from pygw.config.model import FaultsConfig
from pygw.fault_control import RouteName


@dataclass(frozen=True, slots=True)
class FaultsChange:
    """The outcome of a faults PUT or DELETE."""

    found: bool  # False: no such route (404)
    # Workers that did not apply the change, as (status, detail): the answer is 503.
    failed: list[tuple[int, str]] | None = None
    # How many workers applied it (a supervisor's answers say so).
    workers: int | None = None


class AdminBackend(Protocol):
    @property
    def lists_workers(self) -> bool:
        """Whether `GET /workers` is served (a supervisor's listener has it)."""
        ...

    async def health(self) -> tuple[int, dict[str, Any]]:
        """Status and JSON body of `GET /health`."""
        ...

    async def metrics_text(self) -> bytes:
        """The Prometheus text exposition of `GET /metrics`."""
        ...

    async def metric_families(self) -> Iterable[Metric]:
        """The same metrics as families, for the dashboard."""
        ...

    async def route_table(self) -> list[dict[str, Any]] | None:
        """The rows of `GET /routes`; None when no process can say (503)."""
        ...

    async def reload(self) -> tuple[bool, dict[str, Any]]:
        """Reload the config: whether it took, and the JSON body of the answer."""
        ...

    def reloads(self) -> list[dict[str, Any]]:
        """Recent reloads, newest first, for the dashboard."""
        ...

    async def connections(self, request: web.Request) -> web.StreamResponse:
        """`/@connections/{connection_id}`, answered in the Management API's shapes; the
        backend checks the token itself (a gateway's follows admin.token across reloads)."""
        ...

    async def fault_listing(self) -> list[dict[str, Any]] | None:
        """The faults set at run time; None when no process can say (503)."""
        ...

    async def change_faults(
        self, name: RouteName, faults: FaultsConfig | None, path: str, body: bytes
    ) -> FaultsChange:
        """Set (`faults` given) or clear (None) a route's faults. `path` and `body` are the
        request's as received, for a backend that forwards them."""
        ...

    def workers(self) -> list[dict[str, Any]]:
        """The rows of `GET /workers` (only asked when `lists_workers`)."""
        ...
