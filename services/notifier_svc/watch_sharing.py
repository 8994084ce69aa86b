"""Watchers across replicas, through the store (no replica knows of another).

Callers reach notifier_svc's replicas through one balanced target, so a ``Watch`` may be held
by replica A while message_svc hands the queue's messages (``NotifyMany``) to replica B. The
store joins them (``storage/base.py``, "Watchers across replicas"):

* **Registry.** While A has watchers of a queue it keeps an entry (A's id, the queue) in the
  store, written before the ``Watch`` is answered, refreshed every ``HEARTBEAT`` seconds to
  expire ``WATCH_TTL`` seconds later, and removed when A's last watcher of the queue leaves
  (and all of A's on shutdown). A replica that dies leaves entries that expire. B counts a
  queue with any live entry as listened (``NotifyMany``'s answer), so message_svc keeps handing
  its messages over. Should a heartbeat find an entry lapsed (the store was out of reach for
  ``WATCH_TTL``), A tells message_svc again that the queue is listened.
* **Feed.** B puts the messages of a queue with an entry of another replica on the store's
  watch feed, as one event per ``NotifyMany`` call and queue; each replica with watchers
  reads the feed from where it was when it registered its first watcher (only while it has
  watchers) and hands the events of other replicas to its own :class:`WatchHub`. B's own
  watchers get B's messages at once, from B's hub, never through the feed; A skips its own
  events: no watcher gets a message twice.

What a watcher gets stays best effort, as with one replica: the messages accepted after its
``Watch`` was answered, in the order its replica receives them (those handed to its own
replica at once; those handed to another, through the feed, within a read of it: a blocked
read on Redis, a poll every ``FEED_POLL`` seconds on SQLite and MongoDB), each once. Messages
handed to different replicas may arrive out of post order. A watcher whose buffer overflows is
dropped (RESOURCE_EXHAUSTED); events its replica could not read in time (more than
``FEED_MAX_EVENTS`` or ``FEED_RETENTION`` seconds behind, the store out of reach) are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from google.protobuf.message import DecodeError
from zaqar_grpc.v2 import notifier_pb2

from services.common.errors import Unavailable
from services.notifier_svc.storage.base import NotifierStore, WatchEvent, WatchKey
from services.notifier_svc.watchers import Watcher, WatchHub

log = logging.getLogger(__name__)

Announce = Callable[[str, str], Awaitable[None]]
"""Tells message_svc that a queue gained a listener (``upstream.MessageReplicas.listened``)."""

WATCH_TTL = 30.0
HEARTBEAT = 10.0
# Longest wait of one read of the feed (then the reader checks it still has watchers).
FEED_WAIT = 1.0
FEED_BATCH = 100
STORE_RETRY = 1.0
WARNING_INTERVAL = 10.0


class WatchSharing:
    """This replica's watchers (its :class:`WatchHub`), joined to every other replica's."""

    def __init__(
        self,
        store: NotifierStore,
        hub: WatchHub,
        announce: Announce,
        *,
        replica: str | None = None,
        ttl: float = WATCH_TTL,
        heartbeat: float = HEARTBEAT,
        feed_wait: float = FEED_WAIT,
    ) -> None:
        self.store = store
        self.hub = hub
        self.replica = replica or uuid.uuid4().hex
        self._announce = announce
        self._ttl = ttl
        self._heartbeat_every = heartbeat
        self._feed_wait = feed_wait
        # Queues with an entry of ours in the store (as far as we know); changed under _lock.
        self._registered: set[WatchKey] = set()
        self._lock = asyncio.Lock()
        self._reader_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._removals: set[asyncio.Task[None]] = set()
        self._ever_registered = False
        self._closed = False
        self._warned = 0.0

    # watchers of this replica -----------------------------------------------------------------

    async def watch(self, project: str, queue: str) -> Watcher:
        """Register a watcher of the queue here; returns once every replica counts the queue
        as listened and hands its messages on to this one.

        Raises:
            Unavailable: the store could not record it (the watcher is not registered).
        """
        watcher = self.hub.register(project, queue)
        try:
            await self._start_reader()
            await self._sync((project, queue))
        except BaseException:
            self.unwatch(project, queue, watcher)
            raise
        return watcher

    def unwatch(self, project: str, queue: str, watcher: Watcher) -> None:
        """The watcher has ended; the queue's entry goes in the background once it was the
        queue's last watcher here."""
        self.hub.unregister(project, queue, watcher)
        key = (project, queue)
        if self._closed or key not in self._registered or self.hub.listened(project, queue):
            return
        task = asyncio.ensure_future(self._remove(key))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _remove(self, key: WatchKey) -> None:
        try:
            await self._sync(key)
        except Unavailable as exc:
            self._warn("the entry of a queue no longer watched here stays until it expires",
                       exc)

    async def _sync(self, key: WatchKey) -> None:
        """Make the store's entry of ``key`` follow whether this replica has watchers of it
        (one change at a time, so that a removal never overtakes a later registration)."""
        async with self._lock:
            wanted = self.hub.listened(*key)
            if wanted and key not in self._registered:
                await self.store.keep_watching(self.replica, [key], self._ttl)
                self._registered.add(key)
                self._ever_registered = True
                if self._heartbeat is None:
                    self._heartbeat = asyncio.ensure_future(self._beat())
            elif not wanted and key in self._registered:
                self._registered.discard(key)
                await self.store.stop_watching(self.replica, [key])

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_every)
            async with self._lock:
                keys = sorted(self._registered)
                if not keys:
                    self._heartbeat = None
                    return
                try:
                    lapsed = await self.store.keep_watching(self.replica, keys, self._ttl)
                except Unavailable as exc:
                    self._warn("watch entries not refreshed", exc)
                    continue
                except Exception:
                    log.exception("watch entries not refreshed")
                    continue
            for project, queue in lapsed:
                try:
                    await self._announce(project, queue)
                except Exception:
                    log.exception("message_svc not told that %s/%s is watched", project, queue)

    # the feed ---------------------------------------------------------------------------------

    async def share(
        self, project: str, queue: str, posts: Sequence[notifier_pb2.NotifyRequest]
    ) -> bool:
        """Hand posts of the queue received here to its watchers on other replicas (as one
        feed event, when there are any).

        Returns:
            Whether any replica, this one included, has an entry for the queue.

        Raises:
            Unavailable: the store failed.
        """
        replicas = await self.store.watchers(project, queue)
        batches = [
            notifier_pb2.NotifyRequest(messages=post.messages, accepted_at=post.accepted_at)
            for post in posts if post.messages
        ]
        if batches and any(replica != self.replica for replica in replicas):
            payload = notifier_pb2.NotifyManyRequest(batches=batches).SerializeToString()
            await self.store.publish_watch_event(WatchEvent(
                origin=self.replica, project=project, queue=queue, payload=payload
            ))
        return bool(replicas)

    async def _start_reader(self) -> None:
        async with self._reader_lock:
            if self._reader is None and not self._closed:
                cursor = await self.store.watch_feed_end()
                self._reader = asyncio.ensure_future(self._read(cursor))

    async def _read(self, cursor: str) -> None:
        """Read the feed while this replica has watchers (checked after every read)."""
        try:
            while self.hub.watching():
                try:
                    events, cursor = await self.store.read_watch_events(
                        cursor, limit=FEED_BATCH, wait=self._feed_wait
                    )
                except Unavailable as exc:
                    self._warn("the watch feed is not read", exc)
                    await asyncio.sleep(STORE_RETRY)
                    continue
                except Exception:
                    log.exception("the watch feed is not read")
                    await asyncio.sleep(STORE_RETRY)
                    continue
                for event in events:
                    self._deliver(event)
        finally:
            self._reader = None

    def _deliver(self, event: WatchEvent) -> None:
        if event.origin == self.replica or not self.hub.listened(event.project, event.queue):
            return
        try:
            request = notifier_pb2.NotifyManyRequest.FromString(event.payload)
        except DecodeError:
            log.error("a watch event of %s for %s/%s cannot be read; skipped", event.origin,
                      event.project, event.queue)
            return
        for post in request.batches:
            self.hub.publish(event.project, event.queue, post.messages, post.accepted_at)

    # shutdown ---------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop reading and refreshing, and remove every entry of this replica (those left
        when the store is out of reach expire)."""
        self._closed = True
        tasks: list[asyncio.Task[Any]] = [
            t for t in (self._reader, self._heartbeat, *self._removals) if t is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._heartbeat = None
        if self._ever_registered:
            with contextlib.suppress(Unavailable):
                await self.store.stop_watching(self.replica)
        self._registered.clear()

    def _warn(self, what: str, exc: Unavailable) -> None:
        now = time.monotonic()
        if now - self._warned >= WARNING_INTERVAL:
            self._warned = now
            log.warning("%s: %s", what, exc.description)
