"""A custom authorizer deciding by the client certificate of a mutual-TLS request."""

from __future__ import annotations

from typing import Any


def by_client_cert(event: dict[str, Any]) -> dict[str, Any]:
    """HTTP API REQUEST authorizer, simple responses: lets in the client named good-client."""
    cert = event["requestContext"].get("authentication", {}).get("clientCert") or {}
    subject = cert.get("subjectDN", "")
    return {"isAuthorized": "CN=good-client" in subject, "context": {"subject": subject}}
