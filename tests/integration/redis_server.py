"""A private `redis-server` on 127.0.0.1 for tests: a free port, no persistence, stopped by pid.

`running_redis()` skips the test when `redis-server` is not on PATH; `running_redis_cluster()`
starts three of them as a Redis Cluster. `RedisServer.stop()` and
`.start()` let a test take Redis away and bring it back on the same port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

_START_TIMEOUT_S = 10.0
# No persistence: a restarted server starts empty, as after losing Redis.
_ARGS = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    binary: str
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.process is not None:
            return
        self.process = subprocess.Popen(
            [self.binary, *_ARGS, "--port", str(self.port), *self.extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _answers_ping(self.port):
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                self.process = None
                raise RuntimeError(f"redis-server exited on port {self.port}: {err.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()  # by pid: only the server this helper started
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stderr is not None:
            process.stderr.close()


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH (apt-get install redis-server)")
    last: Exception | None = None
    for _ in range(3):  # another process may take the free port before the server binds it
        server = RedisServer(binary, _free_port())
        try:
            server.start()
        except RuntimeError as exc:
            last = exc
            continue
        try:
            yield server
        finally:
            server.stop()
        return
    raise RuntimeError(f"could not start redis-server: {last}")


@dataclass
class RedisCluster:
    """Three primaries on 127.0.0.1 sharing the 16 384 slots, no replicas."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return self.nodes[0].url


def _cluster_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"CLUSTER INFO\r\n")
            return b"cluster_state:ok" in s.recv(4096)
    except OSError:
        return False


@contextmanager
def running_redis_cluster(workdir: str) -> Iterator[RedisCluster]:
    """A real three-node Redis Cluster made with `redis-cli --cluster create`; skips without
    redis-server or redis-cli. `workdir` holds the nodes' cluster files."""
    binary = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    if binary is None or cli is None:
        pytest.skip("redis-server and redis-cli are needed (apt-get install redis-server)")
    nodes: list[RedisServer] = []
    try:
        for i in range(3):
            extra = (
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"{workdir}/nodes-{i}.conf",
                "--cluster-node-timeout",
                "2000",
                # The default bus port (port + 10 000) is out of range for high free ports.
                "--cluster-port",
                str(_free_port()),
            )
            node = RedisServer(binary, _free_port(), extra_args=extra)
            node.start()
            nodes.append(node)
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not all(_cluster_ok(n.port) for n in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the redis cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        yield RedisCluster(nodes)
    finally:
        for node in nodes:
            node.stop()
