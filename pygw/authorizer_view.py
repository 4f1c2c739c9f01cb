"""How an authorizer's result is shown to backends and templates, as AWS REST APIs show it.

Stages write what they found to ``RequestContext.authorizer``; the function integration's events
and the mapping templates present it. Both read these helpers, so the two views cannot drift:

- A Lambda (custom) authorizer's ``context`` reaches REST-style (1.0) events, WebSocket events and
  ``$context.authorizer.*`` with every value stringified: AWS documents that a context of
  ``{"numKey": 1, "boolKey": true}`` reads as ``"1"`` and ``"true"``. Beside it sit
  ``principalId`` and ``integrationLatency`` (the authorizer's own run time in milliseconds, 0
  when the answer came from the cache), a number. HTTP APIs' 2.0 ``authorizer.lambda`` keeps the
  types as returned.
- A Cognito user pool authorizer's claims reach ``requestContext.authorizer.claims`` as strings
  the way AWS's REST Cognito authorizer writes them: lists joined with commas
  (``cognito:groups``: ``"admin,users"``), ``exp`` and ``iat`` as Java dates
  (``"Sun Dec 17 07:28:12 UTC 2017"``), other numbers and booleans as their JSON text.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = [
    "COGNITO_KEY",
    "INTEGRATION_LATENCY",
    "cognito_claims",
    "context_text",
    "rest_authorizer",
]

# The key under which a Cognito authorizer's claims sit in RequestContext.authorizer.
COGNITO_KEY = "cognito"
# Where a custom authorizer's run time sits in RequestContext.authorizer (milliseconds).
INTEGRATION_LATENCY = "integrationLatency"

# Claims AWS's REST Cognito authorizer turns into dates (java.util.Date's toString, in UTC).
_DATE_CLAIMS = frozenset(("exp", "iat"))
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def context_text(value: Any) -> Any:
    """A Lambda authorizer's context value as REST APIs pass it on: a string (None stays None)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    # REST-style contexts hold no nested values (the custom authorizer refuses them); a 2.0
    # answer shown in a 1.0 event is the only way here.
    return orjson.dumps(value).decode()


def rest_authorizer(found: Mapping[str, Any]) -> dict[str, Any]:
    """A custom authorizer's result as REST-style events and templates see it: the context
    stringified, ``principalId`` kept, ``integrationLatency`` a number."""
    out: dict[str, Any] = {}
    for key, value in found.items():
        out[key] = value if key == INTEGRATION_LATENCY else context_text(value)
    return out


def _java_date(epoch_s: float) -> str:
    t = time.gmtime(epoch_s)
    return (
        f"{_DAYS[t.tm_wday]} {_MONTHS[t.tm_mon - 1]} {t.tm_mday:02d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} UTC {t.tm_year}"
    )


def _claim_text(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if name in _DATE_CLAIMS:
            return _java_date(float(value))
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)
    if isinstance(value, list):
        return ",".join(_claim_text("", item) for item in value)
    if value is None:
        return ""
    return orjson.dumps(value).decode()


def cognito_claims(claims: Mapping[str, Any]) -> dict[str, str]:
    """A verified Cognito token's claims as AWS's REST Cognito authorizer passes them on."""
    return {name: _claim_text(name, value) for name, value in claims.items()}
