"""WebSocket pass-through for `http_proxy` routes of HTTP-style APIs (the issue "Pass-through").

A request that asks to upgrade to WebSocket is not proxied as HTTP: the upstream handshake is made
first (to the URL the proxy would send the request to, `ws://` or `wss://`), and the client is only
upgraded once the upstream accepted. An upstream that answers anything but 101 (a 403, a 200 page,
a redirect) has that answer relayed to the client as it came (status, reason, end-to-end headers,
body; a body longer than the route's message limit is a 502), and the client stays un-upgraded;
redirects are the client's to follow. An upstream that cannot be reached is the gateway's 502 (a
timeout its 504). Then text and binary messages are relayed both ways until one side closes; its
close code and reason are passed on to the other side. Pings are answered per hop.

Forwarded to the upstream: the client's headers as sent (Origin, Cookie, User-Agent,
Sec-WebSocket-Version, ...) minus hop-by-hop ones (and those its Connection header names), Host and
the X-Forwarded-* / x-request-id set (the gateway writes those, as the HTTP proxy does). The HTTP
client adds no header of its own (no User-Agent, Accept or Accept-Encoding the client did not send).
The subprotocols the client offers are offered to the upstream in the client's order, and the one
it picks is echoed to the client. Two handshake headers differ from the client's:

- Sec-WebSocket-Key: aiohttp's `ClientSession.ws_connect` always makes its own key and checks the
  upstream's Sec-WebSocket-Accept against it, and its public API offers no way to pass one in.
  The key only proves that each hop's server understood the handshake, so each hop has its own:
  the client's Sec-WebSocket-Accept is computed from the client's key.
- Sec-WebSocket-Extensions is not forwarded and no extension is negotiated on either hop. Messages
  are relayed one by one, not as frames, so an extension the upstream accepted on the client's
  behalf (permessage-deflate) would describe frames the gateway decodes and re-encodes itself.

Both sides answer close frames themselves (autoclose off) so the code one side sent is the code the
other side sees: aiohttp's automatic reply would always say 1000.

ctx.request_overrides read (path, query and headers, as the HTTP proxy honours them).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Iterable
from typing import Any, Final, Protocol

import aiohttp
from aiohttp import WebSocketError, WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from pygw._native import HOP_BY_HOP
from pygw.context import RequestContext
from pygw.errors import ErrorType, GatewayError
from pygw.request import Request
from pygw.response import Response, UpgradedResponse

__all__ = ["WsPassthrough", "is_websocket_upgrade"]

_HOP_BY_HOP: Final = frozenset(name.decode("ascii") for name in HOP_BY_HOP)
# Client headers that describe the client's hop, or that the gateway / ws_connect writes (see the
# module docstring for the key and the extensions; the subprotocols go through `protocols=`).
_NOT_FORWARDED: Final = _HOP_BY_HOP | {
    "host",
    "content-length",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "sec-websocket-key",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
}
# Headers of a refusal the client is not given: its hop's, and those the client's response gets
# from the gateway's own server (the body's length is counted again).
_NOT_RELAYED: Final = _HOP_BY_HOP | {"content-length", "date", "server"}
# aiohttp's client writes these unless told not to; the upstream should see only the client's.
_NO_AUTO_HEADERS: Final = ("User-Agent", "Accept", "Accept-Encoding")
# Codes a close frame may carry on the wire (RFC 6455 section 7.4): 1005, 1006 and 1015 are only
# ever reported locally, never sent.
_SENDABLE: Final = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013})
_GOING_AWAY: Final = 1001
_INTERNAL_ERROR: Final = 1011
# A close reason must fit a control frame: 125 bytes less the 2-byte code.
_MAX_REASON: Final = 123
_CLOSE_TIMEOUT_S: Final = 5.0


def is_websocket_upgrade(request: Request) -> bool:
    return request.headers.get("Upgrade", "").strip().lower() == "websocket"


def _sendable(code: int | None) -> bool:
    return code is not None and (code in _SENDABLE or 3000 <= code <= 4999)


def _reason(text: Any) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else b""
    if len(raw) <= _MAX_REASON:
        return raw
    return raw[:_MAX_REASON].decode("utf-8", "ignore").encode("utf-8")


_Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


class _Refused(Exception):
    """The upstream answered the handshake with something other than 101: that answer, read
    whole, for the client."""

    def __init__(self, status: int, reason: str, headers: CIMultiDict[str], body: bytes) -> None:
        super().__init__(f"upstream answered {status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body


class _TooLong(Exception):
    """A refusal whose body is longer than the gateway relays."""


async def _pump(src: _Socket, dst: _Socket) -> tuple[int, bytes] | None:
    """Relays src's messages to dst; src's close code and reason, None if src went away without
    a close frame."""
    while True:
        msg = await src.receive()
        kind = msg.type
        if kind is WSMsgType.TEXT:
            await dst.send_str(msg.data)
        elif kind is WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif kind is WSMsgType.CLOSE:
            code = msg.data
            # A close frame without a code reaches us as 0: it means a normal close.
            return (code if _sendable(code) else 1000), _reason(msg.extra)
        elif kind in (WSMsgType.PING, WSMsgType.PONG):
            continue
        elif kind is WSMsgType.ERROR and isinstance(msg.data, WebSocketError):
            # src broke the protocol or a limit (1009, a message too big) and was closed with
            # that code: the other side learns why too.
            code = msg.data.code
            return (code, b"") if _sendable(code) else None
        else:  # CLOSING, CLOSED, other errors: the connection is gone
            return None


class UpstreamTarget(Protocol):
    """One upstream base URL as the pass-through reaches it."""

    @property
    def label(self) -> str: ...

    @property
    def prefix(self) -> bytes: ...

    @property
    def ssl(self) -> ssl.SSLContext | None: ...

    @property
    def server_name(self) -> str | None: ...

    # Open exchanges on the target, which least-request balancing reads.
    in_flight: int


class Upstreams(Protocol):
    """The upstream side the pass-through shares with its HTTP proxy: the targets with their
    balancing and passive health, the path template and the timeouts, so an upgrade is routed
    and retried like any other request of the route."""

    @property
    def connect_timeout_s(self) -> float: ...

    @property
    def timeout_s(self) -> float: ...

    @property
    def retries(self) -> int: ...

    def render_path(self, ctx: RequestContext, overrides: dict[str, Any] | None) -> bytes: ...

    def pick(self, now: float, tried: list[Any]) -> UpstreamTarget: ...

    def succeeded(self, target: Any) -> None: ...

    def failed(self, target: Any, now: float) -> None: ...


class WsPassthrough:
    """The WebSocket leg of one `HttpProxyIntegration`."""

    def __init__(self, proxy: Upstreams, *, max_message_bytes: int | None = None) -> None:
        """`max_message_bytes` bounds one message in either direction (aiohttp's 4 MiB when
        None); a longer one closes the connection with 1009."""
        self._proxy = proxy
        self._max_msg = max_message_bytes if max_message_bytes is not None else 4 * 1024 * 1024
        self._session: aiohttp.ClientSession | None = None
        self._live: set[tuple[web.WebSocketResponse, aiohttp.ClientWebSocketResponse]] = set()

    @property
    def live(self) -> int:
        return len(self._live)

    def _client(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            proxy = self._proxy
            session = self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=proxy.connect_timeout_s),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=_NO_AUTO_HEADERS,
                middlewares=(self._catch_refusal,),
            )
        return session

    async def _catch_refusal(
        self, request: aiohttp.ClientRequest, send: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """Ends the handshake at the upstream's first non-101 answer, with that answer read.

        ws_connect drops a refusal's body and reason (and follows redirects itself); a client
        middleware sees the response before ws_connect does, and raising here ends ws_connect."""
        response = await send(request)
        if response.status == 101:
            return response
        try:
            body = await self._bounded_body(response)
        except BaseException:
            response.close()
            raise
        response.release()
        headers: CIMultiDict[str] = CIMultiDict()
        connection = response.headers.get("Connection", "")
        named = {t.strip().lower() for t in connection.split(",") if t.strip()}
        for name, value in response.headers.items():
            lname = name.lower()
            if lname not in _NOT_RELAYED and lname not in named:
                headers.add(name, value)
        raise _Refused(response.status, response.reason or "", headers, body)

    async def _bounded_body(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._max_msg
        if response.content_length is not None and response.content_length > limit:
            raise _TooLong
        body = bytearray()
        async for chunk in response.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise _TooLong
        return bytes(body)

    async def close(self) -> None:
        for client_ws, upstream_ws in list(self._live):
            with contextlib.suppress(Exception):
                await asyncio.gather(
                    client_ws.close(code=_GOING_AWAY), upstream_ws.close(code=_GOING_AWAY)
                )
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- handshake ----------------------------------------------------------------------------

    def _headers(self, ctx: RequestContext, overrides: dict[str, Any] | None) -> CIMultiDict[str]:
        request = ctx.request
        connection = request.headers.get("Connection", "")
        named = {t.strip().lower() for t in connection.split(",") if t.strip()}
        source: Iterable[tuple[str, str]] = request.headers.items()
        mapped = overrides.get("headers") if overrides else None
        if mapped is not None:
            source = mapped.items()
        headers: CIMultiDict[str] = CIMultiDict()
        forwarded_for: str | None = None
        for name, value in source:
            lname = name.lower()
            if lname == "x-forwarded-for":
                forwarded_for = value if forwarded_for is None else f"{forwarded_for}, {value}"
            if lname in _NOT_FORWARDED or lname in named:
                continue
            headers.add(name, value)
        ip = ctx.request.remote  # the peer, as AWS appends it
        headers["X-Forwarded-For"] = ip if forwarded_for is None else f"{forwarded_for}, {ip}"
        headers["X-Forwarded-Proto"] = "https" if request.scheme == "https" else "http"
        host = request.headers.get("Host")
        if host is not None:
            headers["X-Forwarded-Host"] = host
        headers["x-request-id"] = ctx.request_id
        return headers

    async def __call__(self, ctx: RequestContext) -> Response:
        request = ctx.request
        proxy = self._proxy
        handshake = request.upgrade
        if handshake is None or not web.WebSocketResponse().can_prepare(handshake).ok:
            # A malformed handshake (no key, an unknown version) is the client's error.
            raise GatewayError(ErrorType.BAD_REQUEST)
        overrides = ctx.request_overrides
        path = proxy.render_path(ctx, overrides).decode("ascii")
        headers = self._headers(ctx, overrides)
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        protocols = tuple(p.strip() for p in offered.split(",") if p.strip())
        session = self._client()
        loop = asyncio.get_running_loop()
        attempts = proxy.retries + 1
        tried: list[Any] = []
        started = time.perf_counter()
        while True:
            target = proxy.pick(loop.time(), tried)
            url = URL(target.label)
            scheme = "wss" if target.ssl is not None else "ws"
            upstream_url = URL(
                f"{scheme}://{url.raw_authority}{target.prefix.decode('ascii')}{path}",
                encoded=True,
            )
            try:
                async with asyncio.timeout(proxy.timeout_s):
                    upstream_ws = await session.ws_connect(
                        upstream_url,
                        protocols=protocols,
                        headers=headers,
                        autoclose=False,
                        autoping=True,
                        max_msg_size=self._max_msg,
                        compress=0,
                        timeout=aiohttp.ClientWSTimeout(ws_close=_CLOSE_TIMEOUT_S),
                        # As the proxied requests: aiohttp alone would use the system's CAs,
                        # no client certificate and the URL's host.
                        ssl=target.ssl if target.ssl is not None else True,
                        server_hostname=target.server_name,
                    )
                break
            except _Refused as refused:
                ctx.integration_latency_s = time.perf_counter() - started
                proxy.succeeded(target)
                if refused.status < 200:
                    raise GatewayError(ErrorType.UPSTREAM_FAILURE) from None
                return self._refusal(ctx, refused)
            except _TooLong:
                ctx.integration_latency_s = time.perf_counter() - started
                proxy.succeeded(target)
                raise GatewayError(ErrorType.UPSTREAM_FAILURE) from None
            except aiohttp.WSServerHandshakeError:
                # 101 with a bad accept key or without the upgrade headers: a broken upstream.
                ctx.integration_latency_s = time.perf_counter() - started
                proxy.succeeded(target)
                raise GatewayError(ErrorType.UPSTREAM_FAILURE) from None
            except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError):
                proxy.failed(target, loop.time())
                attempts -= 1
                if attempts <= 0:
                    ctx.integration_latency_s = time.perf_counter() - started
                    raise GatewayError(ErrorType.UPSTREAM_FAILURE) from None
                tried.append(target)
            except TimeoutError:
                proxy.failed(target, loop.time())
                ctx.integration_latency_s = time.perf_counter() - started
                raise GatewayError(ErrorType.UPSTREAM_TIMEOUT) from None
            except aiohttp.ClientError:
                proxy.failed(target, loop.time())
                ctx.integration_latency_s = time.perf_counter() - started
                raise GatewayError(ErrorType.UPSTREAM_FAILURE) from None
        ctx.integration_latency_s = time.perf_counter() - started
        proxy.succeeded(target)
        chosen = upstream_ws.protocol
        client_ws = web.WebSocketResponse(
            protocols=(chosen,) if chosen else (),
            autoclose=False,
            autoping=True,
            max_msg_size=self._max_msg,
            compress=False,
        )
        ctx.apply_response_headers(client_ws)
        target.in_flight += 1
        pair = (client_ws, upstream_ws)
        self._live.add(pair)
        try:
            try:
                await client_ws.prepare(handshake)
            except BaseException:
                await upstream_ws.close(code=_GOING_AWAY)
                raise
            await self._relay(client_ws, upstream_ws)
        finally:
            self._live.discard(pair)
            target.in_flight -= 1
        return UpgradedResponse(client_ws)

    @staticmethod
    def _refusal(ctx: RequestContext, refused: _Refused) -> Response:
        response = Response(
            status=refused.status,
            reason=refused.reason or None,
            body=refused.body,
            headers=refused.headers,
        )
        ctx.apply_response_headers(response)
        return response

    # -- relay --------------------------------------------------------------------------------

    async def _relay(
        self, client_ws: web.WebSocketResponse, upstream_ws: aiohttp.ClientWebSocketResponse
    ) -> None:
        up = asyncio.ensure_future(_pump(client_ws, upstream_ws))
        down = asyncio.ensure_future(_pump(upstream_ws, client_ws))
        try:
            done, _ = await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            up.cancel()
            down.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(
                    client_ws.close(code=_GOING_AWAY), upstream_ws.close(code=_GOING_AWAY)
                )
            raise
        first = up if up in done else down
        other = down if first is up else up
        other.cancel()
        with contextlib.suppress(BaseException):
            await other
        try:
            outcome = first.result()
        except Exception:  # a send to the other side failed: it went away
            outcome = None
        if outcome is not None:
            code, reason = outcome
        elif first is up:
            # The client vanished without a close frame: tell the upstream it went away.
            code, reason = _GOING_AWAY, b""
        else:
            code, reason = _INTERNAL_ERROR, b""
        # Both at once: each waits (bounded) for its peer's answering close frame.
        await asyncio.gather(
            client_ws.close(code=code, message=reason),
            upstream_ws.close(code=code, message=reason),
            return_exceptions=True,
        )
