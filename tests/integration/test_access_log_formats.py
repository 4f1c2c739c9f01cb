"""Access-log format strings of AWS's `$context` variables, in the CLF, JSON, XML and CSV shapes
AWS's console offers, written by a whole gateway and read back the way a log pipeline would."""

from __future__ import annotations

import csv
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from pygw.observe.access_log import PRESETS
from pygw.server import Gateway

HANDLERS = Path(__file__).resolve().parent / "handlers"

CONFIG = """
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
throttle: null
access_log: {path: %(log)s, format: %(format)s}
python_path: [%(handlers)s]
apis:
  - name: shop
    type: rest
    stages: [{name: prod}]
    routes:
      "GET /items/{id}":
        integration: {type: mock, status: 200, body: {ok: true}}
  - name: probe
    type: http
    base_path: /probe
    authorizers:
      probe: {type: custom, handler: "context_probe:authorize", simple_responses: true,
              identity_source: ["header.x-user"], ttl_s: 0}
    routes:
      "GET /fn":
        integration: {type: function, handler: "lambda_echo:echo_event"}
        authorizer: probe
"""

# AWS's console example for HTTP APIs (the REST ones are pygw's presets).
HTTP_API_JSON = (
    '{ "requestId":"$context.requestId", "ip": "$context.identity.sourceIp", '
    '"requestTime":"$context.requestTime", "httpMethod":"$context.httpMethod",'
    '"routeKey":"$context.routeKey", "status":"$context.status",'
    '"protocol":"$context.protocol", "responseLength":"$context.responseLength" }'
)
# requestTime: CLF's `dd/MMM/yyyy:HH:mm:ss +0000`, English month names whatever the locale.
REQUEST_TIME = re.compile(
    r"\d{2}/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/\d{4}:\d{2}:\d{2}:\d{2} \+0000"
)

Serve = Callable[[str], Awaitable[tuple[int, Gateway, Path]]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    started: list[Gateway] = []

    async def start(format_text: str) -> tuple[int, Gateway, Path]:
        log = tmp_path / f"access-{len(started)}.log"
        config = tmp_path / f"gateway-{len(started)}.yaml"
        config.write_text(
            CONFIG
            % {
                "log": json.dumps(str(log)),
                "format": json.dumps(format_text),
                "handlers": json.dumps(str(HANDLERS)),
            }
        )
        gateway = Gateway(config)
        await gateway.start()
        started.append(gateway)
        return gateway.bound[1], gateway, log

    yield start
    for gateway in started:
        await gateway.drain()


async def _one_line(
    serve: Serve,
    format_text: str,
    path: str = "/prod/items/7",
    headers: dict[str, str] | None = None,
) -> tuple[str, aiohttp.ClientResponse, bytes, float]:
    port, gateway, log = await serve(format_text)
    before = time.time()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as resp:
            body = await resp.read()
    await gateway.drain()  # flushes the log
    lines = log.read_text().splitlines()
    assert len(lines) == 1, lines
    return lines[0], resp, body, before


def _check_time(text: str, before: float) -> None:
    assert REQUEST_TIME.fullmatch(text), text
    moment = datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z")
    assert moment.tzinfo is not None and moment.utcoffset() == datetime.now(UTC).utcoffset()
    assert int(before) - 1 <= moment.timestamp() <= time.time() + 1


async def test_clf(serve: Serve) -> None:
    line, resp, body, before = await _one_line(serve, "clf", headers={"User-Agent": "probe/1"})
    found = re.fullmatch(
        r'(\S+) (\S+) (\S+) \[([^\]]+)\]"(\S+) (\S+) (\S+)" (\d{3}) (\d+) (\S+) (\S+)', line
    )
    assert found is not None, line
    ip, caller, user, when, method, resource, protocol, status, length, rid, ext = found.groups()
    assert (ip, caller, user) == ("127.0.0.1", "-", "-")  # IAM callers are AWS's alone
    _check_time(when, before)
    assert (method, resource, protocol) == ("GET", "/items/{id}", "HTTP/1.1")
    assert (int(status), int(length)) == (resp.status, len(body))
    assert rid == ext == resp.headers["x-amzn-RequestId"]


async def test_json(serve: Serve) -> None:
    line, resp, body, before = await _one_line(serve, "aws_json")
    record = json.loads(line)
    assert list(record) == [
        "requestId",
        "extendedRequestId",
        "ip",
        "caller",
        "user",
        "requestTime",
        "httpMethod",
        "resourcePath",
        "status",
        "protocol",
        "responseLength",
    ]
    _check_time(record.pop("requestTime"), before)
    assert record == {
        "requestId": resp.headers["x-amzn-RequestId"],
        "extendedRequestId": resp.headers["x-amzn-RequestId"],
        "ip": "127.0.0.1",
        "caller": "-",
        "user": "-",
        "httpMethod": "GET",
        "resourcePath": "/items/{id}",
        "status": "200",
        "protocol": "HTTP/1.1",
        "responseLength": str(len(body)),
    }


async def test_xml(serve: Serve) -> None:
    line, resp, body, before = await _one_line(serve, "xml")
    root = ET.fromstring(line)
    assert root.tag == "request"
    assert root.attrib == {"id": resp.headers["x-amzn-RequestId"]}
    fields = {child.tag: child.text for child in root}
    _check_time(fields.pop("requestTime") or "", before)
    assert fields == {
        "extendedRequestId": resp.headers["x-amzn-RequestId"],
        "ip": "127.0.0.1",
        "caller": "-",
        "user": "-",
        "httpMethod": "GET",
        "resourcePath": "/items/{id}",
        "status": "200",
        "protocol": "HTTP/1.1",
        "responseLength": str(len(body)),
    }


async def test_csv(serve: Serve) -> None:
    line, resp, body, before = await _one_line(serve, "csv")
    (row,) = list(csv.reader([line]))
    rid = resp.headers["x-amzn-RequestId"]
    _check_time(row[3], before)
    assert row[:3] + row[4:] == [
        "127.0.0.1",
        "-",
        "-",
        "GET",
        "/items/{id}",
        "HTTP/1.1",
        "200",
        str(len(body)),
        rid,
        rid,
    ]


async def test_the_presets_are_the_console_strings_written_out(serve: Serve) -> None:
    """A format string pasted from AWS's console is the same as naming its preset."""
    line, resp, _, _ = await _one_line(serve, PRESETS["csv"])
    assert line.split(",")[-1] == resp.headers["x-amzn-RequestId"]


async def test_http_api_json_with_route_key_and_authorizer(serve: Serve) -> None:
    format_text = HTTP_API_JSON[:-1] + (
        ', "auth":"$context.authorizer.before", "apiId":"$context.apiId",'
        ' "stage":"$context.stage", "integrationStatus":"$context.integrationStatus",'
        ' "latency":$context.responseLatency, "trace":"$context.xrayTraceId",'
        ' "error":"$context.error.message" }'
    )
    line, resp, _, _ = await _one_line(
        serve,
        format_text,
        path="/probe/fn",
        headers={
            "x-user": "u1",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        },
    )
    record = json.loads(line)
    assert resp.status == 200
    assert record["routeKey"] == "GET /fn"
    assert record["requestId"] == resp.headers["apigw-requestid"]
    assert record["auth"] == "unset"  # the custom authorizer's context value
    assert re.fullmatch(r"[a-z0-9]{10}", record["apiId"])
    assert record["stage"] == "$default"
    assert record["integrationStatus"] == "200"
    assert isinstance(record["latency"], int) and record["latency"] >= 0
    assert record["trace"] == "1-4bf92f35-77b34da6a3ce929d0e0e4736"
    assert record["error"] == "-"  # no error, no message: AWS's `-`


async def test_a_gateway_error_is_logged_with_its_message_and_type(serve: Serve) -> None:
    format_text = (
        '{"requestId":"$context.requestId","status":"$context.status",'
        '"message":"$context.error.message","type":"$context.error.responseType",'
        '"quoted":$context.error.messageString}'
    )
    line, resp, _, _ = await _one_line(serve, format_text, path="/prod/nowhere")
    assert resp.status == 403
    assert json.loads(line) == {
        "requestId": resp.headers["x-amzn-RequestId"],
        "status": "403",
        "message": "Missing Authentication Token",
        "type": "MISSING_AUTHENTICATION_TOKEN",
        "quoted": "Missing Authentication Token",
    }


async def test_values_are_escaped_for_the_shape(serve: Serve) -> None:
    agent = 'evil" , <x> & "y'
    line, _, _, _ = await _one_line(
        serve,
        '{"requestId":"$context.requestId","ua":"$context.identity.userAgent"}',
        headers={"User-Agent": agent},
    )
    assert json.loads(line)["ua"] == agent
    line, _, _, _ = await _one_line(
        serve,
        '<r id="$context.requestId"><ua>$context.identity.userAgent</ua></r>',
        headers={"User-Agent": agent},
    )
    assert ET.fromstring(line).findtext("ua") == agent


async def test_pygw_json_line(serve: Serve) -> None:
    """pygw's own line (format "json"): the time of the request to the second, in UTC, and the
    client's User-Agent whatever the case of its name."""
    line, resp, _, before = await _one_line(serve, "json", headers={"uSeR-aGeNt": "probe/2 é"})
    record = json.loads(line)
    moment = datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert int(before) <= moment.timestamp() <= time.time()
    assert record["user_agent"] == "probe/2 é"
    assert record["request_id"] == resp.headers["x-amzn-RequestId"]
    assert (record["method"], record["status"]) == ("GET", resp.status)
