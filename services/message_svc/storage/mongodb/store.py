"""The MongoDB message store, with standard driver calls only (see ``_documents.py``).

MongoDB makes single documents atomic, not groups of them, so every guarantee of the contract
that spans messages is built from single-document conditions:

* A claim (or pop) reads candidate ids, then takes each with a ``find_one_and_update``
  (``find_one_and_delete``) whose filter repeats "claimable", so a message two claimers both
  saw goes to exactly one of them (``claims.py``).
* A delete with claim rules is one ``delete_one`` whose filter is the rule.
* Seqs come from a per-queue counter (``find_one_and_update``), with the pending-range
  bookkeeping that keeps listings from stepping over a batch still being written.
* A queue's version is one document (``queue_versions``), raised with ``$inc``. A post or
  claim given a version reads it first (one more ``find_one`` round trip) and goes ahead only
  when it matches; see ``Collections.check_version``.
* FIFO queues: deduplication ids and message groups in documents of their own, a group taken
  by a claim with one ``find_one_and_update`` and its messages then one by one as above
  (``fifo.py``, ``groups.py``). A delete, bulk delete or release of messages with a group
  settles their groups afterwards, so a group freed by its consumer is ready at once.

Writes are acknowledged by a majority of the replica set, journaled (``w=majority, j=true``
unless the URI says otherwise). Every read that a write or a claim depends on goes to the
primary; only a message by id and the stats follow the URI's ``readPreference``
(``_collections.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import textwrap
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from bson import Binary
from pymongo import ASCENDING, UpdateOne
from pymongo.errors import PyMongoError

from services.common.errors import Unavailable
from services.common.metrics import PENDING_RANGES_SETTLED
from services.message_svc.storage import base
from services.message_svc.storage.base import (
    Capabilities,
    Claim,
    ClaimResult,
    DeadLetterPolicy,
    DeleteOutcome,
    FairPolicy,
    FifoPosted,
    NewMessage,
    QueueStats,
    StoredMessage,
)
from services.message_svc.storage.mongodb import claims, fifo, groups, once
from services.message_svc.storage.mongodb import fair as fair_claims
from services.message_svc.storage.mongodb._collections import Collections
from services.message_svc.storage.mongodb._connection import (
    Document,
    MongoOptions,
    connect,
    describe,
    edge,
    parse,
)
from services.message_svc.storage.mongodb._documents import (
    PENDING_WINDOW,
    WRITER_BEAT,
    WRITER_GONE,
    as_date,
    to_message,
)

log = logging.getLogger(__name__)

GC_BATCH = 5000
# Seconds a clean close waits for the server to take this writer's note away.
LEAVE_TIMEOUT = 2.0
# Attempts at a delete whose outcome changed between its write and its read-back (a claim
# expiring or being released in between); each retry sees a newer state.
DELETE_ATTEMPTS = 5


def _new_id() -> str:
    return str(uuid.uuid4())


class MongoMessageStore(base.MessageStore):
    """:class:`services.message_svc.storage.base.MessageStore` on MongoDB."""

    capabilities = Capabilities(durable=True, shared=True, fifo=True, fair=True)

    def __init__(self, options: MongoOptions, now: Callable[[], float] = time.time) -> None:
        self.options = options
        self._now = now
        self._client: Any = None
        self._collections: Collections | None = None
        self._turns = claims.QueueLocks()
        self._beating: asyncio.Task[None] | None = None

    @classmethod
    def from_uri(cls, uri: str, now: Callable[[], float] = time.time) -> MongoMessageStore:
        """Raises: ConfigurationError, naming what is wrong with ``uri``."""
        return cls(parse(uri), now=now)

    @property
    def address(self) -> str:
        return self.options.address

    async def open(self) -> None:
        """Connect to the server the URI names and put the indexes in place.

        Raises:
            Unavailable: the server cannot be reached or refuses the indexes.
        """
        client = connect(self.options)
        try:
            await client.admin.command("ping")
            collections = Collections(self.options, client)
            await collections.create_indexes()
            await once.create_indexes(collections)
            await collections.beat(self._now())
        except PyMongoError as exc:
            await client.close()
            # The driver's message goes on to describe the whole topology: keep its start.
            detail = textwrap.shorten(str(exc), 200, placeholder=" ...")
            raise Unavailable(
                f"Cannot open the message store at {self.address}: {describe(exc)} ({detail})."
            ) from exc
        self._client, self._collections = client, collections
        self._beating = asyncio.create_task(self._beat(collections))

    async def _beat(self, collections: Collections) -> None:
        """Notes every WRITER_BEAT that this writer is alive, while the store is open."""
        while True:
            await asyncio.sleep(WRITER_BEAT)
            try:
                await collections.beat(self._now())
            except PyMongoError as exc:  # the server is away: the calls say so
                log.debug("message store: cannot note the writer alive: %s", describe(exc))

    async def close(self) -> None:
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating
            self._beating = None
        if self._client is not None:
            client, collections = self._client, self._collections
            self._client, self._collections = None, None
            if collections is not None:
                with contextlib.suppress(PyMongoError, TimeoutError):
                    await asyncio.wait_for(collections.leave(), LEAVE_TIMEOUT)
            await client.close()

    def _db(self) -> Collections:
        if self._collections is None:
            raise Unavailable("The message store is closed.")
        return self._collections

    # Queue versions -------------------------------------------------------------------------

    @edge("read the queue's version")
    async def queue_version(self, project: str, queue: str) -> int:
        return await self._db().version(project, queue)

    @edge("raise the queue's version")
    async def bump_queue_version(self, project: str, queue: str) -> int:
        return await self._db().bump_version(project, queue)

    # Messages -------------------------------------------------------------------------------

    @edge("store the messages")
    async def post(
        self,
        project: str,
        queue: str,
        client_id: str,
        messages: Sequence[NewMessage],
        version: int | None = None,
    ) -> tuple[str, ...]:
        db = self._db()
        if version is not None:
            await db.check_version(project, queue, version)
        now = self._now()
        ids = tuple(_new_id() for _ in messages)
        docs = [
            {"_id": mid, "p": project, "q": queue, "b": Binary(m.body), "t": m.ttl, "c": now,
             "e": now + m.ttl, "ea": as_date(now + m.ttl), "v": now + m.delay, "i": client_id,
             "k": None, "x": 0.0, "n": 0, **({} if m.group_id is None else {"f": m.group_id})}
            for mid, m in zip(ids, messages, strict=True)
        ]
        if not docs:
            return ids
        first, token = await db.reserve(project, queue, len(docs), now)
        for seq, doc in enumerate(docs, start=first):
            doc["s"] = seq
        try:
            await db.messages.insert_many(docs, ordered=True)
        except BaseException:
            # All or nothing: take back whatever part of the batch was written (as far as the
            # server lets us), then report the original failure. What the server did not let
            # us take back was stored without an answer (at least once); either way the range
            # is done with.
            with contextlib.suppress(PyMongoError):
                await db.messages.delete_many({"_id": {"$in": list(ids)}})
            await db.settle_or_later(project, queue, token)
            raise
        # The messages are stored: a settle the server does not answer is no reason to fail
        # the post (and have it sent again); the sweeper settles the range.
        if not await db.settle_or_later(project, queue, token):
            await self._renumber(db, project, queue, ids)
        return ids

    async def _renumber(
        self, db: Collections, project: str, queue: str, ids: Sequence[str]
    ) -> None:
        """Gives a post's stored messages new seqs at the end of the queue, because its range
        was no longer pending when the post settled it: a sweep took this writer for gone
        (it was not heard from for WRITER_GONE, stalled in the middle of the post) and settled
        it, so listings may have gone past those seqs. Claims took the messages all along;
        should the server fail this, they stay where they are (a reader paging by marker past
        them may not list them)."""
        PENDING_RANGES_SETTLED.labels("moved").inc()
        log.warning(
            "message store: a post to %s/%s was held up for longer than %g s; its %d "
            "message(s) move to the end of the queue, past what listings may have shown",
            project, queue, WRITER_GONE, len(ids),
        )
        try:
            now = self._now()
            await db.beat(now)
            first, token = await db.reserve(project, queue, len(ids), now)
            try:
                await db.messages.bulk_write(
                    [UpdateOne({"_id": mid}, {"$set": {"s": seq}})
                     for seq, mid in enumerate(ids, start=first)],
                    ordered=False,
                )
            finally:
                await db.settle_or_later(project, queue, token)
        except PyMongoError as exc:
            log.warning("message store: the messages of that post keep their seqs: %s",
                        describe(exc))

    @edge("store the messages")
    async def post_fifo(
        self,
        project: str,
        queue: str,
        client_id: str,
        messages: Sequence[NewMessage],
        *,
        dedup_window: int,
        version: int | None = None,
    ) -> FifoPosted:
        return await fifo.post_fifo(
            self._db(), project, queue, client_id, messages, self._now(), dedup_window, version
        )

    @edge("store the message")
    async def post_once(
        self,
        project: str,
        queue: str,
        client_id: str,
        key: str,
        message: NewMessage,
        *,
        remember: int,
        version: int | None = None,
    ) -> tuple[str, bool]:
        return await once.post_once(
            self._db(), project, queue, client_id, key, message, self._now(), remember, version
        )

    @edge("list the messages")
    async def list_messages(
        self,
        project: str,
        queue: str,
        *,
        limit: int,
        after: int | None = None,
        client_id: str = "",
        echo: bool = True,
        include_claimed: bool = False,
        include_delayed: bool = False,
    ) -> list[StoredMessage]:
        db = self._db()
        now = self._now()
        # The bound is read before the messages: whatever lies below it is completely written.
        bound = await db.readable_bound(project, queue, now)
        seq: Document = {"$lte": bound}
        if after is not None:
            seq["$gt"] = after
        query: Document = {"p": project, "q": queue, "s": seq, "e": {"$gt": now}, **once.SHOWN}
        if not include_claimed:
            query["x"] = {"$lte": now}
        if not include_delayed:
            query["v"] = {"$lte": now}
        if not echo and client_id:
            query["i"] = {"$ne": client_id}
        docs = await db.messages.find(query).sort("s", ASCENDING).limit(limit).to_list()
        return [to_message(doc, now) for doc in docs]

    @edge("read the message")
    async def get(self, project: str, queue: str, message_id: str) -> StoredMessage | None:
        now = self._now()
        doc = await self._db().messages_relaxed.find_one(
            {"_id": message_id, "p": project, "q": queue, "e": {"$gt": now}}
        )
        return None if doc is None else to_message(doc, now)

    @edge("read the messages")
    async def get_many(
        self, project: str, queue: str, message_ids: Sequence[str]
    ) -> list[StoredMessage]:
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return []
        now = self._now()
        docs = await self._db().messages_relaxed.find(
            {"_id": {"$in": ids}, "p": project, "q": queue, "e": {"$gt": now}}
        ).sort("s", ASCENDING).to_list()
        return [to_message(doc, now) for doc in docs]

    @edge("delete the message")
    async def delete(
        self, project: str, queue: str, message_id: str, claim_id: str | None = None
    ) -> DeleteOutcome:
        messages = self._db().messages
        now = self._now()
        found: Document = {"_id": message_id, "p": project, "q": queue, "e": {"$gt": now}}
        rule: Document = (
            {"x": {"$lte": now}} if claim_id is None
            else {"k": claim_id, "x": {"$gt": now}}
        )
        outcome = DeleteOutcome.ABSENT
        for _ in range(DELETE_ATTEMPTS):
            deleted = await messages.find_one_and_delete({**found, **rule}, projection={"g": 1})
            if deleted is not None:
                if deleted.get("g") is not None:
                    await groups.settle(self._db(), project, queue, deleted["g"], now)
                return DeleteOutcome.DELETED
            doc = await messages.find_one(found, {"k": 1, "x": 1})
            if doc is None:
                return DeleteOutcome.ABSENT
            holder = doc["k"] if doc["x"] > now else None
            if claim_id is None:
                outcome = DeleteOutcome.CLAIMED
                if holder is not None:
                    return outcome
            else:
                outcome = (
                    DeleteOutcome.NOT_CLAIMED if holder is None
                    else DeleteOutcome.CLAIMED_BY_OTHER
                )
                if holder != claim_id:
                    return outcome
        return outcome

    @edge("delete the messages")
    async def delete_many(
        self,
        project: str,
        queue: str,
        message_ids: Sequence[str],
        claim_ids: Sequence[str] | None = None,
    ) -> int:
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return 0
        now = self._now()
        query: Document = {"_id": {"$in": ids}, "p": project, "q": queue, "e": {"$gt": now}}
        if claim_ids is not None:
            query["$or"] = [{"x": {"$lte": now}}, {"k": {"$in": list(claim_ids)}}]
        db = self._db()
        touched = await groups.of_messages(db, query)
        deleted = int((await db.messages.delete_many(query)).deleted_count)
        await groups.settle_all(db, project, queue, touched, now)
        return deleted

    @edge("pop messages")
    async def pop(self, project: str, queue: str, limit: int) -> list[StoredMessage]:
        now, pop_id = self._now(), _new_id()
        async with self._turns.hold(project, queue):
            docs = await claims.pop(self._db(), project, queue, limit, now)
        return [to_message(doc, now, claim_id=pop_id) for doc in docs]

    @edge("pop messages")
    async def pop_fifo(self, project: str, queue: str, limit: int) -> list[StoredMessage]:
        now, pop_id = self._now(), _new_id()
        async with self._turns.hold(project, queue):
            docs = await fifo.pop_fifo(self._db(), project, queue, pop_id, limit, now)
        return [to_message(doc, now, claim_id=pop_id) for doc in docs]

    @edge("read the queue's stats")
    async def stats(self, project: str, queue: str) -> QueueStats:
        now = self._now()
        cursor = await self._db().messages_relaxed.aggregate([
            {"$match": {"p": project, "q": queue, "e": {"$gt": now}}},
            {"$sort": {"s": 1}},
            {"$group": {
                "_id": None,
                "total": {"$sum": 1},
                "claimed": {"$sum": {"$cond": [{"$gt": ["$x", now]}, 1, 0]}},
                "oldest": {"$first": "$$ROOT"},
                "newest": {"$last": "$$ROOT"},
            }},
        ])
        found = await cursor.to_list()
        if not found:
            return QueueStats(claimed=0, free=0, total=0, oldest=None, newest=None)
        total, claimed = int(found[0]["total"]), int(found[0]["claimed"])
        return QueueStats(
            claimed=claimed, free=total - claimed, total=total,
            oldest=to_message(found[0]["oldest"], now),
            newest=to_message(found[0]["newest"], now),
        )

    @edge("read when the queue's next message frees up")
    async def next_free_at(self, project: str, queue: str) -> float | None:
        now, db = self._now(), self._db()
        times = []
        for query, field in (
            ({"p": project, "q": queue, "e": {"$gt": now}, "v": {"$gt": now}}, "v"),
            ({"p": project, "q": queue, "e": {"$gt": now}}, "e"),
        ):
            collection = db.messages if field == "v" else db.claims
            doc = await collection.find_one(query, {field: 1}, sort=[(field, 1)])
            if doc is not None:
                times.append(float(doc[field]))
        return min(times) if times else None

    @edge("delete the queue's messages")
    async def delete_queue(self, project: str, queue: str) -> None:
        db = self._db()
        # Claims first: a claim left without messages is harmless, the reverse is not.
        await db.claims.delete_many({"p": project, "q": queue})
        await db.messages.delete_many({"p": project, "q": queue})
        await db.groups.delete_many({"p": project, "q": queue})
        await db.dedup.delete_many({"_id.p": project, "_id.q": queue})

    # Claims ---------------------------------------------------------------------------------

    @edge("claim messages")
    async def claim(
        self,
        project: str,
        queue: str,
        *,
        limit: int,
        ttl: int,
        grace: int,
        dead_letter: DeadLetterPolicy | None = None,
        version: int | None = None,
        fair: FairPolicy | None = None,
    ) -> ClaimResult:
        db = self._db()
        now, claim_id = self._now(), _new_id()
        futile = False
        async with self._turns.hold(project, queue):
            # Checked once this claim's turn has come, right before it takes anything.
            if version is not None:
                await db.check_version(project, queue, version)
            if fair is not None:
                docs, dead, futile = await fair_claims.claim(
                    db, project, queue, claim_id, now,
                    limit=limit, ttl=ttl, grace=grace, dead_letter=dead_letter, policy=fair,
                )
            else:
                docs, dead = await claims.claim(
                    db, project, queue, claim_id, now,
                    limit=limit, ttl=ttl, grace=grace, dead_letter=dead_letter,
                )
        if not docs:
            return ClaimResult(claim=None, dead_lettered=dead)
        claim_expires = now + ttl
        return ClaimResult(
            claim=Claim(
                id=claim_id, ttl=ttl, grace=grace, created=now, expires=claim_expires,
                messages=tuple(to_message(doc, now) for doc in docs),
            ),
            dead_lettered=dead,
            futile=futile,
        )

    @edge("claim messages")
    async def claim_fifo(
        self,
        project: str,
        queue: str,
        *,
        limit: int,
        ttl: int,
        grace: int,
        dead_letter: DeadLetterPolicy | None = None,
        version: int | None = None,
    ) -> ClaimResult:
        db = self._db()
        now, claim_id = self._now(), _new_id()
        async with self._turns.hold(project, queue):
            if version is not None:
                await db.check_version(project, queue, version)
            docs, dead = await fifo.claim_fifo(
                db, project, queue, claim_id, now,
                limit=limit, ttl=ttl, grace=grace, dead_letter=dead_letter,
            )
        if not docs:
            return ClaimResult(claim=None, dead_lettered=dead)
        return ClaimResult(
            claim=Claim(
                id=claim_id, ttl=ttl, grace=grace, created=now, expires=now + ttl,
                messages=tuple(to_message(doc, now) for doc in docs),
            ),
            dead_lettered=dead,
        )

    @edge("read the claim")
    async def get_claim(self, project: str, queue: str, claim_id: str) -> Claim | None:
        db = self._db()
        now = self._now()
        doc, held = await asyncio.gather(
            db.claims.find_one({"_id": claim_id, "p": project, "q": queue, "e": {"$gt": now}}),
            db.messages.find(
                {"k": claim_id, "p": project, "q": queue, "x": {"$gt": now}, "e": {"$gt": now}}
            ).sort("s", ASCENDING).to_list(),
        )
        if doc is None:
            return None
        return Claim(
            id=claim_id, ttl=int(doc["t"]), grace=int(doc["g"]), created=float(doc["c"]),
            expires=float(doc["e"]), messages=tuple(to_message(m, now) for m in held),
        )

    @edge("renew the claim")
    async def renew_claim(
        self, project: str, queue: str, claim_id: str, *, ttl: int, grace: int
    ) -> bool:
        return await claims.renew(
            self._db(), project, queue, claim_id, self._now(), ttl=ttl, grace=grace
        )

    @edge("release the claim")
    async def release_claim(self, project: str, queue: str, claim_id: str) -> None:
        db = self._db()
        held: Document = {"k": claim_id, "p": project, "q": queue}
        touched = await groups.of_messages(db, held)
        await asyncio.gather(
            db.claims.delete_one({"_id": claim_id, "p": project, "q": queue}),
            db.messages.update_many(held, {"$set": {"k": None, "x": 0.0}}),
        )
        # After the messages are free: the groups they held become ready at once.
        await groups.settle_all(db, project, queue, touched, self._now())

    # Garbage --------------------------------------------------------------------------------

    @edge("collect expired messages and claims")
    async def collect_garbage(self) -> int:
        db = self._db()
        now = self._now()
        removed = 0
        for collection in (db.messages, db.claims, once.keys(db), db.dedup):
            while True:
                expired = await collection.find(
                    {"e": {"$lte": now}}, {"_id": 1}
                ).limit(GC_BATCH).to_list()
                if not expired:
                    break
                result = await collection.delete_many(
                    {"_id": {"$in": [doc["_id"] for doc in expired]}, "e": {"$lte": now}}
                )
                removed += result.deleted_count
                if len(expired) < GC_BATCH:
                    break
        await db.settle_unsettled()
        await self._settle_abandoned(db, now)
        return removed

    async def _settle_abandoned(self, db: Collections, now: float) -> None:
        """Settles the seq ranges of posts and moves that were abandoned (``Collections.
        abandoned``: their writer gone, or too old): finishes their hidden messages
        (``fifo.finish_abandoned``) and settles the groups of messages they wrote before they
        noted their groups, then drops the ranges, so listings go past them."""
        for project, queue, entries in await db.abandoned(now):
            for entry in entries:
                span: Document = {"s": {"$gte": entry["f"], "$lte": entry["l"]}}
                # Hidden FIFO messages of a post that died before showing them.
                await fifo.finish_abandoned(db, project, queue, span, now)
                touched = await groups.of_messages(db, {"p": project, "q": queue, **span})
                await groups.settle_all(db, project, queue, touched, now)
            await db.settle(project, queue, *(entry["t"] for entry in entries))
            for entry in entries:
                why = "expired" if entry["at"] < now - PENDING_WINDOW else "writer_gone"
                PENDING_RANGES_SETTLED.labels(why).inc()
