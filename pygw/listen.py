"""Listen addresses as the listeners take them: `HOST:PORT`, `[V6]:PORT` or `unix:/path`.

The traffic listener, the admin listener and the supervisor all read these, so they live apart
from each of them."""

from __future__ import annotations


def parse_listen(listen: str) -> tuple[str, int] | str:
    """`HOST:PORT` → (host, port); `unix:/path` → the socket path."""
    if listen.startswith("unix:"):
        return listen[len("unix:") :]
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def format_listen(host: str, port: int) -> str:
    """(host, port) → `HOST:PORT`, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
