"""Topics end to end: real processes, real stores, real webhook receivers and real queues.

* A crash during a fan-out (on SQLite, Redis and MongoDB): queue_svc and message_svc in this
  process, notifier_svc as its own process (``zaqar-grpc serve notifier``); a topic
  subscribed by three queues and two webhooks; notifier_svc killed with SIGKILL once the
  fan-out has begun, and started again. Every acknowledged message is in every queue exactly
  once and reached every webhook at least once (the duplicates are printed); a post made
  while notifier_svc is down is refused, never acknowledged and lost.
* Through ``zaqar-grpc up`` on each store, over HTTP: a fan-out of a topic into queues and
  webhooks, with a filter policy, until the topic owes nothing.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import httpx
import orjson
import pytest
from aiohttp import web
from zaqar_grpc.v2 import (
    messages_pb2,
    notifier_pb2,
    notifier_pb2_grpc,
    topics_pb2,
    topics_pb2_grpc,
)

from services.common.config import Settings
from services.message_svc import server as message_server
from services.queue_svc import server as queue_server
from tests.e2e.harness import Stack
from tests.e2e.test_notifications import pending, start_notifier, stop_notifier
from tests.e2e.test_queue_subscribers import listed, wait_listed
from tests.receivers import Hit, Receiver
from tests.servers import ServerProcess, free_port
from tests.stacks import REDIS_CLUSTER, UP_STORES

pytestmark = pytest.mark.e2e

TARGETS = ("fan-a", "fan-b", "fan-c")


def store_overrides(request: pytest.FixtureRequest, store: str) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:10]
    if store == "redis":
        server: ServerProcess = request.getfixturevalue("redis_server")
        return {f"{s}_store": f"redis://127.0.0.1:{server.port}/0?prefix=e2e{s}{unique}"
                for s in ("queue", "message", "notifier")}
    if store == "mongodb":
        server = request.getfixturevalue("mongodb_server")
        return {f"{s}_store": f"mongodb://127.0.0.1:{server.port}/e2e{s}{unique}"
                for s in ("queue", "message", "notifier")}
    if store == REDIS_CLUSTER:
        cluster = request.getfixturevalue("redis_cluster")
        return {f"{s}_store": f"redis+cluster://{cluster.uri_hosts}?prefix=e2e{s}{unique}"
                for s in ("queue", "message", "notifier")}
    return {}


@pytest.fixture(params=UP_STORES)
async def services(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> AsyncIterator[Settings]:
    """queue_svc and message_svc in this process (notifier_svc is the test's to run)."""
    # (deliveries a killed notifier_svc was making are made again after 1 + 2 s, not 1 + 10)
    settings = make_settings(delivery_timeout=1.0, delivery_lease_margin=2.0,
                             **store_overrides(request, request.param))
    running = [await queue_server.start(settings), await message_server.start(settings)]
    try:
        yield settings
    finally:
        for service in reversed(running):
            await service.stop()


async def publish(channel: grpc.aio.Channel, topic: str, *bodies: Any) -> list[str]:
    stub = topics_pb2_grpc.TopicsStub(channel)  # type: ignore[no-untyped-call]
    answer = await stub.PostTopicMessages(topics_pb2.PostTopicMessagesRequest(
        project="p", topic=topic, client_id=str(uuid.uuid4()),
        messages=[messages_pb2.NewMessage(body=orjson.dumps(b)) for b in bodies]), timeout=20)
    return list(answer.ids)


async def publish_when_possible(
    channel: grpc.aio.Channel, topic: str, body: Any, within: float
) -> list[str]:
    """Post until notifier_svc takes it (a client's retry of a refused post)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await publish(channel, topic, body)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            assert time.monotonic() < deadline, "notifier_svc never took a post again"
            await asyncio.sleep(0.2)


async def subscribe_topic(target: str, topic: str, subscriber: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = notifier_pb2_grpc.SubscriptionsStub(channel)  # type: ignore[no-untyped-call]
        await stub.CreateSubscription(notifier_pb2.CreateSubscriptionRequest(
            project="p", topic=topic, subscriber=subscriber))


async def wait_distinct(hook: Receiver, count: int, within: float) -> None:
    """Until ``count`` distinct messages arrived (duplicates do not count)."""
    deadline = time.monotonic() + within
    while len({h.json()["message_id"] for h in hook.hits}) < count:
        hook.arrived.clear()
        left = deadline - time.monotonic()
        assert left > 0, f"{len(hook.hits)} requests arrived, expected {count} messages"
        try:
            await asyncio.wait_for(hook.arrived.wait(), left)
        except TimeoutError:
            pass


class SlowReceiver(Receiver):
    """A webhook that takes a moment to answer what it got, so that a crash finds deliveries
    received and not yet answered (they are made again: the duplicates)."""

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(Hit(time.monotonic(), request.path, dict(request.headers),
                             await request.read()))
        self.arrived.set()
        await asyncio.sleep(0.05)
        return web.Response(status=204)


@pytest.fixture
async def slow_hooks() -> AsyncIterator[list[SlowReceiver]]:
    hooks, runners = [SlowReceiver(free_port()), SlowReceiver(free_port())], []
    for hook in hooks:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", hook.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", hook.port).start()
        runners.append(runner)
    yield hooks
    for runner in runners:
        await runner.cleanup()


@pytest.mark.timeout(300)  # notifier_svc started, killed and started again, 40 deliveries each
async def test_sigkill_of_notifier_svc_during_a_topic_fan_out(
    services: Settings, slow_hooks: list[SlowReceiver]
) -> None:
    settings, n, hooks = services, 40, slow_hooks
    notifier = start_notifier(settings)
    try:
        # Given a topic subscribed by three queues and two webhooks
        target = settings.target("notifier")
        for name in TARGETS:
            await subscribe_topic(target, "news", f"queue://{name}")
        for hook in hooks:
            await subscribe_topic(target, "news", hook.url())
        async with grpc.aio.insecure_channel(settings.target("queue")) as queues, \
                grpc.aio.insecure_channel(settings.target("message")) as messages:
            # When half the messages are posted in one request (acknowledged once their 100
            # deliveries are stored), and notifier_svc is killed once the fan-out has begun
            # (the webhooks answer 50 ms after a request arrived: some are under way then)
            first = list(range(n // 2))
            ids = dict(zip(await publish(queues, "news", *({"n": i} for i in first)), first,
                           strict=True))
            await hooks[0].wait_for(2, within=60)
            notifier.send_signal(signal.SIGKILL)
            notifier.wait()
            assert notifier.stdout is not None
            notifier.stdout.close()
            # Then a post while it is down is refused: never acknowledged, so never owed
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await publish(queues, "news", {"n": "refused"})
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            # When it is started again and the other half is posted
            notifier = start_notifier(settings)
            for i in range(n // 2, n):
                (mid,) = await publish_when_possible(queues, "news", {"n": i}, within=60)
                ids[mid] = i
            # Then every target queue holds every message exactly once
            for name in TARGETS:
                found = await wait_listed(messages, name, n, within=90)
                counts = Counter(orjson.loads(m.body)["n"] for m in found)
                assert sorted(counts) == list(range(n)), name
                assert set(counts.values()) == {1}, f"{name}: {counts}"
            # And every webhook got every message, at least once, with its id
            for hook in hooks:
                await wait_distinct(hook, n, within=90)
                got = Counter(h.json()["message_id"] for h in hook.hits)
                assert set(got) == set(ids)
                assert all(ids[h.json()["message_id"]] == h.json()["body"]["n"]
                           for h in hook.hits)
            duplicates = [len(h.hits) - n for h in hooks]
            print(f"topic fan-out of {n} messages across a SIGKILL of notifier_svc: duplicates "
                  f"per queue {[0] * len(TARGETS)}, per webhook {duplicates}")
            deadline = time.monotonic() + 60
            while await pending(settings):
                assert time.monotonic() < deadline, "deliveries left in the outbox"
                await asyncio.sleep(0.2)
            # And no target queue got anything more meanwhile
            for name in TARGETS:
                assert len(await listed(messages, name)) == n
    finally:
        stop_notifier(notifier)


# Through zaqar-grpc up -------------------------------------------------------------------------


async def test_a_topic_fans_out_into_queues_and_webhooks(
    stack: Stack, project: str, receiver_factory: Callable[..., Awaitable[Receiver]]
) -> None:
    n = 30
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}
    hooks = [await receiver_factory(), await receiver_factory()]
    async with httpx.AsyncClient(base_url=stack.url, headers=headers) as http:
        # Given a topic with two queues and two webhooks subscribed, the second of each
        # taking only the even messages
        even = {"filter_policy": {"even": [True]}}
        subscribers = [("queue://all", {}), ("queue://even", even),
                       (hooks[0].url(), {}), (hooks[1].url(), even)]
        for subscriber, options in subscribers:
            resp = await http.post("/v2/topics/orders/subscriptions",
                                   json={"subscriber": subscriber, "options": options})
            assert resp.status_code == 201, resp.text
        # And a queue of the same name, which must get nothing
        assert (await http.put("/v2/queues/orders")).status_code == 201
        # When n messages are posted, a few per request
        for start in range(0, n, 5):
            resp = await http.post("/v2/topics/orders/messages", json={"messages": [
                {"body": {"n": i, "even": i % 2 == 0}} for i in range(start, start + 5)]})
            assert resp.status_code == 201, resp.text
        # Then each queue holds its messages exactly once
        expected = {"all": list(range(n)), "even": list(range(0, n, 2))}
        for queue, numbers in expected.items():
            bodies = await queue_bodies(http, queue, len(numbers), within=90)
            assert sorted(b["n"] for b in bodies) == numbers, queue
        # And each webhook got its messages
        await wait_distinct(hooks[0], n, within=90)
        await wait_distinct(hooks[1], n // 2, within=90)
        assert {h.json()["body"]["n"] for h in hooks[1].hits} == set(range(0, n, 2))
        # And the topic owes nothing once all is delivered; the queue namesake is empty
        deadline = time.monotonic() + 60
        while (await http.get("/v2/topics/orders/stats")).json()["messages"]["total"]:
            assert time.monotonic() < deadline, "deliveries left in the outbox"
            await asyncio.sleep(0.2)
        listed_queue = await http.get("/v2/queues/orders/messages?echo=true")
        assert listed_queue.json() == {"messages": [], "links": []}


async def queue_bodies(
    http: httpx.AsyncClient, queue: str, count: int, within: float
) -> list[Any]:
    deadline = time.monotonic() + within
    while True:
        bodies: list[Any] = []
        href = f"/v2/queues/{queue}/messages?echo=true&include_claimed=true&limit=20"
        while True:
            page = (await http.get(href)).json()
            if not page["messages"]:
                break
            bodies += [m["body"] for m in page["messages"]]
            href = page["links"][0]["href"]
        if len(bodies) >= count:
            return bodies
        assert time.monotonic() < deadline, f"{queue} holds {len(bodies)} of {count}"
        await asyncio.sleep(0.2)
