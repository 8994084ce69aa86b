"""Subscriptions and the delivery outbox in one SQLite file.

Two tables: ``subscriptions`` (unique on project, queue, subscriber) and ``deliveries`` (the
outbox). A subscription's deletion removes its deliveries in the same transaction, and
``enqueue`` inserts only deliveries whose subscription exists, so the outbox never holds an
orphan. The watch registry and feed are in ``watches.py``.
"""

from __future__ import annotations

import builtins
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from services.common.errors import SubscriptionAlreadyExists, SubscriptionNotFound
from services.common.sqlite_store import Database, SqliteUri, parse_uri
from services.notifier_svc.storage.base import (
    ClaimShares,
    Delivery,
    DeliveryKind,
    NewDelivery,
    Subscription,
    new_id,
    over_quota,
)
from services.notifier_svc.storage.sqlite import watches
from services.notifier_svc.storage.sqlite.watches import SqliteWatches

STORE_NAME = "notifier store"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS subscriptions (
        id         TEXT PRIMARY KEY,
        project    TEXT NOT NULL,
        queue      TEXT NOT NULL,
        subscriber TEXT NOT NULL,
        ttl        INTEGER NOT NULL,
        options    TEXT NOT NULL,
        confirmed  INTEGER NOT NULL,
        created    REAL NOT NULL,
        expires    REAL NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS subscriptions_subscriber "
    "ON subscriptions (project, queue, subscriber)",
    "CREATE INDEX IF NOT EXISTS subscriptions_queue ON subscriptions (project, queue, id)",
    "CREATE INDEX IF NOT EXISTS subscriptions_expires ON subscriptions (expires)",
    """CREATE TABLE IF NOT EXISTS deliveries (
        id              TEXT PRIMARY KEY,
        subscription_id TEXT NOT NULL,
        project         TEXT NOT NULL,
        queue           TEXT NOT NULL,
        subscriber      TEXT NOT NULL,
        options         TEXT NOT NULL,
        kind            TEXT NOT NULL,
        document        BLOB NOT NULL,
        attempts        INTEGER NOT NULL,
        due             REAL NOT NULL,
        created         REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (due)",
    "CREATE INDEX IF NOT EXISTS deliveries_lane ON deliveries (subscriber, due, id)",
    "CREATE INDEX IF NOT EXISTS deliveries_subscription ON deliveries (subscription_id)",
    *watches.SCHEMA,
)

# The lanes (subscribers with pending deliveries) whose earliest delivery is due, earliest
# first: a loose index scan of deliveries_lane, one index seek per lane, whatever the backlog.
_DUE_LANES = """
    WITH RECURSIVE lane(subscriber) AS (
        SELECT (SELECT min(subscriber) FROM deliveries)
        UNION ALL
        SELECT (SELECT min(subscriber) FROM deliveries WHERE subscriber > lane.subscriber)
        FROM lane WHERE lane.subscriber IS NOT NULL
    )
    SELECT subscriber, due FROM (
        SELECT subscriber,
               (SELECT min(due) FROM deliveries WHERE deliveries.subscriber = lane.subscriber)
               AS due
        FROM lane WHERE subscriber IS NOT NULL
    )
    WHERE due <= ? ORDER BY due, subscriber
"""

_SUBSCRIPTION_COLUMNS = "id, project, queue, subscriber, ttl, options, confirmed, created, expires"
_DELIVERY_COLUMNS = (
    "id, subscription_id, project, queue, subscriber, options, kind, document, attempts, due, "
    "created"
)


def _dump(options: Mapping[str, Any]) -> str:
    return orjson.dumps(options).decode()


def _subscription(row: sqlite3.Row) -> Subscription:
    return Subscription(
        id=row["id"], project=row["project"], queue=row["queue"],
        subscriber=row["subscriber"], ttl=int(row["ttl"]), options=orjson.loads(row["options"]),
        confirmed=bool(row["confirmed"]), created=float(row["created"]),
        expires=float(row["expires"]),
    )


def _delivery(row: sqlite3.Row, due: float | None = None) -> Delivery:
    return Delivery(
        id=row["id"], subscription_id=row["subscription_id"], project=row["project"],
        queue=row["queue"], subscriber=row["subscriber"], options=orjson.loads(row["options"]),
        kind=DeliveryKind(row["kind"]), document=bytes(row["document"]),
        attempts=int(row["attempts"]), due=float(row["due"]) if due is None else due,
        created=float(row["created"]),
    )


def _live(
    conn: sqlite3.Connection, project: str, queue: str, subscription_id: str, now: float
) -> Subscription | None:
    rows = conn.execute(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "
        "WHERE id = ? AND project = ? AND queue = ? AND expires > ?",
        (subscription_id, project, queue, now),
    ).fetchall()
    return _subscription(rows[0]) if rows else None


def _remove(conn: sqlite3.Connection, where: str, params: Sequence[Any]) -> int:
    """Delete the subscriptions matching ``where`` and their deliveries; how many went."""
    conn.execute(
        f"DELETE FROM deliveries WHERE subscription_id IN "
        f"(SELECT id FROM subscriptions WHERE {where})",
        tuple(params),
    )
    cur = conn.execute(f"DELETE FROM subscriptions WHERE {where}", tuple(params))
    return int(cur.rowcount)


class SqliteNotifierStore(SqliteWatches):
    """:class:`services.notifier_svc.storage.base.NotifierStore` on one SQLite file."""

    def __init__(self, uri: SqliteUri, now: Callable[[], float] = time.time) -> None:
        self._db = Database(uri, STORE_NAME, SCHEMA)
        self._now = now

    @classmethod
    def from_uri(cls, uri: str, now: Callable[[], float] = time.time) -> SqliteNotifierStore:
        return cls(parse_uri(uri, STORE_NAME), now)

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    # subscriptions ---------------------------------------------------------------------------

    async def create(
        self, project: str, queue: str, subscriber: str, ttl: int, options: Mapping[str, Any],
        *, quota: int = 0,
    ) -> tuple[Subscription, bool]:
        now = self._now()

        def work(conn: sqlite3.Connection) -> tuple[Subscription, bool]:
            rows = conn.execute(
                f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "
                "WHERE project = ? AND queue = ? AND subscriber = ?",
                (project, queue, subscriber),
            ).fetchall()
            if rows:
                existing = _subscription(rows[0])
                if existing.expires > now:
                    return existing, False
            if quota:
                # The queue's index entries, at most the quota of live ones plus those expired
                # and not yet swept.
                (live,) = conn.execute(
                    "SELECT COUNT(*) FROM subscriptions INDEXED BY subscriptions_queue "
                    "WHERE project = ? AND queue = ? AND expires > ?", (project, queue, now),
                ).fetchone()
                if live >= quota:
                    raise over_quota(project, queue, quota)
            if rows:
                _remove(conn, "id = ?", [_subscription(rows[0]).id])
            created = Subscription(
                id=new_id(now), project=project, queue=queue, subscriber=subscriber, ttl=ttl,
                options=options, confirmed=False, created=now, expires=now + ttl,
            )
            conn.execute(
                f"INSERT INTO subscriptions ({_SUBSCRIPTION_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
                (created.id, project, queue, subscriber, ttl, _dump(options), now, now + ttl),
            )
            return created, True

        return await self._db.write(work, "create the subscription")

    async def get(self, project: str, queue: str, subscription_id: str) -> Subscription | None:
        rows = await self._db.fetchall(
            "read the subscription",
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "
            "WHERE id = ? AND project = ? AND queue = ? AND expires > ?",
            (subscription_id, project, queue, self._now()),
        )
        return _subscription(rows[0]) if rows else None

    async def list(
        self, project: str, queue: str, *, limit: int, marker: str = ""
    ) -> list[Subscription]:
        rows = await self._db.fetchall(
            "list the subscriptions",
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "
            "WHERE project = ? AND queue = ? AND id > ? AND expires > ? ORDER BY id LIMIT ?",
            (project, queue, marker, self._now(), limit),
        )
        return [_subscription(row) for row in rows]

    async def subscribers(self, project: str, queue: str) -> builtins.list[Subscription]:
        rows = await self._db.fetchall(
            "read the subscriptions",
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "
            "WHERE project = ? AND queue = ? AND expires > ? ORDER BY id",
            (project, queue, self._now()),
        )
        return [_subscription(row) for row in rows]

    async def update(
        self,
        project: str,
        queue: str,
        subscription_id: str,
        *,
        subscriber: str | None = None,
        ttl: int | None = None,
        options: Mapping[str, Any] | None = None,
        confirmed: bool | None = None,
    ) -> Subscription:
        now = self._now()

        def work(conn: sqlite3.Connection) -> Subscription:
            current = _live(conn, project, queue, subscription_id, now)
            if current is None:
                raise SubscriptionNotFound(subscription_id=subscription_id)
            if subscriber is not None and subscriber != current.subscriber:
                rows = conn.execute(
                    "SELECT id, expires FROM subscriptions "
                    "WHERE project = ? AND queue = ? AND subscriber = ?",
                    (project, queue, subscriber),
                ).fetchall()
                if rows and float(rows[0]["expires"]) > now:
                    raise SubscriptionAlreadyExists()
                if rows:
                    _remove(conn, "id = ?", [rows[0]["id"]])
            new_ttl = current.ttl if ttl is None else ttl
            updated = Subscription(
                id=current.id, project=project, queue=queue,
                subscriber=current.subscriber if subscriber is None else subscriber,
                ttl=new_ttl, options=current.options if options is None else options,
                confirmed=current.confirmed if confirmed is None else confirmed,
                created=current.created,
                expires=current.expires if ttl is None else now + ttl,
            )
            conn.execute(
                "UPDATE subscriptions SET subscriber = ?, ttl = ?, options = ?, confirmed = ?, "
                "expires = ? WHERE id = ?",
                (updated.subscriber, updated.ttl, _dump(updated.options), int(updated.confirmed),
                 updated.expires, updated.id),
            )
            return updated

        return await self._db.write(work, "update the subscription")

    async def confirm(
        self, project: str, queue: str, subscription_id: str, confirmed: bool
    ) -> Subscription:
        return await self.update(project, queue, subscription_id, confirmed=confirmed)

    async def delete(self, project: str, queue: str, subscription_id: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            removed = _remove(
                conn, "id = ? AND project = ? AND queue = ?", [subscription_id, project, queue]
            )
            return removed > 0

        return await self._db.write(work, "delete the subscription")

    async def delete_queue(self, project: str, queue: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            return _remove(conn, "project = ? AND queue = ?", [project, queue])

        return await self._db.write(work, "delete the queue's subscriptions")

    async def purge_deliveries(self, project: str, queue: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM deliveries WHERE subscription_id IN "
                "(SELECT id FROM subscriptions WHERE project = ? AND queue = ?)",
                (project, queue),
            )
            return int(cursor.rowcount)

        return await self._db.write(work, "remove the queue's deliveries")

    async def collect_garbage(self) -> int:
        now = self._now()

        def work(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM deliveries WHERE subscription_id IN "
                "(SELECT id FROM subscriptions WHERE expires <= ?)",
                (now,),
            )
            deliveries = int(cursor.rowcount)
            cursor = conn.execute(
                "DELETE FROM subscriptions WHERE expires <= ?", (now,)
            )
            removed = deliveries + int(cursor.rowcount)
            watches.collect(conn, now)
            return removed

        return await self._db.write(work, "remove expired subscriptions")

    # the outbox ------------------------------------------------------------------------------

    async def enqueue(self, deliveries: Sequence[NewDelivery]) -> int:
        if not deliveries:
            return 0
        now = self._now()
        wanted = sorted({d.subscription_id for d in deliveries})

        def work(conn: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(wanted))
            live = {row["id"] for row in conn.execute(
                f"SELECT id FROM subscriptions WHERE id IN ({marks})", wanted
            ).fetchall()}
            rows = [
                (new_id(now), d.subscription_id, d.project, d.queue, d.subscriber,
                 _dump(d.options), d.kind.value, d.document, now, now)
                for d in deliveries if d.subscription_id in live
            ]
            conn.executemany(
                f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                rows,
            )
            return len(rows)

        return await self._db.write(work, "store the notifications")

    async def claim_due(
        self,
        *,
        limit: int,
        lease: float,
        per_subscriber: int,
        busy: Mapping[str, int] | None = None,
    ) -> builtins.list[Delivery]:
        now = self._now()
        until = now + lease

        def work(conn: sqlite3.Connection) -> builtins.list[Delivery]:
            shares = ClaimShares(limit, per_subscriber, busy)
            claimed: list[tuple[float, str, Delivery]] = []
            for lane in conn.execute(_DUE_LANES, (now,)).fetchall():
                subscriber = lane["subscriber"]
                room = shares.room(subscriber)
                if room <= 0:
                    if shares.left <= 0:
                        break
                    continue
                taken = conn.execute(
                    f"SELECT {_DELIVERY_COLUMNS} FROM deliveries "
                    "WHERE subscriber = ? AND due <= ? ORDER BY due, id LIMIT ?",
                    (subscriber, now, room),
                ).fetchall()
                marks = ",".join("?" * len(taken))
                conn.execute(
                    f"UPDATE deliveries SET due = ? WHERE id IN ({marks})",
                    (until, *(row["id"] for row in taken)),
                )
                shares.took(subscriber, len(taken))
                claimed += [
                    (float(row["due"]), row["id"], _delivery(row, due=until)) for row in taken
                ]
            return [delivery for *_, delivery in sorted(claimed, key=lambda c: c[:2])]

        return await self._db.write(work, "take due notifications")

    async def reschedule(
        self,
        delivery_id: str,
        *,
        due: float,
        attempts: int,
        leased_until: float | None = None,
    ) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            if leased_until is None:
                cursor = conn.execute(
                    "UPDATE deliveries SET due = ?, attempts = ? WHERE id = ?",
                    (due, attempts, delivery_id),
                )
            else:
                cursor = conn.execute(
                    "UPDATE deliveries SET due = ?, attempts = ? WHERE id = ? AND due = ?",
                    (due, attempts, delivery_id, leased_until),
                )
            return cursor.rowcount > 0

        return await self._db.write(work, "reschedule a notification")

    async def complete(self, delivery_id: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM deliveries WHERE id = ?", (delivery_id,))

        await self._db.write(work, "remove a notification")

    async def next_due(self) -> float | None:
        rows = await self._db.fetchall(
            "read the notifications", "SELECT min(due) AS due FROM deliveries"
        )
        return None if rows[0]["due"] is None else float(rows[0]["due"])

    async def count_deliveries(self, subscription_id: str | None = None) -> int:
        if subscription_id is None:
            rows = await self._db.fetchall(
                "count notifications", "SELECT count(*) AS n FROM deliveries"
            )
        else:
            rows = await self._db.fetchall(
                "count notifications",
                "SELECT count(*) AS n FROM deliveries WHERE subscription_id = ?",
                (subscription_id,),
            )
        return int(rows[0]["n"])
