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
from typing import Any

import aiohttp

from pygw.errors import Style
from pygw.integrations.function import ProxyEventIntegration
from pygw.lambda_client import invocation_url, invoke

__all__ = ["LambdaInvokeIntegration"]

log = logging.getLogger("pygw.lambda")


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
        self.url = invocation_url(endpoint, function_name, qualifier)
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
        # FunctionError and InvokeFailed propagate: the base class answers the style's
        # integration failure and logs why.
        return await invoke(self._client(), self.url, event, request_id)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
