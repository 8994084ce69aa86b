"""The periodic sweep that removes expired messages and claims from the store."""

from __future__ import annotations

import asyncio
import logging

from services.message_svc.storage.base import MessageStore

log = logging.getLogger(__name__)


class Sweeper:
    """Calls :meth:`MessageStore.collect_garbage` every ``interval`` seconds.

    Expired items are already invisible to every operation; sweeping only reclaims space, so a
    failed sweep is logged and the next one tries again.
    """

    def __init__(self, store: MessageStore, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and self._interval > 0:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def sweep(self) -> int:
        removed = await self._store.collect_garbage()
        if removed:
            log.debug("expiry sweep removed %d messages and claims", removed)
        return removed

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("expiry sweep failed")
