"""bench/instructions.py: the requests it sends, how it reads callgrind's counts, and its report
(the counting itself needs valgrind; `make bench-instructions` runs it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from bench import instructions, scenarios

HIT = scenarios.Scenario(
    "pygw_rest_hit",
    "REST hit",
    scenarios.STYLES,
    "pygw_rest_full",
    path="/items/42?lang=en&n=hit",
    headers={"x-api-key": "k", "x-tenant": "t1"},
)
MISS = scenarios.Scenario(
    "pygw_rest_miss",
    "REST miss",
    scenarios.STYLES,
    "pygw_rest_full",
    path="/items/42?lang=en",
    lua="unique",
)


def test_totals_are_summed_over_every_dump(tmp_path: Path) -> None:
    first = tmp_path / "callgrind.41.1"
    first.write_bytes(b"# callgrind format\nevents: Ir\nsummary: 1500\nfn=x\n0 1500\n")
    last = tmp_path / "callgrind.41"
    last.write_bytes(b"# callgrind format\nevents: Ir\ntotals: 25\n")
    assert instructions.total_instructions([first, last]) == 1525
    broken = tmp_path / "callgrind.41.2"
    broken.write_bytes(b"not callgrind\n")
    with pytest.raises(ValueError, match="no summary line"):
        instructions.total_instructions([broken])


def test_requests_repeat_a_fixed_path_and_never_a_unique_one() -> None:
    hit = instructions.request_bytes(HIT, 3, "r1")
    assert hit == instructions.request_bytes(HIT, 4, "r1")
    assert hit.startswith(b"GET /items/42?lang=en&n=hit HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert b"\r\nx-api-key: k\r\nx-tenant: t1\r\n\r\n" in hit
    misses = {instructions.request_bytes(MISS, n, "r1") for n in range(100)}
    assert len(misses) == 100
    assert instructions.request_bytes(MISS, 7, "r1").startswith(b"GET /items/42?lang=en&n=r1-7 ")
    assert instructions.request_bytes(MISS, 7, "r1") != instructions.request_bytes(MISS, 7, "r2")


async def _serve(statuses: list[int]) -> tuple[web.AppRunner, int, list[str]]:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        return web.Response(status=statuses[len(seen) % len(statuses)], text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port, seen


async def test_every_request_is_sent_once_over_the_connections() -> None:
    runner, port, seen = await _serve([200])
    try:
        await instructions.send_requests(port, MISS, 50, 4, "r9")
    finally:
        await runner.cleanup()
    assert sorted(seen) == sorted(f"/items/42?lang=en&n=r9-{n}" for n in range(50))


async def test_an_answer_other_than_200_stops_the_count() -> None:
    runner, port, _ = await _serve([200, 200, 503])
    try:
        with pytest.raises(RuntimeError, match="503"):
            await asyncio.wait_for(instructions.send_requests(port, HIT, 20, 2, "r"), 30)
    finally:
        await runner.cleanup()


def test_report_gives_ratios_to_the_bare_route() -> None:
    counts = [
        instructions.Count("pygw_bare", "bare", 2000, 400_000_000),
        instructions.Count("pygw_rest_hit", "hit", 2000, 290_000_000),
    ]
    table = instructions.markdown(counts)
    assert "| bare | 200,000 | 1.00x |" in table
    assert "| hit | 145,000 | 0.72x |" in table
