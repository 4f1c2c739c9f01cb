"""Instructions per request of the pipeline targets' scenarios, counted by valgrind's callgrind.

Requests per second on a shared machine move with the neighbours (the bare route measured 45 to
61 µs per request between runs of the same commit); the number of instructions the gateway
process runs per request does not (about ±0.5% between runs). This is the yardstick for "did
this change make a request cheaper", next to the harness's wall-clock ratios.

Each gateway runs under callgrind with instrumentation off (about 5x slower than native, rather
than 50x) while it loads and serves a warm-up; instrumentation is then on for exactly `--requests`
requests over `--connections` keep-alive connections, and the count is divided by them. Kernel
time is not counted (a request's read and write system calls are the same in every scenario, but
a proxied request makes two more than a cache hit), so these ratios are not the CPU ratios of
`pygw bench`: compare them between commits, not against its bounds.

    python bench/instructions.py [--only pygw_bare,pygw_rest_hit] [--requests 2000] [--json OUT]

Needs valgrind and nginx (`make bench-instructions` installs them from Debian when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `bench` importable
    sys.path.insert(0, str(ROOT))

from bench import harness, proxy_bench, scenarios  # noqa: E402

DEFAULT_SCENARIOS = ("pygw_bare", "pygw_rest_miss", "pygw_rest_hit")
# callgrind writes `summary:` (or `totals:`) with the instruction count of each dump.
_TOTAL_LINE = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Count:
    scenario: str
    label: str
    requests: int
    instructions: int

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests


def total_instructions(dumps: Sequence[Path]) -> int:
    """The instructions counted in callgrind output files (one per dump)."""
    total = 0
    for dump in dumps:
        found = _TOTAL_LINE.findall(dump.read_bytes())
        if not found:
            raise ValueError(f"{dump} has no summary line: not a callgrind output file")
        total += sum(int(n) for n in found)
    return total


def request_bytes(scenario: scenarios.Scenario, number: int, run_id: str) -> bytes:
    """The request a scenario sends as its `number`-th: a fresh query string per request when
    the scenario asks for one (a cache miss every time), as the harness's wrk script does."""
    path = scenario.path
    if scenario.lua == "unique":
        path += f"{'&' if '?' in path else '?'}n={run_id}-{number}"
    elif scenario.lua is not None:
        raise ValueError(f"{scenario.name}: only fixed and unique paths are counted here")
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in scenario.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def send_requests(
    port: int, scenario: scenarios.Scenario, count: int, connections: int, run_id: str
) -> None:
    """`count` requests over `connections` keep-alive connections, one at a time on each;
    raises unless every answer is a 200."""
    numbers = iter(range(count))

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for number in numbers:
                writer.write(request_bytes(scenario, number, run_id))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
                status = head.split(b"\r\n", 1)[0]
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                if b" 200 " not in status + b" ":
                    raise RuntimeError(f"{scenario.name}: request {number} got {status!r}")
        finally:
            writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=60)


def count_scenario(
    scenario: scenarios.Scenario,
    server: scenarios.Server,
    procs: proxy_bench.Processes,
    tmp: Path,
    requests: int,
    warmup: int,
    connections: int,
) -> Count:
    assert server.config is not None
    here = tmp / scenario.name
    here.mkdir()
    port = proxy_bench.free_port()
    conf = here / "pygw.yaml"
    conf.write_text(scenarios.with_listen(server.config, port, proxy_bench.free_port(), 1))
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={here}/callgrind.%p",
        sys.executable,
        "-m",
        "pygw",
        "serve",
        "-c",
        str(conf),
    ]
    child = procs.start(scenario.name, argv, here / "out.log")
    running = harness.Running(server, f"http://127.0.0.1:{port}", child)
    harness.wait_serving(running, time.monotonic() + 300)
    run_id = os.urandom(4).hex()
    asyncio.run(send_requests(port, scenario, warmup, connections, "warm-" + run_id))
    pid = str(child.proc.pid)
    callgrind_control("--instr=on", pid)
    asyncio.run(send_requests(port, scenario, requests, connections, run_id))
    callgrind_control("--instr=off", pid)
    callgrind_control("--dump", pid)
    child.proc.terminate()
    child.proc.wait(60)
    instructions = total_instructions(sorted(here.glob(f"callgrind.{pid}*")))
    return Count(scenario.name, scenario.label, requests, instructions)


def markdown(counts: Sequence[Count]) -> str:
    base = next((c for c in counts if c.scenario == "pygw_bare"), None)
    lines = [
        "| scenario | instructions/request | vs bare route |",
        "|---|---:|---:|",
    ]
    for c in counts:
        ratio = f"{c.per_request / base.per_request:.2f}x" if base is not None else "-"
        lines.append(f"| {c.label} | {c.per_request:,.0f} | {ratio} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(DEFAULT_SCENARIOS))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=400)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args(argv)
    if args.requests < args.connections or args.warmup < 1:
        parser.error("--requests must be at least --connections, and --warmup at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [
        tool for tool in ("valgrind", "callgrind_control", "nginx") if not shutil.which(tool)
    ]
    if missing:
        print(f"needs {', '.join(missing)}: `make bench-instructions` installs them", flush=True)
        return 2
    procs = proxy_bench.Processes()
    counts: list[Count] = []
    with tempfile.TemporaryDirectory(prefix="pygw-instructions-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            upstream_port = proxy_bench.free_port()
            upstream_dir = tmp / "upstream"
            upstream_dir.mkdir()
            upstream_conf = upstream_dir / "nginx.conf"
            upstream_conf.write_text(proxy_bench.nginx_upstream_conf(upstream_dir, upstream_port))
            upstream = procs.start(
                "upstream",
                harness.nginx_argv(upstream_dir, upstream_conf),
                upstream_dir / "out.log",
            )
            proxy_bench.wait_ready(upstream, f"http://127.0.0.1:{upstream_port}/")
            plan = scenarios.build_plan(upstream_port, upstream_port, scenarios.make_jwt(tmp), [10])
            wanted = [name.strip() for name in args.only.split(",") if name.strip()]
            by_name = {s.name: s for s in plan.scenarios}
            servers = {s.name: s for s in plan.servers}
            unknown = [name for name in wanted if name not in by_name]
            if unknown:
                print(f"unknown scenarios {unknown}; known: {sorted(by_name)}", flush=True)
                return 2
            for name in wanted:
                scenario = by_name[name]
                server = servers[scenario.server]
                if server.kind != "pygw" or server.workers != 1:
                    print(f"{name}: only single-process pygw scenarios are counted", flush=True)
                    return 2
                count = count_scenario(
                    scenario, server, procs, tmp, args.requests, args.warmup, args.connections
                )
                counts.append(count)
                print(f"{name}: {count.per_request:,.0f} instructions/request", flush=True)
        finally:
            procs.stop_all()
    print(markdown(counts))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "scenario": c.scenario,
                        "requests": c.requests,
                        "instructions": c.instructions,
                        "per_request": c.per_request,
                    }
                    for c in counts
                ],
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
