"""Watchers across replicas in the SQLite file (several processes on one machine share it).

Two tables: ``watches`` (one row per replica and watched queue, with its expiry) and
``watch_feed`` (the feed; ``seq`` is AUTOINCREMENT, so it never goes back, not even once
every row was removed). Writers serialize on the file (``BEGIN IMMEDIATE``), so events are
committed in ``seq`` order and a reader that has seen ``seq`` n never later finds a smaller
one: the cursor is the last ``seq`` read. Readers poll (``FEED_POLL``).
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Callable, Sequence

from services.common.sqlite_store import Database
from services.notifier_svc.storage import base
from services.notifier_svc.storage.base import (
    FEED_RETENTION,
    WatchEvent,
    WatchKey,
    poll_feed,
)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS watches (
        project TEXT NOT NULL,
        queue   TEXT NOT NULL,
        replica TEXT NOT NULL,
        expires REAL NOT NULL,
        PRIMARY KEY (project, queue, replica)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS watches_replica ON watches (replica)",
    "CREATE INDEX IF NOT EXISTS watches_expires ON watches (expires)",
    """CREATE TABLE IF NOT EXISTS watch_feed (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        origin      TEXT NOT NULL,
        project     TEXT NOT NULL,
        queue       TEXT NOT NULL,
        payload     BLOB NOT NULL,
        created     REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS watch_feed_created ON watch_feed (created)",
)


def _event(row: sqlite3.Row) -> WatchEvent:
    return WatchEvent(
        origin=row["origin"], project=row["project"], queue=row["queue"],
        payload=bytes(row["payload"]),
    )


def collect(conn: sqlite3.Connection, now: float) -> None:
    """Remove expired watch entries and old events (part of ``collect_garbage``)."""
    conn.execute("DELETE FROM watches WHERE expires <= ?", (now,))
    conn.execute("DELETE FROM watch_feed WHERE created <= ?", (now - FEED_RETENTION,))


class SqliteWatches:
    """The watch registry and feed of :class:`SqliteNotifierStore` (a mixin)."""

    _db: Database
    _now: Callable[[], float]

    async def keep_watching(
        self, replica: str, keys: Sequence[WatchKey], ttl: float
    ) -> builtins.list[WatchKey]:
        now = self._now()

        def work(conn: sqlite3.Connection) -> builtins.list[WatchKey]:
            lapsed = []
            for project, queue in keys:
                row = conn.execute(
                    "SELECT expires FROM watches WHERE project = ? AND queue = ? AND replica = ?",
                    (project, queue, replica),
                ).fetchone()
                if row is None or float(row["expires"]) <= now:
                    lapsed.append((project, queue))
                conn.execute(
                    "INSERT INTO watches (project, queue, replica, expires) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (project, queue, replica) "
                    "DO UPDATE SET expires = excluded.expires",
                    (project, queue, replica, now + ttl),
                )
            return lapsed

        return await self._db.write(work, "register the watchers")

    async def stop_watching(
        self, replica: str, keys: Sequence[WatchKey] | None = None
    ) -> None:
        def work(conn: sqlite3.Connection) -> None:
            if keys is None:
                conn.execute("DELETE FROM watches WHERE replica = ?", (replica,))
                return
            conn.executemany(
                "DELETE FROM watches WHERE project = ? AND queue = ? AND replica = ?",
                [(project, queue, replica) for project, queue in keys],
            )

        await self._db.write(work, "unregister the watchers")

    async def watchers(self, project: str, queue: str) -> builtins.list[str]:
        rows = await self._db.fetchall(
            "read the watchers",
            "SELECT replica FROM watches WHERE project = ? AND queue = ? AND expires > ? "
            "ORDER BY replica",
            (project, queue, self._now()),
        )
        return [row["replica"] for row in rows]

    async def publish_watch_event(self, event: WatchEvent) -> None:
        now = self._now()

        def work(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "INSERT INTO watch_feed (origin, project, queue, payload, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (event.origin, event.project, event.queue, event.payload, now),
            )
            seq = int(cursor.lastrowid or 0)
            conn.execute("DELETE FROM watch_feed WHERE seq <= ?", (seq - base.FEED_MAX_EVENTS,))

        await self._db.write(work, "publish to the watchers")

    async def watch_feed_end(self) -> str:
        rows = await self._db.fetchall(
            "read the watch feed", "SELECT coalesce(max(seq), 0) AS seq FROM watch_feed"
        )
        return str(rows[0]["seq"])

    async def read_watch_events(
        self, cursor: str, *, limit: int, wait: float = 0.0
    ) -> tuple[builtins.list[WatchEvent], str]:
        after = int(cursor)

        async def read() -> tuple[builtins.list[WatchEvent], str]:
            rows = await self._db.fetchall(
                "read the watch feed",
                "SELECT seq, origin, project, queue, payload FROM watch_feed "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            )
            return [_event(row) for row in rows], str(rows[-1]["seq"]) if rows else cursor

        return await poll_feed(read, cursor, wait)
