"""The store's collections in one database, their indexes, and the per-queue seq counters."""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from services.message_svc.storage.mongodb._connection import Document
from services.message_svc.storage.mongodb._documents import counter_id, readable_bound, reserve


class Collections:
    """``messages``, ``claims`` and ``message_counters`` (schema in ``_documents.py``)."""

    def __init__(self, database: Any) -> None:
        self.messages: AsyncCollection[Document] = database["messages"]
        self.claims: AsyncCollection[Document] = database["claims"]
        self.counters: AsyncCollection[Document] = database["message_counters"]

    async def create_indexes(self) -> None:
        """Idempotent; run at every open."""
        m, c = self.messages, self.claims
        await m.create_index([("p", ASCENDING), ("q", ASCENDING), ("s", ASCENDING)],
                             unique=True, name="queue_seq")
        await m.create_index([("k", ASCENDING)], name="claim")
        await m.create_index([("e", ASCENDING)], name="expiry")
        await m.create_index([("ea", ASCENDING)], expireAfterSeconds=0, name="expiry_ttl")
        await c.create_index([("p", ASCENDING), ("q", ASCENDING)], name="queue")
        await c.create_index([("e", ASCENDING)], name="expiry")
        await c.create_index([("ea", ASCENDING)], expireAfterSeconds=0, name="expiry_ttl")

    async def reserve(self, project: str, queue: str, count: int, now: float) -> tuple[int, str]:
        """(first seq, token) of ``count`` new consecutive seqs of the queue, marked pending.

        The caller must :meth:`settle` the token once the messages are written (or not).
        """
        token = str(uuid.uuid4())
        while True:
            try:
                counter = await self.counters.find_one_and_update(
                    {"_id": counter_id(project, queue)}, reserve(count, token, now),
                    upsert=True, return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                continue  # two first writers of a queue raced to create its counter
            # An upsert answers with the document it wrote; should a server answer nothing,
            # the range it took (if any) is a harmless gap, and its pending entry carries
            # this token too, so settle() clears both.
            if counter is not None:
                return int(counter["n"]) - count + 1, token

    async def settle(self, project: str, queue: str, token: str) -> None:
        """The pending range of ``token`` is written, or abandoned."""
        await self.counters.update_one(
            {"_id": counter_id(project, queue)}, {"$pull": {"pending": {"t": token}}}
        )

    async def readable_bound(self, project: str, queue: str, now: float) -> int:
        """The highest seq below which every message of the queue is completely written."""
        counter = await self.counters.find_one(
            {"_id": counter_id(project, queue)}, {"n": 1, "pending": 1}
        )
        return readable_bound(counter, now)
