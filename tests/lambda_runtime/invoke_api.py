"""A small Lambda Invoke API server for tests, running each invocation as a subprocess.

The Lambda Runtime Interface Emulator is not packaged on PyPI or in Debian, so the tests start
this instead: `POST /2015-03-31/functions/NAME/invocations` runs the command registered for NAME
with the event on stdin and answers its stdout as the result, as the Invoke API does (200; a
non-zero exit adds `X-Amz-Function-Error: Unhandled`; an unknown function is 404
ResourceNotFoundException). It records each connection's peer so tests can see keep-alive reuse.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

HERE = Path(__file__).resolve().parent
NODE_RUNNER = HERE / "runner.js"


@dataclass
class Function:
    command: Sequence[str]
    environment: Mapping[str, str] = field(default_factory=dict)
    timeout_ms: int = 3000
    memory_mb: int = 128


class InvokeApiServer:
    def __init__(self, functions: Mapping[str, Function]) -> None:
        self.functions = dict(functions)
        self.peers: list[tuple[str, int]] = []
        self.invocations: list[tuple[str, bytes]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> InvokeApiServer:
        app = web.Application()
        app.router.add_post("/2015-03-31/functions/{name}/invocations", self._invoke)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _invoke(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            self.peers.append((peer[0], peer[1]))
        name = request.match_info["name"]
        event = await request.read()
        self.invocations.append((name, event))
        function = self.functions.get(name)
        if function is None:
            return web.json_response(
                {"Type": "User", "Message": f"Function not found: {name}"},
                status=404,
                headers={"X-Amzn-ErrorType": "ResourceNotFoundException"},
            )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
            "LAMBDA_TIMEOUT_MS": str(function.timeout_ms),
            "LAMBDA_REQUEST_ID": request.headers.get("X-Amz-Request-Id", ""),
            **function.environment,
        }
        process = await asyncio.create_subprocess_exec(
            *function.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            out, _ = await asyncio.wait_for(
                process.communicate(event), function.timeout_ms / 1000.0
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            body = b'{"errorType":"TimeoutError","errorMessage":"Task timed out"}'
            return web.Response(
                body=body, headers={"X-Amz-Function-Error": "Unhandled"}, status=200
            )
        headers = {"Content-Type": "application/json"}
        if process.returncode != 0:
            headers["X-Amz-Function-Error"] = "Unhandled"
        return web.Response(body=out, headers=headers, status=200)


def node_function(
    script: Path, environment: Mapping[str, str] | None = None, timeout_ms: int = 3000
) -> Function:
    """A Node handler file (`exports.handler`) run by runner.js."""
    return Function(["node", str(NODE_RUNNER), str(script)], dict(environment or {}), timeout_ms)
