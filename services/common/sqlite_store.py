"""SQLite for any service's store: one aiosqlite connection per store, its URI, and the one
place driver errors are translated (each store names itself, e.g. "queue store").

aiosqlite runs every statement on its own thread, never on the event loop. All statements of
a store go through one connection; :class:`Database` serializes them with a lock so that a
transaction never sees, nor is interleaved with, another caller's statements.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from services.common.config import ConfigurationError
from services.common.errors import Unavailable
from services.common.store_uri import check_characters

log = logging.getLogger(__name__)

T = TypeVar("T")
MEMORY = ":memory:"


def parse_uri(uri: str, store: str = "store") -> str:
    """The database path of a ``sqlite:///`` URI of ``store`` (SQLAlchemy's convention).

    ``sqlite:///relative/queues.db`` is relative to the working directory,
    ``sqlite:////absolute/queues.db`` is absolute and ``sqlite:///:memory:`` is a private
    in-memory database.

    Raises:
        ConfigurationError: not of that form, with options, or with a control character.
    """
    check_characters(store, uri)
    prefix = "sqlite:///"
    expected = "expected sqlite:///<relative path>, sqlite:////<absolute path> or sqlite:///:memory:"
    if not uri.startswith(prefix):
        raise ConfigurationError(f"invalid SQLite {store} URI {uri!r}: {expected}")
    path = uri[len(prefix):]
    if "?" in path or "#" in path:
        raise ConfigurationError(f"invalid SQLite {store} URI {uri!r}: it takes no options")
    if not path.strip("/"):
        raise ConfigurationError(f"invalid SQLite {store} URI {uri!r}: the path is empty")
    if path.endswith("/"):
        raise ConfigurationError(
            f"invalid SQLite {store} URI {uri!r}: the path names a folder, not a database file"
        )
    return path


@contextmanager
def translated_errors(store: str, action: str) -> Iterator[None]:
    """Driver failures become :class:`Unavailable`, the service's 503."""
    try:
        yield
    except (sqlite3.Error, ValueError) as exc:
        # aiosqlite raises ValueError when its connection is closed or gone.
        log.warning("%s failed to %s: %s: %s", store, action, type(exc).__name__, exc)
        raise Unavailable(
            f"The {store} could not {action}. Please try again in a few seconds."
        ) from exc


class Database:
    """An open connection (WAL, synchronous=FULL) whose callers take turns."""

    def __init__(self, path: str, store: str) -> None:
        self.path = path
        self.store = store
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Future[Any]] = set()

    async def open(self, schema: Iterable[str]) -> None:
        try:
            if self.path != MEMORY:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            connector = aiosqlite.connect(self.path, isolation_level=None)
            # A connection left open (a close cut short by a shutdown deadline) must not keep
            # the process alive at exit, so its worker thread is a daemon; what was committed
            # is safe either way (WAL), an open transaction rolls back at the next open.
            worker = getattr(connector, "_thread", None)
            if worker is not None:
                worker.daemon = True
            conn = await connector
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute("PRAGMA busy_timeout=5000")
            for statement in schema:
                await conn.execute(statement)
        except sqlite3.Error as exc:
            await conn.close()
            raise ConfigurationError(
                f"cannot set up SQLite database {self.path!r}: {exc}"
            ) from exc
        self._conn = conn

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending)
        async with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await conn.close()

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise ValueError(f"the {self.store} is closed")
        return self._conn

    async def fetchall(self, action: str, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """Rows of one statement run on its own (a consistent snapshot)."""
        async with self._lock:
            with translated_errors(self.store, action):
                return list(await self._connection().execute_fetchall(sql, tuple(params)))

    async def atomic(
        self, action: str, work: Callable[[aiosqlite.Connection], Awaitable[T]]
    ) -> T:
        """Run ``work`` inside one write transaction: committed when it returns, rolled back
        when it raises.

        The transaction runs in its own shielded task, so a caller that is cancelled (its
        client gave up) never leaves a transaction half-open; it still commits or rolls back.
        """
        task = asyncio.ensure_future(self._transaction(action, work))
        self._pending.add(task)
        task.add_done_callback(self._forget)
        return await asyncio.shield(task)

    def _forget(self, task: asyncio.Future[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here when the caller was cancelled and never awaits it

    async def _transaction(
        self, action: str, work: Callable[[aiosqlite.Connection], Awaitable[T]]
    ) -> T:
        async with self._lock:
            with translated_errors(self.store, action):
                conn = self._connection()
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    result = await work(conn)
                except BaseException:
                    await conn.rollback()
                    raise
                await conn.commit()
                return result
