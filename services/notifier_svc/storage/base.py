"""The storage contract of notifier_svc: subscriptions, the outbox of pending deliveries, and
what lets watchers work across replicas (a registry of watched queues and a feed of events).

Every backend (``sqlite``, ``redis``, ``mongodb``) implements :class:`NotifierStore` and is
checked by one contract suite (``tests/contract/test_subscription_store.py``). Methods return
the frozen dataclasses below, never dicts or protobuf messages.

Conventions shared by every method:

* Tenancy: a subscription belongs to one ``(project, queue)``; methods that take both never
  read or change a subscription of another project or queue, even when given its id.
* Time: the store reads the time from the ``now`` function it was built with (Unix seconds),
  once per operation. A subscription is *expired* once ``now >= expires``; an expired
  subscription is never returned, listed, updated, confirmed or counted as a duplicate,
  whether or not :meth:`NotifierStore.collect_garbage` has removed it yet.
* Ids: subscription and delivery ids are made by the store (:func:`new_id`: time-ordered
  UUID text, so listing by id lists by creation).
* The outbox: a delivery is stored (durably, once :meth:`NotifierStore.enqueue` returns)
  before the hand-over is acknowledged, and stays until :meth:`NotifierStore.complete`
  removes it (delivered, or given up). A delivery taken by :meth:`NotifierStore.claim_due`
  is leased: it is not handed out again until the lease ends, so a worker that dies
  mid-delivery (a crash, SIGKILL) loses nothing: the delivery comes back when its lease
  ends. Deliveries are therefore *at least once*. A worker that outlived its lease (the
  delivery may have been claimed again since) can no longer reschedule it: see
  :meth:`NotifierStore.reschedule`'s ``leased_until``.
* Watchers across replicas: every replica of notifier_svc holds its own watchers (streams of
  ``NotifierInternal.Watch``); the store says which replicas watch which queue (entries that
  expire unless refreshed, so a replica that dies leaves nothing for long) and carries the
  notifications one replica receives for a queue watched on another (the *watch feed*, a
  bounded, short-lived log of :class:`WatchEvent`, read from a cursor). Both are best effort:
  see :meth:`NotifierStore.read_watch_events` for what a reader may miss.

Errors: a backend raises the ``services.common.errors`` classes documented per method and
turns its own driver failures into :class:`services.common.errors.Unavailable` at its edge.
"""

from __future__ import annotations

import asyncio
import builtins
import enum
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.common.errors import QuotaExceeded, quota_exceeded

_last_id = 0

WatchKey = tuple[str, str]
"""A watched queue: (project, queue)."""

# The watch feed: how often a backend that cannot block looks for new events, the age at which
# collect_garbage removes events, and how many events are kept at most (backends read it as
# ``base.FEED_MAX_EVENTS`` when they trim, so that a test may lower it).
FEED_POLL = 0.05
FEED_RETENTION = 60.0
FEED_MAX_EVENTS = 1000
# MongoDB only (a sequence number is taken before its event is written): how long a reader
# waits for an event whose number is taken, before it skips it.
FEED_GAP_GRACE = 2.0


def new_id(now: float | None = None) -> str:
    """A UUID-formatted id whose first 48 bits are the time in milliseconds (UUIDv7 layout),
    so that ids sort by creation; the rest is random. Ids made by one process strictly
    increase, even within a millisecond (ties in due time are broken by id)."""
    global _last_id
    millis = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis << 80) | (0x7 << 76) | (rand & ((1 << 76) - 1))
    value = (value & ~(0xC << 60)) | (0x8 << 60)  # RFC 4122 variant bits
    if value <= _last_id and value >> 80 == _last_id >> 80:
        # Same millisecond: count up from the last id (the low 62 random bits are room).
        value = _last_id + 1
    _last_id = value
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@dataclass(frozen=True, slots=True)
class Subscription:
    """A live subscription of one queue."""

    id: str
    project: str
    queue: str
    subscriber: str
    """``http(s)://…``, ``mailto:…`` or ``trust+http(s)://…``."""
    ttl: int
    options: Mapping[str, Any]
    """The JSON object as given, key order preserved."""
    confirmed: bool
    created: float
    expires: float
    """``created + ttl``, or the time of the last TTL update + the new ttl."""


class DeliveryKind(enum.StrEnum):
    """What a delivery carries."""

    NOTIFICATION = "Notification"
    SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
    UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """One document for one subscription, as handed to :meth:`NotifierStore.enqueue`.

    ``subscriber`` and ``options`` are the subscription's at hand-over time: a delivery goes
    where the subscription pointed when the message was accepted.
    """

    subscription_id: str
    project: str
    queue: str
    subscriber: str
    options: Mapping[str, Any]
    kind: DeliveryKind
    document: bytes
    """The JSON document to send (a notification: the message with ``Message_Type`` and
    ``queue_name``)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A pending delivery as stored."""

    id: str
    subscription_id: str
    project: str
    queue: str
    subscriber: str
    options: Mapping[str, Any]
    kind: DeliveryKind
    document: bytes
    attempts: int
    """Attempts made so far (0 for a fresh delivery)."""
    due: float
    """When it may be (re)tried; while leased, when the lease ends."""
    created: float


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """Messages that one replica was handed (one ``NotifyMany`` call's, of one queue) for a
    queue watched on another replica, as carried by the watch feed."""

    origin: str
    """The replica that published it (its readers skip their own events)."""
    project: str
    queue: str
    payload: bytes
    """The messages and when they were accepted, opaque to the store (a serialized
    ``zaqar.v2.NotifyManyRequest``)."""


def over_quota(project: str, queue: str, quota: int) -> QuotaExceeded:
    """The error of a new subscription beyond ``quota``."""
    return quota_exceeded(f"Queue {queue} of project {project}", quota, "subscriptions",
                          "ZAQAR_QUEUE_MAX_SUBSCRIPTIONS")


class NotifierStore(Protocol):
    """Subscriptions and pending deliveries. Every method is atomic on its own and durable
    once it returns, unless its docstring says otherwise."""

    async def open(self) -> None:
        """Connect, create the schema or indexes when needed. Called once before any other
        method.

        Raises:
            Unavailable: a networked store cannot be reached.
            ConfigurationError: an embedded store cannot be opened.
        """

    async def close(self) -> None:
        """Release connections. Idempotent; later calls fail with Unavailable."""

    # subscriptions ---------------------------------------------------------------------------

    async def create(
        self,
        project: str,
        queue: str,
        subscriber: str,
        ttl: int,
        options: Mapping[str, Any],
        *,
        quota: int = 0,
    ) -> tuple[Subscription, bool]:
        """Subscribe ``subscriber`` to the queue, unconfirmed, expiring ``ttl`` seconds from now.

        Atomic and unique per ``(project, queue, subscriber)``: when a live subscription with
        that subscriber exists, nothing changes and it is returned; of concurrent creates of
        one absent subscription exactly one creates it. An expired one with the same
        subscriber is replaced (its pending deliveries go with it).

        ``quota`` (0: none) is the most live subscriptions the queue may have: a new one
        beyond it is not made (expired ones not yet swept do not count). Checked in the same
        atomic step as the insert, so creates racing at the quota never go beyond it (on
        MongoDB, the queue's lease makes the count and the insert one step,
        ``services/common/mongo_lease.py``).

        Returns:
            The subscription, and True when it was created by this call.

        Raises:
            QuotaExceeded: the subscription would be new and the queue has ``quota`` live
                ones already.
        """
        ...

    async def get(self, project: str, queue: str, subscription_id: str) -> Subscription | None:
        """The live subscription, or None (absent, expired, or of another project/queue)."""
        ...

    async def list(
        self, project: str, queue: str, *, limit: int, marker: str = ""
    ) -> list[Subscription]:
        """Up to ``limit`` (>= 1) live subscriptions of the queue in id order (creation order),
        only ids sorting strictly after ``marker`` (which need not exist)."""
        ...

    async def subscribers(self, project: str, queue: str) -> builtins.list[Subscription]:
        """Every live subscription of the queue, in id order (for fan-out)."""
        ...

    async def update(
        self,
        project: str,
        queue: str,
        subscription_id: str,
        *,
        subscriber: str | None = None,
        ttl: int | None = None,
        options: Mapping[str, Any] | None = None,
        confirmed: bool | None = None,
    ) -> Subscription:
        """Change the given fields (``None`` = unchanged) of a live subscription, atomically.

        A new ``ttl`` restarts the subscription's life: it expires ``ttl`` seconds from now.
        Pending deliveries keep the subscriber and options they were stored with.

        Raises:
            SubscriptionNotFound: no such live subscription in this project and queue.
            SubscriptionAlreadyExists: ``subscriber`` is that of another live subscription of
                the queue (nothing is changed).
        """
        ...

    async def confirm(
        self, project: str, queue: str, subscription_id: str, confirmed: bool
    ) -> Subscription:
        """Set the confirmed flag of a live subscription (idempotent).

        Raises:
            SubscriptionNotFound: no such live subscription in this project and queue.
        """
        ...

    async def delete(self, project: str, queue: str, subscription_id: str) -> bool:
        """Delete the subscription and its pending deliveries. Idempotent.

        Returns:
            True when it existed (expired or not).
        """
        ...

    async def delete_queue(self, project: str, queue: str) -> int:
        """Delete every subscription of the queue (expired ones too) and their pending
        deliveries.

        Returns:
            How many subscriptions were removed.
        """
        ...

    async def purge_deliveries(self, project: str, queue: str) -> int:
        """Remove the pending deliveries of every subscription of the queue (expired ones
        too); the subscriptions stay. A delivery being made meanwhile may still be made once;
        it cannot be rescheduled (:meth:`reschedule` answers False).

        Returns:
            How many deliveries were removed.
        """
        ...

    async def collect_garbage(self) -> int:
        """Remove expired subscriptions with their pending deliveries, and deliveries whose
        subscription is gone; also expired watch entries and watch events older than
        ``FEED_RETENTION`` seconds. Not atomic as a whole; each removal is.

        Returns:
            How many subscriptions and deliveries were removed (watch entries and events are
            not counted).
        """
        ...

    # the outbox ------------------------------------------------------------------------------

    async def enqueue(self, deliveries: Sequence[NewDelivery]) -> int:
        """Store the deliveries, due now with no attempts made, durably and all at once.

        A delivery whose subscription does not exist (any more) is skipped. (On MongoDB, which
        has no multi-document atomicity here, one whose subscription is deleted concurrently
        may be stored; :meth:`collect_garbage` removes it.)

        Returns:
            How many were stored.
        """
        ...

    async def claim_due(
        self,
        *,
        limit: int,
        lease: float,
        per_subscriber: int,
        busy: Mapping[str, int] | None = None,
    ) -> builtins.list[Delivery]:
        """Lease up to ``limit`` deliveries whose due time has come, earliest due first.

        No subscriber gets more than ``per_subscriber`` minus ``busy[subscriber]`` (deliveries
        the caller is already making to it; negative to give a subscriber more than
        ``per_subscriber``), so one slow subscriber cannot take every slot,
        and however large a subscriber's backlog, other subscribers' due deliveries are taken
        (see :class:`ClaimShares`).
        Each returned delivery's ``due`` becomes ``now + lease`` in the store (the returned
        value shows it); until then no other claim returns it. Atomic per delivery: two
        concurrent claims never return the same delivery.
        """
        ...

    async def reschedule(
        self,
        delivery_id: str,
        *,
        due: float,
        attempts: int,
        leased_until: float | None = None,
    ) -> bool:
        """Record a failed attempt: the delivery is due again at ``due`` with ``attempts``.

        With ``leased_until`` (the ``due`` that the caller's :meth:`claim_due` returned), only
        while the delivery is still under that lease, atomically: a worker whose lease ended
        and whose delivery another claim has taken since must not move that claim's lease
        (a third claim would then make the delivery while the second still does).

        Returns:
            False when the delivery is gone (its subscription was deleted meanwhile), or is
            no longer under the lease ``leased_until``; nothing changed then.
        """
        ...

    async def complete(self, delivery_id: str) -> None:
        """Remove the delivery (delivered, or given up). Idempotent."""

    async def next_due(self) -> float | None:
        """The earliest due time of any pending delivery, leased ones included; None when
        the outbox is empty."""
        ...

    async def count_deliveries(self, subscription_id: str | None = None) -> int:
        """Pending deliveries, all or of one subscription."""
        ...

    # watchers across replicas ----------------------------------------------------------------

    async def keep_watching(
        self, replica: str, keys: Sequence[WatchKey], ttl: float
    ) -> builtins.list[WatchKey]:
        """Record that ``replica`` has watchers of each queue of ``keys``, until ``ttl``
        seconds from now (an entry that exists gets the new expiry). Atomic per key.

        Returns:
            The keys, in the given order, of which ``replica`` had no live entry before the
            call (new, expired, or removed meanwhile): other replicas may have answered that
            nobody listens to those queues.
        """
        ...

    async def stop_watching(
        self, replica: str, keys: Sequence[WatchKey] | None = None
    ) -> None:
        """Remove the entries of ``replica`` for ``keys`` (None: all of them). Idempotent."""
        ...

    async def watchers(self, project: str, queue: str) -> builtins.list[str]:
        """The replicas with a live entry (``now < expires``) for the queue, sorted."""
        ...

    async def publish_watch_event(self, event: WatchEvent) -> None:
        """Append the event to the watch feed. Readers whose cursor was taken before this call
        began read it (unless they fall more than ``FEED_MAX_EVENTS`` events or
        ``FEED_RETENTION`` seconds behind)."""
        ...

    async def watch_feed_end(self) -> str:
        """A cursor after every event published so far: reading from it returns the events
        published later."""
        ...

    async def read_watch_events(
        self, cursor: str, *, limit: int, wait: float = 0.0
    ) -> tuple[builtins.list[WatchEvent], str]:
        """Up to ``limit`` (>= 1) events published after ``cursor`` (one this store gave), in
        feed order, and the cursor after them.

        When there is none, waits up to ``wait`` seconds (real time) for one: a backend that
        cannot block on the store looks again every ``FEED_POLL`` seconds. No event then:
        ``([], cursor)``.

        Feed order is publication order: events published one after the other are read in
        that order (on MongoDB, an event whose sequence number was taken but whose write is
        not visible yet holds the later ones back for up to ``FEED_GAP_GRACE`` seconds and is
        skipped after that). Events removed before they were read (more than
        ``FEED_MAX_EVENTS`` behind, or older than ``FEED_RETENTION``) are skipped silently.
        """
        ...


async def poll_feed(
    read: Callable[[], Awaitable[tuple[builtins.list[WatchEvent], str]]],
    cursor: str,
    wait: float,
    interval: float = FEED_POLL,
) -> tuple[builtins.list[WatchEvent], str]:
    """:meth:`NotifierStore.read_watch_events` for a backend that cannot block: ``read``
    every ``interval`` seconds until it returns events or ``wait`` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        events, after = await read()
        left = deadline - loop.time()
        if events or left <= 0:
            return events, after
        await asyncio.sleep(min(interval, left))


class ClaimShares:
    """How many deliveries one :meth:`NotifierStore.claim_due` may still take: ``limit`` in
    all, and per subscriber ``per_subscriber`` minus ``busy[subscriber]`` minus what this
    claim took already. Written once for every backend.

    Backends claim by *lane* (the pending deliveries of one subscriber): they visit the lanes
    with due work, earliest due first, and take up to :meth:`room` from each; so the work of
    a claim depends on the number of lanes, never on the size of any one subscriber's backlog,
    and a dead subscriber's backlog cannot hide another subscriber's due work.
    """

    def __init__(
        self, limit: int, per_subscriber: int, busy: Mapping[str, int] | None = None
    ) -> None:
        self.left = max(0, limit)
        self._per_subscriber = per_subscriber
        self._taken: dict[str, int] = dict(busy or {})

    def room(self, subscriber: str) -> int:
        return max(0, min(self.left, self._per_subscriber - self._taken.get(subscriber, 0)))

    def took(self, subscriber: str, count: int) -> None:
        self._taken[subscriber] = self._taken.get(subscriber, 0) + count
        self.left -= count

    def saturated(self) -> builtins.list[str]:
        """Subscribers this claim can take nothing more of (for a backend's lane filter)."""
        return sorted(s for s, n in self._taken.items() if n >= self._per_subscriber)
