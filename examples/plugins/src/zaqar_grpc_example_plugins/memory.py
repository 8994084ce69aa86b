"""A message store kept in the process's memory, under the URI scheme ``memory://<name>``.

Each name is one in-memory SQLite database, opened once per process and shared by every store
opened on that name (so a store reopened on the name finds its data, as the contract asks),
until the process exits. Nothing is written to disk and no other process sees it: a store
for development, tests and a single message_svc process.

It is built on zaqar-grpc's public API only: the :class:`MessageStore` contract and the
SQLite store (``sqlite:///:memory:``) it delegates to.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any, ClassVar

from services.common.config import ConfigurationError
from services.common.errors import Unavailable
from services.message_svc.storage.base import Capabilities
from services.message_svc.storage.sqlite import SqliteMessageStore

NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The MessageStore methods, each passed on to the name's database.
OPERATIONS = (
    "queue_version", "bump_queue_version", "post", "post_once", "list_messages", "get", "get_many",
    "delete", "delete_many", "pop", "claim", "get_claim", "renew_claim", "release_claim",
    "stats", "next_free_at", "delete_queue", "collect_garbage",
)


class _Database:
    """One name's database and the clock its stores read now (the last opened store's)."""

    def __init__(self) -> None:
        self.now: Callable[[], float] = time.time
        self.store = SqliteMessageStore.from_uri("sqlite:///:memory:", now=lambda: self.now())
        self.opened: asyncio.Future[None] | None = None


class MemoryMessageStore:
    """A message store in this process's memory: ``memory://<name>``."""

    capabilities = Capabilities(durable=False, shared=False)
    _databases: ClassVar[dict[str, _Database]] = {}

    def __init__(self, name: str, now: Callable[[], float] = time.time) -> None:
        self.name = name
        self._now = now
        self._database: _Database | None = None

    @classmethod
    def from_uri(cls, uri: str, now: Callable[[], float] = time.time) -> MemoryMessageStore:
        """Raises: ConfigurationError, naming what is wrong with ``uri``."""
        scheme, sep, name = uri.partition("://")
        if scheme.lower() != "memory" or not sep or not NAME.fullmatch(name):
            raise ConfigurationError(
                f"invalid memory message store URI {uri!r}: expected memory://<name>, a name "
                "of 1 to 64 letters, digits, dots, dashes or underscores"
            )
        return cls(name, now=now)

    async def open(self) -> None:
        database = self._databases.setdefault(self.name, _Database())
        if database.opened is None:
            database.opened = asyncio.ensure_future(database.store.open())
        try:
            await asyncio.shield(database.opened)
        except Exception:
            database.opened = None
            raise
        database.now = self._now
        self._database = database

    async def close(self) -> None:
        self._database = None  # the data stays for the next store opened on the name

    def __getattr__(self, operation: str) -> Any:
        if operation not in OPERATIONS:
            raise AttributeError(operation)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self._database is None:
                raise Unavailable("The memory message store is closed.")
            return await getattr(self._database.store, operation)(*args, **kwargs)

        return call
