"""Callers balance over replicas on the client side (``open_channel``): a comma-separated list
of replicas becomes gRPC's static list under ``round_robin``; calls reach every replica, and
when one replica stops the calls go on through the others.

Two real message_svc processes' servers (in-process) share one real redis-server store and
one queue_svc; a caller's channel names both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import grpc
import pytest
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
