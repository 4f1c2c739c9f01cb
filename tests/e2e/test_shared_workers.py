"""Several worker processes share one SharedThrottle file: a bucket limits them all together, a
quota counts them all together, and a worker killed mid-flight leaks at most its one request."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from typing import Any

from pygw import _native

WORKERS = 4
RATE = 200.0
BURST = 50
SECONDS = 2.0
QUOTA = 300
DRAIN_BURST = 1_000_000  # the victim, alone, must not empty it before it is killed
JOIN_TIMEOUT_S = 60.0

# Bucket 0: the rate-limited one; bucket 1: plenty of tokens, gated by quota 0.
BUCKETS = [(RATE, BURST), (0.0, 1_000_000)]
QUOTAS = [(QUOTA, "DAY")]
# For the kill test: two never-refilling buckets taken together.
DRAIN_BUCKETS = [(0.0, DRAIN_BURST), (0.0, DRAIN_BURST)]


def _hammer(path: str, ready: Any, go: Any, results: Any) -> None:
    throttle = _native.SharedThrottle(path, BUCKETS, QUOTAS)
    ready.put(os.getpid())
    start = go.get(timeout=JOIN_TIMEOUT_S)
    end = start + SECONDS
    while _native.host_monotonic() < start:
        time.sleep(0.001)
    rated = 0
    while _native.host_monotonic() < end:
        if throttle.acquire([0])[0] == _native.GRANTED:
            rated += 1
    quota = sum(throttle.acquire([1], 0)[0] == _native.GRANTED for _ in range(QUOTA))
    results.put((rated, quota))


def _drain(path: str, slot: int, granted: Any, ready: Any, go: Any) -> None:
    throttle = _native.SharedThrottle(path, DRAIN_BUCKETS, [])
    ready.put(slot)
    if go is not None and not go.wait(JOIN_TIMEOUT_S):
        return
    while throttle.acquire([1, 0])[0] == _native.GRANTED:
        # Counted after the grant: a kill between the two loses one count, like a lost response.
        granted.value += 1


def test_workers_share_one_rate_and_one_quota(tmp_path: Path) -> None:
    path = str(tmp_path / "throttle")
    # Created (full) before any worker starts, so every worker sees the same starting level.
    owner = _native.SharedThrottle(path, BUCKETS, QUOTAS)
    ctx = mp.get_context("spawn")
    ready: Any = ctx.Queue()
    go: Any = ctx.Queue()
    results: Any = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(path, ready, go, results)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=JOIN_TIMEOUT_S)
        start = _native.host_monotonic() + 0.2
        for _ in procs:
            go.put(start)
        counts = [results.get(timeout=JOIN_TIMEOUT_S) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=JOIN_TIMEOUT_S)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    rated = sum(c[0] for c in counts)
    expected = RATE * SECONDS + BURST
    assert abs(rated - expected) <= 0.03 * expected, (rated, counts)
    # Each worker got a share: the limit is on the host, not on whichever worker ran first.
    assert sum(1 for c in counts if c[0] > 0) >= 2, counts
    assert sum(c[1] for c in counts) == QUOTA, counts
    assert owner.acquire([1], 0)[0] == _native.QUOTA_EXCEEDED


def test_killed_worker_leaks_at_most_one_request(tmp_path: Path) -> None:
    path = str(tmp_path / "drain")
    owner = _native.SharedThrottle(path, DRAIN_BUCKETS, [])
    ctx = mp.get_context("spawn")
    ready: Any = ctx.Queue()
    counters = [ctx.Value("q", 0, lock=False) for _ in range(3)]
    # The survivors start draining once the victim is dead: on a busy machine they could
    # otherwise empty the buckets before the victim had run at all.
    survivors_go = ctx.Event()
    procs = [
        ctx.Process(target=_drain, args=(path, i, counters[i], ready, survivors_go if i else None))
        for i in range(len(counters))
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=JOIN_TIMEOUT_S)
        victim = procs[0]
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        # Killed while it is busy taking tokens.
        while counters[0].value < 1_000 and victim.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert victim.is_alive(), "the bucket drained before the worker could be killed"
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=JOIN_TIMEOUT_S)
        survivors_go.set()
        for p in procs:
            p.join(timeout=JOIN_TIMEOUT_S)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    assert procs[0].exitcode == -signal.SIGKILL
    assert all(p.exitcode == 0 for p in procs[1:])
    counted = sum(c.value for c in counters)
    # Every token went to a counted request except at most the one the victim had in flight.
    assert DRAIN_BURST - 1 <= counted <= DRAIN_BURST, counted
    # The survivors drained both buckets; what is left is consistent: nothing.
    status, _, limit, remaining, _, _ = owner.acquire([0, 1])
    assert (status, limit, remaining) == (_native.THROTTLED, DRAIN_BURST, 0)
