"""The stores a service opens for pools: one per pool URI, opened on first use, shared by the
pool's queues, and closed once unused. message_svc keeps its message stores of pools this way
(``services/message_svc/pools.py``), notifier_svc its subscription stores of pools
(``services/notifier_svc/pools.py``).

A pool's store is opened by the first operation that needs it, through the opener the service
gives (its store registry), and shared by all of them. An open that fails (the pool's server is
down) fails that operation only, with ``Unavailable`` (503), and the next operation tries
again: the other pools and the own store keep serving. A store no operation used for ``idle``
seconds is closed by :meth:`PoolStores.close_idle` (which the service's sweeper runs), so the
store of a pool that was deleted, or whose queues are gone, does not stay open.

A store taken out of service (idle, or its pool deleted) is not closed at once: an operation
that took it just before may still be using it (a delivery being claimed, a sweep). New
operations open a fresh one; the old one is closed by the first sweep ``RETIRE_GRACE`` seconds
later, longer than any operation's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from services.common.config import ConfigurationError
from services.common.errors import InvalidArgument
from services.common.store_uri import redact

log = logging.getLogger(__name__)

RETIRE_GRACE = 60.0
# Seconds :meth:`PoolStores.close` waits for stores being opened.
OPEN_WAIT = 10.0


class Closable(Protocol):
    async def close(self) -> None: ...


S = TypeVar("S", bound=Closable)


class PoolStores(Generic[S]):
    """A service's own store ("") and the stores of pools, by pool URI."""

    kind = "store"
    """What the stores hold, for log lines ("message store", "notifier store")."""

    def __init__(
        self,
        own: S,
        opener: Callable[[str], Awaitable[S]],
        idle: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.own = own
        self._opener = opener
        self._idle = idle
        self._clock = clock
        self._stores: dict[str, S] = {}
        self._used: dict[str, float] = {}
        self._opening: dict[str, asyncio.Task[S]] = {}
        # Stores taken out of service, with the time from which they may be closed.
        self._retired: list[tuple[float, str, S]] = []

    @property
    def open_uris(self) -> list[str]:
        """The pool stores open now."""
        return sorted(self._stores)

    def opened(self) -> list[tuple[str, S]]:
        """The pool stores open now, by URI (not the own store)."""
        return sorted(self._stores.items(), key=lambda item: item[0])

    async def get(self, uri: str) -> S:
        """The store of ``uri`` ("" for the own store), opened when it is not yet.

        Raises:
            Unavailable: the pool's store cannot be reached or opened.
            InvalidArgument: the URI is not one this service can open (the catalog checks
                every pool's; a caller that names another gets the reason, its secrets
                redacted, not a 503).
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
        try:
            return await asyncio.shield(task)
        except ConfigurationError as exc:
            raise InvalidArgument(f"No {self.kind} can be opened for that pool: {exc}.") from None

    def touch(self, uri: str) -> None:
        """Count the pool's store as used now (it stays open another ``idle`` seconds)."""
        if uri in self._stores:
            self._used[uri] = self._clock()

    async def _open(self, uri: str) -> S:
        try:
            store = await self._opener(uri)
        finally:
            del self._opening[uri]
        self._stores[uri] = store
        self._used[uri] = self._clock()
        log.info("opened the %s of pool %s", self.kind, redact(uri))
        return store

    async def close_idle(self) -> None:
        """Take the pool stores no operation used for ``idle`` seconds out of service, and
        close those taken out ``RETIRE_GRACE`` seconds ago or more."""
        now = self._clock()
        limit = now - self._idle
        for uri in [u for u, used in self._used.items() if used <= limit]:
            await self.drop(uri, "unused")
        due = [item for item in self._retired if item[0] <= now]
        self._retired = [item for item in self._retired if item[0] > now]
        for _, uri, store in due:
            await store.close()
            log.info("closed the %s of pool %s", self.kind, redact(uri))

    async def drop(self, uri: str, why: str) -> None:
        """Take the store of ``uri`` out of service now (a later use opens a new one); it is
        closed by the first :meth:`close_idle` ``RETIRE_GRACE`` seconds from now."""
        store = self._stores.pop(uri, None)
        self._used.pop(uri, None)
        if store is not None:
            self._retired.append((self._clock() + RETIRE_GRACE, uri, store))
            log.info("took the %s %s of pool %s out of service", why, self.kind, redact(uri))

    @property
    def retired(self) -> int:
        """How many stores taken out of service are still open."""
        return len(self._retired)

    async def close(self) -> None:
        """Close every pool store (not the own one, which its owner closes). A store being
        opened is waited for (up to ``OPEN_WAIT`` seconds) and closed with the others: a
        cancelled open could leave its connections open."""
        opening = list(self._opening.values())
        if opening:
            _, pending = await asyncio.wait(opening, timeout=OPEN_WAIT)
            for task in pending:
                task.cancel()
        stores, self._stores = self._stores, {}
        retired, self._retired = self._retired, []
        self._used.clear()
        for store in [*stores.values(), *(store for _, _, store in retired)]:
            await store.close()
