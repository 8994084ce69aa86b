"""Queues in MongoDB: one document per queue in the ``queues`` collection; topics are documents
of the same shape (without ``pool``) in the ``topics`` collection, written by the same code.

Document schema::

    {"_id": ObjectId,
     "p": project, "n": queue name,          unique index (p, n), created at open
     "m": metadata as JSON text,             exactly as given: key order, big integers, 2.0
     "f": [{"k": key, "s": scalar}           one entry per top-level metadata key, for filters:
           | {"k": key, "j": JSON text}],    scalars as BSON values, objects/arrays as JSON text
     "v": version,                           incremented by every write, for compare-and-set
     "pool": pool name}                      set when the queue is created on a pool, never
                                             changed; absent: message_svc's own store

With a quota, a new queue (or topic) is made under the project's lease, in the ``leases``
collection (``services/common/mongo_lease.py``): its count and its insert are one step.

Why both ``m`` and ``f``: JSON text keeps the metadata byte-exact (BSON has no integer beyond
64 bits, and a key such as ``$`` or ``a.b`` is awkward as a field name), while ``f`` gives
listing filters the contract's equality in a standard query: keys are values, not field
paths, so any key matches literally; ``s`` never holds an array, so equality never matches
an array element; numbers compare by value across int/long/double; booleans and strings are
their own BSON types; objects and arrays compare by their compact JSON text.
"""

from __future__ import annotations

import contextlib
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.common.errors import QueueNotFound, Unavailable
from services.common.mongo_lease import Lease, Leases
from services.common.store_edge import contended
from services.queue_svc.storage.base import (
    MetadataCheck,
    MetadataPatch,
    QueuePage,
    QueueRecord,
    RecordKind,
    apply_patches,
    over_quota,
)
from services.queue_svc.storage.mongodb import catalog
from services.queue_svc.storage.mongodb._connection import (
    STORE,
    Document,
    MongoOptions,
    connect,
    describe,
    edge,
    parse,
)

COLLECTION = "queues"
TOPICS = "topics"
# Attempts of one write that loses a race (an insert of the same queue, a concurrent update)
# before giving up; each lost race means another writer succeeded.
MAX_ATTEMPTS = 100
_INT64 = range(-(2**63), 2**63)


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode()


def _load(text: str) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(text)
    return value


def _record(project: str, name: str, found: Document) -> QueueRecord:
    return QueueRecord(project, name, _load(found["m"]), found.get("pool"))


def _entry(key: str, value: Any) -> Document:
    """The ``f`` entry of one metadata key."""
    if isinstance(value, Mapping | list):
        return {"k": key, "j": _dump(value)}
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        # BSON stores no integer beyond 64 bits; compared as the nearest double, as SQLite does
        return {"k": key, "s": float(value)}
    return {"k": key, "s": value}


def _entries(metadata: Mapping[str, Any]) -> list[Document]:
    return [_entry(key, value) for key, value in metadata.items()]


def _condition(key: str, value: Any) -> Document:
    """A query condition: the stored metadata has ``key`` equal to ``value``."""
    wanted = {"k": key, "s": {"$type": "null"}} if value is None else _entry(key, value)
    return {"f": {"$elemMatch": wanted}}


def _written(metadata: Mapping[str, Any]) -> Document:
    return {"$set": {"m": _dump(metadata), "f": _entries(metadata)}, "$inc": {"v": 1}}


class MongoQueueStore:
    """:class:`services.queue_svc.storage.base.QueueStore` on MongoDB."""

    _RECORDS: RecordKind = "queues"

    def __init__(self, options: MongoOptions) -> None:
        self.options = options
        self._queues: AsyncCollection[Document] | None = None
        self.catalog = catalog.MongoCatalogStore(options, self._catalog_collection)
        self.topics: MongoQueueStore = MongoTopicStore(self)

    @classmethod
    def from_uri(cls, uri: str) -> MongoQueueStore:
        return cls(parse(uri))

    @property
    def address(self) -> str:
        return self.options.address

    def _collection(self) -> AsyncCollection[Document]:
        if self._queues is None:
            raise Unavailable("The queue store is closed.")
        return self._queues

    def _catalog_collection(self) -> AsyncCollection[Document]:
        return self._collection().database[catalog.COLLECTION]

    async def open(self) -> None:
        client = connect(self.options)
        try:
            await client.admin.command("ping")
            queues = self.options.database_on(client)[COLLECTION]  # reads from the primary
            await queues.create_index(
                [("p", ASCENDING), ("n", ASCENDING)], unique=True, name="project_name"
            )
            await queues.create_index(
                [("pool", ASCENDING)], name="pool", partialFilterExpression={
                    "pool": {"$type": "string"},
                },
            )
            await queues.database[TOPICS].create_index(
                [("p", ASCENDING), ("n", ASCENDING)], unique=True, name="project_name"
            )
        except PyMongoError as exc:
            await client.close()
            # The driver's message goes on to describe the whole topology: keep its start.
            detail = textwrap.shorten(str(exc), 200, placeholder=" ...")
            raise Unavailable(
                f"Cannot open the queue store at {self.address}: {describe(exc)} ({detail})."
            ) from exc
        self._queues = queues

    async def close(self) -> None:
        if self._queues is not None:
            client, self._queues = self._queues.database.client, None
            await client.close()

    def _lease(self, project: str) -> contextlib.AbstractAsyncContextManager[Lease]:
        """The project's lease for a new record of this kind (``services/common/mongo_lease``):
        held, the count of the project's records and the insert are one step."""
        leases = Leases(lambda: self._collection().database, STORE)
        return leases.held((self._RECORDS, project), "create the queue")

    async def _make_room(self, project: str, quota: int) -> None:
        """With the project's lease held: raise QuotaExceeded if a new record is beyond
        ``quota``. The count stops at ``quota``."""
        if await self._collection().count_documents({"p": project}, limit=quota) >= quota:
            raise over_quota(self._RECORDS, project, quota)

    async def _fence(self, lease: Lease, project: str, name: str, quota: int) -> None:
        """After the insert the lease guarded: when the lease was taken over meanwhile (its
        holder stalled) and the project is now beyond ``quota``, delete the record this
        holder inserted (unless changed since) and raise QuotaExceeded
        (``services/common/mongo_lease``)."""
        records = self._collection()
        if not await lease.overrun(records, {"p": project}, quota):
            return
        undone = await records.delete_one({"p": project, "n": name, "w": lease.token, "v": 1})
        if undone.deleted_count:
            raise over_quota(self._RECORDS, project, quota)

    @edge("create the queue")
    async def create(
        self, project: str, name: str, metadata: Mapping[str, Any], pool: str | None = None,
        *, quota: int = 0,
    ) -> bool:
        change = _written(metadata)
        if not quota:
            return await self._upsert(project, name, change, pool)
        # A queue that exists is replaced without the lease; one that does not, with it.
        if await self._replaced(project, name, change):
            return False
        async with self._lease(project) as lease:
            if await self._replaced(project, name, change):
                return False
            await self._make_room(project, quota)
            created = await self._upsert(project, name, change, pool, lease.token)
            await self._fence(lease, project, name, quota)
            return created

    async def _replaced(self, project: str, name: str, change: Document) -> bool:
        result = await self._collection().update_one({"p": project, "n": name}, change)
        return result.matched_count == 1

    async def _upsert(
        self, project: str, name: str, change: Document, pool: str | None, mark: str = ""
    ) -> bool:
        """``mark``: a lease's token, kept in the record it inserts (``_fence``)."""
        inserted = {**({} if pool is None else {"pool": pool}), **({"w": mark} if mark else {})}
        if inserted:
            change = {**change, "$setOnInsert": inserted}
        for _ in range(MAX_ATTEMPTS):
            try:
                result = await self._collection().update_one(
                    {"p": project, "n": name}, change, upsert=True
                )
            except DuplicateKeyError:
                # A concurrent create inserted the queue first: it exists now, replace it.
                continue
            return result.upserted_id is not None
        raise contended(STORE, "create the queue")

    @edge("create the queue")
    async def ensure(
        self, project: str, name: str, pool: str | None = None, *, quota: int = 0
    ) -> QueueRecord:
        if not quota:
            return await self._ensure(project, name, pool)
        # A queue that exists is read without the lease; one that does not is made with it.
        if (found := await self._get(project, name)) is not None:
            return found
        async with self._lease(project) as lease:
            if (found := await self._get(project, name)) is not None:
                return found
            await self._make_room(project, quota)
            made = await self._ensure(project, name, pool, lease.token)
            await self._fence(lease, project, name, quota)
            return made

    async def _ensure(
        self, project: str, name: str, pool: str | None, mark: str = ""
    ) -> QueueRecord:
        """``mark``: as :meth:`_upsert`'s."""
        inserted: Document = {"m": "{}", "f": [], "v": 1}
        if pool is not None:
            inserted["pool"] = pool
        if mark:
            inserted["w"] = mark
        for _ in range(MAX_ATTEMPTS):
            try:
                found = await self._collection().find_one_and_update(
                    {"p": project, "n": name},
                    {"$setOnInsert": inserted},
                    projection={"_id": False, "m": True, "pool": True},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                continue
            if found is not None:  # always so, with upsert and the document after the update
                return _record(project, name, found)
        raise contended(STORE, "create the queue")

    @edge("read the queue")
    async def get(self, project: str, name: str) -> QueueRecord | None:
        return await self._get(project, name)

    async def _get(self, project: str, name: str) -> QueueRecord | None:
        found = await self._collection().find_one(
            {"p": project, "n": name}, {"_id": False, "m": True, "pool": True}
        )
        return None if found is None else _record(project, name, found)

    @edge("read the queue")
    async def exists(self, project: str, name: str) -> bool:
        found = await self._collection().find_one({"p": project, "n": name}, {"_id": True})
        return found is not None

    @edge("update the queue")
    async def update_metadata(
        self,
        project: str,
        name: str,
        patches: Sequence[MetadataPatch],
        check: MetadataCheck | None = None,
    ) -> QueueRecord:
        queues = self._collection()
        for _ in range(MAX_ATTEMPTS):
            found = await queues.find_one(
                {"p": project, "n": name}, {"m": True, "v": True, "pool": True}
            )
            if found is None:
                raise QueueNotFound(queue=name, project=project)
            metadata = apply_patches(_load(found["m"]), patches)
            if check is not None:
                check(metadata)
            # Compare-and-set: only the very document read (not a re-created namesake), and
            # only if no other write came in between.
            result = await queues.update_one(
                {"_id": found["_id"], "v": found["v"]}, _written(metadata)
            )
            if result.matched_count == 1:
                return QueueRecord(project, name, metadata, found.get("pool"))
        raise contended(STORE, "update the queue")

    @edge("count the queues of the pool")
    async def count_on_pool(self, pool: str) -> int:
        return await self._collection().count_documents({"pool": pool})

    @edge("delete the queue")
    async def delete(self, project: str, name: str) -> bool:
        result = await self._collection().delete_one({"p": project, "n": name})
        return result.deleted_count == 1

    @edge("list the queues")
    async def list(
        self,
        project: str,
        *,
        limit: int,
        marker: str = "",
        name_contains: str = "",
        metadata_filters: Mapping[str, Any] | None = None,
        with_count: bool = False,
    ) -> QueuePage:
        queues = self._collection()
        query: Document = {"p": project}
        if name_contains:
            query["n"] = {"$regex": re.escape(name_contains)}
        if metadata_filters:
            query["$and"] = [_condition(key, value) for key, value in metadata_filters.items()]
        count = await queues.count_documents(query) if with_count else None
        if marker:
            query["n"] = {**query.get("n", {}), "$gt": marker}
        cursor = queues.find(query, {"_id": False, "n": True, "m": True})
        records = [
            QueueRecord(project, found["n"], _load(found["m"]))
            async for found in cursor.sort("n", ASCENDING).limit(limit)
        ]
        return QueuePage(queues=records, count=count)


class MongoTopicStore(MongoQueueStore):
    """:class:`services.queue_svc.storage.base.TopicStore`: the queue records' code on the
    ``topics`` collection of the queue store's database, over its client."""

    _RECORDS: RecordKind = "topics"

    def __init__(self, owner: MongoQueueStore) -> None:
        self.options = owner.options
        self._owner = owner

    def _collection(self) -> AsyncCollection[Document]:
        return self._owner._collection().database[TOPICS]
