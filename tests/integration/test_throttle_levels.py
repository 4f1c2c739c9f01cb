"""Every throttle backend names the level that refused the same way: the position, in the ids it
was given, of the first bucket that had no token (None when granted or refused by the quota), as
the pure-Python reference model does."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from pygw import _native
from pygw.stages.throttle import Decision
from pygw.state.redis_throttle import RedisThrottle, close_pools
from tests.integration.redis_server import running_redis
from tests.property.reference_throttle import ReferenceThrottle

pytestmark = pytest.mark.timeout(60)

# (rate, burst): never refilling, so every backend decides exactly alike.
BUCKETS = [(0.0, 4), (0.0, 1), (0.0, 2), (0.0, 0)]
QUOTA = (3, "MONTH")
NOW, UNIX_NOW = 100.0, 1_750_000_000.0

# (bucket ids, quota): a duplicate, every order of two refusing buckets, the quota.
REQUESTS: list[tuple[list[int], int | None]] = [
    ([0, 1], None),  # granted; bucket 1 now empty
    ([0, 1], None),  # 1 refuses: position 1
    ([1, 0], None),  # position 0
    ([0, 2, 2], 0),  # granted, quota 1/3
    ([0, 2], 0),  # granted, quota 2/3; bucket 2 now empty
    ([2, 1, 0], None),  # both 2 and 1 refuse: the first named, position 0
    ([0, 0, 1, 2], None),  # position 2
    ([0], 0),  # granted, quota 3/3 (bucket 0 left: 0)
    ([3], None),  # burst 0 always refuses
    ([], 0),  # the quota refuses: None
]

Acquire = Callable[[list[int], int | None], Awaitable[Decision]]


def reference_decisions() -> list[Decision]:
    ref = ReferenceThrottle()
    for rate, burst in BUCKETS:
        ref.add_bucket(rate, burst)
    ref.add_quota(*QUOTA)
    return [ref.acquire(ids, quota, NOW, UNIX_NOW) for ids, quota in REQUESTS]


@pytest.fixture(autouse=True)
async def pools_closed() -> AsyncIterator[None]:
    """The redis backend's pool ends with the test's event loop, not as a warning later on."""
    yield
    await close_pools()


@pytest.fixture(params=["local", "shared", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Acquire]:
    if request.param == "local":
        local = _native.Throttle()
        for rate, burst in BUCKETS:
            local.add_bucket(rate, burst)
        local.add_quota(*QUOTA)

        async def local_acquire(ids: list[int], quota: int | None) -> Decision:
            return local.acquire(ids, quota, NOW, UNIX_NOW)

        yield local_acquire
    elif request.param == "shared":
        with tempfile.TemporaryDirectory(prefix="pygw-levels-") as folder:
            shared = _native.SharedThrottle(os.path.join(folder, "t"), BUCKETS, [QUOTA])

            async def shared_acquire(ids: list[int], quota: int | None) -> Decision:
                return shared.acquire(ids, quota, NOW, UNIX_NOW)

            yield shared_acquire
    else:
        with running_redis() as server:
            remote = RedisThrottle(server.url, key_prefix="lv:", timeout_s=2.0)
            for i, (rate, burst) in enumerate(BUCKETS):
                assert remote.register_bucket(f"b{i}", rate, burst) == i
            assert remote.register_quota("q", *QUOTA) == 0
            yield remote.acquire


async def test_refusing_level_matches_the_reference(backend: Acquire) -> None:
    want = reference_decisions()
    got = [await backend(ids, quota) for ids, quota in REQUESTS]
    assert [d[0] for d in got] == [d[0] for d in want]
    assert [d[5] for d in got] == [d[5] for d in want]
    assert [d[5] for d in want] == [None, 1, 0, None, None, 0, 2, None, 0, None]
    assert [d[0] for d in want][-1] == _native.QUOTA_EXCEEDED
