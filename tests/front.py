"""A handler served through pygw's own front end on 127.0.0.1, as `pygw serve` serves requests:
for tests that drive stages and integrations over real HTTP without a whole gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pygw.dispatch import refusal_response
from pygw.http1 import ConnectionLimits, Http1Server
from pygw.request import Request
from pygw.response import Response
from pygw.server import upgrade_server


class FrontServer:
    def __init__(self, listener: asyncio.Server, front: Http1Server, upgrades: object) -> None:
        self._listener = listener
        self._front = front
        self._upgrades = upgrades
        self.port: int = listener.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    async def cleanup(self) -> None:
        self._listener.close()
        await self._front.shutdown(0.2)
        await upgrade_shutdown(self._upgrades)


async def upgrade_shutdown(upgrades: object) -> None:
    shutdown = getattr(upgrades, "shutdown", None)
    if shutdown is not None:
        await shutdown(0.2)


async def serve_front(
    handler: Callable[[Request], Awaitable[Response]],
    limits: ConnectionLimits | None = None,
) -> FrontServer:
    upgrades = upgrade_server(handler)
    front = Http1Server(handler, limits or ConnectionLimits(), refusal_response, upgrade=upgrades)
    listener = await asyncio.get_running_loop().create_server(front, "127.0.0.1", 0)
    return FrontServer(listener, front, upgrades)
