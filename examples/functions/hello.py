"""A small Lambda-style handler module for the `function` integration.

Route it with, for an HTTP-style API (payload format 2.0):

    python_path: [functions]            # relative to the config file
    apis:
      - name: hello
        type: http
        routes:
          "GET /hello/{name}":
            integration: {type: function, handler: "hello:greet"}
          "POST /echo":
            integration: {type: function, handler: "hello:echo", timeout_ms: 2000}

The same code runs unchanged on AWS Lambda behind API Gateway.
"""

from __future__ import annotations

import base64
import json
from typing import Any


def greet(event: dict[str, Any], context: Any) -> dict[str, Any]:
    name = (event.get("pathParameters") or {}).get("name", "world")
    lang = (event.get("queryStringParameters") or {}).get("lang", "en")
    greeting = {"en": "Hello", "fr": "Bonjour", "de": "Hallo"}.get(lang, "Hello")
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(
            {"message": f"{greeting}, {name}!", "request_id": context.aws_request_id}
        ),
    }


async def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Async handlers run on the gateway's event loop; sync ones in its thread pool."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "text/plain; charset=utf-8"},
        "cookies": ["echoed=1; Path=/"],
        "body": body,
    }
