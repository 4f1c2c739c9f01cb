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

__all__ = ["QueryNames", "query_values"]


class QueryNames:
    """Which of some names a query string lacks. Compiled once: a query string with nothing to
    decode (the usual one) is then searched for `&name=` and `&name&`, never split."""

    __slots__ = ("_names", "_probes")

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)
        # A name with "&" or "=" cannot be searched for that way (and never appears undecoded).
        self._probes = tuple(
            (name, f"&{name}=", f"&{name}&")
            if name and "&" not in name and "=" not in name
            else (name, None, None)
            for name in self._names
        )

    def missing(self, raw: str) -> tuple[str, ...]:
        """Those of the names (in their order) that `raw`, the query string as sent (without
        `?`), does not have, with or without a value."""
        if "%" in raw or "+" in raw:
            present = {unquote_plus(piece.partition("=")[0]) for piece in raw.split("&") if piece}
            return tuple(name for name in self._names if name not in present)
        padded = "&" + raw + "&"
        missing: tuple[str, ...] = ()
        for name, with_value, without in self._probes:
            if with_value is None or without is None:
                if name != "" or "&=" not in padded:
                    missing += (name,)
            elif with_value not in padded and without not in padded:
                missing += (name,)
        return missing


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
