"""The lean way of a proxied request (Dispatcher.serve_lean): a simple request on a route
without stages, sent upstream and answered without the request's objects. A whole gateway
serves each test over real sockets, against a real upstream on 127.0.0.1; what a client and
the upstream see must be what the full way gives them."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import trustme
import yaml
from aiohttp import ClientSession, web
from prometheus_client import generate_latest

from pygw.dispatch import Dispatcher, LeanRequest
from pygw.integrations.http_proxy import HttpProxyIntegration
from pygw.pipeline import LeanSend, LeanView
from pygw.server import Gateway
from pygw.stages.cache import CachingIntegration
from tests.integration.conftest import Upstream, closing_upstream

if TYPE_CHECKING:
    from conftest import StartUpstream

pytestmark = pytest.mark.timeout(30)

Answer = tuple[int, dict[str, str], bytes]


def _config(
    tmp_path: Path,
    name: str,
    upstream: str,
    access_log: bool,
    log_format: str = "json",
    **route: Any,
) -> Path:
    config: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0"},
        "admin": {"listen": "127.0.0.1:0"},
        "throttle": None,
        "access_log": (
            {"path": str(tmp_path / f"{name}.log"), "format": log_format} if access_log else None
        ),
        "apis": [
            {
                "name": "shop",
                "type": "http",
                "stages": [{"name": "$default"}],
                "routes": {
                    "ANY /{proxy+}": {
                        "integration": {
                            "type": "http_proxy",
                            "uri": f"{upstream}/{{proxy}}",
                            **route,
                        }
                    }
                },
            }
        ],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.asynccontextmanager
async def _gateway(config: Path) -> AsyncIterator[tuple[Gateway, str]]:
    gateway = Gateway(config)
    await gateway.start()
    assert isinstance(gateway.bound, tuple)
    try:
        yield gateway, f"127.0.0.1:{gateway.bound[1]}"
    finally:
        await gateway.drain()


@dataclass
class LeanSpy:
    """What each start_lean call decided (True: sent the lean way); with `refuse` set, every
    request goes the full way instead."""

    decided: list[bool] = field(default_factory=list)
    refuse: bool = False


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> LeanSpy:
    found = LeanSpy()
    start_lean = HttpProxyIntegration._start_lean

    def watched(self: HttpProxyIntegration, lean: LeanSend) -> bool:
        sent = False if found.refuse else start_lean(self, lean)
        found.decided.append(sent)
        return sent

    monkeypatch.setattr(HttpProxyIntegration, "_start_lean", watched)
    return found


@pytest.fixture
def lean_sends(spy: LeanSpy) -> list[bool]:
    """What each start_lean call decided, for gateways started after."""
    return spy.decided


def _tls_config(
    tmp_path: Path, upstream: str, ca: trustme.CA, mutual: bool
) -> tuple[Path, ssl.SSLContext]:
    """A TLS listener for api.example.test (and, `mutual`, a mutual-TLS domain beside it) in
    front of one proxied route; the client context that trusts it."""
    leaf = ca.issue_cert("api.example.test", "mtls.example.test")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "server-key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    path = _config(tmp_path, "tls", upstream, access_log=False)
    config = yaml.safe_load(path.read_text())
    config["server"]["tls"] = {
        "certificates": [{"cert": "server.pem", "key": "server-key.pem"}],
        "alpn": ["http/1.1"],
    }
    if mutual:
        config["domains"] = [
            {"name": "mtls.example.test", "mutual_tls": {"truststore": "ca.pem"}},
            {"name": "api.example.test"},
        ]
    path.write_text(yaml.safe_dump(config))
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    return path, context


async def _over_tls(address: str, context: ssl.SSLContext, requests: list[bytes]) -> list[Answer]:
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(
        host, int(port), ssl=context, server_hostname="api.example.test"
    )
    try:
        answers = []
        for request in requests:
            writer.write(request)
            answers.append(await _read_answer(reader))
        return answers
    finally:
        writer.close()


async def test_over_tls_the_lean_way_forwards_https(
    tmp_path: Path, start_upstream: StartUpstream, lean_sends: list[bool]
) -> None:
    up = await start_upstream()
    config, context = _tls_config(tmp_path, up.url, trustme.CA(), mutual=False)
    async with _gateway(config) as (_, address):
        answers = await _over_tls(address, context, [_get("/items/1"), _get("/items/2")])
    assert lean_sends == [False, True]
    for status, _, body in answers:
        assert status == 200
        seen = {name.lower(): value for name, value in orjson.loads(body)["headers"]}
        assert seen["x-forwarded-proto"] == "https"


async def test_a_mutual_tls_listener_checks_every_request(
    tmp_path: Path, start_upstream: StartUpstream, lean_sends: list[bool]
) -> None:
    """A request naming the mutual-TLS domain over a connection that did not authenticate for
    it is refused, on a proxied route without stages too: nothing skips the listener's check."""
    up = await start_upstream()
    config, context = _tls_config(tmp_path, up.url, trustme.CA(), mutual=True)
    async with _gateway(config) as (_, address):
        answers = await _over_tls(
            address,
            context,
            [
                _get("/items/1"),
                _get("/items/2"),
                _get("/items/3").replace(b"Host: api.example", b"Host: mtls.example.test"),
            ],
        )
    assert [status for status, _, _ in answers] == [200, 200, 421]
    assert [request["raw_path"] for request in up.requests] == ["/items/1", "/items/2"]
    assert lean_sends == []


async def _read_answer(reader: asyncio.StreamReader, head_only: bool = False) -> Answer:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = 0 if head_only else int(headers.get("content-length", "0"))
    return status, headers, await reader.readexactly(length)


async def _one_by_one(address: str, requests: list[bytes]) -> list[Answer]:
    """Each request on one connection, sent once the answer before it came."""
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        answers = []
        for request in requests:
            writer.write(request)
            answers.append(await _read_answer(reader, request.startswith(b"HEAD ")))
        return answers
    finally:
        writer.close()


def _get(path: str, *lines: str, version: str = "1.1", method: str = "GET") -> bytes:
    head = [f"{method} {path} HTTP/{version}", "Host: api.example", *lines]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")


def _log_lines(path: Path) -> list[dict[str, Any]]:
    """The access log's lines less what differs per request (time, ids, latencies), except a
    request id the client chose."""
    lines = []
    for text in path.read_text().splitlines():
        line = orjson.loads(text)
        for varying in ("time", "trace_id", "latency_ms", "integration_latency_ms"):
            line.pop(varying)
        if line["request_id"] != "chosen-id.1":
            line.pop("request_id")
        lines.append(line)
    return lines


_PER_REQUEST = {"date", "apigw-requestid", "x-amzn-requestid", "x-request-id"}
_PER_REQUEST_UPSTREAM = {"x-request-id", "traceparent", "x-amzn-trace-id"}


def _comparable(answer: Answer, offered_id: str | None) -> tuple[Any, ...]:
    """An answer less what differs per request (its date and ids, unless the client chose the
    id), with the upstream's echo of the request normalised the same way."""
    status, headers, body = answer
    kept = {k: v for k, v in headers.items() if k not in _PER_REQUEST or offered_id is not None}
    if offered_id is not None:
        kept.pop("date", None)
    echo: Any = body
    if headers.get("content-type") == "application/json" and body.startswith(b'{"method"'):
        echo = orjson.loads(body)
        echo["headers"] = [
            (name, "*" if name.lower() in _PER_REQUEST_UPSTREAM and offered_id is None else value)
            for name, value in echo["headers"]
            if name.lower() not in ("traceparent", "x-amzn-trace-id") or offered_id is None
        ]
    return status, kept, echo


async def test_the_lean_way_answers_and_logs_as_the_full_way_does(
    tmp_path: Path, start_upstream: StartUpstream, spy: LeanSpy
) -> None:
    """The same requests through a gateway that sends them the lean way and one that sends
    them the full way: the same answers, the same access-log lines, and the upstream saw the
    same requests."""
    up = await start_upstream()
    requests = [
        _get(
            "/items/42?x=1&y=%20z",
            "X-Forwarded-For: 203.0.113.9",
            "Connection: keep-alive, X-Drop",
            "X-Drop: 1",
            "X-Keep: yes",
            "Accept: */*",
            "User-Agent: lean-test/1.0",
        ),
        _get("/hop"),
        _get("/items/1", "Connection: keep-alive", version="1.0"),
        _get("/items/2", method="DELETE"),
        _get("/items/%7E%20b"),
    ]
    # The first request opens the pooled connection the lean way needs.
    async with _gateway(_config(tmp_path, "lean", up.url, access_log=True)) as (_, lean):
        lean_answers = await _one_by_one(lean, [_get("/items/0"), *requests])
        offered = await _one_by_one(lean, [_get("/items/9", "x-request-id: chosen-id.1")])
    assert spy.decided == [False] + [True] * (len(requests) + 1)
    spy.refuse = True
    async with _gateway(_config(tmp_path, "full", up.url, access_log=True)) as (_, full):
        full_answers = await _one_by_one(full, [_get("/items/0"), *requests])
        offered_full = await _one_by_one(full, [_get("/items/9", "x-request-id: chosen-id.1")])
    assert spy.decided[len(requests) + 2 :] == [False] * (len(requests) + 2)

    for lean_answer, full_answer in zip(lean_answers, full_answers, strict=True):
        assert _comparable(lean_answer, None) == _comparable(full_answer, None)
    assert _comparable(offered[0], "chosen-id.1") == _comparable(offered_full[0], "chosen-id.1")

    lean_log = _log_lines(tmp_path / "lean.log")
    assert lean_log == _log_lines(tmp_path / "full.log")
    assert len(lean_log) == len(requests) + 2
    assert lean_log[1]["path"] == "/items/42" and lean_log[1]["user_agent"] == "lean-test/1.0"
    assert lean_log[-1]["request_id"] == "chosen-id.1"

    lean_answers = lean_answers[1:]
    status, headers, body = lean_answers[0]
    assert status == 200
    assert headers["apigw-requestid"] == headers["x-request-id"]
    assert "date" in headers and "connection" not in headers  # HTTP/1.1 keeps it alive
    seen = orjson.loads(body)
    assert seen["raw_path"] == "/items/42?x=1&y=%20z"
    names = {name.lower(): value for name, value in seen["headers"]}
    assert names["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert names["x-request-id"] == headers["x-request-id"]
    assert "x-drop" not in names and names["x-keep"] == "yes"
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", names["traceparent"])
    assert "x-up-drop" not in lean_answers[1][1] and lean_answers[1][1]["x-up-keep"] == "1"
    assert lean_answers[2][1]["connection"] == "keep-alive"  # HTTP/1.0 that asked for it
    assert offered[0][1]["x-request-id"] == "chosen-id.1"
    upstream_names = {name.lower(): value for name, value in orjson.loads(offered[0][2])["headers"]}
    assert upstream_names["x-request-id"] == "chosen-id.1"


async def test_aws_context_variables_log_alike_both_ways(
    tmp_path: Path, start_upstream: StartUpstream, spy: LeanSpy
) -> None:
    """An access log in AWS's $context variables: a lean request's line is the full way's."""
    up = await start_upstream()
    log_format = (
        "$context.httpMethod $context.resourcePath $context.routeKey $context.path "
        "$context.protocol $context.status $context.responseLength $context.integrationStatus "
        "$context.integration.status $context.identity.sourceIp $context.stage "
        "$context.isCanaryRequest $context.identity.userAgent $context.apiId $context.requestId"
    )
    requests = [_get("/items/0"), _get("/items/1?q=2", "User-Agent: ua/1"), _get("/hop")]
    lines = []
    for name in ("lean", "full"):
        spy.refuse = name == "full"
        config = _config(tmp_path, name, up.url, access_log=True, log_format=log_format)
        async with _gateway(config) as (_, address):
            await _one_by_one(address, requests)
        # Less the request id, the line's last field.
        logged = (tmp_path / f"{name}.log").read_text().splitlines()
        lines.append([line.rpartition(" ")[0] for line in logged])
    assert spy.decided == [False, True, True, False, False, False]
    assert lines[0] == lines[1]
    fields = lines[0][1].split(" ")
    assert fields[:7] == ["GET", "/{proxy+}", "ANY", "/{proxy+}", "/items/1", "HTTP/1.1", "200"]
    assert int(fields[7]) > 0 and fields[8:10] == ["200", "200"] and fields[13] == "ua/1"


async def test_answers_not_whole_in_one_read_are_streamed(
    tmp_path: Path, start_upstream: StartUpstream, lean_sends: list[bool]
) -> None:
    """A large answer, a chunked one and a HEAD's answer go on the full way once their head is
    here: every byte arrives, and the connection serves the next request."""
    up = await start_upstream()
    async with (
        _gateway(_config(tmp_path, "lean", up.url, access_log=False)) as (_, address),
        ClientSession() as client,
    ):
        for _ in range(2):  # the second of each goes over a pooled connection
            for query in ("size=300000", "size=300000&chunked=1"):
                async with client.get(f"http://{address}/big?{query}") as resp:
                    assert resp.status == 200
                    assert resp.headers["apigw-requestid"] == resp.headers["x-request-id"]
                    assert len(await resp.read()) == 300_000
            async with client.head(f"http://{address}/items/1") as resp:
                assert resp.status == 200
                assert int(resp.headers["Content-Length"]) > 0
            async with client.get(f"http://{address}/items/2") as resp:
                assert resp.status == 200
                assert orjson.loads(await resp.read())["raw_path"] == "/items/2"
    assert True in lean_sends


async def test_a_late_answer_is_504_and_the_connection_goes_on(
    tmp_path: Path, start_upstream: StartUpstream, lean_sends: list[bool]
) -> None:
    up = await start_upstream()
    config = _config(tmp_path, "lean", up.url, access_log=False, timeout_ms=150)
    async with _gateway(config) as (_, address):
        await _one_by_one(address, [_get("/items/1")])  # a pooled connection for the next
        answers = await _one_by_one(address, [_get("/slow?ms=1500"), _get("/items/3")])
    # The late one went the lean way (its timed-out connection is not reused).
    assert lean_sends[-2] is True
    status, headers, body = answers[0]
    assert status == 504
    assert orjson.loads(body) == {"message": "Endpoint request timed out"}
    assert headers["apigw-requestid"] == headers["x-request-id"]
    assert answers[1][0] == 200
    assert orjson.loads(answers[1][2])["raw_path"] == "/items/3"


async def test_a_pooled_connection_closed_under_a_request(
    tmp_path: Path, lean_sends: list[bool]
) -> None:
    """The upstream closes its kept-alive connection as the next request arrives: a GET goes
    again on a fresh connection; a POST, which may not be repeated, is answered 502."""
    async with closing_upstream() as (port, answered):
        config = _config(tmp_path, "lean", f"http://127.0.0.1:{port}", access_log=False)
        async with _gateway(config) as (_, address):
            answers = await _one_by_one(
                address,
                [_get("/x"), _get("/x"), _get("/x", method="POST"), _get("/x", method="POST")],
            )
    assert [(status, body) for status, _, body in answers[:2]] == [(200, b"fresh")] * 2
    assert answers[2][0] == 502
    assert orjson.loads(answers[2][2]) == {"message": "Bad Gateway"}
    assert answers[3][:1] == (200,) and answers[3][2] == b"fresh"
    assert answered == [b"GET", b"GET", b"POST"]
    assert lean_sends.count(True) >= 2


async def test_requests_pipelined_behind_a_lean_one_keep_their_order(
    tmp_path: Path, start_upstream: StartUpstream, lean_sends: list[bool]
) -> None:
    up = await start_upstream()
    async with _gateway(_config(tmp_path, "lean", up.url, access_log=False)) as (_, address):
        await _one_by_one(address, [_get("/items/0")])
        host, port = address.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(_get("/slow?ms=200"))
            await asyncio.sleep(0.05)  # the first is out: the next two queue behind it
            writer.write(_get("/items/1") + _get("/items/2", "Connection: close"))
            answers = [await _read_answer(reader) for _ in range(3)]
            assert await reader.read() == b""  # closed after the last, as it asked
        finally:
            writer.close()
    paths = [orjson.loads(body)["raw_path"] for _, _, body in answers]
    assert paths == ["/slow?ms=200", "/items/1", "/items/2"]
    assert answers[2][1]["connection"] == "close"
    assert lean_sends[1] is True


async def test_lean_answers_are_counted_and_close_when_asked(
    tmp_path: Path, start_upstream: StartUpstream, lean_sends: list[bool]
) -> None:
    up = await start_upstream()
    async with _gateway(_config(tmp_path, "lean", up.url, access_log=False)) as (gw, address):
        await _one_by_one(address, [_get("/items/1")] * 3)
        host, port = address.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(_get("/items/4", "Connection: close"))
        status, headers, _ = await _read_answer(reader)
        closed = await reader.read()
        writer.close()
        # HTTP/1.0 without keep-alive: answered, then closed.
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(_get("/items/5", version="1.0"))
        old_status, old_headers, old_body = await _read_answer(reader)
        old_closed = await reader.read()
        writer.close()
        exposition = generate_latest(gw.metrics.registry).decode()
    assert lean_sends == [False] + [True] * 4
    assert (status, headers["connection"], closed) == (200, "close", b"")
    # HTTP/1.0 closes unless told otherwise: no Connection line is needed.
    assert (old_status, old_headers.get("connection", "close"), old_closed) == (200, "close", b"")
    assert orjson.loads(old_body)["raw_path"] == "/items/5"
    counted = _sample(exposition, "pygw_requests_total", lambda labels: 'status="200"' in labels)
    assert counted == 5.0
    observed = _sample(exposition, "pygw_latency_seconds_count", lambda _: True)
    assert observed == 5.0


def _sample(exposition: str, name: str, labels_match: Callable[[str], bool]) -> float:
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name) + 1 :].rpartition("} ")
            if labels_match(labels):
                total += float(value)
    return total


def _mock_config(tmp_path: Path, name: str) -> Path:
    config: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0"},
        "admin": {"listen": "127.0.0.1:0"},
        "throttle": None,
        "access_log": {"path": str(tmp_path / f"{name}.log")},
        "apis": [
            {
                "name": "shop",
                "type": "rest",
                "stages": [{"name": "v1"}],
                "routes": {
                    "ANY /items/{id}": {
                        "integration": {
                            "type": "mock",
                            "status": 201,
                            "headers": {"X-Mock": "yes", "Cache-Control": "no-store"},
                            "body": {"id": "1", "name": "widget"},
                        }
                    }
                },
            }
        ],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_a_mock_answers_the_lean_way_as_the_full_way_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mock route without stages is answered in the lean way's first step (no request
    objects): the same answers and log lines as the full way's; a HEAD goes the full way."""
    answered: list[int] = []
    lean_answered = LeanRequest.answered

    def counted(self: LeanRequest, status: int, *rest: Any) -> None:
        answered.append(status)
        lean_answered(self, status, *rest)

    monkeypatch.setattr(LeanRequest, "answered", counted)
    requests = [
        _get("/v1/items/1"),
        _get("/v1/items/2", "x-request-id: chosen-id.1", "User-Agent: ua/2"),
        _get("/v1/items/3", method="POST"),
        _get("/v1/items/4", "Connection: keep-alive", version="1.0"),
    ]
    async with _gateway(_mock_config(tmp_path, "lean")) as (_, address):
        lean_answers = await _one_by_one(address, requests)
        head_answer = await _one_by_one(address, [_get("/v1/items/5", method="HEAD")])
    assert answered == [201] * len(requests)  # the HEAD went the full way
    monkeypatch.setattr(Dispatcher, "lean_possible", lambda self: False)
    async with _gateway(_mock_config(tmp_path, "full")) as (_, address):
        full_answers = await _one_by_one(address, requests)
    assert answered == [201] * len(requests)
    offered = [answer[1].get("x-request-id") == "chosen-id.1" for answer in lean_answers]
    for lean_answer, full_answer, chosen in zip(lean_answers, full_answers, offered, strict=True):
        assert _comparable(lean_answer, "chosen-id.1" if chosen else None) == _comparable(
            full_answer, "chosen-id.1" if chosen else None
        )
    assert offered == [False, True, False, False]
    status, headers, body = lean_answers[0]
    assert (status, headers["x-mock"], orjson.loads(body)) == (
        201,
        "yes",
        {"id": "1", "name": "widget"},
    )
    assert headers["x-amzn-requestid"] == headers["x-request-id"]
    assert lean_answers[3][1]["connection"] == "keep-alive"
    assert head_answer[0][0] == 201 and head_answer[0][2] == b""
    lean_log = _log_lines(tmp_path / "lean.log")
    assert lean_log[:4] == _log_lines(tmp_path / "full.log")
    assert lean_log[1]["user_agent"] == "ua/2" and lean_log[2]["method"] == "POST"


_KEY = "key-one-0123456789abcdef"
_REFILLED = ("age", "ratelimit-remaining", "ratelimit-reset")


def _rest_config(
    tmp_path: Path,
    name: str,
    upstream: str,
    quota: int = 1000,
    log_format: str = "json",
    allow_invalidation: bool = False,
    key_params: tuple[str, ...] = ("querystring.lang",),
    timeout_ms: int | None = None,
) -> Path:
    """A REST API whose route runs the API-key, usage-plan and validation stages in front of a
    cached, proxied integration."""
    config: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0"},
        "admin": {"listen": "127.0.0.1:0"},
        "throttle": None,
        "access_log": {"path": str(tmp_path / f"{name}.log"), "format": log_format},
        "apis": [
            {
                "name": "shop",
                "type": "rest",
                "stages": [{"name": "v1"}],
                "api_keys": [{"id": "k1", "value": _KEY}],
                "usage_plans": [
                    {
                        "name": "plan",
                        "keys": ["k1"],
                        "throttle": {"rate": 1000, "burst": 1000},
                        "quota": {"limit": quota, "period": "DAY"},
                    }
                ],
                "cache": {
                    "capacity_mb": 8,
                    "ttl_s": 300,
                    "allow_invalidation": allow_invalidation,
                },
                "routes": {
                    "ANY /items/{id}": {
                        "integration": {
                            "type": "http_proxy",
                            "uri": f"{upstream}/items/{{id}}",
                            **({} if timeout_ms is None else {"timeout_ms": timeout_ms}),
                        },
                        "api_key_required": True,
                        "validate": {"params": ["querystring.lang", "header.x-tenant"]},
                        "cache": {"ttl_s": 300, "key_params": list(key_params)},
                    }
                },
            }
        ],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def lean_hits(monkeypatch: pytest.MonkeyPatch) -> list[bool | None]:
    """What each answer_lean call gave (True: answered the lean way), for gateways started
    after."""
    found: list[bool | None] = []
    answer_lean = CachingIntegration._answer_lean

    def watched(self: CachingIntegration, lean: LeanView) -> bool | None:
        answered = answer_lean(self, lean)
        found.append(answered)
        return answered

    monkeypatch.setattr(CachingIntegration, "_answer_lean", watched)
    return found


def _keyed(path: str, *lines: str, version: str = "1.1", method: str = "GET") -> bytes:
    return _get(
        path, f"x-api-key: {_KEY}", "x-tenant: acme", *lines, version=version, method=method
    )


def _same_both_ways(answer: Answer, offered_id: str | None) -> tuple[Any, ...]:
    """_comparable, less the cached entry's age and what the token bucket refilled (the two
    gateways run a moment apart); the echo's ids are another request's on a hit."""
    status, headers, _ = _comparable(answer, offered_id)
    echo = _comparable(answer, None)[2]
    return status, {k: v for k, v in headers.items() if k not in _REFILLED}, echo


async def test_a_cache_hit_behind_stages_answers_the_lean_way_as_the_full_way_does(
    tmp_path: Path,
    start_upstream: StartUpstream,
    lean_hits: list[bool | None],
    lean_sends: list[bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A GET cache hit on a route with API-key, usage-plan and validation stages is answered
    without the request's objects, and a miss sent on over a pooled connection and stored the
    same way; refusals and what the lean way cannot answer go the full way. The same requests
    through a gateway that never takes the lean way get the same answers and log lines, and
    the upstream sees the same requests."""
    up = await start_upstream()
    requests = [
        _keyed("/v1/items/1?lang=en"),  # a miss: no pooled connection yet, the full way
        _keyed("/v1/items/1?lang=en"),  # a hit
        _keyed("/v1/items/1?lang=en", "x-request-id: chosen-id.1", "User-Agent: ua/3"),
        _keyed("/v1/items/1?lang=en", "Connection: keep-alive", version="1.0"),
        _keyed("/v1/items/1?lang=de"),  # another key's miss, sent on the lean way
        _keyed("/v1/items/1?lang=de&other=1"),  # a hit: `other` is not in the key
        _keyed("/v1/items/1?lang=de&other=1"),
        _get("/v1/items/1?lang=en", "x-tenant: acme"),  # no key: 403
        _get("/v1/items/1?lang=en", "x-api-key: not-the-key-0123456789", "x-tenant: acme"),
        _get("/v1/items/1?lang=en", f"x-api-key: {_KEY}"),  # no x-tenant: 400
        _keyed("/v1/items/1"),  # no lang: 400
        _keyed("/v1/items/1?lang=en", method="POST"),  # not cached: passed through
    ]
    async with _gateway(_rest_config(tmp_path, "lean", up.url)) as (gw, address):
        lean_answers = await _one_by_one(address, requests)
        head = await _one_by_one(address, [_keyed("/v1/items/1?lang=en", method="HEAD")])
        exposition = generate_latest(gw.metrics.registry).decode()
    lean_upstream = len(up.peers)
    # Refused requests never reach answer_lean; the HEAD and the POST go the full way.
    assert lean_hits == [None, True, True, True, True, True, True, False, False]
    assert lean_sends == [False, True]  # the two misses
    monkeypatch.setattr(Dispatcher, "lean_possible", lambda self: False)
    async with _gateway(_rest_config(tmp_path, "full", up.url)) as (_, address):
        full_answers = await _one_by_one(address, requests)
    assert len(lean_hits) == 9  # the full way never asked it
    # Two misses and the POST each way, and the HEAD (kept under its own key).
    assert (lean_upstream, len(up.peers) - lean_upstream) == (4, 3)

    chosen = [answer[1].get("x-request-id") == "chosen-id.1" for answer in lean_answers]
    assert chosen == [False, False, True] + [False] * (len(requests) - 3)
    for lean_answer, full_answer, offered in zip(lean_answers, full_answers, chosen, strict=True):
        offered_id = "chosen-id.1" if offered else None
        assert _same_both_ways(lean_answer, offered_id) == _same_both_ways(full_answer, offered_id)
    statuses = [status for status, _, _ in lean_answers]
    assert statuses == [200] * 7 + [403, 403, 400, 400, 200]
    caches = [headers.get("x-cache") for _, headers, _ in lean_answers]
    assert caches == ["Miss", "Hit", "Hit", "Hit", "Miss", "Hit", "Hit"] + [None] * 5
    _, headers, body = lean_answers[1]
    assert (
        headers["x-amzn-requestid"] == headers["x-request-id"] != lean_answers[0][1]["x-request-id"]
    )
    assert int(headers["age"]) >= 0 and headers["ratelimit-limit"]
    assert body == lean_answers[0][2]  # the stored answer
    assert lean_answers[3][1]["connection"] == "keep-alive"
    assert orjson.loads(lean_answers[9][2]) == orjson.loads(full_answers[9][2])
    assert head[0][0] == 200 and head[0][2] == b"" and head[0][1]["x-cache"] == "Miss"

    lean_log = _log_lines(tmp_path / "lean.log")
    assert lean_log[: len(requests)] == _log_lines(tmp_path / "full.log")
    cache_states = [line["cache"] for line in lean_log[:7]]
    assert cache_states == ["miss", "hit", "hit", "hit", "miss", "hit", "hit"]
    assert lean_log[2]["request_id"] == "chosen-id.1" and lean_log[2]["user_agent"] == "ua/3"

    # The stages' timings are recorded on the lean way too: every request reached the key
    # stage, and those with a key the two after it.
    def stage_count(stage: str) -> float:
        return _sample(
            exposition, "pygw_stage_seconds_count", lambda labels: f'step="{stage}"' in labels
        )

    assert [stage_count(s) for s in ("api_key", "throttle", "validate")] == [13.0, 11.0, 11.0]
    assert _sample(exposition, "pygw_cache_hits_total", lambda _: True) == 5.0
    counted = _sample(exposition, "pygw_requests_total", lambda labels: 'status="200"' in labels)
    assert counted == 9.0


async def test_a_lean_miss_counts_the_usage_plan_once(
    tmp_path: Path,
    start_upstream: StartUpstream,
    lean_hits: list[bool | None],
    lean_sends: list[bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request whose stages ran the lean way and that memory cannot answer goes on to the
    integration without running them again (sent on the lean way, or the full way without a
    pooled connection): a quota of three lets three requests in, hits or misses, either way."""
    up = await start_upstream()
    requests = [_keyed("/v1/items/1?lang=en"), _keyed("/v1/items/2?lang=en")]
    requests += [_keyed("/v1/items/1?lang=en"), _keyed("/v1/items/3?lang=en")]
    statuses = []
    for name in ("lean", "full"):
        if name == "full":
            monkeypatch.setattr(Dispatcher, "lean_possible", lambda self: False)
        async with _gateway(_rest_config(tmp_path, name, up.url, quota=3)) as (_, address):
            answers = await _one_by_one(address, requests)
        statuses.append([status for status, _, _ in answers])
        assert answers[3][1]["retry-after"] and b"Limit Exceeded" in answers[3][2]
    assert lean_hits == [None, True, True]
    assert lean_sends == [False, True]
    assert statuses == [[200, 200, 200, 429]] * 2


async def test_a_refresh_on_the_lean_way_goes_to_the_upstream(
    tmp_path: Path, start_upstream: StartUpstream, lean_hits: list[bool | None]
) -> None:
    """With invalidation allowed, a request carrying Cache-Control is left to the full way,
    which fetches again for `max-age=0` and answers from the cache otherwise."""
    up = await start_upstream()
    config = _rest_config(tmp_path, "lean", up.url, allow_invalidation=True)
    async with _gateway(config) as (_, address):
        answers = await _one_by_one(
            address,
            [
                _keyed("/v1/items/1?lang=en"),
                _keyed("/v1/items/1?lang=en"),
                _keyed("/v1/items/1?lang=en", "Cache-Control: max-age=0"),
                _keyed("/v1/items/1?lang=en", "Cache-Control: max-age=60"),
            ],
        )
    assert [headers["x-cache"] for _, headers, _ in answers] == ["Miss", "Hit", "Miss", "Hit"]
    assert lean_hits == [None, True, False, False]
    assert len(up.peers) == 2


async def test_aws_context_variables_of_a_lean_hit_log_as_the_full_way_does(
    tmp_path: Path, start_upstream: StartUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API key's id, the cache state and the integration's status (none for a hit) in
    AWS's $context variables, the same both ways."""
    up = await start_upstream()
    log_format = (
        "$context.httpMethod $context.status $context.identity.apiKeyId "
        "$context.integrationStatus $context.responseLength $context.identity.userAgent "
        "$context.requestId"
    )
    requests = [_keyed("/v1/items/1?lang=en"), _keyed("/v1/items/1?lang=en", "User-Agent: ua/4")]
    requests.append(_get("/v1/items/1?lang=en", "x-tenant: acme"))
    lines = []
    for name in ("lean", "full"):
        if name == "full":
            monkeypatch.setattr(Dispatcher, "lean_possible", lambda self: False)
        config = _rest_config(tmp_path, name, up.url, log_format=log_format)
        async with _gateway(config) as (_, address):
            await _one_by_one(address, requests)
        logged = (tmp_path / f"{name}.log").read_text().splitlines()
        lines.append([line.rpartition(" ")[0] for line in logged])
    assert lines[0] == lines[1]
    assert lines[0][1].split(" ")[:3] == ["GET", "200", "k1"]
    assert lines[0][1].endswith(" ua/4") and lines[0][2].split(" ")[:2] == ["GET", "403"]


async def test_a_cache_keyed_by_a_header_keeps_to_the_full_way(
    tmp_path: Path, start_upstream: StartUpstream, lean_hits: list[bool | None]
) -> None:
    """A cache key that names a header needs the request's objects: such a route is never
    tried the lean way, and its hits are answered the full way."""
    up = await start_upstream()
    config = _rest_config(
        tmp_path, "lean", up.url, key_params=("querystring.lang", "header.x-tenant")
    )
    async with _gateway(config) as (_, address):
        answers = await _one_by_one(
            address,
            [
                _keyed("/v1/items/1?lang=en"),
                _keyed("/v1/items/1?lang=en"),
                _get("/v1/items/1?lang=en", f"x-api-key: {_KEY}", "x-tenant: other"),
            ],
        )
    assert [headers["x-cache"] for _, headers, _ in answers] == ["Miss", "Hit", "Miss"]
    assert lean_hits == []
    assert len(up.peers) == 2


_BIG_BODY = bytes(range(256)) * 1200  # never whole in one read


async def _cached_items(request: web.BaseRequest, upstream: Upstream) -> web.StreamResponse:
    """An upstream answering by the item asked for: a body too large to come in one read, one
    that varies by a request header, a slow one, a refusal, a dropped connection; else a small
    body naming the item."""
    item = request.path.rpartition("/")[2]
    if item == "slow":
        await asyncio.sleep(0.3)
    elif item == "big":
        return web.Response(body=_BIG_BODY, content_type="application/octet-stream")
    elif item == "varied":
        return web.Response(text=request.headers.get("x-tenant", ""), headers={"Vary": "X-Tenant"})
    elif item == "refused":
        return web.Response(status=503, text="busy")
    elif item == "dropped":
        assert request.transport is not None
        request.transport.abort()
    return web.Response(text=f"item {item}")


async def test_a_lean_miss_stores_its_answer_as_the_full_way_does(
    tmp_path: Path, start_upstream: StartUpstream, lean_sends: list[bool]
) -> None:
    """A miss sent on the lean way is stored however its answer comes: one too large for one
    read (streamed to the client and kept whole), one that varies by a request header (kept
    for that header's value), and not an error."""
    up = await start_upstream(_cached_items)
    requests = [_keyed("/v1/items/first?lang=en")]  # opens the pooled connection
    for item in ("big", "varied", "refused"):
        requests += [_keyed(f"/v1/items/{item}?lang=en")] * 2
    requests.append(_get("/v1/items/varied?lang=en", f"x-api-key: {_KEY}", "x-tenant: other"))
    async with _gateway(_rest_config(tmp_path, "lean", up.url)) as (_, address):
        answers = await _one_by_one(address, requests)
    # Misses only: the varied item's later requests meet its Vary marker and go the full way.
    assert lean_sends == [False, True, True, True, True]
    caches = [headers.get("x-cache") for _, headers, _ in answers]
    assert caches == ["Miss", "Miss", "Hit", "Miss", "Hit", "Miss", "Miss", "Miss"]
    assert [status for status, _, _ in answers] == [200] * 5 + [503, 503, 200]
    bodies = [body for _, _, body in answers]
    assert bodies[1] == bodies[2] == _BIG_BODY
    assert bodies[3:5] == [b"acme", b"acme"] and bodies[7] == b"other"
    assert [r["raw_path"].partition("?")[0] for r in up.requests] == [
        "/items/first",
        "/items/big",
        "/items/varied",
        "/items/refused",
        "/items/refused",
        "/items/varied",
    ]


async def test_lean_misses_of_one_key_fetch_it_once(
    tmp_path: Path, start_upstream: StartUpstream, lean_sends: list[bool]
) -> None:
    """Requests arriving while a lean miss is out wait for it and answer from what it stored,
    as behind a miss the full way leads."""
    up = await start_upstream(_cached_items)
    async with _gateway(_rest_config(tmp_path, "lean", up.url)) as (_, address):
        await _one_by_one(address, [_keyed("/v1/items/first?lang=en")])
        answers = await asyncio.gather(
            *(_one_by_one(address, [_keyed("/v1/items/slow?lang=en")]) for _ in range(3))
        )
    assert lean_sends == [False, True]
    assert sorted(answer[0][1]["x-cache"] for answer in answers) == ["Hit", "Hit", "Miss"]
    assert {answer[0][2] for answer in answers} == {b"item slow"}
    assert [r["raw_path"] for r in up.requests].count("/items/slow?lang=en") == 1


async def test_a_lean_miss_the_upstream_drops_is_502_and_the_next_tries_again(
    tmp_path: Path, start_upstream: StartUpstream, lean_sends: list[bool]
) -> None:
    """A lean miss whose connection the upstream drops is answered 502 (after one more try
    on a fresh connection, as a GET is), and leaves its key free: the next request for it
    goes upstream again rather than waiting on the failed one."""
    up = await start_upstream(_cached_items)
    requests = [_keyed("/v1/items/first?lang=en")] + [_keyed("/v1/items/dropped?lang=en")] * 2
    async with _gateway(_rest_config(tmp_path, "lean", up.url)) as (_, address):
        answers = await asyncio.wait_for(_one_by_one(address, requests), 10)
    assert [status for status, _, _ in answers] == [200, 502, 502]
    assert orjson.loads(answers[1][2]) == {"message": "Bad Gateway"}
    assert lean_sends[:2] == [False, True]
    assert [r["raw_path"] for r in up.requests].count("/items/dropped?lang=en") >= 3


async def test_a_late_lean_miss_is_504_and_leaves_its_key_free(
    tmp_path: Path, start_upstream: StartUpstream, lean_sends: list[bool]
) -> None:
    """A lean miss whose answer does not come in time is answered 504 as the full way's is,
    stores nothing, and leaves its key free: the next request for it is sent again rather than
    left waiting for the late one."""
    up = await start_upstream(_cached_items)
    config = _rest_config(tmp_path, "lean", up.url, timeout_ms=100)
    requests = [_keyed("/v1/items/first?lang=en")] + [_keyed("/v1/items/slow?lang=en")] * 2
    async with _gateway(config) as (_, address):
        answers = await asyncio.wait_for(_one_by_one(address, requests), 10)
        after = await _one_by_one(address, [_keyed("/v1/items/first?lang=en")])
    assert lean_sends[:2] == [False, True]
    assert [status for status, _, _ in answers] == [200, 504, 504]
    assert orjson.loads(answers[1][2]) == {"message": "Endpoint request timed out"}
    assert answers[1][1]["x-cache"] == "Miss"
    assert after[0][0] == 200 and after[0][1]["x-cache"] == "Hit"


async def test_a_route_with_several_targets_keeps_to_the_full_way(
    tmp_path: Path, start_upstream: StartUpstream, lean_sends: list[bool]
) -> None:
    """Choosing among targets is start_now's: such a route is never offered the lean way,
    and its requests are balanced over both targets."""
    ups = [await start_upstream(), await start_upstream()]
    config = _config(
        tmp_path, "lean", "", access_log=False, targets=[{"url": up.url} for up in ups]
    )
    route = yaml.safe_load(config.read_text())
    integration = route["apis"][0]["routes"]["ANY /{proxy+}"]["integration"]
    integration["uri"] = "/{proxy}"
    config.write_text(yaml.safe_dump(route))
    async with _gateway(config) as (_, address):
        answers = await _one_by_one(address, [_get(f"/items/{n}") for n in range(4)])
    assert [status for status, _, _ in answers] == [200] * 4
    assert lean_sends == []
    assert all(up.peers for up in ups)
