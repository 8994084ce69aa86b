"""SQLite for every service's store: its URI, its connections, and the one place driver errors
are translated (each store names itself, e.g. "queue store").

A store's work is plain functions of a ``sqlite3.Connection`` (jobs), each run whole on the
connection's own thread (aiosqlite's), so the event loop never blocks and a job costs one
thread hop however many statements it runs.

- **Writes** go through one connection, so they serialize. Jobs that arrive while a commit is
  in progress run together in the next transaction (one that raises is undone alone, see
  :func:`_run_batch`) and are acknowledged only once that transaction is committed: with
  ``synchronous=FULL`` one fsync covers many writes (group commit).
- **Reads** use a second connection, which in WAL mode sees the last committed state without
  waiting for the writer; a job's queries see one snapshot.

Rows are :class:`sqlite3.Row`: read them by column name.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl

import aiosqlite

from services.common.backoff import Backoff
from services.common.config import ConfigurationError
from services.common.errors import Unavailable
from services.common.store_uri import check_characters

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]

MEMORY: Final = ":memory:"
# How long opening a file waits in all for another connection that holds its lock beyond
# SQLite's busy timeout of each try: replicas that start together on a loaded machine.
OPEN_LOCKED_WAIT: Final = 60.0
SYNCHRONOUS: Final = ("OFF", "NORMAL", "FULL", "EXTRA")
FORM: Final = (
    "expected sqlite:///<relative path>, sqlite:////<absolute path> or sqlite:///:memory:,"
    " with the option ?synchronous=OFF|NORMAL|FULL|EXTRA"
)


@dataclass(frozen=True, slots=True)
class SqliteUri:
    """What a ``sqlite:///`` URI says: the database file and how hard commits are synced."""

    path: str
    synchronous: str = "FULL"

    @property
    def in_memory(self) -> bool:
        return self.path == MEMORY


def parse_uri(uri: str, store: str = "store") -> SqliteUri:
    """The database of a ``sqlite:///`` URI of ``store`` (SQLAlchemy's convention).

    ``sqlite:///relative/queues.db`` is relative to the working directory,
    ``sqlite:////absolute/queues.db`` is absolute and ``sqlite:///:memory:`` is a private
    in-memory database. The one option is ``synchronous`` (SQLite's pragma, default ``FULL``:
    a commit is on disk when it is acknowledged), e.g. ``sqlite:////d/m.db?synchronous=NORMAL``.

    Raises:
        ConfigurationError: not of that form, an unknown option, or a control character.
    """
    check_characters(store, uri)
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        raise ConfigurationError(f"invalid SQLite {store} URI {uri!r}: {FORM}")
    path, _, query = uri[len(prefix):].partition("?")
    if "#" in uri:
        raise ConfigurationError(f"invalid SQLite {store} URI {uri!r}: it has a fragment")
    if not path.strip("/"):
        raise ConfigurationError(f"invalid SQLite {store} URI {uri!r}: the path is empty")
    if path.endswith("/"):
        raise ConfigurationError(
            f"invalid SQLite {store} URI {uri!r}: the path names a folder, not a database file"
        )
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - {"synchronous"})
    if unknown:
        raise ConfigurationError(
            f"invalid SQLite {store} URI {uri!r}: unknown option(s) {', '.join(unknown)}"
            " (the one option is synchronous)"
        )
    synchronous = options.get("synchronous", "FULL").upper()
    if synchronous not in SYNCHRONOUS:
        raise ConfigurationError(
            f"invalid SQLite {store} URI {uri!r}: synchronous must be one of "
            f"{', '.join(SYNCHRONOUS)}"
        )
    return SqliteUri(path, synchronous)


def _run_batch(conn: sqlite3.Connection, jobs: Sequence[Job[Any]]) -> list[tuple[bool, Any]]:
    """One transaction for the whole batch; runs on the writer thread.

    Jobs rarely fail, so they first run back to back. When one raises, the transaction is
    rolled back and the batch runs again with a savepoint per job, so that only the failing
    job is undone; each job's outcome is that of the run that is committed.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            outcomes: list[tuple[bool, Any]] = [(True, job(conn)) for job in jobs]
        except Exception as exc:
            conn.execute("ROLLBACK")
            if len(jobs) == 1:
                return [(False, exc)]
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


async def _connect(path: str) -> aiosqlite.Connection:
    connector = aiosqlite.connect(path, isolation_level=None)
    # A connection left open (a close cut short by a shutdown deadline) must not keep the
    # process alive at exit, so its worker thread is a daemon; what was committed is safe
    # either way (WAL), an open transaction rolls back at the next open.
    worker = getattr(connector, "_thread", None)
    if worker is not None:
        worker.daemon = True
    return await connector


# Milliseconds a statement waits for a lock another connection holds (another process on the
# same file: a replica, a pool's probe) before it fails with "database is locked".
BUSY_TIMEOUT_MS = 5000


def _locked(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (any extended code of theirs); an error raised here
    (not by SQLite) has no code."""
    code = getattr(exc, "sqlite_errorcode", 0)
    return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


async def _call(conn: aiosqlite.Connection, job: Job[T]) -> T:
    # NOTE: aiosqlite's public methods run one statement per hop to its thread; a whole job
    # (a transaction of several statements) is one function run there instead. ``_execute``
    # and ``_conn`` are the long-standing hooks for that.
    result: T = await conn._execute(lambda: job(conn._conn))  # type: ignore[no-untyped-call]
    return result


class Database:
    """The writer and reader connections of one SQLite file of ``store``."""

    def __init__(self, uri: SqliteUri, store: str, schema: str | Iterable[str]) -> None:
        self.uri = uri
        self.store = store
        self._schema = schema if isinstance(schema, str) else ";\n".join(schema) + ";"
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._pending: list[tuple[Job[Any], asyncio.Future[Any], str | None]] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def path(self) -> str:
        return self.uri.path

    async def open(self) -> None:
        """Open (or create) the file, in WAL mode, with the schema in place.

        Raises:
            ConfigurationError: the file cannot be created or opened.
        """
        try:
            if not self.uri.in_memory:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._writer = await _connect(self.path)
            await self._set_up_writer()
            if not self.uri.in_memory:
                self._reader = await _connect(self.path)
                await _call(self._reader, self._setup_reader)
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise ConfigurationError(
                f"cannot open the {self.store}'s SQLite database {self.path!r}: {exc}"
            ) from exc

    async def _set_up_writer(self) -> None:
        """:meth:`_setup_writer`, tried again while another connection holds the file's lock
        past the busy timeout, for :data:`OPEN_LOCKED_WAIT` in all (each step is idempotent)."""
        assert self._writer is not None
        backoff = Backoff(OPEN_LOCKED_WAIT, first=0.1, last=2.0)
        while True:
            try:
                await _call(self._writer, self._setup_writer)
                return
            except sqlite3.OperationalError as exc:
                if not _locked(exc):
                    raise
                log.info("the %s's SQLite database %r is locked by another connection: "
                         "trying again", self.store, self.path)
                if not await backoff.pause():
                    raise

    def _setup_writer(self, conn: sqlite3.Connection) -> None:
        conn.row_factory = sqlite3.Row
        # First: another process or connection opening the same file at this moment (a
        # replica, a pool's probe) holds its lock briefly, which is waited for, not an error.
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if not self.uri.in_memory:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch {self.path} to WAL ({mode})")
        conn.execute(f"PRAGMA synchronous={self.uri.synchronous}")
        conn.executescript(self._schema)

    @staticmethod
    def _setup_reader(conn: sqlite3.Connection) -> None:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only=1")

    async def close(self) -> None:
        """Wait for the writes under way, then close both connections."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    def _error(self, exc: BaseException, action: str | None) -> Unavailable:
        log.warning("%s failed to %s: %s: %s", self.store, action or "run a statement",
                    type(exc).__name__, exc)
        if action is None:
            return Unavailable(f"The {self.store} failed: {type(exc).__name__}: {exc}")
        return Unavailable(f"The {self.store} could not {action}. Please try again in a few "
                           "seconds.")

    async def write(self, job: Job[T], action: str | None = None) -> T:
        """Run ``job`` atomically; resolves once its transaction is committed. A caller
        cancelled before the job ran leaves nothing done.

        Raises:
            Unavailable: the database failed (``action`` says what the store was doing).
        """
        if self._writer is None:
            raise Unavailable(f"The {self.store} is closed.")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((job, future, action))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return await future

    async def read(self, job: Job[T], action: str | None = None) -> T:
        """Run ``job`` against the last committed state."""
        conn = self._reader or self._writer
        if conn is None:
            raise Unavailable(f"The {self.store} is closed.")
        try:
            return await _call(conn, lambda c: _read(c, job))
        except (sqlite3.Error, ValueError) as exc:
            # aiosqlite raises ValueError when its connection is closed or gone.
            raise self._error(exc, action) from exc

    async def fetchall(
        self, action: str, sql: str, params: Iterable[Any] = ()
    ) -> list[sqlite3.Row]:
        """The rows of one query."""
        values = tuple(params)
        return await self.read(lambda conn: conn.execute(sql, values).fetchall(), action)

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = [item for item in self._pending if not item[1].cancelled()]
                self._pending = []
                if batch:
                    await self._commit(batch)
        finally:
            self._flusher = None

    async def _commit(self, batch: list[tuple[Job[Any], asyncio.Future[Any], str | None]]) -> None:
        assert self._writer is not None
        jobs = [job for job, _, _ in batch]
        try:
            outcomes = await _call(self._writer, lambda c: _run_batch(c, jobs))
        except Exception as exc:
            if isinstance(exc, sqlite3.OperationalError) and _locked(exc):
                # Unavailable for now, not a fault: another connection to the file (a
                # replica that hangs, or is slow) held its lock for the whole busy timeout
                log.warning("%s transaction of %d writes waited %.1f s for the lock of %r, "
                            "which another connection holds: %s", self.store, len(jobs),
                            BUSY_TIMEOUT_MS / 1000, self.path, exc)
            else:
                log.error("%s transaction failed: %r", self.store, exc)
            for _, future, action in batch:
                if not future.done():
                    future.set_exception(
                        self._error(exc, action)
                        if isinstance(exc, (sqlite3.Error, ValueError)) else exc
                    )
            return
        except BaseException:
            for _, future, _ in batch:
                future.cancel()
            raise
        for (_, future, action), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(
                    self._error(value, action) if isinstance(value, sqlite3.Error) else value
                )
