"""The store's Lua scripts: loaded at open, called with EVALSHA, pipelined when concurrent.

Calls made in the same turn of the event loop (say, the requests of many consumers that
arrived together) go to Redis together: one write on one connection instead of one each per
call, which is most of what a call costs the client. Each script is still atomic on its own;
sending them together only saves round trips.

On one server they go through a :class:`~services.common.redis_link.Link`: one connection
that every batch is written to as it comes, without redis-py's per-call machinery. On a Redis
Cluster the batch becomes one redis-py pipeline per node (``redis_store.RedisClusterClient.run``),
and when the URI asks replicas to confirm writes (``wait=N``) each redis-py pipeline that
writes ends with ``WAIT``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import redis.asyncio
from redis.exceptions import DataError, NoScriptError, RedisError

from services.common import redis_store
from services.common.lua_scripts import script_source
from services.common.redis_link import Command, Link, pack, resolve, settle
from services.common.redis_store import RedisClusterClient, RedisOptions, SentinelClient

NAMES = (
    "post", "list", "get", "delete", "delete_many", "pop", "claim", "get_claim", "renew",
    "release", "stats", "delete_queue", "collect_garbage", "dead_letter_copy",
    "dead_letter_done", "next_free", "post_once", "post_fifo",
)
# Scripts that change nothing, or nothing more when run again with the same arguments (list
# only moves due messages to the free index): a cluster client may resend them after a timeout.
IDEMPOTENT = frozenset({
    "list", "get", "get_claim", "stats", "renew", "release", "delete_queue", "collect_garbage",
    "dead_letter_copy", "dead_letter_done", "next_free", "post_once",
})
# Scripts whose writes need no replica's confirmation (``wait``): they only read.
READ_ONLY = frozenset({"list", "get", "get_claim", "stats", "next_free"})

# (script name, number of keys, keys and arguments encoded, the caller's future)
Call = tuple[str, int, list[bytes | memoryview], "asyncio.Future[Any]"]


@functools.cache
def source(name: str) -> str:
    """The text of script ``name``: what it uses of the shared ``lib.lua``, then
    ``<name>.lua`` (:func:`~services.common.lua_scripts.script_source`); made once per
    process."""
    return script_source(resources.files(__package__).joinpath("scripts"), "lib", name)


class Scripts:
    """Runs the scripts on one client, batching concurrent calls into pipelines.

    Args:
        replicas: replicas that must confirm each batch's writes (``WAIT``), 0 for none.
        wait_timeout: seconds they have to confirm them.
        server: the options of ``client``'s server, to send the calls through a
            :class:`~services.common.redis_link.Link` of their own (named ``name``) instead
            of ``client``'s pipelines; ignored on a cluster and with ``replicas``. ``client``
            still loads the scripts.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis | RedisClusterClient,
        replicas: int = 0,
        wait_timeout: float = 1.0,
        server: RedisOptions | None = None,
        name: str = "",
    ) -> None:
        self._client = client
        self._link = (
            Link(server, name, self.answer,
                 locate=client.master_address if isinstance(client, SentinelClient) else None)
            if server is not None and not server.cluster and not replicas else None
        )
        self._linked: list[Command] = []  # calls of this turn for the link
        self._reloading: asyncio.Task[None] | None = None
        self._unloaded: list[Command] = []  # calls that met NOSCRIPT, for after the reload
        self._answered = asyncio.Event()  # set at each reply of the link (drain)
        self._replicas, self._wait_timeout = replicas, wait_timeout
        if isinstance(client, RedisClusterClient):
            encoder = client.get_encoder()
        else:
            # redis-py leaves ConnectionPool.get_encoder unannotated.
            encoder = client.connection_pool.get_encoder()  # type: ignore[no-untyped-call]
        self._encode: Callable[[Any], bytes | memoryview] = encoder.encode
        self._sources = {name: source(name) for name in NAMES}
        self._shas = {
            name: hashlib.sha1(text.encode()).hexdigest() for name, text in self._sources.items()
        }
        if isinstance(client, RedisClusterClient):
            client.idempotent_scripts.update(self._shas[name] for name in IDEMPOTENT)
        self._pending: list[Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def load(self) -> None:
        """Load every script into the server's script cache (again, after a restart), on
        every master of a cluster."""
        for text in self._sources.values():
            await self._client.script_load(text)

    def run(self, name: str, keys: Sequence[Any], args: Sequence[Any]) -> asyncio.Future[Any]:
        """The reply of script ``name``; it raises what Redis or the connection raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._link is not None:
            try:
                packed = pack(("EVALSHA", self._shas[name], len(keys), *keys, *args))
            except TypeError as exc:  # this call alone fails, as below
                future.set_exception(DataError(f"Invalid input for script {name}: {exc}"))
                return future
            if not self._linked:
                loop.call_soon(self._send_linked)
            self._linked.append(Command(packed, future))
            return future
        try:
            # Encoded now, so that a value Redis cannot take fails this call alone, not the
            # pipeline it would have joined.
            encoded = [self._encode(value) for value in (*keys, *args)]
        except RedisError as exc:
            future.set_exception(exc)
            return future
        if not self._pending:
            loop.call_soon(self._send_pending)
        self._pending.append((name, len(keys), encoded, future))
        return future

    async def drain(self) -> None:
        """Wait for every call already made."""
        while self._pending or self._sending or self._linked_waiting():
            waits: list[asyncio.Future[Any]] = [
                *self._sending, *(call.future for call in self._linked_waiting()),
                *([self._reloading] if self._reloading else []),
            ]
            unanswered = [future for future in waits if not future.done()]
            if unanswered:
                # asyncio.wait, not gather: cancelling the drain must not cancel the calls.
                await asyncio.wait(unanswered)
            elif self._pending or self._linked or self._sending:
                # Calls sent at the end of this turn, or a finished send's task that leaves
                # _sending when its done callback runs.
                await asyncio.sleep(0)
            else:
                # On the link, and their callers gave up on them: their replies are still due
                # (or their failure, when the connection breaks or times out).
                self._answered.clear()
                await self._answered.wait()

    async def close(self) -> None:
        """Wait for every call already made, then close the link (if any)."""
        await self.drain()
        if self._link is not None:
            await self._link.close()

    def _linked_waiting(self) -> list[Command]:
        if self._link is None:
            return []
        return [*self._linked, *self._link.waiting(), *self._unloaded]

    def _send_linked(self) -> None:
        assert self._link is not None
        batch, self._linked = self._linked, []
        self._link.send(batch)

    def answer(self, call: Command, reply: Any) -> None:
        """The link's answer to ``call``: its reply, or, the first time Redis has lost the
        scripts (it restarted, or its script cache was flushed), a reload and a resend."""
        self._answered.set()
        if isinstance(reply, NoScriptError) and not call.reloaded:
            call.reloaded = True
            self._unloaded.append(call)
            if self._reloading is None:
                self._reloading = asyncio.get_running_loop().create_task(self._reload())
            return
        settle(call, reply)

    async def _reload(self) -> None:
        assert self._link is not None
        try:
            await self.load()
        except Exception as exc:  # each call waiting for the reload fails with it
            unloaded, self._unloaded = self._unloaded, []
            for call in unloaded:
                settle(call, exc)
        else:
            unloaded, self._unloaded = self._unloaded, []
            self._link.send(unloaded)
        finally:
            self._reloading = None

    def _send_pending(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[Call]) -> None:
        lost: list[Call] = []

        def settle(call: Call, reply: Any) -> None:
            if isinstance(reply, NoScriptError) and not lost_again:
                lost.append(call)  # the server restarted (or its script cache was flushed)
            else:
                resolve(call[3], reply)

        lost_again = False
        try:
            await self._pipeline(batch, settle)
            if lost:
                lost_again = True
                await self.load()
                await self._pipeline(lost, settle)
        except asyncio.CancelledError:
            for *_, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the connection failed: every call of the batch failed
            for *_, future in batch:
                resolve(future, exc)

    async def _pipeline(self, batch: Sequence[Call], settle: Callable[[Call, Any], None]) -> None:
        """Send ``batch``, calling ``settle(call, its reply or error)`` as each is known (on a
        cluster, a call is answered while others of its batch are still being resent)."""
        calls = [
            redis_store.Call(
                ("EVALSHA", self._shas[name], nkeys, *encoded),
                key=encoded[0],
                writes=name not in READ_ONLY,
                idempotent=name in IDEMPOTENT,
            )
            for name, nkeys, encoded, _ in batch
        ]
        await redis_store.run(
            self._client, calls, self._replicas, self._wait_timeout,
            settle=lambda i, reply: settle(batch[i], reply),
        )
