"""Subscriptions and the delivery outbox in MongoDB: one document per subscription, one per
pending delivery.

Documents::

    subscriptions: {"_id": id, "p": project, "q": queue, "u": subscriber, "t": ttl,
                    "o": options as JSON text, "c": confirmed, "cr": created, "e": expires}
                   unique index (p, q, u); index (p, q, _id); index e
    deliveries:    {"_id": id, "s": subscription id, "p", "q", "u", "o", "k": kind,
                    "b": document (bytes), "a": attempts, "d": due, "cr": created}
                   index d; index s

Every change of one document is atomic. Changes spanning documents are ordered so that a
crash between them leaves nothing visible wrong: a subscription is deleted before its
deliveries (an orphan delivery is removed by ``collect_garbage``), a lease is a
compare-and-set on the due time, so concurrent claims never take the same delivery.
With a quota, a subscription is made under its queue's lease, in the ``leases`` collection
(``services/common/mongo_lease.py``): the count of live ones and the insert are one step.
The watch registry and feed are in ``watches.py``.
"""

from __future__ import annotations

import builtins
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from bson import Binary
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.common.errors import (
    SubscriptionAlreadyExists,
    SubscriptionNotFound,
    Unavailable,
)
from services.common.mongo_lease import Lease, Leases
from services.common.store_edge import contended
from services.notifier_svc.storage.base import (
    ClaimShares,
    Delivery,
    DeliveryKind,
    NewDelivery,
    Subscription,
    new_id,
    over_quota,
)
from services.notifier_svc.storage.mongodb._connection import (
    STORE,
    Document,
    MongoOptions,
    connect,
    describe,
    edge,
    parse,
)
from services.notifier_svc.storage.mongodb.watches import MongoWatches

# Attempts of one write that loses a race (a concurrent create of the same subscriber).
MAX_ATTEMPTS = 100


def _json(options: Mapping[str, Any]) -> str:
    return orjson.dumps(options).decode()


def _subscription(doc: Document) -> Subscription:
    return Subscription(
        id=doc["_id"], project=doc["p"], queue=doc["q"], subscriber=doc["u"], ttl=int(doc["t"]),
        options=orjson.loads(doc["o"]), confirmed=bool(doc["c"]), created=float(doc["cr"]),
        expires=float(doc["e"]),
    )


def _delivery(doc: Document, due: float | None = None) -> Delivery:
    return Delivery(
        id=doc["_id"], subscription_id=doc["s"], project=doc["p"], queue=doc["q"],
        subscriber=doc["u"], options=orjson.loads(doc["o"]), kind=DeliveryKind(doc["k"]),
        document=bytes(doc["b"]), attempts=int(doc["a"]),
        due=float(doc["d"]) if due is None else due, created=float(doc["cr"]),
    )


class MongoNotifierStore(MongoWatches):
    """:class:`services.notifier_svc.storage.base.NotifierStore` on MongoDB."""

    def __init__(self, options: MongoOptions, now: Callable[[], float] = time.time) -> None:
        self.options = options
        self._now = now
        self._subs: AsyncCollection[Document] | None = None
        self._deliveries: AsyncCollection[Document] | None = None

    @classmethod
    def from_uri(cls, uri: str, now: Callable[[], float] = time.time) -> MongoNotifierStore:
        return cls(parse(uri), now)

    @property
    def address(self) -> str:
        return self.options.address

    def _collections(self) -> tuple[AsyncCollection[Document], AsyncCollection[Document]]:
        if self._subs is None or self._deliveries is None:
            raise Unavailable("The notifier store is closed.")
        return self._subs, self._deliveries

    async def open(self) -> None:
        client = connect(self.options)
        try:
            await client.admin.command("ping")
            # Every read here feeds a write (a lease, a delivery, a watch): from the primary.
            database = self.options.database_on(client)
            subs, deliveries = database["subscriptions"], database["deliveries"]
            await subs.create_index(
                [("p", ASCENDING), ("q", ASCENDING), ("u", ASCENDING)], unique=True,
                name="project_queue_subscriber",
            )
            await subs.create_index(
                [("p", ASCENDING), ("q", ASCENDING), ("_id", ASCENDING)], name="queue_order"
            )
            await subs.create_index([("e", ASCENDING)], name="expires")
            await deliveries.create_index([("d", ASCENDING)], name="due")
            # (u, d) and not (u, d, _id): SecantusDB drops the inclusive bound of a range
            # on the middle key of a three-key index.
            await deliveries.create_index([("u", ASCENDING), ("d", ASCENDING)], name="lane")
            await deliveries.create_index([("s", ASCENDING)], name="subscription")
            await self._open_watches(database)
        except PyMongoError as exc:
            await client.close()
            detail = textwrap.shorten(str(exc), 200, placeholder=" ...")
            raise Unavailable(
                f"Cannot open the notifier store at {self.address}: {describe(exc)} ({detail})."
            ) from exc
        self._subs, self._deliveries = subs, deliveries

    async def close(self) -> None:
        if self._subs is not None:
            client = self._subs.database.client
            self._subs = self._deliveries = self._watch_collections = None
            await client.close()

    async def _remove(self, subscription_ids: Sequence[str]) -> int:
        """Delete subscriptions (first) and then their deliveries; how many items went."""
        if not subscription_ids:
            return 0
        subs, deliveries = self._collections()
        gone = await subs.delete_many({"_id": {"$in": list(subscription_ids)}})
        orphans = await deliveries.delete_many({"s": {"$in": list(subscription_ids)}})
        return gone.deleted_count + orphans.deleted_count

    # subscriptions ---------------------------------------------------------------------------

    @edge("create the subscription")
    async def create(
        self, project: str, queue: str, subscriber: str, ttl: int, options: Mapping[str, Any],
        *, quota: int = 0,
    ) -> tuple[Subscription, bool]:
        if not quota:
            return await self._create(project, queue, subscriber, ttl, options, 0)
        # The queue's lease (services/common/mongo_lease.py): held, the count of its live
        # subscriptions and the insert are one step.
        leases = Leases(lambda: self._collections()[0].database, STORE)
        async with leases.held(
            ("subscriptions", project, queue), "create the subscription"
        ) as lease:
            made, created = await self._create(project, queue, subscriber, ttl, options, quota)
            if created:
                await self._fence(lease, made, quota)
            return made, created

    async def _fence(self, lease: Lease, made: Subscription, quota: int) -> None:
        """After the insert the lease guarded: when the lease was taken over meanwhile (its
        holder stalled) and the queue now has more live subscriptions than ``quota``, delete
        the one just made and raise QuotaExceeded (``services/common/mongo_lease``)."""
        subs, _ = self._collections()
        live = {"p": made.project, "q": made.queue, "e": {"$gt": self._now()}}
        if not await lease.overrun(subs, live, quota):
            return
        await self._remove([made.id])
        raise over_quota(made.project, made.queue, quota)

    async def _create(
        self, project: str, queue: str, subscriber: str, ttl: int, options: Mapping[str, Any],
        quota: int,
    ) -> tuple[Subscription, bool]:
        subs, _ = self._collections()
        for _ in range(MAX_ATTEMPTS):
            now = self._now()
            found = await subs.find_one({"p": project, "q": queue, "u": subscriber})
            if found is not None and float(found["e"]) > now:
                return _subscription(found), False
            # The count stops at the quota.
            if quota and await subs.count_documents(
                {"p": project, "q": queue, "e": {"$gt": now}}, limit=quota
            ) >= quota:
                raise over_quota(project, queue, quota)
            if found is not None:
                # Expired: only that very document goes (a live re-creation must stay).
                result = await subs.delete_one({"_id": found["_id"], "e": {"$lte": now}})
                if result.deleted_count:
                    await self._remove([found["_id"]])
                continue
            doc: Document = {
                "_id": new_id(now), "p": project, "q": queue, "u": subscriber, "t": ttl,
                "o": _json(options), "c": False, "cr": now, "e": now + ttl,
            }
            try:
                await subs.insert_one(doc)
            except DuplicateKeyError:
                continue  # a concurrent create won: read it on the next turn
            return _subscription(doc), True
        raise contended(STORE, "create the subscription")

    @edge("read the subscription")
    async def get(self, project: str, queue: str, subscription_id: str) -> Subscription | None:
        subs, _ = self._collections()
        found = await subs.find_one(
            {"_id": subscription_id, "p": project, "q": queue, "e": {"$gt": self._now()}}
        )
        return None if found is None else _subscription(found)

    @edge("list the subscriptions")
    async def list(
        self, project: str, queue: str, *, limit: int, marker: str = ""
    ) -> list[Subscription]:
        subs, _ = self._collections()
        query: Document = {"p": project, "q": queue, "e": {"$gt": self._now()}}
        if marker:
            query["_id"] = {"$gt": marker}
        cursor = subs.find(query).sort("_id", ASCENDING).limit(limit)
        return [_subscription(doc) async for doc in cursor]

    @edge("read the subscriptions")
    async def subscribers(self, project: str, queue: str) -> builtins.list[Subscription]:
        subs, _ = self._collections()
        cursor = subs.find({"p": project, "q": queue, "e": {"$gt": self._now()}})
        return [_subscription(doc) async for doc in cursor.sort("_id", ASCENDING)]

    @edge("update the subscription")
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
        subs, _ = self._collections()
        for _ in range(MAX_ATTEMPTS):
            now = self._now()
            changes: Document = {}
            if subscriber is not None:
                changes["u"] = subscriber
                other = await subs.find_one({"p": project, "q": queue, "u": subscriber})
                if other is not None and other["_id"] != subscription_id:
                    if float(other["e"]) > now:
                        raise SubscriptionAlreadyExists()
                    result = await subs.delete_one({"_id": other["_id"], "e": {"$lte": now}})
                    if result.deleted_count:
                        await self._remove([other["_id"]])
            if ttl is not None:
                changes.update({"t": ttl, "e": now + ttl})
            if options is not None:
                changes["o"] = _json(options)
            if confirmed is not None:
                changes["c"] = confirmed
            query = {"_id": subscription_id, "p": project, "q": queue, "e": {"$gt": now}}
            try:
                if changes:
                    updated = await subs.update_one(query, {"$set": changes})
                    if updated.matched_count == 0:
                        raise SubscriptionNotFound(subscription_id=subscription_id)
                found = await subs.find_one(query)
            except DuplicateKeyError:
                continue  # the subscriber was taken meanwhile: look again
            if found is None:
                raise SubscriptionNotFound(subscription_id=subscription_id)
            return _subscription(found)
        raise contended(STORE, "update the subscription")

    async def confirm(
        self, project: str, queue: str, subscription_id: str, confirmed: bool
    ) -> Subscription:
        return await self.update(project, queue, subscription_id, confirmed=confirmed)

    @edge("delete the subscription")
    async def delete(self, project: str, queue: str, subscription_id: str) -> bool:
        subs, deliveries = self._collections()
        result = await subs.delete_one({"_id": subscription_id, "p": project, "q": queue})
        if result.deleted_count:
            await deliveries.delete_many({"s": subscription_id})
        return result.deleted_count == 1

    @edge("delete the queue's subscriptions")
    async def delete_queue(self, project: str, queue: str) -> int:
        subs, deliveries = self._collections()
        ids = [doc["_id"] async for doc in subs.find({"p": project, "q": queue}, {"_id": True})]
        if not ids:
            return 0
        result = await subs.delete_many({"_id": {"$in": ids}})
        await deliveries.delete_many({"s": {"$in": ids}})
        return result.deleted_count

    @edge("remove the queue's deliveries")
    async def purge_deliveries(self, project: str, queue: str) -> int:
        subs, deliveries = self._collections()
        ids = [doc["_id"] async for doc in subs.find({"p": project, "q": queue}, {"_id": True})]
        if not ids:
            return 0
        result = await deliveries.delete_many({"s": {"$in": ids}})
        return result.deleted_count

    @edge("remove expired subscriptions")
    async def collect_garbage(self) -> int:
        subs, deliveries = self._collections()
        now = self._now()
        expired = [doc["_id"] async for doc in subs.find({"e": {"$lte": now}}, {"_id": True})]
        removed = await self._remove(expired)
        referenced = await deliveries.distinct("s")
        if referenced:
            alive = {
                doc["_id"]
                async for doc in subs.find({"_id": {"$in": referenced}}, {"_id": True})
            }
            missing = [sid for sid in referenced if sid not in alive]
            if missing:
                result = await deliveries.delete_many({"s": {"$in": missing}})
                removed += result.deleted_count
        await self._collect_watches()
        return removed

    # the outbox ------------------------------------------------------------------------------

    @edge("store the notifications")
    async def enqueue(self, deliveries: Sequence[NewDelivery]) -> int:
        if not deliveries:
            return 0
        subs, outbox = self._collections()
        now = self._now()
        wanted = sorted({d.subscription_id for d in deliveries})
        live = {doc["_id"] async for doc in subs.find({"_id": {"$in": wanted}}, {"_id": True})}
        docs = [
            {"_id": new_id(now), "s": d.subscription_id, "p": d.project, "q": d.queue,
             "u": d.subscriber, "o": _json(d.options), "k": d.kind.value,
             "b": Binary(d.document), "a": 0, "d": now, "cr": now}
            for d in deliveries if d.subscription_id in live
        ]
        if docs:
            await outbox.insert_many(docs, ordered=True)
        return len(docs)

    @edge("take due notifications")
    async def claim_due(
        self,
        *,
        limit: int,
        lease: float,
        per_subscriber: int,
        busy: Mapping[str, int] | None = None,
    ) -> builtins.list[Delivery]:
        _, outbox = self._collections()
        now = self._now()
        until = now + lease
        shares = ClaimShares(limit, per_subscriber, busy)
        lanes = await outbox.aggregate([
            {"$match": {"d": {"$lte": now}, "u": {"$nin": shares.saturated()}}},
            {"$group": {"_id": "$u", "d": {"$min": "$d"}}},
            {"$sort": {"d": ASCENDING, "_id": ASCENDING}},
        ])
        claimed: list[tuple[float, str, Delivery]] = []
        async for lane in lanes:
            subscriber = lane["_id"]
            room = shares.room(subscriber)
            if room <= 0:
                if shares.left <= 0:
                    break
                continue
            while room > 0:
                candidates = [c async for c in outbox.find(
                    {"u": subscriber, "d": {"$lte": now}}, {"_id": True, "d": True}
                ).sort([("d", ASCENDING), ("_id", ASCENDING)]).limit(room)]
                if not candidates:
                    break
                for candidate in candidates:
                    # Compare-and-set on the due time read: of concurrent claims, one takes
                    # it; the others look for the lane's next ones (taken ones are no longer
                    # due, so the loop ends).
                    doc = await outbox.find_one_and_update(
                        {"_id": candidate["_id"], "d": candidate["d"]}, {"$set": {"d": until}}
                    )
                    if doc is not None:
                        shares.took(subscriber, 1)
                        claimed.append(
                            (float(candidate["d"]), doc["_id"], _delivery(doc, due=until))
                        )
                room = shares.room(subscriber)
        await lanes.close()
        return [delivery for *_, delivery in sorted(claimed, key=lambda c: c[:2])]

    @edge("reschedule a notification")
    async def reschedule(
        self,
        delivery_id: str,
        *,
        due: float,
        attempts: int,
        leased_until: float | None = None,
    ) -> bool:
        _, outbox = self._collections()
        query: Document = {"_id": delivery_id}
        if leased_until is not None:
            query["d"] = leased_until
        result = await outbox.update_one(query, {"$set": {"d": due, "a": attempts}})
        return result.matched_count == 1

    @edge("remove a notification")
    async def complete(self, delivery_id: str) -> None:
        _, outbox = self._collections()
        await outbox.delete_one({"_id": delivery_id})

    @edge("read the notifications")
    async def next_due(self) -> float | None:
        _, outbox = self._collections()
        doc = await outbox.find_one({}, {"d": True}, sort=[("d", ASCENDING)])
        return None if doc is None else float(doc["d"])

    @edge("count notifications")
    async def count_deliveries(self, subscription_id: str | None = None) -> int:
        _, outbox = self._collections()
        query = {} if subscription_id is None else {"s": subscription_id}
        return int(await outbox.count_documents(query))
