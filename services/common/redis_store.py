"""Redis for any service's store: the URI (one server, ``redis://``, or a Redis Cluster,
``redis+cluster://``; ``rediss://`` and ``rediss+cluster://`` for the same over TLS), the
client it configures, how a batch of commands is sent (pipelined,
followed by ``WAIT`` when the URI asks for replicas to confirm writes), and the one place Redis
errors are translated (each store names itself, its key prefix and its pool size).

On a cluster, every key of one call must hash to one slot (the stores give all keys of a queue,
or of a project, one hash tag); :class:`RedisClusterClient` sends each call to the node serving
that slot and rides out a failover (see its docstring). docs/redis-cluster.md has the design.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

import redis.asyncio
from redis.asyncio import BlockingConnectionPool, SSLConnection
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import RedisSSLContext
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedSSLConnection,
)
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common import store_uri
from services.common.backoff import Backoff
from services.common.config import ConfigurationError
from services.common.errors import Unavailable
from services.common.metrics import STORE_EVICTS, STORE_PERSISTENT
from services.common.store_edge import Method, P, R, S, Wrapped, driver_edge

log = logging.getLogger(__name__)

SCHEME = "redis"
CLUSTER_SCHEME = "redis+cluster"
TLS_SCHEME = "rediss"
TLS_CLUSTER_SCHEME = "rediss+cluster"
SENTINEL_SCHEME = "redis+sentinel"
TLS_SENTINEL_SCHEME = "rediss+sentinel"
SCHEMES = (SCHEME, TLS_SCHEME, CLUSTER_SCHEME, TLS_CLUSTER_SCHEME, SENTINEL_SCHEME,
           TLS_SENTINEL_SCHEME)
"""Every scheme of a Redis store: one server, a cluster, or the master that Sentinels name,
each in clear or over TLS."""
FORM = "redis://[[username]:password@]host[:port][/db][?option=value&...]"
CLUSTER_FORM = (
    "redis+cluster://[[username]:password@]host[:port][,host[:port]...][/][?option=value&...]"
)
# The options of a TLS URI, named as redis-py names them.
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
                "ssl_check_hostname")
_CERT_REQS = ("required", "none")  # values of ssl_cert_reqs
SENTINEL_FORM = (
    "redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/master-name[/db]"
    "[?option=value&...]"
)
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
_MASTER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

# What a cluster client may resend after a timeout: commands that change nothing (or change
# nothing more when repeated). Any other command that timed out may have been applied.
_IDEMPOTENT_COMMANDS = frozenset({
    "GET", "HGET", "HMGET", "HEXISTS", "ZCARD", "SCARD", "SSCAN", "SCAN", "EXISTS", "PING",
    "SCRIPT LOAD", "CONFIG GET", "INFO",
})

def _prefix(text: str) -> str:
    if not _PREFIX.fullmatch(text):
        raise ValueError("expected 1 to 64 of A-Z a-z 0-9 _ . : -")
    return text


def _replicas(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError("expected a whole number of replicas, e.g. 1")
    return int(text)


def _path(text: str) -> str:
    if not text:
        raise ValueError("expected the path of a PEM file")
    return text


def _cert_reqs(text: str) -> str:
    if text.lower() not in _CERT_REQS:
        raise ValueError("expected required (check the server's certificate, the default) or "
                         "none (check nothing)")
    return text.lower()


def _seconds_or_zero(text: str) -> float:
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass
    return store_uri.seconds(text)


class NotReplicated(RedisError):
    """A write was applied by its master, but fewer replicas than the URI's ``wait`` confirmed
    it within ``wait_timeout``: it may be lost if the master fails now."""


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """What a ``redis://`` or ``redis+cluster://`` URI says.

    Query options:
        prefix: first part of every key (each store has its own default), so that several
            stores can share one database.
        socket_connect_timeout: seconds to wait for a connection (default 2).
        socket_timeout: seconds to wait for any reply, and for a free connection when all
            are busy (default 5).
        max_connections: connections at most, shared by all calls (each store has its own
            default); on a cluster, to each node.
        wait: replicas that must confirm every write before it is acknowledged (Redis
            ``WAIT``; default 0, none). A write they do not confirm in time fails as
            Unavailable, although its master applied it.
        wait_timeout: seconds a write waits for those replicas (default 1; less than
            ``socket_timeout``).
        retry_for: (``redis+cluster://`` only) seconds a call keeps being resent, with
            back-off, while the cluster cannot serve it (a node unreachable, a failover under
            way, slots moving); default 4, to stay within the callers' deadlines.

    TLS (``rediss://``, ``rediss+cluster://`` and ``rediss+sentinel://`` only, for the
    Sentinels as for Redis; refused on the others):
        ssl_ca_certs: the PEM file of the CAs that sign the server's certificate (default:
            the system's trusted CAs only).
        ssl_certfile, ssl_keyfile: this client's certificate and key (PEM), for a server
            that asks for one (``tls-auth-clients yes``); the key may be in the certificate's
            file.
        ssl_cert_reqs: ``required`` (default): the handshake fails unless a trusted CA signed
            the server's certificate; ``none``: any certificate (encryption without
            authentication, for tests).
        ssl_check_hostname: ``true`` (default with ``required``): the certificate must name
            the host the URI connects to.

    Files are read when a connection is made (:meth:`tls_context`), so files replaced in
    place apply to the next connection; :meth:`parse` does no I/O.
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
    wait: int = 0
    wait_timeout: float = 1.0
    nodes: tuple[tuple[str, int], ...] = ()
    """The cluster's nodes named by the URI (any reachable one finds the others); empty for
    one server."""
    retry_for: float = 4.0
    tls: bool = False
    """Whether connections use TLS (the URI is ``rediss://`` or ``rediss+cluster://``)."""
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: str = "required"
    ssl_check_hostname: bool = True
    sentinels: tuple[tuple[str, int], ...] = ()
    """The Sentinels named by a ``redis+sentinel://`` URI; empty for the other forms."""
    master_name: str = ""
    """The master group the Sentinels watch (``redis+sentinel://`` only)."""
    sentinel_password: str | None = None

    @property
    def cluster(self) -> bool:
        return bool(self.nodes)

    @property
    def sentinel(self) -> bool:
        """Whether the server is the master that Sentinels name (``redis+sentinel://``)."""
        return bool(self.sentinels)

    @property
    def address(self) -> str:
        if self.cluster:
            scheme = TLS_CLUSTER_SCHEME if self.tls else CLUSTER_SCHEME
            return f"{scheme}://" + ",".join(f"{h}:{p}" for h, p in self.nodes)
        if self.sentinel:
            scheme = TLS_SENTINEL_SCHEME if self.tls else SENTINEL_SCHEME
            return (f"{scheme}://" + ",".join(f"{h}:{p}" for h, p in self.sentinels)
                    + f"/{self.master_name}/{self.db}")
        return f"{TLS_SCHEME if self.tls else SCHEME}://{self.host}:{self.port}/{self.db}"

    @property
    def verifies(self) -> bool:
        """Whether a TLS connection checks the server's certificate (``ssl_cert_reqs``)."""
        return self.ssl_cert_reqs == "required"

    @property
    def _keyfile(self) -> str | None:
        # A key in the certificate's own file is named twice: older redis-py versions load a
        # client certificate only when given both files.
        return self.ssl_keyfile or self.ssl_certfile

    def tls_arguments(self) -> dict[str, Any]:
        """redis-py's TLS arguments of a connection (pool, cluster or client), without the
        one that turns TLS on; empty without TLS."""
        if not self.tls:
            return {}
        return {
            "ssl_ca_certs": self.ssl_ca_certs,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self._keyfile,
            "ssl_cert_reqs": self.ssl_cert_reqs,
            "ssl_check_hostname": self.ssl_check_hostname,
        }

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context of a new connection, built from the files as they are now (blocking
        file reads: run it off the event loop), as redis-py builds its own.

        Raises:
            ConfigurationError: naming the option whose file cannot be read or used.
        """
        if not self.tls:
            raise ValueError("a redis:// URI has no TLS")
        _check_files(self)
        return RedisSSLContext(
            keyfile=self._keyfile, certfile=self.ssl_certfile,
            cert_reqs=self.ssl_cert_reqs, ca_certs=self.ssl_ca_certs,
            check_hostname=self.ssl_check_hostname,
        ).get()

    @classmethod
    def parse(
        cls, uri: str, store: str, prefix: str, max_connections: int,
        expect_cluster: bool | None = None,
    ) -> RedisOptions:
        """The options of a ``redis://`` or ``redis+cluster://`` ``uri`` for ``store`` (e.g.
        "queue store"), with that store's default key prefix and pool size. ``expect_cluster``
        (True or False): refuse the other form (a store class serves one of them).

        Raises: ConfigurationError, naming what is wrong.
        """
        scheme = uri.partition(":")[0].lower()
        if scheme in (SENTINEL_SCHEME, TLS_SENTINEL_SCHEME):
            return cls._parse_sentinel(uri, store, prefix, max_connections, expect_cluster,
                                       tls=scheme == TLS_SENTINEL_SCHEME)
        cluster = scheme in (CLUSTER_SCHEME, TLS_CLUSTER_SCHEME)
        tls = scheme in (TLS_SCHEME, TLS_CLUSTER_SCHEME)
        # The shape to quote in an error: the TLS scheme's when the URI asked for TLS.
        form = FORM.replace("redis:", "rediss:", 1) if tls else FORM
        cluster_form = CLUSTER_FORM.replace("redis+", "rediss+", 1) if tls else CLUSTER_FORM
        if expect_cluster is not None and cluster != expect_cluster:
            raise store_uri.invalid(
                store, uri, f"expected {cluster_form if expect_cluster else form}"
            )
        converters = _converters()
        if tls:
            converters.update(_TLS_CONVERTERS)
        if cluster:
            converters["retry_for"] = _seconds_or_zero
            parts = store_uri.split(
                store, uri, TLS_CLUSTER_SCHEME if tls else CLUSTER_SCHEME, cluster_form
            )
            nodes = store_uri.hosts_and_ports(store, uri, parts, DEFAULT_PORT)
            (host, port), db = nodes[0], 0
            if parts.path not in {"", "/"}:
                raise store_uri.invalid(
                    store, uri, f"a Redis Cluster has only database 0, so its URI names no "
                    f"database: remove {parts.path!r} (expected {cluster_form})"
                )
        else:
            parts = store_uri.split(store, uri, TLS_SCHEME if tls else SCHEME, form)
            host, port = store_uri.host_and_port(store, uri, parts, DEFAULT_PORT)
            nodes = ()
            path = parts.path.removeprefix("/")
            if path and not (path.isascii() and path.isdigit()):
                raise store_uri.invalid(
                    store, uri, f"bad database number {path!r}: expected /0, /1, ... after the port"
                )
            db = int(path or 0)
        if not tls:
            _refuse_tls_options(store, uri, parts.query, TLS_CLUSTER_SCHEME if cluster
                                else TLS_SCHEME)
        given = store_uri.options(store, uri, parts.query, converters)
        if tls:
            _check_tls_options(store, uri, given)
        given.setdefault("prefix", prefix)
        given.setdefault("max_connections", max_connections)
        options = cls(
            store=store,
            host=host,
            port=port,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            nodes=nodes,
            tls=tls,
            **given,
        )
        return options._checked(uri)

    @classmethod
    def _parse_sentinel(
        cls, uri: str, store: str, prefix: str, max_connections: int,
        expect_cluster: bool | None, tls: bool,
    ) -> RedisOptions:
        if expect_cluster:
            raise store_uri.invalid(store, uri, f"expected {CLUSTER_FORM}")
        form = SENTINEL_FORM.replace("redis+", "rediss+", 1) if tls else SENTINEL_FORM
        parts = store_uri.split(store, uri, TLS_SENTINEL_SCHEME if tls else SENTINEL_SCHEME,
                                form)
        sentinels = store_uri.hosts_and_ports(store, uri, parts, DEFAULT_SENTINEL_PORT)
        name, _, rest = parts.path.removeprefix("/").partition("/")
        if not _MASTER_NAME.fullmatch(name):
            raise store_uri.invalid(
                store, uri, f"the master group's name is missing or not 1 to 64 of A-Z a-z 0-9 "
                f"_ . - after the Sentinels' addresses (expected {SENTINEL_FORM})"
            )
        rest = rest.removesuffix("/")
        if rest and not (rest.isascii() and rest.isdigit()):
            raise store_uri.invalid(
                store, uri, f"bad database number {rest!r}: expected /0, /1, ... after the "
                "master group's name"
            )
        converters = _converters()
        converters["sentinel_password"] = str
        if tls:
            converters.update(_TLS_CONVERTERS)
        else:
            _refuse_tls_options(store, uri, parts.query, TLS_SENTINEL_SCHEME)
        given = store_uri.options(store, uri, parts.query, converters)
        if tls:
            _check_tls_options(store, uri, given)
        given.setdefault("prefix", prefix)
        given.setdefault("max_connections", max_connections)
        (host, port) = sentinels[0]
        options = cls(
            store=store, host=host, port=port, db=int(rest or 0),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            sentinels=sentinels, master_name=name, tls=tls, **given,
        )
        return options._checked(uri)

    def _checked(self, uri: str) -> RedisOptions:
        if self.wait and self.wait_timeout >= self.socket_timeout:
            raise store_uri.invalid(
                self.store, uri, f"wait_timeout={self.wait_timeout:g} must be less than "
                f"socket_timeout={self.socket_timeout:g}, or every write would time out first"
            )
        return self

    def client(self, name: str, decode_responses: bool) -> redis.asyncio.Redis:
        """A client of one server over a bounded pool of connections, configured to fail fast.

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

        For a ``redis+sentinel://`` URI, the client of the master the Sentinels name
        (:meth:`sentinel_client`), with the same pool and resend.
        """
        if self.sentinel:
            return self.sentinel_client(name, decode_responses)
        tls: dict[str, Any] = {}
        if self.tls:
            tls = {"connection_class": RereadingSSLConnection, **self.tls_arguments()}
        pool = BlockingConnectionPool(
            host=self.host, port=self.port, **self._pool_arguments(name, decode_responses), **tls
        )
        return redis.asyncio.Redis.from_pool(pool)

    def _pool_arguments(self, name: str, decode_responses: bool) -> dict[str, Any]:
        """The pool of one server's client, or of the master Sentinels name: bounded,
        waiting for a free connection, one resend after a connection error."""
        return {
            "max_connections": self.max_connections,
            "timeout": self.socket_timeout,
            "db": self.db,
            "username": self.username,
            "password": self.password,
            "socket_connect_timeout": self.socket_connect_timeout,
            "socket_timeout": self.socket_timeout,
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            "decode_responses": decode_responses,
            "client_name": name,
        }

    def sentinel_client(self, name: str, decode_responses: bool) -> redis.asyncio.Redis:
        """A client of the master the Sentinels name, found again whenever a connection is
        made: redis-py's ``Sentinel.master_for`` over a :class:`BlockingSentinelPool`. A
        connection that finds the master demoted (``READONLY``) fails as a connection error,
        which is resent once, to the master named then."""
        tls: dict[str, Any] = {}
        if self.tls:
            tls = {"ssl": True, **self.tls_arguments()}
        sentinel = Sentinel(
            list(self.sentinels),
            sentinel_kwargs={
                "socket_connect_timeout": self.socket_connect_timeout,
                "socket_timeout": self.socket_timeout,
                "password": self.sentinel_password,
                "retry": Retry(NoBackoff(), 0),
                **tls,
            },
        )
        if self.tls:
            # The Sentinels' clients make their TLS contexts again from the files too.
            for each in sentinel.sentinels:
                each.connection_pool.connection_class = RereadingSSLConnection
            tls = {"connection_class": RereadingSentinelSSLConnection, **self.tls_arguments()}
        client: redis.asyncio.Redis = sentinel.master_for(
            self.master_name, redis_class=SentinelClient,
            connection_pool_class=BlockingSentinelPool,
            **self._pool_arguments(name, decode_responses), **tls,
        )
        return client

    def cluster_client(self, name: str, decode_responses: bool) -> RedisClusterClient:
        """A client of the cluster the URI names (see :class:`RedisClusterClient`)."""
        return RedisClusterClient(
            retry_for=self.retry_for,
            startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
            username=self.username,
            password=self.password,
            socket_connect_timeout=self.socket_connect_timeout,
            socket_timeout=self.socket_timeout,
            max_connections=self.max_connections,
            # No retries inside redis-py: it would resend a write that timed out.
            retry=Retry(NoBackoff(), 0),
            decode_responses=decode_responses,
            client_name=name,
            ssl=self.tls,
            **self.tls_arguments(),
        )

    def connect(
        self, name: str, decode_responses: bool
    ) -> redis.asyncio.Redis | RedisClusterClient:
        """:meth:`client` or :meth:`cluster_client`, as the URI says."""
        if self.cluster:
            return self.cluster_client(name, decode_responses)
        return self.client(name, decode_responses)


_TLS_CONVERTERS: dict[str, store_uri.Converter] = {
    "ssl_ca_certs": _path, "ssl_certfile": _path, "ssl_keyfile": _path,
    "ssl_cert_reqs": _cert_reqs, "ssl_check_hostname": store_uri.boolean,
}


def _converters() -> dict[str, store_uri.Converter]:
    """The options every form of Redis URI takes."""
    return {
        "prefix": _prefix,
        "socket_connect_timeout": store_uri.seconds,
        "socket_timeout": store_uri.seconds,
        "max_connections": store_uri.count,
        "wait": _replicas,
        "wait_timeout": store_uri.seconds,
    }


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool (the master's address asked of the Sentinels for each new
    connection) with the blocking pool's limit: when every connection is busy a call waits
    for one, up to ``timeout``, as on one server."""


class SentinelClient(redis.asyncio.Redis):
    """The client :meth:`RedisOptions.sentinel_client` returns: closing it closes its
    connections to the Sentinels too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        await super().aclose(close_connection_pool)
        manager = getattr(pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()

    async def master_address(self) -> tuple[str, int]:
        """Where the master is now, as the Sentinels say (and the pool drops its idle
        connections to a master that is not that one any more).

        Raises:
            redis.exceptions.ConnectionError: no Sentinel names a master that is up
                (``MasterNotFoundError``).
        """
        pool = self.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        host, port = await pool.get_master_address()  # type: ignore[no-untyped-call]
        return str(host), int(port)


class RereadingSSLConnection(SSLConnection):
    """redis-py's TLS connection, with its TLS context made again from the files each time it
    connects (redis-py keeps the first one for the connection object's life, and a pool keeps
    its connection objects for ever): a certificate or CA file replaced in place (a renewed
    client certificate, a Kubernetes Secret) applies to the next connection, without a
    restart. redis-py ≥ 7 shares one context between connections while the files are
    unchanged, so this costs a ``stat`` of each file per connection there."""

    def _connection_arguments(self) -> Any:
        self.ssl_context.context = None
        return super()._connection_arguments()


class RereadingSentinelSSLConnection(SentinelManagedSSLConnection):
    """:class:`RereadingSSLConnection` for the master Sentinels name (``rediss+sentinel://``)."""

    def _connection_arguments(self) -> Any:
        self.ssl_context.context = None
        return super()._connection_arguments()


def _refuse_tls_options(store: str, uri: str, query: str, tls_scheme: str) -> None:
    """A TLS option on a URI without TLS is a mistake to say as such: the connection would be
    made in clear. ``tls_scheme``: the scheme of the same over TLS."""
    for name in _TLS_OPTIONS:
        if re.search(rf"(?:^|&){name}=", query):
            raise store_uri.invalid(
                store, uri, f"option {name!r} is for TLS connections: use {tls_scheme}:// "
                f"(this URI connects without TLS)"
            )


def _check_tls_options(store: str, uri: str, given: dict[str, Any]) -> None:
    if "ssl_keyfile" in given and "ssl_certfile" not in given:
        raise store_uri.invalid(
            store, uri, "ssl_keyfile needs ssl_certfile: the client certificate of that key"
        )
    if given.get("ssl_cert_reqs") == "none":
        if given.get("ssl_check_hostname"):
            raise store_uri.invalid(
                store, uri, "ssl_check_hostname=true needs ssl_cert_reqs=required: with none, "
                "no certificate is checked"
            )
        given["ssl_check_hostname"] = False


def _check_files(options: RedisOptions) -> None:
    """Each TLS file of ``options`` can be read and used, or a ConfigurationError names the
    option and what is wrong (redis-py's own errors say neither)."""
    def bad(option: str, path: str, problem: str) -> ConfigurationError:
        return ConfigurationError(
            f"cannot use the TLS files of the {options.store} at {options.address}: "
            f"{option}={path!r}: {problem}"
        )

    context = ssl.create_default_context()
    for option, path in (("ssl_ca_certs", options.ssl_ca_certs),
                         ("ssl_certfile", options.ssl_certfile),
                         ("ssl_keyfile", options.ssl_keyfile)):
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise bad(option, path, exc.strerror or str(exc)) from None
        if option == "ssl_ca_certs":
            try:
                context.load_verify_locations(cafile=path)
            except (ssl.SSLError, ValueError) as exc:
                raise bad(option, path, f"no CA certificate in PEM form ({exc})") from None
    if options.ssl_certfile is not None:
        try:
            context.load_cert_chain(options.ssl_certfile, options.ssl_keyfile)
        except (ssl.SSLError, ValueError) as exc:
            raise bad("ssl_certfile", options.ssl_certfile,
                      f"not a certificate and its key in PEM form, or the key does not "
                      f"match the certificate ({exc})") from None


async def check_tls_files(options: RedisOptions) -> None:
    """At a store's open: its TLS files (if any) can be read and used, checked off the event
    loop, so that a bad one is named rather than reported as Redis not answering.

    Raises:
        Unavailable: naming the option and the file.
    """
    if not options.tls:
        return
    if not options.verifies:
        log.warning("%s at %s: ssl_cert_reqs=none, Redis's certificate is not checked: the "
                    "connection is encrypted but anyone in between can read it",
                    options.store, options.address)
    try:
        await asyncio.to_thread(options.tls_context)
    except ConfigurationError as exc:
        text = str(exc)
        raise Unavailable(f"{text[:1].upper()}{text[1:]}.") from None


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``exc`` (a failed handshake), if one is."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _tls_reason(error: ssl.SSLError) -> str:
    """What a failed handshake means, in words safe to show a caller (no address, no name)."""
    reason = str(getattr(error, "reason", "") or "")
    if isinstance(error, ssl.SSLCertVerificationError) or reason == "CERTIFICATE_VERIFY_FAILED":
        return "Redis's certificate is not trusted, or does not name the host"
    if "CERTIFICATE_REQUIRED" in reason:
        return "Redis asks for a client certificate (ssl_certfile)"
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return "the server does not speak TLS on this port"
    if "ALERT" in reason:
        return f"Redis refused the handshake ({reason})"
    return f"the TLS handshake with Redis failed ({reason or error})"


def operator_detail(exc: Exception) -> str:
    """For operators (start-up, the pool probe): :func:`describe`, with what a failed TLS
    handshake said, or why the Sentinels could not be asked."""
    detail = tls_detail(exc)
    if detail is not None:
        return detail
    if _sentinels_unasked(exc):
        return f"{describe(exc)} ({exc})"
    return describe(exc)


def _sentinels_unasked(exc: Exception) -> bool:
    """Whether ``exc`` says that some Sentinels could not be asked: redis-py lists them after
    " : " in a MasterNotFoundError (and why), if any."""
    return isinstance(exc, MasterNotFoundError) and " : " in str(exc)


def tls_detail(exc: BaseException) -> str | None:
    """For operators (logs, start-up, the pool probe): a failed handshake's reason and what the
    certificate check said, e.g. "...: IP address mismatch, certificate is not valid for
    '127.0.0.1'"; None when ``exc`` is no TLS failure."""
    error = tls_failure(exc)
    if error is None:
        return None
    said = getattr(error, "verify_message", None) or str(error)
    return f"{_tls_reason(error)}: {said}"


def never_sent(exc: Exception) -> bool:
    """Whether a failed command surely did not reach a server: its connection could not be
    made, or a server refused it before running it (a cluster that is down or reconfiguring,
    a slot served elsewhere, a read-only replica)."""
    if isinstance(exc, RedisTimeoutError):
        # redis-py tells a connect timeout from a read or write timeout by its message only.
        return str(exc).startswith("Timeout connecting")
    return isinstance(exc, (
        ClusterDownError, TryAgainError, MovedError, AskError, ReadOnlyError, SlotNotCoveredError,
    ))


def may_resend(exc: Exception, idempotent: bool) -> bool:
    """Whether a command that failed with ``exc`` may be sent again.

    A timed-out command may have been applied: it is resent only when repeating it changes
    nothing more. A connection that broke is resent like on one server (``client()``): a
    master that applied the command and then died took it with it, unless a replica got it
    first, which is why the stores make their non-idempotent scripts recognise a replay of
    themselves (a posted batch, a claim, by their ids).
    """
    if never_sent(exc):
        return True
    if isinstance(exc, RedisTimeoutError):
        return idempotent
    return isinstance(exc, RedisConnectionError)


@dataclass(frozen=True, slots=True)
class Call:
    """One command of a batch sent by :func:`run`."""

    args: tuple[Any, ...]
    """The command and its arguments, e.g. ``("EVALSHA", sha, 1, key, ...)``."""
    key: Any
    """A key of the command: its slot picks the node on a cluster."""
    writes: bool = True
    """Whether ``WAIT`` must confirm it (when the URI asks for replicas)."""
    idempotent: bool = False
    """Whether repeating it changes nothing more, so a timeout may be retried."""


def _confirmed(calls: Sequence[Call], replies: list[Any], replicas: int) -> list[Any]:
    """The replies of ``calls`` sent with a trailing ``WAIT`` (its reply last): a write that
    fewer than ``replicas`` confirmed gets a :class:`NotReplicated` instead of its reply."""
    acked = replies.pop()
    if isinstance(acked, int) and acked >= replicas:
        return replies
    if isinstance(acked, int):
        problem = NotReplicated(f"{acked} of {replicas} replicas confirmed the write in time")
    else:
        problem = NotReplicated(f"the replicas' confirmation was not received ({acked})")
    return [
        problem if call.writes and not isinstance(reply, Exception) else reply
        for call, reply in zip(calls, replies, strict=True)
    ]


Settle = Callable[[int, Any], None]


async def run(
    client: redis.asyncio.Redis | RedisClusterClient,
    calls: Sequence[Call],
    replicas: int = 0,
    wait_timeout: float = 1.0,
    settle: Settle | None = None,
) -> list[Any]:
    """The reply of each call, or the error it failed with, sending them pipelined (one
    pipeline per node on a cluster) and, when ``replicas`` and a call writes, followed on the
    same connection by ``WAIT replicas wait_timeout``. ``settle(i, reply)`` is called for
    call ``i`` as soon as its reply is known: on a cluster some are known while others are
    still being resent.

    On one server a lone call goes alone (no pipeline), and a connection failure raises
    (every call of a pipeline failed with it). A :class:`NoScriptError` is returned, for the
    caller to load its scripts and go again.
    """
    if isinstance(client, RedisClusterClient):
        return await client.run(calls, replicas, wait_timeout, settle)
    waits = replicas > 0 and any(call.writes for call in calls)
    replies: list[Any]
    if len(calls) == 1 and not waits:
        try:
            # redis-py leaves Redis.execute_command unannotated.
            replies = [await client.execute_command(*calls[0].args)]  # type: ignore[no-untyped-call]
        except NoScriptError as exc:
            replies = [exc]
    else:
        async with client.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.execute_command(*call.args)
            if waits:
                pipe.execute_command("WAIT", replicas, int(wait_timeout * 1000))
            replies = await pipe.execute(raise_on_error=False)
        if waits:
            replies = _confirmed(calls, replies, replicas)
    if settle is not None:
        for i, reply in enumerate(replies):
            settle(i, reply)
    return replies


class RedisClusterClient(RedisCluster):
    """redis-py's cluster client, resending what failed while the cluster could not serve it.

    redis-py finds the node of each key's slot, follows ``MOVED``/``ASK`` redirections and
    reads the slot map again after a connection error; its own retries are turned off
    (``retry=Retry(NoBackoff(), 0)``) because they would resend a write that timed out. Here a
    failed command is resent, with back-off, for at most ``retry_for`` seconds when
    :func:`may_resend` allows it: a connection error or a ``CLUSTERDOWN`` while a replica takes
    over from a dead master, a node that cannot be reached, a slot that moved; a timeout only
    for idempotent commands (:data:`_IDEMPOTENT_COMMANDS`, and scripts whose SHA1 is in
    :attr:`idempotent_scripts`).
    """

    def __init__(self, *, retry_for: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retry_for = retry_for
        self.idempotent_scripts: set[str] = set()
        if kwargs.get("ssl"):
            # redis-py picks SSLConnection itself for ssl=True; every node it knows now, or
            # finds later from the kwargs they share, makes ours instead.
            self.connection_kwargs["connection_class"] = RereadingSSLConnection
            self.nodes_manager.connection_kwargs["connection_class"] = RereadingSSLConnection
            for node in self.nodes_manager.startup_nodes.values():
                node.connection_class = RereadingSSLConnection

    def _idempotent(self, args: Sequence[Any]) -> bool:
        name = str(args[0]).upper()
        if name == "EVALSHA":
            return str(args[1]) in self.idempotent_scripts
        return name in _IDEMPOTENT_COMMANDS

    async def _refresh(self) -> None:
        """Read the slot map again (a failed node may have been replaced)."""
        try:
            await self.nodes_manager.initialize()
        except (RedisError, RedisClusterException):
            pass  # no node answers yet: the next attempt fails and tries again

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        backoff = Backoff(self.retry_for)
        while True:
            try:
                await self.initialize()  # only when the slot map must be read (again)
            except (RedisError, RedisClusterException) as exc:
                failure: Exception = exc
            else:
                try:
                    return await super().execute_command(*args, **kwargs)
                except (RedisError, RedisClusterException) as exc:
                    if not may_resend(exc, self._idempotent(args)):
                        raise
                    failure = exc
            if not await backoff.pause():
                raise failure

    async def run(
        self, calls: Sequence[Call], replicas: int, wait_timeout: float,
        settle: Settle | None = None,
    ) -> list[Any]:
        """:func:`run` on the cluster: the calls grouped by the node of their key's slot, one
        pipeline per node, every command of it pinned to that node (so a ``WAIT`` at its end
        covers them all, and a slot that moved answers ``MOVED`` instead of being followed
        elsewhere). A call that failed in a way :func:`may_resend` allows is sent again, in a
        new grouping after the slot map is read again, until ``retry_for`` has passed; the
        others are settled at once.
        """
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        backoff = Backoff(self.retry_for)
        while True:
            outcome = await self._attempt([calls[i] for i in todo], replicas, wait_timeout)
            again: list[int] = []
            for i, reply in zip(todo, outcome, strict=True):
                replies[i] = reply
                if isinstance(reply, Exception) and may_resend(reply, calls[i].idempotent):
                    again.append(i)
                elif settle is not None:
                    settle(i, reply)
            if again and await backoff.pause():
                await self._refresh()
                todo = again
                continue
            if settle is not None:
                for i in again:
                    settle(i, replies[i])
            return replies

    async def _attempt(
        self, calls: Sequence[Call], replicas: int, wait_timeout: float
    ) -> list[Any]:
        groups: dict[str, tuple[ClusterNode, list[int]]] = {}
        try:
            await self.initialize()
            for i, call in enumerate(calls):
                node = self.get_node_from_key(call.key)
                assert node is not None  # a primary is asked for, and raises when none
                groups.setdefault(node.name, (node, []))[1].append(i)
        except (RedisError, RedisClusterException) as exc:
            return [exc] * len(calls)
        results = await asyncio.gather(
            *(self._on_node(node, [calls[i] for i in chosen], replicas, wait_timeout)
              for node, chosen in groups.values()),
            return_exceptions=True,
        )
        outcome: list[Any] = [None] * len(calls)
        for (_, chosen), result in zip(groups.values(), results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            for n, i in enumerate(chosen):
                outcome[i] = result if isinstance(result, Exception) else result[n]
        return outcome

    async def _on_node(
        self, node: ClusterNode, calls: Sequence[Call], replicas: int, wait_timeout: float
    ) -> list[Any]:
        waits = replicas > 0 and any(call.writes for call in calls)
        pipe = self.pipeline(transaction=False)
        for call in calls:
            pipe.execute_command(*call.args, target_nodes=node)
        if waits:
            pipe.execute_command("WAIT", replicas, int(wait_timeout * 1000), target_nodes=node)
        replies: list[Any] = await pipe.execute(raise_on_error=False, allow_redirections=False)
        return _confirmed(calls, replies, replicas) if waits else replies


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
        (NotReplicated, "Redis replicas did not confirm the write in time"),
        (ClusterDownError, "the Redis Cluster is down or failing over"),
        (SlotNotCoveredError, "the Redis Cluster does not serve every slot"),
        (ResponseError, "Redis refused the operation"),
        (RedisClusterException, "the Redis Cluster cannot be reached"),
    ]
    if redis_fault(exc):
        return "the connection to Redis was lost"
    failed = tls_failure(exc)
    if failed is not None:
        return _tls_reason(failed)
    if isinstance(exc, MasterNotFoundError):
        if _sentinels_unasked(exc):
            return "the Redis Sentinels name no master that is up, or cannot be reached"
        return "the Redis Sentinels name no master that is up"
    return next((text for kind, text in reasons if isinstance(exc, kind)), "Redis failed")


def redis_fault(exc: Exception) -> bool:
    """Whether ``exc`` is redis-py failing on a connection that was closed under it (it
    raises AttributeError on the closed stream, e.g. ``'NoneType' object has no attribute
    'writelines'``, seen while a Redis Cluster fails over) rather than an error of ours."""
    if not isinstance(exc, AttributeError) or exc.__traceback__ is None:
        return False
    last = traceback.extract_tb(exc.__traceback__)[-1].filename
    return f"{os.sep}redis{os.sep}" in last


def redis_edge(store: str) -> Callable[[str], Callable[[Method[S, P, R]], Wrapped[S, P, R]]]:
    """The decorator factory that turns Redis errors of ``store`` into Unavailable.

    A call that waited out a timeout (``socket_connect_timeout``, ``socket_timeout``: a server
    that accepts connections and does not answer, or cannot be reached at all) takes the
    server as down: the calls made while another one waits for it fail at once
    (:func:`services.common.store_edge.driver_edge`). A server that refuses connections makes
    every call fail at once anyway."""
    return driver_edge(store, (RedisError, RedisClusterException), describe, redis_fault,
                       unreachable=_unreachable)


def _unreachable(exc: Exception) -> bool:
    return isinstance(exc, RedisTimeoutError)


# The server addresses whose persistence and eviction this process has logged about: another
# store on the same server, or a store opened again (a pool, a reopen after a failure), does
# not log again (it still reads them, for its gauges and capabilities).
_PERSISTENCE_TOLD: set[str] = set()

ServerSettings = dict[str, dict[str, str]]
"""Settings of a server (node ``""``) or of each master of a cluster, by node."""

# maxmemory-policy values that may evict any key, so acknowledged messages, queues and
# subscriptions (the stores set no expiry on those; volatile-* policies evict only keys with
# one, such as the notifier's watch feeds).
EVICTING_POLICIES: Final = frozenset({"allkeys-lru", "allkeys-lfu", "allkeys-random"})


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def persistence_settings(client: redis.asyncio.Redis | RedisClusterClient) -> ServerSettings:
    """``appendonly``, ``appendfsync``, ``save`` and ``maxmemory-policy`` of the server (node
    ``""``), or of each master of a cluster, by node.

    Raises:
        RedisError: CONFIG GET is refused (renamed or disabled, as managed services do).
    """
    names = ("appendonly", "appendfsync", "save", "maxmemory-policy")
    replies: dict[Any, dict[Any, Any]]
    if isinstance(client, RedisCluster):
        # One reply per node (redis-py's types know only the single-server shape).
        replies = await client.config_get(  # type: ignore[assignment]
            *names, target_nodes=RedisCluster.PRIMARIES
        )
    else:
        replies = {"": await client.config_get(*names)}
    return {
        _text(node): {_text(k): _text(v) for k, v in reply.items()}
        for node, reply in replies.items()
    }


def persistence_warning(settings: ServerSettings) -> str | None:
    """What a restart of the server (or of a master of a cluster) would lose of what it
    acknowledged; None when it appends every write to its append-only file (``appendonly
    yes``), whatever its ``appendfsync``: a redis-server process that dies loses nothing of
    what it wrote there."""
    lost = []
    for node, values in settings.items():
        if values.get("appendonly") == "yes":
            continue
        save = values.get("save", "")
        what = (f"what it was sent since its last snapshot (save {save})" if save
                else "everything (no save points either)")
        lost.append((f"{node}: " if node else "") + what)
    if not lost:
        return None
    return "appendonly no: a restart of it loses " + "; ".join(lost)


def eviction_warning(settings: ServerSettings) -> str | None:
    """The servers (or masters) whose ``maxmemory-policy`` evicts any key when memory is full
    (:data:`EVICTING_POLICIES`), with their policy; None when none does. With ``noeviction``
    (Redis's default) a full server refuses writes instead: posts get 503, nothing taken is
    dropped."""
    evicting = [(f"{node}: " if node else "") + values["maxmemory-policy"]
                for node, values in settings.items()
                if values.get("maxmemory-policy") in EVICTING_POLICIES]
    return "maxmemory-policy " + "; ".join(evicting) if evicting else None


async def tell_persistence(
    client: redis.asyncio.Redis | RedisClusterClient, store: str, address: str
) -> ServerSettings | None:
    """Read the server's persistence and eviction settings (one ``CONFIG GET``) and return
    them, None when they cannot be read; set ``zaqar_store_persistent`` and
    ``zaqar_store_evicts`` for ``store``; and log, once per server address in this process, a
    warning when the server would lose acknowledged writes in a restart
    (:func:`persistence_warning`) or evict them when full (:func:`eviction_warning`), or
    that its settings could not be read. Never fails: the store works either way."""
    label = store.removesuffix(" store")
    told = address in _PERSISTENCE_TOLD
    try:
        settings = await persistence_settings(client)
    except (RedisError, RedisClusterException) as exc:
        if not told:
            _PERSISTENCE_TOLD.add(address)
            log.info("the Redis of the %s at %s does not let us read its persistence settings "
                     "(CONFIG GET: %s); run it with appendonly yes and maxmemory-policy "
                     "noeviction so that it loses nothing acknowledged (docs/operations.md, "
                     "\"Redis persistence\")", store, address, exc)
        return None
    lost, evicts = persistence_warning(settings), eviction_warning(settings)
    STORE_PERSISTENT.labels(label).set(0 if lost else 1)
    STORE_EVICTS.labels(label).set(1 if evicts else 0)
    if told:
        return settings
    _PERSISTENCE_TOLD.add(address)
    if lost is not None:
        log.warning("the Redis of the %s at %s would lose acknowledged writes in a restart "
                    "(%s); run it with appendonly yes (docs/operations.md, \"Redis "
                    "persistence\")", store, address, lost)
    if evicts is not None:
        log.warning("the Redis of the %s at %s would drop acknowledged writes when its memory "
                    "is full (%s evicts any key); run it with maxmemory-policy noeviction, "
                    "which refuses new writes instead (docs/operations.md, \"Redis "
                    "persistence\")", store, address, evicts)
    return settings


async def open_with_scripts(
    client: redis.asyncio.Redis | RedisClusterClient,
    texts: dict[str, str],
    store: str,
    address: str,
) -> dict[str, AsyncScript]:
    """Check the server answers and load ``texts`` (name -> Lua source) once (on every master
    of a cluster), returning each script registered on ``client``; the client is closed when
    the server cannot be used.

    Raises:
        Unavailable: the server cannot be reached or refuses the scripts.
    """
    scripts: dict[str, AsyncScript] = {}
    try:
        await client.ping()
        for name, text in texts.items():
            await client.script_load(text)
            scripts[name] = client.register_script(text)
    except (RedisError, RedisClusterException) as exc:
        await client.aclose()
        raise Unavailable(
            f"Cannot open the {store} at {address}: {describe(exc)} ({exc})."
        ) from exc
    await tell_persistence(client, store, address)
    return scripts
