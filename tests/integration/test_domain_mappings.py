"""Custom domains with API mappings (`domains[].mappings`): one domain name fronting several
APIs and stages under base paths, next to the older `apis[].hosts` and `base_path` routing, as
a client of a running gateway sees it, and `pygw check` refusing mappings that cannot work."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from pygw.cli import main
from pygw.server import Gateway

HANDLERS = Path(__file__).resolve().parent / "handlers"

APIS = """
apis:
  - name: shop
    type: rest
    stages: [{name: v1}, {name: v2}]
    routes:
      "GET /products":
        integration: {type: function, handler: "lambda_echo:echo_event"}
  - name: hello
    type: http
    routes:
      "GET /hi":
        integration: {type: function, handler: "lambda_echo:echo_event"}
      "GET /products":
        integration: {type: mock, status: 200, body: {from: hello}}
  - name: legacy
    type: http
    hosts: [legacy.example.test]
    base_path: /old
    routes:
      "GET /ping":
        integration: {type: mock, status: 200, body: {from: legacy}}
"""

DOMAINS = """
domains:
  - name: api.example.test
    mappings:
      - {base_path: shop, api: shop, stage: v1}
      - {base_path: shop/next, api: shop, stage: v2}
      - {base_path: "", api: hello, stage: $default}
  - name: "*.tenants.example.test"
    mappings:
      - {base_path: store, api: shop, stage: v2}
"""

PLAIN = f"""
server: {{listen: "127.0.0.1:0"}}
admin: {{listen: "127.0.0.1:0"}}
access_log: null
python_path: [{HANDLERS}]
{DOMAINS}{APIS}"""


@dataclass
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def get(
    port: int,
    host: str,
    path: str,
    context: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> Answer:
    """One GET on a new connection, with `host` as the Host header (and SNI name over TLS)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        port,
        ssl=context,
        server_hostname=(server_name or host) if context is not None else None,
    )
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return Answer(status, body)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


@pytest.fixture
async def port(tmp_path: Path) -> AsyncIterator[int]:
    config = tmp_path / "gateway.yaml"
    config.write_text(PLAIN)
    gateway = Gateway(config)
    await gateway.start()
    assert isinstance(gateway.bound, tuple)
    try:
        yield gateway.bound[1]
    finally:
        await gateway.drain()


async def test_one_domain_fronts_two_apis_with_the_base_path_taken_off(port: int) -> None:
    shop = await get(port, "api.example.test", "/shop/products")
    assert shop.status == 200
    event = shop.json()
    assert event["resource"] == "/products"
    assert event["requestContext"]["stage"] == "v1"
    assert event["requestContext"]["domainName"] == "api.example.test"

    # The longest base path wins: shop/next is stage v2 of the same API.
    nested = (await get(port, "api.example.test", "/shop/next/products")).json()
    assert nested["resource"] == "/products"
    assert nested["requestContext"]["stage"] == "v2"

    # The empty base path maps the domain's root; the port in Host does not matter.
    hello = await get(port, f"api.example.test:{port}", "/hi")
    assert hello.status == 200
    assert hello.json()["routeKey"] == "GET /hi"
    assert hello.json()["requestContext"]["stage"] == "$default"
    assert (await get(port, "API.Example.Test", "/products")).json() == {"from": "hello"}


async def test_paths_under_a_mapping_stay_with_its_api(port: int) -> None:
    # A base path matches whole segments only: /shopping belongs to the root mapping.
    assert (await get(port, "api.example.test", "/shopping")).status == 404
    # Under /shop, an unknown path is the REST API's answer, not the root mapping's 404.
    missing = await get(port, "api.example.test", "/shop/nothing")
    assert missing.status == 403
    assert missing.json() == {"message": "Missing Authentication Token"}
    # The stage is not part of the path on a custom domain.
    assert (await get(port, "api.example.test", "/shop/v1/products")).status == 403


async def test_wildcard_domain_serves_its_subdomains(port: int) -> None:
    answer = await get(port, "acme.tenants.example.test", "/store/products")
    assert answer.status == 200
    event = answer.json()
    assert event["requestContext"]["stage"] == "v2"
    assert event["requestContext"]["domainName"] == "acme.tenants.example.test"
    assert (await get(port, "tenants.example.test", "/store/products")).status == 404


async def test_other_hosts_and_old_routing_are_unchanged(port: int) -> None:
    # Another host is not served the domain's mappings; APIs without hosts answer it, on their
    # stage paths as before.
    assert (await get(port, "elsewhere.test", "/shop/products")).status == 404
    before = await get(port, "elsewhere.test", "/v1/products")
    assert before.status == 200
    assert before.json()["requestContext"]["stage"] == "v1"
    assert (await get(port, "elsewhere.test", "/products")).json() == {"from": "hello"}
    # hosts + base_path routing.
    legacy = await get(port, "legacy.example.test", "/old/ping")
    assert legacy.status == 200
    assert legacy.json() == {"from": "legacy"}
    assert (await get(port, "api.example.test", "/old/ping")).status == 404


def test_routes_lists_the_domain_mounts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(PLAIN)
    assert main(["routes", "-c", str(config)]) == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    for expected in [
        "api.example.test /shop GET /products shop/v1 (rest) -> function",
        "api.example.test /shop/next GET /products shop/v2 (rest) -> function",
        "api.example.test / GET /hi hello/$default (http) -> function",
        "*.tenants.example.test /store GET /products shop/v2 (rest) -> function",
        "* /v1 GET /products shop/v1 (rest) -> function",
        "legacy.example.test /old GET /ping legacy/$default (http) -> mock",
    ]:
        assert expected in lines, expected


def _check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    assert main(["check", "-c", str(config)]) == 1
    prefix = f"{config}: "
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith(prefix) for line in lines), lines
    return [line.removeprefix(prefix) for line in lines]


def test_check_refuses_mappings_to_missing_apis_and_stages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = PLAIN.replace("api: shop, stage: v1}", "api: shoop, stage: v1}").replace(
        "api: shop, stage: v2}", "api: shop, stage: v3}"
    )
    assert _check(tmp_path, broken, capsys) == [
        "domains[0].mappings[0].api: API 'shoop' does not exist "
        "(did you mean 'shop'? (defined under apis: shop, hello, legacy))",
        "domains[0].mappings[1].stage: API 'shop' has no stage 'v3' "
        "(use one of the names under the stages of API 'shop': v1, v2)",
        "domains[1].mappings[0].stage: API 'shop' has no stage 'v3' "
        "(use one of the names under the stages of API 'shop': v1, v2)",
    ]


def test_check_refuses_a_base_path_mapped_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = PLAIN.replace("base_path: shop/next,", "base_path: /shop,")
    assert _check(tmp_path, broken, capsys) == [
        "domains[0].mappings[1].base_path: base path shop is mapped twice on api.example.test "
        "(also mappings[0]) (give each mapping of a domain its own base_path)"
    ]


@pytest.mark.parametrize(
    ("base_path", "message"),
    [
        ("shop/", "base_path 'shop/' ends with '/' (write 'shop')"),
        ("shop//v1", "base_path 'shop//v1' has an empty segment (remove the doubled '/')"),
        (
            "'{tenant}'",
            "base_path segment '{tenant}' is not allowed (use path segments of letters, digits "
            "and -._~ (no parameters), e.g. shop)",
        ),
        (
            "a/../b",
            "base_path segment '..' is not allowed (use path segments of letters, digits "
            "and -._~ (no parameters), e.g. shop)",
        ),
    ],
)
def test_check_refuses_a_base_path_that_is_not_plain_segments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base_path: str, message: str
) -> None:
    broken = PLAIN.replace("base_path: shop/next,", f"base_path: {base_path},")
    assert _check(tmp_path, broken, capsys) == [f"domains[0].mappings[1].base_path: {message}"]


def test_check_refuses_a_mapping_clashing_with_an_api_mount(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = PLAIN.replace("hosts: [legacy.example.test]", "hosts: [api.example.test]").replace(
        "base_path: /old", "base_path: /shop"
    )
    assert _check(tmp_path, broken, capsys) == [
        "domains[0].mappings[0]: api 'shop' and api 'legacy' both serve host api.example.test "
        "under /shop (give one of them a different base_path, stage or hosts)"
    ]


# -- over HTTPS ----------------------------------------------------------------------------------


def _tls_config(folder: Path, ca: trustme.CA, *names: str) -> Path:
    (folder / "certs").mkdir(exist_ok=True)
    leaf = ca.issue_cert(*names)
    leaf.cert_chain_pems[0].write_to_path(str(folder / "certs" / "api.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "certs" / "api-key.pem"))
    config = folder / "gateway.yaml"
    config.write_text(
        PLAIN.replace(
            'server: {listen: "127.0.0.1:0"}',
            'server:\n  listen: "127.0.0.1:0"\n'
            "  tls: {certificates: [{cert: certs/api.pem, key: certs/api-key.pem}]}",
        )
    )
    return config


async def test_mappings_over_https_with_sni(tmp_path: Path) -> None:
    ca = trustme.CA()
    config = _tls_config(tmp_path, ca, "api.example.test", "*.tenants.example.test")
    gateway = Gateway(config)
    await gateway.start()
    assert isinstance(gateway.bound, tuple)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    try:
        port = gateway.bound[1]
        shop = await get(port, "api.example.test", "/shop/products", context)
        assert shop.status == 200
        assert shop.json()["requestContext"]["stage"] == "v1"
        tenant = await get(port, "acme.tenants.example.test", "/store/products", context)
        assert tenant.json()["requestContext"]["stage"] == "v2"
    finally:
        await gateway.drain()


def test_check_refuses_a_domain_no_certificate_is_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A wildcard certificate covers the exact name, but a wildcard domain needs the wildcard.
    config = _tls_config(tmp_path, trustme.CA(), "*.example.test", "a.tenants.example.test")
    assert main(["check", "-c", str(config)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"{config}: domains[1].name: no certificate in server.tls.certificates is for "
        "*.tenants.example.test (add a certificate whose SAN names include "
        "*.tenants.example.test)"
    ]


async def test_a_mutual_tls_wildcard_domain_keeps_deeper_names_out(tmp_path: Path) -> None:
    # The router serves *.tenants.example.test to names of any depth; such a request must not
    # reach the mappings of a mutual-TLS domain over a connection that sent no client cert.
    ca = trustme.CA()
    config = _tls_config(tmp_path, ca, "api.example.test", "*.tenants.example.test")
    ca.cert_pem.write_to_path(str(tmp_path / "certs" / "clients-ca.pem"))
    config.write_text(
        config.read_text().replace(
            '  - name: "*.tenants.example.test"\n',
            '  - name: "*.tenants.example.test"\n'
            "    mutual_tls: {truststore: certs/clients-ca.pem}\n",
        )
    )
    gateway = Gateway(config)
    await gateway.start()
    assert isinstance(gateway.bound, tuple)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    context.check_hostname = False
    try:
        port = gateway.bound[1]
        for host in ["x.acme.tenants.example.test", "x.acme.tenants.example.test."]:
            answer = await get(port, host, "/store/products", context, server_name="other.test")
            assert answer.status == 421, host
        # The domain without mutual TLS is served as before on the same listener.
        shop = await get(port, "api.example.test", "/shop/products", context)
        assert shop.status == 200
    finally:
        await gateway.drain()
