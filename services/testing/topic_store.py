"""Contract of the topic records of a queue store (``QueueStore.topics``,
``services/queue_svc/storage/base.py``), for any backend: a namespace of its own beside the
queues, with the queue records' rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.common.errors import PatchConflict, QueueNotFound, QuotaExceeded
from services.queue_svc.storage.base import MetadataPatch, QueueStore, TopicStore
from services.queue_svc.storage.registry import open_queue_store


async def topic_names(topics: TopicStore, project: str, **kwargs: Any) -> list[str]:
    kwargs.setdefault("limit", 20)
    page = await topics.list(project, **kwargs)
    return [t.name for t in page.queues]


class TopicStoreContract:
    """The contract suite: subclass it in a test module and provide the ``store_uri``
    fixture (``services/testing/__init__.py``)."""

    @pytest.fixture
    async def queue_store(self, store_uri: str) -> AsyncIterator[QueueStore]:
        store = await open_queue_store(store_uri)
        yield store
        await store.close()

    async def test_create_get_and_replace_a_topic(self, queue_store: QueueStore) -> None:
        topics = queue_store.topics
        # When a topic is created, then created again with other metadata
        assert await topics.create("p", "t1", {"description": "demo", "n": 1}) is True
        assert await topics.create("p", "t1", {"n": 2}) is False
        # Then it reads back with the last metadata, and no pool
        record = await topics.get("p", "t1")
        assert record is not None
        assert (record.project, record.name, dict(record.metadata)) == ("p", "t1", {"n": 2})
        assert record.pool is None
        assert await topics.get("p", "absent") is None
        assert await topics.get("other", "t1") is None

    async def test_a_quota_counts_topics_apart_from_queues(self, queue_store: QueueStore) -> None:
        topics = queue_store.topics
        # Given a project with two queues and one topic
        await queue_store.create("p", "q1", {})
        await queue_store.create("p", "q2", {})
        assert await topics.create("p", "t1", {}, quota=2) is True
        # Then a second topic fits a quota of two topics, queues apart
        assert (await topics.ensure("p", "t2", quota=2)).name == "t2"
        # And a third is refused, by create and by ensure, naming topics and their setting
        for attempt in (topics.create("p", "t3", {}, quota=2), topics.ensure("p", "t3", quota=2)):
            with pytest.raises(QuotaExceeded) as refused:
                await attempt
            assert refused.value.description.startswith(
                "Project p has 2 topics, the most it may have (ZAQAR_PROJECT_MAX_TOPICS)"
            )
        assert await topics.get("p", "t3") is None
        # While the topics there still take new metadata, and queues are not held back by them
        assert await topics.create("p", "t1", {"n": 1}, quota=2) is False
        assert await queue_store.create("p", "q3", {}, quota=3) is True

    async def test_topics_and_queues_of_one_name_never_meet(
        self, queue_store: QueueStore
    ) -> None:
        topics = queue_store.topics
        # Given a queue and a topic of the same name, and a topic without a queue namesake
        await queue_store.create("p", "same", {"kind": "queue"})
        await topics.create("p", "same", {"kind": "topic"})
        await topics.create("p", "lonely", {})
        # Then each reads back its own metadata, and each listing shows its own kind only
        queue = await queue_store.get("p", "same")
        topic = await topics.get("p", "same")
        assert queue is not None and topic is not None
        assert dict(queue.metadata) == {"kind": "queue"}
        assert dict(topic.metadata) == {"kind": "topic"}
        assert await topic_names(topics, "p") == ["lonely", "same"]
        assert [q.name for q in (await queue_store.list("p", limit=20)).queues] == ["same"]
        assert not await queue_store.exists("p", "lonely")
        # And deleting the topic leaves the queue, and the reverse
        assert await topics.delete("p", "same") is True
        assert await queue_store.exists("p", "same")
        await topics.create("p", "same", {})
        assert await queue_store.delete("p", "same") is True
        assert await topics.get("p", "same") is not None
        # And a patch of a topic does not touch its queue namesake
        await queue_store.create("p", "same", {"kind": "queue"})
        await topics.update_metadata("p", "same", [MetadataPatch("add", "k", 1)])
        queue = await queue_store.get("p", "same")
        assert queue is not None and dict(queue.metadata) == {"kind": "queue"}

    async def test_ensure_creates_once(self, queue_store: QueueStore) -> None:
        topics = queue_store.topics
        created = await topics.ensure("p", "t")
        assert dict(created.metadata) == {}
        await topics.create("p", "t", {"a": 1})
        # An existing topic's metadata is never touched
        again = await topics.ensure("p", "t")
        assert dict(again.metadata) == {"a": 1}
        # Concurrent ensures of an absent topic agree
        records = await asyncio.gather(*(topics.ensure("p", "new") for _ in range(5)))
        assert {r.name for r in records} == {"new"}
        assert await topic_names(topics, "p") == ["new", "t"]

    async def test_update_metadata_patches_and_conflicts(self, queue_store: QueueStore) -> None:
        topics = queue_store.topics
        await topics.create("p", "t", {"a": 1, "b": 2})
        record = await topics.update_metadata(
            "p", "t", [MetadataPatch("replace", "a", 10), MetadataPatch("remove", "b"),
                       MetadataPatch("add", "c", [1])],
        )
        assert dict(record.metadata) == {"a": 10, "c": [1]}
        # A strict replace of an absent key changes nothing
        with pytest.raises(PatchConflict):
            await topics.update_metadata(
                "p", "t", [MetadataPatch("add", "d", 1), MetadataPatch("replace", "zz", 1)]
            )
        stored = await topics.get("p", "t")
        assert stored is not None and dict(stored.metadata) == {"a": 10, "c": [1]}

        # A check that refuses aborts the update
        def refuse(metadata: Any) -> None:
            raise ValueError("no")

        with pytest.raises(ValueError):
            await topics.update_metadata("p", "t", [MetadataPatch("add", "e", 1)], check=refuse)
        # An absent topic, or a queue's name, is not found
        await queue_store.create("p", "only-a-queue", {})
        for name in ("absent", "only-a-queue"):
            with pytest.raises(QueueNotFound):
                await topics.update_metadata("p", name, [MetadataPatch("add", "x", 1)])

    async def test_list_pages_filters_and_counts(self, queue_store: QueueStore) -> None:
        topics = queue_store.topics
        for i in range(5):
            await topics.create("p", f"t{i}", {"n": i, "even": i % 2 == 0})
        await topics.create("other", "t9", {})
        await queue_store.create("p", "t7", {"n": 1})
        # Pages by name, after the marker
        page = await topics.list("p", limit=2, with_count=True)
        assert [t.name for t in page.queues] == ["t0", "t1"]
        assert page.count == 5
        assert await topic_names(topics, "p", marker="t1") == ["t2", "t3", "t4"]
        # Filters by name and metadata; detailed records carry their metadata
        assert await topic_names(topics, "p", name_contains="3") == ["t3"]
        filtered = await topics.list("p", limit=20, metadata_filters={"n": 1.0})
        assert [(t.name, dict(t.metadata)) for t in filtered.queues] == [
            ("t1", {"n": 1, "even": False})
        ]
        evens = await topics.list(
            "p", limit=20, metadata_filters={"even": True}, with_count=True
        )
        assert [t.name for t in evens.queues] == ["t0", "t2", "t4"] and evens.count == 3
        # Delete is idempotent
        assert await topics.delete("p", "t0") is True
        assert await topics.delete("p", "t0") is False
        assert (await topics.list("p", limit=1, with_count=True)).count == 4
