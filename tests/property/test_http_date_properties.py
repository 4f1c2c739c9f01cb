"""The native Date line against the strftime formatting it replaced: the same IMF-fixdate
(RFC 9110) for any second from 1970 to 9999."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from pygw._native import date_line, date_line_at


@given(st.integers(min_value=0, max_value=253_402_300_799))
def test_same_line_as_strftime(secs: int) -> None:
    stamp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(secs))
    assert date_line_at(secs) == f"Date: {stamp}\r\n".encode("ascii")


def test_now_is_this_second() -> None:
    before = int(time.time())
    line = date_line()
    after = int(time.time())
    assert line in {date_line_at(s) for s in range(before, after + 1)}
