"""Contract of the notifier store (``services/notifier_svc/storage/base.py``): subscriptions, the
outbox of deliveries, watchers and the change feed, for any backend.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.common.errors import (
    QuotaExceeded,
    SubscriptionAlreadyExists,
    SubscriptionNotFound,
    Unavailable,
)
from services.notifier_svc.storage import base
from services.notifier_svc.storage.base import (
    FEED_GAP_GRACE,
    DeliveryKind,
    NewDelivery,
    NotifierStore,
    Subscription,
    WatchEvent,
    new_id,
)
from services.notifier_svc.storage.registry import open_notifier_store
from services.testing.fixtures import Clock

HOOK = "http://127.0.0.1:9/hook"


def delivery(sub: Subscription, text: str = "m", kind: DeliveryKind = DeliveryKind.NOTIFICATION
             ) -> NewDelivery:
    return NewDelivery(
        subscription_id=sub.id, project=sub.project, queue=sub.queue,
        subscriber=sub.subscriber, options=sub.options, kind=kind,
        document=f'{{"body":"{text}","Message_Type":"Notification"}}'.encode(),
    )


async def subscribe(store: NotifierStore, subscriber: str = HOOK, *, project: str = "p",
                    queue: str = "q", ttl: int = 3600, **options: Any) -> Subscription:
    sub, created = await store.create(project, queue, subscriber, ttl, options)
    assert created
    return sub


def event(n: int, origin: str = "r1", queue: str = "q") -> WatchEvent:
    return WatchEvent(origin=origin, project="p", queue=queue, payload=b"\x00\xff%d" % n)


async def read_all(store: NotifierStore, cursor: str, count: int, limit: int = 100
                   ) -> tuple[list[WatchEvent], str]:
    """Read until ``count`` events came (each read waits up to 1 s for one), within 20 s."""
    found: list[WatchEvent] = []
    deadline = time.monotonic() + 20
    while len(found) < count:
        assert time.monotonic() < deadline, f"{len(found)} of {count} events read"
        events, cursor = await store.read_watch_events(cursor, limit=limit, wait=1.0)
        found += events
    return found, cursor


class NotifierStoreContract:
    """The contract suite: subclass it in a test module and provide the ``store_uri``
    fixture (``services/testing/__init__.py``)."""

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    async def store(self, store_uri: str, clock: Clock) -> AsyncIterator[NotifierStore]:
        opened = await open_notifier_store(store_uri, now=clock)
        yield opened
        await opened.close()

    async def test_create_then_get(self, store: NotifierStore, clock: Clock) -> None:
        # When a subscription is created with options
        options = {"post_data": '{"m": "$zaqar_message$"}', "b": 1, "a": [1, 2]}
        sub, created = await store.create("p", "q", HOOK, 120, options)
        # Then it is new, unconfirmed, and expires ttl seconds from now
        assert created is True
        assert (sub.project, sub.queue, sub.subscriber, sub.ttl, sub.confirmed) == (
            "p", "q", HOOK, 120, False
        )
        assert (sub.created, sub.expires) == (clock.now, clock.now + 120)
        # And it reads back the same, options key order kept
        got = await store.get("p", "q", sub.id)
        assert got == sub
        assert got is not None and list(got.options) == ["post_data", "b", "a"]

    async def test_same_subscriber_again_returns_the_existing_one(
        self, store: NotifierStore
    ) -> None:
        first = await subscribe(store, ttl=100, x=1)
        # When the same subscriber subscribes to the same queue again, with other values
        again, created = await store.create("p", "q", HOOK, 900, {"y": 2})
        # Then nothing changes and the existing subscription is returned
        assert created is False
        assert again == first
        assert await store.get("p", "q", first.id) == first

    async def test_concurrent_creates_make_exactly_one(self, store: NotifierStore) -> None:
        results = await asyncio.gather(*(store.create("p", "q", HOOK, 60, {}) for _ in range(8)))
        assert sorted(created for _, created in results) == [False] * 7 + [True]
        assert len({sub.id for sub, _ in results}) == 1

    async def test_a_quota_refuses_a_new_subscription_beyond_it_and_nothing_else(
        self, store: NotifierStore, clock: Clock
    ) -> None:
        # Given a queue with as many live subscriptions as its quota, and an expired one
        short = await subscribe(store, "http://short.example/", ttl=60)
        clock.advance(61)
        first, _ = await store.create("p", "q", HOOK, 600, {}, quota=2)
        await store.create("p", "q", "mailto:a@b.c", 600, {}, quota=2)
        # When a third subscriber subscribes, or the expired one anew
        for subscriber in ("mailto:c@d.e", short.subscriber):
            with pytest.raises(QuotaExceeded) as refused:
                await store.create("p", "q", subscriber, 600, {}, quota=2)
            # Then it is refused, saying which queue, how many and which setting
            assert refused.value.description.startswith(
                "Queue q of project p has 2 subscriptions, the most it may have "
                "(ZAQAR_QUEUE_MAX_SUBSCRIPTIONS)"
            )
        # And nothing was made
        assert len(await store.list("p", "q", limit=10)) == 2
        # While a live subscriber subscribing again gets its own, and other queues, projects
        # and a larger quota are not held back
        again, created = await store.create("p", "q", HOOK, 600, {}, quota=2)
        assert (again.id, created) == (first.id, False)
        assert (await store.create("p", "q2", "mailto:c@d.e", 600, {}, quota=2))[1]
        assert (await store.create("p2", "q", "mailto:c@d.e", 600, {}, quota=2))[1]
        assert (await store.create("p", "q", "mailto:c@d.e", 600, {}, quota=3))[1]
        # And once one is deleted, a new one fits again
        assert await store.delete("p", "q", first.id)
        assert (await store.create("p", "q", "mailto:f@g.h", 600, {}, quota=3))[1]

    async def test_concurrent_subscriptions_at_a_quota_never_go_beyond_it(
        self, store: NotifierStore
    ) -> None:
        # Given a queue one subscription short of its quota of two
        await subscribe(store)
        # When ten subscribers subscribe at once
        results = await asyncio.gather(
            *(store.create("p", "q", f"mailto:s{i}@example.com", 600, {}, quota=2)
              for i in range(10)),
            return_exceptions=True,
        )
        # Then each made its subscription or was refused, and each one made is there
        made = [r for r in results if not isinstance(r, QuotaExceeded)]
        assert all(isinstance(r, tuple) and r[1] is True for r in made), results
        assert len(await store.list("p", "q", limit=20)) == 1 + len(made)
        assert len(made) == 1, results

    async def test_subscriptions_are_unique_per_project_queue_and_subscriber(
        self,
        store: NotifierStore,
    ) -> None:
        a = await subscribe(store)
        b = await subscribe(store, queue="other")
        c = await subscribe(store, project="p2")
        d = await subscribe(store, "mailto:ops@example.com")
        assert len({a.id, b.id, c.id, d.id}) == 4

    async def test_tenancy_is_strict(self, store: NotifierStore) -> None:
        sub = await subscribe(store)
        # Then the id means nothing in another project or queue
        assert await store.get("p2", "q", sub.id) is None
        assert await store.get("p", "q2", sub.id) is None
        assert await store.list("p2", "q", limit=10) == []
        with pytest.raises(SubscriptionNotFound):
            await store.update("p", "q2", sub.id, ttl=90)
        with pytest.raises(SubscriptionNotFound):
            await store.confirm("p2", "q", sub.id, True)
        assert await store.delete("p2", "q", sub.id) is False
        assert await store.get("p", "q", sub.id) == sub

    async def test_absent_and_malformed_ids_are_not_found(self, store: NotifierStore) -> None:
        assert await store.get("p", "q", new_id()) is None
        assert await store.get("p", "q", "not-an-id") is None
        assert await store.delete("p", "q", "not-an-id") is False

    async def test_expired_subscription_is_gone_everywhere(
        self, store: NotifierStore, clock: Clock
    ) -> None:
        sub = await subscribe(store, ttl=60)
        keep = await subscribe(store, "mailto:a@b.c", ttl=61)
        # When its ttl has passed
        clock.advance(60)
        # Then it is never returned, listed, changed or confirmed
        assert await store.get("p", "q", sub.id) is None
        assert [s.id for s in await store.list("p", "q", limit=10)] == [keep.id]
        assert [s.id for s in await store.subscribers("p", "q")] == [keep.id]
        with pytest.raises(SubscriptionNotFound):
            await store.update("p", "q", sub.id, ttl=60)
        with pytest.raises(SubscriptionNotFound):
            await store.confirm("p", "q", sub.id, True)
        # And the same subscriber may subscribe anew
        again, created = await store.create("p", "q", HOOK, 60, {})
        assert created and again.id != sub.id

    async def test_update_to_the_subscriber_of_an_expired_one(
        self, store: NotifierStore, clock: Clock
    ) -> None:
        old = await subscribe(store, "http://old.example/", ttl=60)
        sub = await subscribe(store, ttl=600)
        clock.advance(61)
        updated = await store.update("p", "q", sub.id, subscriber="http://old.example/")
        assert updated.subscriber == "http://old.example/"
        assert await store.get("p", "q", old.id) is None

    async def test_collect_garbage_removes_expired_ones_with_their_deliveries(
        self,
        store: NotifierStore, clock: Clock
    ) -> None:
        gone = await subscribe(store, ttl=60)
        kept = await subscribe(store, "mailto:x@y.z", ttl=600)
        assert await store.enqueue([delivery(gone), delivery(gone), delivery(kept)]) == 3
        clock.advance(100)
        # When garbage is collected
        removed = await store.collect_garbage()
        # Then the expired subscription and its two deliveries went, and nothing else
        assert removed == 3
        assert await store.count_deliveries() == 1
        assert await store.count_deliveries(kept.id) == 1
        assert await store.collect_garbage() == 0
        assert await store.get("p", "q", kept.id) == kept

    async def test_list_pages_in_creation_order(self, store: NotifierStore, clock: Clock) -> None:
        subs = []
        for i in range(7):
            subs.append(await subscribe(store, f"http://h{i}.example/"))
            clock.advance(0.002)
        ids = [s.id for s in subs]
        assert [s.id for s in await store.list("p", "q", limit=20)] == ids
        # Paged three at a time with the last id as an exclusive marker
        seen: list[str] = []
        marker = ""
        while True:
            page = await store.list("p", "q", limit=3, marker=marker)
            if not page:
                break
            assert len(page) <= 3
            seen += [s.id for s in page]
            marker = page[-1].id
        assert seen == ids
        # A marker that does not exist still splits the order
        assert [s.id for s in await store.list("p", "q", limit=20, marker=ids[3][:-1])] == ids[3:]

    async def test_update_changes_only_what_is_given(
        self, store: NotifierStore, clock: Clock
    ) -> None:
        sub = await subscribe(store, ttl=100, a=1)
        clock.advance(30)
        # When only the ttl changes, its life restarts from now
        updated = await store.update("p", "q", sub.id, ttl=500)
        assert (updated.ttl, updated.expires, updated.created) == (
            500, clock.now + 500, sub.created
        )
        assert (updated.subscriber, dict(updated.options), updated.confirmed) == (
            HOOK, {"a": 1}, False
        )
        # When subscriber, options and confirmed change, the ttl stays
        updated = await store.update(
            "p", "q", sub.id, subscriber="mailto:z@z.z", options={"b": 2}, confirmed=True
        )
        assert (updated.subscriber, dict(updated.options), updated.confirmed, updated.ttl) == (
            "mailto:z@z.z", {"b": 2}, True, 500
        )
        assert await store.get("p", "q", sub.id) == updated
        # And the old subscriber is free again
        assert (await store.create("p", "q", HOOK, 60, {}))[1] is True

    async def test_update_to_another_live_subscriber_conflicts(self, store: NotifierStore) -> None:
        sub = await subscribe(store)
        other = await subscribe(store, "http://other.example/")
        with pytest.raises(SubscriptionAlreadyExists):
            await store.update("p", "q", sub.id, subscriber=other.subscriber, ttl=999)
        # Nothing changed
        assert await store.get("p", "q", sub.id) == sub
        # Its own subscriber is no conflict
        assert (await store.update("p", "q", sub.id, subscriber=HOOK)).subscriber == HOOK

    async def test_update_of_absent_subscription_is_not_found(self, store: NotifierStore) -> None:
        with pytest.raises(SubscriptionNotFound):
            await store.update("p", "q", new_id(), ttl=60)

    async def test_confirm_sets_the_flag(self, store: NotifierStore) -> None:
        sub = await subscribe(store)
        assert (await store.confirm("p", "q", sub.id, True)).confirmed is True
        assert (await store.confirm("p", "q", sub.id, True)).confirmed is True
        got = await store.get("p", "q", sub.id)
        assert got is not None and got.confirmed
        assert (await store.confirm("p", "q", sub.id, False)).confirmed is False
        with pytest.raises(SubscriptionNotFound):
            await store.confirm("p", "q", new_id(), True)

    async def test_delete_is_idempotent_and_takes_the_deliveries(
        self, store: NotifierStore
    ) -> None:
        sub = await subscribe(store)
        other = await subscribe(store, "http://other.example/")
        await store.enqueue([delivery(sub), delivery(other)])
        assert await store.delete("p", "q", sub.id) is True
        assert await store.delete("p", "q", sub.id) is False
        assert await store.get("p", "q", sub.id) is None
        assert await store.count_deliveries(sub.id) == 0
        assert await store.count_deliveries() == 1

    async def test_delete_queue_removes_only_that_queue(
        self, store: NotifierStore, clock: Clock
    ) -> None:
        a = await subscribe(store)
        b = await subscribe(store, "http://b.example/", ttl=60)
        kept = [await subscribe(store, queue="q2"), await subscribe(store, project="p2")]
        await store.enqueue([delivery(a), delivery(b), *(delivery(k) for k in kept)])
        clock.advance(61)  # b has expired: it goes too
        assert await store.delete_queue("p", "q") == 2
        assert await store.list("p", "q", limit=10) == []
        assert await store.count_deliveries() == 2
        assert await store.delete_queue("p", "q") == 0
        # And the queue can be subscribed to again
        assert (await store.create("p", "q", HOOK, 60, {}))[1]

    async def test_purge_deliveries_keeps_the_subscriptions(
        self, store: NotifierStore, clock: Clock
    ) -> None:
        # Given deliveries of two subscriptions of a queue (one expired), of another queue,
        # and of a source named with a "/" (a topic's key in notifier_svc)
        a = await subscribe(store)
        b = await subscribe(store, "http://b.example/", ttl=60)
        other = await subscribe(store, queue="q2")
        topic = await subscribe(store, queue="topic/q")
        await store.enqueue([delivery(a), delivery(a, "2"), delivery(b), delivery(other),
                             delivery(topic)])
        clock.advance(61)
        # When the queue's deliveries are purged
        assert await store.purge_deliveries("p", "q") == 3
        # Then its subscriptions stay, and the other sources keep theirs
        assert [s.id for s in await store.list("p", "q", limit=10)] == [a.id]
        assert await store.count_deliveries(a.id) == 0
        assert await store.count_deliveries(other.id) == 1
        assert await store.count_deliveries(topic.id) == 1
        assert await store.purge_deliveries("p", "q") == 0
        assert await store.purge_deliveries("p", "topic/q") == 1
        assert await store.count_deliveries() == 1
        # And the purged subscription gets new deliveries as before
        assert await store.enqueue([delivery(a, "3")]) == 1
        assert await store.count_deliveries(a.id) == 1

    async def test_enqueue_stores_deliveries_due_now(
        self, store: NotifierStore, clock: Clock
    ) -> None:
        sub = await subscribe(store, x=1)
        # When two deliveries are handed over, one of them for a subscription that is gone
        gone = Subscription(new_id(), "p", "q", HOOK, 60, {}, False, 0, 0)
        assert await store.enqueue([delivery(sub, "a"), delivery(gone), delivery(sub, "b")]) == 2
        assert await store.enqueue([]) == 0
        assert await store.next_due() == clock.now
        # Then a claim returns them in order, with what they were stored with
        taken = await store.claim_due(limit=10, lease=30, per_subscriber=10)
        assert [d.document for d in taken] == [
            b'{"body":"a","Message_Type":"Notification"}',
            b'{"body":"b","Message_Type":"Notification"}',
        ]
        first = taken[0]
        assert (first.subscription_id, first.project, first.queue, first.subscriber,
                dict(first.options), first.kind, first.attempts, first.created) == (
            sub.id, "p", "q", HOOK, {"x": 1}, DeliveryKind.NOTIFICATION, 0, clock.now
        )
        assert first.due == clock.now + 30

    async def test_a_claim_leases_until_the_lease_ends(
        self, store: NotifierStore, clock: Clock
    ) -> None:
        sub = await subscribe(store)
        await store.enqueue([delivery(sub)])
        [taken] = await store.claim_due(limit=5, lease=10, per_subscriber=5)
        # While leased, no other claim gets it
        assert await store.claim_due(limit=5, lease=10, per_subscriber=5) == []
        assert await store.next_due() == clock.now + 10
        # Once the lease ends (the worker died), it comes back
        clock.advance(10)
        [again] = await store.claim_due(limit=5, lease=10, per_subscriber=5)
        assert again.id == taken.id

    async def test_reschedule_and_complete(self, store: NotifierStore, clock: Clock) -> None:
        sub = await subscribe(store)
        await store.enqueue([delivery(sub)])
        [taken] = await store.claim_due(limit=1, lease=60, per_subscriber=1)
        # A failed attempt makes it due later, with its attempt counted
        assert await store.reschedule(taken.id, due=clock.now + 5, attempts=1) is True
        assert await store.claim_due(limit=1, lease=60, per_subscriber=1) == []
        clock.advance(5)
        [again] = await store.claim_due(limit=1, lease=60, per_subscriber=1)
        assert (again.id, again.attempts) == (taken.id, 1)
        # Once complete it is gone for good; both calls are idempotent-safe
        await store.complete(again.id)
        await store.complete(again.id)
        assert await store.count_deliveries() == 0
        assert await store.next_due() is None
        assert await store.reschedule(again.id, due=clock.now, attempts=2) is False

    async def test_a_worker_whose_lease_ended_cannot_move_the_next_lease(
        self,
        store: NotifierStore, clock: Clock
    ) -> None:
        sub = await subscribe(store)
        await store.enqueue([delivery(sub)])
        # Given a delivery leased by a worker that outlived its lease, and claimed again since
        [first] = await store.claim_due(limit=1, lease=10, per_subscriber=1)
        clock.advance(10)
        [second] = await store.claim_due(limit=1, lease=10, per_subscriber=1)
        assert second.id == first.id and second.due == clock.now + 10
        # When the first worker reschedules it under its own lease, nothing changes
        assert await store.reschedule(
            first.id, due=clock.now, attempts=1, leased_until=first.due
        ) is False
        assert await store.claim_due(limit=1, lease=10, per_subscriber=1) == []
        assert await store.next_due() == second.due
        # And the worker holding the lease reschedules it
        assert await store.reschedule(
            second.id, due=clock.now + 1, attempts=1, leased_until=second.due
        ) is True
        clock.advance(1)
        [third] = await store.claim_due(limit=1, lease=10, per_subscriber=1)
        assert (third.id, third.attempts) == (first.id, 1)
        # A lease on a delivery that is gone changes nothing either
        await store.complete(third.id)
        assert await store.reschedule(
            third.id, due=clock.now, attempts=2, leased_until=third.due
        ) is False

    async def test_claim_limits_each_subscriber(self, store: NotifierStore) -> None:
        slow = await subscribe(store, "http://slow.example/")
        fast = await subscribe(store, "http://fast.example/")
        # Given a backlog of the slow subscriber ahead of the fast one's
        await store.enqueue([delivery(slow, str(i)) for i in range(6)])
        await store.enqueue([delivery(fast, str(i)) for i in range(2)])
        # When claiming with at most 2 per subscriber, 1 of which the caller already makes to slow
        taken = await store.claim_due(
            limit=10, lease=30, per_subscriber=2, busy={"http://slow.example/": 1}
        )
        # Then the slow one gets one more, and the fast one is not held up behind it
        assert sorted(d.subscriber for d in taken) == [
            "http://fast.example/", "http://fast.example/", "http://slow.example/"
        ]
        # And the limit applies across subscribers
        assert len(await store.claim_due(limit=1, lease=30, per_subscriber=5)) == 1

    async def test_a_backlog_of_any_size_never_holds_up_another_subscriber(
        self,
        store: NotifierStore, clock: Clock
    ) -> None:
        dead = await subscribe(store, "http://dead.example/")
        live = await subscribe(store, "http://live.example/")
        # Given a dead subscriber's backlog far larger than one claim looks at, due earliest
        for start in range(0, 3000, 500):
            await store.enqueue([delivery(dead, str(i)) for i in range(start, start + 500)])
        clock.advance(1)
        await store.enqueue([delivery(live, "x")])
        # When the caller already makes as many deliveries to the dead one as it may
        taken = await store.claim_due(
            limit=8, lease=30, per_subscriber=4, busy={"http://dead.example/": 4}
        )
        # Then the live subscriber's delivery is taken at once
        assert [d.subscriber for d in taken] == ["http://live.example/"]
        # And with no one busy, a claim takes the earliest due of each subscriber within its share
        clock.advance(30)
        taken = await store.claim_due(limit=8, lease=30, per_subscriber=4)
        assert sorted(d.subscriber for d in taken) == ["http://dead.example/"] * 4 + [
            "http://live.example/"
        ]
        assert [d.document for d in taken if d.subscriber.startswith("http://dead")] == [
            f'{{"body":"{i}","Message_Type":"Notification"}}'.encode() for i in range(4)
        ]

    async def test_a_negative_busy_count_widens_a_subscribers_share(
        self, store: NotifierStore
    ) -> None:
        fast = await subscribe(store, "http://fast.example/")
        await store.enqueue([delivery(fast, str(i)) for i in range(10)])
        taken = await store.claim_due(
            limit=20, lease=30, per_subscriber=2, busy={"http://fast.example/": -3}
        )
        assert len(taken) == 5

    async def test_claims_share_the_limit_across_subscribers(self, store: NotifierStore) -> None:
        subs = [await subscribe(store, f"http://h{i}.example/") for i in range(3)]
        for sub in subs:
            await store.enqueue([delivery(sub, str(i)) for i in range(10)])
        taken = await store.claim_due(limit=6, lease=30, per_subscriber=2)
        assert sorted(d.subscriber for d in taken) == sorted([s.subscriber for s in subs] * 2)

    async def test_concurrent_claims_never_share_a_delivery(self, store: NotifierStore) -> None:
        subs = [await subscribe(store, f"http://h{i}.example/") for i in range(4)]
        await store.enqueue([delivery(s, str(i)) for s in subs for i in range(5)])
        claims = await asyncio.gather(
            *(store.claim_due(limit=4, lease=30, per_subscriber=20) for _ in range(6))
        )
        ids = [d.id for claim in claims for d in claim]
        assert len(ids) == len(set(ids)) == 20

    async def test_watch_entries_live_while_kept(self, store: NotifierStore, clock: Clock) -> None:
        # When a replica registers watchers of a queue, the queue is new to it
        assert await store.keep_watching("r1", [("p", "q")], 30) == [("p", "q")]
        assert await store.watchers("p", "q") == ["r1"]
        # And a second replica's entry sits next to it
        assert await store.keep_watching("r2", [("p", "q"), ("p", "q2")], 30) == [
            ("p", "q"), ("p", "q2")
        ]
        assert await store.watchers("p", "q") == ["r1", "r2"]
        # Tenancy: another project or queue is not watched
        assert await store.watchers("p2", "q") == []
        assert await store.watchers("p", "q3") == []
        # Kept before it expires (a heartbeat), an entry lives on and is not new
        clock.advance(20)
        assert await store.keep_watching("r1", [("p", "q")], 30) == []
        clock.advance(20)
        assert await store.watchers("p", "q") == ["r1"]
        assert await store.watchers("p", "q2") == []
        # And once expired, keeping it again says it had lapsed
        assert await store.keep_watching("r2", [("p", "q2"), ("p", "q")], 30) == [
            ("p", "q2"), ("p", "q")
        ]
        assert await store.keep_watching("r1", [], 30) == []

    async def test_stop_watching_removes_the_entries_of_one_replica(
        self, store: NotifierStore
    ) -> None:
        await store.keep_watching("r1", [("p", "a"), ("p", "b"), ("p", "c")], 30)
        await store.keep_watching("r2", [("p", "a")], 30)
        # When a replica's last watcher of a queue leaves, its entry goes
        await store.stop_watching("r1", [("p", "a")])
        await store.stop_watching("r1", [("p", "a")])
        assert await store.watchers("p", "a") == ["r2"]
        # When it stops, every entry of its own goes, and no other
        await store.stop_watching("r1")
        assert [await store.watchers("p", q) for q in "abc"] == [["r2"], [], []]
        await store.stop_watching("r1", [])
        # Entries removed are new again when kept
        assert await store.keep_watching("r1", [("p", "b")], 30) == [("p", "b")]

    async def test_expired_watch_entries_are_collected(
        self, store: NotifierStore, clock: Clock
    ) -> None:
        sub = await subscribe(store, ttl=600)
        await store.keep_watching("r1", [("p", "q")], 30)
        clock.advance(31)
        # Collecting garbage removes them (uncounted) and nothing else
        assert await store.collect_garbage() == 0
        assert await store.watchers("p", "q") == []
        assert await store.keep_watching("r1", [("p", "q")], 30) == [("p", "q")]
        assert await store.get("p", "q", sub.id) == sub

    async def test_the_feed_is_read_in_order_from_a_cursor(self, store: NotifierStore) -> None:
        start = await store.watch_feed_end()
        # Nothing after the end
        assert await store.read_watch_events(start, limit=10) == ([], start)
        for n in range(3):
            await store.publish_watch_event(event(n, queue=f"q{n}"))
        # When read two at a time, events come in publication order, bytes kept
        first, cursor = await store.read_watch_events(start, limit=2)
        assert first == [event(0, queue="q0"), event(1, queue="q1")]
        rest, cursor = await store.read_watch_events(cursor, limit=10)
        assert rest == [event(2, queue="q2")]
        assert await store.read_watch_events(cursor, limit=10) == ([], cursor)
        # And a cursor taken now sees only what is published later
        end = await store.watch_feed_end()
        assert await store.read_watch_events(end, limit=10) == ([], end)
        await store.publish_watch_event(event(3))
        assert (await store.read_watch_events(end, limit=10))[0] == [event(3)]
        assert (await store.read_watch_events(cursor, limit=10))[0] == [event(3)]

    async def test_a_feed_read_waits_for_the_next_event(self, store: NotifierStore) -> None:
        start = await store.watch_feed_end()
        # With nothing published, a read waits and returns nothing
        began = time.monotonic()
        assert await store.read_watch_events(start, limit=10, wait=0.2) == ([], start)
        assert time.monotonic() - began >= 0.15
        # When an event is published while a read waits, the read returns it
        reading = asyncio.ensure_future(store.read_watch_events(start, limit=10, wait=30))
        await asyncio.sleep(0.1)
        began = time.monotonic()
        await store.publish_watch_event(event(1))
        events, _ = await reading
        assert events == [event(1)]
        assert time.monotonic() - began < 10

    async def test_the_feed_is_shared_by_every_store_on_the_uri(
        self,
        store: NotifierStore, store_uri: str, clock: Clock
    ) -> None:
        other = await open_notifier_store(store_uri, now=clock)
        try:
            start = await store.watch_feed_end()

            async def publish(publisher: NotifierStore, origin: str) -> None:
                for n in range(25):
                    await publisher.publish_watch_event(event(n, origin))

            # When two replicas publish at the same time
            await asyncio.gather(publish(store, "a"), publish(other, "b"))
            # Then a reader gets every event once, each replica's in its order
            found, cursor = await read_all(other, start, 50, limit=7)
            assert await store.read_watch_events(cursor, limit=10) == ([], cursor)
            assert [e for e in found if e.origin == "a"] == [event(n, "a") for n in range(25)]
            assert [e for e in found if e.origin == "b"] == [event(n, "b") for n in range(25)]
        finally:
            await other.close()

    async def test_the_feed_keeps_a_bounded_number_of_events(
        self,
        store: NotifierStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(base, "FEED_MAX_EVENTS", 100)
        start = await store.watch_feed_end()
        total = base.FEED_MAX_EVENTS + 150
        for first in range(0, total, 50):
            await asyncio.gather(
                *(store.publish_watch_event(event(n)) for n in range(first, first + 50))
            )
        # A reader that fell behind skips what was trimmed (on MongoDB once the gap it leaves is
        # older than a publisher may take) and reads the rest to the end
        clock.advance(FEED_GAP_GRACE + 0.01)
        found: list[WatchEvent] = []
        cursor = start
        while True:
            events, cursor = await store.read_watch_events(cursor, limit=500)
            if not events:
                break
            found += events
        assert base.FEED_MAX_EVENTS <= len(found) < total
        assert len({e.payload for e in found}) == len(found)

    async def test_data_survives_reopening(self, store_uri: str, clock: Clock) -> None:
        first = await open_notifier_store(store_uri, now=clock)
        sub, _ = await first.create("p", "q", HOOK, 600, {"k": "v"})
        await first.enqueue([delivery(sub)])
        await first.close()
        reopened = await open_notifier_store(store_uri, now=clock)
        try:
            assert await reopened.get("p", "q", sub.id) == sub
            [pending] = await reopened.claim_due(limit=1, lease=1, per_subscriber=1)
            assert pending.subscription_id == sub.id
        finally:
            await reopened.close()

    async def test_closed_store_fails_as_unavailable(self, store_uri: str) -> None:
        opened = await open_notifier_store(store_uri)
        await opened.close()
        await opened.close()
        with pytest.raises(Unavailable):
            await opened.get("p", "q", new_id())
        with pytest.raises(Unavailable):
            await opened.claim_due(limit=1, lease=1, per_subscriber=1)
        with pytest.raises(Unavailable):
            await opened.watchers("p", "q")
        with pytest.raises(Unavailable):
            await opened.read_watch_events("0", limit=1)
