"""The live dashboard on the admin listener: `GET /` (the page), `GET /dashboard.json` (its
figures) and `GET /dashboard/{file}` (the page's script, style sheet and the vendored Chart.js).

The figures come from the metric families `/metrics` exports (pygw/observe/figures.py), read
when the page asks: nothing is sampled while nobody looks. Each request for the figures keeps a
snapshot (at most one per `SPACING_S`, none older than `MAX_WINDOW_S`), and a window's rates and
percentiles are the difference between now and the oldest snapshot inside it.

With `admin.token` set, a browser cannot send a Bearer header when it opens a page, so the
dashboard also admits a cookie: `/?token=TOKEN` (or the form the page shows when refused) sets
`pygw_admin`, an HMAC of the token rather than the token itself, HttpOnly and SameSite=Strict,
and redirects to `/` so the token leaves the address bar and the history. The cookie opens only
the dashboard's own GET endpoints; `/metrics`, `/routes` and `POST /reload` still need the
Bearer header, so a page elsewhere cannot make the browser reload the config.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from pygw.admin_auth import bearer_matches
from pygw.observe.figures import Snapshot, figures

STATIC = Path(__file__).with_name("static")
# Only these files are served: the page never needs anything else, and no path is joined
# from what the client sent.
_FILES = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "chart.umd.min.js": "text/javascript",
}
COOKIE = "pygw_admin"
MAX_WINDOW_S = 300.0
SPACING_S = 5.0
DEFAULT_WINDOW_S = 30.0
_PATHS = frozenset(("/", "/dashboard.json", *(f"/dashboard/{name}" for name in _FILES)))


class ReloadHistory:
    """The last config reloads (time, outcome, summary or first error lines), newest first."""

    def __init__(self, keep: int = 20) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=keep)

    def record(self, ok: bool, detail: str) -> None:
        lines = [line for line in detail.splitlines() if line.strip()]
        self._events.appendleft(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "ok": ok,
                "detail": "\n".join(lines[:6]),
            }
        )

    def recent(self) -> list[dict[str, Any]]:
        return list(self._events)


def families_of(text: bytes) -> Iterable[Metric]:
    """Metric families from a Prometheus text exposition (the supervisor's summed `/metrics`)."""
    return text_string_to_metric_families(text.decode())


class DashboardFeed:
    """Snapshots of the metrics, taken when the figures are asked for."""

    def __init__(
        self,
        families: Callable[[], Awaitable[Iterable[Metric]]],
        routes: Callable[[], Awaitable[list[dict[str, Any]]]],
        reloads: Callable[[], list[dict[str, Any]]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._families = families
        self._routes = routes
        self._reloads = reloads
        self._clock = clock
        # Before the first look, the window starts when the listener did: counts from zero.
        self._start = Snapshot(clock())
        self._history: deque[Snapshot] = deque()

    async def figures(self, window_s: float = DEFAULT_WINDOW_S) -> dict[str, Any]:
        window_s = min(max(window_s, 1.0), MAX_WINDOW_S)
        now = Snapshot.of(self._clock(), await self._families())
        base = self._base(now.at - window_s)
        self._keep(now)
        found = figures(now, base, await self._routes(), self._reloads())
        found["generated_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        return found

    def _base(self, since: float) -> Snapshot:
        inside = [snapshot for snapshot in self._history if snapshot.at >= since]
        if inside:
            return inside[0]
        # Nothing as recent as asked: the newest older one, so the window is as short as it can be.
        return self._history[-1] if self._history else self._start

    def _keep(self, now: Snapshot) -> None:
        history = self._history
        if not history or now.at - history[-1].at >= SPACING_S:
            history.append(now)
        while len(history) > 1 and history[1].at < now.at - MAX_WINDOW_S:
            history.popleft()


def _cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"pygw dashboard", hashlib.sha256).hexdigest()


class Dashboard:
    """The dashboard's endpoints and its share of the admin token check."""

    def __init__(self, feed: DashboardFeed, token: str) -> None:
        self._feed = feed
        self._token = token

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._page)
        app.router.add_get("/dashboard.json", self._figures)
        app.router.add_get("/dashboard/{name}", self._static)

    def admits(self, request: web.Request) -> bool:
        """Whether a request without a good Bearer header may still see the dashboard: its GET
        endpoints with the cookie, or the page with `?token=`."""
        if not self._token or request.method not in ("GET", "HEAD") or request.path not in _PATHS:
            return False
        offered = request.cookies.get(COOKIE)
        if offered is not None and hmac.compare_digest(
            offered.encode(), _cookie_value(self._token).encode()
        ):
            return True
        query_token = request.query.get("token")
        return (
            request.path == "/"
            and query_token is not None
            and bearer_matches(f"Bearer {query_token}", self._token)
        )

    def refusal(self, request: web.Request) -> web.Response | None:
        """The page's answer without credentials: a form asking for the token (401). None for
        the other endpoints, which answer in the admin API's JSON shape."""
        if request.path != "/" or request.method not in ("GET", "HEAD"):
            return None
        wrong = "token" in request.query
        return web.Response(
            status=401,
            text=_LOGIN.replace("{hint}", "That token is not right." if wrong else ""),
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )

    async def _page(self, request: web.Request) -> web.StreamResponse:
        if self._token and "token" in request.query:
            # Admitted by the token in the address: keep it in a cookie instead and drop it
            # from the address bar and the history.
            kept = [(k, v) for k, v in request.query.items() if k != "token"]
            target = request.rel_url.with_query(kept) if kept else request.rel_url.with_query(None)
            answer = web.HTTPSeeOther(location=str(target))
            answer.set_cookie(
                COOKIE, _cookie_value(self._token), httponly=True, samesite="Strict", path="/"
            )
            return answer
        return web.FileResponse(
            STATIC / "dashboard.html",
            headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache"},
        )

    async def _figures(self, request: web.Request) -> web.Response:
        raw = request.query.get("window", str(DEFAULT_WINDOW_S))
        try:
            window_s = float(raw)
        except ValueError:
            window_s = math.nan
        if not math.isfinite(window_s) or window_s <= 0:
            message = f"window must be a number of seconds above 0 (at most {MAX_WINDOW_S:g})"
            return web.Response(
                status=400,
                body=orjson.dumps({"message": message}),
                content_type="application/json",
            )
        found = await self._feed.figures(window_s)
        return web.Response(
            body=orjson.dumps(found),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        kind = _FILES.get(name)
        if kind is None:
            return web.Response(
                status=404,
                body=orjson.dumps({"message": "Not Found"}),
                content_type="application/json",
            )
        return web.FileResponse(
            STATIC / name, headers={"Content-Type": kind, "Cache-Control": "no-cache"}
        )


_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pygw dashboard</title>
<style>body{font:15px system-ui,sans-serif;margin:4em auto;max-width:30em;color:#222}
input{padding:.4em;width:16em}.hint{color:#b00}</style></head>
<body><main><h1>pygw</h1>
<p>This gateway's admin listener needs its token (<code>admin.token</code>).</p>
<form method="get" action="/"><input type="password" name="token" autocomplete="current-password"
 placeholder="admin token" autofocus> <button type="submit">Open the dashboard</button></form>
<p class="hint">{hint}</p></main></body></html>
"""
