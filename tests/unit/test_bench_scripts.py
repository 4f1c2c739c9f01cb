"""The benchmark scripts run and report in the expected shape (never how fast anything is)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import proxy_bench
from pygw.config.load import load_config
from pygw.observe.metrics import Metrics
from pygw.runtime import compile_runtime

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_native_bench_quick_writes_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "native.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "native_bench.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "| scenario |" in completed.stdout and "| ratio |" in completed.stdout

    report = json.loads(out.read_text())
    meta = report["meta"]
    assert meta["quick"] is True
    sizes = meta["sizes"]
    assert len(sizes) == 3 and 1000 in sizes
    assert meta["empty_loop_ns"] > 0

    expected = {
        f"router.{kind}.{size}.{impl}"
        for kind in ("hit", "miss")
        for size in sizes
        for impl in ("pygw", "aiohttp", "reference")
    } | {
        f"{key}.{impl}"
        for key in ("throttle.acquire.1", "throttle.acquire.3q", "cache.hit")
        for impl in ("pygw", "reference")
    }
    results = {r["name"]: r for r in report["results"]}
    assert set(results) == expected
    for r in results.values():
        assert r["iterations"] >= 1
        assert len(r["samples_ns_per_call"]) == meta["repeats"]
        assert all(s > 0 and math.isfinite(s) for s in r["samples_ns_per_call"])
        assert r["ns_per_call"] > 0

    ratios = report["ratios"]
    assert len(ratios) == 7
    for ratio in ratios:
        assert ratio["value"] > 0 and isinstance(ratio["met"], bool) and ratio["target"]


def test_proxy_bench_arguments() -> None:
    args = proxy_bench.parse_args([])
    assert (args.duration, args.repeats, args.connections) == (10.0, 3, 64)
    assert args.targets == list(proxy_bench.TARGETS)
    assert (args.proxy_cpu, args.load_cpu) == (0, 1)

    args = proxy_bench.parse_args(
        ["--duration", "3", "--repeats", "5", "--connections", "16", "--json", "out.json"]
    )
    assert (args.duration, args.repeats, args.connections, args.json) == (3.0, 5, 16, "out.json")
    args = proxy_bench.parse_args(["--targets", "pygw,nginx proxy", "--no-pin"])
    assert args.targets == ["pygw", "nginx proxy"]
    assert args.proxy_cpu is None and args.load_cpu is None

    for bad in (["--repeats", "0"], ["--duration", "0"], ["--targets", "apache"]):
        with pytest.raises(SystemExit):
            proxy_bench.parse_args(bad)


def test_pygw_config_is_the_lean_path_and_compiles(tmp_path: Path) -> None:
    config = proxy_bench.pygw_config(18080, 18081, 18082)
    assert config["access_log"] is None
    assert config["throttle"] is None  # no account-wide limit: not even a throttle stage
    assert config["admin"]["listen"] == "127.0.0.1:18081"
    (api,) = config["apis"]
    assert api["type"] == "http"
    assert set(api) == {"name", "type", "stages", "routes"}  # no stage besides the integration
    route = api["routes"]["ANY /{proxy+}"]
    assert route == {"integration": {"type": "http_proxy", "uri": "http://127.0.0.1:18082/{proxy}"}}

    path = tmp_path / "pygw.yaml"
    path.write_text(proxy_bench.pygw_config_yaml(18080, 18081, 18082))
    runtime = compile_runtime(load_config(path), Metrics())
    assert runtime.summary()
    (compiled,) = [route for route in runtime.routes if not route.synthetic]
    assert compiled.pick_variant().pipeline.stages == ()


def test_nginx_configs_stay_in_the_temp_dir(tmp_path: Path) -> None:
    upstream = proxy_bench.nginx_upstream_conf(tmp_path, 18082, body="it's {ok}")
    proxy = proxy_bench.nginx_proxy_conf(tmp_path, 18083, 18082)
    for conf in (upstream, proxy):
        assert "daemon off;" in conf
        assert f"pid {tmp_path}/" in conf
        assert "access_log off;" in conf
        assert conf.count("{") == conf.count("}")
        for line in conf.splitlines():
            for word in line.split():
                if word.startswith("/") and word != "/":
                    assert word.startswith(str(tmp_path)), line
    assert "listen 127.0.0.1:18082;" in upstream
    assert "return 200 'it\\'s {ok}';" in upstream
    assert "listen 127.0.0.1:18083;" in proxy
    assert "server 127.0.0.1:18082;" in proxy


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_generated_configs(tmp_path: Path) -> None:
    for name, conf in (
        ("upstream", proxy_bench.nginx_upstream_conf(tmp_path, 18082)),
        ("proxy", proxy_bench.nginx_proxy_conf(tmp_path, 18083, 18082)),
    ):
        path = tmp_path / f"{name}.conf"
        path.write_text(conf)
        checked = subprocess.run(
            [
                "nginx",
                "-t",
                "-q",
                "-p",
                str(tmp_path),
                "-e",
                str(tmp_path / "t.log"),
                "-c",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr


def test_wrk_output_is_parsed() -> None:
    output = """Running 10s test @ http://127.0.0.1:8080/items/42
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  500.00us  30.00ms   90.00%
    Req/Sec    30.12k     1.00k   32.00k    70.00%
  Latency Distribution
     50%  850.00us
     75%    1.20ms
     90%    1.80ms
     99%    1.05s
  301234 requests in 10.00s, 50.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  30123.40
Transfer/sec:      5.00MB
"""
    result = proxy_bench.parse_wrk(output)
    assert result.rps == pytest.approx(30123.40)
    assert result.p50_ms == pytest.approx(0.85)
    assert result.p99_ms == pytest.approx(1050.0)
    assert result.requests == 301234
    assert result.errors == 7
    with pytest.raises(ValueError):
        proxy_bench.parse_wrk("wrk: connection refused")


def test_wrk_command_and_pinning() -> None:
    cmd = proxy_bench.wrk_command("http://127.0.0.1:1/x", 2.4, 32, cpu=None)
    assert cmd == [
        "wrk",
        "-t1",
        "-c32",
        "-d2s",
        "--timeout",
        "5s",
        "--latency",
        "http://127.0.0.1:1/x",
    ]
    pinned = proxy_bench.wrk_command("http://127.0.0.1:1/x", 10, 64, cpu=1)
    assert pinned[-1] == "http://127.0.0.1:1/x" and "-c64" in pinned


def test_markdown_report_has_ratios() -> None:
    medians = {
        proxy_bench.PYGW: {"rps": 20000.0, "p50_ms": 2.0, "p99_ms": 4.0, "errors": 0.0},
        proxy_bench.AIOHTTP: {"rps": 8000.0, "p50_ms": 7.0, "p99_ms": 19.0, "errors": 0.0},
        proxy_bench.NGINX: {"rps": 40000.0, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0.0},
    }
    text = proxy_bench.markdown(medians)
    assert "| pygw | 20,000 |" in text
    assert "2.50x" in text and "0.50x" in text
    assert "met" in text


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_sam_bench_runs_and_reports_ratios(tmp_path: Path) -> None:
    out = tmp_path / "sam.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.sam_bench",
            "--targets",
            "function (-c),--sam,lambda (warm)",
            "--duration",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--connections",
            "2",
            "--no-pin",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "| req/s ratio to function (-c) |" in completed.stdout
    report = json.loads(out.read_text())
    assert set(report["medians"]) == {"function (-c)", "--sam", "lambda (warm)"}
    for figures in report["medians"].values():
        assert figures["rps"] > 0
        assert figures["errors"] == 0
