"""Callers balance over replicas on the client side (``open_channel``): a comma-separated list
of replicas becomes gRPC's static list under ``round_robin``; calls reach every replica, and
when one replica stops the calls go on through the others.

Two real message_svc processes' servers (in-process) share one real redis-server store and
one queue_svc; a caller's channel names both. A replica whose calls all fail is left out
(gRPC's outlier detection), except on channels opened with ``eject_hung=False``: two real
gRPC health servers (in-process) answer, and cancelled streams are the failures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from zaqar_grpc.v2 import common_pb2, messages_pb2, messages_pb2_grpc

from services.common.config import ConfigurationError, Settings
from services.common.grpc_server import channel_target, open_channel
from services.message_svc import server as message_server
from services.queue_svc import server as queue_server
from tests.servers import ServerProcess

CLIENT = "3381af92-2b9e-11e3-b191-71861300734c"


@pytest.mark.parametrize(
    ("configured", "target"),
    [
        ("127.0.0.1:50062", "127.0.0.1:50062"),
        ("dns:///message-svc.zaqar.svc:50062", "dns:///message-svc.zaqar.svc:50062"),
        ("10.0.0.1:1,10.0.0.2:2", "ipv4:10.0.0.1:1,10.0.0.2:2"),
        (" 10.0.0.1:1 , 10.0.0.2:2 ", "ipv4:10.0.0.1:1,10.0.0.2:2"),
        ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),
        ("10.0.0.1:1,", "10.0.0.1:1"),
    ],
)
def test_channel_targets(configured: str, target: str) -> None:
    assert channel_target(configured) == target


@pytest.mark.parametrize("configured", ["a.example:1,b.example:2", "10.0.0.1:1,[::1]:2"])
def test_a_list_of_replicas_needs_ip_addresses_of_one_kind(configured: str) -> None:
    with pytest.raises(ConfigurationError, match="target"):
        channel_target(configured)


async def test_calls_go_on_through_the_other_replica(
    make_settings: Callable[..., Settings], redis_server: ServerProcess
) -> None:
    store = f"redis://127.0.0.1:{redis_server.port}/3?prefix=replicas"
    base = make_settings(message_store=store, queue_store=store + "q")
    queues = await queue_server.start(base)
    first = await message_server.start(base)
    second = await message_server.start(dataclasses.replace(base, message_port=0))
    replicas = f"127.0.0.1:{first.port},127.0.0.1:{second.port}"
    channel = open_channel(replicas, None)
    stub = messages_pb2_grpc.MessagesStub(channel)
    ref = common_pb2.QueueRef(project="p", queue="replicated")
    stopped = False
    try:
        # Given messages posted through a channel that names both replicas
        for n in range(10):
            await stub.PostMessages(messages_pb2.PostMessagesRequest(
                project="p", queue="replicated", client_id=CLIENT,
                messages=[messages_pb2.NewMessage(body=str(n).encode(), ttl=300)],
            ), timeout=10)
        # Then round robin has opened a connection to each
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        # When one replica stops
        await first.stop()
        stopped = True
        # Then every call goes on through the other, and sees every message
        for _ in range(10):
            stats = await stub.GetStats(ref, timeout=10)
            assert stats.total == 10
    finally:
        await channel.close()
        await second.stop()
        if not stopped:
            await first.stop()
        await queues.stop()


class _Served(grpc.aio.ServerInterceptor):
    """Notes the name of the server each ``Check`` reached."""

    def __init__(self, name: str, served: list[str]) -> None:
        self._name = name
        self._served = served

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if handler_call_details.method.endswith("/Check"):
            self._served.append(self._name)
        return await continuation(handler_call_details)


async def test_cancelled_streams_leave_a_replica_out_only_on_a_channel_that_ejects() -> None:
    served: list[str] = []
    servers = []
    for name in ("a", "b"):
        server = grpc.aio.server(interceptors=[_Served(name, served)])
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        servers.append((server, server.add_insecure_port("127.0.0.1:0")))
        await server.start()
    target = ",".join(f"127.0.0.1:{port}" for _, port in servers)
    ejecting = open_channel(target, None)
    keeping = open_channel(target, None, eject_hung=False)
    request = health_pb2.HealthCheckRequest()
    stop = asyncio.Event()

    async def cancel_streams(channel: grpc.aio.Channel) -> None:
        # A WebSocket subscriber's Watch that ends when it leaves: gRPC counts a failure
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            calls = [stub.Watch(request) for _ in range(4)]
            for call in calls:
                await call.read()
                call.cancel()
            await asyncio.sleep(0.01)

    async def reached(channel: grpc.aio.Channel) -> set[str]:
        """The servers that 6 calls in a row reached."""
        served.clear()
        for _ in range(6):
            await health_pb2_grpc.HealthStub(channel).Check(request, timeout=10)
        return set(served)

    try:
        # Given both replicas reached in turn by each channel
        assert await reached(ejecting) == await reached(keeping) == {"a", "b"}
        # When nearly every call through each channel is a stream the caller cancels
        churn = [asyncio.create_task(cancel_streams(c)) for c in (ejecting, keeping)]
        # Then the channel that ejects leaves one replica out at its next look (every 5 s)
        deadline = time.monotonic() + 60
        while len(await reached(ejecting)) == 2:
            assert time.monotonic() < deadline, "no replica was left out within 60 s"
            await asyncio.sleep(1)
        # And the other still reaches both
        assert await reached(keeping) == {"a", "b"}
        stop.set()
        await asyncio.gather(*churn)
    finally:
        stop.set()
        for channel in (ejecting, keeping):
            await channel.close()
        for server, _ in servers:
            await server.stop(0)
