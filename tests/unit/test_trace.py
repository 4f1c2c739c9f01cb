"""Trace headers read as W3C Trace Context and AWS X-Ray define them, and the trace id in
mapping templates."""

from __future__ import annotations

import pytest

from pygw.trace import Incoming, amzn_trace_header, incoming, xray_trace_id
from tests.unit.test_transform import make_ctx, render_request

W3C_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"00-{W3C_ID}-00f067aa0ba902b7-01", Incoming(W3C_ID, "00f067aa0ba902b7", True)),
        (f"00-{W3C_ID}-00f067aa0ba902b7-00", Incoming(W3C_ID, "00f067aa0ba902b7", False)),
        # Bit 0 of the flags is "sampled"; other bits are other flags.
        (f"00-{W3C_ID}-00f067aa0ba902b7-03", Incoming(W3C_ID, "00f067aa0ba902b7", True)),
        # A later version may carry more fields after its four.
        (f"01-{W3C_ID}-00f067aa0ba902b7-01-later", Incoming(W3C_ID, "00f067aa0ba902b7", True)),
        (f"00-{W3C_ID}-00f067aa0ba902b7-01-extra", None),
        (f"ff-{W3C_ID}-00f067aa0ba902b7-01", None),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
        (f"00-{W3C_ID}-{'0' * 16}-01", None),
        (f"00-{W3C_ID.upper()}-00f067aa0ba902b7-01", None),
        (f"00-{W3C_ID[:-1]}-00f067aa0ba902b7-01", None),
        ("garbage", None),
    ],
)
def test_traceparent(value: str, expected: Incoming | None) -> None:
    assert incoming(value.encode(), None) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            Incoming("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8", True),
        ),
        (
            "Root=1-5759e988-bd862e3fe1be46a994272793",
            Incoming("5759e988bd862e3fe1be46a994272793", None, False),
        ),
        (
            "Sampled=0; Self=1-67891234-12456789abcdef012345678;"
            "Root=1-5759e988-bd862e3fe1be46a994272793",
            Incoming("5759e988bd862e3fe1be46a994272793", None, False),
        ),
        ("Root=2-5759e988-bd862e3fe1be46a994272793", None),
        ("Parent=53995c3f42cd8ad8;Sampled=1", None),
        ("Root=1-5759e988-bd862e3fe1be46a99427279", None),
    ],
)
def test_xray_header(value: str, expected: Incoming | None) -> None:
    assert incoming(None, value.encode()) == expected


def test_a_valid_traceparent_wins_and_a_broken_one_falls_back_to_xray() -> None:
    amzn = b"Root=1-5759e988-bd862e3fe1be46a994272793"
    assert incoming(f"00-{W3C_ID}-00f067aa0ba902b7-01".encode(), amzn) == Incoming(
        W3C_ID, "00f067aa0ba902b7", True
    )
    found = incoming(b"00-broken", amzn)
    assert found is not None and found.trace_id == "5759e988bd862e3fe1be46a994272793"


def test_one_id_two_spellings() -> None:
    assert xray_trace_id(W3C_ID) == "1-4bf92f35-77b34da6a3ce929d0e0e4736"
    assert amzn_trace_header(W3C_ID, "00f067aa0ba902b7", False) == (
        "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=0"
    )


async def test_a_mapping_template_reads_the_xray_trace_id() -> None:
    ctx = make_ctx(headers={"Content-Type": "application/json"}, body=b"{}")
    ctx.trace_id = W3C_ID
    ctx.span_id = "00f067aa0ba902b7"
    rendered = await render_request('{"trace": "$context.xrayTraceId"}', ctx)
    assert rendered == '{"trace": "1-4bf92f35-77b34da6a3ce929d0e0e4736"}'
