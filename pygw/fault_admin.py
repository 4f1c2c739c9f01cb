"""The admin API's faults endpoints: `GET /faults`, `PUT /faults/{api}/{stage}/{route}` (a JSON
body shaped like a route's `faults` config) and `DELETE /faults/{api}/{stage}/{route}`.

The route key is the rest of the path, as written in the config (`GET /items/{id}`), its space
and braces percent-encoded by the client; `$default` stages and routes are written as they are.
The admin listener's token check covers these endpoints like the others.

The body is validated here, once; the backend applies it: a gateway process to itself, the
supervisor of `pygw serve --workers N` to every worker (and again to a worker that restarts).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from pygw.admin_backend import AdminBackend
from pygw.fault_control import FaultRequestError, RouteName, parse_faults

ROUTE_PATH = "/faults/{api}/{stage}/{route:.+}"
_MAX_BODY = 64 * 1024


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


def _applied(name: RouteName, faults: dict[str, Any] | None) -> dict[str, Any]:
    api, stage, route = name
    return {"api": api, "stage": stage, "route": route, "faults": faults}


async def listing(backend: AdminBackend) -> web.Response:
    found = await backend.fault_listing()
    if found is None:
        return _json({"message": "no worker is ready"}, status=503)
    return _json({"faults": found})


async def change(backend: AdminBackend, request: web.Request) -> web.Response:
    """A PUT sets the route's faults, a DELETE clears them."""
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
    outcome = await backend.change_faults(name, spec, request.raw_path, body)
    if not outcome.found:
        return _missing(name)
    if outcome.failed is not None:
        return _json(
            {"message": "the faults were not set in every worker", "workers": outcome.failed},
            status=503,
        )
    applied = _applied(
        name, spec.model_dump(mode="json", exclude_unset=True) if spec is not None else None
    )
    if outcome.workers is not None:
        applied["workers"] = outcome.workers
    return _json(applied)
