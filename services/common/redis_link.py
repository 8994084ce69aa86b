"""One pipelined connection to one Redis server, for a store's hot path.

redis-py's client takes a connection from its pool for each call (or pipeline), wraps it in
a retry and a timeout, runs its own encoder over every argument and, for a pipeline, a task:
about half of what a script call costs the client (docs/benchmarks.md). A :class:`Link`
writes the commands it is given to one connection as they come, and hands each reply to
its command as hiredis parses it: Redis answers a connection's commands in the order it
read them, so replies match commands by position. There is no task, lock or timer per
command: one timer per connection watches the oldest command still waiting.

What it keeps of redis-py's client of one server (``RedisOptions.client``):
- the same settings: address, database, credentials, client name, connect and reply timeouts,
  and TLS (``rediss://``: the context redis-py would build, made again from the files for
  each new connection, off the event loop);
- the same errors: redis-py's exception classes (an error reply is classified by redis-py's
  own table), so a store's error edge reads them as before;
- a command whose connection broke before its reply is sent once more, at once, on a new
  connection (``RedisOptions.client`` says why that is safe: after a restart of the server);
- a timeout is never resent: the connection is closed and every command waiting on it fails
  with :class:`redis.exceptions.TimeoutError`.

On the master that Sentinels name (``redis+sentinel://``) the link asks where the master is
(``locate``) before each connection, and a ``READONLY`` reply (the master it reached was
demoted) closes the connection: every command still waiting on it goes once more, to the
master named then. A ``READONLY`` write was not applied, and a read sent again reads again.

``WAIT`` for replicas and Redis Cluster stay on redis-py (``redis_store.run``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common.redis_store import RedisOptions

# An error reply's redis-py exception (NoScriptError for "NOSCRIPT ...", and so on), by
# redis-py's own table; redis-py leaves it unannotated.
error_of: Callable[[str], ResponseError] = BaseParser.parse_error

pack = hiredis.pack_command
"""The bytes of one command, e.g. ``pack(("EVALSHA", sha, 1, key))``; TypeError for an
argument Redis cannot take (str, bytes, int and float only)."""


class Command:
    """One command given to a :class:`Link`, and what its owner keeps with it."""

    __slots__ = ("future", "packed", "reloaded", "resent", "sent_at")

    def __init__(self, packed: bytes, future: asyncio.Future[Any]) -> None:
        self.packed = packed
        self.future = future
        self.resent = False
        """Whether the link already sent it again after its connection broke."""
        self.reloaded = False
        """For its owner: whether it was already sent again after a ``NOSCRIPT``."""
        self.sent_at = 0.0


Answer = Callable[[Command, Any], None]
"""Called with each command and its reply: the value, or the exception it failed with."""

Locate = Callable[[], Awaitable[tuple[str, int]]]
"""Where the server is now (host, port), asked before each connection."""


def resolve(future: asyncio.Future[Any], reply: Any) -> None:
    """``reply`` (a value, or the exception a call failed with) becomes ``future``'s
    outcome, unless its caller has given up waiting."""
    if future.done():
        return
    if isinstance(reply, Exception):
        future.set_exception(reply)
    else:
        future.set_result(reply)


def settle(command: Command, reply: Any) -> None:
    """The plain :data:`Answer`: the reply becomes the command's future's outcome."""
    resolve(command.future, reply)


class Link:
    """Sends commands to the Redis server ``options`` name over one connection, opened when
    first needed and again after it breaks.

    Args:
        name: the connection's client name (``CLIENT SETNAME``).
        answer: what to do with each reply (default :func:`settle`).
        locate: where the server is, asked before each connection (the master Sentinels
            name); None: ``options``' host and port. With it, a ``READONLY`` reply sends
            what waits on the connection again, on a new one.
    """

    def __init__(self, options: RedisOptions, name: str, answer: Answer = settle,
                 locate: Locate | None = None) -> None:
        if options.cluster:
            raise ValueError("a Link serves one Redis server, not a cluster")
        self.options = options
        self._name = name
        self._answer = answer
        self._locate = locate
        self._where = f"{options.host}:{options.port}"  # the server last connected to
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._queued: list[Command] = []  # waiting for a connection
        self._closed = False

    def send(self, commands: Iterable[Command]) -> None:
        """Send ``commands`` in this order; each is answered through ``answer``."""
        connection = self._connection
        if connection is not None and connection.usable:
            connection.write(commands)
            return
        if self._closed:
            error = _closed()
            for command in commands:
                self._answer(command, error)
            return
        self._queued.extend(commands)
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())

    def waiting(self) -> list[Command]:
        """The commands sent or queued and not answered yet."""
        sent = list(self._connection.waiting) if self._connection is not None else []
        return [*sent, *self._queued]

    async def close(self) -> None:
        """Close the connection; commands still waiting fail with a ConnectionError."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        if self._connection is not None:
            self._connection.fail(_closed())
        self._fail_queued(_closed())

    async def _connect(self) -> None:
        try:
            connection = await self._open()
        except RedisError as exc:  # an error reply to the handshake (say, WRONGPASS)
            self._fail_queued(exc)
        except Exception as exc:  # anything else: no command is left waiting for ever
            self._fail_queued(_connect_error(self._where, exc))
        else:
            if self._closed:
                connection.fail(_closed())
            else:
                self._connection = connection
                queued, self._queued = self._queued, []
                connection.write(queued)
        finally:
            self._connecting = None

    async def _open(self) -> _Connection:
        options = self.options
        loop = asyncio.get_running_loop()
        tls = await asyncio.to_thread(options.tls_context) if options.tls else None
        host, port = options.host, options.port
        if self._locate is not None:
            host, port = await self._locate()  # a RedisError when no master is known
            self._where = f"{host}:{port}"
        follows = self._locate is not None
        async with asyncio.timeout(options.socket_connect_timeout):
            _, connection = await loop.create_connection(
                lambda: _Connection(self, options.socket_timeout, follows), host, port,
                ssl=tls,
            )
        hello: list[tuple[Any, ...]] = []
        if options.password is not None:
            hello.append(
                ("AUTH", options.username, options.password) if options.username
                else ("AUTH", options.password)
            )
        if options.db:
            hello.append(("SELECT", options.db))
        hello.append(("CLIENT", "SETNAME", self._name))
        commands = [Command(pack(args), loop.create_future()) for args in hello]
        connection.write(commands)  # the handshake, answered to its futures
        try:
            async with asyncio.timeout(options.socket_timeout):
                for command in commands:
                    await command.future  # an error reply (e.g. WRONGPASS) raises
        except BaseException:
            connection.fail(RedisConnectionError("The Redis handshake failed."))
            for command in commands:  # the replies not awaited: their errors are known
                if command.future.done() and not command.future.cancelled():
                    command.future.exception()
            raise
        connection.ready()
        return connection

    def _lost(self, connection: _Connection, commands: list[Command], error: Exception) -> None:
        """``connection`` broke with ``commands`` unanswered: each is sent once more, on a
        new connection, unless it already was."""
        if self._connection is connection:
            self._connection = None
        again = [command for command in commands if not command.resent]
        for command in commands:
            if command.resent:
                self._answer(command, error)
            command.resent = True
        if again:
            self.send(again)

    def _fail_queued(self, error: Exception) -> None:
        queued, self._queued = self._queued, []
        for command in queued:
            self._answer(command, error)


def _closed() -> RedisConnectionError:
    return RedisConnectionError("The connection to Redis was closed.")


def _connect_error(where: str, exc: Exception) -> Exception:
    """``exc``, which a connection to ``where`` (host:port) failed with, as redis-py says it."""
    error: RedisError
    if isinstance(exc, TimeoutError):
        # redis-py's wording: redis_store.never_sent recognises a connect timeout by it.
        error = RedisTimeoutError(f"Timeout connecting to server {where}.")
    else:
        error = RedisConnectionError(f"Error connecting to {where}: {exc}.")
    error.__cause__ = exc  # a failed TLS handshake is found there (redis_store.tls_failure)
    return error


class _Connection(asyncio.Protocol):
    """One connection of a :class:`Link`: the commands written, waiting for their replies in
    order, and the timer that fails them all when the oldest has waited ``timeout`` seconds."""

    def __init__(self, link: Link, timeout: float, follows_master: bool = False) -> None:
        self._link = link
        self._timeout = timeout
        self._follows_master = follows_master
        self._answer: Answer = settle  # the handshake's; the link's once ready
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.waiting: deque[Command] = deque()
        self._ready = False  # the handshake is done
        self.usable = False  # ready, and not closed since

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def ready(self) -> None:
        """The handshake is answered: replies go to the link's answer from now on."""
        self._answer = self._link._answer
        self._ready = self.usable = True

    def write(self, commands: Iterable[Command]) -> None:
        assert self._transport is not None
        now = self._loop.time()
        packed = []
        for command in commands:
            command.sent_at = now
            packed.append(command.packed)
            self.waiting.append(command)
        self._transport.write(b"".join(packed))
        if self._timer is None:
            self._timer = self._loop.call_at(now + self._timeout, self._check)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting, answer = self.waiting, self._answer
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(RedisConnectionError(f"Redis sent what is not RESP: {exc}."))
                return
            if reply is False:
                return
            if not waiting:
                self.fail(RedisConnectionError("Redis sent a reply to no command."))
                return
            if isinstance(reply, ResponseError):
                reply = error_of(str(reply))
                if isinstance(reply, ReadOnlyError) and self._follows_master and self._ready:
                    # The master was demoted: nothing more is read here; this command and
                    # those behind it go once more on a new connection (connection_lost).
                    self.usable = False
                    assert self._transport is not None
                    self._transport.abort()
                    return
            answer(waiting.popleft(), reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._stop_timer()
        commands = list(self.waiting)
        self.waiting.clear()
        if exc is None:
            error = RedisConnectionError("Connection closed by server.")
        else:
            error = RedisConnectionError(f"Connection to Redis lost: {exc}.")
        if not self._ready:  # still in the handshake: the link sees it fail
            for command in commands:
                settle(command, error)
        else:
            self._link._lost(self, commands, error)

    def fail(self, error: Exception) -> None:
        """Answer every waiting command with ``error`` and close (nothing is resent)."""
        self.usable = False
        self._stop_timer()
        commands = list(self.waiting)
        self.waiting.clear()
        if self._transport is not None:
            self._transport.abort()
        for command in commands:
            self._answer(command, error)

    def _check(self) -> None:
        self._timer = None
        if not self.waiting:
            return
        late = self.waiting[0].sent_at + self._timeout
        if self._loop.time() >= late:
            self.fail(RedisTimeoutError("Timeout reading from Redis."))
        else:
            self._timer = self._loop.call_at(late, self._check)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
