"""Config model → immutable Runtime: one native router, and for each route its compiled pipelines.

Everything a request needs is decided here, once: stage variables are substituted, integrations
and their connection pools are created, and routes an API does not define fall to a synthetic
`$default` that answers with that API's own not-found response.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

from pygw._native import ResponseCache, Router, SharedThrottle, Throttle
from pygw.aws_ids import ACCOUNT_ID, api_id_for
from pygw.config.load import ConfigError, ConfigIssue, LoadedConfig
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError, Style
from pygw.faults import Clock, FaultPlan, Timeline, build_plan
from pygw.integrations.function import FunctionIntegration, LambdaRunner, load_handler
from pygw.integrations.http_proxy import HttpProxyIntegration
from pygw.integrations.lambda_invoke import LambdaInvokeIntegration
from pygw.integrations.mock import Faults, Latency, MockIntegration
from pygw.lambda_client import invocation_url
from pygw.observe.metrics import Metrics, RouteMetrics
from pygw.observe.telemetry import TracedCache, TracedStage
from pygw.pipeline import Integration, Pipeline, Stage, StageTimer, TimedPipeline
from pygw.response import Response
from pygw.sigv4 import SigV4Verifier, load_credentials_file
from pygw.stages.api_key import BucketRegistry, KeyLimits, build_api_keys, keys_without_plan
from pygw.stages.cache import CachingIntegration, wrap_with_cache
from pygw.stages.compress import CompressingIntegration, CompressionStage
from pygw.stages.cors import build_cors_stage
from pygw.stages.custom_auth import build_custom_auth_stage
from pygw.stages.faults import FaultCounters, FaultStage
from pygw.stages.iam_auth import IamAuthStage
from pygw.stages.jwt_auth import build_cognito_stage, build_jwt_stage
from pygw.stages.resource_policy import build_principal_policy_stage, build_resource_policy_stage
from pygw.stages.throttle import ACCOUNT, ROUTE, STAGE, CountFor, Decision, build_throttle_stage
from pygw.stages.transform import (
    ResponseMapping,
    ResponseTemplates,
    build_request_transform_stage,
    build_response_transform,
)
from pygw.stages.validate import build_validate_stage
from pygw.state.redis_throttle import RedisThrottle, RedisThrottleStage, redis_throttle_from_config
from pygw.tls import TlsMaterial, load_tls
from pygw.upstream_tls import UpstreamTls, UpstreamTlsBuilder
from pygw.websocket.api import WebSocketApiIntegration, WsRoute
from pygw.websocket.connections import ConnectionRegistry
from pygw.websocket.events import EventFormat
from pygw.websocket.management import CONNECTIONS_ROUTE_KEYS, ConnectionsApi
from pygw.websocket.selection import CONNECT, DISCONNECT, selection_path
from pygw.websocket.targets import (
    FunctionTarget,
    HttpTarget,
    InvokeApiRunner,
    MockTarget,
    Target,
)

ResponseTransform = ResponseTemplates | ResponseMapping

# Cleared at every boot, as the shared state's monotonic clock requires; memory-backed.
SHARED_STATE_DIR = "/dev/shm"

_STAGE_VARIABLE = re.compile(r"\$\{stageVariables\.([A-Za-z0-9_.\-]+)\}")


@dataclass(frozen=True, slots=True)
class Variant:
    """A route as one stage (or its canary) serves it."""

    stage_variables: dict[str, str]
    pipeline: Pipeline
    canary: bool


@dataclass(slots=True)
class CompiledRoute:
    route_id: int
    api: str
    stage: str
    key: str
    style: Style
    hosts: tuple[str | None, ...]
    path_prefix: str
    primary: Variant
    canary_variant: Variant | None
    canary_percent: float
    metrics: RouteMetrics
    integration_kind: str
    synthetic: bool = False
    # A second mount of an API's route under a custom domain's mapping (domains[].mappings).
    mapped: bool = False
    # The names of the pipeline's steps in the order they run (the dashboard's routes table).
    pipeline: tuple[str, ...] = ()
    # The route's faults stage, when it has one (shared by its variants and its mapped mounts),
    # and the plan its config gave it (what `DELETE /faults/...` returns it to).
    faults: FaultStage | None = None
    config_faults: FaultPlan | None = None
    request_id_header: str = field(init=False)
    # $context.apiId and $context.resourcePath, for the access log.
    api_id: str = field(init=False)
    resource_path: str = field(init=False)

    def __post_init__(self) -> None:
        self.request_id_header = (
            "x-amzn-RequestId" if self.style is Style.REST else "apigw-requestid"
        )
        self.api_id = api_id_for(self.api)
        _method, sep, path = self.key.partition(" ")
        self.resource_path = path if sep else self.key

    def pick_variant(self) -> Variant:
        canary = self.canary_variant
        if canary is not None and random.random() * 100.0 < self.canary_percent:
            return canary
        return self.primary


class _NotFound:
    """The answer for paths under an API that none of its routes match, in that API's style."""

    def __init__(self, style: Style) -> None:
        self._error = (
            ErrorType.MISSING_AUTHENTICATION_TOKEN
            if style is Style.REST
            else ErrorType.RESOURCE_NOT_FOUND
        )

    async def __call__(self, ctx: RequestContext) -> Any:
        raise GatewayError(self._error)

    def answer_now(self, ctx: RequestContext) -> Response | None:
        raise GatewayError(self._error)

    async def close(self) -> None:
        return None


class Runtime:
    def __init__(
        self,
        loaded: LoadedConfig,
        router: Router,
        routes: list[CompiledRoute],
        proxies: Sequence[HttpProxyIntegration] = (),
        redis: RedisThrottle | None = None,
        shared: _SharedBuckets | None = None,
        shared_key: str = "",
    ) -> None:
        self._shared = shared
        self._shared_key = shared_key
        self.loaded = loaded
        self.config = loaded.config
        self.router = router
        self.routes = routes
        self._proxies = tuple(proxies)
        self._redis = redis
        self.in_flight = 0
        # The HTTPS listener's certificates as this config's files were read (pygw/tls.py).
        self.tls: TlsMaterial | None = None
        # Settings that work but that an operator should know about (`pygw check` prints them).
        self.warnings: list[ConfigIssue] = []
        # What a faults stage added at run time needs (pygw/fault_control.py).
        self.metrics: Metrics | None = None
        self.fault_clock: Clock = time.monotonic

    def fault_routes(self, api: str, stage: str, key: str) -> list[CompiledRoute]:
        """The mounts of one configured route that faults can be set on (none for WebSocket
        APIs and the implicit not-found routes)."""
        return [
            route
            for route in self.routes
            if route.api == api
            and route.stage == stage
            and route.key == key
            and not route.synthetic
            and route.style is not Style.WEBSOCKET
        ]

    def set_faults(self, api: str, stage: str, key: str, plan: FaultPlan | None) -> bool:
        """Swap a route's fault plan (None: no faults). A route compiled without a faults stage
        gets one, appended to its pipelines, which are replaced whole. False if there is no
        such route."""
        routes = self.fault_routes(api, stage, key)
        if not routes:
            return False
        fault_stage = routes[0].faults
        if fault_stage is not None:
            fault_stage.plan = plan
            return True
        if plan is None:
            return True
        fault_stage = FaultStage(
            plan, fault_counters(self.metrics, api, stage, key), clock=self.fault_clock
        )
        timer = (
            self.metrics.stage_seconds.labels(api, stage, key, "faults")
            if self.metrics is not None
            else None
        )
        # Mapped mounts share their variants with the route's own mount: replace each once.
        swapped: dict[int, Variant] = {}

        def with_faults(variant: Variant) -> Variant:
            done = swapped.get(id(variant))
            if done is None:
                done = swapped[id(variant)] = Variant(
                    variant.stage_variables,
                    _add_stage(variant.pipeline, fault_stage, timer),
                    variant.canary,
                )
            return done

        for route in routes:
            route.faults = fault_stage
            if route.canary_variant is not None:
                route.canary_variant = with_faults(route.canary_variant)
            route.primary = with_faults(route.primary)
        return True

    def summary(self) -> str:
        apis = len(self.config.apis)
        served = sum(1 for route in self.routes if not route.synthetic and not route.mapped)
        return f"{apis} api(s), {served} route(s)"

    def route_table(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for route_id in self.router.precedence_order():
            route = self.routes[route_id]
            for host in route.hosts:
                rows.append(
                    {
                        "host": host,
                        "path_prefix": route.path_prefix,
                        "route": route.key + (" (implicit)" if route.synthetic else ""),
                        "api": route.api,
                        "stage": route.stage,
                        "style": route.style.value,
                        "integration": route.integration_kind,
                        "canary_percent": route.canary_percent,
                        "pipeline": list(route.pipeline),
                    }
                )
        # A route listed under several hosts appears once per host; keep precedence order stable.
        seen: set[tuple[Any, ...]] = set()
        unique = []
        for row in rows:
            marker = (row["host"], row["path_prefix"], row["route"], row["api"], row["stage"])
            if marker not in seen:
                seen.add(marker)
                unique.append(row)
        return unique

    def integrations(self) -> list[Integration]:
        found: list[Integration] = []
        for route in self.routes:
            if route.mapped:
                # The same integration objects as the route it mounts again.
                continue
            found.append(route.primary.pipeline.integration)
            if route.canary_variant is not None:
                found.append(route.canary_variant.pipeline.integration)
        return found

    def attach_shared_state(self) -> None:
        """Map the throttle state shared by this gateway's worker processes. Only a serving
        gateway does this, so `pygw check` and `pygw routes` leave no files behind."""
        if self._shared is None:
            return
        try:
            self._shared.open(self._shared_key)
        except (ValueError, OSError) as bad:
            raise ConfigError(
                [
                    ConfigIssue(
                        str(self.loaded.path),
                        "state.backend",
                        f"cannot map the shared throttle state: {bad}",
                        f"check that {SHARED_STATE_DIR} is writable, or use backend local",
                    )
                ]
            ) from None

    def upstream_states(self) -> list[tuple[str, bool, int]]:
        """(target, healthy, requests queued) for every http_proxy target, for /metrics."""
        states = []
        for proxy in self._proxies:
            queued = proxy.queue_length()
            for target, healthy in proxy.health().items():
                states.append((target, healthy, queued))
        return states

    async def close(self) -> None:
        await asyncio.gather(*(integration.close() for integration in self.integrations()))
        if self._redis is not None:
            await self._redis.close()

    async def close_when_idle(self, poll_s: float = 0.05, give_up_s: float = 600.0) -> None:
        """A retired snapshot keeps its pools until the requests that started on it finish."""
        waited = 0.0
        while self.in_flight > 0 and waited < give_up_s:
            await asyncio.sleep(poll_s)
            waited += poll_s
        await self.close()


def _add_stage(pipeline: Pipeline, stage: Stage, timer: StageTimer | None) -> Pipeline:
    stages = (*pipeline.stages, stage)
    if isinstance(pipeline, TimedPipeline) and timer is not None:
        return TimedPipeline(stages, pipeline.integration, (*pipeline.timed, (stage, timer)))
    return Pipeline(stages, pipeline.integration)


class _NoCount:
    def inc(self, amount: float = 1.0) -> None:
        return None


def fault_counters(metrics: Metrics | None, api: str, stage: str, key: str) -> FaultCounters:
    if metrics is None:
        return FaultCounters(_NoCount(), _NoCount(), _NoCount())
    family = metrics.faults_injected
    return FaultCounters(
        family.labels(api, stage, key, "delay"),
        family.labels(api, stage, key, "abort"),
        family.labels(api, stage, key, "reset"),
    )


class _TransformedResponses:
    """Applies a route's response template or mapping to its integration's (buffered) answers."""

    def __init__(self, inner: Integration, transform: ResponseTransform) -> None:
        self._inner = inner
        self._transform = transform

    async def __call__(self, ctx: RequestContext) -> Response:
        response = await self._inner(ctx)
        if not response.streamed:
            return self._transform(ctx, response)
        return response

    async def close(self) -> None:
        await self._inner.close()


class _StaticResponseHeaders:
    """An http_proxy's `response_headers`: set before the answer exists, as gateway headers are,
    so they reach streamed answers and cache hits too and replace the upstream's of that name."""

    def __init__(self, inner: Integration, headers: dict[str, str]) -> None:
        self.inner = inner
        self._headers = headers

    async def __call__(self, ctx: RequestContext) -> Response:
        ctx.response_headers.update(self._headers)
        return await self.inner(ctx)

    async def close(self) -> None:
        await self.inner.close()


class _SharedBuckets:
    """Records the bucket and quota table while compiling (ids are table indexes), then maps the
    file every worker process of this gateway shares."""

    def __init__(self) -> None:
        self.buckets: list[tuple[float, int]] = []
        self.quotas: list[tuple[int, str]] = []
        self._shared: SharedThrottle | None = None

    def add_bucket(self, rate: float, burst: int) -> int:
        self.buckets.append((rate, burst))
        return len(self.buckets) - 1

    def add_quota(self, limit: int, period: str) -> int:
        self.quotas.append((limit, period))
        return len(self.quotas) - 1

    def open(self, gateway_key: str) -> None:
        # Workers of one gateway (same config file and listen address) derive the same name; a
        # reload that changes the table gets a fresh file, as local buckets start full again.
        table = hashlib.sha256(repr((self.buckets, self.quotas)).encode()).hexdigest()[:16]
        name = f"pygw-{os.getuid()}-{gateway_key}.{table}"
        self._shared = SharedThrottle(str(Path(SHARED_STATE_DIR) / name), self.buckets, self.quotas)

    def acquire(self, bucket_ids: list[int], quota_id: int | None = None) -> Decision:
        assert self._shared is not None
        return self._shared.acquire(bucket_ids, quota_id)

    def acquire_into(
        self, bucket_ids: list[int], headers: dict[str, str], quota_id: int | None = None
    ) -> Decision | None:
        assert self._shared is not None
        return self._shared.acquire_into(bucket_ids, headers, quota_id)


class _RedisBuckets:
    """Registers buckets with the Redis backend under names every host derives alike from the
    same config (creation order), so the hosts of a fleet share them."""

    def __init__(self, redis: RedisThrottle) -> None:
        self._redis = redis
        self._count = 0

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}{self._count}"

    def add_bucket(self, rate: float, burst: int) -> int:
        return self._redis.register_bucket(self._name("bucket"), rate, burst)

    def add_quota(self, limit: int, period: str) -> int:
        return self._redis.register_quota(self._name("quota"), limit, period)


@dataclass(frozen=True, slots=True)
class _RouteOrigin:
    """Where a route comes from: what integrations need to know about it beyond their own spec."""

    api: Any
    style: Style
    stage: str
    key: str


class _Compiler:
    def __init__(
        self,
        loaded: LoadedConfig,
        metrics: Metrics,
        registry: ConnectionRegistry,
        shared_key: str,
        clock: Clock = time.monotonic,
    ) -> None:
        self.shared_key = shared_key
        self.clock = clock
        self.fault_rng = random.Random()
        self.loaded = loaded
        self.metrics = metrics
        self.registry = registry
        self.issues: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []
        self.upstream_tls = UpstreamTlsBuilder(loaded, self.issue, self.warn)
        self.routes: list[CompiledRoute] = []
        self.entries: list[tuple[str | None, str, str, int]] = []
        self.mounts: dict[tuple[str | None, str], str] = {}
        # (API name, stage name) -> ids of the routes compiled for it, for domain mappings to
        # mount again.
        self.by_stage: dict[tuple[str, str], list[int]] = {}
        self.caches: dict[str, ResponseCache] = {}
        self.proxies: list[HttpProxyIntegration] = []
        self.sigv4 = self._sigv4_verifier()
        # Local buckets live in this snapshot: a reload starts every bucket full again. Redis
        # buckets are shared by every host and survive reloads.
        state = loaded.config.state
        self.redis: RedisThrottle | None = None
        self.throttle: BucketRegistry
        self.shared: _SharedBuckets | None = None
        if state.backend == "redis":
            self.redis = redis_throttle_from_config(state)
            self.throttle = _RedisBuckets(self.redis)
        elif state.backend == "shared":
            self.shared = self.throttle = _SharedBuckets()
        else:
            self.throttle = Throttle()
        account = loaded.config.throttle
        self.account_buckets = (
            [self.throttle.add_bucket(account.rate, account.burst)] if account is not None else []
        )
        self.account_levels = [ACCOUNT] if account is not None else []

    def _sigv4_verifier(self) -> SigV4Verifier | None:
        """One verifier (key table, signing-key cache) for every SigV4-authorized route."""
        iam = self.loaded.config.iam
        if iam is None:
            return None
        try:
            credentials = load_credentials_file(self.loaded.resolve(iam.credentials_file))
        except ValueError as bad:
            self.issue(
                "iam.credentials_file",
                str(bad),
                "list entries of access_key_id, secret_access_key, arn, account_id "
                "(and session_token for temporary credentials)",
            )
            return None
        return SigV4Verifier(credentials, iam.region)

    def api_arn(self, api_name: str) -> str:
        """arn:aws:execute-api:REGION:ACCOUNT:API_ID, what resource ARNs of the API extend."""
        iam = self.loaded.config.iam
        region = iam.region if iam is not None else "us-east-1"
        return f"arn:aws:execute-api:{region}:{ACCOUNT_ID}:{api_id_for(api_name)}"

    def issue(self, path: str, message: str, fix: str) -> None:
        self.issues.append(ConfigIssue(str(self.loaded.path), path, message, fix))

    def warn(self, path: str, message: str, fix: str) -> None:
        self.warnings.append(ConfigIssue(str(self.loaded.path), path, message, fix))

    def compile(self) -> Runtime:
        for index, api in enumerate(self.loaded.config.apis):
            self._api(index, api)
        self._map_domains()
        tls = load_tls(self.loaded, self.issue)
        if tls is not None:
            self._check_domain_certificates(tls)
        if self.issues:
            raise ConfigError(self.issues)
        try:
            router = Router(self.entries)
        except ValueError as conflict:
            self.issue("apis", str(conflict), "make the routes distinguishable or remove one")
            raise ConfigError(self.issues) from None
        runtime = Runtime(
            self.loaded, router, self.routes, self.proxies, self.redis, self.shared, self.shared_key
        )
        runtime.tls = tls
        runtime.warnings = self.warnings
        runtime.metrics = self.metrics
        runtime.fault_clock = self.clock
        return runtime

    def _api(self, index: int, api: Any) -> None:
        where = f"apis[{index}]"
        style = Style(api.type)
        if style is Style.WEBSOCKET:
            self._websocket_api(where, api)
            return
        base_path = (api.base_path or "").rstrip("/")
        hosts: tuple[str | None, ...] = tuple(api.hosts) if api.hosts else (None,)
        # Built once per API: key buckets and quotas are shared by all its routes and stages.
        front_named: tuple[tuple[str, Stage], ...] = tuple(
            (name, s)
            for name, s in (
                ("resource_policy", build_resource_policy_stage(api)),
                ("cors", build_cors_stage(api)),
            )
            if s is not None
        )
        front = tuple(s for _, s in front_named)
        api_keys = build_api_keys(api, self.throttle)
        if api.api_keys_need_usage_plan:
            for key_id in keys_without_plan(api):
                self.warn(
                    f"{where}.api_keys",
                    f"API key {key_id!r} is in no usage plan: requests with it are refused "
                    "(403), as AWS refuses them",
                    "add it to a usage plan's keys, or set api_keys_need_usage_plan: false",
                )
        # Only an API that sets minimum_compression_size (REST-style: the model refuses it
        # elsewhere) has its routes choose a coding and decode request bodies.
        compress_named: tuple[tuple[str, Stage], ...] = (
            (
                (
                    "compress",
                    CompressionStage(self.loaded.config.server.limits.max_body_bytes),
                ),
            )
            if api.minimum_compression_size is not None
            else ()
        )
        policy = api.resource_policy
        if (
            policy is not None
            and policy.statements
            and not any(r.authorization == "aws_iam" for r in api.routes.values())
        ):
            self.warn(
                f"{where}.resource_policy.statements",
                "the statements apply to routes with authorization: aws_iam, and this API has none",
                "add authorization: aws_iam to the routes the statements protect",
            )
        for stage_index, stage in enumerate(api.stages):
            prefix = base_path if stage.name == "$default" else f"{base_path}/{stage.name}"
            if not self._claim_mount(f"{where}.stages[{stage_index}]", api.name, hosts, prefix):
                return
            variables = dict(stage.variables or {})
            stage_buckets = list(self.account_buckets)
            stage_levels = list(self.account_levels)
            if stage.throttle is not None:
                stage_buckets.append(
                    self.throttle.add_bucket(stage.throttle.rate, stage.throttle.burst)
                )
                stage_levels.append(STAGE)
            canary = stage.canary
            canary_variables = {**variables, **dict(canary.variables or {})} if canary else None
            route_items: Mapping[str, Any] = api.routes
            for key, route in route_items.items():
                route_where = f"{where}.routes.{key}"
                buckets = list(stage_buckets)
                levels = list(stage_levels)
                if route.throttle is not None:
                    buckets.append(
                        self.throttle.add_bucket(route.throttle.rate, route.throttle.burst)
                    )
                    levels.append(ROUTE)
                key_stage, key_limits = (
                    api_keys.for_route(route) if api_keys is not None else (None, None)
                )
                auth_stage = self._auth_stage(route_where, api, route, stage.name, key)
                auth_name = (
                    "jwt_auth"
                    if auth_stage is not None
                    and api.authorizers[route.authorizer].type in ("jwt", "cognito_user_pools")
                    else "custom_auth"
                )
                iam_named: tuple[tuple[str, Stage], ...] = ()
                if route.authorization == "aws_iam" and self.sigv4 is not None:
                    iam_named = (
                        (
                            "iam_auth",
                            IamAuthStage(
                                self.sigv4, self.loaded.config.server.limits.max_body_bytes
                            ),
                        ),
                    )
                    statements = build_principal_policy_stage(
                        api, self.api_arn(api.name), stage.name
                    )
                    if statements is not None:
                        iam_named = (*iam_named, ("resource_policy_iam", statements))
                if auth_stage is not None and self.loaded.config.telemetry is not None:
                    auth_stage = TracedStage("authorizer", auth_stage)
                shaping = self._shaping_stages(route_where, api, route, stage.name, key)
                # The most specific faults win whole: the route's, else its stage's, else the API's.
                fault_spec = route.faults or stage.faults or api.faults
                fault_plan = fault_stage = None
                if fault_spec is not None:
                    fault_plan = build_plan(fault_spec, self.fault_rng, self.clock())
                    fault_stage = FaultStage(
                        fault_plan,
                        fault_counters(self.metrics, api.name, stage.name, key),
                        clock=self.clock,
                    )
                count = partial(self.metrics.throttled.labels, api.name, stage.name, key)
                named: tuple[tuple[str, Stage], ...] = (
                    *front_named,
                    *iam_named,
                    *(((auth_name, auth_stage),) if auth_stage is not None else ()),
                    *((("api_key", key_stage),) if key_stage is not None else ()),
                    *(
                        (("throttle", self._throttle_stage(buckets, key_limits, levels, count)),)
                        if buckets or key_limits
                        else ()
                    ),
                    # Before validation and templates, which read the decoded body.
                    *compress_named,
                    *shaping,
                    # Last: right before the integration, after the request was let in.
                    *((("faults", fault_stage),) if fault_stage is not None else ()),
                )
                stages = tuple(s for _, s in named)
                # A route that configures no stage runs at most the account-wide throttle: left
                # untimed, so the lean path pays nothing for the per-stage histogram.
                lean = not named or (
                    len(named) == 1
                    and buckets == self.account_buckets
                    and key_limits is None
                    and named[0][0] == "throttle"
                )
                timed = () if lean else self._timed(named, api.name, stage.name, key)
                origin = _RouteOrigin(api, style, stage.name, key)
                respond = self._response_transform(route_where, api, route, stage.name, key)
                primary = self._variant(
                    route_where, origin, route, variables, False, stages, respond, timed
                )
                secondary = (
                    self._variant(
                        route_where, origin, route, canary_variables, True, stages, respond, timed
                    )
                    if canary_variables is not None
                    else None
                )
                if primary is None:
                    continue
                integration = primary.pipeline.integration
                static_headers = isinstance(integration, _StaticResponseHeaders)
                if isinstance(integration, _StaticResponseHeaders):
                    integration = integration.inner
                cached = isinstance(integration, CachingIntegration)
                self._add(
                    api,
                    style,
                    stage.name,
                    key,
                    hosts,
                    prefix,
                    primary,
                    secondary,
                    float(canary.percent) if canary else 0.0,
                    route.integration.type,
                    synthetic=False,
                    pipeline=(
                        *(name for name, _ in named),
                        *(("cache",) if cached else ()),
                        *(("response_transform",) if respond is not None else ()),
                        *(("response_headers",) if static_headers else ()),
                    ),
                    faults=fault_stage,
                    config_faults=fault_plan,
                )
            if "$default" not in route_items:
                # Policy and CORS also guard unmatched paths: this is where preflights for paths
                # without an OPTIONS route land, and CorsStage answers them.
                fallback_timed = self._timed(front_named, api.name, stage.name, "$default")
                fallback = Variant(
                    variables, _pipeline(front, _NotFound(style), fallback_timed), False
                )
                self._add(
                    api,
                    style,
                    stage.name,
                    "$default",
                    hosts,
                    prefix,
                    fallback,
                    None,
                    0.0,
                    "not_found",
                    synthetic=True,
                    pipeline=tuple(name for name, _ in front_named),
                )

    def _add(
        self,
        api: Any,
        style: Style,
        stage: str,
        key: str,
        hosts: tuple[str | None, ...],
        prefix: str,
        primary: Variant,
        canary: Variant | None,
        canary_percent: float,
        kind: str,
        synthetic: bool,
        pipeline: tuple[str, ...] = (),
        faults: FaultStage | None = None,
        config_faults: FaultPlan | None = None,
    ) -> None:
        route_id = len(self.routes)
        self.routes.append(
            CompiledRoute(
                route_id=route_id,
                api=api.name,
                stage=stage,
                key=key,
                style=style,
                hosts=hosts,
                path_prefix=prefix,
                primary=primary,
                canary_variant=canary,
                canary_percent=canary_percent,
                metrics=self.metrics.route(api.name, stage, key, style.value),
                integration_kind=kind,
                synthetic=synthetic,
                pipeline=pipeline,
                faults=faults,
                config_faults=config_faults,
            )
        )
        for host in hosts:
            self.entries.append((host, prefix, key, route_id))
        self.by_stage.setdefault((api.name, stage), []).append(route_id)

    def _map_domains(self) -> None:
        """Mounts each API mapping of a custom domain: the stage's compiled routes once more,
        under the domain's name and the mapping's base path. The pipelines are shared with the
        API's own mounts, so throttle buckets, caches and upstream pools stay one per route."""
        for index, domain in enumerate(self.loaded.config.domains):
            for number, mapping in enumerate(domain.mappings):
                where = f"domains[{index}].mappings[{number}]"
                prefix = mapping.prefix
                if not self._claim_mount(where, mapping.api, (domain.name,), prefix):
                    continue
                for route_id in self.by_stage.get((mapping.api, mapping.stage), ()):
                    mapped = replace(
                        self.routes[route_id],
                        route_id=len(self.routes),
                        hosts=(domain.name,),
                        path_prefix=prefix,
                        mapped=True,
                    )
                    self.routes.append(mapped)
                    self.entries.append((domain.name, prefix, mapped.key, mapped.route_id))

    def _check_domain_certificates(self, tls: TlsMaterial) -> None:
        for index, domain in enumerate(self.loaded.config.domains):
            if not tls.covers(domain.name):
                self.issue(
                    f"domains[{index}].name",
                    f"no certificate in server.tls.certificates is for {domain.name}",
                    f"add a certificate whose SAN names include {domain.name}"
                    + (" (or a wildcard covering it)" if not domain.name.startswith("*.") else ""),
                )

    def _throttle_stage(
        self,
        buckets: list[int],
        key_limits: KeyLimits | None,
        levels: Sequence[str] = (),
        count: CountFor | None = None,
    ) -> Stage:
        """`levels` names each bucket's level; `count` gives the route's refusal counter of a
        level (refusals are not counted without it)."""
        if self.redis is not None:
            return RedisThrottleStage(self.redis, buckets, key_limits, levels, count)
        if self.shared is not None:
            # The stages only call acquire(), which _SharedBuckets forwards to the shared file.
            throttle = cast(Throttle, self.shared)
            return build_throttle_stage(throttle, buckets, key_limits, levels, count)
        assert isinstance(self.throttle, Throttle)
        return build_throttle_stage(self.throttle, buckets, key_limits, levels, count)

    def _timed(
        self, named: Sequence[tuple[str, Stage]], api: str, stage: str, key: str
    ) -> tuple[tuple[Stage, StageTimer], ...]:
        """Each stage with its pygw_stage_seconds child, resolved now rather than per request."""
        family = self.metrics.stage_seconds
        return tuple((s, family.labels(api, stage, key, name)) for name, s in named)

    def _claim_mount(
        self, where: str, api_name: str, hosts: tuple[str | None, ...], prefix: str
    ) -> bool:
        for host in hosts:
            other = self.mounts.get((host, prefix))
            if other is not None:
                self.issue(
                    where,
                    f"api {api_name!r} and api {other!r} both serve host {host or '*'} "
                    f"under {prefix or '/'}",
                    "give one of them a different base_path, stage or hosts",
                )
                return False
            self.mounts[(host, prefix)] = api_name
        return True

    def _websocket_api(self, where: str, api: Any) -> None:
        """A websocket API is one `$default` route per mount: the integration upgrades the
        connection and selects routes per message itself. Its message routes are compiled here
        like any other route's: targets, authorizer and throttle buckets in this gateway's
        backend, so their limits are shared by every connection, worker and host."""
        base_path = (api.base_path or "").rstrip("/")
        hosts: tuple[str | None, ...] = tuple(api.hosts) if api.hosts else (None,)
        policy = build_resource_policy_stage(api)
        front: tuple[Stage, ...] = (policy,) if policy is not None else ()
        try:
            selection = selection_path(api.route_selection)
        except ValueError as bad:
            self.issue(f"{where}.route_selection", str(bad), "use $request.body.FIELD")
            return
        for stage_index, stage in enumerate(api.stages):
            prefix = base_path if stage.name == "$default" else f"{base_path}/{stage.name}"
            if not self._claim_mount(f"{where}.stages[{stage_index}]", api.name, hosts, prefix):
                return
            variables = dict(stage.variables or {})
            routes = self._websocket_routes(where, api, stage, variables)
            if routes is None:
                continue
            settings = api.websocket
            integration = WebSocketApiIntegration(
                api_name=api.name,
                stage=stage.name,
                routes=routes,
                selection=selection,
                registry=self.registry,
                idle_timeout_s=settings.idle_timeout_s,
                max_duration_s=settings.max_duration_s,
                max_message_bytes=settings.max_message_bytes,
                metrics=self.metrics,
            )
            count = partial(self.metrics.throttled.labels, api.name, stage.name, "$default")
            stages: tuple[Stage, ...] = front
            if self.account_buckets:
                throttle = self._throttle_stage(
                    self.account_buckets, None, self.account_levels, count
                )
                stages = (*front, throttle)
            variant = Variant(variables, Pipeline(stages, integration), False)
            self._add(
                api,
                Style.WEBSOCKET,
                stage.name,
                "$default",
                hosts,
                prefix,
                variant,
                None,
                0.0,
                "websocket",
                synthetic=False,
                pipeline=(
                    *(("resource_policy",) if policy is not None else ()),
                    *(("throttle",) if self.account_buckets else ()),
                ),
            )
            self._connections_api(api, stage, hosts, prefix, stages)

    def _websocket_routes(
        self, where: str, api: Any, stage: Any, variables: dict[str, str]
    ) -> dict[str, WsRoute] | None:
        """The routes of one WebSocket mount, or None after recording why one cannot be built.
        A message takes from the account's, the stage's and its route's buckets (AWS's levels);
        $connect keeps the account bucket of the handshake's own pipeline."""
        events = EventFormat(api.name, stage.name, variables)
        common = list(self.account_buckets)
        common_levels = list(self.account_levels)
        if stage.throttle is not None:
            common.append(self.throttle.add_bucket(stage.throttle.rate, stage.throttle.burst))
            common_levels.append(STAGE)
        routes: dict[str, WsRoute] = {}
        failures = len(self.issues)
        for key, route in api.routes.items():
            route_where = f"{where}.routes.{key}"
            if route.authorizer is not None and key != CONNECT:
                self.issue(
                    f"{route_where}.authorizer",
                    f"route {key!r}: only $connect can have an authorizer in a WebSocket API",
                    "move the authorizer to the $connect route",
                )
                continue
            target = self._websocket_target(
                f"{route_where}.integration", key, route.integration, events, stage.name, variables
            )
            auth = self._auth_stage(route_where, api, route, stage.name, key)
            throttle: Stage | None = None
            if key not in (CONNECT, DISCONNECT):
                buckets, levels = list(common), list(common_levels)
                if route.throttle is not None:
                    buckets.append(
                        self.throttle.add_bucket(route.throttle.rate, route.throttle.burst)
                    )
                    levels.append(ROUTE)
                if buckets:
                    count = partial(self.metrics.throttled.labels, api.name, stage.name, key)
                    throttle = self._throttle_stage(buckets, None, levels, count)
            if target is not None:
                routes[key] = WsRoute(key, target, route.route_response, auth, throttle)
        return routes if len(self.issues) == failures else None

    def _function_handler(
        self, where: str, spec: Any, context: str = ""
    ) -> Callable[..., Any] | None:
        """A function integration's handler, imported with its environment set (modules commonly
        read it at import) from its own folders first; None, with the issue noted, when it cannot
        be imported."""
        os.environ.update(spec.environment)
        folders = [self.loaded.resolve(folder) for folder in spec.python_path]
        try:
            return load_handler(spec.handler, [*folders, *self.loaded.python_paths()])
        except ValueError as bad:
            self.issue(
                f"{where}.handler",
                f"{context}{bad}",
                "check the module name, python_path and the callable's name",
            )
            return None

    def _websocket_target(
        self,
        where: str,
        key: str,
        spec: Any,
        events: EventFormat,
        stage: str,
        variables: dict[str, str],
    ) -> Target | None:
        kind = spec.type
        if kind == "function":
            handler = self._function_handler(where, spec, f"route {key!r}: ")
            if handler is None:
                return None
            name = spec.function_name or spec.handler.replace(":", "-").replace(".", "-")
            runner = LambdaRunner(handler, name, spec.timeout_ms, spec.memory_mb)
            return FunctionTarget(runner, events)
        if kind == "lambda":
            url = invocation_url(spec.endpoint, spec.function_name, spec.qualifier)
            invoker = InvokeApiRunner(
                url, spec.function_name, spec.timeout_ms, spec.max_connections
            )
            return FunctionTarget(invoker, events)
        if kind == "http_proxy":
            uri = spec.uri
            if uri is None and spec.targets:
                uri = spec.targets[0].url
            if not uri:
                self.issue(f"{where}.uri", f"route {key!r}: http_proxy needs a uri", "set uri")
                return None
            uri = self._substitute(f"{where}.uri", stage, uri, variables)
            if not re.match(r"^https?://", uri) or "{" in uri:
                self.issue(
                    f"{where}.uri",
                    f"route {key!r}: uri {uri!r} is not a full http(s) URL",
                    "a WebSocket route posts each event to one URL: no path parameters",
                )
                return None
            return HttpTarget(uri, spec.timeout_ms, spec.connect_timeout_ms)
        if kind == "mock":
            body, _ = spec.encoded_body()
            return MockTarget(spec.status, body)
        self.issue(
            f"{where}.type",
            f"route {key!r}: integration type {kind!r} is not available",
            "use http_proxy, function, lambda or mock",
        )
        return None

    def _connections_api(
        self,
        api: Any,
        stage: Any,
        hosts: tuple[str | None, ...],
        prefix: str,
        stages: tuple[Stage, ...],
    ) -> None:
        """/{stage}/@connections/{id} on the WebSocket API's own mount, when configured."""
        settings = api.connections_api
        if settings is None:
            return
        verifier = self.sigv4 if settings.authorization == "aws_iam" else None
        if settings.authorization == "aws_iam" and verifier is None:
            return  # the iam section's own issue says why
        management = ConnectionsApi(self.registry, verifier, api.websocket.max_message_bytes)
        variant = Variant(dict(stage.variables or {}), Pipeline(stages, management), False)
        for key in CONNECTIONS_ROUTE_KEYS:
            self._add(
                api,
                Style.WEBSOCKET,
                stage.name,
                key,
                hosts,
                prefix,
                variant,
                None,
                0.0,
                "connections_api",
                synthetic=False,
            )

    def _auth_stage(self, where: str, api: Any, route: Any, stage: str, key: str) -> Stage | None:
        """The route's authorizer; the model has already checked that the name exists."""
        if route.authorizer is None:
            return None
        authorizer = api.authorizers[route.authorizer]
        try:
            if authorizer.type == "jwt":
                return build_jwt_stage(authorizer, route, self.loaded)
            if authorizer.type == "cognito_user_pools":
                return build_cognito_stage(authorizer, route, self.loaded)
            return build_custom_auth_stage(authorizer, route, api, stage, self.loaded, key)
        except ValueError as bad:
            self.issue(
                f"{where}.authorizer",
                f"authorizer {route.authorizer!r}: {bad}",
                "fix the authorizer's definition under authorizers",
            )
            return None

    def _shaping_stages(
        self, where: str, api: Any, route: Any, stage: str, key: str
    ) -> tuple[tuple[str, Stage], ...]:
        """Request validation, then the request template or parameter mapping (with their
        names in pygw_stage_seconds)."""
        limit = self.loaded.config.server.limits.max_body_bytes
        found: list[tuple[str, Stage]] = []
        try:
            validate = build_validate_stage(api, route, max_body_bytes=limit)
            if validate is not None:
                found.append(("validate", validate))
        except ValueError as bad:
            self.issue(f"{where}.validate", str(bad), "fix the model or the route's validate")
        try:
            transform = build_request_transform_stage(
                api, route, stage, max_body_bytes=limit, route_key=key
            )
            if transform is not None:
                found.append(("transform", transform))
        except ValueError as bad:
            self.issue(f"{where}.templates", str(bad), "fix the route's templates or mapping")
        return tuple(found)

    def _response_transform(
        self, where: str, api: Any, route: Any, stage: str, key: str
    ) -> ResponseTransform | None:
        try:
            transform = build_response_transform(api, route, stage, key)
        except ValueError as bad:
            self.issue(f"{where}.templates", str(bad), "fix the route's response templates")
            return None
        if transform is not None and route.integration.type == "http_proxy":
            self.issue(
                f"{where}.integration",
                "response templates and mappings apply to mock and function integrations only",
                "drop the response part or use a function integration",
            )
            return None
        return transform

    def _variant(
        self,
        where: str,
        origin: _RouteOrigin,
        route: Any,
        variables: dict[str, str],
        canary: bool,
        stages: tuple[Stage, ...],
        respond: ResponseTransform | None,
        timed: tuple[tuple[Stage, StageTimer], ...] = (),
    ) -> Variant | None:
        integration = self._integration(
            f"{where}.integration", origin, route.integration, variables
        )
        if integration is None:
            return None
        if respond is not None:
            integration = _TransformedResponses(integration, respond)
        minimum_size = getattr(origin.api, "minimum_compression_size", None)
        if minimum_size is not None:
            # AWS compresses what the response templates produced.
            integration = CompressingIntegration(integration, minimum_size)
        # The cache keeps what the client got: the transformed (and encoded) answer.
        uncached = integration
        integration = wrap_with_cache(
            integration,
            origin.api,
            route,
            origin.key,
            origin.stage,
            self.caches,
            metrics_hit=self.metrics.cache_hits.labels(origin.api.name, origin.stage),
            metrics_miss=self.metrics.cache_misses.labels(origin.api.name, origin.stage),
            by_coding=minimum_size is not None,
        )
        if integration is not uncached and self.loaded.config.telemetry is not None:
            integration = TracedCache(integration)
        static = getattr(route.integration, "response_headers", None)
        if static:
            integration = _StaticResponseHeaders(integration, dict(static))
        return Variant(variables, _pipeline(stages, integration, timed), canary)

    def _substitute(self, where: str, stage: str, text: str, variables: dict[str, str]) -> str:
        def replace(found: re.Match[str]) -> str:
            name = found.group(1)
            if name not in variables:
                self.issue(
                    where,
                    f"stage {stage!r} has no variable {name!r}",
                    f"add {name} to the stage's variables",
                )
                return ""
            return variables[name]

        return _STAGE_VARIABLE.sub(replace, text)

    def _integration(
        self, where: str, origin: _RouteOrigin, spec: Any, variables: dict[str, str]
    ) -> Integration | None:
        kind = spec.type
        stage = origin.stage
        if kind == "mock":
            return _mock(spec, self.clock)
        if kind == "function":
            handler = self._function_handler(where, spec)
            if handler is None:
                return None
            return FunctionIntegration(
                handler,
                payload_format=spec.payload_format,
                timeout_ms=spec.timeout_ms,
                style=origin.style,
                api_name=origin.api.name,
                stage=stage,
                route_key=origin.key,
                binary_media_types=origin.api.binary_media_types,
                function_name=spec.function_name,
                memory_mb=spec.memory_mb,
            )
        if kind == "lambda":
            return LambdaInvokeIntegration(
                function_name=spec.function_name,
                endpoint=spec.endpoint,
                qualifier=spec.qualifier,
                payload_format=spec.payload_format,
                timeout_ms=spec.timeout_ms,
                max_connections=spec.max_connections,
                style=origin.style,
                api_name=origin.api.name,
                stage=stage,
                route_key=origin.key,
                binary_media_types=origin.api.binary_media_types,
            )
        if kind == "http_proxy":
            uri = self._substitute(f"{where}.uri", stage, spec.uri, variables) if spec.uri else None
            targets: Sequence[tuple[str, int]] = [
                (self._substitute(f"{where}.targets", stage, target.url, variables), target.weight)
                for target in (spec.targets or [])
            ]
            shared_tls: UpstreamTls | None = None
            target_tls: list[UpstreamTls | None] = []
            failures = len(self.issues)
            insecure = not spec.tls_verify
            if targets:
                for index, ((url, _), target) in enumerate(zip(targets, spec.targets, strict=True)):
                    own = f"{where}.targets[{index}].tls"
                    target_tls.append(
                        self.upstream_tls.for_target(
                            url,
                            target.tls,
                            spec.tls,
                            own if target.tls is not None else f"{where}.tls",
                            insecure,
                        )
                    )
            elif uri is not None:
                shared_tls = self.upstream_tls.for_target(
                    uri, None, spec.tls, f"{where}.tls", insecure
                )
            if len(self.issues) > failures:
                return None
            try:
                proxy = HttpProxyIntegration(
                    uri=uri,
                    targets=targets,
                    balance=spec.balance,
                    timeout_ms=spec.timeout_ms,
                    connect_timeout_ms=spec.connect_timeout_ms,
                    max_connections=spec.max_connections,
                    retries=spec.retries,
                    failure_threshold=spec.health.failures,
                    cooldown_s=spec.health.cooldown_s,
                    tls=shared_tls,
                    target_tls=target_tls,
                    # WebSocket upgrades relayed through this route obey the body limit per message.
                    websocket_max_message_bytes=self.loaded.config.server.limits.max_body_bytes,
                )
            except ValueError as bad:
                self.issue(f"{where}.uri", str(bad), "use only the route's path parameters")
                return None
            self.proxies.append(proxy)
            return proxy
        self.issue(
            f"{where}.type",
            f"integration type {kind!r} is not available in this version",
            "use http_proxy, function, lambda or mock",
        )
        return None


def _pipeline(
    stages: tuple[Stage, ...],
    integration: Integration,
    timed: tuple[tuple[Stage, StageTimer], ...],
) -> Pipeline:
    if timed:
        return TimedPipeline(stages, integration, timed)
    return Pipeline(stages, integration)


def _mock(spec: Any, clock: Clock) -> MockIntegration:
    headers = dict(spec.headers or {})
    payload, content_type = spec.encoded_body()
    if content_type is not None and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = content_type
    latency = None
    timeline = None
    if spec.latency_ms is not None:
        if spec.latency_ms.schedule:
            timeline = Timeline.of(100.0, spec.latency_ms.schedule)
        latency = Latency(
            fixed_ms=getattr(spec.latency_ms, "fixed", None),
            p50_ms=getattr(spec.latency_ms, "p50", None),
            p99_ms=getattr(spec.latency_ms, "p99", None),
        )
    faults = None
    if spec.faults is not None:
        faults = Faults(rate=spec.faults.rate, status=spec.faults.status, reset=spec.faults.reset)
    return MockIntegration(
        status=spec.status,
        headers=headers,
        body=payload,
        latency=latency,
        faults=faults,
        latency_timeline=timeline,
        clock=clock,
    )


def compile_runtime(
    loaded: LoadedConfig,
    metrics: Metrics,
    registry: ConnectionRegistry | None = None,
    listen: str | None = None,
    clock: Clock = time.monotonic,
) -> Runtime:
    """`registry` holds the websocket connections; it outlives snapshots (connections survive a
    reload), so the server passes its own. Commands that only compile get a throwaway one."""
    if registry is None:
        registry = ConnectionRegistry()
    where = f"{loaded.path}|{listen or loaded.config.server.listen}"
    shared_key = hashlib.sha256(where.encode()).hexdigest()[:12]
    return _Compiler(loaded, metrics, registry, shared_key, clock).compile()
