"""The Redis notifier store on a Redis Cluster (``redis+cluster://``).

The same store and scripts as on one server (``store.py``), with every key under one hash tag,
``<prefix>:{<prefix>}:`` (``_keys.py``): each script touches keys of one slot, so it runs whole,
atomically, on the master of that slot, as on one server. Each script starts with ``#!lua``:
Redis (7.0 or later) then refuses a script that touches a key of another slot, even one the
script was not given (without it, a key of another slot on the same node would pass unseen).

The whole store is thus served by one master (and its replicas): notifier traffic
(subscriptions, one delivery per notification) is small next to the message traffic, which
spreads over the masters by queue. docs/redis-cluster.md says why the outbox was not spread by
queue, and what a failover means here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.notifier_svc.storage.redis._connection import parse
from services.notifier_svc.storage.redis.store import RedisNotifierStore


class RedisClusterNotifierStore(RedisNotifierStore):
    """:class:`RedisNotifierStore` on a Redis Cluster (see the module's docstring)."""

    script_header = "#!lua\n"

    @classmethod
    def from_uri(
        cls, uri: str, now: Callable[[], float] = time.time
    ) -> RedisClusterNotifierStore:
        """Raises: ConfigurationError, naming what is wrong with ``uri``."""
        return cls(parse(uri, cluster=True), now)
