"""Answers with the client certificate API Gateway hands a function on a mutual-TLS domain
(`requestContext.authentication.clientCert`, payload format 2.0). See examples/edge.yaml."""

from __future__ import annotations

import json
from typing import Any


def whoami(event: dict[str, Any], context: Any) -> dict[str, Any]:
    cert = (event["requestContext"].get("authentication") or {}).get("clientCert")
    answer = {"client": None}
    if cert is not None:
        answer = {
            "client": cert["subjectDN"],
            "issuer": cert["issuerDN"],
            "serial": cert["serialNumber"],
            "valid_until": cert["validity"]["notAfter"],
        }
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(answer),
    }
