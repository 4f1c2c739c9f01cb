"""`pygw bench -c CONFIG`: what a user's own configuration costs, route by route.

Starts the configuration in a `pygw serve` child process on 127.0.0.1 (its `http_proxy` upstreams
replaced by a local stand-in unless `--live-upstreams`), sends every route (or those named with
`--route`) requests shaped from the config (path parameters filled, the API's first key with a
plain `value` as `x-api-key`, `--token` as the JWT, `--header`s added), and measures, in
interleaved rounds, for each route and each `--against NAME=URL` endpoint:

- req/s with `--connections` clients each sending one request at a time (closed loop);
- latency percentiles at a fixed offered rate, each request timed from its scheduled start, so a
  stall is not hidden by the requests it delayed (coordinated omission corrected);
- the gateway's CPU time per request (user + system time of its process, from /proc);
- each stage's mean time per request, from the gateway's own `pygw_stage_seconds` histograms.

The load comes from this process (aiohttp), so it works from an installed wheel with no other
tool; a Python client saturates before pygw does on a small machine, so req/s figures are a lower
bound of the gateway's capacity: compare rows of one run, not runs on different machines.
Writes `report.md` and `results.json` to `--out` (and prints the report).

Also the entry point of the two helpers it starts: `python -m pygw.bench_config serve ...` (the
gateway with the config rewritten in memory) and `python -m pygw.bench_config stand-in`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_READY = re.compile(r"pygw listening on (https?)://([\d.]+):(\d+) \(admin http://([\d.]+):(\d+)\)")
_STAND_IN = re.compile(r"stand-in on 127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class Mode:
    duration_s: float  # each closed-loop run
    repeats: int  # interleaved rounds
    connections: int
    rate: float  # offered rate of the fixed-rate runs, req/s
    fixed_duration_s: float


MODES = {
    "full": Mode(10.0, 3, 32, 500.0, 10.0),
    "quick": Mode(2.0, 2, 16, 200.0, 2.0),
    "smoke": Mode(0.5, 1, 4, 50.0, 0.5),
}


@dataclass(frozen=True)
class RouteRequest:
    """One route's request, as the bench sends it."""

    name: str  # "api stage ROUTE KEY"
    api: str
    stage: str
    key: str
    method: str
    path: str  # with the stage prefix, parameters filled
    headers: dict[str, str]
    body: bytes | None
    missing: tuple[str, ...] = ()  # what the request lacks to pass (reported, still sent)
    stages: tuple[str, ...] = ()  # the switchable stages its route runs


# --------------------------------------------------------------------------------------------------
# Request shapes from the config


def _fill(segment: str) -> str:
    if segment.startswith("{") and segment.endswith("+}"):
        return "bench/path"
    if segment.startswith("{") and segment.endswith("}"):
        return "1"
    return segment


def plan_requests(
    config: Any, headers: dict[str, str], token: str | None, only: Sequence[str] = ()
) -> list[RouteRequest]:
    from pygw.config.model import parse_route_key

    found: list[RouteRequest] = []
    for api in config.apis:
        if api.type == "websocket":
            continue
        key_value = next((k.value for k in api.api_keys if k.enabled and k.value is not None), None)
        base = (api.base_path or "").rstrip("/")
        host = None
        if api.hosts:
            host = api.hosts[0].replace("*", "bench", 1)
        for stage in api.stages:
            prefix = base if stage.name == "$default" else f"{base}/{stage.name}"
            for key, route in api.routes.items():
                name = f"{api.name} {stage.name} {key}"
                if only and key not in only and name not in only:
                    continue
                parsed = parse_route_key(key, api.type)
                method = parsed.method or "GET"
                if method == "ANY":
                    method = "GET"
                path = "/" + "/".join(_fill(s) for s in parsed.segments) if parsed.path else "/"
                sent: dict[str, str] = {}
                missing: list[str] = []
                if host is not None:
                    sent["Host"] = host
                if route.api_key_required:
                    if key_value is not None:
                        sent["x-api-key"] = key_value
                    elif not any(h.lower() == "x-api-key" for h in headers):
                        missing.append("an API key (--header 'x-api-key: VALUE')")
                if route.authorizer is not None:
                    authorizer = api.authorizers[route.authorizer]
                    if authorizer.type == "jwt":
                        source = authorizer.identity_source[0]
                        header = source.split(".", 1)[1] if "." in source else "authorization"
                        if token is not None:
                            bearer = header.lower() == "authorization"
                            sent[header] = f"Bearer {token}" if bearer else token
                        else:
                            missing.append("a JWT (--token)")
                    elif not headers:
                        missing.append("the custom authorizer's identity (--header)")
                sent.update(headers)
                body = b"{}" if method in ("POST", "PUT", "PATCH") else None
                if body is not None:
                    sent.setdefault("Content-Type", "application/json")
                found.append(
                    RouteRequest(
                        name,
                        api.name,
                        stage.name,
                        key,
                        method,
                        (prefix + path) or "/",
                        sent,
                        body,
                        tuple(missing),
                        tuple(stages_of(config, api, stage, route)),
                    )
                )
    return found


# --------------------------------------------------------------------------------------------------
# The config as served: upstreams replaced by the stand-in


def _swap_origin(url: str, stand_in: str) -> str:
    """`url` with its scheme and host:port replaced by the stand-in's (the path kept)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    rest = url[len(f"{parts.scheme}://{parts.netloc}") :]
    return stand_in + rest


def bench_config(config: Any, stand_in: str | None) -> Any:
    """The config to serve: one process, no access log, upstreams on the stand-in."""
    server = config.server.model_copy(update={"workers": 1, "tls": None, "redirect_http": None})
    admin = config.admin.model_copy(update={"listen": "127.0.0.1:0"})
    apis = []
    for api in config.apis:
        if stand_in is not None:
            stages = [
                stage.model_copy(
                    update={
                        "variables": {
                            k: _swap_origin(v, stand_in) if v.startswith("http") else v
                            for k, v in stage.variables.items()
                        },
                        "canary": None,
                    }
                )
                for stage in api.stages
            ]
            routes = {}
            for key, route in api.routes.items():
                integration = route.integration
                if integration.type == "http_proxy":
                    integration = integration.model_copy(
                        update={
                            "uri": _swap_origin(integration.uri, stand_in)
                            if integration.uri
                            else None,
                            "targets": [
                                t.model_copy(update={"url": _swap_origin(t.url, stand_in)})
                                for t in integration.targets
                            ],
                            "tls": None,
                        }
                    )
                routes[key] = route.model_copy(update={"integration": integration})
            api = api.model_copy(update={"stages": stages, "routes": routes})
        apis.append(api)
    return config.model_copy(
        update={
            "server": server,
            "admin": admin,
            "access_log": None,
            "domains": [],
            "apis": apis,
        }
    )


# What each stage needs in a route's config, and how to switch it off everywhere.
SWITCHABLE = (
    "resource_policy",
    "cors",
    "jwt_auth",
    "custom_auth",
    "api_key",
    "throttle",
    "validate",
    "transform",
    "faults",
    "cache",
)


def stages_of(config: Any, api: Any, stage: Any, route: Any) -> list[str]:
    """The switchable stages a route runs (as `pygw_stage_seconds` names them)."""
    found = []
    if api.resource_policy is not None:
        found.append("resource_policy")
    if api.cors is not None:
        found.append("cors")
    if route.authorizer is not None:
        kind = api.authorizers[route.authorizer].type
        found.append("jwt_auth" if kind == "jwt" else "custom_auth")
    if route.api_key_required:
        found.append("api_key")
    plans = route.api_key_required and any(p.throttle or p.quota for p in api.usage_plans)
    if config.throttle or stage.throttle or route.throttle or plans:
        found.append("throttle")
    if route.validation is not None:
        found.append("validate")
    if route.templates is not None or route.mapping is not None:
        found.append("transform")
    if route.faults or stage.faults or api.faults:
        found.append("faults")
    if api.cache is not None and not (route.cache is not None and route.cache.ttl_s == 0):
        found.append("cache")
    return found


def switch_off(config: Any, name: str) -> Any:
    """The config with one stage switched off in every route."""
    apis = []
    for api in config.apis:
        api_update: dict[str, Any] = {}
        route_update: dict[str, Any] = {}
        stage_update: dict[str, Any] = {}
        if name == "resource_policy":
            api_update["resource_policy"] = None
        elif name == "cors":
            api_update["cors"] = None
        elif name in ("jwt_auth", "custom_auth"):
            kind = "jwt" if name == "jwt_auth" else "custom"
            names = {n for n, a in api.authorizers.items() if a.type == kind}
            routes = {
                key: route.model_copy(update={"authorizer": None, "scopes": []})
                if route.authorizer in names
                else route
                for key, route in api.routes.items()
            }
            api_update["routes"] = routes
        elif name == "api_key":
            route_update["api_key_required"] = False
        elif name == "throttle":
            route_update["throttle"] = None
            stage_update["throttle"] = None
            api_update["usage_plans"] = []
        elif name == "validate":
            route_update["validation"] = None
        elif name == "transform":
            route_update.update(templates=None, mapping=None)
        elif name == "faults":
            route_update["faults"] = None
            stage_update["faults"] = None
            api_update["faults"] = None
        elif name == "cache":
            api_update["cache"] = None
            route_update["cache"] = None
        if route_update and api.type != "websocket":
            api_update["routes"] = {
                key: route.model_copy(update=route_update) for key, route in api.routes.items()
            }
        if stage_update:
            api_update["stages"] = [s.model_copy(update=stage_update) for s in api.stages]
        apis.append(api.model_copy(update=api_update))
    update: dict[str, Any] = {"apis": apis}
    if name == "throttle":
        update["throttle"] = None
    return config.model_copy(update=update)


def _serve_main(argv: list[str]) -> int:
    import uvloop

    from pygw.config.load import ConfigError, LoadedConfig, load_config
    from pygw.server import run_gateway

    config_path, stand_in = Path(argv[0]), (argv[1] if argv[1] != "-" else None)
    without = argv[2] if len(argv) > 2 else None
    try:
        loaded = load_config(config_path)
    except ConfigError as failure:
        print(str(failure), flush=True)
        return 1

    def load() -> LoadedConfig:
        fresh = load_config(config_path)
        served = bench_config(fresh.config, stand_in)
        if without is not None:
            served = switch_off(served, without)
        return LoadedConfig(served, fresh.path, fresh.folder)

    del loaded
    code: int = uvloop.run(run_gateway(config_path, "127.0.0.1:0", loader=load))
    return code


def _stand_in_main() -> int:
    """An upstream answering every request at once with a small JSON body (keep-alive)."""
    import uvloop
    from aiohttp import web

    body = b'{"ok":true,"from":"pygw bench stand-in"}'

    async def handle(request: web.BaseRequest) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    async def serve() -> None:
        runner = web.ServerRunner(web.Server(handle), handle_signals=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(f"stand-in on 127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    uvloop.run(serve())
    return 0


# --------------------------------------------------------------------------------------------------
# Child processes


class Child:
    """A helper process whose output is read by a thread (kept for error messages)."""

    def __init__(self, name: str, proc: subprocess.Popen[str]) -> None:
        self.name = name
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern: re.Pattern[str], timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = pattern.search(line)
                if found:
                    return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start:\n" + "\n".join(self.lines[-40:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(2)


def _start(name: str, argv: list[str]) -> Child:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pygw.bench_config", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Child(name, proc)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# --------------------------------------------------------------------------------------------------
# Load


@dataclass
class Run:
    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    cpu_s: float = 0.0


async def _send(session: Any, base: str, request: RouteRequest) -> int:
    async with session.request(
        request.method, base + request.path, headers=request.headers, data=request.body
    ) as response:
        await response.read()
        return int(response.status)


async def closed_loop(
    session: Any, base: str, request: RouteRequest, connections: int, duration_s: float
) -> Run:
    import aiohttp

    run = Run()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration_s

    async def client() -> None:
        while loop.time() < deadline:
            try:
                status = await _send(session, base, request)
            except (aiohttp.ClientError, OSError, TimeoutError):
                run.errors += 1
                continue
            run.requests += 1
            run.statuses[status] += 1

    started = loop.time()
    await asyncio.gather(*(client() for _ in range(connections)))
    run.seconds = loop.time() - started
    return run


async def fixed_rate(
    session: Any, base: str, request: RouteRequest, rate: float, duration_s: float
) -> list[float]:
    """Latencies (ms) of requests started on a fixed timetable, each from its scheduled start."""
    import aiohttp

    loop = asyncio.get_running_loop()
    count = max(1, int(rate * duration_s))
    start = loop.time() + 0.01
    latencies: list[float] = []

    async def one(at: float) -> None:
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await _send(session, base, request)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return
        latencies.append((loop.time() - at) * 1000.0)

    await asyncio.gather(*(one(start + i / rate) for i in range(count)))
    return latencies


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --------------------------------------------------------------------------------------------------
# Stage costs from the gateway's metrics


async def stage_costs(session: Any, admin: str, token: str) -> dict[tuple[str, str, str], Any]:
    from prometheus_client.parser import text_string_to_metric_families

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(admin + "/metrics", headers=headers) as response:
        text = await response.text()
    sums: dict[tuple[str, str, str, str], float] = {}
    counts: dict[tuple[str, str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "pygw_stage_seconds":
            continue
        for sample in family.samples:
            labels = sample.labels
            key = (labels["api"], labels["stage"], labels["route"], labels["step"])
            if sample.name.endswith("_sum"):
                sums[key] = sample.value
            elif sample.name.endswith("_count"):
                counts[key] = sample.value
    costs: dict[tuple[str, str, str], Any] = {}
    for key, count in counts.items():
        if count > 0:
            api, stage, route, step = key
            costs.setdefault((api, stage, route), []).append(
                {"stage": step, "us_per_request": sums.get(key, 0.0) / count * 1e6, "count": count}
            )
    return costs


# --------------------------------------------------------------------------------------------------
# The run


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pygw bench",
        description="Benchmark your own configuration, route by route (see docs/bench.md).",
    )
    parser.add_argument("-c", "--config", required=True, metavar="CONFIG")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="2 s runs, 2 rounds")
    size.add_argument("--smoke", action="store_true", help="half-second runs: the output's shape")
    parser.add_argument(
        "--route", action="append", default=[], help="only this route (its key; repeatable)"
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="send on every request",
    )
    parser.add_argument("--token", help="a JWT for routes with a jwt authorizer")
    parser.add_argument(
        "--live-upstreams",
        action="store_true",
        help="send http_proxy routes to their real upstreams (default: a local stand-in)",
    )
    parser.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="another endpoint (say another gateway) sent the same requests, same rounds",
    )
    parser.add_argument(
        "--switch-off",
        action="store_true",
        help="also serve the config once per stage with that stage switched off, in the same "
        "rounds: a stage's cost is the CPU a route saves without it",
    )
    parser.add_argument("--duration", type=float, help="seconds per closed-loop run")
    parser.add_argument("--repeats", type=int, help="interleaved rounds")
    parser.add_argument("--connections", type=int, help="concurrent clients")
    parser.add_argument("--rate", type=float, help="offered rate of the latency runs (req/s)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default ./pygw-bench-TIME)")
    return parser.parse_args(list(argv))


def _headers(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header {item!r}: write 'Name: value'")
        out[name.strip()] = value.strip()
    return out


def _against(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise ValueError(f"--against {item!r}: write NAME=http://HOST:PORT")
        out[name] = url.rstrip("/")
    return out


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    from pygw.config.load import ConfigError, load_config

    try:
        headers = _headers(args.header)
        against = _against(args.against)
    except ValueError as bad:
        print(f"pygw bench: {bad}", file=sys.stderr)
        return 2
    try:
        loaded = load_config(args.config)
    except ConfigError as failure:
        print(str(failure), file=sys.stderr)
        return 1
    base_mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    mode = Mode(
        args.duration or base_mode.duration_s,
        args.repeats or base_mode.repeats,
        args.connections or base_mode.connections,
        args.rate or base_mode.rate,
        args.duration or base_mode.fixed_duration_s,
    )
    requests = plan_requests(loaded.config, headers, args.token, args.route)
    if not requests:
        print("pygw bench: no route to bench (--route names a route key)", file=sys.stderr)
        return 2
    out = Path(args.out or f"pygw-bench-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    try:
        stand_in = None
        if not args.live_upstreams:
            helper = _start("stand-in", ["stand-in"])
            children.append(helper)
            port = helper.wait_line(_STAND_IN, 20).group(1)
            stand_in = f"http://127.0.0.1:{port}"
        gateway = _start("pygw", ["serve", str(loaded.path), stand_in or "-"])
        children.append(gateway)
        variants: dict[str, Child] = {}
        if args.switch_off:
            used = {name for r in requests for name in r.stages}
            for name in (n for n in SWITCHABLE if n in used):
                variants[name] = _start(
                    f"pygw -{name}", ["serve", str(loaded.path), stand_in or "-", name]
                )
                children.append(variants[name])
        ready = gateway.wait_line(_READY, 60)
        url = f"{ready.group(1)}://127.0.0.1:{ready.group(3)}"
        admin = f"http://127.0.0.1:{ready.group(5)}"
        gateways = {"pygw": (url, gateway)}
        for name, child in variants.items():
            found = child.wait_line(_READY, 60)
            gateways[f"pygw -{name}"] = (f"{found.group(1)}://127.0.0.1:{found.group(3)}", child)
        results = asyncio.run(
            _measure(requests, gateways, admin, against, mode, loaded.config.admin.token)
        )
    finally:
        for child in reversed(children):
            child.stop()
    results["meta"] = {
        "config": str(loaded.path),
        "mode": asdict(mode),
        "stand_in": stand_in,
        "against": against,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report = render(results)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "report.md").write_text(report)
    written = ["report.md", "results.json", *plot(results, out)]
    print(report)
    print(f"written to {out}/ ({', '.join(written)})")
    return 0


def plot(results: dict[str, Any], out: Path) -> list[str]:
    """throughput.png and latency.png, when matplotlib is installed (the report says so if not)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plots: matplotlib is not installed (pip install 'matplotlib>=3.8')")
        return []
    rows = results["routes"]
    routes = list(dict.fromkeys(row["route"] for row in rows))
    # The gateways with a stage switched off serve some routes only: the plots leave them out.
    endpoints = list(
        dict.fromkeys(row["endpoint"] for row in rows if not row["endpoint"].startswith("pygw -"))
    )
    by = {(row["route"], row["endpoint"]): row for row in rows}
    width = 0.8 / len(endpoints)
    written = []
    for name, fields, label in (
        ("throughput.png", ("req_per_s",), "req/s (closed loop)"),
        ("latency.png", ("p99_ms", "p50_ms"), "ms at a fixed rate (p99 hatched, p50 solid)"),
    ):
        figure, axes = plt.subplots(figsize=(max(6.0, 2.0 * len(routes)), 4.0))
        for index, endpoint in enumerate(endpoints):
            for layer, key in enumerate(fields):
                values = [by[(route, endpoint)][key] for route in routes]
                axes.bar(
                    [r + index * width for r in range(len(routes))],
                    values,
                    # Two layers (latency): the p99 bar behind, hatched; the p50 bar in front.
                    width * (1.0 if layer == 0 else 0.6),
                    label=endpoint if layer == 0 else None,
                    color=f"C{index}",
                    hatch="//" if layer == 0 and len(fields) > 1 else None,
                    alpha=0.5 if layer == 0 and len(fields) > 1 else 1.0,
                )
        axes.set_xticks([r + width * (len(endpoints) - 1) / 2 for r in range(len(routes))])
        axes.set_xticklabels(routes, rotation=15, ha="right", fontsize=8)
        axes.set_ylabel(label)
        axes.legend()
        figure.tight_layout()
        figure.savefig(out / name)
        plt.close(figure)
        written.append(name)
    return written


def _applies(request: RouteRequest, endpoint: str) -> bool:
    """A gateway with a stage switched off is measured on the routes that run that stage."""
    return not endpoint.startswith("pygw -") or endpoint[len("pygw -") :] in request.stages


async def _measure(
    requests: list[RouteRequest],
    gateways: dict[str, tuple[str, Child]],
    admin: str,
    against: dict[str, str],
    mode: Mode,
    token: str,
) -> dict[str, Any]:
    import aiohttp

    endpoints = {**{name: url for name, (url, _) in gateways.items()}, **against}
    pids = {name: child.proc.pid for name, (_, child) in gateways.items()}
    runs: dict[tuple[str, str], list[Run]] = {}
    latencies: dict[tuple[str, str], list[float]] = {}
    connector = aiohttp.TCPConnector(limit=0, ssl=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for request in requests:  # warm-up: pools, JWKS, caches
            for base in endpoints.values():
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    await _send(session, base, request)
        order = [(r, name) for r in requests for name in endpoints if _applies(r, name)]
        for round_index in range(mode.repeats):
            # Rotated each round, so that no endpoint always runs first or last.
            shift = round_index % len(order)
            for request, name in order[shift:] + order[:shift]:
                base = endpoints[name]
                pid = pids.get(name)
                cpu_before = cpu_seconds(pid) if pid is not None else 0.0
                run = await closed_loop(session, base, request, mode.connections, mode.duration_s)
                if pid is not None:
                    run.cpu_s = cpu_seconds(pid) - cpu_before
                runs.setdefault((request.name, name), []).append(run)
                latencies.setdefault((request.name, name), []).extend(
                    await fixed_rate(session, base, request, mode.rate, mode.fixed_duration_s)
                )
        costs = await stage_costs(session, admin, token)
    rows: list[dict[str, Any]] = []
    for request in requests:
        for name in endpoints:
            if not _applies(request, name):
                continue
            done = runs[(request.name, name)]
            per_round = [r.requests / r.seconds for r in done if r.seconds > 0]
            total = sum(r.requests for r in done)
            statuses: Counter[int] = Counter()
            for r in done:
                statuses.update(r.statuses)
            waited = latencies[(request.name, name)]
            cpu = sum(r.cpu_s for r in done)
            rows.append(
                {
                    "route": request.name,
                    "method": request.method,
                    "path": request.path,
                    "endpoint": name,
                    "req_per_s": statistics.median(per_round) if per_round else 0.0,
                    "req_per_s_rounds": per_round,
                    "p50_ms": percentile(waited, 50),
                    "p90_ms": percentile(waited, 90),
                    "p99_ms": percentile(waited, 99),
                    "fixed_rate": mode.rate,
                    "cpu_us_per_request": cpu / total * 1e6 if name in pids and total else None,
                    "statuses": {str(k): v for k, v in sorted(statuses.items())},
                    "errors": sum(r.errors for r in done),
                    "missing": list(request.missing),
                }
            )
    stages = [
        {"route": r.name, **cost}
        for r in requests
        for cost in costs.get((r.api, r.stage, r.key), [])
    ]
    # With --switch-off: the CPU per request each route saves without a stage.
    cpu_of: dict[tuple[str, str], float | None] = {
        (row["route"], row["endpoint"]): row["cpu_us_per_request"] for row in rows
    }
    switched = []
    for request in requests:
        full = cpu_of.get((request.name, "pygw"))
        for name in request.stages:
            without = cpu_of.get((request.name, f"pygw -{name}"))
            if full is not None and without is not None:
                switched.append(
                    {"route": request.name, "stage": name, "cpu_us_saved": full - without}
                )
    return {"routes": rows, "stages": stages, "switched_off": switched}


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"


def render(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    mode = meta.get("mode", {})
    lines = [
        f"# pygw bench: {meta.get('config', '')}",
        "",
        f"{mode.get('repeats')} round(s); closed loop with {mode.get('connections')} clients for "
        f"{mode.get('duration_s')} s per run (req/s: median over rounds); latency at a fixed "
        f"{mode.get('rate')} req/s, each request timed from its scheduled start. Upstreams: "
        + (f"local stand-in {meta['stand_in']}" if meta.get("stand_in") else "live")
        + ".",
        "",
        "| route | endpoint | req/s | p50 ms | p90 ms | p99 ms | CPU µs/req | statuses |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in results["routes"]:
        statuses = ", ".join(f"{k}: {v}" for k, v in row["statuses"].items()) or "-"
        if row["errors"]:
            statuses += f", errors: {row['errors']}"
        lines.append(
            f"| {row['route']} | {row['endpoint']} | {_fmt(row['req_per_s'], 0)} | "
            f"{_fmt(row['p50_ms'], 2)} | {_fmt(row['p90_ms'], 2)} | {_fmt(row['p99_ms'], 2)} | "
            f"{_fmt(row['cpu_us_per_request'], 0)} | {statuses} |"
        )
    lacking = [(row["route"], row["missing"]) for row in results["routes"] if row["missing"]]
    if lacking:
        lines += ["", "Requests sent without what their route needs (expect 401/403):"]
        lines += [f"- {route}: {', '.join(what)}" for route, what in dict(lacking).items()]
    lines += [
        "",
        "## Stages (pygw's own pygw_stage_seconds: mean per request)",
        "",
        "| route | stage | µs/request | requests |",
        "|---|---|---:|---:|",
    ]
    for stage in results["stages"]:
        lines.append(
            f"| {stage['route']} | {stage['stage']} | {_fmt(stage['us_per_request'], 1)} | "
            f"{int(stage['count'])} |"
        )
    if not results["stages"]:
        lines.append("| - | no timed stage | - | - |")
    if results.get("switched_off"):
        lines += [
            "",
            "## Stages switched off one at a time (gateway CPU per request saved; --switch-off)",
            "",
            "| route | stage | CPU µs/request saved |",
            "|---|---|---:|",
        ]
        for item in results["switched_off"]:
            lines.append(f"| {item['route']} | {item['stage']} | {_fmt(item['cpu_us_saved'], 1)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        sys.exit(_serve_main(sys.argv[2:]))
    if sys.argv[1:2] == ["stand-in"]:
        sys.exit(_stand_in_main())
    sys.exit(main(sys.argv[1:]))
