"""A linear-scan router that applies pygw's routing rules (SPEC.md section 3) literally.

It is slow on purpose: the mounts (base path + stage) that lead the request path are tried
deepest first, and within one mount every route is tried and the winner is the minimum of an
explicit rank tuple, so each rule can be read off the code. The native trie must agree with it on
every table and request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
STATIC, PARAM, GREEDY = 0, 1, 2
_DOT = re.compile(r"(?:\.|%2[eE])")

Rank = tuple[tuple[int, ...], bool]


class RouteConflict(ValueError):
    """A route table the reference rejects (a conflict or a bad key)."""


def _is_dot_segment(seg: str) -> bool:
    """`.` or `..` in any spelling that an upstream might decode to one (`%2e`, `.%2E`, ...)."""
    stripped = _DOT.sub("", seg)
    dots = len(_DOT.findall(seg))
    return stripped == "" and dots in (1, 2)


def normalize(raw: str) -> str:
    """RFC 3986 5.2.4 dot removal clamped at the root, leading slashes collapsed, no decoding."""
    if raw == "":
        return "/"
    if not raw.startswith("/"):
        raise ValueError("path must start with '/'")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in raw):
        raise ValueError("control character")
    segs = raw.lstrip("/").split("/")
    out: list[str] = []
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if _is_dot_segment(seg):
            if _DOT.sub(".", seg) == ".." and out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    while len(out) > 1 and out[0] == "":
        out.pop(0)
    return "/" + "/".join(out)


def match_segments(normalized: str) -> list[str]:
    """Segments without the trailing empty ones: a trailing slash is ignored for matching."""
    trimmed = normalized.rstrip("/")
    return trimmed[1:].split("/") if trimmed else []


@dataclass(frozen=True)
class Route:
    host: str | None  # None, "a.example.com" or "*.example.com" (lower-case)
    prefix: tuple[str, ...]
    method: str | None  # None for ANY and $default
    pattern: tuple[tuple[int, str], ...] | None  # None for $default; (kind, static value or name)
    route_id: int
    key: str

    @property
    def shape(self) -> object:
        """What two conflicting routes share: parameters renamed are the same shape."""
        if self.pattern is None:
            return None
        return tuple((k, v if k == STATIC else "") for k, v in self.pattern)


def parse(host: str | None, prefix: str, key: str, route_id: int) -> Route:
    """The subset of key syntax the property tests generate (valid keys only)."""
    prefix_segs = tuple(s for s in prefix.split("/") if s)
    h = host.lower() if host is not None else None
    if key == "$default":
        return Route(h, prefix_segs, None, None, route_id, key)
    method, path = key.split(" ", 1)
    pattern: list[tuple[int, str]] = []
    for seg in path[1:].split("/") if path != "/" else []:
        if seg.startswith("{") and seg.endswith("+}"):
            pattern.append((GREEDY, seg[1:-2]))
        elif seg.startswith("{"):
            pattern.append((PARAM, seg[1:-1]))
        else:
            pattern.append((STATIC, seg))
    return Route(h, prefix_segs, None if method == "ANY" else method, tuple(pattern), route_id, key)


def _match_pattern(
    pattern: tuple[tuple[int, str], ...], segs: list[str]
) -> list[tuple[str, str]] | None:
    params: list[tuple[str, str]] = []
    for i, (kind, value) in enumerate(pattern):
        if kind == GREEDY:
            rest = segs[i:]
            if not rest:
                return None
            params.append((value, "/".join(rest)))
            return params
        if i >= len(segs):
            return None
        if kind == STATIC and segs[i] != value:
            return None
        if kind == PARAM:
            if segs[i] == "":
                return None
            params.append((value, segs[i]))
    return params if len(segs) == len(pattern) else None


def _below(normalized: str, depth: int) -> str:
    """The path below `depth` prefix segments, with the slashes right after them collapsed."""
    if depth == 0:
        return normalized
    parts = normalized[1:].split("/")
    rest = "/".join(parts[depth:])
    return "/" + rest.lstrip("/")


class ReferenceRouter:
    def __init__(self, routes: list[tuple[str | None, str, str, int]]) -> None:
        self.routes = [parse(*r) for r in routes]
        seen: dict[object, Route] = {}
        for r in self.routes:
            ident = (r.host, r.prefix, r.method, r.shape, r.pattern is None)
            if ident in seen:
                raise RouteConflict(f"conflict: {seen[ident].key!r} and {r.key!r}")
            seen[ident] = r

    def _host_group(self, host: str) -> str | bool | None:
        """The host key whose routes serve this Host, `None` for the host-less ones, or False."""
        name = host.lower()
        if name.startswith("["):
            name = name[: name.find("]") + 1] if "]" in name else name
        else:
            name = name.split(":", 1)[0]
        name = name.removesuffix(".")
        keys = {r.host for r in self.routes}
        exact = {k for k in keys if k is not None and not k.startswith("*.")}
        if name in exact:
            return name
        labels = name.split(".")
        for i in range(1, len(labels)):  # longest suffix first
            wildcard = "*." + ".".join(labels[i:])
            if wildcard in keys:
                return wildcard
        return None if None in keys else False

    def lookup(self, host: str, method: str, path: str) -> tuple[int, dict[str, str], str] | None:
        normalized = normalize(path)
        segs = match_segments(normalized)
        group = self._host_group(host)
        if group is False:
            return None
        routes = [r for r in self.routes if r.host == group]
        # The deepest mount that answers decides, as base-path mappings on a custom domain pick
        # the mapping before the route; a mount with no matching route and no $default passes.
        mounts = {r.prefix for r in routes if tuple(segs[: len(r.prefix)]) == r.prefix}
        for prefix in sorted(mounts, key=len, reverse=True):
            found = self._lookup_mount([r for r in routes if r.prefix == prefix], method, segs)
            if found is not None:
                route_id, params = found
                return route_id, dict(params), _below(normalized, len(prefix))
        return None

    @staticmethod
    def _lookup_mount(
        routes: list[Route], method: str, segs: list[str]
    ) -> tuple[int, list[tuple[str, str]]] | None:
        """The best route of one mount for these path segments, else its $default."""
        best: tuple[Rank, Route, list[tuple[str, str]]] | None = None
        default: Route | None = None
        for r in routes:
            if r.pattern is None:
                default = r
                continue
            rest = segs[len(r.prefix) :]
            while rest and rest[0] == "":  # a double slash right after the prefix is dropped
                rest = rest[1:]
            params = _match_pattern(r.pattern, rest)
            if params is None or r.method not in (None, method):
                continue
            # Segment kinds left to right, then method-specific before ANY.
            rank: Rank = (tuple(kind for kind, _ in r.pattern), r.method is None)
            if best is None or rank < best[0]:
                best = (rank, r, params)
        if best is not None:
            return best[1].route_id, best[2]
        if default is not None:
            return default.route_id, []
        return None
