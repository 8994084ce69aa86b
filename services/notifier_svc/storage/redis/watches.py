"""Watchers across replicas in Redis.

The registry is one sorted set per watched queue (replica id -> expiry of its entry) plus a
set naming those queues, changed by Lua scripts (``watch``, ``unwatch``, ``collect_watches``;
keys in ``scripts/_common.lua``). The feed is a Redis stream (``B:wf``): ``XADD`` appends
atomically in one total order, readers block in ``XREAD`` (no polling) from the last id they
read, which is the cursor. It is trimmed to about ``FEED_MAX_EVENTS`` entries on every append
and to ``FEED_RETENTION`` seconds (by the server's clock, whose time the ids are) by
``collect_garbage`` (in the ``collect_watches`` script); the key expires ``FEED_RETENTION``
seconds after the last append.

Payloads are bytes, so the feed goes through a second client that does not decode replies.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio

from services.common import redis_store
from services.common.redis_store import RedisClusterClient
from services.notifier_svc.storage import base
from services.notifier_svc.storage.base import (
    FEED_RETENTION,
    WatchEvent,
    WatchKey,
)
from services.notifier_svc.storage.redis._connection import RedisOptions, edge
from services.notifier_svc.storage.redis._keys import Keys

START = "0-0"


def _pairs(keys: Sequence[WatchKey]) -> list[str]:
    return [part for key in keys for part in key]


def _event(fields: dict[bytes, bytes]) -> WatchEvent:
    return WatchEvent(
        origin=fields[b"o"].decode(), project=fields[b"p"].decode(), queue=fields[b"q"].decode(),
        payload=fields[b"b"],
    )


class RedisWatches:
    """The watch registry and feed of :class:`RedisNotifierStore` (a mixin)."""

    options: RedisOptions
    _now: Callable[[], float]
    _keys: Keys
    _feed_client: redis.asyncio.Redis | RedisClusterClient | None

    @property
    def address(self) -> str:
        return self.options.address

    async def _run(self, script: str, keys: Sequence[str], *args: Any) -> Any:
        raise NotImplementedError

    def _redis(self) -> redis.asyncio.Redis | RedisClusterClient:
        raise NotImplementedError

    def _feed(self) -> redis.asyncio.Redis | RedisClusterClient:
        self._redis()  # raises Unavailable once closed
        assert self._feed_client is not None
        return self._feed_client

    @property
    def _feed_key(self) -> str:
        return self._keys.feed

    @edge("register the watchers")
    async def keep_watching(
        self, replica: str, keys: Sequence[WatchKey], ttl: float
    ) -> builtins.list[WatchKey]:
        if not keys:
            return []
        now = self._now()
        positions = await self._run(
            "watch", self._keys.watch_keys(keys), replica, repr(now), repr(now + ttl),
            *_pairs(keys),
        )
        return [keys[int(n) - 1] for n in positions]

    @edge("unregister the watchers")
    async def stop_watching(
        self, replica: str, keys: Sequence[WatchKey] | None = None
    ) -> None:
        if keys is not None and not keys:
            return
        await self._run("unwatch", self._keys.watch_keys(keys or []), replica, *_pairs(keys or []))

    @edge("read the watchers")
    async def watchers(self, project: str, queue: str) -> builtins.list[str]:
        key = self._keys.watchers(project, queue)
        found = await self._redis().zrangebyscore(key, f"({self._now()!r}", "+inf")
        return sorted(str(replica) for replica in found)

    async def _collect_watches(self) -> None:
        await self._run(
            "collect_watches", (self._feed_key,), repr(self._now()), int(FEED_RETENTION * 1000)
        )

    @edge("publish to the watchers")
    async def publish_watch_event(self, event: WatchEvent) -> None:
        key = self._feed_key
        replies = await redis_store.run(self._feed(), [
            redis_store.Call((
                "XADD", key, "MAXLEN", "~", base.FEED_MAX_EVENTS, "*",
                "o", event.origin, "p", event.project, "q", event.queue, "b", event.payload,
            ), key),
            redis_store.Call(("PEXPIRE", key, int(FEED_RETENTION * 1000)), key, idempotent=True),
        ], self.options.wait, self.options.wait_timeout)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply

    @edge("read the watch feed")
    async def watch_feed_end(self) -> str:
        last: Any = await self._feed().xrevrange(self._feed_key, "+", "-", count=1)
        return str(last[0][0].decode()) if last else START

    @edge("read the watch feed")
    async def read_watch_events(
        self, cursor: str, *, limit: int, wait: float = 0.0
    ) -> tuple[builtins.list[WatchEvent], str]:
        # A blocked read must end well before the connection's reply timeout.
        block = min(wait, self.options.socket_timeout / 2)
        reply: Any = await self._feed().xread(
            {self._feed_key: cursor}, count=limit,
            block=max(1, int(block * 1000)) if block > 0 else None,
        )
        if not reply:
            return [], cursor
        entries = reply[0][1]
        return [_event(fields) for _, fields in entries], str(entries[-1][0].decode())
