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
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from zaqar.v2 import common_pb2

from services.common import limits
from services.common.errors import Unavailable
from services.queue_svc import metadata as meta
from services.queue_svc import validation
from services.queue_svc.catalog import CatalogService
from services.queue_svc.storage.base import QueuePage, QueueStore
from services.queue_svc.upstream import MessageService, NotifierService


class QueueService:
    def __init__(
        self,
        store: QueueStore,
        messages: MessageService,
        notifier: NotifierService,
        catalog: CatalogService | None = None,
    ) -> None:
        """``catalog``: given when pooling is enabled; a new queue's ``_flavor`` must then
        name a flavor of its project."""
        self._store = store
        self._messages = messages
        self._notifier = notifier
        self._catalog = catalog

    async def create(self, project: str, queue: str, raw_metadata: bytes) -> bool:
        """Create the queue or replace its metadata; True when it is new."""
        validation.check_queue(project, queue)
        metadata = meta.parse_object(raw_metadata)
        meta.check_reserved(metadata)
        flavor = metadata.get("_flavor")
        if self._catalog is not None and isinstance(flavor, str):
            await self._catalog.check_flavor(project, flavor)
        created = await self._store.create(project, queue, metadata)
        await self._messages.invalidate(project, queue)
        return created

    async def get(self, project: str, queue: str) -> tuple[dict[str, Any], bool]:
        """The metadata with defaults, and whether the queue exists (absent: defaults only)."""
        validation.check_queue(project, queue)
        record = await self._store.get(project, queue)
        stored = record.metadata if record is not None else {}
        return meta.with_defaults(stored), record is not None

    async def ensure(self, project: str, queue: str) -> dict[str, Any]:
        """The metadata with defaults of the queue, created first when absent."""
        validation.check_queue(project, queue)
        record = await self._store.ensure(project, queue)
        return meta.with_defaults(record.metadata)

    async def update(
        self, project: str, queue: str, operations: Iterable[tuple[str, str, bytes]]
    ) -> dict[str, Any]:
        """Apply a JSON patch atomically; the new metadata with defaults."""
        validation.check_queue(project, queue)
        patches = meta.parse_patch(operations)
        record = await self._store.update_metadata(
            project, queue, patches, check=meta.check_patched
        )
        await self._messages.invalidate(project, queue)
        return meta.with_defaults(record.metadata)

    async def delete(self, project: str, queue: str) -> None:
        """Delete the queue, then its messages and claims, then its subscriptions. Idempotent.

        Order: the record goes first and the caches next, so a post racing with the delete
        re-creates the queue through ``EnsureQueue`` rather than adding messages to a queue
        that has no record; the messages and subscriptions go last. Every step runs even when
        an earlier fan-out failed; a failure is raised at the end (the messages' first), and a
        retry redoes every step.
        """
        validation.check_queue(project, queue)
        await self._store.delete(project, queue)
        stale: Unavailable | None = None
        try:
            await self._messages.invalidate(project, queue)
        except Unavailable as exc:
            stale = exc
        failures = await _each(
            lambda: self._messages.delete_queue_messages(
                project, queue, "Queue could not be deleted: its messages could not be removed."
            ),
            lambda: self._notifier.delete_queue_subscriptions(
                project, queue,
                "Queue could not be deleted: its subscriptions could not be removed.",
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
        page = await self._store.list(
            project,
            limit=limits.page_limit(limit),
            marker=marker,
            name_contains=name,
            metadata_filters=validation.metadata_filters(metadata_filters),
            with_count=with_count,
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
        if "messages" in types:
            steps.append(lambda: self._messages.delete_queue_messages(
                project, queue, "Queue could not be purged: its messages could not be removed."
            ))
        if "subscriptions" in types:
            steps.append(lambda: self._notifier.delete_queue_subscriptions(
                project, queue,
                "Queue could not be purged: its subscriptions could not be removed.",
            ))
        failures = await _each(*steps)
        if failures:
            raise failures[0]


async def _each(*steps: Callable[[], Awaitable[None]]) -> list[Unavailable]:
    """Run every step in order; the Unavailable errors of those that failed."""
    failures: list[Unavailable] = []
    for step in steps:
        try:
            await step()
        except Unavailable as exc:
            failures.append(exc)
    return failures
