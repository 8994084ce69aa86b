"""notifier_svc's part of the detailed health check: whether the subscription store answers,
and with pooling each pool's notifier store (``pools.py``) as ``pool-subscription:<name>``
(a read of a throwaway queue of the internal health project; nothing is written)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from zaqar_grpc.v2 import admin_pb2

from services.common.health import HEALTH_PROJECT, StoreCheck, new_check, throwaway_queue
from services.notifier_svc.pools import NotifierStores
from services.notifier_svc.storage.base import NotifierStore

POOL_PREFIX = "pool-subscription:"


async def check_store(store: NotifierStore, name: str, seconds: float) -> StoreCheck:
    check = new_check(name, seconds)
    await check.reach(lambda: store.list(HEALTH_PROJECT, throwaway_queue(), limit=1))
    return check


async def check_pool(
    pool: admin_pb2.PoolStore, stores: NotifierStores, seconds: float
) -> StoreCheck:
    """Open the pool's notifier store (kept, as any use keeps it) and read it."""
    check = new_check(POOL_PREFIX + pool.name, seconds)
    store = await check.reach(lambda: stores.of_pool(pool.uri))
    if store is not None:
        await check.reach(lambda: store.list(HEALTH_PROJECT, throwaway_queue(), limit=1))
    return check


async def check_stores(
    store: NotifierStore,
    seconds: float,
    pools: Sequence[admin_pb2.PoolStore] = (),
    stores: NotifierStores | None = None,
) -> admin_pb2.StoresHealth:
    """The own store and, given ``stores``, the notifier stores of ``pools`` (those the
    gateway got from queue_svc), checked at the same time."""
    checks = await asyncio.gather(
        check_store(store, "subscription", seconds),
        *(check_pool(pool, stores, seconds) for pool in pools if stores is not None),
    )
    return admin_pb2.StoresHealth(stores=[check.report() for check in checks])
