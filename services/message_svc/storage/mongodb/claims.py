"""Claims, pops and dead-letter moves in MongoDB, built from single-document atomic updates.

A claim (or pop) reads the ids of the oldest claimable messages, then takes each with a
``find_one_and_update`` (``find_one_and_delete``) by id whose filter repeats "claimable".
MongoDB applies the filter and the update of one document atomically, so when two claimers
race for a message exactly one of them gets it; the other takes fewer and looks again. No
message can therefore be in two live claims, whatever the number of replicas.

Within one process, claims and pops of the same queue take turns (:class:`QueueLocks`):
otherwise every concurrent claimer would go for the same oldest messages, and all but one
would lose and search again, a pile-up that costs the server far more than the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from pymongo import ASCENDING, ReturnDocument

from services.message_svc.storage.base import DeadLetterPolicy
from services.message_svc.storage.mongodb import groups
from services.message_svc.storage.mongodb._collections import Collections
from services.message_svc.storage.mongodb._connection import Document
from services.message_svc.storage.mongodb._documents import as_date, claimable, hold

TakeOne = Callable[[Document], Awaitable[Document | None]]
Worn = Callable[[list[Document]], Awaitable[None]]


class QueueLocks:
    """One asyncio lock per queue, kept only while someone holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, project: str, queue: str) -> AsyncIterator[None]:
        key = (project, queue)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


async def _take(
    db: Collections,
    project: str,
    queue: str,
    now: float,
    limit: int,
    take_one: TakeOne,
    max_count: int | None = None,
    on_worn: Worn | None = None,
) -> list[Document]:
    """Up to ``limit`` of the oldest claimable messages, each taken by ``take_one``, by seq.

    With ``max_count``, messages claimed that often already go to ``on_worn`` instead, and
    the search goes on.
    """
    taken: list[Document] = []
    while len(taken) < limit:
        want = limit - len(taken)
        candidates = await db.messages.find(
            claimable(project, queue, now), {"n": 1}
        ).sort("s", ASCENDING).limit(want).to_list()
        if not candidates:
            break
        worn = [c for c in candidates if max_count is not None and c["n"] >= max_count]
        if worn and on_worn is not None:
            await on_worn(worn)
        fresh = [c for c in candidates if max_count is None or c["n"] < max_count]
        got = await asyncio.gather(*(take_one(c) for c in fresh))
        taken += [doc for doc in got if doc is not None]
        if len(candidates) < want:
            break
    return sorted(taken, key=lambda doc: int(doc["s"]))


async def claim(
    db: Collections,
    project: str,
    queue: str,
    claim_id: str,
    now: float,
    *,
    limit: int,
    ttl: int,
    grace: int,
    dead_letter: DeadLetterPolicy | None,
) -> tuple[list[Document], tuple[str, ...]]:
    """(the claimed messages' documents by seq, the dead-lettered ids)."""
    claim_expires = now + ttl
    update = hold(claim_id, claim_expires, ttl + grace, claim_expires + grace, count=True)
    still: Document = claimable(project, queue, now)
    if dead_letter is not None:
        still["n"] = {"$lt": dead_letter.max_claim_count}
    dead: list[str] = []

    def take_one(candidate: Document) -> Awaitable[Document | None]:
        return db.messages.find_one_and_update(
            {"_id": candidate["_id"], **still}, update, return_document=ReturnDocument.AFTER
        )

    async def move(worn: list[Document]) -> None:
        assert dead_letter is not None
        dead.extend(await move_to_dead_letter(db, project, queue, worn, dead_letter, now))

    held = await _take(
        db, project, queue, now, limit, take_one,
        max_count=None if dead_letter is None else dead_letter.max_claim_count, on_worn=move,
    )
    if held:
        await db.claims.insert_one({
            "_id": claim_id, "p": project, "q": queue, "t": ttl, "g": grace, "c": now,
            "e": claim_expires, "ea": as_date(claim_expires),
        })
    return held, tuple(dead)


async def move_to_dead_letter(
    db: Collections,
    project: str,
    queue: str,
    worn: list[Document],
    policy: DeadLetterPolicy,
    now: float,
) -> list[str]:
    """Moves the worn messages that are still claimable to the end of the dead-letter queue,
    in the order given; a message keeps its group there, behind the group's messages moved
    before it (the groups are noted before the seqs are settled, see ``groups.py``)."""
    first, token = await db.reserve(project, policy.queue, len(worn), now)
    moved: list[str] = []
    arrivals: dict[str, groups.Arrival] = {}
    try:
        for seq, doc in enumerate(worn, start=first):
            fields: Document = {"q": policy.queue, "s": seq, "k": None, "x": 0.0, "n": 0}
            if policy.ttl is not None:
                fields.update(t=policy.ttl, e=now + policy.ttl, ea=as_date(now + policy.ttl))
            done = await db.messages.find_one_and_update(
                {"_id": doc["_id"], **claimable(project, queue, now),
                 "n": {"$gte": policy.max_claim_count}},
                {"$set": fields, "$unset": {"d": "", "dg": ""}},
                projection={"g": 1, "v": 1, "e": 1},
            )
            if done is not None:
                moved.append(doc["_id"])
                if done.get("g") is not None and done["g"] not in arrivals:
                    arrivals[done["g"]] = groups.Arrival(seq, done["v"], done["e"])
        if arrivals:
            await groups.note(db, project, policy.queue, arrivals, now)
    finally:
        await db.settle(project, policy.queue, token)
    return moved


async def pop(
    db: Collections, project: str, queue: str, limit: int, now: float
) -> list[Document]:
    """Deletes and returns up to ``limit`` of the oldest claimable messages, by seq."""
    still = claimable(project, queue, now)

    def take_one(candidate: Document) -> Awaitable[Document | None]:
        return db.messages.find_one_and_delete({"_id": candidate["_id"], **still})

    return await _take(db, project, queue, now, limit, take_one)


async def renew(
    db: Collections,
    project: str,
    queue: str,
    claim_id: str,
    now: float,
    *,
    ttl: int,
    grace: int,
) -> bool:
    """Restarts a live claim from now and extends the messages it holds."""
    claim_expires = now + ttl
    renewed = await db.claims.find_one_and_update(
        {"_id": claim_id, "p": project, "q": queue, "e": {"$gt": now}},
        {"$set": {"t": ttl, "g": grace, "e": claim_expires, "ea": as_date(claim_expires)}},
        projection={"_id": 1},
    )
    if renewed is None:
        return False
    await db.messages.update_many(
        {"k": claim_id, "p": project, "q": queue, "x": {"$gt": now}, "e": {"$gt": now}},
        hold(claim_id, claim_expires, ttl + grace, claim_expires + grace, count=False),
    )
    return True
