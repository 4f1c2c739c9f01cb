"""A WebSocket API mount's integration as the runtime compiles it, for tests that serve it alone."""

from __future__ import annotations

from pygw.config.load import LoadedConfig
from pygw.observe.metrics import Metrics
from pygw.runtime import compile_runtime
from pygw.websocket.api import WebSocketApiIntegration
from pygw.websocket.connections import ConnectionRegistry


def websocket_api(
    loaded: LoadedConfig,
    registry: ConnectionRegistry,
    *,
    api: str | None = None,
    stage: str = "prod",
    metrics: Metrics | None = None,
) -> WebSocketApiIntegration:
    """The integration of `api` (the config's first API when None) on `stage`. Raises
    ConfigError as `pygw check` would report it."""
    runtime = compile_runtime(loaded, metrics or Metrics(), registry)
    name = api if api is not None else loaded.config.apis[0].name
    for route in runtime.routes:
        integration = route.primary.pipeline.integration
        if (
            route.api == name
            and route.stage == stage
            and not route.mapped
            and isinstance(integration, WebSocketApiIntegration)
        ):
            return integration
    raise LookupError(f"no WebSocket mount for api {name!r} stage {stage!r}")
