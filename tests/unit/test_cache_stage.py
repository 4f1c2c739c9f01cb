"""The response cache wrapper: hits, misses, what is never stored, keys, Vary, refresh, request
coalescing, and streamed bodies from the real http_proxy integration."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientSession, web
from multidict import CIMultiDict

from pygw._native import ResponseCache
from pygw.config.model import ApiConfig
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.integrations.http_proxy import HttpProxyIntegration
from pygw.observe.metrics import CounterChild
from pygw.request import Request
from pygw.response import Response
from pygw.stages.cache import CachingIntegration, _header_values, wrap_with_cache
from tests.integration.conftest import (
    StartGateway,
    StartUpstream,
    Upstream,
    client,
    start_gateway,
    start_upstream,
)

__all__ = ["client", "start_gateway", "start_upstream"]  # fixtures used by name below


@pytest.fixture(params=["awaited", "callbacks"])
def front_mode(request: pytest.FixtureRequest) -> str:
    """Every test here both ways: the cache awaited, and its hits answered without a
    coroutine (answer_now)."""
    mode: str = request.param
    return mode


class FakeInner:
    """An integration that counts its calls; `gate` holds every call until the test opens it."""

    def __init__(
        self,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        body: Callable[[Request], bytes] | bytes = b"hello",
        failures: int = 0,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.status = status
        self.headers = headers or {"Content-Type": "text/plain"}
        self.body = body
        self.failures = failures
        self.gate = gate
        self.calls = 0
        self.closed = False

    async def __call__(self, ctx: RequestContext) -> Response:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failures > 0:
            self.failures -= 1
            raise GatewayError(ErrorType.UPSTREAM_FAILURE)
        body = self.body(ctx.request) if callable(self.body) else self.body
        response = Response(status=self.status, body=body, headers=self.headers)
        ctx.apply_response_headers(response)
        return response

    async def close(self) -> None:
        self.closed = True


class Counters:
    """The hit and miss counters the gateway's metrics give a cache."""

    def __init__(self) -> None:
        self.hit = CounterChild()
        self.miss = CounterChild()

    @property
    def hits(self) -> int:
        return int(self.hit.value)

    @property
    def misses(self) -> int:
        return int(self.miss.value)


def caching(
    inner: Any,
    *,
    ttl_s: float = 60.0,
    key_params: tuple[str, ...] = (),
    allow_invalidation: bool = False,
    counters: Counters | None = None,
    capacity: int = 1024 * 1024,
    max_body_bytes: int = 128 * 1024,
) -> CachingIntegration:
    return CachingIntegration(
        inner,
        cache=ResponseCache(capacity),
        ttl_s=ttl_s,
        key_params=key_params,
        allow_invalidation=allow_invalidation,
        stage="v1",
        metrics_hit=counters.hit if counters else None,
        metrics_miss=counters.miss if counters else None,
        max_body_bytes=max_body_bytes,
    )


async def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Polls: the conditions are counters of other tasks' progress, with no event to await."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def fetch(
    client: ClientSession, url: str, method: str = "GET", **kwargs: Any
) -> tuple[int, str | None, bytes, CIMultiDict[str]]:
    async with client.request(method, url, **kwargs) as response:
        body = await response.read()
        return response.status, response.headers.get("X-Cache"), body, CIMultiDict(response.headers)


# -- hits and misses ---------------------------------------------------------------------------


async def test_miss_then_hit(start_gateway: StartGateway, client: ClientSession) -> None:
    inner = FakeInner(headers={"Content-Type": "text/plain", "X-Custom": "1"})
    counters = Counters()
    gateway = await start_gateway(caching(inner, counters=counters))

    status, state, body, headers = await fetch(client, gateway.url + "/items/1")
    assert (status, state, body) == (200, "Miss", b"hello")
    assert gateway.contexts[0].cache_state == "miss"

    status, state, body, headers = await fetch(client, gateway.url + "/items/1")
    assert (status, state, body) == (200, "Hit", b"hello")
    assert headers["X-Custom"] == "1"
    assert headers["Content-Type"] == "text/plain"
    assert headers["Content-Length"] == "5"
    assert headers["Age"] == "0"
    # Per-request headers are those of the request answered, not of the one that was stored.
    assert headers["x-request-id"] == "req-2"
    assert gateway.contexts[1].cache_state == "hit"
    assert inner.calls == 1
    assert (counters.hits, counters.misses) == (1, 1)

    # Another path is another entry.
    status, state, _, _ = await fetch(client, gateway.url + "/items/2")
    assert (status, state) == (200, "Miss")
    assert inner.calls == 2


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (404, {}),
        (500, {}),
        (201, {}),
        (200, {"Cache-Control": "no-store"}),
        (200, {"Cache-Control": "max-age=60, private"}),
        (200, {"Cache-Control": "no-cache"}),
        (200, {"Set-Cookie": "session=abc"}),
        (200, {"Vary": "*"}),
    ],
)
async def test_never_stored(
    start_gateway: StartGateway, client: ClientSession, status: int, headers: dict[str, str]
) -> None:
    inner = FakeInner(status=status, headers={"Content-Type": "text/plain", **headers})
    gateway = await start_gateway(caching(inner))
    for _ in range(3):
        got, state, _, _ = await fetch(client, gateway.url + "/x")
        assert (got, state) == (status, "Miss")
    assert inner.calls == 3


async def test_other_methods_pass_through(
    start_gateway: StartGateway, client: ClientSession
) -> None:
    inner = FakeInner()
    gateway = await start_gateway(caching(inner))
    for _ in range(2):
        status, state, _, _ = await fetch(client, gateway.url + "/x", method="POST")
        assert (status, state) == (200, None)
    assert inner.calls == 2
    assert gateway.contexts[0].cache_state is None
    # A POST leaves no entry behind for the GET.
    assert (await fetch(client, gateway.url + "/x"))[1] == "Miss"


async def test_entries_expire(start_gateway: StartGateway, client: ClientSession) -> None:
    inner = FakeInner()
    gateway = await start_gateway(caching(inner, ttl_s=0.05))
    assert (await fetch(client, gateway.url + "/x"))[1] == "Miss"
    await asyncio.sleep(0.2)
    assert (await fetch(client, gateway.url + "/x"))[1] == "Miss"
    assert inner.calls == 2


async def test_body_over_the_limit_is_not_stored(
    start_gateway: StartGateway, client: ClientSession
) -> None:
    inner = FakeInner(body=bytes(2048))
    gateway = await start_gateway(caching(inner, max_body_bytes=1024))
    for _ in range(2):
        status, state, body, _ = await fetch(client, gateway.url + "/x")
        assert (status, state, len(body)) == (200, "Miss", 2048)
    assert inner.calls == 2


async def test_close_closes_inner() -> None:
    inner = FakeInner()
    await caching(inner).close()
    assert inner.closed


# -- keys --------------------------------------------------------------------------------------


async def test_key_params(start_gateway: StartGateway, client: ClientSession) -> None:
    inner = FakeInner(body=lambda request: request.query_string.encode())
    gateway = await start_gateway(
        caching(inner, key_params=("querystring.lang", "header.x-tenant"))
    )
    url = gateway.url + "/x"
    assert (await fetch(client, url + "?lang=en"))[1:3] == ("Miss", b"lang=en")
    assert (await fetch(client, url + "?lang=de"))[1:3] == ("Miss", b"lang=de")
    # Parameters outside the key do not split entries (AWS semantics).
    assert (await fetch(client, url + "?lang=en&page=2"))[1:3] == ("Hit", b"lang=en")
    assert (await fetch(client, url))[1] == "Miss"
    # An empty value is not the same as no value.
    assert (await fetch(client, url + "?lang="))[1] == "Miss"
    assert (await fetch(client, url + "?lang=en", headers={"X-Tenant": "a"}))[1] == "Miss"
    assert (await fetch(client, url + "?lang=en", headers={"x-tenant": "a"}))[1] == "Hit"
    assert inner.calls == 5


def test_header_values_read_as_the_header_map_reads_them() -> None:
    """Cache keys and Vary variants read request headers as sent, without the header map: the
    same values, in the same order, whatever the case of the name or bytes that are not UTF-8."""
    raw = (
        (b"Host", b"h"),
        (b"X-Tenant", b"a"),
        (b"accept", b"text/html"),
        (b"x-tenant", b"caf\xe9"),
        (b"x-tenants", b"no"),
        (b"Cache-Control", b"max-age=0"),
    )
    request = Request.build("GET", "/x")
    request.replace_headers(raw)
    for name in ("x-tenant", "accept", "cache-control", "host", "absent", "x-tenants"):
        assert _header_values(request, name) == request.headers.getall(name, [])
    assert _header_values(request, "x-tenant") == ["a", "caf\udce9"]


async def test_query_only_keys_tell_raw_query_strings_apart(
    start_gateway: StartGateway, client: ClientSession
) -> None:
    """Keys of query-string values alone are remembered by the raw query string: two query
    strings that read alike once decoded still give their own keys, a repeated one hits, and
    the memo stays bounded whatever the traffic."""
    inner = FakeInner(body=lambda request: request.query_string.encode())
    wrapper = caching(inner, key_params=("querystring.n", "querystring.lang"))
    gateway = await start_gateway(wrapper)
    url = gateway.url + "/x"
    assert (await fetch(client, url + "?n=a%26b"))[1] == "Miss"  # n is "a&b"
    assert (await fetch(client, url + "?n=a&b"))[1] == "Miss"  # n is "a"
    assert (await fetch(client, url + "?n=a%26b"))[1] == "Hit"
    assert (await fetch(client, url + "?b&n=a"))[1] == "Hit"  # the same values as "n=a&b"
    assert (await fetch(client, url + "?n=a&lang=en"))[1] == "Miss"
    assert (await fetch(client, url + "?lang=en&n=a"))[1] == "Hit"
    long_value = "v" * 300  # too long to be remembered, still keyed by its value
    assert (await fetch(client, url + f"?n={long_value}"))[1] == "Miss"
    assert (await fetch(client, url + f"?n={long_value}"))[1] == "Hit"
    assert inner.calls == 4
    assert all(len(query) <= 256 for query in wrapper._query_parts)
    for i in range(5000):
        await wrapper(_context("GET", f"/x?n={i}"))
    assert len(wrapper._query_parts) <= 4096


async def test_stage_and_canary_are_part_of_the_key(
    start_gateway: StartGateway, client: ClientSession
) -> None:
    cache = ResponseCache(1024 * 1024)
    inner = FakeInner()
    v1 = CachingIntegration(
        inner, cache=cache, ttl_s=60, key_params=(), allow_invalidation=False, stage="v1"
    )
    v2 = CachingIntegration(
        inner, cache=cache, ttl_s=60, key_params=(), allow_invalidation=False, stage="v2"
    )
    one = await start_gateway(v1)
    two = await start_gateway(v2)
    assert (await fetch(client, one.url + "/x"))[1] == "Miss"
    assert (await fetch(client, two.url + "/x"))[1] == "Miss"
    assert (await fetch(client, one.url + "/x"))[1] == "Hit"
    assert (await fetch(client, two.url + "/x"))[1] == "Hit"
    assert inner.calls == 2

    canary_ctx = _context("GET", "/x")
    canary_ctx.canary = True
    await v1(canary_ctx)
    assert canary_ctx.cache_state == "miss"


async def test_vary_keeps_one_entry_per_variant(
    start_gateway: StartGateway, client: ClientSession
) -> None:
    inner = FakeInner(
        headers={"Content-Type": "text/plain", "Vary": "Accept"},
        body=lambda request: request.headers.get("Accept", "-").encode(),
    )
    gateway = await start_gateway(caching(inner))
    url = gateway.url + "/x"
    assert (await fetch(client, url, headers={"Accept": "text/a"}))[1:3] == ("Miss", b"text/a")
    assert (await fetch(client, url, headers={"Accept": "text/b"}))[1:3] == ("Miss", b"text/b")
    assert (await fetch(client, url, headers={"Accept": "text/a"}))[1:3] == ("Hit", b"text/a")
    assert (await fetch(client, url, headers={"Accept": "text/b"}))[1:3] == ("Hit", b"text/b")
    _, _, _, headers = await fetch(client, url, headers={"Accept": "text/b"})
    assert headers["Vary"] == "Accept"
    assert inner.calls == 2


# -- refresh -----------------------------------------------------------------------------------


@pytest.mark.parametrize("allowed", [True, False])
async def test_max_age_zero_refreshes_only_when_allowed(
    start_gateway: StartGateway, client: ClientSession, allowed: bool
) -> None:
    version = [b"one"]
    inner = FakeInner(body=lambda request: version[0])
    gateway = await start_gateway(caching(inner, allow_invalidation=allowed))
    url = gateway.url + "/x"
    assert (await fetch(client, url))[1:3] == ("Miss", b"one")
    version[0] = b"two"
    refreshed = await fetch(client, url, headers={"Cache-Control": "max-age=0"})
    assert refreshed[1:3] == (("Miss", b"two") if allowed else ("Hit", b"one"))
    assert (await fetch(client, url))[1:3] == ("Hit", b"two" if allowed else b"one")
    assert inner.calls == (2 if allowed else 1)


async def test_failed_refresh_keeps_the_entry(
    start_gateway: StartGateway, client: ClientSession
) -> None:
    inner = FakeInner()
    gateway = await start_gateway(caching(inner, allow_invalidation=True))
    url = gateway.url + "/x"
    assert (await fetch(client, url))[1] == "Miss"
    inner.failures = 1
    assert (await fetch(client, url, headers={"Cache-Control": "max-age=0"}))[0] == 502
    assert (await fetch(client, url))[1:3] == ("Hit", b"hello")


# -- coalescing --------------------------------------------------------------------------------


async def _concurrently(
    client: ClientSession, url: str, n: int, method: str = "GET"
) -> list[tuple[int, str | None, bytes, CIMultiDict[str]]]:
    return await asyncio.gather(*(fetch(client, url, method=method) for _ in range(n)))


async def test_concurrent_misses_make_one_call(
    start_gateway: StartGateway, client: ClientSession
) -> None:
    gate = asyncio.Event()
    inner = FakeInner(gate=gate)
    counters = Counters()
    gateway = await start_gateway(caching(inner, counters=counters))
    requests = asyncio.create_task(_concurrently(client, gateway.url + "/x", 20))
    await wait_for(lambda: len(gateway.contexts) == 20)
    gate.set()
    answers = await requests
    assert inner.calls == 1
    assert {(status, body) for status, _, body, _ in answers} == {(200, b"hello")}
    assert sorted(state or "" for _, state, _, _ in answers) == ["Hit"] * 19 + ["Miss"]
    assert (counters.hits, counters.misses) == (19, 1)


async def test_waiters_survive_a_failing_leader(
    start_gateway: StartGateway, client: ClientSession
) -> None:
    gate = asyncio.Event()
    inner = FakeInner(gate=gate, failures=1)
    gateway = await start_gateway(caching(inner))
    requests = asyncio.create_task(_concurrently(client, gateway.url + "/x", 20))
    await wait_for(lambda: len(gateway.contexts) == 20)
    gate.set()
    answers = await requests
    # The leader's own request fails; one waiter retries and the rest share its answer.
    assert inner.calls == 2
    statuses = sorted(status for status, _, _, _ in answers)
    assert statuses == [200] * 19 + [502]
    assert {body for status, _, body, _ in answers if status == 200} == {b"hello"}


async def test_waiters_retry_after_a_non_200(
    start_gateway: StartGateway, client: ClientSession
) -> None:
    gate = asyncio.Event()
    inner = FakeInner(gate=gate, status=503)
    gateway = await start_gateway(caching(inner))
    requests = asyncio.create_task(_concurrently(client, gateway.url + "/x", 3))
    await wait_for(lambda: len(gateway.contexts) == 3)
    gate.set()
    answers = await requests
    # Every attempt failed: each waiter led one attempt of its own, none was failed by another.
    assert inner.calls == 3
    assert [status for status, _, _, _ in answers] == [503] * 3


async def test_uncacheable_answers_release_waiters_together(
    start_gateway: StartGateway, client: ClientSession
) -> None:
    gate = asyncio.Event()
    inner = FakeInner(gate=gate, headers={"Cache-Control": "no-store"})
    gateway = await start_gateway(caching(inner))
    requests = asyncio.create_task(_concurrently(client, gateway.url + "/x", 5))
    await wait_for(lambda: len(gateway.contexts) == 5)
    gate.set()
    answers = await requests
    assert inner.calls == 5
    assert {(status, state) for status, state, _, _ in answers} == {(200, "Miss")}
    # The key is now marked: later requests go upstream without waiting for each other.
    gate.clear()
    more = asyncio.create_task(_concurrently(client, gateway.url + "/x", 4))
    await wait_for(lambda: inner.calls == 9)
    gate.set()
    await more


def _context(method: str, path: str, headers: dict[str, str] | None = None) -> RequestContext:
    request = Request.build(method, path, headers=headers or {})
    return RequestContext(
        request=request,
        request_id="r",
        path=path,
        params={},
        stage_variables={},
        client_ip="127.0.0.1",
        received_at=0.0,
    )


async def test_waiters_survive_a_cancelled_leader() -> None:
    gate = asyncio.Event()
    inner = FakeInner(gate=gate)
    wrapper = caching(inner)
    leader = asyncio.create_task(wrapper(_context("GET", "/x")))
    await wait_for(lambda: inner.calls == 1)
    waiters = [asyncio.create_task(wrapper(_context("GET", "/x"))) for _ in range(5)]
    await asyncio.sleep(0)
    # The leader's client goes away: its task is cancelled while the upstream call waits.
    leader.cancel()
    await wait_for(lambda: inner.calls == 2)
    gate.set()
    answers = await asyncio.gather(*waiters)
    assert leader.cancelled()
    assert inner.calls == 2
    assert [a.status for a in answers] == [200] * 5
    assert sorted(a.headers["X-Cache"] for a in answers) == ["Hit"] * 4 + ["Miss"]


async def test_a_cancelled_waiter_leaves_the_others_be() -> None:
    gate = asyncio.Event()
    inner = FakeInner(gate=gate)
    wrapper = caching(inner)
    leader = asyncio.create_task(wrapper(_context("GET", "/x")))
    await wait_for(lambda: inner.calls == 1)
    waiters = [asyncio.create_task(wrapper(_context("GET", "/x"))) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    gate.set()
    answers = await asyncio.gather(leader, *waiters[1:])
    assert [a.status for a in answers] == [200] * 3
    assert inner.calls == 1


async def test_waiters_with_other_vary_values_do_not_share(
    start_gateway: StartGateway, client: ClientSession
) -> None:
    gate = asyncio.Event()
    inner = FakeInner(
        gate=gate,
        headers={"Content-Type": "text/plain", "Vary": "accept-language"},
        body=lambda request: request.headers.get("Accept-Language", "-").encode(),
    )
    gateway = await start_gateway(caching(inner))
    url = gateway.url + "/x"
    tasks = [
        asyncio.create_task(fetch(client, url, headers={"Accept-Language": lang}))
        for lang in ("en", "en", "de", "de", "fr")
    ]
    await wait_for(lambda: len(gateway.contexts) == 5)
    gate.set()
    answers = await asyncio.gather(*tasks)
    assert [body for _, _, body, _ in answers] == [b"en", b"en", b"de", b"de", b"fr"]
    assert inner.calls == 3


# -- streamed bodies (the real http_proxy integration) -------------------------------------------


def proxy(upstream: Upstream) -> HttpProxyIntegration:
    return HttpProxyIntegration(uri=None, targets=[(upstream.url, 1)], timeout_ms=5000)


@pytest.mark.parametrize("chunked", [False, True])
async def test_streamed_body_is_cached(
    start_upstream: StartUpstream,
    start_gateway: StartGateway,
    client: ClientSession,
    chunked: bool,
) -> None:
    upstream = await start_upstream()
    gateway = await start_gateway(caching(proxy(upstream), max_body_bytes=1024 * 1024))
    url = gateway.url + "/big?size=300000" + ("&chunked=1" if chunked else "")
    status, state, body, headers = await fetch(client, url)
    assert (status, state, len(body)) == (200, "Miss", 300000)
    status, state, body, headers = await fetch(client, url)
    assert (status, state, body) == (200, "Hit", bytes(300000))
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Length"] == "300000"
    assert "Transfer-Encoding" not in headers
    assert len(upstream.requests) == 1


async def test_streamed_body_over_the_limit_is_not_cached(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    upstream = await start_upstream()
    gateway = await start_gateway(caching(proxy(upstream), max_body_bytes=100_000))
    for _ in range(2):
        status, state, body, _ = await fetch(client, gateway.url + "/big?size=300000")
        assert (status, state, len(body)) == (200, "Miss", 300000)
    assert len(upstream.requests) == 2


async def test_cut_off_stream_is_not_cached(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    upstream = await start_upstream()
    gateway = await start_gateway(caching(proxy(upstream)))
    for _ in range(2):
        with pytest.raises(Exception):  # noqa: B017 - the client sees a broken body
            await fetch(client, gateway.url + "/drop?after=1000")
    assert len(upstream.requests) == 2


async def test_streamed_concurrent_misses_make_one_upstream_request(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    upstream = await start_upstream()
    gateway = await start_gateway(caching(proxy(upstream)))
    answers = await _concurrently(client, gateway.url + "/slow?ms=300", 20)
    assert len(upstream.requests) == 1
    assert {status for status, _, _, _ in answers} == {200}
    assert len({body for _, _, body, _ in answers}) == 1
    assert sorted(state or "" for _, state, _, _ in answers) == ["Hit"] * 19 + ["Miss"]


async def test_head_requests_coalesce(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    upstream = await start_upstream()
    gateway = await start_gateway(caching(proxy(upstream)))
    answers = await _concurrently(client, gateway.url + "/slow?ms=300", 10, method="HEAD")
    assert len(upstream.requests) == 1
    assert {status for status, _, _, _ in answers} == {200}
    lengths = {headers.get("Content-Length") for _, _, _, headers in answers}
    assert len(lengths) == 1 and lengths != {None}
    # Only GET responses are stored: a later HEAD goes upstream again.
    assert (await fetch(client, gateway.url + "/slow?ms=1", method="HEAD"))[1] == "Miss"
    assert len(upstream.requests) == 2


# -- whole answers from the real http_proxy integration (kept from the upstream's header lines) ---

OLD_DATE = "Mon, 01 Jan 2001 00:00:00 GMT"
UPSTREAM_EXTRA: dict[str, dict[str, str]] = {
    "cookie": {"Set-Cookie": "session=abc"},
    "nostore": {"Cache-Control": "no-store"},
    "private": {"Cache-Control": "max-age=60, private"},
    "nocache": {"cache-control": "No-Cache"},
    "star": {"Vary": "*"},
    "lang": {"Vary": "Accept-Language"},
}


async def headers_behaviour(request: web.BaseRequest, upstream: Upstream) -> web.StreamResponse:
    """A small JSON answer with headers a cache must replay, drop or refuse, chosen by ?kind=."""
    kind = request.rel_url.query.get("kind", "")
    headers = {
        "Content-Type": "application/json",
        "ETag": '"v1"',
        "X-Upstream": "yes",
        "Date": OLD_DATE,
        "x-request-id": "from-upstream",
        "X-Cache": "from-upstream",
        **UPSTREAM_EXTRA.get(kind, {}),
    }
    language = request.headers.get("Accept-Language", "")
    body = f'{{"n": {len(upstream.requests)}, "lang": "{language}"}}'.encode()
    return web.Response(body=body, headers=headers)


async def test_whole_answer_replays_its_own_headers_only(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    upstream = await start_upstream(headers_behaviour)
    gateway = await start_gateway(caching(proxy(upstream)))
    status, state, first, _ = await fetch(client, gateway.url + "/x")
    assert (status, state) == (200, "Miss")
    status, state, body, headers = await fetch(client, gateway.url + "/x")
    assert (status, state, body) == (200, "Hit", first)
    assert len(upstream.requests) == 1
    assert headers["ETag"] == '"v1"'
    assert headers["X-Upstream"] == "yes"
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Length"] == str(len(body))
    assert headers["Age"] == "0"
    # Per-request headers are this request's, never the stored answer's.
    assert headers.getall("x-request-id") == [gateway.contexts[1].request_id]
    assert headers.getall("X-Cache") == ["Hit"]
    assert headers.getall("Date") != [OLD_DATE] and len(headers.getall("Date")) == 1


async def test_whole_answers_keep_their_own_header_lines_past_the_filter_memo(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    """Filtered header lines are remembered per distinct upstream head: answers whose heads
    differ (more of them than the memo holds, some that may not be stored) never borrow
    another's lines or verdict."""

    async def tagged(request: web.BaseRequest, upstream: Upstream) -> web.StreamResponse:
        n = int(request.query["n"])
        headers = {"Content-Type": "application/json", "ETag": f'"v{n}"', "Age": "100"}
        if n % 10 == 0:
            headers["Set-Cookie"] = f"s={n}"
        return web.Response(body=b"{}", headers=headers)

    upstream = await start_upstream(tagged)
    wrapper = caching(proxy(upstream), key_params=("querystring.n",))
    gateway = await start_gateway(wrapper)
    answers = 100
    for n in range(answers):
        status, state, _, _ = await fetch(client, gateway.url + f"/x?n={n}")
        assert (status, state) == (200, "Miss")
    for n in range(answers):
        status, state, _, headers = await fetch(client, gateway.url + f"/x?n={n}")
        assert status == 200
        if n % 10 == 0:
            assert state == "Miss" and headers["Set-Cookie"] == f"s={n}"
        else:
            assert state == "Hit" and headers.getall("ETag") == [f'"v{n}"']
            assert "Set-Cookie" not in headers
            assert headers.getall("Age") == ["0"]  # the cache's own, not the upstream's too
    assert len(upstream.requests) == answers + answers // 10
    # Each entry's head was filtered for the headers these requests' stages set, when it was
    # stored: the hits replayed the heads as stored, with nothing to filter or remember.
    assert wrapper._replayed == {}


@pytest.mark.parametrize("kind", ["cookie", "nostore", "private", "nocache", "star"])
async def test_whole_answer_never_stored(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession, kind: str
) -> None:
    upstream = await start_upstream(headers_behaviour)
    gateway = await start_gateway(caching(proxy(upstream)))
    for _ in range(3):
        status, state, _, _ = await fetch(client, gateway.url + f"/x?kind={kind}")
        assert (status, state) == (200, "Miss")
    assert len(upstream.requests) == 3


async def test_whole_answer_varies_by_request_header(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    upstream = await start_upstream(headers_behaviour)
    gateway = await start_gateway(caching(proxy(upstream), key_params=("querystring.kind",)))
    url = gateway.url + "/x?kind=lang"
    seen: dict[str, bytes] = {}
    for language in ("en", "de"):
        status, state, body, headers = await fetch(
            client, url, headers={"Accept-Language": language}
        )
        assert (status, state) == (200, "Miss")
        assert headers["Vary"] == "Accept-Language"
        seen[language] = body
    for language in ("de", "en"):
        status, state, body, headers = await fetch(
            client, url, headers={"Accept-Language": language}
        )
        assert (status, state, body) == (200, "Hit", seen[language])
        assert headers["Vary"] == "Accept-Language"
    assert len(upstream.requests) == 2


# -- wrap_with_cache ---------------------------------------------------------------------------


def _api(
    type_: str = "rest",
    cache: dict[str, Any] | None = None,
    routes: dict[str, Any] | None = None,
) -> ApiConfig:
    spec: dict[str, Any] = {
        "name": "shop",
        "type": type_,
        "routes": routes or {"GET /x": {"integration": {"type": "mock", "status": 200}}},
    }
    if cache is not None:
        spec["cache"] = cache
    return ApiConfig.model_validate(spec)


MOCK = {"integration": {"type": "mock", "status": 200}}


async def test_wrap_with_cache_decides_at_load() -> None:
    inner = FakeInner()
    caches: dict[str, ResponseCache] = {}

    def wrap(api: ApiConfig, key: str) -> Any:
        return wrap_with_cache(inner, api, api.routes[key], key, "v1", caches)

    # No API cache, or an HTTP-style API: nothing to wrap.
    assert wrap(_api(), "GET /x") is inner
    assert wrap(_api("http"), "GET /x") is inner
    assert caches == {}

    api = _api(
        cache={"capacity_mb": 1, "ttl_s": 60},
        routes={
            "GET /x": MOCK,
            "ANY /y": MOCK,
            "POST /z": MOCK,
            "GET /off": {**MOCK, "cache": {"ttl_s": 0}},
            "GET /lang": {**MOCK, "cache": {"ttl_s": 5, "key_params": ["querystring.lang"]}},
            "$default": MOCK,
        },
    )
    x = wrap(api, "GET /x")
    assert isinstance(x, CachingIntegration) and x.inner is inner
    assert isinstance(wrap(api, "ANY /y"), CachingIntegration)
    assert isinstance(wrap(api, "$default"), CachingIntegration)
    assert wrap(api, "POST /z") is inner
    assert wrap(api, "GET /off") is inner
    assert isinstance(wrap(api, "GET /lang"), CachingIntegration)
    # One cache for the API, shared by its routes.
    assert list(caches) == ["shop"]

    off = _api(
        cache={"ttl_s": 0}, routes={"GET /x": MOCK, "GET /on": {**MOCK, "cache": {"ttl_s": 9}}}
    )
    assert wrap(off, "GET /x") is inner
    assert isinstance(wrap(off, "GET /on"), CachingIntegration)


async def test_wrapped_routes_share_the_api_cache() -> None:
    caches: dict[str, ResponseCache] = {}
    api = _api(cache={"capacity_mb": 1, "ttl_s": 60}, routes={"GET /x": MOCK, "GET /y": MOCK})
    inner = FakeInner()
    x = wrap_with_cache(inner, api, api.routes["GET /x"], "GET /x", "v1", caches)
    y = wrap_with_cache(inner, api, api.routes["GET /y"], "GET /y", "v1", caches)
    await x(_context("GET", "/x"))
    await y(_context("GET", "/y"))
    assert caches["shop"].stats()[3] == 2


async def _call(wrapper: Callable[[RequestContext], Awaitable[Response]]) -> str:
    ctx = _context("GET", "/x")
    await wrapper(ctx)
    return str(ctx.cache_state)


async def test_counters_from_wrap_with_cache() -> None:
    counters = Counters()
    api = _api(cache={"capacity_mb": 1, "ttl_s": 60})
    wrapper = wrap_with_cache(
        FakeInner(),
        api,
        api.routes["GET /x"],
        "GET /x",
        "v1",
        {},
        metrics_hit=counters.hit,
        metrics_miss=counters.miss,
    )
    assert [await _call(wrapper) for _ in range(3)] == ["miss", "hit", "hit"]
    assert (counters.hits, counters.misses) == (2, 1)


async def test_stored_entries_add_no_work_for_the_garbage_collector(
    start_gateway: StartGateway, client: ClientSession
) -> None:
    """A full collection scans every object the collector tracks: entries that stay tracked
    turned a large cache into periodic stalls of every request (90 ms at 200 000 entries)."""
    inner = FakeInner(headers={"Content-Type": "text/plain", "Vary": "Accept", "X-A": "1"})
    gateway = await start_gateway(caching(inner))
    # Warm up what aiohttp and the client keep (yarl remembers the last 256 URLs built).
    for i in range(300):
        await fetch(client, f"{gateway.url}/warm/{i}")
    gateway.contexts.clear()  # the test gateway keeps every request's context
    gc.collect()
    before = len(gc.get_objects())
    for i in range(400):
        assert (await fetch(client, f"{gateway.url}/items/{i}"))[1] == "Miss"
    gateway.contexts.clear()
    # An entry nests tuples, and a collection untracks a tuple only once what it holds is
    # untracked: which pass gets there depends on where the collector's list has them.
    gc.collect()
    gc.collect()
    # 400 entries and 400 Vary markers stored: tracked ones would add 800 objects or more.
    assert len(gc.get_objects()) - before < 200
    assert (await fetch(client, f"{gateway.url}/items/7"))[1] == "Hit"


async def test_a_hit_sends_this_requests_own_value_of_a_header_the_upstream_also_sent(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    """A header the stored request's stages did not set is kept from the upstream; when a later
    request's stages do set it (CORS for a request with an Origin), the hit carries the stage's
    value alone, as the miss path and aiohttp's Response do: two Access-Control-Allow-Origin
    values make browsers refuse the response."""

    async def cors_upstream(request: web.BaseRequest, upstream: Upstream) -> web.StreamResponse:
        headers = {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"}
        return web.Response(body=b"{}", headers=headers)

    class CorsLikeStage:
        def __init__(self, inner: CachingIntegration) -> None:
            self.inner = inner

        async def __call__(self, ctx: RequestContext) -> Response:
            origin = ctx.request.headers.get("Origin")
            if origin is not None:
                ctx.response_headers["Access-Control-Allow-Origin"] = origin
            return await self.inner(ctx)

        async def close(self) -> None:
            await self.inner.close()

    upstream = await start_upstream(cors_upstream)
    gateway = await start_gateway(CorsLikeStage(caching(proxy(upstream))))
    status, state, _, headers = await fetch(client, gateway.url + "/x")
    assert (status, state) == (200, "Miss")
    assert headers.getall("Access-Control-Allow-Origin") == ["*"]
    origin = {"Origin": "https://app.example"}
    for _ in range(2):
        status, state, _, headers = await fetch(client, gateway.url + "/x", headers=origin)
        assert (status, state) == (200, "Hit")
        assert headers.getall("Access-Control-Allow-Origin") == ["https://app.example"]
    status, state, _, headers = await fetch(client, gateway.url + "/x")
    assert (status, state) == (200, "Hit")
    assert headers.getall("Access-Control-Allow-Origin") == ["*"]
    assert len(upstream.requests) == 1


async def test_misses_over_pooled_connections_are_stored_and_coalesced(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    """Once the pool has connections, a miss is sent and stored from the proxy's callbacks
    (in the "callbacks" mode): stored whole, served as a hit after, and requests for the key
    that arrive meanwhile wait for it rather than going upstream too."""
    upstream = await start_upstream()
    gateway = await start_gateway(caching(proxy(upstream)))
    status, state, _, _ = await fetch(client, gateway.url + "/echo/warm")
    assert (status, state) == (200, "Miss")
    status, state, first, _ = await fetch(client, gateway.url + "/echo/one")
    assert (status, state) == (200, "Miss")
    status, state, again, _ = await fetch(client, gateway.url + "/echo/one")
    assert (status, state, again) == (200, "Hit", first)
    answers = await _concurrently(client, gateway.url + "/slow/two?ms=200", 8)
    assert {status for status, _, _, _ in answers} == {200}
    assert sorted(state or "" for _, state, _, _ in answers) == ["Hit"] * 7 + ["Miss"]
    assert [r["raw_path"] for r in upstream.requests] == [
        "/echo/warm",
        "/echo/one",
        "/slow/two?ms=200",
    ]
