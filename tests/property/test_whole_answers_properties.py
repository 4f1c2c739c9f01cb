"""The native WholeAnswers.encode (pygw.response.encode_whole) against pygw.response.whole_bytes,
the Python it replaced on the lean way: the same bytes sent for any whole answer whose head has
no Vary of its own, and None (the Python merges it) for one that has."""

from __future__ import annotations

import re
from http import HTTPStatus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pygw.http_version import HTTP_10, HTTP_11
from pygw.response import ResponseHead, encode_whole, whole_bytes

# The Date line is today's: two calls a second apart would differ there and nowhere else.
_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")

SERVER_EXTRA = b"Server: pygw\r\nX-Frame-Options: DENY\r\n"
statuses = st.sampled_from([s.value for s in HTTPStatus]) | st.integers(100, 999)
reasons = st.sampled_from([b"", b"OK", b"Not Found", b"Very Custom"])
heads = st.tuples(
    st.sampled_from([b"", b"Server: upstream\r\n", b"Content-Type: text/plain\r\nETag: v1\r\n"]),
    st.just(None),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
owns = st.dictionaries(
    st.sampled_from(["x-request-id", "X-Cache", "Age", "RateLimit-Limit"]),
    st.text(alphabet="abc019-", max_size=10),
    max_size=4,
)


def _undated(answer: bytes) -> bytes:
    return _DATE.sub(b"\r\nDate: -\r\n", answer)


@settings(max_examples=500)
@given(
    st.sampled_from([0, 1]),
    statuses,
    reasons,
    heads,
    st.binary(max_size=20),
    owns,
    st.booleans(),
    st.sampled_from([SERVER_EXTRA, b"", b"X-Frame-Options: DENY\r\n"]),
)
def test_the_same_bytes_as_whole_bytes(
    minor: int,
    status: int,
    reason: bytes,
    head: ResponseHead,
    body: bytes,
    own: dict[str, str],
    keep_alive: bool,
    extra: bytes,
) -> None:
    version = HTTP_11 if minor == 1 else HTTP_10
    expected = whole_bytes(version, status, reason, head, body, own, keep_alive, extra)
    native = encode_whole(minor, status, reason, head, body, own, keep_alive, extra)
    assert native is not None
    assert _undated(native) == _undated(expected)


def test_an_answer_without_a_reason_gets_its_status_s_phrase_or_unknown() -> None:
    head: ResponseHead = (b"", None, True, False, True)
    not_found = encode_whole(1, 404, b"", head, b"", {}, True, b"")
    unknown = encode_whole(0, 599, b"", head, b"", {}, True, b"")
    assert not_found is not None and not_found.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert unknown is not None and unknown.startswith(b"HTTP/1.0 599 Unknown\r\n")


def test_an_upstream_server_header_replaces_the_gateway_s() -> None:
    head: ResponseHead = (b"Server: upstream\r\n", None, True, True, True)
    answer = encode_whole(1, 200, b"OK", head, b"x", {}, True, SERVER_EXTRA)
    assert answer is not None
    assert answer.count(b"Server: ") == 1
    assert b"Server: upstream\r\n" in answer and b"X-Frame-Options: DENY\r\n" in answer


def test_a_head_with_its_own_vary_is_left_to_whole_bytes() -> None:
    head: ResponseHead = (b"", "Accept", True, False, True)
    assert encode_whole(1, 200, b"OK", head, b"", {"Vary": "Origin"}, True, b"") is None


def test_a_smuggled_header_is_refused_not_split() -> None:
    head: ResponseHead = (b"", None, True, False, True)
    with pytest.raises(ValueError, match="line break"):
        encode_whole(1, 200, b"OK", head, b"", {"X-Note": "a\r\nSet-Cookie: s=1"}, True, b"")
