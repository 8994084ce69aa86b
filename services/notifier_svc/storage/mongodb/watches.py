"""Watchers across replicas in MongoDB.

Documents::

    watches:      {"p": project, "q": queue, "r": replica, "e": expires}
                  unique index (p, q, r); index r; index e
    watch_events: {"_id": seq, "o": origin, "p", "q", "b": payload (bytes), "t": created}
                  index t
    counters:     {"_id": "watch_feed", "n": the last seq taken}

An event takes its ``seq`` from the counter (one atomic ``$inc``) and is then inserted, so
events of concurrent publishers may become visible out of ``seq`` order. A reader therefore
reads only up to the first missing ``seq``: the events after it wait until it appears, or
until the first of them is ``FEED_GAP_GRACE`` seconds old (its publisher died or failed
between the two steps), when the missing one is skipped. The cursor is the last ``seq`` read.
Readers poll (``FEED_POLL``).
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Sequence

from bson import Binary
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.common.errors import Unavailable
from services.notifier_svc.storage import base
from services.notifier_svc.storage.base import (
    FEED_GAP_GRACE,
    FEED_RETENTION,
    WatchEvent,
    WatchKey,
    poll_feed,
)
from services.notifier_svc.storage.mongodb._connection import Document, MongoOptions, edge

FEED_COUNTER = "watch_feed"
# Every this many events, a publisher removes those more than FEED_MAX_EVENTS behind.
TRIM_EVERY = 100


def _event(doc: Document) -> WatchEvent:
    return WatchEvent(
        origin=doc["o"], project=doc["p"], queue=doc["q"], payload=bytes(doc["b"]),
    )


class MongoWatches:
    """The watch registry and feed of :class:`MongoNotifierStore` (a mixin)."""

    options: MongoOptions
    _now: Callable[[], float]
    _watch_collections: (
        tuple[AsyncCollection[Document], AsyncCollection[Document], AsyncCollection[Document]]
        | None
    ) = None

    @property
    def address(self) -> str:
        return self.options.address

    async def _open_watches(self, database: AsyncDatabase[Document]) -> None:
        watches, events = database["watches"], database["watch_events"]
        await watches.create_index(
            [("p", ASCENDING), ("q", ASCENDING), ("r", ASCENDING)], unique=True,
            name="queue_replica",
        )
        await watches.create_index([("r", ASCENDING)], name="replica")
        await watches.create_index([("e", ASCENDING)], name="expires")
        await events.create_index([("t", ASCENDING)], name="created")
        self._watch_collections = watches, events, database["counters"]

    def _watches(
        self,
    ) -> tuple[AsyncCollection[Document], AsyncCollection[Document], AsyncCollection[Document]]:
        if self._watch_collections is None:
            raise Unavailable("The notifier store is closed.")
        return self._watch_collections

    async def _collect_watches(self) -> None:
        watches, events, _ = self._watches()
        now = self._now()
        await watches.delete_many({"e": {"$lte": now}})
        await events.delete_many({"t": {"$lte": now - FEED_RETENTION}})

    @edge("register the watchers")
    async def keep_watching(
        self, replica: str, keys: Sequence[WatchKey], ttl: float
    ) -> builtins.list[WatchKey]:
        watches, _, _ = self._watches()
        now = self._now()
        lapsed = []
        for project, queue in keys:
            key = {"p": project, "q": queue, "r": replica}
            try:
                before = await watches.find_one_and_update(
                    key, {"$set": {"e": now + ttl}}, upsert=True,
                    return_document=ReturnDocument.BEFORE,
                )
            except DuplicateKeyError:  # a concurrent first entry of the same replica won
                before = await watches.find_one_and_update(
                    key, {"$set": {"e": now + ttl}}, return_document=ReturnDocument.BEFORE
                )
            if before is None or float(before["e"]) <= now:
                lapsed.append((project, queue))
        return lapsed

    @edge("unregister the watchers")
    async def stop_watching(
        self, replica: str, keys: Sequence[WatchKey] | None = None
    ) -> None:
        watches, _, _ = self._watches()
        if keys is None:
            await watches.delete_many({"r": replica})
            return
        for project, queue in keys:
            await watches.delete_one({"p": project, "q": queue, "r": replica})

    @edge("read the watchers")
    async def watchers(self, project: str, queue: str) -> builtins.list[str]:
        watches, _, _ = self._watches()
        cursor = watches.find({"p": project, "q": queue, "e": {"$gt": self._now()}}, {"r": True})
        return sorted([doc["r"] async for doc in cursor])

    @edge("publish to the watchers")
    async def publish_watch_event(self, event: WatchEvent) -> None:
        _, events, counters = self._watches()
        seq = await self._next_seq(counters)
        await events.insert_one({
            "_id": seq, "o": event.origin, "p": event.project, "q": event.queue,
            "b": Binary(event.payload), "t": self._now(),
        })
        if seq % TRIM_EVERY == 0:
            await events.delete_many({"_id": {"$lte": seq - base.FEED_MAX_EVENTS}})

    @staticmethod
    async def _next_seq(counters: AsyncCollection[Document]) -> int:
        """The next event's seq: one ``$inc`` (no upsert: an upsert that loses the race to
        create the counter may be applied yet answered with nothing, as SecantusDB does, and
        a number taken but not answered would only be a gap). The first creates it at 0."""
        key = {"_id": FEED_COUNTER}
        while True:
            counter = await counters.find_one_and_update(
                key, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER
            )
            if counter is not None:
                return int(counter["n"])
            with contextlib.suppress(DuplicateKeyError):
                await counters.update_one(key, {"$setOnInsert": {"n": 0}}, upsert=True)

    @edge("read the watch feed")
    async def watch_feed_end(self) -> str:
        _, _, counters = self._watches()
        counter = await counters.find_one({"_id": FEED_COUNTER})
        return str(int(counter["n"]) if counter else 0)

    @edge("read the watch feed")
    async def read_watch_events(
        self, cursor: str, *, limit: int, wait: float = 0.0
    ) -> tuple[builtins.list[WatchEvent], str]:
        _, events, _ = self._watches()
        after = int(cursor)

        async def read() -> tuple[builtins.list[WatchEvent], str]:
            docs = events.find({"_id": {"$gt": after}}).sort("_id", ASCENDING).limit(limit)
            found: list[WatchEvent] = []
            last = after
            async for doc in docs:
                seq = int(doc["_id"])
                if seq != last + 1 and float(doc["t"]) > self._now() - FEED_GAP_GRACE:
                    break  # an earlier event may still be on its way
                found.append(_event(doc))
                last = seq
            await docs.close()
            return found, str(last)

        return await poll_feed(read, cursor, wait)
