"""The message store's Redis settings: its name, key prefix, pool size and error edge."""

from __future__ import annotations

import redis.asyncio

from services.common.redis_store import RedisOptions, describe, redis_edge

__all__ = ["STORE", "RedisOptions", "connect", "describe", "edge", "parse"]

STORE = "message store"


def parse(uri: str) -> RedisOptions:
    """Raises: ConfigurationError, naming what is wrong."""
    return RedisOptions.parse(uri, store=STORE, prefix="zm", max_connections=64)


def connect(options: RedisOptions) -> redis.asyncio.Redis:
    return options.client("zaqar-message-svc", decode_responses=False)


edge = redis_edge(STORE)
