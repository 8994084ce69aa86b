"""A SQLite store whose file another connection holds locked for longer than the busy
timeout (a replica sharing the file that hangs, or is slow): its writes fail as unavailable,
which a caller sees as a 503, and that is logged as a warning, not as an error of the service.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from services.common import sqlite_store
from services.common.errors import Unavailable
from services.common.sqlite_store import Database, parse_uri


async def test_a_write_behind_another_connections_lock_is_unavailable_and_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "messages.db"
    db = Database(parse_uri(f"sqlite:///{path}"), "message store",
                  "CREATE TABLE IF NOT EXISTS t (v INTEGER)")
    await db.open()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        # Given another connection that holds the file's write lock
        holder.execute("BEGIN IMMEDIATE")
        # When the store writes, past the busy timeout
        with caplog.at_level(logging.WARNING, logger=sqlite_store.log.name):
            with pytest.raises(Unavailable, match="could not store a message"):
                await db.write(lambda c: c.execute("INSERT INTO t VALUES (1)"),
                               "store a message")
        # Then it is a warning that says why, and no error
        records = [r for r in caplog.records if r.name == sqlite_store.log.name]
        assert records and {r.levelno for r in records} == {logging.WARNING}, records
        assert "transaction of 1 writes waited 0.1 s for the lock" in caplog.text
        # And once the lock is let go, writes go through
        holder.execute("ROLLBACK")
        await db.write(lambda c: c.execute("INSERT INTO t VALUES (2)"), "store a message")
        assert [tuple(row) for row in await db.fetchall("read", "SELECT v FROM t")] == [(2,)]
    finally:
        holder.close()
        await db.close()
