"""SQLite connections of message_svc: one writer with group commit, one reader.

Every operation is a plain function of a ``sqlite3.Connection`` run on the connection's own
thread (aiosqlite's), so the event loop never blocks and an operation costs one thread hop.

Writes go through one connection, so they serialize. Operations that arrive while a commit is
in progress are run together in the next transaction (a failing one is undone alone, see
:func:`_run_batch`), and are acknowledged only after that transaction commits: with
``synchronous=FULL`` one fsync then covers many operations. Reads use a second connection,
which in WAL mode sees the last committed state without waiting for the writer.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import aiosqlite

from services.common.config import ConfigurationError
from services.common.errors import Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]

_SYNCHRONOUS = {"OFF", "NORMAL", "FULL", "EXTRA"}


def parse_uri(uri: str) -> tuple[str, dict[str, str]]:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite:///:memory:``.

    The only option is ``synchronous`` (default FULL), e.g. ``sqlite:////d/m.db?synchronous=NORMAL``.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        raise ConfigurationError(
            f"invalid SQLite store URI {uri!r}: expected sqlite:///<path> or sqlite:///:memory:"
        )
    path, _, query = uri[len(prefix):].partition("?")
    if not path:
        raise ConfigurationError(f"invalid SQLite store URI {uri!r}: the path is empty")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(options) - {"synchronous"}
    if unknown:
        raise ConfigurationError(
            f"invalid SQLite store URI {uri!r}: unknown option(s) {', '.join(sorted(unknown))}"
        )
    sync = options.setdefault("synchronous", "FULL").upper()
    if sync not in _SYNCHRONOUS:
        raise ConfigurationError(
            f"invalid SQLite store URI {uri!r}: synchronous must be one of "
            f"{', '.join(sorted(_SYNCHRONOUS))}"
        )
    options["synchronous"] = sync
    return path, options


def _store_error(exc: sqlite3.Error) -> Unavailable:
    return Unavailable(f"The message store failed: {type(exc).__name__}: {exc}")


def _run_batch(conn: sqlite3.Connection, jobs: Sequence[Job[Any]]) -> list[tuple[bool, Any]]:
    """One transaction for the whole batch; runs on the writer thread.

    Jobs rarely fail, so they first run back to back. When one raises, the transaction is
    rolled back and the batch runs again with a savepoint per job, so that only the failing
    job is undone (jobs are deterministic: they capture their ids and time up front).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            outcomes: list[tuple[bool, Any]] = [(True, job(conn)) for job in jobs]
        except Exception:
            if len(jobs) == 1:
                raise
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            outcomes = [_run_isolated(conn, job) for job in jobs]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _run_isolated(conn: sqlite3.Connection, job: Job[Any]) -> tuple[bool, Any]:
    conn.execute("SAVEPOINT job")
    try:
        value = job(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        return False, exc
    conn.execute("RELEASE job")
    return True, value


def _read(conn: sqlite3.Connection, job: Job[T]) -> T:
    """One read transaction, so that a job's queries see one snapshot."""
    conn.execute("BEGIN")
    try:
        return job(conn)
    finally:
        conn.execute("COMMIT")


class SqliteDatabase:
    """The writer and reader connections of one SQLite file."""

    def __init__(self, path: str, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._pending: list[tuple[Job[Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:"

    async def open(self) -> None:
        if not self.in_memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        schema = resources.files(__package__).joinpath("schema.sql").read_text("utf-8")
        try:
            self._writer = await aiosqlite.connect(self.path, isolation_level=None)
            await self._call(self._writer, lambda c: self._setup_writer(c, schema))
            if not self.in_memory:
                self._reader = await aiosqlite.connect(self.path, isolation_level=None)
                await self._call(self._reader, self._setup_reader)
        except sqlite3.Error as exc:
            await self.close()
            raise _store_error(exc) from exc

    def _setup_writer(self, conn: sqlite3.Connection, schema: str) -> None:
        if not self.in_memory:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch {self.path} to WAL ({mode})")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(schema)

    def _setup_reader(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA query_only=1")

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def write(self, job: Job[T]) -> T:
        """Run ``job`` atomically; resolves once its transaction is committed."""
        if self._writer is None:
            raise Unavailable("The message store is closed.")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((job, future))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return await future

    async def read(self, job: Job[T]) -> T:
        """Run ``job`` against the last committed state."""
        conn = self._reader or self._writer
        if conn is None:
            raise Unavailable("The message store is closed.")
        try:
            return await self._call(conn, lambda c: _read(c, job))
        except sqlite3.Error as exc:
            raise _store_error(exc) from exc

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = [item for item in self._pending if not item[1].cancelled()]
                self._pending = []
                if batch:
                    await self._commit(batch)
        finally:
            self._flusher = None

    async def _commit(self, batch: list[tuple[Job[Any], asyncio.Future[Any]]]) -> None:
        assert self._writer is not None
        jobs = [job for job, _ in batch]
        try:
            outcomes = await self._call(self._writer, lambda c: _run_batch(c, jobs))
        except Exception as exc:
            err = _store_error(exc) if isinstance(exc, sqlite3.Error) else exc
            log.error("message store transaction failed: %r", exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(
                    _store_error(value) if isinstance(value, sqlite3.Error) else value
                )

    @staticmethod
    async def _call(conn: aiosqlite.Connection, job: Job[T]) -> T:
        # NOTE: aiosqlite's public methods run one statement per hop to its thread; a whole
        # operation (a transaction of several statements) is one function run there instead.
        # ``_execute`` and ``_conn`` are the long-standing hooks for that.
        result: T = await conn._execute(lambda: job(conn._conn))  # type: ignore[no-untyped-call]
        return result
