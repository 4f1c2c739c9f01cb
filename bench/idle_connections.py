"""Memory per idle keep-alive connection: the gateway's RSS before and after N clients each made
one request and then stayed connected.

    .venv/bin/python bench/idle_connections.py [--connections 10000] [--json OUT]

The gateway serves a mock route (no upstream), pinned to nothing; the clients are plain sockets in
this process, so the file-descriptor limit (`ulimit -n`) must allow N plus a margin on both sides
(the script raises its own soft limit to the hard one; `pygw serve` does the same). Everything is
on 127.0.0.1; the gateway is stopped by its pid at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `bench` importable
    sys.path.insert(0, str(ROOT))

from bench import proxy_bench  # noqa: E402

CONFIG = """
server:
  listen: 127.0.0.1:%(port)d
  limits: {idle_timeout_s: 600, header_timeout_s: 600}
admin: {listen: 127.0.0.1:%(admin)d}
access_log: null
apis:
  - name: idle
    type: http
    routes:
      "GET /ping":
        integration: {type: mock, status: 200, body: {ok: true}}
"""
REQUEST = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_idle(port: int, count: int) -> list[socket.socket]:
    """`count` connections, each having had one answer, left open."""
    opened: list[socket.socket] = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(REQUEST)
        got = b""
        while b'{"ok":true}' not in got:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError("the gateway closed a connection it should keep")
            got += chunk
        opened.append(sock)
    return opened


def wait_serving(exited: Callable[[], int | None], port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and exited() is None:
        try:
            open_idle(port, 1)[0].close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the gateway did not start serving")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 100:
        print(f"the file-descriptor limit ({hard}) is below {args.connections + 100}", flush=True)
        return 2
    procs = proxy_bench.Processes()
    with tempfile.TemporaryDirectory(prefix="pygw-idle-") as tmp_name:
        tmp = Path(tmp_name)
        port, admin = proxy_bench.free_port(), proxy_bench.free_port()
        conf = tmp / "idle.yaml"
        conf.write_text(CONFIG % {"port": port, "admin": admin})
        try:
            child = procs.start(
                "pygw", [sys.executable, "-m", "pygw", "serve", "-c", str(conf)], tmp / "out.log"
            )
            wait_serving(child.proc.poll, port)
            warm = open_idle(port, 100)  # imports, first-request allocations
            for sock in warm:
                sock.close()
            time.sleep(0.5)
            pid = child.proc.pid
            before = rss_kib(pid)
            held = open_idle(port, args.connections)
            # Idle connections shed their serving task after a second or two (pygw/http1.py).
            time.sleep(3.0)
            after = rss_kib(pid)
            per_connection = (after - before) * 1024 / args.connections
            print(
                f"{args.connections} idle keep-alive connections: RSS {before / 1024:.1f} MiB -> "
                f"{after / 1024:.1f} MiB, {per_connection / 1024:.2f} KiB per connection",
                flush=True,
            )
            for sock in held:
                sock.close()
            if args.json is not None:
                args.json.write_text(
                    json.dumps(
                        {
                            "connections": args.connections,
                            "rss_before_kib": before,
                            "rss_after_kib": after,
                            "bytes_per_connection": per_connection,
                        },
                        indent=2,
                    )
                )
        finally:
            procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
