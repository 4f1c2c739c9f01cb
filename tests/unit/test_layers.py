"""The import rules that keep pygw's data flow one way, checked on the source with `ast`: no
stage imports another stage or an integration; no integration and nothing of the WebSocket
package imports a stage (the runtime builds stages and hands them in); the admin side depends on
the process it serves only through AdminBackend; and no two pygw modules import each other,
directly or through others (typing-only imports included)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pygw"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def pygw_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(path: Path, known: dict[str, Path]) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                yield node.module
            for alias in node.names:
                if f"{node.module}.{alias.name}" in known:
                    yield f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name


def import_graph() -> dict[str, set[str]]:
    known = pygw_modules()
    return {
        name: {other for other in imported(path, known) if other != name}
        for name, path in known.items()
    }


def is_stage(name: str) -> bool:
    return name.startswith("pygw.stages.")


def is_integration(name: str) -> bool:
    return name.startswith("pygw.integrations.")


def test_stages_import_no_stage_and_no_integration() -> None:
    broken = sorted(
        f"{name} imports {other}"
        for name, others in import_graph().items()
        if is_stage(name)
        for other in others
        if is_stage(other) or is_integration(other) or other == "pygw.integrations"
    )
    assert broken == []


def test_integrations_and_websocket_import_no_stage() -> None:
    broken = sorted(
        f"{name} imports {other}"
        for name, others in import_graph().items()
        if is_integration(name) or name.startswith("pygw.websocket")
        for other in others
        if is_stage(other) or other == "pygw.stages"
    )
    assert broken == []


def test_the_walk_sees_every_package() -> None:
    # The rules above would pass vacuously on modules the walk missed.
    graph = import_graph()
    for expected in ("pygw.stages.cors", "pygw.integrations.http_proxy", "pygw.websocket.api"):
        assert expected in graph


@pytest.mark.parametrize(
    "module", ["pygw.admin", "pygw.admin_backend", "pygw.fault_admin", "pygw.listen"]
)
def test_the_admin_side_does_not_import_the_gateway_or_the_supervisor(module: str) -> None:
    found = import_graph()[module]
    assert not found & {"pygw.server", "pygw.supervisor"}, f"{module} imports {sorted(found)}"


def test_the_server_does_not_import_the_supervisor() -> None:
    assert "pygw.supervisor" not in import_graph()["pygw.server"]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
