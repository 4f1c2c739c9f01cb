"""Mock integration: a fixed answer, optionally late or faulty, standing in for a backend."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import struct
import time
from dataclasses import dataclass

from pygw.context import RequestContext
from pygw.request import Request
from pygw.response import Response

# Standard normal quantile at 0.99: a log-normal with median p50 reaches p99 at
# p50 * exp(sigma * Z99).
_Z99 = 2.3263478740408408


@dataclass(frozen=True, slots=True)
class Latency:
    """Response delay in milliseconds: fixed, or log-normal fitted to a median and a p99."""

    fixed_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None

    def sampler(self, rng: random.Random) -> _Sampler:
        if self.fixed_ms is not None:
            return _Fixed(self.fixed_ms / 1000.0)
        if self.p50_ms is None or self.p99_ms is None:
            raise ValueError("latency needs either fixed, or both p50 and p99")
        if self.p50_ms <= 0:
            return _Fixed(0.0)
        sigma = math.log(max(self.p99_ms, self.p50_ms) / self.p50_ms) / _Z99
        return _LogNormal(math.log(self.p50_ms / 1000.0), sigma, rng)


class _Sampler:
    def __call__(self) -> float:
        raise NotImplementedError


class _Fixed(_Sampler):
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def __call__(self) -> float:
        return self._seconds


class _LogNormal(_Sampler):
    def __init__(self, mu: float, sigma: float, rng: random.Random) -> None:
        self._mu = mu
        self._sigma = sigma
        self._rng = rng

    def __call__(self) -> float:
        return self._rng.lognormvariate(self._mu, self._sigma)


@dataclass(frozen=True, slots=True)
class Faults:
    rate: float
    status: int | None = None  # answer with this status...
    reset: bool = False  # ...or reset the connection


class ConnectionResetByFault(Exception):
    """The mock reset the client connection on purpose; there is nothing left to answer."""


_LINGER_RESET = struct.pack("ii", 1, 0)


def reset_connection(request: Request) -> None:
    """Close with RST rather than FIN, as a crashed backend would (SO_LINGER, zero timeout)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


class MockIntegration:
    def __init__(
        self,
        *,
        status: int,
        headers: dict[str, str],
        body: bytes,
        latency: Latency | None = None,
        faults: Faults | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._status = status
        self._headers = dict(headers)
        self._body = body
        self._rng = rng or random.Random()
        self._delay = latency.sampler(self._rng) if latency is not None else None
        self._faults = faults if faults is not None and faults.rate > 0 else None
        self._fault_body = b'{"message":"Injected fault"}'

    async def __call__(self, ctx: RequestContext) -> Response:
        if self._delay is not None:
            started = time.perf_counter()
            await asyncio.sleep(self._delay())
            ctx.integration_latency_s = time.perf_counter() - started
        faults = self._faults
        if faults is not None and self._rng.random() < faults.rate:
            if faults.reset:
                reset_connection(ctx.request)
                raise ConnectionResetByFault
            response = Response(
                status=faults.status or 500,
                body=self._fault_body,
                content_type="application/json",
            )
        else:
            response = Response(status=self._status, body=self._body, headers=self._headers)
        ctx.apply_response_headers(response)
        return response

    async def close(self) -> None:
        return None
