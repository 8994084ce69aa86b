"""The dispatcher over a real SQLite notifier store: a saturated subscriber costs no store
query per hand-over, and frees its slots to the next due deliveries as it finishes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from services.notifier_svc.delivery.dispatcher import PER_SUBSCRIBER, PER_SUBSCRIBER_MAX, Dispatcher
from services.notifier_svc.storage.base import Delivery, DeliveryKind, NewDelivery
from services.notifier_svc.storage.registry import open_notifier_store
from tests.waiting import until

SLOW = "http://127.0.0.1:9/slow"
FAST = "http://127.0.0.1:9/fast"


class GatedSender:
    """Delivers to FAST at once; deliveries to SLOW wait until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sent: list[str] = []

    async def send(self, delivery: Delivery) -> bool:
        if delivery.subscriber == SLOW:
            await self.release.wait()
        self.sent.append(delivery.subscriber)
        return True


async def no_queue_policy(project: str, queue: str) -> Any:
    return None


IDS: dict[str, str] = {}


def delivery(subscriber: str, n: int) -> NewDelivery:
    return NewDelivery(
        subscription_id=IDS[subscriber], project="p", queue="q", subscriber=subscriber, options={},
        kind=DeliveryKind.NOTIFICATION, document=b'{"n": %d}' % n,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Any]:
    opened = await open_notifier_store(f"sqlite:///{tmp_path}/notifier.db")
    for uri in (SLOW, FAST):
        subscription, _ = await opened.create("p", "q", uri, 3600, {})
        IDS[uri] = subscription.id
    claims: list[Mapping[str, int]] = []
    claim_due = opened.claim_due

    async def counted(**kwargs: Any) -> list[Delivery]:
        claims.append(kwargs)
        return await claim_due(**kwargs)

    opened.claim_due = counted
    opened.claims = claims
    yield opened
    await opened.close()


async def test_posts_for_a_saturated_subscriber_do_not_query_the_store(store: Any) -> None:
    sender = GatedSender()
    dispatcher = Dispatcher(store, {"http": sender}, no_queue_policy, concurrency=16, timeout=30)
    dispatcher.start()
    try:
        await store.enqueue([delivery(SLOW, n) for n in range(PER_SUBSCRIBER)])
        dispatcher.wake({SLOW})
        await until(lambda: len(dispatcher._running) == PER_SUBSCRIBER)
        await asyncio.sleep(0.05)
        before = len(store.claims)

        for n in range(50):  # hand-overs while SLOW holds all its slots
            await store.enqueue([delivery(SLOW, 100 + n)])
            dispatcher.wake({SLOW})
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)
        assert len(store.claims) == before, "a saturated subscriber's posts queried the store"

        # Another subscriber's delivery is still taken at once.
        await store.enqueue([delivery(FAST, 0)])
        dispatcher.wake({FAST})
        await until(lambda: FAST in sender.sent)

        # Once SLOW answers, its waiting deliveries are all made.
        sender.release.set()
        await until(lambda: sender.sent.count(SLOW) == PER_SUBSCRIBER + 50, within=10)
        await until(lambda: not dispatcher._running)
        assert await store.next_due() is None
    finally:
        await dispatcher.stop()


class TimedSender:
    """Delivers after ``delay`` seconds (``ok`` says whether it succeeds), recording how many
    deliveries to each subscriber were under way at once."""

    def __init__(self, delay: float, ok: bool = True) -> None:
        self.delay = delay
        self.ok = ok
        self.in_flight: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.attempts = 0

    async def send(self, delivery: Delivery) -> bool:
        s = delivery.subscriber
        self.in_flight[s] = self.in_flight.get(s, 0) + 1
        self.most[s] = max(self.most.get(s, 0), self.in_flight[s])
        try:
            await asyncio.sleep(self.delay)
            self.attempts += 1
            return self.ok
        finally:
            self.in_flight[s] -= 1


async def test_a_healthy_subscriber_gets_more_deliveries_in_flight(store: Any) -> None:
    sender = TimedSender(0.02)
    dispatcher = Dispatcher(store, {"http": sender}, no_queue_policy, concurrency=64, timeout=30)
    await store.enqueue([delivery(FAST, n) for n in range(400)])
    dispatcher.start()
    try:
        await until(lambda: sender.attempts == 400, within=20)
        assert PER_SUBSCRIBER < sender.most[FAST] <= PER_SUBSCRIBER_MAX
        assert dispatcher.share(FAST) == PER_SUBSCRIBER_MAX
    finally:
        await dispatcher.stop()


async def test_a_failing_subscriber_soon_holds_a_single_slot(store: Any) -> None:
    sender = TimedSender(0.05, ok=False)
    dispatcher = Dispatcher(store, {"http": sender}, no_queue_policy, concurrency=64, timeout=30)
    await store.enqueue([delivery(SLOW, n) for n in range(40)])
    dispatcher.start()
    try:
        await until(lambda: sender.attempts >= 8, within=10)
        assert dispatcher.share(SLOW) == 1
        first = sender.most[SLOW]
        sender.most[SLOW] = 0
        await asyncio.sleep(0.3)
        assert first == PER_SUBSCRIBER
        assert sender.most[SLOW] <= 1
    finally:
        await dispatcher.stop()


async def test_stop_ends_the_loop_even_when_a_wake_up_races_with_it(store: Any) -> None:
    """A stop that arrives in the same turn as a wake-up still ends the loop (asyncio's
    ``wait_for`` of Python 3.11 swallows a cancellation that races with its result)."""
    for turns in range(8):
        dispatcher = Dispatcher(store, {}, no_queue_policy, concurrency=4, timeout=30)
        dispatcher.start()
        await until(lambda: len(store.claims) > 0)
        for _ in range(4):  # let the loop settle into its idle wait
            await asyncio.sleep(0)
        store.claims.clear()
        dispatcher.wake()
        for _ in range(turns):
            await asyncio.sleep(0)
        await asyncio.wait_for(dispatcher.stop(), 10)
