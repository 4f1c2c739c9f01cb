"""The bytes a whole answer is sent as (pygw/response.py): status line, framing, Date and
Connection, HEAD and bodiless statuses, and header values that would split the head."""

from __future__ import annotations

import pytest

from pygw.request import HTTP_10, HTTP_11
from pygw.response import OneWriteResponse, Response, head_from_pairs


def _parts(data: bytes) -> tuple[bytes, list[bytes], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    return status, lines, body


def test_whole_answer() -> None:
    answer = Response(status=201, body=b'{"a":1}', content_type="application/json")
    answer.headers["x-request-id"] = "r-1"
    status, lines, body = _parts(answer.encode(HTTP_11, True, False, b"x-pygw-worker: 7\r\n"))
    assert status == b"HTTP/1.1 201 Created"
    assert b"Content-Type: application/json" in lines
    assert b"x-request-id: r-1" in lines
    assert b"x-pygw-worker: 7" in lines
    assert b"Content-Length: 7" in lines
    assert any(line.startswith(b"Date: ") and line.endswith(b" GMT") for line in lines)
    assert not any(line.lower().startswith(b"connection:") for line in lines)
    assert body == b'{"a":1}'


def test_connection_header_follows_the_version_and_keep_alive() -> None:
    answer = Response(text="hi")
    assert b"Connection: close" in _parts(answer.encode(HTTP_11, False, False, b""))[1]
    assert b"Connection: keep-alive" in _parts(answer.encode(HTTP_10, True, False, b""))[1]
    assert not any(
        line.startswith(b"Connection")
        for line in _parts(answer.encode(HTTP_10, False, False, b""))[1]
    )


def test_framing_headers_given_by_an_integration_are_replaced() -> None:
    answer = Response(body=b"abc", headers={"Content-Length": "99", "Transfer-Encoding": "chunked"})
    _, lines, body = _parts(answer.encode(HTTP_11, True, False, b""))
    assert b"Content-Length: 3" in lines
    assert not any(line.startswith(b"Transfer-Encoding") for line in lines)
    assert body == b"abc"


def test_head_keeps_the_length_and_sends_no_body() -> None:
    data = Response(body=b"hello").encode(HTTP_11, True, True, b"")
    assert data.endswith(b"\r\n\r\n")
    assert b"Content-Length: 5" in _parts(data)[1]
    cached = Response(body=b"", headers={"Content-Length": "42"})
    assert b"Content-Length: 42" in _parts(cached.encode(HTTP_11, True, True, b""))[1]


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses(status: int) -> None:
    data = Response(status=status, body=b"ignored").encode(HTTP_11, True, False, b"")
    assert data.endswith(b"\r\n\r\n")
    assert not any(line.startswith(b"Content-Length") for line in _parts(data)[1])


def test_a_line_break_in_a_header_value_is_refused() -> None:
    answer = Response(headers={"X-Evil": "a\r\nSet-Cookie: x=1"})
    with pytest.raises(ValueError):
        answer.encode(HTTP_11, True, False, b"")


def test_one_write_answer_merges_the_stages_vary() -> None:
    head = head_from_pairs([("Content-Type", "text/plain"), ("Vary", "Accept-Encoding")])
    answer = OneWriteResponse(200, head, b"ok", {"Vary": "Origin", "x-request-id": "r"})
    _, lines, body = _parts(answer.encode(HTTP_11, True, False, b""))
    assert b"Vary: Accept-Encoding, Origin" in lines
    assert b"Content-Type: text/plain" in lines
    assert b"Content-Length: 2" in lines
    assert body == b"ok"
