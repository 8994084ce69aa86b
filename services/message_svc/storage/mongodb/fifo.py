"""FIFO queues in MongoDB: deduplicated posts, and claims and pops by message group.

Deduplication: a message posted with a dedup id carries it (``d``) and the id's generation
(``dg``: how many times the dedup id was accepted in the queue before), unique per queue
(index ``queue_dedup``, over those messages only); a ``dedup_ids`` document per dedup id of a
queue remembers the message first accepted with it until its window ends, and the generation.
As in ``once.py`` the message is written *hidden* (``v`` its expiry, ``h`` when it is to
become visible, ``hd`` until when its dedup id is to be remembered), then its dedup document,
then it is shown (``v`` set from ``h``; one ``update_one`` filtered on ``h``) and its group
settled. So:

* of two concurrent posts of one dedup id only one inserts its message (the other's insert
  fails on the unique index; it finds that message and answers its id);
* a post sent again after message_svc died anywhere between the writes finds its message
  (created within the window) or its dedup document, writes the dedup document if missing
  and shows the message if it is still hidden (that call answers that it stored it, so the
  message is handed to notifier_svc); a message of an older generation that still exists
  (its dedup document already swept) is passed over with the next generation;
* nothing is consumed before its dedup document is stored, so a message consumed meanwhile
  is never stored again while its dedup id is remembered;
* a hidden message holds its group as a delayed head would: a claim stops at it (it never
  takes a later message of the group past it) and a settle finds the group waiting, never
  empty; once it is shown its group is settled again. A post that is never sent again is
  finished by the sweeper (``collect_garbage``) once its seq range is abandoned: it writes
  the dedup document (until ``hd``) and shows the message, as the post would have.

A dead-letter move drops ``d`` and ``dg``: deduplication belongs to the queue posted to.

Claims and pops merge, by seq, the oldest claimable messages without a group (index
``queue_group_seq`` with ``g`` null) with the ready groups (``groups.py``). A group is locked
for the claim (one winner), then its messages are taken one by one from its head in seq order
with the "claimable" filter, stopping at the first that is held, delayed or lost to another
claimer; the group is settled when the claim is done. So the cost of a claim follows what it
takes, plus the groups it finds stale, never the messages waiting behind a group's head.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bson import Binary
from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from services.message_svc.storage.base import DeadLetterPolicy, FifoPosted, NewMessage
from services.message_svc.storage.mongodb import groups
from services.message_svc.storage.mongodb._collections import Collections
from services.message_svc.storage.mongodb._connection import Document
from services.message_svc.storage.mongodb._documents import as_date, claimable, hold
from services.message_svc.storage.mongodb.claims import move_to_dead_letter

# Fields of a message a FIFO claim decides on.
_FIELDS = {"s": 1, "n": 1, "v": 1, "x": 1, "e": 1, "g": 1}

TakeOne = Callable[[Document], Awaitable[Document | None]]
Move = Callable[[Document], Awaitable[bool]]


def dedup_key(project: str, queue: str, dedup_id: str) -> Document:
    return {"p": project, "q": queue, "d": dedup_id}


async def post_fifo(
    db: Collections,
    project: str,
    queue: str,
    client_id: str,
    messages: Sequence[NewMessage],
    now: float,
    dedup_window: int,
    version: int | None,
) -> FifoPosted:
    wanted = list(dict.fromkeys(m.dedup_id for m in messages if m.dedup_id is not None))
    known: dict[str, Document] = {}
    if wanted:
        found = await db.dedup.find(
            {"_id": {"$in": [dedup_key(project, queue, d) for d in wanted]}}
        ).to_list()
        known = {doc["_id"]["d"]: doc for doc in found}
    ids = [str(uuid.uuid4()) for _ in messages]
    fresh: list[int] = []  # positions of the messages to store
    first_of: dict[str, int] = {}  # dedup id -> position of its message to store
    generation: dict[str, int] = {}
    for i, m in enumerate(messages):
        if m.dedup_id is None:
            fresh.append(i)
        elif m.dedup_id in first_of:
            ids[i] = ids[first_of[m.dedup_id]]
        elif (before := known.get(m.dedup_id)) is not None and before["e"] > now:
            ids[i] = str(before["m"])
        else:
            first_of[m.dedup_id] = i
            generation[m.dedup_id] = 0 if before is None else int(before["gen"]) + 1
            fresh.append(i)
    if not fresh:
        shown = await _show(db, project, queue, list(dict.fromkeys(ids)), now)
        return FifoPosted(ids=tuple(ids), stored=_firsts(ids, shown))
    if version is not None:
        await db.check_version(project, queue, version)

    first, token = await db.reserve(project, queue, len(fresh), now)
    docs: list[Document] = []
    for seq, i in enumerate(fresh, start=first):
        m = messages[i]
        doc: Document = {
            "_id": ids[i], "p": project, "q": queue, "s": seq, "b": Binary(m.body), "t": m.ttl,
            "c": now, "e": now + m.ttl, "ea": as_date(now + m.ttl), "v": now + m.delay,
            "i": client_id, "k": None, "x": 0.0, "n": 0,
        }
        if m.group_id is not None:
            doc["g"] = m.group_id
        if m.dedup_id is not None:
            # Hidden until its dedup document is stored (see the module's docstring).
            doc["d"], doc["dg"] = m.dedup_id, generation[m.dedup_id]
            doc["v"], doc["h"], doc["hd"] = now + m.ttl, now + m.delay, now + dedup_window
        docs.append(doc)
    try:
        conflicts = await _insert(db, docs)
        earlier: dict[str, str] = {}  # dedup id -> the message stored before (a duplicate)
        for n in conflicts:
            found_id = await _insert_once(db, docs[n], now - dedup_window)
            if found_id is not None:
                earlier[docs[n]["d"]] = found_id
        written = [doc for doc in docs if doc.get("d") not in earlier]
        arrivals: dict[str, groups.Arrival] = {}
        for doc in written:
            if "g" in doc and doc["g"] not in arrivals:
                arrivals[doc["g"]] = groups.Arrival(doc["s"], doc["v"], doc["e"])
        # Before the seqs are settled: should this process die first, the sweeper finds the
        # range still pending, finishes its hidden messages and settles the groups of its
        # messages (collect_garbage).
        await _remember(db, project, queue, docs, earlier, now + dedup_window)
        await groups.note(db, project, queue, arrivals, now)
        for i, m in enumerate(messages):
            if m.dedup_id in earlier:
                ids[i] = earlier[m.dedup_id]
        hidden = [ids[i] for i in range(len(messages)) if messages[i].dedup_id is not None]
        shown = await _show(db, project, queue, list(dict.fromkeys(hidden)), now)
    except BaseException:
        await _take_back(db, project, queue, docs, list(first_of), token)
        raise
    await db.settle_or_later(project, queue, token)
    return FifoPosted(ids=tuple(ids), stored=_firsts(ids, shown | {
        doc["_id"] for doc in written if "d" not in doc
    }))


def _firsts(ids: Sequence[str], stored: set[str]) -> tuple[bool, ...]:
    """For each position, whether it is the first one of an id in ``stored``."""
    seen: set[str] = set()
    flags: list[bool] = []
    for mid in ids:
        flags.append(mid in stored and mid not in seen)
        seen.add(mid)
    return tuple(flags)


async def _take_back(
    db: Collections, project: str, queue: str, docs: list[Document], dedup_ids: list[str],
    token: str,
) -> None:
    """All or nothing, as far as the server lets us: takes back what a failed post wrote."""
    with contextlib.suppress(PyMongoError):
        await db.messages.delete_many({"_id": {"$in": [doc["_id"] for doc in docs]}})
    with contextlib.suppress(PyMongoError):
        await db.dedup.delete_many({
            "_id": {"$in": [dedup_key(project, queue, d) for d in dedup_ids]},
            "m": {"$in": [doc["_id"] for doc in docs]},
        })
    with contextlib.suppress(PyMongoError):
        await db.settle(project, queue, token)


async def _show(
    db: Collections, project: str, queue: str, ids: Sequence[str], now: float
) -> set[str]:
    """Shows those of the messages ``ids`` still hidden (their dedup documents are stored)
    and settles their groups; the ids this call showed."""
    shown = await asyncio.gather(*(
        db.messages.find_one_and_update(
            {"_id": mid, "p": project, "q": queue, "h": {"$exists": True}},
            [{"$set": {"v": "$h"}}, {"$unset": ["h", "hd"]}], projection={"g": 1},
        )
        for mid in ids
    ))
    docs = [doc for doc in shown if doc is not None]
    await groups.settle_all(
        db, project, queue, (doc["g"] for doc in docs if isinstance(doc.get("g"), str)), now
    )
    return {str(doc["_id"]) for doc in docs}


async def finish_abandoned(db: Collections, project: str, queue: str, query: Document,
                           now: float) -> None:
    """Finishes the posts of the hidden messages ``query`` matches (posts abandoned after
    their insert): writes their dedup documents and shows them."""
    hidden = await db.messages.find(
        {**query, "p": project, "q": queue, "h": {"$exists": True}, "d": {"$type": "string"}},
        {"d": 1, "dg": 1, "hd": 1},
    ).to_list()
    for doc in hidden:
        until = float(doc.get("hd", now))
        with contextlib.suppress(DuplicateKeyError):
            await db.dedup.update_one(
                {"_id": dedup_key(project, queue, doc["d"]), "gen": {"$lt": doc["dg"]}},
                {"$set": {"m": doc["_id"], "gen": doc["dg"], "e": until, "ea": as_date(until)}},
                upsert=True,
            )
    await _show(db, project, queue, [str(doc["_id"]) for doc in hidden], now)


async def _insert(db: Collections, docs: list[Document]) -> list[int]:
    """Inserts ``docs``; the positions of those refused for their dedup id and generation."""
    try:
        await db.messages.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        conflicts = [int(error["index"]) for error in errors if error.get("code") == 11000]
        if len(conflicts) < len(errors) or any("d" not in docs[n] for n in conflicts):
            raise
        return sorted(conflicts)
    return []


async def _insert_once(db: Collections, doc: Document, window_start: float) -> str | None:
    """Inserts ``doc``, whose dedup id and generation another message of the queue has: the
    id of that message when it was created within the window (a duplicate: nothing is
    inserted), else ``None`` once ``doc`` is inserted under the next free generation."""
    while True:
        other = await db.messages.find_one(
            {"p": doc["p"], "q": doc["q"], "d": doc["d"], "dg": doc["dg"]}, {"c": 1}
        )
        if other is not None:
            if other["c"] > window_start:
                return str(other["_id"])
            doc["dg"] += 1  # an older acceptance of the dedup id, still there
        try:
            await db.messages.insert_one(doc)
            return None
        except DuplicateKeyError:
            continue


async def _remember(
    db: Collections, project: str, queue: str, docs: list[Document], earlier: dict[str, str],
    until: float,
) -> None:
    """Writes the dedup documents of the dedup ids of ``docs`` (each unless a later
    generation is there already: a duplicate never extends the window)."""
    for doc in docs:
        if "d" not in doc:
            continue
        mid = earlier.get(doc["d"], doc["_id"])
        with contextlib.suppress(DuplicateKeyError):
            await db.dedup.update_one(
                {"_id": dedup_key(project, queue, doc["d"]), "gen": {"$lt": doc["dg"]}},
                {"$set": {"m": mid, "gen": doc["dg"], "e": until, "ea": as_date(until)}},
                upsert=True,
            )


async def claim_fifo(
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

    def take_one(doc: Document) -> Awaitable[Document | None]:
        return db.messages.find_one_and_update(
            {"_id": doc["_id"], **still}, update, return_document=ReturnDocument.AFTER
        )

    async def move(doc: Document) -> bool:
        assert dead_letter is not None
        moved = await move_to_dead_letter(db, project, queue, [doc], dead_letter, now)
        dead.extend(moved)
        return bool(moved)

    held = await _take(
        db, project, queue, claim_id, now, limit, take_one,
        max_count=None if dead_letter is None else dead_letter.max_claim_count, move=move,
        holds_until=claim_expires,
    )
    if held:
        await db.claims.insert_one({
            "_id": claim_id, "p": project, "q": queue, "t": ttl, "g": grace, "c": now,
            "e": claim_expires, "ea": as_date(claim_expires),
        })
    return held, tuple(dead)


async def pop_fifo(
    db: Collections, project: str, queue: str, pop_id: str, limit: int, now: float
) -> list[Document]:
    """Deletes and returns up to ``limit`` messages a FIFO claim would take, by seq."""
    still = claimable(project, queue, now)

    def take_one(doc: Document) -> Awaitable[Document | None]:
        return db.messages.find_one_and_delete({"_id": doc["_id"], **still})

    return await _take(db, project, queue, pop_id, now, limit, take_one)


@dataclass(slots=True)
class _Run:
    """A locked group's messages being taken, from its head, in seq order."""

    group: str
    ver: int
    """The group's ``ver`` when this claim locked it."""
    docs: list[Document]
    at: int = 0
    took: bool = False
    """Whether this claim took a message of the group (then it holds the group's head)."""
    ended: bool = False
    """No message of the group beyond ``docs``."""


@dataclass(order=True, slots=True)
class _Next:
    seq: int
    order: int
    item: Document | str | _Run = field(compare=False)
    """A message without a group, a ready group (its name) or a locked group's run."""


async def _take(
    db: Collections,
    project: str,
    queue: str,
    claim_id: str,
    now: float,
    limit: int,
    take_one: TakeOne,
    max_count: int | None = None,
    move: Move | None = None,
    holds_until: float | None = None,
) -> list[Document]:
    """The messages ``take_one`` took (by seq): up to ``limit`` of the oldest without a group
    and of the ready groups, merged by seq; ``holds_until``: the expiry of the claim they are
    taken for (``None``: a pop)."""
    await groups.wake(db, project, queue, now)
    taken: list[Document] = []
    locked: list[_Run] = []
    order = itertools.count()
    try:
        while len(taken) < limit:
            want = limit - len(taken)
            singles = await db.messages.find(
                {**claimable(project, queue, now), "g": None}, _FIELDS
            ).sort("s", ASCENDING).limit(want).to_list()
            ready = await groups.ready(db, project, queue, want)
            if not singles and not ready:
                break
            heap = [_Next(int(doc["s"]), next(order), doc) for doc in singles]
            heap += [_Next(int(doc["r"]), next(order), doc["g"]) for doc in ready]
            heapq.heapify(heap)
            while heap and len(taken) < limit:
                item = heapq.heappop(heap).item
                if isinstance(item, str):
                    ver = await groups.lock(db, project, queue, item, claim_id, now)
                    if ver is None:
                        continue  # another claim took it first
                    want = limit - len(taken)
                    run = _Run(item, ver, await _page(db, project, queue, item, now, None, want))
                    run.ended = len(run.docs) < want
                    locked.append(run)
                elif isinstance(item, _Run):
                    run = item
                    doc = run.docs[run.at]
                    if doc["x"] > now or doc["v"] > now:
                        continue  # held or delayed: the group gives nothing more
                    count = len(taken)
                    if not await _give(doc, taken, take_one, max_count, move):
                        continue  # a group stops at the first message it cannot give
                    run.took = run.took or len(taken) > count
                    run.at += 1
                    if run.at == len(run.docs):
                        want = limit - len(taken)
                        if run.ended or not want:
                            continue
                        run.docs = await _page(db, project, queue, run.group, now,
                                               int(doc["s"]), want)
                        run.at, run.ended = 0, len(run.docs) < want
                else:
                    await _give(item, taken, take_one, max_count, move)
                    continue
                if run.at < len(run.docs):
                    heapq.heappush(heap, _Next(int(run.docs[run.at]["s"]), next(order), run))
    finally:
        await asyncio.gather(*(
            groups.hold(db, project, queue, run.group, run.ver, claim_id, holds_until, now)
            if run.took and holds_until is not None
            else groups.settle(db, project, queue, run.group, now)
            for run in locked
        ))
    return sorted(taken, key=lambda doc: int(doc["s"]))


async def _give(
    doc: Document,
    taken: list[Document],
    take_one: TakeOne,
    max_count: int | None,
    move: Move | None,
) -> bool:
    """Takes the message (into ``taken``) or, worn out, moves it to the dead-letter queue;
    False when it could do neither (another claimer was first)."""
    if max_count is not None and move is not None and doc["n"] >= max_count:
        return await move(doc)
    claimed = await take_one(doc)
    if claimed is None:
        return False
    taken.append(claimed)
    return True


async def _page(
    db: Collections, project: str, queue: str, group: str, now: float, after: int | None,
    limit: int,
) -> list[Document]:
    """Up to ``limit`` unexpired messages of the group, by seq, after seq ``after``."""
    query: Document = {"p": project, "q": queue, "g": group, "e": {"$gt": now}}
    if after is not None:
        query["s"] = {"$gt": after}
    return await db.messages.find(query, _FIELDS).sort("s", ASCENDING).limit(limit).to_list()
