"""API keys and usage plans (REST-style): the `x-api-key` header, and each key's throttle and quota.

Keys are configured as SHA-256 digests, whether given as `value` or `value_sha256`; a request's
key is hashed and looked up by digest, then compared in constant time. A value that matched is
remembered (at most one per enabled key, never an unknown value), so a known key is hashed once
rather than on every request; looking it up leaks nothing an attacker can time, as a dict compares
strings only when their 64-bit randomised hashes are equal. Key values never appear in
errors or logs: what later stages and the access log see is the key's id, in
`ctx.api_key_id`.

Usage plans give each of their keys its own token bucket and quota counter (as AWS does: a plan's
limits apply per key), shared by every route and stage of the API. They are created once per API
by `build_api_keys`; each route then takes what it needs with `ApiKeys.for_route`, and its
ThrottleStage checks the key's bucket and quota in the same native call as the other levels.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from pygw._native import ApiKeyCheck, header_value
from pygw.config.model import ApiConfig, ApiKeyConfig, RouteConfig, UsagePlanConfig
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.pipeline import LeanView
from pygw.response import Response

API_KEY_HEADER = "x-api-key"
_API_KEY_HEADER_RAW = API_KEY_HEADER.encode("ascii")

# key id -> (its usage plan's token bucket id or None, its quota id or None)
KeyLimits = dict[str, tuple[int | None, int | None]]


class ApiKeyStage:
    """Refuses with INVALID_API_KEY (403 Forbidden) a request whose key is missing, unknown or
    disabled; otherwise records the key's id in ctx.api_key_id."""

    __slots__ = ("_by_digest", "_verified", "native_check_lean")

    def __init__(self, keys: Iterable[ApiKeyConfig]) -> None:
        # A disabled key is left out, so it is refused exactly like an unknown one.
        self._by_digest: dict[str, tuple[str, str]] = {
            key.digest: (key.digest, key.id) for key in keys if key.enabled
        }
        # The header's bytes -> key id, for values that matched a key (bounded by the number of
        # keys). Bytes as sent: the request's header map is never built for the key.
        self._verified: dict[bytes, str] = {}
        # check_lean in one native step for a value verified before (Pipeline.check_lean).
        self.native_check_lean = ApiKeyCheck(_API_KEY_HEADER_RAW, self._verified, self.check_lean)

    def identify(self, value: str | None) -> str | None:
        """The id of the enabled key with this value, or None."""
        if not value:
            return None
        # surrogateescape: header bytes that are not UTF-8 hash as the bytes that were sent.
        return self.identify_raw(value.encode("utf-8", "surrogateescape"))

    def identify_raw(self, raw: bytes | None) -> str | None:
        """`identify` for the header's value as it was sent."""
        if not raw:
            return None
        known_id = self._verified.get(raw)
        if known_id is not None:
            return known_id
        digest = hashlib.sha256(raw).hexdigest()
        found = self._by_digest.get(digest)
        if found is None:
            return None
        known, key_id = found
        if not hmac.compare_digest(known, digest):
            return None
        self._verified[raw] = key_id
        return key_id

    async def __call__(self, ctx: RequestContext) -> Response | None:
        return self.check(ctx)

    def check(self, ctx: RequestContext) -> Response | None:
        ctx.api_key_id = self._key_id(ctx.request.raw_headers)
        return None

    def check_lean(self, lean: LeanView) -> None:
        lean.api_key_id = self._key_id(lean.raw_headers)

    def _key_id(self, raw_headers: tuple[tuple[bytes, bytes], ...]) -> str:
        raw = header_value(raw_headers, _API_KEY_HEADER_RAW)
        # The remembered values first, without identify_raw()'s call: the usual request.
        key_id = self._verified.get(raw) if raw else None
        if key_id is None:
            key_id = self.identify_raw(raw)
        if key_id is None:
            raise GatewayError(ErrorType.INVALID_API_KEY)
        return key_id


@dataclass(frozen=True, slots=True)
class ApiKeys:
    """One API's keys and usage plans, compiled once and shared by all its routes and stages."""

    stage: ApiKeyStage
    limits: KeyLimits

    def for_route(self, route: RouteConfig) -> tuple[ApiKeyStage | None, KeyLimits | None]:
        """(the key stage, the per-key limits for the route's ThrottleStage), or (None, None) for
        a route that does not require a key."""
        if not route.api_key_required:
            return None, None
        return self.stage, self.limits


class BucketRegistry(Protocol):
    """Where buckets and quotas are created: the native Throttle, or the Redis backend's."""

    def add_bucket(self, rate: float, burst: int) -> int: ...

    def add_quota(self, limit: int, period: str) -> int: ...


def usage_plan_limits(
    plans: Iterable[UsagePlanConfig], throttle: BucketRegistry, key_ids: Collection[str]
) -> KeyLimits:
    """A bucket and a quota counter in `throttle` for each of `key_ids` in a plan that has them
    (keys not listed, such as disabled ones, get nothing: they never get past the key stage)."""
    limits: KeyLimits = {}
    for plan in plans:
        for key_id in plan.keys:
            if key_id not in key_ids:
                continue
            bucket = (
                throttle.add_bucket(plan.throttle.rate, plan.throttle.burst)
                if plan.throttle is not None
                else None
            )
            quota = (
                throttle.add_quota(plan.quota.limit, plan.quota.period)
                if plan.quota is not None
                else None
            )
            if bucket is not None or quota is not None:
                limits[key_id] = (bucket, quota)
    return limits


def keys_without_plan(api: ApiConfig) -> list[str]:
    """Ids of the API's keys that no usage plan lists."""
    planned = {key_id for plan in api.usage_plans for key_id in plan.keys}
    return [key.id for key in api.api_keys if key.id not in planned]


def build_api_keys(api: ApiConfig, throttle: BucketRegistry) -> ApiKeys | None:
    """The API's compiled keys and plans, or None when it has no keys (HTTP-style APIs never do).
    With `api_keys_need_usage_plan` (the default, as AWS), a key in no plan is left out, so it is
    refused like an unknown one. Call once per API: every call creates new buckets and quotas."""
    if not api.api_keys:
        return None
    keys = api.api_keys
    if api.api_keys_need_usage_plan:
        unplanned = set(keys_without_plan(api))
        keys = [key for key in keys if key.id not in unplanned]
    enabled = {key.id for key in keys if key.enabled}
    return ApiKeys(ApiKeyStage(keys), usage_plan_limits(api.usage_plans, throttle, enabled))
