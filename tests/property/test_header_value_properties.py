"""pygw._native.header_value against Request.header (the Python loop it replaces for stages):
the same first value, or None, for any header list and any name asked for."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pygw._native import header_value
from pygw.request import Request

NAMES = st.sampled_from(
    [b"x-api-key", b"X-Api-Key", b"X-API-KEY", b"x-api-keys", b"x-tenant", b"\xc9", b"\xe9"]
)
VALUES = st.binary(max_size=8)


@settings(max_examples=500)
@given(st.lists(st.tuples(NAMES, VALUES), max_size=8), NAMES)
def test_header_value_matches_request_header(pairs: list[tuple[bytes, bytes]], name: bytes) -> None:
    request = Request.build("GET", "/")
    raw = tuple(pairs)
    request.replace_headers(raw)
    # Request.header takes the name lower-cased, as the stages pass it; an upper-case name
    # matches nothing in either.
    assert header_value(raw, name) == request.header(name)
    assert header_value(raw, name.lower()) == request.header(name.lower())
