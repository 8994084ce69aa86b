"""services/common/mongo_lease.py on a real MongoDB wire server: one holder at a time per
scope, a lease whose holder died taken over once it ran out, a lease given back when its
holder is cancelled, and a clear 503 when a live one never is. The stores' quotas rest on it
(the contract tests' concurrent creates at a quota), and hold when a holder stalls past its
lease while another writer takes it over (the stores' fence after the insert)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from services.common.errors import QuotaExceeded, Unavailable
from services.common.mongo_lease import COLLECTION, LEASE_SECONDS, Leases
from services.common.mongo_store import Document
from services.notifier_svc.storage.mongodb import store as notifier_mongo
from services.queue_svc.storage.mongodb import queues as queue_mongo
from services.testing.fixtures import Clock

# A scope, and the _id of its lease document.
SCOPE = ("queues", "p")
OTHER_SCOPE = ("queues", "q")
SCOPE_ID = '["queues","p"]'


@pytest.fixture
async def database(mongodb_uri: str) -> AsyncIterator[AsyncDatabase[Document]]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri)
    try:
        yield client.get_default_database()
    finally:
        await client.close()


@pytest.fixture
def leases_collection(database: AsyncDatabase[Document]) -> AsyncCollection[Document]:
    return database[COLLECTION]


def leases(collection: AsyncCollection[Document], clock: Clock, seconds: float = 10.0) -> Leases:
    return Leases(lambda: collection.database, "queue store", seconds=seconds, clock=clock)


async def test_one_holder_at_a_time_per_scope_and_others_apart(
    leases_collection: AsyncCollection[Document], clock: Clock,
) -> None:
    lease = leases(leases_collection, clock)
    steps: list[str] = []
    first_in, first_may_leave = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with lease.held(SCOPE, "create the queue"):
            steps.append("first in")
            first_in.set()
            await first_may_leave.wait()
            steps.append("first out")

    async def second() -> None:
        async with lease.held(SCOPE, "create the queue"):
            steps.append("second in")

    # Given a holder of the scope's lease
    holder = asyncio.create_task(first())
    await first_in.wait()
    # When another writer asks for it, and a third for another scope
    waiter = asyncio.create_task(second())
    async with lease.held(OTHER_SCOPE, "create the queue"):
        steps.append("another scope in")
    # Then the other scope was not held back, and the second writer waits until the first
    # gives the lease back
    assert not waiter.done()
    first_may_leave.set()
    await asyncio.gather(holder, waiter)
    assert steps == ["first in", "another scope in", "first out", "second in"]
    # And nothing is left held
    assert await leases_collection.count_documents({}) == 0


async def test_a_lease_whose_holder_died_is_taken_over_once_it_ran_out(
    leases_collection: AsyncCollection[Document], clock: Clock,
) -> None:
    # Given the lease of a holder killed while it held it, run out by now
    await leases_collection.insert_one({"_id": SCOPE_ID, "h": "dead", "u": clock.now + 10})
    clock.advance(10.5)
    # When a writer asks for it, it gets it
    async with leases(leases_collection, clock).held(SCOPE, "create the queue"):
        held = await leases_collection.find_one({"_id": SCOPE_ID})
        assert held is not None and held["h"] != "dead"
    assert await leases_collection.count_documents({}) == 0


async def test_a_cancelled_holder_gives_the_lease_back(
    leases_collection: AsyncCollection[Document], clock: Clock,
) -> None:
    lease = leases(leases_collection, clock)
    inside = asyncio.Event()

    async def holder() -> None:
        async with lease.held(SCOPE, "create the queue"):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(holder())
    await inside.wait()
    # When the holder is cancelled (its caller gave up) inside the block
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Then the lease is given back: the next writer gets it without waiting for it to run out
    async with asyncio.timeout(5):
        async with lease.held(SCOPE, "create the queue"):
            pass


async def test_a_live_lease_never_given_back_is_a_503_once_it_would_have_run_out(
    leases_collection: AsyncCollection[Document], clock: Clock,
) -> None:
    # Given a lease held far into the future of this clock (a holder whose clock is ahead)
    await leases_collection.insert_one({"_id": SCOPE_ID, "h": "other", "u": clock.now + 3600})
    # When a writer whose leases last 0.2 s asks for it
    with pytest.raises(Unavailable) as refused:
        async with leases(leases_collection, clock, seconds=0.2).held(SCOPE, "create the queue"):
            pytest.fail("held a lease that another holds")
    # Then it gives up with the store's "try again" error, and the lease is left alone
    assert refused.value.description.startswith(
        "The queue store could not create the queue: too many concurrent changes")
    assert (await leases_collection.find_one({"_id": SCOPE_ID}) or {}).get("h") == "other"


class Stall:
    """Holds the first writer that reaches it until :meth:`release`; later ones go through."""

    def __init__(self) -> None:
        self.reached, self.released = asyncio.Event(), asyncio.Event()

    async def __call__(self) -> None:
        if not self.reached.is_set():
            self.reached.set()
            await self.released.wait()

    def release(self) -> None:
        self.released.set()


def stalled_after(call: Callable[..., Awaitable[Any]], stall: Stall) -> Callable[..., Any]:
    @functools.wraps(call)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = await call(*args, **kwargs)
        await stall()
        return result

    return wrapped


@pytest.mark.parametrize("how", ["create", "ensure"])
async def test_a_holder_stalled_past_its_lease_does_not_pass_the_queue_quota(
    mongodb_uri: str, clock: Clock, monkeypatch: pytest.MonkeyPatch, how: str,
) -> None:
    monkeypatch.setattr(queue_mongo, "Leases", functools.partial(Leases, clock=clock))
    store = queue_mongo.MongoQueueStore.from_uri(mongodb_uri)
    await store.open()
    try:
        def make(name: str) -> Awaitable[Any]:
            if how == "create":
                return store.create("p", name, {}, quota=1)
            return store.ensure("p", name, quota=1)

        # Given a writer that counted the project's queues under its lease (none, of a quota
        # of one) and then stalled, before its insert, until its lease ran out
        stall = Stall()
        monkeypatch.setattr(store, "_make_room", stalled_after(store._make_room, stall))
        stalled = asyncio.create_task(make("a"))
        await stall.reached.wait()
        clock.advance(LEASE_SECONDS + 1)
        # When another writer takes the lease over and makes the one queue the quota allows
        await make("b")
        # Then the stalled writer, once it goes on, finds its lease lost, counts again, undoes
        # its insert and is refused: the project has the one queue
        stall.release()
        with pytest.raises(QuotaExceeded):
            await stalled
        assert [q.name for q in (await store.list("p", limit=10)).queues] == ["b"]
        assert await store.get("p", "a") is None
    finally:
        await store.close()


async def test_a_holder_stalled_past_its_lease_does_not_pass_the_subscription_quota(
    mongodb_uri: str, clock: Clock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifier_mongo, "Leases", functools.partial(Leases, clock=clock))
    store = notifier_mongo.MongoNotifierStore.from_uri(mongodb_uri, now=clock)
    await store.open()
    try:
        subs = store._collections()[0]
        stall = Stall()

        async def count_then_stall(*args: Any, **kwargs: Any) -> int:
            counted: int = await type(subs).count_documents(subs, *args, **kwargs)
            await stall()
            return counted

        # Given a writer that counted the queue's subscriptions under its lease (none, of a
        # quota of one) and then stalled, before its insert, until its lease ran out
        monkeypatch.setattr(subs, "count_documents", count_then_stall)
        stalled = asyncio.create_task(
            store.create("p", "q", "mailto:a@example.com", 600, {}, quota=1))
        await stall.reached.wait()
        clock.advance(LEASE_SECONDS + 1)
        # When another writer takes the lease over and makes the one subscription allowed
        made, created = await store.create("p", "q", "mailto:b@example.com", 600, {}, quota=1)
        assert created
        # Then the stalled writer is refused, and the queue has the one subscription
        stall.release()
        with pytest.raises(QuotaExceeded):
            await stalled
        assert [s.subscriber for s in await store.list("p", "q", limit=10)] == [made.subscriber]
    finally:
        await store.close()
