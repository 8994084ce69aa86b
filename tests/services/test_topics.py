"""``zaqar.v2.Topics`` over gRPC against real services on SQLite, Redis and MongoDB stores: a
post is answered only once its deliveries are in the outbox, nothing is stored when
notifier_svc is away, a topic's ``_retry_policy`` drives its deliveries, and the gRPC refusals.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import orjson
import pytest
from zaqar_grpc.v2 import messages_pb2, notifier_pb2, queues_pb2, topics_pb2, topics_pb2_grpc

from services.common.config import Settings
from services.common.errors import RpcErrorInfo, decode_rpc_error
from services.message_svc import server as message_server
from services.notifier_svc import server as notifier_server
from services.notifier_svc.storage.registry import open_notifier_store
from services.queue_svc import server as queue_server
from tests.gateway.conftest import running_services
from tests.keystone import Keystone
from tests.receivers import Receiver
from tests.servers import ServerProcess
from tests.services._grpc import Stubs, service, stubs, token

Code = grpc.StatusCode
PROJECT = "p-topics"
DEAD_HOOK = "http://127.0.0.1:9/hook"
SLOW_RETRIES = {"retries_with_no_delay": 0, "minimum_delay_retries": 50, "minimum_delay": 600,
                "maximum_delay": 610}


def store_overrides(request: pytest.FixtureRequest, store: str) -> dict[str, Any]:
    """Store settings of every service on ``store`` (names of the test's own)."""
    unique = uuid.uuid4().hex[:10]
    if store == "redis":
        server: ServerProcess = request.getfixturevalue("redis_server")
        return {f"{s}_store": f"redis://127.0.0.1:{server.port}/0?prefix={s}{unique}"
                for s in ("queue", "message", "notifier")}
    if store == "mongodb":
        server = request.getfixturevalue("mongodb_server")
        return {f"{s}_store": f"mongodb://127.0.0.1:{server.port}/{s}{unique}"
                for s in ("queue", "message", "notifier")}
    return {}


@pytest.fixture(params=["sqlite", "redis", "mongodb"])
def store_settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Settings:
    return make_settings(delivery_timeout=2.0, **store_overrides(request, request.param))


@pytest.fixture
async def stack(store_settings: Settings) -> AsyncIterator[tuple[Settings, Stubs, Any]]:
    """The three services in-process, stubs, and a ``zaqar.v2.Topics`` stub."""
    async with running_services(store_settings) as settings:
        s = stubs(settings)
        topics = topics_pb2_grpc.TopicsStub(s.channels[0])  # type: ignore[no-untyped-call]
        try:
            yield settings, s, topics
        finally:
            await s.close()


async def rpc_error(call: Awaitable[Any]) -> RpcErrorInfo:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return decode_rpc_error(caught.value)


async def pending(settings: Settings) -> int:
    """Deliveries in notifier_svc's store, read through a connection of the test's own."""
    store = await open_notifier_store(settings.store_uri("notifier"))
    try:
        return await store.count_deliveries()
    finally:
        await store.close()


def post_request(topic: str, *bodies: Any) -> topics_pb2.PostTopicMessagesRequest:
    return topics_pb2.PostTopicMessagesRequest(
        project=PROJECT, topic=topic, client_id=str(uuid.uuid4()),
        messages=[messages_pb2.NewMessage(body=orjson.dumps(b)) for b in bodies],
    )


async def subscribe(s: Stubs, topic: str, subscriber: str, **options: Any) -> str:
    created = await s.subscriptions.CreateSubscription(notifier_pb2.CreateSubscriptionRequest(
        project=PROJECT, topic=topic, subscriber=subscriber, options=orjson.dumps(options)))
    return str(created.subscription_id)


async def test_a_post_is_answered_once_its_deliveries_are_stored(
    stack: tuple[Settings, Stubs, Any],
) -> None:
    settings, s, topics = stack
    topic = "durable"
    # Given three subscribers nobody answers, retried far apart
    for n in range(3):
        await subscribe(s, topic, f"{DEAD_HOOK}/{n}", _retry_policy=SLOW_RETRIES)
    # When four messages are posted
    answer = await topics.PostTopicMessages(post_request(topic, 1, 2, 3, 4))
    # Then, as soon as the answer is in, the store holds every delivery (3 x 4)
    assert len(answer.ids) == 4 and len(set(answer.ids)) == 4
    assert await pending(settings) == 12
    stats = await topics.GetTopicStats(topics_pb2.TopicRequest(project=PROJECT, topic=topic))
    assert (stats.claimed, stats.free, stats.total) == (0, 12, 12)


async def test_without_notifier_svc_a_post_is_refused_and_stores_nothing(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(**store_overrides(request, "sqlite"))
    queue_svc = await queue_server.start(settings)
    message_svc = await message_server.start(settings)
    notifier_svc = await notifier_server.start(settings)
    s = stubs(settings)
    topics = topics_pb2_grpc.TopicsStub(s.channels[0])  # type: ignore[no-untyped-call]
    try:
        await subscribe(s, "t", DEAD_HOOK, _retry_policy=SLOW_RETRIES)
        # When notifier_svc is away, a post is UNAVAILABLE: nothing was acknowledged
        await notifier_svc.stop()
        info = await rpc_error(topics.PostTopicMessages(post_request("t", 1), timeout=20))
        assert info.code == Code.UNAVAILABLE
        assert "could not be delivered" in info.description
        # And once it is back, nothing of that post is in the outbox; new posts go through
        # (once queue_svc's channel has reconnected: until then they are refused as well)
        notifier_svc = await notifier_server.start(settings)
        assert await pending(settings) == 0
        deadline = time.monotonic() + 60
        while True:
            try:
                await topics.PostTopicMessages(post_request("t", 2), timeout=20)
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == Code.UNAVAILABLE
                assert time.monotonic() < deadline, "notifier_svc never took a post again"
                await asyncio.sleep(0.2)
        assert await pending(settings) == 1
    finally:
        await s.close()
        await notifier_svc.stop()
        await message_svc.stop()
        await queue_svc.stop()


async def test_the_topics_retry_policy_drives_its_deliveries(
    stack: tuple[Settings, Stubs, Any],
    receiver_factory: Callable[..., Awaitable[Receiver]],
) -> None:
    settings, s, topics = stack
    failing = await receiver_factory(fail=1000)
    # Given a topic whose policy waits 600 s after a failure, and a subscriber that fails
    await topics.CreateTopic(topics_pb2.CreateTopicRequest(
        project=PROJECT, topic="retried", metadata=orjson.dumps({"_retry_policy": SLOW_RETRIES})))
    await subscribe(s, "retried", failing.url())
    # When a message is posted and its first attempt fails
    await topics.PostTopicMessages(post_request("retried", "x"))
    await failing.wait_for(1, within=30)
    # Then it is due again in about 600 s, not at once (Zaqar's default retries at once)
    store = await open_notifier_store(settings.store_uri("notifier"))
    try:
        deadline = time.monotonic() + 30
        while True:
            due = await store.next_due()
            if due is not None and due > time.time() + 300:
                break
            assert time.monotonic() < deadline, f"not rescheduled by the policy: due {due}"
            await asyncio.sleep(0.1)
    finally:
        await store.close()
    assert len(failing.hits) == 1


async def test_grpc_refusals(stack: tuple[Settings, Stubs, Any]) -> None:
    _, s, topics = stack
    ref = topics_pb2.TopicRequest(project=PROJECT, topic="absent")
    info = await rpc_error(topics.GetTopic(ref))
    assert (info.code, info.reason, info.title) == (Code.NOT_FOUND, "TOPIC_NOT_FOUND", "Not found")
    info = await rpc_error(topics.UpdateTopic(topics_pb2.UpdateTopicRequest(
        project=PROJECT, topic="absent")))
    assert info.code == Code.NOT_FOUND
    for bad in (topics_pb2.TopicRequest(project=PROJECT, topic="bad/name"),
                topics_pb2.TopicRequest(project="", topic="t"),
                topics_pb2.TopicRequest(project=PROJECT, topic="")):
        info = await rpc_error(topics.GetTopic(bad))
        assert (info.code, info.reason) == (Code.INVALID_ARGUMENT, "INVALID_TOPIC_NAME")
    info = await rpc_error(topics.ListTopics(topics_pb2.ListTopicsRequest(project="")))
    assert info.reason == "INVALID_TOPIC_NAME"
    info = await rpc_error(topics.PostTopicMessages(topics_pb2.PostTopicMessagesRequest(
        project=PROJECT, topic="t",
        messages=[messages_pb2.NewMessage(body=b"{not json")])))
    assert (info.code, info.description) == (Code.INVALID_ARGUMENT,
                                             "Message body must be valid JSON.")
    # A subscription names a queue or a topic, not both (nor neither)
    info = await rpc_error(s.subscriptions.CreateSubscription(
        notifier_pb2.CreateSubscriptionRequest(project=PROJECT, queue="q", topic="t",
                                               subscriber=DEAD_HOOK)))
    assert (info.code, info.description) == (
        Code.INVALID_ARGUMENT, "A subscription names a queue or a topic, not both.")
    info = await rpc_error(s.subscriptions.ListSubscriptions(
        notifier_pb2.ListSubscriptionsRequest(project=PROJECT)))
    assert info.reason == "INVALID_QUEUE_NAME"
    # A topic's name cannot smuggle a queue's key, nor a queue name a topic's
    info = await rpc_error(s.subscriptions.ListSubscriptions(
        notifier_pb2.ListSubscriptionsRequest(project=PROJECT, queue="topic/t")))
    assert info.reason == "INVALID_QUEUE_NAME"
    # The internal calls check their topic too
    info = await rpc_error(s.notifier_internal.PublishTopic(notifier_pb2.PublishTopicRequest(
        project=PROJECT, topic="bad/name")))
    assert info.reason == "INVALID_TOPIC_NAME"


async def test_a_topic_and_its_queue_namesake_do_not_share_subscriptions(
    stack: tuple[Settings, Stubs, Any],
) -> None:
    _, s, topics = stack
    on_topic = await subscribe(s, "same", DEAD_HOOK, _retry_policy=SLOW_RETRIES)
    queue_sub = await s.subscriptions.CreateSubscription(notifier_pb2.CreateSubscriptionRequest(
        project=PROJECT, queue="same", subscriber=DEAD_HOOK))
    assert queue_sub.created and queue_sub.subscription_id != on_topic
    # Deleting the queue removes its subscriptions only
    await s.queues.DeleteQueue(queues_pb2.DeleteQueueRequest(project=PROJECT, queue="same"))
    listed = await s.subscriptions.ListSubscriptions(
        notifier_pb2.ListSubscriptionsRequest(project=PROJECT, topic="same"))
    assert [(x.id, x.source) for x in listed.subscriptions] == [(on_topic, "same")]
    # And a queue post hands nothing to the topic's subscribers
    await s.messages.PostMessages(messages_pb2.PostMessagesRequest(
        project=PROJECT, queue="same", client_id=str(uuid.uuid4()),
        messages=[messages_pb2.NewMessage(body=b"1")]))
    stats = await topics.GetTopicStats(topics_pb2.TopicRequest(project=PROJECT, topic="same"))
    assert stats.total == 0


async def test_keystone_tokens_scope_topics_to_their_project(
    keystone_stack: tuple[Settings, Stubs], keystone: Keystone
) -> None:
    _, s = keystone_stack
    topics = topics_pb2_grpc.TopicsStub(s.channels[0])  # type: ignore[no-untyped-call]
    a, project_a = await keystone.atoken("user-a"), keystone.users["user-a"].project_id
    name = "t-" + uuid.uuid4().hex[:8]
    # Given a topic and a subscription made with A's token, whatever project they name
    created = await topics.CreateTopic(topics_pb2.CreateTopicRequest(
        project="chosen-by-caller", topic=name), metadata=token(a))
    assert created.created
    await s.subscriptions.CreateSubscription(notifier_pb2.CreateSubscriptionRequest(
        project="other", topic=name, subscriber=DEAD_HOOK), metadata=token(a))
    posted = await topics.PostTopicMessages(post_request(name, 1), metadata=token(a))
    assert len(posted.ids) == 1
    # Then they are A's
    listed = await topics.ListTopics(topics_pb2.ListTopicsRequest(), metadata=token(a))
    assert [t.name for t in listed.topics] == [name]
    mine = await topics.ListTopics(topics_pb2.ListTopicsRequest(project=project_a),
                                   metadata=service(await keystone.atoken("zaqar")))
    assert [t.name for t in mine.topics] == [name]
    # And B, even naming A's project, sees and touches nothing of them
    b = await keystone.atoken("user-b")
    info = await rpc_error(topics.GetTopic(
        topics_pb2.TopicRequest(project=project_a, topic=name), metadata=token(b)))
    assert info.code == Code.NOT_FOUND
    subs = await s.subscriptions.ListSubscriptions(notifier_pb2.ListSubscriptionsRequest(
        project=project_a, topic=name), metadata=token(b))
    assert list(subs.subscriptions) == []
    await topics.DeleteTopic(topics_pb2.TopicRequest(project=project_a, topic=name),
                             metadata=token(b))
    got = await topics.GetTopic(topics_pb2.TopicRequest(topic=name),
                                metadata=token(await keystone.atoken("user-a")))
    assert got.name == name
    # And the internal calls behind a post take service tokens only
    for call in (s.notifier_internal.PublishTopic(notifier_pb2.PublishTopicRequest(
                     project=project_a, topic=name), metadata=token(b)),
                 s.notifier_internal.PurgeTopic(notifier_pb2.PurgeTopicSourceRequest(
                     project=project_a, topic=name, subscriptions=True), metadata=token(b))):
        info = await rpc_error(call)
        assert info.code == Code.UNAUTHENTICATED
