"""The admin token check, shared by the admin listeners and the WebSocket connections API."""

from __future__ import annotations

import hmac
import ipaddress


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an `Authorization` header value is `Bearer TOKEN` for this token.

    Only the Bearer scheme counts: a bare token would also be accepted by anything that logs or
    forwards Authorization headers as opaque strings, and the scheme says which credential this
    is. The comparison takes the same time wherever the first difference is, so the token cannot
    be guessed byte by byte from response times."""
    if not authorization:
        return False
    scheme, _, offered = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Both sides as bytes: compare_digest refuses str with non-ASCII characters.
    return hmac.compare_digest(offered.strip().encode(), token.encode())


def is_loopback_listen(listen: str) -> bool:
    """Whether an admin `listen` address (`HOST:PORT`, `[V6]:PORT` or `unix:/path`) is reachable
    from this machine only."""
    if listen.startswith("unix:"):
        return True
    host = listen.rpartition(":")[0].strip("[]")
    if not host or host.lower() == "localhost":
        # An empty host binds 127.0.0.1 (pygw.listen.parse_listen).
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # Another host name: what it resolves to may change, so it is not known to be local.
        return False
