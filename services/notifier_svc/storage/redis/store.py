"""Subscriptions and the delivery outbox in Redis; every change is one Lua script.

The key layout is described in ``scripts/_common.lua``, whose helpers each script carries as it
needs them (``services/common/lua_scripts.py``); the names are made in ``_keys.py``, and every
script gets the keys its arguments name in ``KEYS``. On a Redis Cluster (``redis+cluster://``,
``cluster.py``) every key of the store has one hash tag, so each script runs whole on the master
of that slot.

Redis runs a script atomically, so deleting a subscription also removes its pending deliveries,
and ``enqueue`` stores only deliveries whose subscription exists: the outbox never holds an
orphan. Durability is Redis's: run it with AOF (``appendfsync always``) for the outbox to
survive a crash of Redis itself, and on a cluster (or a server with replicas) with ``wait=1``
for an acknowledged change to survive a failover. The watch registry and feed are in ``watches.py``.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any, ClassVar

import orjson
import redis.asyncio
from redis.exceptions import NoScriptError

from services.common import redis_store
from services.common.errors import (
    SubscriptionAlreadyExists,
    SubscriptionNotFound,
    Unavailable,
)
from services.common.lua_scripts import script_source
from services.common.redis_store import (
    RedisClusterClient,
    check_tls_files,
    open_with_scripts,
)
from services.notifier_svc.storage.base import (
    Delivery,
    DeliveryKind,
    NewDelivery,
    Subscription,
    new_id,
    over_quota,
)
from services.notifier_svc.storage.redis._connection import (
    RedisOptions,
    connect,
    edge,
    parse,
)
from services.notifier_svc.storage.redis._keys import Keys
from services.notifier_svc.storage.redis.watches import RedisWatches

SCRIPTS = (
    "create", "update", "delete", "delete_queue", "collect_garbage", "enqueue", "claim",
    "reschedule", "complete", "index_lanes", "watch", "unwatch", "collect_watches",
    "purge_deliveries",
)
# Scripts that change nothing more when run again with the same arguments: a cluster client
# may resend them after a timeout (any script is resent after a broken connection, and the
# others recognise such a replay or change nothing that a caller relies on; see
# docs/redis-cluster.md).
IDEMPOTENT = frozenset({
    "complete", "collect_garbage", "collect_watches", "index_lanes", "unwatch",
    "purge_deliveries",
})
# Expired subscriptions one sweep script removes at most (Redis runs one script at a time).
GC_BUDGET = 200
# Subscriptions fetched per round trip when listing.
LIST_BATCH = 50


@functools.cache
def _script_text(name: str) -> str:
    """Script ``name``: what it uses of ``_common.lua``, then ``<name>.lua``; made once per
    process."""
    folder = resources.files(__name__.rpartition(".")[0]).joinpath("scripts")
    return script_source(folder, "_common", name)


def _fields(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _subscription(subscription_id: str, f: Mapping[str, str]) -> Subscription:
    return Subscription(
        id=subscription_id, project=f["project"], queue=f["queue"], subscriber=f["subscriber"],
        ttl=int(f["ttl"]), options=orjson.loads(f["options"]), confirmed=f["confirmed"] == "1",
        created=float(f["created"]), expires=float(f["expires"]),
    )


def _delivery(delivery_id: str, f: Mapping[str, str], due: float) -> Delivery:
    return Delivery(
        id=delivery_id, subscription_id=f["subscription_id"], project=f["project"],
        queue=f["queue"], subscriber=f["subscriber"], options=orjson.loads(f["options"]),
        kind=DeliveryKind(f["kind"]), document=f["document"].encode(),
        attempts=int(f["attempts"]), due=due, created=float(f["created"]),
    )


def _json(options: Mapping[str, Any]) -> str:
    return orjson.dumps(options).decode()


class RedisNotifierStore(RedisWatches):
    """:class:`services.notifier_svc.storage.base.NotifierStore` on a Redis server."""

    script_header: ClassVar[str] = ""
    """A first line of every script (before the shared helpers)."""

    def __init__(self, options: RedisOptions, now: Callable[[], float] = time.time) -> None:
        self.options = options
        self._now = now
        self._keys = Keys(options.prefix, options.cluster)
        self._client: redis.asyncio.Redis | RedisClusterClient | None = None
        self._feed_client: redis.asyncio.Redis | RedisClusterClient | None = None
        self._texts = {name: self.script_header + _script_text(name) for name in SCRIPTS}
        self._shas = {
            name: hashlib.sha1(text.encode()).hexdigest() for name, text in self._texts.items()
        }

    @classmethod
    def from_uri(cls, uri: str, now: Callable[[], float] = time.time) -> RedisNotifierStore:
        return cls(parse(uri), now)

    @property
    def address(self) -> str:
        return self.options.address

    def _redis(self) -> redis.asyncio.Redis | RedisClusterClient:
        if self._client is None:
            raise Unavailable("The notifier store is closed.")
        return self._client

    async def open(self) -> None:
        await check_tls_files(self.options)
        client = connect(self.options)
        await open_with_scripts(client, self._texts, "notifier store", self.address)
        if isinstance(client, RedisClusterClient):
            client.idempotent_scripts.update(self._shas[name] for name in IDEMPOTENT)
        self._client = client
        self._feed_client = connect(self.options, decode=False)
        await self._index_lanes()

    @edge("index the pending notifications")
    async def _index_lanes(self) -> None:
        await self._run("index_lanes", ())

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
        if self._feed_client is not None:
            feed, self._feed_client = self._feed_client, None
            await feed.aclose()

    async def _run(self, script: str, keys: Sequence[str], *args: Any) -> Any:
        """The reply of ``script`` given the common keys, then ``keys``, and the base and
        ``args``; when ``wait`` asks for it, after replicas confirmed its writes."""
        all_keys = (*self._keys.common, *keys)
        call = redis_store.Call(
            ("EVALSHA", self._shas[script], len(all_keys), *all_keys, self._keys.base, *args),
            key=all_keys[0], idempotent=script in IDEMPOTENT,
        )
        client = self._redis()
        for attempt in range(2):
            [reply] = await redis_store.run(
                client, [call], self.options.wait, self.options.wait_timeout
            )
            if isinstance(reply, NoScriptError) and attempt == 0:
                # The server restarted, or its script cache was flushed: load them again.
                for text in self._texts.values():
                    await client.script_load(text)
                continue
            if isinstance(reply, Exception):
                raise reply
            return reply
        raise AssertionError("unreachable")

    async def _reads(self, commands: Sequence[tuple[Any, ...]]) -> builtins.list[Any]:
        """The replies of read-only ``commands`` (each names its key second), pipelined."""
        replies = await redis_store.run(self._redis(), [
            redis_store.Call(command, key=command[1], writes=False, idempotent=True)
            for command in commands
        ])
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _read(self, ids: Sequence[str], project: str, queue: str) -> list[Subscription]:
        """The live subscriptions among ``ids`` of (project, queue), in the given order."""
        if not ids:
            return []
        replies = await self._reads(
            [("HGETALL", self._keys.subscription(i)) for i in ids]
        )
        now = self._now()
        found: list[Subscription] = []
        for subscription_id, f in zip(ids, replies, strict=True):
            if f and f["project"] == project and f["queue"] == queue and float(
                f["expires"]
            ) > now:
                found.append(_subscription(subscription_id, f))
        return found

    # subscriptions ---------------------------------------------------------------------------

    @edge("create the subscription")
    async def create(
        self, project: str, queue: str, subscriber: str, ttl: int, options: Mapping[str, Any],
        *, quota: int = 0,
    ) -> tuple[Subscription, bool]:
        now = self._now()
        subscription_id = new_id(now)
        keys = self._keys
        reply = await self._run(
            "create",
            (keys.queue_subscribers(project, queue), keys.queue_subscriptions(project, queue),
             keys.subscription(subscription_id)),
            project, queue, subscriber, repr(now), subscription_id, ttl, _json(options),
            repr(now + ttl), quota,
        )
        if reply == -1:
            raise over_quota(project, queue, quota)
        created, subscription_id, flat = reply
        return _subscription(subscription_id, _fields(flat)), bool(created)

    @edge("read the subscription")
    async def get(self, project: str, queue: str, subscription_id: str) -> Subscription | None:
        found = await self._read([subscription_id], project, queue)
        return found[0] if found else None

    @edge("list the subscriptions")
    async def list(
        self, project: str, queue: str, *, limit: int, marker: str = ""
    ) -> list[Subscription]:
        key = self._keys.queue_subscriptions(project, queue)
        found: list[Subscription] = []
        after = marker
        while len(found) < limit:
            low = f"({after}" if after else "-"
            ids = [str(i) for i in await self._redis().zrangebylex(key, low, "+", 0, LIST_BATCH)]
            found.extend(await self._read(ids, project, queue))
            if len(ids) < LIST_BATCH:
                break
            after = ids[-1]
        return found[:limit]

    @edge("read the subscriptions")
    async def subscribers(self, project: str, queue: str) -> builtins.list[Subscription]:
        key = self._keys.queue_subscriptions(project, queue)
        ids = [str(i) for i in await self._redis().zrange(key, 0, -1)]
        return await self._read(ids, project, queue)

    @edge("update the subscription")
    async def update(
        self,
        project: str,
        queue: str,
        subscription_id: str,
        *,
        subscriber: str | None = None,
        ttl: int | None = None,
        options: Mapping[str, Any] | None = None,
        confirmed: bool | None = None,
    ) -> Subscription:
        now = self._now()
        reply = await self._run(
            "update",
            (self._keys.subscription(subscription_id),
             self._keys.queue_subscribers(project, queue)),
            project, queue, subscription_id, repr(now),
            subscriber or "",
            "" if ttl is None else ttl,
            "" if ttl is None else repr(now + ttl),
            "" if options is None else _json(options),
            "" if confirmed is None else int(confirmed),
        )
        if reply[0] == -1:
            raise SubscriptionNotFound(subscription_id=subscription_id)
        if reply[0] == -2:
            raise SubscriptionAlreadyExists()
        return _subscription(subscription_id, _fields(reply[1]))

    async def confirm(
        self, project: str, queue: str, subscription_id: str, confirmed: bool
    ) -> Subscription:
        return await self.update(project, queue, subscription_id, confirmed=confirmed)

    @edge("delete the subscription")
    async def delete(self, project: str, queue: str, subscription_id: str) -> bool:
        keys = self._keys
        return bool(await self._run(
            "delete",
            (keys.subscription(subscription_id), keys.subscription_deliveries(subscription_id),
             keys.queue_subscriptions(project, queue), keys.queue_subscribers(project, queue)),
            project, queue, subscription_id,
        ))

    @edge("delete the queue's subscriptions")
    async def delete_queue(self, project: str, queue: str) -> int:
        keys = (self._keys.queue_subscriptions(project, queue),
                self._keys.queue_subscribers(project, queue))
        return int(await self._run("delete_queue", keys, project, queue))

    @edge("remove the queue's deliveries")
    async def purge_deliveries(self, project: str, queue: str) -> int:
        keys = (self._keys.queue_subscriptions(project, queue),)
        return int(await self._run("purge_deliveries", keys, project, queue))

    @edge("remove expired subscriptions")
    async def collect_garbage(self) -> int:
        removed = 0
        while True:
            items, examined = await self._run(
                "collect_garbage", (), repr(self._now()), GC_BUDGET
            )
            removed += int(items)
            if int(examined) < GC_BUDGET:
                await self._collect_watches()
                return removed

    # the outbox ------------------------------------------------------------------------------

    @edge("store the notifications")
    async def enqueue(self, deliveries: Sequence[NewDelivery]) -> int:
        if not deliveries:
            return 0
        now = self._now()
        keys: list[str] = []
        args: list[Any] = [repr(now)]
        for d in deliveries:
            delivery_id = new_id(now)
            keys += [self._keys.subscription(d.subscription_id), self._keys.delivery(delivery_id),
                     self._keys.lane(d.subscriber),
                     self._keys.subscription_deliveries(d.subscription_id)]
            args += [delivery_id, d.subscription_id, d.project, d.queue, d.subscriber,
                     _json(d.options), d.kind.value, d.document]
        return int(await self._run("enqueue", keys, *args))

    @edge("take due notifications")
    async def claim_due(
        self,
        *,
        limit: int,
        lease: float,
        per_subscriber: int,
        busy: Mapping[str, int] | None = None,
    ) -> builtins.list[Delivery]:
        now = self._now()
        until = now + lease
        pairs = [x for subscriber, n in (busy or {}).items() for x in (subscriber, n)]
        flat = await self._run(
            "claim", (), repr(now), repr(until), limit, per_subscriber, *pairs
        )
        claimed = [
            (float(flat[i + 1]), str(flat[i]), _delivery(flat[i], _fields(flat[i + 2]), until))
            for i in range(0, len(flat), 3)
        ]
        return [delivery for *_, delivery in sorted(claimed, key=lambda c: c[:2])]

    @edge("reschedule a notification")
    async def reschedule(
        self,
        delivery_id: str,
        *,
        due: float,
        attempts: int,
        leased_until: float | None = None,
    ) -> bool:
        lease = "" if leased_until is None else repr(leased_until)
        return bool(await self._run(
            "reschedule", (self._keys.delivery(delivery_id),),
            delivery_id, repr(due), attempts, lease,
        ))

    @edge("remove a notification")
    async def complete(self, delivery_id: str) -> None:
        await self._run("complete", (self._keys.delivery(delivery_id),), delivery_id)

    @edge("read the notifications")
    async def next_due(self) -> float | None:
        first = await self._redis().zrange(self._keys.due, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    @edge("count notifications")
    async def count_deliveries(self, subscription_id: str | None = None) -> int:
        if subscription_id is None:
            return int(await self._redis().zcard(self._keys.due))
        return int(await self._redis().scard(self._keys.subscription_deliveries(subscription_id)))

