"""HTTPS listeners (pygw/tls.py) against a running gateway on 127.0.0.1: certificates chosen by
SNI, certificates swapped on disk and by reload, mutual TLS per domain with the client
certificate handed to functions and authorizers as API Gateway does, the redirect listener, and
`pygw check` refusing broken TLS settings. Certificates are made per test with trustme."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import trustme
from cryptography import x509

from pygw.server import Gateway
from tests.e2e.gateway_process import GatewayProcess
from tests.integration.conftest import StartUpstream

HERE = Path(__file__).resolve().parent
HANDLERS = HERE / "handlers"
AUTHORIZERS = HERE / "authorizers"
REPO = HERE.parent.parent

CONFIG = """
server:
  listen: "127.0.0.1:0"
  tls:
    certificates:
      - {cert: certs/default.pem, key: certs/default-key.pem}
      - {cert: certs/api.pem, key: certs/api-key.pem}
      - {cert: certs/wild.pem, key: certs/wild-key.pem}
    min_version: "1.2"
    alpn: [http/1.1]
  redirect_http: "127.0.0.1:0"
admin: {listen: "127.0.0.1:0"}
access_log: null
python_path: [%(handlers)s, %(authorizers)s]
domains:
  - name: mtls.example.test
    mutual_tls: {truststore: certs/clients-ca.pem}
  - name: api.example.test
apis:
  - name: edge
    type: http
    authorizers:
      cert: {type: custom, handler: "authz_mtls:by_client_cert", identity_source: [header.host],
             ttl_s: 0, simple_responses: true}
    routes:
      "GET /mock": {integration: {type: mock, status: 200, body: {ok: true}}}
      "GET /v1": {integration: {type: function, handler: "lambda_echo:echo_event",
                                payload_format: "1.0"}}
      "GET /v2": {integration: {type: function, handler: "lambda_echo:echo_event"}}
      "GET /authorized": {integration: {type: function, handler: "lambda_echo:echo_event"},
                          authorizer: cert}
"""


@dataclass
class Pki:
    folder: Path  # the config's folder; certificates are in folder/certs
    server_ca: trustme.CA
    client_ca: trustme.CA
    good: trustme.LeafCert
    expired: trustme.LeafCert
    foreign: trustme.LeafCert

    def issue_server(self, stem: str, *names: str) -> trustme.LeafCert:
        leaf = self.server_ca.issue_cert(*names)
        leaf.cert_chain_pems[0].write_to_path(str(self.folder / "certs" / f"{stem}.pem"))
        leaf.private_key_pem.write_to_path(str(self.folder / "certs" / f"{stem}-key.pem"))
        return leaf

    def client_context(
        self,
        cert: trustme.LeafCert | None = None,
        max_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    ) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.server_ca.configure_trust(context)
        context.maximum_version = max_version
        if cert is not None:
            cert.configure_cert(context)
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    (tmp_path / "certs").mkdir()
    now = datetime.datetime.now(datetime.UTC)
    client_ca = trustme.CA(organization_name="Clients CA")
    other_ca = trustme.CA(organization_name="Someone Else")
    found = Pki(
        tmp_path,
        trustme.CA(organization_name="Server CA"),
        client_ca,
        client_ca.issue_cert("good.clients.test", common_name="good-client"),
        client_ca.issue_cert(
            "expired.clients.test",
            common_name="expired-client",
            not_before=now - datetime.timedelta(days=10),
            not_after=now - datetime.timedelta(days=1),
        ),
        other_ca.issue_cert("foreign.clients.test", common_name="good-client"),
    )
    found.issue_server("default", "default.test")
    found.issue_server("api", "api.example.test", "mtls.example.test")
    found.issue_server("wild", "*.wild.test")
    client_ca.cert_pem.write_to_path(str(tmp_path / "certs" / "clients-ca.pem"))
    (tmp_path / "gateway.yaml").write_text(
        CONFIG % {"handlers": HANDLERS, "authorizers": AUTHORIZERS}
    )
    return found


@dataclass
class Running:
    gateway: Gateway
    port: int
    redirect_port: int


@pytest.fixture
async def edge(pki: Pki) -> AsyncIterator[Running]:
    gateway = Gateway(pki.folder / "gateway.yaml")
    await gateway.start()
    assert isinstance(gateway.bound, tuple)
    assert gateway.redirect is not None
    try:
        yield Running(gateway, gateway.bound[1], gateway.redirect.port)
    finally:
        await gateway.drain()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    peer: dict[str, Any]  # the server certificate, as ssl's getpeercert() reads it

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def peer_names(self) -> list[str]:
        return [value for kind, value in self.peer.get("subjectAltName", ()) if kind == "DNS"]


class Connection:
    """One keep-alive HTTPS connection speaking plain HTTP/1.1."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, server_name: str | None, context: ssl.SSLContext) -> Connection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname=server_name or ""
            ),
            5,
        )
        return cls(reader, writer)

    async def get(self, path: str, host: str, extra: str = "") -> Answer:
        """`extra`: more header lines, each ending in CRLF."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        peer = self.writer.get_extra_info("ssl_object").getpeercert()
        return Answer(status, headers, body, peer)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await self.writer.wait_closed()


async def fetch(
    port: int,
    name: str | None,
    context: ssl.SSLContext,
    path: str = "/mock",
    host: str | None = None,
) -> Answer | None:
    """One request on a new connection; None when the gateway gave no HTTP answer (the
    handshake failed, or the connection was closed before answering)."""
    try:
        conn = await Connection.open(port, name, context)
    except (ssl.SSLError, ConnectionError):
        return None
    try:
        return await conn.get(path, host or name or "127.0.0.1")
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        return None
    finally:
        await conn.close()


# -- SNI --------------------------------------------------------------------------------------


async def test_sni_picks_the_certificate_for_the_name(edge: Running, pki: Pki) -> None:
    context = pki.client_context()
    for name, expected in [
        ("api.example.test", ["api.example.test", "mtls.example.test"]),
        ("x.wild.test", ["*.wild.test"]),
        ("default.test", ["default.test"]),
    ]:
        answer = await fetch(edge.port, name, context)
        assert answer is not None, name
        assert answer.status == 200
        assert answer.json() == {"ok": True}
        assert answer.peer_names == expected, name

    # A name no certificate is for, a wildcard one label too deep, and no SNI at all are
    # served the first certificate (hostname checks off: the client sees what it got).
    lenient = pki.client_context()
    lenient.check_hostname = False
    for name in ("unknown.test", "a.b.wild.test", None):
        answer = await fetch(edge.port, name, lenient, host="unknown.test")
        assert answer is not None
        assert answer.peer_names == ["default.test"], name


async def test_requests_are_https_for_functions(edge: Running, pki: Pki) -> None:
    answer = await fetch(edge.port, "api.example.test", pki.client_context(), "/v2")
    assert answer is not None and answer.status == 200
    event = answer.json()
    assert event["headers"]["x-forwarded-proto"] == "https"
    # No mutual TLS on this domain: no client certificate in the event.
    assert "authentication" not in event["requestContext"]


# -- certificate changes ----------------------------------------------------------------------


async def test_certificate_swapped_on_disk_serves_new_connections(edge: Running, pki: Pki) -> None:
    context = pki.client_context()
    old = await Connection.open(edge.port, "api.example.test", context)
    try:
        first = await old.get("/mock", "api.example.test")
        assert first.status == 200
        old_serial = first.peer["serialNumber"]

        pki.issue_server("api", "api.example.test", "mtls.example.test", "new.example.test")
        await asyncio.sleep(1.2)  # files are looked at once a second at most
        fresh = await fetch(edge.port, "api.example.test", context)
        assert fresh is not None and fresh.status == 200
        assert "new.example.test" in fresh.peer_names
        assert fresh.peer["serialNumber"] != old_serial

        # The connection opened before keeps working, with the certificate it started with.
        again = await old.get("/mock", "api.example.test")
        assert again.status == 200
        assert again.peer["serialNumber"] == old_serial
    finally:
        await old.close()


async def test_bad_new_certificate_keeps_the_old_one(edge: Running, pki: Pki) -> None:
    context = pki.client_context()
    before = await fetch(edge.port, "x.wild.test", context)
    assert before is not None
    # A new certificate with the old key: they do not match.
    other = pki.server_ca.issue_cert("*.wild.test")
    other.cert_chain_pems[0].write_to_path(str(pki.folder / "certs" / "wild.pem"))
    await asyncio.sleep(1.2)
    after = await fetch(edge.port, "x.wild.test", context)
    assert after is not None and after.status == 200
    assert after.peer["serialNumber"] == before.peer["serialNumber"]

    ok, message = await edge.gateway.reload()
    assert not ok
    assert "server.tls.certificates[2].key" in message
    assert "is not the private key" in message

    # Fixed on disk, then reloaded: served at once.
    fixed = pki.issue_server("wild", "*.wild.test", "extra.test")
    ok, message = await edge.gateway.reload()
    assert ok, message
    served = await fetch(edge.port, "x.wild.test", context)
    assert served is not None
    # Compared as numbers: OpenSSL writes whole bytes, so the hex may start with a 0.
    assert int(served.peer["serialNumber"], 16) == (
        x509.load_pem_x509_certificate(fixed.cert_chain_pems[0].bytes()).serial_number
    )


# -- mutual TLS -------------------------------------------------------------------------------

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_mutual_tls_admits_only_good_client_certificates(
    edge: Running, pki: Pki, version: ssl.TLSVersion
) -> None:
    name = "mtls.example.test"
    good = await fetch(edge.port, name, pki.client_context(pki.good, version))
    assert good is not None and good.status == 200
    assert await fetch(edge.port, name, pki.client_context(None, version)) is None
    assert await fetch(edge.port, name, pki.client_context(pki.expired, version)) is None
    assert await fetch(edge.port, name, pki.client_context(pki.foreign, version)) is None
    # The same certificate's other name has no mutual TLS: no client certificate needed.
    plain = await fetch(edge.port, "api.example.test", pki.client_context(None, version))
    assert plain is not None and plain.status == 200


async def test_mutual_tls_domain_cannot_be_reached_by_another_server_name(
    edge: Running, pki: Pki
) -> None:
    answer = await fetch(
        edge.port, "api.example.test", pki.client_context(), host="mtls.example.test"
    )
    assert answer is not None
    assert answer.status == 421


def _expected_cert_fields(leaf: trustme.LeafCert) -> dict[str, Any]:
    pem = leaf.cert_chain_pems[0].bytes().decode()
    cert = x509.load_pem_x509_certificate(pem.encode())
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8, "big")
    return {
        "clientCertPem": pem,
        "subjectDN": cert.subject.rfc4514_string(),
        "issuerDN": cert.issuer.rfc4514_string(),
        "serialNumber": serial.hex(":"),
    }


_OPENSSL_TIME = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4} GMT$")


async def test_functions_see_the_client_certificate_as_aws_sends_it(
    edge: Running, pki: Pki
) -> None:
    expected = _expected_cert_fields(pki.good)
    assert "CN=good-client" in expected["subjectDN"]
    context = pki.client_context(pki.good)
    conn = await Connection.open(edge.port, "mtls.example.test", context)
    try:
        v1 = (await conn.get("/v1", "mtls.example.test")).json()
        v2 = (await conn.get("/v2", "mtls.example.test")).json()
    finally:
        await conn.close()
    for cert in (
        v1["requestContext"]["identity"]["clientCert"],
        v2["requestContext"]["authentication"]["clientCert"],
    ):
        assert {k: cert[k] for k in expected} == expected
        assert set(cert["validity"]) == {"notBefore", "notAfter"}
        assert _OPENSSL_TIME.match(cert["validity"]["notBefore"])
        assert _OPENSSL_TIME.match(cert["validity"]["notAfter"])


async def test_authorizer_decides_by_the_client_certificate(edge: Running, pki: Pki) -> None:
    good = await fetch(edge.port, "mtls.example.test", pki.client_context(pki.good), "/authorized")
    assert good is not None and good.status == 200
    authorizer = good.json()["requestContext"]["authorizer"]["lambda"]
    assert "CN=good-client" in authorizer["subject"]
    # Through a name without mutual TLS, the authorizer sees no certificate and refuses.
    other = await fetch(edge.port, "api.example.test", pki.client_context(), "/authorized")
    assert other is not None and other.status == 403


async def test_client_certificate_forwarded_to_upstreams_when_asked(
    pki: Pki, start_upstream: StartUpstream
) -> None:
    upstream = await start_upstream()
    config = pki.folder / "gateway.yaml"
    text = config.read_text().replace(
        "mutual_tls: {truststore: certs/clients-ca.pem}",
        "mutual_tls: {truststore: certs/clients-ca.pem, forward_header: X-Client-Cert}",
    )
    text += (
        '      "GET /up/{proxy+}": {integration: {type: http_proxy, '
        f'uri: "{upstream.url}/{{proxy}}"}}}}\n'
    )
    config.write_text(text)
    gateway = Gateway(config)
    await gateway.start()
    assert isinstance(gateway.bound, tuple)
    try:
        port = gateway.bound[1]
        conn = await Connection.open(port, "mtls.example.test", pki.client_context(pki.good))
        try:
            # What the client sends under that name is replaced.
            forged = "X-Client-Cert: forged\r\n"
            seen = (await conn.get("/up/x", "mtls.example.test", forged)).json()
        finally:
            await conn.close()
        # A client on a domain without mutual TLS cannot make one up either.
        other = await Connection.open(port, "api.example.test", pki.client_context())
        try:
            spoofed = (await other.get("/up/y", "api.example.test", forged)).json()
        finally:
            await other.close()
    finally:
        await gateway.drain()
    sent = [unquote(v) for n, v in seen["headers"] if n.lower() == "x-client-cert"]
    assert sent == [pki.good.cert_chain_pems[0].bytes().decode()]
    assert [v for n, v in spoofed["headers"] if n.lower() == "x-client-cert"] == []


# -- redirect listener ------------------------------------------------------------------------


async def _plain(port: int, request: bytes) -> tuple[int, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        n.strip().lower(): v.strip() for n, _, v in (ln.partition(":") for ln in lines[1:] if ln)
    }
    return int(lines[0].split()[1]), headers


async def test_redirect_listener_sends_clients_to_https(edge: Running) -> None:
    status, headers = await _plain(
        edge.redirect_port,
        b"GET /a/b%20c?x=1&y=2 HTTP/1.1\r\nHost: api.example.test:8080\r\n\r\n",
    )
    assert status == 308
    assert headers["location"] == f"https://api.example.test:{edge.port}/a/b%20c?x=1&y=2"
    status, _ = await _plain(edge.redirect_port, b"GET / HTTP/1.0\r\n\r\n")
    assert status == 400


# -- real clients -----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_curl_and_openssl_against_a_served_gateway(pki: Pki) -> None:
    certs = pki.folder / "certs"
    pki.server_ca.cert_pem.write_to_path(str(certs / "server-ca.pem"))
    pki.good.cert_chain_pems[0].write_to_path(str(certs / "client.pem"))
    pki.good.private_key_pem.write_to_path(str(certs / "client-key.pem"))
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with GatewayProcess(pki.folder / "gateway.yaml", env=env) as gateway:
        port = gateway.port

        def curl(name: str, path: str, *extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["curl", "-sS", "--max-time", "5", "--cacert", str(certs / "server-ca.pem"),
                 "--resolve", f"{name}:{port}:127.0.0.1", *extra,
                 f"https://{name}:{port}{path}"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip

        plain = curl("api.example.test", "/mock")
        assert plain.returncode == 0, plain.stderr
        assert json.loads(plain.stdout) == {"ok": True}

        mutual = curl(
            "mtls.example.test", "/v2",
            "--cert", str(certs / "client.pem"), "--key", str(certs / "client-key.pem"),
        )  # fmt: skip
        assert mutual.returncode == 0, mutual.stderr
        cert = json.loads(mutual.stdout)["requestContext"]["authentication"]["clientCert"]
        assert "CN=good-client" in cert["subjectDN"]

        refused = curl("mtls.example.test", "/v2")
        assert refused.returncode != 0

        shown = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
             "-servername", "x.wild.test", "-CAfile", str(certs / "server-ca.pem"),
             "-verify_return_error", "-alpn", "http/1.1"],
            input="", capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        assert "Verify return code: 0 (ok)" in shown.stdout, shown.stdout + shown.stderr
        assert "ALPN protocol: http/1.1" in shown.stdout
        served = subprocess.run(
            ["openssl", "x509", "-noout", "-ext", "subjectAltName"],
            input=shown.stdout, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert "DNS:*.wild.test" in served.stdout


# -- configuration errors ---------------------------------------------------------------------


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "pygw", "check", "-c", str(config)],
        capture_output=True, text=True, env=env, check=False, timeout=60,
    )  # fmt: skip


def test_check_refuses_broken_tls_settings(pki: Pki) -> None:
    config = pki.folder / "gateway.yaml"
    good = _check(config)
    assert good.returncode == 0, good.stderr

    text = config.read_text()
    broken = text.replace("certs/default-key.pem", "certs/missing-key.pem")
    broken = broken.replace(
        "certs/wild.pem, key: certs/wild-key.pem", "certs/wild.pem, key: certs/api-key.pem"
    )
    broken = broken.replace("alpn: [http/1.1]", "alpn: [h2c, http/1.1]")
    config.write_text(broken)
    failed = _check(config)
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    # The ALPN setting is refused by validation; once that is fixed, the files are read.
    assert lines == [
        f"{config}: server.tls.alpn: ALPN protocol 'h2c' (cleartext HTTP/2) is not served: "
        "HTTP/2 is offered on HTTPS listeners only (write alpn: [h2, http/1.1])"
    ]
    config.write_text(broken.replace("alpn: [h2c, http/1.1]", "alpn: [h2, http/1.1]"))
    failed = _check(config)
    assert failed.returncode == 1
    message = failed.stderr
    assert f"{config}: server.tls.certificates[0].key: file not found: " in message
    assert "(check the path of key)" in message
    assert f"{config}: server.tls.certificates[2].key: " in message
    assert "is not the private key of" in message
    assert "(give the key the certificate was issued for)" in message


def test_check_refuses_mappings_to_a_missing_api_and_mutual_tls_without_tls(
    tmp_path: Path,
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "domains:\n  - name: other.example.test\n    mappings: [{base_path: v1, api: shop}]\n"
    )
    failed = _check(config)
    assert failed.returncode == 1
    assert failed.stderr.strip() == (
        f"{config}: domains[0].mappings[0].api: API 'shop' does not exist "
        "(define 'shop' under apis, or remove the reference)"
    )
    config.write_text(
        "domains:\n  - name: api.example.test\n    mutual_tls: {truststore: ca.pem}\n"
    )
    failed = _check(config)
    assert failed.returncode == 1
    assert failed.stderr.strip() == (
        f"{config}: domains[0].mutual_tls: mutual_tls needs the server to speak TLS "
        "(add server.tls with certificates, or remove mutual_tls)"
    )
