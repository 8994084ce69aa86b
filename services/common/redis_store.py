"""Redis for any service's store: the URI, the client it configures, and the one place Redis
errors are translated (each store names itself, its key prefix and its pool size)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

import redis.asyncio
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common import store_uri
from services.common.errors import Unavailable
from services.common.store_edge import Method, P, R, S, Wrapped, driver_edge

FORM = "redis://[[username]:password@]host[:port][/db][?option=value&...]"
DEFAULT_PORT = 6379
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _prefix(text: str) -> str:
    if not _PREFIX.fullmatch(text):
        raise ValueError("expected 1 to 64 of A-Z a-z 0-9 _ . : -")
    return text


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """What a ``redis://`` URI says.

    Query options:
        prefix: first part of every key (each store has its own default), so that several
            stores can share one database.
        socket_connect_timeout: seconds to wait for a connection (default 2).
        socket_timeout: seconds to wait for any reply, and for a free connection when all
            are busy (default 5).
        max_connections: connections at most, shared by all calls (each store has its own
            default).
    """

    store: str
    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = None
    prefix: str = "zq"
    socket_connect_timeout: float = 2.0
    socket_timeout: float = 5.0
    max_connections: int = 50

    @property
    def address(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"

    @classmethod
    def parse(cls, uri: str, store: str, prefix: str, max_connections: int) -> RedisOptions:
        """The options of ``uri`` for ``store`` (e.g. "queue store"), with that store's
        default key prefix and pool size.

        Raises: ConfigurationError, naming what is wrong.
        """
        parts = store_uri.split(store, uri, "redis", FORM)
        host, port = store_uri.host_and_port(store, uri, parts, DEFAULT_PORT)
        path = parts.path.removeprefix("/")
        if path and not (path.isascii() and path.isdigit()):
            raise store_uri.invalid(
                store, uri, f"bad database number {path!r}: expected /0, /1, ... after the port"
            )
        given = store_uri.options(store, uri, parts.query, {
            "prefix": _prefix,
            "socket_connect_timeout": store_uri.seconds,
            "socket_timeout": store_uri.seconds,
            "max_connections": store_uri.count,
        })
        given.setdefault("prefix", prefix)
        given.setdefault("max_connections", max_connections)
        return cls(
            store=store,
            host=host,
            port=port,
            db=int(path or 0),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            **given,
        )

    def client(self, name: str, decode_responses: bool) -> redis.asyncio.Redis:
        """A client over a bounded pool of connections, configured to fail fast.

        A command (or pipeline) whose connection fails (refused, reset, closed by the server)
        is sent once more, at once, on a new connection: after a restart of the server the
        pool still holds connections to the old process, and each would otherwise fail one
        call. It is safe to resend: a connection that failed before the command reached a
        live server applied nothing, and a server that applied it and then died cannot accept
        the new connection a moment later (only a server that drops connections on purpose,
        say ``CLIENT KILL``, could see a command twice). A timeout is never retried: a
        timed-out write may have been applied, and replaying it would, for instance, report
        an existing queue as created or store a posted batch twice. Callers see
        :class:`Unavailable` and decide. When every connection is busy, a call waits for one
        (up to ``socket_timeout``) rather than fail.
        """
        pool = BlockingConnectionPool(
            max_connections=self.max_connections,
            timeout=self.socket_timeout,
            host=self.host,
            port=self.port,
            db=self.db,
            username=self.username,
            password=self.password,
            socket_connect_timeout=self.socket_connect_timeout,
            socket_timeout=self.socket_timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            decode_responses=decode_responses,
            client_name=name,
        )
        return redis.asyncio.Redis.from_pool(pool)


def describe(exc: Exception) -> str:
    """A short reason for a Redis failure, safe to show a caller."""
    reasons: list[tuple[type[Exception], str]] = [
        (RedisTimeoutError, "Redis did not answer in time"),
        (BusyLoadingError, "Redis is still loading its data"),
        (AuthenticationError, "Redis refused the credentials"),
        (AuthorizationError, "Redis refused the credentials"),
        (RedisConnectionError, "Redis cannot be reached"),
        (ReadOnlyError, "Redis is a read-only replica"),
        (OutOfMemoryError, "Redis is out of memory"),
        (NoScriptError, "Redis lost the store's scripts"),
        (ResponseError, "Redis refused the operation"),
    ]
    return next((text for kind, text in reasons if isinstance(exc, kind)), "Redis failed")


def redis_edge(store: str) -> Callable[[str], Callable[[Method[S, P, R]], Wrapped[S, P, R]]]:
    """The decorator factory that turns Redis errors of ``store`` into Unavailable."""
    return driver_edge(store, (RedisError,), describe)


async def open_with_scripts(
    client: redis.asyncio.Redis, texts: dict[str, str], store: str, address: str
) -> dict[str, AsyncScript]:
    """Check the server answers and load ``texts`` (name -> Lua source) once, returning each
    script registered on ``client``; the client is closed when the server cannot be used.

    Raises:
        Unavailable: the server cannot be reached or refuses the scripts.
    """
    scripts: dict[str, AsyncScript] = {}
    try:
        await client.ping()
        for name, text in texts.items():
            await client.script_load(text)
            scripts[name] = client.register_script(text)
    except RedisError as exc:
        await client.aclose()
        raise Unavailable(
            f"Cannot open the {store} at {address}: {describe(exc)} ({exc})."
        ) from exc
    return scripts
