"""Idempotent posts of the MongoDB store (``MessageStore.post_once``).

Collection ``post_keys``, one document per key posted: ``_id`` "<project>/<queue>/<key>",
``m`` the message id, ``e`` until when it is remembered (and ``ea``, the same as a date, for
the TTL index). The message's id is derived from the key (a uuid5), so of two writers of one
key only one inserts the message: the other's insert fails on the id and it answers that id.
The key document is written after the message; should message_svc stop between the two, a
call made again finds the message by its id while it exists (a message already consumed by
then would be posted again: the one case a post is repeated).
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
        return str(known["m"]), False
    if version is not None:
        await db.check_version(project, queue, version)
    mid = str(uuid.uuid5(NAMESPACE, kid))
    stored = True
    first, token = await db.reserve(project, queue, 1, now)
    try:
        await db.messages.insert_one({
            "_id": mid, "p": project, "q": queue, "b": Binary(message.body), "t": message.ttl,
            "c": now, "e": now + message.ttl, "ea": as_date(now + message.ttl),
            "v": now + message.delay, "i": client_id, "k": None, "x": 0.0, "n": 0, "s": first,
        })
    except DuplicateKeyError:
        stored = False  # another writer of the key stored it
    except BaseException:
        with contextlib.suppress(PyMongoError):
            await db.messages.delete_one({"_id": mid, "s": first})
        with contextlib.suppress(PyMongoError):
            await db.settle(project, queue, token)
        raise
    await db.settle(project, queue, token)
    await keys(db).update_one(
        {"_id": kid},
        {"$setOnInsert": {"m": mid, "e": now + remember, "ea": as_date(now + remember)}},
        upsert=True,
    )
    return mid, stored
