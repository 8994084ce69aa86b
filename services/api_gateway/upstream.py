"""The gateway's gRPC clients: one reused channel per upstream service, deadlines on every call.

Channels are opened at startup and closed at shutdown (see ``app.py`` and ``server.py``).
Operations use ``up.queues`` / ``up.topics`` / ``up.messages`` / ``up.subscriptions`` /
``up.notifier`` / ``up.pools`` / ``up.flavors`` / ``up.store_health(service)`` (generated
stubs) and pass ``timeout=up.timeout`` on every unary call. If the app runs without lifespan
events the channels are opened on first use instead. With ``message_batch`` on,
``up.messages`` coalesces concurrent calls into ``MessagesInternal.Batch`` (``coalesce.py``);
it answers and fails exactly as the stub does, and with ``message_stream`` on sends the calls
on one ``MessagesInternal.Exchange`` stream (``exchange.py``).

In keystone mode every call carries the gateway's own service token (``x-service-token``), so
the services accept the project the gateway sends (``services/common/grpc_auth.py``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from zaqar_grpc.v2 import (
    admin_pb2_grpc,
    messages_pb2_grpc,
    notifier_pb2_grpc,
    queues_pb2_grpc,
    topics_pb2_grpc,
)

from services.api_gateway.coalesce import CoalescingMessages, check_batch_settings
from services.api_gateway.exchange import Exchange
from services.api_gateway.operations.waiting import Waits
from services.common.config import Settings
from services.common.grpc_server import CHANNEL_OPTIONS, open_channel
from services.common.keystone import KeystoneAuth, check_settings
from services.common.metrics import instrumented
from services.common.tls import Tls

QUEUES_SERVICE = "zaqar.v2.Queues"
MESSAGES_SERVICE = "zaqar.v2.Messages"
SUBSCRIPTIONS_SERVICE = "zaqar.v2.Subscriptions"


@dataclass(frozen=True)
class _Stubs:
    queues: queues_pb2_grpc.QueuesAsyncStub
    topics: topics_pb2_grpc.TopicsAsyncStub
    # The stub, or CoalescingMessages, which answers the same calls.
    messages: messages_pb2_grpc.MessagesAsyncStub | CoalescingMessages
    # Never coalesced: long-polling calls, which a batch must not wait for.
    messages_direct: messages_pb2_grpc.MessagesAsyncStub
    subscriptions: notifier_pb2_grpc.SubscriptionsAsyncStub
    notifier: notifier_pb2_grpc.NotifierInternalAsyncStub
    pools: admin_pb2_grpc.PoolsAsyncStub
    flavors: admin_pb2_grpc.FlavorsAsyncStub
    store_health: dict[str, admin_pb2_grpc.StoreHealthAsyncStub]


class Upstreams:
    """Channels and stubs of queue_svc, message_svc and notifier_svc."""

    def __init__(
        self, settings: Settings, tls: Tls | None = None, auth: KeystoneAuth | None = None
    ) -> None:
        """``tls``: TLS material for the channels (``load_tls(settings, serving=False)``);
        None = plaintext. ``auth``: the gateway's Keystone client, closed by its owner; in
        keystone mode without one, the upstreams make their own and close it with the
        channels."""
        self.timeout = settings.rpc_timeout
        # The long polls held (both ports), and whether the gateway is stopping, when they end
        # at once (operations/waiting.py).
        self.waits = Waits(settings.max_waiting)
        self._tls = tls
        # Whether the services behind run with the pool catalog (the same setting for all).
        self.pooling = settings.pooling
        check_settings(settings)
        self._owned_auth = auth is None and settings.auth_strategy == "keystone"
        self._auth = KeystoneAuth(settings) if self._owned_auth else auth
        self._queue_target = settings.target("queue")
        self._message_target = settings.target("message")
        self._notifier_target = settings.target("notifier")
        self._batch = settings.message_batch
        self._stream = settings.message_stream
        self._batch_max = settings.message_batch_max
        self._in_flight = settings.message_batch_in_flight
        self._batch_wait = settings.message_batch_wait
        if self._batch:  # before any channel is opened
            check_batch_settings(self._batch_max, self._in_flight, self._batch_wait)
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: _Stubs | None = None
        self._health: dict[str, Any] = {}

    def open(self) -> None:
        if self._channels:
            return
        queue_channel = open_channel(self._queue_target, self._tls, self._auth)
        # Channels that carry streams ending cancelled go without outlier detection, or gRPC
        # would count healthy replicas as failing (grpc_server._OUTLIER_DETECTION): the
        # Exchange stream (exchange.py leaves a hung replica's stream on its own), and
        # WebSocket subscribers' Watch streams. With the stream off, message_svc gets unary
        # calls, whose replicas are left out when their calls all fail.
        message_channel = open_channel(
            self._message_target, self._tls, self._auth, self._message_options(),
            eject_hung=not (self._batch and self._stream),
        )
        notifier_channel = open_channel(
            self._notifier_target, self._tls, self._auth, eject_hung=False
        )
        self._channels = [queue_channel, message_channel, notifier_channel]
        messages: messages_pb2_grpc.MessagesAsyncStub | CoalescingMessages
        messages = direct = instrumented(messages_pb2_grpc.MessagesStub(message_channel))
        if self._batch:
            internal = messages_pb2_grpc.MessagesInternalStub(message_channel)
            messages = CoalescingMessages(
                messages, instrumented(internal),
                max_items=self._batch_max, in_flight=self._in_flight,
                exchange=Exchange(internal) if self._stream else None,
                max_wait=self._batch_wait,
            )
        self._stubs = _Stubs(
            queues=instrumented(queues_pb2_grpc.QueuesStub(queue_channel)),
            topics=instrumented(topics_pb2_grpc.TopicsStub(queue_channel)),
            messages=messages,
            messages_direct=direct,
            subscriptions=instrumented(notifier_pb2_grpc.SubscriptionsStub(notifier_channel)),
            notifier=instrumented(notifier_pb2_grpc.NotifierInternalStub(notifier_channel)),
            pools=instrumented(admin_pb2_grpc.PoolsStub(queue_channel)),
            flavors=instrumented(admin_pb2_grpc.FlavorsStub(queue_channel)),
            store_health={
                "queue_svc": instrumented(admin_pb2_grpc.StoreHealthStub(queue_channel)),
                "message_svc": instrumented(admin_pb2_grpc.StoreHealthStub(message_channel)),
                "notifier_svc": instrumented(admin_pb2_grpc.StoreHealthStub(notifier_channel)),
            },
        )
        self._health = {
            QUEUES_SERVICE: instrumented(health_pb2_grpc.HealthStub(queue_channel)),
            MESSAGES_SERVICE: instrumented(health_pb2_grpc.HealthStub(message_channel)),
            SUBSCRIPTIONS_SERVICE: instrumented(health_pb2_grpc.HealthStub(notifier_channel)),
        }

    def _message_options(self) -> list[tuple[str, Any]]:
        if not self._batch:
            return []
        # A Batch answer holds up to message_batch_max answers, each as large as one call's.
        single = dict(CHANNEL_OPTIONS)["grpc.max_receive_message_length"]
        return [("grpc.max_receive_message_length", min(2**31 - 1, single * self._batch_max))]

    async def close(self) -> None:
        if self._stubs is not None and isinstance(self._stubs.messages, CoalescingMessages):
            await self._stubs.messages.close()
        channels, self._channels = self._channels, []
        self._stubs = None
        self._health = {}
        for channel in channels:
            await channel.close()
        if self._owned_auth and self._auth is not None:
            await self._auth.aclose()

    def _get(self) -> _Stubs:
        if self._stubs is None:
            self.open()
            assert self._stubs is not None
        return self._stubs

    @property
    def queues(self) -> queues_pb2_grpc.QueuesAsyncStub:
        """``zaqar.v2.Queues`` stub."""
        return self._get().queues

    @property
    def topics(self) -> topics_pb2_grpc.TopicsAsyncStub:
        """``zaqar.v2.Topics`` stub (queue_svc)."""
        return self._get().topics

    @property
    def messages(self) -> messages_pb2_grpc.MessagesAsyncStub | CoalescingMessages:
        """``zaqar.v2.Messages`` stub (or :class:`CoalescingMessages`, which answers alike)."""
        return self._get().messages

    @property
    def messages_direct(self) -> messages_pb2_grpc.MessagesAsyncStub:
        """``zaqar.v2.Messages`` stub, never coalesced (calls that wait: long polling)."""
        return self._get().messages_direct

    @property
    def subscriptions(self) -> notifier_pb2_grpc.SubscriptionsAsyncStub:
        """``zaqar.v2.Subscriptions`` stub."""
        return self._get().subscriptions

    @property
    def notifier(self) -> notifier_pb2_grpc.NotifierInternalAsyncStub:
        """``zaqar.v2.NotifierInternal`` stub (``Watch`` for WebSocket push)."""
        return self._get().notifier

    @property
    def pools(self) -> admin_pb2_grpc.PoolsAsyncStub:
        """``zaqar.v2.Pools`` stub (queue_svc)."""
        return self._get().pools

    @property
    def flavors(self) -> admin_pb2_grpc.FlavorsAsyncStub:
        """``zaqar.v2.Flavors`` stub (queue_svc)."""
        return self._get().flavors

    def store_health(self, service: str) -> admin_pb2_grpc.StoreHealthAsyncStub:
        """``zaqar.v2.StoreHealth`` stub of ``queue_svc``, ``message_svc`` or ``notifier_svc``."""
        return self._get().store_health[service]

    async def serving(self) -> dict[str, bool]:
        """Ask each upstream's standard health service whether it is SERVING."""
        if not self._channels:
            self.open()
        names = list(self._health)
        results = await asyncio.gather(
            *(self._check(name) for name in names), return_exceptions=True
        )
        return {name: result is True for name, result in zip(names, results, strict=True)}

    async def _check(self, service: str) -> bool:
        request = health_pb2.HealthCheckRequest(service=service)
        response = await self._health[service].Check(request, timeout=self.timeout)
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
