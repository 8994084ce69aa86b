"""The pool catalog in MongoDB: one document ``{"_id": "catalog", "v": version, "d": JSON
text}`` in the ``catalog`` collection, replaced by compare-and-set on ``v``.

A single document needs no multi-document transaction for a change that touches several pools
and flavors at once (MongoDB guarantees atomicity per document).
"""

from __future__ import annotations

from collections.abc import Callable

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from services.queue_svc.storage.catalog import CatalogStoreBase
from services.queue_svc.storage.mongodb._connection import Document, MongoOptions, edge

COLLECTION = "catalog"
DOCUMENT_ID = "catalog"


class MongoCatalogStore(CatalogStoreBase):
    """:class:`services.queue_svc.storage.catalog.CatalogStore` on the queue store's client."""

    def __init__(
        self, options: MongoOptions, collection: Callable[[], AsyncCollection[Document]]
    ) -> None:
        self.options = options
        self._collection = collection

    @property
    def address(self) -> str:
        return self.options.address

    @edge("read the pool catalog")
    async def _load(self) -> tuple[int, str | None]:
        found = await self._collection().find_one({"_id": DOCUMENT_ID})
        return (int(found["v"]), str(found["d"])) if found is not None else (0, None)

    @edge("change the pool catalog")
    async def _store(self, version: int, document: bytes) -> bool:
        text = document.decode()
        if version == 0:
            try:
                await self._collection().insert_one({"_id": DOCUMENT_ID, "v": 1, "d": text})
            except DuplicateKeyError:
                return False
            return True
        result = await self._collection().update_one(
            {"_id": DOCUMENT_ID, "v": version}, {"$set": {"v": version + 1, "d": text}}
        )
        return result.matched_count == 1
