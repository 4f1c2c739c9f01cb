"""What the dispatcher answers without a task (pygw/serving.py, docs/front-end.md): a mock, a
refusal by a stage that never waits, an unrouted path and a request whose authorizer decides at
once are answered by serve_now itself; a request whose authorizer must wait comes back as the
coroutine that finishes it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import CoroutineType

import pytest

from pygw.config.load import load_config
from pygw.dispatch import Dispatcher
from pygw.observe.metrics import Metrics
from pygw.request import Request
from pygw.response import Response
from pygw.runtime import compile_runtime
from tests.unit.test_auth import ISSUER, Keys, sign

CONFIG = """
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
access_log: null
apis:
  - name: shop
    type: http
    authorizers:
      users: {type: jwt, issuer: "%(issuer)s", audience: [shop], jwks: "%(jwks)s"}
    routes:
      "GET /open":
        integration: {type: mock, status: 200, body: {open: true}}
      "GET /items/{id}":
        integration: {type: mock, status: 200, body: {item: true}}
        authorizer: users
        throttle: {rate: 1000, burst: 1000}
"""


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture
async def dispatcher(tmp_path: Path, keys: Keys) -> AsyncIterator[Dispatcher]:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(keys.jwks()))
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG % {"issuer": ISSUER, "jwks": f"file://{jwks}"})
    runtime = compile_runtime(load_config(config), Metrics())
    try:
        yield Dispatcher(runtime, None)
    finally:
        await runtime.close()


def _get(path: str, token: str | None = None) -> Request:
    headers = {"Host": "gw"} if token is None else {"Host": "gw", "Authorization": token}
    return Request.build("GET", path, headers=headers)


async def test_answers_from_memory_and_refusals_come_at_once(dispatcher: Dispatcher) -> None:
    for path, status in (("/open", 200), ("/nowhere", 404), ("/items/1", 401)):
        served = dispatcher.serve_now(_get(path), None)
        assert isinstance(served, Response), path
        assert served.status == status, path


async def test_an_authorizer_waits_only_for_a_token_it_has_not_verified(
    dispatcher: Dispatcher, keys: Keys
) -> None:
    token = f"Bearer {sign(keys)}"
    first = dispatcher.serve_now(_get("/items/1", token), None)
    assert isinstance(first, CoroutineType)
    answered = await first
    assert answered.status == 200
    again = dispatcher.serve_now(_get("/items/2", token), None)
    assert isinstance(again, Response)
    assert again.status == 200
    forged = dispatcher.serve_now(_get("/items/3", token[:-4] + "AAAA"), None)
    assert isinstance(forged, CoroutineType)
    assert (await forged).status == 401
