"""The periodic sweep that reclaims expired items of a store (messages and claims,
subscriptions and their deliveries): no external GC job is needed."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from services.common.errors import Unavailable

log = logging.getLogger(__name__)


class Collectable(Protocol):
    async def collect_garbage(self) -> int:
        """Remove expired items; return how many were removed."""
        ...


class Periodic:
    """A background task that calls :meth:`tick` every ``interval`` seconds (0 disables it),
    from :meth:`start` until :meth:`stop`. ``tick`` handles its own failures.

    :meth:`stop` ends the task even when a tick loses the cancellation (a driver that turns it
    into an error, which the tick logs and returns from): the loop ends after that tick."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        if self._task is None and self._interval > 0:
            self._stopping = False
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping = True
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._interval)
            await self.tick()

    async def tick(self) -> None:
        raise NotImplementedError


class Sweeper(Periodic):
    """Calls ``store.collect_garbage()`` every ``interval`` seconds (0 disables it).

    Expired items are already invisible to every operation; sweeping only reclaims space, so a
    failed sweep is logged and the next one tries again.
    """

    def __init__(self, store: Collectable, interval: float, what: str = "expired items") -> None:
        super().__init__(interval)
        self._store = store
        self._what = what

    async def sweep(self) -> int:
        removed = await self._store.collect_garbage()
        if removed:
            log.debug("expiry sweep removed %d %s", removed, self._what)
        return removed

    async def tick(self) -> None:
        try:
            await self.sweep()
        except Unavailable as exc:
            log.warning("expiry sweep failed: %s", exc.description)
        except Exception:
            log.exception("expiry sweep failed")
