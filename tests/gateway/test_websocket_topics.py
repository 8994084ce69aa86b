"""Topics over the WebSocket API: every topic action, webhook and push subscriptions of a topic,
against real services (in-process, and ``zaqar-grpc up`` on SQLite, Redis and MongoDB)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.gateway._ws import Ws, decode, new_project
from tests.receivers import Receiver

DEAD_HOOK = "http://127.0.0.1:9/hook"


def new_topic() -> str:
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture(params=["json", "msgpack"])
async def pair(ws_url: str, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Ws, Ws]]:
    """A subscriber connection (in the given framing) and a producer, on one project."""
    project = new_project()
    async with connect(ws_url) as listener, connect(ws_url) as producer:
        yield Ws(listener, project, binary=request.param == "msgpack"), Ws(producer, project)


async def pushed(ws: Ws) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.socket.recv(), 20)
    assert isinstance(frame, bytes) == ws.binary
    return decode(frame)


async def test_topic_actions(pair: tuple[Ws, Ws]) -> None:
    ws, _ = pair
    name = new_topic()
    t = {"topic_name": name}
    # Absent: get is 404, stats are zeros
    status, body = await ws.call("topic_get", t)
    assert (status, body["title"]) == (404, "Not found")
    assert await ws.call("topic_get_stats", t) == (
        200, {"messages": {"claimed": 0, "free": 0, "total": 0}})
    # Created with metadata, read back, listed
    assert await ws.call("topic_create", {**t, "metadata": {"k": 1}}) == (
        201, f"Topic {name} created.")
    assert await ws.call("topic_create", t) == (204, f"Topic {name} created.")
    assert await ws.call("topic_create", {**t, "metadata": {"k": 1}}) == (
        204, f"Topic {name} created.")
    assert await ws.call("topic_get", t) == (
        200, {"k": 1, "_max_messages_post_size": 262144, "_default_message_ttl": 3600})
    status, listed = await ws.call("topic_list", {"limit": 5, "detailed": True})
    assert status == 200
    assert listed["topics"] == [{"name": name, "href": f"/v2/topics/{name}", "metadata": {
        "k": 1, "_max_messages_post_size": 262144, "_default_message_ttl": 3600}}]
    assert listed["links"] == [{"rel": "next", "href":
                                f"/v2/topics?limit=5&detailed=true&marker={name}"}]
    status, queues = await ws.call("queue_list")
    assert (status, queues["queues"]) == (200, [])
    # A webhook subscription, listed, read, deleted
    status, created = await ws.call("topic_subscription_create",
                                    {**t, "subscriber": DEAD_HOOK, "ttl": 600})
    assert status == 201
    sid = created["subscription_id"]
    assert created == {"subscription_id": sid, "message": f"Subscription {name} created."}
    status, subs = await ws.call("topic_subscription_list", t)
    assert (status, [s["id"] for s in subs["subscriptions"]]) == (200, [sid])
    status, got = await ws.call("topic_subscription_get", {**t, "subscription_id": sid})
    assert (status, got["source"], got["subscriber"]) == (200, name, DEAD_HOOK)
    status, _ = await ws.call(
        "subscription_get", {"queue_name": name, "subscription_id": sid})
    assert status == 404
    # Posts answer their ids; stats count the pending delivery
    status, posted = await ws.call("topic_message_post",
                                   {**t, "messages": [{"body": {"n": 1}, "ttl": 120}]})
    assert status == 201 and len(posted["message_ids"]) == 1
    status, stats = await ws.call("topic_get_stats", t)
    assert status == 200 and stats["messages"]["claimed"] == 0
    assert await ws.call("topic_purge", {**t, "resource_types": ["messages"]}) == (204, {})
    assert (await ws.call("topic_get_stats", t))[1]["messages"]["total"] == 0
    assert await ws.call("topic_subscription_delete", {**t, "subscription_id": sid}) == (
        204, f"Subscription {sid} removed.")
    assert await ws.call("topic_delete", t) == (204, f"Topic {name} removed.")
    assert (await ws.call("topic_get", t))[0] == 404


async def test_topic_refusals(pair: tuple[Ws, Ws]) -> None:
    ws, _ = pair
    name = new_topic()
    status, body = await ws.call("topic_create", {"topic_name": "bad!name"})
    assert (status, body["title"]) == (400, "Invalid topic identification")
    status, body = await ws.call("topic_message_post", {"topic_name": name, "messages": []})
    assert (status, body) == (400, {"title": "Invalid API request",
                                    "error": "No messages to enqueu."})
    status, body = await ws.call("topic_create",
                                 {"topic_name": name, "metadata": {"_fifo": True}})
    assert status == 400 and body["error"].startswith("_fifo does not apply to topics")
    status, body = await ws.call("topic_purge", {"topic_name": name, "resource_types": ["x"]})
    assert status == 400
    status, body = await ws.call("topic_subscription_create",
                                 {"topic_name": name, "subscriber": "ftp://x"})
    assert status == 400
    status, body = await ws.call("topic_list", {"limit": 21})
    assert status == 400
    status, body = await ws.call("topic_create", {"topic_name": 5})
    assert (status, body["error"]) == (400, 'The value of the "topic_name" field must be a str.')


async def test_a_socket_subscribed_to_a_topic_gets_its_messages(pair: tuple[Ws, Ws]) -> None:
    listener, producer = pair
    name = new_topic()
    # Given a socket subscribed to a topic
    status, created = await listener.call("topic_subscription_create",
                                          {"topic_name": name, "ttl": 600})
    assert status == 201
    # When a queue of the same name gets a post, then the topic does
    await producer.call("message_post", {"queue_name": name, "messages": [{"body": "queue"}]})
    status, posted = await producer.call(
        "topic_message_post", {"topic_name": name, "messages": [{"body": {"n": 1}, "ttl": 300}]})
    assert status == 201
    # Then the socket gets the topic's message only, naming its topic and id
    assert await pushed(listener) == {
        "ttl": 300, "body": {"n": 1}, "Message_Type": "Notification", "topic_name": name,
        "message_id": posted["message_ids"][0]}
    # And once its subscription is deleted, nothing more
    sid = created["subscription_id"]
    assert await listener.call("topic_subscription_delete",
                               {"topic_name": name, "subscription_id": sid}) == (
        204, f"Subscription {sid} removed.")


async def test_webhook_subscribed_over_the_socket_gets_topic_messages(
    ws_url: str, receiver_factory: Callable[..., Awaitable[Receiver]]
) -> None:
    hook = await receiver_factory()
    name = new_topic()
    async with connect(ws_url) as socket:
        ws = Ws(socket, new_project())
        status, _ = await ws.call("topic_subscription_create",
                                  {"topic_name": name, "subscriber": hook.url()})
        assert status == 201
        status, posted = await ws.call("topic_message_post",
                                       {"topic_name": name, "messages": [{"body": "hi"}]})
        assert status == 201
    (hit,) = await hook.wait_for(1, within=30)
    assert hit.json() == {"body": "hi", "ttl": 3600, "Message_Type": "Notification",
                          "topic_name": name, "message_id": posted["message_ids"][0]}
