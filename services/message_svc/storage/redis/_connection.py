"""The message store's Redis settings: its name, key prefix, pool size and error edge."""

from __future__ import annotations

import redis.asyncio

from services.common.redis_store import (
    RedisClusterClient,
    RedisOptions,
    describe,
    redis_edge,
)

__all__ = ["CLIENT_NAME", "STORE", "RedisOptions", "connect", "describe", "edge", "parse"]

STORE = "message store"
CLIENT_NAME = "zaqar-message-svc"


def parse(uri: str, cluster: bool = False) -> RedisOptions:
    """The options of a ``redis://`` URI, or of a ``redis+cluster://`` one with ``cluster``.

    Raises: ConfigurationError, naming what is wrong.
    """
    return RedisOptions.parse(uri, store=STORE, prefix="zm", max_connections=64,
                              expect_cluster=cluster)


def connect(options: RedisOptions) -> redis.asyncio.Redis | RedisClusterClient:
    return options.connect(CLIENT_NAME, decode_responses=False)


edge = redis_edge(STORE)
