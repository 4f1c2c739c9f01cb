"""Request ids and the hand-rolled metric families: what a scraper and a log reader see."""

from __future__ import annotations

import os
import re

import pytest

from pygw._native import RequestIds
from pygw.dispatch import new_request_id
from pygw.observe.metrics import Metrics

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_request_ids_are_unique_and_uuid_shaped() -> None:
    ids = [new_request_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(UUID4.fullmatch(one) for one in ids[:1000])


def test_a_forked_worker_does_not_repeat_its_parents_ids() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report the next id and leave without running pytest's teardown
        os.write(write_end, new_request_id().encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    parent_id = new_request_id()
    assert UUID4.fullmatch(child_id)
    assert child_id[:24] != parent_id[:24]  # a different random prefix


def test_request_ids_continue_the_sequence_after_their_prefix() -> None:
    ids = RequestIds("0a1b2c3d-4e5f-4a6b-8c7d-", 0xFFFFFFFFFFFF)
    assert ids.next() == "0a1b2c3d-4e5f-4a6b-8c7d-ffffffffffff"
    assert ids.next() == "0a1b2c3d-4e5f-4a6b-8c7d-000000000000"  # wraps, never grows
    ids.reseed("ffffffff-0000-4000-b000-", 10)
    assert ids.next() == "ffffffff-0000-4000-b000-00000000000a"
    for bad in ("0a1b2c3d-4e5f-4a6b-8c7d", "0a1b2c3d-4e5f-4a6b-cc7d-", "0A1B2C3D-4e5f-4a6b-8c7d-"):
        with pytest.raises(ValueError, match="prefix"):
            RequestIds(bad, 0)


def test_route_metrics_render_as_prometheus_text() -> None:
    metrics = Metrics()
    route = metrics.route("shop", "v1", "GET /items/{id}", "rest")
    route.count("GET", 200)
    route.count("GET", 200)
    route.count("GET", 404)
    route.latency.observe(0.003)
    route.latency.observe(2.0)
    text = metrics.render().decode()
    labels = 'api="shop",method="GET",route="GET /items/{id}",stage="v1"'
    assert f'pygw_requests_total{{{labels},status="200"}} 2.0' in text
    assert f'pygw_requests_total{{{labels},status="404"}} 1.0' in text
    rest = 'route="GET /items/{id}",stage="v1",style="rest"'
    # Buckets are cumulative: 3 ms falls in le=0.005 and above, 2 s only from le=2.5.
    assert f'pygw_latency_seconds_bucket{{api="shop",le="0.0025",{rest}}} 0.0' in text
    assert f'pygw_latency_seconds_bucket{{api="shop",le="0.005",{rest}}} 1.0' in text
    assert f'pygw_latency_seconds_bucket{{api="shop",le="2.5",{rest}}} 2.0' in text
    assert f'pygw_latency_seconds_count{{api="shop",{rest}}} 2.0' in text
    assert "# TYPE pygw_latency_seconds histogram" in text


def test_one_request_timing_call_fills_latency_integration_and_overhead() -> None:
    metrics = Metrics()
    route = metrics.route("shop", "v1", "GET /items/{id}", "rest")
    route.timings.observe(0.004, 0.001)  # 3 ms of the gateway's own
    route.timings.observe(0.001, 0.002)  # integration longer than the request: no negative cost
    text = metrics.render().decode()
    rest = 'api="shop",route="GET /items/{id}",stage="v1",style="rest"'
    assert f"pygw_latency_seconds_sum{{{rest}}} 0.005" in text
    assert f"pygw_integration_latency_seconds_sum{{{rest}}} 0.003" in text
    assert 'pygw_overhead_seconds_count{style="rest"} 2.0' in text
    assert 'pygw_overhead_seconds_sum{style="rest"} 0.003' in text
    # 0 and 3 ms: one in the lowest bucket, both by le=0.005.
    assert 'pygw_overhead_seconds_bucket{le="0.0005",style="rest"} 1.0' in text
    assert 'pygw_overhead_seconds_bucket{le="0.005",style="rest"} 2.0' in text


def test_cors_vary_joins_the_integrations_own() -> None:
    from aiohttp import web

    from pygw.context import RequestContext
    from pygw.request import Request

    ctx = RequestContext(
        request=Request.build("GET", "/"),
        request_id="r",
        path="/",
        params={},
        stage_variables={},
        client_ip="127.0.0.1",
        received_at=0.0,
        response_headers={"Vary": "Origin", "x-request-id": "r"},
    )
    upstream = web.Response(headers={"Vary": "Accept-Encoding"})
    ctx.apply_response_headers(upstream)
    assert upstream.headers["Vary"] == "Accept-Encoding, Origin"
    plain = web.Response()
    ctx.apply_response_headers(plain)
    assert plain.headers["Vary"] == "Origin"
    assert plain.headers["x-request-id"] == "r"
