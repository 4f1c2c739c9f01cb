"""Pure-Python model of ``pygw._native.ResponseCache``: an OrderedDict in recency order (last = most
recently used) with byte accounting (UTF-8 key bytes + the caller's size) and per-entry TTL."""

from __future__ import annotations

import math
from collections import OrderedDict


class ReferenceCache:
    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(capacity_bytes)
        self.capacity = capacity_bytes
        # key -> (value, cost in bytes, expires_at)
        self.entries: OrderedDict[str, tuple[object, int, float]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expired = 0

    @property
    def bytes_used(self) -> int:
        return sum(cost for _, cost, _ in self.entries.values())

    def get(self, key: str, now: float) -> object | None:
        if not math.isfinite(now):
            raise ValueError(now)
        if key not in self.entries:
            self.misses += 1
            return None
        value, _, expires_at = self.entries[key]
        if now >= expires_at:
            self.misses += 1
            self.expired += 1
            del self.entries[key]
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return value

    def put(self, key: str, value: object, size: int, ttl_s: float, now: float) -> bool:
        if not math.isfinite(now) or size < 0:
            raise ValueError(now)
        # A refused put still removes the stale entry under the same key.
        self.entries.pop(key, None)
        cost = len(key.encode()) + size
        if cost > self.capacity or math.isnan(ttl_s) or ttl_s <= 0:
            return False
        while self.bytes_used + cost > self.capacity:
            self.entries.popitem(last=False)
            self.evictions += 1
        self.entries[key] = (value, cost, now + ttl_s)
        return True

    def invalidate(self, key: str) -> bool:
        return self.entries.pop(key, None) is not None

    def clear(self) -> None:
        self.entries.clear()

    def stats(self) -> tuple[int, int, int, int, int]:
        return self.hits, self.misses, self.evictions, len(self.entries), self.bytes_used

    def __len__(self) -> int:
        return len(self.entries)
