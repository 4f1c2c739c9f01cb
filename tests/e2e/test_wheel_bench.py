"""`pygw bench -c CONFIG --smoke` from a wheel built by maturin and installed into a fresh venv,
run outside the source tree: everything it needs ships in the package."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
MATURIN = Path(sys.executable).parent / "maturin"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not MATURIN.exists() or shutil.which("cargo") is None:
        pytest.skip("maturin and cargo are needed to build the wheel (make dev)")
    wheels = tmp_path_factory.mktemp("wheels")
    built = subprocess.run(
        [str(MATURIN), "build", "--release", "--quiet", "-o", str(wheels)],
        cwd=ROOT,
        env={**os.environ, "VIRTUAL_ENV": sys.prefix},
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    [wheel] = wheels.glob("pygw-*.whl")
    folder = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        timeout=300,
    )
    # The dependencies come from the dev venv (no index needed); pygw itself from the wheel.
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(target, "dev-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return folder


def test_installed_wheel_benches_a_config(venv: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pygw; print(pygw.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(venv)), where
    config = tmp_path / "bench.yaml"
    shutil.copy(ROOT / "examples" / "bench.yaml", config)
    shutil.copytree(ROOT / "examples" / "functions", tmp_path / "functions")
    claims = {"iss": "https://issuer.example", "aud": "bench", "exp": int(time.time()) + 3600}
    token = jwt.encode(claims, "bench-secret-0123456789abcdef0123456789", "HS256")
    command = [str(venv / "bin" / "pygw"), "bench", "-c", str(config), "--smoke"]
    done = subprocess.run(
        [*command, "--token", token, "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {row["route"] for row in results["routes"]} == {
        "shop v1 GET /items/{id}",
        "secure $default GET /me",
        "hello $default GET /hello/{name}",
    }
    assert all(row["statuses"] == {"200": row["statuses"]["200"]} for row in results["routes"])
    assert all(row["req_per_s"] > 0 for row in results["routes"])
