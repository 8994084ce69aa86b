"""gRPC adapters of notifier_svc: ``zaqar.v2.Subscriptions`` and ``zaqar.v2.NotifierInternal``.

Requests are unpacked into :class:`~services.notifier_svc.service.NotifierService` calls (a
request's queue or topic as its source key, ``sources.py``) and results packed into
protobufs; the caller's own token (``x-auth-token``) goes along to subscription create and
update, which create the trust of a ``trust+`` subscriber with it.
Unary errors propagate as ``ServiceError`` to the server's error interceptor; the ``Watch``
stream reports its own with the same rich status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import grpc
import orjson
from google.protobuf import empty_pb2
from grpc_status import rpc_status
from zaqar_grpc.v2 import common_pb2, notifier_pb2, notifier_pb2_grpc

from services.common.errors import Overloaded, ServiceError, Stopping, to_status
from services.common.grpc_auth import caller_token
from services.common.grpc_types import Context
from services.notifier_svc import sources
from services.notifier_svc.sealed import SealedBodies
from services.notifier_svc.service import Announce, NotifierService
from services.notifier_svc.storage.base import Subscription

SUBSCRIPTIONS_SERVICE = "zaqar.v2.Subscriptions"
INTERNAL_SERVICE = "zaqar.v2.NotifierInternal"

_EMPTY = empty_pb2.Empty()

def pack(subscription: Subscription, now: float) -> notifier_pb2.Subscription:
    return notifier_pb2.Subscription(
        id=subscription.id,
        source=sources.name_of(subscription.queue),
        subscriber=subscription.subscriber,
        ttl=subscription.ttl,
        age=max(0, int(now - subscription.created)),
        options=orjson.dumps(dict(subscription.options)),
        confirmed=subscription.confirmed,
    )


class _Sourced(Protocol):
    @property
    def project(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def topic(self) -> str: ...


def _source(request: _Sourced) -> str:
    return sources.key_of(request.project, request.queue, request.topic)


class SubscriptionsServicer(notifier_pb2_grpc.SubscriptionsServicer):
    def __init__(self, service: NotifierService, now: Callable[[], float] = time.time) -> None:
        self._service = service
        self._now = now

    async def CreateSubscription(
        self, request: notifier_pb2.CreateSubscriptionRequest, context: Context
    ) -> notifier_pb2.CreateSubscriptionResponse:
        subscription_id, created = await self._service.create(
            request.project, _source(request), request.subscriber,
            request.ttl if request.HasField("ttl") else None, request.options,
            token=caller_token(context),
        )
        return notifier_pb2.CreateSubscriptionResponse(
            subscription_id=subscription_id, created=created
        )

    async def GetSubscription(
        self, request: notifier_pb2.SubscriptionRef, context: Context
    ) -> notifier_pb2.Subscription:
        found = await self._service.get(
            request.project, _source(request), request.subscription_id
        )
        return pack(found, self._now())

    async def ListSubscriptions(
        self, request: notifier_pb2.ListSubscriptionsRequest, context: Context
    ) -> notifier_pb2.ListSubscriptionsResponse:
        page, next_marker = await self._service.list(
            request.project, _source(request),
            limit=request.limit if request.HasField("limit") else None, marker=request.marker,
        )
        now = self._now()
        return notifier_pb2.ListSubscriptionsResponse(
            subscriptions=[pack(s, now) for s in page], next_marker=next_marker
        )

    async def UpdateSubscription(
        self, request: notifier_pb2.UpdateSubscriptionRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.update(
            request.project, _source(request), request.subscription_id,
            subscriber=request.subscriber if request.HasField("subscriber") else None,
            ttl=request.ttl if request.HasField("ttl") else None,
            options=request.options,
            token=caller_token(context),
        )
        return _EMPTY

    async def DeleteSubscription(
        self, request: notifier_pb2.SubscriptionRef, context: Context
    ) -> empty_pb2.Empty:
        await self._service.delete(request.project, _source(request), request.subscription_id)
        return _EMPTY

    async def ConfirmSubscription(
        self, request: notifier_pb2.ConfirmSubscriptionRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.confirm(
            request.project, _source(request), request.subscription_id, request.confirmed
        )
        return _EMPTY


async def _abort(context: Context, error: ServiceError) -> None:
    await context.abort_with_status(rpc_status.to_status(to_status(error)))


class NotifierInternalServicer(notifier_pb2_grpc.NotifierInternalServicer):
    def __init__(
        self,
        service: NotifierService,
        announce: Announce | None = None,
        sealed: SealedBodies | None = None,
    ) -> None:
        """``sealed``: opens sealed bodies before they are streamed to a watcher (without
        it they are streamed as handed over)."""
        self._service = service
        self._announce = announce
        self._sealed = sealed

    async def Notify(
        self, request: notifier_pb2.NotifyRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.notify(
            request.project, request.queue, request.messages, request.accepted_at
        )
        return _EMPTY

    async def NotifyMany(
        self, request: notifier_pb2.NotifyManyRequest, context: Context
    ) -> notifier_pb2.NotifyManyResponse:
        outcomes = await self._service.notify_many(request.batches)
        return notifier_pb2.NotifyManyResponse(
            listened=[outcome is not False for outcome in outcomes],
            failed=[outcome is None for outcome in outcomes],
        )

    async def DeleteQueueSubscriptions(
        self, request: common_pb2.QueueRef, context: Context
    ) -> empty_pb2.Empty:
        await self._service.delete_queue(
            request.project, request.queue,
            request.pool_uri if request.HasField("pool_uri") else None,
        )
        return _EMPTY

    async def PublishTopic(
        self, request: notifier_pb2.PublishTopicRequest, context: Context
    ) -> notifier_pb2.PublishTopicResponse:
        ids = await self._service.publish_topic(
            request.project, request.topic, [(m.body, m.ttl) for m in request.messages]
        )
        return notifier_pb2.PublishTopicResponse(ids=ids)

    async def PurgeTopic(
        self, request: notifier_pb2.PurgeTopicSourceRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.purge_topic(
            request.project, request.topic, deliveries=request.deliveries,
            subscriptions=request.subscriptions,
        )
        return _EMPTY

    async def CountTopicDeliveries(
        self, request: notifier_pb2.TopicSource, context: Context
    ) -> notifier_pb2.TopicDeliveries:
        pending = await self._service.count_topic_deliveries(request.project, request.topic)
        return notifier_pb2.TopicDeliveries(pending=pending)

    async def Watch(
        self, request: notifier_pb2.WatchRequest, context: Context
    ) -> AsyncIterator[notifier_pb2.Notification]:
        watches = self._service.watches
        try:
            key = _source(request)
            watcher = await watches.watch(request.project, key)
        except ServiceError as error:
            await _abort(context, error)
            return
        topic = sources.topic_of(key)
        try:
            if self._announce is not None and topic is None:
                await self._announce(request.project, key)
            await context.send_initial_metadata(())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + request.ttl if request.ttl > 0 else None
            overflow = asyncio.create_task(watcher.overflowed.wait())
            # One read of the next notification at a time, kept across waits that time out.
            getter: asyncio.Task[notifier_pb2.Notification] | None = None
            try:
                while True:
                    if watcher.overflowed.is_set():
                        await _abort(context, Stopping(
                            "This notifier_svc process is stopping; watch again."
                        ) if watcher.stopping else Overloaded(
                            "The watcher fell too far behind the queue's messages and was "
                            "dropped; watch again."
                        ))
                    remaining = None if deadline is None else deadline - loop.time()
                    if remaining is not None and remaining <= 0:
                        return
                    if getter is None:
                        getter = asyncio.create_task(watcher.queue.get())
                    done, _ = await asyncio.wait(
                        {getter, overflow}, timeout=remaining,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if getter not in done:
                        continue
                    notification, getter = getter.result(), None
                    if topic is not None:
                        notification = notifier_pb2.Notification(
                            topic=topic, message=notification.message
                        )
                    elif self._sealed is not None:
                        opened = await self._sealed.open_notification(
                            request.project, notification
                        )
                        if opened is None:
                            continue
                        notification = opened
                    yield notification
            finally:
                await _stop(overflow, getter)
        finally:
            watches.unwatch(request.project, key, watcher)


async def _stop(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel what a stream started and wait until it has ended: a task left pending when its
    stream goes is destroyed with it ("Task was destroyed but it is pending!")."""
    started = {task for task in tasks if task is not None}
    for task in started:
        task.cancel()
    if started:
        await asyncio.wait(started)


def registrar(
    service: NotifierService,
    announce: Announce | None = None,
    sealed: SealedBodies | None = None,
) -> Callable[[grpc.aio.Server], None]:
    def register(server: grpc.aio.Server) -> None:
        notifier_pb2_grpc.add_SubscriptionsServicer_to_server(
            SubscriptionsServicer(service), server
        )
        notifier_pb2_grpc.add_NotifierInternalServicer_to_server(
            NotifierInternalServicer(service, announce, sealed), server
        )

    return register
