"""Whether a store URI is one this project serves from, and whether its server answers now.

A pool (contract §2) names a message store by URI; before it is registered, queue_svc checks
that the URI is one of ours (``sqlite:///``, ``redis://``, ``redis+cluster://``,
``mongodb://``, ``mongodb+srv://``, parsed by the same code the stores use) and that the store
can actually be reached within a time limit. Nothing is written: Redis (every master of a
cluster) and MongoDB get a ``PING``, an existing SQLite file is opened read-write and its
header read, and for a SQLite file still to be created the folder it would go in must exist
and be writable.

A store of another package (a plugin, ``docs/plugins.md``) is known to this module only through
its class: its URI is checked by its ``from_uri``, and it answers when a store built from the
URI opens and closes in time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib.util
import os
import sqlite3
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from services.common import plugins
from services.common.config import ConfigurationError
from services.common.sqlite_store import MEMORY, parse_uri

REDIS_SCHEMES: Final = (
    "redis", "redis+cluster", "rediss", "rediss+cluster", "redis+sentinel", "rediss+sentinel"
)
SCHEMES: Final = ("sqlite", *REDIS_SCHEMES, "mongodb", "mongodb+srv")
# store name in messages -> the kind of its plugins; a pool is a message store
KINDS: Final = {"pool": "message store"}


class StoreUnreachable(Exception):
    """The store named by a valid URI did not answer; the message says why, for callers."""


def _kind(store: str) -> str:
    kind = KINDS.get(store, store)
    return kind if kind in plugins.GROUPS else "message store"


def scheme_of(uri: str, store: str) -> str:
    """The lower-case scheme of ``uri`` if it is one of :data:`SCHEMES` or of an installed
    plugin of ``store``'s kind.

    Raises:
        ConfigurationError: another scheme, or none.
    """
    scheme, sep, _ = uri.partition("://")
    if sep and scheme.lower() in SCHEMES:
        # A built-in scheme: no need to read the installed packages' entry points, which takes
        # ~20 ms of the event loop (every store health check of a running service comes here).
        return scheme.lower()
    known = [*SCHEMES, *sorted(set(plugins.entry_points(_kind(store))) - set(SCHEMES))]
    if not sep or scheme.lower() not in known:
        supported = ", ".join(f"{name}://" for name in known)
        raise ConfigurationError(f"the {store} URI must start with one of {supported}")
    return scheme.lower()


def _plugin_store(uri: str, store: str, scheme: str) -> Any:
    """A store of a plugin's class built from ``uri`` (no I/O), which checks the URI."""
    return plugins.load(_kind(store), scheme).from_uri(uri)


def check_uri(uri: str, store: str) -> str:
    """Parse ``uri`` as its backend does; the scheme.

    A SQLite store shared by several processes must be named by an absolute path: a relative
    one would point at a different file from every working directory, and ``:memory:`` is
    private to one process.

    Raises:
        ConfigurationError: naming what is wrong with the URI.
    """
    scheme = scheme_of(uri, store)
    if scheme == "sqlite":
        path = parse_uri(uri, store).path
        if path == MEMORY or not path.startswith("/"):
            raise ConfigurationError(
                f"invalid SQLite {store} URI {uri!r}: expected an absolute path, "
                "sqlite:////absolute/path/to/file.db"
            )
    elif scheme in REDIS_SCHEMES:
        from services.common.redis_store import RedisOptions

        RedisOptions.parse(uri, store=store, prefix="zp", max_connections=1)
    elif scheme not in SCHEMES:
        _plugin_store(uri, store, scheme)
    else:
        from services.common.mongo_store import MongoOptions

        MongoOptions.parse(uri, store=store, appname="zaqar-probe")
    return scheme


async def probe(uri: str, store: str, within: float) -> None:
    """Check that the store of a valid ``uri`` (see :func:`check_uri`) answers.

    Raises:
        ConfigurationError: the URI is not valid.
        StoreUnreachable: it does not answer within ``within`` seconds, or refuses us.
    """
    scheme = check_uri(uri, store)
    await _reach(scheme, uri, store, within)


async def answers(uri: str, store: str, within: float) -> None:
    """Check that the store of ``uri``, which a running service opened, still answers (its
    health watch: ``services/common/grpc_server.py``, ``StoreWatch``).

    Raises:
        StoreUnreachable: it does not answer within ``within`` seconds, or refuses us.
    """
    await _reach(scheme_of(uri, store), uri, store, within)


async def _reach(scheme: str, uri: str, store: str, within: float) -> None:
    try:
        async with asyncio.timeout(within):
            if scheme == "sqlite":
                path = parse_uri(uri, store).path
                if path != MEMORY:
                    await asyncio.to_thread(_check_sqlite, path, within)
            elif scheme in REDIS_SCHEMES:
                await _ping_redis(uri, store, within)
            elif scheme not in SCHEMES:
                await _open_plugin_store(uri, store, scheme)
            else:
                await _ping_mongodb(uri, store, within)
    except TimeoutError:
        raise StoreUnreachable(f"no answer within {within:g} seconds") from None


async def _open_plugin_store(uri: str, store: str, scheme: str) -> None:
    opened = _plugin_store(uri, store, scheme)
    try:
        await opened.open()
    except ConfigurationError:
        raise
    except Exception as exc:  # whatever the plugin raises: its store cannot be used
        raise StoreUnreachable(getattr(exc, "description", None) or str(exc)
                               or type(exc).__name__) from exc
    await opened.close()


def _check_sqlite(path: str, timeout: float) -> None:
    file = Path(path)
    if file.exists():
        if not file.is_file():
            raise StoreUnreachable(f"{path} is not a file")
        try:
            conn = sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True, timeout=timeout)
            try:
                conn.execute("PRAGMA schema_version").fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StoreUnreachable(f"{path} cannot be opened as a SQLite database: {exc}") from exc
        return
    folder = file.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise StoreUnreachable(f"{path} cannot be created: {folder} is not a writable folder")


# Redis() arguments that leave out the CLIENT SETINFO of redis-py's name and version on the
# probe's connection: a probe needs neither, and redis-py works the version out by reading its
# package metadata (~1.5 ms of the event loop on every check). redis-py 8 takes driver_info,
# earlier versions lib_name and lib_version (deprecated in 8).
@functools.cache
def _no_lib_info() -> dict[str, Any]:
    if importlib.util.find_spec("redis.driver_info") is not None:
        return {"driver_info": None}
    return {"lib_name": None, "lib_version": None}


async def _ping_redis(uri: str, store: str, within: float) -> None:
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisClusterException, RedisError

    from services.common.redis_store import RedisOptions, operator_detail

    def unreachable(exc: Exception) -> StoreUnreachable:
        # For operators and admins: what a failed TLS handshake or the Sentinels said.
        return StoreUnreachable(operator_detail(exc))

    options = RedisOptions.parse(uri, store=store, prefix="zp", max_connections=1)
    if options.tls:
        # Its files are read and checked here, off the event loop: a ConfigurationError
        # naming the option, where redis-py would say only that it cannot connect.
        await asyncio.to_thread(options.tls_context)
    if options.cluster:
        # Every master answers: the cluster client pings each node it discovered.
        cluster = dataclasses.replace(options, socket_connect_timeout=within,
                                      socket_timeout=within, retry_for=0.0)
        nodes = cluster.cluster_client("zaqar-probe", decode_responses=False)
        try:
            await nodes.ping(target_nodes=nodes.PRIMARIES)
        except (RedisError, RedisClusterException) as exc:
            raise unreachable(exc) from exc
        finally:
            await asyncio.shield(nodes.aclose())
        return
    if options.sentinel:
        # The master the Sentinels name answers (not a Sentinel).
        client = dataclasses.replace(options, socket_connect_timeout=within,
                                     socket_timeout=within).client("zaqar-probe", False)
    else:
        client = redis.asyncio.Redis(
            host=options.host, port=options.port, db=options.db, username=options.username,
            password=options.password, socket_connect_timeout=within, socket_timeout=within,
            client_name="zaqar-probe", retry=Retry(NoBackoff(), 0), **_no_lib_info(),
            ssl=options.tls, **options.tls_arguments(),
        )
    try:
        await client.ping()
    except RedisError as exc:
        raise unreachable(exc) from exc
    finally:
        await asyncio.shield(client.aclose())


async def _ping_mongodb(uri: str, store: str, within: float) -> None:
    from pymongo import AsyncMongoClient
    from pymongo.errors import PyMongoError

    from services.common.mongo_store import MongoOptions, describe

    options = MongoOptions.parse(uri, store=store, appname="zaqar-probe")
    milliseconds = max(1, int(within * 1000))
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        uri, **{**options.client_options, "serverSelectionTimeoutMS": milliseconds,
                "connectTimeoutMS": milliseconds, "socketTimeoutMS": milliseconds},
    )
    try:
        await client.admin.command("ping")
    except PyMongoError as exc:
        raise StoreUnreachable(describe(exc)) from exc
    finally:
        # Shielded: a check cancelled (its deadline, or the service stopping) while the ping
        # waits still closes the client, whose background tasks would otherwise outlive it.
        await asyncio.shield(client.close())
