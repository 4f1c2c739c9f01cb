"""The native request_head_tail and header_block_size against the Python they replaced in the
proxy and the dispatcher: the same bytes upstream and the same body framing for any headers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pygw._native import header_block_size, request_head_tail
from tests.property.reference_heads import REQUEST_REWRITTEN, reference_head_tail

# Names the function treats specially, in mixed case, next to arbitrary ones.
_SPECIAL = sorted(REQUEST_REWRITTEN | {b"content-length", b"content-type", b"x-secret", b"accept"})
names = st.sampled_from(_SPECIAL).flatmap(
    lambda name: st.sampled_from([name, name.upper(), name.title()])
) | st.binary(min_size=1, max_size=10)
# Connection values that name other headers of the draw, with spaces and empty tokens.
values = st.sampled_from(
    [b"keep-alive", b"close", b" X-Secret , accept", b",,Content-Type", b"te, upgrade", b""]
) | st.binary(max_size=12)
texts = st.text(alphabet=st.sampled_from("0123456789.:abcdef-\u00e9\u4e2d"), max_size=16)


@settings(max_examples=600)
@given(
    st.lists(st.tuples(names, values), max_size=12),
    texts,
    st.booleans(),
    texts,
    st.none() | st.integers(min_value=0, max_value=10**12),
    st.none() | st.binary(max_size=20),
)
def test_same_head_and_body_framing_as_the_python(
    headers: list[tuple[bytes, bytes]],
    client_ip: str,
    https: bool,
    request_id: str,
    body_len: int | None,
    content_type: bytes | None,
) -> None:
    expected = reference_head_tail(headers, client_ip, https, request_id, body_len, content_type)
    assert request_head_tail(headers, client_ip, https, request_id, body_len, content_type) == (
        expected
    )
    # aiohttp hands raw_headers over as a tuple, parameter mapping as a list.
    assert request_head_tail(
        tuple(headers), client_ip, https, request_id, body_len, content_type
    ) == (expected)


@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=80)), max_size=20))
def test_block_size_is_each_line_with_its_separators(headers: list[tuple[bytes, bytes]]) -> None:
    assert header_block_size(tuple(headers)) == sum(len(n) + len(v) + 4 for n, v in headers)


def test_anything_but_bytes_pairs_is_refused() -> None:
    with pytest.raises(TypeError):
        request_head_tail([("Accept", "text/html")], "127.0.0.1", False, "r")  # type: ignore[list-item]
    with pytest.raises(ValueError, match="length 2"):
        header_block_size([(b"A", b"1", b"extra")])  # type: ignore[list-item]
