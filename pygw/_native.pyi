"""Type stubs for the Rust extension (native/src/py)."""

import os
import pathlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, final

__version__: str

# --- throttle (native/src/py/throttle.rs) ---

GRANTED: Final[int]
"""`Throttle.acquire` status: every bucket gave a token and the quota had room."""
THROTTLED: Final[int]
"""`Throttle.acquire` status: a bucket had no token; nothing was taken."""
QUOTA_EXCEEDED: Final[int]
"""`Throttle.acquire` status: the quota for this period is spent; nothing was taken."""

def monotonic() -> float:
    """Seconds on the monotonic clock that `Throttle` and `ResponseCache` use by default."""

def rate_limit_headers(headers: dict[str, str], limit: int, remaining: int, reset_s: float) -> None:
    """Writes RateLimit-Limit/-Remaining/-Reset for a decision's tightest bucket into `headers`
    (nothing when all three are 0: no bucket was involved); the reset in whole seconds, rounded
    up, at most one day."""

@final
class Throttle:
    """Token buckets and quota counters; one `acquire` decides a request against several of them.

    Thread-safe: each call holds an internal lock for its own duration only.
    """

    def __init__(self) -> None: ...
    def add_bucket(self, rate: float, burst: int) -> int:
        """A bucket of capacity `burst` refilled at `rate` tokens/s (fractional allowed), starting
        full. Returns its id. Raises ValueError for a negative, NaN or infinite rate, or a burst
        outside 0..2**32-1. Rate 0: `burst` requests, then none; burst 0: always refused."""
    def add_quota(self, limit: int, period: str) -> int:
        """A counter allowing `limit` requests per UTC `period`: "DAY", "WEEK" (ISO, from Monday
        00:00 UTC) or "MONTH". Returns its id. Raises ValueError for another period or limit < 0."""
    def acquire(
        self,
        bucket_ids: Sequence[int],
        quota_id: int | None = None,
        now: float | None = None,
        unix_now: float | None = None,
    ) -> tuple[int, float, int, int, float, int | None]:
        """Decides one request: granted only if every bucket has a token and the quota has room
        (buckets checked first); then one token is taken from each bucket and one unit from the
        quota, otherwise nothing is taken. An id named twice counts once.

        `now` is monotonic seconds (default `monotonic()`); a clock going backwards refills nothing.
        `unix_now` is wall-clock seconds for quota periods (default: the system clock).

        Returns (status, retry_after_s, limit, remaining, reset_s, refused_by): status is GRANTED,
        THROTTLED or QUOTA_EXCEEDED; retry_after_s is 0 when granted, the time until every refusing
        bucket has a token when throttled (inf if one never will), the time until the next quota
        period when the quota is spent. limit/remaining/reset_s describe the tightest bucket (fewest
        whole tokens left after the decision; ties: slowest to refill): its burst, its whole tokens
        left, the seconds until it is full (inf if never). All three are 0 when `bucket_ids` is
        empty. refused_by, when THROTTLED, is the position in `bucket_ids` of the first bucket (in
        the order given) that had no token; None otherwise.

        Raises IndexError for an unknown id, ValueError for a NaN or infinite time.
        """
    def acquire_into(
        self,
        bucket_ids: Sequence[int],
        headers: dict[str, str],
        quota_id: int | None = None,
        now: float | None = None,
        unix_now: float | None = None,
    ) -> tuple[int, float, int, int, float, int | None] | None:
        """`acquire`, writing the decision's `RateLimit-Limit`, `RateLimit-Remaining` and
        `RateLimit-Reset` (whole seconds, rounded up, at most 86 400) into `headers` unless all
        three figures are 0; None when granted, else the decision as `acquire` returns it."""

# --- response cache (native/src/py/cache.rs) ---

# (lines, vary, has_content_type, has_server, has_date) of an answer without Vary.
_WholeHead = tuple[bytes, None, bool, bool, bool]

@final
class ResponseCache:
    """LRU cache bounded by bytes (UTF-8 key bytes + the size given to `put`) with per-entry TTL.

    Holds the objects it is given and returns the very same object on a hit (no copy).
    Thread-safe; times default to `monotonic()`.
    """

    def __init__(self, capacity_bytes: int) -> None:
        """Raises ValueError if capacity_bytes < 0."""
    def get(self, key: str, now: float | None = None) -> object | None:
        """The object put under `key`, marked most recently used; None on a miss. An entry whose
        TTL has run out is a miss and is removed. Raises ValueError for a NaN or infinite `now`."""
    def put(
        self, key: str, value: object, size: int, ttl_s: float, now: float | None = None
    ) -> bool:
        """Stores `value` for `ttl_s` seconds, evicting least recently used entries until
        len(key.encode()) + size fits. Returns False, storing nothing, if that alone exceeds the
        capacity or ttl_s is not > 0; any previous entry under `key` is removed either way.
        Raises ValueError if size < 0 or `now` is NaN or infinite."""
    def hit(self, key: str, own: dict[str, str]) -> object | None:
        """`get(key)`, for a GET answered from the cache: when the entry is a 6-tuple whose item
        4 (its stored head) is not None, as keep_whole makes, `own` gets hit_headers(own,
        entry[3]). Anything else is returned as get returns it, `own` untouched."""
    def keep_whole(
        self,
        key: str,
        head: _WholeHead,
        body: bytes,
        own_names: tuple[str, ...],
        ttl_s: float,
        stored_at: float,
    ) -> tuple[int, tuple[()], bytes, float, _WholeHead, tuple[str, ...]] | None:
        """Stores a whole 200 answer to a GET (its head without Vary) as the entry
        (200, (), body, stored_at, stored_head, own_names) and returns it; None, storing
        nothing, when stored_lines refuses the head. stored_head keeps what stored_lines keeps
        of head[0] and no Date. Charged len(body) + the kept lines + STORED_LINE_OVERHEAD per
        line (count from stored_lines). ValueError when head[1] is not None."""
    def invalidate(self, key: str) -> bool:
        """Removes `key`; True if it was held (expired or not)."""
    def clear(self) -> None:
        """Removes every entry; the counters are kept."""
    def stats(self) -> tuple[int, int, int, int, int]:
        """(hits, misses, evictions, entries, bytes_used); misses include expired lookups."""
    def __len__(self) -> int: ...

# --- router (native/src/py/router.rs) ---
RouteRow = tuple[str | None, str, str, int]

@final
class Router:
    """An immutable route table with API Gateway precedence.

    `routes`: `(host or None, prefix, route_key, route_id)`: host `None` (any host),
    `"api.example.com"` or `"*.example.com"`; prefix `""` or static segments such as
    `"/shop/v1"` (base path + stage); route_key `"GET /pets/{id}"`, `"ANY /{proxy+}"` or
    `"$default"`. The same route_id may appear under several hosts.
    Raises ValueError naming the key on a bad key, prefix or host, and naming both routes
    (keys and ids) when two routes match exactly the same requests.
    """

    def __init__(self, routes: Sequence[RouteRow]) -> None: ...
    def lookup(self, host: str, method: str, path: str) -> tuple[int, dict[str, str], str] | None:
        """Match a request: `path` is the raw path without the query string.

        Returns `(route_id, params, path_below_prefix)` or None. Params map each name to its
        raw (percent-encoded) value, in route-key order; a greedy one holds the rest of the path.
        Raises ValueError("invalid path: ...") for a path to refuse with 400.
        """
    def precedence_order(self) -> list[int]:
        """Distinct route ids in match-precedence order (hosts: exact, wildcard, any)."""
    def __len__(self) -> int: ...

def normalize_path(path: str) -> str:
    """The one normalised reading of a raw path: leading slashes collapsed, dot segments
    (also `%2e`) removed and clamped at the root, nothing decoded. ValueError on a path
    that does not start with '/' or holds a control character."""

@final
class SharedThrottle:
    """Token buckets and quota counters in a file mapping shared by the worker processes of one
    host (`state.backend: shared`): every process that opens the same `path` with the same table
    shares the same levels, so a limit of R/s is R/s in total. Lock-free; a worker killed mid-call
    leaks at most the tokens of its one request."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        buckets: list[tuple[float, int]],
        quotas: list[tuple[int, str]] = ...,
    ) -> None:
        """Creates the file (every bucket full, every quota unused) or attaches to it. `buckets`
        are (rate per second, burst), `quotas` (limit, "DAY" | "WEEK" | "MONTH"); bucket and quota
        ids are indexes into them. ValueError for bad values (rate < 0, NaN, > 1e9; burst outside
        0..2**32-1; limit outside 0..2**32-1; unknown period) and when an existing file was made for
        another table, format version or boot; OSError for file system failures."""
    def acquire(
        self,
        bucket_ids: list[int],
        quota_id: int | None = None,
        now: float | None = None,
        unix_now: float | None = None,
    ) -> tuple[int, float, int, int, float, int | None]:
        """Exactly as `Throttle.acquire`: (status, retry_after_s, limit, remaining, reset_s,
        refused_by). `now` defaults to `host_monotonic()`, `unix_now` to the wall clock."""
    def acquire_into(
        self,
        bucket_ids: list[int],
        headers: dict[str, str],
        quota_id: int | None = None,
        now: float | None = None,
        unix_now: float | None = None,
    ) -> tuple[int, float, int, int, float, int | None] | None:
        """Exactly as `Throttle.acquire_into`."""
    @property
    def path(self) -> pathlib.Path: ...
    @property
    def layout(self) -> int:
        """Hash of the bucket/quota table; equal tables give equal layouts."""
    @property
    def bucket_count(self) -> int: ...
    @property
    def quota_count(self) -> int: ...

def host_monotonic() -> float:
    """Seconds on the host-wide monotonic clock (CLOCK_MONOTONIC; `time.monotonic()` on Linux)
    that `SharedThrottle.acquire` uses when `now` is None."""

# --- histogram (native/src/py/histogram.rs) ---
@final
class Histogram:
    """One histogram child: per-bucket counts (not cumulative) and the sum of observations.

    `bounds` are ascending upper bounds ending with +Inf; a value equal to a bound counts in
    that bound's bucket (Prometheus' `le`). Lock-free; updates from any thread are kept."""

    def __init__(self, bounds: list[float], created: float) -> None:
        """Raises ValueError unless the bounds ascend strictly and end with +Inf."""
    def observe(self, value: float) -> None: ...
    def lap(self, started: float) -> float:
        """Observes `monotonic() - started` and returns that `monotonic()` reading."""
    @property
    def counts(self) -> list[int]:
        """Per-bucket counts, in the order of `bounds`."""
    @property
    def sum(self) -> float: ...
    @property
    def created(self) -> float:
        """The `created` time given at construction (seconds since the epoch)."""

@final
class RequestTimings:
    """A route's latency, integration latency and overhead histograms, updated in one call."""

    def __init__(self, latency: Histogram, integration: Histogram, overhead: Histogram) -> None: ...
    def observe(self, latency_s: float, integration_s: float) -> None:
        """Records both times, and latency_s - integration_s (0 when negative or NaN) as the
        overhead."""

@final
class TimedChecks:
    """A pipeline's checks, called in order with the request context until one answers (returns
    something other than None), each timed into its histogram whether it passes, answers or
    raises. A check that returns an instance of `later` waits for this request: the rest is
    `resume(ctx, index, that, started)`'s, which records that check's time itself."""

    def __init__(
        self,
        checks: list[Callable[[Any], Any]],
        timers: list[Histogram],
        later: type,
        resume: Callable[[Any, int, Any, float], Any],
    ) -> None:
        """Raises ValueError unless there is one timer per check."""
    def run(self, ctx: Any) -> Any:
        """The first answer, `resume`'s result, or None; a check's exception propagates."""

# --- stages' lean checks in one native step each (native/src/py/lean_checks.rs) ---
# Each decides the usual request itself and hands anything else to `fallback`, the stage's own
# Python check_lean; TimedChecks runs them without a Python call.
@final
class ApiKeyCheck:
    """Sets `lean.api_key_id` for a value of the `header` (lower-cased) header found in
    `verified` (raw value -> key id)."""

    def __init__(
        self, header: bytes, verified: dict[bytes, str], fallback: Callable[[Any], None]
    ) -> None: ...
    def __call__(self, lean: Any) -> None: ...

@final
class KeyedThrottleCheck:
    """Takes from `throttle` what `by_key[lean.api_key_id]` names (bucket ids, quota id,
    refusals), its RateLimit-* headers into `lean.response_headers`; a refusal is raised by
    `refuse(decision, refusals)`. `by_key` is read once, here: IndexError for a negative id."""

    def __init__(
        self,
        throttle: Throttle,
        by_key: dict[str, Any],
        refuse: Callable[[Any, Any], None],
        fallback: Callable[[Any], None],
    ) -> None: ...
    def __call__(self, lean: Any) -> None: ...

@final
class ParamsCheck:
    """Passes a request with each of `headers` (lower-cased names, bytes) sent, each of `path` a
    non-empty path parameter and each of `query` in a query string with nothing to decode."""

    def __init__(
        self,
        headers: list[bytes],
        path: list[str],
        query: list[str],
        fallback: Callable[[Any], None],
    ) -> None: ...
    def __call__(self, lean: Any) -> None: ...

# --- what a cache entry keeps of an answer's head (native/src/stored_head.rs) ---
STORED_LINE_OVERHEAD: Final[int]

def stored_lines(lines: bytes, own_names: tuple[str, ...]) -> tuple[bytes, int] | None:
    """(kept, count): the CRLF-terminated header lines of `lines` a cache entry keeps (no
    framing, Date, Age, connection or X-Cache lines, none named in `own_names`, any case), and
    their number plus one; None when a Set-Cookie or a Cache-Control no-store, private or
    no-cache forbids storing the answer."""

def hit_headers(own: dict[str, str], stored_at: float) -> None:
    """Sets `X-Cache: Hit` and `Age` in `own`: the whole seconds since `stored_at`, a
    time.monotonic() reading ("0" for one in the future)."""

# --- response head (native/src/py/head.rs) ---
def whole_answer_bytes(
    status_line: bytes,
    lines: bytes,
    own: Mapping[str, str],
    extra: bytes,
    has_content_type: bool,
    has_date: bool,
    minor: int,
    keep_alive: bool,
    body: bytes,
    head_only: bool,
) -> bytes:
    """A whole HTTP/1.`minor` answer as sent: `status_line`, `lines`, the lines of `own` (as
    header_lines writes them), the server's `extra` lines, a Content-Type when the body has
    none, its Content-Length, a Date line unless `has_date`, the connection line `keep_alive`
    calls for, the blank line, and the body unless `head_only`. ValueError when one of `own`
    holds a line break."""

@final
class WholeAnswers:
    """Whole answers sent as one piece from their serialized head (pygw.response.whole_bytes
    without a Python frame): an upstream's answer that came whole, a cache hit, a mock's."""

    def __init__(self, reasons: Mapping[int, str]) -> None:
        """`reasons`: the reason phrase of each status, for an answer that brings none
        ("Unknown" for a status not in it)."""
    def encode(
        self,
        minor: int,
        status: int,
        reason: bytes,
        head: tuple[bytes, str | None, bool, bool, bool],
        body: bytes,
        own: Mapping[str, str],
        keep_alive: bool,
        extra: bytes,
    ) -> bytes | None:
        """whole_bytes(HTTP/1.1 if minor == 1 else HTTP/1.0, status, reason, head, body, own,
        keep_alive, extra); None for a head with a Vary of its own (head[1]), which whole_bytes
        merges with a stage's. ValueError when one of `own` holds a line break."""

def date_line() -> bytes:
    """`Date: ...\r\n` for now (RFC 9110 IMF-fixdate), formatted once per second."""

def date_line_at(secs: int) -> bytes:
    """The Date line for `secs` seconds after the Unix epoch."""

def header_lines(headers: Mapping[str, str]) -> bytes:
    """`Name: value\\r\\n` (UTF-8) for each item of `headers`, in order; a value that is not a
    str is formatted with str(). Raises ValueError when a name or value holds CR or LF."""

# --- proxied request head (native/src/py/request_head.rs) ---
def request_head_tail(
    headers: Iterable[tuple[bytes, bytes]],
    client_ip: str,
    https: bool,
    request_id: str,
    body_len: int | None = None,
    content_type: bytes | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
    sampled: bool = False,
) -> tuple[bytes, int]:
    """(head, body_mode): the client's headers as forwarded upstream, each as `\\r\\nName: value`
    (hop-by-hop ones, those a Connection header names, Host, X-Forwarded-*, x-request-id and
    Expect left out), then X-Forwarded-For (the client's list plus `client_ip`), -Proto and
    -Host, x-request-id and the body framing, through the blank line. body_mode: 0 no body,
    1 the client's with its Content-Length, 2 the client's, chunked, 3 `body_len` bytes a stage
    holds (the client's Content-Length and, with `content_type`, Content-Type replaced). With
    `trace_id` (32 hex digits) and `span_id` (16), the client's traceparent and X-Amzn-Trace-Id
    are replaced by that trace with `span_id` as the parent, written after x-request-id."""

def header_value(headers: tuple[tuple[bytes, bytes], ...], lower_name: bytes) -> bytes | None:
    """The first value of the header `lower_name` (given lower-cased) in a request's
    `raw_headers`, or None: `Request.header` in one call. Names compare with ASCII letters
    folded."""

# --- query parameters by name (native/src/py/query.rs) ---
def query_key_part(raw: str, names: tuple[str, ...]) -> str | None:
    """For a query string with no `%` and no `+`: for each of `names` in order, `{len}:{value},`
    per value (len in characters) then `;`, values read as parse_qsl(raw, keep_blank_values=True)
    reads them. None for a query string that needs decoding (or is not valid UTF-8)."""

def query_missing(raw: str, names: tuple[str, ...]) -> tuple[str, ...] | None:
    """For a query string with no `%` and no `+`: those of `names`, in order, it has no
    parameter of (with or without a value). None for one that needs decoding (or is not valid
    UTF-8)."""

def header_block_size(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """Sum over the header lines of len(name) + len(value) + 4."""

# --- an upstream's answer relayed (native/src/py/upstream_head.rs) ---
HOP_BY_HOP: Final[frozenset[bytes]]
"""RFC 9110's hop-by-hop header names and Proxy-Connection, lower-cased."""

def relayed_head(
    headers: Iterable[tuple[bytes, bytes]], own: dict[str, str]
) -> tuple[bytes, str | None, bool, bool, bool]:
    """(lines, vary, has_content_type, has_server, has_date): `Name: value\\r\\n` for each
    header of an upstream's answer relayed to the client (no hop-by-hop header, none the
    answer's Connection headers name, no Content-Length, none that `own`, the request's own
    response headers, names in any case, its Vary excepted: that one is merged when the answer
    is sent; no Vary), the Vary values joined by ", " or None, and whether a Content-Type,
    Server or Date line is among the lines."""

class TargetTemplate:
    """An http_proxy integration's URI template (its path split at the placeholders: one more
    literal than names), rendered into the target sent upstream."""

    def __init__(
        self, literals: list[str], names: list[str], param_tail: bool, template_query: bool
    ) -> None:
        """ValueError unless there is one more literal than names (or none at all: the
        request's own path is sent)."""
    def render(self, params: dict[str, str], path: str, raw_target: str) -> bytes | None:
        """The template with `params` put in, a trailing slash of `path` kept after a final
        placeholder, `raw_target`'s query appended, controls, space and DEL percent-encoded;
        None when a value is not valid UTF-8 text. KeyError naming a missing parameter."""

def simple_request(
    data: bytes,
    max_header_bytes: int,
    max_header_count: int,
    allow_underscores: bool,
    trusted_peer: bool,
) -> (
    tuple[
        str,
        str,
        int,
        tuple[tuple[bytes, bytes], ...],
        bytes,
        bytes | None,
        bytes | None,
        bytes | None,
        bool,
    ]
    | None
):
    """(method, target, minor, headers, host, request_id, traceparent, amzn_trace, keep_alive)
    of a whole bodiless request of the plainest shape that `data` holds alone (headers less the
    lines the connection drops: underscored names unless allowed, Forwarded and X-Real-IP from
    an untrusted peer); None for anything else, which the callback parser then reads."""

def whole_answer(
    data: bytes, own: dict[str, str], max_head: int
) -> tuple[int, bytes, tuple[bytes, str | None, bool, bool, bool], bytes, bool] | None:
    """(status, reason, head, body, keep_alive) of an upstream answer `data` holds whole (a
    head, a Content-Length body, nothing more), `head` as relayed_head makes it for `own`, the
    reason empty unless it is ASCII; None for anything else (an incomplete, malformed or
    unusual answer, a header block over `max_head` bytes), which the callback parser then
    reads."""

def is_framed(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether an answer has a Content-Length or a chunked Transfer-Encoding (otherwise its
    body runs until the connection closes)."""

# --- trace ids (native/src/py/trace_id.rs) ---
@final
class TraceIds:
    """New traces: `next()` is (trace id, span id), 32 and 16 lower-case hex digits; the trace
    id's first 8 are the epoch second (X-Ray's rule), the rest random (wyrand from `seed`)."""

    def __init__(self, seed: int) -> None: ...
    def next(self) -> tuple[str, str]: ...
    def reseed(self, seed: int) -> None:
        """A new sequence (a forked child's own)."""

# --- request ids (native/src/py/request_id.rs) ---
@final
class RequestIds:
    """Ids shaped like version-4 UUIDs: `prefix` (24 characters, `xxxxxxxx-xxxx-4xxx-8xxx-`,
    lower-case hex, variant 8-b) then a 48-bit sequence from `start`, as 12 hex digits."""

    def __init__(self, prefix: str, start: int) -> None:
        """Raises ValueError for a prefix of another shape."""
    def next(self) -> str: ...
    def reseed(self, prefix: str, start: int) -> None:
        """A new prefix and sequence (a forked child's own)."""
