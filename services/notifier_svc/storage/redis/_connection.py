"""The notifier store's Redis settings: its name, key prefix, pool size and error edge."""

from __future__ import annotations

import redis.asyncio

from services.common.redis_store import (
    RedisClusterClient,
    RedisOptions,
    describe,
    redis_edge,
)

__all__ = ["STORE", "RedisOptions", "connect", "describe", "edge", "parse"]

STORE = "notifier store"


def parse(uri: str, cluster: bool = False) -> RedisOptions:
    """The options of a ``redis://`` URI, or of a ``redis+cluster://`` one with ``cluster``.

    Raises: ConfigurationError, naming what is wrong.
    """
    return RedisOptions.parse(uri, store=STORE, prefix="zn", max_connections=32,
                              expect_cluster=cluster)


def connect(
    options: RedisOptions, decode: bool = True
) -> redis.asyncio.Redis | RedisClusterClient:
    """A client of the server or cluster the options name; ``decode`` False for one whose
    replies stay bytes (the watch feed)."""
    return options.connect("zaqar-notifier-svc", decode_responses=decode)


edge = redis_edge(STORE)
