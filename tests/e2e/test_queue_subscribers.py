"""Queue subscribers end to end: queue_svc and message_svc in this process, notifier_svc as
its own process (``zaqar-grpc serve notifier``), real queues and real HTTP receivers.

* A fan-out: one queue subscribed by three queues and two webhooks, notifier_svc killed with
  SIGKILL in the middle of the posts and started again. Every message is in every target
  queue exactly once (PostOnce keyed by the delivery), and every webhook got every message at
  least once (the duplicates a webhook got are printed).
* The rules: a loop of queue subscribers is refused, a missing target is created by the first
  delivery, the ttl is capped by the target's ``_default_message_ttl``.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import orjson
import pytest
from zaqar_grpc.v2 import (
    common_pb2,
    messages_pb2,
    messages_pb2_grpc,
    notifier_pb2,
    notifier_pb2_grpc,
    queues_pb2,
    queues_pb2_grpc,
)

from services.common.config import Settings
from services.message_svc import server as message_server
from services.queue_svc import server as queue_server
from tests.e2e.test_notifications import (
    Receiver,
    pending,
    start_notifier,
    stop_notifier,
    subscribe,
)

pytestmark = pytest.mark.e2e

TARGETS = ("fan-a", "fan-b", "fan-c")


@pytest.fixture
async def services(make_settings: Callable[..., Settings]) -> AsyncIterator[Settings]:
    settings = make_settings(delivery_timeout=1.0)
    running = [await queue_server.start(settings), await message_server.start(settings)]
    try:
        yield settings
    finally:
        for service in reversed(running):
            await service.stop()


async def post(channel: grpc.aio.Channel, queue: str, *bodies: Any, ttl: int = 3600) -> None:
    stub = messages_pb2_grpc.MessagesStub(channel)  # type: ignore[no-untyped-call]
    await stub.PostMessages(messages_pb2.PostMessagesRequest(
        project="p", queue=queue, client_id=str(uuid.uuid4()),
        messages=[messages_pb2.NewMessage(body=orjson.dumps(b), ttl=ttl) for b in bodies]))


async def listed(channel: grpc.aio.Channel, queue: str) -> list[messages_pb2.Message]:
    stub = messages_pb2_grpc.MessagesStub(channel)  # type: ignore[no-untyped-call]
    out: list[Any] = []
    marker = ""
    while True:
        page = await stub.ListMessages(messages_pb2.ListMessagesRequest(
            project="p", queue=queue, client_id=str(uuid.uuid4()), limit=20, marker=marker,
            echo=True, include_claimed=True))
        if not page.messages:
            return out
        out += page.messages
        marker = page.next_marker


async def wait_listed(
    channel: grpc.aio.Channel, queue: str, count: int, within: float
) -> list[Any]:
    deadline = time.monotonic() + within
    while True:
        found = await listed(channel, queue)
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{queue} holds {len(found)} of {count}"
        await asyncio.sleep(0.2)


async def test_sigkill_of_notifier_svc_in_a_fan_out_duplicates_no_queue_message(
    services: Settings,
) -> None:
    settings, n = services, 40
    hooks = [Receiver(), Receiver()]
    for hook in hooks:
        await hook.start()
    notifier = start_notifier(settings)
    try:
        # Given a queue subscribed by three queues and two webhooks
        target = settings.target("notifier")
        for name in TARGETS:
            await subscribe(target, "p", "src", f"queue://{name}")
        for hook in hooks:
            await subscribe(target, "p", "src", f"http://127.0.0.1:{hook.port}/hook")
        async with grpc.aio.insecure_channel(settings.target("message")) as channel:
            # When n messages are posted, notifier_svc being killed once fan-out has begun
            for i in range(n // 2):
                await post(channel, "src", {"n": i})
            await wait_listed(channel, TARGETS[0], 1, within=20)
            notifier.send_signal(signal.SIGKILL)
            notifier.wait()
            assert notifier.stdout is not None
            notifier.stdout.close()
            notifier = start_notifier(settings)
            for i in range(n // 2, n):
                await post(channel, "src", {"n": i})
            # Then every target queue holds every message exactly once
            for name in TARGETS:
                found = await wait_listed(channel, name, n, within=40)
                counts = Counter(orjson.loads(m.body)["n"] for m in found)
                assert sorted(counts) == list(range(n)), name
                assert set(counts.values()) == {1}, f"{name}: {counts}"
            # And every webhook got every message, at least once
            for hook in hooks:
                await hook.wait_for(n, within=20)
                got = Counter(b["n"] for b in hook.bodies)
                assert sorted(got) == list(range(n))
            duplicates = [len(h.bodies) - n for h in hooks]
            print(f"fan-out of {n} messages across a SIGKILL: duplicates per queue "
                  f"{[0] * len(TARGETS)}, per webhook {duplicates}")
            deadline = time.monotonic() + 20
            while await pending(settings):
                assert time.monotonic() < deadline, "deliveries left in the outbox"
                await asyncio.sleep(0.2)
            # And no target queue got anything more meanwhile
            for name in TARGETS:
                assert len(await listed(channel, name)) == n
    finally:
        stop_notifier(notifier)
        for hook in hooks:
            await hook.stop()


async def test_queue_subscriber_rules(services: Settings) -> None:
    settings = services
    notifier = start_notifier(settings)
    try:
        target = settings.target("notifier")
        # A queue subscribing itself, or closing a loop, is refused
        with pytest.raises(grpc.aio.AioRpcError) as own:
            await subscribe(target, "p", "a", "queue://a")
        assert own.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await subscribe(target, "p", "a", "queue://b")
        await subscribe(target, "p", "b", "queue://c")
        with pytest.raises(grpc.aio.AioRpcError) as loop:
            await subscribe(target, "p", "c", "queue://a")
        assert loop.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "loop" in (loop.value.details() or "")
        # A bad queue name is refused
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await subscribe(target, "p", "a", "queue://no/such")
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        async with grpc.aio.insecure_channel(settings.target("queue")) as queues:
            stub = queues_pb2_grpc.QueuesStub(queues)  # type: ignore[no-untyped-call]
            await stub.CreateQueue(queues_pb2.CreateQueueRequest(
                project="p", queue="short", metadata=b'{"_default_message_ttl": 120}'))
        await subscribe(target, "p", "a", "queue://short")
        async with grpc.aio.insecure_channel(settings.target("message")) as channel:
            await post(channel, "a", {"n": 1}, ttl=600)
            # The chain a -> b -> c delivers into queues nobody created (created by the post)
            for name in ("b", "c"):
                (message,) = await wait_listed(channel, name, 1, within=20)
                assert orjson.loads(message.body) == {"n": 1}
                assert message.ttl == 600
            # The ttl is capped by the target's _default_message_ttl
            (short,) = await wait_listed(channel, "short", 1, within=20)
            assert short.ttl == 120
        async with grpc.aio.insecure_channel(target) as channel:
            subs = notifier_pb2_grpc.SubscriptionsStub(channel)  # type: ignore[no-untyped-call]
            page = await subs.ListSubscriptions(
                notifier_pb2.ListSubscriptionsRequest(project="p", queue="a"))
            assert sorted(s.subscriber for s in page.subscriptions) == [
                "queue://b", "queue://short"]
    finally:
        stop_notifier(notifier)


async def test_a_hand_over_made_twice_puts_each_message_in_the_target_once(
    services: Settings,
) -> None:
    """message_svc hands its messages over again when the answer of the first hand-over was
    lost (notifier_svc killed once it had stored the deliveries): the same messages then come
    in two hand-overs, as two sets of deliveries."""
    settings = services
    notifier = start_notifier(settings)
    try:
        target = settings.target("notifier")
        await subscribe(target, "p", "twice", "queue://twice-copy")
        messages = [common_pb2.Message(id=f"m{i}", body=orjson.dumps({"n": i}), ttl=600)
                    for i in range(3)]
        request = notifier_pb2.NotifyManyRequest(batches=[notifier_pb2.NotifyRequest(
            project="p", queue="twice", messages=messages, accepted_at=time.time())])
        async with grpc.aio.insecure_channel(target) as channel:
            internal = notifier_pb2_grpc.NotifierInternalStub(channel)  # type: ignore[no-untyped-call]
            for _ in range(2):
                await internal.NotifyMany(request, timeout=10)
        # Every delivery made (the outbox empty), each message is in the target once
        deadline = time.monotonic() + 20
        while await pending(settings):
            assert time.monotonic() < deadline, "deliveries left in the outbox"
            await asyncio.sleep(0.1)
        async with grpc.aio.insecure_channel(settings.target("message")) as channel:
            found = await listed(channel, "twice-copy")
        assert sorted(orjson.loads(m.body)["n"] for m in found) == [0, 1, 2]
    finally:
        stop_notifier(notifier)
