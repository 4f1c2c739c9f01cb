"""Resource policy, CORS, API key and throttle stages, each against a fake RequestContext."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import itertools
import random
import threading
from collections.abc import Callable, Coroutine, Sequence
from types import CoroutineType
from typing import Any, cast

import orjson
import pytest
from aiohttp import web

from pygw._native import (
    GRANTED,
    QUOTA_EXCEEDED,
    THROTTLED,
    Histogram,
    Throttle,
    TimedChecks,
    monotonic,
)
from pygw.config.model import ApiConfig, CorsConfig
from pygw.context import RequestContext
from pygw.dispatch import error_response
from pygw.errors import ErrorType, GatewayError, Style
from pygw.pipeline import Pipeline, TimedPipeline
from pygw.request import Request
from pygw.response import Response
from pygw.stages.api_key import (
    ApiKeyStage,
    build_api_keys,
)
from pygw.stages.cors import (
    CorsPolicy,
    CorsStage,
    build_cors_stage,
    build_preflight_answer,
)
from pygw.stages.resource_policy import (
    CidrSet,
    ResourcePolicyStage,
    build_resource_policy_stage,
    peer_address,
)
from pygw.stages.throttle import KeyedThrottleStage, ThrottleStage, build_throttle_stage

MOCK = {"integration": {"type": "mock"}}
SHOP = "https://shop.example"


def make_ctx(
    method: str = "GET",
    path: str = "/items",
    headers: dict[str, str] | None = None,
    client_ip: str = "127.0.0.1",
    request: web.BaseRequest | None = None,
) -> RequestContext:
    if request is None:
        request = Request.build(method, path, headers=headers or {})
    return RequestContext(
        request=request,
        request_id="rid-1",
        path=path,
        params={},
        stage_variables={},
        client_ip=client_ip,
        received_at=0.0,
        response_headers={"x-request-id": "rid-1"},
    )


def api(**fields: Any) -> ApiConfig:
    fields.setdefault("name", "shop")
    fields.setdefault("routes", {"GET /items": MOCK})
    return ApiConfig.model_validate(fields)


async def refused(stage: Callable[[RequestContext], Any], ctx: RequestContext) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await stage(ctx)
    return info.value


# --------------------------------------------------------------------------------------------------
# Resource policy


def policy(allow: Sequence[str] = (), deny: Sequence[str] = ()) -> ResourcePolicyStage:
    stage = build_resource_policy_stage(
        api(resource_policy={"allow_cidrs": list(allow), "deny_cidrs": list(deny)})
    )
    assert stage is not None
    return stage


async def test_policy_allow_list_admits_only_its_networks() -> None:
    stage = policy(allow=["10.0.0.0/8", "192.168.1.7/32"])
    assert await stage(make_ctx(client_ip="10.200.3.4")) is None
    assert await stage(make_ctx(client_ip="192.168.1.7")) is None
    failure = await refused(stage, make_ctx(client_ip="192.168.1.8"))
    assert failure.error is ErrorType.ACCESS_DENIED
    failure = await refused(stage, make_ctx(client_ip="11.0.0.1"))
    assert failure.error is ErrorType.ACCESS_DENIED


async def test_policy_deny_wins_over_allow() -> None:
    stage = policy(allow=["10.0.0.0/8"], deny=["10.1.0.0/16"])
    assert await stage(make_ctx(client_ip="10.2.0.1")) is None
    assert (await refused(stage, make_ctx(client_ip="10.1.2.3"))).error is ErrorType.ACCESS_DENIED


async def test_policy_deny_only_admits_everyone_else() -> None:
    stage = policy(deny=["203.0.113.0/24", "2001:db8:bad::/48"])
    assert await stage(make_ctx(client_ip="198.51.100.1")) is None
    assert await stage(make_ctx(client_ip="2001:db8:600d::1")) is None
    await refused(stage, make_ctx(client_ip="203.0.113.99"))
    await refused(stage, make_ctx(client_ip="2001:db8:bad:1::2"))


async def test_policy_ipv6_and_ipv4_mapped_peers() -> None:
    stage = policy(allow=["2001:db8::/32", "127.0.0.0/8"])
    assert await stage(make_ctx(client_ip="2001:db8:1::5")) is None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the IPv4 rule covers them.
    assert await stage(make_ctx(client_ip="::ffff:127.0.0.1")) is None
    await refused(stage, make_ctx(client_ip="::1"))
    await refused(stage, make_ctx(client_ip="::ffff:10.0.0.1"))
    mapped_rule = policy(deny=["::ffff:10.0.0.0/104"])
    await refused(mapped_rule, make_ctx(client_ip="10.9.9.9"))
    assert await mapped_rule(make_ctx(client_ip="11.0.0.1")) is None


async def test_policy_refuses_a_peer_that_is_not_an_ip() -> None:
    stage = policy(deny=["203.0.113.0/24"])
    await refused(stage, make_ctx(client_ip=""))
    await refused(stage, make_ctx(client_ip="not-an-ip"))
    assert peer_address("") is None
    assert peer_address("fe80::1%eth0") is not None


def test_policy_stage_only_when_configured() -> None:
    assert build_resource_policy_stage(api()) is None
    assert build_resource_policy_stage(api(resource_policy={})) is None
    rest = api(type="rest", resource_policy={"allow_cidrs": ["10.0.0.0/8"]})
    assert build_resource_policy_stage(rest) is not None


def test_policy_host_bits_in_config_are_ignored() -> None:
    stage = policy(allow=["10.1.2.3/8"])
    assert stage.admits("10.250.0.1")
    assert not stage.admits("11.0.0.1")


def test_cidr_set_matches_a_linear_scan() -> None:
    rng = random.Random(7)
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for _ in range(200):
        if rng.random() < 0.5:
            networks.append(
                ipaddress.IPv4Network((rng.getrandbits(32), rng.randint(0, 32)), strict=False)
            )
        else:
            networks.append(
                ipaddress.IPv6Network((rng.getrandbits(128), rng.randint(0, 128)), strict=False)
            )
    cidrs = CidrSet(networks)
    for _ in range(3000):
        address: ipaddress.IPv4Address | ipaddress.IPv6Address
        if rng.random() < 0.5:
            address = ipaddress.IPv4Address(rng.getrandbits(32))
        else:
            address = ipaddress.IPv6Address(rng.getrandbits(128))
        # Random addresses inside listed networks too, or nearly every probe would miss.
        if rng.random() < 0.5:
            net = rng.choice(networks)
            host_bits = net.max_prefixlen - net.prefixlen
            offset = rng.getrandbits(host_bits) if host_bits else 0
            address = ipaddress.ip_address(int(net.network_address) + offset)
        expected = any(address.version == net.version and address in net for net in networks)
        assert (address in cidrs) == expected, address
    assert not CidrSet([])


# --------------------------------------------------------------------------------------------------
# CORS


def cors(**fields: Any) -> CorsConfig:
    return CorsConfig.model_validate(fields)


def preflight_request(
    origin: str = SHOP, method: str = "POST", headers: str | None = None
) -> web.Request:
    sent = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        sent["Access-Control-Request-Headers"] = headers
    return Request.build("OPTIONS", "/items", headers=sent)


def allow_headers(response: web.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("Access-Control-")}


SHOP_CORS = {
    "allow_origins": [SHOP],
    "allow_methods": ["GET", "POST"],
    "allow_headers": ["Authorization", "Content-Type"],
    "expose_headers": ["X-Total"],
    "max_age": 600,
}


def test_preflight_allowed_gets_every_allow_header() -> None:
    answer = build_preflight_answer(cors(**SHOP_CORS))
    response = answer(preflight_request(headers="content-type, Authorization"))
    assert response is not None
    assert response.status == 204
    assert allow_headers(response) == {
        "Access-Control-Allow-Origin": SHOP,
        "Access-Control-Allow-Methods": "GET, POST",
        "Access-Control-Allow-Headers": "authorization, content-type",
        "Access-Control-Max-Age": "600",
    }
    assert response.headers["Vary"] == "Origin"
    assert not response.body


@pytest.mark.parametrize(
    ("origin", "method", "headers"),
    [
        ("https://evil.example", "POST", None),
        (SHOP, "DELETE", None),
        (SHOP, "POST", "x-secret"),
        (SHOP, "POST", "content-type, x-secret"),
        ("null", "GET", None),
    ],
)
def test_preflight_refused_gets_no_allow_headers(
    origin: str, method: str, headers: str | None
) -> None:
    answer = build_preflight_answer(cors(**SHOP_CORS))
    response = answer(preflight_request(origin, method, headers))
    assert response is not None
    assert response.status == 204
    assert allow_headers(response) == {}
    assert response.headers["Vary"] == "Origin"


def test_not_a_preflight_is_left_alone() -> None:
    answer = build_preflight_answer(cors(**SHOP_CORS))
    assert answer(Request.build("GET", "/items", headers={"Origin": SHOP})) is None
    assert answer(Request.build("OPTIONS", "/items", headers={"Origin": SHOP})) is None
    no_origin = Request.build("OPTIONS", "/items", headers={"Access-Control-Request-Method": "GET"})
    assert answer(no_origin) is None


def test_origin_match_ignores_case_and_echoes_what_was_sent() -> None:
    answer = build_preflight_answer(cors(**SHOP_CORS))
    response = answer(preflight_request(origin="https://SHOP.example", method="get"))
    assert response is not None
    assert response.headers["Access-Control-Allow-Origin"] == "https://SHOP.example"


def test_preflight_wildcards_without_credentials() -> None:
    answer = build_preflight_answer(cors(allow_origins=["*"], allow_headers=["*"]))
    response = answer(preflight_request(origin="https://any.example", headers="Authorization"))
    assert response is not None
    headers = allow_headers(response)
    assert headers["Access-Control-Allow-Origin"] == "*"
    # `*` in Allow-Headers never covers Authorization: requested headers are echoed.
    assert headers["Access-Control-Allow-Headers"] == "authorization"
    assert headers["Access-Control-Allow-Methods"] == "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
    assert "Access-Control-Max-Age" not in headers
    assert "Access-Control-Allow-Credentials" not in headers
    assert response.headers["Vary"] == "Access-Control-Request-Headers"


def test_preflight_with_credentials_never_sends_a_wildcard() -> None:
    answer = build_preflight_answer(
        cors(allow_origins=[SHOP], allow_headers=["*"], allow_credentials=True)
    )
    response = answer(preflight_request(method="PATCH", headers="x-a,x-b"))
    assert response is not None
    headers = allow_headers(response)
    assert headers == {
        "Access-Control-Allow-Origin": SHOP,
        "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS",
        "Access-Control-Allow-Headers": "x-a, x-b",
        "Access-Control-Allow-Credentials": "true",
    }
    assert "*" not in "".join(headers.values())
    assert response.headers["Vary"] == "Origin, Access-Control-Request-Headers"


async def test_stage_adds_headers_for_an_allowed_origin() -> None:
    stage = build_cors_stage(api(cors={**SHOP_CORS, "allow_credentials": True}))
    assert stage is not None
    ctx = make_ctx(headers={"Origin": SHOP})
    assert await stage(ctx) is None
    assert ctx.response_headers == {
        "x-request-id": "rid-1",
        "Vary": "Origin",
        "Access-Control-Allow-Origin": SHOP,
        "Access-Control-Expose-Headers": "x-total",
        "Access-Control-Allow-Credentials": "true",
    }


async def test_stage_other_origin_or_none_gets_only_vary() -> None:
    stage = CorsStage(cors(**SHOP_CORS))
    for headers in ({"Origin": "https://evil.example"}, {}):
        ctx = make_ctx(headers=headers)
        assert await stage(ctx) is None
        assert ctx.response_headers == {"x-request-id": "rid-1", "Vary": "Origin"}


async def test_stage_wildcard_origin_answers_the_same_to_everyone() -> None:
    stage = CorsStage(cors(allow_origins=["*"]))
    for headers in ({"Origin": "https://a.example"}, {}):
        ctx = make_ctx(headers=headers)
        assert await stage(ctx) is None
        assert ctx.response_headers == {"x-request-id": "rid-1", "Access-Control-Allow-Origin": "*"}


async def test_stage_answers_a_preflight_that_reaches_the_route() -> None:
    stage = CorsStage(cors(**SHOP_CORS))
    ctx = make_ctx("OPTIONS", headers={"Origin": SHOP, "Access-Control-Request-Method": "GET"})
    answer = await stage(ctx)
    assert answer is not None
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == SHOP
    assert answer.headers["x-request-id"] == "rid-1"


async def test_shared_header_dicts_are_not_changed_by_requests() -> None:
    policy = CorsPolicy(cors(**SHOP_CORS))
    refused_headers = dict(policy.response_headers(None))
    allowed = policy.response_headers(SHOP)
    allowed["Extra"] = "x"
    assert policy.response_headers(None) == refused_headers
    assert "Extra" not in policy.response_headers(SHOP)


def test_cors_stage_only_when_configured_in_either_style() -> None:
    assert build_cors_stage(api()) is None
    assert build_cors_stage(api(type="rest", cors={"allow_origins": [SHOP]})) is not None
    assert build_cors_stage(api(cors={"allow_origins": [SHOP]})) is not None


# --------------------------------------------------------------------------------------------------
# API keys


ALICE = "alice-secret-key-1"
BOB = "bob-secret-key-2"
CAROL = "carol-secret-key-3"

KEYED_API: dict[str, Any] = {
    "type": "rest",
    "api_keys": [
        {"id": "alice", "value": ALICE},
        {"id": "bob", "value_sha256": hashlib.sha256(BOB.encode()).hexdigest()},
        {"id": "carol", "value": CAROL, "enabled": False},
        {"id": "dave", "value": "dave-key-without-plan"},
    ],
    "usage_plans": [
        {
            "name": "gold",
            "keys": ["alice", "bob", "carol"],
            "throttle": {"rate": 0, "burst": 2},
            "quota": {"limit": 100, "period": "DAY"},
        }
    ],
    "routes": {
        "GET /items": {**MOCK, "api_key_required": True},
        "GET /open": MOCK,
    },
}


def key_stage() -> ApiKeyStage:
    keys = build_api_keys(api(**KEYED_API), Throttle())
    assert keys is not None
    return keys.stage


async def test_api_key_plain_and_digest_keys_identify_their_id() -> None:
    stage = key_stage()
    for value, key_id in ((ALICE, "alice"), (BOB, "bob")):
        ctx = make_ctx(headers={"x-api-key": value})
        assert await stage(ctx) is None
        assert ctx.api_key_id == key_id
    # Header names are case-insensitive.
    ctx = make_ctx(headers={"X-API-Key": ALICE})
    assert await stage(ctx) is None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": ""},
        {"x-api-key": "guess"},
        {"x-api-key": CAROL},
        {"x-api-key": ALICE[:-1]},
    ],
)
async def test_api_key_missing_unknown_or_disabled_is_forbidden(headers: dict[str, str]) -> None:
    ctx = make_ctx(headers=headers)
    failure = await refused(key_stage(), ctx)
    assert failure.error is ErrorType.INVALID_API_KEY
    assert ctx.api_key_id is None
    for value in (ALICE, BOB, CAROL):
        assert value not in str(failure)
    response = error_response(failure.error, Style.REST, "rid", failure.detail, failure.headers)
    assert response.status == 403
    assert orjson.loads(cast(bytes, response.body)) == {"message": "Forbidden"}
    assert response.headers["x-amzn-ErrorType"] == "ForbiddenException"


def test_api_key_remembered_values_are_only_known_keys() -> None:
    stage = key_stage()
    for _ in range(3):
        assert stage.identify(ALICE) == "alice"
    # Near misses after a remembered key are still refused, and unknown values are not kept.
    for guess in (
        ALICE[:-1],
        ALICE + "x",
        ALICE.upper(),
        CAROL,
        *(f"guess-{i}" for i in range(500)),
    ):
        assert stage.identify(guess) is None
    assert stage.identify(BOB) == "bob"
    assert len(stage._verified) == 2


async def test_pipeline_calls_stages_that_never_wait_directly() -> None:
    """A stage's `check` runs without a coroutine; its refusal and its answer end the pipeline
    exactly as the awaited form does, timed or not."""
    calls: list[str] = []

    class Passes:
        def check(self, ctx: RequestContext) -> Response | None:
            calls.append("check")
            return None

        async def __call__(self, ctx: RequestContext) -> Response | None:
            raise AssertionError("the pipeline should have called check")

    class Answers:
        async def __call__(self, ctx: RequestContext) -> Response | None:
            calls.append("awaited")
            return Response(status=204)

    class Integration:
        async def __call__(self, ctx: RequestContext) -> Response:
            calls.append("integration")
            return Response(status=200)

        async def close(self) -> None:
            return None

    plain = Pipeline((Passes(), Passes()), Integration())
    assert (await plain.run(make_ctx())).status == 200
    assert calls == ["check", "check", "integration"]
    calls.clear()
    timers = (_LapTimer(), _LapTimer(), _LapTimer())
    stages = (Passes(), Answers(), Passes())
    timed = TimedPipeline(stages, Integration(), tuple(zip(stages, timers, strict=True)))
    assert (await timed.run(make_ctx())).status == 204
    assert calls == ["check", "awaited"]
    assert [len(t.seen) for t in timers] == [1, 1, 0]
    calls.clear()
    refusing = Pipeline((key_stage(), Passes()), Integration())
    with pytest.raises(GatewayError):
        await refusing.run(make_ctx(headers={"x-api-key": "guess"}))
    assert calls == []
    # Without a waiting stage the dispatcher runs the checks itself and then the integration.
    assert (plain.waits, timed.waits, refusing.waits) == (False, True, False)
    assert plain.check(make_ctx()) is None
    assert calls == ["check", "check"]
    calls.clear()
    only_checks = (Passes(), Passes())
    timers = (_LapTimer(), _LapTimer())
    timed_checks = TimedPipeline(
        only_checks, Integration(), tuple(zip(only_checks, timers, strict=True))
    )
    assert not timed_checks.waits
    assert timed_checks.check(make_ctx()) is None
    assert calls == ["check", "check"]
    assert [len(t.seen) for t in timers] == [1, 1]
    with pytest.raises(GatewayError):
        refusing.check(make_ctx(headers={"x-api-key": "guess"}))


def test_native_timed_checks_time_every_stage_that_ran_and_stop_at_an_answer() -> None:
    """With native histograms as timers, a pipeline that never waits runs its checks in native
    code: each stage that ran is timed once, whether it passed, answered or refused, and the
    ones after an answer or a refusal neither run nor count."""
    calls: list[str] = []

    def passes(ctx: RequestContext) -> Response | None:
        calls.append("passes")
        return None

    def answers(ctx: RequestContext) -> Response | None:
        calls.append("answers")
        return Response(status=204)

    class Stage:
        def __init__(self, check: Callable[[RequestContext], Response | None]) -> None:
            self.check = check

        async def __call__(self, ctx: RequestContext) -> Response | None:
            raise AssertionError("the pipeline should have called check")

    class Integration:
        async def __call__(self, ctx: RequestContext) -> Response:
            raise AssertionError("not reached")

        async def close(self) -> None:
            return None

    def timers(count: int) -> list[Histogram]:
        return [Histogram([0.001, float("inf")], 0.0) for _ in range(count)]

    stages = (Stage(passes), Stage(answers), Stage(passes))
    histograms = timers(3)
    pipeline = TimedPipeline(stages, Integration(), tuple(zip(stages, histograms, strict=True)))
    assert type(pipeline.check.__self__) is TimedChecks  # type: ignore[attr-defined]
    answer = pipeline.check(make_ctx())
    assert answer is not None and answer.status == 204
    assert calls == ["passes", "answers"]
    assert [sum(h.counts) for h in histograms] == [1, 1, 0]

    refusing = (key_stage(), Stage(passes))
    histograms = timers(2)
    pipeline = TimedPipeline(refusing, Integration(), tuple(zip(refusing, histograms, strict=True)))
    with pytest.raises(GatewayError):
        pipeline.check(make_ctx(headers={"x-api-key": "guess"}))
    assert [sum(h.counts) for h in histograms] == [1, 0]
    assert pipeline.check(make_ctx(headers={"x-api-key": ALICE})) is None
    assert [sum(h.counts) for h in histograms] == [2, 1]

    with pytest.raises(ValueError, match="timers"):
        TimedChecks([passes], [], CoroutineType, lambda *_: None)


class _LapTimer:
    """A stage timer that keeps each time it records."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def lap(self, started: float) -> float:
        now = monotonic()
        self.seen.append(now - started)
        return now


class _SometimesWaits:
    """A stage that answers at once for a request it knows, and otherwise waits (as a JWT
    authorizer does for a token it has not verified yet), then refuses or lets it on."""

    def __init__(self, calls: list[str], known: str, pause_s: float = 0.0) -> None:
        self.calls = calls
        self.known = known
        self.pause_s = pause_s

    def check(self, ctx: RequestContext) -> Coroutine[Any, Any, Response | None] | None:
        if ctx.request.headers.get("x-who") == self.known:
            self.calls.append("known")
            return None
        return self._slow(ctx)

    async def _slow(self, ctx: RequestContext) -> Response | None:
        self.calls.append("waited")
        await asyncio.sleep(self.pause_s)
        if ctx.request.headers.get("x-who") == "stranger":
            raise GatewayError(ErrorType.UNAUTHORIZED)
        return None

    async def __call__(self, ctx: RequestContext) -> Response | None:
        raise AssertionError("the pipeline should have called check")


class _Noting:
    def __init__(self, calls: list[str], name: str) -> None:
        self.calls = calls
        self.name = name

    def check(self, ctx: RequestContext) -> Response | None:
        self.calls.append(self.name)
        return None

    async def __call__(self, ctx: RequestContext) -> Response | None:
        raise AssertionError("the pipeline should have called check")


class _Answers200:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    async def __call__(self, ctx: RequestContext) -> Response:
        self.calls.append("integration")
        return Response(status=200)

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("timing", ["native", "python", "none"])
async def test_a_stage_that_waits_only_sometimes_is_a_check_and_hands_back_the_rest(
    timing: str,
) -> None:
    """A pipeline whose only waiting stage waits only sometimes does not wait as a whole: a
    request the stage knows goes through the plain checks (the dispatcher then calls the
    integration itself), and any other gets back one coroutine that finishes the stage, runs
    the stages after it and the integration. Each stage that ran is timed once, the waiting
    one for as long as it waited."""

    calls: list[str] = []
    stages = (
        _Noting(calls, "before"),
        _SometimesWaits(calls, "friend", pause_s=0.02),
        _Noting(calls, "after"),
    )
    timers: list[Any] = []
    pipeline: Pipeline
    if timing == "none":
        pipeline = Pipeline(stages, _Answers200(calls))
    else:
        timers = (
            [Histogram([0.01, float("inf")], 0.0) for _ in stages]
            if timing == "native"
            else [_LapTimer() for _ in stages]
        )
        pipeline = TimedPipeline(
            stages, _Answers200(calls), tuple(zip(stages, timers, strict=True))
        )
    if timing == "native":
        assert type(pipeline.check.__self__) is TimedChecks  # type: ignore[attr-defined]

    def counts() -> list[int]:
        if timing == "native":
            return [sum(h.counts) for h in timers]
        return [len(t.seen) for t in timers]

    assert not pipeline.waits
    assert pipeline.check is not None
    assert pipeline.check(make_ctx(headers={"x-who": "friend"})) is None
    assert calls == ["before", "known", "after"]
    if timers:
        assert counts() == [1, 1, 1]

    calls.clear()
    rest = pipeline.check(make_ctx(headers={"x-who": "someone"}))
    assert isinstance(rest, CoroutineType)
    assert calls == ["before"]  # nothing after the waiting stage ran yet
    answer = await rest
    assert answer.status == 200
    assert calls == ["before", "waited", "after", "integration"]
    if timers:
        assert counts() == [2, 2, 2]
    if timing == "native":
        # The waiting stage's 20 ms went into its own histogram (above the 10 ms bucket).
        assert timers[1].counts[1] == 1 and timers[0].counts[1] == 0
    elif timing == "python":
        assert timers[1].seen[-1] >= 0.02 > timers[0].seen[-1]

    calls.clear()
    refused = pipeline.check(make_ctx(headers={"x-who": "stranger"}))
    assert isinstance(refused, CoroutineType)
    with pytest.raises(GatewayError):
        await refused
    assert calls == ["before", "waited"]
    if timers:
        assert counts() == [3, 3, 2]

    # Awaited as a whole (as a WebSocket $connect is), the waiting stage is awaited in place.
    calls.clear()
    assert (await pipeline.run(make_ctx(headers={"x-who": "someone"}))).status == 200
    assert calls == ["before", "waited", "after", "integration"]


def test_api_key_bytes_that_are_not_utf8_do_not_break_hashing() -> None:
    assert key_stage().identify("caf\udce9") is None


async def test_api_key_is_matched_on_the_bytes_sent() -> None:
    """The header is hashed as sent: a key configured by the digest of bytes that are not UTF-8
    identifies a request carrying those bytes, and a value that differs by one byte does not."""
    sent = b"caf\xe9-key-0123456789"
    keys = build_api_keys(
        api(
            type="rest",
            api_keys=[{"id": "raw", "value_sha256": hashlib.sha256(sent).hexdigest()}],
            api_keys_need_usage_plan=False,
        ),
        Throttle(),
    )
    assert keys is not None
    for _ in range(2):  # the second time from the remembered values
        request = Request.build("GET", "/items")
        request.replace_headers(((b"Host", b"h"), (b"X-Api-Key", sent)))
        ctx = make_ctx(request=cast(Any, request))
        assert await keys.stage(ctx) is None
        assert ctx.api_key_id == "raw"
    request = Request.build("GET", "/items")
    request.replace_headers(((b"x-api-key", sent[:-1] + b"1"),))
    assert (await refused(keys.stage, make_ctx(request=cast(Any, request)))).error is (
        ErrorType.INVALID_API_KEY
    )


def test_api_keys_per_route_and_plans_per_key() -> None:
    throttle = Throttle()
    keys = build_api_keys(api(**KEYED_API), throttle)
    assert keys is not None
    config = api(**KEYED_API)
    assert keys.for_route(config.routes["GET /open"]) == (None, None)
    stage, limits = keys.for_route(config.routes["GET /items"])
    assert stage is keys.stage
    assert limits is keys.limits
    # Each key of the plan has a bucket and a quota of its own; disabled and planless keys none.
    assert set(keys.limits) == {"alice", "bob"}
    buckets = {bucket for bucket, _ in keys.limits.values()}
    quotas = {quota for _, quota in keys.limits.values()}
    assert len(buckets) == 2 and None not in buckets
    assert len(quotas) == 2 and None not in quotas
    assert build_api_keys(api(), Throttle()) is None


async def test_api_key_in_no_usage_plan_is_refused_unless_allowed() -> None:
    ctx = make_ctx(headers={"x-api-key": "dave-key-without-plan"})
    with pytest.raises(GatewayError) as refused:
        await key_stage()(ctx)
    assert refused.value.error is ErrorType.INVALID_API_KEY
    allowed = build_api_keys(api(**KEYED_API, api_keys_need_usage_plan=False), Throttle())
    assert allowed is not None
    assert await allowed.stage(ctx) is None
    assert ctx.api_key_id == "dave"


# --------------------------------------------------------------------------------------------------
# Throttle


class ClockedThrottle:
    """A Throttle whose acquire takes its times from injected clocks (simulated time)."""

    def __init__(
        self,
        throttle: Throttle,
        now: Callable[[], float],
        unix_now: Callable[[], float] = lambda: 1_700_000_000.0,
    ) -> None:
        self.throttle = throttle
        self.now = now
        self.unix_now = unix_now

    def acquire(
        self, bucket_ids: Sequence[int], quota_id: int | None = None
    ) -> tuple[int, float, int, int, float, int | None]:
        return self.throttle.acquire(bucket_ids, quota_id, self.now(), self.unix_now())

    def acquire_into(
        self, bucket_ids: Sequence[int], headers: dict[str, str], quota_id: int | None = None
    ) -> tuple[int, float, int, int, float, int | None] | None:
        return self.throttle.acquire_into(
            bucket_ids, headers, quota_id, self.now(), self.unix_now()
        )


def clocked(throttle: Throttle, now: Callable[[], float], **kw: Callable[[], float]) -> Throttle:
    return cast(Throttle, ClockedThrottle(throttle, now, **kw))


async def test_throttle_stage_headers_and_refusal() -> None:
    throttle = Throttle()
    stage = ThrottleStage(clocked(throttle, lambda: 0.0), [throttle.add_bucket(1, 2)])
    for remaining in (1, 0):
        ctx = make_ctx()
        assert await stage(ctx) is None
        assert ctx.response_headers["RateLimit-Limit"] == "2"
        assert ctx.response_headers["RateLimit-Remaining"] == str(remaining)
        assert ctx.response_headers["RateLimit-Reset"] == str(2 - remaining)
    ctx = make_ctx()
    failure = await refused(stage, ctx)
    assert failure.error is ErrorType.THROTTLED
    assert failure.headers == {"Retry-After": "1"}
    assert ctx.response_headers["RateLimit-Remaining"] == "0"


def keyed_stage(
    throttle: Throttle, now: Callable[[], float], shared_burst: int = 100
) -> tuple[KeyedThrottleStage, int]:
    keys = build_api_keys(api(**KEYED_API), throttle)
    assert keys is not None
    shared = throttle.add_bucket(0, shared_burst)
    stage = build_throttle_stage(clocked(throttle, now), [shared], keys.limits)
    assert isinstance(stage, KeyedThrottleStage)
    return stage, shared


def keyed_ctx(key_id: str | None, request: web.BaseRequest | None = None) -> RequestContext:
    ctx = make_ctx(request=request)
    if key_id is not None:
        ctx.api_key_id = key_id
    return ctx


async def test_keyed_throttle_gives_each_key_its_own_bucket() -> None:
    throttle = Throttle()
    stage, shared = keyed_stage(throttle, lambda: 0.0)
    for _ in range(2):
        assert await stage(keyed_ctx("alice")) is None
    # Alice's plan bucket (burst 2, rate 0) is the tightest level and now empty.
    ctx = keyed_ctx("alice")
    failure = await refused(stage, ctx)
    assert failure.error is ErrorType.THROTTLED
    assert ctx.response_headers["RateLimit-Limit"] == "2"
    # Bob has a bucket of his own; dave (no plan) and unidentified requests use the route's.
    assert await stage(keyed_ctx("bob")) is None
    assert await stage(keyed_ctx("dave")) is None
    assert await stage(keyed_ctx(None)) is None
    # Alice's refusal took nothing from the shared bucket: 100 - 2 (alice) - 3 (bob, dave, none).
    assert throttle.acquire([shared], None, 0.0)[3] == 100 - 5 - 1


async def test_keyed_throttle_shared_level_refuses_every_key() -> None:
    throttle = Throttle()
    stage, _ = keyed_stage(throttle, lambda: 0.0, shared_burst=1)
    assert await stage(keyed_ctx("alice")) is None
    for key in ("alice", "bob", "dave"):
        assert (await refused(stage, keyed_ctx(key))).error is ErrorType.THROTTLED


async def test_quota_exceeded_is_limit_exceeded_with_retry_after() -> None:
    throttle = Throttle()
    quota = throttle.add_quota(2, "DAY")
    bucket = throttle.add_bucket(1000, 1000)
    unix = 1_700_000_000.0  # 22:13:20 UTC: 6400 s before the next UTC day
    stage = build_throttle_stage(
        clocked(throttle, lambda: 0.0, unix_now=lambda: unix), [], {"k": (bucket, quota)}
    )
    for _ in range(2):
        assert await stage(keyed_ctx("k")) is None
    failure = await refused(stage, keyed_ctx("k"))
    assert failure.error is ErrorType.QUOTA_EXCEEDED
    assert failure.headers == {"Retry-After": "6400"}
    response = error_response(failure.error, Style.REST, "rid", failure.detail, failure.headers)
    assert response.status == 429
    assert orjson.loads(cast(bytes, response.body)) == {"message": "Limit Exceeded"}
    assert response.headers["x-amzn-ErrorType"] == "LimitExceededException"
    assert response.headers["Retry-After"] == "6400"


def test_build_throttle_stage_without_keys_is_the_plain_stage() -> None:
    throttle = Throttle()
    assert isinstance(build_throttle_stage(throttle, [throttle.add_bucket(1, 1)]), ThrottleStage)


def test_accepted_under_concurrent_load_is_burst_plus_rate_times_time() -> None:
    """Eight threads offer 4x the rate over 100 simulated seconds. The simulated clock is shared
    and advances by one tick per request; a thread may be descheduled between reading the clock
    and acquiring, so times reach the throttle slightly out of order, as on a loaded host."""
    rate, burst, seconds, offered_per_s, threads = 100.0, 50, 100, 400, 8
    throttle = Throttle()
    account = throttle.add_bucket(rate * 10, 10_000)
    bucket = throttle.add_bucket(rate, burst)
    total = seconds * offered_per_s
    ticks = itertools.count()
    accepted = [0] * threads
    start = threading.Barrier(threads)

    def offer(worker: int) -> None:
        start.wait()
        granted = 0
        for tick in ticks:
            if tick >= total:
                break
            status = throttle.acquire([account, bucket], None, tick / offered_per_s)[0]
            granted += status == GRANTED
        accepted[worker] = granted

    workers = [threading.Thread(target=offer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not any(worker.is_alive() for worker in workers)
    expected = burst + rate * seconds
    assert abs(sum(accepted) - expected) <= 0.02 * expected, (sum(accepted), expected)


async def test_accepted_under_concurrent_load_through_the_stage() -> None:
    """Many coroutines share one stage and one simulated clock that advances per request."""
    rate, burst, seconds, offered_per_s = 20.0, 30, 50, 200
    throttle = Throttle()
    ticks = 0

    def now() -> float:
        return ticks / offered_per_s

    keys = {"k": (throttle.add_bucket(rate, burst), None)}
    stage = build_throttle_stage(clocked(throttle, now), [throttle.add_bucket(1e6, 10**6)], keys)
    total = seconds * offered_per_s
    outcomes: dict[str, int] = {"granted": 0, "throttled": 0}
    request = Request.build("GET", "/items")

    async def client() -> None:
        nonlocal ticks
        while ticks < total:
            ctx = keyed_ctx("k", request)
            try:
                await stage(ctx)
                outcomes["granted"] += 1
            except GatewayError as failure:
                assert failure.error is ErrorType.THROTTLED
                outcomes["throttled"] += 1
            ticks += 1
            await asyncio.sleep(0)

    await asyncio.gather(*(client() for _ in range(32)))
    expected = burst + rate * seconds
    assert abs(outcomes["granted"] - expected) <= 0.02 * expected, outcomes
    assert outcomes["granted"] + outcomes["throttled"] >= total


def test_quota_resets_at_the_utc_day_boundary() -> None:
    throttle = Throttle()
    quota = throttle.add_quota(3, "DAY")
    midnight = 19_000 * 86_400.0  # 2022-01-08T00:00:00Z
    for i in range(3):
        status, *_ = throttle.acquire([], quota, float(i), midnight - 10 + i)
        assert status == GRANTED
    status, retry_after, *_ = throttle.acquire([], quota, 3.0, midnight - 2.5)
    assert status == QUOTA_EXCEEDED
    assert retry_after == pytest.approx(2.5, abs=1e-3)
    # A second before midnight is still the old day; the first second of the new one is not.
    assert throttle.acquire([], quota, 4.0, midnight - 0.001)[0] == QUOTA_EXCEEDED
    for i in range(3):
        assert throttle.acquire([], quota, 5.0 + i, midnight + i)[0] == GRANTED
    assert throttle.acquire([], quota, 9.0, midnight + 86_399)[0] == QUOTA_EXCEEDED
    assert throttle.acquire([], quota, 10.0, midnight + 86_400)[0] == GRANTED


async def test_quota_through_the_keyed_stage_across_midnight() -> None:
    throttle = Throttle()
    unix = [19_000 * 86_400.0 - 1.0]
    keys = {"k": (None, throttle.add_quota(1, "DAY"))}
    stage = build_throttle_stage(
        clocked(throttle, lambda: 0.0, unix_now=lambda: unix[0]),
        [throttle.add_bucket(100, 100)],
        keys,
    )
    assert await stage(keyed_ctx("k")) is None
    failure = await refused(stage, keyed_ctx("k"))
    assert failure.error is ErrorType.QUOTA_EXCEEDED
    assert failure.headers == {"Retry-After": "1"}
    # A refused request took no token from the route's bucket.
    ctx = keyed_ctx("k")
    unix[0] += 1.0
    assert await stage(ctx) is None
    assert ctx.response_headers["RateLimit-Remaining"] == "98"


def test_throttled_and_quota_statuses_are_distinct() -> None:
    assert len({GRANTED, THROTTLED, QUOTA_EXCEEDED}) == 3
