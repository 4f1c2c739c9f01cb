"""What `pygw bench` measures: the servers it starts and the scenarios it drives against them.

A `Server` is one process to start (an nginx, the plain aiohttp proxy, or `pygw serve` on a
generated config). A `Scenario` is one load run against a server: a path, headers, and optionally a
wrk Lua script (for requests that must differ, e.g. unique query strings for cache misses).

Every pygw config turns the account-wide throttle off (`throttle: null`) and the access log too,
so that only the features a scenario names shape its figures: the bare route is the lean path (an
http_proxy integration and no stage at all), and a scenario with throttling configures it on the
route or the usage plan.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.proxy_bench import UPSTREAM_BODY

SMALL_BODY = '{"id":"42","name":"an item","price":9.5}'
BIG_BODY_BYTES = 64 * 1024
REQUEST_PATH = "/items/42"
API_KEY = "bench-key-0123456789abcdef"
ORIGIN = "https://bench.example"
JWT_ISSUER = "https://idp.bench.example"
JWT_AUDIENCE = "bench"
HIGH_THROTTLE = {"rate": 1_000_000, "burst": 1_000_000}
# What browsers send: gzip is chosen.
ACCEPT_ENCODING = {"accept-encoding": "gzip, deflate, br"}
# Routes of the route-table scenarios that the load spreads over (see `routes_lua`).
ROUTE_SAMPLE = 64

# Groups, in report order.
PEERS = "peers"
STYLES = "styles"
ROUTES = "route table"
STAGES = "stages"
WORKERS = "workers"
BIG = "64 KiB body"


def big_body() -> str:
    """A 64 KiB JSON body (ASCII, so its length in bytes is its length in characters)."""
    head, tail = '{"data":"', '"}'
    return head + "x" * (BIG_BODY_BYTES - len(head) - len(tail)) + tail


@dataclass(frozen=True)
class Server:
    """A process to start. `kind` is upstream, upstream_big, nginx, aiohttp or pygw."""

    name: str
    kind: str
    upstream: str = "small"  # which upstream it forwards to: small or big
    config: dict[str, Any] | None = None  # pygw only, without server/admin (filled at start)
    workers: int = 1
    ready_path: str = REQUEST_PATH
    ready_headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    group: str
    server: str
    path: str = REQUEST_PATH
    headers: dict[str, str] = field(default_factory=dict)
    # "unique": a fresh query string per request; "routes": a random route of the table.
    lua: str | None = None
    routes: int = 0
    # The scenario its stage cost is measured against (stage scenarios only).
    baseline: str | None = None
    # Also measured at a fixed offered rate (open loop).
    fixed_rate: bool = False


# --------------------------------------------------------------------------------------------------
# pygw configs


def _proxy(upstream_port: int, path: str = "/{proxy}") -> dict[str, Any]:
    return {"type": "http_proxy", "uri": f"http://127.0.0.1:{upstream_port}{path}"}


def pygw_base(apis: list[dict[str, Any]]) -> dict[str, Any]:
    return {"throttle": None, "access_log": None, "apis": apis}


def http_api(routes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": "bench",
        "type": "http",
        "stages": [{"name": "$default"}],
        **extra,
        "routes": routes,
    }


def rest_api(routes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": "bench",
        "type": "rest",
        "stages": [{"name": "$default"}],
        **extra,
        "routes": routes,
    }


def jwt_authorizers(jwks_path: Path) -> dict[str, Any]:
    return {
        "users": {
            "type": "jwt",
            "issuer": JWT_ISSUER,
            "audience": [JWT_AUDIENCE],
            "jwks": f"file://{jwks_path}",
            "algorithms": ["RS256"],
        }
    }


def cors() -> dict[str, Any]:
    return {
        "allow_origins": [ORIGIN],
        "allow_methods": ["GET", "POST"],
        "allow_headers": ["authorization"],
    }


def api_keys() -> list[dict[str, Any]]:
    return [{"id": "bench", "value": API_KEY}]


def usage_plans() -> list[dict[str, Any]]:
    return [
        {
            "name": "bench",
            "keys": ["bench"],
            "throttle": dict(HIGH_THROTTLE),
            "quota": {"limit": 10**15, "period": "MONTH"},
        }
    ]


def bare_http(upstream_port: int) -> dict[str, Any]:
    """The lean path: one `ANY /{proxy+}` http_proxy route, no other stage."""
    return pygw_base([http_api({"ANY /{proxy+}": {"integration": _proxy(upstream_port)}})])


def mock_http() -> dict[str, Any]:
    """An answer from memory: `GET /items/{id}` with a mock integration and the upstream's body."""
    mock = {"type": "mock", "status": 200, "body": json.loads(UPSTREAM_BODY)}
    return pygw_base([http_api({"GET /items/{id}": {"integration": mock}})])


def rest_config(upstream_port: int, api: dict[str, Any], route: dict[str, Any]) -> dict[str, Any]:
    routes = {"GET /items/{id}": {"integration": _proxy(upstream_port, "/items/{id}"), **route}}
    return pygw_base([rest_api(routes, **api)])


def http_config(upstream_port: int, api: dict[str, Any], route: dict[str, Any]) -> dict[str, Any]:
    routes = {"GET /items/{id}": {"integration": _proxy(upstream_port, "/items/{id}"), **route}}
    return pygw_base([http_api(routes, **api)])


def route_table(upstream_port: int, size: int) -> dict[str, Any]:
    """`size` routes `GET /{tenant}/svc{i}/items/{id}`: a parameter first, as a multi-tenant API."""
    # A fresh dict per route: one shared dict would be written as YAML anchors and aliases.
    routes = {
        f"GET /{{tenant}}/svc{i}/items/{{id}}": {
            "integration": _proxy(upstream_port, "/items/{id}")
        }
        for i in range(size)
    }
    return pygw_base([http_api(routes)])


def route_sample(size: int) -> list[int]:
    """The routes the load goes to: spread over the whole table, last route included."""
    count = min(ROUTE_SAMPLE, size)
    return sorted({(size - 1) * k // max(count - 1, 1) for k in range(count)})


def mock_config(
    p50_ms: float, p99_ms: float, fault_rate: float, fault_status: int
) -> dict[str, Any]:
    route = {
        "integration": {
            "type": "mock",
            "body": {"ok": True},
            "latency_ms": {"p50": p50_ms, "p99": p99_ms},
            "faults": {"rate": fault_rate, "status": fault_status},
        }
    }
    return pygw_base([http_api({"GET /mock": route})])


def with_listen(config: dict[str, Any], port: int, admin_port: int, workers: int) -> str:
    full = {
        "server": {"listen": f"127.0.0.1:{port}", "workers": workers},
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        **config,
    }
    return yaml.safe_dump(full, sort_keys=False)


# --------------------------------------------------------------------------------------------------
# JWT


@dataclass(frozen=True)
class JwtMaterial:
    jwks_path: Path
    token: str


def make_jwt(directory: Path, lifetime_s: int = 86_400) -> JwtMaterial:
    """A fresh RSA key, its JWKS file in `directory`, and a token signed with it."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "bench", "alg": "RS256", "use": "sig"})
    path = directory / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    claims = {
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "sub": "bench-user",
        "iat": now,
        "exp": now + lifetime_s,
        "scope": "items/read",
    }
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})
    return JwtMaterial(path, token)


# --------------------------------------------------------------------------------------------------
# SigV4

SIGV4_KEY = "AKIABENCH0000000KEY1"
SIGV4_SECRET = "bench-secret-key"
SIGV4_REGION = "us-east-1"
SIGV4_HOST = "sigv4.bench"
# wrk replays one signed request, and a signature is good for 15 minutes either side of its date:
# dated this far ahead, it is accepted from a minute before the plan until 29 minutes after it,
# longer than a full run.
SIGV4_AHEAD_S = 14 * 60


def sigv4_material(directory: Path, path: str = REQUEST_PATH) -> tuple[Path, dict[str, str]]:
    """A credentials file for pygw's iam section, and the headers of a GET of `path` signed
    with its key (signed here with hashlib and hmac: an implementation apart from pygw's)."""
    credentials = directory / "iam-credentials.yaml"
    credentials.write_text(
        yaml.safe_dump(
            [
                {
                    "access_key_id": SIGV4_KEY,
                    "secret_access_key": SIGV4_SECRET,
                    "arn": "arn:aws:iam::123456789012:user/bench",
                    "account_id": "123456789012",
                }
            ]
        )
    )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() + SIGV4_AHEAD_S))
    scope = f"{stamp[:8]}/{SIGV4_REGION}/execute-api/aws4_request"
    canonical = "\n".join(
        (
            "GET",
            path,
            "",
            f"host:{SIGV4_HOST}\nx-amz-date:{stamp}\n",
            "host;x-amz-date",
            hashlib.sha256(b"").hexdigest(),
        )
    )
    to_sign = "\n".join(
        ("AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest())
    )
    key = ("AWS4" + SIGV4_SECRET).encode()
    for part in (stamp[:8], SIGV4_REGION, "execute-api", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers = {
        # Spelled as wrk spells its own Host header, which this one then replaces (a "host"
        # would be sent besides it, and the signed value would be the two joined).
        "Host": SIGV4_HOST,
        "x-amz-date": stamp,
        "authorization": f"AWS4-HMAC-SHA256 Credential={SIGV4_KEY}/{scope}, "
        f"SignedHeaders=host;x-amz-date, Signature={signature}",
    }
    return credentials, headers


# --------------------------------------------------------------------------------------------------
# wrk Lua scripts


def unique_lua(path: str, run_id: str) -> str:
    """Each request carries a query string no earlier request had (a cache miss every time).

    `run_id` must differ between runs: wrk's Lua random generator is never seeded, so anything
    drawn from it repeats in every run (and in every thread), and a second round would then ask
    again for what the first one stored. Threads are told apart by setup() instead."""
    sep = "&" if "?" in path else "?"
    return f"""local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "{path}{sep}n={run_id}-" .. thread_id .. "-" .. counter)
end
"""


def routes_lua(size: int) -> str:
    picks = ", ".join(str(i) for i in route_sample(size))
    return f"""local picks = {{{picks}}}
request = function()
  local i = picks[math.random(1, #picks)]
  return wrk.format(nil, "/t" .. math.random(0, 999) .. "/svc" .. i .. "/items/42")
end
"""


def lua_for(scenario: Scenario) -> str | None:
    """The wrk script of one run of the scenario (call it again for every run)."""
    if scenario.lua == "unique":
        return unique_lua(scenario.path, secrets.token_hex(6))
    if scenario.lua == "routes":
        return routes_lua(scenario.routes)
    return None


# --------------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class Plan:
    servers: list[Server]
    scenarios: list[Scenario]


def build_plan(
    upstream_port: int, big_upstream_port: int, jwt: JwtMaterial, route_sizes: list[int]
) -> Plan:
    """Every server and scenario; upstream ports are needed for the pygw configs."""
    auth = {"authorization": f"Bearer {jwt.token}"}
    origin = {"origin": ORIGIN}
    key = {"x-api-key": API_KEY}
    tenant = {"x-tenant": "t1"}
    lang = "?lang=en"
    jwt_api = {"authorizers": jwt_authorizers(jwt.jwks_path)}
    rest_full_api = {
        "api_keys": api_keys(),
        "usage_plans": usage_plans(),
        "cache": {"capacity_mb": 256, "ttl_s": 3600},
    }
    rest_full_route = {
        "api_key_required": True,
        "validate": {"params": ["querystring.lang", "header.x-tenant"]},
        "cache": {"ttl_s": 3600, "key_params": ["querystring.lang", "querystring.n"]},
    }
    cache_api = {"cache": {"capacity_mb": 256, "ttl_s": 3600}}
    cache_route = {"cache": {"ttl_s": 3600, "key_params": ["querystring.n"]}}
    no_cache_route = {"cache": {"ttl_s": 0}}
    iam_credentials, signed = sigv4_material(jwt.jwks_path.parent)
    iam_config = {
        **http_config(upstream_port, {}, {"authorization": "aws_iam"}),
        "iam": {"region": SIGV4_REGION, "credentials_file": str(iam_credentials)},
    }

    servers = [
        Server("upstream", "upstream"),
        Server("upstream_big", "upstream_big"),
        Server("nginx", "nginx"),
        Server("nginx_big", "nginx", upstream="big"),
        Server("aiohttp", "aiohttp"),
        Server("aiohttp_big", "aiohttp", upstream="big"),
        Server("pygw_bare", "pygw", config=bare_http(upstream_port)),
        Server("pygw_bare_big", "pygw", upstream="big", config=bare_http(big_upstream_port)),
        Server("pygw_workers2", "pygw", config=bare_http(upstream_port), workers=2),
        Server("pygw_mock_route", "pygw", config=mock_http()),
        Server(
            "pygw_http_full",
            "pygw",
            config=http_config(
                upstream_port,
                {**jwt_api, "cors": cors()},
                {"authorizer": "users", "throttle": dict(HIGH_THROTTLE)},
            ),
            ready_headers={**auth, **origin},
        ),
        Server(
            "pygw_rest_full",
            "pygw",
            config=rest_config(upstream_port, rest_full_api, rest_full_route),
            ready_path=REQUEST_PATH + lang + "&n=ready",
            ready_headers={**key, **tenant},
        ),
        # Stage costs: each stage alone on the same one-route API as its baseline.
        Server("pygw_http_route", "pygw", config=http_config(upstream_port, {}, {})),
        Server(
            "pygw_stage_jwt",
            "pygw",
            config=http_config(upstream_port, jwt_api, {"authorizer": "users"}),
            ready_headers=auth,
        ),
        Server("pygw_stage_cors", "pygw", config=http_config(upstream_port, {"cors": cors()}, {})),
        Server("pygw_stage_sigv4", "pygw", config=iam_config, ready_headers=signed),
        Server(
            "pygw_stage_throttle",
            "pygw",
            config=http_config(upstream_port, {}, {"throttle": dict(HIGH_THROTTLE)}),
        ),
        # A faults stage that never fires (0 %): what having one costs the requests it spares.
        Server(
            "pygw_stage_faults",
            "pygw",
            config=http_config(
                upstream_port, {}, {"faults": {"abort": {"status": 503, "percent": 0}}}
            ),
        ),
        Server("pygw_rest_route", "pygw", config=rest_config(upstream_port, {}, {})),
        Server(
            "pygw_stage_api_key",
            "pygw",
            # The key stage alone: the key is in no usage plan, accepted as configured here.
            config=rest_config(
                upstream_port,
                {"api_keys": api_keys(), "api_keys_need_usage_plan": False},
                {"api_key_required": True},
            ),
            ready_headers=key,
        ),
        Server(
            "pygw_stage_usage_plan",
            "pygw",
            config=rest_config(
                upstream_port,
                {"api_keys": api_keys(), "usage_plans": usage_plans()},
                {"api_key_required": True},
            ),
            ready_headers=key,
        ),
        Server(
            "pygw_stage_validate",
            "pygw",
            config=rest_config(
                upstream_port,
                {},
                {"validate": {"params": ["querystring.lang", "header.x-tenant"]}},
            ),
            ready_path=REQUEST_PATH + lang,
            ready_headers=tenant,
        ),
        Server(
            "pygw_stage_cache",
            "pygw",
            config=rest_config(upstream_port, cache_api, cache_route),
            ready_path=REQUEST_PATH + "?n=ready",
        ),
        Server(
            "pygw_stage_cache_off",
            "pygw",
            config=rest_config(upstream_port, cache_api, no_cache_route),
        ),
        # Compression: the stage alone (answers below the minimum), then every answer gzipped.
        Server(
            "pygw_stage_compress",
            "pygw",
            config=rest_config(upstream_port, {"minimum_compression_size": 1024}, {}),
        ),
        Server(
            "pygw_stage_gzip",
            "pygw",
            config=rest_config(upstream_port, {"minimum_compression_size": 0}, {}),
        ),
    ]
    for size in route_sizes:
        servers.append(
            Server(
                f"pygw_routes_{size}",
                "pygw",
                config=route_table(upstream_port, size),
                ready_path=f"/t1/svc{size - 1}/items/42",
            )
        )

    full_rest_path = REQUEST_PATH + lang
    scenarios = [
        Scenario("direct", "upstream direct", PEERS, "upstream", fixed_rate=True),
        Scenario("nginx", "nginx reverse proxy", PEERS, "nginx", fixed_rate=True),
        Scenario("aiohttp", "plain aiohttp proxy", PEERS, "aiohttp", fixed_rate=True),
        Scenario(
            "pygw_bare", "pygw HTTP-style, bare proxy route", STYLES, "pygw_bare", fixed_rate=True
        ),
        Scenario(
            "pygw_mock_route",
            "pygw HTTP-style, mock route",
            STYLES,
            "pygw_mock_route",
            fixed_rate=True,
        ),
        Scenario(
            "pygw_http_full",
            "pygw HTTP-style, JWT + CORS + throttling",
            STYLES,
            "pygw_http_full",
            headers={**auth, **origin},
            fixed_rate=True,
        ),
        Scenario(
            "pygw_rest_miss",
            "pygw REST-style, API key + usage plan + validation + cache miss",
            STYLES,
            "pygw_rest_full",
            path=full_rest_path,
            headers={**key, **tenant},
            lua="unique",
            fixed_rate=True,
        ),
        Scenario(
            "pygw_rest_hit",
            "pygw REST-style, API key + usage plan + validation + cache hit",
            STYLES,
            "pygw_rest_full",
            path=full_rest_path + "&n=hit",
            headers={**key, **tenant},
            fixed_rate=True,
        ),
    ]
    scenarios += [
        Scenario(
            f"routes_{size}",
            f"pygw, {size:,} routes",
            ROUTES,
            f"pygw_routes_{size}",
            lua="routes",
            routes=size,
        )
        for size in route_sizes
    ]
    scenarios += [
        Scenario(
            "stage_http_route", "HTTP-style GET /items/{id} (baseline)", STAGES, "pygw_http_route"
        ),
        Scenario(
            "stage_jwt",
            "+ JWT authorizer",
            STAGES,
            "pygw_stage_jwt",
            headers=auth,
            baseline="stage_http_route",
        ),
        Scenario(
            "stage_cors",
            "+ CORS",
            STAGES,
            "pygw_stage_cors",
            headers=origin,
            baseline="stage_http_route",
        ),
        Scenario(
            "stage_sigv4",
            "+ SigV4 (AWS_IAM) authorization",
            STAGES,
            "pygw_stage_sigv4",
            headers=signed,
            baseline="stage_http_route",
        ),
        Scenario(
            "stage_throttle",
            "+ route throttle",
            STAGES,
            "pygw_stage_throttle",
            baseline="stage_http_route",
        ),
        Scenario(
            "stage_faults",
            "+ faults stage (0 %)",
            STAGES,
            "pygw_stage_faults",
            baseline="stage_http_route",
        ),
        Scenario(
            "stage_rest_route", "REST-style GET /items/{id} (baseline)", STAGES, "pygw_rest_route"
        ),
        Scenario(
            "stage_api_key",
            "+ API key",
            STAGES,
            "pygw_stage_api_key",
            headers=key,
            baseline="stage_rest_route",
        ),
        Scenario(
            "stage_usage_plan",
            "+ API key and usage plan",
            STAGES,
            "pygw_stage_usage_plan",
            headers=key,
            baseline="stage_rest_route",
        ),
        Scenario(
            "stage_validate",
            "+ parameter validation",
            STAGES,
            "pygw_stage_validate",
            path=REQUEST_PATH + lang,
            headers=tenant,
            baseline="stage_rest_route",
        ),
        Scenario(
            "stage_cache_off",
            "+ cache configured, route not cached",
            STAGES,
            "pygw_stage_cache_off",
            baseline="stage_rest_route",
        ),
        Scenario(
            "stage_cache_miss",
            "+ cache, miss",
            STAGES,
            "pygw_stage_cache",
            lua="unique",
            baseline="stage_rest_route",
        ),
        Scenario(
            "stage_cache_hit",
            "+ cache, hit",
            STAGES,
            "pygw_stage_cache",
            path=REQUEST_PATH + "?n=hit",
            baseline="stage_rest_route",
        ),
        Scenario(
            "stage_compress",
            "+ compression, answer below the minimum",
            STAGES,
            "pygw_stage_compress",
            headers=ACCEPT_ENCODING,
            baseline="stage_rest_route",
        ),
        Scenario(
            "stage_gzip",
            "+ compression, every answer gzipped",
            STAGES,
            "pygw_stage_gzip",
            headers=ACCEPT_ENCODING,
            baseline="stage_rest_route",
        ),
        Scenario("workers_2", "pygw bare, --workers 2", WORKERS, "pygw_workers2"),
        Scenario("direct_big", "upstream direct, 64 KiB", BIG, "upstream_big"),
        Scenario("nginx_big", "nginx reverse proxy, 64 KiB", BIG, "nginx_big"),
        Scenario("aiohttp_big", "plain aiohttp proxy, 64 KiB", BIG, "aiohttp_big"),
        Scenario("pygw_bare_big", "pygw bare proxy route, 64 KiB", BIG, "pygw_bare_big"),
    ]
    return Plan(servers, scenarios)
