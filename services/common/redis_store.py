"""Redis for any service's store: the URI (one server, ``redis://``, or a Redis Cluster,
``redis+cluster://``), the client it configures, how a batch of commands is sent (pipelined,
followed by ``WAIT`` when the URI asks for replicas to confirm writes), and the one place Redis
errors are translated (each store names itself, its key prefix and its pool size).

On a cluster, every key of one call must hash to one slot (the stores give all keys of a queue,
or of a project, one hash tag); :class:`RedisClusterClient` sends each call to the node serving
that slot and rides out a failover (see its docstring). docs/redis-cluster.md has the design.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis.asyncio
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
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
from services.common.errors import Unavailable
from services.common.store_edge import Method, P, R, S, Wrapped, driver_edge

SCHEME = "redis"
CLUSTER_SCHEME = "redis+cluster"
FORM = "redis://[[username]:password@]host[:port][/db][?option=value&...]"
CLUSTER_FORM = (
    "redis+cluster://[[username]:password@]host[:port][,host[:port]...][/][?option=value&...]"
)
DEFAULT_PORT = 6379
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

    @property
    def cluster(self) -> bool:
        return bool(self.nodes)

    @property
    def address(self) -> str:
        if self.cluster:
            return f"{CLUSTER_SCHEME}://" + ",".join(f"{h}:{p}" for h, p in self.nodes)
        return f"redis://{self.host}:{self.port}/{self.db}"

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
        cluster = uri.partition(":")[0].lower() == CLUSTER_SCHEME
        if expect_cluster is not None and cluster != expect_cluster:
            raise store_uri.invalid(
                store, uri, f"expected {CLUSTER_FORM if expect_cluster else FORM}"
            )
        converters: dict[str, store_uri.Converter] = {
            "prefix": _prefix,
            "socket_connect_timeout": store_uri.seconds,
            "socket_timeout": store_uri.seconds,
            "max_connections": store_uri.count,
            "wait": _replicas,
            "wait_timeout": store_uri.seconds,
        }
        if cluster:
            converters["retry_for"] = _seconds_or_zero
            parts = store_uri.split(store, uri, CLUSTER_SCHEME, CLUSTER_FORM)
            nodes = store_uri.hosts_and_ports(store, uri, parts, DEFAULT_PORT)
            (host, port), db = nodes[0], 0
            if parts.path not in {"", "/"}:
                raise store_uri.invalid(
                    store, uri, f"a Redis Cluster has only database 0, so its URI names no "
                    f"database: remove {parts.path!r} (expected {CLUSTER_FORM})"
                )
        else:
            parts = store_uri.split(store, uri, SCHEME, FORM)
            host, port = store_uri.host_and_port(store, uri, parts, DEFAULT_PORT)
            nodes = ()
            path = parts.path.removeprefix("/")
            if path and not (path.isascii() and path.isdigit()):
                raise store_uri.invalid(
                    store, uri, f"bad database number {path!r}: expected /0, /1, ... after the port"
                )
            db = int(path or 0)
        given = store_uri.options(store, uri, parts.query, converters)
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
            **given,
        )
        if options.wait and options.wait_timeout >= options.socket_timeout:
            raise store_uri.invalid(
                store, uri, f"wait_timeout={options.wait_timeout:g} must be less than "
                f"socket_timeout={options.socket_timeout:g}, or every write would time out first"
            )
        return options

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
        )

    def connect(
        self, name: str, decode_responses: bool
    ) -> redis.asyncio.Redis | RedisClusterClient:
        """:meth:`client` or :meth:`cluster_client`, as the URI says."""
        if self.cluster:
            return self.cluster_client(name, decode_responses)
        return self.client(name, decode_responses)


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


class _Backoff:
    """Pauses between attempts, doubling from 20 ms to 500 ms, until ``seconds`` have passed."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds
        self._pause = 0.02

    async def pause(self) -> bool:
        """Sleep before the next attempt; False (at once) when the time is up."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(self._pause, left))
        self._pause = min(self._pause * 2, 0.5)
        return True


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
        backoff = _Backoff(self.retry_for)
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
        backoff = _Backoff(self.retry_for)
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
    """The decorator factory that turns Redis errors of ``store`` into Unavailable."""
    return driver_edge(store, (RedisError, RedisClusterException), describe, redis_fault)


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
    return scripts
