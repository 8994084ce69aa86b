"""The pool catalog in Redis: one hash ``<prefix>:catalog`` holding the whole catalog document
(``d``) and its version (``v``); every change is one compare-and-set script."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio

from services.common.redis_store import RedisClusterClient
from services.queue_svc.storage.catalog import CatalogStoreBase
from services.queue_svc.storage.redis._connection import RedisOptions, edge

SCRIPT = "store_catalog"


class RedisCatalogStore(CatalogStoreBase):
    """:class:`services.queue_svc.storage.catalog.CatalogStore` on the queue store's Redis
    client and scripts."""

    def __init__(
        self,
        options: RedisOptions,
        client: Callable[[], redis.asyncio.Redis | RedisClusterClient],
        run: Callable[[str, list[str], list[Any]], Any],
    ) -> None:
        self.options = options
        self._client = client
        self._run = run
        self._key = f"{options.prefix}:catalog"

    @property
    def address(self) -> str:
        return self.options.address

    @edge("read the pool catalog")
    async def _load(self) -> tuple[int, str | None]:
        version, document = await self._client().hmget(self._key, ["v", "d"])
        return (int(version), str(document)) if version is not None else (0, None)

    @edge("change the pool catalog")
    async def _store(self, version: int, document: bytes) -> bool:
        stored = await self._run(SCRIPT, [self._key], [version, document.decode()])
        return bool(stored)
