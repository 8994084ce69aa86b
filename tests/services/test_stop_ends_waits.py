"""A service that begins to stop ends what waits on it at once, instead of holding it until
the shutdown grace runs out and cutting it off. In message_svc a long-poll claim or listing
gets its answer (nothing, as at its deadline), a new one does not wait, and a streaming pull
ends with UNAVAILABLE (reason STOPPING), its claims released, so that its caller opens it again
on another replica; notifier_svc ends its watches the same way. Real servers over real gRPC,
on SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import orjson
from prometheus_client import REGISTRY
from zaqar_grpc.v2 import (
    common_pb2,
    messages_pb2,
    messages_pb2_grpc,
    notifier_pb2,
    notifier_pb2_grpc,
)

from services.common.config import Settings
from services.common.errors import RpcErrorInfo, decode_rpc_error
from services.message_svc import server as message_server
from services.notifier_svc import server as notifier_server
from tests.services.test_message_svc import CLIENT, PROJECT, Services, _start_pair
from tests.waiting import until

# Only how long a broken test waits before it fails.
WITHIN = 60.0
# The shutdown grace given to stop(): far shorter than the waits, so that a wait still held
# when it runs out is cut off (the failure this guards against), not answered at its deadline.
GRACE = 1.0


async def test_a_stopping_message_svc_answers_its_waits_and_ends_its_streams(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    queues, messages = await _start_pair(settings)
    channel = grpc.aio.insecure_channel(f"{settings.host}:{messages.port}")
    svc = Services(settings, messages_pb2_grpc.MessagesStub(channel),  # type: ignore[no-untyped-call]
                   messages_pb2_grpc.MessagesInternalStub(channel),  # type: ignore[no-untyped-call]
                   None)  # type: ignore[arg-type]
    try:
        # Given a streaming pull holding the one message of queue "held"
        await svc.post({"n": 1}, queue="held")
        stream = svc.messages.StreamingPull(messages_pb2.StreamingPullRequest(
            project=PROJECT, queue="held", max_outstanding=1))
        async with asyncio.timeout(WITHIN):
            first = await stream.read()
        assert [orjson.loads(m.body) for m in first.messages] == [{"n": 1}]
        # And a claim and a listing waiting 20 s on the empty queue "empty"
        claim = asyncio.ensure_future(svc.messages.CreateClaim(messages_pb2.CreateClaimRequest(
            project=PROJECT, queue="empty", wait_seconds=20)))
        listing = asyncio.ensure_future(svc.messages.ListMessages(
            messages_pb2.ListMessagesRequest(project=PROJECT, queue="empty",
                                             client_id=CLIENT, wait_seconds=20)))
        await until(lambda: _long_polls_waiting() >= 2, WITHIN, "two waits")

        # When the service begins to stop, with a grace far shorter than the waits
        async with asyncio.timeout(WITHIN):
            await messages.stop(GRACE)
            # Then the waits were answered as at their deadline: nothing, no error
            assert (await claim).id == ""
            assert list((await listing).messages) == []
            # And the stream ended with UNAVAILABLE, reason STOPPING
            info = await stopping_end(stream)
        assert "Open the stream again" in info.description
    finally:
        await channel.close()

    # And the stream's claim was released: a message_svc started again on the same store finds
    # the message free
    again = await message_server.start(settings)
    try:
        async with grpc.aio.insecure_channel(f"{settings.host}:{again.port}") as channel:
            stats = await messages_pb2_grpc.MessagesStub(channel).GetStats(  # type: ignore[no-untyped-call]
                common_pb2.QueueRef(project=PROJECT, queue="held"))
        assert (stats.claimed, stats.free) == (0, 1)
    finally:
        await again.stop()
        await queues.stop()


async def stopping_end(stream: Any) -> RpcErrorInfo:
    """How a server stream ends: it must be UNAVAILABLE, reason STOPPING."""
    try:
        await stream.read()
    except grpc.aio.AioRpcError as exc:
        info = decode_rpc_error(exc)
    else:
        raise AssertionError("the stream did not end")
    assert (info.code, info.reason) == (grpc.StatusCode.UNAVAILABLE, "STOPPING"), info
    return info


def _long_polls_waiting() -> float:
    """What this process's ``zaqar_long_polls_waiting`` says: the long polls (streaming
    pulls included) of the message_svc started last in it."""
    value = REGISTRY.get_sample_value("zaqar_long_polls_waiting")
    assert value is not None, "no zaqar_long_polls_waiting"
    return value


async def test_a_stopping_notifier_ends_its_watches_at_once(
    make_settings: Callable[..., Settings],
) -> None:
    """A Watch (what message_svc's long polls and the gateway's WebSocket subscriptions hold
    on notifier_svc) ends with UNAVAILABLE, reason STOPPING, when notifier_svc begins to stop,
    for its caller to watch again elsewhere; not when a long grace runs out."""
    settings = make_settings()
    notifier = await notifier_server.start(settings)
    stopped: asyncio.Future[None] | None = None
    try:
        async with grpc.aio.insecure_channel(f"{settings.host}:{notifier.port}") as channel:
            watch = notifier_pb2_grpc.NotifierInternalStub(channel).Watch(  # type: ignore[no-untyped-call]
                notifier_pb2.WatchRequest(project=PROJECT, queue="watched", ttl=3600))
            async with asyncio.timeout(WITHIN):
                await watch.initial_metadata()  # registered
            # When it begins to stop with a grace far longer than this test waits
            stopped = asyncio.ensure_future(notifier.stop(10 * WITHIN))
            # Then the watch ends at once
            async with asyncio.timeout(WITHIN):
                await stopping_end(watch)
                await stopped
    finally:
        if stopped is None:
            await notifier.stop()
