"""What the WebSocket tests read from a client connection."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> Any:
    msg = await ws.receive(timeout=10)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


async def close_frame_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """The code of the close frame the gateway sent, as received; None if the connection ended
    without one. Open the client with autoclose=False: its automatic close reply races the
    server closing the socket (aiohttp does not wait for the reply when the close comes from
    another task), and a reply that loses the race makes the client report 1006 instead."""
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type is aiohttp.WSMsgType.CLOSE:
            return int(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return None


async def until_closed(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """The close code, once the gateway has closed the connection."""
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return ws.close_code
