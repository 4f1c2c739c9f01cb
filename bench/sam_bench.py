"""A SAM function route served four ways, requests per second and latency under wrk, as ratios.

The same Python handler (bench/sam_app/hello/app.py, GET /hello on an HTTP API) is measured:

- `function (-c)`: a pygw config with a `function` integration (in-process), the baseline;
- `--sam`: `pygw serve --sam bench/sam_app/template.yaml`, the template imported at start;
- `lambda (warm)`: a `lambda` integration, the handler run by an Invoke API server that keeps it
  loaded (what the Runtime Interface Emulator does once its runtime is up): the cost of the
  out-of-process path itself, one extra HTTP hop and the event and result as JSON;
- `lambda (node per call)`: the template's Node function through `--sam --lambda-endpoint`,
  the Invoke API starting a `node` process per invocation (skipped without node), driven by one
  connection. It is the nearest this machine gets to `sam local start-api`, which starts a
  container per invocation.

Each gateway runs pinned to one core (`--gateway-cpu`), wrk and the Invoke API server on the
other (`--load-cpu`); the targets are measured round-robin, the order rotated each round, and the
figures are medians over the rounds, reported with each target's ratio to the baseline.

    .venv/bin/python -m bench.sam_bench [--duration 5] [--repeats 3] [--connections 16]
                                          [--json PATH]

Needs wrk (`apt-get install -y wrk`). Everything listens on 127.0.0.1; every process started is
stopped by its pid at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from bench.proxy_bench import (
    Child,
    Processes,
    WrkResult,
    exit_on_sigterm,
    free_port,
    machine,
    pin,
    pygw_command,
    wrk,
)

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "bench" / "sam_app"
NODE_RUNNER = ROOT / "tests" / "lambda_runtime" / "runner.js"
BODY = '{"message":"hello world"}'

FUNCTION = "function (-c)"
SAM = "--sam"
WARM = "lambda (warm)"
NODE = "lambda (node per call)"
TARGETS = (FUNCTION, SAM, WARM, NODE)


# --------------------------------------------------------------------------------------------------
# The Invoke API server this script starts


def serve_invoke_api(port: int) -> None:
    import uvloop
    from aiohttp import web

    spec = importlib.util.spec_from_file_location("bench_hello", APP / "hello" / "app.py")
    if spec is None or spec.loader is None:
        raise SystemExit("cannot load bench/sam_app/hello/app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = module.handler

    async def invoke(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        event = await request.read()
        if name == "HelloFunction":
            result = handler(json.loads(event), None)
            return web.Response(body=json.dumps(result), content_type="application/json")
        if name == "NodeHelloFunction":
            process = await asyncio.create_subprocess_exec(
                "node",
                str(NODE_RUNNER),
                str(APP / "node" / "app.js"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await process.communicate(event)
            headers = {} if process.returncode == 0 else {"X-Amz-Function-Error": "Unhandled"}
            return web.Response(body=out, headers=headers, content_type="application/json")
        return web.json_response({"Message": f"Function not found: {name}"}, status=404)

    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", invoke)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --------------------------------------------------------------------------------------------------
# Running


def _config(port: int, admin_port: int, integration: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            # The defaults `--sam` serves with too (account throttle, access log), so that the
            # ratios compare the ways of reaching the function and nothing else.
            "server": {"listen": f"127.0.0.1:{port}"},
            "admin": {"listen": f"127.0.0.1:{admin_port}"},
            "python_path": [str(APP / "hello")],
            "apis": [
                {
                    "name": "bench",
                    "type": "http",
                    "routes": {"GET /hello": {"integration": integration}},
                }
            ],
        }
    )


def wait_body(child: Child, url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline and child.proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode()
                if response.status == 200 and body == BODY:
                    return
                last = f"status {response.status}, body {body[:200]!r}"
        except (OSError, urllib.error.URLError) as failure:
            last = str(failure)
        time.sleep(0.1)
    log = child.log.read_text(errors="replace")[-4000:] if child.log.exists() else ""
    raise RuntimeError(f"{child.name} is not serving {url} ({last}); its log:\n{log}")


def median_of(samples: Sequence[WrkResult]) -> dict[str, float]:
    return {
        "rps": statistics.median(s.rps for s in samples),
        "p50_ms": statistics.median(s.p50_ms for s in samples),
        "p99_ms": statistics.median(s.p99_ms for s in samples),
        "errors": float(sum(s.errors for s in samples)),
    }


def markdown(medians: dict[str, dict[str, float]]) -> str:
    base = medians.get(FUNCTION)
    lines = [
        "| target | req/s | p50 ms | p99 ms | errors | req/s ratio to function (-c) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in medians.items():
        ratio = f"{m['rps'] / base['rps']:.3f}" if base and base["rps"] > 0 else "-"
        lines.append(
            f"| {name} | {m['rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
            f"{m['errors']:.0f} | {ratio} |"
        )
    return "\n".join(lines)


def _connections(args: argparse.Namespace, name: str) -> int:
    # A process per invocation is measured one request at a time: its figure is the seconds a
    # request takes, as `sam local start-api` documents its own.
    return 1 if name == NODE else int(args.connections)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--connections", type=int, default=16, help="wrk connections (the Node target: 1)"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per target")
    parser.add_argument("--gateway-cpu", type=int, default=0, help="core for the gateways")
    parser.add_argument("--load-cpu", type=int, default=1, help="core for wrk and Invoke API")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--json", metavar="PATH", help="write raw results as JSON")
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help=f"subset of: {', '.join(TARGETS)}"
    )
    parser.add_argument("--serve-invoke-api", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_invoke_api:
        return args
    if args.duration <= 0 or args.repeats < 1 or args.connections < 1:
        parser.error("--duration and --connections must be positive, --repeats at least 1")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets or any(t not in TARGETS for t in targets):
        parser.error(f"choose targets from: {', '.join(TARGETS)}")
    if NODE in targets and shutil.which("node") is None:
        print("node is not installed: skipping the Node target", file=sys.stderr)
        targets.remove(NODE)
    args.targets = targets
    if args.no_pin:
        args.gateway_cpu = args.load_cpu = None
    return args


def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("sam_bench needs wrk: apt-get update && apt-get install -y wrk", file=sys.stderr)
        return 2
    procs = Processes()
    commands: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pygw-sam-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            invoke_port = free_port()
            invoke = procs.start(
                "invoke api",
                [
                    *pin(args.load_cpu),
                    sys.executable,
                    "-m",
                    "bench.sam_bench",
                    "--serve-invoke-api",
                    str(invoke_port),
                ],
                tmp / "invoke.log",
            )
            endpoint = f"http://127.0.0.1:{invoke_port}"
            urls: dict[str, str] = {}
            gateways: dict[str, list[str]] = {}
            if FUNCTION in args.targets:
                port = free_port()
                (tmp / "function.yaml").write_text(
                    _config(port, free_port(), {"type": "function", "handler": "app:handler"})
                )
                gateways[FUNCTION] = ["serve", "-c", str(tmp / "function.yaml")]
                urls[FUNCTION] = f"http://127.0.0.1:{port}/hello"
            if WARM in args.targets:
                port = free_port()
                (tmp / "lambda.yaml").write_text(
                    _config(
                        port,
                        free_port(),
                        {"type": "lambda", "function_name": "HelloFunction", "endpoint": endpoint},
                    )
                )
                gateways[WARM] = ["serve", "-c", str(tmp / "lambda.yaml")]
                urls[WARM] = f"http://127.0.0.1:{port}/hello"
            if SAM in args.targets or NODE in args.targets:
                port = free_port()
                argv = [
                    "serve",
                    "--sam",
                    str(APP / "template.yaml"),
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--admin-listen",
                    f"127.0.0.1:{free_port()}",
                    "--lambda-endpoint",
                    endpoint,
                ]
                if SAM in args.targets:
                    gateways[SAM] = argv
                    urls[SAM] = f"http://127.0.0.1:{port}/hello"
                if NODE in args.targets:
                    urls[NODE] = f"http://127.0.0.1:{port}/node-hello"
            children: dict[str, Child] = {}
            for name, argv in gateways.items():
                full = [*pin(args.gateway_cpu), *pygw_command(), *argv]
                commands.append(" ".join(full))
                children[name] = procs.start(name, full, tmp / f"{len(children)}.log")
            for name, url in urls.items():
                owner = children.get(name) or children.get(SAM) or invoke
                wait_body(owner, url)
            for name, url in urls.items():
                if args.warmup > 0:
                    wrk(url, args.warmup, _connections(args, name), args.load_cpu)
            samples: dict[str, list[WrkResult]] = {name: [] for name in urls}
            order = list(urls)
            for round_ in range(args.repeats):
                rotated = order[round_ % len(order) :] + order[: round_ % len(order)]
                for name in rotated:
                    samples[name].append(
                        wrk(urls[name], args.duration, _connections(args, name), args.load_cpu)
                    )
        finally:
            procs.stop_all()
    medians = {name: median_of(s) for name, s in samples.items()}
    print(markdown(medians))
    if args.json:
        report = {
            "meta": {
                "machine": machine(),
                "duration_s": args.duration,
                "repeats": args.repeats,
                "connections": args.connections,
                "gateway_cpu": args.gateway_cpu,
                "load_cpu": args.load_cpu,
                "commands": commands,
            },
            "samples": {t: [asdict(r) for r in s] for t, s in samples.items()},
            "medians": medians,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_invoke_api:
        serve_invoke_api(args.serve_invoke_api)
        return 0
    exit_on_sigterm()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
