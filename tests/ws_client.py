"""What the WebSocket tests read from a client connection."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> Any:
    msg = await ws.receive(timeout=10)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


async def until_closed(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """The close code, once the gateway has closed the connection."""
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return ws.close_code
