"""TLS from the gateway to https upstreams (`http_proxy` integrations' `tls` blocks) against real
TLS servers on 127.0.0.1: a private CA, upstream mutual TLS with the gateway's client
certificate, the server name sent as SNI and verified, per-target settings, WebSocket
pass-through over wss, and `pygw check` refusing unusable settings. Certificates are made per
test with trustme."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
import trustme
from aiohttp import ClientSession, WSMsgType, web

from pygw.cli import main
from pygw.server import Gateway

BACKEND_NAME = "backend.example.test"


@dataclass
class Pki:
    folder: Path  # the config's folder; certificates are in folder/certs
    backend_ca: trustme.CA
    client_ca: trustme.CA

    def write(self, stem: str, leaf: trustme.LeafCert) -> None:
        leaf.cert_chain_pems[0].write_to_path(str(self.folder / "certs" / f"{stem}.pem"))
        leaf.private_key_pem.write_to_path(str(self.folder / "certs" / f"{stem}-key.pem"))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    (tmp_path / "certs").mkdir()
    found = Pki(tmp_path, trustme.CA(), trustme.CA(organization_name="Gateway clients"))
    found.backend_ca.cert_pem.write_to_path(str(tmp_path / "certs" / "backend-ca.pem"))
    found.write("gw-client", found.client_ca.issue_cert("gw.example.test", common_name="gw"))
    return found


@dataclass
class TlsUpstream:
    port: int
    server_names: list[str | None] = field(default_factory=list)  # SNI of each handshake


class StartTlsUpstream(Protocol):
    async def __call__(
        self, leaf: trustme.LeafCert, client_ca: trustme.CA | None = None
    ) -> TlsUpstream: ...


@pytest.fixture
async def start_tls_upstream() -> AsyncIterator[StartTlsUpstream]:
    runners: list[web.AppRunner] = []

    async def start(leaf: trustme.LeafCert, client_ca: trustme.CA | None = None) -> TlsUpstream:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(context)
        if client_ca is not None:
            client_ca.configure_trust(context)
            context.verify_mode = ssl.CERT_REQUIRED
        upstream = TlsUpstream(0)

        def record(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
            upstream.server_names.append(name)

        context.sni_callback = record

        async def answer(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                ws = web.WebSocketResponse()
                await ws.prepare(request)
                async for message in ws:
                    await ws.send_str(f"echo {message.data}")
                return ws
            peer = request.transport.get_extra_info("peercert") if request.transport else None
            subject = dict(pair for rdn in peer["subject"] for pair in rdn) if peer else {}
            return web.json_response({"path": request.path, "client": subject.get("commonName")})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        assert runner.addresses
        upstream.port = runner.addresses[0][1]
        return upstream

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session


async def _gateway(folder: Path, routes: str) -> Gateway:
    config = folder / "gateway.yaml"
    config.write_text(
        'server: {listen: "127.0.0.1:0"}\n'
        'admin: {listen: "127.0.0.1:0"}\n'
        "access_log: null\n"
        "apis:\n"
        "  - name: edge\n"
        "    type: http\n"
        "    routes:\n" + routes
    )
    gateway = Gateway(config)
    await gateway.start()
    return gateway


def _route(path: str, integration: str) -> str:
    return f'      "GET {path}":\n        integration: {integration}\n'


async def _get(client: ClientSession, gateway: Gateway, path: str) -> tuple[int, Any]:
    assert isinstance(gateway.bound, tuple)
    async with client.get(f"http://127.0.0.1:{gateway.bound[1]}{path}") as response:
        if response.status != 200:
            return response.status, await response.text()
        return response.status, await response.json()


async def test_private_ca_bundle_verifies_the_upstream(
    pki: Pki, start_tls_upstream: StartTlsUpstream, client: ClientSession
) -> None:
    upstream = await start_tls_upstream(pki.backend_ca.issue_cert("127.0.0.1"))
    base = f"https://127.0.0.1:{upstream.port}"
    gateway = await _gateway(
        pki.folder,
        _route(
            "/trusted",
            f'{{type: http_proxy, uri: "{base}/hello", tls: {{ca: certs/backend-ca.pem}}}}',
        )
        + _route("/system", f'{{type: http_proxy, uri: "{base}/hello"}}'),
    )
    try:
        status, body = await _get(client, gateway, "/trusted")
        assert (status, body["path"]) == (200, "/hello")
        # Without the bundle the private CA is unknown: the handshake fails, nothing is relayed.
        status, _ = await _get(client, gateway, "/system")
        assert status == 502
    finally:
        await gateway.drain()


async def test_client_certificate_for_upstream_mutual_tls(
    pki: Pki, start_tls_upstream: StartTlsUpstream, client: ClientSession
) -> None:
    upstream = await start_tls_upstream(pki.backend_ca.issue_cert("127.0.0.1"), pki.client_ca)
    base = f"https://127.0.0.1:{upstream.port}"
    gateway = await _gateway(
        pki.folder,
        _route(
            "/mutual",
            f'{{type: http_proxy, uri: "{base}/m", tls: {{ca: certs/backend-ca.pem, '
            "cert: certs/gw-client.pem, key: certs/gw-client-key.pem}}",
        )
        + _route(
            "/anonymous",
            f'{{type: http_proxy, uri: "{base}/a", tls: {{ca: certs/backend-ca.pem}}}}',
        ),
    )
    try:
        status, body = await _get(client, gateway, "/mutual")
        assert (status, body["client"]) == (200, "gw")
        status, _ = await _get(client, gateway, "/anonymous")
        assert status == 502
    finally:
        await gateway.drain()


async def test_server_name_is_sent_and_verified(
    pki: Pki, start_tls_upstream: StartTlsUpstream, client: ClientSession
) -> None:
    # The certificate names only backend.example.test, though the upstream is dialled by address.
    upstream = await start_tls_upstream(pki.backend_ca.issue_cert(BACKEND_NAME))
    base = f"https://127.0.0.1:{upstream.port}"
    gateway = await _gateway(
        pki.folder,
        _route(
            "/named",
            f'{{type: http_proxy, uri: "{base}/n", tls: {{ca: certs/backend-ca.pem, '
            f"server_name: {BACKEND_NAME}}}}}",
        )
        + _route(
            "/unnamed",
            f'{{type: http_proxy, uri: "{base}/u", tls: {{ca: certs/backend-ca.pem}}}}',
        )
        # A target's block overrides the integration's field by field (the CA is inherited).
        + _route(
            "/pool",
            "{type: http_proxy, uri: /p, tls: {ca: certs/backend-ca.pem}, targets: "
            f'[{{url: "{base}", tls: {{server_name: {BACKEND_NAME}}}}}]}}',
        ),
    )
    try:
        status, body = await _get(client, gateway, "/named")
        assert (status, body["path"]) == (200, "/n")
        assert upstream.server_names == [BACKEND_NAME]
        status, body = await _get(client, gateway, "/pool")
        assert (status, body["path"]) == (200, "/p")
        # Verified against the URL's host, 127.0.0.1, which the certificate does not name.
        status, _ = await _get(client, gateway, "/unnamed")
        assert status == 502
    finally:
        await gateway.drain()


async def test_websocket_pass_through_uses_the_tls_settings(
    pki: Pki, start_tls_upstream: StartTlsUpstream, client: ClientSession
) -> None:
    upstream = await start_tls_upstream(pki.backend_ca.issue_cert(BACKEND_NAME), pki.client_ca)
    gateway = await _gateway(
        pki.folder,
        _route(
            "/ws",
            f'{{type: http_proxy, uri: "https://127.0.0.1:{upstream.port}/ws", tls: '
            "{ca: certs/backend-ca.pem, cert: certs/gw-client.pem, key: certs/gw-client-key.pem, "
            f"server_name: {BACKEND_NAME}}}}}",
        ),
    )
    try:
        assert isinstance(gateway.bound, tuple)
        async with client.ws_connect(f"http://127.0.0.1:{gateway.bound[1]}/ws") as ws:
            await ws.send_str("hi")
            message = await ws.receive(timeout=5)
            assert (message.type, message.data) == (WSMsgType.TEXT, "echo hi")
        assert upstream.server_names == [BACKEND_NAME]
    finally:
        await gateway.drain()


# -- pygw check ---------------------------------------------------------------------------------


def _check(pki: Pki, integration: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    config = pki.folder / "gateway.yaml"
    config.write_text(
        "apis:\n  - name: edge\n    type: http\n    routes:\n" + _route("/x", integration)
    )
    code = main(["check", "-c", str(config)])
    return code, capsys.readouterr().err


def test_check_refuses_unusable_upstream_tls(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    config = pki.folder / "gateway.yaml"
    where = f"{config}: apis[0].routes.GET /x.integration.tls"
    code, err = _check(
        pki,
        '{type: http_proxy, uri: "https://backend.internal:8443/x", tls: '
        "{ca: certs/backend-ca.pem, cert: certs/gw-client.pem, key: certs/gw-client-key.pem}}",
        capsys,
    )
    assert (code, err) == (0, "")

    code, err = _check(
        pki,
        '{type: http_proxy, uri: "https://backend.internal/x", tls: {ca: certs/nope.pem}}',
        capsys,
    )
    assert code == 1
    assert f"{where}.ca: file not found: {pki.folder / 'certs' / 'nope.pem'}" in err
    assert "(check the path of ca)" in err

    pki.write("other", pki.client_ca.issue_cert("other.example.test"))
    code, err = _check(
        pki,
        '{type: http_proxy, uri: "https://backend.internal/x", tls: {cert: certs/gw-client.pem, '
        "key: certs/other-key.pem}}",
        capsys,
    )
    assert code == 1
    assert f"{where}.key: " in err
    assert "is not the private key of" in err
    assert "(give the key the client certificate was issued for)" in err

    code, err = _check(
        pki,
        '{type: http_proxy, uri: "https://b.internal/x", tls: {cert: certs/gw-client.pem}}',
        capsys,
    )
    assert code == 1
    assert "a client certificate needs both cert and key" in err

    code, err = _check(
        pki,
        '{type: http_proxy, uri: /x, targets: [{url: "http://b.internal:8080", '
        "tls: {ca: certs/backend-ca.pem}}]}",
        capsys,
    )
    assert code == 1
    assert "apis[0].routes.GET /x.integration.targets[0].tls: tls is set for " in err
    assert "which is plain http (write https:// in the URL, or remove the tls block)" in err


def test_check_warns_about_unverified_upstreams(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _check(
        pki, '{type: http_proxy, uri: "https://b.internal/x", tls: {verify: false}}', capsys
    )
    assert code == 0
    assert err.startswith("warning: ")
    assert "the certificate of https://b.internal/x is not verified" in err
