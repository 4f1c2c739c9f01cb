"""Trace context: the W3C `traceparent` and AWS's `X-Amzn-Trace-Id`, read from a request or started.

One 128-bit trace id has two spellings: W3C's 32 hex digits, and X-Ray's `1-` 8 digits `-` 24
digits, whose first 8 digits are the epoch second the trace started (as OpenTelemetry's X-Ray
propagator converts them). A trace the gateway starts follows X-Ray's rule, so either spelling is
valid to either kind of collector. The gateway's own span id (16 hex digits) becomes the parent
of what it forwards.

The dispatcher starts a trace for the common request that carries none with one native call; the
parsing here runs only for requests that came with a trace header.
"""

from __future__ import annotations

import os
import re
from typing import Final, NamedTuple

from pygw._native import TraceIds

__all__ = [
    "Incoming",
    "amzn_trace_header",
    "incoming",
    "new_span_id",
    "new_trace",
    "xray_trace_id",
]

# Version 00 is exactly four fields; a later version may append fields after a dash (W3C Trace
# Context, "Versioning of traceparent"). Upper-case hex is invalid.
_TRACEPARENT: Final = re.compile(
    rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?"
)
_XRAY_ROOT: Final = re.compile(rb"1-([0-9a-f]{8})-([0-9a-f]{24})")
_SPAN: Final = re.compile(rb"[0-9a-f]{16}")
_ZERO_TRACE: Final = b"0" * 32
_ZERO_SPAN: Final = b"0" * 16


class Incoming(NamedTuple):
    """A trace a client sent: its id (32 hex digits), the caller's span id, whether sampled."""

    trace_id: str
    parent_id: str | None
    sampled: bool


def _from_traceparent(value: bytes) -> Incoming | None:
    found = _TRACEPARENT.fullmatch(value.strip())
    if found is None:
        return None
    version, trace_id, parent_id, flags, rest = found.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return Incoming(trace_id.decode(), parent_id.decode(), bool(int(flags, 16) & 1))


def _from_amzn(value: bytes) -> Incoming | None:
    """`Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1`, fields in
    any order (X-Ray also writes Self= and Lineage=, ignored here)."""
    root: bytes | None = None
    parent: str | None = None
    sampled = False
    for field in value.split(b";"):
        key, _, item = field.strip().partition(b"=")
        if key == b"Root":
            found = _XRAY_ROOT.fullmatch(item)
            if found is None:
                return None
            root = found[1] + found[2]
        elif key == b"Parent" and _SPAN.fullmatch(item):
            parent = item.decode()
        elif key == b"Sampled":
            sampled = item == b"1"
    if root is None or root == _ZERO_TRACE:
        return None
    return Incoming(root.decode(), parent, sampled)


def incoming(traceparent: bytes | None, amzn: bytes | None) -> Incoming | None:
    """The trace a request carries: a well-formed traceparent first, else a well-formed
    X-Amzn-Trace-Id; None when neither is usable (then a new trace starts)."""
    if traceparent is not None:
        found = _from_traceparent(traceparent)
        if found is not None:
            return found
    if amzn is not None:
        return _from_amzn(amzn)
    return None


def _seed() -> int:
    return int.from_bytes(os.urandom(8), "big")


# Native: in Python, drawing 160 random bits and formatting them cost about 3 000 instructions
# per request (bench/instructions.py); one call here costs a tenth of that.
_traces = TraceIds(_seed())
# A forked child must not repeat its parent's traces.
os.register_at_fork(after_in_child=lambda: _traces.reseed(_seed()))
new_trace = _traces.next
"""A new (trace id, span id): 32 hex digits (the epoch second, then random) and 16."""


def new_span_id() -> str:
    return _traces.next()[1]


def xray_trace_id(trace_id: str) -> str:
    """`$context.xrayTraceId`: the trace id in X-Ray's spelling."""
    return f"1-{trace_id[:8]}-{trace_id[8:]}"


def amzn_trace_header(trace_id: str, span_id: str, sampled: bool) -> str:
    """The `X-Amzn-Trace-Id` the gateway sends on (to an upstream, in a function's event)."""
    return f"Root=1-{trace_id[:8]}-{trace_id[8:]};Parent={span_id};Sampled={1 if sampled else 0}"
