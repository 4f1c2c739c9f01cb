"""Admin listener: /health, /metrics, /routes and POST /reload, away from the traffic port, and
the live dashboard at / (pygw/observe/dashboard.py).

With `admin.token` set, every endpoint but `GET /health` (which load balancers and probes call
without credentials) needs `Authorization: Bearer TOKEN` (the dashboard's GET endpoints also
take the cookie its page sets); anything else is 401 `{"message": "Unauthorized"}`. The route
table and the metrics describe the deployment, which is worth keeping from whoever can reach
the port.

`AdminServer` serves one gateway process. `SupervisorAdmin` serves a supervisor of several worker
processes (pygw/supervisor.py): the same endpoints answered for all workers at once, plus
`GET /workers`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

from pygw import fault_admin
from pygw.admin_auth import bearer_matches, is_loopback_listen
from pygw.integrations.ws_connections import management_error
from pygw.observe.dashboard import Dashboard, DashboardFeed, families_of

if TYPE_CHECKING:
    from pygw.server import Gateway
    from pygw.supervisor import Supervisor


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


log = logging.getLogger("pygw.admin")

_UNAUTHORIZED = {"message": "Unauthorized"}
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _AdminBase:
    def __init__(self, listen: str, token: str) -> None:
        self._listen = listen
        self._token = token
        self._runner: web.AppRunner | None = None
        self._app = web.Application(middlewares=[self._require_token])
        self._dashboard: Dashboard | None = None

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
            if dashboard is None or not dashboard.admits(request):
                refusal = dashboard.refusal(request) if dashboard is not None else None
                return refusal or _json(_UNAUTHORIZED, status=401)
        return await handler(request)

    def _add_dashboard(self, feed: DashboardFeed) -> None:
        self._dashboard = Dashboard(feed, self._token)
        self._dashboard.add_routes(self._app)

    async def start(self) -> str:
        """Start listening; returns the address as shown to people (`http://HOST:PORT`)."""
        from pygw.server import parse_listen

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


class AdminServer(_AdminBase):
    def __init__(self, gateway: Gateway, listen: str, token: str) -> None:
        super().__init__(listen, token)
        self._gateway = gateway
        app = self._app
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/routes", self._routes)
        app.router.add_post("/reload", self._reload)
        # The connections API (POST sends, GET describes, DELETE closes) checks the token itself.
        app.router.add_route("*", "/@connections/{connection_id}", gateway.connections.handle_admin)
        fault_admin.add_gateway_routes(app, gateway)
        self._add_dashboard(DashboardFeed(self._families, self._route_rows, self._reloads))

    async def _families(self) -> Iterable[Metric]:
        return self._gateway.metrics.registry.collect()

    def _reloads(self) -> list[dict[str, Any]]:
        return self._gateway.reload_history.recent()

    async def _route_rows(self) -> list[dict[str, Any]]:
        return self._gateway.runtime.route_table()

    async def _health(self, request: web.Request) -> web.Response:
        runtime = self._gateway.runtime
        return _json({"status": "ok", "routes": len(runtime.routes)})

    async def _metrics(self, request: web.Request) -> web.Response:
        body = self._gateway.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _routes(self, request: web.Request) -> web.Response:
        return _json(self._gateway.runtime.route_table())

    async def _reload(self, request: web.Request) -> web.Response:
        ok, detail = await self._gateway.reload()
        if ok:
            return _json({"reloaded": True, "summary": detail})
        return _json({"reloaded": False, "errors": detail.splitlines()}, status=400)


class SupervisorAdmin(_AdminBase):
    """The public admin API of `pygw serve --workers N`.

    /health is 200 only while every worker is up (503 while one restarts or during the drain),
    /metrics sums the workers' metrics, /routes asks one worker (all serve the same config),
    POST /reload validates the config once and then reloads every worker, GET /workers lists
    them (index, pid, started, restarts, ready), and `/@connections/{id}` is answered by the
    worker holding the WebSocket connection (its index is in the id)."""

    def __init__(self, supervisor: Supervisor, listen: str, token: str) -> None:
        super().__init__(listen, token)
        self._supervisor = supervisor
        app = self._app
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/routes", self._routes)
        app.router.add_post("/reload", self._reload)
        app.router.add_get("/workers", self._workers)
        app.router.add_route("*", "/@connections/{connection_id}", self._connections)
        fault_admin.add_supervisor_routes(app, supervisor)
        self._add_dashboard(DashboardFeed(self._families, self._route_rows, self._reloads))

    async def _families(self) -> Iterable[Metric]:
        return families_of(await self._supervisor.metrics())

    def _reloads(self) -> list[dict[str, Any]]:
        return self._supervisor.reload_history.recent()

    async def _route_rows(self) -> list[dict[str, Any]]:
        found = await self._worker_routes()
        return orjson.loads(found) if found is not None else []

    async def _worker_routes(self) -> bytes | None:
        for worker in self._supervisor.ready_workers():
            try:
                status, body = await self._supervisor.worker_call(worker, "GET", "/routes")
            except (aiohttp.ClientError, OSError, TimeoutError):
                continue
            if status == 200:
                return body
        return None

    async def _health(self, request: web.Request) -> web.Response:
        supervisor = self._supervisor
        ready = len(supervisor.ready_workers())
        wanted = len(supervisor.workers)
        if supervisor.stopping:
            return _json({"status": "draining", "workers": ready, "wanted": wanted}, status=503)
        if ready < wanted:
            return _json({"status": "degraded", "workers": ready, "wanted": wanted}, status=503)
        return _json({"status": "ok", "workers": ready, "wanted": wanted})

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self._supervisor.metrics()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _routes(self, request: web.Request) -> web.Response:
        body = await self._worker_routes()
        if body is not None:
            return web.Response(body=body, content_type="application/json")
        return _json({"message": "no worker is ready"}, status=503)

    async def _reload(self, request: web.Request) -> web.Response:
        ok, detail = await self._supervisor.reload()
        return _json(detail, status=200 if ok else 400)

    async def _workers(self, request: web.Request) -> web.Response:
        return _json(self._supervisor.describe())

    async def _connections(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return management_error(401, "Unauthorized", "UnauthorizedException")
        method = request.method
        if method not in ("GET", "POST", "DELETE"):
            return management_error(405, "Method Not Allowed", None, {"Allow": "GET, POST, DELETE"})
        body = b""
        if method == "POST":
            # The worker checks the connection's own limit; this bounds what is read here.
            limit = self._supervisor.connection_post_limit()
            if request.content_length is not None and request.content_length > limit:
                return management_error(413, "Message too long", "PayloadTooLargeException")
            body = await request.content.read(limit + 1)
            if len(body) > limit:
                return management_error(413, "Message too long", "PayloadTooLargeException")
        connection_id = request.match_info["connection_id"]
        try:
            answer = await self._supervisor.connection_call(method, connection_id, body)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return management_error(503, "Service Unavailable", None)
        if answer is None:
            return management_error(410, "Gone", "GoneException")
        status, headers, payload = answer
        return web.Response(status=status, body=payload or None, headers=headers)
