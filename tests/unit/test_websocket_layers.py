"""WebSocket APIs sit beside the integrations: nothing under pygw/integrations or pygw/websocket
imports a stage (the runtime builds the authorizer and throttle stages and hands them in)."""

from __future__ import annotations

import ast
from pathlib import Path

PYGW = Path(__file__).resolve().parents[2] / "pygw"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_integrations_and_websocket_import_no_stage() -> None:
    broken = [
        f"{path.relative_to(PYGW.parent)} imports {name}"
        for folder in ("integrations", "websocket")
        for path in sorted((PYGW / folder).glob("*.py"))
        for name in sorted(_imports(path))
        if name == "pygw.stages" or name.startswith("pygw.stages.")
    ]
    assert broken == []


def test_websocket_modules_are_found() -> None:
    # The walk above must see the package, or it would pass vacuously.
    names = {path.name for path in (PYGW / "websocket").glob("*.py")}
    expected = {"api.py", "events.py", "selection.py", "session.py", "targets.py", "telemetry.py"}
    assert expected <= names
