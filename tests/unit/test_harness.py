"""`pygw bench` (bench/harness.py) writes the expected output; its statistics are right.

The smoke run checks the shape of what the harness writes, never how fast anything is.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import harness, scenarios
from pygw.config.load import load_config
from pygw.observe.metrics import Metrics
from pygw.runtime import compile_runtime

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------------
# The mock-target check's statistics, on synthetic samples


def lognormal_samples(n: int, p50: float, p99: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    sigma = math.log(p99 / p50) / 2.3263478740408408
    return [rng.lognormvariate(math.log(p50), sigma) for _ in range(n)]


def test_mock_stats_accept_what_the_route_is_configured_with() -> None:
    n = 200_000
    latencies = lognormal_samples(n, 20, 80, seed=1)
    rng = random.Random(2)
    statuses = [503 if rng.random() < 0.05 else 200 for _ in range(n)]
    stats = harness.mock_target_stats(latencies, statuses, 20, 80, 0.05, 503)
    assert stats["ok"] is True
    assert stats["answered"] == n and stats["unanswered"] == 0
    checks = stats["checks"]
    assert checks["p50_ms"]["measured"] == pytest.approx(20, rel=0.03)
    assert checks["p99_ms"]["measured"] == pytest.approx(80, rel=0.05)
    assert checks["fault_rate"]["measured"] == pytest.approx(0.05, rel=0.05)
    assert checks["fault_rate"]["standard_error"] == pytest.approx(math.sqrt(0.05 * 0.95 / n))
    assert all(c["relative_error"] <= 0.10 for c in checks.values())


def test_mock_stats_reject_figures_off_by_more_than_the_tolerance() -> None:
    n = 50_000
    slow = lognormal_samples(n, 25, 80, seed=3)  # p50 25% high
    statuses = [200] * n
    stats = harness.mock_target_stats(slow, statuses, 20, 80, 0.05, 503)
    assert stats["ok"] is False
    assert stats["checks"]["p50_ms"]["ok"] is False
    assert stats["checks"]["p99_ms"]["ok"] is True
    assert stats["checks"]["fault_rate"]["measured"] == 0
    assert stats["checks"]["fault_rate"]["ok"] is False


def test_mock_stats_count_unanswered_and_unexpected_requests() -> None:
    latencies = [20.0] * 100
    statuses = [200] * 95 + [503] * 5
    assert harness.mock_target_stats(latencies, statuses, 20, 20, 0.05, 503)["ok"] is True
    statuses[0] = -1  # no answer (timeout, reset)
    stats = harness.mock_target_stats(latencies, statuses, 20, 20, 0.05, 503)
    assert stats["unanswered"] == 1 and stats["ok"] is False
    statuses[0] = 500
    stats = harness.mock_target_stats(latencies, statuses, 20, 20, 0.05, 503)
    assert stats["unexpected_status"] == 1 and stats["ok"] is False


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert harness.percentile(values, 50) == pytest.approx(50.5)
    assert harness.percentile(values, 99) == pytest.approx(99.01)
    assert harness.percentile(values, 0) == 1 and harness.percentile(values, 100) == 100
    assert harness.percentile([7.0], 99) == 7.0
    assert math.isnan(harness.percentile([], 50))


def test_stage_costs_pair_rounds() -> None:
    plan = scenarios.Plan(
        [],
        [
            scenarios.Scenario("base", "base", scenarios.STAGES, "s"),
            scenarios.Scenario("jwt", "jwt", scenarios.STAGES, "s", baseline="base"),
        ],
    )
    runs = [
        {"scenario": "base", "round": 0, "rps": 10_000.0},
        {"scenario": "jwt", "round": 0, "rps": 5_000.0},
        {"scenario": "base", "round": 1, "rps": 5_000.0},
        {"scenario": "jwt", "round": 1, "rps": 4_000.0},
    ]
    costs = harness.stage_costs(runs, plan)
    assert set(costs) == {"jwt"}
    assert costs["jwt"]["cost_us"]["min"] == pytest.approx(50.0)  # 250 - 200
    assert costs["jwt"]["cost_us"]["max"] == pytest.approx(100.0)  # 200 - 100


# --------------------------------------------------------------------------------------------------
# Generated configurations


def test_every_generated_pygw_config_loads(tmp_path: Path) -> None:
    jwt = scenarios.make_jwt(tmp_path)
    plan = scenarios.build_plan(18001, 18002, jwt, [10, 100])
    servers = {s.name for s in plan.servers}
    assert {s.server for s in plan.scenarios} <= servers
    for server in plan.servers:
        if server.kind != "pygw":
            continue
        assert server.config is not None
        assert server.config["access_log"] is None
        assert server.config["throttle"] is None
        path = tmp_path / f"{server.name}.yaml"
        path.write_text(scenarios.with_listen(server.config, 18003, 18004, server.workers))
        assert "&id" not in path.read_text()  # no YAML anchors
        runtime = compile_runtime(load_config(path), Metrics())
        assert runtime.summary()


def test_jwt_material_verifies_with_its_jwks(tmp_path: Path) -> None:
    import jwt as pyjwt

    material = scenarios.make_jwt(tmp_path)
    jwks = json.loads(material.jwks_path.read_text())
    key = pyjwt.PyJWK(jwks["keys"][0]).key
    claims = pyjwt.decode(
        material.token, key, algorithms=["RS256"], audience=scenarios.JWT_AUDIENCE
    )
    assert claims["iss"] == scenarios.JWT_ISSUER


def test_route_sample_spreads_over_the_table() -> None:
    assert scenarios.route_sample(10) == list(range(10))
    picks = scenarios.route_sample(100_000)
    assert len(picks) == scenarios.ROUTE_SAMPLE
    assert picks[0] == 0 and picks[-1] == 99_999
    assert "/svc99999/" in scenarios.routes_lua(100_000) or "99999" in scenarios.routes_lua(100_000)


def test_arguments_and_modes() -> None:
    args = harness.parse_args(["--smoke", "--out", "x", "--no-native"])
    mode = harness.resolve_mode(args)
    assert mode.name == "smoke" and mode.native == []
    quick = harness.resolve_mode(harness.parse_args(["--quick", "--duration", "3"]))
    assert quick.duration_s == 3 and quick.name == "quick"
    for bad in (["--repeats", "0"], ["--duration", "0"], ["--quick", "--smoke"]):
        with pytest.raises(SystemExit):
            harness.parse_args(bad)


def test_missing_tools_are_named_with_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    missing = harness.missing_requirements()
    assert any(line.startswith("nginx:") and "apt-get install" in line for line in missing)
    assert any(line.startswith("wrk:") for line in missing)
    assert harness.run(harness.parse_args(["--smoke"])) == 2


# --------------------------------------------------------------------------------------------------
# The smoke run


@pytest.mark.timeout(150)
@pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("wrk") is None,
    reason="nginx and wrk are needed (apt-get install -y nginx-light wrk)",
)
def test_smoke_run_writes_results_report_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench.harness", "--smoke", "--no-native", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=140,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip() == str(out)
    assert {p.name for p in out.iterdir()} == {"results.json", "report.md", *harness_plots()}
    for name in harness_plots():
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR" and len(data) > 1000

    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    assert set(results) >= {
        "meta",
        "scenarios",
        "runs",
        "fixed_rate_runs",
        "summary",
        "fixed_rate_summary",
        "stage_costs",
        "mock_check",
        "native",
    }
    meta = results["meta"]
    assert meta["mode"]["name"] == "smoke"
    assert meta["pinning"]["note"] and meta["fixed_rate_tool"]
    assert meta["tools"]["matplotlib"]
    names = {s["name"] for s in results["scenarios"]}
    assert {
        "direct",
        "nginx",
        "aiohttp",
        "pygw_bare",
        "pygw_http_full",
        "pygw_rest_miss",
        "pygw_rest_hit",
        "workers_2",
        "pygw_bare_big",
        "stage_jwt",
        "stage_cache_hit",
    } <= names
    assert sum(1 for s in results["scenarios"] if s["group"] == scenarios.ROUTES) == 3
    repeats = meta["mode"]["repeats"]
    assert len(results["runs"]) == len(names) * repeats
    for run in results["runs"]:
        assert set(run) >= {"scenario", "round", "rps", "p50_ms", "p99_ms", "requests", "errors"}
        assert run["rps"] > 0 and run["requests"] > 0
    assert set(results["summary"]) == names
    for s in results["summary"].values():
        for key in ("rps", "p50_ms", "p99_ms", "us_per_request"):
            assert set(s[key]) == {"median", "min", "max"}
            assert s[key]["min"] <= s[key]["median"] <= s[key]["max"]
    fixed = {s["name"] for s in results["scenarios"] if s["fixed_rate"]}
    assert set(results["fixed_rate_summary"]) == fixed
    for f in results["fixed_rate_runs"]:
        assert set(f) >= {"scenario", "tool", "rate", "p50_ms", "p90_ms", "p99_ms", "requests"}
    baselines = {s["name"] for s in results["scenarios"] if s["baseline"]}
    assert set(results["stage_costs"]) == baselines
    mock = results["mock_check"]
    assert set(mock["checks"]) == {"p50_ms", "p99_ms", "fault_rate"}
    assert mock["answered"] > 0 and isinstance(mock["ok"], bool)
    assert results["native"] is None

    report = (out / "report.md").read_text()
    for heading in (
        "## Peers and styles",
        "## Overhead per style",
        "## Pipeline targets",
        "## Overhead per stage",
        "## Route table size",
        "## Workers",
        "## 64 KiB upstream body",
        "## Latency at a fixed offered rate",
        "## Mock route as a load-testing target",
        "## Native core",
    ):
        assert heading in report
    assert "| scenario | req/s | p50 ms | p99 ms |" in report
    assert "vs aiohttp proxy | vs nginx proxy |" in report
    assert "| stage | on top of |" in report
    assert "Pinning:" in report
    for name in harness_plots():
        assert f"({name})" in report


def harness_plots() -> tuple[str, ...]:
    from bench import report

    return report.PLOTS


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is needed (apt-get install -y wrk)")
async def test_cache_miss_runs_never_repeat_a_request(tmp_path: Path) -> None:
    """The cache-miss scenario must miss on every request of every round: a request that an
    earlier run (or another wrk thread) already sent would be a hit and flatter the figures."""
    import asyncio

    from aiohttp import web

    seen: list[str] = []

    async def record(request: web.BaseRequest) -> web.Response:
        seen.append(request.query_string)
        return web.Response(text="ok")

    server = web.Server(record, access_log=None)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    scenario = scenarios.Scenario("miss", "miss", scenarios.STYLES, "x", lua="unique")
    no_pinning = harness.Pinning(None, None, "")
    url = f"http://127.0.0.1:{port}"
    try:
        # Every argv is built before any runs, as the harness does, so a script file shared
        # between runs (or rewritten by a later one) would repeat requests.
        argvs = [harness.wrk_argv(url, scenario, 1, 4, no_pinning, tmp_path) for _ in range(2)]
        for argv in argvs:
            argv[1:2] = ["-t2"]
            wrk = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL)
            assert await wrk.wait() == 0
    finally:
        listener.close()
        await server.shutdown(1.0)
    assert len(seen) > 100
    assert len(set(seen)) == len(seen)


def _synthetic(rps: dict[str, float], p50_ms: dict[str, float]) -> dict[str, Any]:
    def spread(value: float) -> dict[str, float]:
        return {"median": value, "min": value, "max": value}

    groups = {"direct": scenarios.PEERS}
    return {
        "scenarios": [
            {"name": name, "label": name, "group": groups.get(name, scenarios.STYLES)}
            for name in {*rps, *p50_ms}
        ],
        "summary": {
            name: {"rps": spread(r), "us_per_request": spread(1e6 / r)} for name, r in rps.items()
        },
        "fixed_rate_summary": {name: {"p50_ms": spread(v)} for name, v in p50_ms.items()},
    }


def test_report_checks_the_pipeline_targets_against_the_bare_route() -> None:
    from bench import report

    results = _synthetic(
        {"pygw_bare": 20_000, "pygw_rest_miss": 12_500, "pygw_rest_hit": 32_000},
        {"direct": 0.10, "pygw_bare": 0.30, "pygw_rest_miss": 0.34, "pygw_rest_hit": 0.25},
    )
    cpu, latency, hit = report.target_lines(results)[2:]
    # 80 µs against 50 µs per request; 0.24 ms added against 0.20; 1.6x the req/s.
    assert "| 1.60x the bare route | <= 1.5x | NO |" in cpu
    assert "| 1.20x the bare route | <= 1.5x | yes |" in latency
    assert "| 1.60x the bare route | >= 1.5x | yes |" in hit
    table = report.latency_overhead_table(results)
    assert table[0] == "Upstream alone: p50 0.100 ms."
    assert "| pygw_rest_miss | 0.340 | 0.240 | 1.20x |" in table
    # Without the upstream's own latency there is nothing to subtract: said, not guessed.
    del results["fixed_rate_summary"]["direct"]
    assert "(not run)" in report.target_lines(results)[3]
    assert report.latency_overhead_table(results) == [
        "(needs the `direct` scenario at the fixed rate)"
    ]


def test_report_gives_the_front_end_targets_per_round_beside_the_medians() -> None:
    """Against nginx, a target's ratio of medians decides it; beside it, the ratio within each
    round, where pygw and nginx ran close together, as min-max."""
    from bench import report

    rounds = {
        "nginx": [40_000.0, 50_000.0, 45_000.0],
        "pygw_bare": [30_000.0, 30_000.0, 30_000.0],
        "pygw_rest_hit": [50_000.0, 55_000.0, 54_000.0],
    }
    results = _synthetic({name: sorted(rps)[1] for name, rps in rounds.items()}, {})
    for name in ("nginx", "pygw_bare"):
        results["summary"][name]["p99_ms"] = {"median": 2.0 if name == "nginx" else 3.0}
    results["runs"] = [
        {"scenario": name, "round": i, "rps": rps, "p99_ms": 2.0 + (name == "pygw_bare")}
        for name, values in rounds.items()
        for i, rps in enumerate(values)
    ]
    bare, hit, mock, p99 = report.nginx_target_lines(results)[2:]
    assert (
        bare == "| bare HTTP-style proxy route: req/s | 0.67x nginx | 0.60-0.75x | >= 0.7x | NO |"
    )
    assert hit == "| REST cache hit: req/s | 1.20x nginx | 1.10-1.25x | >= 1.2x | yes |"
    assert "(not run)" in mock
    assert p99 == "| bare route: p99 at saturation | 1.50x nginx's | 1.50-1.50x | <= 2x | yes |"


def test_free_ports_are_distinct_bindable_and_clear_of_outgoing_connections() -> None:
    """The harness starts some 25 servers, each given ports before it binds them: a port handed
    out twice, or one an outgoing connection can take meanwhile (the kernel's ephemeral range),
    fails a server with "address already in use"."""
    import socket

    from bench import proxy_bench

    ephemeral_start = proxy_bench._ephemeral_start()
    ports = [proxy_bench.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    if ephemeral_start - 1024 >= 1024:
        assert all(port < ephemeral_start for port in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))
