"""pygw uses its dependencies' public API only, so it works on every release pyproject.toml
admits: no module imports a private name (leading underscore) from a dependency or reaches one
through an attribute, and the installed aiohttp is one of the admitted releases (the WebSocket,
admin and client tests run against it)."""

from __future__ import annotations

import ast
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DEPENDENCIES = ("aiohttp", "multidict", "yarl", "httptools", "uvloop", "orjson", "redis", "h2")


def _private_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            if top not in DEPENDENCIES:
                continue
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"{path.name}:{node.lineno} from {node.module}")
            for name in node.names:
                if name.name.startswith("_"):
                    found.append(f"{path.name}:{node.lineno} {name.name} from {node.module}")
                aliases[name.asname or name.name] = top
        elif isinstance(node, ast.Import):
            for name in node.names:
                top = name.name.split(".")[0]
                if top in DEPENDENCIES:
                    aliases[name.asname or top] = top
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in aliases:
                found.append(f"{path.name}:{node.lineno} {base.id}...{node.attr}")
    return found


def test_no_private_names_of_dependencies() -> None:
    offenders = [
        use for path in sorted((ROOT / "pygw").rglob("*.py")) for use in _private_uses(path)
    ]
    assert offenders == []


def test_the_check_sees_a_private_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from aiohttp.web_protocol import _ErrInfo\nimport aiohttp\nx = aiohttp.web._hidden\n"
    )
    assert len(_private_uses(probe)) == 2


@pytest.mark.parametrize("package", ["aiohttp", "uvloop", "httptools", "h2"])
def test_installed_release_is_admitted(package: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirement = next(
        Requirement(spec) for spec in project["dependencies"] if Requirement(spec).name == package
    )
    assert requirement.specifier.contains(version(package)), (package, version(package))
