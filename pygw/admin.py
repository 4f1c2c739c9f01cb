"""Admin listener: /health, /metrics, /routes and POST /reload, away from the traffic port."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from pygw.server import Gateway


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


class AdminServer:
    def __init__(self, gateway: Gateway, listen: str, token: str) -> None:
        self._gateway = gateway
        self._listen = listen
        self._token = token.encode()
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/routes", self._routes)
        app.router.add_post("/reload", self._reload)
        self._app = app

    async def start(self) -> str:
        from pygw.server import parse_listen

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
        offered = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        return hmac.compare_digest(offered, self._token)

    async def _health(self, request: web.Request) -> web.Response:
        runtime = self._gateway.runtime
        return _json({"status": "ok", "routes": len(runtime.routes)})

    async def _metrics(self, request: web.Request) -> web.Response:
        body = self._gateway.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _routes(self, request: web.Request) -> web.Response:
        return _json(self._gateway.runtime.route_table())

    async def _reload(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _json({"message": "Unauthorized"}, status=401)
        ok, detail = await self._gateway.reload()
        if ok:
            return _json({"reloaded": True, "summary": detail})
        return _json({"reloaded": False, "errors": detail.splitlines()}, status=400)
