"""REST-style response cache, wrapped around a route's integration.

A stage cannot see what the integration answers, so the cache is an integration wrapper:
`wrap_with_cache` puts a `CachingIntegration` in front of a route's integration at load when the
route's API and method make it cacheable, and returns the integration unchanged otherwise.

Entries live in the API's native `ResponseCache` (LRU by bytes, per-entry TTL), shared by all of
the API's stages and routes; the key holds the method and stage, so they never collide.

Concurrent misses for one key make one upstream request (nginx's `proxy_cache_lock`): the first
request leads, the others wait for it and answer from what it fetched. When the leader gets
nothing usable (an exception, a non-200, a cut-off body, its client gone) the waiters wake up and
one of them leads the next attempt, so one failing request never fails the others. A response the
cache may never hold (`Cache-Control: no-store`, `private`, `no-cache`, `Set-Cookie`, `Vary: *`, a
body over the size limit) leaves a short-lived "pass" marker under its key instead: later requests
for the key go upstream side by side, rather than queueing behind each other for nothing.

`ctx.cache_state` is set to "hit" or "miss" for GET and HEAD requests (the access log's cache
field); other methods that reach the wrapper (through an `ANY` route) pass straight through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final, Protocol

from multidict import CIMultiDict

from pygw._native import (
    STORED_LINE_OVERHEAD,
    ResponseCache,
    header_value,
    hit_headers,
    query_key_part,
    stored_lines,
)
from pygw.context import RequestContext
from pygw.pipeline import (
    AnswerLean,
    Integration,
    LeanView,
    Outcome,
    StartLean,
    StartNow,
)
from pygw.query_params import query_values
from pygw.request import Request
from pygw.response import OneWriteResponse, Response, ResponseHead, head_from_pairs

log = logging.getLogger("pygw")

__all__ = [
    "MAX_BODY_BYTES",
    "CachedResponse",
    "CachingIntegration",
    "max_body_bytes_for",
    "wrap_with_cache",
]

# The largest body one entry may hold; an API's cache also never spends more than an eighth of
# its capacity on one response, so a few large bodies cannot flush everything else.
MAX_BODY_BYTES: Final = 10 * 1024 * 1024

_COALESCED: Final = frozenset({"GET", "HEAD"})
# Headers a cached entry must not replay: framing (recomputed for every answer), the date and age
# (set fresh on a hit), and connection management (per connection, not per resource). The same
# list filters a whole answer's header lines in native/src/stored_head.rs.
_NOT_STORED: Final = frozenset(
    {"content-length", "transfer-encoding", "date", "age", "connection", "keep-alive", "x-cache"}
)
_NEVER_STORE: Final = frozenset({"no-store", "private", "no-cache"})
# What a pass marker or a Vary marker is charged for beyond its key.
_MARKER_BYTES: Final = 64


# One stored answer: (status, headers, body, stored_at, head, filtered_for). stored_at is
# time.monotonic() when the upstream answered; headers are the decoded pairs, left empty for a GET
# answer kept from its upstream's header lines as received (head alone serves those); head holds
# the header lines serialized once at store time (a GET hit sends them in one write, building no
# header objects), or None when a value could not be sent that way (aiohttp answers then);
# filtered_for names the per-request headers (in the order the request's stages set them) whose
# lines were taken out of head when it was stored: a hit whose stages set the same ones replays
# head as it is. A plain tuple of strings, bytes and numbers on purpose: the garbage collector
# stops tracking such tuples after one pass, while every dataclass or NamedTuple instance stays
# tracked, and a full collection scanning a cache of 200 000 of them stalled every request for
# about 90 ms.
CachedResponse = tuple[
    int, tuple[tuple[str, str], ...], bytes, float, ResponseHead | None, tuple[str, ...]
]
# A whole answer's head without Vary, as ResponseCache.keep_whole takes it.
_WholeHead = tuple[bytes, None, bool, bool, bool]
# Stored under a key whose response varies by request headers: the (lower-cased) header names
# joined by _VARY_SEP; the entries themselves live under the key extended with the values of
# these headers. A string for the same reason as above.
_VARY_SEP: Final = "\x1f"


def _cached(status: int, headers: tuple[tuple[str, str], ...], body: bytes) -> CachedResponse:
    try:
        head: ResponseHead | None = head_from_pairs(headers)
    except ValueError:
        head = None
    return (status, headers, body, time.monotonic(), head, ())


class _Pass:
    """Stored under a key whose response may not be cached: skip coalescing for it."""

    __slots__ = ()


_PASS: Final = _Pass()


# What a leader hands its waiters: (the stored answer, the request header names it varies by,
# _vary_values for those names). A tuple: one is made on every stored miss.
_Fetched = tuple[CachedResponse, tuple[str, ...], str]
# Stored heads replayed for other per-request header names, kept per CachingIntegration (see
# _replayed_head).
_REPLAYED_MEMO_SIZE: Final = 64
# Query strings whose key part is remembered (see CachingIntegration._key), and the longest one
# remembered: a key part is about as long as its query string, so the memo stays near 2 MiB
# whatever the traffic.
_QUERY_MEMO_SIZE: Final = 4096
_QUERY_MEMO_MAX_LEN: Final = 256


class _Flight:
    """One miss in progress. The Event is made by the first waiter: most misses have none.
    Class-level defaults rather than an __init__: one is made on every miss."""

    done: asyncio.Event | None = None
    fetched: _Fetched | None = None


class _Collector:
    """ctx.body_sink for a streamed response: keeps a copy of the body up to `limit` bytes.
    Made on every miss, most of which are answered whole and never call it: class-level defaults
    and no __init__ (see _new_collector), the list made by the first chunk."""

    chunks: list[bytes] | None = None
    size = 0
    limit = 0
    overflow = False
    previous: Callable[[bytes], None] | None = None

    def __call__(self, chunk: bytes) -> None:
        if self.previous is not None:
            self.previous(chunk)
        if self.overflow:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self.overflow = True
            self.chunks = None
            return
        if self.chunks is None:
            self.chunks = [bytes(chunk)]
        else:
            self.chunks.append(bytes(chunk))

    def body(self) -> bytes:
        chunks = self.chunks
        if chunks is None:
            return b""
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _new_collector(limit: int, previous: Callable[[bytes], None] | None) -> _Collector:
    collector = _Collector()
    collector.limit = limit
    collector.previous = previous
    return collector


class Counter(Protocol):
    """A counter the cache adds to (pygw.observe.metrics.CounterChild): an attribute, not a
    call, since a hit's every Python frame shows in its cost."""

    value: float


_KeyParam = tuple[str, str]  # (querystring | header | path, name)


def _compile_key_params(key_params: Sequence[str]) -> tuple[_KeyParam, ...]:
    compiled: list[_KeyParam] = []
    for ref in key_params:
        kind, _, name = ref.partition(".")
        if kind not in ("querystring", "header", "path") or not name:
            raise ValueError(
                f"cache key parameter {ref!r} must be querystring.X, header.X or path.X"
            )
        compiled.append((kind, name.lower() if kind == "header" else name))
    return tuple(compiled)


def _encode(values: Sequence[str]) -> str:
    """Values joined so that no two different lists give the same text."""
    if len(values) == 1:  # the usual case, without the generator
        value = values[0]
        return f"{len(value)}:{value},;"
    return "".join(f"{len(value)}:{value}," for value in values) + ";"


def _tokens(values: Sequence[str]) -> list[str]:
    return [t.strip().lower() for v in values for t in v.split(",") if t.strip()]


def _header_values(request: Request, name: str) -> list[str]:
    """`request.headers.getall(name)` for a lower-cased `name`, without building the request's
    header map (a name that is not ASCII, never a valid HTTP token, is looked up there)."""
    if not name.isascii():
        return request.headers.getall(name, [])
    raw = name.encode("ascii")
    return [
        value.decode("utf-8", "surrogateescape")
        for key, value in request.raw_headers
        if len(key) == len(raw) and key.lower() == raw
    ]


def _wants_refresh(request: Request) -> bool:
    for token in _tokens(_header_values(request, "cache-control")):
        name, _, value = token.partition("=")
        if name.strip() == "max-age" and value.strip().strip('"') == "0":
            return True
    return False


def _vary_values(request: Request, names: tuple[str, ...]) -> str:
    """The key suffix of one variant: the varied (lower-cased) header names and this request's
    values."""
    return "\x1e" + _encode(names) + "".join(_encode(_header_values(request, n)) for n in names)


class CachingIntegration:
    """Answers cacheable GET (and coalesces GET and HEAD) requests around `inner`."""

    __slots__ = (
        "_allow_invalidation",
        "_by_coding",
        "_cache",
        "_flights",
        "_hit",
        "_inner_start",
        "_inner_start_lean",
        "_key_params",
        "_lean_prefix",
        "_max_body",
        "_miss",
        "_prefixes",
        "_query_names",
        "_query_only",
        "_query_order",
        "_query_parts",
        "_replayed",
        "_ttl_s",
        "answer_lean",
        "inner",
    )

    def __init__(
        self,
        inner: Integration,
        *,
        cache: ResponseCache,
        ttl_s: float,
        key_params: Sequence[str],
        allow_invalidation: bool,
        stage: str,
        metrics_hit: Counter | None = None,
        metrics_miss: Counter | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        by_coding: bool = False,
    ) -> None:
        """`by_coding`: the route compresses its answers, so an entry is kept per content
        coding (ctx.content_coding) and a client is never given a coding it did not ask for."""
        if not ttl_s > 0:
            raise ValueError("ttl_s must be positive (0 disables the cache: do not wrap)")
        self.inner = inner
        # The integration's way to answer from its callbacks, which a miss can lead through.
        self._inner_start: StartNow | None = getattr(inner, "start_now", None)
        # Its way to send on a request nothing was made for (answer_lean's miss).
        self._inner_start_lean: StartLean | None = getattr(inner, "start_lean", None)
        self._cache = cache
        self._ttl_s = float(ttl_s)
        self._key_params = _compile_key_params(key_params)
        self._query_names = frozenset(
            name for kind, name in self._key_params if kind == "querystring"
        )
        # The key's query-string names in config order (all of them for a query-only key).
        self._query_order = tuple(name for kind, name in self._key_params if kind == "querystring")
        # A key made of query-string values alone depends on the raw query string only: its
        # encoded part is remembered by it, since a hit repeats a query string seen before.
        self._query_only = bool(self._key_params) and all(
            kind == "querystring" for kind, _ in self._key_params
        )
        self._query_parts: dict[str, str] = {}
        self._allow_invalidation = allow_invalidation
        self._by_coding = by_coding
        self._hit = metrics_hit
        self._miss = metrics_miss
        self._max_body = max(0, max_body_bytes)
        # method, stage and canary flag, then the path: the fixed part of every key.
        # By method, then indexed by the canary flag (False 0, True 1): no tuple per lookup.
        self._prefixes = {
            method: tuple(
                f"{method}\x1f{len(stage)}:{stage}\x1f{'c' if canary else 'p'}\x1f"
                for canary in (False, True)
            )
            for method in _COALESCED
        }
        self._flights: dict[str, _Flight] = {}
        self._replayed: dict[tuple[ResponseHead, tuple[str, ...]], ResponseHead] = {}
        self._lean_prefix = self._prefixes["GET"][0]
        # Offered (Pipeline.answer_lean) only for keys made of the path and the query string:
        # any other key needs the request's objects, so its route keeps to the full way.
        self.answer_lean: AnswerLean | None = (
            self._answer_lean
            if not by_coding and (self._query_only or not self._key_params)
            else None
        )

    async def close(self) -> None:
        await self.inner.close()

    # -- per request --------------------------------------------------------------------------

    async def __call__(self, ctx: RequestContext) -> Response:
        request = ctx.request
        method = request.method
        if method not in _COALESCED:
            return await self.inner(ctx)
        base = self._base_key(ctx, request, method)
        if self._allow_invalidation and method == "GET" and _wants_refresh(request):
            # A refresh skips the lookup and any request in flight; its answer replaces the entry.
            response, _ = await self._fetch(ctx, base, method)
            return response
        flights = self._flights
        while True:
            lock_key, found = self._lookup(request, base)
            if isinstance(found, tuple):
                return self._answer(ctx, found, method)
            if found is _PASS:
                response, _ = await self._fetch(ctx, base, method)
                return response
            flight = flights.get(lock_key)
            if flight is None:
                flight = flights[lock_key] = _Flight()
                collector = self._collect(ctx)
                return await self._led(
                    ctx, base, method, lock_key, flight, collector, self.inner(ctx)
                )
            # An Event, not the leader's task: a waiter that is cancelled leaves the others be.
            done = flight.done
            if done is None:
                done = flight.done = asyncio.Event()
            await done.wait()
            fetched = flight.fetched
            if fetched is not None:
                entry, vary, vary_values = fetched
                if not vary or _vary_values(request, vary) == vary_values:
                    return self._answer(ctx, entry, method)
            # The leader got nothing usable, or a variant for other request headers: look again
            # (the first waiter to get here leads the next attempt).

    def start_now(
        self, ctx: RequestContext, done: Callable[[Outcome], None]
    ) -> Coroutine[Any, Any, Response] | None:
        """A miss led through the integration's own start_now (Pipeline.start_now): no
        coroutine on the way, and the answer stored as it passes on to `done`. Anything else
        (a refresh, a pass marker, a miss another request leads, an integration that cannot
        answer that way) is handed back to be awaited."""
        inner_start = self._inner_start
        request = ctx.request
        method = request.method
        if inner_start is None or method not in _COALESCED:
            return self(ctx)
        if self._allow_invalidation and method == "GET" and _wants_refresh(request):
            return self(ctx)
        base = self._base_key(ctx, request, method)
        lock_key, found = self._lookup(request, base)
        flights = self._flights
        if found is not None or lock_key in flights:
            return self(ctx)
        flight = _Flight()
        flights[lock_key] = flight
        collector = self._collect(ctx)
        answered = self._landing(ctx, base, method, lock_key, flight, collector, done)
        try:
            instead = inner_start(ctx, answered)
        except BaseException:
            ctx.body_sink = collector.previous
            self._land(lock_key, flight)
            raise
        if instead is not None:
            return self._led(ctx, base, method, lock_key, flight, collector, instead)
        return None

    def _landing(
        self,
        ctx: RequestContext,
        base: str,
        method: str,
        lock_key: str,
        flight: _Flight,
        collector: _Collector,
        done: Callable[[Outcome], None],
    ) -> Callable[[Outcome], None]:
        """The callback a miss this request leads from the integration's callbacks hands its
        Outcome to: stored as it passes on to `done`."""

        def answered(outcome: Outcome) -> None:
            if not isinstance(outcome, (Response, Exception)):
                done(self._led(ctx, base, method, lock_key, flight, collector, outcome))
                return
            ctx.body_sink = collector.previous
            try:
                if isinstance(outcome, Response):
                    flight.fetched = self._keep(ctx, base, method, outcome, collector)
            except Exception:
                # Called from a socket callback: the answer still goes to the client.
                log.exception("request %s: storing its answer failed", ctx.request_id)
            finally:
                self._land(lock_key, flight)
            done(outcome)

        return answered

    async def _led(
        self,
        ctx: RequestContext,
        base: str,
        method: str,
        lock_key: str,
        flight: _Flight,
        collector: _Collector,
        answer: Coroutine[Any, Any, Response],
    ) -> Response:
        """The rest of a miss this request leads, awaited: its answer stored as it passes."""
        try:
            try:
                response = await answer
            finally:
                ctx.body_sink = collector.previous
            flight.fetched = self._keep(ctx, base, method, response, collector)
            return response
        finally:
            self._land(lock_key, flight)

    def _land(self, lock_key: str, flight: _Flight) -> None:
        """A led miss is over: the requests that waited for it look again."""
        del self._flights[lock_key]
        if flight.done is not None:
            flight.done.set()

    def answer_now(self, ctx: RequestContext) -> Response | None:
        """A hit's answer without a coroutine (Pipeline.answer_now); None for anything else,
        which is then awaited (and looked up once more)."""
        request = ctx.request
        method = request.method
        if method not in _COALESCED:
            return None
        if self._allow_invalidation and method == "GET" and _wants_refresh(request):
            return None
        _, found = self._lookup(request, self._base_key(ctx, request, method))
        if isinstance(found, tuple):
            return self._answer(ctx, found, method)
        return None

    def _lookup(self, request: Request, base: str) -> tuple[str, Any]:
        """The key the request's entry is under (with the Vary values its stored answer named)
        and what the cache holds there: an entry, the pass marker, or None."""
        cache = self._cache
        found = cache.get(base)
        if isinstance(found, str):
            key = base + _vary_values(request, tuple(found.split(_VARY_SEP)))
            return key, cache.get(key)
        return base, found

    def _base_key(self, ctx: RequestContext, request: Request, method: str) -> str:
        """The request's key before any Vary values: route, method, canary, path, the key
        parameters, and the content coding when entries are kept per coding."""
        if self._query_only:
            # _key inline for the usual keyed route: one call fewer on every hit and miss.
            raw_query = request.raw_path.partition("?")[2]
            part = self._query_parts.get(raw_query)
            if part is None:
                part = self._remember_query_part(raw_query)
            base = self._prefixes[method][ctx.canary] + ctx.path + "\x1f" + part
        else:
            base = self._key(ctx, method)
        if self._by_coding:
            base = f"{base}\x1d{ctx.content_coding or ''}"
        return base

    def _key(self, ctx: RequestContext, method: str) -> str:
        key = self._prefixes[method][ctx.canary] + ctx.path + "\x1f"
        if not self._key_params:
            return key
        if self._query_only:
            raw_query = ctx.request.raw_path.partition("?")[2]
            part = self._query_parts.get(raw_query)
            if part is None:
                part = self._remember_query_part(raw_query)
            return key + part
        return key + self._params_part(ctx)

    def _remember_query_part(self, raw_query: str) -> str:
        """_params_part for a key of query-string values alone, from the raw query string;
        remembered by it."""
        # One native call for a query string with nothing to decode (the usual one).
        part = query_key_part(raw_query, self._query_order)
        if part is None:
            found = query_values(raw_query, self._query_names)
            part = ""
            for name in self._query_order:
                values = found.get(name)
                part += ";" if values is None else _encode(values)
        if len(raw_query) <= _QUERY_MEMO_MAX_LEN:
            memo = self._query_parts
            if len(memo) >= _QUERY_MEMO_SIZE:
                memo.clear()
            memo[raw_query] = part
        return part

    def _params_part(self, ctx: RequestContext) -> str:
        """The key's part from the request's values of the key parameters, in config order."""
        part = ""
        request = ctx.request
        # Only the key's names are decoded from the query string (see pygw/query_params.py).
        query = (
            query_values(request.raw_query_string, self._query_names) if self._query_names else None
        )
        values: Sequence[str]
        for kind, name in self._key_params:
            if query is not None and kind == "querystring":
                values = query.get(name, ())
            elif kind == "header":
                values = _header_values(request, name)
            else:
                value = ctx.params.get(name)
                values = () if value is None else (value,)
            if len(values) == 1:  # _encode's usual case, without the call
                value = values[0]
                part += f"{len(value)}:{value},;"
            else:
                part += _encode(values)
        return part

    def _answer_lean(self, lean: LeanView) -> bool | None:
        """A GET hit answered without the request's objects (Pipeline.answer_lean): True once
        sent. Having sent nothing: None for a key the cache holds nothing under (a miss, or a
        pass marker) or a query string not seen lately, which start_now looks up itself;
        False for anything answer_now must look at."""
        if lean.method != "GET":
            return False
        if self._allow_invalidation and header_value(lean.raw_headers, b"cache-control"):
            return False  # a refresh, maybe: _wants_refresh reads it the full way
        part = self._query_parts.get(lean.raw_query) if self._key_params else ""
        if part is None:
            if self._inner_start_lean is None:
                # A query string not seen lately is nearly always a miss: the integration
                # proper looks it up (and answers an entry it finds), so that a miss costs no
                # lookup more.
                return None
            part = self._remember_query_part(lean.raw_query)
        key = f"{self._lean_prefix}{lean.path}\x1f{part}"  # one string made, not three
        extra = lean.response_headers
        # _hit_head's X-Cache and Age set by the lookup itself, on an entry it can send.
        entry = self._cache.hit(key, extra)
        if not isinstance(entry, tuple):
            if entry is None:
                return self._sent_on(lean, key)
            # A Vary marker names the headers the entries under it are kept by.
            return False if isinstance(entry, str) else None
        head = entry[4]
        if head is None:
            return False  # an answer aiohttp must send
        lean.cache_state = "hit"
        if self._hit is not None:
            self._hit.value += 1.0
        if head[0] and tuple(extra) != entry[5]:
            head = self._replayed_for(head, extra)
        lean.answered(entry[0], b"", head, entry[2], extra, 0.0, None)
        return True

    def _sent_on(self, lean: LeanView, key: str) -> bool | None:
        """A GET miss answer_lean leads through the inner integration's start_lean, as
        start_now leads one through its start_now: True once sent. None, having sent nothing,
        when it cannot go that way (another request leads this key's miss, no pooled
        connection, ...): the integration proper serves it."""
        start_lean = self._inner_start_lean
        flights = self._flights
        if start_lean is None or key in flights:
            return None
        flight = _Flight()
        if not start_lean(_LeanMiss(self, lean, key, flight)):
            return None
        # Set once sent, not undone when it could not be: the answer comes from a later socket
        # callback, with the header dict start_lean took.
        flights[key] = flight
        lean.response_headers["X-Cache"] = "Miss"
        lean.cache_state = "miss"
        if self._miss is not None:
            self._miss.value += 1.0
        return True

    def _hit_head(
        self, entry: CachedResponse, head: ResponseHead, extra: dict[str, str]
    ) -> ResponseHead:
        """A GET hit's head to send with `extra`, the request's own headers (X-Cache and Age
        added to them)."""
        hit_headers(extra, entry[3])
        if self._hit is not None:
            self._hit.value += 1.0
        if head[0] and tuple(extra) != entry[5]:
            head = self._replayed_for(head, extra)
        return head

    def _replayed_for(self, head: ResponseHead, extra: dict[str, str]) -> ResponseHead:
        """The stored head to send with `extra`, headers other than those it was stored with."""
        replayed = self._replayed.get((head, tuple(extra)))
        return replayed if replayed is not None else self._replayed_head(head, extra)

    def _answer(self, ctx: RequestContext, entry: CachedResponse, method: str) -> Response:
        extra = ctx.response_headers
        ctx.cache_state = "hit"
        status, stored, body, stored_at, head, _ = entry
        if method == "GET" and head is not None:
            return OneWriteResponse(status, self._hit_head(entry, head, extra), body, extra)
        extra["X-Cache"] = "Hit"
        if self._hit is not None:
            self._hit.value += 1.0
        age = time.monotonic() - stored_at
        response = Response(
            status=status,
            body=body if method != "HEAD" else None,
            headers=CIMultiDict(stored),
        )
        response.headers["Age"] = str(int(age)) if age > 0.0 else "0"
        ctx.apply_response_headers(response)
        return response

    def _replayed_head(self, head: ResponseHead, extra: dict[str, str]) -> ResponseHead:
        """The stored head without the lines this request's stages set themselves (the
        storing request's stages may not have set them, CORS for a request without an Origin):
        a stage's value replaces the stored one, as on a miss. Remembered by the stored head
        and the names of the request's headers (the caller looks there first)."""
        replayed = head
        filtered = stored_lines(head[0], tuple(extra))
        if filtered is not None and filtered[0] != head[0]:
            replayed = (filtered[0], *head[1:])
        memo = self._replayed
        if len(memo) >= _REPLAYED_MEMO_SIZE:
            memo.clear()
        memo[head, tuple(extra)] = replayed
        return replayed

    async def _fetch(
        self, ctx: RequestContext, base: str, method: str
    ) -> tuple[Response, _Fetched | None]:
        """One call to the integration; stores what it answers when that may be cached."""
        collector = self._collect(ctx)
        try:
            response = await self.inner(ctx)
        finally:
            ctx.body_sink = collector.previous
        return response, self._keep(ctx, base, method, response, collector)

    def _collect(self, ctx: RequestContext) -> _Collector:
        """Marks the request a miss and starts collecting a streamed body; the caller puts
        `collector.previous` back as ctx.body_sink once the integration has answered."""
        # Before the call: a streaming integration sends the headers before it returns.
        ctx.response_headers["X-Cache"] = "Miss"
        ctx.cache_state = "miss"
        if self._miss is not None:
            self._miss.value += 1.0
        collector = ctx.body_sink = _new_collector(self._max_body, ctx.body_sink)
        return collector

    def _keep(
        self,
        ctx: RequestContext,
        base: str,
        method: str,
        response: Response,
        collector: _Collector,
    ) -> _Fetched | None:
        if response.status != 200:
            return None
        if method == "GET" and isinstance(response, OneWriteResponse):
            head = response.unchanged_head
            if head is not None:
                return self._keep_head(
                    ctx.response_headers, base, head, response.body, lambda: ctx.request
                )
        headers = response.headers
        vary = _tokens(headers.getall("Vary", ()))
        if (
            "*" in vary
            or "set-cookie" in headers
            or not _NEVER_STORE.isdisjoint(
                t.partition("=")[0].strip() for t in _tokens(headers.getall("Cache-Control", ()))
            )
        ):
            self._cache.put(base, _PASS, _MARKER_BYTES, self._ttl_s)
            return None
        body = self._body(ctx, method, response, collector)
        if body is None:
            return None
        if isinstance(body, _Pass) or len(body) > self._max_body:
            self._cache.put(base, _PASS, _MARKER_BYTES, self._ttl_s)
            return None
        skip = set(_NOT_STORED)
        skip.update(name.lower() for name in ctx.response_headers)
        # Vary is kept: it holds the integration's own names, merged with a stage's (CORS,
        # compression); a hit merges this request's stage names in again without repeating.
        skip.discard("vary")
        stored: list[tuple[str, str]] = [
            (name, value) for name, value in headers.items() if name.lower() not in skip
        ]
        if method == "HEAD":
            # A HEAD answer has no body to count: it keeps the length the resource announced.
            length = headers.get("Content-Length")
            if length is None and not response.streamed:
                length = str(len(response.body))
            if length is not None:
                stored.append(("Content-Length", length))
            body = b""
        entry = _cached(200, tuple(stored), body)
        names = tuple(sorted(set(vary)))
        values = _vary_values(ctx.request, names) if names else ""
        if method == "GET":
            size = len(body) + sum(len(n) + len(v) + STORED_LINE_OVERHEAD for n, v in stored)
            if names:
                self._cache.put(base, _VARY_SEP.join(names), _MARKER_BYTES, self._ttl_s)
                self._cache.put(base + values, entry, size, self._ttl_s)
            else:
                self._cache.put(base, entry, size, self._ttl_s)
        return (entry, names, values)

    def _keep_head(
        self,
        own: dict[str, str],
        base: str,
        head: ResponseHead,
        body: bytes,
        request_of: Callable[[], Request],
    ) -> _Fetched | None:
        """`_keep` for a GET answer that arrived whole (the usual miss): its header lines are
        filtered as bytes, never decoded into a header map and serialized again. `own` is the
        request's own headers; `request_of` gives the request, whose headers a Vary names."""
        if len(body) > self._max_body:
            self._cache.put(base, _PASS, _MARKER_BYTES, self._ttl_s)
            return None
        # Filtered for this request's own headers and the Age every hit sets: a hit whose
        # stages set the same headers then replays the stored lines as they are (see _answer).
        names = tuple(own)
        names_for = _NAMES_FOR.get(names)
        if names_for is None:
            names_for = _names_for(own)
        own_vary = head[1]
        if own_vary is None:  # the usual answer: filtered, built and stored in one native call
            whole: _WholeHead = head  # type: ignore[assignment]  # own_vary is None
            kept = self._cache.keep_whole(
                base, whole, body, names_for, self._ttl_s, time.monotonic()
            )
            if kept is None:
                self._cache.put(base, _PASS, _MARKER_BYTES, self._ttl_s)
                return None
            return (kept, (), "")
        vary = _tokens((own_vary,))
        if "*" in vary:
            self._cache.put(base, _PASS, _MARKER_BYTES, self._ttl_s)
            return None
        names = tuple(sorted(set(vary)))
        filtered = stored_lines(head[0], names_for)
        if filtered is None:
            self._cache.put(base, _PASS, _MARKER_BYTES, self._ttl_s)
            return None
        lines, count = filtered
        # The Date line is never kept: a hit gets a fresh one.
        stored_head: ResponseHead = (lines, own_vary, head[2], head[3], False)
        entry: CachedResponse = (200, (), body, time.monotonic(), stored_head, names_for)
        values = _vary_values(request_of(), names)
        self._cache.put(base, _VARY_SEP.join(names), _MARKER_BYTES, self._ttl_s)
        size = len(body) + len(lines) + STORED_LINE_OVERHEAD * count
        self._cache.put(base + values, entry, size, self._ttl_s)
        return (entry, names, values)

    @staticmethod
    def _body(
        ctx: RequestContext, method: str, response: Response, collector: _Collector
    ) -> bytes | _Pass | None:
        """The complete body the client got; None when it was cut off (another attempt may do
        better), _PASS when it can never be kept (too large, or not in memory)."""
        if isinstance(response, OneWriteResponse):
            return response.body
        if not response.streamed:
            return response.body
        if collector.overflow:
            return _PASS
        transport = ctx.request.transport
        if transport is None or transport.is_closing():
            # The client went away or the upstream broke mid-body: what was seen is partial.
            return None
        if method != "HEAD":
            length = response.headers.get("Content-Length")
            if length is not None and (not length.isdigit() or int(length) != collector.size):
                return None
        return collector.body()


class _LeanMiss:
    """A GET miss answer_lean leads, as the inner integration's start_lean sends it on: the
    request's own LeanSend, whose answer is stored on its way to the client. An answer that is
    not whole in one read, or none, makes the request's objects and lands as start_now's."""

    __slots__ = (
        "cache",
        "client",
        "flight",
        "found",
        "key",
        "lean",
        "own_headers",
        "request_id",
        "simple",
        "trace",
    )

    def __init__(
        self, cache: CachingIntegration, lean: LeanView, key: str, flight: _Flight
    ) -> None:
        self.cache = cache
        self.lean = lean
        self.key = key
        self.flight = flight
        # What start_lean reads of the request: the lean request's own (its methods too, bound
        # here rather than wrapped: a frame less per call).
        self.simple = lean.simple
        self.found = lean.found
        self.request_id = lean.request_id
        self.client = lean.client
        self.own_headers: Callable[[], dict[str, str]] = lean.own_headers
        self.trace: Callable[[], tuple[str, str]] = lean.trace

    def answered(
        self,
        status: int,
        reason: bytes,
        head: ResponseHead,
        body: bytes,
        own: dict[str, str],
        integration_s: float,
        integration_status: int | None,
    ) -> None:
        cache = self.cache
        key = self.key
        flight = self.flight
        try:
            if status == 200:
                flight.fetched = cache._keep_head(own, key, head, body, self._request)
        except Exception:
            # Called from a socket callback: the answer still goes to the client.
            log.exception("request %s: storing its answer failed", self.request_id)
        finally:
            cache._land(key, flight)
        self.lean.answered(status, reason, head, body, own, integration_s, integration_status)

    def context(self) -> tuple[RequestContext, Callable[[Outcome], None]]:
        ctx, done = self.lean.context()
        cache = self.cache
        # Marked a miss and counted when it was sent: only the body's copy is started here.
        collector = ctx.body_sink = _new_collector(cache._max_body, ctx.body_sink)
        key = self.key
        return ctx, cache._landing(ctx, key, "GET", key, self.flight, collector, done)

    def _request(self) -> Request:
        return self.client.request_of(self.simple)


# names of a request's own headers -> the names a stored head is filtered for (with the Age a
# hit sets), one tuple per distinct set, shared by the entries: a tuple of its own per entry
# made a stored miss cost about 2 000 instructions more (bench/instructions.py).
_NAMES_FOR: dict[tuple[str, ...], tuple[str, ...]] = {}


def _names_for(extra: dict[str, str]) -> tuple[str, ...]:
    names = tuple(extra)
    found = _NAMES_FOR.get(names)
    if found is None:
        found = names if "Age" in extra else (*names, "Age")
        if len(_NAMES_FOR) < 256:
            _NAMES_FOR[names] = found
    return found


def max_body_bytes_for(capacity_bytes: int) -> int:
    return min(MAX_BODY_BYTES, capacity_bytes // 8)


def wrap_with_cache(
    inner: Integration,
    api_cfg: Any,
    route_cfg: Any,
    route_key: str,
    stage_name: str,
    caches: dict[str, ResponseCache],
    *,
    metrics_hit: Counter | None = None,
    metrics_miss: Counter | None = None,
    by_coding: bool = False,
) -> Integration:
    """`inner` behind the API's response cache, or `inner` itself when caching does not apply.

    `caches` maps API names to their ResponseCache; one is created on first use and shared by the
    API's stages and routes (pass the same dict for every route of one runtime snapshot).
    """
    api_cache = getattr(api_cfg, "cache", None)
    if getattr(api_cfg, "type", None) != "rest" or api_cache is None:
        return inner
    method = "ANY" if route_key == "$default" else route_key.partition(" ")[0].upper()
    if method not in ("GET", "ANY"):
        return inner
    route_cache = getattr(route_cfg, "cache", None)
    ttl_s = api_cache.ttl_s
    key_params: Sequence[str] = ()
    if route_cache is not None:
        if route_cache.ttl_s is not None:
            ttl_s = route_cache.ttl_s
        key_params = route_cache.key_params
    if ttl_s <= 0:
        return inner
    capacity = int(api_cache.capacity_bytes)
    cache = caches.get(api_cfg.name)
    if cache is None:
        cache = caches[api_cfg.name] = ResponseCache(capacity)
    return CachingIntegration(
        inner,
        cache=cache,
        ttl_s=ttl_s,
        key_params=key_params,
        allow_invalidation=bool(api_cache.allow_invalidation),
        stage=stage_name,
        metrics_hit=metrics_hit,
        metrics_miss=metrics_miss,
        max_body_bytes=max_body_bytes_for(capacity),
        by_coding=by_coding,
    )
