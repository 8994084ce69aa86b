"""Queue metadata as message_svc needs it, read from queue_svc and cached per (project, queue).

The cache is kept correct by queue_svc, which calls ``MessagesInternal.InvalidateQueue`` on
every replica before it acknowledges a metadata change; the time limit on entries is only a
safety net (docs/architecture.md, "The hot path"). Concurrent misses of one key share one call,
and a call that was in flight when its key was invalidated does not fill the cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
from zaqar.v2 import queues_pb2, queues_pb2_grpc

from services.common import limits
from services.common.errors import upstream_call
from services.message_svc.storage.base import DeadLetterPolicy

Key = tuple[str, str]

# Bound on cached queues; beyond it the oldest entries go first.
MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """The reserved metadata keys of a queue (contract §3) that the data plane applies."""

    exists: bool
    default_ttl: int = limits.MESSAGE_TTL_DEFAULT
    default_delay: int = 0
    max_post_size: int = limits.MESSAGE_POST_SIZE_MAX
    dead_letter: DeadLetterPolicy | None = None


def _int(document: dict[str, Any], key: str) -> int | None:
    value = document.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_policy(metadata: bytes, exists: bool) -> QueuePolicy:
    """Read the reserved keys; a missing, null or ill-typed key keeps its default."""
    try:
        document = orjson.loads(metadata) if metadata else {}
    except orjson.JSONDecodeError:
        document = {}
    if not isinstance(document, dict):
        document = {}
    dead_letter = None
    max_claims, dlq = _int(document, "_max_claim_count"), document.get("_dead_letter_queue")
    if max_claims is not None and max_claims > 0 and isinstance(dlq, str) and dlq:
        dead_letter = DeadLetterPolicy(
            max_claim_count=max_claims,
            queue=dlq,
            ttl=_int(document, "_dead_letter_queue_messages_ttl"),
        )
    return QueuePolicy(
        exists=exists,
        default_ttl=_int(document, "_default_message_ttl") or limits.MESSAGE_TTL_DEFAULT,
        default_delay=_int(document, "_default_message_delay") or 0,
        max_post_size=_int(document, "_max_messages_post_size") or limits.MESSAGE_POST_SIZE_MAX,
        dead_letter=dead_letter,
    )


class QueueMetadata:
    """Cached queue policies, loaded through ``zaqar.v2.Queues`` over one reused channel."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        timeout: float,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = queues_pb2_grpc.QueuesStub(channel)
        self._timeout = timeout
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[Key, tuple[QueuePolicy, float]] = {}
        self._inflight: dict[tuple[Key, bool], asyncio.Task[QueuePolicy]] = {}

    async def get(self, project: str, queue: str) -> QueuePolicy:
        """The queue's policy; defaults with ``exists=False`` for a queue never created."""
        entry = self._entries.get((project, queue))
        if entry is not None and entry[1] > self._clock():
            return entry[0]
        return await self._load((project, queue), ensure=False)

    async def ensure(self, project: str, queue: str) -> QueuePolicy:
        """The queue's policy, creating the queue first when it does not exist."""
        entry = self._entries.get((project, queue))
        if entry is not None and entry[0].exists and entry[1] > self._clock():
            return entry[0]
        return await self._load((project, queue), ensure=True)

    def invalidate(self, project: str, queue: str) -> None:
        """Forget the queue's policy, and any answer still in flight for it."""
        key = (project, queue)
        self._entries.pop(key, None)
        self._inflight.pop((key, False), None)
        self._inflight.pop((key, True), None)

    async def _load(self, key: Key, ensure: bool) -> QueuePolicy:
        flight = (key, ensure)
        task = self._inflight.get(flight)
        if task is None:
            task = asyncio.ensure_future(self._call(key, ensure))
            self._inflight[flight] = task
            task.add_done_callback(lambda done: self._landed(flight, done))
        # Shielded: a caller that gives up does not cancel the call others wait for.
        return await asyncio.shield(task)

    def _landed(self, flight: tuple[Key, bool], task: asyncio.Task[QueuePolicy]) -> None:
        if self._inflight.get(flight) is not task:
            return  # invalidated while in flight: the answer may predate the change
        del self._inflight[flight]
        if task.cancelled() or task.exception() is not None:
            return
        key = flight[0]
        self._entries.pop(key, None)
        if len(self._entries) >= MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (task.result(), self._clock() + self._ttl)

    async def _call(self, key: Key, ensure: bool) -> QueuePolicy:
        project, queue = key
        request = queues_pb2.GetQueueRequest(project=project, queue=queue)
        method = self._stub.EnsureQueue if ensure else self._stub.GetQueue
        answer: queues_pb2.Queue = await upstream_call(
            method(request, timeout=self._timeout),
            f"queue_svc ({'EnsureQueue' if ensure else 'GetQueue'} {project}/{queue})",
            f"The queue service could not be reached to read the metadata of queue {queue}.",
        )
        return parse_policy(answer.metadata, exists=answer.exists or ensure)
