"""The admin API's faults endpoints: `GET /faults`, `PUT /faults/{api}/{stage}/{route}` (a JSON
body shaped like a route's `faults` config) and `DELETE /faults/{api}/{stage}/{route}`.

The route key is the rest of the path, as written in the config (`GET /items/{id}`), its space
and braces percent-encoded by the client; `$default` stages and routes are written as they are.
The admin listener's token check covers these endpoints like the others.

`add_gateway_routes` serves one gateway process; `add_supervisor_routes` serves `pygw serve
--workers N`, validating the body once and then setting the faults in every worker (and again
in a worker that restarts).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import aiohttp
import orjson
from aiohttp import web

from pygw.fault_control import FaultRequestError, RouteName, parse_faults

if TYPE_CHECKING:
    from pygw.server import Gateway
    from pygw.supervisor import Supervisor

_MAX_BODY = 64 * 1024
_ROUTE_PATH = "/faults/{api}/{stage}/{route:.+}"


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def _name(request: web.Request) -> RouteName:
    info = request.match_info
    # aiohttp decodes the path, but leaves an encoded '/' (%2F) as it was.
    return info["api"], info["stage"], unquote(info["route"])


def _missing(name: RouteName) -> web.Response:
    api, stage, route = name
    return _json(
        {
            "message": f"no route {route!r} in stage {stage!r} of API {api!r} "
            "(GET /routes lists them; WebSocket APIs take no faults)"
        },
        status=404,
    )


async def _body(request: web.Request) -> bytes | web.Response:
    if request.content_length is not None and request.content_length > _MAX_BODY:
        return _json({"message": "the faults body is larger than 64 KiB"}, status=413)
    body = await request.content.read(_MAX_BODY + 1)
    if len(body) > _MAX_BODY:
        return _json({"message": "the faults body is larger than 64 KiB"}, status=413)
    return body


def add_gateway_routes(app: web.Application, gateway: Gateway) -> None:
    async def listing(request: web.Request) -> web.Response:
        return _json({"faults": gateway.faults.listing(gateway.runtime)})

    async def put(request: web.Request) -> web.Response:
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        try:
            spec = parse_faults(body)
        except FaultRequestError as bad:
            return _json({"message": str(bad)}, status=400)
        name = _name(request)
        if not gateway.faults.put(gateway.runtime, name, spec):
            return _missing(name)
        return _json(_applied(name, spec.model_dump(mode="json", exclude_unset=True)))

    async def delete(request: web.Request) -> web.Response:
        name = _name(request)
        if not gateway.faults.delete(gateway.runtime, name):
            return _missing(name)
        return _json(_applied(name, None))

    app.router.add_get("/faults", listing)
    app.router.add_put(_ROUTE_PATH, put)
    app.router.add_delete(_ROUTE_PATH, delete)


def _applied(name: RouteName, faults: dict[str, Any] | None) -> dict[str, Any]:
    api, stage, route = name
    return {"api": api, "stage": stage, "route": route, "faults": faults}


def add_supervisor_routes(app: web.Application, supervisor: Supervisor) -> None:
    async def listing(request: web.Request) -> web.Response:
        # Every worker holds the same faults: one answers for all.
        for worker in supervisor.ready_workers():
            try:
                status, body = await supervisor.worker_call(worker, "GET", "/faults")
            except (aiohttp.ClientError, OSError, TimeoutError):
                continue
            if status == 200:
                return web.Response(body=body, content_type="application/json")
        return _json({"message": "no worker is ready"}, status=503)

    async def change(request: web.Request) -> web.Response:
        body = b""
        spec = None
        if request.method == "PUT":
            read = await _body(request)
            if isinstance(read, web.Response):
                return read
            body = read
            try:
                spec = parse_faults(body)
            except FaultRequestError as bad:
                return _json({"message": str(bad)}, status=400)
        name = _name(request)
        answers = await supervisor.set_faults(name, request.method, request.raw_path, body)
        if any(status == 404 for status, _ in answers):
            return _missing(name)
        failed = [answer for answer in answers if answer[0] != 200]
        if failed or not answers:
            return _json(
                {"message": "the faults were not set in every worker", "workers": failed},
                status=503,
            )
        faults = spec.model_dump(mode="json", exclude_unset=True) if spec else None
        return _json({**_applied(name, faults), "workers": len(answers)})

    app.router.add_get("/faults", listing)
    app.router.add_put(_ROUTE_PATH, change)
    app.router.add_delete(_ROUTE_PATH, change)


async def forward(
    supervisor: Supervisor, workers: list[Any], method: str, path: str, body: bytes
) -> list[tuple[int, str]]:
    """(status, detail) of each worker's answer to one faults call."""
    answers = await asyncio.gather(
        *(supervisor.worker_call(worker, method, path, body=body or None) for worker in workers),
        return_exceptions=True,
    )
    results: list[tuple[int, str]] = []
    for answer in answers:
        if isinstance(answer, BaseException):
            results.append((0, str(answer) or type(answer).__name__))
        else:
            status, payload = answer
            results.append((status, payload.decode("utf-8", "replace")[:200]))
    return results
