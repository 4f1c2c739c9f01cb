"""The native relayed_head and is_framed against the Python they replaced in the proxy: the same
header lines relayed to the client, the same Vary and flags, the same framing decision."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pygw._native import is_framed, relayed_head
from tests.property.reference_heads import HOP_BY_HOP, reference_is_framed, reference_relayed_head

_SPECIAL = sorted(
    HOP_BY_HOP
    | {b"content-length", b"content-type", b"server", b"date", b"vary", b"x-own", b"etag"}
)
names = st.sampled_from(_SPECIAL).flatmap(
    lambda name: st.sampled_from([name, name.upper(), name.title()])
) | st.binary(min_size=1, max_size=8)
values = st.sampled_from(
    [b"keep-alive", b" close , X-Own", b"Accept, \xe9", b"gzip, CHUNKED", b"chunke", b""]
) | st.binary(max_size=12)
# A request's own response headers (its stages'): all but a Vary replace an upstream's.
own = st.lists(
    st.sampled_from(["X-Own", "Age", "x-cache", "ETag", "server", "Content-Type", "Vary"]),
    max_size=4,
).map(lambda names: dict.fromkeys(names, "v"))


@settings(max_examples=600)
@given(st.lists(st.tuples(names, values), max_size=12), own)
def test_same_relayed_lines_vary_and_flags_as_the_python(
    headers: list[tuple[bytes, bytes]], own: dict[str, str]
) -> None:
    replacing = tuple(name for name in own if name != "Vary")
    assert relayed_head(headers, own) == reference_relayed_head(headers, replacing)


@given(st.lists(st.tuples(names, values), max_size=8))
def test_same_framing_as_the_python(headers: list[tuple[bytes, bytes]]) -> None:
    assert is_framed(headers) == reference_is_framed(headers)
