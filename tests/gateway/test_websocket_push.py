"""WebSocket subscriptions (contract §7): webhook subscriptions through notifier_svc, and push
to the socket itself when ``subscription_create`` names no subscriber."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.gateway._ws import Ws, decode, new_project
from tests.gateway.conftest import CLIENT_ID, new_queue

HOOK = "http://127.0.0.1:9/hook"
QUIET = 0.5


@pytest.fixture(params=["json", "msgpack"])
async def pair(ws_url: str, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Ws, Ws]]:
    """A subscriber connection (in the given framing) and a producer, on one project."""
    project = new_project()
    async with connect(ws_url) as listener, connect(ws_url) as producer:
        yield Ws(listener, project, binary=request.param == "msgpack"), Ws(producer, project)


async def pushed(ws: Ws) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.socket.recv(), 10)
    # Notifications use the framing of the request that subscribed.
    assert isinstance(frame, bytes) == ws.binary
    return decode(frame)


async def nothing_pushed(ws: Ws) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.socket.recv(), QUIET)


def notification(queue: str, ttl: int, body: Any) -> dict[str, Any]:
    return {"ttl": ttl, "body": body, "Message_Type": "Notification", "queue_name": queue}


async def test_webhook_subscription_actions(pair: tuple[Ws, Ws]) -> None:
    ws, _ = pair
    queue = new_queue()
    # Given a webhook subscription made over the socket
    status, created = await ws.call(
        "subscription_create", {"queue_name": queue, "subscriber": HOOK}
    )
    assert status == 201
    sid = created["subscription_id"]
    assert created == {"subscription_id": sid, "message": f"Subscription {queue} created."}
    ref = {"queue_name": queue, "subscription_id": sid}
    # Then it is listed and read back
    status, listed = await ws.call("subscription_list", {"queue_name": queue})
    assert status == 200
    assert [s["id"] for s in listed["subscriptions"]] == [sid]
    status, got = await ws.call("subscription_get", ref)
    assert (status, got["subscriber"], got["source"]) == (200, HOOK, queue)
    # When deleted, it is gone
    assert await ws.call("subscription_delete", ref) == (204, f"Subscription {sid} removed.")
    status, body = await ws.call("subscription_get", ref)
    assert (status, body["title"]) == (404, "Not found")
    # And the service's checks reach the socket
    status, body = await ws.call(
        "subscription_create", {"queue_name": queue, "subscriber": "ftp://h"}
    )
    assert (status, body["title"]) == (400, "Invalid API request")


async def test_push_after_subscription_create(pair: tuple[Ws, Ws]) -> None:
    listener, producer = pair
    queue = new_queue()
    # Given a socket that subscribed itself
    status, created = await listener.call("subscription_create", {"queue_name": queue, "ttl": 600})
    assert status == 201
    sid = created["subscription_id"]
    assert created == {"subscription_id": sid, "message": f"Subscription {queue} created."}
    # When messages are posted from elsewhere
    messages = [{"body": {"event": "BackupStarted"}, "ttl": 300}, {"body": "two", "ttl": 120}]
    posted = await producer.call("message_post", {"queue_name": queue, "messages": messages})
    assert posted[0] == 201
    # Then each arrives on the socket as Zaqar's notification, in order
    assert await pushed(listener) == notification(queue, 300, {"event": "BackupStarted"})
    assert await pushed(listener) == notification(queue, 120, "two")
    # And requests on the same socket still work between notifications
    assert (await listener.call("queue_get_stats", {"queue_name": queue}))[0] == 200
    # When the push subscription is deleted, nothing more arrives
    ref = {"queue_name": queue, "subscription_id": sid}
    assert await listener.call("subscription_delete", ref) == (204, f"Subscription {sid} removed.")
    await producer.call("message_post", {"queue_name": queue, "messages": [{"body": 3}]})
    await nothing_pushed(listener)


async def test_the_answer_to_a_post_goes_before_its_push(pair: tuple[Ws, Ws]) -> None:
    listener, _ = pair
    queue = new_queue()
    # Given a socket that subscribed itself
    assert (await listener.call("subscription_create", {"queue_name": queue, "ttl": 600}))[0] == 201
    for n in range(30):
        # When it posts to that queue itself
        request = {"action": "message_post", "headers": {"Client-ID": CLIENT_ID,
                   "X-Project-ID": listener.project},
                   "body": {"queue_name": queue, "messages": [{"body": n, "ttl": 300}]}}
        await listener.socket.send(listener.encode(request))
        # Then the first frame back is the post's answer, and only then the push
        first = decode(await asyncio.wait_for(listener.socket.recv(), 10))
        assert first.get("request", {}).get("action") == "message_post", first
        assert first["headers"]["status"] == 201
        assert await pushed(listener) == notification(queue, 300, n)


async def test_push_is_per_queue_and_per_project(ws_url: str) -> None:
    queue = new_queue()
    async with connect(ws_url) as a, connect(ws_url) as b:
        listener, stranger = Ws(a, new_project()), Ws(b, new_project())
        assert (await listener.call("subscription_create", {"queue_name": queue}))[0] == 201
        # Messages to the same queue name in another project, or another queue, are not pushed
        await stranger.call("message_post", {"queue_name": queue, "messages": [{"body": 1}]})
        other = Ws(b, listener.project)
        await other.call("message_post", {"queue_name": new_queue(), "messages": [{"body": 2}]})
        await nothing_pushed(listener)
        # Its own queue's are
        await other.call("message_post", {"queue_name": queue, "messages": [{"body": 3}]})
        assert (await pushed(listener))["body"] == 3


async def test_push_ends_with_the_connection(ws_url: str) -> None:
    queue = new_queue()
    project = new_project()
    # Given a socket that subscribed itself, then went away
    async with connect(ws_url) as gone:
        assert (await Ws(gone, project).call("subscription_create", {"queue_name": queue}))[
            0
        ] == 201
    async with connect(ws_url) as a, connect(ws_url) as b:
        listener, producer = Ws(a, project), Ws(b, project)
        # When messages are posted, then a new socket subscribes and more are posted
        await producer.call("message_post", {"queue_name": queue, "messages": [{"body": "old"}]})
        assert (await listener.call("subscription_create", {"queue_name": queue}))[0] == 201
        await producer.call("message_post", {"queue_name": queue, "messages": [{"body": "new"}]})
        # Then posting never failed, and the new socket gets only what came after it
        assert (await pushed(listener))["body"] == "new"
        await nothing_pushed(listener)


async def test_push_subscription_refused_by_the_service(pair: tuple[Ws, Ws]) -> None:
    listener, _ = pair
    status, body = await listener.call("subscription_create", {"queue_name": "bad name"})
    assert (status, body["title"]) == (400, "Invalid queue identification")
