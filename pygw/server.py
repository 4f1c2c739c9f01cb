"""Listeners, signals, graceful drain and reload around the Dispatcher.

With `--workers N` (N > 1) each worker process runs one Gateway in worker mode (`WorkerOptions`):
it shares the traffic port through SO_REUSEPORT, serves its admin API on a private address that
only the supervisor (pygw/supervisor.py) talks to, and tags its responses with `x-pygw-worker`.

Connections are pygw's own HTTP/1.1 protocol (pygw/http1.py), which enforces the limits of
`server.limits`; WebSocket handshakes are handed to an aiohttp low-level server (`_upgrade`).
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import resource
import signal
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.metrics_core import Metric

from pygw.admin import AdminServer
from pygw.admin_backend import FaultsChange
from pygw.config.load import ConfigError, LoadedConfig, load_config
from pygw.config.model import FaultsConfig, GatewayConfig
from pygw.dispatch import Dispatcher, refusal_response
from pygw.fault_control import FaultControl, RouteName
from pygw.http1 import ConnectionLimits, Http1Server
from pygw.http2 import Http2Connection
from pygw.listen import parse_listen
from pygw.observe.access_log import AccessLog, compile_format
from pygw.observe.dashboard import ReloadHistory
from pygw.observe.metrics import Metrics
from pygw.observe.telemetry import Telemetry
from pygw.request import Request
from pygw.response import Response, UpgradedResponse
from pygw.runtime import Runtime, compile_runtime
from pygw.serving import ServeLean, ServeNow
from pygw.state.redis_throttle import close_pools
from pygw.tls import RedirectListener, TlsListener
from pygw.websocket.connections import ConnectionRegistry

log = logging.getLogger("pygw")


def settle_heap() -> None:
    """Moves what is alive now (modules, the compiled config) out of the garbage collector's
    sight, after collecting what is already garbage.

    A process serving requests holds some 190 000 tracked objects from its imports and config,
    and every full collection scanned all of them: with a response cache filling up, objects
    that survive a request (entries on their way to being untracked, connections, buffers)
    trigger full collections often, and a cache miss spent several microseconds of its cost in
    them. Frozen objects are still freed by reference counting; the collector no longer looks
    for cycles among them, which is why this runs again once a reload's retired snapshot is
    gone (unfreezing first, so its cycles are collected)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def upgrade_server(
    handler: Callable[[Request], Awaitable[Response]],
    max_header_bytes: int = 16_384,
    worker_id: str | None = None,
) -> web.Server:
    """An aiohttp low-level server for the connections pygw's protocol hands over with a
    WebSocket handshake: the handshake goes through `handler` like any request, and aiohttp's
    WebSocket machinery runs the session an integration opens."""

    async def upgrade(handshake: web.BaseRequest) -> web.StreamResponse:
        response = await handler(Request.from_aiohttp(handshake))
        if isinstance(response, UpgradedResponse) and isinstance(
            response.websocket, web.StreamResponse
        ):
            return response.websocket
        answer = web.Response(
            status=response.status,
            reason=response.reason,
            body=response.body,
            headers=response.headers,
        )
        if worker_id is not None:
            answer.headers["x-pygw-worker"] = worker_id
        return answer

    return web.Server(
        upgrade,
        access_log=None,
        # A session ends by itself when its connection is lost (the reader sees it); cancelling
        # it instead would cut short the close frame aiohttp sends after a protocol error.
        handler_cancellation=False,
        max_field_size=max_header_bytes,
        max_line_size=max_header_bytes,
    )


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a supervised worker differs from a standalone gateway."""

    admin_listen: str  # private admin address the supervisor scrapes (unix:/path)
    parent_pid: int  # the supervisor: a worker whose parent is gone stops serving


class Gateway:
    """The running gateway: one config path, one live Runtime, swapped atomically on reload."""

    def __init__(
        self,
        config_path: Path,
        listen: str | None = None,
        worker: WorkerOptions | None = None,
        loader: Callable[[], LoadedConfig] | None = None,
        watch: Sequence[Path] = (),
        keep_faults: bool = False,
    ) -> None:
        self.config_path = config_path
        self._watch_paths = tuple(watch)
        # Faults set through the admin API; kept across reloads only with --keep-faults.
        self.faults = FaultControl(keep=keep_faults)
        # `serve --openapi` loads by importing a definition; everything else reads the YAML.
        self._load: Callable[[], LoadedConfig] = loader or (lambda: load_config(config_path))
        self._listen_override = listen
        self._worker = worker
        self.metrics = Metrics()
        self.reload_history = ReloadHistory()
        self._retiring: asyncio.Task[None] | None = None
        # WebSocket connections outlive config snapshots: a reload keeps clients connected.
        self.connections = ConnectionRegistry(on_count=self.metrics.websocket_connections.set)
        self.connections.install()
        self.metrics.upstreams = self._upstream_states
        self._dispatcher: Dispatcher | None = None
        self._server: asyncio.AbstractServer | None = None
        self._http: Http1Server | None = None
        self._upgrades: web.Server | None = None
        self._admin: AdminServer | None = None
        self._access_log: AccessLog | None = None
        self._telemetry: Telemetry | None = None
        self._stopping = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.bound: tuple[str, int] | str | None = None
        # "pygw listening on ..." once started (a worker, announced by its supervisor, has none).
        self.ready_line: str | None = None
        self._tls: TlsListener | None = None
        self.redirect: RedirectListener | None = None

    def _upstream_states(self) -> list[tuple[str, bool, int]]:
        dispatcher = self._dispatcher
        return dispatcher.runtime.upstream_states() if dispatcher is not None else []

    @property
    def runtime(self) -> Runtime:
        if self._dispatcher is None:
            raise RuntimeError("gateway not started")
        return self._dispatcher.runtime

    async def start(self, announce: bool = True) -> None:
        loaded = self._load()
        runtime = compile_runtime(loaded, self.metrics, self.connections, self._listen_override)
        runtime.attach_shared_state()
        config = loaded.config
        limits = config.server.limits
        if config.access_log is not None:
            self._access_log = AccessLog(
                config.access_log.path, formatter=compile_format(config.access_log.format)
            )
            self.connections.access_log = self._access_log  # WebSocket event lines
        if config.telemetry is not None:
            traces = config.telemetry
            self._telemetry = Telemetry(
                traces.otlp_endpoint,
                traces.sample_ratio,
                traces.service_name,
                lambda reason, count: self.metrics.spans_dropped.labels(reason).inc(count),
                max_queue=traces.max_queue,
                export_timeout_s=traces.export_timeout_s,
            )
        worker = self._worker
        self._dispatcher = Dispatcher(
            runtime,
            self._access_log,
            str(os.getpid()) if worker is not None else None,
            self._telemetry,
        )
        handler: Callable[[Request], Awaitable[Response]] = self._dispatcher
        serve_now: ServeNow = self._dispatcher.serve_now
        if runtime.tls is not None:
            self._tls = TlsListener(runtime.tls)
            handler = self._tls.guard(handler, refusal_response)
            serve_now = self._tls.guard_now(serve_now, refusal_response)
        # WebSocket handshakes (a WebSocket API's, a pass-through route's) are handed with their
        # connection to aiohttp's server, whose WebSocket machinery runs the session.
        self._upgrades = upgrade_server(
            handler, limits.max_header_bytes, str(os.getpid()) if worker else None
        )
        self._http = Http1Server(
            handler,
            ConnectionLimits(
                max_header_bytes=limits.max_header_bytes,
                max_header_count=limits.max_header_count,
                max_body_bytes=limits.max_body_bytes,
                header_timeout_s=limits.header_timeout_s,
                idle_timeout_s=limits.idle_timeout_s,
                body_timeout_s=limits.body_timeout_s,
                request_buffer_bytes=limits.request_buffer_bytes,
                allow_underscores=limits.allow_underscores_in_headers,
                max_concurrent_streams=limits.max_concurrent_streams,
                trusted_proxies=tuple(
                    ipaddress.ip_network(cidr, strict=False)
                    for cidr in config.server.trusted_proxies
                ),
            ),
            refusal_response,
            upgrade=self._upgrades,
            extra_head=self._extra_head(config),
            scheme="https" if self._tls is not None else "http",
            serve_now=serve_now,
            serve_lean=self._serve_lean(),
        )
        loop = asyncio.get_running_loop()
        listen = parse_listen(self._listen_override or config.server.listen)
        factory: Callable[[], asyncio.Protocol] = self._http
        tls_options: dict[str, Any] = {}
        if self._tls is not None:
            http = self._http

            def http2() -> asyncio.Protocol:
                return Http2Connection(http)

            offers_h2 = "h2" in self._tls.material.spec.alpn
            factory = self._tls.protocol_factory(http, http2 if offers_h2 else None)
            tls_options = {
                "ssl": self._tls.context,
                "ssl_handshake_timeout": limits.header_timeout_s,
            }
        reuse_port = worker is not None or config.server.workers > 1
        if isinstance(listen, str):
            self._server = await loop.create_unix_server(factory, listen, **tls_options)
            self.bound = listen
            shown = f"unix:{listen}"
        else:
            host, port = listen
            self._server = await loop.create_server(
                factory, host, port, reuse_port=reuse_port, backlog=1024, **tls_options
            )
            sock: socket.socket = self._server.sockets[0]
            self.bound = (host, sock.getsockname()[1])
            shown = f"{'https' if self._tls else 'http'}://{host}:{self.bound[1]}"
        if config.server.redirect_http is not None:
            redirect_at = parse_listen(config.server.redirect_http)
            assert not isinstance(redirect_at, str)  # the config refuses unix: here
            redirect_host, redirect_port = redirect_at
            self.redirect = await RedirectListener.start(
                redirect_host,
                redirect_port,
                self.bound[1] if isinstance(self.bound, tuple) else 443,
                self._http.limits,
                refusal_response,
                reuse_port,
            )
            redirect_shown = f"http://{redirect_host}:{self.redirect.port}"
            print(f"pygw redirecting {redirect_shown} to HTTPS", flush=True)
        if worker is not None:
            # The private admin needs no token: it is a unix socket in a folder only the
            # supervisor's user can enter.
            self._admin = AdminServer(GatewayBackend(self), worker.admin_listen, "")
            admin_shown = await self._admin.start()
            log.debug("worker %d serving on %s (admin %s)", os.getpid(), shown, admin_shown)
            return
        self.connections.admin_token = config.admin.token
        self._admin = AdminServer(GatewayBackend(self), config.admin.listen, config.admin.token)
        admin_shown = await self._admin.start()
        self.ready_line = f"pygw listening on {shown} (admin {admin_shown})"
        if announce:
            print(self.ready_line, flush=True)

    async def reload(self) -> tuple[bool, str]:
        """Compile the config anew and swap it in; on any error the old snapshot keeps serving."""
        async with self._reload_lock:
            try:
                loaded = self._load()
                fresh = compile_runtime(
                    loaded, self.metrics, self.connections, self._listen_override
                )
                fresh.attach_shared_state()
            except ConfigError as failure:
                self.metrics.config_reloads.labels("error").inc()
                self.reload_history.record(False, str(failure))
                log.error("reload refused, still serving the previous config:\n%s", failure)
                return False, str(failure)
            dispatcher = self._dispatcher
            if dispatcher is None:
                raise RuntimeError("gateway not started")
            retired = dispatcher.runtime
            self.faults.after_reload(fresh)
            dispatcher.runtime = fresh
            self._swap_certificates(fresh)
            if self._http is not None:
                self._http.extra_head = self._extra_head(loaded.config)
                self._http.serve_lean = self._serve_lean()
            self.metrics.config_reloads.labels("ok").inc()
            self.reload_history.record(True, fresh.summary())
            if self._worker is None:
                self.connections.admin_token = loaded.config.admin.token
            log.info("config reloaded: %s", fresh.summary())
            self._retiring = asyncio.get_running_loop().create_task(self._retire(retired))
            return True, fresh.summary()

    def _serve_lean(self) -> ServeLean | None:
        dispatcher = self._dispatcher
        if dispatcher is None or not dispatcher.lean_possible():
            return None
        # A TLS listener that asks for client certificates or forwards them guards every
        # request: none may skip its check.
        if self._tls is not None and self._tls.guards_requests():
            return None
        return dispatcher.serve_lean

    def _extra_head(self, config: GatewayConfig) -> bytes:
        """Lines every answer carries. A Server line, when configured, comes first: an answer
        with a Server header of its own drops it (pygw.response.without_server_line)."""
        extra_head = b""
        if config.server.server_header is not None:
            extra_head = f"Server: {config.server.server_header}\r\n".encode("ascii")
        if self._worker is not None:
            extra_head += f"x-pygw-worker: {os.getpid()}\r\n".encode("ascii")
        return extra_head

    def _swap_certificates(self, fresh: Runtime) -> None:
        if self._tls is not None and fresh.tls is not None:
            self._tls.swap(fresh.tls)
        elif (self._tls is None) != (fresh.tls is None):
            log.warning("server.tls was added or removed: that takes a restart to apply")

    async def _retire(self, retired: Runtime) -> None:
        await retired.close_when_idle()
        del retired
        settle_heap()

    def request_stop(self) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))

    async def serve_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        self.install_signal_handlers()
        watch: asyncio.Task[None] | None = None
        if self._worker is not None:
            watch = loop.create_task(self._watch_parent(self._worker.parent_pid))
        files: asyncio.Task[None] | None = None
        if self._watch_paths:
            from pygw.watch import watch_and_reload

            files = loop.create_task(
                watch_and_reload(self._watch_paths, self.reload, self._stopping)
            )
        await self._stopping.wait()
        if files is not None:
            files.cancel()
        if watch is not None:
            watch.cancel()
        await self.drain()

    async def _watch_parent(self, parent_pid: int) -> None:
        """A worker outliving its supervisor (killed with SIGKILL) would hold the port forever."""
        while os.getppid() == parent_pid:
            try:
                await asyncio.wait_for(self._stopping.wait(), 1.0)
                return
            except TimeoutError:
                pass
        log.warning("supervisor %d is gone, worker %d stops", parent_pid, os.getpid())
        self.request_stop()

    async def drain(self) -> None:
        """Refuse new connections, let requests in flight finish (up to drain_timeout_s)."""
        dispatcher = self._dispatcher
        timeout = dispatcher.runtime.config.server.drain_timeout_s if dispatcher else 10.0
        if self._server is not None:
            self._server.close()
        # Open websockets would otherwise hold the drain for its whole timeout.
        await self.connections.close_all()
        if self._http is not None:
            await self._http.shutdown(timeout)
        if self.redirect is not None:
            await self.redirect.stop(timeout)
        if self._upgrades is not None:
            await self._upgrades.shutdown(timeout)
        if self._admin is not None:
            await self._admin.stop()
        if dispatcher is not None:
            await dispatcher.runtime.close()
        await close_pools()
        if self._access_log is not None:
            self._access_log.close()
        telemetry, self._telemetry = self._telemetry, None
        if telemetry is not None:
            # The last spans go out, within the export timeout, without blocking the loop.
            await asyncio.to_thread(telemetry.close)
        log.info("pygw stopped")


class GatewayBackend:
    """The admin API of one gateway process (pygw.admin_backend.AdminBackend): a standalone
    gateway's public one, or a worker's private one that its supervisor calls."""

    lists_workers = False

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def health(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "ok", "routes": len(self._gateway.runtime.routes)}

    async def metrics_text(self) -> bytes:
        return self._gateway.metrics.render()

    async def metric_families(self) -> Iterable[Metric]:
        return self._gateway.metrics.registry.collect()

    async def route_table(self) -> list[dict[str, Any]] | None:
        return self._gateway.runtime.route_table()

    async def reload(self) -> tuple[bool, dict[str, Any]]:
        ok, detail = await self._gateway.reload()
        if ok:
            return True, {"reloaded": True, "summary": detail}
        return False, {"reloaded": False, "errors": detail.splitlines()}

    def reloads(self) -> list[dict[str, Any]]:
        return self._gateway.reload_history.recent()

    async def connections(self, request: web.Request) -> web.StreamResponse:
        return await self._gateway.connections.handle_admin(request)

    async def fault_listing(self) -> list[dict[str, Any]] | None:
        return self._gateway.faults.listing(self._gateway.runtime)

    async def change_faults(
        self, name: RouteName, faults: FaultsConfig | None, path: str, body: bytes
    ) -> FaultsChange:
        gateway = self._gateway
        if faults is None:
            return FaultsChange(found=gateway.faults.delete(gateway.runtime, name))
        return FaultsChange(found=gateway.faults.put(gateway.runtime, name, faults))

    def workers(self) -> list[dict[str, Any]]:
        return []


def raise_file_limit() -> None:
    """Every connection is a file descriptor: the soft limit (often 1 024) is raised to the hard
    one, as nginx's worker_rlimit_nofile does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def run_gateway(
    config_path: Path,
    listen: str | None = None,
    worker: WorkerOptions | None = None,
    loader: Callable[[], LoadedConfig] | None = None,
    watch: Sequence[Path] = (),
    keep_faults: bool = False,
) -> int:
    raise_file_limit()
    gateway = Gateway(config_path, listen, worker, loader, watch, keep_faults)
    try:
        await gateway.start(announce=False)
    except ConfigError as failure:
        print(str(failure), flush=True)
        return 1
    # Ready is announced only once SIGHUP and SIGTERM are handled: a reload sent on seeing the
    # line must not meet the default action (which ends the process).
    gateway.install_signal_handlers()
    settle_heap()
    if gateway.ready_line is not None:
        print(gateway.ready_line, flush=True)
    await gateway.serve_until_stopped()
    return 0
