"""OneWriteResponse through a real aiohttp server: the bytes a client receives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from pygw.one_write import OneWriteResponse, head_from_pairs

Handler = Callable[[web.BaseRequest], OneWriteResponse]


class _Server:
    def __init__(self) -> None:
        self.handler: Handler = lambda _: OneWriteResponse(200, head_from_pairs(()), b"", {})
        self.port = 0

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        return self.handler(request)


@pytest.fixture
async def server() -> AsyncIterator[_Server]:
    state = _Server()
    web_server = web.Server(state, access_log=None)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(web_server, "127.0.0.1", 0)
    state.port = listener.sockets[0].getsockname()[1]
    yield state
    listener.close()
    await web_server.shutdown(1.0)
    await listener.wait_closed()


async def _exchange(port: int, raw: bytes, responses: int = 1) -> list[bytes]:
    """Send `raw` and read `responses` complete answers (each framed by Content-Length)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    answers: list[bytes] = []
    for _ in range(responses):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        answers.append(head + await reader.readexactly(length))
    writer.close()
    return answers


def _lines(answer: bytes) -> tuple[bytes, list[bytes], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *headers = head.split(b"\r\n")
    return status, headers, body


async def test_whole_answer_with_the_headers_aiohttp_would_add(server: _Server) -> None:
    head = head_from_pairs([("Content-Type", "application/json"), ("X-Upstream", "a")])
    server.handler = lambda _: OneWriteResponse(201, head, b'{"ok":true}', {"x-request-id": "r-1"})
    (answer,) = await _exchange(server.port, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = _lines(answer)
    assert status == b"HTTP/1.1 201 Created"
    assert body == b'{"ok":true}'
    assert b"Content-Type: application/json" in headers
    assert b"X-Upstream: a" in headers
    assert b"x-request-id: r-1" in headers
    assert b"Content-Length: 11" in headers
    assert f"Server: {SERVER_SOFTWARE}".encode() in headers
    assert any(h.startswith(b"Date: ") and h.endswith(b" GMT") for h in headers)
    assert not any(h.lower().startswith(b"connection:") for h in headers)


async def test_keep_alive_serves_several_requests_on_one_connection(server: _Server) -> None:
    count = 0

    def answer(_: web.BaseRequest) -> OneWriteResponse:
        nonlocal count
        count += 1
        return OneWriteResponse(200, head_from_pairs(()), b"n=%d" % count, {})

    server.handler = answer
    request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    answers = await _exchange(server.port, request * 3, responses=3)
    assert [_lines(a)[2] for a in answers] == [b"n=1", b"n=2", b"n=3"]
    # Without a Content-Type of its own, a body is announced as bytes, as aiohttp does.
    assert b"Content-Type: application/octet-stream" in _lines(answers[0])[1]


async def test_connection_header_follows_the_client(server: _Server) -> None:
    server.handler = lambda _: OneWriteResponse(200, head_from_pairs(()), b"x", {})
    (closing,) = await _exchange(
        server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    assert b"Connection: close" in _lines(closing)[1]
    (old,) = await _exchange(server.port, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, _ = _lines(old)
    assert status == b"HTTP/1.0 200 OK"
    assert b"Connection: keep-alive" in headers


async def test_a_stage_vary_is_merged_into_the_integrations_own(server: _Server) -> None:
    own = head_from_pairs([("Vary", "Accept-Encoding")])
    server.handler = lambda _: OneWriteResponse(200, own, b"x", {"Vary": "Origin"})
    (merged,) = await _exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert [h for h in _lines(merged)[1] if h.startswith(b"Vary")] == [
        b"Vary: Accept-Encoding, Origin"
    ]
    covered = head_from_pairs([("Vary", "Origin, Accept-Encoding")])
    server.handler = lambda _: OneWriteResponse(200, covered, b"x", {"Vary": "Origin"})
    (kept,) = await _exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert [h for h in _lines(kept)[1] if h.startswith(b"Vary")] == [
        b"Vary: Origin, Accept-Encoding"
    ]


async def test_changes_made_through_headers_are_sent(server: _Server) -> None:
    def answer(_: web.BaseRequest) -> OneWriteResponse:
        response = OneWriteResponse(
            200, head_from_pairs([("X-Old", "1"), ("Content-Length", "999")]), b"abc", {}
        )
        assert response.headers["X-Old"] == "1"
        response.headers["X-New"] = "2"
        del response.headers["X-Old"]
        return response

    server.handler = answer
    (answer_bytes,) = await _exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    _, headers, body = _lines(answer_bytes)
    assert b"X-New: 2" in headers
    assert not any(h.startswith(b"X-Old") for h in headers)
    # The stated length is always the body's own, never a stale one.
    assert b"Content-Length: 3" in headers and body == b"abc"


def test_line_breaks_are_refused() -> None:
    with pytest.raises(ValueError):
        head_from_pairs([("X-A", "1\r\nX-Injected: 2")])


async def test_a_line_break_in_a_per_request_header_sends_nothing(server: _Server) -> None:
    server.handler = lambda _: OneWriteResponse(
        200, (b"", None, False, False, False), b"x", {"X-A": "1\nX-B: 2"}
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    answer = await reader.read(65536)
    writer.close()
    # As with aiohttp's own serializer: the connection is dropped, nothing smuggled leaves.
    assert answer == b""
