"""The periodic sweep that removes expired subscriptions (and their pending deliveries)."""

from __future__ import annotations

import asyncio
import logging

from services.common.errors import Unavailable
from services.notifier_svc.storage.base import NotifierStore

log = logging.getLogger(__name__)


class Sweeper:
    """Calls :meth:`NotifierStore.collect_garbage` every ``interval`` seconds.

    Expired subscriptions are already invisible to every operation; sweeping reclaims space
    and drops their pending deliveries, so a failed sweep is logged and the next one retries.
    """

    def __init__(self, store: NotifierStore, interval: float) -> None:
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
            log.debug("expiry sweep removed %d subscriptions and deliveries", removed)
        return removed

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep()
            except Unavailable as exc:
                log.warning("expiry sweep failed: %s", exc.description)
            except Exception:
                log.exception("expiry sweep failed")
