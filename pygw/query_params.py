"""A few named parameters read from a raw query string, without decoding the rest of it.

`Request.query` decodes every parameter into a MultiDict: tens of thousands of instructions for a
short query string it has not seen before. A stage that needs one or two names (validation, a
cache key) reads them here for a fraction of that. Names and values are decoded exactly as
`Request.query` decodes them (`urllib.parse.parse_qsl(raw, keep_blank_values=True)`: pieces split
on `&`, empty pieces skipped, a piece without `=` has the value "", `+` is a space, percent-escapes
are UTF-8 with invalid bytes replaced).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from urllib.parse import unquote_plus

from pygw._native import query_missing

__all__ = ["QueryNames", "query_values"]


class QueryNames:
    """Which of some names a query string lacks: in one native call for a query string with
    nothing to decode (the usual one)."""

    __slots__ = ("_names",)

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)

    def missing(self, raw: str) -> tuple[str, ...]:
        """Those of the names (in their order) that `raw`, the query string as sent (without
        `?`), does not have, with or without a value."""
        found = query_missing(raw, self._names)
        if found is not None:
            return found
        present = {unquote_plus(piece.partition("=")[0]) for piece in raw.split("&") if piece}
        return tuple(name for name in self._names if name not in present)


def query_values(raw: str, names: Collection[str]) -> dict[str, list[str]]:
    """The decoded values of each of `names` present in `raw`, in the order sent (a
    name that is absent has no entry)."""
    found: dict[str, list[str]] = {}
    if not raw:
        return found
    plain = "%" not in raw and "+" not in raw
    for piece in raw.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        if not plain:
            name = unquote_plus(name)
        if name in names:
            if not plain:
                value = unquote_plus(value)
            values = found.get(name)
            if values is None:
                found[name] = [value]
            else:
                values.append(value)
    return found
