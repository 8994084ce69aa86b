"""Documents of the MongoDB message store, and the query pieces every operation shares.

Collections and document schema::

    messages          {_id: message id, p: project, q: queue, s: seq (unique per queue),
                       b: body (binary), t: ttl, c: created, e: expires, ea: expires as a date
                       (TTL index), v: visible_at, i: client id,
                       k: claim id or null, x: claim expiry (0 = never held), n: claim count,
                       g: message group (FIFO queues; absent = none),
                       d, dg: dedup id and its generation (FIFO queues; absent = none),
                       f: fair-queue group (standard queues; absent = none),
                       h: when to show a message post_once or post_fifo (with a dedup id)
                       wrote hidden (``v`` is its expiry until then; absent = shown, see
                       ``once.py`` and ``fifo.py``),
                       hd: with ``h`` on a FIFO message, until when its dedup id is to be
                       remembered (the sweeper finishes an abandoned post with it)}
    claims            {_id: claim id, p, q, t: ttl, g: grace, c: created, e: expires, ea}
    message_counters  {_id: {p, q}, n: last seq given out,
                       pending: [{f: first seq, l: last seq, at: time, t: token}]}
    queue_versions    {_id: {p, q}, v: the queue's version (no document = 0); never removed
                       with the queue's messages, so a version never goes back}
    message_groups    {_id: {p, q, g}, p, q, g, ver: raised by every write (compare-and-set),
                       r: seq of the group's head when it may be claimed now, else null,
                       w: when to look at the group again (its head's claim expires or its
                       delay ends, or a claim's lock on it lapses), else null,
                       k: claim holding the head or null, u: that claim's expiry or 0}
                      one per group with messages (see ``groups.py``)
    dedup_ids         {_id: {p, q, d}, m: id of the message first accepted with dedup id d,
                       gen: how many times d was accepted, e: until when it is remembered, ea}

Times are the store clock's Unix seconds (doubles). ``ea`` lets MongoDB's TTL monitor delete
what expired even when no sweeper runs; queries never rely on it, since the monitor runs
lazily (about once a minute) and on the server's clock.

A counter's ``pending`` lists the seq ranges handed out to posts (and dead-letter moves) that
are not yet fully written: ``f``..``l``, taken at ``at`` by the writer ``w`` (the store of one
message_svc process; absent in ranges of older versions) under the token ``t``. Listing reads
stop below the first of them, so a reader paging by seq never steps over a message that a
slower, earlier post is still writing.

A writer notes in ``message_writers`` that it is alive (``{_id: writer, at}``, every
``WRITER_BEAT`` seconds) and takes its note away when it stops; a sweep settles the ranges of
a writer not heard from for ``WRITER_GONE`` seconds or without a note, and any range once
``PENDING_WINDOW`` old.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.message_svc.storage.base import StoredMessage
from services.message_svc.storage.mongodb._connection import Document

# A pending range older than this (store-clock seconds) belongs to a writer that died or gave
# up; readers stop waiting for it. Far longer than any socket timeout of a live writer.
PENDING_WINDOW = 60.0
# Seconds between a writer's notes that it is alive, and without one after which its pending
# ranges are settled by the next sweep (of any replica): a writer that died in the middle of
# a post holds the queue's listings back for this long, not PENDING_WINDOW. The margin covers
# a late note (a busy event loop, a slow server) and clocks a few seconds apart.
WRITER_BEAT = 3.0
WRITER_GONE = 15.0


def as_date(seconds: float) -> datetime:
    """An expiry as the BSON date the TTL indexes read."""
    return datetime.fromtimestamp(seconds, tz=UTC)


def counter_id(project: str, queue: str) -> Document:
    return {"p": project, "q": queue}


def claimable(project: str, queue: str, now: float) -> Document:
    """Unexpired, not delayed, not held by a live claim."""
    return {
        "p": project, "q": queue, "x": {"$lte": now}, "e": {"$gt": now}, "v": {"$lte": now},
    }


def reserve(count: int, token: str, now: float, writer: str) -> list[Document]:
    """Counter update (a pipeline) taking the next ``count`` seqs and marking them pending."""
    return [
        {"$set": {"n": {"$add": [{"$ifNull": ["$n", 0]}, count]}}},
        {"$set": {"pending": {"$concatArrays": [
            {"$ifNull": ["$pending", []]},
            [{"f": {"$subtract": ["$n", count - 1]}, "l": "$n", "at": now,
              "t": {"$literal": token}, "w": {"$literal": writer}}],
        ]}}},
    ]


def readable_bound(counter: Document | None, now: float) -> int:
    """The highest seq of a queue below which every message is completely written."""
    if counter is None:
        return 0
    bound = int(counter.get("n", 0))
    for entry in counter.get("pending", ()):
        if entry["at"] > now - PENDING_WINDOW:
            bound = min(bound, int(entry["f"]) - 1)
    return bound


def hold(
    claim_id: str, claim_expires: float, msg_ttl: int, msg_expires: float, *, count: bool
) -> list[Document]:
    """Message update (a pipeline) putting it in a claim and extending its life.

    The message then lives at least until ``msg_expires``; when that extends it, its TTL
    becomes ``msg_ttl``. With ``count`` its claim count goes up by one.
    """
    fields: Document = {
        "k": {"$literal": claim_id},
        "x": claim_expires,
        "t": {"$cond": [{"$lt": ["$e", msg_expires]}, msg_ttl, "$t"]},
        "e": {"$max": ["$e", msg_expires]},
        "ea": {"$max": ["$ea", as_date(msg_expires)]},
    }
    if count:
        fields["n"] = {"$add": ["$n", 1]}
    return [{"$set": fields}]


def to_message(doc: Document, now: float, claim_id: str | None = None) -> StoredMessage:
    """The message of a document; ``claim_id`` overrides the stored one (pop)."""
    if claim_id is None and doc.get("k") is not None and doc["x"] > now:
        claim_id = doc["k"]
    body: Any = doc["b"]
    return StoredMessage(
        id=doc["_id"],
        seq=int(doc["s"]),
        body=bytes(body),
        ttl=int(doc["t"]),
        created=float(doc["c"]),
        expires=float(doc["e"]),
        visible_at=float(doc["v"]),
        client_id=doc["i"],
        claim_id=claim_id,
        claim_count=int(doc["n"]),
        group_id=doc.get("g") or doc.get("f"),
    )
