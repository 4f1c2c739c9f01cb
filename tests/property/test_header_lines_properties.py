"""The native header_lines against the Python it replaced: the same bytes for any headers, and a
refusal exactly when a name or value holds a line break (response splitting)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from pygw._native import header_lines


def reference_header_lines(headers: Mapping[str, str]) -> bytes:
    text = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    if text.count("\n") != len(headers) or text.count("\r") != len(headers):
        raise ValueError("a response header value contains a line break")
    return text.encode()


# Mostly header-like text, with CR, LF and non-ASCII letters mixed in often enough to matter.
text = st.text(
    alphabet=st.sampled_from("aZ-_09: \t;=\r\n\u00e9\u4e2d\U0001f600"), max_size=12
) | st.text(max_size=8).filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t))


@settings(max_examples=500)
@given(st.dictionaries(text, text, max_size=8))
def test_same_bytes_or_the_same_refusal_as_the_python_lines(headers: dict[str, str]) -> None:
    try:
        expected = reference_header_lines(headers)
    except ValueError:
        with pytest.raises(ValueError, match="line break"):
            header_lines(headers)
        return
    assert header_lines(headers) == expected


def test_a_multidict_keeps_repeated_names_in_order() -> None:
    headers = CIMultiDict([("Set-Cookie", "a=1"), ("X-Cache", "Hit"), ("Set-Cookie", "b=2")])
    assert header_lines(headers) == b"Set-Cookie: a=1\r\nX-Cache: Hit\r\nSet-Cookie: b=2\r\n"


def test_a_value_that_is_not_text_is_sent_as_its_str() -> None:
    assert header_lines({"Age": 7}) == b"Age: 7\r\n"  # type: ignore[dict-item]


def test_a_smuggled_header_is_refused_not_split() -> None:
    with pytest.raises(ValueError, match="line break"):
        header_lines({"X-Note": "ok\r\nSet-Cookie: session=stolen"})
