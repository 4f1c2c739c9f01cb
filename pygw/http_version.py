"""The HTTP version of a request, which its answer is framed for."""

from __future__ import annotations

from typing import NamedTuple


class HttpVersion(NamedTuple):
    major: int
    minor: int


HTTP_10 = HttpVersion(1, 0)
HTTP_11 = HttpVersion(1, 1)
