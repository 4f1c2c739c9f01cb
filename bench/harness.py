"""`pygw bench`: the gateway next to nginx and a plain aiohttp proxy, per style, stage and scale.

    .venv/bin/python -m bench.harness [--quick | --smoke] [--out DIR] [--duration S] [--repeats N]

Starts an nginx upstream answering `return 200` (a 41-byte JSON body, and a second one with a
64 KiB body), the reference peers (nginx as a reverse proxy, the plain aiohttp proxy of
`bench/proxy_bench.py`) and one `pygw serve` per configuration (see `bench/scenarios.py`), then
drives every scenario with wrk, round after round with the order rotated each round, and reports
medians with min-max. Latency percentiles are measured twice: at saturation (wrk, closed loop) and
at a fixed offered rate (oha with `--latency-correction` when it is installed, otherwise the
open-loop generator below; both correct for coordinated omission). It also checks that a mock route
delivers the latency and fault rate it is configured with, and runs `bench/native_bench.py`.

Output: `bench/results/<timestamp>/` with results.json (every raw run), report.md and PNG plots.
Nothing is installed: a missing tool is named with the command that installs it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import https_bench, proxy_bench, scenarios  # noqa: E402
from bench.scenarios import Plan, Scenario, Server  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
MATPLOTLIB_PIN = "matplotlib==3.11.2"
MOCK_TARGET = {"p50_ms": 20.0, "p99_ms": 80.0, "fault_rate": 0.05, "fault_status": 503}
MOCK_TOLERANCE = 0.10


@dataclass(frozen=True)
class Mode:
    name: str
    duration_s: float
    repeats: int
    warmup_s: float
    connections: int
    rate: float
    fixed_duration_s: float
    route_sizes: tuple[int, ...]
    mock_rate: float
    mock_duration_s: float
    native: list[str]  # native_bench arguments; empty list: skip


MODES = {
    "full": Mode("full", 10, 3, 2, 64, 1000, 10, (10, 1_000, 100_000), 1000, 20, []),
    # Loading 100 000 routes takes minutes (see bench/RESULTS.md): the quick run stops at 10 000.
    "quick": Mode("quick", 1, 2, 0, 64, 500, 2, (10, 1_000, 10_000), 500, 10, ["--quick"]),
    "smoke": Mode("smoke", 1, 1, 0, 16, 100, 0.5, (10, 100, 1_000), 200, 1.5, ["--quick"]),
}


# --------------------------------------------------------------------------------------------------
# Tools


def tool_version(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0].strip() if text else None


def find_oha() -> str | None:
    found = shutil.which("oha")
    if found:
        return found
    cargo_bin = Path.home() / ".cargo" / "bin" / "oha"
    return str(cargo_bin) if cargo_bin.exists() else None


def missing_requirements() -> list[str]:
    """What the harness needs and does not find, each with how to get it."""
    out = []
    for tool in proxy_bench.missing_tools():
        out.append(f"{tool}: {proxy_bench.INSTALL_HINT}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        out.append(f"matplotlib (for the plots): .venv/bin/pip install '{MATPLOTLIB_PIN}'")
    return out


# --------------------------------------------------------------------------------------------------
# CPU pinning


@dataclass(frozen=True)
class Pinning:
    gateway: str | None  # taskset CPU list for the gateway and peers under test
    load: str | None  # for wrk, the upstreams and the load generators
    note: str


def plan_pinning(cpus: int, gateway_cpu: int | None, no_pin: bool) -> Pinning:
    if no_pin or shutil.which("taskset") is None or cpus < 2:
        why = "--no-pin" if no_pin else ("no taskset" if cpus >= 2 else "one CPU")
        return Pinning(None, None, f"no pinning ({why}): everything shares all CPUs")
    gw = gateway_cpu if gateway_cpu is not None else 0
    others = [c for c in range(cpus) if c != gw]
    load = ",".join(str(c) for c in others)
    return Pinning(
        str(gw),
        load,
        f"proxies under test (pygw, nginx proxy, aiohttp proxy) on CPU {gw}; wrk, oha, the "
        f"open-loop generator and the nginx upstreams on CPU {load}; pygw --workers 2 unpinned "
        f"(all {cpus} CPUs, shared with the load)",
    )


def taskset(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def repin(pid: int, cpus: str | None) -> None:
    """Pins a started process (all its threads and children) to `cpus`."""
    if not cpus:
        return
    for p in descendants(pid):
        subprocess.run(
            ["taskset", "-a", "-p", "-c", cpus, str(p)], capture_output=True, check=False
        )


# --------------------------------------------------------------------------------------------------
# Servers


@dataclass
class Running:
    server: Server
    url: str  # http://127.0.0.1:PORT
    child: proxy_bench.Child


def nginx_static_conf(tmp: Path, port: int) -> str:
    """The 64 KiB upstream: every path answers `tmp/body.json` (too long for `return`)."""
    return f"""{proxy_bench.nginx_common(tmp, "upstream")}
http {{
{proxy_bench.nginx_http_common(tmp, "upstream")}
    open_file_cache max=16;
    server {{
        listen 127.0.0.1:{port};
        root {tmp};
        location / {{
            default_type application/json;
            try_files /body.json =404;
        }}
    }}
}}
"""


def nginx_argv(prefix: Path, conf: Path) -> list[str]:
    return ["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]


def start_server(
    server: Server,
    procs: proxy_bench.Processes,
    tmp: Path,
    upstream_ports: dict[str, int],
    pinning: Pinning,
) -> Running:
    port = (
        upstream_ports[server.kind]
        if server.kind in ("upstream", "upstream_big")
        else proxy_bench.free_port()
    )
    target_port = upstream_ports["upstream" if server.upstream == "small" else "upstream_big"]
    here = tmp / server.name
    here.mkdir()
    log = here / "out.log"
    if server.kind in ("upstream", "upstream_big"):
        conf = here / "nginx.conf"
        if server.kind == "upstream":
            conf.write_text(proxy_bench.nginx_upstream_conf(here, port))
        else:
            (here / "body.json").write_text(scenarios.big_body())
            # nginx's workers may run as another user (nobody, when started as root): let them
            # read the body through the private temporary directory.
            for path, mode in ((tmp, 0o711), (here, 0o755), (here / "body.json", 0o644)):
                path.chmod(mode)
            conf.write_text(nginx_static_conf(here, port))
        argv = [*taskset(pinning.load), *nginx_argv(here, conf)]
    elif server.kind == "nginx":
        conf = here / "nginx.conf"
        conf.write_text(proxy_bench.nginx_proxy_conf(here, port, target_port))
        argv = [*taskset(pinning.gateway), *nginx_argv(here, conf)]
    elif server.kind == "aiohttp":
        code = (
            "import sys; from bench.proxy_bench import serve_aiohttp_proxy as s; s(*sys.argv[1:])"
        )
        argv = [
            *taskset(pinning.gateway),
            sys.executable,
            "-c",
            code,
            f"127.0.0.1:{port}",
            f"http://127.0.0.1:{target_port}",
        ]
    elif server.kind == "pygw":
        assert server.config is not None
        conf = here / "pygw.yaml"
        admin = proxy_bench.free_port()
        conf.write_text(scenarios.with_listen(server.config, port, admin, server.workers))
        # Started unpinned so that many gateways load their configs in parallel; each is pinned
        # once it serves (see `pin_gateways`).
        argv = [
            *proxy_bench.pygw_command(),
            "serve",
            "-c",
            str(conf),
            "--listen",
            f"127.0.0.1:{port}",
        ]
        if server.workers != 1:
            argv += ["--workers", str(server.workers)]
    else:
        raise ValueError(f"unknown server kind {server.kind!r}")
    child = procs.start(server.name, argv, log)
    return Running(server, f"http://127.0.0.1:{port}", child)


def probe(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as failure:
        return failure.code, failure.read()


def wait_serving(running: Running, deadline: float) -> None:
    """Waits until the server answers its ready path with 200 (so the whole chain works)."""
    server = running.server
    url = running.url + server.ready_path
    last = ""
    while time.monotonic() < deadline:
        if running.child.proc.poll() is not None:
            break
        try:
            status, body = probe(url, server.ready_headers)
            if status == 200:
                return
            last = f"status {status}, body {body[:200]!r}"
        except OSError as failure:
            last = str(failure)
        time.sleep(0.2)
    log = (
        running.child.log.read_text(errors="replace")[-4000:] if running.child.log.exists() else ""
    )
    raise RuntimeError(f"{server.name} is not serving {url} ({last}); its log:\n{log}")


def start_all(
    plan: Plan, procs: proxy_bench.Processes, tmp: Path, ports: dict[str, int], pinning: Pinning
) -> dict[str, Running]:
    running: dict[str, Running] = {}
    # Upstreams first: the others' readiness checks go through them.
    for server in sorted(plan.servers, key=lambda s: not s.kind.startswith("upstream")):
        running[server.name] = start_server(server, procs, tmp, ports, pinning)
        if server.kind.startswith("upstream"):
            wait_serving(running[server.name], time.monotonic() + 30)
    largest = max((len(s.config["apis"][0]["routes"]) for s in plan.servers if s.config), default=0)
    # Loading a config takes about a millisecond per route, and more for very large tables.
    deadline = time.monotonic() + 120 + largest * 0.02
    for r in running.values():
        wait_serving(r, deadline)
        if r.server.kind == "pygw" and r.server.workers == 1:
            repin(r.child.proc.pid, pinning.gateway)
    return running


# --------------------------------------------------------------------------------------------------
# wrk (closed loop, saturation)


# Numbers the wrk script files of one harness run.
_script_numbers = itertools.count(1)


def wrk_argv(
    url: str,
    scenario: Scenario,
    duration_s: float,
    connections: int,
    pinning: Pinning,
    lua_dir: Path,
) -> list[str]:
    threads = max(1, min(4, len(pinning.load.split(",")) if pinning.load else 1))
    argv = proxy_bench.wrk_command(url + scenario.path, duration_s, connections, None, threads)
    extra: list[str] = []
    for name, value in scenario.headers.items():
        extra += ["-H", f"{name}: {value}"]
    script = scenarios.lua_for(scenario)
    if script is not None:
        # A file per run: a unique-query script written once and reused (or overwritten by the
        # warm-up's) would repeat an earlier run's requests, and a cache "miss" run would hit.
        path = lua_dir / f"{scenario.name}-{next(_script_numbers)}.lua"
        path.write_text(script)
        extra += ["-s", str(path)]
    return [*taskset(pinning.load), *argv[:-1], *extra, argv[-1]]


def run_wrk(argv: list[str], duration_s: float) -> proxy_bench.WrkResult:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}")
    return proxy_bench.parse_wrk(done.stdout)


# --------------------------------------------------------------------------------------------------
# Fixed offered rate: the open-loop generator, or oha


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)
    return {
        "p50_ms": percentile(ordered, 50),
        "p90_ms": percentile(ordered, 90),
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1] if ordered else math.nan,
    }


async def open_loop(
    url: str,
    rate: float,
    duration_s: float,
    headers: dict[str, str],
    unique: bool,
    timeout_s: float = 5.0,
) -> dict[str, Any]:
    """Sends requests on a fixed timetable, `rate` per second, whatever the answers' speed.

    Each latency is measured from the request's scheduled time, not from when it was sent: a
    stalled server or a late generator then shows up as latency rather than as requests that were
    never sent (coordinated omission)."""
    import aiohttp

    loop = asyncio.get_running_loop()
    total = max(1, int(rate * duration_s))
    latencies: list[float] = [math.nan] * total
    statuses: list[int] = [0] * total
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    sep = "&" if "?" in url else "?"
    # Fresh in every run, so that no run asks for what an earlier one left in a cache.
    run_id = secrets.token_hex(6)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def fire(i: int, scheduled: float) -> None:
            target = f"{url}{sep}n=ol-{run_id}-{i}" if unique else url
            try:
                async with session.get(target, headers=headers) as response:
                    await response.read()
                    statuses[i] = response.status
            except (TimeoutError, aiohttp.ClientError, OSError):
                statuses[i] = -1
            latencies[i] = (loop.time() - scheduled) * 1000

        tasks: list[asyncio.Task[None]] = []
        start = loop.time() + 0.05
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fire(i, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start
    return {"latencies_ms": latencies, "statuses": statuses, "elapsed_s": elapsed}


def summarise_open_loop(raw: dict[str, Any], rate: float) -> dict[str, Any]:
    statuses = raw["statuses"]
    ok = [lat for lat, st in zip(raw["latencies_ms"], statuses, strict=True) if 200 <= st < 400]
    return {
        "tool": "open-loop generator",
        "rate": rate,
        "requests": len(statuses),
        "errors": sum(1 for s in statuses if not 200 <= s < 400),
        "achieved_rps": len(statuses) / raw["elapsed_s"] if raw["elapsed_s"] > 0 else math.nan,
        **latency_summary(ok),
    }


def run_open_loop_subprocess(
    url: str,
    rate: float,
    duration_s: float,
    headers: dict[str, str],
    unique: bool,
    pinning: Pinning,
    raw_out: Path,
) -> dict[str, Any]:
    """Runs the generator in its own process, on the load CPUs (see `--open-loop`)."""
    argv = [
        *taskset(pinning.load),
        sys.executable,
        "-m",
        "bench.harness",
        "--open-loop",
        url,
        "--rate",
        str(rate),
        "--fixed-duration",
        str(duration_s),
        "--raw-out",
        str(raw_out),
    ]
    for name, value in headers.items():
        argv += ["--header", f"{name}: {value}"]
    if unique:
        argv.append("--unique")
    done = subprocess.run(
        argv, capture_output=True, text=True, cwd=ROOT, timeout=duration_s + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"open-loop generator failed: {done.stderr[-2000:]}")
    raw: dict[str, Any] = json.loads(raw_out.read_text())
    return raw


def oha_argv(
    oha: str, url: str, rate: float, duration_s: float, headers: dict[str, str], unique: bool
) -> list[str]:
    argv = [
        oha,
        "-z",
        f"{duration_s}s",
        "-q",
        str(rate),
        "--latency-correction",
        # Requests still in flight at the end would otherwise count as errors.
        "--wait-ongoing-requests-after-deadline",
        "--no-tui",
        "--output-format",
        "json",
        "-c",
        "64",
    ]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    if unique:
        sep = r"\?" if "?" not in url else "&"
        # oha reads dots literally in --rand-regex-url; only `?` needs escaping.
        escaped = url.replace("?", r"\?")
        argv += ["--rand-regex-url", f"{escaped}{sep}n=[a-z0-9]{{16}}"]
    else:
        argv.append(url)
    return argv


def run_oha(argv: list[str], rate: float, duration_s: float, pinning: Pinning) -> dict[str, Any]:
    done = subprocess.run(
        [*taskset(pinning.load), *argv],
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"oha failed ({done.returncode}): {done.stderr[-2000:]}")
    data = json.loads(done.stdout)
    pct = data.get("latencyPercentiles", {})
    summary = data.get("summary", {})
    codes = data.get("statusCodeDistribution", {})
    errors = sum(data.get("errorDistribution", {}).values()) + sum(
        n for code, n in codes.items() if not 200 <= int(code) < 400
    )
    return {
        "tool": "oha --latency-correction",
        "rate": rate,
        "requests": sum(codes.values()) + sum(data.get("errorDistribution", {}).values()),
        "errors": errors,
        "achieved_rps": summary.get("requestsPerSec", math.nan),
        "p50_ms": pct.get("p50", math.nan) * 1000,
        "p90_ms": pct.get("p90", math.nan) * 1000,
        "p99_ms": pct.get("p99", math.nan) * 1000,
        "max_ms": summary.get("slowest", math.nan) * 1000,
    }


# --------------------------------------------------------------------------------------------------
# The mock route as a load-testing target


def mock_target_stats(
    latencies_ms: Sequence[float],
    statuses: Sequence[int],
    p50_ms: float,
    p99_ms: float,
    fault_rate: float,
    fault_status: int,
    tolerance: float = MOCK_TOLERANCE,
) -> dict[str, Any]:
    """Compares what a mock route delivered with its configuration.

    Latencies count every answered request (a fault is answered after the same delay); requests
    that got no answer are counted apart and fail the check. Each figure passes when within
    `tolerance` (relative) of its target. The fault rate's binomial standard error is reported
    so that a miss can be told apart from sampling noise."""
    answered = [lat for lat, st in zip(latencies_ms, statuses, strict=True) if st > 0]
    ordered = sorted(answered)
    n = len(answered)
    faults = sum(1 for st in statuses if st == fault_status)
    unanswered = len(statuses) - n
    measured_rate = faults / n if n else math.nan
    figures = {
        "p50_ms": (percentile(ordered, 50), p50_ms),
        "p99_ms": (percentile(ordered, 99), p99_ms),
        "fault_rate": (measured_rate, fault_rate),
    }
    checks: dict[str, Any] = {}
    for name, (measured, target) in figures.items():
        error = abs(measured - target) / target if target else abs(measured)
        checks[name] = {
            "target": target,
            "measured": measured,
            "relative_error": error,
            "ok": bool(n) and error <= tolerance,
        }
    checks["fault_rate"]["standard_error"] = (
        math.sqrt(fault_rate * (1 - fault_rate) / n) if n else math.nan
    )
    other = sum(1 for st in statuses if st > 0 and st != fault_status and not 200 <= st < 300)
    return {
        "requests": len(statuses),
        "answered": n,
        "unanswered": unanswered,
        "unexpected_status": other,
        "tolerance": tolerance,
        "checks": checks,
        "ok": all(c["ok"] for c in checks.values()) and unanswered == 0 and other == 0,
    }


# --------------------------------------------------------------------------------------------------
# Aggregation


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(runs: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    by: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by.setdefault(run["scenario"], []).append(run)
    out: dict[str, Any] = {}
    for s in plan.scenarios:
        rs = by.get(s.name, [])
        if not rs:
            continue
        out[s.name] = {
            "rps": spread([r["rps"] for r in rs]),
            "p50_ms": spread([r["p50_ms"] for r in rs]),
            "p99_ms": spread([r["p99_ms"] for r in rs]),
            "us_per_request": spread([1e6 / r["rps"] for r in rs if r["rps"] > 0] or [math.nan]),
            "errors": sum(r["errors"] for r in rs),
            "requests": sum(r["requests"] for r in rs),
            "runs": len(rs),
        }
    return out


def stage_costs(runs: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    """Each stage's marginal cost: its µs per request minus its baseline's, paired by round.

    With one gateway process pinned to one core and saturated, 1 / req/s is the CPU time a request
    costs the gateway, so the difference is what the stage adds."""
    per_round: dict[tuple[str, int], float] = {
        (r["scenario"], r["round"]): 1e6 / r["rps"] for r in runs if r["rps"] > 0
    }
    out: dict[str, Any] = {}
    for s in plan.scenarios:
        if s.baseline is None:
            continue
        diffs = [
            us - per_round[(s.baseline, rnd)]
            for (name, rnd), us in per_round.items()
            if name == s.name and (s.baseline, rnd) in per_round
        ]
        if diffs:
            out[s.name] = {"baseline": s.baseline, "cost_us": spread(diffs)}
    return out


def machine() -> dict[str, Any]:
    info = proxy_bench.machine()
    info["python"] = platform.python_version()
    return info


# --------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pygw bench",
        description="Benchmark pygw against nginx and a plain aiohttp proxy; writes "
        "bench/results/<timestamp>/ (results.json, report.md, PNG plots).",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="short run, under 2 minutes")
    size.add_argument("--smoke", action="store_true", help="tiny run checking the output's shape")
    parser.add_argument("--out", metavar="DIR", help="output folder (default bench/results/TIME)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, help="interleaved rounds")
    parser.add_argument("--connections", type=int, help="wrk connections")
    parser.add_argument("--rate", type=float, help="offered rate of the fixed-rate runs (req/s)")
    parser.add_argument("--fixed-duration", type=float, help="seconds per fixed-rate run")
    parser.add_argument("--gateway-cpu", type=int, help="core for the proxies under test (0)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument(
        "--no-oha", action="store_true", help="fixed rate with the Python generator"
    )
    parser.add_argument("--no-native", action="store_true", help="skip native_bench")
    parser.add_argument(
        "--no-https", action="store_true", help="skip the HTTPS and HTTP/2 scenarios"
    )
    parser.add_argument("--only", help="comma-separated scenario names (and what they depend on)")
    # Internal: the open-loop generator's own process.
    parser.add_argument("--open-loop", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--header", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--unique", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--raw-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("duration", "rate", "fixed_duration"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def resolve_mode(args: argparse.Namespace) -> Mode:
    base = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    return Mode(
        base.name,
        args.duration or base.duration_s,
        args.repeats or base.repeats,
        base.warmup_s,
        args.connections or base.connections,
        args.rate or base.rate,
        args.fixed_duration or base.fixed_duration_s,
        base.route_sizes,
        base.mock_rate,
        base.mock_duration_s,
        [] if args.no_native else base.native,
    )


def select(plan: Plan, only: str | None) -> Plan:
    if not only:
        return plan
    names = {n.strip() for n in only.split(",") if n.strip()}
    unknown = names - {s.name for s in plan.scenarios}
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    chosen = [s for s in plan.scenarios if s.name in names]
    chosen += [
        s for s in plan.scenarios if s.name in {c.baseline for c in chosen} and s not in chosen
    ]
    needed = {s.server for s in chosen} | {"upstream", "upstream_big"}
    return Plan([sv for sv in plan.servers if sv.name in needed], chosen)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    missing = missing_requirements()
    if missing:
        log("pygw bench needs what follows and installs nothing itself:")
        for line in missing:
            log(f"  - {line}")
        return 2
    import matplotlib

    mode = resolve_mode(args)
    started = time.monotonic()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else RESULTS_DIR / stamp
    out.mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    pinning = plan_pinning(cpus, args.gateway_cpu, args.no_pin)
    oha = None if args.no_oha else find_oha()
    fixed_tool = "oha -q RATE --latency-correction" if oha else "the harness's open-loop generator"
    if oha is None and not args.no_oha:
        log(
            "oha not found (`cargo install oha` installs it); fixed-rate runs use the open-loop "
            "generator"
        )
    log(f"mode {mode.name}; pinning: {pinning.note}; fixed rate: {fixed_tool}")

    procs = proxy_bench.Processes()
    runs: list[dict[str, Any]] = []
    fixed: list[dict[str, Any]] = []
    mock: dict[str, Any] = {}
    https: dict[str, Any] | None = None
    commands: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="pygw-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            ports = {"upstream": proxy_bench.free_port(), "upstream_big": proxy_bench.free_port()}
            jwt = scenarios.make_jwt(tmp)
            plan = select(
                scenarios.build_plan(
                    ports["upstream"], ports["upstream_big"], jwt, list(mode.route_sizes)
                ),
                args.only,
            )
            mock_server = Server(
                "pygw_mock",
                "pygw",
                config=scenarios.mock_config(
                    MOCK_TARGET["p50_ms"],
                    MOCK_TARGET["p99_ms"],
                    MOCK_TARGET["fault_rate"],
                    int(MOCK_TARGET["fault_status"]),
                ),
                ready_path="/mock",
            )
            log(f"starting {len(plan.servers) + 1} servers")
            running = start_all(
                Plan([*plan.servers, mock_server], plan.scenarios), procs, tmp, ports, pinning
            )
            # The mock route fails 5% of requests by design: its readiness probe may see a 503.
            commands["servers"] = [" ".join(r.child.argv) for r in running.values()]
            log(f"servers ready after {time.monotonic() - started:.0f} s")
            lua_dir = tmp / "lua"
            lua_dir.mkdir()

            def argv_for(s: Scenario, duration_s: float) -> list[str]:
                url = running[s.server].url
                return wrk_argv(url, s, duration_s, mode.connections, pinning, lua_dir)

            commands["wrk"] = [" ".join(argv_for(s, mode.duration_s)) for s in plan.scenarios]
            if mode.warmup_s > 0:
                for s in plan.scenarios:
                    run_wrk(argv_for(s, mode.warmup_s), mode.warmup_s)
            by_name = {s.name: s for s in plan.scenarios}
            order = list(by_name)
            for rnd in range(mode.repeats):
                shift = (rnd * max(1, len(order) // mode.repeats)) % len(order)
                for name in order[shift:] + order[:shift]:
                    result = run_wrk(argv_for(by_name[name], mode.duration_s), mode.duration_s)
                    runs.append({"scenario": name, "round": rnd, **asdict(result)})
                    log(
                        f"round {rnd + 1}/{mode.repeats} {name}: {result.rps:,.0f} req/s, "
                        f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                        f"{result.errors} errors"
                    )

            for rnd in range(mode.repeats if mode.name == "full" else 1):
                for s in [s for s in plan.scenarios if s.fixed_rate]:
                    url = running[s.server].url + s.path
                    if oha:
                        argv = oha_argv(
                            oha, url, mode.rate, mode.fixed_duration_s, s.headers, s.lua == "unique"
                        )
                        summary = run_oha(argv, mode.rate, mode.fixed_duration_s, pinning)
                    else:
                        raw = run_open_loop_subprocess(
                            url,
                            mode.rate,
                            mode.fixed_duration_s,
                            s.headers,
                            s.lua == "unique",
                            pinning,
                            tmp / f"open-loop-{s.name}.json",
                        )
                        summary = summarise_open_loop(raw, mode.rate)
                    fixed.append({"scenario": s.name, "round": rnd, **summary})
                    log(
                        f"fixed {mode.rate:g} req/s {s.name}: p50 {summary['p50_ms']:.2f} ms, "
                        f"p99 {summary['p99_ms']:.2f} ms, {summary['errors']} errors"
                    )

            if not args.no_https:
                # Against the same upstream, pinned as the rest (https_bench.py).
                try:
                    https = https_bench.measure(
                        ports["upstream"],
                        procs,
                        tmp,
                        mode.duration_s,
                        mode.repeats,
                        mode.connections,
                        pinning.gateway,
                        pinning.load,
                        oha,
                        log,
                    )
                except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as failed:
                    log(f"HTTPS scenarios failed: {failed}")
                    https = {"error": str(failed)}

            raw = run_open_loop_subprocess(
                running["pygw_mock"].url + "/mock",
                mode.mock_rate,
                mode.mock_duration_s,
                {},
                False,
                pinning,
                tmp / "open-loop-mock.json",
            )
            mock = {
                "config": {
                    "latency_ms": {"p50": MOCK_TARGET["p50_ms"], "p99": MOCK_TARGET["p99_ms"]},
                    "faults": {
                        "rate": MOCK_TARGET["fault_rate"],
                        "status": MOCK_TARGET["fault_status"],
                    },
                },
                "tool": "open-loop generator",
                "rate": mode.mock_rate,
                "duration_s": mode.mock_duration_s,
                **mock_target_stats(
                    raw["latencies_ms"],
                    raw["statuses"],
                    MOCK_TARGET["p50_ms"],
                    MOCK_TARGET["p99_ms"],
                    MOCK_TARGET["fault_rate"],
                    int(MOCK_TARGET["fault_status"]),
                ),
            }
            log(f"mock target check: {'ok' if mock['ok'] else 'NOT ok'}")
        finally:
            procs.stop_all()

        native: dict[str, Any] | None = None
        if mode.native:
            native_json = tmp / "native.json"
            argv = [
                *taskset(pinning.gateway),
                sys.executable,
                str(ROOT / "bench" / "native_bench.py"),
                *mode.native,
                "--json",
                str(native_json),
            ]
            commands["native"] = [" ".join(argv)]
            done = subprocess.run(
                argv, capture_output=True, text=True, cwd=ROOT, timeout=1800, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"native_bench failed: {done.stderr[-2000:]}")
            native = json.loads(native_json.read_text())

    results = {
        "meta": {
            **machine(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "mode": asdict(mode),
            "pinning": asdict(pinning),
            "fixed_rate_tool": fixed_tool,
            "coordinated_omission": (
                "fixed-rate latencies are measured from each request's scheduled send time "
                + ("(oha --latency-correction)" if oha else "(open-loop generator)")
                + "; saturation latencies come from wrk, which does not correct for it"
            ),
            "tools": {
                "wrk": tool_version(["wrk", "--version"]),
                "nginx": tool_version(["nginx", "-v"]),
                "oha": tool_version([oha, "--version"]) if oha else None,
                "h2load": tool_version(["h2load", "--version"]),
                "matplotlib": matplotlib.__version__,
            },
            "commands": commands,
            "elapsed_s": time.monotonic() - started,
        },
        "scenarios": [
            {
                "name": s.name,
                "label": s.label,
                "group": s.group,
                "server": s.server,
                "path": s.path,
                "header_names": sorted(s.headers),
                "lua": s.lua,
                "routes": s.routes,
                "baseline": s.baseline,
                "fixed_rate": s.fixed_rate,
            }
            for s in plan.scenarios
        ],
        "runs": runs,
        "fixed_rate_runs": fixed,
        "summary": summarise(runs, plan),
        "fixed_rate_summary": summarise_fixed(fixed),
        "stage_costs": stage_costs(runs, plan),
        "mock_check": mock,
        "native": native,
        "https": https,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")
    from bench import report

    report.write_report(results, out)
    log(f"done in {time.monotonic() - started:.0f} s: {out / 'report.md'}")
    print(out)
    return 0


def summarise_fixed(fixed: list[dict[str, Any]]) -> dict[str, Any]:
    by: dict[str, list[dict[str, Any]]] = {}
    for f in fixed:
        by.setdefault(f["scenario"], []).append(f)
    return {
        name: {
            "tool": fs[0]["tool"],
            "rate": fs[0]["rate"],
            **{k: spread([f[k] for f in fs]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")},
            "achieved_rps": spread([f["achieved_rps"] for f in fs]),
            "errors": sum(f["errors"] for f in fs),
            "requests": sum(f["requests"] for f in fs),
        }
        for name, fs in by.items()
    }


def serve_open_loop(args: argparse.Namespace) -> int:
    headers = dict(h.split(": ", 1) for h in args.header)
    import uvloop

    raw = uvloop.run(
        open_loop(args.open_loop, args.rate, args.fixed_duration, headers, args.unique)
    )
    Path(args.raw_out).write_text(json.dumps(raw))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.open_loop:
        if not (args.rate and args.fixed_duration and args.raw_out):
            raise SystemExit("--open-loop needs --rate, --fixed-duration and --raw-out")
        return serve_open_loop(args)

    proxy_bench.exit_on_sigterm()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
