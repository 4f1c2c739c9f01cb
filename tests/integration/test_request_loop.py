"""The gateway's own request loop (pygw/http1.py) against raw sockets: keep-alive, pipelined
requests, unread bodies, malformed requests, and per-request isolation of context variables."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pygw.server import Gateway

HANDLERS = Path(__file__).resolve().parent / "handlers"

CONFIG = """
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
access_log: null
python_path: [%(handlers)s]
apis:
  - name: shop
    type: http
    authorizers:
      probe: {type: custom, handler: "context_probe:authorize", simple_responses: true,
              identity_source: ["header.x-user"], ttl_s: 0}
    routes:
      "GET /items/{id}":
        integration: {type: mock, status: 200, body: {ok: true}}
      "POST /items":
        integration: {type: mock, status: 201, body: {made: true}}
      "GET /probe":
        integration: {type: function, handler: "context_probe:handler"}
        authorizer: probe
"""


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[int]:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG % {"handlers": json.dumps(str(HANDLERS))})
    served = Gateway(config)
    await served.start()
    try:
        yield served.bound[1]
    finally:
        await served.drain()


async def _answers(port: int, raw: bytes, count: int) -> list[tuple[str, dict[str, str], bytes]]:
    """Writes `raw` at once and reads `count` answers framed by Content-Length."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        answers = []
        for _ in range(count):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            status, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            answers.append((status, headers, body))
        return answers
    finally:
        writer.close()


async def test_pipelined_requests_are_answered_in_order(gateway: int) -> None:
    raw = b"".join(f"GET /items/{n} HTTP/1.1\r\nHost: shop\r\n\r\n".encode() for n in range(5))
    answers = await _answers(gateway, raw, 5)
    assert [status for status, _, _ in answers] == ["HTTP/1.1 200 OK"] * 5
    assert all(json.loads(body) == {"ok": True} for _, _, body in answers)
    ids = [headers["x-request-id"] for _, headers, _ in answers]
    assert len(set(ids)) == 5


async def test_an_unread_body_does_not_spill_into_the_next_request(gateway: int) -> None:
    body = b"x" * 70_000  # more than one read: the loop must drop what the route never read
    raw = (
        b"POST /items HTTP/1.1\r\nHost: shop\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
        + b"GET /items/9 HTTP/1.1\r\nHost: shop\r\n\r\n"
    )
    (made, then) = await _answers(gateway, raw, 2)
    assert made[0] == "HTTP/1.1 201 Created" and json.loads(made[2]) == {"made": True}
    assert then[0] == "HTTP/1.1 200 OK" and json.loads(then[2]) == {"ok": True}


async def test_a_malformed_request_gets_a_json_400_and_the_connection_closes(
    gateway: int,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway)
    try:
        writer.write(b"GET /items/1 HTTP/1.1\r\nHost: shop\r\nBad Header\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)  # read() returns once it closes
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    assert json.loads(body) == {"message": "Bad Request"}


async def test_context_variables_stay_with_their_request(gateway: int) -> None:
    raw = b"GET /probe HTTP/1.1\r\nHost: shop\r\nx-user: u1\r\n\r\n" * 3
    answers = await _answers(gateway, raw, 3)
    assert [status for status, _, _ in answers] == ["HTTP/1.1 200 OK"] * 3
    for _, _, body in answers:
        assert json.loads(body) == {"handler_before": "unset", "authorizer_before": "unset"}
