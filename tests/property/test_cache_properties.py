"""The native ResponseCache holds, returns, evicts and counts exactly like the OrderedDict reference
model, and hands back the very object that was put."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pygw import _native
from tests.property.reference_cache import ReferenceCache

# A small key pool so that hits, replacements and evictions are frequent; some keys are multi-byte.
keys = st.sampled_from(["a", "b", "c", "/pets/1", "/pets/2", "ключ", "🐍", ""])
# Mostly long enough to see hits and evictions; also 0 (not stored), negative, NaN and short ones.
ttls = st.one_of(
    st.sampled_from([60.0, 1000.0, math.inf]),
    st.sampled_from([0.0, -1.0, 0.5, 1.0, 5.0, math.nan]),
    st.floats(min_value=0.0, max_value=10.0, allow_nan=False),
)
time_steps = st.one_of(
    st.sampled_from([0.0, 0.0, 0.5, 1.0, -1.0, 100.0]),
    st.floats(min_value=-2.0, max_value=5.0, allow_nan=False),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, st.integers(0, 40), ttls, time_steps),
        st.tuples(st.just("get"), keys, time_steps),
        st.tuples(st.just("get"), keys, time_steps),
        st.tuples(st.just("put"), keys, st.integers(0, 40), ttls, time_steps),
        st.tuples(st.just("invalidate"), keys),
        st.tuples(st.just("clear")),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=500, deadline=None)
@given(capacity=st.integers(0, 120), operations=ops)
def test_matches_reference(capacity: int, operations: list[tuple[Any, ...]]) -> None:
    native = _native.ResponseCache(capacity)
    model = ReferenceCache(capacity)
    now = 1000.0
    for n, op in enumerate(operations):
        kind = op[0]
        if kind == "put":
            _, key, size, ttl, step = op
            now += step
            value = (key, n)  # a fresh object per put, so identity says which put a hit came from
            assert native.put(key, value, size, ttl, now) == model.put(key, value, size, ttl, now)
        elif kind == "get":
            _, key, step = op
            now += step
            got = native.get(key, now)
            want = model.get(key, now)
            assert got is want
        elif kind == "invalidate":
            assert native.invalidate(op[1]) == model.invalidate(op[1])
        else:
            native.clear()
            model.clear()
        assert native.stats() == model.stats()
        assert len(native) == len(model)
        assert native.stats()[4] <= capacity
    # Probe every key at the end: same contents, same objects.
    for key in ["a", "b", "c", "/pets/1", "/pets/2", "ключ", "🐍", ""]:
        assert native.get(key, now) is model.get(key, now)
    assert native.stats() == model.stats()


@settings(max_examples=500, deadline=None)
@given(
    capacity=st.integers(0, 60),
    operations=st.lists(
        st.tuples(st.sampled_from(["put", "get", "get"]), keys, st.integers(0, 15)),
        min_size=1,
        max_size=60,
    ),
)
def test_recency_matches_reference(capacity: int, operations: list[tuple[str, str, int]]) -> None:
    """Without expiry in play, hits must refresh recency exactly as the model does."""
    native = _native.ResponseCache(capacity)
    model = ReferenceCache(capacity)
    for n, (kind, key, size) in enumerate(operations):
        if kind == "put":
            value = (key, n)
            assert native.put(key, value, size, math.inf, 0.0) == model.put(
                key, value, size, math.inf, 0.0
            )
        else:
            assert native.get(key, 0.0) is model.get(key, 0.0)
    assert native.stats() == model.stats()


@settings(max_examples=500, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 30), min_size=1, max_size=80),
    capacity=st.integers(1, 200),
)
def test_lru_eviction_order(sizes: list[int], capacity: int) -> None:
    """Distinct keys, no TTL expiry: what survives is the longest suffix of puts that fits."""
    native = _native.ResponseCache(capacity)
    stored = []
    for i, size in enumerate(sizes):
        key = f"k{i:03d}"
        if native.put(key, i, size, math.inf, 0.0):
            stored.append((key, len(key) + size))
    survivors: list[str] = []
    used = 0
    for key, cost in reversed(stored):
        if used + cost > capacity:
            break
        survivors.append(key)
        used += cost
    assert len(native) == len(survivors)
    assert native.stats()[4] == used
    for key in survivors:
        assert native.get(key, 0.0) is not None


def test_binding_behaviour() -> None:
    cache = _native.ResponseCache(1000)
    body = object()
    assert cache.put("k", body, 10, 60.0)
    assert cache.get("k") is body  # default clock: monotonic, well within the TTL
    assert cache.get("k", _native.monotonic() + 120.0) is None
    assert cache.stats() == (1, 1, 0, 0, 0)
    with pytest.raises(ValueError):
        cache.get("k", math.nan)
    with pytest.raises(ValueError):
        cache.put("k", body, -1, 1.0)
    with pytest.raises(ValueError):
        _native.ResponseCache(-1)
    assert not cache.put("k", body, 10, 0.0)
    assert not cache.invalidate("k")
    assert cache.put("k", None, 1, 1.0, 0.0)
    assert cache.invalidate("k")
    cache.put("a", 1, 1, 1.0, 0.0)
    cache.clear()
    assert len(cache) == 0


def test_values_dropped_outside_the_lock() -> None:
    """A value whose finaliser calls back into the cache must not deadlock eviction."""
    cache = _native.ResponseCache(20)
    seen: list[object] = []

    class Reentrant:
        def __del__(self) -> None:
            seen.append(cache.get("other", 0.0))
            cache.put("late", 1, 0, 1.0, 0.0)

    # victim costs 6 + 5 bytes and other 5 + 8: putting other evicts the victim, whose __del__
    # re-enters the cache.
    cache.put("victim", Reentrant(), 5, 1.0, 0.0)
    cache.put("other", 2, 8, 1.0, 0.0)
    assert seen == [2]
    cache.put("victim", Reentrant(), 0, 1.0, 0.0)
    cache.clear()
    assert len(seen) == 2
    cache.put("victim", Reentrant(), 0, 1.0, 0.0)
    assert cache.invalidate("victim")
    assert len(seen) == 3
