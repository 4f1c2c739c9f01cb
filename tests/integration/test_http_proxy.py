"""http_proxy against real upstream servers, through a real front end, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from aiohttp import ClientPayloadError, ClientSession, ServerDisconnectedError, web
from yarl import URL

from pygw.context import RequestContext
from pygw.integrations.http_proxy import HttpProxyIntegration
from pygw.request import Request
from pygw.response import Response
from tests.front import serve_front
from tests.integration.conftest import closing_upstream, pipelined_answers

if TYPE_CHECKING:
    from conftest import StartGateway, StartUpstream, Upstream

pytestmark = pytest.mark.timeout(20)


@pytest.fixture(params=["awaited", "callbacks"])
def front_mode(request: pytest.FixtureRequest) -> str:
    """Every test here both ways: the integration awaited, and (for bodiless requests on a
    pooled connection) started and answered from its connection's callbacks."""
    mode: str = request.param
    return mode


MiB = 1024 * 1024


def headers_of(payload: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in payload["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


def free_port() -> int:
    """A port nothing listens on (connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def get_json(client: ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with client.get(URL(url, encoded=True), **kw) as resp:
        return resp.status, orjson.loads(await resp.read())


# -- paths, parameters, query -------------------------------------------------------------------


async def test_full_url_template_with_param(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=f"{up.url}/items/{{id}}", targets=[])
    gw = await start_gateway(proxy, lambda path: {"id": path.rsplit("/", 1)[-1]})
    status, body = await get_json(client, f"{gw.url}/things/a%20b")
    assert status == 200
    assert body["raw_path"] == "/items/a%20b"
    assert gw.contexts[0].integration_latency_s > 0


async def test_greedy_param_keeps_slashes_and_encoding(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri="/files/{proxy}", targets=[(up.url, 1)])
    gw = await start_gateway(proxy, lambda path: {"proxy": path.removeprefix("/f/")})
    status, body = await get_json(client, f"{gw.url}/f/a/b%2Fc//d%20e%C3%A9/?x=%2F&y=1+2&y=3")
    assert status == 200
    assert body["raw_path"] == "/files/a/b%2Fc//d%20e%C3%A9/?x=%2F&y=1+2&y=3"


async def test_target_base_path_and_request_path(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=None, targets=[(f"{up.url}/api/", 1)])
    gw = await start_gateway(proxy)
    status, body = await get_json(client, f"{gw.url}/v1/x%3Ay?q")
    assert status == 200
    assert body["raw_path"] == "/api/v1/x%3Ay?q"


async def test_query_string_passes_unchanged(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=f"{up.url}/q", targets=[])
    gw = await start_gateway(proxy)
    query = "b=2&a=%20x&a=1&empty&%E2%9C%93=%26"
    _, body = await get_json(client, f"{gw.url}/anything?{query}")
    assert body["raw_path"] == f"/q?{query}"
    _, body = await get_json(client, f"{gw.url}/anything")
    assert body["raw_path"] == "/q"


async def test_template_query_is_merged(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=f"{up.url}/s?fixed=1", targets=[])
    gw = await start_gateway(proxy)
    _, body = await get_json(client, f"{gw.url}/x?a=2")
    assert body["raw_path"] == "/s?fixed=1&a=2"


def test_template_errors() -> None:
    with pytest.raises(ValueError, match="not a path parameter"):
        HttpProxyIntegration(uri="http://127.0.0.1:1/items/{nope}", targets=[], route_params={"id"})
    with pytest.raises(ValueError, match="unbalanced"):
        HttpProxyIntegration(uri="http://127.0.0.1:1/items/{id", targets=[])
    with pytest.raises(ValueError, match="only appear in the path"):
        HttpProxyIntegration(uri="http://{host}/items", targets=[])
    with pytest.raises(ValueError, match="path starting with"):
        HttpProxyIntegration(uri="items", targets=[("http://127.0.0.1:1", 1)])
    with pytest.raises(ValueError, match="balance"):
        HttpProxyIntegration(uri=None, targets=[("http://127.0.0.1:1", 1)], balance="random")
    with pytest.raises(ValueError, match="weight"):
        HttpProxyIntegration(uri=None, targets=[("http://127.0.0.1:1", 0)])
    ok = HttpProxyIntegration(uri="/items/{id+}", targets=[("http://h:1", 1)], route_params={"id"})
    assert ok.health() == {"http://h:1": True}


# -- headers ----------------------------------------------------------------------------------


async def raw_exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    parsed = URL(url)
    assert parsed.host is not None and parsed.port is not None
    reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


async def test_hop_by_hop_request_headers_dropped(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=f"{up.url}/echo", targets=[])
    gw = await start_gateway(proxy)
    status, _, body = await raw_exchange(
        gw.url,
        b"GET /x HTTP/1.1\r\nHost: gw.example:8080\r\n"
        b"Connection: close, X-Drop-Me\r\nX-Drop-Me: secret\r\nKeep-Alive: timeout=5\r\n"
        b"TE: trailers\r\nTrailer: X-Checksum\r\nUpgrade: h2c\r\n"
        b"Proxy-Authorization: Basic Zm9v\r\n"
        b"Proxy-Connection: keep-alive\r\nX-Keep: yes\r\nX-Forwarded-For: 203.0.113.9\r\n"
        b"X-Request-Id: spoofed\r\n\r\n",
    )
    assert status == 200
    seen = headers_of(orjson.loads(body))
    for dropped in (
        "connection",
        "x-drop-me",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "transfer-encoding",
    ):
        assert dropped not in seen, dropped
    assert seen["x-keep"] == ["yes"]
    assert seen["host"] == [f"127.0.0.1:{up.port}"]
    assert seen["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["gw.example:8080"]
    assert seen["x-request-id"] == [gw.contexts[0].request_id]


async def test_every_connection_header_names_headers_to_drop(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    """Connection is a list header: a second Connection line names hop-by-hop headers too."""
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=f"{up.url}/echo", targets=[])
    gw = await start_gateway(proxy)
    status, _, body = await raw_exchange(
        gw.url,
        b"GET /x HTTP/1.1\r\nHost: gw.example\r\nConnection: close, X-First\r\n"
        b"X-First: 1\r\nX-Second: 2\r\nconnection:  x-second ,\r\nX-Third: 3\r\n\r\n",
    )
    assert status == 200
    seen = headers_of(orjson.loads(body))
    assert "x-first" not in seen
    assert "x-second" not in seen
    assert seen["x-third"] == ["3"]


async def test_forwarded_for_without_chain(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=f"{up.url}/echo", targets=[])
    gw = await start_gateway(proxy)
    async with client.get(f"{gw.url}/x", headers={"Host": "api.example"}) as resp:
        seen = headers_of(orjson.loads(await resp.read()))
        assert resp.headers["apigw-requestid"] == gw.contexts[0].request_id
        assert resp.headers["X-Upstream-Port"] == str(up.port)
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-host"] == ["api.example"]


async def test_hop_by_hop_response_headers_dropped(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=f"{up.url}/hop", targets=[])
    gw = await start_gateway(proxy)
    async with client.get(f"{gw.url}/x") as resp:
        assert resp.status == 200
        assert await resp.text() == "hop"
        assert resp.headers["X-Up-Keep"] == "1"
        for dropped in ("X-Up-Drop", "Keep-Alive", "Proxy-Authenticate", "Trailer", "Upgrade"):
            assert dropped not in resp.headers, dropped
        assert resp.headers.get("Connection", "keep-alive") == "keep-alive"


async def test_per_request_headers_replace_the_upstreams(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    """An upstream's x-request-id (or any header a stage sets per request) is not relayed beside
    the gateway's own: the client gets one value, the gateway's, as with a streamed answer."""

    async def answer(request: web.BaseRequest, upstream: Upstream) -> web.StreamResponse:
        return web.Response(text="ok", headers={"X-Request-Id": "upstream", "X-Other": "kept"})

    up = await start_upstream(answer)
    gw = await start_gateway(HttpProxyIntegration(uri=f"{up.url}/x", targets=[]))
    async with client.get(f"{gw.url}/x") as resp:
        assert resp.status == 200
        assert await resp.text() == "ok"
        assert resp.headers.getall("x-request-id") == [gw.contexts[0].request_id]
        assert resp.headers["X-Other"] == "kept"


# -- bodies -----------------------------------------------------------------------------------


async def test_large_response_streams_with_flat_memory(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=f"{up.url}/big", targets=[])
    gw = await start_gateway(proxy)
    size = 64 * MiB
    for chunked in (False, True):
        query = f"size={size}" + ("&chunked=1" if chunked else "")
        before = rss_bytes()
        peak = before
        received = 0
        async with client.get(f"{gw.url}/x?{query}") as resp:
            assert resp.status == 200
            if chunked:
                assert resp.headers["Transfer-Encoding"] == "chunked"
            else:
                assert resp.headers["Content-Length"] == str(size)
            async for chunk in resp.content.iter_chunked(256 * 1024):
                received += len(chunk)
                peak = max(peak, rss_bytes())
        assert received == size
        assert peak - before < 32 * MiB, (peak - before) / MiB
        print(f"rss growth {(peak - before) / MiB:.1f} MiB")


async def test_request_body_streams_upstream(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=f"{up.url}/sink", targets=[])
    gw = await start_gateway(proxy)
    piece = bytes(range(256)) * 256  # 64 KiB
    count = 256  # 16 MiB
    expected = hashlib.sha256(piece * count).hexdigest()

    async def generate() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield piece

    async with client.post(f"{gw.url}/x", data=generate()) as resp:
        body = orjson.loads(await resp.read())
    assert body == {
        "size": len(piece) * count,
        "sha256": expected,
        "content_length": None,
        "transfer_encoding": "chunked",
    }

    data = piece * 16
    async with client.put(f"{gw.url}/x", data=data) as resp:
        body = orjson.loads(await resp.read())
    assert body["size"] == len(data)
    assert body["content_length"] == str(len(data))
    assert body["transfer_encoding"] is None

    async with client.post(f"{gw.url}/x", data=b"") as resp:
        body = orjson.loads(await resp.read())
    assert body["size"] == 0
    assert body["content_length"] == "0"


async def test_head_then_get_on_the_same_connection(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=None, targets=[(up.url, 1)])
    gw = await start_gateway(proxy)
    async with client.head(f"{gw.url}/big?size=1000") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "1000"
        assert await resp.read() == b""
    status, body = await get_json(client, f"{gw.url}/echo")
    assert status == 200 and body["method"] == "GET"
    assert up.connections == 1


# -- failures ---------------------------------------------------------------------------------


async def test_connection_refused_is_502(
    start_gateway: StartGateway, client: ClientSession
) -> None:
    proxy = HttpProxyIntegration(uri=f"http://127.0.0.1:{free_port()}/x", targets=[])
    gw = await start_gateway(proxy)
    async with client.get(f"{gw.url}/x") as resp:
        assert resp.status == 502
        assert resp.content_type == "application/json"
        assert await resp.json() == {"message": "Bad Gateway"}


async def test_slow_upstream_is_504(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=f"{up.url}/slow", targets=[], timeout_ms=200)
    gw = await start_gateway(proxy)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client.get(f"{gw.url}/x?ms=3000") as resp:
        assert resp.status == 504
        assert await resp.json() == {"message": "Endpoint request timed out"}
    assert loop.time() - started < 1.5
    # The timed-out connection is not reused; the next request gets a fresh one.
    status, _ = await get_json(client, f"{gw.url}/x?ms=1")
    assert status == 200
    # The same on the connection that request left in the pool (in the "callbacks" mode, an
    # exchange answered from the connection's callbacks and expired by the deadline sweep).
    async with client.get(f"{gw.url}/x?ms=3000") as resp:
        assert resp.status == 504
    status, _ = await get_json(client, f"{gw.url}/x?ms=1")
    assert status == 200
    assert up.connections == 3


async def test_upstream_reset_mid_body_aborts_client(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=f"{up.url}/drop", targets=[])
    gw = await start_gateway(proxy)
    async with client.get(f"{gw.url}/x?after=100000") as resp:
        assert resp.status == 200
        with pytest.raises((ClientPayloadError, ServerDisconnectedError)):
            await resp.read()


async def test_stalled_body_aborts_client(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=f"{up.url}/stall", targets=[], body_idle_timeout_ms=200)
    gw = await start_gateway(proxy)
    async with client.get(f"{gw.url}/x?after=1000") as resp:
        assert resp.status == 200
        with pytest.raises((ClientPayloadError, ServerDisconnectedError)):
            await resp.read()


async def test_connect_failure_retries_next_target_for_get_only(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    dead = f"http://127.0.0.1:{free_port()}"
    get_proxy = HttpProxyIntegration(uri=None, targets=[(dead, 1), (up.url, 1)], retries=1)
    gw = await start_gateway(get_proxy)
    for _ in range(4):
        status, body = await get_json(client, f"{gw.url}/echo")
        assert status == 200 and body["port"] == up.port

    post_proxy = HttpProxyIntegration(uri=None, targets=[(dead, 1), (up.url, 1)], retries=1)
    gw_post = await start_gateway(post_proxy)
    async with client.post(f"{gw_post.url}/echo", data=b"x") as resp:
        assert resp.status == 502  # round robin starts at the dead target; POST is not retried
    async with client.post(f"{gw_post.url}/echo", data=b"x") as resp:
        assert resp.status == 200

    no_retry = HttpProxyIntegration(uri=None, targets=[(dead, 1), (up.url, 1)], retries=0)
    gw_none = await start_gateway(no_retry)
    async with client.get(f"{gw_none.url}/echo") as resp:
        assert resp.status == 502


async def test_connect_timeout_moves_on(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    # A listener that never accepts, with its accept queue filled: further SYNs go unanswered.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(blackhole.getsockname())
            fillers.append(s)
        port = blackhole.getsockname()[1]
        proxy = HttpProxyIntegration(
            uri=None,
            targets=[(f"http://127.0.0.1:{port}", 1), (up.url, 1)],
            connect_timeout_ms=150,
            timeout_ms=3000,
        )
        gw = await start_gateway(proxy)
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, body = await get_json(client, f"{gw.url}/echo")
        assert status == 200 and body["port"] == up.port
        assert 0.14 <= loop.time() - started < 2  # the first target did cost its connect timeout
    finally:
        for s in fillers:
            s.close()
        blackhole.close()


# -- balancing --------------------------------------------------------------------------------


async def served_by(client: ClientSession, url: str, n: int) -> list[int]:
    ports = []
    for _ in range(n):
        async with client.get(url) as resp:
            assert resp.status == 200
            ports.append(int(resp.headers["X-Upstream-Port"]))
            await resp.read()
    return ports


async def test_round_robin_distribution(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    ups = [await start_upstream() for _ in range(3)]
    proxy = HttpProxyIntegration(uri=None, targets=[(u.url, 1) for u in ups])
    gw = await start_gateway(proxy)
    ports = await served_by(client, f"{gw.url}/echo", 30)
    assert ports[:3] == [u.port for u in ups]
    assert [ports.count(u.port) for u in ups] == [10, 10, 10]


async def test_weighted_distribution_is_smooth(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    a, b, c = [await start_upstream() for _ in range(3)]
    proxy = HttpProxyIntegration(
        uri=None, targets=[(a.url, 5), (b.url, 1), (c.url, 1)], balance="weighted"
    )
    gw = await start_gateway(proxy)
    ports = await served_by(client, f"{gw.url}/echo", 70)
    assert [ports.count(u.port) for u in (a, b, c)] == [50, 10, 10]
    # nginx's smooth sequence for 5/1/1: a a b a c a a, never five a in a row.
    names = {a.port: "a", b.port: "b", c.port: "c"}
    assert "".join(names[p] for p in ports[:7]) == "aabacaa"


async def test_least_request_prefers_idle_target(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    a = await start_upstream()
    b = await start_upstream()
    proxy = HttpProxyIntegration(
        uri=None, targets=[(a.url, 1), (b.url, 1)], balance="least_request"
    )
    gw = await start_gateway(proxy)
    held = asyncio.create_task(get_json(client, f"{gw.url}/slow?ms=600"))
    for _ in range(50):
        if a.in_flight or b.in_flight:
            break
        await asyncio.sleep(0.01)
    busy, idle = (a, b) if a.in_flight else (b, a)
    ports = await served_by(client, f"{gw.url}/echo", 6)
    assert ports == [idle.port] * 6
    status, _ = await held
    assert status == 200
    # Once nothing is in flight, ties rotate.
    ports = await served_by(client, f"{gw.url}/echo", 4)
    assert sorted(set(ports)) == sorted({busy.port, idle.port})


# -- passive health ---------------------------------------------------------------------------


async def test_passive_health_ejects_and_recovers(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    good = await start_upstream()
    dead_port = free_port()
    dead = f"http://127.0.0.1:{dead_port}"
    proxy = HttpProxyIntegration(
        uri=None,
        targets=[(dead, 1), (good.url, 1)],
        retries=0,
        failure_threshold=2,
        cooldown_s=0.3,
    )
    gw = await start_gateway(proxy)
    statuses = []
    for _ in range(4):
        async with client.get(f"{gw.url}/echo") as resp:
            statuses.append(resp.status)
    assert statuses == [502, 200, 502, 200]
    assert proxy.health() == {dead: False, good.url: True}
    # Ejected: every request now goes to the healthy target.
    ports = await served_by(client, f"{gw.url}/echo", 6)
    assert ports == [good.port] * 6

    # The dead target comes back; after the cool-down one probe is let through and restores it.
    revived = await start_upstream(port=dead_port)
    await asyncio.sleep(0.35)
    ports = await served_by(client, f"{gw.url}/echo", 6)
    assert revived.port in ports
    assert proxy.health() == {dead: True, good.url: True}
    assert sorted(ports.count(p) for p in (revived.port, good.port)) == [3, 3]


async def test_failed_probe_ejects_again(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    good = await start_upstream()
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = HttpProxyIntegration(
        uri=None, targets=[(dead, 1), (good.url, 1)], retries=0, failure_threshold=1, cooldown_s=0.2
    )
    gw = await start_gateway(proxy)
    statuses = []
    for _ in range(3):
        async with client.get(f"{gw.url}/echo") as resp:
            statuses.append(resp.status)
    assert statuses == [502, 200, 200]
    await asyncio.sleep(0.25)
    async with client.get(f"{gw.url}/echo") as resp:
        assert resp.status == 502  # the probe
    ports = await served_by(client, f"{gw.url}/echo", 3)
    assert ports == [good.port] * 3
    assert proxy.health()[dead] is False


async def test_all_ejected_still_tries(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    port = free_port()
    proxy = HttpProxyIntegration(
        uri=None, targets=[(f"http://127.0.0.1:{port}", 1)], failure_threshold=1, cooldown_s=60
    )
    gw = await start_gateway(proxy)
    async with client.get(f"{gw.url}/echo") as resp:
        assert resp.status == 502
    assert proxy.health() == {f"http://127.0.0.1:{port}": False}
    await start_upstream(port=port)
    status, _ = await get_json(client, f"{gw.url}/echo")
    assert status == 200  # tried although ejected, well within the cool-down
    assert all(proxy.health().values())


# -- pooling ----------------------------------------------------------------------------------


async def test_keep_alive_reuses_connections(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=None, targets=[(up.url, 1)])
    gw = await start_gateway(proxy)
    for _ in range(20):
        status, _ = await get_json(client, f"{gw.url}/echo")
        assert status == 200
    async with client.post(f"{gw.url}/sink", data=b"abc" * 1000) as resp:
        assert resp.status == 200
    assert len(up.peers) == 21
    assert up.connections == 1


async def test_connection_limit_queues(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=None, targets=[(up.url, 1)], max_connections=2)
    gw = await start_gateway(proxy)
    tasks = [asyncio.create_task(get_json(client, f"{gw.url}/slow?ms=300")) for _ in range(6)]
    peak_queue = 0
    while not all(t.done() for t in tasks):
        peak_queue = max(peak_queue, proxy.queue_length())
        await asyncio.sleep(0.02)
    assert [(await t)[0] for t in tasks] == [200] * 6
    assert peak_queue == 4
    assert proxy.queue_length() == 0
    assert up.max_in_flight == 2
    assert up.connections == 2


async def test_queue_wait_counts_toward_timeout(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=None, targets=[(up.url, 1)], max_connections=1, timeout_ms=300)
    gw = await start_gateway(proxy)
    first = asyncio.create_task(get_json(client, f"{gw.url}/slow?ms=250"))
    await asyncio.sleep(0.05)
    async with client.get(f"{gw.url}/slow?ms=250") as resp:
        assert resp.status == 504
    status, _ = await first
    assert status == 200
    assert proxy.queue_length() == 0


async def test_close_releases_idle_connections(
    start_upstream: StartUpstream,
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=None, targets=[(up.url, 1)])
    gw_runner = await serve_front(lambda r: _call(proxy, r))
    url = gw_runner.url
    async with ClientSession() as session:
        status, _ = await get_json(session, f"{url}/echo")
        assert status == 200
    await gw_runner.cleanup()
    await proxy.close()
    for _ in range(50):
        if up.in_flight == 0 and not _open_conns(proxy):
            break
        await asyncio.sleep(0.01)
    assert not _open_conns(proxy)


async def _call(proxy: HttpProxyIntegration, request: Request) -> Response:
    ctx = RequestContext(
        request=request,
        request_id="r",
        path=request.raw_path.partition("?")[0],
        params={},
        stage_variables={},
        client_ip="127.0.0.1",
        received_at=0.0,
    )
    return await proxy(ctx)


def _open_conns(proxy: HttpProxyIntegration) -> int:
    return sum(t.open for t in proxy._targets)


async def test_upstream_connection_close_is_honoured(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    async def closing(request: web.BaseRequest, up: Upstream) -> web.StreamResponse:
        resp = web.Response(text="bye")
        resp.force_close()
        return resp

    up = await start_upstream(closing)
    proxy = HttpProxyIntegration(uri=None, targets=[(up.url, 1)])
    gw = await start_gateway(proxy)
    for _ in range(3):
        async with client.get(f"{gw.url}/x") as resp:
            assert resp.status == 200
            assert await resp.text() == "bye"
            assert "Connection" not in resp.headers or resp.headers["Connection"] != "close"
    assert up.connections == 3


async def test_raw_upstream_interim_and_read_until_close() -> None:
    """A response framed by connection close, after a 100 Continue, arrives whole."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Made It\r\nX-Raw: 1\r\n\r\n")
        await writer.drain()
        for piece in (b"hello ", b"until ", b"close"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = HttpProxyIntegration(uri=f"http://127.0.0.1:{port}/raw", targets=[])
    runner = await serve_front(lambda r: _call(proxy, r))
    try:
        async with (
            ClientSession() as session,
            session.get(f"{runner.url}/x") as resp,
        ):
            assert resp.status == 201
            assert resp.reason == "Made It"
            assert resp.headers["X-Raw"] == "1"
            assert await resp.read() == b"hello until close"
        assert seen[0].startswith(b"GET /raw HTTP/1.1\r\n")
    finally:
        await runner.cleanup()
        await proxy.close()
        server.close()
        await server.wait_closed()


# -- requests started from callbacks (pooled connection, answer settled by the socket) ----------


async def test_pooled_connection_closed_under_a_request(
    start_gateway: StartGateway, client: ClientSession
) -> None:
    """The upstream closes a kept-alive connection as the next request arrives on it (its
    keep-alive timeout raced the request): a GET goes again on a fresh connection, a POST,
    which may not be repeated, is answered 502 and the next one is served."""
    async with closing_upstream() as (port, answered):
        proxy = HttpProxyIntegration(uri=f"http://127.0.0.1:{port}/x", targets=[])
        gw = await start_gateway(proxy)
        for _ in range(3):
            async with client.get(f"{gw.url}/x") as resp:
                assert resp.status == 200
                assert await resp.read() == b"fresh"
        assert answered == [b"GET"] * 3
        async with client.post(f"{gw.url}/x") as resp:
            assert resp.status == 502
        async with client.post(f"{gw.url}/x") as resp:
            assert resp.status == 200
            assert await resp.read() == b"fresh"


async def test_pipelined_requests_behind_a_pooled_exchange_keep_their_order(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=f"{up.url}/slow", targets=[])
    gw = await start_gateway(proxy)
    status, _ = await get_json(client, f"{gw.url}/x?ms=1")
    assert status == 200
    # The first waits longest upstream; the answers still come back in the requests' order.
    pipelined = b"".join(
        b"GET /x?ms=%d&n=%d HTTP/1.1\r\nHost: gw\r\n\r\n" % (ms, n)
        for n, ms in enumerate((150, 1, 60))
    )
    answers = await pipelined_answers(gw.url, pipelined, 3)
    assert [status for status, _ in answers] == [200, 200, 200]
    paths = [orjson.loads(body)["raw_path"] for _, body in answers]
    assert paths == ["/slow?ms=150&n=0", "/slow?ms=1&n=1", "/slow?ms=60&n=2"]


async def test_large_answer_on_a_pooled_connection_streams_whole(
    start_upstream: StartUpstream, start_gateway: StartGateway, client: ClientSession
) -> None:
    up = await start_upstream()
    proxy = HttpProxyIntegration(uri=f"{up.url}/big", targets=[])
    gw = await start_gateway(proxy)
    async with client.get(f"{gw.url}/x?size=10") as resp:
        assert resp.status == 200
        await resp.read()
    async with client.get(f"{gw.url}/x?size={3 * MiB}") as resp:
        assert resp.status == 200
        body = await resp.read()
    assert len(body) == 3 * MiB and body.count(0) == 3 * MiB
    assert up.connections == 1
