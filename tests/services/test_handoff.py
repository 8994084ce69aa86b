"""message_svc's hand-off to notifier_svc over real gRPC, against a recording
NotifierInternal server: bursts of posts share calls, nothing offered is lost, and queues
nobody listens to are skipped until notifier_svc says otherwise."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from zaqar_grpc.v2 import notifier_pb2, notifier_pb2_grpc

from services.common.grpc_server import create_server
from services.common.request_bytes import Receiving
from services.message_svc.handoff import Handoff
from services.message_svc.storage.base import NewMessage
from tests.servers import free_port


@dataclass
class Recorder(notifier_pb2_grpc.NotifierInternalServicer):
    """Records every NotifyMany call; answers "listened" for queues in ``listened``."""

    listened: set[str] = field(default_factory=set)
    calls: list[tuple[float, notifier_pb2.NotifyManyRequest]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # Queues whose deliveries "cannot be stored" (their pool is down), for this many calls.
    failing: dict[str, int] = field(default_factory=dict)

    async def NotifyMany(
        self, request: notifier_pb2.NotifyManyRequest, context: grpc.aio.ServicerContext
    ) -> notifier_pb2.NotifyManyResponse:
        failed = [self.failing.get(b.queue, 0) > 0 for b in request.batches]
        for queue in {b.queue for b in request.batches}:
            if self.failing.get(queue, 0) > 0:
                self.failing[queue] -= 1
        kept = notifier_pb2.NotifyManyRequest(
            batches=[b for b, f in zip(request.batches, failed, strict=True) if not f])
        self.calls.append((time.monotonic(), kept))
        self.arrived.set()
        return notifier_pb2.NotifyManyResponse(
            listened=[b.queue in self.listened for b in request.batches], failed=failed,
        )

    def bodies(self) -> list[bytes]:
        return [m.body for _, call in self.calls for b in call.batches for m in b.messages]


@pytest.fixture
async def notifier() -> AsyncIterator[tuple[Recorder, str]]:
    recorder = Recorder(listened={"watched"})
    server, port, _ = create_server(
        [lambda s: notifier_pb2_grpc.add_NotifierInternalServicer_to_server(recorder, s)],
        ["zaqar.v2.NotifierInternal"],
        receiving=Receiving(0), process="test",
    )
    await server.start()
    yield recorder, f"127.0.0.1:{port}"
    await server.stop(0)


def post(handoff: Handoff, queue: str, n: int) -> None:
    handoff.offer("p", queue, [f"id-{n}"], [NewMessage(body=b'{"n":%d}' % n, ttl=60)])


async def settle(recorder: Recorder, count: int, within: float = 10) -> None:
    async with asyncio.timeout(within):
        while len(recorder.bodies()) < count:
            recorder.arrived.clear()
            await recorder.arrived.wait()


async def test_a_burst_of_posts_shares_calls_and_loses_nothing(
    notifier: tuple[Recorder, str],
) -> None:
    recorder, target = notifier
    linger = 2.0
    handoff = Handoff(target, timeout=5, cache_ttl=30, linger=linger)
    try:
        post(handoff, "watched", 0)
        # The first post after a quiet spell goes at once, not after the linger period
        await settle(recorder, 1, within=linger * 0.75)
        # When more posts come while that call is recent
        for n in range(1, 40):
            post(handoff, "watched", n)
            await asyncio.sleep(0)
        await settle(recorder, 40)
        # Then they share one call, made a linger period after the first, in posting order
        assert len(recorder.calls) == 2
        assert recorder.calls[1][0] - recorder.calls[0][0] >= linger / 2
        assert recorder.bodies() == [b'{"n":%d}' % n for n in range(40)]
    finally:
        await handoff.close()


async def test_queues_nobody_listens_to_are_skipped_until_invalidated(
    notifier: tuple[Recorder, str],
) -> None:
    recorder, target = notifier
    handoff = Handoff(target, timeout=5, cache_ttl=30)
    try:
        post(handoff, "quiet", 0)
        await settle(recorder, 1)
        async with asyncio.timeout(10):  # the answer reaches the hand-off after the call
            while True:
                if handoff.skips("p", "quiet"):
                    break
                await asyncio.sleep(0.01)
        # Once notifier_svc answered that nobody listens, posts to the queue are not sent
        post(handoff, "quiet", 1)
        post(handoff, "watched", 2)
        await settle(recorder, 2)
        assert recorder.bodies() == [b'{"n":0}', b'{"n":2}']
        # Until notifier_svc says the queue gained a listener
        recorder.listened.add("quiet")
        handoff.invalidate("p", "quiet")
        post(handoff, "quiet", 3)
        await settle(recorder, 3)
        assert recorder.bodies()[-1] == b'{"n":3}'
    finally:
        await handoff.close()


async def test_posts_notifier_could_not_store_are_handed_over_again_with_their_pool(
    notifier: tuple[Recorder, str],
) -> None:
    recorder, target = notifier
    # Given a queue whose pool's store fails for notifier_svc's first two calls
    recorder.failing["on-down-pool"] = 2
    handoff = Handoff(target, timeout=5, cache_ttl=30)
    try:
        handoff.offer("p", "on-down-pool", ["id-0"], [NewMessage(body=b'{"n":0}', ttl=60)],
                      "redis://pool-a/0")
        handoff.offer("p", "watched", ["id-1"], [NewMessage(body=b'{"n":1}', ttl=60)], "")
        # Then the other queue's post is stored at once, and the failed one is handed over
        # again until it is stored, naming the pool it was stored on
        await settle(recorder, 2, within=30)
        assert sorted(recorder.bodies()) == [b'{"n":0}', b'{"n":1}']
        [stored] = [b for _, call in recorder.calls for b in call.batches
                    if b.queue == "on-down-pool"]
        assert stored.HasField("pool_uri") and stored.pool_uri == "redis://pool-a/0"
        assert recorder.failing["on-down-pool"] == 0
    finally:
        await handoff.close()


async def test_posts_wait_for_an_unreachable_notifier_and_are_then_handed_over() -> None:
    # Given a hand-off to a port where nothing listens yet
    late_port = free_port()
    handoff = Handoff(f"127.0.0.1:{late_port}", timeout=1, cache_ttl=30)
    late = Recorder(listened={"watched"})
    try:
        for n in range(5):
            post(handoff, "watched", n)
        await asyncio.sleep(0.5)
        # When the notifier comes up there, every post is handed over, in order
        server, _, _ = create_server(
            [lambda s: notifier_pb2_grpc.add_NotifierInternalServicer_to_server(late, s)],
            ["zaqar.v2.NotifierInternal"], port=late_port,
            receiving=Receiving(0), process="test",
        )
        await server.start()
        try:
            await settle(late, 5)
            assert late.bodies() == [b'{"n":%d}' % n for n in range(5)]
        finally:
            await server.stop(0)
    finally:
        await handoff.close()


async def test_a_burst_of_large_posts_is_handed_over_in_calls_the_notifier_takes(
    notifier: tuple[Recorder, str],
) -> None:
    """Calls are bounded in bytes as well as in messages: 80 posts of 250 KB (20 MB) went as
    one call, larger than gRPC's message bound (16 MiB), which notifier_svc refused
    RESOURCE_EXHAUSTED every time it was sent again; every later post of the process waited
    behind it, and once the pending bound filled they were dropped. A full call is followed
    at once, not after the linger period."""
    recorder, target = notifier
    linger = 30.0  # far longer than the test may take: only full calls follow each other
    handoff = Handoff(target, timeout=5, cache_ttl=30, linger=linger)
    body = b'"' + b"x" * 250_000 + b'"'
    try:
        for n in range(80):
            handoff.offer("p", "watched", [f"id-{n}"], [NewMessage(body=body, ttl=60)])
        await settle(recorder, 80, within=linger * 2 / 3)
        assert len(recorder.calls) >= 5
        assert max(call.ByteSize() for _, call in recorder.calls) <= 4 * 1024 * 1024 + 64 * 1024
    finally:
        await handoff.close()
