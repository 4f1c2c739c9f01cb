"""The native relayed_head and is_framed against the Python they replaced in the proxy: the same
header lines relayed to the client, the same Vary and flags, the same framing decision."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from pygw._native import is_framed, relayed_head

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"proxy-connection",
    }
)


def reference_relayed_head(
    headers: Sequence[tuple[bytes, bytes]], own_names: tuple[str, ...]
) -> tuple[bytes, str | None, bool, bool, bool]:
    drop: frozenset[bytes] = frozenset()
    for name, value in headers:
        if name.lower() == b"connection":
            drop |= frozenset(t.strip().lower() for t in value.split(b",") if t.strip())
    replaced = frozenset(name.lower().encode("latin-1") for name in own_names)
    lines: list[bytes] = []
    vary: list[bytes] = []
    has_content_type = has_server = has_date = False
    for name, value in headers:
        lname = name.lower()
        if lname in _HOP_BY_HOP or lname in drop or lname in replaced or lname == b"content-length":
            continue
        if lname == b"vary":
            vary.append(value)
            continue
        if lname == b"content-type":
            has_content_type = True
        elif lname == b"server":
            has_server = True
        elif lname == b"date":
            has_date = True
        lines.append(b"%s: %s\r\n" % (name, value))
    return (
        b"".join(lines),
        b", ".join(vary).decode("latin-1") if vary else None,
        has_content_type,
        has_server,
        has_date,
    )


def reference_is_framed(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"content-length"
        or (name.lower() == b"transfer-encoding" and b"chunked" in value.lower())
        for name, value in headers
    )


_SPECIAL = sorted(
    _HOP_BY_HOP
    | {b"content-length", b"content-type", b"server", b"date", b"vary", b"x-own", b"etag"}
)
names = st.sampled_from(_SPECIAL).flatmap(
    lambda name: st.sampled_from([name, name.upper(), name.title()])
) | st.binary(min_size=1, max_size=8)
values = st.sampled_from(
    [b"keep-alive", b" close , X-Own", b"Accept, \xe9", b"gzip, CHUNKED", b"chunke", b""]
) | st.binary(max_size=12)
own = st.lists(
    st.sampled_from(["X-Own", "Age", "x-cache", "ETag", "server", "Content-Type"]), max_size=4
).map(tuple)


@settings(max_examples=600)
@given(st.lists(st.tuples(names, values), max_size=12), own)
def test_same_relayed_lines_vary_and_flags_as_the_python(
    headers: list[tuple[bytes, bytes]], own_names: tuple[str, ...]
) -> None:
    assert relayed_head(headers, own_names) == reference_relayed_head(headers, own_names)


@given(st.lists(st.tuples(names, values), max_size=8))
def test_same_framing_as_the_python(headers: list[tuple[bytes, bytes]]) -> None:
    assert is_framed(headers) == reference_is_framed(headers)
