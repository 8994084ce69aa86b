"""Message operations of the SQLite store: plain functions run on a connection's thread.

Each function is one operation of the contract (see ``storage/base.py``); the database layer
runs writes inside a transaction and reads inside one snapshot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from services.message_svc.storage.base import (
    DeadLetterPolicy,
    FifoPosted,
    NewMessage,
    QueueStats,
    StoredMessage,
)

COLUMNS = (
    "seq, id, body, ttl, created, expires, visible_at, client_id, claim_id, claim_expires, "
    "claim_count, group_id"
)
Row = sqlite3.Row

# Above every real seq (AUTOINCREMENT starts at 1).
NO_MARKER = 0

# Claimable: unexpired, visible, not held by a live claim. Parameters: now, now, now.
CLAIMABLE = "claim_expires <= ? AND expires > ? AND visible_at <= ?"


def to_message(row: Row, now: float, claim_id: str | None = None) -> StoredMessage:
    live_claim = row["claim_id"] if row["claim_expires"] > now else None
    return StoredMessage(
        id=row["id"],
        seq=row["seq"],
        body=bytes(row["body"]),
        ttl=row["ttl"],
        created=row["created"],
        expires=row["expires"],
        visible_at=row["visible_at"],
        client_id=row["client_id"],
        claim_id=claim_id if claim_id is not None else live_claim,
        claim_count=row["claim_count"],
        group_id=row["group_id"],
    )


def post(
    conn: sqlite3.Connection,
    project: str,
    queue: str,
    client_id: str,
    ids: Sequence[str],
    messages: Sequence[NewMessage],
    now: float,
) -> tuple[str, ...]:
    conn.executemany(
        "INSERT INTO messages (project, queue, id, body, ttl, created, expires, visible_at, "
        "client_id, group_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (project, queue, mid, m.body, m.ttl, now, now + m.ttl, now + m.delay, client_id,
             m.group_id)
            for mid, m in zip(ids, messages, strict=True)
        ],
    )
    return tuple(ids)


def post_fifo(
    conn: sqlite3.Connection,
    project: str,
    queue: str,
    client_id: str,
    ids: Sequence[str],
    messages: Sequence[NewMessage],
    now: float,
    dedup_window: int,
) -> FifoPosted:
    answered: list[str] = []
    stored: list[bool] = []
    rows: list[tuple[Any, ...]] = []
    accepted: dict[str, str] = {}
    for mid, m in zip(ids, messages, strict=True):
        if m.dedup_id is not None:
            first = accepted.get(m.dedup_id) or _deduplicated(conn, project, queue, m.dedup_id, now)
            if first is not None:
                answered.append(first)
                stored.append(False)
                continue
            accepted[m.dedup_id] = mid
        rows.append((project, queue, mid, m.body, m.ttl, now, now + m.ttl, now + m.delay,
                     client_id, m.group_id))
        answered.append(mid)
        stored.append(True)
    conn.executemany(
        "INSERT INTO messages (project, queue, id, body, ttl, created, expires, visible_at, "
        "client_id, group_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.executemany(
        "INSERT OR REPLACE INTO dedup (project, queue, dedup_id, message_id, expires) "
        "VALUES (?, ?, ?, ?, ?)",
        [(project, queue, did, mid, now + dedup_window) for did, mid in accepted.items()],
    )
    return FifoPosted(ids=tuple(answered), stored=tuple(stored))


def _deduplicated(
    conn: sqlite3.Connection, project: str, queue: str, dedup_id: str, now: float
) -> str | None:
    row = conn.execute(
        "SELECT message_id FROM dedup WHERE project = ? AND queue = ? AND dedup_id = ? "
        "AND expires > ?",
        (project, queue, dedup_id, now),
    ).fetchone()
    return None if row is None else str(row["message_id"])


_LIST_SQL: dict[tuple[bool, bool, bool], str] = {}


def _list_sql(echo: bool, include_claimed: bool, include_delayed: bool) -> str:
    key = (echo, include_claimed, include_delayed)
    sql = _LIST_SQL.get(key)
    if sql is None:
        where = ["project = ?", "queue = ?", "seq > ?", "expires > ?"]
        if not include_claimed:
            where.append("claim_expires <= ?")
        if not include_delayed:
            where.append("visible_at <= ?")
        if not echo:
            where.append("client_id != ?")
        sql = f"SELECT {COLUMNS} FROM messages WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        _LIST_SQL[key] = sql
    return sql


def list_messages(
    conn: sqlite3.Connection,
    project: str,
    queue: str,
    now: float,
    limit: int,
    after: int | None,
    client_id: str,
    echo: bool,
    include_claimed: bool,
    include_delayed: bool,
) -> list[StoredMessage]:
    echo = echo or not client_id
    params: list[Any] = [project, queue, NO_MARKER if after is None else after, now]
    if not include_claimed:
        params.append(now)
    if not include_delayed:
        params.append(now)
    if not echo:
        params.append(client_id)
    params.append(limit)
    rows = conn.execute(_list_sql(echo, include_claimed, include_delayed), params).fetchall()
    return [to_message(row, now) for row in rows]


def get(
    conn: sqlite3.Connection, project: str, queue: str, message_id: str, now: float
) -> StoredMessage | None:
    row = conn.execute(
        f"SELECT {COLUMNS} FROM messages INDEXED BY messages_by_id "
        "WHERE id = ? AND project = ? AND queue = ? AND expires > ?",
        (message_id, project, queue, now),
    ).fetchone()
    return None if row is None else to_message(row, now)


def get_many(
    conn: sqlite3.Connection, project: str, queue: str, message_ids: Sequence[str], now: float
) -> list[StoredMessage]:
    ids = list(dict.fromkeys(message_ids))
    if not ids:
        return []
    marks = ", ".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM messages INDEXED BY messages_by_id "
        f"WHERE id IN ({marks}) AND project = ? AND queue = ? AND expires > ? ORDER BY seq",
        (*ids, project, queue, now),
    ).fetchall()
    return [to_message(row, now) for row in rows]


def find_for_delete(
    conn: sqlite3.Connection, project: str, queue: str, message_id: str, now: float
) -> tuple[int, str | None] | None:
    """(seq, live claim id) of the message, or None when absent or expired."""
    row = conn.execute(
        "SELECT seq, claim_id, claim_expires FROM messages INDEXED BY messages_by_id "
        "WHERE id = ? AND project = ? AND queue = ? AND expires > ?",
        (message_id, project, queue, now),
    ).fetchone()
    if row is None:
        return None
    return row["seq"], (row["claim_id"] if row["claim_expires"] > now else None)


def delete_seq(conn: sqlite3.Connection, seq: int) -> str | None:
    """Deletes the message; returns its group."""
    row = conn.execute("DELETE FROM messages WHERE seq = ? RETURNING group_id", (seq,)).fetchone()
    return None if row is None else row["group_id"]


def delete_many(
    conn: sqlite3.Connection,
    project: str,
    queue: str,
    message_ids: Sequence[str],
    claim_ids: Sequence[str] | None,
    now: float,
) -> tuple[int, list[tuple[str, str]]]:
    """(how many were deleted, (live claim, group) of each deleted one that had both)."""
    ids = list(dict.fromkeys(message_ids))
    if not ids:
        return 0, []
    sql = (
        f"DELETE FROM messages INDEXED BY messages_by_id WHERE id IN ({', '.join('?' * len(ids))}) "
        "AND project = ? AND queue = ?"
    )
    params: list[Any] = [*ids, project, queue]
    if claim_ids is not None:
        cids = list(dict.fromkeys(claim_ids))
        held_by = f" OR claim_id IN ({', '.join('?' * len(cids))})" if cids else ""
        sql += f" AND (claim_expires <= ?{held_by})"
        params += [now, *cids]
    rows = conn.execute(sql + " RETURNING claim_id, claim_expires, group_id", params).fetchall()
    return len(rows), [
        (row["claim_id"], row["group_id"]) for row in rows
        if row["group_id"] is not None and row["claim_id"] and row["claim_expires"] > now
    ]


def pop(
    conn: sqlite3.Connection, project: str, queue: str, limit: int, claim_id: str, now: float
) -> list[StoredMessage]:
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM messages WHERE project = ? AND queue = ? AND {CLAIMABLE} "
        "ORDER BY seq LIMIT ?",
        (project, queue, now, now, now, limit),
    ).fetchall()
    if rows:
        seqs = [row["seq"] for row in rows]
        conn.execute(f"DELETE FROM messages WHERE seq IN ({', '.join('?' * len(seqs))})", seqs)
    return [to_message(row, now, claim_id=claim_id) for row in rows]


def pop_fifo(
    conn: sqlite3.Connection, project: str, queue: str, limit: int, claim_id: str, now: float
) -> list[StoredMessage]:
    rows, _ = select_fifo(conn, project, queue, now, limit, None)
    if rows:
        seqs = [row["seq"] for row in rows]
        conn.execute(f"DELETE FROM messages WHERE seq IN ({', '.join('?' * len(seqs))})", seqs)
    return [to_message(row, now, claim_id=claim_id) for row in rows]


# Rows read per step of a FIFO claim's walk through its queue.
_FIFO_PAGE = 256


def select_fifo(
    conn: sqlite3.Connection,
    project: str,
    queue: str,
    now: float,
    limit: int,
    dead_letter: DeadLetterPolicy | None,
) -> tuple[list[Row], list[Row]]:
    """The messages a FIFO claim takes and those it moves to the dead-letter queue.

    Walks the queue's unexpired messages by seq: a group is passed over from its first
    message that is held by a live claim or still delayed; others are taken (or moved) in
    order. Then groups with a claimed message beyond the walk are dropped from what was
    taken: a group is locked while any of its messages is claimed, wherever it sits.
    """
    taken: list[Row] = []
    dead: list[Row] = []
    passed: set[str] = set()
    seen = NO_MARKER  # seq of the last message looked at
    ended = False  # every message of the queue was looked at
    while len(taken) < limit and not ended:
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM messages WHERE project = ? AND queue = ? AND seq > ? "
            "AND expires > ? ORDER BY seq LIMIT ?",
            (project, queue, seen, now, _FIFO_PAGE),
        ).fetchall()
        ended = len(rows) < _FIFO_PAGE
        for i, row in enumerate(rows):
            seen = row["seq"]
            group = row["group_id"]
            if group is not None and group in passed:
                continue
            if row["claim_expires"] > now or row["visible_at"] > now:
                if group is not None:
                    passed.add(group)
                continue
            if dead_letter is not None and row["claim_count"] >= dead_letter.max_claim_count:
                dead.append(row)
            else:
                taken.append(row)
                if len(taken) == limit:
                    ended = ended and i == len(rows) - 1
                    break
    groups = {row["group_id"] for row in (*taken, *dead)} - {None}
    if groups and not ended:
        marks = ", ".join("?" * len(groups))
        locked = {
            r["group_id"] for r in conn.execute(
                "SELECT DISTINCT group_id FROM messages WHERE project = ? AND queue = ? "
                f"AND seq > ? AND expires > ? AND claim_expires > ? AND group_id IN ({marks})",
                (project, queue, seen, now, now, *groups),
            )
        }
        if locked:
            taken = [row for row in taken if row["group_id"] not in locked]
            dead = [row for row in dead if row["group_id"] not in locked]
    return taken, dead


def stats(conn: sqlite3.Connection, project: str, queue: str, now: float) -> QueueStats:
    total, claimed = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(claim_expires > ?), 0) FROM messages "
        "WHERE project = ? AND queue = ? AND expires > ?",
        (now, project, queue, now),
    ).fetchone()
    oldest = newest = None
    if total:
        ends = []
        for order in ("ASC", "DESC"):
            row = conn.execute(
                f"SELECT {COLUMNS} FROM messages WHERE project = ? AND queue = ? "
                f"AND expires > ? ORDER BY seq {order} LIMIT 1",
                (project, queue, now),
            ).fetchone()
            ends.append(None if row is None else to_message(row, now))
        oldest, newest = ends
    return QueueStats(
        claimed=int(claimed), free=int(total) - int(claimed), total=int(total),
        oldest=oldest, newest=newest,
    )


def next_free_at(conn: sqlite3.Connection, project: str, queue: str, now: float) -> float | None:
    row = conn.execute(
        "SELECT MIN(CASE WHEN visible_at > ? THEN visible_at END), "
        "MIN(CASE WHEN claim_expires > ? THEN claim_expires END) FROM messages "
        "WHERE project = ? AND queue = ? AND expires > ?",
        (now, now, project, queue, now),
    ).fetchone()
    times = [t for t in row if t is not None]
    return float(min(times)) if times else None


def delete_queue(conn: sqlite3.Connection, project: str, queue: str) -> None:
    conn.execute("DELETE FROM messages WHERE project = ? AND queue = ?", (project, queue))
    conn.execute("DELETE FROM claims WHERE project = ? AND queue = ?", (project, queue))
    conn.execute("DELETE FROM dedup WHERE project = ? AND queue = ?", (project, queue))


def collect_garbage(conn: sqlite3.Connection, now: float, batch: int) -> int:
    removed = conn.execute(
        "DELETE FROM messages WHERE seq IN "
        "(SELECT seq FROM messages WHERE expires <= ? LIMIT ?)",
        (now, batch),
    ).rowcount
    removed += conn.execute(
        "DELETE FROM claims WHERE id IN (SELECT id FROM claims WHERE expires <= ? LIMIT ?)",
        (now, batch),
    ).rowcount
    removed += conn.execute(
        "DELETE FROM dedup WHERE (project, queue, dedup_id) IN "
        "(SELECT project, queue, dedup_id FROM dedup WHERE expires <= ? LIMIT ?)",
        (now, batch),
    ).rowcount
    return int(removed)
