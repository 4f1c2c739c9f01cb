"""Shared throttle state backends beyond the native in-process/shared-memory `Throttle`."""

from pygw.state.redis_throttle import (
    RedisThrottle,
    RedisThrottleStage,
    close_pools,
    redis_throttle_from_config,
)

__all__ = ["RedisThrottle", "RedisThrottleStage", "close_pools", "redis_throttle_from_config"]
