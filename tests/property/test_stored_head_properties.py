"""The native stored_lines and ResponseCache.keep_whole against the Python they replaced in the
cache stage: the same kept header lines, the same refusals, the same entry and charge."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pygw._native import STORED_LINE_OVERHEAD, ResponseCache, stored_lines
from tests.property.reference_heads import NOT_STORED, reference_stored_lines

_NAMES = sorted(NOT_STORED | {b"set-cookie", b"cache-control", b"server", b"etag", b"x-own"})
names = st.sampled_from(_NAMES).flatmap(
    lambda name: st.sampled_from([name, name.upper(), name.title(), b" " + name])
) | st.binary(max_size=8)
values = st.sampled_from(
    [
        b" no-store",
        b" public, max-age=60",
        b" max-age=0, Private",
        b' no-cache="set-cookie"',
        b"\xa0no-cache",
        b" \x85private , x",
        b" nostore",
        b"",
    ]
) | st.binary(max_size=12)
lines_of = st.lists(st.tuples(names, st.sampled_from([b":", b": ", b""]), values), max_size=8).map(
    lambda parts: b"".join(n + sep + v + b"\r\n" for n, sep, v in parts)
)
# Own names are header names a stage sets: ASCII, as HTTP's token grammar requires.
own = st.lists(
    st.sampled_from(["X-Own", "Age", "x-cache", "ETag", "RateLimit-Limit", "server"]), max_size=4
).map(tuple)


@settings(max_examples=800)
@given(lines_of | st.binary(max_size=60), own)
def test_same_lines_and_refusals_as_the_python(lines: bytes, own_names: tuple[str, ...]) -> None:
    assert stored_lines(lines, own_names) == reference_stored_lines(lines, own_names)


@settings(max_examples=300)
@given(lines_of, own, st.binary(max_size=40), st.booleans(), st.booleans())
def test_keep_whole_stores_the_entry_the_python_built(
    lines: bytes, own_names: tuple[str, ...], body: bytes, has_type: bool, has_server: bool
) -> None:
    cache = ResponseCache(1 << 20)
    now = time.monotonic()
    entry = cache.keep_whole(
        "k", (lines, None, has_type, has_server, True), body, own_names, 60, now
    )
    expected = reference_stored_lines(lines, own_names)
    if expected is None:
        assert entry is None
        assert cache.get("k") is None
        return
    kept, count = expected
    assert entry is not None
    status, pairs, stored_body, stored_at, head, filtered_for = entry
    assert (status, pairs, stored_body, filtered_for) == (200, (), body, own_names)
    assert head == (kept, None, has_type, has_server, False)
    assert stored_at == now
    assert cache.get("k") is entry
    charged = cache.stats()[4]
    assert charged == len(b"k") + len(body) + len(kept) + STORED_LINE_OVERHEAD * count


def test_an_unfiltered_head_shares_the_answers_bytes() -> None:
    lines = b"Server: up\r\nETag: v1\r\n"
    entry = ResponseCache(1 << 20).keep_whole(
        "k", (lines, None, False, True, False), b"x", (), 60, 0.0
    )
    assert entry is not None
    assert entry[4][0] is lines


def test_a_head_with_vary_is_refused() -> None:
    cache = ResponseCache(1 << 20)
    with pytest.raises(ValueError, match="without Vary"):
        cache.keep_whole("k", (b"", "Accept", False, False, False), b"", (), 60, 0.0)  # type: ignore[arg-type]
    assert len(cache) == 0
