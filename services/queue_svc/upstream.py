"""The calls queue_svc makes to message_svc and to notifier_svc (one reused channel each,
balanced over every replica). In keystone mode every call carries queue_svc's service token.

Every call carries the ``rpc_timeout`` deadline. A failed call is translated once, by
:func:`~services.common.errors.upstream_call`: into :class:`Unavailable` (the caller's 503),
with message_svc's or notifier_svc's own account when it answered UNAVAILABLE itself; only
the stats read passes message_svc's 4xx on, since only it carries the caller's request as it
came. The other calls are steps of a change the caller asked for, where a 4xx means the
services disagree: a 503, logged as an error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from zaqar_grpc.v2 import common_pb2, messages_pb2_grpc, notifier_pb2, notifier_pb2_grpc

from services.common.config import Settings
from services.common.errors import RETRY_LATER, Unavailable, upstream_call
from services.common.grpc_server import open_channel
from services.common.keystone import KeystoneAuth
from services.common.metrics import instrumented
from services.common.tls import Tls

log = logging.getLogger(__name__)

T = TypeVar("T")

# Calls of InvalidateQueue before a change is answered 503 (each may reach another replica).
INVALIDATE_ATTEMPTS = 2


class MessageService:
    """message_svc as queue_svc sees it: one channel, balanced over every replica."""

    def __init__(
        self, settings: Settings, tls: Tls | None = None, auth: KeystoneAuth | None = None
    ) -> None:
        self._timeout = settings.rpc_timeout
        self._cache_ttl = settings.metadata_cache_ttl
        self._target = settings.target("message")
        self._channel = open_channel(self._target, tls, auth)
        self._internal = instrumented(messages_pb2_grpc.MessagesInternalStub(self._channel))
        self._messages = instrumented(messages_pb2_grpc.MessagesStub(self._channel))

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, failure: str, call: Awaitable[T], *, relay: bool = False) -> T:
        """Await one call; a failure becomes :class:`Unavailable` with ``failure`` as the start
        of its description, unless ``relay`` passes message_svc's 4xx on
        (:func:`~services.common.errors.upstream_call`)."""
        return await upstream_call(call, f"message_svc at {self._target}", failure, relay=relay)

    async def get_stats(self, project: str, queue: str) -> common_pb2.QueueStats:
        stats: common_pb2.QueueStats = await self._call(
            "Queue stats could not be read.",
            self._messages.GetStats(
                common_pb2.QueueRef(project=project, queue=queue), timeout=self._timeout
            ),
            relay=True,  # the caller's own request for the stats
        )
        return stats

    async def delete_queue_messages(
        self, project: str, queue: str, failure: str, pool_uri: str | None = None
    ) -> None:
        """Remove every message and claim of the queue (from the store of ``pool_uri``, with
        pooling: "" is message_svc's own)."""
        await self._call(
            failure,
            self._internal.DeleteQueueMessages(
                common_pb2.QueueRef(project=project, queue=queue, pool_uri=pool_uri),
                timeout=self._timeout,
            ),
        )

    async def invalidate(self, project: str, queue: str, pool_uri: str | None = None) -> None:
        """Tell message_svc that the queue's metadata changed (any one replica raises the
        queue's version in the message store, which every replica checks on use). A replica
        that fails is tried once more, which the balancing sends to the next one.

        ``pool_uri`` (pooling): the message store of the queue's pool, where its version is
        ("" for message_svc's own store).

        Raises:
            Unavailable: no replica confirmed it.
        """
        ref = common_pb2.QueueRef(project=project, queue=queue, pool_uri=pool_uri)
        for attempt in range(INVALIDATE_ATTEMPTS):
            try:
                await self._call(
                    "The queue change was not confirmed.",
                    self._internal.InvalidateQueue(ref, timeout=self._timeout),
                )
                return
            except Unavailable:
                if attempt + 1 < INVALIDATE_ATTEMPTS:
                    continue
        raise Unavailable(
            "The change was stored, but the message service did not confirm it, and may use "
            f"the previous queue metadata for up to {self._cache_ttl:g} seconds. {RETRY_LATER}"
        )


class NotifierService:
    """notifier_svc as queue_svc sees it: where a queue's subscriptions are removed, and where
    a topic's messages are delivered."""

    def __init__(
        self, settings: Settings, tls: Tls | None = None, auth: KeystoneAuth | None = None
    ) -> None:
        self._timeout = settings.rpc_timeout
        self._target = settings.target("notifier")
        self._channel = open_channel(self._target, tls, auth)
        self._internal = instrumented(notifier_pb2_grpc.NotifierInternalStub(self._channel))

    async def close(self) -> None:
        await self._channel.close()

    async def delete_queue_subscriptions(
        self, project: str, queue: str, failure: str, pool_uri: str | None = None
    ) -> None:
        """Remove every subscription of the queue (and its pending notifications), from
        the notifier store of ``pool_uri`` too (the queue's pool, as its record had it).

        Raises:
            Unavailable: notifier_svc did not confirm it; ``failure`` starts the description.
        """
        await upstream_call(
            self._internal.DeleteQueueSubscriptions(
                common_pb2.QueueRef(project=project, queue=queue, pool_uri=pool_uri),
                timeout=self._timeout,
            ),
            f"notifier_svc at {self._target}",
            failure,
        )

    async def publish_topic(
        self, project: str, topic: str, messages: list[tuple[bytes, int]]
    ) -> list[str]:
        """Hand messages posted to a topic, as (body, ttl), to notifier_svc, which answers once
        their deliveries are stored; their new ids.

        Raises:
            Unavailable: notifier_svc did not confirm it (the deliveries may or may not be
                stored: a call made again may deliver them twice).
        """
        answer = await upstream_call(
            self._internal.PublishTopic(
                notifier_pb2.PublishTopicRequest(
                    project=project, topic=topic,
                    messages=[notifier_pb2.TopicMessage(body=b, ttl=ttl) for b, ttl in messages],
                ),
                timeout=self._timeout,
            ),
            f"notifier_svc at {self._target}",
            "Messages could not be delivered to the topic's subscribers.",
        )
        return list(answer.ids)

    async def purge_topic(
        self, project: str, topic: str, failure: str, *, deliveries: bool, subscriptions: bool
    ) -> None:
        """Remove the topic's pending deliveries and/or its subscriptions.

        Raises:
            Unavailable: notifier_svc did not confirm it; ``failure`` starts the description.
        """
        await upstream_call(
            self._internal.PurgeTopic(
                notifier_pb2.PurgeTopicSourceRequest(
                    project=project, topic=topic, deliveries=deliveries,
                    subscriptions=subscriptions,
                ),
                timeout=self._timeout,
            ),
            f"notifier_svc at {self._target}",
            failure,
        )

    async def count_topic_deliveries(self, project: str, topic: str) -> int:
        """The deliveries the topic's subscribers are still owed.

        Raises:
            Unavailable: notifier_svc did not answer.
        """
        answer = await upstream_call(
            self._internal.CountTopicDeliveries(
                notifier_pb2.TopicSource(project=project, topic=topic), timeout=self._timeout
            ),
            f"notifier_svc at {self._target}",
            "Topic stats could not be read.",
        )
        return int(answer.pending)
