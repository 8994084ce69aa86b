"""Redrive job records in SQLite: table ``redrive_jobs`` of the message store's file, on
connections of their own (``storage/redrives.py``). Column ``status`` is ``running`` for every
active job (a cancelled one finishing its batch too); the document has the job's status."""

from __future__ import annotations

import sqlite3

from services.common.sqlite_store import Database, parse_uri
from services.message_svc.storage.redrives import RUNNING, RedriveJob, indexed_status

STORE = "message store"
SCHEMA = """
CREATE TABLE IF NOT EXISTS redrive_jobs (
    project TEXT NOT NULL,
    queue TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (project, queue)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS redrive_jobs_status ON redrive_jobs (status);
"""


class SqliteRedriveStore:
    """:class:`~services.message_svc.storage.redrives.RedriveStore` in SQLite."""

    def __init__(self, uri: str) -> None:
        parsed = parse_uri(uri, STORE)
        self.address = parsed.path
        self._db = Database(parsed, STORE, SCHEMA)

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def read(self, project: str, queue: str) -> RedriveJob | None:
        def job(conn: sqlite3.Connection) -> RedriveJob | None:
            row = conn.execute(
                "SELECT version, doc FROM redrive_jobs WHERE project = ? AND queue = ?",
                (project, queue),
            ).fetchone()
            return None if row is None else RedriveJob.decode(row[1], int(row[0]))

        return await self._db.read(job, "read a redrive job")

    async def write(self, job: RedriveJob) -> bool:
        doc = job.encode().decode()

        def cas(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT version, doc FROM redrive_jobs WHERE project = ? AND queue = ?",
                (job.project, job.queue),
            ).fetchone()
            current = 0 if row is None else int(row[0])
            if current == job.version + 1 and row is not None and row[1] == doc:
                return True
            if current != job.version:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO redrive_jobs (project, queue, version, status, doc) "
                "VALUES (?, ?, ?, ?, ?)",
                (job.project, job.queue, job.version + 1, indexed_status(job), doc),
            )
            return True

        return await self._db.write(cas, "store a redrive job")

    async def running(self) -> list[tuple[str, str]]:
        rows = await self._db.read(
            lambda c: c.execute(
                "SELECT project, queue FROM redrive_jobs WHERE status = ?", (RUNNING,)
            ).fetchall(),
            "list redrive jobs",
        )
        return [(str(p), str(q)) for p, q in rows]
