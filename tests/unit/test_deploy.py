"""deploy/: Kubernetes manifests against the bundled Kubernetes schemas (no network), the
ConfigMap's config against pygw's own parser, the systemd unit with `systemd-analyze verify`,
and a structural lint of the Dockerfile (no container engine runs in tests)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from pygw.config.load import load_config, parse_config
from pygw.observe.metrics import Metrics
from pygw.runtime import compile_runtime

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.37"


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path.name, document))
    return found


def resource(kind: str, name: str) -> dict[str, Any]:
    for _, document in manifests():
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise AssertionError(f"no {kind} {name} in deploy/k8s")


def gateway_container() -> dict[str, Any]:
    container: dict[str, Any] = resource("Deployment", "pygw")["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def deploy_config_text() -> str:
    return (DEPLOY / "config.yaml").read_text()


@pytest.mark.parametrize(
    "document",
    [pytest.param(document, id=f"{name}:{document['kind']}") for name, document in manifests()],
)
def test_manifest_matches_kubernetes_schema(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_validator_rejects_a_broken_manifest() -> None:
    broken = copy.deepcopy(resource("Deployment", "pygw"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = copy.deepcopy(resource("Service", "pygw"))
    broken["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_every_kind_is_there_and_kustomization_lists_every_file() -> None:
    kinds = {(document["kind"], document["metadata"]["name"]) for _, document in manifests()}
    assert {
        ("ConfigMap", "pygw-config"),
        ("Deployment", "pygw"),
        ("Service", "pygw"),
        ("HorizontalPodAutoscaler", "pygw"),
        ("Deployment", "pygw-redis"),
        ("Service", "pygw-redis"),
    } <= kinds
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(listed) == sorted(on_disk)


def test_configmap_holds_the_deploy_config_and_pygw_accepts_it() -> None:
    text = resource("ConfigMap", "pygw-config")["data"]["config.yaml"]
    assert text == deploy_config_text()
    config = parse_config(text, "configmap:pygw-config/config.yaml", env={})
    assert config.server.workers > 1
    assert config.state.backend == "redis"
    # What `pygw check` does: the config also compiles.
    runtime = compile_runtime(load_config(DEPLOY / "config.yaml"), Metrics())
    assert runtime.routes


def test_deployment_agrees_with_the_config() -> None:
    config = parse_config(deploy_config_text(), env={})
    deployment = resource("Deployment", "pygw")
    pod = deployment["spec"]["template"]["spec"]
    container = gateway_container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == int(config.server.listen.rpartition(":")[2])
    assert ports["admin"] == int(config.admin.listen.rpartition(":")[2])
    assert container["args"] == ["serve", "-c", "/etc/pygw/config.yaml"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes[mounts["/etc/pygw"]]["configMap"]["name"] == "pygw-config"
    # The supervisor needs a writable /tmp on a read-only root filesystem.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "emptyDir" in volumes[mounts["/tmp"]]

    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "admin"}
    assert "livenessProbe" in container
    for limit in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][limit])

    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + config.server.drain_timeout_s

    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = resource("Service", "pygw")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = resource("HorizontalPodAutoscaler", "pygw")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "pygw",
    }


def test_redis_service_is_where_the_config_points() -> None:
    config = parse_config(deploy_config_text(), env={})
    assert config.state.url is not None
    host_port = config.state.url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    redis = resource("Service", host)
    assert redis["spec"]["ports"][0]["port"] == int(port)
    env = {item["name"]: item.get("value") for item in gateway_container()["env"]}
    assert env["PYGW_REDIS_URL"] == config.state.url
    redis_pods = resource("Deployment", host)["spec"]["template"]["metadata"]["labels"]
    assert redis["spec"]["selector"].items() <= redis_pods.items()


# -- systemd ----------------------------------------------------------------------------------

UNIT = DEPLOY / "systemd" / "pygw.service"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_hardening_and_signals() -> None:
    settings = unit_settings()
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "DynamicUser": "yes",
        "KillSignal": "SIGTERM",
        "PrivateTmp": "yes",
    }.items():
        assert settings[key] == [value], key
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["ExecStart"] == ["/opt/pygw/bin/pygw serve -c /etc/pygw/config.yaml"]
    drain_s = parse_config(deploy_config_text(), env={}).server.drain_timeout_s
    assert int(settings["TimeoutStopSec"][0]) > drain_s


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at this checkout's pygw.
    installed = ROOT / ".venv" / "bin" / "pygw"
    if not installed.exists():
        pytest.skip("no .venv/bin/pygw to stand in for /opt/pygw/bin/pygw")
    unit = tmp_path / "pygw.service"
    unit.write_text(UNIT.read_text().replace("/opt/pygw/bin/pygw", str(installed)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # Unknown or misspelt directives are only warnings: there must be none.
    assert done.stderr.strip() == "", done.stderr


# -- Dockerfile -------------------------------------------------------------------------------

DOCKERFILE = DEPLOY / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, "dangling line continuation"
    parsed = []
    for line in joined:
        keyword, _, rest = line.partition(" ")
        parsed.append((keyword.upper(), rest.strip()))
    return parsed


def stages() -> list[tuple[str, list[tuple[str, str]]]]:
    found: list[tuple[str, list[tuple[str, str]]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            name = rest.split()[-1] if " as " in rest.lower() else ""
            found.append((name, []))
        elif found:
            found[-1][1].append((keyword, rest))
    return found


def test_dockerfile_is_multi_stage_and_runs_unprivileged() -> None:
    names = [name for name, _ in stages()]
    assert "build" in names and names[-1] == "runtime"
    build = dict(stages())["build"]
    assert any(k == "RUN" and "maturin build --release" in rest for k, rest in build)
    runtime = stages()[-1][1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # Nothing after USER runs as root again, and the entry point comes after it.
    keywords = [keyword for keyword, _ in runtime]
    assert keywords.index("ENTRYPOINT") > keywords.index("USER")
    assert "RUN" not in keywords[keywords.index("USER") :]
    entry = dict(runtime)
    assert entry["ENTRYPOINT"] == '["pygw"]'
    assert entry["CMD"] == '["serve", "-c", "/etc/pygw/config.yaml"]'
    # The runtime image gets the wheels from the build stage, not a compiler of its own.
    assert any("from=build" in rest for keyword, rest in runtime if keyword in ("COPY", "RUN"))
    assert not any("maturin" in rest or "cargo" in rest for _, rest in runtime)


def test_dockerfile_fetches_nothing_by_url_and_pins_its_bases() -> None:
    for keyword, rest in instructions():
        assert keyword != "ADD", "use COPY; ADD of URLs and archives is refused"
        if keyword == "FROM":
            assert not rest.split()[0].endswith(":latest")
    arguments = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1]
        for keyword, rest in instructions()
        if keyword == "ARG" and "=" in rest
    }
    for image in (arguments["PYTHON_IMAGE"], arguments["RUST_IMAGE"]):
        assert re.fullmatch(r"[a-z]+:\d+\.\d+[\w.-]*", image), image


def test_dockerfile_copies_what_exists_and_exposes_the_configured_ports() -> None:
    for keyword, rest in instructions():
        if keyword != "COPY" or "--from" in rest:
            continue
        sources = [word for word in rest.split() if not word.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), source
    config = parse_config(deploy_config_text(), env={})
    exposed = {rest for keyword, rest in instructions() if keyword == "EXPOSE"}
    wanted = f"{config.server.listen.rpartition(':')[2]} {config.admin.listen.rpartition(':')[2]}"
    assert exposed == {wanted}
    healthcheck = " ".join(rest for keyword, rest in instructions() if keyword == "HEALTHCHECK")
    assert f":{config.admin.listen.rpartition(':')[2]}/health" in healthcheck
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "pygw/**/*.so" in ignore  # a locally built extension never shadows the image's
