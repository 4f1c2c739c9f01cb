"""Pure-Python reference models of the native header code (`native/src/request_head.rs`,
`upstream_head.rs`, `stored_head.rs`): the Python each replaced in the proxy and the cache stage,
written for clarity, for the hypothesis tests to compare the native functions against."""

from __future__ import annotations

from collections.abc import Sequence

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"proxy-connection",
    }
)
# Client headers the proxy writes itself, or drops (Expect), beside the hop-by-hop ones.
REQUEST_REWRITTEN = HOP_BY_HOP | {
    b"host",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-request-id",
    b"expect",
}
# What a cache entry never keeps of an answer's head, and the Cache-Control that forbids storing.
NOT_STORED = frozenset(
    {b"content-length", b"transfer-encoding", b"date", b"age", b"connection", b"keep-alive"}
    | {b"x-cache"}
)
NEVER_STORE = frozenset({"no-store", "private", "no-cache"})


def _connection_named(headers: Sequence[tuple[bytes, bytes]]) -> frozenset[bytes]:
    # Every Connection header's tokens count.
    return frozenset(
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
        if token.strip()
    )


def reference_head_tail(
    headers: Sequence[tuple[bytes, bytes]],
    client_ip: str,
    https: bool,
    request_id: str,
    body_len: int | None,
    content_type: bytes | None,
) -> tuple[bytes, int]:
    named = _connection_named(headers)
    out: list[bytes] = []
    forwarded_for: bytes | None = None
    client_host: bytes | None = None
    body_mode = 0
    for name, value in headers:
        lname = name.lower()
        if lname in REQUEST_REWRITTEN:
            if lname == b"x-forwarded-for":
                forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
            elif lname == b"host":
                client_host = value
            elif lname == b"transfer-encoding":
                body_mode = 2
            continue
        if lname == b"content-length":
            if body_len is not None:
                continue
            if body_mode == 0:
                body_mode = 1
        elif lname in named or (content_type is not None and lname == b"content-type"):
            continue
        out += [b"\r\n", name, b": ", value]
    ip = client_ip.encode("ascii", "replace")
    out += [b"\r\nX-Forwarded-For: ", ip if forwarded_for is None else forwarded_for + b", " + ip]
    out.append(b"\r\nX-Forwarded-Proto: https" if https else b"\r\nX-Forwarded-Proto: http")
    if client_host is not None:
        out += [b"\r\nX-Forwarded-Host: ", client_host]
    out += [b"\r\nx-request-id: ", request_id.encode("ascii", "replace")]
    if body_len is not None:
        body_mode = 3
        if content_type is not None:
            out += [b"\r\nContent-Type: ", content_type]
        out.append(b"\r\nContent-Length: %d" % body_len)
    elif body_mode == 2:
        out.append(b"\r\nTransfer-Encoding: chunked")
    out.append(b"\r\n\r\n")
    return b"".join(out), body_mode


def reference_relayed_head(
    headers: Sequence[tuple[bytes, bytes]], own_names: tuple[str, ...]
) -> tuple[bytes, str | None, bool, bool, bool]:
    drop = _connection_named(headers)
    replaced = frozenset(name.lower().encode("latin-1") for name in own_names)
    lines: list[bytes] = []
    vary: list[bytes] = []
    has_content_type = has_server = has_date = False
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in drop or lname in replaced or lname == b"content-length":
            continue
        if lname == b"vary":
            vary.append(value)
            continue
        if lname == b"content-type":
            has_content_type = True
        elif lname == b"server":
            has_server = True
        elif lname == b"date":
            has_date = True
        lines.append(b"%s: %s\r\n" % (name, value))
    return (
        b"".join(lines),
        b", ".join(vary).decode("latin-1") if vary else None,
        has_content_type,
        has_server,
        has_date,
    )


def reference_is_framed(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    return any(
        name.lower() == b"content-length"
        or (name.lower() == b"transfer-encoding" and b"chunked" in value.lower())
        for name, value in headers
    )


def reference_stored_lines(lines: bytes, own_names: tuple[str, ...]) -> tuple[bytes, int] | None:
    per_request = frozenset(name.lower().encode("latin-1") for name in own_names)
    kept: list[bytes] = []
    for line in lines.split(b"\r\n"):
        if not line:
            continue
        lname = line.partition(b":")[0].strip().lower()
        if lname in NOT_STORED or lname in per_request:
            continue
        if lname == b"set-cookie":
            return None
        if lname == b"cache-control":
            value = line.partition(b":")[2].decode("latin-1")
            tokens = [t.strip().lower() for t in value.split(",") if t.strip()]
            if not NEVER_STORE.isdisjoint(t.partition("=")[0].strip() for t in tokens):
                return None
        kept.append(line)
    kept.append(b"")
    return (b"\r\n".join(kept) if len(kept) > 1 else b"", len(kept))
