"""Claim operations of the SQLite store: plain functions run on a connection's thread."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from services.message_svc.storage.base import (
    Claim,
    ClaimResult,
    DeadLetterPolicy,
    StoredMessage,
)
from services.message_svc.storage.sqlite.messages import (
    CLAIMABLE,
    COLUMNS,
    NO_MARKER,
    Row,
    select_fifo,
    to_message,
)

# Extends a held message to live at least until the claim's end plus grace.
# Parameters: new expiry, new ttl, new expiry (right-hand sides see the old row).
_EXTEND = "ttl = CASE WHEN expires < ? THEN ? ELSE ttl END, expires = MAX(expires, ?)"


def _extended(message: StoredMessage, msg_ttl: int, msg_expires: float) -> StoredMessage:
    if message.expires >= msg_expires:
        return message
    return replace(message, ttl=msg_ttl, expires=msg_expires)


def claim(
    conn: sqlite3.Connection,
    project: str,
    queue: str,
    claim_id: str,
    now: float,
    limit: int,
    ttl: int,
    grace: int,
    dead_letter: DeadLetterPolicy | None,
) -> ClaimResult:
    taken: list[Row] = []
    dead: list[Row] = []
    after = NO_MARKER
    while len(taken) < limit:
        want = limit - len(taken)
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM messages WHERE project = ? AND queue = ? AND seq > ? "
            f"AND {CLAIMABLE} ORDER BY seq LIMIT ?",
            (project, queue, after, now, now, now, want),
        ).fetchall()
        for row in rows:
            if dead_letter is not None and row["claim_count"] >= dead_letter.max_claim_count:
                dead.append(row)
            else:
                taken.append(row)
        if len(rows) < want:
            break
        after = rows[-1]["seq"]

    return claimed(conn, project, queue, claim_id, now, ttl, grace, dead_letter, taken, dead)


def claim_fifo(
    conn: sqlite3.Connection,
    project: str,
    queue: str,
    claim_id: str,
    now: float,
    limit: int,
    ttl: int,
    grace: int,
    dead_letter: DeadLetterPolicy | None,
) -> ClaimResult:
    taken, dead = select_fifo(conn, project, queue, now, limit, dead_letter)
    return claimed(conn, project, queue, claim_id, now, ttl, grace, dead_letter, taken, dead)


def claimed(
    conn: sqlite3.Connection,
    project: str,
    queue: str,
    claim_id: str,
    now: float,
    ttl: int,
    grace: int,
    dead_letter: DeadLetterPolicy | None,
    taken: list[Row],
    dead: list[Row],
) -> ClaimResult:
    """Makes the claim of ``taken`` and moves ``dead`` to the dead-letter queue."""
    if dead:
        assert dead_letter is not None
        _move_to_dead_letter(conn, project, dead, dead_letter, now)
    if not taken:
        return ClaimResult(claim=None, dead_lettered=tuple(row["id"] for row in dead))

    claim_expires = now + ttl
    msg_ttl = ttl + grace
    msg_expires = claim_expires + grace
    conn.execute(
        "INSERT INTO claims (id, project, queue, ttl, grace, created, expires) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (claim_id, project, queue, ttl, grace, now, claim_expires),
    )
    seqs = [row["seq"] for row in taken]
    conn.execute(
        "UPDATE messages SET claim_id = ?, claim_expires = ?, claim_count = claim_count + 1, "
        f"{_EXTEND} WHERE seq IN ({', '.join('?' * len(seqs))})",
        (claim_id, claim_expires, msg_expires, msg_ttl, msg_expires, *seqs),
    )
    messages = tuple(
        _extended(
            replace(to_message(row, now, claim_id=claim_id), claim_count=row["claim_count"] + 1),
            msg_ttl,
            msg_expires,
        )
        for row in taken
    )
    return ClaimResult(
        claim=Claim(
            id=claim_id, ttl=ttl, grace=grace, created=now, expires=claim_expires,
            messages=messages,
        ),
        dead_lettered=tuple(row["id"] for row in dead),
    )


def _move_to_dead_letter(
    conn: sqlite3.Connection,
    project: str,
    rows: list[Row],
    policy: DeadLetterPolicy,
    now: float,
) -> None:
    conn.execute(
        f"DELETE FROM messages WHERE seq IN ({', '.join('?' * len(rows))})",
        [row["seq"] for row in rows],
    )
    conn.executemany(
        "INSERT INTO messages (project, queue, id, body, ttl, created, expires, visible_at, "
        "client_id, group_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                project, policy.queue, row["id"], row["body"],
                row["ttl"] if policy.ttl is None else policy.ttl,
                row["created"],
                row["expires"] if policy.ttl is None else now + policy.ttl,
                row["visible_at"], row["client_id"], row["group_id"],
            )
            for row in rows
        ],
    )


def get_claim(
    conn: sqlite3.Connection, project: str, queue: str, claim_id: str, now: float
) -> Claim | None:
    row = conn.execute(
        "SELECT ttl, grace, created, expires FROM claims "
        "WHERE id = ? AND project = ? AND queue = ? AND expires > ?",
        (claim_id, project, queue, now),
    ).fetchone()
    if row is None:
        return None
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM messages INDEXED BY messages_by_claim "
        "WHERE claim_id = ? AND project = ? AND queue = ? "
        "AND claim_expires > ? AND expires > ? ORDER BY seq",
        (claim_id, project, queue, now, now),
    ).fetchall()
    return Claim(
        id=claim_id, ttl=row["ttl"], grace=row["grace"], created=row["created"],
        expires=row["expires"],
        messages=tuple(to_message(r, now) for r in rows),
    )


def renew_claim(
    conn: sqlite3.Connection,
    project: str,
    queue: str,
    claim_id: str,
    now: float,
    ttl: int,
    grace: int,
) -> bool:
    claim_expires = now + ttl
    renewed = conn.execute(
        "UPDATE claims SET ttl = ?, grace = ?, expires = ? "
        "WHERE id = ? AND project = ? AND queue = ? AND expires > ?",
        (ttl, grace, claim_expires, claim_id, project, queue, now),
    ).rowcount
    if not renewed:
        return False
    msg_expires = claim_expires + grace
    conn.execute(
        f"UPDATE messages INDEXED BY messages_by_claim SET claim_expires = ?, {_EXTEND} "
        "WHERE claim_id = ? AND project = ? AND queue = ? AND claim_expires > ? "
        "AND expires > ?",
        (claim_expires, msg_expires, ttl + grace, msg_expires, claim_id, project, queue, now,
         now),
    )
    return True


def release_claim(
    conn: sqlite3.Connection, project: str, queue: str, claim_id: str
) -> None:
    conn.execute(
        "DELETE FROM claims WHERE id = ? AND project = ? AND queue = ?",
        (claim_id, project, queue),
    )
    conn.execute(
        "UPDATE messages INDEXED BY messages_by_claim SET claim_id = NULL, claim_expires = 0 "
        "WHERE claim_id = ? AND project = ? AND queue = ?",
        (claim_id, project, queue),
    )
