"""The pool catalog in SQLite: one row holding the whole catalog document and its version."""

from __future__ import annotations

import sqlite3

from services.common.sqlite_store import Database
from services.queue_svc.storage.catalog import CatalogStoreBase

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS catalog (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        version  INTEGER NOT NULL,
        document TEXT NOT NULL
    )""",
)


class SqliteCatalogStore(CatalogStoreBase):
    """:class:`services.queue_svc.storage.catalog.CatalogStore` on the queue store's database
    (its connection, its write lock)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def _load(self) -> tuple[int, str | None]:
        rows = await self._db.fetchall(
            "read the pool catalog", "SELECT version, document FROM catalog WHERE id = 1"
        )
        return (int(rows[0]["version"]), str(rows[0]["document"])) if rows else (0, None)

    async def _store(self, version: int, document: bytes) -> bool:
        text = document.decode()

        def work(conn: sqlite3.Connection) -> bool:
            if version == 0:
                sql = ("INSERT INTO catalog (id, version, document) VALUES (1, 1, ?) "
                       "ON CONFLICT (id) DO NOTHING")
                params: tuple[object, ...] = (text,)
            else:
                sql = "UPDATE catalog SET version = ?, document = ? WHERE id = 1 AND version = ?"
                params = (version + 1, text, version)
            cursor = conn.execute(sql, params)
            return cursor.rowcount == 1

        return await self._db.write(work, "change the pool catalog")
