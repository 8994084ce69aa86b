"""notifier_svc over real gRPC, with real queue_svc and message_svc next to it and real
receivers: an aiohttp webhook server that records what it gets, and an aiosmtpd SMTP server.

Retry tests use second-scale policies and check observed attempt times against the schedule.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY
from zaqar_grpc.v2 import (
    common_pb2,
    messages_pb2,
    messages_pb2_grpc,
    notifier_pb2,
    notifier_pb2_grpc,
    queues_pb2,
    queues_pb2_grpc,
)

from services.common import signing
from services.common.config import Settings
from services.common.errors import RpcErrorInfo, decode_rpc_error
from services.common.grpc_server import Running
from services.common.message_keys import ENVELOPE_MAGIC
from services.message_svc import server as message_server
from services.notifier_svc import retry
from services.notifier_svc import server as notifier_server
from services.notifier_svc.delivery.dispatcher import PER_SUBSCRIBER
from services.notifier_svc.storage.registry import open_notifier_store
from services.notifier_svc.watchers import WatchHub
from services.queue_svc import server as queue_server
from tests.conftest import free_port
from tests.receivers import Receiver
from tests.waiting import until

PROJECT = "notify-project"
# Seconds a retry may come late on a busy machine (it may never come early).
SLACK = 5.0
Code = grpc.StatusCode
RETRY_POLICY_FAST = {
    "retries_with_no_delay": 1, "minimum_delay_retries": 1, "minimum_delay": 1,
    "maximum_delay": 11, "maximum_delay_retries": 1, "retry_backoff_function": "linear",
}


# receivers (webhook ones: tests/receivers.py) -------------------------------------------------


class Mailbox:
    def __init__(self) -> None:
        self.mails: list[Any] = []
        self.arrived = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # aiosmtpd runs its own loop in a thread: hand the mail over to the test's loop.
        self.loop.call_soon_threadsafe(self._add, envelope.content, envelope.rcpt_tos)
        return "250 OK"

    def _add(self, content: bytes, recipients: list[str]) -> None:
        self.mails.append((message_from_bytes(content), recipients))
        self.arrived.set()


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


# services -------------------------------------------------------------------------------------


@dataclass
class Stack:
    settings: Settings
    subs: notifier_pb2_grpc.SubscriptionsStub
    internal: notifier_pb2_grpc.NotifierInternalStub
    messages: messages_pb2_grpc.MessagesStub
    queues: queues_pb2_grpc.QueuesStub

    async def subscribe(self, subscriber: str, queue: str = "q", project: str = PROJECT,
                        ttl: int | None = None, **options: Any) -> str:
        reply = await self.subs.CreateSubscription(notifier_pb2.CreateSubscriptionRequest(
            project=project, queue=queue, subscriber=subscriber, ttl=ttl,
            options=orjson.dumps(options),
        ))
        return str(reply.subscription_id)

    async def post(self, *bodies: Any, queue: str = "q", ttl: int | None = None) -> list[str]:
        reply = await self.messages.PostMessages(messages_pb2.PostMessagesRequest(
            project=PROJECT, queue=queue, client_id=str(uuid.uuid4()),
            messages=[messages_pb2.NewMessage(body=orjson.dumps(b), ttl=ttl) for b in bodies],
        ))
        return list(reply.ids)


@pytest.fixture
async def stack_factory(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    started: list[Running] = []
    channels: list[grpc.aio.Channel] = []

    async def start(**overrides: Any) -> Stack:
        overrides.setdefault("delivery_timeout", 2.0)
        settings = make_settings(**overrides)
        started.append(await queue_server.start(settings))
        started.append(await message_server.start(settings))
        started.append(await notifier_server.start(settings))
        ch = {name: grpc.aio.insecure_channel(settings.target(name))
              for name in ("queue", "message", "notifier")}
        channels.extend(ch.values())
        return Stack(
            settings,
            notifier_pb2_grpc.SubscriptionsStub(ch["notifier"]),  # type: ignore[no-untyped-call]
            notifier_pb2_grpc.NotifierInternalStub(ch["notifier"]),  # type: ignore[no-untyped-call]
            messages_pb2_grpc.MessagesStub(ch["message"]),  # type: ignore[no-untyped-call]
            queues_pb2_grpc.QueuesStub(ch["queue"]),  # type: ignore[no-untyped-call]
        )

    yield start
    for channel in channels:
        await channel.close()
    for running in reversed(started):
        await running.stop()


@pytest.fixture
async def stack(stack_factory: Callable[..., Awaitable[Stack]]) -> Stack:
    return await stack_factory()


async def rpc_error(call: Awaitable[Any]) -> RpcErrorInfo:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return decode_rpc_error(caught.value)


async def pending(settings: Settings, settle: float = 2.0) -> int:
    """Pending deliveries in notifier_svc's store (read through a second connection), once
    it stopped changing or ``settle`` seconds passed with some left."""
    store = await open_notifier_store(settings.store_uri("notifier"))
    try:
        deadline = time.monotonic() + settle
        while True:
            count = await store.count_deliveries()
            if not count or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.05)
    finally:
        await store.close()


# the retry schedule, against Zaqar's formulas ------------------------------------------------


def test_default_schedule_is_zaqars() -> None:
    # 3 immediate, 3 at 5 s, linear backoff 5..25 by 5, 3 at 30 s
    assert retry.schedule(retry.DEFAULT) == [
        0, 0, 0, 5, 5, 5, 5, 10, 15, 20, 25, 30, 30, 30
    ]


@pytest.mark.parametrize(
    ("function", "low", "high", "expected"),
    [
        ("linear", 5, 30, [5, 10, 15, 20, 25]),
        ("linear", 1, 11, [1, 6]),
        ("arithmetic", 5, 30, [5, 7, 12, 20, 30]),
        ("arithmetic", 2, 60, [2, 3, 5, 8, 12, 17, 24, 31, 39, 49, 59]),
        ("geometric", 5, 30, [5, 7, 12, 19, 30]),
        ("geometric", 2, 60, [2, 2, 3, 5, 7, 10, 15, 21, 30, 42, 59]),
        ("exponential", 5, 30, [5, 7, 12, 19, 30]),
        ("exponential", 1, 11, [1, 10]),
    ],
)
def test_backoff_functions_follow_zaqars_formulas(
    function: str, low: int, high: int, expected: list[int]
) -> None:
    length = retry.backoff_length(function, low, high)
    assert [retry.backoff_delay(function, low, high, i) for i in range(length)] == expected


def test_phases_in_order_and_then_give_up() -> None:
    policy = retry.RetryPolicy(2, 1, 1, 11, 2, "arithmetic")
    assert retry.schedule(policy) == [0, 0, 1, 1, 11, 11, 11]
    assert retry.retry_delay(policy, 7) is None
    # A huge policy costs nothing until asked
    big = retry.RetryPolicy(retries_with_no_delay=10**9)
    assert retry.retry_delay(big, 10**9 - 1) == 0
    assert retry.retry_delay(big, 10**9) == 5


def test_policy_choice_follows_zaqar() -> None:
    own = {"minimum_delay": 1, "maximum_delay": 20}
    queue = {"minimum_delay": 2, "maximum_delay": 40}
    assert retry.effective_policy(own, queue).minimum_delay == 1
    assert retry.effective_policy(None, queue).minimum_delay == 2
    assert retry.effective_policy(own, {**queue, "ignore_subscription_override": True}
                                  ).minimum_delay == 2
    assert retry.effective_policy(None, None) == retry.DEFAULT
    # Stored policies are read leniently: bad keys keep their defaults
    assert retry.effective_policy({"minimum_delay": "x", "retry_backoff_function": "cubic"},
                                  None) == retry.DEFAULT


def test_signature_is_zaqars() -> None:
    text = "/v2/queues/q/subscriptions/1/confirm\\nPUT\\nproj\\n2030-01-01T00:00:00"
    expected = hmac.new(b"k", text.encode(), hashlib.sha256).hexdigest()
    assert signing.signature("k", ["/v2/queues/q/subscriptions/1/confirm"], ["PUT"], "proj",
                             "2030-01-01T00:00:00") == expected
    assert signing.verify("k", expected.upper(), ["/v2/queues/q/subscriptions/1/confirm"],
                          ["PUT"], "proj", "2030-01-01T00:00:00")


# subscriptions: semantics and every 4xx -------------------------------------------------------


async def test_subscription_lifecycle(stack: Stack) -> None:
    # Given a subscription with options
    sid = await stack.subscribe("http://127.0.0.1:9/a", ttl=600, a=1)
    ref = notifier_pb2.SubscriptionRef(project=PROJECT, queue="q", subscription_id=sid)
    got = await stack.subs.GetSubscription(ref)
    assert (got.id, got.source, got.subscriber, got.ttl, got.confirmed) == (
        sid, "q", "http://127.0.0.1:9/a", 600, False
    )
    assert orjson.loads(got.options) == {"a": 1} and got.age == 0
    # The same unconfirmed subscriber again answers the same id, not created
    again = await stack.subs.CreateSubscription(notifier_pb2.CreateSubscriptionRequest(
        project=PROJECT, queue="q", subscriber="http://127.0.0.1:9/a"))
    assert (again.subscription_id, again.created) == (sid, False)
    # Once confirmed, it is a conflict
    await stack.subs.ConfirmSubscription(notifier_pb2.ConfirmSubscriptionRequest(
        project=PROJECT, queue="q", subscription_id=sid, confirmed=True))
    info = await rpc_error(stack.subs.CreateSubscription(notifier_pb2.CreateSubscriptionRequest(
        project=PROJECT, queue="q", subscriber="http://127.0.0.1:9/a")))
    assert (info.code, info.reason, info.title) == (
        Code.ALREADY_EXISTS, "SUBSCRIPTION_ALREADY_EXISTS", "Resource conflict"
    )
    # Update ttl and options; the default ttl is 3600
    await stack.subs.UpdateSubscription(notifier_pb2.UpdateSubscriptionRequest(
        project=PROJECT, queue="q", subscription_id=sid, ttl=120, options=b'{"b": 2}'))
    got = await stack.subs.GetSubscription(ref)
    assert (got.ttl, orjson.loads(got.options), got.confirmed) == (120, {"b": 2}, True)
    other = await stack.subscribe("mailto:ops@example.com")
    listed = await stack.subs.ListSubscriptions(
        notifier_pb2.ListSubscriptionsRequest(project=PROJECT, queue="q"))
    assert [s.id for s in listed.subscriptions] == [sid, other]
    assert listed.subscriptions[1].ttl == 3600 and listed.next_marker == other
    # Delete is idempotent; then it is not found
    await stack.subs.DeleteSubscription(ref)
    await stack.subs.DeleteSubscription(ref)
    info = await rpc_error(stack.subs.GetSubscription(ref))
    assert (info.code, info.reason, info.description) == (
        Code.NOT_FOUND, "SUBSCRIPTION_NOT_FOUND", f"Subscription {sid} does not exist"
    )


async def test_list_pages_with_limit_and_marker(stack: Stack) -> None:
    ids = [await stack.subscribe(f"http://127.0.0.1:9/{i}", queue="paged") for i in range(5)]
    seen: list[str] = []
    marker = ""
    while True:
        page = await stack.subs.ListSubscriptions(notifier_pb2.ListSubscriptionsRequest(
            project=PROJECT, queue="paged", limit=2, marker=marker))
        if not page.subscriptions:
            assert page.next_marker == ""
            break
        seen += [s.id for s in page.subscriptions]
        marker = page.next_marker
    assert seen == ids


BAD_POLICY = "_retry_policy"
INVALID = [
    ({"subscriber": ""}, "Missing parameter subscriber in body."),
    ({"subscriber": "ftp://h/x"}, "The subscriber type of subscription must be supported in "
     "the list ['http', 'https', 'mailto', 'trust+http', 'trust+https', 'queue']."),
    ({"subscriber": "http:///nohost"}, "The subscriber http:///nohost has no host."),
    ({"ttl": 59}, "The TTL for a subscription must be at least 60 seconds long."),
    ({"options": b"[1]"}, "Options must be a dict."),
    ({"options": b"not json"}, "Options must be a dict."),
    ({"options": b'{"_retry_policy": []}'}, "_retry_policy must be a dict."),
    ({"options": b'{"_retry_policy": {"minimum_delay": 5, "maximum_delay": 14}}'},
     "Retry policy: maximum_delay must be at least minimum_delay + 10."),
    ({"options": b'{"_retry_policy": {"retries_with_no_delay": -1}}'},
     "Retry policy: retries_with_no_delay must be a non-negative integer."),
    ({"options": b'{"_retry_policy": {"minimum_delay": 1.5}}'},
     "Retry policy: minimum_delay must be a non-negative integer."),
    ({"options": b'{"_retry_policy": {"retry_backoff_function": "cubic"}}'},
     "retry_backoff_function must be one of: linear, arithmetic, geometric, exponential."),
    ({"options": b'{"_retry_policy": {"ignore_subscription_override": 1}}'},
     "ignore_subscription_override must be a boolean."),
    ({"options": b'{"_retry_policy": {"minimum_delay": 0, "retry_backoff_function": '
                 b'"geometric"}}'},
     "Retry policy: minimum_delay must be at least 1 for the geometric function."),
    ({"options": b'{"post_headers": {"X": 1}}'}, "post_headers must be an object of strings."),
]


@pytest.mark.parametrize(("fields", "description"), INVALID)
async def test_invalid_subscriptions_are_refused(
    stack: Stack, fields: dict[str, Any], description: str
) -> None:
    request = {"project": PROJECT, "queue": "q", "subscriber": "http://h.example/", **fields}
    info = await rpc_error(stack.subs.CreateSubscription(
        notifier_pb2.CreateSubscriptionRequest(**request)))
    assert (info.code, info.reason, info.title, info.description) == (
        Code.INVALID_ARGUMENT, "INVALID_ARGUMENT", "Invalid API request", description
    )


async def test_every_other_4xx(stack: Stack) -> None:
    sid = await stack.subscribe("http://127.0.0.1:9/a")
    await stack.subscribe("http://127.0.0.1:9/b")
    absent = str(uuid.uuid4())
    cases: list[tuple[Awaitable[Any], Code, str, str]] = [
        (stack.subs.ListSubscriptions(notifier_pb2.ListSubscriptionsRequest(
            project=PROJECT, queue="q", limit=0)), Code.INVALID_ARGUMENT, "INVALID_ARGUMENT",
         "Limit must be at least 1 and may not be greater than 20."),
        (stack.subs.ListSubscriptions(notifier_pb2.ListSubscriptionsRequest(
            project=PROJECT, queue="q", limit=21)), Code.INVALID_ARGUMENT, "INVALID_ARGUMENT",
         "Limit must be at least 1 and may not be greater than 20."),
        (stack.subs.GetSubscription(notifier_pb2.SubscriptionRef(
            project=PROJECT, queue="bad name", subscription_id=sid)),
         Code.INVALID_ARGUMENT, "INVALID_QUEUE_NAME",
         "The format of the submitted queue name or project id is not valid."),
        (stack.subs.GetSubscription(notifier_pb2.SubscriptionRef(
            project="other", queue="q", subscription_id=sid)),
         Code.NOT_FOUND, "SUBSCRIPTION_NOT_FOUND", f"Subscription {sid} does not exist"),
        (stack.subs.UpdateSubscription(notifier_pb2.UpdateSubscriptionRequest(
            project=PROJECT, queue="q", subscription_id=sid, subscriber="http://127.0.0.1:9/b")),
         Code.ALREADY_EXISTS, "SUBSCRIPTION_ALREADY_EXISTS",
         "Such subscription already exists. Subscriptions are unique by project + queue + "
         "subscriber URI."),
        (stack.subs.UpdateSubscription(notifier_pb2.UpdateSubscriptionRequest(
            project=PROJECT, queue="q", subscription_id=absent, ttl=100)),
         Code.NOT_FOUND, "SUBSCRIPTION_NOT_FOUND", f"Subscription {absent} does not exist"),
        (stack.subs.UpdateSubscription(notifier_pb2.UpdateSubscriptionRequest(
            project=PROJECT, queue="q", subscription_id=sid)),
         Code.INVALID_ARGUMENT, "INVALID_ARGUMENT", "No subscription to create."),
        (stack.subs.UpdateSubscription(notifier_pb2.UpdateSubscriptionRequest(
            project=PROJECT, queue="q", subscription_id=sid, ttl=10)),
         Code.INVALID_ARGUMENT, "INVALID_ARGUMENT",
         "The TTL for a subscription must be at least 60 seconds long."),
        (stack.subs.UpdateSubscription(notifier_pb2.UpdateSubscriptionRequest(
            project=PROJECT, queue="q", subscription_id=sid, subscriber="gopher://x")),
         Code.INVALID_ARGUMENT, "INVALID_ARGUMENT", INVALID[1][1]),
        (stack.subs.ConfirmSubscription(notifier_pb2.ConfirmSubscriptionRequest(
            project=PROJECT, queue="q", subscription_id=absent, confirmed=True)),
         Code.NOT_FOUND, "SUBSCRIPTION_NOT_FOUND", f"Subscription {absent} does not exist"),
        (stack.internal.Notify(notifier_pb2.NotifyRequest(project="", queue="q")),
         Code.INVALID_ARGUMENT, "INVALID_QUEUE_NAME",
         "The format of the submitted queue name or project id is not valid."),
    ]
    for call, code, reason, description in cases:
        info = await rpc_error(call)
        assert (info.code, info.reason, info.description) == (code, reason, description)


# webhooks -------------------------------------------------------------------------------------


async def test_posted_messages_are_posted_to_webhooks(stack: Stack, receiver: Receiver) -> None:
    # Given a plain webhook and one with a post_data template and extra headers
    await stack.subscribe(receiver.url("/plain"))
    await stack.subscribe(
        receiver.url("/templated"),
        post_data='{"alarm": "$zaqar_message$", "kind": "x"}',
        post_headers={"X-Token": "t0k"},
    )
    # When two messages are posted
    await stack.post({"event": "BackupStarted"}, [1, 2], ttl=300)
    hits = await receiver.wait_for(4)
    # Then each webhook gets each message, shaped as Zaqar's notification
    plain = sorted((h for h in hits if h.path == "/plain"), key=lambda h: h.body)
    assert [h.json() for h in plain] == [
        {"body": [1, 2], "ttl": 300, "Message_Type": "Notification", "queue_name": "q"},
        {"body": {"event": "BackupStarted"}, "ttl": 300, "Message_Type": "Notification",
         "queue_name": "q"},
    ]
    assert plain[0].headers["Content-Type"] == "application/json"
    templated = [h for h in hits if h.path == "/templated"]
    assert len(templated) == 2
    for hit in templated:
        document = hit.json()
        assert document["kind"] == "x" and document["alarm"]["Message_Type"] == "Notification"
        assert hit.headers["X-Token"] == "t0k"
    # And nothing is left pending
    assert await pending(stack.settings) == 0


async def test_failed_deliveries_follow_the_retry_policy(stack: Stack, receiver: Receiver) -> None:
    # Given a webhook that fails three times, then succeeds
    receiver.fail = 3
    await stack.subscribe(receiver.url(), _retry_policy=RETRY_POLICY_FAST)
    # When a message is posted
    await stack.post("retry me")
    hits = await receiver.wait_for(4, within=60)
    # Then the attempts follow the schedule: at once, 1 immediate retry, 1 s, then 1 s
    # (backoff). A retry is never early; on a busy machine it may be late, so the upper
    # bounds are loose (the schedule itself is tested exactly above, without a clock)
    gaps = [b.at - a.at for a, b in itertools.pairwise(hits)]
    assert gaps[0] < 1.0 + SLACK and 0.95 <= gaps[1] < 1.0 + SLACK, gaps
    assert 0.95 <= gaps[2] < 1.0 + SLACK, gaps
    # And once delivered nothing is pending, so no fifth attempt can come
    assert await pending(stack.settings) == 0
    assert len(receiver.hits) == 4


async def test_a_delivery_is_given_up_when_the_policy_is_spent(
    stack: Stack, receiver: Receiver
) -> None:
    receiver.fail = 1000
    policy = {"retries_with_no_delay": 1, "minimum_delay_retries": 0, "minimum_delay": 0,
              "maximum_delay": 10, "maximum_delay_retries": 0}
    await stack.subscribe(receiver.url(), _retry_policy=policy)
    await stack.post("never delivered")
    # Attempts at 0, 0 (immediate retry), 0 and 5 (linear backoff 0, 5), then none
    hits = await receiver.wait_for(4, within=60)
    assert 4.95 <= hits[3].at - hits[0].at < 5 + SLACK
    # And given up, nothing is pending, so no fifth attempt can come
    assert await pending(stack.settings) == 0
    assert len(receiver.hits) == 4


async def test_queue_retry_policy_applies_when_the_subscription_has_none(
    stack: Stack, receiver: Receiver
) -> None:
    receiver.fail = 1
    await stack.queues.CreateQueue(queues_pb2.CreateQueueRequest(
        project=PROJECT, queue="qp", metadata=orjson.dumps({"_retry_policy": {
            "retries_with_no_delay": 0, "minimum_delay_retries": 1, "minimum_delay": 1,
            "maximum_delay": 11}})))
    await stack.subscribe(receiver.url(), queue="qp")
    await stack.post("m", queue="qp")
    hits = await receiver.wait_for(2)
    # No immediate retry: the second attempt comes after minimum_delay (1 s), not after
    # maximum_delay (11 s)
    assert 0.8 < hits[1].at - hits[0].at < 11


async def test_a_hanging_subscriber_delays_neither_others_nor_posts(
    stack_factory: Callable[..., Awaitable[Stack]],
    receiver_factory: Callable[..., Awaitable[Receiver]],
) -> None:
    # Given deliveries that time out only long after this test ends (so no timeout and no
    # retry happens, however slow the machine), one subscriber that never answers and one
    # that does
    stack = await stack_factory(delivery_timeout=600.0)
    stuck = await receiver_factory(hang=True)
    fast = await receiver_factory()
    await stack.subscribe(stuck.url(), queue="busy")
    await stack.subscribe(fast.url(), queue="busy")
    # When messages are posted, each is acknowledged while the stuck deliveries hang
    for i in range(30):
        await stack.post(i, queue="busy")
    # Then the fast subscriber gets all of them
    await fast.wait_for(30, within=120)
    # while the stuck one holds no more than its first share of slots, all still hanging
    await stuck.wait_for(1, within=120)
    assert 1 <= len(stuck.hits) <= PER_SUBSCRIBER


async def test_a_subscription_to_a_queue_that_was_skipped_gets_the_next_post(
    stack: Stack, receiver: Receiver
) -> None:
    # Given a queue whose posts message_svc learnt to skip (nobody listened)
    await stack.post("before", queue="late")
    await asyncio.sleep(0.3)
    await stack.post("still nobody", queue="late")
    # When a subscription is created, the very next post reaches it
    await stack.subscribe(receiver.url(), queue="late")
    await stack.post("after", queue="late")
    [hit] = await receiver.wait_for(1)
    assert hit.json()["body"] == "after"


async def test_queue_delete_and_purge_remove_subscriptions(stack: Stack) -> None:
    for queue in ("deleted", "purged", "kept"):
        await stack.subscribe("http://127.0.0.1:9/x", queue=queue)
    await stack.queues.DeleteQueue(queues_pb2.DeleteQueueRequest(project=PROJECT, queue="deleted"))
    await stack.queues.PurgeQueue(queues_pb2.PurgeQueueRequest(
        project=PROJECT, queue="purged", resource_types=["subscriptions"]))
    await stack.queues.PurgeQueue(queues_pb2.PurgeQueueRequest(
        project=PROJECT, queue="kept", resource_types=["messages"]))
    for queue, count in (("deleted", 0), ("purged", 0), ("kept", 1)):
        page = await stack.subs.ListSubscriptions(
            notifier_pb2.ListSubscriptionsRequest(project=PROJECT, queue=queue))
        assert len(page.subscriptions) == count, queue


# e-mail ---------------------------------------------------------------------------------------


async def test_mailto_subscribers_get_e_mails(
    stack_factory: Callable[..., Awaitable[Stack]], smtp: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp
    stack = await stack_factory(smtp_host="127.0.0.1", smtp_port=port)
    await stack.subscribe("mailto:ops@example.com?subject=Queue%20news", **{"from": "z@q.org"})
    await stack.subscribe("mailto:dev@example.com", subject="From options")
    await stack.post({"n": 1}, ttl=120)
    while len(mailbox.mails) < 2:
        mailbox.arrived.clear()
        await asyncio.wait_for(mailbox.arrived.wait(), 10)
    mails = {recipients[0]: mail for mail, recipients in mailbox.mails}
    ops, dev = mails["ops@example.com"], mails["dev@example.com"]
    assert (ops["Subject"], ops["From"], ops["To"]) == (
        "Queue news", "z@q.org", "ops@example.com"
    )
    assert (dev["Subject"], dev["From"]) == ("From options", "zaqar@localhost")
    assert orjson.loads(ops.get_payload(decode=True)) == {
        "body": {"n": 1}, "ttl": 120, "Message_Type": "Notification", "queue_name": "q"
    }


# confirmation ---------------------------------------------------------------------------------


async def test_confirmation_flow(
    stack_factory: Callable[..., Awaitable[Stack]], receiver: Receiver
) -> None:
    stack = await stack_factory(
        require_confirmation=True, signed_url_secret="s3cret", public_url="https://zq.example/"
    )
    # When a webhook subscribes, it gets a SubscriptionConfirmation with a pre-signed PUT
    sid = await stack.subscribe(receiver.url(), ttl=600)
    [hit] = await receiver.wait_for(1)
    doc = hit.json()
    path = f"/v2/queues/q/subscriptions/{sid}/confirm"
    assert doc["Message_Type"] == "SubscriptionConfirmation"
    assert (doc["URL-Methods"], doc["URL-Paths"], doc["X-Project-ID"], doc["queue_name"]) == (
        "PUT", path, PROJECT, "q"
    )
    assert doc["WSGISubscribeURL"] == "https://zq.example" + path
    assert (doc["SubscribeBody"], doc["UnsubscribeBody"]) == (
        {"confirmed": True}, {"confirmed": False}
    )
    assert signing.verify("s3cret", doc["URL-Signature"], [path], ["PUT"], PROJECT,
                          doc["URL-Expires"])
    # Unconfirmed, it gets no notification; subscribing again re-sends the confirmation
    await stack.post("unseen")
    again = await stack.subs.CreateSubscription(notifier_pb2.CreateSubscriptionRequest(
        project=PROJECT, queue="q", subscriber=receiver.url()))
    assert (again.subscription_id, again.created) == (sid, False)
    await receiver.wait_for(2)
    assert receiver.hits[1].json()["Message_Type"] == "SubscriptionConfirmation"
    # Once confirmed, it gets notifications
    confirm = notifier_pb2.ConfirmSubscriptionRequest(
        project=PROJECT, queue="q", subscription_id=sid, confirmed=True)
    await stack.subs.ConfirmSubscription(confirm)
    await stack.post("seen")
    await receiver.wait_for(3)
    assert receiver.hits[2].json()["body"] == "seen"
    # Cancelling sends an UnsubscribeConfirmation, and notifications stop
    confirm.confirmed = False
    await stack.subs.ConfirmSubscription(confirm)
    await receiver.wait_for(4)
    assert receiver.hits[3].json()["Message_Type"] == "UnsubscribeConfirmation"
    await stack.post("unseen again")
    await asyncio.sleep(0.5)
    assert len(receiver.hits) == 4


async def test_a_new_secret_in_its_file_signs_the_next_confirmations(
    stack_factory: Callable[..., Awaitable[Stack]], receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """The secret read from ``ZAQAR_SIGNED_URL_SECRET_FILE`` is read again while the service
    runs: once the file holds a new one, confirmation URLs are signed with it; an empty one
    (with confirmation required) cannot be used and leaves the secret in use."""
    secret = tmp_path / "secret"
    secret.write_text("first\n")
    monkeypatch.setenv("ZAQAR_SIGNED_URL_SECRET_FILE", str(secret))
    caplog.set_level(logging.INFO, "services.common.secret_files")
    stack = await stack_factory(
        require_confirmation=True, signed_url_secret="first", secret_reload_interval=0.02,
    )
    path_of = "/v2/queues/q/subscriptions/{}/confirm"

    async def confirmation(count: int) -> tuple[str, dict[str, Any]]:
        sid = await stack.subscribe(receiver.url(), ttl=600)
        hits = await receiver.wait_for(count)
        doc: dict[str, Any] = hits[count - 1].json()
        assert doc["Message_Type"] == "SubscriptionConfirmation"
        return path_of.format(sid), doc

    def signed_with(key: str, path: str, doc: dict[str, Any]) -> bool:
        return signing.verify(key, doc["URL-Signature"], [path], ["PUT"], PROJECT,
                              doc["URL-Expires"])

    path, doc = await confirmation(1)
    assert signed_with("first", path, doc)
    # When the file holds a new secret, the next confirmation is signed with it
    await asyncio.to_thread(secret.write_text, "second\n")
    await until(lambda: "secret files reloaded (generation 1)" in caplog.text,
                what="the notifier taking the new secret")
    path, doc = await confirmation(2)
    assert signed_with("second", path, doc) and not signed_with("first", path, doc)
    # An empty secret cannot sign confirmations: refused, the secret in use still signs
    await asyncio.to_thread(secret.write_text, "\n")
    await until(lambda: "cannot be used" in caplog.text, what="the empty secret refused")
    assert "require_confirmation needs signed_url_secret" in caplog.text
    path, doc = await confirmation(3)
    assert signed_with("second", path, doc)


async def test_confirmation_needs_a_secret(make_settings: Callable[..., Settings]) -> None:
    from services.common.config import ConfigurationError

    with pytest.raises(ConfigurationError, match="signed_url_secret"):
        await notifier_server.start(make_settings(require_confirmation=True))


@pytest.mark.parametrize("setting", [
    {"delivery_concurrency": 0}, {"delivery_timeout": 0.0}, {"delivery_lease_margin": 0.0},
    {"delivery_lease_margin": -1.0},
])
async def test_delivery_settings_are_checked(
    make_settings: Callable[..., Settings], setting: dict[str, float]
) -> None:
    from services.common.config import ConfigurationError

    with pytest.raises(ConfigurationError, match="delivery_concurrency must be at least 1"):
        await notifier_server.start(make_settings(**setting))


# watch ----------------------------------------------------------------------------------------


async def test_two_watchers_get_every_posted_message(stack: Stack) -> None:
    request = notifier_pb2.WatchRequest(project=PROJECT, queue="watched", ttl=30)
    streams = [stack.internal.Watch(request) for _ in range(2)]
    for stream in streams:
        await stream.initial_metadata()
    await stack.post("a", "b", queue="watched")
    await stack.post("c", queue="watched")
    for stream in streams:
        bodies = []
        async for notification in stream:
            assert notification.queue == "watched"
            bodies.append(orjson.loads(notification.message.body))
            if len(bodies) == 3:
                break
        assert bodies == ["a", "b", "c"]
        stream.cancel()


async def test_bodies_handed_over_must_be_json(stack: Stack, receiver: Receiver) -> None:
    # Given a webhook subscriber and a watcher on a queue
    await stack.subscribe(receiver.url("/q"), queue="strict")
    watch = stack.internal.Watch(notifier_pb2.WatchRequest(project=PROJECT, queue="strict",
                                                           ttl=30))
    await watch.initial_metadata()

    def post(*bodies: bytes, queue: str = "strict") -> notifier_pb2.NotifyRequest:
        return notifier_pb2.NotifyRequest(project=PROJECT, queue=queue, messages=[
            common_pb2.Message(id=str(uuid.uuid4()), body=body, ttl=300) for body in bodies])

    expected = (Code.INVALID_ARGUMENT, "INVALID_BODY", "Message body must be valid JSON.")
    # When bodies that are not JSON are handed over, alone or beside good ones
    for call in (
        stack.internal.Notify(post(b"{")),
        stack.internal.NotifyMany(notifier_pb2.NotifyManyRequest(
            batches=[post(b'"fine"', queue="other"), post(b'"fine"', b"{,}")])),
        stack.internal.PublishTopic(notifier_pb2.PublishTopicRequest(
            project=PROJECT, topic="news",
            messages=[notifier_pb2.TopicMessage(body=b'"fine"', ttl=300),
                      notifier_pb2.TopicMessage(body=b"not json", ttl=300)])),
    ):
        info = await rpc_error(call)
        # Then each call is refused whole
        assert (info.code, info.reason, info.description) == expected
    # And a sealed body (an encrypted queue's, opened before each delivery) is taken
    sealed = ENVELOPE_MAGIC + b"opaque"
    reply = await stack.internal.NotifyMany(notifier_pb2.NotifyManyRequest(
        batches=[post(sealed, queue="unheard")]))
    assert list(reply.listened) == [False]
    # And nothing of the refused calls was stored or streamed: the first thing the watcher
    # and the webhook get is the next good post
    await stack.internal.Notify(post(b'{"n": 1}'))
    notification = await watch.read()
    assert orjson.loads(notification.message.body) == {"n": 1}
    [hit] = await receiver.wait_for(1)
    assert hit.path == "/q" and hit.json()["body"] == {"n": 1}
    assert await pending(stack.settings) == 0
    assert len(receiver.hits) == 1
    watch.cancel()


async def test_a_watch_ends_with_its_ttl(stack: Stack) -> None:
    started = time.monotonic()
    stream = stack.internal.Watch(notifier_pb2.WatchRequest(project=PROJECT, queue="w", ttl=1))
    assert [n async for n in stream] == []
    assert time.monotonic() - started >= 0.9  # not before its ttl
    assert await stream.code() == Code.OK


async def test_a_watch_of_a_bad_queue_is_refused(stack: Stack) -> None:
    stream = stack.internal.Watch(notifier_pb2.WatchRequest(project=PROJECT, queue="bad name"))
    info = await rpc_error(stream.read())
    assert (info.code, info.reason) == (Code.INVALID_ARGUMENT, "INVALID_QUEUE_NAME")


async def test_a_watch_cancelled_by_its_caller_leaves_no_task_behind(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a watch the service has registered
    caplog.set_level(logging.ERROR, logger="asyncio")
    stream = stack.internal.Watch(notifier_pb2.WatchRequest(project=PROJECT, queue="gone", ttl=30))
    await stream.initial_metadata()
    # When the caller goes away, and the service has ended the stream
    stream.cancel()
    notify = notifier_pb2.NotifyManyRequest(
        batches=[notifier_pb2.NotifyRequest(project=PROJECT, queue="gone")]
    )
    deadline = time.monotonic() + 5
    while (await stack.internal.NotifyMany(notify)).listened[0]:
        assert time.monotonic() < deadline, "the watch was not ended"
        await asyncio.sleep(0.02)
    # Then nothing the stream started is left pending to be destroyed with it
    gc.collect()
    await asyncio.sleep(0)
    destroyed = [r.getMessage() for r in caplog.records if "destroyed" in r.getMessage()]
    assert destroyed == []


async def test_a_watcher_that_falls_behind_is_dropped_alone() -> None:
    hub = WatchHub(buffer=2)
    slow, ok = hub.register("p", "q"), hub.register("p", "q")
    message = common_pb2.Message(id="1", body=b"1")
    hub.publish("p", "q", [message, message])
    ok.queue.get_nowait()
    ok.queue.get_nowait()
    hub.publish("p", "q", [message])
    # The slow one overflowed and is gone; the other keeps getting messages
    assert slow.overflowed.is_set() and not ok.overflowed.is_set()
    assert ok.queue.qsize() == 1
    hub.unregister("p", "q", ok)
    assert not hub.listened("p", "q")


async def test_watchers_do_not_get_messages_accepted_before_they_registered() -> None:
    clock = [100.0]
    hub = WatchHub(clock=lambda: clock[0])
    watcher = hub.register("p", "q")
    message = common_pb2.Message(id="1", body=b"1")
    hub.publish("p", "q", [message], accepted_at=99.5)
    hub.publish("p", "q", [message], accepted_at=100.5)
    hub.publish("p", "q", [message])
    assert watcher.queue.qsize() == 2


# filter policies ------------------------------------------------------------------------------


def filtered(scheme: str) -> float:
    return REGISTRY.get_sample_value(
        "zaqar_notifier_filtered_messages_total", {"scheme": scheme}
    ) or 0.0


async def test_only_messages_a_policy_matches_become_deliveries(
    stack: Stack, receiver: Receiver
) -> None:
    # Given three webhooks on one queue: two with filter policies, one without
    await stack.subscribe(receiver.url("/cheap"),
                          filter_policy={"price": [{"numeric": ["<", 10]}]})
    await stack.subscribe(receiver.url("/eu"), filter_policy={
        "$or": [{"region": [{"prefix": "eu-"}]}, {"order": {"vip": [True]}}]
    })
    await stack.subscribe(receiver.url("/all"))
    before = filtered("http")
    # When one post hands four messages over
    bodies = [{"price": 5, "region": "eu-west"}, {"price": 50, "region": "us"},
              "not an object", {"price": 1, "order": {"vip": True}}]
    await stack.post(*bodies)
    # Then each webhook gets the messages its policy matches, and no other delivery was made
    await receiver.wait_for(4 + 2 + 2)
    assert await pending(stack.settings) == 0
    got: dict[str, list[Any]] = {}
    for hit in receiver.hits:
        got.setdefault(hit.path, []).append(hit.json()["body"])
    assert {path: sorted(map(orjson.dumps, b)) for path, b in got.items()} == {
        "/all": sorted(map(orjson.dumps, bodies)),
        "/cheap": sorted(map(orjson.dumps, [bodies[0], bodies[3]])),
        "/eu": sorted(map(orjson.dumps, [bodies[0], bodies[3]])),
    }
    # And the four messages kept from a subscriber are counted
    assert filtered("http") - before == 4


async def test_a_bad_filter_policy_is_refused_with_its_path(stack: Stack) -> None:
    sid = await stack.subscribe("http://127.0.0.1:9/a", filter_policy={"a": ["x"]})
    bad = orjson.dumps({"filter_policy": {"price": [{"numeric": [">", 10, ">", 20]}]}})
    description = (
        'options.filter_policy.price[0]: numeric needs ["=", n], one comparison such as '
        '[">", n], or a range such as [">", 0, "<=", 150] (lower bound first, then upper).'
    )
    for call in (
        stack.subs.CreateSubscription(notifier_pb2.CreateSubscriptionRequest(
            project=PROJECT, queue="q", subscriber="http://127.0.0.1:9/b", options=bad)),
        stack.subs.UpdateSubscription(notifier_pb2.UpdateSubscriptionRequest(
            project=PROJECT, queue="q", subscription_id=sid, options=bad)),
    ):
        info = await rpc_error(call)
        assert (info.code, info.reason, info.description) == (
            Code.INVALID_ARGUMENT, "INVALID_ARGUMENT", description
        )
