"""The queue store's Redis settings: its name, key prefix, pool size and error edge."""

from __future__ import annotations

import redis.asyncio

from services.common.redis_store import (
    RedisClusterClient,
    RedisOptions,
    describe,
    redis_edge,
)

__all__ = ["STORE", "RedisOptions", "connect", "describe", "edge", "parse"]

STORE = "queue store"


def parse(uri: str, cluster: bool = False) -> RedisOptions:
    """The options of a ``redis://`` URI, or of a ``redis+cluster://`` one with ``cluster``.

    Raises: ConfigurationError, naming what is wrong.
    """
    return RedisOptions.parse(uri, store=STORE, prefix="zq", max_connections=50,
                              expect_cluster=cluster)


def connect(options: RedisOptions) -> redis.asyncio.Redis | RedisClusterClient:
    return options.connect("zaqar-queue-svc", decode_responses=True)


edge = redis_edge(STORE)
