"""The dispatcher: takes due deliveries from the outbox and makes them, a bounded number at
once, retrying failed ones on their subscription's (or queue's) retry policy.

* Each claim leases its deliveries for ``timeout + lease_margin`` seconds (the margin:
  :data:`LEASE_MARGIN` unless set), longer than one
  attempt can take: an attempt gets ``timeout`` seconds in all, whatever its sender's own
  timeouts (an SMTP exchange is several), and is abandoned as failed after that. So while
  replicas on one store live, no delivery is made by two of them at once: another replica
  claims it only once the lease has ended, by when the first has given up its attempt; and a
  replica that outlived its lease anyway (a store write slower than the margin, clocks of
  replicas further apart than it) cannot move the next claim's lease, as reschedules name
  their own (``leased_until``). A delivery is removed from the store only once it was
  delivered (or its policy gave up), so a replica killed mid-delivery loses nothing: the
  delivery comes back when its lease ends and any replica makes it (at-least-once: one that
  was delivered but not yet removed when its replica died is made again).
* At most ``concurrency`` deliveries run at once, and to each subscriber at most its *share*:
  ``PER_SUBSCRIBER`` at first, one more after each delivered attempt (up to
  ``PER_SUBSCRIBER_MAX``), halved after each failed one (down to 1) — additive increase,
  multiplicative decrease. A healthy subscriber gets enough deliveries in flight to keep up
  with a steady stream of posts; a slow or dead one soon holds a single slot.
* A failed attempt is rescheduled in the store at ``now + retry_delay(policy, attempts)``
  (see :mod:`services.notifier_svc.retry`); the dispatcher sleeps until the earliest due time
  or until new work is handed over.
* On stop, running deliveries get ``grace`` seconds; those still running are cancelled and
  made due at once, so that the next start takes them up without waiting for their lease.
* With pools, the outbox is several stores (the own one and each pool's notifier store open
  now, ``stores``): each claim visits them in turn, starting one further each time, and a
  delivery is completed or rescheduled in the store it was claimed from, under the same lease
  rules. A store that fails is skipped (its deliveries wait) while the others are served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from services.common import metrics
from services.common.config import DELIVERY_LEASE_MARGIN
from services.common.errors import Unavailable
from services.common.sweeper import Periodic
from services.notifier_svc import retry
from services.notifier_svc.documents import is_sealed_notification
from services.notifier_svc.storage.base import Delivery, NotifierStore

log = logging.getLogger(__name__)

PER_SUBSCRIBER = 4
PER_SUBSCRIBER_MAX = 32
# Subscribers whose share is remembered at most (beyond that, shares start again at 4).
MAX_SHARES = 1_000
LEASE_MARGIN = DELIVERY_LEASE_MARGIN
# Longest sleep when nothing is due: a bound on how late work stored by another replica
# (or a lease that ended) is noticed.
IDLE_POLL = 1.0
STORE_RETRY = 1.0


def _count(delivery: Delivery, outcome: str) -> None:
    """One attempt's outcome in ``zaqar_notifier_deliveries`` (``common/metrics.py``)."""
    metrics.DELIVERIES.labels(delivery.kind.value, outcome).inc()


# Seconds between two samples of the outbox depth (``zaqar_notifier_outbox_depth``).
DEPTH_INTERVAL = 15.0


Stores = Callable[[], Sequence[NotifierStore]]
"""The stores of the outbox open now (notifier_svc's own store first)."""


class OutboxDepth(Periodic):
    """Samples how many deliveries wait in the outbox into ``zaqar_notifier_outbox_depth``
    every ``interval`` seconds (one count per store: all replicas' deliveries)."""

    def __init__(
        self, store: NotifierStore, interval: float = DEPTH_INTERVAL,
        stores: Stores | None = None,
    ) -> None:
        super().__init__(interval)
        self._stores = stores or (lambda: [store])

    async def tick(self) -> None:
        try:
            total = 0
            for store in self._stores():
                total += await store.count_deliveries()
            metrics.OUTBOX_DEPTH.set(total)
        except Unavailable as exc:
            log.debug("outbox depth not sampled: %s", exc.description)
        except Exception:
            log.exception("outbox depth not sampled")


class Sender(Protocol):
    async def send(self, delivery: Delivery) -> bool:
        """Make one attempt; True when delivered."""
        ...


QueuePolicy = Callable[[str, str], Awaitable[Any]]
Opener = Callable[[Delivery], Awaitable[Delivery | None]]
"""Makes a delivery whose document is sealed ready to send (message_svc opens the body); None
when it cannot be opened (the attempt fails); raises ``Unavailable`` when message_svc cannot
be reached (the delivery stays pending)."""


class Dispatcher:
    def __init__(
        self,
        store: NotifierStore,
        senders: dict[str, Sender],
        queue_policy: QueuePolicy,
        *,
        concurrency: int,
        timeout: float,
        lease_margin: float = LEASE_MARGIN,
        clock: Callable[[], float] = time.time,
        opener: Opener | None = None,
        stores: Stores | None = None,
    ) -> None:
        """``stores``: the outbox's stores (default: ``store`` alone)."""
        self._opener = opener
        self._stores: Stores = stores or (lambda: [store])
        self._turn = 0
        self._senders = senders
        self._queue_policy = queue_policy
        self._concurrency = max(1, concurrency)
        self._timeout = timeout
        self._lease = timeout + lease_margin
        self._clock = clock
        self._wake = asyncio.Event()
        self._busy: Counter[str] = Counter()
        self._shares: dict[str, int] = {}
        self._running: dict[asyncio.Task[None], tuple[NotifierStore, Delivery]] = {}
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.ensure_future(self._run())

    def wake(self, subscribers: Iterable[str] | None = None) -> None:
        """New deliveries were stored: look at once.

        Given the subscribers the new deliveries go to, the store is not looked at when none
        of them could be taken now (each of those subscribers already has its share of
        deliveries running here, or every slot is taken): a finishing delivery wakes the
        dispatcher anyway. So a hanging subscriber costs no store query per post.
        """
        if subscribers is not None and not self._claimable(subscribers):
            return
        self._wake.set()

    def _claimable(self, subscribers: Iterable[str]) -> bool:
        if len(self._running) >= self._concurrency:
            return False
        return any(self._busy.get(s, 0) < self.share(s) for s in subscribers)

    def share(self, subscriber: str) -> int:
        """How many deliveries to ``subscriber`` may run at once now."""
        return self._shares.get(subscriber, PER_SUBSCRIBER)

    def _adjust_share(self, subscriber: str, delivered: bool) -> None:
        share = self.share(subscriber)
        share = min(PER_SUBSCRIBER_MAX, share + 1) if delivered else max(1, share // 2)
        if share == PER_SUBSCRIBER:
            self._shares.pop(subscriber, None)
            return
        if len(self._shares) >= MAX_SHARES and subscriber not in self._shares:
            self._shares.clear()
        self._shares[subscriber] = share

    async def stop(self, grace: float = 0) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None
        if self._running and grace > 0:
            await asyncio.wait(list(self._running), timeout=grace)
        unfinished = dict(self._running)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        now = self._clock()
        for store, delivery in unfinished.values():
            try:
                await store.reschedule(
                    delivery.id, due=now, attempts=delivery.attempts, leased_until=delivery.due
                )
            except Unavailable:
                pass  # its lease ends anyway

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                claimed = await self._claim()
                if claimed:
                    continue
                delay = await self._idle_delay()
            except Unavailable as exc:
                log.warning("notifier store unavailable, deliveries wait: %s", exc.description)
                delay = STORE_RETRY
            # NOTE: not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation (stop)
            # that arrives in the same turn as the wake-up, and the loop would never end.
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _in_turn(self) -> list[NotifierStore]:
        """The outbox's stores, starting one further at each call (no store waits behind
        the others' work)."""
        stores = list(self._stores())
        self._turn = (self._turn + 1) % max(1, len(stores))
        return stores[self._turn:] + stores[:self._turn]

    async def _claim(self) -> int:
        """Claim from each store in turn while slots are free.

        Raises:
            Unavailable: every store failed.
        """
        stores = self._in_turn()
        claimed = failures = 0
        for store in stores:
            try:
                claimed += await self._claim_from(store)
            except Unavailable as exc:
                failures += 1
                if failures == len(stores):
                    raise
                log.warning("an outbox store is unavailable, its deliveries wait: %s",
                            exc.description)
        return claimed

    async def _claim_from(self, store: NotifierStore) -> int:
        free = self._concurrency - len(self._running)
        if free <= 0:
            return 0
        # The store applies one per-subscriber bound; a subscriber's own share is expressed as
        # a busy count relative to it (negative when the share is larger).
        busy = {s: n - (self.share(s) - PER_SUBSCRIBER) for s, n in self._busy.items() if n > 0}
        for subscriber, share in self._shares.items():
            busy.setdefault(subscriber, PER_SUBSCRIBER - share)
        claimed = await store.claim_due(
            limit=free, lease=self._lease, per_subscriber=PER_SUBSCRIBER,
            busy={s: n for s, n in busy.items() if n},
        )
        for delivery in claimed:
            self._busy[delivery.subscriber] += 1
            task = asyncio.ensure_future(self._deliver(store, delivery))
            self._running[task] = (store, delivery)
            task.add_done_callback(self._finished)
        return len(claimed)

    async def _idle_delay(self) -> float:
        """Until the earliest due delivery of any store, at most ``IDLE_POLL``.

        Raises:
            Unavailable: every store failed.
        """
        due: float | None = None
        stores = self._stores()
        failures = 0
        for store in stores:
            try:
                when = await store.next_due()
            except Unavailable:
                failures += 1
                if failures == len(stores):
                    raise
                continue
            if when is not None and (due is None or when < due):
                due = when
        if due is None:
            return IDLE_POLL
        wait = due - self._clock()
        # Due but not claimable (its subscriber is saturated): a finishing delivery wakes us.
        return IDLE_POLL if wait <= 0 else min(wait, IDLE_POLL)

    def _finished(self, task: asyncio.Task[None]) -> None:
        _, delivery = self._running.pop(task)
        self._busy[delivery.subscriber] -= 1
        if self._busy[delivery.subscriber] <= 0:
            del self._busy[delivery.subscriber]
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery %s failed unexpectedly", delivery.id, exc_info=task.exception())
        self._wake.set()

    def _sender(self, delivery: Delivery) -> Sender | None:
        return self._senders.get(urlsplit(delivery.subscriber).scheme)

    async def _attempt(self, sender: Sender, delivery: Delivery) -> bool:
        """One attempt, abandoned (failed) once it has taken ``timeout`` seconds: it must end
        well before its lease does, or another replica could make the delivery meanwhile."""
        try:
            async with asyncio.timeout(self._timeout):
                if self._opener is not None and is_sealed_notification(delivery.document):
                    opened = await self._opener(delivery)
                    if opened is None:
                        return False
                    delivery = opened
                return await sender.send(delivery)
        except TimeoutError:
            log.info("delivery %s to %s abandoned after %.1f s", delivery.id,
                     delivery.subscriber, self._timeout)
            return False

    async def _deliver(self, store: NotifierStore, delivery: Delivery) -> None:
        sender = self._sender(delivery)
        if sender is None:
            log.warning("no sender for %s; delivery %s dropped", delivery.subscriber, delivery.id)
            _count(delivery, "no_sender")
            await store.complete(delivery.id)
            return
        try:
            delivered = await self._attempt(sender, delivery)
            self._adjust_share(delivery.subscriber, delivered)
            if delivered:
                _count(delivery, "delivered")
                await store.complete(delivery.id)
                return
            policy = retry.effective_policy(
                delivery.options.get("_retry_policy"),
                await self._queue_policy(delivery.project, delivery.queue),
            )
            delay = retry.retry_delay(policy, delivery.attempts)
            if delay is None:
                log.warning(
                    "giving up on %s for %s after %d attempts", delivery.kind.value,
                    delivery.subscriber, delivery.attempts + 1,
                )
                _count(delivery, "gave_up")
                await store.complete(delivery.id)
                return
            _count(delivery, "retry")
            await store.reschedule(
                delivery.id, due=self._clock() + delay, attempts=delivery.attempts + 1,
                leased_until=delivery.due,
            )
        except Unavailable as exc:
            # Still leased in the store: it comes back when the lease ends.
            _count(delivery, "pending")
            log.warning("delivery %s left pending: %s", delivery.id, exc.description)
