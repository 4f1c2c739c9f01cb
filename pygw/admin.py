"""Admin listener: /health, /metrics, /routes and POST /reload, away from the traffic port, and
the live dashboard at / (pygw/observe/dashboard.py).

With `admin.token` set, every endpoint but `GET /health` (which load balancers and probes call
without credentials) needs `Authorization: Bearer TOKEN` (the dashboard's GET endpoints also
take the cookie its page sets); anything else is 401 `{"message": "Unauthorized"}`. The route
table and the metrics describe the deployment, which is worth keeping from whoever can reach
the port.

`AdminServer` serves one gateway process or the supervisor of several worker processes
(pygw/supervisor.py), through the `AdminBackend` each implements (pygw/admin_backend.py): the
URLs are the same, and a supervisor's listener adds `GET /workers`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

from pygw import fault_admin
from pygw.admin_auth import bearer_matches, is_loopback_listen
from pygw.admin_backend import AdminBackend
from pygw.listen import parse_listen
from pygw.observe.dashboard import Dashboard, DashboardFeed


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


log = logging.getLogger("pygw.admin")

_UNAUTHORIZED = {"message": "Unauthorized"}
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminServer:
    def __init__(self, backend: AdminBackend, listen: str, token: str) -> None:
        self._backend = backend
        self._listen = listen
        self._token = token
        self._runner: web.AppRunner | None = None
        app = self._app = web.Application(middlewares=[self._require_token])
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/routes", self._routes)
        app.router.add_post("/reload", self._reload)
        if backend.lists_workers:
            app.router.add_get("/workers", self._workers)
        app.router.add_get("/faults", self._faults)
        app.router.add_put(fault_admin.ROUTE_PATH, self._change_faults)
        app.router.add_delete(fault_admin.ROUTE_PATH, self._change_faults)
        # The connections API (POST sends, GET describes, DELETE closes) checks the token itself.
        app.router.add_route("*", "/@connections/{connection_id}", self._connections)
        self._dashboard = Dashboard(
            DashboardFeed(self._families, self._route_rows, self._reloads), token
        )
        self._dashboard.add_routes(app)

    @web.middleware
    async def _require_token(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path.startswith("/@connections/"):
            # The connections API answers in the Management API's error shape, and checks the
            # token itself (a standalone gateway's follows admin.token across reloads).
            return await handler(request)
        if request.path == "/health" and request.method in ("GET", "HEAD"):
            return await handler(request)
        if not self._authorised(request):
            dashboard = self._dashboard
            if not dashboard.admits(request):
                return dashboard.refusal(request) or _json(_UNAUTHORIZED, status=401)
        return await handler(request)

    async def start(self) -> str:
        """Start listening; returns the address as shown to people (`http://HOST:PORT`)."""
        if not self._token and not is_loopback_listen(self._listen):
            log.warning(
                "admin listener %s is reachable from other machines and admin.token is not set: "
                "anyone who reaches it can reload the config and read the routes and metrics",
                self._listen,
            )
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await self._runner.setup()
        listen = parse_listen(self._listen)
        site: web.BaseSite
        if isinstance(listen, str):
            site = web.UnixSite(self._runner, listen)
            await site.start()
            return f"unix:{listen}"
        host, port = listen
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = port
        for address in self._runner.addresses:
            if isinstance(address, tuple):
                bound_port = address[1]
                break
        return f"http://{host}:{bound_port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _authorised(self, request: web.Request) -> bool:
        if not self._token:
            return True
        return bearer_matches(request.headers.get("Authorization"), self._token)

    # -- the dashboard's feed ------------------------------------------------------------------

    async def _families(self) -> Iterable[Metric]:
        return await self._backend.metric_families()

    def _reloads(self) -> list[dict[str, Any]]:
        return self._backend.reloads()

    async def _route_rows(self) -> list[dict[str, Any]]:
        found = await self._backend.route_table()
        return found if found is not None else []

    # -- endpoints -----------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        status, body = await self._backend.health()
        return _json(body, status=status)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self._backend.metrics_text()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _routes(self, request: web.Request) -> web.Response:
        found = await self._backend.route_table()
        if found is None:
            return _json({"message": "no worker is ready"}, status=503)
        return _json(found)

    async def _reload(self, request: web.Request) -> web.Response:
        ok, answer = await self._backend.reload()
        return _json(answer, status=200 if ok else 400)

    async def _workers(self, request: web.Request) -> web.Response:
        return _json(self._backend.workers())

    async def _faults(self, request: web.Request) -> web.Response:
        return await fault_admin.listing(self._backend)

    async def _change_faults(self, request: web.Request) -> web.Response:
        return await fault_admin.change(self._backend, request)

    async def _connections(self, request: web.Request) -> web.StreamResponse:
        return await self._backend.connections(request)
