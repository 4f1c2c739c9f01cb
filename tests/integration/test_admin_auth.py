"""The admin token: real `pygw serve` processes (one process, and a supervisor of two workers)
on 127.0.0.1, called the way an operator's curl or a scraper would call them."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pygw.admin import AdminServer
from pygw.admin_auth import is_loopback_listen
from pygw.supervisor import SupervisorBackend
from tests.e2e.gateway_process import GatewayProcess

pytestmark = pytest.mark.timeout(60)

TOKEN = "admin-s3cret"

CONFIG = """
server:
  workers: %(workers)d
  drain_timeout_s: 2
admin: {listen: "127.0.0.1:0"%(token)s}
access_log: null
apis:
  - name: web
    type: http
    routes:
      "GET /hello":
        integration: {type: mock, status: 200, body: {hello: world}}
"""

# Endpoints that need the token when one is set, with the status they answer when given it.
GUARDED: list[tuple[str, str, int]] = [
    ("GET", "/metrics", 200),
    ("GET", "/routes", 200),
    ("POST", "/reload", 200),
    ("GET", "/faults", 200),
    ("DELETE", "/faults/web/$default/GET%20/hello", 200),
]
SUPERVISOR_ONLY: list[tuple[str, str, int]] = [("GET", "/workers", 200)]
WRONG_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"Authorization": TOKEN},  # the raw token, without its scheme
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": "Bearer "},
]


def write_config(folder: Path, workers: int, token: str | None) -> Path:
    path = folder / "gateway.yaml"
    shown = f", token: {token}" if token is not None else ""
    path.write_text(textwrap.dedent(CONFIG) % {"workers": workers, "token": shown})
    return path


@pytest.fixture(params=[1, 2], ids=["single", "supervisor"])
async def guarded(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[GatewayProcess, int]]:
    workers: int = request.param
    process = GatewayProcess(write_config(tmp_path, workers, TOKEN))
    await asyncio.to_thread(process.start, 30.0)
    try:
        yield process, workers
    finally:
        await asyncio.to_thread(process.stop)


async def call(
    process: GatewayProcess, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as client,
        client.request(method, process.admin_url + path, headers=headers) as response,
    ):
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


async def test_every_endpoint_but_health_needs_the_bearer_token(
    guarded: tuple[GatewayProcess, int],
) -> None:
    process, workers = guarded
    endpoints = GUARDED + (SUPERVISOR_ONLY if workers > 1 else [])
    for method, path, _ in endpoints:
        for headers in WRONG_CREDENTIALS:
            status, body = await call(process, method, path, headers)
            assert (status, body) == (401, {"message": "Unauthorized"}), (method, path, headers)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for method, path, expected in endpoints:
        status, _ = await call(process, method, path, auth)
        assert status == expected, (method, path)
    # The scheme is case-insensitive (RFC 9110 section 11.1).
    status, _ = await call(process, "GET", "/routes", {"Authorization": f"bearer {TOKEN}"})
    assert status == 200
    # Health stays open for load balancers and probes.
    status, body = await call(process, "GET", "/health")
    assert status == 200 and body["status"] == "ok"


async def test_connections_api_wants_the_bearer_scheme(
    guarded: tuple[GatewayProcess, int],
) -> None:
    process, _ = guarded
    for headers in WRONG_CREDENTIALS:
        status, body = await call(process, "GET", "/@connections/AAAAAAAAAAAAAAA=", headers)
        assert (status, body) == (401, {"message": "Unauthorized"}), headers
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, _ = await call(process, "GET", "/@connections/AAAAAAAAAAAAAAA=", auth)
    assert status == 410


async def test_without_a_token_everything_is_open_and_loopback_does_not_warn(
    tmp_path: Path,
) -> None:
    process = GatewayProcess(write_config(tmp_path, 1, None))
    await asyncio.to_thread(process.start)
    try:
        for method, path, expected in GUARDED:
            status, _ = await call(process, method, path)
            assert status == expected, (method, path)
    finally:
        await asyncio.to_thread(process.stop)
    assert "admin.token is not set" not in process.text()


@pytest.mark.parametrize(
    ("listen", "local"),
    [
        ("127.0.0.1:9901", True),
        ("127.8.9.10:9901", True),
        ("localhost:9901", True),
        ("[::1]:9901", True),
        (":9901", True),
        ("unix:/run/pygw/admin.sock", True),
        ("0.0.0.0:9901", False),
        ("[::]:9901", False),
        ("10.1.2.3:9901", False),
        ("admin.internal:9901", False),
    ],
)
def test_which_listen_addresses_count_as_local(listen: str, local: bool) -> None:
    assert is_loopback_listen(listen) is local


async def test_exposed_listener_without_token_warns_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the bind fails, so nothing listens
    # beyond loopback, but the warning comes first, as it does for a listener that starts.
    admin = AdminServer(SupervisorBackend(None, ""), "192.0.2.1:0", "")  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="pygw.admin"), pytest.raises(OSError):
        await admin.start()
    await admin.stop()
    assert "192.0.2.1:0" in caplog.text and "admin.token is not set" in caplog.text

    caplog.clear()
    guarded = AdminServer(SupervisorBackend(None, ""), "192.0.2.1:0", TOKEN)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="pygw.admin"), pytest.raises(OSError):
        await guarded.start()
    await guarded.stop()
    assert "admin.token is not set" not in caplog.text
