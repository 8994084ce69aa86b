"""The calls queue_svc makes to message_svc (one reused channel per replica) and to
notifier_svc (one channel). In keystone mode every call carries queue_svc's service token.

Every call carries the ``rpc_timeout`` deadline. A failed call is translated once, in
:meth:`MessageService._call`, into :class:`Unavailable` (the caller's 503): message_svc is
ours, so any failure of it (unreachable, deadline, or an error it should never return to us)
means the request cannot be completed now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from zaqar.v2 import common_pb2, messages_pb2_grpc, notifier_pb2_grpc

from services.common.config import Settings
from services.common.errors import RETRY_LATER, Unavailable, upstream_call
from services.common.grpc_server import open_channel
from services.common.keystone import KeystoneAuth
from services.common.tls import Tls

log = logging.getLogger(__name__)

T = TypeVar("T")


class MessageService:
    """message_svc as queue_svc sees it: one primary target plus every replica to invalidate."""

    def __init__(
        self, settings: Settings, tls: Tls | None = None, auth: KeystoneAuth | None = None
    ) -> None:
        self._timeout = settings.rpc_timeout
        self._cache_ttl = settings.metadata_cache_ttl
        self._primary = settings.target("message")
        self._replicas = settings.message_target_list()
        targets = dict.fromkeys([self._primary, *self._replicas])
        self._channels = {target: open_channel(target, tls, auth) for target in targets}
        self._internal = {
            target: messages_pb2_grpc.MessagesInternalStub(channel)
            for target, channel in self._channels.items()
        }
        self._messages = messages_pb2_grpc.MessagesStub(self._channels[self._primary])

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))

    async def _call(self, target: str, failure: str, call: Awaitable[T]) -> T:
        """Await one call; any RPC failure becomes :class:`Unavailable` with ``failure`` as the
        start of its description."""
        return await upstream_call(call, f"message_svc at {target}", failure)

    async def get_stats(self, project: str, queue: str) -> common_pb2.QueueStats:
        stats: common_pb2.QueueStats = await self._call(
            self._primary,
            "Queue stats could not be read.",
            self._messages.GetStats(
                common_pb2.QueueRef(project=project, queue=queue), timeout=self._timeout
            ),
        )
        return stats

    async def delete_queue_messages(self, project: str, queue: str, failure: str) -> None:
        """Remove every message and claim of the queue."""
        await self._call(
            self._primary,
            failure,
            self._internal[self._primary].DeleteQueueMessages(
                common_pb2.QueueRef(project=project, queue=queue), timeout=self._timeout
            ),
        )

    async def invalidate(self, project: str, queue: str) -> None:
        """Make every message_svc replica drop its cached metadata of the queue.

        All replicas are called at once; this returns when each has acknowledged.

        Raises:
            Unavailable: at least one replica did not acknowledge (the others did).
        """
        ref = common_pb2.QueueRef(project=project, queue=queue)
        results = await asyncio.gather(
            *(
                self._call(target, "Cache invalidation failed.",
                           self._internal[target].InvalidateQueue(ref, timeout=self._timeout))
                for target in self._replicas
            ),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for result in failures:
            if not isinstance(result, Unavailable):
                raise result
        if failures:
            raise Unavailable(
                f"The change was stored, but {len(failures)} of {len(results)} message service "
                "replicas did not confirm it and may use the previous queue metadata for up to "
                f"{self._cache_ttl:g} seconds. {RETRY_LATER}"
            )


class NotifierService:
    """notifier_svc as queue_svc sees it: where a queue's subscriptions are removed."""

    def __init__(
        self, settings: Settings, tls: Tls | None = None, auth: KeystoneAuth | None = None
    ) -> None:
        self._timeout = settings.rpc_timeout
        self._target = settings.target("notifier")
        self._channel = open_channel(self._target, tls, auth)
        self._internal = notifier_pb2_grpc.NotifierInternalStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def delete_queue_subscriptions(self, project: str, queue: str, failure: str) -> None:
        """Remove every subscription of the queue (and its pending notifications).

        Raises:
            Unavailable: notifier_svc did not confirm it; ``failure`` starts the description.
        """
        await upstream_call(
            self._internal.DeleteQueueSubscriptions(
                common_pb2.QueueRef(project=project, queue=queue), timeout=self._timeout
            ),
            f"notifier_svc at {self._target}",
            failure,
        )
