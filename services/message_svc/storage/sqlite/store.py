"""The SQLite message store: the contract of ``storage/base.py`` over one database file."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TypeVar

from services.common.sqlite_store import Database, Job, parse_uri
from services.message_svc.storage import base
from services.message_svc.storage.base import (
    Capabilities,
    Claim,
    ClaimResult,
    DeadLetterPolicy,
    DeleteOutcome,
    FairPolicy,
    FifoPosted,
    NewMessage,
    QueueStats,
    StaleQueue,
    StoredMessage,
)
from services.message_svc.storage.sqlite import claims as claim_sql
from services.message_svc.storage.sqlite import fair as fair_sql
from services.message_svc.storage.sqlite import messages as message_sql
from services.message_svc.storage.sqlite import once, versions

T = TypeVar("T")

GC_BATCH = 5000
STORE = "message store"
SCHEMA = resources.files(__package__).joinpath("schema.sql").read_text("utf-8")


class _Ids:
    """uuid4 strings from pooled OS randomness: one ``urandom`` call per 256 ids."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self) -> str:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(16 * 256), 0
        raw = self._pool[self._at:self._at + 16]
        self._at += 16
        return str(uuid.UUID(bytes=raw, version=4))


_new_id = _Ids()


class SqliteMessageStore(base.MessageStore):
    """Embedded, durable (WAL, ``synchronous=FULL`` by default). The processes of one machine
    may share a database file (replicas of ``up --replicas``): SQLite's locks serialize their
    writes, and nothing of the store is kept in a process."""

    capabilities = Capabilities(durable=True, shared=True, fifo=True, fair=True)

    def __init__(self, uri: str, now: Callable[[], float] = time.time) -> None:
        parsed = parse_uri(uri, STORE)
        self._db = Database(parsed, STORE, SCHEMA)
        self._now = now
        if parsed.in_memory:  # private to its connection
            self.capabilities = Capabilities(durable=False, shared=False, fifo=True, fair=True)

    @classmethod
    def from_uri(cls, uri: str, now: Callable[[], float] = time.time) -> SqliteMessageStore:
        """Raises: ConfigurationError, naming what is wrong with ``uri``."""
        return cls(uri, now=now)

    async def open(self) -> None:
        """Open (or create) the database file and its tables."""
        await self._db.open()
        await self._db.write(_add_group_column)
        await self._db.write(_add_group_index)

    async def close(self) -> None:
        await self._db.close()

    async def queue_version(self, project: str, queue: str) -> int:
        return await self._db.read(lambda c: versions.current(c, project, queue))

    async def bump_queue_version(self, project: str, queue: str) -> int:
        return await self._db.write(lambda c: versions.bump(c, project, queue))

    async def _write_at(
        self, project: str, queue: str, version: int | None, job: Job[T]
    ) -> T:
        """``job`` as a write; with ``version``, only when the queue is at that version, as
        checked in the same transaction (one primary-key lookup).

        Raises:
            StaleQueue: the queue is at another version; nothing was done.
        """
        if version is None:
            return await self._db.write(job)

        def checked(conn: sqlite3.Connection) -> T | StaleQueue:
            current = versions.current(conn, project, queue)
            # Returned, not raised: a job that raises makes the other writes batched into its
            # transaction run again (sqlite_store._run_batch), and this one has written nothing.
            return job(conn) if current == version else StaleQueue(current)

        result = await self._db.write(checked)
        if isinstance(result, StaleQueue):
            raise result
        return result

    async def post(
        self,
        project: str,
        queue: str,
        client_id: str,
        messages: Sequence[NewMessage],
        version: int | None = None,
    ) -> tuple[str, ...]:
        ids = [_new_id() for _ in messages]
        now = self._now()
        return await self._write_at(
            project, queue, version,
            lambda c: message_sql.post(c, project, queue, client_id, ids, messages, now),
        )

    async def post_once(
        self,
        project: str,
        queue: str,
        client_id: str,
        key: str,
        message: NewMessage,
        *,
        remember: int,
        version: int | None = None,
    ) -> tuple[str, bool]:
        new_id = _new_id()
        now = self._now()

        def job(c: sqlite3.Connection) -> tuple[str, bool]:
            return once.post_once(
                c, project, queue, client_id, key, new_id, message, now, remember
            )

        return await self._write_at(project, queue, version, job)

    async def post_fifo(
        self,
        project: str,
        queue: str,
        client_id: str,
        messages: Sequence[NewMessage],
        *,
        dedup_window: int,
        version: int | None = None,
    ) -> FifoPosted:
        ids = [_new_id() for _ in messages]
        now = self._now()
        return await self._write_at(
            project, queue, version,
            lambda c: message_sql.post_fifo(
                c, project, queue, client_id, ids, messages, now, dedup_window
            ),
        )

    async def list_messages(
        self,
        project: str,
        queue: str,
        *,
        limit: int,
        after: int | None = None,
        client_id: str = "",
        echo: bool = True,
        include_claimed: bool = False,
        include_delayed: bool = False,
    ) -> list[StoredMessage]:
        now = self._now()
        return await self._db.read(
            lambda c: message_sql.list_messages(
                c, project, queue, now, limit, after, client_id, echo, include_claimed,
                include_delayed,
            )
        )

    async def get(self, project: str, queue: str, message_id: str) -> StoredMessage | None:
        now = self._now()
        return await self._db.read(lambda c: message_sql.get(c, project, queue, message_id, now))

    async def get_many(
        self, project: str, queue: str, message_ids: Sequence[str]
    ) -> list[StoredMessage]:
        now = self._now()
        return await self._db.read(
            lambda c: message_sql.get_many(c, project, queue, message_ids, now)
        )

    async def delete(
        self, project: str, queue: str, message_id: str, claim_id: str | None = None
    ) -> DeleteOutcome:
        now = self._now()

        def job(conn: sqlite3.Connection) -> DeleteOutcome:
            found = message_sql.find_for_delete(conn, project, queue, message_id, now)
            if found is None:
                return DeleteOutcome.ABSENT
            seq, holder = found
            if claim_id is None:
                if holder is not None:
                    return DeleteOutcome.CLAIMED
            elif holder is None:
                return DeleteOutcome.NOT_CLAIMED
            elif holder != claim_id:
                return DeleteOutcome.CLAIMED_BY_OTHER
            group = message_sql.delete_seq(conn, seq)
            if holder is not None and group is not None:
                fair_sql.forget(conn, project, queue, [(holder, group)])
            return DeleteOutcome.DELETED

        return await self._db.write(job)

    async def delete_many(
        self,
        project: str,
        queue: str,
        message_ids: Sequence[str],
        claim_ids: Sequence[str] | None = None,
    ) -> int:
        now = self._now()

        def job(conn: sqlite3.Connection) -> int:
            deleted, held = message_sql.delete_many(
                conn, project, queue, message_ids, claim_ids, now
            )
            fair_sql.forget(conn, project, queue, held)
            return deleted

        return await self._db.write(job)

    async def pop(self, project: str, queue: str, limit: int) -> list[StoredMessage]:
        now, claim_id = self._now(), _new_id()
        return await self._db.write(
            lambda c: message_sql.pop(c, project, queue, limit, claim_id, now)
        )

    async def claim(
        self,
        project: str,
        queue: str,
        *,
        limit: int,
        ttl: int,
        grace: int,
        dead_letter: DeadLetterPolicy | None = None,
        version: int | None = None,
        fair: FairPolicy | None = None,
    ) -> ClaimResult:
        now, claim_id = self._now(), _new_id()
        if fair is not None:
            policy = fair
            return await self._write_at(
                project, queue, version,
                lambda c: fair_sql.claim(
                    c, project, queue, claim_id, now, limit, ttl, grace, dead_letter, policy
                ),
            )
        return await self._write_at(
            project, queue, version,
            lambda c: claim_sql.claim(
                c, project, queue, claim_id, now, limit, ttl, grace, dead_letter
            ),
        )

    async def claim_fifo(
        self,
        project: str,
        queue: str,
        *,
        limit: int,
        ttl: int,
        grace: int,
        dead_letter: DeadLetterPolicy | None = None,
        version: int | None = None,
    ) -> ClaimResult:
        now, claim_id = self._now(), _new_id()
        return await self._write_at(
            project, queue, version,
            lambda c: claim_sql.claim_fifo(
                c, project, queue, claim_id, now, limit, ttl, grace, dead_letter
            ),
        )

    async def pop_fifo(self, project: str, queue: str, limit: int) -> list[StoredMessage]:
        now, claim_id = self._now(), _new_id()
        return await self._db.write(
            lambda c: message_sql.pop_fifo(c, project, queue, limit, claim_id, now)
        )

    async def get_claim(self, project: str, queue: str, claim_id: str) -> Claim | None:
        now = self._now()
        return await self._db.read(lambda c: claim_sql.get_claim(c, project, queue, claim_id, now))

    async def renew_claim(
        self, project: str, queue: str, claim_id: str, *, ttl: int, grace: int
    ) -> bool:
        now = self._now()

        def job(conn: sqlite3.Connection) -> bool:
            renewed = claim_sql.renew_claim(conn, project, queue, claim_id, now, ttl, grace)
            if renewed:
                fair_sql.renew(conn, claim_id, now + ttl)
            return renewed

        return await self._db.write(job)

    async def release_claim(self, project: str, queue: str, claim_id: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            claim_sql.release_claim(conn, project, queue, claim_id)
            fair_sql.release(conn, project, queue, claim_id)

        await self._db.write(job)

    async def stats(self, project: str, queue: str) -> QueueStats:
        now = self._now()
        return await self._db.read(lambda c: message_sql.stats(c, project, queue, now))

    async def next_free_at(self, project: str, queue: str) -> float | None:
        now = self._now()
        return await self._db.read(lambda c: message_sql.next_free_at(c, project, queue, now))

    async def delete_queue(self, project: str, queue: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            message_sql.delete_queue(conn, project, queue)
            fair_sql.delete_queue(conn, project, queue)

        await self._db.write(job)

    async def collect_garbage(self) -> int:
        now, total = self._now(), 0
        while True:
            # Bounded steps, so that other operations are not held up behind a long delete.
            removed = await self._db.write(
                lambda c: message_sql.collect_garbage(c, now, GC_BATCH)
                + once.collect_garbage(c, now, GC_BATCH)
                + fair_sql.collect_garbage(c, now, GC_BATCH)
            )
            total += removed
            if removed < GC_BATCH:
                return total


def _add_group_column(conn: sqlite3.Connection) -> None:
    """Databases made before message groups get ``messages.group_id`` (NULL for every
    message: none of them has a group)."""
    columns = {row["name"] for row in conn.execute("PRAGMA table_info(messages)")}
    if "group_id" not in columns:
        conn.execute("ALTER TABLE messages ADD COLUMN group_id TEXT")


def _add_group_index(conn: sqlite3.Connection) -> None:
    """The group index of fair claims (``fair.py``): messages with a group by (project,
    queue, group, seq). Here rather than in ``schema.sql``, after ``_add_group_column``: a
    database made before message groups has no ``group_id`` when the schema runs. On a
    database made before it, the first open builds it (one pass over the messages that
    have a group)."""
    conn.execute(
        "CREATE INDEX IF NOT EXISTS messages_by_group ON messages (project, queue, group_id, "
        "seq) WHERE group_id IS NOT NULL"
    )
