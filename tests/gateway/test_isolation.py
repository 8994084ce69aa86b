"""Tenant isolation: project B reaches none of project A's queues, messages, claims and
subscriptions — not even with A's ids, and not under the same queue name — over HTTP, over the
WebSocket API and over gRPC straight to the services.

Each transport: A builds a queue (metadata, three messages, a live claim on one, a webhook
subscription); B, using the same queue name and A's ids, gets the answers of an empty project
(404, empty lists, zero stats) and its deletes are no-op 204s; then A's data is all there.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
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
from services.common.grpc_server import open_channel
from tests.gateway._ws import Ws
from tests.gateway.conftest import MODES, new_queue, running_services
from tests.stacks import up_stack

ZERO_STATS = {"messages": {"claimed": 0, "free": 0, "total": 0}}
SUBSCRIBER = "http://subscriber.invalid/hook"


def new_project(tag: str) -> str:
    return f"iso-{tag}-" + uuid.uuid4().hex[:10]


@dataclass
class Seeded:
    """What project A made: its queue, message ids (the first claimed), claim, subscription."""

    project: str
    queue: str
    message_ids: list[str]
    claim_id: str
    subscription_id: str


# HTTP ----------------------------------------------------------------------------------------


def as_project(project: str) -> dict[str, str]:
    return {"X-Project-ID": project}


async def seed_http(client: httpx.AsyncClient) -> Seeded:
    project, queue = new_project("a"), new_queue()
    a = as_project(project)
    resp = await client.put(f"/v2/queues/{queue}", json={"owner": "a"}, headers=a)
    assert resp.status_code == 201
    resp = await client.post(
        f"/v2/queues/{queue}/messages",
        json={"messages": [{"body": n, "ttl": 600} for n in range(3)]},
        headers=a,
    )
    assert resp.status_code == 201
    ids = [href.rsplit("/", 1)[1] for href in resp.json()["resources"]]
    resp = await client.post(f"/v2/queues/{queue}/claims?limit=1", json={"ttl": 300}, headers=a)
    assert resp.status_code == 201
    claim_id = resp.headers["location"].rsplit("/", 1)[1]
    assert [m["href"].split("?")[0].rsplit("/", 1)[1] for m in resp.json()["messages"]] == ids[:1]
    resp = await client.post(
        f"/v2/queues/{queue}/subscriptions", json={"subscriber": SUBSCRIBER, "ttl": 3600},
        headers=a,
    )
    assert resp.status_code == 201
    return Seeded(project, queue, ids, claim_id, resp.json()["subscription_id"])


async def assert_intact_http(client: httpx.AsyncClient, seeded: Seeded) -> None:
    q, a = f"/v2/queues/{seeded.queue}", as_project(seeded.project)
    assert (await client.get(q, headers=a)).json()["owner"] == "a"
    stats = (await client.get(f"{q}/stats", headers=a)).json()["messages"]
    assert (stats["claimed"], stats["free"], stats["total"]) == (1, 2, 3)
    ids = ",".join(seeded.message_ids)
    resp = await client.get(f"{q}/messages?ids={ids}", headers=a)
    assert sorted(m["body"] for m in resp.json()["messages"]) == [0, 1, 2]
    resp = await client.get(f"{q}/claims/{seeded.claim_id}", headers=a)
    assert resp.status_code == 200 and len(resp.json()["messages"]) == 1
    resp = await client.get(f"{q}/subscriptions/{seeded.subscription_id}", headers=a)
    assert resp.status_code == 200 and resp.json()["subscriber"] == SUBSCRIBER
    listed = (await client.get("/v2/queues", headers=a)).json()["queues"]
    assert [item["name"] for item in listed] == [seeded.queue]


async def test_http_isolation(client: httpx.AsyncClient) -> None:
    seeded = await seed_http(client)
    b = as_project(new_project("b"))
    q = f"/v2/queues/{seeded.queue}"
    first, ids = seeded.message_ids[0], ",".join(seeded.message_ids)
    cid, sid = seeded.claim_id, seeded.subscription_id

    async def call(
        method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        resp = await client.request(method, path, headers={**b, **(headers or {})}, **kwargs)
        return resp.status_code, (resp.json() if resp.content else None)

    # Reads: nothing of A's is visible.
    assert await call("GET", "/v2/queues") == (200, {"queues": [], "links": []})
    assert await call("GET", f"/v2/queues?name={seeded.queue}") == (
        200, {"queues": [], "links": []}
    )
    absent = await call("GET", f"/v2/queues/{new_queue()}")
    assert await call("GET", q) == absent  # B's view of the name: a queue that does not exist
    assert "owner" not in absent[1]
    assert await call("GET", f"{q}/stats") == (200, ZERO_STATS)
    assert await call("GET", f"{q}/messages?echo=true&include_claimed=true") == (
        200, {"messages": [], "links": []}
    )
    assert (await call("GET", f"{q}/messages/{first}"))[0] == 404
    assert (await call("GET", f"{q}/messages?ids={ids}"))[0] == 404
    assert (await call("GET", f"{q}/claims/{cid}"))[0] == 404
    assert await call("GET", f"{q}/subscriptions") == (200, {"subscriptions": [], "links": []})
    assert (await call("GET", f"{q}/subscriptions/{sid}"))[0] == 404
    # Writes aimed at A's things: not found, or nothing to act on.
    assert await call("POST", f"{q}/claims", json={"ttl": 60}) == (204, None)
    assert (await call("PATCH", f"{q}/claims/{cid}", json={"ttl": 60}))[0] == 404
    assert (await call("PATCH", f"{q}/subscriptions/{sid}", json={"ttl": 600}))[0] == 404
    assert (await call("PUT", f"{q}/subscriptions/{sid}/confirm", json={"confirmed": True}))[
        0
    ] == 404
    patch = b'[{"op":"replace","path":"/metadata/owner","value":"b"}]'
    patch_type = {"Content-Type": "application/openstack-messaging-v2.0-json-patch"}
    assert (await call("PATCH", q, content=patch, headers=patch_type))[0] == 404
    assert await call("DELETE", f"{q}/messages?pop=3") == (200, {"messages": []})
    # Deletes: 204, and nothing of A's goes.
    assert await call("DELETE", f"{q}/messages/{first}?claim_id={cid}") == (204, None)
    assert await call("DELETE", f"{q}/messages/{seeded.message_ids[1]}") == (204, None)
    assert await call("DELETE", f"{q}/messages?ids={ids}") == (204, None)
    assert await call("DELETE", f"{q}/claims/{cid}") == (204, None)
    assert await call("DELETE", f"{q}/subscriptions/{sid}") == (204, None)
    assert await call("POST", f"{q}/purge", json={}) == (204, None)
    assert await call("DELETE", q) == (204, None)
    await assert_intact_http(client, seeded)


async def test_http_same_name_queues_are_separate(client: httpx.AsyncClient) -> None:
    """Both projects use one queue name: each sees only its own messages and stats."""
    queue = new_queue()
    a, b = as_project(new_project("a")), as_project(new_project("b"))
    for headers, bodies in ((a, ["a1", "a2"]), (b, ["b1"])):
        resp = await client.post(
            f"/v2/queues/{queue}/messages",
            json={"messages": [{"body": body} for body in bodies]}, headers=headers,
        )
        assert resp.status_code == 201
    for headers, bodies in ((a, ["a1", "a2"]), (b, ["b1"])):
        resp = await client.get(f"/v2/queues/{queue}/messages?echo=true", headers=headers)
        assert [m["body"] for m in resp.json()["messages"]] == bodies
        resp = await client.get(f"/v2/queues/{queue}/stats", headers=headers)
        assert resp.json()["messages"]["total"] == len(bodies)
    # B's claim takes only B's message.
    resp = await client.post(f"/v2/queues/{queue}/claims", headers=b, json={})
    assert [m["body"] for m in resp.json()["messages"]] == ["b1"]
    resp = await client.get(f"/v2/queues/{queue}/stats", headers=a)
    assert resp.json()["messages"]["claimed"] == 0


# WebSocket -----------------------------------------------------------------------------------


@pytest.fixture
async def ws_pair(ws_url: str) -> AsyncIterator[tuple[Ws, Ws]]:
    """Two projects' requests over one connection (each request carries its project)."""
    async with connect(ws_url) as socket:
        yield Ws(socket, new_project("a")), Ws(socket, new_project("b"))


async def test_websocket_isolation(ws_pair: tuple[Ws, Ws]) -> None:
    a, b = ws_pair
    queue = new_queue()
    assert (await a.call("queue_create", {"queue_name": queue, "metadata": {"owner": "a"}}))[
        0
    ] == 201
    status, posted = await a.call(
        "message_post", {"queue_name": queue, "messages": [{"body": n} for n in range(3)]}
    )
    assert status == 201
    ids = posted["message_ids"]
    status, claimed = await a.call("claim_create", {"queue_name": queue, "limit": 1})
    assert status == 201
    cid = claimed["claim_id"]
    status, created = await a.call(
        "subscription_create", {"queue_name": queue, "subscriber": SUBSCRIBER, "ttl": 3600}
    )
    assert status == 201
    sid = created["subscription_id"]

    q = {"queue_name": queue}
    assert await b.call("queue_list") == (200, {"queues": [], "links": []})
    status, meta = await b.call("queue_get", q)
    assert status == 200 and "owner" not in meta
    assert await b.call("queue_get_stats", q) == (200, ZERO_STATS)
    assert await b.call("message_list", {**q, "echo": True, "include_claimed": True}) == (
        200, {"messages": [], "links": []}
    )
    assert (await b.call("message_get", {**q, "message_id": ids[0]}))[0] == 404
    assert (await b.call("message_get_many", {**q, "message_ids": ids}))[0] == 404
    assert (await b.call("claim_get", {**q, "claim_id": cid}))[0] == 404
    assert (await b.call("claim_update", {**q, "claim_id": cid, "ttl": 60}))[0] == 404
    assert (await b.call("claim_create", q))[0] == 204
    assert await b.call("subscription_list", q) == (200, {"subscriptions": [], "links": []})
    assert (await b.call("subscription_get", {**q, "subscription_id": sid}))[0] == 404
    status, popped = await b.call("message_delete_many", {**q, "pop": 3})
    assert (status, popped) == (200, {"messages": []})
    assert (await b.call("message_delete", {**q, "message_id": ids[1]}))[0] == 204
    assert (await b.call("message_delete_many", {**q, "message_ids": ids}))[0] == 204
    assert (await b.call("claim_delete", {**q, "claim_id": cid}))[0] == 204
    assert (await b.call("subscription_delete", {**q, "subscription_id": sid}))[0] == 204
    assert (await b.call("queue_purge", {**q, "resource_types": ["messages"]}))[0] == 204
    assert (await b.call("queue_delete", q))[0] == 204

    # A's data is all there.
    status, meta = await a.call("queue_get", q)
    assert meta["owner"] == "a"
    status, stats = await a.call("queue_get_stats", q)
    assert (stats["messages"]["claimed"], stats["messages"]["total"]) == (1, 3)
    status, many = await a.call("message_get_many", {**q, "message_ids": ids})
    assert sorted(m["body"] for m in many["messages"]) == [0, 1, 2]
    assert (await a.call("claim_get", {**q, "claim_id": cid}))[0] == 200
    status, sub = await a.call("subscription_get", {**q, "subscription_id": sid})
    assert (status, sub["subscriber"]) == (200, SUBSCRIBER)


# gRPC ----------------------------------------------------------------------------------------


@dataclass
class Stubs:
    queues: Any
    messages: Any
    subscriptions: Any


@pytest.fixture(params=MODES)
async def stubs(request: pytest.FixtureRequest) -> AsyncIterator[Stubs]:
    """Generated stubs on channels straight to queue_svc, message_svc and notifier_svc (no
    gateway): started in-process, or those of a ``zaqar-grpc up``."""
    if request.param == "asgi":
        make_settings: Callable[..., Settings] = request.getfixturevalue("make_settings")
        async with running_services(make_settings()) as settings:
            async for built in _stubs(settings):
                yield built
    else:
        async for built in _stubs(up_stack(request, request.param.removeprefix("up-")).settings):
            yield built


async def _stubs(settings: Settings) -> AsyncIterator[Stubs]:
    channels = [
        open_channel(settings.target(name), None) for name in ("queue", "message", "notifier")
    ]
    try:
        yield Stubs(
            queues_pb2_grpc.QueuesStub(channels[0]),  # type: ignore[no-untyped-call]
            messages_pb2_grpc.MessagesStub(channels[1]),  # type: ignore[no-untyped-call]
            notifier_pb2_grpc.SubscriptionsStub(channels[2]),  # type: ignore[no-untyped-call]
        )
    finally:
        for channel in channels:
            await channel.close()


async def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    code: grpc.StatusCode = raised.value.code()
    return code


async def test_grpc_isolation(stubs: Stubs) -> None:
    pa, pb, queue = new_project("a"), new_project("b"), new_queue()
    cid_client = str(uuid.uuid4())
    await stubs.queues.CreateQueue(
        queues_pb2.CreateQueueRequest(project=pa, queue=queue, metadata=b'{"owner": "a"}')
    )
    posted = await stubs.messages.PostMessages(messages_pb2.PostMessagesRequest(
        project=pa, queue=queue, client_id=cid_client,
        messages=[messages_pb2.NewMessage(body=orjson.dumps(n), ttl=600) for n in range(3)],
    ))
    ids = list(posted.ids)
    claim = await stubs.messages.CreateClaim(
        messages_pb2.CreateClaimRequest(project=pa, queue=queue, limit=1, ttl=300)
    )
    sub = await stubs.subscriptions.CreateSubscription(notifier_pb2.CreateSubscriptionRequest(
        project=pa, queue=queue, subscriber=SUBSCRIBER, ttl=3600, options=b"{}",
    ))
    sid = sub.subscription_id

    listed = await stubs.queues.ListQueues(queues_pb2.ListQueuesRequest(project=pb))
    assert list(listed.queues) == []
    got = await stubs.queues.GetQueue(queues_pb2.GetQueueRequest(project=pb, queue=queue))
    assert not got.exists and b"owner" not in got.metadata
    ref_b = common_pb2.QueueRef(project=pb, queue=queue)
    stats = await stubs.messages.GetStats(ref_b)
    assert (stats.claimed, stats.free, stats.total) == (0, 0, 0)
    page = await stubs.messages.ListMessages(messages_pb2.ListMessagesRequest(
        project=pb, queue=queue, client_id=cid_client, echo=True, include_claimed=True,
    ))
    assert list(page.messages) == []
    assert await code_of(stubs.messages.GetMessage(
        messages_pb2.GetMessageRequest(project=pb, queue=queue, message_id=ids[0])
    )) == grpc.StatusCode.NOT_FOUND
    many = await stubs.messages.GetMessages(
        messages_pb2.GetMessagesRequest(project=pb, queue=queue, message_ids=ids)
    )
    assert list(many.messages) == []
    assert await code_of(stubs.messages.GetClaim(
        messages_pb2.GetClaimRequest(project=pb, queue=queue, claim_id=claim.id)
    )) == grpc.StatusCode.NOT_FOUND
    assert await code_of(stubs.messages.UpdateClaim(
        messages_pb2.UpdateClaimRequest(project=pb, queue=queue, claim_id=claim.id, ttl=60)
    )) == grpc.StatusCode.NOT_FOUND
    taken = await stubs.messages.CreateClaim(
        messages_pb2.CreateClaimRequest(project=pb, queue=queue, limit=5)
    )
    assert list(taken.messages) == []
    popped = await stubs.messages.PopMessages(
        messages_pb2.PopMessagesRequest(project=pb, queue=queue, limit=3)
    )
    assert list(popped.messages) == []
    subs = await stubs.subscriptions.ListSubscriptions(
        notifier_pb2.ListSubscriptionsRequest(project=pb, queue=queue)
    )
    assert list(subs.subscriptions) == []
    sub_b = notifier_pb2.SubscriptionRef(project=pb, queue=queue, subscription_id=sid)
    assert await code_of(stubs.subscriptions.GetSubscription(sub_b)) == grpc.StatusCode.NOT_FOUND
    assert await code_of(stubs.subscriptions.UpdateSubscription(
        notifier_pb2.UpdateSubscriptionRequest(project=pb, queue=queue, subscription_id=sid,
                                               ttl=600)
    )) == grpc.StatusCode.NOT_FOUND
    # Deletes by B: accepted, no effect on A.
    await stubs.messages.DeleteMessage(messages_pb2.DeleteMessageRequest(
        project=pb, queue=queue, message_id=ids[0], claim_id=claim.id
    ))
    await stubs.messages.DeleteMessages(
        messages_pb2.DeleteMessagesRequest(project=pb, queue=queue, message_ids=ids)
    )
    await stubs.messages.DeleteClaim(
        messages_pb2.DeleteClaimRequest(project=pb, queue=queue, claim_id=claim.id)
    )
    await stubs.subscriptions.DeleteSubscription(sub_b)
    await stubs.queues.PurgeQueue(queues_pb2.PurgeQueueRequest(project=pb, queue=queue))
    await stubs.queues.DeleteQueue(queues_pb2.DeleteQueueRequest(project=pb, queue=queue))

    ref_a = common_pb2.QueueRef(project=pa, queue=queue)
    stats = await stubs.messages.GetStats(ref_a)
    assert (stats.claimed, stats.free, stats.total) == (1, 2, 3)
    many = await stubs.messages.GetMessages(
        messages_pb2.GetMessagesRequest(project=pa, queue=queue, message_ids=ids)
    )
    assert sorted(orjson.loads(m.body) for m in many.messages) == [0, 1, 2]
    kept = await stubs.messages.GetClaim(
        messages_pb2.GetClaimRequest(project=pa, queue=queue, claim_id=claim.id)
    )
    assert [m.id for m in kept.messages] == ids[:1]
    kept_sub = await stubs.subscriptions.GetSubscription(
        notifier_pb2.SubscriptionRef(project=pa, queue=queue, subscription_id=sid)
    )
    assert kept_sub.subscriber == SUBSCRIBER
    got = await stubs.queues.GetQueue(queues_pb2.GetQueueRequest(project=pa, queue=queue))
    assert orjson.loads(got.metadata)["owner"] == "a"
    listed = await stubs.queues.ListQueues(queues_pb2.ListQueuesRequest(project=pa))
    assert [item.name for item in listed.queues] == [queue]
