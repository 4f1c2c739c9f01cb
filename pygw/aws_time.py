"""Times as API Gateway writes them: `$context.requestTime`, the CLF form `25/Nov/2026:16:14:40
+0000`, shared by the events, the templates, the authorizer inputs and the access log.

Month names are written from a table, not by strftime's `%b`, which follows the process locale.
"""

from __future__ import annotations

import time
from typing import Final

__all__ = ["request_time"]

_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)

# The last second formatted: a busy gateway formats each second once, not once per request.
_last: list[tuple[int, str]] = [(-1, "")]


def request_time(now: float) -> str:
    """`now` (epoch seconds) in CLF form, always in UTC."""
    second = int(now)
    last_second, text = _last[0]
    if second == last_second:
        return text
    t = time.gmtime(second)
    text = (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )
    _last[0] = (second, text)
    return text
