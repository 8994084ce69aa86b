"""The gateway's gRPC clients: one reused channel per upstream service, deadlines on every call.

Channels are opened at app startup and closed at shutdown (see ``app.py``). Resources use
``up.queues`` / ``up.messages`` (generated stubs) and pass ``timeout=up.timeout`` on every call.
If the app runs without lifespan events the channels are opened on first use instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from zaqar.v2 import messages_pb2_grpc, queues_pb2_grpc

from services.common.config import Settings
from services.common.grpc_server import open_channel

QUEUES_SERVICE = "zaqar.v2.Queues"
MESSAGES_SERVICE = "zaqar.v2.Messages"


class Upstreams:
    """Channels and stubs of queue_svc and message_svc."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.rpc_timeout
        self._queue_target = settings.target("queue")
        self._message_target = settings.target("message")
        self._channels: list[grpc.aio.Channel] = []
        self._queues: Any = None
        self._messages: Any = None
        self._health: dict[str, Any] = {}

    def open(self) -> None:
        if self._channels:
            return
        queue_channel = open_channel(self._queue_target)
        message_channel = open_channel(self._message_target)
        self._channels = [queue_channel, message_channel]
        self._queues = queues_pb2_grpc.QueuesStub(queue_channel)  # type: ignore[no-untyped-call]
        self._messages = messages_pb2_grpc.MessagesStub(message_channel)  # type: ignore[no-untyped-call]
        self._health = {
            QUEUES_SERVICE: health_pb2_grpc.HealthStub(queue_channel),
            MESSAGES_SERVICE: health_pb2_grpc.HealthStub(message_channel),
        }

    async def close(self) -> None:
        channels, self._channels = self._channels, []
        self._queues = self._messages = None
        self._health = {}
        for channel in channels:
            await channel.close()

    @property
    def queues(self) -> Any:
        """``zaqar.v2.Queues`` stub."""
        if self._queues is None:
            self.open()
        return self._queues

    @property
    def messages(self) -> Any:
        """``zaqar.v2.Messages`` stub."""
        if self._messages is None:
            self.open()
        return self._messages

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
