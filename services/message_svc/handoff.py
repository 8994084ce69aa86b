"""Hand-off of freshly posted messages to notifier_svc, off the post path.

A post only *offers* its messages (:meth:`Handoff.offer`: a dictionary look-up, and for
queues someone listens to, an append to an in-memory buffer); one background task sends what
accumulated as ``NotifierInternal.NotifyMany`` calls (one NotifyRequest per post, with the
time it was accepted) over one reused channel, so a post never waits for notifier_svc, let
alone for a delivery. Calls start at most every ``linger`` seconds: the first post after a
quiet spell goes at once, and under a steady stream of posts each call carries every post of
the last ``linger`` seconds, so notifier_svc's work (one call, one outbox write) is shared by
many posts instead of competing with each of them for CPU. A call carries at most 500 messages
and 4 MiB of them (a post alone may pass that); when more wait, the next call follows at once.

Skipping queues nobody listens to: each NotifyMany answer says, per queue, whether anything
(a subscription or a watcher) listens to it. A queue answered "no" is skipped by later posts
until the queue changes (notifier_svc calls ``MessagesInternal.InvalidateQueue`` when the
queue gains a subscription or a watcher, which raises the queue's version: the next post on
any replica is refused as stale and drops this answer), its metadata is loaded again, or the
answer is ``cache_ttl`` seconds old. An answer to a call
that was under way while an invalidation arrived is not kept (it may predate the new
listener).

When notifier_svc cannot be reached, batches are kept and sent again with backoff, up to
``MAX_PENDING_MESSAGES`` / ``MAX_PENDING_BYTES``; beyond that new messages are not handed over
(a warning is logged, at most every ``WARNING_INTERVAL`` seconds). Posts always succeed.
Messages still buffered when the process stops are lost to notification (they are stored as
messages all the same): the hand-off is best effort; once notifier_svc has acknowledged a
batch, its delivery is durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from zaqar_grpc.v2 import common_pb2, notifier_pb2, notifier_pb2_grpc

from services.common.grpc_server import open_channel
from services.common.keystone import KeystoneAuth
from services.common.logs import detached
from services.common.metrics import instrumented
from services.common.tls import Tls
from services.message_svc.storage.base import NewMessage

log = logging.getLogger(__name__)

Key = tuple[str, str]

MAX_BATCH_MESSAGES = 500
# Bytes of messages per call at most (a post alone may pass it): far under gRPC's bound on a
# message (16 MiB), which a call of 500 large messages passed, and under notifier_svc's
# grpc_max_receiving_bytes.
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_PENDING_MESSAGES = 20_000
MAX_PENDING_BYTES = 64 * 1024 * 1024
MAX_CACHED_QUEUES = 100_000
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
WARNING_INTERVAL = 10.0
CLOSE_FLUSH_TIMEOUT = 1.0
_RETRIED = {
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED,
}


@dataclass
class _Batch:
    """The messages of one post."""

    project: str
    queue: str
    accepted_at: float
    messages: list[common_pb2.Message] = field(default_factory=list)
    size: int = 0
    pool_uri: str | None = None


class Handoff:
    def __init__(
        self,
        target: str,
        *,
        timeout: float,
        cache_ttl: float,
        linger: float = 0.0,
        auth: KeystoneAuth | None = None,
        clock: Callable[[], float] = time.monotonic,
        tls: Tls | None = None,
    ) -> None:
        self._target = target
        self._tls = tls
        self._auth = auth
        self._timeout = timeout
        self._cache_ttl = cache_ttl
        self._linger = linger
        self._last_call = -linger
        self._clock = clock
        self._channel: grpc.aio.Channel | None = None
        self._stub: notifier_pb2_grpc.NotifierInternalAsyncStub | None = None
        self._listened: dict[Key, tuple[bool, float]] = {}
        self._epoch = 0
        self._pending: deque[_Batch] = deque()
        self._pending_messages = 0
        self._pending_bytes = 0
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Set by close: the sending loop ends even if gRPC turned its cancellation into a
        # CANCELLED error, which it would otherwise take for a failure to retry.
        self._closing = False
        self._last_warning = -WARNING_INTERVAL
        self.dropped = 0

    # the post path ---------------------------------------------------------------------------

    def offer(
        self, project: str, queue: str, ids: Sequence[str], messages: Sequence[NewMessage],
        pool_uri: str | None = None,
    ) -> None:
        """Queue the posted messages for notifier_svc, unless nobody listens to the queue.
        ``pool_uri``: the pool they were stored on ("" for the own store), passed on so that
        notifier_svc finds the queue's subscriptions there."""
        if self.skips(project, queue):
            return
        size = sum(len(m.body) for m in messages)
        if (self._pending_messages + len(messages) > MAX_PENDING_MESSAGES
                or self._pending_bytes + size > MAX_PENDING_BYTES):
            self.dropped += len(messages)
            self._warn("notifier_svc hand-off buffer full: %d messages of %s/%s not handed "
                       "over (%d so far)", len(messages), project, queue, self.dropped)
            return
        accepted_at = time.time()
        created = int(accepted_at)
        protos = [
            common_pb2.Message(id=i, body=m.body, ttl=m.ttl, created=created)
            for i, m in zip(ids, messages, strict=True)
        ]
        self._pending.append(_Batch(project, queue, accepted_at, protos, size, pool_uri))
        self._pending_messages += len(protos)
        self._pending_bytes += size
        self._ready.set()
        if self._task is None and not self._closing:
            # It outlives the request that starts it and carries the posts of many.
            self._task = asyncio.get_running_loop().create_task(self._run(), context=detached())

    def skips(self, project: str, queue: str) -> bool:
        """Whether posts to the queue are not handed over now: notifier_svc answered that
        nobody listens to it, less than ``cache_ttl`` seconds ago."""
        known = self._listened.get((project, queue))
        return known is not None and not known[0] and known[1] > self._clock()

    def invalidate(self, project: str, queue: str) -> None:
        """Forget whether the queue is listened to (notifier_svc says it may be now)."""
        self._listened.pop((project, queue), None)
        self._epoch += 1

    # the background task ---------------------------------------------------------------------

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._pending:
            try:
                failed = await self._send(self._take(), min(self._timeout, CLOSE_FLUSH_TIMEOUT))
                if failed:
                    log.warning("%d messages not handed over to notifier_svc at shutdown "
                                "(their pool's store failed)",
                                sum(len(b.messages) for b in failed) + self._pending_messages)
            except grpc.aio.AioRpcError as exc:
                log.warning("%d messages not handed over to notifier_svc at shutdown (%s)",
                            self._pending_messages, exc.code().name)
        if self._channel is not None:
            await self._channel.close()

    def _take(self) -> list[_Batch]:
        taken: list[_Batch] = []
        count = size = 0
        while self._pending and (
            count + len(self._pending[0].messages) <= MAX_BATCH_MESSAGES
            and size + self._pending[0].size <= MAX_BATCH_BYTES
        ):
            batch = self._pending.popleft()
            taken.append(batch)
            count += len(batch.messages)
            size += batch.size
        if not taken and self._pending:
            taken.append(self._pending.popleft())
        for batch in taken:
            self._pending_messages -= len(batch.messages)
            self._pending_bytes -= batch.size
        return taken

    def _give_back(self, batches: list[_Batch]) -> None:
        for batch in reversed(batches):
            self._pending.appendleft(batch)
            self._pending_messages += len(batch.messages)
            self._pending_bytes += batch.size

    async def _send(self, batches: list[_Batch], time_limit: float) -> list[_Batch]:
        """Hand ``batches`` over in one call; the batches notifier_svc could not store (the
        store of their queue's pool failed), to be handed over again."""
        if self._stub is None:
            self._channel = open_channel(self._target, self._tls, self._auth)
            self._stub = instrumented(notifier_pb2_grpc.NotifierInternalStub(self._channel))
        epoch = self._epoch
        reply = await self._stub.NotifyMany(
            notifier_pb2.NotifyManyRequest(batches=[
                notifier_pb2.NotifyRequest(
                    project=b.project, queue=b.queue, messages=b.messages,
                    accepted_at=b.accepted_at, pool_uri=b.pool_uri,
                )
                for b in batches
            ]),
            timeout=time_limit,
        )
        failed = [b for b, f in zip(batches, reply.failed, strict=False) if f]
        if epoch != self._epoch:
            return failed  # an invalidation arrived meanwhile: these answers may be stale
        expires = self._clock() + self._cache_ttl
        for batch, listened in zip(batches, reply.listened, strict=False):
            if len(self._listened) >= MAX_CACHED_QUEUES:
                self._listened.clear()
            self._listened[(batch.project, batch.queue)] = (listened, expires)
        return failed

    async def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._closing:
            await self._ready.wait()
            self._ready.clear()
            full = False
            while self._pending and not self._closing:
                # A call that was full (500 messages or 4 MiB) is followed at once: the linger
                # period gathers posts, it does not ration them.
                wait = 0.0 if full else self._last_call + self._linger - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._last_call = self._clock()
                batches = self._take()
                full = bool(self._pending)
                try:
                    failed = await self._send(batches, self._timeout)
                    if failed:
                        self._give_back(failed)
                        self._warn("notifier_svc could not store the deliveries of %d "
                                   "messages (their pool's store failed); retrying in %.1fs",
                                   sum(len(b.messages) for b in failed), backoff)
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, BACKOFF_MAX)
                        continue
                except grpc.aio.AioRpcError as exc:
                    if exc.code() in _RETRIED:
                        self._give_back(batches)
                        self._warn("notifier_svc at %s unreachable (%s); %d messages wait, "
                                   "retrying in %.1fs", self._target, exc.code().name,
                                   self._pending_messages, backoff)
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, BACKOFF_MAX)
                        continue
                    self._warn("notifier_svc refused %d messages: %s %s",
                               sum(len(b.messages) for b in batches), exc.code().name,
                               exc.details())
                backoff = BACKOFF_FIRST

    def _warn(self, text: str, *args: object) -> None:
        now = self._clock()
        if now - self._last_warning >= WARNING_INTERVAL:
            self._last_warning = now
            log.warning(text, *args)
