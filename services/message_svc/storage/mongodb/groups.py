"""Message groups of FIFO queues in MongoDB: one ``message_groups`` document per group.

A group's messages carry ``g`` and are read by seq through the ``queue_group_seq`` index. The
group's document says where the group stands, so that a FIFO claim finds the groups it may
take from without reading their messages (``r``, index ``queue_ready``), and the groups whose
state changes with time (``w``, index ``queue_wake``):

* ready: ``r`` = the seq of its head (its first unexpired message), which may be claimed now;
* waiting: ``w`` = when its head's claim expires or its delay ends (``k``, ``u``: that claim);
* locked by a claim at work: ``r`` null and ``w`` a lease (:data:`LOCK_LEASE`), after which
  the group is looked at again should the claim never finish;
* empty: no document.

Every write raises ``ver``; :func:`settle` derives the state from the head message and writes
it only if ``ver`` is still the one it read (compare-and-set), so two settles never leave the
older view behind. A post notes its groups in one atomic update after writing its messages
(:func:`note`), which makes an empty group ready (or waiting) and raises ``ver``, so a settle
that read the group before the message was written fails its compare-and-set and looks again.

The document only finds groups: no message is taken on its word. A claim takes a group's
messages one by one in seq order from its head with the "claimable" filter
(``claims.py``) and stops at the first one it cannot take, so two claims can never both hold
messages of one group, whatever a stale document said.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.message_svc.storage.mongodb._collections import Collections
from services.message_svc.storage.mongodb._connection import Document
from services.message_svc.storage.mongodb._documents import PENDING_WINDOW

# Seconds a claim's lock on a group lasts before the group is looked at again (the claim
# settles it as soon as it is done; this only matters when it never is).
LOCK_LEASE = PENDING_WINDOW
# Compare-and-set attempts of one settle; each failure means another writer changed the group
# meanwhile (and that writer leaves it settled or waking).
SETTLE_ATTEMPTS = 8
# Groups one claim wakes at most (settles whose time has come); the rest wait for the next.
WAKE_BATCH = 200


def group_key(project: str, queue: str, group: str) -> Document:
    return {"p": project, "q": queue, "g": group}


@dataclass(frozen=True, slots=True)
class Arrival:
    """The first message a post (or a dead-letter move) added to a group."""

    seq: int
    visible_at: float
    expires: float


def state_of(head: Document | None, now: float) -> Document | None:
    """The group's fields for its head message (``None``: the group is empty)."""
    if head is None:
        return None
    if head["x"] > now:
        return {"r": None, "w": head["x"], "k": head["k"], "u": head["x"]}
    if head["v"] > now:
        return {"r": None, "w": min(head["v"], head["e"]), "k": None, "u": 0.0}
    return {"r": int(head["s"]), "w": None, "k": None, "u": 0.0}


async def settle(db: Collections, project: str, queue: str, group: str, now: float) -> None:
    """Puts the group's document in the state its head message says (compare-and-set)."""
    key = group_key(project, queue, group)
    for _ in range(SETTLE_ATTEMPTS):
        doc = await db.groups.find_one({"_id": key}, {"ver": 1})
        head = await db.messages.find_one(
            {"p": project, "q": queue, "g": group, "e": {"$gt": now}},
            {"s": 1, "v": 1, "e": 1, "x": 1, "k": 1}, sort=[("s", ASCENDING)],
        )
        state = state_of(head, now)
        if doc is None:
            if state is None:
                return
            try:
                await db.groups.insert_one({"_id": key, **key, "ver": 0, **state})
                return
            except DuplicateKeyError:
                continue
        if state is None:
            if (await db.groups.delete_one({"_id": key, "ver": doc["ver"]})).deleted_count:
                return
            continue
        updated = await db.groups.update_one(
            {"_id": key, "ver": doc["ver"]}, {"$set": state, "$inc": {"ver": 1}}
        )
        if updated.matched_count:
            return
    # Contended all along: every other writer settles or wakes the group itself.


async def settle_all(
    db: Collections, project: str, queue: str, groups: Iterable[str], now: float
) -> None:
    await asyncio.gather(*(settle(db, project, queue, g, now) for g in dict.fromkeys(groups)))


async def note(
    db: Collections, project: str, queue: str, arrivals: Mapping[str, Arrival], now: float
) -> None:
    """Notes messages just written to groups (each group's first one): an empty group becomes
    ready, or waiting for its delayed head; every group's ``ver`` goes up."""
    await asyncio.gather(*(
        _note_one(db, project, queue, group, arrival, now)
        for group, arrival in arrivals.items()
    ))


async def _note_one(
    db: Collections, project: str, queue: str, group: str, arrival: Arrival, now: float
) -> None:
    idle = {"$and": [{"$eq": [{"$ifNull": ["$r", None]}, None]},
                     {"$eq": [{"$ifNull": ["$w", None]}, None]}]}
    shows = arrival.visible_at <= now
    ready = arrival.seq if shows else None
    wake = None if shows else min(arrival.visible_at, arrival.expires)
    update = [{"$set": {
        "p": {"$literal": project}, "q": {"$literal": queue}, "g": {"$literal": group},
        "ver": {"$add": [{"$ifNull": ["$ver", 0]}, 1]},
        "k": {"$ifNull": ["$k", None]},
        "u": {"$ifNull": ["$u", 0.0]},
        "r": {"$cond": [idle, ready, {"$ifNull": ["$r", None]}]},
        "w": {"$cond": [idle, wake, {"$ifNull": ["$w", None]}]},
    }}]
    key = group_key(project, queue, group)
    while True:
        try:
            await db.groups.update_one({"_id": key}, update, upsert=True)
            return
        except DuplicateKeyError:
            continue  # two first writers of the group raced to create its document


async def wake(db: Collections, project: str, queue: str, now: float) -> None:
    """Settles the queue's groups whose time to be looked at again has come."""
    due = await db.groups.find(
        {"p": project, "q": queue, "w": {"$lte": now}}, {"g": 1}
    ).limit(WAKE_BATCH).to_list()
    await settle_all(db, project, queue, (doc["g"] for doc in due), now)


async def ready(db: Collections, project: str, queue: str, limit: int) -> list[Document]:
    """Up to ``limit`` ready groups (``g``, ``r``), by the seq of their heads."""
    return await db.groups.find(
        {"p": project, "q": queue, "r": {"$gte": 0}}, {"g": 1, "r": 1}
    ).sort("r", ASCENDING).limit(limit).to_list()


async def lock(
    db: Collections, project: str, queue: str, group: str, claim_id: str, now: float
) -> int | None:
    """Takes a ready group for a claim at work (one winner): the group's ``ver`` then, or
    ``None`` when it is not ready."""
    locked = await db.groups.find_one_and_update(
        {"_id": group_key(project, queue, group), "r": {"$gte": 0}},
        {"$set": {"r": None, "w": now + LOCK_LEASE, "k": claim_id}, "$inc": {"ver": 1}},
        projection={"ver": 1}, return_document=ReturnDocument.AFTER,
    )
    return None if locked is None else int(locked["ver"])


async def hold(
    db: Collections, project: str, queue: str, group: str, ver: int, claim_id: str,
    claim_expires: float, now: float,
) -> None:
    """Settles a group whose head the claim ``claim_id`` just took, having locked it at
    ``ver``: one compare-and-set when nothing else wrote the group meanwhile."""
    held = await db.groups.update_one(
        {"_id": group_key(project, queue, group), "ver": ver},
        {"$set": {"r": None, "w": claim_expires, "k": claim_id, "u": claim_expires},
         "$inc": {"ver": 1}},
    )
    if not held.matched_count:
        await settle(db, project, queue, group, now)


async def of_messages(db: Collections, query: Document) -> list[str]:
    """The groups of the messages ``query`` matches."""
    docs = await db.messages.find({**query, "g": {"$type": "string"}}, {"g": 1}).to_list()
    return list(dict.fromkeys(doc["g"] for doc in docs))
