"""The admin listener depends on the process it serves only through AdminBackend: admin.py and
fault_admin.py import neither the gateway nor the supervisor (not even for type checking), and
listen addresses are parsed in a module of their own, so admin, server and supervisor import one
another one way only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pygw.listen import format_listen, parse_listen

PYGW = Path(__file__).resolve().parents[2] / "pygw"


def imports_of(module: str) -> set[str]:
    """The pygw modules `module` imports, wherever the import stands (TYPE_CHECKING included)."""
    tree = ast.parse((PYGW / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pygw"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("pygw"))
    return found


@pytest.mark.parametrize("module", ["admin", "admin_backend", "fault_admin", "listen"])
def test_the_admin_side_does_not_import_the_gateway_or_the_supervisor(module: str) -> None:
    found = imports_of(module)
    for forbidden in ("pygw.server", "pygw.supervisor"):
        assert forbidden not in found, f"pygw/{module}.py imports {forbidden}"


def test_the_server_does_not_import_the_supervisor() -> None:
    assert "pygw.supervisor" not in imports_of("server"), "pygw/server.py imports pygw.supervisor"


@pytest.mark.parametrize(
    ("listen", "parsed"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":9901", ("127.0.0.1", 9901)),
        ("[::1]:0", ("::1", 0)),
        ("unix:/run/pygw/admin.sock", "/run/pygw/admin.sock"),
    ],
)
def test_listen_addresses(listen: str, parsed: tuple[str, int] | str) -> None:
    assert parse_listen(listen) == parsed


def test_formatted_addresses_parse_back() -> None:
    assert format_listen("::1", 8080) == "[::1]:8080"
    assert format_listen("127.0.0.1", 8080) == "127.0.0.1:8080"
    assert parse_listen(format_listen("::1", 8080)) == ("::1", 8080)
