"""notifier_svc's stores of pools: a queue placed on a pool keeps its subscriptions and its
pending deliveries in a notifier store on the pool's server, opened at a URI derived from the
pool's message store URI (:func:`notifier_uri`), one per pool, opened on first use and closed
once unused (``services/common/pool_stores.py``).

Every replica's dispatcher claims from its own store and from every pool store open here
(``delivery/dispatcher.py``); :meth:`NotifierStores.collect_garbage` (the sweeper, every
``gc_interval`` seconds) sweeps them all and opens the stores of the catalog's pools that hold
pending deliveries (left by a replica that stopped, or by this one before a restart), so that
none waits for a subscription call to open its pool.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from services.common import pool_stores
from services.common.errors import ServiceError
from services.common.mongo_store import DEFAULT_DATABASE
from services.common.store_probe import REDIS_SCHEMES
from services.common.store_registry import scheme_of
from services.common.store_uri import redact
from services.notifier_svc.storage.base import NotifierStore

log = logging.getLogger(__name__)

SUFFIX = "-notifier"
# The key prefix of message stores on Redis when the pool's URI gives none.
MESSAGE_PREFIX = "zm"
# A pool store found without pending deliveries is looked at again after this many seconds
# (another replica may have stored some since, then stopped).
RESCAN = 30.0
# Seconds a scan's probe of a pool gets to finish when the stores are closed.
PROBE_GRACE = 5.0

PoolUris = Callable[[], Awaitable[list[str]]]


def notifier_uri(pool_uri: str) -> str | None:
    """The notifier store URI of the pool whose message store URI is ``pool_uri``: the same
    server and options, data of its own.

    * ``sqlite:///…/name.ext`` -> ``sqlite:///…/name-notifier.ext`` (a file beside it);
    * ``redis[s]://``, ``redis[s]+cluster://`` and ``redis[s]+sentinel://`` -> the same
      database, key prefix ``<prefix>-notifier`` (``<prefix>``: the URI's ``prefix=``, else
      the message store's ``zm``), so never the keys of the pool's messages nor of
      notifier_svc's own store;
    * ``mongodb://`` and ``mongodb+srv://`` -> the database ``<database>-notifier``
      (``<database>``: the URI's, else ``zaqar``).

    None for any other scheme (a message store backend without a notifier counterpart): the
    pool's queues then keep their subscriptions in notifier_svc's own store.
    """
    scheme = scheme_of(pool_uri)
    if scheme == "sqlite":
        base, mark, query = pool_uri.partition("?")
        stem, ext = posixpath.splitext(base)
        return f"{stem}{SUFFIX}{ext}{mark}{query}"
    parts = urlsplit(pool_uri)
    if scheme in REDIS_SCHEMES:
        options = parse_qsl(parts.query, keep_blank_values=True)
        prefix = dict(options).get("prefix", MESSAGE_PREFIX)
        options = [(k, v) for k, v in options if k != "prefix"] + [("prefix", prefix + SUFFIX)]
        return urlunsplit(parts._replace(query=urlencode(options)))
    if scheme in ("mongodb", "mongodb+srv"):
        database = parts.path.removeprefix("/") or DEFAULT_DATABASE
        return urlunsplit(parts._replace(path="/" + database + SUFFIX))
    return None


def describe(exc: Exception) -> str:
    if isinstance(exc, ServiceError):
        return exc.description
    details = getattr(exc, "details", None)
    return str(details()) if callable(details) else str(exc)


class NotifierStores(pool_stores.PoolStores[NotifierStore]):
    """notifier_svc's own store ("") and the notifier stores of pools, by pool URI (the
    opener is given the pool's message store URI and opens :func:`notifier_uri` of it)."""

    kind = "notifier store"

    def __init__(
        self,
        own: NotifierStore,
        opener: Callable[[str], Awaitable[NotifierStore]],
        idle: float,
        *,
        pools: PoolUris | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``pools``: the catalog's pool URIs (queue_svc), for :meth:`scan`; None without
        pooling."""
        super().__init__(own, opener, idle, clock)
        self._pools = pools
        self._empty: dict[str, float] = {}
        self._warned = -RESCAN
        self._probes: set[asyncio.Task[bool]] = set()

    def store_uri(self, pool_uri: str) -> str:
        """The key of the store that serves the pool ("" for the own store)."""
        return pool_uri if pool_uri and notifier_uri(pool_uri) is not None else ""

    async def of_pool(self, pool_uri: str) -> NotifierStore:
        """The notifier store of the pool ("": the own store).

        Raises:
            Unavailable: the pool's store cannot be reached or opened.
        """
        return await self.get(self.store_uri(pool_uri))

    def every(self) -> list[tuple[str, NotifierStore]]:
        """The own store ("") and every pool store open now."""
        return [("", self.own), *self.opened()]

    async def collect_garbage(self) -> int:
        """Sweep expired subscriptions and deliveries from every open store, open the stores
        of the catalog's pools that hold pending deliveries (:meth:`scan`), and close the pool
        stores unused for ``idle`` seconds that hold none. A pool whose store fails is logged
        and skipped.

        Returns:
            How many items were removed.
        """
        removed = await self.own.collect_garbage()
        for uri, store in self.opened():
            try:
                removed += await store.collect_garbage()
            except Exception as exc:  # one pool down must not stop the sweep of the others
                log.warning("sweep of the notifier store of pool %s failed: %s",
                            redact(uri), exc)
        await self.scan()
        await self.close_idle()
        return removed

    async def scan(self) -> None:
        """Open the store of each pool of the catalog that is not open and holds pending
        deliveries (each pool found without any is looked at again after ``RESCAN``
        seconds); close the stores of pools that left the catalog. Without pooling, or
        when queue_svc does not answer, nothing changes."""
        if self._pools is None:
            return
        try:
            listed = {self.store_uri(uri) for uri in await self._pools()} - {""}
        except Exception as exc:
            if self._warn():
                log.warning("pools not listed, their pending deliveries wait: %s",
                            describe(exc))
            return
        for uri in self.open_uris:
            if uri not in listed:
                await self.drop(uri, "deleted")
        now = self._clock()
        for uri in sorted(listed - set(self.open_uris)):
            if self._empty.get(uri, -RESCAN) + RESCAN > now:
                continue
            try:
                pending = await self._pending(uri)
            except Exception as exc:
                log.warning("notifier store of pool %s not scanned: %s", redact(uri),
                            describe(exc))
                continue
            if pending:
                self._empty.pop(uri, None)
                await self.get(uri)
            else:
                self._empty[uri] = now
        for uri in set(self._empty) - listed:
            del self._empty[uri]

    async def _pending(self, uri: str) -> bool:
        """Whether the pool's notifier store holds deliveries, read on a store opened for
        the question only (closing it cannot cut short an operation that opened the shared
        one meanwhile). Shielded: a sweep stopped meanwhile does not leave the probe half
        open (a store cancelled in the middle of its open leaves its connections behind);
        :meth:`close` waits for it."""
        task = asyncio.ensure_future(self._probe(uri))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)
        return await asyncio.shield(task)

    async def _probe(self, uri: str) -> bool:
        probe = await self._opener(uri)
        try:
            return await probe.next_due() is not None
        finally:
            await probe.close()

    async def close(self) -> None:
        """Wait for the scan's probes (``PROBE_GRACE`` seconds at most), then close every
        pool store."""
        probes = list(self._probes)
        if probes:
            _, pending = await asyncio.wait(probes, timeout=PROBE_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*probes, return_exceptions=True)
        await super().close()

    def _warn(self) -> bool:
        now = self._clock()
        if now - self._warned < RESCAN:
            return False
        self._warned = now
        return True

    async def close_idle(self) -> None:
        """Close the pool stores no operation used for ``idle`` seconds, unless they hold
        pending deliveries (leased ones included: a delivery being made keeps its store)."""
        for uri, store in self.opened():
            try:
                if await store.next_due() is not None:
                    self.touch(uri)
            except Exception:  # an unreachable pool is opened again by its next use
                log.debug("notifier store of pool %s unreachable", redact(uri))
        await super().close_idle()
