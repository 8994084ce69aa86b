"""Where a queue's subscriptions live: the pool queue_svc placed the queue on (docs/
architecture.md, "Queues on pools"), read with ``zaqar.v2.Queues.GetQueue`` (``with_placement``)
and cached; and the catalog's pools, read with ``zaqar.v2.Pools.ListPools``.

A queue keeps its pool while it exists, so an answer stays true until the queue is deleted:
``DeleteQueueSubscriptions`` (which names the pool) drops the entry on the replica it reaches,
and the others drop theirs after ``ttl`` seconds. Topics are never placed on pools. Without
pooling nothing is asked: every queue is in the own store ("").
"""

from __future__ import annotations

import time
from collections.abc import Callable

from zaqar_grpc.v2 import admin_pb2, admin_pb2_grpc, queues_pb2, queues_pb2_grpc

from services.common.config import Settings
from services.common.errors import upstream_call
from services.common.grpc_server import open_channel
from services.common.keystone import KeystoneAuth
from services.common.metrics import instrumented
from services.common.tls import Tls
from services.notifier_svc import sources

MAX_CACHED = 100_000
PAGE = 20


class Placements:
    """The pool URI of each queue ("" for a queue in message_svc's own store, absent, or not
    on a pool), from queue_svc."""

    def __init__(
        self,
        settings: Settings,
        tls: Tls | None = None,
        auth: KeystoneAuth | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pooling = settings.pooling
        self._target = settings.target("queue")
        self._channel = open_channel(self._target, tls, auth)
        self._queues = instrumented(queues_pb2_grpc.QueuesStub(self._channel))
        self._pools = instrumented(admin_pb2_grpc.PoolsStub(self._channel))
        self._timeout = settings.rpc_timeout
        self._ttl = settings.metadata_cache_ttl
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}

    async def close(self) -> None:
        await self._channel.close()

    async def pool_uri(self, project: str, queue: str, *, fresh: bool = False) -> str:
        """The message store URI of the pool of the queue (a source key: a topic is ""),
        cached for ``metadata_cache_ttl`` seconds unless ``fresh``.

        Raises:
            Unavailable: queue_svc does not answer, or answers that it cannot say.
            ServiceError: queue_svc's 4xx for the queue, passed on.
        """
        if not self.pooling or sources.topic_of(queue) is not None:
            return ""
        key = (project, queue)
        cached = self._cache.get(key)
        if not fresh and cached is not None and cached[1] > self._clock():
            return cached[0]
        answer: queues_pb2.Queue = await upstream_call(
            self._queues.GetQueue(
                queues_pb2.GetQueueRequest(project=project, queue=queue, with_placement=True),
                timeout=self._timeout,
            ),
            f"queue_svc at {self._target} (GetQueue {project}/{queue})",
            f"The pool of queue {queue} could not be read.",
            relay=True,  # the caller's own queue
        )
        self.remember(project, queue, answer.pool_uri)
        return answer.pool_uri

    def remember(self, project: str, queue: str, pool_uri: str) -> None:
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[(project, queue)] = (pool_uri, self._clock() + self._ttl)

    def cached(self, project: str, queue: str) -> str | None:
        """The pool URI this replica has for the queue (even aged), or None."""
        entry = self._cache.get((project, queue))
        return None if entry is None else entry[0]

    def forget(self, project: str, queue: str) -> None:
        self._cache.pop((project, queue), None)

    async def pool_uris(self) -> list[str]:
        """The message store URIs of every pool of the catalog.

        Raises:
            grpc.aio.AioRpcError: queue_svc does not answer.
        """
        return [pool.uri for pool in await self.pools()]

    async def pools(self) -> list[admin_pb2.PoolStore]:
        """Every pool of the catalog, by name and URI.

        Raises:
            grpc.aio.AioRpcError: queue_svc does not answer.
        """
        pools: list[admin_pb2.PoolStore] = []
        marker = ""
        while True:
            page = await self._pools.ListPools(
                admin_pb2.ListPoolsRequest(limit=PAGE, marker=marker), timeout=self._timeout
            )
            pools.extend(admin_pb2.PoolStore(name=p.name, uri=p.uri) for p in page.pools)
            if not page.pools or not page.next_marker:
                return pools
            marker = page.next_marker
