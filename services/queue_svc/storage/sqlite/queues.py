"""Queues in SQLite: one row per (project, name), metadata as JSON text, and the pool the
queue is placed on (NULL: message_svc's own store). Topics are rows of the same shape in table
``topics`` of the same file (their pool always NULL), read and written by the same code."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson

from services.common.errors import QueueNotFound
from services.common.sqlite_store import Database, SqliteUri, parse_uri
from services.queue_svc.storage.base import (
    MetadataCheck,
    MetadataPatch,
    QueuePage,
    QueueRecord,
    apply_patches,
    over_quota,
)
from services.queue_svc.storage.sqlite import catalog

STORE_NAME = "queue store"

_TABLE = """CREATE TABLE IF NOT EXISTS {} (
        project  TEXT NOT NULL,
        name     TEXT NOT NULL,
        metadata TEXT NOT NULL,
        pool     TEXT,
        PRIMARY KEY (project, name)
    ) WITHOUT ROWID"""

SCHEMA = (_TABLE.format("queues"), _TABLE.format("topics"), *catalog.SCHEMA)

_INT64 = range(-(2**63), 2**63)


def _dump(metadata: Mapping[str, Any]) -> str:
    return orjson.dumps(metadata).decode()


def _load(text: str) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(text)
    return value


def _record(project: str, name: str, row: sqlite3.Row) -> QueueRecord:
    return QueueRecord(project, name, _load(row["metadata"]), row["pool"])


def _add_pool_column(conn: sqlite3.Connection) -> None:
    """Files written before queues were placed on pools lack the column (NULL: the default
    store, where their messages are)."""
    columns = {row["name"] for row in conn.execute("PRAGMA table_info(queues)")}
    if "pool" not in columns:
        conn.execute("ALTER TABLE queues ADD COLUMN pool TEXT")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS queues_by_pool ON queues (pool) WHERE pool IS NOT NULL"
    )


def _filter_clause(table: str, key: str, value: Any) -> tuple[str, list[Any]]:
    """SQL (and its parameters) true when the stored metadata of a row of ``table`` has ``key``
    equal to ``value``."""
    sql = f"EXISTS (SELECT 1 FROM json_each({table}.metadata) AS m WHERE m.key = ? AND {{}})"
    if value is None or isinstance(value, bool):
        return sql.format(f"m.type = '{orjson.dumps(value).decode()}'"), [key]
    if isinstance(value, int | float):
        number = value if not isinstance(value, int) or value in _INT64 else float(value)
        return sql.format("m.type IN ('integer', 'real') AND m.atom = ?"), [key, number]
    if isinstance(value, str):
        return sql.format("m.type = 'text' AND m.atom = ?"), [key, value]
    kind = "object" if isinstance(value, Mapping) else "array"
    return sql.format("m.type = ? AND m.value = json(?)"), [key, kind, orjson.dumps(value).decode()]


class _Records:
    """The records of one table (``queues`` or ``topics``) of the store's file."""

    _table: Literal["queues", "topics"] = "queues"

    def __init__(self, db: Database) -> None:
        self._db = db

    def _check_quota(self, conn: sqlite3.Connection, project: str, name: str, quota: int) -> None:
        """Within a write: raise QuotaExceeded if ``name`` is new and ``quota`` is reached (the
        count reads at most ``quota`` index entries: the quota bounds them)."""
        if not quota or conn.execute(
            f"SELECT 1 FROM {self._table} WHERE project = ? AND name = ?", (project, name)
        ).fetchone():
            return
        (count,) = conn.execute(
            f"SELECT COUNT(*) FROM {self._table} WHERE project = ?", (project,)
        ).fetchone()
        if count >= quota:
            raise over_quota(self._table, project, quota)

    async def create(
        self, project: str, name: str, metadata: Mapping[str, Any], pool: str | None = None,
        *, quota: int = 0,
    ) -> bool:
        text = _dump(metadata)

        def work(conn: sqlite3.Connection) -> bool:
            self._check_quota(conn, project, name, quota)
            cursor = conn.execute(
                f"INSERT INTO {self._table} (project, name, metadata, pool) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (project, name) DO NOTHING",
                (project, name, text, pool),
            )
            if cursor.rowcount == 1:
                return True
            conn.execute(
                f"UPDATE {self._table} SET metadata = ? WHERE project = ? AND name = ?",
                (text, project, name),
            )
            return False

        return await self._db.write(work, "create the queue")

    async def ensure(
        self, project: str, name: str, pool: str | None = None, *, quota: int = 0
    ) -> QueueRecord:
        def work(conn: sqlite3.Connection) -> QueueRecord:
            self._check_quota(conn, project, name, quota)
            conn.execute(
                f"INSERT INTO {self._table} (project, name, metadata, pool) "
                "VALUES (?, ?, '{}', ?) ON CONFLICT (project, name) DO NOTHING",
                (project, name, pool),
            )
            rows = conn.execute(
                f"SELECT metadata, pool FROM {self._table} WHERE project = ? AND name = ?",
                (project, name),
            ).fetchall()
            return _record(project, name, rows[0])

        return await self._db.write(work, "create the queue")

    async def get(self, project: str, name: str) -> QueueRecord | None:
        rows = await self._db.fetchall(
            "read the queue",
            f"SELECT metadata, pool FROM {self._table} WHERE project = ? AND name = ?",
            (project, name),
        )
        return _record(project, name, rows[0]) if rows else None

    async def exists(self, project: str, name: str) -> bool:
        rows = await self._db.fetchall(
            "read the queue",
            f"SELECT 1 FROM {self._table} WHERE project = ? AND name = ?",
            (project, name),
        )
        return bool(rows)

    async def update_metadata(
        self,
        project: str,
        name: str,
        patches: Sequence[MetadataPatch],
        check: MetadataCheck | None = None,
    ) -> QueueRecord:
        def work(conn: sqlite3.Connection) -> QueueRecord:
            rows = conn.execute(
                f"SELECT metadata, pool FROM {self._table} WHERE project = ? AND name = ?",
                (project, name),
            ).fetchall()
            if not rows:
                raise QueueNotFound(queue=name, project=project)
            metadata = apply_patches(_load(rows[0]["metadata"]), patches)
            if check is not None:
                check(metadata)
            conn.execute(
                f"UPDATE {self._table} SET metadata = ? WHERE project = ? AND name = ?",
                (_dump(metadata), project, name),
            )
            return QueueRecord(project, name, metadata, rows[0]["pool"])

        return await self._db.write(work, "update the queue")

    async def delete(self, project: str, name: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                f"DELETE FROM {self._table} WHERE project = ? AND name = ?", (project, name)
            )
            return cursor.rowcount > 0

        return await self._db.write(work, "delete the queue")

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
        where, params = ["project = ?"], [project]
        if name_contains:
            where.append("instr(name, ?) > 0")
            params.append(name_contains)
        for key, value in (metadata_filters or {}).items():
            clause, clause_params = _filter_clause(self._table, key, value)
            where.append(clause)
            params.extend(clause_params)
        count = None
        if with_count:
            rows = await self._db.fetchall(
                "count the queues",
                f"SELECT count(*) AS n FROM {self._table} WHERE {' AND '.join(where)}", params,
            )
            count = int(rows[0]["n"])
        if marker:
            where.append("name > ?")
            params.append(marker)
        rows = await self._db.fetchall(
            "list the queues",
            f"SELECT name, metadata FROM {self._table} WHERE {' AND '.join(where)} "
            "ORDER BY name LIMIT ?",
            [*params, limit],
        )
        return QueuePage(
            queues=[QueueRecord(project, row["name"], _load(row["metadata"])) for row in rows],
            count=count,
        )


class SqliteTopicStore(_Records):
    """:class:`services.queue_svc.storage.base.TopicStore`: table ``topics`` of the queue
    store's file, over its connections."""

    _table = "topics"


class SqliteQueueStore(_Records):
    """:class:`services.queue_svc.storage.base.QueueStore` on one SQLite file."""

    def __init__(self, uri: SqliteUri) -> None:
        super().__init__(Database(uri, STORE_NAME, SCHEMA))
        self.catalog = catalog.SqliteCatalogStore(self._db)
        self.topics = SqliteTopicStore(self._db)

    @classmethod
    def from_uri(cls, uri: str) -> SqliteQueueStore:
        return cls(parse_uri(uri, STORE_NAME))

    async def open(self) -> None:
        await self._db.open()
        await self._db.write(_add_pool_column, "set up the queue store")

    async def close(self) -> None:
        await self._db.close()

    async def count_on_pool(self, pool: str) -> int:
        rows = await self._db.fetchall(
            "count the queues of the pool", "SELECT count(*) AS n FROM queues WHERE pool = ?",
            (pool,),
        )
        return int(rows[0]["n"])
