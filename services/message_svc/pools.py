"""The message stores of pools, as message_svc uses them: one per store URI, opened on first
use and closed once unused.

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

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from services.common.store_uri import redact
from services.message_svc.storage.base import MessageStore

log = logging.getLogger(__name__)

Opener = Callable[[str], Awaitable[MessageStore]]


class PoolStores:
    """message_svc's own store ("") and the stores of pools, by URI."""

    def __init__(
        self,
        own: MessageStore,
        opener: Opener,
        idle: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.own = own
        self._opener = opener
        self._idle = idle
        self._clock = clock
        self._stores: dict[str, MessageStore] = {}
        self._used: dict[str, float] = {}
        self._opening: dict[str, asyncio.Task[MessageStore]] = {}

    @property
    def open_uris(self) -> list[str]:
        """The pool stores open now."""
        return sorted(self._stores)

    async def get(self, uri: str) -> MessageStore:
        """The store of ``uri`` ("" for the own store), opened when it is not yet.

        Raises:
            Unavailable: the pool's store cannot be reached or opened.
            ConfigurationError: the URI is not one of ours (the catalog checked it).
        """
        if not uri:
            return self.own
        self._used[uri] = self._clock()
        store = self._stores.get(uri)
        if store is not None:
            return store
        task = self._opening.get(uri)
        if task is None:
            task = asyncio.ensure_future(self._open(uri))
            self._opening[uri] = task
        # Shielded: a caller that gives up does not cancel the open others wait for.
        return await asyncio.shield(task)

    async def _open(self, uri: str) -> MessageStore:
        try:
            store = await self._opener(uri)
        finally:
            del self._opening[uri]
        self._stores[uri] = store
        self._used[uri] = self._clock()
        log.info("opened the message store of pool %s", redact(uri))
        return store

    async def collect_garbage(self) -> int:
        """Sweep expired messages and claims from every open store, then close the pool
        stores unused for ``idle`` seconds. A pool whose store fails is logged and skipped.

        Returns:
            How many items were removed.
        """
        removed = await self.own.collect_garbage()
        for uri, store in list(self._stores.items()):
            try:
                removed += await store.collect_garbage()
            except Exception as exc:  # one pool down must not stop the sweep of the others
                log.warning("expiry sweep of pool %s failed: %s", redact(uri), exc)
        await self.close_idle()
        return removed

    async def close_idle(self) -> None:
        """Close the pool stores no operation used for ``idle`` seconds."""
        limit = self._clock() - self._idle
        for uri in [u for u, used in self._used.items() if used <= limit]:
            store = self._stores.pop(uri, None)
            self._used.pop(uri, None)
            if store is not None:
                await store.close()
                log.info("closed the unused message store of pool %s", redact(uri))

    async def close(self) -> None:
        """Close every pool store (not the own one, which its owner closes)."""
        for task in list(self._opening.values()):
            task.cancel()
        stores, self._stores = self._stores, {}
        self._used.clear()
        for store in stores.values():
            await store.close()
