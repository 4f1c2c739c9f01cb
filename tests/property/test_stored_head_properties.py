"""The native stored_lines, ResponseCache.keep_whole and ResponseCache.hit against the Python
they replaced in the cache stage: the same kept header lines, the same refusals, the same entry
and charge, the same X-Cache and Age on a hit."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pygw._native import STORED_LINE_OVERHEAD, ResponseCache, hit_headers, stored_lines
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


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=10**7))
def test_a_hits_age_is_the_whole_seconds_on_python_s_monotonic_clock(seconds: int) -> None:
    """The cache stage's `str(int(age))`: half a second either side of a whole second, so that
    the clock moving on between the two readings cannot change the answer."""
    own = {"x-request-id": "r"}
    hit_headers(own, time.monotonic() - seconds - 0.5)
    assert own == {"x-request-id": "r", "X-Cache": "Hit", "Age": str(seconds)}
    assert list(own) == ["x-request-id", "X-Cache", "Age"]


def test_an_entry_stored_in_the_future_is_age_0_and_a_set_age_is_replaced() -> None:
    own = {"Age": "7", "X-Cache": "Miss"}
    hit_headers(own, time.monotonic() + 30.0)
    assert own == {"Age": "0", "X-Cache": "Hit"}


def test_hit_stamps_an_entry_it_can_send_and_leaves_anything_else_alone() -> None:
    cache = ResponseCache(1 << 20)
    entry = cache.keep_whole(
        "whole", (b"ETag: v1\r\n", None, False, False, False), b"x", (), 60, time.monotonic() - 3.5
    )
    own: dict[str, str] = {}
    assert cache.hit("whole", own) is entry
    assert own == {"X-Cache": "Hit", "Age": "3"}
    # A Vary marker, an entry only aiohttp can send (no stored head), nothing at all.
    not_sendable = (200, (("ETag", "v1"),), b"x", 0.0, None, ())
    cache.put("marker", "accept", 1, 60)
    cache.put("full", not_sendable, 1, 60)
    for key, expected in (("marker", "accept"), ("full", not_sendable), ("absent", None)):
        own = {"x-request-id": "r"}
        assert cache.hit(key, own) == expected
        assert own == {"x-request-id": "r"}
    assert cache.stats()[:2] == (3, 1)  # hits and misses, counted as get counts them
