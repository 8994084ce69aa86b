"""The message stores of pools, as message_svc uses them: one per store URI, opened on first
use and closed once unused (``services/common/pool_stores.py``).

With pooling on, queue_svc tells message_svc (beside each queue's metadata) the message store
URI of the pool a queue is placed on; "" means message_svc's own store. A pool's store is
opened by the first operation of one of its queues, through the same registry as the own
store (``storage/registry.py``), and shared by all of them. An open that fails (the pool's
server is down) fails that operation only, with ``Unavailable`` (503), and the next operation
tries again: the other pools and the own store keep serving. A store no operation used for
``idle`` seconds is closed by :meth:`PoolStores.collect_garbage` (run by the expiry sweeper),
so the store of a pool that was deleted, or whose queues are gone, does not stay open.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from services.common import pool_stores
from services.common.store_uri import redact
from services.message_svc.storage.base import MessageStore

log = logging.getLogger(__name__)

Opener = Callable[[str], Awaitable[MessageStore]]


class PoolStores(pool_stores.PoolStores[MessageStore]):
    """message_svc's own store ("") and the stores of pools, by URI."""

    kind = "message store"

    async def collect_garbage(self) -> int:
        """Sweep expired messages and claims from every open store, then close the pool
        stores unused for ``idle`` seconds. A pool whose store fails is logged and skipped.

        Returns:
            How many items were removed.
        """
        removed = await self.own.collect_garbage()
        for uri, store in self.opened():
            try:
                removed += await store.collect_garbage()
            except Exception as exc:  # one pool down must not stop the sweep of the others
                log.warning("expiry sweep of pool %s failed: %s", redact(uri), exc)
        await self.close_idle()
        return removed
