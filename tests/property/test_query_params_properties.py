"""pygw.query_params against Request.query: the same values for the names asked for, in the same
order, and the same names missing, for any query string (with and without anything to decode)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pygw._native import query_key_part, query_missing
from pygw.query_params import QueryNames, query_values
from pygw.request import Request

QUERY_CHARS = st.sampled_from(
    [*"ab=&+%;/?:@,$!*'()~._-09AZé€", "ab", "%61", "%2B", "%26", "%3D", "%zz", "%E2%82%AC"]
)
NAMES = st.lists(
    st.sampled_from(["a", "b", "ab", "a b", "a+b", "b=", "é", "A", "zz", ""]), max_size=4
)


@settings(max_examples=1000)
@given(st.lists(QUERY_CHARS, max_size=30).map("".join), NAMES)
def test_values_and_missing_names_match_request_query(raw: str, names: list[str]) -> None:
    query = Request.build("GET", f"/items?{raw}").query
    expected = {name: query.getall(name) for name in names if name in query}
    assert query_values(raw, frozenset(names)) == expected
    assert QueryNames(names).missing(raw) == tuple(name for name in names if name not in query)


@settings(max_examples=1000)
@given(st.lists(QUERY_CHARS, max_size=30).map("".join), NAMES)
def test_native_reads_a_plain_query_string_as_request_query(raw: str, names: list[str]) -> None:
    """The native calls answer only for a query string with nothing to decode, and then as
    Request.query reads it: the cache key's encoding of each name's values, the missing names."""
    query = Request.build("GET", f"/items?{raw}").query
    part = query_key_part(raw, tuple(names))
    missing = query_missing(raw, tuple(names))
    if "%" in raw or "+" in raw:
        assert part is None and missing is None
        return
    assert part == "".join(
        "".join(f"{len(v)}:{v}," for v in query.getall(name, [])) + ";" for name in names
    )
    assert missing == tuple(name for name in names if name not in query)


def test_examples() -> None:
    raw = "lang=en&n=1&lang=fr&blank&empty=&&x=a=b"
    assert query_values(raw, {"lang", "n", "blank", "empty", "x", "no"}) == {
        "lang": ["en", "fr"],
        "n": ["1"],
        "blank": [""],
        "empty": [""],
        "x": ["a=b"],
    }
    assert QueryNames(("no", "lang", "blan", "lan")).missing(raw) == ("no", "blan", "lan")
    assert query_values("l%61ng=a+b%2Bc", {"lang"}) == {"lang": ["a b+c"]}
    assert QueryNames(("a",)).missing("") == ("a",)
    assert QueryNames(("",)).missing("=x") == ()
