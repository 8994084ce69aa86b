"""queue_svc's part of the detailed health check: its store, and the catalog in it.

The queue store is timed creating and deleting a throwaway queue of the internal health
project (``services.common.health``); queues such a check could not delete (the store went
away in between) are removed by the next check. With pooling, the catalog is read too: the
gateway reports it as ``catalog_reachable`` and hands the pools it lists to message_svc.
A pool whose URI does not name a store (see :func:`_checkable`) is left out of that list.
"""

from __future__ import annotations

import functools
import logging

from zaqar_grpc.v2 import admin_pb2

from services.common import store_probe
from services.common.config import ConfigurationError
from services.common.health import HEALTH_PROJECT, StoreCheck, new_check, throwaway_queue
from services.common.limits import PAGE_LIMIT_MAX
from services.queue_svc.storage.base import QueueStore
from services.queue_svc.storage.catalog import PoolRecord

log = logging.getLogger(__name__)


async def check_stores(
    store: QueueStore, pooling: bool, seconds: float
) -> admin_pb2.StoresHealth:
    check = new_check("queue", seconds)
    queue = throwaway_queue()
    await check.run("create_queue", lambda: store.create(HEALTH_PROJECT, queue, {}))
    await check.clean_up("delete_queue", lambda: store.delete(HEALTH_PROJECT, queue))
    await _sweep(store, check)
    health = admin_pb2.StoresHealth(stores=[check.report()])
    if pooling:
        catalog = StoreCheck("catalog", check.deadline)
        snapshot = await catalog.reach(store.catalog.snapshot)
        health.stores.append(catalog.report())
        if snapshot is not None:
            health.pools.extend(
                admin_pb2.PoolStore(name=pool.name, uri=pool.uri)
                for pool in sorted(snapshot.pools.values(), key=lambda pool: pool.name)
                if _checkable(pool)
            )
    return health


def _checkable(pool: PoolRecord) -> bool:
    """Whether the pool's URI is one the pool API would accept now.

    One that is not (stored before a rule it breaks, or written to the catalog directly) is a
    bad catalog entry rather than a store that does not answer: it is logged and left out, so
    that it does not turn every health check into a 503.
    """
    try:
        store_probe.check_uri(pool.uri, "pool")
    except ConfigurationError as exc:
        log.warning("health check leaves out pool %s: %s; update or delete the pool",
                    pool.name, exc)
        return False
    return True


async def _sweep(store: QueueStore, check: StoreCheck) -> None:
    """Delete the throwaway queues earlier checks left behind (not timed)."""
    page = await check.reach(lambda: store.list(HEALTH_PROJECT, limit=PAGE_LIMIT_MAX))
    for record in page.queues if page is not None else ():
        await check.reach(functools.partial(store.delete, HEALTH_PROJECT, record.name))
