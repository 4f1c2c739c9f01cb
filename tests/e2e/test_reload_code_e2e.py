"""A reload picks up edited handler and authorizer code: real `pygw serve` processes on 127.0.0.1,
their Python modules in a temporary folder that the test edits between reloads."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.gateway_process import GatewayProcess

pytestmark = pytest.mark.timeout(90)

CONFIG = """
server: {workers: %(workers)d, drain_timeout_s: 2}
admin: {listen: "127.0.0.1:0"}
access_log: null
python_path: [code]
apis:
  - name: web
    type: http
    authorizers:
      gate: {type: custom, handler: "gate:check", simple_responses: true, ttl_s: 0}
    routes:
      "GET /hello":
        integration: {type: function, handler: "greet:handler"}
        authorizer: gate
"""

GREET = """
import pathlib

pathlib.Path(%(log)s).open("a").write("greet\\n")


def handler(event, context):
    return {"statusCode": 200, "body": %(answer)s}
"""

GATE = """
import pathlib

pathlib.Path(%(log)s).open("a").write("gate\\n")


def check(event, context):
    return {"isAuthorized": event["headers"].get("authorization") == %(password)s}
"""


def write_code(folder: Path, name: str, template: str, **values: str) -> None:
    code = folder / "code"
    code.mkdir(exist_ok=True)
    log = json.dumps(str(folder / "imports.log"))
    shown = {key: json.dumps(value) for key, value in values.items()}
    (code / f"{name}.py").write_text(textwrap.dedent(template) % {"log": log, **shown})


def imports(folder: Path) -> list[str]:
    path = folder / "imports.log"
    return path.read_text().split() if path.exists() else []


async def hello(process: GatewayProcess, password: str) -> tuple[int, str]:
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as client,
        client.get(process.url + "/hello", headers={"Authorization": password}) as response,
    ):
        return response.status, await response.text()


async def reload(process: GatewayProcess) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.post(process.admin_url + "/reload") as response,
    ):
        assert response.status == 200, await response.text()


def start(folder: Path, workers: int, env: dict[str, str] | None = None) -> GatewayProcess:
    write_code(folder, "greet", GREET, answer="v1")
    write_code(folder, "gate", GATE, password="open sesame")
    config = folder / "gateway.yaml"
    config.write_text(textwrap.dedent(CONFIG) % {"workers": workers})
    return GatewayProcess(config, env=env)


async def test_reload_reimports_changed_modules_only(tmp_path: Path) -> None:
    # With bytecode caching on, as most deployments have it (kept in the test's folder).
    bytecode = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(tmp_path / "pycache")}
    process = start(tmp_path, workers=1, env=bytecode)
    await asyncio.to_thread(process.start)
    try:
        assert await hello(process, "open sesame") == (200, "v1")
        assert (await hello(process, "swordfish"))[0] == 403
        assert sorted(imports(tmp_path)) == ["gate", "greet"]

        # The authorizer changes; the handler does not.
        write_code(tmp_path, "gate", GATE, password="swordfish")
        await reload(process)
        assert await hello(process, "swordfish") == (200, "v1")
        assert (await hello(process, "open sesame"))[0] == 403
        assert sorted(imports(tmp_path)) == ["gate", "gate", "greet"]

        # Nothing changes: nothing is imported again.
        await reload(process)
        assert sorted(imports(tmp_path)) == ["gate", "gate", "greet"]

        # The handler changes within the second it was first written, keeping its size: the
        # bytecode cache (whole seconds and size) cannot tell; the new code must serve anyway.
        # SIGHUP reloads as POST /reload does.
        greet = tmp_path / "code" / "greet.py"
        written = greet.stat().st_mtime_ns
        write_code(tmp_path, "greet", GREET, answer="v3")
        os.utime(greet, ns=(written + 1, written + 1))
        process.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while await hello(process, "swordfish") != (200, "v3"):
            assert time.monotonic() < deadline, process.text()
            await asyncio.sleep(0.05)
        assert sorted(imports(tmp_path)) == ["gate", "gate", "greet", "greet"]
    finally:
        await asyncio.to_thread(process.stop)


async def test_broken_edit_is_refused_then_fixed(tmp_path: Path) -> None:
    process = start(tmp_path, workers=1)
    await asyncio.to_thread(process.start)
    try:
        (tmp_path / "code" / "greet.py").write_text("def handler(event, context):\n    return (\n")
        async with (
            aiohttp.ClientSession() as client,
            client.post(process.admin_url + "/reload") as response,
        ):
            assert response.status == 400
            assert "greet" in await response.text()
        # The previous code keeps serving.
        assert await hello(process, "open sesame") == (200, "v1")
        write_code(tmp_path, "greet", GREET, answer="fixed")
        await reload(process)
        assert await hello(process, "open sesame") == (200, "fixed")
    finally:
        await asyncio.to_thread(process.stop)


async def test_every_worker_reimports_the_changed_authorizer(tmp_path: Path) -> None:
    process = start(tmp_path, workers=2)
    await asyncio.to_thread(process.start, 30.0)
    try:
        assert await hello(process, "open sesame") == (200, "v1")
        write_code(tmp_path, "gate", GATE, password="swordfish")
        await reload(process)
        # Fresh connections: the kernel spreads them over both workers.
        for _ in range(20):
            assert await hello(process, "swordfish") == (200, "v1")
            assert (await hello(process, "open sesame"))[0] == 403
    finally:
        await asyncio.to_thread(process.stop)
