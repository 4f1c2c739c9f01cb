"""User and system CPU per request of pygw's bare proxy route, next to a minimal proxy.

The minimal proxy (`serve_minimal_proxy` below) is the floor for a Python proxy on uvloop: both
legs are uvloop protocols parsed by httptools, a keep-alive upstream pool, one task per request,
and nothing else (no header forwarding, no limits, GET only). Whatever pygw spends above it per
request is its own work. Each proxy runs pinned to `--proxy-cpu` under `wrk -t1 -c64` (on
`--load-cpu`, with the nginx upstream); the CPU times come from /proc/PID/stat over the run.

    .venv/bin/python bench/cpu_split.py [--duration 5] [--repeats 3]

Needs nginx and wrk. Everything listens on 127.0.0.1; every process is stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `bench` importable
    sys.path.insert(0, str(ROOT))

from bench import harness, proxy_bench  # noqa: E402

_TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")


def serve_minimal_proxy(port: int, upstream_port: int) -> None:
    """The floor: relay GETs to the upstream and its body back, nothing more."""
    import httptools
    import uvloop

    pool: list[Any] = []

    class Upstream(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.client: Any = None
            self.body: list[bytes] = []

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_begin(self) -> None:
            self.body = []

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            body = b"".join(self.body)
            client, self.client = self.client, None
            pool.append(self)
            if client.transport is not None and not client.transport.is_closing():
                client.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def connection_lost(self, exc: Exception | None) -> None:
            self.transport = None

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_message_complete(self) -> None:
            asyncio.get_running_loop().create_task(self.relay(self.url))

        async def relay(self, url: bytes) -> None:
            if pool:
                upstream = pool.pop()
            else:
                _, upstream = await asyncio.get_running_loop().create_connection(
                    Upstream, "127.0.0.1", upstream_port
                )
            upstream.client = self
            upstream.transport.write(b"GET %s HTTP/1.1\r\nHost: upstream\r\n\r\n" % url)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Client, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def cpu_us(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) * _TICK_US, int(fields[12]) * _TICK_US


def measure(url: str, pid: int, args: argparse.Namespace) -> tuple[float, float, float]:
    """(req/s, user µs per request, system µs per request) over one wrk run."""
    proxy_bench.wrk(url, 1.0, 64, args.load_cpu)  # warm-up
    user0, sys0 = cpu_us(pid)
    result = proxy_bench.wrk(url, args.duration, 64, args.load_cpu)
    user1, sys1 = cpu_us(pid)
    return result.rps, (user1 - user0) / result.requests, (sys1 - sys0) / result.requests


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--proxy-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--serve-minimal", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_minimal:
        serve_minimal_proxy(*args.serve_minimal)
        return 0
    procs = proxy_bench.Processes()
    rows: dict[str, list[tuple[float, float, float]]] = {"pygw bare route": [], "minimal": []}
    with tempfile.TemporaryDirectory(prefix="pygw-cpu-split-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            up_port, pygw_port, mini_port = (proxy_bench.free_port() for _ in range(3))
            up_conf = tmp / "upstream.conf"
            up_conf.write_text(proxy_bench.nginx_upstream_conf(tmp, up_port))
            upstream = procs.start("upstream", harness.nginx_argv(tmp, up_conf), tmp / "up.log")
            proxy_bench.wait_ready(upstream, f"http://127.0.0.1:{up_port}/")
            conf = tmp / "pygw.yaml"
            admin_port = proxy_bench.free_port()
            conf.write_text(proxy_bench.pygw_config_yaml(pygw_port, admin_port, up_port))
            pin = ["taskset", "-c", str(args.proxy_cpu)]
            pygw = procs.start(
                "pygw",
                [*pin, sys.executable, "-m", "pygw", "serve", "-c", str(conf)],
                tmp / "pygw.log",
            )
            mini = procs.start(
                "minimal",
                [*pin, sys.executable, __file__, "--serve-minimal", str(mini_port), str(up_port)],
                tmp / "mini.log",
            )
            path = proxy_bench.REQUEST_PATH
            proxy_bench.wait_ready(pygw, f"http://127.0.0.1:{pygw_port}{path}")
            proxy_bench.wait_ready(mini, f"http://127.0.0.1:{mini_port}{path}")
            for _ in range(args.repeats):
                rows["pygw bare route"].append(
                    measure(f"http://127.0.0.1:{pygw_port}{path}", pygw.proc.pid, args)
                )
                rows["minimal"].append(
                    measure(f"http://127.0.0.1:{mini_port}{path}", mini.proc.pid, args)
                )
                time.sleep(0.2)
        finally:
            procs.stop_all()
    print("| proxy | req/s | user µs/request | system µs/request |")
    print("|---|---:|---:|---:|")
    for name, runs in rows.items():
        rps = statistics.median(r[0] for r in runs)
        user = statistics.median(r[1] for r in runs)
        system = statistics.median(r[2] for r in runs)
        print(f"| {name} | {rps:,.0f} | {user:.1f} | {system:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
