"""Topics: records in queue_svc's store (``QueueStore.topics``), delivery by notifier_svc.

A topic keeps no messages for consumers. A post checks the messages against the topic's
metadata here (creating an absent topic first, as a post creates its queue), then hands them
to notifier_svc (``NotifierInternal.PublishTopic``), which stores one delivery per subscriber
and message in its outbox and only then answers: the post is answered once its deliveries are
durable. Subscriptions of a topic live in notifier_svc, under the topic's own name space.

Nothing is cached: a post reads the topic's record from the store, so a metadata change takes
effect on the very next post, on every replica.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from zaqar_grpc.v2 import common_pb2

from services.common.errors import QueueNotFound, TopicNotFound
from services.queue_svc import topic_rules as rules
from services.queue_svc import validation
from services.queue_svc.storage.base import QueuePage, TopicStore
from services.queue_svc.upstream import NotifierService


class TopicService:
    def __init__(self, store: TopicStore, notifier: NotifierService, max_topics: int = 0) -> None:
        """``max_topics``: the topics a project may have (``project_max_topics``; 0: no
        limit); a new one beyond it, created or posted to, is refused with
        :class:`services.common.errors.QuotaExceeded`."""
        self._store = store
        self._notifier = notifier
        self._quota = max_topics

    async def create(self, project: str, topic: str, raw_metadata: bytes) -> bool:
        """Create the topic or replace its metadata; True when it is new."""
        rules.check_topic(project, topic)
        return await self._store.create(
            project, topic, rules.parse_metadata(raw_metadata), quota=self._quota
        )

    async def get(self, project: str, topic: str) -> dict[str, Any]:
        """The metadata with defaults.

        Raises:
            TopicNotFound: the topic does not exist (Zaqar's topics answer 404, where an
                absent queue answers with its defaults).
        """
        rules.check_topic(project, topic)
        record = await self._store.get(project, topic)
        if record is None:
            raise TopicNotFound(topic=topic, project=project)
        return rules.with_defaults(record.metadata)

    async def update(
        self, project: str, topic: str, operations: Iterable[tuple[str, str, bytes]]
    ) -> dict[str, Any]:
        """Apply a JSON patch atomically; the new metadata with defaults."""
        rules.check_topic(project, topic)
        patches = rules.parse_patch(operations)
        try:
            record = await self._store.update_metadata(
                project, topic, patches, check=rules.check_patched
            )
        except QueueNotFound:
            raise TopicNotFound(topic=topic, project=project) from None
        return rules.with_defaults(record.metadata)

    async def delete(self, project: str, topic: str) -> None:
        """Delete the topic, then its subscriptions and their pending deliveries. Idempotent:
        a retry after a failure redoes every step."""
        rules.check_topic(project, topic)
        await self._store.delete(project, topic)
        await self._notifier.purge_topic(
            project, topic,
            "Topic could not be deleted: its subscriptions could not be removed.",
            deliveries=True, subscriptions=True,
        )

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
        """A page of the project's topics by name; with ``detailed`` their metadata is shown
        with defaults (otherwise it is left as stored)."""
        rules.check_project(project)
        page = await validation.listed(
            self._store, project, limit=limit, marker=marker, name=name,
            with_count=with_count, filters=metadata_filters,
        )
        if not detailed:
            return page
        return QueuePage(
            [replace(r, metadata=rules.with_defaults(r.metadata)) for r in page.queues],
            page.count,
        )

    async def stats(self, project: str, topic: str) -> common_pb2.QueueStats:
        """Shaped as a queue's: ``free`` and ``total`` count the deliveries the topic's
        subscribers are still owed, ``claimed`` is 0; an absent topic has zeros."""
        rules.check_topic(project, topic)
        if await self._store.get(project, topic) is None:
            return common_pb2.QueueStats()
        pending = await self._notifier.count_topic_deliveries(project, topic)
        return common_pb2.QueueStats(claimed=0, free=pending, total=pending)

    async def purge(self, project: str, topic: str, resource_types: Iterable[str]) -> None:
        """Remove the topic's pending deliveries ("messages") and/or its subscriptions; its
        metadata stays."""
        rules.check_topic(project, topic)
        types = validation.resource_types(resource_types)
        await self._notifier.purge_topic(
            project, topic, "Topic could not be purged.",
            deliveries="messages" in types, subscriptions="subscriptions" in types,
        )

    async def post(
        self, project: str, topic: str, posted: Sequence[rules.Posted]
    ) -> builtins.list[str]:
        """Deliver a batch to every subscriber of the topic (creating an absent topic first);
        the messages' ids, once every delivery is stored.

        Raises:
            InvalidArgument, InvalidBody: a message breaks a rule (nothing is delivered).
            Unavailable: notifier_svc did not confirm the deliveries.
        """
        rules.check_topic(project, topic)
        record = await self._store.get(project, topic)
        messages = rules.messages(posted, {} if record is None else record.metadata)
        if record is None:
            # Checked first, so that a refused post creates nothing; a topic created
            # meanwhile by someone else has its own metadata, checked again.
            record = await self._store.ensure(project, topic, quota=self._quota)
            if record.metadata:
                messages = rules.messages(posted, record.metadata)
        return await self._notifier.publish_topic(project, topic, messages)
