"""The queue store's Redis settings: its name, key prefix, pool size and error edge."""

from __future__ import annotations

import redis.asyncio

from services.common import store_uri
from services.common.redis_store import (
    CLUSTER_FORM,
    FORM,
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
    options = RedisOptions.parse(uri, store=STORE, prefix="zq", max_connections=50)
    if options.cluster != cluster:
        raise store_uri.invalid(STORE, uri, f"expected {CLUSTER_FORM if cluster else FORM}")
    return options


def connect(options: RedisOptions) -> redis.asyncio.Redis | RedisClusterClient:
    return options.connect("zaqar-queue-svc", decode_responses=True)


edge = redis_edge(STORE)
