"""The native route trie picks exactly the route, parameters and path that the linear-scan
reference (tests/property/reference_router.py) picks, for any small table and request."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pygw import _native
from tests.property.reference_router import (
    ReferenceRouter,
    RouteConflict,
    match_segments,
    normalize,
)

RouteRow = tuple[str | None, str, str, int]
Request = tuple[str, str, str]

STATICS = ["a", "b", "v1", "a%2Fb"]
PREFIXES = ["", "/v1", "/a", "/a/b"]
HOSTS = [None, "h.com", "*.h.com", "*.x.h.com"]
REQUEST_HOSTS = ["h.com", "H.com:8080", "x.h.com", "y.x.h.com", "other.org", "h.com."]
METHODS = ["GET", "POST", "ANY"]
REQUEST_METHODS = ["GET", "POST", "PUT"]
PATH_SEGMENTS = ["a", "b", "v1", "a%2Fb", "z", "", ".", "..", "%2e%2E", "%41"]


@st.composite
def route_keys(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return "$default"
    segs: list[str] = []
    for i in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            segs.append(draw(st.sampled_from(STATICS)))
        else:
            # Names vary between keys so that renamed parameters must still conflict.
            segs.append("{" + draw(st.sampled_from("xy")) + str(i) + "}")
    if draw(st.integers(0, 3)) == 0:
        segs.append("{" + draw(st.sampled_from("gh")) + "+}")
    return draw(st.sampled_from(METHODS)) + " /" + "/".join(segs)


@st.composite
def tables(draw: st.DrawFn) -> list[RouteRow]:
    size = draw(st.integers(1, 8))
    one_host = draw(st.booleans())
    rows: list[RouteRow] = []
    for route_id in range(size):
        host = None if one_host else draw(st.sampled_from(HOSTS))
        rows.append((host, draw(st.sampled_from(PREFIXES)), draw(route_keys()), route_id))
    # A root-level catch-all next to mounts, as another API of the gateway would add: the mount
    # chosen first must keep it from catching requests under a mount that answers.
    if draw(st.integers(0, 3)) == 0:
        host = None if one_host else draw(st.sampled_from(HOSTS))
        key = draw(st.sampled_from(["ANY /{proxy+}", "GET /{proxy+}", "$default"]))
        rows.append((host, "", key, len(rows)))
    # Mirror a route with its prefix moved into the key: both match the same requests, and the
    # deeper mount must win over a route that ranks the same or better at the root.
    mirrorable = [r for r in rows if r[1] and r[2] != "$default"]
    mirror = draw(st.booleans())
    if mirrorable and mirror:
        host, prefix, key, _ = draw(st.sampled_from(mirrorable))
        path = key.split(" ", 1)[1]
        mirrored = f"{draw(st.sampled_from(METHODS))} {prefix}{path if path != '/' else ''}"
        rows.insert(draw(st.integers(0, len(rows))), (host, "", mirrored, len(rows)))
    return rows


@st.composite
def paths(draw: st.DrawFn) -> str:
    segs = draw(st.lists(st.sampled_from(PATH_SEGMENTS), max_size=5))
    lead = "/" * draw(st.sampled_from([1, 1, 1, 2]))
    trail = "/" * draw(st.sampled_from([0, 0, 1, 2]))
    return lead + "/".join(segs) + trail


requests = st.tuples(st.sampled_from(REQUEST_HOSTS), st.sampled_from(REQUEST_METHODS), paths())


@st.composite
def aimed_requests(draw: st.DrawFn, rows: list[RouteRow]) -> Request:
    """A request built from one route of the table, so that most requests match something."""
    host, prefix, key, _ = draw(st.sampled_from(rows))
    if host is None:
        request_host = draw(st.sampled_from(REQUEST_HOSTS))
    else:
        request_host = host.replace("*", draw(st.sampled_from(["q", "q.r"])))
    segs = [s for s in prefix.split("/") if s]
    if draw(st.booleans()):
        segs.append("")  # a double slash right after the prefix
    pattern = key.split(" ", 1)[1] if " " in key else "/" + draw(st.sampled_from(STATICS))
    for seg in pattern.strip("/").split("/") if pattern != "/" else []:
        if seg.endswith("+}"):
            segs.extend(draw(st.lists(st.sampled_from(PATH_SEGMENTS[:6]), min_size=1, max_size=3)))
        elif seg.startswith("{"):
            segs.append(draw(st.sampled_from(PATH_SEGMENTS)))
        else:
            segs.append(seg)
    trail = draw(st.sampled_from(["", "", "/", "//"]))
    method = draw(st.sampled_from(REQUEST_METHODS))
    return request_host, method, "/" + "/".join(segs) + trail


def build(rows: list[RouteRow]) -> tuple[_native.Router, ReferenceRouter] | None:
    try:
        native = _native.Router(rows)
    except ValueError as native_error:
        with pytest.raises(RouteConflict):
            ReferenceRouter(rows)
        assert "conflicting routes" in str(native_error)
        return None
    return native, ReferenceRouter(rows)


@settings(max_examples=600, deadline=None)
@given(tables(), st.lists(requests, min_size=1, max_size=6), st.data())
def test_native_router_matches_reference(
    rows: list[RouteRow], reqs: list[Request], data: st.DataObject
) -> None:
    built = build(rows)
    if built is None:
        return
    native, reference = built
    assert len(native) == len(rows)
    reqs = reqs + data.draw(st.lists(aimed_requests(rows), min_size=1, max_size=8))
    for host, method, path in reqs:
        assert native.lookup(host, method, path) == reference.lookup(host, method, path), (
            host,
            method,
            path,
        )


@settings(max_examples=500, deadline=None)
@given(tables(), st.lists(requests, min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_insertion_order_does_not_matter(
    rows: list[RouteRow], reqs: list[Request], rnd: random.Random
) -> None:
    if build(rows) is None:
        return
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    first, second = _native.Router(rows), _native.Router(shuffled)
    assert first.precedence_order() == second.precedence_order()
    assert sorted(first.precedence_order()) == sorted({r[3] for r in rows})
    for host, method, path in reqs:
        assert first.lookup(host, method, path) == second.lookup(host, method, path)


raw_paths = st.one_of(
    paths(),
    st.lists(
        st.sampled_from(["/", ".", "%2e", "%2E", "%", "%2", "a", "é", "%2f", "\\"]),
        max_size=30,
    ).map(lambda parts: "/" + "".join(parts)),
)


@settings(max_examples=1000, deadline=None)
@given(raw_paths)
def test_normalize_path_never_escapes(raw: str) -> None:
    result = _native.normalize_path(raw)
    assert result == normalize(raw)
    assert result.startswith("/")
    assert not result.startswith("//")
    segments = result[1:].split("/")
    for seg in segments:
        assert seg.replace("%2e", ".").replace("%2E", ".") not in (".", "..")
    assert _native.normalize_path(result) == result
    # Nothing is decoded: every byte of the result comes from the input.
    assert all(seg in raw for seg in segments)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(PREFIXES[1:]), paths())
def test_dot_segments_stay_below_the_prefix(prefix: str, tail: str) -> None:
    router = _native.Router([(None, prefix, "ANY /{proxy+}", 1), (None, "", "ANY /{p+}", 2)])
    found = router.lookup("h", "GET", prefix + tail)
    if found is None:
        return
    route_id, params, path = found
    if route_id == 1:
        # What was matched under the prefix is what the integration sees: no dot segment left.
        assert ".." not in match_segments(path)
        assert params["proxy"] == path.strip("/")


@pytest.mark.parametrize("raw", ["", "/", "//a", "/a/../../b", "/a/%2e%2e/b", "/a//b/", "/x/./y/."])
def test_normalize_examples(raw: str) -> None:
    assert _native.normalize_path(raw) == normalize(raw)


@pytest.mark.parametrize("raw", ["a", "http://x/", "/a\x00", "/a\r\n", "/\x7f", "/\x85"])
def test_invalid_paths(raw: str) -> None:
    with pytest.raises(ValueError, match="invalid path"):
        _native.normalize_path(raw)
    with pytest.raises(ValueError, match="invalid path"):
        _native.Router([(None, "", "ANY /{p+}", 1)]).lookup("h", "GET", raw)


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ([(None, "", "GET /a/{x}", 1), (None, "", "GET /a/{y}", 2)], '"GET /a/{x}" (id 1)'),
        ([(None, "", "get /a", 1)], "unknown method"),
        ([(None, "", "GET /{p+}/a", 1)], "last segment"),
        ([(None, "v1", "GET /a", 1)], "invalid prefix"),
    ],
)
def test_bad_tables_raise_value_error(rows: list[RouteRow], fragment: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        _native.Router(rows)
    assert fragment in str(info.value)
