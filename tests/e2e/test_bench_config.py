"""`pygw bench -c CONFIG --smoke` on examples/bench.yaml (a key-protected REST route, a JWT HTTP
route, a function route), with an nginx started here as an `--against` endpoint."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from bench import proxy_bench

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "bench.yaml"
SECRET = "bench-secret-0123456789abcdef0123456789"
ROUTES = ("shop v1 GET /items/{id}", "secure $default GET /me", "hello $default GET /hello/{name}")


def token() -> str:
    claims = {"iss": "https://issuer.example", "aud": "bench", "sub": "me"}
    return jwt.encode({**claims, "exp": int(time.time()) + 3600}, SECRET, "HS256")


def bench(out: Path, *extra: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "pygw", "bench", "-c", str(EXAMPLE), "--smoke"]
    done = subprocess.run(
        [*command, "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "report.md").read_text() in done.stdout
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[str]:
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx-light)")
    port = proxy_bench.free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(proxy_bench.nginx_upstream_conf(tmp_path, port))
    processes = proxy_bench.Processes()
    argv = ["nginx", "-p", str(tmp_path), "-e", str(tmp_path / "e.log"), "-c", str(conf)]
    child = processes.start("nginx", argv, tmp_path / "out.log")
    try:
        proxy_bench.wait_ready(child, f"http://127.0.0.1:{port}/")
        yield f"http://127.0.0.1:{port}"
    finally:
        processes.stop_all()


def test_bench_names_every_route_and_stage_with_figures(tmp_path: Path, nginx: str) -> None:
    results = bench(tmp_path / "out", "--token", token(), "--against", f"nginx={nginx}")
    rows = {(row["route"], row["endpoint"]): row for row in results["routes"]}
    assert set(rows) == {(route, endpoint) for route in ROUTES for endpoint in ("pygw", "nginx")}
    for route in ROUTES:
        ours = rows[(route, "pygw")]
        # Every request passed the route's key or JWT check and reached its integration.
        assert set(ours["statuses"]) == {"200"}, ours
        assert ours["req_per_s"] > 0 and ours["errors"] == 0
        assert math.isfinite(ours["p50_ms"]) and ours["p50_ms"] <= ours["p99_ms"]
        assert ours["cpu_us_per_request"] > 0
        theirs = rows[(route, "nginx")]
        assert theirs["req_per_s"] > 0 and set(theirs["statuses"]) == {"200"}
        assert math.isfinite(theirs["p99_ms"])
    assert rows[("shop v1 GET /items/{id}", "pygw")]["path"] == "/v1/items/1"
    stages = {(s["route"], s["stage"]): s for s in results["stages"]}
    assert stages[("shop v1 GET /items/{id}", "api_key")]["us_per_request"] > 0
    assert stages[("secure $default GET /me", "jwt_auth")]["us_per_request"] > 0
    report = (tmp_path / "out" / "report.md").read_text()
    for route in ROUTES:
        assert report.count(f"| {route} | pygw |") == 1
        assert report.count(f"| {route} | nginx |") == 1
    assert "| shop v1 GET /items/{id} | api_key |" in report
    assert results["meta"]["stand_in"].startswith("http://127.0.0.1:")


def test_bench_says_what_a_route_lacks_and_switches_stages_off(tmp_path: Path) -> None:
    results = bench(tmp_path / "out", "--route", "GET /me", "--switch-off")
    rows = {row["endpoint"]: row for row in results["routes"]}
    assert set(rows) == {"pygw", "pygw -jwt_auth"}
    assert rows["pygw"]["route"] == "secure $default GET /me"
    assert set(rows["pygw"]["statuses"]) == {"401"}
    assert rows["pygw"]["missing"] == ["a JWT (--token)"]
    # The same route served without its authorizer lets the token-less requests through.
    assert set(rows["pygw -jwt_auth"]["statuses"]) == {"200"}
    assert rows["pygw -jwt_auth"]["cpu_us_per_request"] > 0
    [switched] = results["switched_off"]
    assert (switched["route"], switched["stage"]) == ("secure $default GET /me", "jwt_auth")
    assert math.isfinite(switched["cpu_us_saved"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "a JWT (--token)" in report
    assert "| secure $default GET /me | jwt_auth |" in report


def test_bench_refuses_bad_arguments(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pygw", "bench", "-c", str(EXAMPLE), "--against", "nowhere"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "NAME=http://HOST:PORT" in done.stderr
