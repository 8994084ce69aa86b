"""Queue versions in the SQLite store: plain functions run on a connection's thread."""

from __future__ import annotations

import sqlite3


def current(conn: sqlite3.Connection, project: str, queue: str) -> int:
    """The queue's version (0 when never bumped): one primary-key lookup."""
    row = conn.execute(
        "SELECT version FROM queue_versions WHERE project = ? AND queue = ?", (project, queue)
    ).fetchone()
    return 0 if row is None else int(row["version"])


def bump(conn: sqlite3.Connection, project: str, queue: str) -> int:
    """Raises the version by one and returns it; the write transaction makes the pair atomic.
    (An upsert then a read, rather than ``RETURNING``, which needs SQLite 3.35.)"""
    conn.execute(
        "INSERT INTO queue_versions (project, queue, version) VALUES (?, ?, 1) "
        "ON CONFLICT (project, queue) DO UPDATE SET version = version + 1",
        (project, queue),
    )
    return current(conn, project, queue)
