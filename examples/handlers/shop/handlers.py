"""`POST /items` of examples/full.yaml: a Lambda-style handler for event format 1.0 or 2.0."""

from __future__ import annotations

import json
import uuid
from typing import Any


def create(event: dict[str, Any], context: Any) -> dict[str, Any]:
    item = json.loads(event.get("body") or "{}")
    item["id"] = str(uuid.uuid4())
    return {
        "statusCode": 201,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(item),
    }
