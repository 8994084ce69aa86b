"""gRPC stubs of the three services for tests that call them directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from zaqar_grpc.v2 import messages_pb2_grpc, notifier_pb2_grpc, queues_pb2_grpc

from services.common.config import Settings
from tests.gateway.conftest import running_services

Metadata = tuple[tuple[str, str], ...]


def token(value: str) -> Metadata:
    """Call metadata of a project's caller."""
    return (("x-auth-token", value),)


def service(value: str) -> Metadata:
    """Call metadata of one of our services."""
    return (("x-service-token", value),)


@dataclass
class Stubs:
    queues: Any
    messages: Any
    subscriptions: Any
    messages_internal: Any
    notifier_internal: Any
    channels: list[grpc.aio.Channel]

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


def stubs(settings: Settings) -> Stubs:
    channels = {name: grpc.aio.insecure_channel(settings.target(name))
                for name in ("queue", "message", "notifier")}
    return Stubs(
        queues_pb2_grpc.QueuesStub(channels["queue"]),  # type: ignore[no-untyped-call]
        messages_pb2_grpc.MessagesStub(channels["message"]),  # type: ignore[no-untyped-call]
        notifier_pb2_grpc.SubscriptionsStub(channels["notifier"]),  # type: ignore[no-untyped-call]
        messages_pb2_grpc.MessagesInternalStub(channels["message"]),  # type: ignore[no-untyped-call]
        notifier_pb2_grpc.NotifierInternalStub(channels["notifier"]),  # type: ignore[no-untyped-call]
        list(channels.values()),
    )


@asynccontextmanager
async def serving_stubs(settings: Settings) -> AsyncIterator[Stubs]:
    """The three services running with ``settings``, and stubs to call them."""
    async with running_services(settings):
        s = stubs(settings)
        try:
            yield s
        finally:
            await s.close()

