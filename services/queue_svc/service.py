"""The queue control plane: validation, the store, and the fan-out to message_svc and
notifier_svc.

Keeping message_svc's metadata cache correct
--------------------------------------------
message_svc caches each queue's metadata. Every change of a queue's metadata or existence
(create, also over an existing queue; update; delete) is stored first and then
acknowledged only after one message_svc replica (any: the channel balances) has raised the
queue's version in the message store (``MessagesInternal.InvalidateQueue``). Every replica
checks that version inside each post and claim, so the change applies to the very next
request on any replica, and no replica has to be reached for it.

When message_svc cannot be reached (it is tried twice), the change stays stored (undoing it
could fail the same way and would race with other writers), the call fails with UNAVAILABLE
(HTTP 503) saying so, and the caller may retry: create and add/replace updates are
idempotent, delete is too. Until then replicas may serve the previous metadata at most until
their cache entries expire (``ZAQAR_METADATA_CACHE_TTL``).

``EnsureQueue`` (a post to an absent queue) invalidates nothing: the new queue's metadata is
empty, which is exactly what every replica already assumes for an absent queue.

Queues on pools
---------------
With pooling on, a new queue is placed on a pool (``placement.py``) and the pool is stored in
its record. Every announcement to message_svc then carries the URI of that pool's message
store, the one where the queue's version and messages are; for a delete it is the pool the
record had, read just before the record went.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from zaqar_grpc.v2 import common_pb2

from services.common.errors import InvalidBody, ServiceError, Unavailable
from services.queue_svc import metadata as meta
from services.queue_svc import placement, validation
from services.queue_svc.catalog import CatalogService
from services.queue_svc.storage.base import QueuePage, QueueRecord, QueueStore, apply_patches
from services.queue_svc.storage.catalog import Catalog
from services.queue_svc.upstream import MessageService, NotifierService


@dataclass(frozen=True, slots=True)
class QueueView:
    """A queue as GetQueue and EnsureQueue answer it."""

    metadata: dict[str, Any]
    """With defaults."""
    exists: bool
    pool: str = ""
    """The pool it is placed on; "" for message_svc's own store."""
    pool_uri: str = ""
    """That pool's message store; "" for message_svc's own, or a pool gone from the catalog."""


class QueueService:
    def __init__(
        self,
        store: QueueStore,
        messages: MessageService,
        notifier: NotifierService,
        catalog: CatalogService | None = None,
        rng: random.Random | None = None,
        encryption: bool = False,
        max_queues: int = 0,
    ) -> None:
        """``catalog``: given when pooling is enabled; a new queue's ``_flavor`` must then
        name a flavor of its project, and new queues are placed on pools drawn with ``rng``.
        ``encryption``: message encryption keys are configured; without them
        ``_enable_encrypt_messages`` true is refused. ``max_queues``: the queues a project
        may have (``project_max_queues``; 0: no limit); a new one beyond it, created or
        ensured, is refused with :class:`QuotaExceeded`."""
        self._store = store
        self._messages = messages
        self._notifier = notifier
        self._catalog = catalog
        self._rng = rng or random.Random()
        self.encryption = encryption
        """Whether message encryption keys are configured (replaced when their file changes)."""
        self._quota = max_queues

    async def _pooled(self) -> Catalog | None:
        """The catalog when pooling is on, else None."""
        return None if self._catalog is None else await self._catalog.snapshot()

    async def create(self, project: str, queue: str, raw_metadata: bytes) -> bool:
        """Create the queue or replace its metadata; True when it is new.

        With pooling, a new queue is placed on a pool; an existing one keeps its pool, and a
        ``_flavor`` or ``_dead_letter_queue`` that does not fit it is refused.
        """
        validation.check_queue(project, queue)
        metadata = meta.parse_object(raw_metadata)
        meta.check_reserved(metadata)
        meta.check_encryption(metadata, self.encryption)
        catalog = await self._pooled()
        if catalog is None:
            created = await self._store.create(project, queue, metadata, quota=self._quota)
            await self._messages.invalidate(project, queue)
            return created
        flavor = metadata.get("_flavor")
        if isinstance(flavor, str):
            assert self._catalog is not None
            self._catalog.check_flavor_in(catalog, project, flavor)
        record = await self._store.get(project, queue)
        dead_letter = await self._new_dead_letter(
            project, {} if record is None else record.metadata, metadata
        )
        if record is None:
            assert self._catalog is not None
            pool = self._pool_of_dead_letter(catalog, dead_letter, flavor)
            if pool is None:
                pool = placement.choose(catalog, flavor if isinstance(flavor, str) else None,
                                        self._rng, self._catalog.now())
        else:
            pool = record.pool
            placement.check_change(catalog, pool, record.metadata, metadata)
        _check_dead_letter(queue, pool, dead_letter)
        created = await self._store.create(project, queue, metadata, pool, quota=self._quota)
        if created:
            await self._keep_placed(catalog, pool)
        if record is None and not created:
            # A concurrent create placed it first: announce where it is.
            record = await self._store.get(project, queue)
            pool = None if record is None else record.pool
        await self._messages.invalidate(project, queue, placement.pool_uri(catalog, pool))
        return created

    def _pool_of_dead_letter(
        self, catalog: Catalog, dead_letter: tuple[str, QueueRecord] | None, flavor: Any,
    ) -> str | None:
        """Where a new queue without a ``_flavor`` goes when its ``_dead_letter_queue`` names
        a queue that exists on a pool taking new queues: that pool, since a dead-letter queue
        must be on the pool of the queues that move messages into it (a draw by weight would
        put the new queue elsewhere, and its create would be refused). None: draw."""
        if isinstance(flavor, str) or dead_letter is None:
            return None
        pool = dead_letter[1].pool
        assert self._catalog is not None
        if pool is None or not catalog.takes_new_queues(pool, self._catalog.now()):
            return None
        return pool

    async def _new_dead_letter(
        self, project: str, old: Mapping[str, Any], new: Mapping[str, Any],
    ) -> tuple[str, QueueRecord] | None:
        """The ``_dead_letter_queue`` that ``new`` names where ``old`` named none or another,
        with its record, when that queue exists (read once, for placing and checking)."""
        dead_letter = new.get("_dead_letter_queue")
        if not isinstance(dead_letter, str) or dead_letter == old.get("_dead_letter_queue"):
            return None
        target = await self._store.get(project, dead_letter)
        return None if target is None else (dead_letter, target)

    def _view(self, record: QueueRecord | None, catalog: Catalog | None) -> QueueView:
        stored = record.metadata if record is not None else {}
        view = QueueView(meta.with_defaults(stored), record is not None)
        if record is None or record.pool is None or catalog is None:
            return view
        return replace(view, pool=record.pool, pool_uri=placement.pool_uri(catalog, record.pool))

    async def get(self, project: str, queue: str) -> QueueView:
        """The metadata with defaults, whether the queue exists (absent: defaults only), and
        with pooling its pool."""
        validation.check_queue(project, queue)
        catalog = await self._pooled()
        return self._view(await self._store.get(project, queue), catalog)

    async def ensure(self, project: str, queue: str, place_on: str = "") -> QueueView:
        """The queue, created first when absent: with pooling, placed on ``place_on`` when
        that pool exists, else as :meth:`create` places a queue without a flavor."""
        validation.check_queue(project, queue)
        catalog = await self._pooled()
        if catalog is None:
            return self._view(await self._store.ensure(project, queue, quota=self._quota), None)
        record = await self._store.get(project, queue)
        if record is None:
            assert self._catalog is not None
            pool = (place_on if place_on in catalog.pools
                    else placement.choose(catalog, None, self._rng, self._catalog.now()))
            record = await self._store.ensure(project, queue, pool, quota=self._quota)
            if record.pool == pool:
                await self._keep_placed(catalog, pool)
        return self._view(record, catalog)

    async def _keep_placed(self, catalog: Catalog, pool: str | None) -> None:
        """A queue was just stored on ``pool`` of ``catalog``: a deletion of the pool racing
        with the placement must not leave it on a pool that is gone (``placement.py``)."""
        if pool is not None and self._catalog is not None and pool in catalog.pools:
            await self._catalog.keep_placed(catalog.pools[pool])

    async def update(
        self, project: str, queue: str, operations: Iterable[tuple[str, str, bytes]]
    ) -> dict[str, Any]:
        """Apply a JSON patch atomically; the new metadata with defaults."""
        validation.check_queue(project, queue)
        patches = meta.parse_patch(operations)
        catalog = await self._pooled()
        pool_uri: str | None = None
        if catalog is not None:
            current = await self._store.get(project, queue)
            if current is not None:
                # Checked on the metadata as read; a queue keeps its pool while it exists.
                try:
                    patched = apply_patches(current.metadata, patches)
                except ServiceError:
                    patched = dict(current.metadata)  # the store raises it below
                placement.check_change(catalog, current.pool, current.metadata, patched)
                _check_dead_letter(queue, current.pool, await self._new_dead_letter(
                    project, current.metadata, patched
                ))
                pool_uri = placement.pool_uri(catalog, current.pool)
        record = await self._store.update_metadata(
            project, queue, patches, check=self._check_patched
        )
        if catalog is not None and pool_uri is None:
            pool_uri = placement.pool_uri(catalog, record.pool)
        await self._messages.invalidate(project, queue, pool_uri)
        return meta.with_defaults(record.metadata)

    def _check_patched(self, metadata: Mapping[str, Any]) -> None:
        meta.check_patched(metadata)
        meta.check_encryption(metadata, self.encryption, InvalidBody)

    async def delete(self, project: str, queue: str) -> None:
        """Delete the queue, then its messages and claims, then its subscriptions. Idempotent.

        Order: the record goes first and the caches next, so a post racing with the delete
        re-creates the queue through ``EnsureQueue`` rather than adding messages to a queue
        that has no record; the messages and subscriptions go last. Every step runs even when
        an earlier fan-out failed; a failure is raised at the end (the messages' first), and a
        retry redoes every step.
        """
        validation.check_queue(project, queue)
        pool_uri = await self._pool_uri(project, queue)
        await self._store.delete(project, queue)
        stale: Unavailable | None = None
        try:
            await self._messages.invalidate(project, queue, pool_uri)
        except Unavailable as exc:
            stale = exc
        failures = await _each(
            lambda: self._messages.delete_queue_messages(
                project, queue, "Queue could not be deleted: its messages could not be removed.",
                pool_uri,
            ),
            lambda: self._notifier.delete_queue_subscriptions(
                project, queue,
                "Queue could not be deleted: its subscriptions could not be removed.",
                pool_uri,
            ),
        )
        if failures:
            raise failures[0]
        if stale is not None:
            raise stale

    async def list(
        self,
        project: str,
        *,
        limit: int | None,
        marker: str,
        detailed: bool,
        name: str,
        with_count: bool,
        metadata_filters: Mapping[str, bytes],
    ) -> QueuePage:
        """A page of the project's queues by name; with ``detailed`` their metadata is shown
        with defaults (otherwise it is left as stored)."""
        validation.check_project(project)
        page = await validation.listed(
            self._store, project, limit=limit, marker=marker, name=name,
            with_count=with_count, filters=metadata_filters,
        )
        if not detailed:
            return page
        return QueuePage(
            [replace(r, metadata=meta.with_defaults(r.metadata)) for r in page.queues], page.count
        )

    async def stats(self, project: str, queue: str) -> common_pb2.QueueStats:
        validation.check_queue(project, queue)
        return await self._messages.get_stats(project, queue)

    async def purge(self, project: str, queue: str, resource_types: Iterable[str]) -> None:
        """Remove the queue's messages and/or subscriptions; its metadata stays. Both run even
        when the first fails; a failure is raised at the end."""
        validation.check_queue(project, queue)
        types = validation.resource_types(resource_types)
        steps: list[Callable[[], Awaitable[None]]] = []
        pool_uri = await self._pool_uri(project, queue)
        if "messages" in types:
            steps.append(lambda: self._messages.delete_queue_messages(
                project, queue, "Queue could not be purged: its messages could not be removed.",
                pool_uri,
            ))
        if "subscriptions" in types:
            steps.append(lambda: self._notifier.delete_queue_subscriptions(
                project, queue,
                "Queue could not be purged: its subscriptions could not be removed.",
                pool_uri,
            ))
        failures = await _each(*steps)
        if failures:
            raise failures[0]

    async def _pool_uri(self, project: str, queue: str) -> str | None:
        """With pooling, the message store of the queue's pool ("" for message_svc's own);
        None without pooling (message_svc then uses its own store)."""
        catalog = await self._pooled()
        if catalog is None:
            return None
        record = await self._store.get(project, queue)
        return placement.pool_uri(catalog, None if record is None else record.pool)


async def _each(*steps: Callable[[], Awaitable[None]]) -> list[Unavailable]:
    """Run every step in order; the Unavailable errors of those that failed."""
    failures: list[Unavailable] = []
    for step in steps:
        try:
            await step()
        except Unavailable as exc:
            failures.append(exc)
    return failures


def _check_dead_letter(
    queue: str, pool: str | None, dead_letter: tuple[str, QueueRecord] | None
) -> None:
    """Raises when the dead-letter queue newly named is on another pool than ``queue``."""
    if dead_letter is not None:
        name, target = dead_letter
        placement.check_dead_letter(queue, pool, name, target.pool)
