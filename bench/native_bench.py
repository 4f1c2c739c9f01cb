"""The native core against aiohttp's router and the pure-Python reference models, in ns per call.

Run from the repository root after `make dev`:

    .venv/bin/python bench/native_bench.py [--quick] [--json PATH] [--repeats N]

Every measurement calls the object from Python in a plain `for` loop, so each figure includes the
loop's own cost (printed as "empty loop"); that cost is the same for every implementation, which
makes the printed ratios conservative. Scenarios are sampled round-robin (one sample of each, then
the next round) with the garbage collector off, and each figure is the median of the rounds.

Router scenarios use one table per size with `GET /{tenant}/svc{i}/items/{id}` routes: a hit asks
for a random route's path, a miss for a path that no route matches. aiohttp is timed through
`await UrlDispatcher.resolve(request)`, its public resolver (the one its server calls), on requests
built with `make_mocked_request` before timing; building a request and parsing its URL are not
counted for aiohttp, while pygw's figure includes reading and normalising the raw path.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.proxy_bench import machine

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    # The reference models live in tests/property/, which is not an installed package.
    sys.path.insert(0, str(ROOT))

FULL_SIZES = (10, 1_000, 100_000)
QUICK_SIZES = (10, 1_000, 2_000)
HOST = "bench.local"
REQUESTS_PER_TABLE = 1_024
# make_mocked_request takes milliseconds (it builds mocks): fewer distinct requests when quick.
QUICK_REQUESTS_PER_TABLE = 64
CACHE_ENTRIES = 1_000

# Sample runs n calls; returns elapsed nanoseconds.
Sampler = Callable[[int], int]


@dataclass
class Scenario:
    name: str
    group: str
    impl: str
    note: str
    run: Sampler
    iterations: int = 0
    samples_ns_per_call: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ns_per_call)


@dataclass(frozen=True)
class Ratio:
    name: str
    value: float
    target: str
    met: bool


# --------------------------------------------------------------------------------------------------
# Workloads


def route_key_path(i: int) -> str:
    return f"/{{tenant}}/svc{i}/items/{{id}}"


def hit_paths(size: int, rng: random.Random, count: int) -> list[str]:
    return [
        f"/t{rng.randrange(1000)}/svc{rng.randrange(size)}/items/{rng.randrange(10**6)}"
        for _ in range(count)
    ]


def miss_paths(size: int, rng: random.Random, count: int) -> list[str]:
    # Same depth and a valid first segment, so every route with a parameter there is tried.
    return [
        f"/t{rng.randrange(1000)}/svc{rng.randrange(size)}/orders/{rng.randrange(10**6)}"
        for _ in range(count)
    ]


def cycle(items: Sequence[Any], n: int) -> list[Any]:
    """`n` items taken round-robin: the loop then iterates a list, the cheapest loop Python has."""
    reps = n // len(items) + 1
    return (list(items) * reps)[:n]


def sync_sampler(call: Callable[..., object], args: Sequence[tuple[Any, ...]]) -> Sampler:
    def run(n: int) -> int:
        work = cycle(args, n)
        start = time.perf_counter_ns()
        for a in work:
            call(*a)
        return time.perf_counter_ns() - start

    return run


def empty_sampler(args: Sequence[tuple[Any, ...]]) -> Sampler:
    def run(n: int) -> int:
        work = cycle(args, n)
        start = time.perf_counter_ns()
        for _a in work:
            pass
        return time.perf_counter_ns() - start

    return run


def async_sampler(
    loop: asyncio.AbstractEventLoop, call: Callable[[Any], Awaitable[object]], args: Sequence[Any]
) -> Sampler:
    async def timed(work: list[Any]) -> int:
        start = time.perf_counter_ns()
        for a in work:
            await call(a)
        return time.perf_counter_ns() - start

    def run(n: int) -> int:
        return loop.run_until_complete(timed(cycle(args, n)))

    return run


def router_scenarios(
    sizes: Sequence[int], loop: asyncio.AbstractEventLoop, rng: random.Random, count: int
) -> list[Scenario]:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from pygw._native import Router
    from tests.property.reference_router import ReferenceRouter

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response()

    out: list[Scenario] = []
    for size in sizes:
        rows: list[tuple[str | None, str, str, int]] = [
            (None, "", f"GET {route_key_path(i)}", i) for i in range(size)
        ]
        native = Router(rows)
        reference = ReferenceRouter(rows)
        app = web.Application()
        for i in range(size):
            app.router.add_route("GET", route_key_path(i), handler)
        app.router.freeze()
        for kind, paths in (
            ("hit", hit_paths(size, rng, count)),
            ("miss", miss_paths(size, rng, count)),
        ):
            args = [(HOST, "GET", p) for p in paths]
            requests = [make_mocked_request("GET", p, headers={"Host": HOST}) for p in paths]
            expect_hit = kind == "hit"
            # A benchmark of a lookup that answers wrongly would measure nothing useful.
            for (host, method, path), request in zip(args[:32], requests[:32], strict=True):
                found_native = native.lookup(host, method, path)
                found_aiohttp = loop.run_until_complete(app.router.resolve(request))
                assert (found_native is not None) == expect_hit, (kind, path, found_native)
                assert (found_aiohttp.http_exception is None) == expect_hit, (kind, path)
            for host, method, path in args[:4]:
                assert reference.lookup(host, method, path) == native.lookup(host, method, path)
            group = f"router {size} routes {kind}"
            out += [
                Scenario(
                    f"router.{kind}.{size}.pygw",
                    group,
                    "pygw._native.Router.lookup",
                    "lookup(host, method, raw path)",
                    sync_sampler(native.lookup, args),
                ),
                Scenario(
                    f"router.{kind}.{size}.aiohttp",
                    group,
                    "aiohttp UrlDispatcher",
                    "await router.resolve(request); request built before timing",
                    async_sampler(loop, app.router.resolve, requests),
                ),
                Scenario(
                    f"router.{kind}.{size}.reference",
                    group,
                    "reference_router.ReferenceRouter",
                    "pure-Python linear scan",
                    sync_sampler(reference.lookup, args),
                ),
            ]
    return out


def throttle_scenarios() -> list[Scenario]:
    from pygw._native import Throttle
    from tests.property.reference_throttle import ReferenceThrottle

    now, unix_now = 1_000.0, 1_750_000_000.0
    # Explicit times for both sides, so neither pays for reading a clock. The burst is large
    # enough that every call in the run is granted: the common path.
    rate, burst = 1e9, 2**32 - 1
    out: list[Scenario] = []
    for label, buckets, with_quota in (("1 bucket", 1, False), ("3 buckets + quota", 3, True)):
        native, reference = Throttle(), ReferenceThrottle()
        ids = [native.add_bucket(rate, burst) for _ in range(buckets)]
        ref_ids = [reference.add_bucket(rate, burst) for _ in range(buckets)]
        quota = native.add_quota(2**62, "MONTH") if with_quota else None
        ref_quota = reference.add_quota(2**62, "MONTH") if with_quota else None
        assert native.acquire(ids, quota, now, unix_now)[0] == 0
        assert reference.acquire(ref_ids, ref_quota, now, unix_now)[0] == 0
        key = "throttle.acquire." + ("1" if buckets == 1 else "3q")
        group = f"throttle acquire, {label}"
        out += [
            Scenario(
                f"{key}.pygw",
                group,
                "pygw._native.Throttle.acquire",
                "acquire(ids, quota, now, unix_now)",
                sync_sampler(native.acquire, [(ids, quota, now, unix_now)]),
            ),
            Scenario(
                f"{key}.reference",
                group,
                "reference_throttle.ReferenceThrottle",
                "pure-Python buckets, datetime quota periods",
                sync_sampler(reference.acquire, [(ref_ids, ref_quota, now, unix_now)]),
            ),
        ]
    return out


def cache_scenarios(rng: random.Random) -> list[Scenario]:
    from pygw._native import ResponseCache
    from tests.property.reference_cache import ReferenceCache

    now = 1_000.0
    native, reference = ResponseCache(64 << 20), ReferenceCache(64 << 20)
    keys = [f"GET bench.local /shop/v1/items/{i}?lang=en" for i in range(CACHE_ENTRIES)]
    for k in keys:
        value = (200, [("content-type", "application/json")], b'{"id": 1}')
        assert native.put(k, value, 64, 3600.0, now)
        assert reference.put(k, value, 64, 3600.0, now)
    order = keys[:]
    rng.shuffle(order)
    args = [(k, now) for k in order]
    assert native.get(keys[0], now) is not None and reference.get(keys[0], now) is not None
    group = f"cache hit, {CACHE_ENTRIES} entries"
    return [
        Scenario(
            "cache.hit.pygw",
            group,
            "pygw._native.ResponseCache.get",
            "get(key, now)",
            sync_sampler(native.get, args),
        ),
        Scenario(
            "cache.hit.reference",
            group,
            "reference_cache.ReferenceCache",
            "OrderedDict + move_to_end",
            sync_sampler(reference.get, args),
        ),
    ]


# --------------------------------------------------------------------------------------------------
# Measurement


def calibrate(scenario: Scenario, sample_s: float) -> None:
    """Picks the call count that fills about `sample_s` per sample (at least one call)."""
    n = 1
    while True:
        elapsed = scenario.run(n)
        if elapsed >= sample_s * 1e9 / 10 or n >= 1 << 24:
            break
        n *= 4
    scenario.iterations = max(1, int(n * sample_s * 1e9 / max(elapsed, 1)))


def measure(scenarios: Sequence[Scenario], repeats: int, sample_s: float) -> None:
    for s in scenarios:
        calibrate(s, sample_s)
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for s in scenarios:
                s.samples_ns_per_call.append(s.run(s.iterations) / s.iterations)
    finally:
        gc.enable()


def ratios(by_name: dict[str, float], sizes: Sequence[int]) -> list[Ratio]:
    mid, small, large = 1_000, sizes[0], sizes[-1]
    out: list[Ratio] = []
    for kind in ("hit", "miss"):
        speedup = by_name[f"router.{kind}.{mid}.aiohttp"] / by_name[f"router.{kind}.{mid}.pygw"]
        out.append(
            Ratio(
                f"router {kind}, {mid} routes: aiohttp resolve / pygw lookup",
                speedup,
                ">= 5x" if kind == "hit" else "(info)",
                speedup >= 5 if kind == "hit" else True,
            )
        )
    for kind in ("hit", "miss"):
        growth = by_name[f"router.{kind}.{large}.pygw"] / by_name[f"router.{kind}.{small}.pygw"]
        out.append(
            Ratio(
                f"router {kind}: pygw at {large} routes / pygw at {small} routes",
                growth,
                "<= 1.5x",
                growth <= 1.5,
            )
        )
    for key, label in (
        ("throttle.acquire.1", "throttle acquire, 1 bucket"),
        ("throttle.acquire.3q", "throttle acquire, 3 buckets + quota"),
        ("cache.hit", "cache hit"),
    ):
        speedup = by_name[f"{key}.reference"] / by_name[f"{key}.pygw"]
        out.append(Ratio(f"{label}: reference / pygw", speedup, ">= 1x", speedup >= 1))
    return out


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:,.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:,.1f} µs"
    return f"{ns:,.0f} ns"


def markdown(scenarios: Sequence[Scenario], found: Sequence[Ratio], empty_ns: float) -> str:
    lines = [
        "| scenario | implementation | ns/call (median) | min | max | calls/sample | how |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for s in scenarios:
        lines.append(
            f"| {s.group} | {s.impl} | {fmt_ns(s.median)} | {fmt_ns(min(s.samples_ns_per_call))}"
            f" | {fmt_ns(max(s.samples_ns_per_call))} | {s.iterations:,} | {s.note} |"
        )
    lines += [
        "",
        f"Empty loop (included in every figure above): {empty_ns:.1f} ns per iteration.",
        "",
        "| ratio | value | target | met |",
        "|---|---:|---|---|",
    ]
    for r in found:
        lines.append(f"| {r.name} | {r.value:,.2f}x | {r.target} | {'yes' if r.met else 'NO'} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    parser.add_argument("--json", metavar="PATH", help="write raw results as JSON")
    parser.add_argument("--repeats", type=int, help="interleaved rounds (default 7; quick: 3)")
    parser.add_argument(
        "--sample-ms", type=float, help="target time per sample (default 100; quick: 2)"
    )
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    repeats = args.repeats or (3 if args.quick else 7)
    sample_s = (args.sample_ms or (2.0 if args.quick else 100.0)) / 1000
    rng = random.Random(args.seed)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        built = time.perf_counter()
        count = QUICK_REQUESTS_PER_TABLE if args.quick else REQUESTS_PER_TABLE
        scenarios = [
            *router_scenarios(sizes, loop, rng, count),
            *throttle_scenarios(),
            *cache_scenarios(rng),
        ]
        empty = Scenario("loop.empty", "empty loop", "-", "for-loop overhead", empty_sampler([()]))
        print(
            f"built {len(scenarios)} scenarios in {time.perf_counter() - built:.1f} s; "
            f"measuring {repeats} interleaved rounds of ~{sample_s * 1000:.0f} ms samples",
            file=sys.stderr,
        )
        started = time.perf_counter()
        measure([*scenarios, empty], repeats, sample_s)
        elapsed = time.perf_counter() - started
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    by_name = {s.name: s.median for s in scenarios}
    found = ratios(by_name, sizes)
    print(markdown(scenarios, found, empty.median))
    print(f"\n{repeats} rounds, medians; measured in {elapsed:.1f} s.")
    if args.json:
        report = {
            "meta": {
                **machine(),
                "quick": bool(args.quick),
                "sizes": list(sizes),
                "repeats": repeats,
                "sample_ms": sample_s * 1000,
                "seed": args.seed,
                "requests_per_table": count,
                "empty_loop_ns": empty.median,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            "results": [
                {
                    **{k: v for k, v in asdict(s).items() if k != "run"},
                    "ns_per_call": s.median,
                }
                for s in scenarios
            ],
            "ratios": [asdict(r) for r in found],
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
