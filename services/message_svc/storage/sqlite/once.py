"""Idempotent posts of the SQLite store (``MessageStore.post_once``): the key, with the id it
was posted with, is stored in the transaction of the post (table ``post_keys``)."""

from __future__ import annotations

import sqlite3

from services.message_svc.storage.base import NewMessage
from services.message_svc.storage.sqlite import messages as message_sql


def post_once(
    conn: sqlite3.Connection,
    project: str,
    queue: str,
    client_id: str,
    key: str,
    new_id: str,
    message: NewMessage,
    now: float,
    remember: int,
) -> tuple[str, bool]:
    row = conn.execute(
        "SELECT id FROM post_keys WHERE project = ? AND queue = ? AND key = ? AND expires > ?",
        (project, queue, key, now),
    ).fetchone()
    if row is not None:
        return str(row[0]), False
    message_sql.post(conn, project, queue, client_id, [new_id], [message], now)
    conn.execute(
        "INSERT OR REPLACE INTO post_keys (project, queue, key, id, expires) "
        "VALUES (?, ?, ?, ?, ?)",
        (project, queue, key, new_id, now + remember),
    )
    return new_id, True


def collect_garbage(conn: sqlite3.Connection, now: float, limit: int) -> int:
    """Forget up to ``limit`` keys remembered long enough."""
    return conn.execute(
        "DELETE FROM post_keys WHERE rowid IN "
        "(SELECT rowid FROM post_keys WHERE expires <= ? LIMIT ?)",
        (now, limit),
    ).rowcount
