"""Fair claims of the SQLite store and the in-flight counters they keep (``fair_in_flight``,
``fair_holds`` in ``schema.sql``), written in the transaction of the operation that changes
them.

The counter of a group is the sum of the ``n`` of its holds; a hold is one fair claim's
messages of one group. A claim's holds leave (their ``n`` taken off the counters) when it is
released, or, once it has expired, at the next fair claim of the queue (which settles before it
reads the counters) or the garbage collection. A message deleted under its live claim is taken
off its hold and its counter at once.

The group index is ``messages_by_group`` (project, queue, group_id, seq) on the messages that
have a group (created by the store's ``open``, so databases made before it get it too): a
claim whose window is cut walks the queue's groups on it (one seek per group), skips the noisy
ones, and merges the others' oldest claimable messages past the window by seq (one seek per
message taken); messages without a group are not in it and cost nothing more.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterable
from dataclasses import replace

from services.message_svc.storage.base import ClaimResult, DeadLetterPolicy, FairPolicy
from services.message_svc.storage.fairness import FairChoice
from services.message_svc.storage.sqlite.claims import claimed
from services.message_svc.storage.sqlite.messages import CLAIMABLE, COLUMNS, NO_MARKER, Row

TOTAL = ""
_PAGE = 256


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
    policy: FairPolicy,
) -> ClaimResult:
    settle(conn, project, queue, now)
    choice: FairChoice[Row] = FairChoice(policy, limit, {}, _count(conn, project, queue, TOTAL))
    dead: list[Row] = []
    after = edge = NO_MARKER  # edge: the last message the window looked at
    page = limit  # what a plain claim reads; more only while messages are put aside
    while not choice.done:
        want = min(page, limit + policy.lookahead - choice.read)
        page = min(2 * page, max(_PAGE, limit))
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM messages WHERE project = ? AND queue = ? AND seq > ? "
            f"AND {CLAIMABLE} ORDER BY seq LIMIT ?",
            (project, queue, after, now, now, now, want),
        ).fetchall()
        groups = {row["group_id"] for row in rows} - {None} - set(choice.in_flight)
        if groups:
            choice.know(counts(conn, project, queue, groups))
        for row in rows:
            if choice.done:
                break
            edge = row["seq"]
            if dead_letter is not None and row["claim_count"] >= dead_letter.max_claim_count:
                dead.append(row)
            else:
                choice.offer(row, row["group_id"])
        if len(rows) < want:
            break
        after = rows[-1]["seq"]
    if choice.cut:
        _from_index(conn, project, queue, now, edge, choice, dead_letter, dead)
    taken = sorted(choice.finish(), key=lambda row: int(row["seq"]))
    result = claimed(conn, project, queue, claim_id, now, ttl, grace, dead_letter, taken, dead)
    added = choice.added(lambda row: row["group_id"])
    if added and result.claim is not None:
        hold(conn, project, queue, claim_id, now + ttl, added)
    return replace(result, futile=choice.futile) if choice.futile else result


# The oldest claimable message of a group past a seq, on the group index.
# Parameters: project, queue, group, seq, now, now, now.
_NEXT = (
    f"SELECT {COLUMNS} FROM messages INDEXED BY messages_by_group "
    "WHERE project = ? AND queue = ? AND group_id = ? AND seq > ? "
    f"AND {CLAIMABLE} ORDER BY seq LIMIT 1"
)

# The queue's groups (one seek each on the group index: the next name after the last), with
# the seq of each one's oldest claimable message past a seq (NULL: none).
# Parameters: project, queue, project, queue, project, queue, seq, now, now, now.
_HEADS = (
    "WITH RECURSIVE groups(name) AS ("
    " SELECT (SELECT MIN(group_id) FROM messages INDEXED BY messages_by_group"
    "  WHERE project = ? AND queue = ? AND group_id IS NOT NULL)"
    " UNION ALL"
    " SELECT (SELECT MIN(group_id) FROM messages INDEXED BY messages_by_group"
    "  WHERE project = ? AND queue = ? AND group_id > groups.name)"
    " FROM groups WHERE groups.name IS NOT NULL) "
    "SELECT name, (SELECT seq FROM messages INDEXED BY messages_by_group"
    " WHERE project = ? AND queue = ? AND group_id = groups.name AND seq > ?"
    f" AND {CLAIMABLE} ORDER BY seq LIMIT 1) AS head "
    "FROM groups WHERE name IS NOT NULL"
)


def _from_index(
    conn: sqlite3.Connection,
    project: str,
    queue: str,
    now: float,
    edge: int,
    choice: FairChoice[Row],
    dead_letter: DeadLetterPolicy | None,
    dead: list[Row],
) -> None:
    """Offers the oldest claimable messages past ``edge`` (the window's last) of the groups
    that are not noisy, by seq across groups, until the claim is full (a group that turns
    noisy meanwhile gives no more). Noisy groups' messages are never read here."""
    choice.know(_all_counts(conn, project, queue))
    noisy = [group for group in choice.in_flight if group and not choice.quiet(group)]
    sql, args = _HEADS, [project, queue, project, queue, project, queue, edge, now, now, now]
    if noisy:
        sql += f" AND name NOT IN ({', '.join('?' * len(noisy))})"
        args += noisy
    heads: list[tuple[int, str, Row | None]] = [
        (int(r["head"]), r["name"], None)
        for r in conn.execute(sql, args) if r["head"] is not None
    ]
    heapq.heapify(heads)
    while heads and not choice.full:
        seq, group, row = heapq.heappop(heads)
        if not choice.quiet(group):
            continue
        if row is None:
            row = conn.execute(f"SELECT {COLUMNS} FROM messages WHERE seq = ?",
                               (seq,)).fetchone()
        if dead_letter is not None and row["claim_count"] >= dead_letter.max_claim_count:
            dead.append(row)
        elif not choice.offer_indexed(row, group):
            continue
        nxt = conn.execute(_NEXT, (project, queue, group, seq, now, now, now)).fetchone()
        if nxt is not None:
            heapq.heappush(heads, (int(nxt["seq"]), group, nxt))


def _all_counts(conn: sqlite3.Connection, project: str, queue: str) -> dict[str, int]:
    """The counters of every group of the queue with messages held by fair claims."""
    return {
        row["group_id"]: int(row["n"]) for row in conn.execute(
            "SELECT group_id, n FROM fair_in_flight WHERE project = ? AND queue = ? "
            "AND group_id != ''", (project, queue),
        )
    }


def _count(conn: sqlite3.Connection, project: str, queue: str, group: str) -> int:
    row = conn.execute(
        "SELECT n FROM fair_in_flight WHERE project = ? AND queue = ? AND group_id = ?",
        (project, queue, group),
    ).fetchone()
    return 0 if row is None else int(row["n"])


def counts(
    conn: sqlite3.Connection, project: str, queue: str, groups: Iterable[str]
) -> dict[str, int]:
    """The counters of ``groups`` (0 for a group without one)."""
    wanted = list(groups)
    found = {group: 0 for group in wanted}
    for start in range(0, len(wanted), 500):
        part = wanted[start:start + 500]
        for row in conn.execute(
            "SELECT group_id, n FROM fair_in_flight WHERE project = ? AND queue = ? "
            f"AND group_id IN ({', '.join('?' * len(part))})",
            (project, queue, *part),
        ):
            found[row["group_id"]] = int(row["n"])
    return found


def _add(conn: sqlite3.Connection, project: str, queue: str, group: str, n: int) -> None:
    for key in (group, TOTAL):
        conn.execute(
            "INSERT INTO fair_in_flight (project, queue, group_id, n) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (project, queue, group_id) DO UPDATE SET n = n + excluded.n",
            (project, queue, key, n),
        )
    conn.execute(
        "DELETE FROM fair_in_flight WHERE project = ? AND queue = ? AND group_id IN (?, ?) "
        "AND n <= 0",
        (project, queue, group, TOTAL),
    )


def hold(
    conn: sqlite3.Connection,
    project: str,
    queue: str,
    claim_id: str,
    expires: float,
    added: dict[str, int],
) -> None:
    """Counts a new claim's messages of each group."""
    for group, n in added.items():
        conn.execute(
            "INSERT INTO fair_holds (claim_id, group_id, project, queue, n, expires) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (claim_id, group, project, queue, n, expires),
        )
        _add(conn, project, queue, group, n)


def _drop(conn: sqlite3.Connection, holds: list[Row]) -> int:
    for row in holds:
        _add(conn, row["project"], row["queue"], row["group_id"], -int(row["n"]))
        conn.execute(
            "DELETE FROM fair_holds WHERE claim_id = ? AND group_id = ?",
            (row["claim_id"], row["group_id"]),
        )
    return len(holds)


def settle(conn: sqlite3.Connection, project: str, queue: str, now: float) -> None:
    """Takes the holds of the queue's expired claims off the counters."""
    _drop(conn, conn.execute(
        "SELECT claim_id, group_id, project, queue, n FROM fair_holds "
        "WHERE project = ? AND queue = ? AND expires <= ?",
        (project, queue, now),
    ).fetchall())


def release(conn: sqlite3.Connection, project: str, queue: str, claim_id: str) -> None:
    """Takes a released claim's holds off the counters."""
    _drop(conn, conn.execute(
        "SELECT claim_id, group_id, project, queue, n FROM fair_holds "
        "WHERE claim_id = ? AND project = ? AND queue = ?",
        (claim_id, project, queue),
    ).fetchall())


def renew(conn: sqlite3.Connection, claim_id: str, expires: float) -> None:
    conn.execute("UPDATE fair_holds SET expires = ? WHERE claim_id = ?", (expires, claim_id))


def forget(
    conn: sqlite3.Connection, project: str, queue: str, held: Iterable[tuple[str, str]]
) -> None:
    """Takes messages deleted under their live claim, as (claim id, group), off the holds
    that count them (a message claimed without fairness has none)."""
    for claim_id, group in held:
        if conn.execute(
            "UPDATE fair_holds SET n = n - 1 WHERE claim_id = ? AND group_id = ? AND n > 0",
            (claim_id, group),
        ).rowcount:
            _add(conn, project, queue, group, -1)


def delete_queue(conn: sqlite3.Connection, project: str, queue: str) -> None:
    conn.execute("DELETE FROM fair_holds WHERE project = ? AND queue = ?", (project, queue))
    conn.execute("DELETE FROM fair_in_flight WHERE project = ? AND queue = ?", (project, queue))


def collect_garbage(conn: sqlite3.Connection, now: float, batch: int) -> int:
    """Settles up to ``batch`` holds of expired claims of any queue."""
    return _drop(conn, conn.execute(
        "SELECT claim_id, group_id, project, queue, n FROM fair_holds "
        "INDEXED BY fair_holds_by_expiry WHERE expires <= ? LIMIT ?",
        (now, batch),
    ).fetchall())
