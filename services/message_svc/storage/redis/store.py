"""The Redis message store: every operation is one Lua script, so one atomic round trip.

The key layout is described in ``scripts/lib.lua``, whose definitions each script carries as it
needs them (``_scripts.source``). All keys of one queue share the hash tag
``{<project>/<queue>}``; the registry of queues that hold something (``<prefix>:queues``, a set
of tags, for :meth:`collect_garbage`) and a claim's move to a dead-letter queue are the only
places a script reaches beyond one queue. On a Redis Cluster neither may (``cluster.py``): there
the registry is kept per slot and a dead-letter move takes three steps.

FIFO queues (``post_fifo``) keep a message with a group out of the free index, in its group's
sorted set, and the groups in two sorted sets (ready to serve, scored by their heads' seqs;
waiting, scored by when they may serve again); ``claim.lua`` and ``pop.lua`` merge free with
the ready groups whenever the queue has groups, so ``claim_fifo`` and ``pop_fifo`` are
``claim`` and ``pop`` (``scripts/lib.lua`` has the layout and the costs).

Times are the store clock's floats, passed to scripts as exact decimal text; Redis's own
expiry is not used, so that expiry follows the store's clock and expired items stay countable
for :meth:`collect_garbage`. Scripts are loaded at open and called with EVALSHA; concurrent
calls share pipelines (``_scripts.py``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio
from redis.exceptions import RedisClusterException, RedisError

from services.common import redis_store
from services.common.errors import Unavailable
from services.common.redis_store import (
    RedisClusterClient,
    ServerSettings,
    check_tls_files,
    tell_persistence,
)
from services.message_svc.storage import base
from services.message_svc.storage.base import (
    Capabilities,
    Claim,
    ClaimResult,
    DeadLetterPolicy,
    DeleteOutcome,
    FairPolicy,
    FifoPosted,
    NewMessage,
    QueueStats,
    StaleQueue,
    StoredMessage,
)
from services.message_svc.storage.redis._codec import (
    expected_version,
    prefix_of_tag,
    queue_prefix,
    stale_version,
    timestamp,
    to_message,
)
from services.message_svc.storage.redis._connection import (
    CLIENT_NAME,
    RedisOptions,
    connect,
    describe,
    edge,
    parse,
)
from services.message_svc.storage.redis._scripts import Scripts

# Expired messages (and, separately, claims) one garbage-collection script removes at most,
# so that Redis, which runs one script at a time, is never held up for long.
GC_BATCH = 1000
# Queues whose garbage is collected in one pipelined round trip.
GC_QUEUES_PER_TRIP = 100
# Seconds after which a dead-letter move that was started and not finished is resumed by
# collect_garbage (moves are staged only on a Redis Cluster: see cluster.py).
MOVE_LEASE = 10.0

# What claim.lua reports of the messages it dead-letters: the moved ids, or the staged rows.
DeadLetters = Sequence[Any]


def _new_id() -> str:
    return str(uuid.uuid4())


class RedisMessageStore(base.MessageStore):
    """:class:`services.message_svc.storage.base.MessageStore` on a Redis server.

    Durable when the server appends every write to its AOF with ``appendfsync always``
    (checked at open, reported in :attr:`capabilities`); shared by any number of replicas.
    """

    capabilities = Capabilities(durable=False, shared=True, fifo=True, fair=True)
    # Whether a claim stages its dead letters (in its own slot) instead of moving them.
    stages_dead_letters = False

    def __init__(self, options: RedisOptions, now: Callable[[], float] = time.time) -> None:
        self.options = options
        self._now = now
        self._client: redis.asyncio.Redis | RedisClusterClient | None = None
        self._scripts: Scripts | None = None
        self._registry = f"{options.prefix}:queues"

    @classmethod
    def from_uri(cls, uri: str, now: Callable[[], float] = time.time) -> RedisMessageStore:
        """Raises: ConfigurationError, naming what is wrong with ``uri``."""
        return cls(parse(uri), now=now)

    def _registry_of(self, tag: str) -> str:
        """The registry key holding queue ``tag`` (here one set for every queue)."""
        return self._registry

    async def _registry_started(self, tag: str) -> None:
        """Called when queue ``tag`` was the first one put in its registry set."""

    @property
    def address(self) -> str:
        return self.options.address

    async def open(self) -> None:
        """Connect to the server the URI names and load the scripts.

        Raises:
            Unavailable: the server cannot be reached or refuses the scripts.
        """
        await check_tls_files(self.options)
        client = connect(self.options)
        scripts = Scripts(
            client, self.options.wait, self.options.wait_timeout, self.options, CLIENT_NAME
        )
        try:
            await client.ping()
            await scripts.load()
        except (RedisError, RedisClusterException) as exc:
            await client.aclose()
            raise Unavailable(
                f"Cannot open the message store at {self.address}: {describe(exc)} ({exc})."
            ) from exc
        settings = await tell_persistence(client, "message store", self.address)
        self.capabilities = self._capabilities(settings)
        self._client, self._scripts = client, scripts

    async def close(self) -> None:
        if self._client is not None and self._scripts is not None:
            client, scripts, self._client, self._scripts = self._client, self._scripts, None, None
            await scripts.close()
            await client.aclose()

    def _capabilities(self, settings: ServerSettings | None) -> Capabilities:
        """``settings``: the server's, None when CONFIG GET is refused (managed Redis: then
        nothing is assumed). Durable when it appends each write to its AOF and fsyncs it
        before answering."""
        values = {} if settings is None else settings.get("", {})
        durable = values.get("appendonly") == "yes" and values.get("appendfsync") == "always"
        return Capabilities(durable=durable, shared=True, fifo=True, fair=True)

    def _redis(self) -> redis.asyncio.Redis | RedisClusterClient:
        if self._client is None:
            raise Unavailable("The message store is closed.")
        return self._client

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self._scripts is None:
            raise Unavailable("The message store is closed.")
        return await self._scripts.run(name, keys, args)

    def _queue(self, project: str, queue: str) -> tuple[str, str]:
        return queue_prefix(self.options.prefix, project, queue)

    # Queue versions -------------------------------------------------------------------------
    # The "version" key of the queue, in its hash tag: post and claim scripts compare it with
    # the caller's version at the cost of one GET, and only when a version is given.

    @edge("read the queue's version")
    async def queue_version(self, project: str, queue: str) -> int:
        _, prefix = self._queue(project, queue)
        value = await self._redis().get(prefix + "version")
        return 0 if value is None else int(value)

    @edge("raise the queue's version")
    async def bump_queue_version(self, project: str, queue: str) -> int:
        _, prefix = self._queue(project, queue)
        key = prefix + "version"
        if not self.options.wait:
            return int(await self._redis().incr(key))
        (reply,) = await redis_store.run(
            self._redis(), [redis_store.Call(("INCR", key), key)], self.options.wait,
            self.options.wait_timeout,
        )
        if isinstance(reply, Exception):
            raise reply
        return int(reply)

    # Messages -------------------------------------------------------------------------------

    @edge("store the messages")
    async def post(
        self,
        project: str,
        queue: str,
        client_id: str,
        messages: Sequence[NewMessage],
        version: int | None = None,
    ) -> tuple[str, ...]:
        tag, prefix = self._queue(project, queue)
        ids = tuple(_new_id() for _ in messages)
        now = self._now()
        args: list[Any] = [tag, client_id, timestamp(now), expected_version(version)]
        for mid, m in zip(ids, messages, strict=True):
            args += [mid, m.body, m.ttl, timestamp(now + m.ttl), timestamp(now + m.delay),
                     m.group_id or ""]
        if ids or version is not None:
            reply = await self._run("post", (prefix, self._registry_of(tag)), args)
            current = stale_version(reply)
            if current is not None:
                raise StaleQueue(current)
            if isinstance(reply, list) and reply[0] == b"first":
                await self._registry_started(tag)
        return ids

    @edge("post the message")
    async def post_once(
        self,
        project: str,
        queue: str,
        client_id: str,
        key: str,
        message: NewMessage,
        *,
        remember: int,
        version: int | None = None,
    ) -> tuple[str, bool]:
        tag, prefix = self._queue(project, queue)
        new_id, now = _new_id(), self._now()
        reply = await self._run("post_once", (prefix, self._registry_of(tag)), (
            tag, client_id, timestamp(now), expected_version(version), key, remember,
            new_id, message.body, message.ttl, timestamp(now + message.ttl),
            timestamp(now + message.delay), message.group_id or "",
        ))
        current = stale_version(reply)
        if current is not None:
            raise StaleQueue(current)
        if isinstance(reply, list) and reply[0] == b"known":
            return reply[1].decode(), False
        if isinstance(reply, list) and reply[0] == b"first":
            await self._registry_started(tag)
        return new_id, True

    @edge("store the messages")
    async def post_fifo(
        self,
        project: str,
        queue: str,
        client_id: str,
        messages: Sequence[NewMessage],
        *,
        dedup_window: int,
        version: int | None = None,
    ) -> FifoPosted:
        tag, prefix = self._queue(project, queue)
        ids = tuple(_new_id() for _ in messages)
        now = self._now()
        if not ids and version is None:
            return FifoPosted(ids=(), stored=())
        args: list[Any] = [
            tag, client_id, timestamp(now), expected_version(version),
            timestamp(now + dedup_window),
        ]
        for mid, m in zip(ids, messages, strict=True):
            args += [mid, m.body, m.ttl, timestamp(now + m.ttl), timestamp(now + m.delay),
                     m.group_id or "", m.dedup_id or ""]
        reply = await self._run("post_fifo", (prefix, self._registry_of(tag)), args)
        current = stale_version(reply)
        if current is not None:
            raise StaleQueue(current)
        first, answered, stored = reply
        if first == b"first":
            await self._registry_started(tag)
        return FifoPosted(
            ids=tuple(mid.decode() for mid in answered),
            stored=tuple(int(flag) == 1 for flag in stored),
        )

    @edge("list the messages")
    async def list_messages(
        self,
        project: str,
        queue: str,
        *,
        limit: int,
        after: int | None = None,
        client_id: str = "",
        echo: bool = True,
        include_claimed: bool = False,
        include_delayed: bool = False,
    ) -> list[StoredMessage]:
        _, prefix = self._queue(project, queue)
        now = self._now()
        hidden = "" if echo or not client_id else client_id
        rows = await self._run("list", (prefix,), (
            timestamp(now), limit, "-inf" if after is None else after,
            int(include_claimed), int(include_delayed), hidden,
        ))
        return [to_message(row, now) for row in rows]

    @edge("read the message")
    async def get(self, project: str, queue: str, message_id: str) -> StoredMessage | None:
        found = await self._read(project, queue, (message_id,))
        return found[0] if found else None

    @edge("read the messages")
    async def get_many(
        self, project: str, queue: str, message_ids: Sequence[str]
    ) -> list[StoredMessage]:
        return await self._read(project, queue, list(dict.fromkeys(message_ids)))

    async def _read(
        self, project: str, queue: str, ids: Sequence[str]
    ) -> list[StoredMessage]:
        if not ids:
            return []
        _, prefix = self._queue(project, queue)
        now = self._now()
        rows = await self._run("get", (prefix,), (timestamp(now), *ids))
        return sorted((to_message(row, now) for row in rows), key=lambda m: m.seq)

    @edge("delete the message")
    async def delete(
        self, project: str, queue: str, message_id: str, claim_id: str | None = None
    ) -> DeleteOutcome:
        _, prefix = self._queue(project, queue)
        outcome = await self._run(
            "delete", (prefix,), (timestamp(self._now()), message_id, claim_id or "")
        )
        return DeleteOutcome(outcome.decode())

    @edge("delete the messages")
    async def delete_many(
        self,
        project: str,
        queue: str,
        message_ids: Sequence[str],
        claim_ids: Sequence[str] | None = None,
    ) -> int:
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return 0
        _, prefix = self._queue(project, queue)
        cids = [] if claim_ids is None else list(dict.fromkeys(claim_ids))
        deleted = await self._run("delete_many", (prefix,), (
            timestamp(self._now()), -1 if claim_ids is None else len(cids), *cids, *ids,
        ))
        return int(deleted)

    @edge("pop messages")
    async def pop(self, project: str, queue: str, limit: int) -> list[StoredMessage]:
        _, prefix = self._queue(project, queue)
        now, claim_id = self._now(), _new_id()
        rows = await self._run("pop", (prefix,), (timestamp(now), limit))
        return [to_message(row, now, claim_id=claim_id) for row in rows]

    @edge("read the queue's stats")
    async def stats(self, project: str, queue: str) -> QueueStats:
        _, prefix = self._queue(project, queue)
        now = self._now()
        total, claimed, oldest, newest = await self._run("stats", (prefix,), (timestamp(now),))
        return QueueStats(
            claimed=int(claimed),
            free=int(total) - int(claimed),
            total=int(total),
            oldest=to_message(oldest, now) if oldest else None,
            newest=to_message(newest, now) if newest else None,
        )

    @edge("read when the queue's next message frees up")
    async def next_free_at(self, project: str, queue: str) -> float | None:
        _, prefix = self._queue(project, queue)
        found = await self._run("next_free", (prefix,), (timestamp(self._now()),))
        return float(found) if found else None

    @edge("delete the queue's messages")
    async def delete_queue(self, project: str, queue: str) -> None:
        tag, prefix = self._queue(project, queue)
        await self._run("delete_queue", (prefix, self._registry_of(tag)), (tag,))

    # Claims ---------------------------------------------------------------------------------

    @edge("claim messages")
    async def claim(
        self,
        project: str,
        queue: str,
        *,
        limit: int,
        ttl: int,
        grace: int,
        dead_letter: DeadLetterPolicy | None = None,
        version: int | None = None,
        fair: FairPolicy | None = None,
    ) -> ClaimResult:
        tag, prefix = self._queue(project, queue)
        now, claim_id = self._now(), _new_id()
        claim_expires = now + ttl
        dlq_tag, dlq_prefix, dlq_ttl, dlq_expires, max_count = "", prefix, "", "", ""
        if dead_letter is not None:
            dlq_tag, dlq_prefix = self._queue(project, dead_letter.queue)
            max_count = str(dead_letter.max_claim_count)
            if dead_letter.ttl is not None:
                dlq_ttl, dlq_expires = str(dead_letter.ttl), timestamp(now + dead_letter.ttl)
        stage = self.stages_dead_letters
        keys = (prefix, prefix, self._registry_of(tag)) if stage else (
            prefix, dlq_prefix, self._registry_of(dlq_tag)
        )
        reply = await self._run("claim", keys, (
            timestamp(now), limit, claim_id, ttl, grace, timestamp(claim_expires),
            ttl + grace, timestamp(claim_expires + grace), max_count, dlq_tag, dlq_ttl,
            dlq_expires, expected_version(version), "1" if stage else "",
            *(() if fair is None else (fair.share_percent, fair.min_in_flight, fair.lookahead)),
        ))
        current = stale_version(reply)
        if current is not None:
            raise StaleQueue(current)
        rows, dead = reply[0], reply[1]
        futile = len(reply) > 2 and int(reply[2]) == 1  # a replayed claim answers two
        dead_lettered = await self._dead_lettered(
            prefix, dead, (dlq_tag, dlq_ttl, dlq_expires, claim_id)
        )
        if not rows:
            return ClaimResult(claim=None, dead_lettered=dead_lettered)
        claim = Claim(
            id=claim_id, ttl=ttl, grace=grace, created=now, expires=claim_expires,
            messages=tuple(to_message(row, now) for row in rows),
        )
        return ClaimResult(claim=claim, dead_lettered=dead_lettered, futile=futile)

    async def claim_fifo(
        self,
        project: str,
        queue: str,
        *,
        limit: int,
        ttl: int,
        grace: int,
        dead_letter: DeadLetterPolicy | None = None,
        version: int | None = None,
    ) -> ClaimResult:
        # One script serves both: claim.lua takes messages with a group by the group rules.
        return await self.claim(
            project, queue, limit=limit, ttl=ttl, grace=grace, dead_letter=dead_letter,
            version=version,
        )

    async def pop_fifo(self, project: str, queue: str, limit: int) -> list[StoredMessage]:
        return await self.pop(project, queue, limit)

    @edge("read the claim")
    async def get_claim(self, project: str, queue: str, claim_id: str) -> Claim | None:
        _, prefix = self._queue(project, queue)
        now = self._now()
        found = await self._run("get_claim", (prefix,), (timestamp(now), claim_id))
        if found is None:
            return None
        ttl, grace, created, expires, rows = found
        return Claim(
            id=claim_id, ttl=int(ttl), grace=int(grace), created=float(created),
            expires=float(expires), messages=tuple(to_message(row, now) for row in rows),
        )

    @edge("renew the claim")
    async def renew_claim(
        self, project: str, queue: str, claim_id: str, *, ttl: int, grace: int
    ) -> bool:
        _, prefix = self._queue(project, queue)
        now = self._now()
        claim_expires = now + ttl
        renewed = await self._run("renew", (prefix,), (
            timestamp(now), claim_id, ttl, grace, timestamp(claim_expires), ttl + grace,
            timestamp(claim_expires + grace),
        ))
        return bool(renewed)

    @edge("release the claim")
    async def release_claim(self, project: str, queue: str, claim_id: str) -> None:
        _, prefix = self._queue(project, queue)
        await self._run("release", (prefix,), (claim_id, timestamp(self._now())))

    async def _dead_lettered(
        self, prefix: str, dead: DeadLetters, move: tuple[str, str, str, str]
    ) -> tuple[str, ...]:
        """The ids of the messages a claim dead-lettered (``dead``), once they are in the
        dead-letter queue; ``move`` is that queue's tag, the ttl and expires they get there
        ('' = keep) and the claim's id."""
        return tuple(mid.decode() for mid in dead)

    # Garbage --------------------------------------------------------------------------------

    @edge("collect expired messages and claims")
    async def collect_garbage(self) -> int:
        client = self._redis()
        removed, cursor = 0, 0
        while True:
            cursor, tags = await client.sscan(self._registry, cursor, count=GC_QUEUES_PER_TRIP)
            removed += await self._collect(
                [tag.decode() if isinstance(tag, bytes) else tag for tag in tags]
            )
            if cursor == 0:
                return removed

    async def _collect(self, tags: Sequence[str]) -> int:
        """Collect the garbage of the queues ``tags``; how many items went."""
        prefix, now = self.options.prefix, self._now()
        args = (timestamp(now), GC_BATCH, timestamp(now - MOVE_LEASE))
        removed = 0
        for start in range(0, len(tags), GC_QUEUES_PER_TRIP):
            pending = list(tags[start:start + GC_QUEUES_PER_TRIP])
            while pending:
                # Issued together, so they travel as one pipeline.
                replies = await asyncio.gather(*(
                    self._run("collect_garbage",
                              (prefix_of_tag(prefix, tag), self._registry_of(tag)),
                              (args[0], args[1], tag, args[2]))
                    for tag in pending
                ))
                counts = [int(count) for count, _ in replies]
                removed += sum(counts)
                for tag, (_, stalled) in zip(pending, replies, strict=True):
                    if stalled:
                        await self._resume_moves(prefix_of_tag(prefix, tag), stalled)
                # A queue that filled a batch may hold more; go round again for those only.
                pending = [
                    tag for tag, count, (_, stalled) in zip(pending, counts, replies, strict=True)
                    if count >= GC_BATCH or len(stalled) >= GC_BATCH
                ]
        return removed

    async def _resume_moves(self, prefix: str, stalled: Sequence[Any]) -> None:
        """Finish the dead-letter moves of queue ``prefix`` that stalled (only staged moves
        can: see cluster.py)."""
