"""`pygw serve --workers N`: N worker processes on one port, watched by a supervisor.

Each worker is a full gateway (pygw/server.py in worker mode) with its own listening socket on the
shared port (SO_REUSEPORT: the kernel spreads new connections over the workers' accept queues).
The supervisor holds the port (a bound, never-listening SO_REUSEPORT socket: the port chosen for
`--listen HOST:0` stays the workers' while they restart), restarts a worker that dies, forwards
SIGTERM (every worker drains; exit 0 once all have) and SIGHUP (the config is validated here once,
then every worker reloads it), and serves the public admin API: `/health`, `/metrics` (the
workers' metrics summed), `/routes`, `POST /reload`, `GET /workers` and the WebSocket
connections API (`/@connections/{id}`, forwarded to the worker whose index the id carries).

Workers serve their own admin API on unix sockets in a private temporary folder; the supervisor
talks to them there, so N admin listeners never clash on a port. Each worker is told its index
and every worker's socket, so a worker reaches a sibling's WebSocket connections there too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from pygw.admin import AdminServer
from pygw.admin_auth import bearer_matches
from pygw.admin_backend import FaultsChange
from pygw.config.load import ConfigError, LoadedConfig, load_config
from pygw.config.model import FaultsConfig
from pygw.fault_control import RouteName
from pygw.listen import format_listen, parse_listen
from pygw.observe.dashboard import ReloadHistory, families_of
from pygw.websocket.connections import (
    DEFAULT_MAX_POST_BYTES,
    join_workers,
    management_error,
    worker_of,
)

log = logging.getLogger("pygw.supervisor")

_READY_TIMEOUT_S = 30.0
_WORKER_CALL_TIMEOUT_S = 10.0
# A worker that dies sooner than this after its start is restarted after a growing pause, so a
# worker that cannot start does not spin the machine.
_STABLE_AFTER_S = 5.0
_MAX_BACKOFF_S = 5.0


def serve(
    config_path: Path,
    listen: str | None = None,
    workers: int | None = None,
    keep_faults: bool = False,
    watch: bool = False,
) -> int:
    """The `pygw serve` entry point: one process unless more than one worker is asked for.
    `watch` reloads when the config's folder or its python_path folders change."""
    import uvloop

    from pygw.server import run_gateway

    try:
        loaded = load_config(config_path)
    except ConfigError as failure:
        print(str(failure), flush=True)
        return 1
    count = workers if workers is not None else loaded.config.server.workers
    if count <= 1:
        paths: list[Path] = []
        if watch:
            paths = [loaded.folder, *(loaded.resolve(p) for p in loaded.config.python_path)]
        single: int = uvloop.run(
            run_gateway(config_path, listen, watch=paths, keep_faults=keep_faults)
        )
        return single
    if watch:
        print(
            "pygw serve: --watch runs one process; drop --workers (or server.workers) to use it",
            flush=True,
        )
        return 2
    supervisor = Supervisor(config_path, loaded, listen, count, keep_faults)
    supervised: int = uvloop.run(supervisor.run())
    return supervised


class StartupError(Exception):
    pass


@dataclass(slots=True)
class Worker:
    index: int
    admin_socket: str
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0  # time.time() of the current process's start
    restarts: int = 0
    ready: bool = False
    fast_failures: int = 0
    last_exit: int | None = None  # exit status of the previous process (negative: signal)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def describe(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pid": self.pid,
            "started": self.started,
            "uptime_s": round(time.time() - self.started, 3) if self.started else 0.0,
            "restarts": self.restarts,
            "ready": self.ready and self.alive(),
            "last_exit": self.last_exit,
        }


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (but never listen on) HOST:PORT with SO_REUSEPORT: it fixes the port for `:0`
    and keeps anyone outside the workers' reuse-port group off it while workers restart."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # asyncio's create_server does the same for the workers' sockets.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class Supervisor:
    def __init__(
        self,
        config_path: Path,
        loaded: LoadedConfig,
        listen: str | None,
        workers: int,
        keep_faults: bool = False,
    ) -> None:
        self.config_path = config_path.resolve()
        self.loaded = loaded
        self._listen = listen or loaded.config.server.listen
        self._count = workers
        self._folder = ""
        self.workers: list[Worker] = []
        self._reservation: socket.socket | None = None
        self._worker_listen = ""
        self._stopping = asyncio.Event()
        self._serving = False
        self._reload_lock = asyncio.Lock()
        self.reload_history = ReloadHistory()
        # Reloads the supervisor refused or saw fail: a config it refuses never reaches a worker,
        # so the workers' pygw_config_reloads_total would not show it.
        self._reloads = {"ok": 0, "error": 0}
        self._keepers: list[asyncio.Task[None]] = []
        self._admin: AdminServer | None = None
        # Pooled clients of the workers' admin sockets for the connections API (one per worker).
        self._connection_clients: dict[int, aiohttp.ClientSession] = {}
        self.shown = ""
        # Faults set through the admin API, by route: (path, body) of the PUT that set them,
        # sent again to a worker that restarts.
        self._keep_faults = keep_faults
        self._faults: dict[tuple[str, str, str], tuple[str, bytes]] = {}

    # -- life cycle -------------------------------------------------------------------------

    async def run(self) -> int:
        listen = parse_listen(self._listen)
        if isinstance(listen, str):
            print(
                f"{self.config_path}: server.listen: unix:{listen} cannot be shared by "
                f"{self._count} workers (SO_REUSEPORT is for TCP ports: listen on HOST:PORT, "
                "or run one worker)",
                flush=True,
            )
            return 1
        host, port = listen
        try:
            self._reservation = reserve_port(host, port)
        except OSError as failure:
            print(f"cannot listen on {self._listen}: {failure}", flush=True)
            return 1
        port = self._reservation.getsockname()[1]
        self._worker_listen = format_listen(host, port)
        scheme = "https" if self.loaded.config.server.tls is not None else "http"
        self.shown = f"{scheme}://{self._worker_listen}"
        self._folder = tempfile.mkdtemp(prefix="pygw-workers-")
        os.chmod(self._folder, 0o700)
        self.workers = [
            Worker(index, os.path.join(self._folder, f"worker-{index}.sock"))
            for index in range(self._count)
        ]
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        try:
            try:
                await self._start_workers()
                admin_shown = await self._start_admin()
            except StartupError as failure:
                print(f"pygw could not start its workers: {failure}", flush=True)
                await self._stop_workers()
                return 1
            self._serving = True
            self._keepers = [
                loop.create_task(self._keep(worker), name=f"pygw-worker-{worker.index}")
                for worker in self.workers
            ]
            print(f"pygw listening on {self.shown} (admin {admin_shown})", flush=True)
            log.info(
                "supervising %d workers: %s",
                self._count,
                ", ".join(str(worker.pid) for worker in self.workers),
            )
            await self._stopping.wait()
            clean = await self._stop_workers()
            log.info("pygw stopped")
            return 0 if clean else 1
        finally:
            await self._close()

    def request_stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def _close(self) -> None:
        for keeper in self._keepers:
            keeper.cancel()
        for client in self._connection_clients.values():
            await client.close()
        self._connection_clients.clear()
        if self._admin is not None:
            await self._admin.stop()
        if self._reservation is not None:
            self._reservation.close()
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)

    async def _start_admin(self) -> str:
        admin = self.loaded.config.admin
        self._admin = AdminServer(SupervisorBackend(self, admin.token), admin.listen, admin.token)
        try:
            shown: str = await self._admin.start()
        except OSError as failure:
            raise StartupError(f"admin listener {admin.listen}: {failure}") from failure
        return shown

    async def _start_workers(self) -> None:
        for worker in self.workers:
            await self._spawn(worker)
        results = await asyncio.gather(
            *(self._wait_ready(worker) for worker in self.workers), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise StartupError(str(result))

    async def _spawn(self, worker: Worker) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(worker.admin_socket)
        worker.ready = False
        worker.started = time.time()
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pygw.supervisor",
            "-c",
            str(self.config_path),
            "--listen",
            self._worker_listen,
            "--admin",
            f"unix:{worker.admin_socket}",
            "--parent",
            str(os.getpid()),
            "--index",
            str(worker.index),
            *(("--keep-faults",) if self._keep_faults else ()),
            # Connection ids have one byte for the worker's index.
            *(f"--peer={peer.admin_socket}" for peer in self.workers if len(self.workers) <= 256),
        )

    async def _wait_ready(self, worker: Worker) -> None:
        """A worker is ready when its admin answers /health: it binds traffic first."""
        process = worker.process
        if process is None:
            raise StartupError(f"worker {worker.index} was not started")
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise StartupError(
                    f"worker {worker.index} (pid {process.pid}) exited with {process.returncode}"
                )
            try:
                status, _ = await self.worker_call(worker, "GET", "/health", timeout_s=2.0)
            except (aiohttp.ClientError, OSError, TimeoutError):
                status = 0
            if status == 200:
                worker.ready = True
                return
            await asyncio.sleep(0.05)
        raise StartupError(f"worker {worker.index} (pid {process.pid}) was not ready in time")

    async def _keep(self, worker: Worker) -> None:
        """Restart the worker whenever it dies, until the supervisor stops."""
        while True:
            process = worker.process
            if process is None:
                return
            code = await process.wait()
            worker.ready = False
            worker.last_exit = code
            if self.stopping:
                return
            lived = time.time() - worker.started
            worker.fast_failures = worker.fast_failures + 1 if lived < _STABLE_AFTER_S else 0
            log.warning(
                "worker %d (pid %d) exited with %d after %.1fs; restarting it",
                worker.index,
                process.pid,
                code,
                lived,
            )
            if worker.fast_failures > 1:
                pause = min(0.1 * 2 ** (worker.fast_failures - 1), _MAX_BACKOFF_S)
                try:
                    await asyncio.wait_for(self._stopping.wait(), pause)
                    return
                except TimeoutError:
                    pass
            worker.restarts += 1
            await self._spawn(worker)
            if self._stopping.is_set() and worker.process is not None:
                # SIGTERM came while this worker was being started: the drain has already
                # signalled the others, and its parent watch covers the rest.
                worker.process.send_signal(signal.SIGTERM)
                return
            try:
                await self._wait_ready(worker)
            except StartupError as failure:
                log.error("restarted worker %d is not ready: %s", worker.index, failure)
                if worker.alive() and worker.process is not None:
                    worker.process.kill()
            else:
                log.info("worker %d restarted as pid %s", worker.index, worker.pid)
                await self._restore_faults(worker)

    async def _stop_workers(self) -> bool:
        """SIGTERM every worker (each drains), wait for all; True when all exited cleanly."""
        self._stopping.set()
        drain_s = self.loaded.config.server.drain_timeout_s
        live = [worker for worker in self.workers if worker.alive()]
        for worker in live:
            if worker.process is not None:
                worker.process.send_signal(signal.SIGTERM)
        clean = True
        for worker in live:
            process = worker.process
            if process is None:
                continue
            try:
                code = await asyncio.wait_for(process.wait(), drain_s + 10.0)
            except TimeoutError:
                log.error(
                    "worker %d (pid %d) did not drain in time, killed", worker.index, process.pid
                )
                process.kill()
                code = await process.wait()
            if code not in (0, -signal.SIGTERM):
                clean = False
        return clean

    # -- what the admin API asks ------------------------------------------------------------

    def ready_workers(self) -> list[Worker]:
        return [worker for worker in self.workers if worker.ready and worker.alive()]

    def describe(self) -> list[dict[str, Any]]:
        return [worker.describe() for worker in self.workers]

    async def worker_call(
        self,
        worker: Worker,
        method: str,
        path: str,
        timeout_s: float = _WORKER_CALL_TIMEOUT_S,
        body: bytes | None = None,
    ) -> tuple[int, bytes]:
        connector = aiohttp.UnixConnector(path=worker.admin_socket)
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as session,
            session.request(method, f"http://worker{path}", data=body) as response,
        ):
            return response.status, await response.read()

    async def set_faults(
        self, name: tuple[str, str, str], method: str, path: str, body: bytes
    ) -> list[tuple[int, str]]:
        """A faults PUT or DELETE sent to every ready worker: (status, detail) of each."""
        answers = await self._forward(self.ready_workers(), method, path, body)
        if answers and all(status == 200 for status, _ in answers):
            if method == "PUT":
                self._faults[name] = (path, body)
            else:
                self._faults.pop(name, None)
        return answers

    async def _restore_faults(self, worker: Worker) -> None:
        for path, body in list(self._faults.values()):
            [(status, detail)] = await self._forward([worker], "PUT", path, body)
            if status != 200:
                log.warning("worker %d refused faults %s: %s", worker.index, path, detail)

    async def _forward(
        self, workers: list[Worker], method: str, path: str, body: bytes
    ) -> list[tuple[int, str]]:
        """(status, detail) of each worker's answer to one faults call."""
        answers = await asyncio.gather(
            *(self.worker_call(worker, method, path, body=body or None) for worker in workers),
            return_exceptions=True,
        )
        results: list[tuple[int, str]] = []
        for answer in answers:
            if isinstance(answer, BaseException):
                results.append((0, str(answer) or type(answer).__name__))
            else:
                status, payload = answer
                results.append((status, payload.decode("utf-8", "replace")[:200]))
        return results

    def connection_post_limit(self) -> int:
        """The largest message a backend may post: the biggest `max_message_bytes` of the
        config's WebSocket APIs (each worker checks the connection's own limit)."""
        limits = [
            api.websocket.max_message_bytes
            for api in self.loaded.config.apis
            if api.type == "websocket"
        ]
        return max(limits, default=DEFAULT_MAX_POST_BYTES)

    async def connection_call(
        self, method: str, connection_id: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        """`/@connections/{id}` answered by the worker holding the connection; None when that
        worker is not serving (its connections ended with its process: the caller says 410)."""
        index = worker_of(connection_id)
        if index is None or index >= len(self.workers):
            return None
        worker = self.workers[index]
        if not worker.ready or not worker.alive():
            return None
        client = self._connection_clients.get(index)
        if client is None or client.closed:
            # force_close: a restarted worker listens on the same path, and a pooled connection
            # to its predecessor would fail the next call.
            client = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=worker.admin_socket, force_close=True),
                timeout=aiohttp.ClientTimeout(total=_WORKER_CALL_TIMEOUT_S),
            )
            self._connection_clients[index] = client
        try:
            async with client.request(
                method, f"http://worker/@connections/{connection_id}", data=body or None
            ) as response:
                headers = {
                    name: value
                    for name in ("Content-Type", "x-amzn-ErrorType", "Allow")
                    if (value := response.headers.get(name)) is not None
                }
                return response.status, headers, await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as failed:
            if not worker.alive():
                return None
            log.warning("worker %d did not answer /@connections: %s", worker.index, failed)
            raise

    async def metrics(self) -> bytes:
        """Every ready worker's `/metrics`, summed sample by sample, plus the supervisor's own."""
        workers = self.ready_workers()
        answers = await asyncio.gather(
            *(self.worker_call(worker, "GET", "/metrics") for worker in workers),
            return_exceptions=True,
        )
        texts: list[str] = []
        for worker, answer in zip(workers, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("metrics of worker %d unavailable: %s", worker.index, answer)
                continue
            status, body = answer
            if status == 200:
                texts.append(body.decode())
        return merge_metrics(texts, self._own_metrics())

    def _own_metrics(self) -> list[Metric]:
        up = Metric("pygw_workers", "Worker processes serving traffic.", "gauge")
        up.add_sample("pygw_workers", {}, float(len(self.ready_workers())))
        restarts = Metric("pygw_worker_restarts", "Workers restarted after they died.", "counter")
        for worker in self.workers:
            restarts.add_sample(
                "pygw_worker_restarts_total", {"worker": str(worker.index)}, float(worker.restarts)
            )
        reloads = Metric(
            "pygw_supervisor_reloads",
            "Config reloads through the supervisor, by result.",
            "counter",
        )
        for result, count in self._reloads.items():
            reloads.add_sample("pygw_supervisor_reloads_total", {"result": result}, float(count))
        return [up, restarts, reloads]

    async def reload(self) -> tuple[bool, dict[str, Any]]:
        """Validate the config once here; when it is sound, every worker reloads it."""
        from pygw.observe.metrics import Metrics
        from pygw.runtime import compile_runtime

        async with self._reload_lock:
            try:
                loaded = load_config(self.config_path)
                trial = compile_runtime(loaded, Metrics())
            except ConfigError as failure:
                log.error("reload refused, workers keep the previous config:\n%s", failure)
                self.reload_history.record(False, str(failure))
                self._reloads["error"] += 1
                return False, {"reloaded": False, "errors": str(failure).splitlines()}
            summary = trial.summary()
            await trial.close()
            config = loaded.config
            if config.server.workers != self.loaded.config.server.workers:
                log.warning("server.workers changed: restart pygw to apply it")
            if config.server.listen != self.loaded.config.server.listen:
                log.warning("server.listen changed: restart pygw to apply it")
            self.loaded = loaded
            if not self._keep_faults:
                # The workers drop the faults set at run time as they reload; so does the list
                # a restarted worker is given.
                self._faults.clear()
            workers = self.ready_workers()
            answers = await asyncio.gather(
                *(self.worker_call(worker, "POST", "/reload") for worker in workers),
                return_exceptions=True,
            )
            results: list[dict[str, Any]] = []
            ok = True
            for worker, answer in zip(workers, answers, strict=True):
                if isinstance(answer, BaseException):
                    ok = False
                    results.append(
                        {"worker": worker.index, "pid": worker.pid, "error": str(answer)}
                    )
                    continue
                status, _ = answer
                ok = ok and status == 200
                results.append(
                    {"worker": worker.index, "pid": worker.pid, "reloaded": status == 200}
                )
            if ok:
                log.info("config reloaded in %d workers: %s", len(workers), summary)
                self.reload_history.record(True, summary)
                self._reloads["ok"] += 1
            else:
                log.error("config reload failed in some workers: %s", results)
                failed = [str(r) for r in results if not r.get("reloaded")]
                self.reload_history.record(False, "\n".join(failed))
                self._reloads["error"] += 1
            return ok, {"reloaded": ok, "summary": summary, "workers": results}


class SupervisorBackend:
    """The public admin API of `pygw serve --workers N` (pygw.admin_backend.AdminBackend).

    /health is 200 only while every worker is up (503 while one restarts or during the drain),
    /metrics sums the workers' metrics, /routes and GET /faults ask one worker (all serve the
    same config), POST /reload validates the config once and then reloads every worker, GET
    /workers lists them (index, pid, started, restarts, ready), and `/@connections/{id}` is
    answered by the worker holding the WebSocket connection (its index is in the id)."""

    lists_workers = True

    def __init__(self, supervisor: Supervisor, token: str) -> None:
        self._supervisor = supervisor
        # The admin listener's token, as it was when the listener started.
        self._token = token

    async def health(self) -> tuple[int, dict[str, Any]]:
        supervisor = self._supervisor
        ready = len(supervisor.ready_workers())
        wanted = len(supervisor.workers)
        if supervisor.stopping:
            return 503, {"status": "draining", "workers": ready, "wanted": wanted}
        if ready < wanted:
            return 503, {"status": "degraded", "workers": ready, "wanted": wanted}
        return 200, {"status": "ok", "workers": ready, "wanted": wanted}

    async def metrics_text(self) -> bytes:
        return await self._supervisor.metrics()

    async def metric_families(self) -> Iterable[Metric]:
        return families_of(await self._supervisor.metrics())

    async def _ask_one(self, path: str) -> bytes | None:
        """The first ready worker's 200 answer to GET `path`."""
        supervisor = self._supervisor
        for worker in supervisor.ready_workers():
            try:
                status, body = await supervisor.worker_call(worker, "GET", path)
            except (aiohttp.ClientError, OSError, TimeoutError):
                continue
            if status == 200:
                return body
        return None

    async def route_table(self) -> list[dict[str, Any]] | None:
        found = await self._ask_one("/routes")
        if found is None:
            return None
        rows: list[dict[str, Any]] = orjson.loads(found)
        return rows

    async def reload(self) -> tuple[bool, dict[str, Any]]:
        return await self._supervisor.reload()

    def reloads(self) -> list[dict[str, Any]]:
        return self._supervisor.reload_history.recent()

    async def connections(self, request: web.Request) -> web.StreamResponse:
        if self._token and not bearer_matches(request.headers.get("Authorization"), self._token):
            return management_error(401, "Unauthorized", "UnauthorizedException")
        method = request.method
        if method not in ("GET", "POST", "DELETE"):
            return management_error(405, "Method Not Allowed", None, {"Allow": "GET, POST, DELETE"})
        body = b""
        if method == "POST":
            # The worker checks the connection's own limit; this bounds what is read here.
            limit = self._supervisor.connection_post_limit()
            if request.content_length is not None and request.content_length > limit:
                return management_error(413, "Message too long", "PayloadTooLargeException")
            body = await request.content.read(limit + 1)
            if len(body) > limit:
                return management_error(413, "Message too long", "PayloadTooLargeException")
        connection_id = request.match_info["connection_id"]
        try:
            answer = await self._supervisor.connection_call(method, connection_id, body)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return management_error(503, "Service Unavailable", None)
        if answer is None:
            return management_error(410, "Gone", "GoneException")
        status, headers, payload = answer
        return web.Response(status=status, body=payload or None, headers=headers)

    async def fault_listing(self) -> list[dict[str, Any]] | None:
        # Every worker holds the same faults: one answers for all.
        found = await self._ask_one("/faults")
        if found is None:
            return None
        listing: list[dict[str, Any]] = orjson.loads(found)["faults"]
        return listing

    async def change_faults(
        self, name: RouteName, faults: FaultsConfig | None, path: str, body: bytes
    ) -> FaultsChange:
        method = "PUT" if faults is not None else "DELETE"
        answers = await self._supervisor.set_faults(name, method, path, body)
        if any(status == 404 for status, _ in answers):
            return FaultsChange(found=False)
        failed = [answer for answer in answers if answer[0] != 200]
        if failed or not answers:
            return FaultsChange(found=True, failed=failed)
        return FaultsChange(found=True, workers=len(answers))

    def workers(self) -> list[dict[str, Any]]:
        return self._supervisor.describe()


def _merge_key(name: str, labels: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def merge_metrics(texts: Iterable[str], extra: Iterable[Metric] = ()) -> bytes:
    """Prometheus text from several processes → one exposition where samples with equal names and
    labels are summed (counters, gauges, histogram buckets, sums and counts). `*_created`
    timestamps keep the earliest value: a sum of creation times means nothing."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = Metric(family.name, family.documentation, family.type, family.unit)
                families[family.name] = merged
                values[family.name] = {}
            sums = values[family.name]
            for sample in family.samples:
                key = _merge_key(sample.name, sample.labels)
                seen = sums.get(key)
                if seen is None:
                    sums[key] = sample.value
                elif sample.name.endswith("_created"):
                    sums[key] = min(seen, sample.value)
                else:
                    sums[key] = seen + sample.value
    for name, merged in families.items():
        for (sample_name, labels), value in values[name].items():
            merged.add_sample(sample_name, dict(labels), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([*families.values(), *extra]))
    return generate_latest(registry)


class _Fixed:
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


def _worker_main(argv: list[str] | None = None) -> int:
    """One worker: `python -m pygw.supervisor -c CONFIG --listen H:P --admin unix:S --parent PID`.
    Started by the supervisor only."""
    import uvloop

    from pygw.server import WorkerOptions, run_gateway

    parser = argparse.ArgumentParser(prog="pygw-worker")
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--admin", required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--keep-faults", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    if args.peer:
        join_workers(args.index, args.peer)
    options = WorkerOptions(admin_listen=args.admin, parent_pid=args.parent)
    code: int = uvloop.run(
        run_gateway(Path(args.config), args.listen, options, keep_faults=args.keep_faults)
    )
    return code


if __name__ == "__main__":
    sys.exit(_worker_main())
