"""A pool is never deleted while a queue is placed on it, even when the deletion and the
placement race (``services/queue_svc/placement.py``, ``CatalogService.delete_pool``).

queue_svc's own objects run over a real SQLite queue store with the pool catalog, beside a
real message_svc and notifier_svc; the placement and the deletion are paused at the steps
where they can interleave (before the queue is stored; after the pool's queues are counted),
so each interleaving runs exactly, without relying on timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.common.config import Settings
from services.common.errors import PoolHoldsQueues, PoolNotFound
from services.message_svc.server import start as start_message_svc
from services.notifier_svc.server import start as start_notifier_svc
from services.queue_svc.catalog import RETIRE_SECONDS, CatalogService
from services.queue_svc.service import QueueService
from services.queue_svc.storage.base import QueueStore
from services.queue_svc.storage.catalog import Retiring, decode, encode
from services.queue_svc.storage.registry import open_queue_store
from services.queue_svc.upstream import MessageService, NotifierService

PROJECT = "race-project"


class Gate:
    """Where a paused step waits: ``reached`` is set when it gets there, and it goes on once
    ``opened`` is set."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()

    async def __call__(self) -> None:
        self.reached.set()
        await self.opened.wait()


class PausingStore:
    """The real queue store, with ``create`` paused at ``before_create`` when one is set."""

    def __init__(self, store: QueueStore) -> None:
        self._store = store
        self.before_create: Gate | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def create(self, *args: Any, **kwargs: Any) -> bool:
        if self.before_create is not None:
            await self.before_create()
        return await self._store.create(*args, **kwargs)


@dataclass
class Placement:
    store: PausingStore
    catalog: CatalogService
    queues: QueueService
    clock: list[float]
    pool_uri: str
    after_count: Gate | None = None

    async def pool_of(self, queue: str) -> str | None:
        record = await self.store.get(PROJECT, queue)
        assert record is not None
        return record.pool


@asynccontextmanager
async def placement(settings: Settings, tmp_path: Path) -> AsyncIterator[Placement]:
    running = [await start_notifier_svc(settings), await start_message_svc(settings)]
    store = await open_queue_store(f"sqlite:///{tmp_path / 'queues.db'}")
    messages, notifier = MessageService(settings), NotifierService(settings)
    clock = [1_800_000_000.0]
    holder: list[Placement] = []

    async def count_queues(pool: str) -> int:
        count = await store.count_on_pool(pool)
        gate = holder[0].after_count
        if gate is not None:
            await gate()
        return count

    paused = PausingStore(store)
    catalog = CatalogService(store.catalog, probe_seconds=2.0, count_queues=count_queues,
                             now=lambda: clock[0])
    queues = QueueService(paused, messages, notifier, catalog)  # type: ignore[arg-type]
    uri = f"sqlite:///{tmp_path / 'pool-p.db'}"
    holder.append(Placement(paused, catalog, queues, clock, uri))
    try:
        await catalog.put_pool("p", uri, 1, "", b"{}")
        yield holder[0]
    finally:
        await messages.close()
        await notifier.close()
        await store.close()
        for service in reversed(running):
            await service.stop()


@pytest.fixture
async def placed(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Placement]:
    async with placement(make_settings(pooling=True), tmp_path) as p:
        yield p


async def test_a_deletion_that_ends_before_the_queue_is_stored_is_undone(
    placed: Placement,
) -> None:
    # Given a placement that chose pool p and is about to store its queue
    placed.store.before_create = gate = Gate()
    creating = asyncio.create_task(placed.queues.create(PROJECT, "q1", b"{}"))
    await gate.reached.wait()
    # When the pool, which holds no queue yet, is deleted meanwhile
    await placed.catalog.delete_pool("p")
    with pytest.raises(PoolNotFound):
        await placed.catalog.get_pool("p")
    # And the placement then stores the queue
    gate.opened.set()
    assert await creating is True
    # Then the pool is registered again, as it was, and holds the queue
    assert (await placed.catalog.get_pool("p")).uri == placed.pool_uri
    assert await placed.pool_of("q1") == "p"
    with pytest.raises(PoolHoldsQueues):
        await placed.catalog.delete_pool("p")


async def test_a_deletion_that_counted_before_the_queue_was_stored_is_refused(
    placed: Placement,
) -> None:
    # Given a placement that chose pool p and is about to store its queue
    placed.store.before_create = creator = Gate()
    creating = asyncio.create_task(placed.queues.create(PROJECT, "q2", b"{}"))
    await creator.reached.wait()
    # And a deletion of p that has marked it and counted no queue on it
    placed.after_count = deleter = Gate()
    deleting = asyncio.create_task(placed.catalog.delete_pool("p"))
    await deleter.reached.wait()
    assert "p" in (await placed.catalog.snapshot()).retiring
    # When the placement stores its queue, then the deletion goes on
    creator.opened.set()
    assert await creating is True
    deleter.opened.set()
    # Then the deletion is refused, and the pool stays, unmarked, with the queue
    with pytest.raises(PoolHoldsQueues):
        await deleting
    catalog = await placed.catalog.snapshot()
    assert "p" in catalog.pools
    assert catalog.retiring == {}
    assert await placed.pool_of("q2") == "p"


async def test_a_queue_created_during_a_deletion_goes_elsewhere(placed: Placement) -> None:
    # Given a deletion of p under way (marked, queues counted)
    placed.after_count = deleter = Gate()
    deleting = asyncio.create_task(placed.catalog.delete_pool("p"))
    await deleter.reached.wait()
    # When a queue is created meanwhile, it is not placed on p (the own store: no other pool)
    assert await placed.queues.create(PROJECT, "q3", b"{}") is True
    assert await placed.pool_of("q3") is None
    # And the deletion completes
    deleter.opened.set()
    await deleting
    assert "p" not in (await placed.catalog.snapshot()).pools


async def test_a_refused_deletion_leaves_no_mark(placed: Placement) -> None:
    # Given a queue on p
    await placed.queues.create(PROJECT, "q4", b"{}")
    assert await placed.pool_of("q4") == "p"
    # When p is deleted, it is refused, and new queues still go to p
    with pytest.raises(PoolHoldsQueues):
        await placed.catalog.delete_pool("p")
    assert (await placed.catalog.snapshot()).retiring == {}
    await placed.queues.create(PROJECT, "q5", b"{}")
    assert await placed.pool_of("q5") == "p"


async def test_the_mark_of_a_deletion_that_died_lapses(placed: Placement) -> None:
    # Given the mark of a deletion that never finished
    now = placed.clock[0]
    await placed.store.catalog.retire_pool("p", Retiring("dead", now + RETIRE_SECONDS))
    # Then new queues stay off p while it holds
    await placed.queues.create(PROJECT, "q6", b"{}")
    assert await placed.pool_of("q6") is None
    # And go to p again once it has lapsed
    placed.clock[0] = now + RETIRE_SECONDS
    await placed.queues.create(PROJECT, "q7", b"{}")
    assert await placed.pool_of("q7") == "p"
    # And the placement removed the lapsed mark
    assert (await placed.catalog.snapshot()).retiring == {}


async def test_a_post_to_an_absent_queue_during_a_deletion_is_undone_too(
    placed: Placement,
) -> None:
    # Given an implicit creation (a post to an absent queue) that chose p and is about to
    # store the queue: ensure() reads the catalog, then stores
    original = placed.store.ensure
    gate = Gate()

    async def paused_ensure(*args: Any, **kwargs: Any) -> Any:
        await gate()
        return await original(*args, **kwargs)

    placed.store.ensure = paused_ensure  # type: ignore[method-assign]
    ensuring = asyncio.create_task(placed.queues.ensure(PROJECT, "q8"))
    await gate.reached.wait()
    # When p is deleted meanwhile, and the queue is stored afterwards
    await placed.catalog.delete_pool("p")
    gate.opened.set()
    view = await ensuring
    # Then the queue is on p, and p is registered again
    assert view.pool == "p"
    assert "p" in (await placed.catalog.snapshot()).pools


def test_deletion_marks_are_kept_in_the_catalog_document() -> None:
    catalog = decode(encode(decode(b'{"pools": {}, "flavors": {}}')))
    assert catalog.retiring == {}
    document = (b'{"pools": {"p": {"uri": "sqlite://", "weight": 1, "flavor": null, '
                b'"options": {}}}, "flavors": {}, "retiring": {"p": {"token": "t", '
                b'"until": 5.5}}}')
    assert decode(encode(decode(document))).retiring == {"p": Retiring("t", 5.5)}
