"""The stages' native lean checks (pygw._native.ApiKeyCheck, KeyedThrottleCheck, ParamsCheck)
against the stages' own Python `check_lean`, the reference: for any sequence of requests, the
same key id set, the same RateLimit-* headers, the same refusal (its error and detail) or none.
Each side runs on its own stage, built alike, so that what one side remembers (verified keys,
query strings seen) cannot make the other pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pygw._native import ApiKeyCheck, KeyedThrottleCheck, ParamsCheck, Throttle
from pygw.config.model import ApiKeyConfig
from pygw.errors import GatewayError
from pygw.stages.api_key import ApiKeyStage
from pygw.stages.throttle import KeyedThrottleStage
from pygw.stages.validate import ValidateStage

_KEYS = {"k1": "key-one-0123456789abcdef", "k2": "key-two-0123456789abcdef"}


class _View:
    """What a lean check reads and sets of a request (pygw.pipeline.LeanView)."""

    __slots__ = ("api_key_id", "params", "raw_headers", "raw_query", "response_headers")

    def __init__(
        self,
        raw_headers: tuple[tuple[bytes, bytes], ...],
        params: dict[str, str],
        raw_query: str,
        api_key_id: str | None,
    ) -> None:
        self.raw_headers = raw_headers
        self.params = params
        self.raw_query = raw_query
        self.api_key_id = api_key_id
        self.response_headers: dict[str, str] = {}


def _outcome(check: Callable[[Any], None], view: _View) -> tuple[Any, ...]:
    try:
        check(view)
    except GatewayError as refusal:
        refused: tuple[Any, ...] | None = (refusal.error, refusal.detail)
    else:
        refused = None
    return refused, view.api_key_id, view.response_headers


_HEADER_NAMES = st.sampled_from([b"x-api-key", b"X-Api-Key", b"x-tenant", b"X-TENANT", b"other"])
_HEADER_VALUES = st.sampled_from(
    [b"", b"acme", _KEYS["k1"].encode(), _KEYS["k2"].encode(), b"not-a-key", "\xe9".encode()]
)
_HEADERS = st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=4).map(tuple)
_PARAMS = st.dictionaries(st.sampled_from(["id", "name"]), st.sampled_from(["", "42"]))
_QUERIES = st.lists(
    st.sampled_from(["lang=en", "lang=", "lang", "n=1", "l%61ng=x", "lang+x=1", "", "&"]),
    max_size=3,
).map("&".join)
_VIEWS = st.builds(_View, _HEADERS, _PARAMS, _QUERIES, st.none())


@settings(max_examples=300)
@given(st.lists(_VIEWS, min_size=1, max_size=6))
def test_the_api_key_check_matches_the_stage(views: list[_View]) -> None:
    keys = [ApiKeyConfig(id=key_id, value=value) for key_id, value in _KEYS.items()]
    native, reference = ApiKeyStage(keys), ApiKeyStage(keys)
    for view in views:
        twin = _View(view.raw_headers, view.params, view.raw_query, None)
        assert _outcome(native.native_check_lean, view) == _outcome(reference.check_lean, twin)


@settings(max_examples=300)
@given(
    st.lists(_VIEWS, min_size=1, max_size=6),
    st.lists(st.sampled_from(["header.x-tenant", "path.id", "querystring.lang"]), unique=True),
)
def test_the_params_check_matches_the_stage(views: list[_View], params: list[str]) -> None:
    native, reference = (ValidateStage(params, None, None, 1024) for _ in range(2))
    assert native.native_check_lean is not None and reference.check_lean is not None
    for view in views:
        twin = _View(view.raw_headers, view.params, view.raw_query, None)
        # Twice: the second time the reference remembers the query string.
        for _ in range(2):
            assert _outcome(native.native_check_lean, view) == _outcome(reference.check_lean, twin)


def _keyed_stage(route_rate: float, route_burst: int) -> KeyedThrottleStage:
    """A route bucket, k1 in a plan with a bucket and a quota of 3, k2 in a plan with a quota
    alone; rates of 0 so that no refill between the two sides' calls tells them apart."""
    throttle = Throttle()
    route = throttle.add_bucket(route_rate, route_burst)
    limits = {
        "k1": (throttle.add_bucket(0, 2), throttle.add_quota(3, "DAY")),
        "k2": (None, throttle.add_quota(1, "MONTH")),
    }
    return KeyedThrottleStage(throttle, [route], limits)


@settings(max_examples=200)
@given(
    st.lists(st.sampled_from(["k1", "k2", "unknown", None]), min_size=1, max_size=8),
    st.integers(min_value=0, max_value=5),
)
def test_the_keyed_throttle_check_matches_the_stage(
    key_ids: list[str | None], route_burst: int
) -> None:
    native, reference = _keyed_stage(0, route_burst), _keyed_stage(0, route_burst)
    assert native.native_check_lean is not None
    for key_id in key_ids:
        view, twin = _View((), {}, "", key_id), _View((), {}, "", key_id)
        assert _outcome(native.native_check_lean, view) == _outcome(reference.check_lean, twin)


def test_the_usual_request_never_calls_the_python_checks() -> None:
    """A key verified before, a key in a plan the buckets let through, every parameter in a
    plain query string: decided natively (the fallback is not called); anything else is
    handed to it."""
    handed: list[str] = []

    def fallback(kind: str) -> Callable[[Any], None]:
        return lambda view: handed.append(kind)

    key = _KEYS["k1"].encode()
    api_key = ApiKeyCheck(b"x-api-key", {key: "k1"}, fallback("key"))
    throttle = Throttle()
    bucket = throttle.add_bucket(0, 5)
    keyed = KeyedThrottleCheck(throttle, {"k1": ([bucket], None, None)}, None, fallback("plan"))
    params = ParamsCheck([b"x-tenant"], ["id"], ["lang"], fallback("params"))
    usual = _View(((b"X-Api-Key", key), (b"x-tenant", b"acme")), {"id": "42"}, "lang=en", None)
    for check in (api_key, keyed, params):
        check(usual)
    assert handed == [] and usual.api_key_id == "k1"
    assert usual.response_headers["RateLimit-Remaining"] == "4"
    unusual = _View(((b"x-api-key", b"other"),), {"id": ""}, "l%61ng=en", "k2")
    for check in (api_key, keyed, params):
        check(unusual)
    assert handed == ["key", "plan", "params"]
