"""The gateway's heap after start and reload: startup objects frozen out of the collector's scans,
retired config snapshots still freed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from pygw.server import Gateway, settle_heap

CONFIG = """
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
apis:
  - name: shop
    type: rest
    stages: [{name: v1}]
    routes:
      "GET /items/{id}":
        integration: {type: mock, status: 200, body: {ok: true}}
"""


@pytest.fixture
def unfrozen_afterwards() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session runs with the collector as it found it


async def test_reload_frees_the_retired_snapshot_and_keeps_the_heap_frozen(
    tmp_path: Path, unfrozen_afterwards: None
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    gateway = Gateway(config)
    await gateway.start()
    try:
        settle_heap()
        frozen_at_start = gc.get_freeze_count()
        assert frozen_at_start > 10_000  # modules and the compiled config
        dispatcher = gateway._dispatcher
        assert dispatcher is not None
        retired = weakref.ref(dispatcher.runtime)
        ok, _ = await gateway.reload()
        assert ok
        assert gateway._retiring is not None
        await gateway._retiring
        assert retired() is None
        assert gc.get_freeze_count() > 10_000
    finally:
        await gateway.drain()
