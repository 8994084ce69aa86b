"""Idempotent posts of the MongoDB store (``MessageStore.post_once``).

Collection ``post_keys``, one document per key posted: ``_id`` "<project>/<queue>/<key>",
``m`` the message id, ``e`` until when it is remembered (and ``ea``, the same as a date, for
the TTL index). The message's id is derived from the key (a uuid5), so of two writers of one
key only one inserts the message: the other's insert fails on the id.

MongoDB has no atomic step across two documents (without transactions, which a single server
does not have), so the message is written *hidden* and shown only once its key is stored:

1. the message is inserted with ``v`` (visible at) equal to its expiry and ``h`` the time it
   is to become visible: no claim, pop, dead-letter move or listing takes it (listings leave
   out documents with ``h``), and its id, derived from the key, is known to no client;
2. the key document is written;
3. the message is shown: ``v`` set from ``h``, ``h`` removed (one ``update_one`` filtered on
   ``h``, so exactly one call shows it).

A call that stops anywhere (message_svc killed, the server unreachable) leaves either
nothing, a hidden message, or a key and a hidden message; the same key posted again finds
the message (by its id, or by its key) and finishes steps 2 and 3. Nothing is consumed
before its key is stored, so a consumed message is never posted again while its key is
remembered. The call that shows the message answers that it stored it (so the message is
handed to notifier_svc once, by that call); every other call answers the known id. A hidden
message whose post is never made again stays hidden until it expires: it was never
acknowledged to anyone.
"""

from __future__ import annotations

import contextlib
import uuid

from bson import Binary
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.message_svc.storage.base import NewMessage
from services.message_svc.storage.mongodb._collections import Collections
from services.message_svc.storage.mongodb._connection import Document
from services.message_svc.storage.mongodb._documents import as_date

# Namespace of the ids derived from keys.
NAMESPACE = uuid.UUID("0b6f4c0e-5a3c-4d0e-9b7a-6f1f5e2d8c41")

# Listings leave out messages still hidden by an unfinished post_once.
SHOWN: Document = {"h": {"$exists": False}}


def keys(db: Collections) -> AsyncCollection[Document]:
    return db.messages.database["post_keys"]


async def create_indexes(db: Collections) -> None:
    collection = keys(db)
    await collection.create_index([("e", ASCENDING)], name="expiry")
    await collection.create_index([("ea", ASCENDING)], expireAfterSeconds=0, name="expiry_ttl")


async def post_once(
    db: Collections,
    project: str,
    queue: str,
    client_id: str,
    key: str,
    message: NewMessage,
    now: float,
    remember: int,
    version: int | None,
) -> tuple[str, bool]:
    kid = f"{project}/{queue}/{key}"
    known = await keys(db).find_one({"_id": kid}, {"m": 1})
    if known is not None:
        mid = str(known["m"])
        return mid, await _show(db, mid)
    if version is not None:
        await db.check_version(project, queue, version)
    mid = str(uuid.uuid5(NAMESPACE, kid))
    expires = now + message.ttl
    doc: Document = {
        "_id": mid, "p": project, "q": queue, "b": Binary(message.body), "t": message.ttl,
        "c": now, "e": expires, "ea": as_date(expires), "v": expires, "h": now + message.delay,
        "i": client_id, "k": None, "x": 0.0, "n": 0,
    }
    if message.group_id is not None:
        doc["f"] = message.group_id
    first, token = await db.reserve(project, queue, 1, now)
    doc["s"] = first
    try:
        await db.messages.insert_one(doc)
    except DuplicateKeyError:
        pass  # inserted by another writer of the key, or by a call that stopped
    except BaseException:
        with contextlib.suppress(PyMongoError):
            await db.messages.delete_one({"_id": mid, "s": first})
        with contextlib.suppress(PyMongoError):
            await db.settle(project, queue, token)
        raise
    await db.settle_or_later(project, queue, token)
    await _remember(db, kid, mid, now + remember)
    return mid, await _show(db, mid)


async def _remember(db: Collections, kid: str, mid: str, until: float) -> None:
    """Stores the key ``kid`` of the message ``mid`` until ``until`` (the first one stays)."""
    await keys(db).update_one(
        {"_id": kid}, {"$setOnInsert": {"m": mid, "e": until, "ea": as_date(until)}},
        upsert=True,
    )


async def _show(db: Collections, mid: str) -> bool:
    """Shows the message ``mid`` if it is still hidden; whether this call showed it."""
    result = await db.messages.update_one(
        {"_id": mid, "h": {"$exists": True}}, [{"$set": {"v": "$h"}}, {"$unset": "h"}]
    )
    return bool(result.modified_count)
