"""Requests per second and latency of pygw's lean proxy path next to two reference proxies.

The lean path is an HTTP-style API whose only route, `ANY /{proxy+}`, has an `http_proxy`
integration and no other stage. It is measured with wrk on 127.0.0.1, in the same run as:

- a plain aiohttp proxy (one `ClientSession`, uvloop), written below as a user would write it;
- nginx as a reverse proxy (one worker, upstream keep-alive);
- the upstream itself, unproxied (for reference: what the load generator and upstream allow).

The upstream is nginx answering `return 200` with a small JSON body. Each proxy runs pinned to one
core (`--proxy-cpu`); wrk and the upstream share the other one (`--load-cpu`). Targets are measured
round-robin, with the order rotated each round, and the figures are medians over the rounds.

    .venv/bin/python bench/proxy_bench.py [--duration 10] [--repeats 3] [--connections 64]
                                          [--json PATH]

Needs nginx and wrk: `apt-get install -y nginx-light wrk` (or `nginx` where nginx-light is not
packaged). Everything listens on 127.0.0.1; every process started is stopped by its pid at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_BODY = '{"id":"42","name":"an item","price":9.5}'
REQUEST_PATH = "/items/42"
INSTALL_HINT = (
    "install them with: apt-get update && apt-get install -y nginx-light wrk "
    "(or `nginx` instead of `nginx-light` where that package is not available)"
)

PYGW = "pygw"
AIOHTTP = "aiohttp proxy"
NGINX = "nginx proxy"
DIRECT = "upstream direct"
TARGETS = (PYGW, AIOHTTP, NGINX, DIRECT)


# --------------------------------------------------------------------------------------------------
# The plain aiohttp proxy: what a user would write to forward requests with aiohttp.

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def aiohttp_proxy_app(upstream: str) -> Any:
    """An aiohttp application forwarding method, path, query, headers and body to `upstream`."""
    import aiohttp
    from aiohttp import web
    from multidict import CIMultiDict
    from yarl import URL

    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def open_session(app: web.Application) -> None:
        app[session_key] = aiohttp.ClientSession(auto_decompress=False)

    async def close_session(app: web.Application) -> None:
        await app[session_key].close()

    async def proxy(request: web.Request) -> web.Response:
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP
        )
        body = await request.read()
        async with request.app[session_key].request(
            request.method,
            URL(upstream + request.raw_path, encoded=True),
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream_response:
            payload = await upstream_response.read()
            out = CIMultiDict(
                (k, v) for k, v in upstream_response.headers.items() if k.lower() not in HOP_BY_HOP
            )
            return web.Response(status=upstream_response.status, headers=out, body=payload)

    app = web.Application()
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def serve_aiohttp_proxy(listen: str, upstream: str) -> None:
    import uvloop
    from aiohttp import web

    host, port = listen.rsplit(":", 1)
    web.run_app(
        aiohttp_proxy_app(upstream),
        host=host,
        port=int(port),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


# --------------------------------------------------------------------------------------------------
# Configurations


def nginx_common(tmp: Path, name: str) -> str:
    """Process-level settings that keep an nginx instance inside `tmp` (no root-owned paths)."""
    return f"""daemon off;
master_process on;
worker_processes 1;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
"""


def nginx_http_common(tmp: Path, name: str) -> str:
    temp = "\n".join(
        f"    {kind}_temp_path {tmp}/{name}-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # keepalive_requests: nginx closes a keep-alive connection after 1000 requests by default,
    # which would make every client in the run reconnect mid-measurement.
    return f"""    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
{temp}
"""


def nginx_upstream_conf(tmp: Path, port: int, body: str = UPSTREAM_BODY) -> str:
    escaped = body.replace("\\", "\\\\").replace("'", "\\'")
    return f"""{nginx_common(tmp, "upstream")}
http {{
{nginx_http_common(tmp, "upstream")}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{escaped}';
        }}
    }}
}}
"""


def nginx_proxy_conf(tmp: Path, port: int, upstream_port: int) -> str:
    return f"""{nginx_common(tmp, "proxy")}
http {{
{nginx_http_common(tmp, "proxy")}
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def pygw_config(port: int, admin_port: int, upstream_port: int) -> dict[str, Any]:
    """The lean path: one HTTP-style API, one `ANY /{proxy+}` http_proxy route, nothing else."""
    return {
        "server": {"listen": f"127.0.0.1:{port}", "workers": 1},
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        # No account-wide limit: the lean path has no stage at all (and the default, 10 000
        # rps, would throttle the run).
        "throttle": None,
        "access_log": None,
        "apis": [
            {
                "name": "bench",
                "type": "http",
                "stages": [{"name": "$default"}],
                "routes": {
                    "ANY /{proxy+}": {
                        "integration": {
                            "type": "http_proxy",
                            "uri": f"http://127.0.0.1:{upstream_port}/{{proxy}}",
                        }
                    }
                },
            }
        ],
    }


def pygw_config_yaml(port: int, admin_port: int, upstream_port: int) -> str:
    return yaml.safe_dump(pygw_config(port, admin_port, upstream_port), sort_keys=False)


# --------------------------------------------------------------------------------------------------
# wrk


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors + non-2xx/3xx responses


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk(output: str) -> WrkResult:
    """Reads `wrk --latency` output; raises ValueError when a figure is missing."""
    rps = _RPS.search(output)
    requests = _REQUESTS.search(output)
    latency = {
        m.group(1): float(m.group(2)) * _UNITS_MS[m.group(3)] for m in _LATENCY.finditer(output)
    }
    if rps is None or requests is None or set(latency) != {"50", "99"}:
        raise ValueError(f"unexpected wrk output:\n{output}")
    errors = 0
    if found := _SOCKET_ERRORS.search(output):
        errors += sum(int(g) for g in found.groups())
    if found := _NON_2XX.search(output):
        errors += int(found.group(1))
    return WrkResult(
        float(rps.group(1)), latency["50"], latency["99"], int(requests.group(1)), errors
    )


def wrk_command(
    url: str, duration_s: float, connections: int, cpu: int | None, threads: int = 1
) -> list[str]:
    return [
        *pin(cpu),
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "5s",
        "--latency",
        url,
    ]


# --------------------------------------------------------------------------------------------------
# Processes


def pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []


def missing_tools() -> list[str]:
    return [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None]


# Ports free_port has handed out in this process: a server may not have bound its port yet.
_handed_out: set[int] = set()
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port free on 127.0.0.1 for a server about to start, never the same twice in one run.

    Chosen below the kernel's ephemeral range: a port the kernel picks for bind(0) comes from the
    range outgoing connections take their local ports from, so one of the harness's own probes or
    upstream connections could take it before the server that was given it binds (seen as
    "address already in use" with 25 servers starting)."""
    start = _ephemeral_start()
    low = max(1024, start - 16384)
    if start - low >= 1024:
        for _ in range(256):
            port = random.randrange(low, start)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    while True:  # no room below the range (or all taken): let the kernel choose
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def pygw_command() -> list[str]:
    local = ROOT / ".venv" / "bin" / "pygw"
    if local.exists():
        return [str(local)]
    found = shutil.which("pygw")
    return [found] if found else [sys.executable, "-m", "pygw"]


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes]


@dataclass
class Processes:
    """Every child this run started, stopped by pid (SIGTERM, then SIGKILL) in reverse order."""

    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], log: Path) -> Child:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        child = Child(name, argv, log, proc)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                os.kill(child.proc.pid, signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(child.proc.pid, signal.SIGKILL)
                child.proc.wait(5)
        self.children.clear()


def wait_ready(child: Child, url: str, timeout_s: float = 30.0) -> None:
    """Waits until `url` answers 200 with the upstream's body (so the whole chain works)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = response.read().decode()
                if response.status == 200 and body == UPSTREAM_BODY:
                    return
                last = f"status {response.status}, body {body[:200]!r}"
        except (OSError, urllib.error.URLError) as failure:
            last = str(failure)
        time.sleep(0.1)
    log = child.log.read_text(errors="replace")[-4000:] if child.log.exists() else ""
    raise RuntimeError(f"{child.name} is not serving {url} ({last}); its log:\n{log}")


# --------------------------------------------------------------------------------------------------
# Report


def median_result(samples: Sequence[WrkResult]) -> dict[str, float]:
    return {
        "rps": statistics.median(s.rps for s in samples),
        "p50_ms": statistics.median(s.p50_ms for s in samples),
        "p99_ms": statistics.median(s.p99_ms for s in samples),
        "errors": float(sum(s.errors for s in samples)),
    }


def markdown(medians: dict[str, dict[str, float]]) -> str:
    aio, ngx = medians.get(AIOHTTP), medians.get(NGINX)
    lines = [
        "| target | req/s | p50 | p99 | errors | req/s vs aiohttp proxy | req/s vs nginx proxy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in medians.items():
        vs_aio = f"{m['rps'] / aio['rps']:.2f}x" if aio else "-"
        vs_ngx = f"{m['rps'] / ngx['rps']:.2f}x" if ngx else "-"
        lines.append(
            f"| {name} | {m['rps']:,.0f} | {m['p50_ms']:.2f} ms | {m['p99_ms']:.2f} ms"
            f" | {m['errors']:.0f} | {vs_aio} | {vs_ngx} |"
        )
    if PYGW in medians and aio:
        pg = medians[PYGW]
        speedup = pg["rps"] / aio["rps"]
        lines += [
            "",
            f"Target: pygw >= 2x the aiohttp proxy's req/s at equal or better p99: "
            f"{speedup:.2f}x req/s ({'met' if speedup >= 2 else 'NOT met'}), "
            f"p99 {pg['p99_ms']:.2f} ms vs {aio['p99_ms']:.2f} ms "
            f"({'met' if pg['p99_ms'] <= aio['p99_ms'] else 'NOT met'}).",
        ]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# --------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="pygw's lean proxy path next to a plain aiohttp proxy and nginx, under wrk."
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target")
    parser.add_argument("--proxy-cpu", type=int, default=0, help="core for the proxy under test")
    parser.add_argument("--load-cpu", type=int, default=1, help="core for wrk and the upstream")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--json", metavar="PATH", help="write raw results as JSON")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of: {', '.join(TARGETS)}",
    )
    # Internal: the script starts its own aiohttp proxy through this option.
    parser.add_argument("--serve-aiohttp-proxy", metavar="HOST:PORT", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_aiohttp_proxy:
        if not args.upstream:
            parser.error("--serve-aiohttp-proxy needs --upstream")
        return args
    if args.duration <= 0 or args.repeats < 1 or args.connections < 1 or args.warmup < 0:
        parser.error("--duration and --connections must be positive, --repeats at least 1")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        parser.error(f"unknown target(s) {unknown}; choose from {', '.join(TARGETS)}")
    args.targets = targets
    if args.no_pin:
        args.proxy_cpu = args.load_cpu = None
    return args


def run(args: argparse.Namespace) -> int:
    missing = missing_tools()
    if missing:
        print(f"proxy_bench needs {' and '.join(missing)}; {INSTALL_HINT}", file=sys.stderr)
        return 2
    procs = Processes()
    commands: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pygw-proxy-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            upstream_port = free_port()
            (tmp / "upstream.conf").write_text(nginx_upstream_conf(tmp, upstream_port))
            upstream = procs.start(
                "upstream nginx",
                [
                    *pin(args.load_cpu),
                    "nginx",
                    "-p",
                    str(tmp),
                    "-e",
                    str(tmp / "upstream-error.log"),
                    "-c",
                    str(tmp / "upstream.conf"),
                ],
                tmp / "upstream.log",
            )
            upstream_url = f"http://127.0.0.1:{upstream_port}"
            wait_ready(upstream, upstream_url + REQUEST_PATH)
            urls: dict[str, str] = {DIRECT: upstream_url + REQUEST_PATH}

            if PYGW in args.targets:
                port, admin_port = free_port(), free_port()
                (tmp / "pygw.yaml").write_text(pygw_config_yaml(port, admin_port, upstream_port))
                child = procs.start(
                    PYGW,
                    [
                        *pin(args.proxy_cpu),
                        *pygw_command(),
                        "serve",
                        "-c",
                        str(tmp / "pygw.yaml"),
                        "--listen",
                        f"127.0.0.1:{port}",
                    ],
                    tmp / "pygw.log",
                )
                urls[PYGW] = f"http://127.0.0.1:{port}{REQUEST_PATH}"
                wait_ready(child, urls[PYGW])
            if AIOHTTP in args.targets:
                port = free_port()
                child = procs.start(
                    AIOHTTP,
                    [
                        *pin(args.proxy_cpu),
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "--serve-aiohttp-proxy",
                        f"127.0.0.1:{port}",
                        "--upstream",
                        upstream_url,
                    ],
                    tmp / "aiohttp.log",
                )
                urls[AIOHTTP] = f"http://127.0.0.1:{port}{REQUEST_PATH}"
                wait_ready(child, urls[AIOHTTP])
            if NGINX in args.targets:
                port = free_port()
                (tmp / "proxy.conf").write_text(nginx_proxy_conf(tmp, port, upstream_port))
                child = procs.start(
                    NGINX,
                    [
                        *pin(args.proxy_cpu),
                        "nginx",
                        "-p",
                        str(tmp),
                        "-e",
                        str(tmp / "proxy-error.log"),
                        "-c",
                        str(tmp / "proxy.conf"),
                    ],
                    tmp / "proxy.log",
                )
                urls[NGINX] = f"http://127.0.0.1:{port}{REQUEST_PATH}"
                wait_ready(child, urls[NGINX])

            order = [t for t in TARGETS if t in args.targets]
            commands += [" ".join(c.argv) for c in procs.children]
            commands.append(
                " ".join(wrk_command("URL", args.duration, args.connections, args.load_cpu))
            )

            samples: dict[str, list[WrkResult]] = {t: [] for t in order}
            if args.warmup > 0:
                for target in order:
                    wrk(urls[target], args.warmup, args.connections, args.load_cpu)
            for round_no in range(args.repeats):
                shift = round_no % len(order)
                for target in order[shift:] + order[:shift]:
                    result = wrk(urls[target], args.duration, args.connections, args.load_cpu)
                    samples[target].append(result)
                    print(
                        f"round {round_no + 1}/{args.repeats} {target}: {result.rps:,.0f} req/s, "
                        f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                        f"{result.errors} errors",
                        file=sys.stderr,
                    )
        finally:
            procs.stop_all()

    medians = {t: median_result(s) for t, s in samples.items()}
    print(markdown(medians))
    print(
        f"\nwrk -t1 -c{args.connections} -d{args.duration:g}s, {args.repeats} interleaved rounds, "
        f"medians; proxies pinned to CPU {args.proxy_cpu}, wrk and upstream to CPU {args.load_cpu}."
    )
    if args.json:
        report = {
            "meta": {
                **machine(),
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "duration_s": args.duration,
                "repeats": args.repeats,
                "connections": args.connections,
                "proxy_cpu": args.proxy_cpu,
                "load_cpu": args.load_cpu,
                "commands": commands,
            },
            "samples": {t: [asdict(r) for r in s] for t, s in samples.items()},
            "medians": medians,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def wrk(url: str, duration_s: float, connections: int, cpu: int | None) -> WrkResult:
    completed = subprocess.run(
        wrk_command(url, duration_s, connections, cpu),
        capture_output=True,
        text=True,
        timeout=duration_s + 30,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr}")
    return parse_wrk(completed.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_aiohttp_proxy:
        serve_aiohttp_proxy(args.serve_aiohttp_proxy, args.upstream)
        return 0

    exit_on_sigterm()
    return run(args)


def exit_on_sigterm() -> None:
    """SIGTERM becomes SystemExit, so that the servers a run started are stopped on the way out."""

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


if __name__ == "__main__":
    sys.exit(main())
