"""Queue metadata as message_svc needs it, read from queue_svc and cached per (project, queue).

Each entry carries the queue's version (see the message store contract), read from the store
*before* the metadata is read from queue_svc. A post or claim passes that version to the
store, which refuses it (``StaleQueue``) once the queue changed; the caller then drops the
entry and loads it again. So an entry is never used after a change was acknowledged, on any
replica, and no replica needs to know of the others (docs/architecture.md, "The hot path").
The time limit on entries only bounds how long an unused entry is kept. Concurrent misses of
one key share one call, and a call that was in flight when its key was invalidated does not
fill the cache.

With pooling, an entry also names the store of the queue's pool (``pool_uri``; "" for the own
store), where its version lives: the version is read from the store of the queue's last known
placement (the own store for a queue not seen yet), then the metadata with the placement from
queue_svc; when the answer names another store the pair is read again from that one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import grpc
import orjson
from zaqar_grpc.v2 import queues_pb2, queues_pb2_grpc

from services.common import limits
from services.common.errors import Unavailable, upstream_call
from services.common.metrics import instrumented
from services.message_svc.filters.pipeline import Filters, Pipeline
from services.message_svc.storage.base import DeadLetterPolicy

Key = tuple[str, str]
VersionOf = Callable[[str, str, str], Awaitable[int]]
"""``version_of(pool_uri, project, queue)``: the queue's version in that store."""

# Bound on cached queues; beyond it the oldest entries go first.
MAX_ENTRIES = 100_000
# Reads of (version, metadata) before a queue's placement settles; each further read means the
# queue was deleted and created again on another pool meanwhile.
PLACEMENT_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """The reserved metadata keys of a queue (contract §3) that the data plane applies."""

    exists: bool
    default_ttl: int = limits.MESSAGE_TTL_DEFAULT
    default_delay: int = 0
    max_post_size: int = limits.MESSAGE_POST_SIZE_MAX
    dead_letter: DeadLetterPolicy | None = None
    version: int = 0
    """The queue's version in the message store when this was read (read first)."""
    pool: str = ""
    """The pool the queue is placed on ("" for message_svc's own store)."""
    pool_uri: str = ""
    """That pool's message store URI ("" for message_svc's own store)."""
    filters: Pipeline | None = None
    """The queue's message filters; None when none acts on it."""
    encrypt: bool = False
    """``_enable_encrypt_messages``: bodies are sealed before they are stored."""
    fifo: bool = False
    """``_fifo``: message groups and deduplication (the store's ``*_fifo`` methods)."""
    dedup_window: int = limits.DEDUP_WINDOW_DEFAULT
    """``_dedup_window``: seconds a FIFO queue remembers an accepted ``dedup_id``."""


def _int(document: dict[str, Any], key: str) -> int | None:
    value = document.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_policy(
    metadata: bytes, exists: bool, filters: Filters | None = None
) -> QueuePolicy:
    """Read the reserved keys; a missing, null or ill-typed key keeps its default. With
    ``filters`` (the deployment's), the queue's filter pipeline is made too."""
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
        filters=None if filters is None else filters.for_queue(document),
        encrypt=document.get("_enable_encrypt_messages") is True,
        fifo=document.get("_fifo") is True,
        dedup_window=_int(document, "_dedup_window") or limits.DEDUP_WINDOW_DEFAULT,
    )


class QueueMetadata:
    """Cached queue policies, loaded through ``zaqar.v2.Queues`` over one reused channel, each
    stamped with the queue's version read from the message store by ``version_of``."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        timeout: float,
        ttl: float,
        version_of: VersionOf,
        clock: Callable[[], float] = time.monotonic,
        on_load: Callable[[str, str], None] | None = None,
        filters: Filters | None = None,
    ) -> None:
        """``on_load(project, queue)`` is called as each load starts (the hand-off drops what
        it knows of the queue's listeners, which the version covers too). ``filters``: the
        deployment's message filters, made for each queue as its policy is loaded."""
        self._filters = filters
        self._stub = instrumented(queues_pb2_grpc.QueuesStub(channel))
        self._version_of = version_of
        self._on_load = on_load
        self._timeout = timeout
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[Key, tuple[QueuePolicy, float]] = {}
        self._inflight: dict[tuple[Key, bool], asyncio.Task[QueuePolicy]] = {}
        self._placed: dict[Key, str] = {}
        """Last known pool store of each queue, kept across invalidations: where to read the
        version first on the next load."""
        self._place_on: dict[Key, str] = {}

    async def get(self, project: str, queue: str) -> QueuePolicy:
        """The queue's policy; defaults with ``exists=False`` for a queue never created."""
        entry = self._entries.get((project, queue))
        if entry is not None and entry[1] > self._clock():
            return entry[0]
        return await self._load((project, queue), ensure=False)

    async def ensure(self, project: str, queue: str, place_on: str = "") -> QueuePolicy:
        """The queue's policy, creating the queue first when it does not exist (with pooling,
        on the pool ``place_on`` when given)."""
        entry = self._entries.get((project, queue))
        if entry is not None and entry[0].exists and entry[1] > self._clock():
            return entry[0]
        if place_on:
            self._place_on[(project, queue)] = place_on
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
        # First the version, then the metadata: a change stored in between makes the pair
        # look older than it is (refused on use, loaded again), never newer.
        if self._on_load is not None:
            self._on_load(project, queue)
        request = queues_pb2.GetQueueRequest(
            project=project, queue=queue, with_placement=True,
            place_on=self._place_on.pop(key, "") if ensure else "",
        )
        method = self._stub.EnsureQueue if ensure else self._stub.GetQueue

        async def ask() -> queues_pb2.Queue:
            answer: queues_pb2.Queue = await upstream_call(
                method(request, timeout=self._timeout),
                f"queue_svc ({'EnsureQueue' if ensure else 'GetQueue'} {project}/{queue})",
                f"The metadata of queue {queue} could not be read.",
                relay=True,  # the caller's own queue: queue_svc's 4xx for it is the caller's
            )
            if answer.pool and not answer.pool_uri:
                raise Unavailable(
                    f"Queue {queue} is placed on pool {answer.pool}, which is not in the pool "
                    "catalog any more: its messages cannot be reached until the pool is "
                    "registered again."
                )
            return answer

        uri = self._placed.get(key, "")
        for _ in range(PLACEMENT_ATTEMPTS):
            try:
                version = await self._version_of(uri, project, queue)
            except Unavailable:
                # The last known pool is down: the queue may have been placed elsewhere since.
                if not uri:
                    raise
                moved = (await ask()).pool_uri
                if moved == uri:
                    raise
                uri = moved
                self._remember(key, uri)
                continue
            answer = await ask()
            if answer.pool_uri == uri:
                break
            uri = answer.pool_uri
            self._remember(key, uri)
        else:
            raise Unavailable(
                f"Queue {queue} moved between pools while its metadata was read. "
                "Please try again."
            )
        policy = parse_policy(answer.metadata, exists=answer.exists or ensure,
                              filters=self._filters)
        return replace(policy, version=version, pool=answer.pool, pool_uri=uri)

    def _remember(self, key: Key, uri: str) -> None:
        self._placed.pop(key, None)
        if uri:
            if len(self._placed) >= MAX_ENTRIES:
                del self._placed[next(iter(self._placed))]
            self._placed[key] = uri
