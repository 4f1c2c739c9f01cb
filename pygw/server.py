"""Listeners, signals, graceful drain and reload around the Dispatcher.

With `--workers N` (N > 1) each worker process runs one Gateway in worker mode (`WorkerOptions`):
it shares the traffic port through SO_REUSEPORT, serves its admin API on a private address that
only the supervisor (pygw/supervisor.py) talks to, and tags its responses with `x-pygw-worker`.

Protocol-level limits live here: header size (via aiohttp's parser), a header read deadline
(aiohttp has none, so slow-header clients would otherwise hold connections forever) and the idle
timeout between keep-alive requests.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.helpers import ceil_timeout
from aiohttp.http_writer import StreamWriter
from aiohttp.web_exceptions import HTTPException
from aiohttp.web_protocol import _PAYLOAD_ACCESS_ERROR, RequestHandler, _ErrInfo
from aiohttp.web_protocol import ERROR as _ERROR_MESSAGE
from aiohttp.web_request import BaseRequest

from pygw.admin import AdminServer
from pygw.config.load import ConfigError, LoadedConfig, load_config
from pygw.dispatch import Dispatcher
from pygw.integrations.ws_connections import ConnectionRegistry
from pygw.observe.access_log import AccessLog
from pygw.observe.metrics import Metrics
from pygw.one_write import OneWriteResponse
from pygw.runtime import Runtime, compile_runtime
from pygw.state.redis_throttle import close_pools

log = logging.getLogger("pygw")

# The request loop below is aiohttp 3.14's with one change; another series may have moved the
# private parts it uses, so it keeps aiohttp's own loop there. From Python 3.12 aiohttp starts
# its per-request task eagerly, which costs no extra turns of the loop.
_INLINE_REQUEST_LOOP = aiohttp.__version__.startswith("3.14.") and sys.version_info < (3, 12)


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


class _HeaderDeadlineHandler(RequestHandler):
    """Closes a connection whose request headers take longer than `header_timeout_s` to arrive.

    A connection only notes when the current request's headers started arriving; one sweep per
    server checks those notes periodically. A timer per request cost about 5% of the hot path."""

    __slots__ = ("_headers_since", "_open_payload")

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._headers_since: float | None = None
        self._open_payload: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._headers_since = self._loop.time()

    def data_received(self, data: bytes) -> None:
        parsed_before = self._request_count
        super().data_received(data)
        if self._request_count != parsed_before:
            self._headers_since = None
            self._open_payload = self._messages[-1][1] if self._messages else None
        elif data and self._headers_since is None and not self._reading_body():
            self._headers_since = self._loop.time()

    async def start(self) -> None:
        """aiohttp's request loop, less the task it creates per request on Python 3.11.

        That task only copies context variables (which the gateway does not keep; async user
        code run in-process gets its own task: asyncio.wait_for in pygw/integrations/function.py
        makes one on 3.11, pygw/stages/custom_auth.py makes one) and costs every request two
        more turns of the event loop.
        The loop is aiohttp 3.14's own, line for line, with the handler awaited in place
        through `_answer` (aiohttp's `_handle_request`); other aiohttp versions and Pythons
        keep aiohttp's loop (see `_INLINE_REQUEST_LOOP`)."""
        if not _INLINE_REQUEST_LOOP:
            return await super().start()
        loop = self._loop
        manager = self._manager
        assert manager is not None
        keepalive_timeout = self._keepalive_timeout
        resp: web.StreamResponse | None = None
        assert self._request_factory is not None
        assert self._request_handler is not None

        while not self._force_close:
            if not self._messages:
                try:
                    self._waiter = loop.create_future()
                    await self._waiter
                finally:
                    self._waiter = None

            message, payload = self._messages.popleft()
            if self._parser is not None:
                self._parser.message_consumed()
            if self._buffer_paused and len(self._messages) <= self._msg_queue_resume_size:
                self._resume_reading_if_drained()

            start_time = loop.time() if self._logging_enabled else None
            manager.requests_count += 1
            writer = StreamWriter(self, loop)
            if isinstance(message, _ErrInfo):
                request_handler = self._make_error_handler(message)
                message = _ERROR_MESSAGE
            else:
                request_handler = self._request_handler

            # This coroutine runs in the connection's task: current_task() is never None here.
            request = self._request_factory(
                message,
                payload,
                self,
                writer,
                self._task_handler or asyncio.current_task(loop),  # type: ignore[arg-type]
            )
            try:
                try:
                    resp, reset = await self._answer(request, start_time, request_handler)
                except ConnectionError:
                    self.log_debug("Ignored premature client disconnection")
                    break
                if reset:
                    self.log_debug("Ignored premature client disconnection 2")
                    break

                self._keepalive = bool(resp.keep_alive)
                if not payload.is_eof():
                    await self._linger(payload)
                payload.set_exception(_PAYLOAD_ACCESS_ERROR)
            except asyncio.CancelledError:
                self.log_debug("Ignored premature client disconnection")
                self.force_close()
                raise
            except Exception as exc:
                self.log_exception("Unhandled exception", exc_info=exc)
                self.force_close()
            except BaseException:
                self.force_close()
                raise
            finally:
                request._task = None  # type: ignore[assignment]  # breaks a cycle on errors
                if self.transport is None and resp is not None:
                    self.log_debug("Ignored premature client disconnection.")

            if self._keepalive and not self._close and not self._force_close:
                close_time = loop.time() + keepalive_timeout
                self._next_keepalive_close_time = close_time
                if self._keepalive_handle is None:
                    self._keepalive_handle = loop.call_at(close_time, self._process_keepalive)
            else:
                break

        if not self._force_close:
            self._task_handler = None
            if self.transport is not None:
                self.transport.close()

    async def _answer(
        self,
        request: BaseRequest,
        start_time: float | None,
        request_handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        """aiohttp's `_handle_request`, sending a OneWriteResponse without another coroutine."""
        self._request_in_progress = True
        try:
            try:
                self._current_request = request
                resp = await request_handler(request)
            finally:
                self._current_request = None
        except HTTPException as exc:
            resp, reset = await self.finish_response(request, exc, start_time)
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:
            self.log_debug("Request handler timed out.", exc_info=exc)
            resp = self.handle_error(request, 504)
            resp, reset = await self.finish_response(request, resp, start_time)
        except Exception as exc:
            resp = self.handle_error(request, 500, exc)
            resp, reset = await self.finish_response(request, resp, start_time)
        else:
            if type(resp) is OneWriteResponse and not self._upgraded:
                reset = self._send_at_once(request, resp, start_time)
            else:
                resp, reset = await self.finish_response(request, resp, start_time)
        finally:
            self._request_in_progress = False
            if self._handler_waiter is not None:
                self._handler_waiter.set_result(None)
        return resp, reset

    async def _linger(self, payload: Any) -> None:
        """Reads and drops the rest of a body the handler left unread, for at most
        `lingering_time` (aiohttp's behaviour), so the connection can be reused."""
        lingering_time = self._lingering_time
        if not self._force_close and lingering_time:
            self.log_debug("Start lingering close timer for %s sec.", lingering_time)
            now = self._loop.time()
            end_t = now + lingering_time
            try:
                while not payload.is_eof() and now < end_t:
                    async with ceil_timeout(end_t - now):
                        await payload.readany()
                    now = self._loop.time()
            except (asyncio.CancelledError, TimeoutError):
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
        if not payload.is_eof() and not self._force_close:
            self.log_debug("Uncompleted request.")
            self.close()

    def _send_at_once(
        self, request: BaseRequest, resp: OneWriteResponse, start_time: float | None
    ) -> bool:
        """Sends a OneWriteResponse; True when the client has gone."""
        request._finish()
        try:
            resp.send(request)
        except ConnectionError:
            self.log_access(request, resp, start_time)
            return True
        self.log_access(request, resp, start_time)
        return False

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        # aiohttp awaits prepare() and write_eof(), two coroutines per request, for what a
        # OneWriteResponse does in one plain call. After a declined upgrade aiohttp has a
        # message tail to feed first: its own path handles that.
        if type(resp) is not OneWriteResponse or self._upgraded:
            return await super().finish_response(request, resp, start_time)
        return resp, self._send_at_once(request, resp, start_time)

    def _reading_body(self) -> bool:
        payload = self._open_payload
        return payload is not None and not payload.is_eof()

    def headers_overdue(self, started_before: float) -> bool:
        since = self._headers_since
        return since is not None and since < started_before

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Requests aiohttp could not parse get a JSON answer like every other gateway error,
        and never a traceback. Malformed input from clients is routine, so it is logged at debug."""
        if status >= 500:
            log.error("error handling request from %s", request.remote, exc_info=exc)
        else:
            log.debug("malformed request from %s: %s", request.remote, message)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started, cannot send an error response")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        response = web.Response(
            status=status, body=orjson.dumps({"message": phrase}), content_type="application/json"
        )
        response.force_close()
        return response


class _WorkerRequest(BaseRequest):
    """A request whose response names the worker process that answered it.

    The header is set when the response is prepared, so it reaches streamed responses too and
    costs single-process mode nothing."""

    worker_id = str(os.getpid())
    # The same header for responses that bypass aiohttp's header handling (pygw/one_write.py).
    response_line = f"x-pygw-worker: {worker_id}\r\n".encode("ascii")

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        response.headers["x-pygw-worker"] = self.worker_id


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a supervised worker differs from a standalone gateway."""

    admin_listen: str  # private admin address the supervisor scrapes (unix:/path)
    parent_pid: int  # the supervisor: a worker whose parent is gone stops serving


class _GatewayServer(web.Server):
    def __init__(
        self, handler: Callable[..., Any], *, header_timeout_s: float, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self._header_timeout_s = header_timeout_s
        # Checking a few times per timeout bounds the overshoot to a quarter of it.
        self._sweep_every_s = min(max(header_timeout_s / 4, 0.05), 1.0)
        self._sweeper: asyncio.TimerHandle | None = None

    def __call__(self) -> RequestHandler:
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self._sweep_every_s, self._sweep)
        return _HeaderDeadlineHandler(self, loop=self._loop, **self._kwargs)

    def _sweep(self) -> None:
        started_before = self._loop.time() - self._header_timeout_s
        for handler, transport in list(self._connections.items()):
            if isinstance(handler, _HeaderDeadlineHandler) and handler.headers_overdue(
                started_before
            ):
                transport.close()
        self._sweeper = self._loop.call_later(self._sweep_every_s, self._sweep)

    def stop_sweeping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


def parse_listen(listen: str) -> tuple[str, int] | str:
    """`HOST:PORT` → (host, port); `unix:/path` → the socket path."""
    if listen.startswith("unix:"):
        return listen[len("unix:") :]
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class Gateway:
    """The running gateway: one config path, one live Runtime, swapped atomically on reload."""

    def __init__(
        self,
        config_path: Path,
        listen: str | None = None,
        worker: WorkerOptions | None = None,
        loader: Callable[[], LoadedConfig] | None = None,
    ) -> None:
        self.config_path = config_path
        # `serve --openapi` loads by importing a definition; everything else reads the YAML.
        self._load: Callable[[], LoadedConfig] = loader or (lambda: load_config(config_path))
        self._listen_override = listen
        self._worker = worker
        self.metrics = Metrics()
        self._retiring: asyncio.Task[None] | None = None
        # WebSocket connections outlive config snapshots: a reload keeps clients connected.
        self.connections = ConnectionRegistry(on_count=self.metrics.websocket_connections.set)
        self.connections.install()
        self.metrics.upstreams = self._upstream_states
        self._dispatcher: Dispatcher | None = None
        self._server: asyncio.AbstractServer | None = None
        self._web_server: _GatewayServer | None = None
        self._admin: AdminServer | None = None
        self._access_log: AccessLog | None = None
        self._stopping = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.bound: tuple[str, int] | str | None = None

    def _upstream_states(self) -> list[tuple[str, bool, int]]:
        dispatcher = self._dispatcher
        return dispatcher.runtime.upstream_states() if dispatcher is not None else []

    @property
    def runtime(self) -> Runtime:
        if self._dispatcher is None:
            raise RuntimeError("gateway not started")
        return self._dispatcher.runtime

    async def start(self) -> None:
        loaded = self._load()
        runtime = compile_runtime(loaded, self.metrics, self.connections, self._listen_override)
        runtime.attach_shared_state()
        config = loaded.config
        limits = config.server.limits
        if config.access_log is not None:
            self._access_log = AccessLog(config.access_log.path)
            self.connections.access_log = self._access_log  # WebSocket event lines
        self._dispatcher = Dispatcher(
            runtime, self._access_log, limits.max_body_bytes, limits.max_header_bytes
        )
        worker = self._worker
        server_options: dict[str, Any] = {}
        if worker is not None:
            _WorkerRequest.worker_id = str(os.getpid())
            _WorkerRequest.response_line = f"x-pygw-worker: {os.getpid()}\r\n".encode("ascii")
            loop = asyncio.get_running_loop()

            def make_request(
                message: Any, payload: Any, protocol: Any, writer: Any, task: Any
            ) -> BaseRequest:
                return _WorkerRequest(message, payload, protocol, writer, task, loop)

            server_options["request_factory"] = make_request
        self._web_server = _GatewayServer(
            self._dispatcher,
            **server_options,
            header_timeout_s=limits.header_timeout_s,
            keepalive_timeout=limits.idle_timeout_s,
            max_field_size=limits.max_header_bytes,
            max_line_size=limits.max_header_bytes,
            access_log=None,
            handler_cancellation=True,
        )
        loop = asyncio.get_running_loop()
        listen = parse_listen(self._listen_override or config.server.listen)
        if isinstance(listen, str):
            self._server = await loop.create_unix_server(self._web_server, listen)
            self.bound = listen
            shown = f"unix:{listen}"
        else:
            host, port = listen
            self._server = await loop.create_server(
                self._web_server,
                host,
                port,
                reuse_port=worker is not None or config.server.workers > 1,
                backlog=1024,
            )
            sock: socket.socket = self._server.sockets[0]
            self.bound = (host, sock.getsockname()[1])
            shown = f"http://{host}:{self.bound[1]}"
        if worker is not None:
            # The private admin needs no token: it is a unix socket in a folder only the
            # supervisor's user can enter.
            self._admin = AdminServer(self, worker.admin_listen, "")
            admin_shown = await self._admin.start()
            log.debug("worker %d serving on %s (admin %s)", os.getpid(), shown, admin_shown)
            return
        self.connections.admin_token = config.admin.token
        self._admin = AdminServer(self, config.admin.listen, config.admin.token)
        admin_shown = await self._admin.start()
        print(f"pygw listening on {shown} (admin {admin_shown})", flush=True)

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
                log.error("reload refused, still serving the previous config:\n%s", failure)
                return False, str(failure)
            dispatcher = self._dispatcher
            if dispatcher is None:
                raise RuntimeError("gateway not started")
            retired = dispatcher.runtime
            dispatcher.runtime = fresh
            self.metrics.config_reloads.labels("ok").inc()
            if self._worker is None:
                self.connections.admin_token = loaded.config.admin.token
            log.info("config reloaded: %s", fresh.summary())
            self._retiring = asyncio.get_running_loop().create_task(self._retire(retired))
            return True, fresh.summary()

    async def _retire(self, retired: Runtime) -> None:
        await retired.close_when_idle()
        del retired
        settle_heap()

    def request_stop(self) -> None:
        self._stopping.set()

    async def serve_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        watch: asyncio.Task[None] | None = None
        if self._worker is not None:
            watch = loop.create_task(self._watch_parent(self._worker.parent_pid))
        await self._stopping.wait()
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
        if self._web_server is not None:
            self._web_server.stop_sweeping()
            await self._web_server.shutdown(timeout)
        if self._admin is not None:
            await self._admin.stop()
        if dispatcher is not None:
            await dispatcher.runtime.close()
        await close_pools()
        if self._access_log is not None:
            self._access_log.close()
        log.info("pygw stopped")


async def run_gateway(
    config_path: Path,
    listen: str | None = None,
    worker: WorkerOptions | None = None,
    loader: Callable[[], LoadedConfig] | None = None,
) -> int:
    gateway = Gateway(config_path, listen, worker, loader)
    try:
        await gateway.start()
    except ConfigError as failure:
        print(str(failure), flush=True)
        return 1
    settle_heap()
    await gateway.serve_until_stopped()
    return 0
