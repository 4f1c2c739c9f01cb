"""Route selection of WebSocket messages: `route_selection: $request.body.a.b` evaluated on a
message as JSON names the route; the reserved keys name the connection's own events."""

from __future__ import annotations

from typing import Any, Final

import orjson

__all__ = ["CONNECT", "DEFAULT", "DISCONNECT", "select_route", "selection_path"]

CONNECT: Final = "$connect"
DISCONNECT: Final = "$disconnect"
DEFAULT: Final = "$default"


def selection_path(expression: str) -> tuple[str, ...]:
    """The field path of `$request.body.FIELD[.FIELD...]`; ValueError for anything else."""
    prefix = "$request.body."
    if not expression.startswith(prefix) or len(expression) == len(prefix):
        raise ValueError(f"route_selection {expression!r} is not $request.body.FIELD")
    return tuple(expression[len(prefix) :].split("."))


def select_route(text: str | bytes, path: tuple[str, ...]) -> str | None:
    """The value `$request.body.<path>` selects in a message, or None (not JSON, no such field,
    not a string)."""
    try:
        found: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    for part in path:
        if not isinstance(found, dict):
            return None
        found = found.get(part)
    return found if isinstance(found, str) else None
