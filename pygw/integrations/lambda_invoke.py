"""The `lambda` integration: a function in any language, invoked through the Lambda Invoke API.

`POST {endpoint}/2015-03-31/functions/{function_name}/invocations` with the API Gateway proxy
event as the body, as API Gateway itself invokes a function: the Runtime Interface Emulator that
AWS's base images include, LocalStack or moto answer it. The event and the reading of the result
are those of the in-process `function` integration (`ProxyEventIntegration`), so a handler answers
the same behind either.

A result carrying `X-Amz-Function-Error` (the function raised, or its runtime failed), an Invoke
API error status (no such function, throttled) or an endpoint that cannot be reached answers with
the style's INTEGRATION_FAILURE; a function slower than `timeout_ms` answers
INTEGRATION_TIMEOUT. Connections to the endpoint are kept alive and pooled per integration.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import orjson

from pygw.errors import Style
from pygw.integrations.function import ProxyEventIntegration

__all__ = ["InvokeFailed", "LambdaInvokeIntegration"]

log = logging.getLogger("pygw.lambda")

_HEADERS: Final = {
    "Content-Type": "application/json",
    "X-Amz-Invocation-Type": "RequestResponse",
    "X-Amz-Log-Type": "None",
}


class InvokeFailed(Exception):
    """The Invoke API answered, but not with the function's result."""


class LambdaInvokeIntegration(ProxyEventIntegration):
    def __init__(
        self,
        *,
        function_name: str,
        endpoint: str,
        payload_format: str,
        timeout_ms: int,
        style: Style,
        api_name: str,
        stage: str,
        route_key: str,
        binary_media_types: Sequence[str] = (),
        qualifier: str | None = None,
        max_connections: int = 64,
    ) -> None:
        super().__init__(
            function_name=function_name,
            payload_format=payload_format,
            timeout_ms=timeout_ms,
            style=style,
            api_name=api_name,
            stage=stage,
            route_key=route_key,
            binary_media_types=binary_media_types,
        )
        url = f"{endpoint.rstrip('/')}/2015-03-31/functions/{quote(function_name, safe='')}"
        url += "/invocations"
        if qualifier:
            url += f"?Qualifier={quote(qualifier, safe='')}"
        self.url = url
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: a session belongs to the loop that serves the requests.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=30.0, enable_cleanup_closed=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # The integration's own timeout bounds the wait; aiohttp's default would cut a
                # long function at five minutes whatever was configured.
                timeout=aiohttp.ClientTimeout(total=None),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def invoke(self, event: dict[str, Any], request_id: str) -> Any:
        headers = {**_HEADERS, "X-Amz-Request-Id": request_id}
        async with self._client().post(
            self.url, data=orjson.dumps(event), headers=headers
        ) as answer:
            payload = await answer.read()
            if answer.status != 200:
                kind = answer.headers.get("X-Amzn-ErrorType", "")
                raise InvokeFailed(
                    f"Invoke API answered {answer.status} {kind}: "
                    f"{payload[:300].decode('utf-8', 'replace')}"
                )
            error = answer.headers.get("X-Amz-Function-Error")
            if error is not None:
                raise InvokeFailed(
                    f"function error ({error}): {payload[:1000].decode('utf-8', 'replace')}"
                )
        if not payload:
            return None
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise InvokeFailed(
                f"result is not JSON: {payload[:300].decode('utf-8', 'replace')}"
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
