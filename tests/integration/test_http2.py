"""HTTP/2 on an HTTPS listener (pygw/http2.py) against a running gateway on 127.0.0.1, with real
HTTP/2 clients: httpx (over the `h2` package) and curl --http2. Mock, function and http_proxy
routes; many streams on one connection; large bodies both ways (flow control); the header,
body and stream limits; malformed requests answered on their stream; GOAWAY on drain; and a
client that does not offer h2 served HTTP/1.1. Certificates are made per test with trustme."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import pytest
import trustme
from aiohttp import web

from pygw.server import Gateway
from tests.integration.conftest import StartUpstream, Upstream, echo_behaviour

Behaviour = Callable[[web.BaseRequest, Upstream], Awaitable[web.StreamResponse]]

HERE = Path(__file__).resolve().parent
HANDLERS = HERE / "handlers"

CONFIG = """
server:
  listen: "127.0.0.1:0"
  tls:
    certificates:
      - {cert: certs/api.pem, key: certs/api-key.pem}
    alpn: %(alpn)s
  limits: {max_body_bytes: 4194304, max_header_bytes: 4096, max_concurrent_streams: 8,
           idle_timeout_s: %(idle)s}
admin: {listen: "127.0.0.1:0"}
access_log: null
python_path: [%(handlers)s]
apis:
  - name: edge
    type: http
    routes:
      "GET /mock": {integration: {type: mock, status: 200, body: {ok: true}}}
      "GET /v2": {integration: {type: function, handler: "lambda_echo:echo_event"}}
      "POST /v2": {integration: {type: function, handler: "lambda_echo:echo_event"}}
      "GET /up/slow": {integration: {type: http_proxy, uri: "%(up)s/slow"}}
      "GET /up/big": {integration: {type: http_proxy, uri: "%(up)s/big"}}
      "HEAD /up/big": {integration: {type: http_proxy, uri: "%(up)s/big"}}
      "POST /up/sink": {integration: {type: http_proxy, uri: "%(up)s/sink"}}
      "GET /up/echo": {integration: {type: http_proxy, uri: "%(up)s/echo"}}
"""

BIG = 1024 * 1024  # the upstream's /big answer, by default


@dataclass
class Edge:
    gateway: Gateway
    port: int
    ca: trustme.CA
    folder: Path
    upstream: Upstream

    @property
    def base(self) -> str:
        return f"https://api.example.test:{self.port}"

    def context(
        self, alpn: list[str] | None = None, cert: trustme.LeafCert | None = None
    ) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(context)
        if cert is not None:
            cert.configure_cert(context)
        if alpn is not None:
            context.set_alpn_protocols(alpn)
        return context

    def client(self, http2: bool = True, cert: trustme.LeafCert | None = None) -> httpx.AsyncClient:
        # The name resolves to the listener: the certificate is checked against it.
        transport = httpx.AsyncHTTPTransport(
            verify=self.context(cert=cert), http2=http2, http1=True, retries=0
        )
        return httpx.AsyncClient(
            transport=transport,
            base_url=f"https://127.0.0.1:{self.port}",
            headers={"Host": f"api.example.test:{self.port}"},
            timeout=20,
        )


async def _start(
    tmp_path: Path,
    start_upstream: StartUpstream,
    alpn: str = "[h2, http/1.1]",
    extra: str = "",
    behaviour: Behaviour = echo_behaviour,
    idle_timeout_s: float = 75,
) -> Edge:
    (tmp_path / "certs").mkdir(exist_ok=True)
    ca = trustme.CA(organization_name="Server CA")
    leaf = ca.issue_cert("api.example.test")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "certs" / "api.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "certs" / "api-key.pem"))
    upstream = await start_upstream(behaviour)
    (tmp_path / "gateway.yaml").write_text(
        CONFIG % {"alpn": alpn, "handlers": HANDLERS, "up": upstream.url, "idle": idle_timeout_s}
        + extra
    )
    gateway = Gateway(tmp_path / "gateway.yaml")
    await gateway.start()
    assert isinstance(gateway.bound, tuple)
    return Edge(gateway, gateway.bound[1], ca, tmp_path, upstream)


async def test_mutual_tls_client_certificate_reaches_the_function_over_h2(
    tmp_path: Path, start_upstream: StartUpstream
) -> None:
    (tmp_path / "certs").mkdir()
    clients = trustme.CA(organization_name="Clients CA")
    clients.cert_pem.write_to_path(str(tmp_path / "certs" / "clients-ca.pem"))
    good = clients.issue_cert("good.clients.test", common_name="good-client")
    extra = (
        "domains:\n  - name: api.example.test\n    mutual_tls: {truststore: certs/clients-ca.pem}\n"
    )
    running = await _start(tmp_path, start_upstream, extra=extra)
    try:
        async with running.client(cert=good) as client:
            answer = await _get(client, "/v2")
            assert answer.http_version == "HTTP/2"
            cert = answer.json()["requestContext"]["authentication"]["clientCert"]
            assert "CN=good-client" in cert["subjectDN"]
            assert cert["clientCertPem"].startswith("-----BEGIN CERTIFICATE-----")
    finally:
        await running.gateway.drain()


@pytest.fixture
async def edge(tmp_path: Path, start_upstream: StartUpstream) -> AsyncIterator[Edge]:
    running = await _start(tmp_path, start_upstream)
    try:
        yield running
    finally:
        await running.gateway.drain()


async def _get(client: httpx.AsyncClient, path: str) -> httpx.Response:
    # httpx takes the SNI name from the request's extensions.
    return await client.get(path, extensions={"sni_hostname": "api.example.test"})


async def test_mock_function_and_proxy_routes_over_h2(edge: Edge) -> None:
    async with edge.client() as client:
        mock = await _get(client, "/mock")
        assert mock.http_version == "HTTP/2"
        assert mock.status_code == 200
        assert mock.json() == {"ok": True}
        assert "connection" not in mock.headers

        event = (await _get(client, "/v2?a=1")).json()
        assert event["requestContext"]["http"]["protocol"] == "HTTP/2.0"
        assert event["requestContext"]["http"]["method"] == "GET"
        assert event["rawQueryString"] == "a=1"
        # :authority is the request's Host.
        assert event["headers"]["host"] == f"api.example.test:{edge.port}"
        assert event["requestContext"]["domainName"] == "api.example.test"

        proxied = await _get(client, "/up/echo")
        assert proxied.http_version == "HTTP/2"
        sent = dict((k.lower(), v) for k, v in proxied.json()["headers"])
        assert sent["host"] == f"127.0.0.1:{edge.upstream.port}"
        assert proxied.headers["x-upstream-port"] == str(edge.upstream.port)


async def test_client_not_offering_h2_gets_http11(edge: Edge) -> None:
    async with edge.client(http2=False) as client:
        answer = await _get(client, "/mock")
        assert answer.http_version == "HTTP/1.1"
        assert answer.json() == {"ok": True}
    # Checked at the handshake too: ALPN picks http/1.1, or nothing for a client without ALPN.
    for offered, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1"), (None, None)):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", edge.port, ssl=edge.context(offered), server_hostname="api.example.test"
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == chosen
        if chosen != "h2":
            writer.write(b"GET /mock HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
            line = await asyncio.wait_for(reader.readline(), 5)
            assert line.startswith(b"HTTP/1.1 200")
        writer.close()


async def test_h2_not_offered_unless_configured(
    tmp_path: Path, start_upstream: StartUpstream
) -> None:
    running = await _start(tmp_path, start_upstream, alpn="[http/1.1]")
    try:
        async with running.client() as client:  # offers h2 and http/1.1
            answer = await _get(client, "/mock")
            assert answer.http_version == "HTTP/1.1"
            assert answer.status_code == 200
    finally:
        await running.gateway.drain()


async def test_concurrent_streams_share_one_connection(edge: Edge) -> None:
    async with edge.client() as client:
        await _get(client, "/mock")  # the connection is open
        answers = await asyncio.gather(
            *(
                client.get("/up/slow?ms=1000", extensions={"sni_hostname": "api.example.test"})
                for _ in range(6)
            )
        )
    assert [a.status_code for a in answers] == [200] * 6
    assert all(a.http_version == "HTTP/2" for a in answers)
    # The six reached the upstream at once: streams are served concurrently, not in turn.
    assert edge.upstream.max_in_flight == 6


async def test_large_bodies_both_ways_respect_flow_control(edge: Edge) -> None:
    payload = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MiB, past every window
    async with edge.client() as client:
        down = await _get(client, "/up/big")
        assert down.status_code == 200
        assert down.http_version == "HTTP/2"
        assert len(down.content) == BIG
        assert down.content == bytes(BIG)
        # Streamed as it arrives from the upstream, length unknown (chunked upstream side).
        streamed_down = await _get(client, "/up/big?chunked=1&size=3000000")
        assert streamed_down.status_code == 200
        assert "content-length" not in streamed_down.headers
        assert streamed_down.content == bytes(3_000_000)
        head = await client.head("/up/big", extensions={"sni_hostname": "api.example.test"})
        assert head.status_code == 200 and head.content == b""

        up = await client.post(
            "/up/sink", content=payload, extensions={"sni_hostname": "api.example.test"}
        )
        assert up.status_code == 200
        seen = up.json()
        assert seen["size"] == len(payload)
        assert seen["sha256"] == hashlib.sha256(payload).hexdigest()

        # A body of unknown length (no content-length: DATA frames until END_STREAM).
        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(payload), 100_000):
                yield payload[start : start + 100_000]

        streamed = await client.post(
            "/up/sink", content=pieces(), extensions={"sni_hostname": "api.example.test"}
        )
        assert streamed.json()["sha256"] == hashlib.sha256(payload).hexdigest()


def _raw_h2(edge: Edge) -> tuple[ssl.SSLSocket, h2.connection.H2Connection]:
    """A bare HTTP/2 client connection (the `h2` package) for what httpx will not send."""
    sock = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
    tls = edge.context(["h2"]).wrap_socket(sock, server_hostname="api.example.test")
    assert tls.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    conn.initiate_connection()
    tls.sendall(conn.data_to_send())
    return tls, conn


def _until(
    tls: ssl.SSLSocket,
    conn: h2.connection.H2Connection,
    done: type[h2.events.Event] | tuple[type[h2.events.Event], ...],
    count: int,
) -> list[h2.events.Event]:
    """Reads events until `count` of kind `done` arrived (or the connection closed)."""
    events: list[h2.events.Event] = []
    while sum(isinstance(e, done) for e in events) < count:
        data = tls.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            events.append(event)
            if isinstance(event, h2.events.DataReceived) and event.stream_id:
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        out = conn.data_to_send()
        if out:
            tls.sendall(out)
    return events


def _request(path: bytes, *extra: tuple[bytes, bytes], method: bytes = b"GET") -> list:
    return [
        (b":method", method),
        (b":scheme", b"https"),
        (b":path", path),
        (b":authority", b"api.example.test"),
        *extra,
    ]


def _status(events: list[h2.events.Event], stream_id: int) -> int | None:
    for event in events:
        if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
            return int(dict(event.headers)[b":status"])
    return None


async def test_limits_and_malformed_requests_answered_on_their_stream(edge: Edge) -> None:
    def run() -> dict[int, int | None]:
        tls, conn = _raw_h2(edge)
        try:
            conn.send_headers(1, _request(b"/mock", (b"x-big", b"a" * 5000)), end_stream=True)
            conn.send_headers(3, _request(b"/mock", (b"connection", b"close")), end_stream=True)
            conn.send_headers(5, [(b":method", b"GET"), (b":path", b"/mock")], end_stream=True)
            conn.send_headers(7, _request(b"/v2", (b"content-length", b"99999999"), method=b"POST"))
            conn.send_headers(9, _request(b"/mock", (b"X-Upper", b"1")), end_stream=True)
            conn.send_headers(11, _request(b"/mock"), end_stream=True)
            tls.sendall(conn.data_to_send())
            events = _until(tls, conn, h2.events.StreamEnded, 6)
            return {sid: _status(events, sid) for sid in (1, 3, 5, 7, 9, 11)}
        finally:
            tls.close()

    statuses = await asyncio.to_thread(run)
    assert statuses == {1: 431, 3: 400, 5: 400, 7: 413, 9: 400, 11: 200}


async def test_body_over_the_limit_is_refused_413(edge: Edge) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield bytes(1024 * 1024)  # 5 MiB without a length, over the 4 MiB limit

    async with edge.client() as client:
        answer = await client.post(
            "/up/sink", content=pieces(), extensions={"sni_hostname": "api.example.test"}
        )
        assert answer.status_code == 413
        # The connection goes on serving.
        assert (await _get(client, "/mock")).status_code == 200


async def test_streams_over_the_limit_refused_and_reset_handled(edge: Edge) -> None:
    def run() -> tuple[list[int], int | None]:
        tls, conn = _raw_h2(edge)
        try:
            # The server's SETTINGS (max 8 streams) first.
            _until(tls, conn, h2.events.RemoteSettingsChanged, 1)
            assert conn.remote_settings.max_concurrent_streams == 8
            # A stream reset by the client mid-answer does not disturb the next one.
            conn.send_headers(1, _request(b"/up/slow?ms=200"), end_stream=True)
            conn.reset_stream(1)
            conn.send_headers(3, _request(b"/up/big"), end_stream=True)
            tls.sendall(conn.data_to_send())
            events = _until(tls, conn, h2.events.StreamEnded, 1)
            size = sum(len(e.data or b"") for e in events if isinstance(e, h2.events.DataReceived))
            ended = [e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)]
            return ended, size
        finally:
            tls.close()

    ended, size = await asyncio.to_thread(run)
    assert ended == [3]
    assert size == BIG


async def test_reset_streams_still_count_until_their_handlers_finish(edge: Edge) -> None:
    """Rapid reset: streams opened and reset at once cannot pile up work past the limit."""

    def run() -> tuple[list[tuple[int, int]], int | None]:
        tls, conn = _raw_h2(edge)
        try:
            _until(tls, conn, h2.events.RemoteSettingsChanged, 1)
            for stream_id in range(1, 17, 2):  # 8 streams, the limit
                conn.send_headers(stream_id, _request(b"/up/slow?ms=1500"), end_stream=True)
                conn.reset_stream(stream_id)
            conn.send_headers(17, _request(b"/mock"), end_stream=True)
            tls.sendall(conn.data_to_send())
            events = _until(tls, conn, h2.events.StreamReset, 1)
            resets = [
                (e.stream_id, e.error_code) for e in events if isinstance(e, h2.events.StreamReset)
            ]
            # Once the handlers are done, new streams are served again (refused until then).
            for stream_id in range(19, 99, 2):
                time.sleep(0.5)
                conn.send_headers(stream_id, _request(b"/mock"), end_stream=True)
                tls.sendall(conn.data_to_send())
                later = _until(tls, conn, (h2.events.StreamEnded, h2.events.StreamReset), 1)
                if _status(later, stream_id) is not None:
                    return resets, _status(later, stream_id)
            return resets, None
        finally:
            tls.close()

    resets, later = await asyncio.wait_for(asyncio.to_thread(run), 30)
    assert resets == [(17, h2.errors.ErrorCodes.REFUSED_STREAM)]
    assert later == 200


async def test_drain_sends_goaway_and_finishes_streams_in_flight(
    tmp_path: Path, start_upstream: StartUpstream
) -> None:
    arrived = asyncio.Event()

    async def noted(request: web.BaseRequest, upstream: Upstream) -> web.StreamResponse:
        arrived.set()
        return await echo_behaviour(request, upstream)

    running = await _start(tmp_path, start_upstream, behaviour=noted)

    def run() -> list[h2.events.Event]:
        tls, conn = _raw_h2(running)
        try:
            conn.send_headers(1, _request(b"/up/slow?ms=300"), end_stream=True)
            tls.sendall(conn.data_to_send())
            return _until(tls, conn, h2.events.StreamEnded, 1) + _until(
                tls, conn, h2.events.ConnectionTerminated, 1
            )
        finally:
            tls.close()

    client = asyncio.create_task(asyncio.to_thread(run))
    # Drained once the request is in flight (it has reached the upstream).
    await asyncio.wait_for(arrived.wait(), 10)
    await running.gateway.drain()
    events = await asyncio.wait_for(client, 10)
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway and goaway[0].error_code == 0 and goaway[0].last_stream_id == 1
    assert _status(events, 1) == 200
    assert any(isinstance(e, h2.events.StreamEnded) and e.stream_id == 1 for e in events)


def _curl_http2() -> bool:
    if shutil.which("curl") is None:
        return False
    features = subprocess.run(["curl", "-V"], capture_output=True, text=True).stdout
    return "HTTP2" in features


async def test_idle_connection_gets_goaway_and_closes(
    tmp_path: Path, start_upstream: StartUpstream
) -> None:
    running = await _start(tmp_path, start_upstream, idle_timeout_s=0.5)

    def run() -> list[h2.events.Event]:
        tls, conn = _raw_h2(running)
        try:
            conn.send_headers(1, _request(b"/mock"), end_stream=True)
            tls.sendall(conn.data_to_send())
            # The answer, then (idle) GOAWAY and the end of the connection.
            return _until(tls, conn, h2.events.ConnectionTerminated, 1)
        finally:
            tls.close()

    try:
        events = await asyncio.wait_for(asyncio.to_thread(run), 20)
    finally:
        await running.gateway.drain()
    assert _status(events, 1) == 200
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway and goaway[0].error_code == 0 and goaway[0].last_stream_id == 1


@pytest.mark.skipif(not _curl_http2(), reason="curl is not installed or lacks HTTP/2")
async def test_curl_http2(edge: Edge) -> None:
    ca = edge.folder / "ca.pem"
    edge.ca.cert_pem.write_to_path(str(ca))
    args = [
        "curl", "-sS", "--http2", "--cacert", str(ca),
        "--resolve", f"api.example.test:{edge.port}:127.0.0.1",
        "-w", "\n%{http_version} %{http_code}",
    ]  # fmt: skip
    done = await asyncio.create_subprocess_exec(
        *args,
        f"{edge.base}/mock",
        f"{edge.base}/v2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(done.communicate(), 20)
    assert done.returncode == 0, err
    text = out.decode()
    first, _, rest = text.partition("\n2 200")
    assert json.loads(first) == {"ok": True}
    body, _, status = rest.lstrip("\n").rpartition("\n")
    assert status == "2 200"
    assert json.loads(body)["requestContext"]["http"]["protocol"] == "HTTP/2.0"
