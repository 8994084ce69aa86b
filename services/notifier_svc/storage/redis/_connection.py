"""The notifier store's Redis settings: its name, key prefix, pool size and error edge."""

from __future__ import annotations

import redis.asyncio

from services.common.redis_store import RedisOptions, describe, redis_edge

__all__ = ["STORE", "RedisOptions", "connect", "describe", "edge", "parse"]

STORE = "notifier store"


def parse(uri: str) -> RedisOptions:
    """Raises: ConfigurationError, naming what is wrong."""
    return RedisOptions.parse(uri, store=STORE, prefix="zn", max_connections=32)


def connect(options: RedisOptions, decode: bool = True) -> redis.asyncio.Redis:
    """A client; ``decode`` False for one whose replies stay bytes (the watch feed)."""
    return options.client("zaqar-notifier-svc", decode_responses=decode)


edge = redis_edge(STORE)
