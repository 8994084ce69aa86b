"""The store's collections in one database, their indexes, and the per-queue seq counters."""

from __future__ import annotations

import contextlib
import uuid

from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.message_svc.storage.base import StaleQueue
from services.message_svc.storage.mongodb._connection import Document, MongoOptions
from services.message_svc.storage.mongodb._documents import (
    PENDING_WINDOW,
    WRITER_BEAT,
    WRITER_GONE,
    as_date,
    counter_id,
    readable_bound,
    reserve,
)

# The most ranges kept to settle later; beyond it a range waits out PENDING_WINDOW. (While a
# server is away, one call at a time reaches it and the others fail before they reserve
# anything: services/common/store_edge.py.)
UNSETTLED_MAX = 10_000


class Collections:
    """``messages``, ``claims``, ``message_counters``, ``queue_versions``, and for FIFO queues
    ``message_groups`` and ``dedup_ids`` (schema in ``_documents.py``).

    All four read from the primary, whatever the URI's ``readPreference``: claims, deletes by
    claim, version checks and listings (whose seq bound and messages must come from one
    up-to-date copy) act on what they read. Only ``messages_relaxed`` follows the URI, for
    reads that may lag behind the last write (a message by id, the queue's stats).
    """

    def __init__(self, options: MongoOptions, client: AsyncMongoClient[Document]) -> None:
        database = options.database_on(client)
        self.messages: AsyncCollection[Document] = database["messages"]
        self.claims: AsyncCollection[Document] = database["claims"]
        self.counters: AsyncCollection[Document] = database["message_counters"]
        self.versions: AsyncCollection[Document] = database["queue_versions"]
        self.groups: AsyncCollection[Document] = database["message_groups"]
        self.dedup: AsyncCollection[Document] = database["dedup_ids"]
        # Who writes: one id per store, noted alive every WRITER_BEAT (_documents.py).
        self.writers: AsyncCollection[Document] = database["message_writers"]
        self.writer = str(uuid.uuid4())
        relaxed = options.database_on(client, primary=False)
        self.messages_relaxed: AsyncCollection[Document] = relaxed["messages"]
        # Ranges whose settle the server did not answer: token -> (project, queue).
        self.unsettled: dict[str, tuple[str, str]] = {}

    async def create_indexes(self) -> None:
        """Idempotent; run at every open."""
        m, c = self.messages, self.claims
        await m.create_index([("p", ASCENDING), ("q", ASCENDING), ("s", ASCENDING)],
                             unique=True, name="queue_seq")
        await m.create_index([("k", ASCENDING)], name="claim")
        await m.create_index([("e", ASCENDING)], name="expiry")
        await m.create_index([("ea", ASCENDING)], expireAfterSeconds=0, name="expiry_ttl")
        # A group's messages by seq; with g null, the messages without a group by seq (what
        # a FIFO claim takes besides the groups' heads, never walking a group's backlog).
        await m.create_index(
            [("p", ASCENDING), ("q", ASCENDING), ("g", ASCENDING), ("s", ASCENDING)],
            name="queue_group_seq",
        )
        # Fair queues (fair.py): a group's in-flight messages, and the queue's with a group.
        await m.create_index(
            [("p", ASCENDING), ("q", ASCENDING), ("f", ASCENDING), ("x", ASCENDING)],
            partialFilterExpression={"f": {"$type": "string"}}, name="queue_fair_held",
        )
        await m.create_index(
            [("p", ASCENDING), ("q", ASCENDING), ("x", ASCENDING)],
            partialFilterExpression={"f": {"$type": "string"}}, name="queue_fair_in_flight",
        )
        # The group index of fair claims: a group's messages by seq (fair.py, _from_index).
        await m.create_index(
            [("p", ASCENDING), ("q", ASCENDING), ("f", ASCENDING), ("s", ASCENDING)],
            partialFilterExpression={"f": {"$type": "string"}}, name="queue_fair_seq",
        )
        # Messages posted with a dedup id: one per dedup id and generation in a queue.
        await m.create_index(
            [("p", ASCENDING), ("q", ASCENDING), ("d", ASCENDING), ("dg", ASCENDING)],
            unique=True, partialFilterExpression={"d": {"$type": "string"}}, name="queue_dedup",
        )
        await c.create_index([("p", ASCENDING), ("q", ASCENDING)], name="queue")
        await c.create_index([("e", ASCENDING)], name="expiry")
        await c.create_index([("ea", ASCENDING)], expireAfterSeconds=0, name="expiry_ttl")
        g, d = self.groups, self.dedup
        await g.create_index([("p", ASCENDING), ("q", ASCENDING), ("r", ASCENDING)],
                             name="queue_ready")
        await g.create_index([("p", ASCENDING), ("q", ASCENDING), ("w", ASCENDING)],
                             name="queue_wake")
        await d.create_index([("e", ASCENDING)], name="expiry")
        await d.create_index([("ea", ASCENDING)], expireAfterSeconds=0, name="expiry_ttl")
        await self.writers.create_index([("ea", ASCENDING)], expireAfterSeconds=0,
                                        name="expiry_ttl")

    async def beat(self, now: float) -> None:
        """Notes that this writer is alive. Its note outlives it by PENDING_WINDOW, past which
        its ranges are settled whoever wrote them.

        Raises:
            PyMongoError: the server did not answer.
        """
        await self.writers.update_one(
            {"_id": self.writer},
            {"$set": {"at": now, "ea": as_date(now + PENDING_WINDOW)}}, upsert=True,
        )

    async def leave(self) -> None:
        """Deletes this writer's note (a clean stop): a range it could not settle is then
        settled by the next sweep of another replica.

        Raises:
            PyMongoError: the server did not answer.
        """
        await self.writers.delete_one({"_id": self.writer})

    async def abandoned(self, now: float) -> list[tuple[str, str, list[Document]]]:
        """(project, queue, pending entries) of the ranges to settle as abandoned: those
        ``PENDING_WINDOW`` old, and those at least ``2 * WRITER_BEAT`` old of a writer not
        heard from for ``WRITER_GONE``, or whose note is gone (it stopped cleanly; a writer
        notes itself before it takes a range, so a note the server lost is back within a beat).
        """
        candidates = await self.counters.find(
            {"pending": {"$elemMatch": {"at": {"$lt": now - 2 * WRITER_BEAT}}}}, {"pending": 1}
        ).to_list()
        named = {entry["w"] for counter in candidates for entry in counter["pending"]
                 if entry.get("w") is not None}
        alive = set()
        if named:
            async for doc in self.writers.find(
                {"_id": {"$in": sorted(named)}, "at": {"$gte": now - WRITER_GONE}}, {"_id": 1}
            ):
                alive.add(doc["_id"])
        found = []
        for counter in candidates:
            entries = [
                entry for entry in counter["pending"]
                if entry["at"] < now - PENDING_WINDOW
                or (entry["at"] < now - 2 * WRITER_BEAT
                    and entry.get("w") is not None and entry["w"] not in alive)
            ]
            if entries:
                found.append((counter["_id"]["p"], counter["_id"]["q"], entries))
        return found

    async def reserve(self, project: str, queue: str, count: int, now: float) -> tuple[int, str]:
        """(first seq, token) of ``count`` new consecutive seqs of the queue, marked pending.

        The caller must :meth:`settle` the token once the messages are written (or not). Should
        the server not answer, the range may have been taken all the same: it is settled later
        (:meth:`settle_later`), since the caller wrote nothing in it.
        """
        token = str(uuid.uuid4())
        while True:
            try:
                counter = await self.counters.find_one_and_update(
                    {"_id": counter_id(project, queue)}, reserve(count, token, now, self.writer),
                    upsert=True, return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                continue  # two first writers of a queue raced to create its counter
            except BaseException:
                self.settle_later(project, queue, token)
                raise
            # An upsert answers with the document it wrote; should a server answer nothing,
            # the range it took (if any) is a harmless gap, and its pending entry carries
            # this token too, so settle() clears both.
            if counter is not None:
                return int(counter["n"]) - count + 1, token

    async def settle(self, project: str, queue: str, *tokens: str) -> bool:
        """The pending ranges of ``tokens`` are written, or abandoned. Whether one was still
        pending: not when a sweep took its writer for gone and settled it first (listings may
        then have gone past its seqs), or when an earlier attempt was applied unanswered."""
        result = await self.counters.update_one(
            {"_id": counter_id(project, queue)},
            {"$pull": {"pending": {"t": {"$in": list(tokens)}}}},
        )
        return result.modified_count > 0

    async def settle_or_later(self, project: str, queue: str, token: str) -> bool:
        """:meth:`settle`, or, should the server not answer, :meth:`settle_later`. False only
        when the server answered that the range was no longer pending.

        Only for a range that leaves nothing for the sweeper's pass over abandoned ranges to
        finish (hidden messages, groups not yet noted): a plain post's, whatever became of its
        writes, or any post's once it is done.
        """
        try:
            return await self.settle(project, queue, token)
        except PyMongoError:
            self.settle_later(project, queue, token)
            return True
        except BaseException:  # cancelled: the range is done with all the same
            self.settle_later(project, queue, token)
            raise

    def settle_later(self, project: str, queue: str, token: str) -> None:
        """Remember ``token``'s range for :meth:`settle_unsettled`: listings stop below a
        pending range, so leaving it to expire would hold them back for ``PENDING_WINDOW``
        after the server is back."""
        if len(self.unsettled) < UNSETTLED_MAX:
            self.unsettled[token] = (project, queue)

    async def settle_unsettled(self) -> None:
        """Settle the ranges :meth:`settle_later` kept (the sweeper calls it first).

        Raises:
            PyMongoError: the server did not answer; what is left is tried next time.
        """
        for token, (project, queue) in list(self.unsettled.items()):
            await self.settle(project, queue, token)
            del self.unsettled[token]

    async def version(self, project: str, queue: str) -> int:
        """The queue's version (0 when never bumped): one ``find_one`` by ``_id``."""
        doc = await self.versions.find_one({"_id": counter_id(project, queue)}, {"v": 1})
        return 0 if doc is None else int(doc["v"])

    async def bump_version(self, project: str, queue: str) -> int:
        """Raises the queue's version by one (one atomic ``$inc``) and returns it.

        The ``$inc`` does not upsert: an upsert that loses the race to create the document
        may be applied yet answered with nothing (as SecantusDB does), and trying it again
        would count that bump twice. A queue's first bump creates the document at 0 first.
        """
        key = {"_id": counter_id(project, queue)}
        while True:
            doc = await self.versions.find_one_and_update(
                key, {"$inc": {"v": 1}}, return_document=ReturnDocument.AFTER
            )
            if doc is not None:
                return int(doc["v"])
            with contextlib.suppress(DuplicateKeyError):  # another bump created it first
                await self.versions.update_one(key, {"$setOnInsert": {"v": 0}}, upsert=True)

    async def check_version(self, project: str, queue: str, version: int) -> None:
        """Raises StaleQueue unless the queue is at ``version`` (one ``find_one``).

        NOTE: MongoDB gives no atomicity across the version document and the messages here,
        so the check is a read right before the write it guards: a bump acknowledged before
        the check is always seen, and one acknowledged while the operation is under way may
        order either side of it, which is allowed since the two are then concurrent.
        """
        current = await self.version(project, queue)
        if current != version:
            raise StaleQueue(current)

    async def readable_bound(self, project: str, queue: str, now: float) -> int:
        """The highest seq below which every message of the queue is completely written."""
        counter = await self.counters.find_one(
            {"_id": counter_id(project, queue)}, {"n": 1, "pending": 1}
        )
        return readable_bound(counter, now)
