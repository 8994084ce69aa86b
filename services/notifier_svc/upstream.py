"""The calls notifier_svc makes to the other services, each over one reused channel.

* :class:`QueuePolicies` reads a queue's ``_retry_policy`` through ``zaqar.v2.Queues.GetQueue``
  (a topic's through ``zaqar.v2.Topics.GetTopic``; only when a delivery failed), cached briefly.
* :class:`MessageReplicas` tells message_svc that a queue gained a listener (a subscription or
  a watcher), through ``MessagesInternal.InvalidateQueue``: one replica raises the queue's
  version in the message store, and every replica then stops skipping that queue's posts (see
  ``services/message_svc/handoff.py``). Topics have no messages in message_svc: it is told
  nothing of theirs.

In keystone mode both carry notifier_svc's service token. Both are best effort: a failure is
logged (at most every few seconds) and never fails the caller's request; the queue's defaults
apply, or message_svc learns of the listener at the latest when its cached answer ages out
(``ZAQAR_METADATA_CACHE_TTL``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
import orjson
from zaqar_grpc.v2 import (
    common_pb2,
    messages_pb2,
    messages_pb2_grpc,
    queues_pb2,
    queues_pb2_grpc,
    topics_pb2,
    topics_pb2_grpc,
)

from services.common.config import Settings
from services.common.errors import Unavailable, decode_rpc_error
from services.common.grpc_server import open_channel
from services.common.keystone import KeystoneAuth
from services.common.metrics import instrumented
from services.common.tls import Tls
from services.notifier_svc import sources

log = logging.getLogger(__name__)

POLICY_CACHE_TTL = 5.0
WARNING_INTERVAL = 10.0
# Calls of InvalidateQueue per new listener (each may reach another message_svc replica).
LISTENED_ATTEMPTS = 2


class _Throttle:
    """Whether a warning may be logged now (at most one every ``WARNING_INTERVAL``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = -WARNING_INTERVAL

    def __call__(self) -> bool:
        now = self._clock()
        if now - self._last < WARNING_INTERVAL:
            return False
        self._last = now
        return True


class QueuePolicies:
    """Queues' and topics' ``_retry_policy`` metadata, from queue_svc."""

    def __init__(
        self, settings: Settings, clock: Callable[[], float] = time.monotonic,
        tls: Tls | None = None, auth: KeystoneAuth | None = None,
    ) -> None:
        self._channel = open_channel(settings.target("queue"), tls, auth)
        self._stub = instrumented(queues_pb2_grpc.QueuesStub(self._channel))
        self._topics = instrumented(topics_pb2_grpc.TopicsStub(self._channel))
        self._timeout = settings.rpc_timeout
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[Any, float]] = {}
        self._warn = _Throttle(clock)

    async def close(self) -> None:
        await self._channel.close()

    async def retry_policy(self, project: str, queue: str) -> Any:
        """The ``_retry_policy`` value as stored of the queue, or of the topic that the source
        key ``queue`` names (None when unset, unreadable or the topic is gone)."""
        key = (project, queue)
        cached = self._cache.get(key)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        topic = sources.topic_of(queue)
        try:
            if topic is None:
                answer = await self._stub.GetQueue(
                    queues_pb2.GetQueueRequest(project=project, queue=queue),
                    timeout=self._timeout,
                )
                raw = answer.metadata
            else:
                raw = (await self._topics.GetTopic(
                    topics_pb2.TopicRequest(project=project, topic=topic), timeout=self._timeout
                )).metadata
            metadata = orjson.loads(raw) if raw else {}
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                metadata = {}  # a topic deleted since: its subscriptions' policies only
            else:
                return self._unreadable(project, queue, exc)
        except orjson.JSONDecodeError as exc:
            return self._unreadable(project, queue, exc)
        policy = metadata.get("_retry_policy") if isinstance(metadata, dict) else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (policy, self._clock() + POLICY_CACHE_TTL)
        return policy

    def _unreadable(
        self, project: str, queue: str, exc: grpc.aio.AioRpcError | orjson.JSONDecodeError
    ) -> None:
        if self._warn():
            detail = (
                decode_rpc_error(exc).description
                if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            )
            log.warning("metadata of %s/%s unreadable, default retry policy: %s",
                        project, sources.name_of(queue), detail)
        return None


class MessageReplicas:
    """message_svc (``ZAQAR_MESSAGE_TARGETS``, balanced over every replica), told when a queue
    gains a listener."""

    def __init__(
        self, settings: Settings, tls: Tls | None = None, auth: KeystoneAuth | None = None
    ) -> None:
        self._timeout = settings.rpc_timeout
        self._target = settings.target("message")
        self._channel = open_channel(self._target, tls, auth)
        self._stub = instrumented(messages_pb2_grpc.MessagesInternalStub(self._channel))
        self._warn = _Throttle()

    async def close(self) -> None:
        await self._channel.close()

    async def listened(self, project: str, queue: str) -> None:
        """Tell message_svc (one replica raises the queue's version in the message store, which
        every replica checks on its next post); a failed replica is tried once more."""
        if sources.topic_of(queue) is not None:
            return  # a topic's messages are never in message_svc
        ref = common_pb2.QueueRef(project=project, queue=queue)
        for attempt in range(LISTENED_ATTEMPTS):
            try:
                await self._stub.InvalidateQueue(ref, timeout=self._timeout)
                return
            except grpc.aio.AioRpcError as exc:
                if attempt + 1 < LISTENED_ATTEMPTS:
                    continue
                if self._warn():
                    log.warning(
                        "message_svc at %s not told that %s/%s is listened to (%s); it may "
                        "skip the queue's messages until its cache entry ages out",
                        self._target, project, queue, exc.code().name,
                    )

    async def open_bodies(
        self, project: str, queue: str, bodies: list[bytes]
    ) -> list[bytes] | None:
        """The plaintext of sealed bodies of the queue, opened by message_svc (the only
        service that decrypts); None when message_svc says they cannot be opened (logged).

        Raises:
            Unavailable: message_svc cannot be reached (try again later).
        """
        try:
            answer = await self._stub.OpenBodies(
                messages_pb2.OpenBodiesRequest(project=project, queue=queue, bodies=bodies),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            info = decode_rpc_error(exc)
            if exc.code() == grpc.StatusCode.DATA_LOSS:
                log.error("sealed message of %s/%s not delivered: %s", project, queue,
                          info.description)
                return None
            raise Unavailable(
                f"message_svc at {self._target} did not open sealed bodies of {project}/"
                f"{queue}: {info.description}"
            ) from None
        return list(answer.bodies)

    async def post_once(
        self, project: str, queue: str, key: str, body: bytes, ttl: int, *, client_id: str
    ) -> bool:
        """Post one message into the queue at most once per ``key`` (``PostOnce``): True when
        it is in the queue (now or from an earlier call) or refused for good (logged), False
        when the attempt failed otherwise.

        Raises:
            Unavailable: message_svc cannot be reached (try again later).
        """
        try:
            await self._stub.PostOnce(
                messages_pb2.PostOnceRequest(
                    project=project, queue=queue, key=key, body=body, ttl=ttl,
                    client_id=client_id,
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            info = decode_rpc_error(exc)
            if exc.code() in _UNREACHABLE:
                raise Unavailable(
                    f"message_svc at {self._target} did not post into {project}/{queue}: "
                    f"{info.description}"
                ) from None
            if exc.code() in _REFUSED:
                log.error("message not posted into queue %s/%s, refused: %s", project, queue,
                          info.description)
                return True
            log.warning("message not posted into queue %s/%s: %s", project, queue,
                        info.description)
            return False
        return True


_UNREACHABLE = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
})
_REFUSED = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE,
})
