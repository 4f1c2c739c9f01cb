"""The HTTPS scenarios of `pygw bench`: pygw's HTTPS listener against nginx terminating TLS with
the same certificate, in the same run.

    .venv/bin/python -m bench.https_bench [--duration S] [--repeats N] [--json PATH]

(alone it starts its own nginx upstream; `pygw bench` runs it with the upstream of its run).

Servers, all on 127.0.0.1: nginx with `listen ... ssl http2` proxying to the upstream (keep-alive
pool, as the plain nginx peer), pygw's bare HTTP-style proxy route and pygw's REST cache hit, both
with `server.tls` (ALPN h2 and http/1.1), all three serving one certificate (ECDSA P-256, made for
the run with trustme). Measured, round after round with the order rotated:

- reused connections: wrk over HTTPS (`-c64`), HTTP/1.1 keep-alive;
- new TLS handshakes: oha `--disable-keepalive` (a new TCP connection and TLS handshake per
  request; the client resumes sessions where the server offers tickets, as both do by default);
- HTTP/2: h2load (`-c16 -m10`: 16 connections, 10 streams each).

Each figure is reported as a ratio against nginx's in the same round's run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import proxy_bench, scenarios  # noqa: E402

H2_CONNECTIONS = 16
H2_STREAMS = 10
NEW_CONNECTIONS = 16
HIT_PATH = scenarios.REQUEST_PATH + "?n=hit"

TaskSet = Callable[[str | None], list[str]]


@dataclass(frozen=True)
class Target:
    name: str
    label: str
    port: int
    path: str


def make_certificate(folder: Path) -> tuple[Path, Path]:
    import trustme

    ca = trustme.CA(organization_name="pygw bench CA")
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = folder / "bench-cert.pem", folder / "bench-key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    for path in (cert, key):
        path.chmod(0o644)  # nginx's workers may run as another user
    return cert, key


def nginx_tls_conf(tmp: Path, port: int, upstream_port: int, cert: Path, key: Path) -> str:
    return f"""{proxy_bench.nginx_common(tmp, "tls")}
http {{
{proxy_bench.nginx_http_common(tmp, "tls")}
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        http2_max_requests 1000000;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def pygw_tls_yaml(config: dict[str, Any], port: int, admin_port: int, cert: Path, key: Path) -> str:
    full = {
        "server": {
            "listen": f"127.0.0.1:{port}",
            "workers": 1,
            "tls": {
                "certificates": [{"cert": str(cert), "key": str(key)}],
                "alpn": ["h2", "http/1.1"],
            },
        },
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        **config,
    }
    return yaml.safe_dump(full, sort_keys=False)


def wait_https(port: int, path: str, child: proxy_bench.Child, deadline: float) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    last = ""
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            break
        try:
            url = f"https://127.0.0.1:{port}{path}"
            with urllib.request.urlopen(url, timeout=5, context=context) as answer:
                if answer.status == 200:
                    return
                last = f"status {answer.status}"
        except OSError as failure:
            last = str(failure)
        time.sleep(0.2)
    log = child.log.read_text(errors="replace")[-3000:] if child.log.exists() else ""
    raise RuntimeError(f"{child.name} is not serving https on {port} ({last}); log:\n{log}")


_H2_RPS = re.compile(r"finished in [\d.]+m?s, ([\d.]+) req/s")
_H2_DONE = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored"
)
_H2_PROTOCOL = re.compile(r"Application protocol: (\S+)")


def parse_h2load(output: str) -> dict[str, Any]:
    rps = _H2_RPS.search(output)
    done = _H2_DONE.search(output)
    protocol = _H2_PROTOCOL.search(output)
    if rps is None or done is None:
        raise ValueError(f"h2load output not understood: {output[-1000:]}")
    return {
        "rps": float(rps.group(1)),
        "requests": int(done.group(3)),
        "errors": int(done.group(5)) + int(done.group(6)),
        "protocol": protocol.group(1) if protocol else None,
    }


def h2load_argv(url: str, duration_s: float) -> list[str]:
    return [
        "h2load",
        "-c",
        str(H2_CONNECTIONS),
        "-m",
        str(H2_STREAMS),
        "-t",
        "1",
        "-D",
        f"{max(1, round(duration_s))}",
        url,
    ]


def oha_new_argv(oha: str, url: str, duration_s: float) -> list[str]:
    return [
        oha,
        "-z",
        f"{duration_s}s",
        "-c",
        str(NEW_CONNECTIONS),
        "--disable-keepalive",
        "--insecure",
        # Requests still in flight at the end would otherwise count as errors.
        "--wait-ongoing-requests-after-deadline",
        "--no-tui",
        "--output-format",
        "json",
        url,
    ]


def parse_oha(output: str) -> dict[str, Any]:
    data = json.loads(output)
    codes = data.get("statusCodeDistribution", {})
    errors = sum(data.get("errorDistribution", {}).values()) + sum(
        n for code, n in codes.items() if not 200 <= int(code) < 400
    )
    return {
        "rps": data.get("summary", {}).get("requestsPerSec", 0.0),
        "requests": sum(codes.values()),
        "errors": errors,
    }


def _run(argv: list[str], timeout_s: float) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-1500:]}")
    return done.stdout


def measure(
    upstream_port: int,
    procs: proxy_bench.Processes,
    tmp: Path,
    duration_s: float,
    repeats: int,
    connections: int,
    gateway_cpus: str | None,
    load_cpus: str | None,
    oha: str | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Starts the three HTTPS servers, runs every measurement `repeats` times and returns the
    raw runs, medians and ratios against nginx."""

    def taskset(cpus: str | None) -> list[str]:
        return ["taskset", "-c", cpus] if cpus else []

    here = tmp / "https"
    here.mkdir()
    here.chmod(0o755)
    cert, key = make_certificate(here)
    cache_api = {"cache": {"capacity_mb": 256, "ttl_s": 3600}}
    cache_route = {"cache": {"ttl_s": 3600, "key_params": ["querystring.n"]}}
    configs = {
        "pygw_tls_bare": scenarios.bare_http(upstream_port),
        "pygw_tls_hit": scenarios.rest_config(upstream_port, cache_api, cache_route),
    }
    nginx_port = proxy_bench.free_port()
    folder = here / "nginx"
    folder.mkdir()
    conf = folder / "nginx.conf"
    conf.write_text(nginx_tls_conf(folder, nginx_port, upstream_port, cert, key))
    nginx = procs.start(
        "nginx_tls",
        [
            *taskset(gateway_cpus),
            "nginx",
            "-p",
            str(folder),
            "-e",
            str(folder / "error.log"),
            "-c",
            str(conf),
        ],
        folder / "out.log",
    )
    gateways: dict[str, tuple[int, proxy_bench.Child]] = {}
    for name, config in configs.items():
        port, admin = proxy_bench.free_port(), proxy_bench.free_port()
        config_path = here / f"{name}.yaml"
        config_path.write_text(pygw_tls_yaml(config, port, admin, cert, key))
        argv = [*proxy_bench.pygw_command(), "serve", "-c", str(config_path)]
        gateways[name] = (port, procs.start(name, argv, here / f"{name}.log"))
    deadline = time.monotonic() + 120
    wait_https(nginx_port, scenarios.REQUEST_PATH, nginx, deadline)
    for name, (port, child) in gateways.items():
        ready = HIT_PATH if name == "pygw_tls_hit" else scenarios.REQUEST_PATH
        wait_https(port, ready, child, deadline)
        if gateway_cpus:
            subprocess.run(
                ["taskset", "-a", "-p", "-c", gateway_cpus, str(child.proc.pid)],
                capture_output=True,
                check=False,
            )

    path = scenarios.REQUEST_PATH
    bare_port, hit_port = gateways["pygw_tls_bare"][0], gateways["pygw_tls_hit"][0]
    targets = [
        Target("nginx_tls", "nginx terminating TLS, reverse proxy", nginx_port, path),
        Target("pygw_tls_bare", "pygw HTTPS, bare proxy route", bare_port, path),
        Target("pygw_tls_hit", "pygw HTTPS, REST cache hit", hit_port, HIT_PATH),
    ]
    kinds: list[tuple[str, Target]] = [("reused", t) for t in targets]
    if oha is not None:
        kinds += [("handshakes", t) for t in targets[:2]]
    h2load = shutil.which("h2load")
    if h2load is not None:
        kinds += [("h2", t) for t in targets]
    commands: dict[str, str] = {}
    runs: list[dict[str, Any]] = []
    threads = max(1, min(4, len(load_cpus.split(","))) if load_cpus else 1)
    for rnd in range(repeats):
        shift = (rnd * max(1, len(kinds) // repeats)) % len(kinds)
        for kind, target in kinds[shift:] + kinds[:shift]:
            url = f"https://127.0.0.1:{target.port}{target.path}"
            if kind == "reused":
                argv = proxy_bench.wrk_command(url, duration_s, connections, None, threads)
                output = _run([*taskset(load_cpus), *argv], duration_s + 30)
                result = proxy_bench.parse_wrk(output)
                figures = {"rps": result.rps, "errors": result.errors, "p99_ms": result.p99_ms}
            elif kind == "handshakes":
                assert oha is not None
                argv = oha_new_argv(oha, url, duration_s)
                figures = parse_oha(_run([*taskset(load_cpus), *argv], duration_s + 60))
            else:
                argv = h2load_argv(url, duration_s)
                figures = parse_h2load(_run([*taskset(load_cpus), *argv], duration_s + 60))
            commands[f"{kind} {target.name}"] = " ".join(argv)
            runs.append({"kind": kind, "target": target.name, "round": rnd, **figures})
            log(
                f"https round {rnd + 1}/{repeats} {kind} {target.name}: "
                f"{figures['rps']:,.0f} req/s, {figures['errors']} errors"
            )
    return {
        "targets": {t.name: t.label for t in targets},
        "certificate": "ECDSA P-256 leaf for localhost and 127.0.0.1 (trustme), served by all",
        "commands": commands,
        "runs": runs,
        "summary": summarise(runs),
        "skipped": [
            what
            for what, present in (
                ("new handshakes (oha not found)", oha is not None),
                (
                    "HTTP/2 (h2load not found: apt-get install -y nghttp2-client)",
                    h2load is not None,
                ),
            )
            if not present
        ],
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median req/s per kind and target, and each target's ratio to nginx's, paired by round."""
    out: dict[str, Any] = {}
    for kind in sorted({r["kind"] for r in runs}):
        mine = [r for r in runs if r["kind"] == kind]
        nginx = {r["round"]: r["rps"] for r in mine if r["target"] == "nginx_tls"}
        per_target: dict[str, Any] = {}
        for target in dict.fromkeys(r["target"] for r in mine):
            rows = [r for r in mine if r["target"] == target]
            rps = [r["rps"] for r in rows]
            ratios = [r["rps"] / nginx[r["round"]] for r in rows if nginx.get(r["round"])]
            per_target[target] = {
                "rps": {"median": statistics.median(rps), "min": min(rps), "max": max(rps)},
                "vs_nginx": statistics.median(ratios) if ratios else None,
                "errors": sum(r["errors"] for r in rows),
            }
        out[kind] = per_target
    return out


KIND_TITLES = {
    "reused": "HTTP/1.1 over TLS, reused connections (wrk)",
    "handshakes": "a new connection and TLS handshake per request (oha --disable-keepalive)",
    "h2": f"HTTP/2 (h2load, {H2_CONNECTIONS} connections x {H2_STREAMS} streams)",
}


def markdown_lines(https: dict[str, Any]) -> list[str]:
    if "error" in https:
        return [f"Not measured: {https['error']}"]
    lines = [f"Certificate: {https['certificate']}.", ""]
    labels = https["targets"]
    for kind, per_target in https["summary"].items():
        lines += [
            f"**{KIND_TITLES.get(kind, kind)}**",
            "",
            "| server | req/s (median, min-max) | vs nginx | errors |",
            "|---|---:|---:|---:|",
        ]
        for target, figures in per_target.items():
            rps = figures["rps"]
            ratio = figures["vs_nginx"]
            lines.append(
                f"| {labels.get(target, target)} | {rps['median']:,.0f} "
                f"({rps['min']:,.0f}-{rps['max']:,.0f}) | "
                f"{'' if ratio is None else f'{ratio:.2f}x'} | {figures['errors']} |"
            )
        lines.append("")
    for skipped in https.get("skipped", []):
        lines.append(f"Skipped: {skipped}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", help="write the raw figures here")
    args = parser.parse_args(argv)
    missing = [t for t in ("nginx", "wrk") if shutil.which(t) is None]
    if missing:
        print(f"missing: {', '.join(missing)} ({proxy_bench.INSTALL_HINT})", file=sys.stderr)
        return 2
    procs = proxy_bench.Processes()
    oha = shutil.which("oha") or (
        str(Path.home() / ".cargo/bin/oha") if (Path.home() / ".cargo/bin/oha").exists() else None
    )
    with tempfile.TemporaryDirectory(prefix="pygw-https-bench-") as name:
        tmp = Path(name)
        tmp.chmod(0o711)
        try:
            upstream_port = proxy_bench.free_port()
            folder = tmp / "upstream"
            folder.mkdir()
            conf = folder / "nginx.conf"
            conf.write_text(proxy_bench.nginx_upstream_conf(folder, upstream_port))
            procs.start(
                "upstream",
                ["nginx", "-p", str(folder), "-e", str(folder / "e.log"), "-c", str(conf)],
                folder / "out.log",
            )
            time.sleep(0.5)
            results = measure(
                upstream_port,
                procs,
                tmp,
                args.duration,
                args.repeats,
                args.connections,
                "0",
                "1",
                oha,
                lambda line: print(line, file=sys.stderr, flush=True),
            )
        finally:
            procs.stop_all()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(markdown_lines(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
