"""`pygw serve --workers N`: a supervisor and N real worker processes on one port (127.0.0.1)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pygw.supervisor import merge_metrics
from tests.e2e.gateway_process import GatewayProcess

CONFIG = """
server:
  workers: %(workers)s
  drain_timeout_s: 5
admin: {listen: "127.0.0.1:0"}
access_log: null
apis:
  - name: web
    type: http
    routes:
      "GET /hello":
        integration: {type: mock, status: 200, body: {hello: world}}
      "GET /slow":
        integration: {type: mock, status: 200, body: "late", latency_ms: {fixed: 1500}}
%(extra)s
"""

ADDED_ROUTE = """
      "GET /added":
        integration: {type: mock, status: 200, body: added}
"""

_WAIT_S = 30.0


def write(path: Path, workers: int = 2, extra: str = "") -> Path:
    path.write_text(textwrap.dedent(CONFIG) % {"workers": workers, "extra": extra.rstrip()})
    return path


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    process = GatewayProcess(write(tmp_path / "gateway.yaml"))
    await asyncio.to_thread(process.start)
    yield process
    await asyncio.to_thread(process.stop)


async def fresh_get(url: str) -> tuple[int, str | None, bytes]:
    """One request on a new connection: SO_REUSEPORT picks the worker per connection."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as client:
        async with client.get(url) as response:
            return response.status, response.headers.get("x-pygw-worker"), await response.read()


async def admin_json(process: GatewayProcess, path: str, method: str = "GET") -> Any:
    async with aiohttp.ClientSession() as client:
        async with client.request(method, process.admin_url + path) as response:
            return await response.json()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + _WAIT_S
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def logged(process: GatewayProcess, text: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return text in process.text()

    return check


async def serving_pids(url: str, want: set[str], attempts: int = 400) -> set[str]:
    """Workers seen answering 200 on fresh connections, until all of `want` have been seen."""
    seen: set[str] = set()
    for _ in range(attempts):
        status, worker, _ = await fresh_get(url)
        if status == 200 and worker is not None:
            seen.add(worker)
        if want <= seen:
            break
    return seen


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit may wait for a reaper that is not ours)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def socket_folder(pid: int) -> Path:
    """The folder of a worker's private admin socket, from its command line."""
    arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    admin = arguments[arguments.index(b"--admin") + 1].decode()
    return Path(admin.removeprefix("unix:")).parent


def counted(metrics_text: str, route: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "pygw_requests_total" and sample.labels.get("route") == route:
                total += sample.value
    return total


async def test_both_workers_serve_one_port(pool: GatewayProcess) -> None:
    workers = await admin_json(pool, "/workers")
    assert [worker["index"] for worker in workers] == [0, 1]
    pids = {str(worker["pid"]) for worker in workers}
    assert len(pids) == 2 and str(pool.proc.pid if pool.proc else "") not in pids
    assert all(worker["restarts"] == 0 and worker["ready"] for worker in workers)
    assert await serving_pids(pool.url + "/hello", pids) == pids
    assert await admin_json(pool, "/health") == {"status": "ok", "workers": 2, "wanted": 2}
    routes = await admin_json(pool, "/routes")
    assert {"GET /hello", "GET /slow"} <= {row["route"] for row in routes}
    # The ready line is printed once, by the supervisor.
    assert pool.text().count("pygw listening on") == 1


async def test_killed_worker_is_restarted_and_traffic_goes_on(pool: GatewayProcess) -> None:
    before = await admin_json(pool, "/workers")
    victim = before[0]["pid"]
    survivor = before[1]["pid"]
    os.kill(victim, signal.SIGKILL)

    async def replaced() -> bool:
        now = await admin_json(pool, "/workers")
        return bool(now[0]["pid"] != victim and now[0]["restarts"] == 1 and now[0]["ready"])

    await eventually(replaced, "the killed worker to be replaced")
    after = await admin_json(pool, "/workers")
    assert after[1]["pid"] == survivor and after[1]["restarts"] == 0
    replacement = str(after[0]["pid"])
    seen = await serving_pids(pool.url + "/hello", {replacement, str(survivor)})
    assert seen == {replacement, str(survivor)}
    assert str(victim) not in seen
    for _ in range(20):
        status, _, _ = await fresh_get(pool.url + "/hello")
        assert status == 200
    assert (await admin_json(pool, "/health"))["status"] == "ok"
    metrics = await fetch_metrics(pool)
    assert 'pygw_worker_restarts_total{worker="0"} 1.0' in metrics


async def test_sigterm_drains_every_worker_and_exits_0(tmp_path: Path) -> None:
    process = GatewayProcess(write(tmp_path / "gateway.yaml"))
    await asyncio.to_thread(process.start)
    try:
        pids = [worker["pid"] for worker in await admin_json(process, "/workers")]
        slow = asyncio.create_task(fresh_get(process.url + "/slow"))
        # Let the slow request reach a worker before the signal.
        await asyncio.sleep(0.4)
        process.signal(signal.SIGTERM)
        status, _, body = await slow
        assert (status, body) == (200, b"late")
        assert await asyncio.to_thread(process.wait) == 0
        assert not any(running(pid) for pid in pids)
        assert process.text().count("pygw stopped") == 3  # two workers and the supervisor
    finally:
        await asyncio.to_thread(process.stop)


async def test_sighup_reloads_every_worker(tmp_path: Path) -> None:
    config = write(tmp_path / "gateway.yaml")
    process = GatewayProcess(config)
    await asyncio.to_thread(process.start)
    try:
        pids = {str(worker["pid"]) for worker in await admin_json(process, "/workers")}
        status, _, _ = await fresh_get(process.url + "/added")
        assert status == 404

        # An invalid config is refused once, by the supervisor: the workers keep serving.
        config.write_text(config.read_text().replace("type: mock", "type: nonsense", 1))
        process.signal(signal.SIGHUP)
        await eventually(logged(process, "reload refused"), "the refusal")
        assert await serving_pids(process.url + "/hello", pids) == pids

        write(config, extra=ADDED_ROUTE)
        process.signal(signal.SIGHUP)
        await eventually(logged(process, "config reloaded in 2 workers"), "the reload")
        assert await serving_pids(process.url + "/added", pids) == pids
        listed = [worker["pid"] for worker in await admin_json(process, "/workers")]
        assert {str(pid) for pid in listed} == pids  # reloaded in place, not restarted
    finally:
        await asyncio.to_thread(process.stop)


async def test_admin_reload_reaches_all_workers(pool: GatewayProcess) -> None:
    write(pool.config, extra=ADDED_ROUTE)
    answer = await admin_json(pool, "/reload", method="POST")
    assert answer["reloaded"] is True
    assert [row["reloaded"] for row in answer["workers"]] == [True, True]
    pids = {str(worker["pid"]) for worker in await admin_json(pool, "/workers")}
    assert await serving_pids(pool.url + "/added", pids) == pids

    pool.config.write_text("apis: [{name: x, type: bogus}]\n")
    async with aiohttp.ClientSession() as client:
        async with client.post(pool.admin_url + "/reload") as response:
            assert response.status == 400
            refused = await response.json()
    assert refused["reloaded"] is False and refused["errors"]


async def fetch_metrics(process: GatewayProcess) -> str:
    async with aiohttp.ClientSession() as client:
        async with client.get(process.admin_url + "/metrics") as response:
            assert response.status == 200
            return await response.text()


async def test_metrics_sum_every_worker(pool: GatewayProcess) -> None:
    per_worker: dict[str, int] = {}
    total = 0
    while len(per_worker) < 2 or total < 20:
        status, worker, _ = await fresh_get(pool.url + "/hello")
        assert status == 200 and worker is not None
        per_worker[worker] = per_worker.get(worker, 0) + 1
        total += 1
        assert total < 400, "connections never reached the second worker"
    metrics = await fetch_metrics(pool)
    assert counted(metrics, "GET /hello") == total
    assert "pygw_workers 2.0" in metrics
    # Histogram counts are summed as well.
    families = {family.name: family for family in text_string_to_metric_families(metrics)}
    latency_count = sum(
        sample.value
        for sample in families["pygw_latency_seconds"].samples
        if sample.name == "pygw_latency_seconds_count" and sample.labels["route"] == "GET /hello"
    )
    assert latency_count == total


async def test_workers_flag_overrides_config(tmp_path: Path) -> None:
    config = write(tmp_path / "gateway.yaml", workers=1)
    command = [
        "-m",
        "pygw",
        "serve",
        "-c",
        str(config),
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "3",
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), _WAIT_S)).decode()
        found = re.search(r"http://127.0.0.1:(\d+) \(admin http://127.0.0.1:(\d+)\)", line)
        assert found, line
        port, admin = found.groups()
        async with aiohttp.ClientSession() as client:
            async with client.get(f"http://127.0.0.1:{admin}/workers") as response:
                assert len(await response.json()) == 3
        status, worker, _ = await fresh_get(f"http://127.0.0.1:{port}/hello")
        assert status == 200 and worker is not None
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stdout.read(), _WAIT_S)
        assert await asyncio.wait_for(proc.wait(), _WAIT_S) == 0
        assert b"pygw listening on" not in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_one_worker_is_one_process_without_worker_header(tmp_path: Path) -> None:
    process = GatewayProcess(write(tmp_path / "gateway.yaml", workers=1))
    await asyncio.to_thread(process.start)
    try:
        status, worker, _ = await fresh_get(process.url + "/hello")
        assert status == 200 and worker is None
        async with aiohttp.ClientSession() as client:
            async with client.get(process.admin_url + "/workers") as response:
                assert response.status == 404
    finally:
        await asyncio.to_thread(process.stop)


def test_workers_cannot_share_a_unix_socket(tmp_path: Path) -> None:
    config = write(tmp_path / "gateway.yaml")
    sock = tmp_path / "gw.sock"
    done = subprocess.run(
        [sys.executable, "-m", "pygw", "serve", "-c", str(config), "--listen", f"unix:{sock}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "cannot be shared by 2 workers" in done.stdout


def test_merge_metrics_sums_equal_samples() -> None:
    one = textwrap.dedent(
        """\
        # HELP pygw_requests_total Requests.
        # TYPE pygw_requests_total counter
        pygw_requests_total{route="a",status="200"} 2.0
        # HELP pygw_requests_created Requests.
        # TYPE pygw_requests_created gauge
        pygw_requests_created{route="a",status="200"} 100.0
        # HELP pygw_latency_seconds Latency.
        # TYPE pygw_latency_seconds histogram
        pygw_latency_seconds_bucket{le="0.1",route="a"} 1.0
        pygw_latency_seconds_bucket{le="+Inf",route="a"} 2.0
        pygw_latency_seconds_count{route="a"} 2.0
        pygw_latency_seconds_sum{route="a"} 0.5
        # HELP pygw_upstream_health Health.
        # TYPE pygw_upstream_health gauge
        pygw_upstream_health{target="t"} 1.0
        """
    )
    two = (
        one.replace(" 2.0", " 3.0")
        .replace(" 100.0", " 50.0")
        .replace(
            '{route="a",status="200"} 3.0',
            '{route="a",status="200"} 3.0\npygw_requests_total{route="b",status="500"} 1.0',
        )
    )
    merged = merge_metrics([one, two]).decode()
    assert 'pygw_requests_total{route="a",status="200"} 5.0' in merged
    assert 'pygw_requests_total{route="b",status="500"} 1.0' in merged
    assert 'pygw_requests_created{route="a",status="200"} 50.0' in merged
    assert 'pygw_latency_seconds_bucket{le="+Inf",route="a"} 5.0' in merged
    assert 'pygw_latency_seconds_count{route="a"} 5.0' in merged
    assert 'pygw_latency_seconds_sum{route="a"} 1.0' in merged
    assert 'pygw_upstream_health{target="t"} 2.0' in merged
    assert merged.count("# TYPE pygw_requests_total counter") == 1
    assert merge_metrics([]) == b""


async def test_workers_stop_when_the_supervisor_is_killed(pool: GatewayProcess) -> None:
    pids = [worker["pid"] for worker in await admin_json(pool, "/workers")]
    # A supervisor killed outright cannot remove its workers' socket folder: the test does.
    folder = socket_folder(pids[0])
    assert folder.name.startswith("pygw-workers-")
    pool.signal(signal.SIGKILL)
    await asyncio.to_thread(pool.wait)

    async def all_gone() -> bool:
        return not any(running(pid) for pid in pids)

    await eventually(all_gone, "orphaned workers to stop")
    shutil.rmtree(folder)
