"""Access log: one JSON object per line, buffered and flushed off the request path."""

from __future__ import annotations

import asyncio
import sys
from typing import IO, Any

import orjson


class AccessLog:
    """Writes records to a file or stdout. Records are buffered and flushed every `flush_s`,
    so a burst of requests costs one write call, not one per request."""

    def __init__(self, path: str, flush_s: float = 0.2, max_buffer: int = 1 << 16) -> None:
        self._path = path
        self._stream: IO[bytes] = (
            sys.stdout.buffer if path == "-" else open(path, "ab")  # noqa: SIM115
        )
        self._buffer = bytearray()
        self._max_buffer = max_buffer
        self._flush_s = flush_s
        self._flusher: asyncio.TimerHandle | None = None

    def write(self, record: dict[str, Any]) -> None:
        self._buffer += orjson.dumps(record)
        self._buffer += b"\n"
        if len(self._buffer) >= self._max_buffer:
            self.flush()
        elif self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_later(self._flush_s, self.flush)

    def flush(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if self._buffer:
            self._stream.write(self._buffer)
            self._stream.flush()
            self._buffer.clear()

    def close(self) -> None:
        self.flush()
        if self._path != "-":
            self._stream.close()
