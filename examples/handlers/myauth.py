"""The `legacy` custom authorizer of examples/full.yaml (HTTP-API simple response format)."""

from __future__ import annotations

import hmac
import os
from typing import Any


def check(event: dict[str, Any], context: Any) -> dict[str, Any]:
    expected = "Bearer " + os.environ.get("LEGACY_TOKEN", "let-me-in")
    offered = (event.get("headers") or {}).get("authorization", "")
    allowed = hmac.compare_digest(offered.encode(), expected.encode())
    return {"isAuthorized": allowed, "context": {"user": "legacy" if allowed else ""}}
