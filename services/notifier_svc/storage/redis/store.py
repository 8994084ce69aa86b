"""Subscriptions and the delivery outbox in Redis; every change is one Lua script.

The key layout is described in ``scripts/_common.lua``, whose helpers are prepended to every
script. Redis runs a script atomically, so deleting a subscription also removes its pending
deliveries, and ``enqueue`` stores only deliveries whose subscription exists: the outbox never
holds an orphan. Durability is Redis's: run it with AOF (``appendfsync always``) for the
outbox to survive a crash of Redis itself. The watch registry and feed are in ``watches.py``.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any

import orjson
import redis.asyncio
from redis.commands.core import AsyncScript

from services.common.errors import (
    SubscriptionAlreadyExists,
    SubscriptionNotFound,
    Unavailable,
)
from services.common.redis_store import open_with_scripts
from services.notifier_svc.storage.base import (
    Delivery,
    DeliveryKind,
    NewDelivery,
    Subscription,
    new_id,
)
from services.notifier_svc.storage.redis._connection import (
    RedisOptions,
    connect,
    edge,
    parse,
)
from services.notifier_svc.storage.redis.watches import RedisWatches

SCRIPTS = (
    "create", "update", "delete", "delete_queue", "collect_garbage", "enqueue", "claim",
    "reschedule", "complete", "index_lanes", "watch", "unwatch", "collect_watches",
)
# Expired subscriptions one sweep script removes at most (Redis runs one script at a time).
GC_BUDGET = 200
# Subscriptions fetched per round trip when listing.
LIST_BATCH = 50


def _script_text(name: str) -> str:
    folder = resources.files(__name__.rpartition(".")[0]).joinpath("scripts")
    common = folder.joinpath("_common.lua").read_text("utf-8")
    return common + "\n" + folder.joinpath(f"{name}.lua").read_text("utf-8")


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

    def __init__(self, options: RedisOptions, now: Callable[[], float] = time.time) -> None:
        self.options = options
        self._now = now
        self._client: redis.asyncio.Redis | None = None
        self._feed_client: redis.asyncio.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    @classmethod
    def from_uri(cls, uri: str, now: Callable[[], float] = time.time) -> RedisNotifierStore:
        return cls(parse(uri), now)

    @property
    def address(self) -> str:
        return self.options.address

    @property
    def _prefix(self) -> str:
        return self.options.prefix

    def _redis(self) -> redis.asyncio.Redis:
        if self._client is None:
            raise Unavailable("The notifier store is closed.")
        return self._client

    async def open(self) -> None:
        texts = {name: _script_text(name) for name in SCRIPTS}
        client = connect(self.options)
        self._scripts = await open_with_scripts(client, texts, "notifier store", self.address)
        self._client = client
        self._feed_client = connect(self.options, decode=False)
        await self._index_lanes()

    @edge("index the pending notifications")
    async def _index_lanes(self) -> None:
        await self._run("index_lanes")

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
        if self._feed_client is not None:
            feed, self._feed_client = self._feed_client, None
            await feed.aclose()

    async def _run(self, script: str, *args: Any) -> Any:
        return await self._scripts[script](
            keys=[], args=[self._prefix, *args], client=self._redis()
        )

    def _qs_key(self, project: str, queue: str) -> str:
        return f"{self._prefix}:qs:{queue}:{project}"

    async def _read(self, ids: Sequence[str], project: str, queue: str) -> list[Subscription]:
        """The live subscriptions among ``ids`` of (project, queue), in the given order."""
        if not ids:
            return []
        pipe = self._redis().pipeline(transaction=False)
        for subscription_id in ids:
            pipe.hgetall(f"{self._prefix}:s:{subscription_id}")
        now = self._now()
        found: list[Subscription] = []
        for subscription_id, f in zip(ids, await pipe.execute(), strict=True):
            if f and f["project"] == project and f["queue"] == queue and float(
                f["expires"]
            ) > now:
                found.append(_subscription(subscription_id, f))
        return found

    # subscriptions ---------------------------------------------------------------------------

    @edge("create the subscription")
    async def create(
        self, project: str, queue: str, subscriber: str, ttl: int, options: Mapping[str, Any]
    ) -> tuple[Subscription, bool]:
        now = self._now()
        created, subscription_id, flat = await self._run(
            "create", project, queue, subscriber, repr(now), new_id(now), ttl, _json(options),
            repr(now + ttl),
        )
        return _subscription(subscription_id, _fields(flat)), bool(created)

    @edge("read the subscription")
    async def get(self, project: str, queue: str, subscription_id: str) -> Subscription | None:
        found = await self._read([subscription_id], project, queue)
        return found[0] if found else None

    @edge("list the subscriptions")
    async def list(
        self, project: str, queue: str, *, limit: int, marker: str = ""
    ) -> list[Subscription]:
        key = self._qs_key(project, queue)
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
        ids = [str(i) for i in await self._redis().zrange(self._qs_key(project, queue), 0, -1)]
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
            "update", project, queue, subscription_id, repr(now),
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
        return bool(await self._run("delete", project, queue, subscription_id))

    @edge("delete the queue's subscriptions")
    async def delete_queue(self, project: str, queue: str) -> int:
        return int(await self._run("delete_queue", project, queue))

    @edge("remove expired subscriptions")
    async def collect_garbage(self) -> int:
        removed = 0
        while True:
            items, examined = await self._run("collect_garbage", repr(self._now()), GC_BUDGET)
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
        args: list[Any] = [repr(now)]
        for d in deliveries:
            args += [new_id(now), d.subscription_id, d.project, d.queue, d.subscriber,
                     _json(d.options), d.kind.value, d.document]
        return int(await self._run("enqueue", *args))

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
            "claim", repr(now), repr(until), limit, per_subscriber, *pairs
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
        return bool(await self._run("reschedule", delivery_id, repr(due), attempts, lease))

    @edge("remove a notification")
    async def complete(self, delivery_id: str) -> None:
        await self._run("complete", delivery_id)

    @edge("read the notifications")
    async def next_due(self) -> float | None:
        first = await self._redis().zrange(f"{self._prefix}:due", 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    @edge("count notifications")
    async def count_deliveries(self, subscription_id: str | None = None) -> int:
        if subscription_id is None:
            return int(await self._redis().zcard(f"{self._prefix}:due"))
        return int(await self._redis().scard(f"{self._prefix}:ds:{subscription_id}"))
