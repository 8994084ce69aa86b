"""Fair claims in MongoDB (docs/architecture.md, "Fair queues").

A standard queue's message posted with a group keeps it in ``f`` (FIFO groups are ``g``, which
the FIFO code indexes and settles; ``f`` is a label only). MongoDB keeps no counters here: the
in-flight messages of a group are counted from the partial indexes ``queue_fair_held`` (p, q,
f, x) and ``queue_fair_in_flight`` (p, q, x) on messages that have ``f``, so the counts follow
claims, deletes, releases, renewals and expiry with nothing to update and nothing a crash can
leave wrong; the cost is a count of the queue's in-flight messages with a group per fair claim.

The group index is the partial index ``queue_fair_seq`` (p, q, f, s) on the same messages: a
claim whose window is cut (``FairChoice.cut``) counts the in-flight messages of every group,
lists the queue's groups (``distinct`` on the index), reads the oldest claimable message past
the window of each group that is not noisy (one query per group, concurrently), and merges
them by seq, reading a group's next messages only when it takes its head; noisy groups'
messages are never read there.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable

from pymongo import ASCENDING, ReturnDocument

from services.message_svc.storage.base import DeadLetterPolicy, FairPolicy
from services.message_svc.storage.fairness import FairChoice
from services.message_svc.storage.mongodb import claims
from services.message_svc.storage.mongodb._collections import Collections
from services.message_svc.storage.mongodb._connection import Document
from services.message_svc.storage.mongodb._documents import as_date, claimable, hold

FAIR_FIELD = "f"
_PAGE = 128
# Rounds of a claim whose chosen messages were taken by another replica meanwhile.
_ROUNDS = 3


async def in_flight(
    db: Collections, project: str, queue: str, now: float, groups: set[str]
) -> dict[str, int]:
    """Per group of ``groups``, its messages held by live claims."""
    cursor = await db.messages.aggregate([
        {"$match": {"p": project, "q": queue, "f": {"$in": sorted(groups)},
                    "x": {"$gt": now}}},
        {"$group": {"_id": "$f", "n": {"$sum": 1}}},
    ])
    counted = await cursor.to_list()
    return {doc["_id"]: int(doc["n"]) for doc in counted}


async def _all_in_flight(
    db: Collections, project: str, queue: str, now: float
) -> dict[str, int]:
    """Per group of the queue, its messages held by live claims (groups with none left out)."""
    cursor = await db.messages.aggregate([
        {"$match": {"p": project, "q": queue, "f": {"$type": "string"}, "x": {"$gt": now}}},
        {"$group": {"_id": "$f", "n": {"$sum": 1}}},
    ])
    counted = await cursor.to_list()
    return {doc["_id"]: int(doc["n"]) for doc in counted}


async def _from_index(
    db: Collections,
    project: str,
    queue: str,
    now: float,
    edge: int,
    choice: FairChoice[Document],
    max_count: int | None,
    worn: list[Document],
) -> None:
    """Offers the oldest claimable messages past ``edge`` (the window's last seq) of the
    groups that are not noisy, by seq across groups, until the claim is full (a group that
    turns noisy meanwhile gives no more); worn ones go to ``worn``."""
    choice.know(await _all_in_flight(db, project, queue, now))
    groups = await db.messages.distinct(
        FAIR_FIELD, {"p": project, "q": queue, FAIR_FIELD: {"$type": "string"}}
    )
    quiet = [group for group in groups if isinstance(group, str) and choice.quiet(group)]
    want = choice.limit - len(choice.taken)

    async def page(group: str, after: int, n: int) -> list[Document]:
        query = claimable(project, queue, now)
        query[FAIR_FIELD] = group
        query["s"] = {"$gt": after}
        return await db.messages.find(query, {"n": 1, "s": 1, FAIR_FIELD: 1}).sort(
            "s", ASCENDING
        ).limit(n).hint("queue_fair_seq").to_list()

    firsts = await asyncio.gather(*(page(group, edge, 1) for group in quiet))
    heads = [(int(docs[0]["s"]), group) for group, docs in zip(quiet, firsts, strict=True)
             if docs]
    buffered = {group: docs for group, docs in zip(quiet, firsts, strict=True)}
    heapq.heapify(heads)
    while heads and not choice.full:
        seq, group = heapq.heappop(heads)
        if not choice.quiet(group):
            continue
        doc = buffered[group].pop(0)
        if max_count is not None and doc["n"] >= max_count:
            worn.append(doc)
        elif not choice.offer_indexed(doc, group):
            continue
        if not buffered[group]:
            buffered[group] = await page(group, seq, want)
        if buffered[group]:
            heapq.heappush(heads, (int(buffered[group][0]["s"]), group))


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
    policy: FairPolicy,
) -> tuple[list[Document], tuple[str, ...], bool]:
    """(the claimed messages' documents by seq, the dead-lettered ids, whether the claim was
    futile: ``ClaimResult.futile``), as :func:`claims.claim` with the fair choice."""
    claim_expires = now + ttl
    update = hold(claim_id, claim_expires, ttl + grace, claim_expires + grace, count=True)
    still: Document = claimable(project, queue, now)
    max_count = None if dead_letter is None else dead_letter.max_claim_count
    if max_count is not None:
        still["n"] = {"$lt": max_count}
    total = await db.messages.count_documents(
        {"p": project, "q": queue, "f": {"$type": "string"}, "x": {"$gt": now}},
        hint="queue_fair_in_flight",
    )
    taken: list[Document] = []
    dead: list[str] = []
    futile = False
    for _ in range(_ROUNDS):
        choice: FairChoice[Document] = FairChoice(policy, limit - len(taken), {}, total)
        worn: list[Document] = []
        after: int | None = None
        edge = 0  # seq of the last message the window looked at
        while not choice.done:
            want = choice.limit - len(choice.taken) if not choice.aside else _PAGE
            want = max(1, min(want, choice.limit + policy.lookahead - choice.read))
            query = claimable(project, queue, now)
            if after is not None:
                query["s"] = {"$gt": after}
            page = await db.messages.find(query, {"n": 1, "s": 1, FAIR_FIELD: 1}).sort(
                "s", ASCENDING
            ).limit(want).to_list()
            groups = {doc[FAIR_FIELD] for doc in page if doc.get(FAIR_FIELD) is not None}
            unknown = groups - set(choice.in_flight)
            if unknown:
                counts = await in_flight(db, project, queue, now, unknown)
                choice.know({group: counts.get(group, 0) for group in unknown})
            for doc in page:
                if choice.done:
                    break
                edge = int(doc["s"])
                if max_count is not None and doc["n"] >= max_count:
                    worn.append(doc)
                else:
                    choice.offer(doc, doc.get(FAIR_FIELD))
            if len(page) < want:
                break
            after = int(page[-1]["s"])
        if choice.cut:
            await _from_index(db, project, queue, now, edge, choice, max_count, worn)
        if worn and dead_letter is not None:
            dead += await claims.move_to_dead_letter(db, project, queue, worn, dead_letter, now)
        chosen = choice.finish()
        futile = futile or choice.futile

        def take(doc: Document) -> Awaitable[Document | None]:
            return db.messages.find_one_and_update(
                {"_id": doc["_id"], **still}, update, return_document=ReturnDocument.AFTER
            )

        got = [doc for doc in await asyncio.gather(*(take(doc) for doc in chosen)) if doc]
        taken += got
        total += sum(1 for doc in got if doc.get(FAIR_FIELD) is not None)
        if len(got) == len(chosen) or len(taken) >= limit:
            break
    if taken:
        await db.claims.insert_one({
            "_id": claim_id, "p": project, "q": queue, "t": ttl, "g": grace, "c": now,
            "e": claim_expires, "ea": as_date(claim_expires),
        })
    return sorted(taken, key=lambda doc: int(doc["s"])), tuple(dead), futile
