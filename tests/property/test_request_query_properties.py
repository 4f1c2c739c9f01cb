"""Request.query (parsed without building a URL) against yarl's URL.query, which aiohttp's
requests used: the same parameters, in the same order, for any query string."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from pygw.request import Request

QUERY_CHARS = st.sampled_from(
    [*"ab=&+%;/?:@,$!*'()~._-09AZ ", "%41", "%2B", "%zz", "%E2%82%AC", "%"]
)


@settings(max_examples=500)
@given(st.lists(QUERY_CHARS, max_size=30).map("".join))
def test_query_matches_yarl(query: str) -> None:
    query = query.replace(" ", "%20")  # a request target has no raw space
    target = f"/items?{query}"
    assert list(Request.build("GET", target).query.items()) == list(
        URL(target, encoded=True).query.items()
    )
