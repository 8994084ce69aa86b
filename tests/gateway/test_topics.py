"""Topics over HTTP (contract §2: "as queues"; docs/architecture.md, "Topics"), against real
services: in-process on SQLite and over real HTTP to ``zaqar-grpc up`` on SQLite, Redis and
MongoDB (the ``client`` fixture). Every rule, every 4xx; deliveries to real webhooks and
queues."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.gateway.conftest import CLIENT_ID, PATCH_TYPE, error_body, new_queue, running_services
from tests.receivers import Receiver

BAD_API = "Invalid API request"
BAD_BODY = "Invalid request body"
DEAD_HOOK = "http://127.0.0.1:9/hook"  # nothing listens: deliveries stay pending
# Retries far apart: a failed delivery stays in the outbox for the whole test.
SLOW_RETRIES = {"retries_with_no_delay": 0, "minimum_delay_retries": 50, "minimum_delay": 600,
                "maximum_delay": 610, "retry_backoff_function": "linear"}
DEFAULTS = {"_max_messages_post_size": 262144, "_default_message_ttl": 3600}
TOPIC_ONLY_KEYS = {"body", "ttl", "Message_Type", "topic_name", "message_id"}


def new_topic() -> str:
    return "t-" + uuid.uuid4().hex[:12]


def own_project() -> dict[str, str]:
    """Headers of a project of the test's own (listings see nothing else)."""
    return {"X-Project-ID": "p-" + uuid.uuid4().hex[:12]}


def topic(name: str, *rest: str) -> str:
    return "/".join([f"/v2/topics/{name}", *rest])


async def put_json(client: httpx.AsyncClient, path: str, doc: Any, **kwargs: Any) -> httpx.Response:
    return await client.put(path, content=orjson.dumps(doc), **kwargs)


async def post_json(
    client: httpx.AsyncClient, path: str, doc: Any, **kwargs: Any
) -> httpx.Response:
    return await client.post(path, content=orjson.dumps(doc), **kwargs)


async def patch(client: httpx.AsyncClient, path: str, ops: Any) -> httpx.Response:
    return await client.patch(
        path, content=orjson.dumps(ops), headers={"Content-Type": PATCH_TYPE}
    )


async def subscribe(client: httpx.AsyncClient, name: str, subscriber: str, **doc: Any) -> str:
    resp = await post_json(client, topic(name, "subscriptions"),
                           {"subscriber": subscriber, "ttl": 3600, **doc})
    assert resp.status_code == 201, resp.text
    sid: str = resp.json()["subscription_id"]
    return sid


async def publish(client: httpx.AsyncClient, name: str, *bodies: Any, **extra: Any) -> list[str]:
    resp = await post_json(client, topic(name, "messages"),
                           {"messages": [{"body": b, **extra} for b in bodies]})
    assert resp.status_code == 201, resp.text
    return [href.rsplit("/", 1)[1] for href in resp.json()["resources"]]


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def queue_bodies(client: httpx.AsyncClient, queue: str) -> list[Any]:
    bodies: list[Any] = []
    href = f"/v2/queues/{queue}/messages?echo=true&include_claimed=true&limit=20"
    while True:
        page = (await client.get(href)).json()
        if not page["messages"]:
            return bodies
        bodies += [m["body"] for m in page["messages"]]
        href = page["links"][0]["href"]


# Lifecycle and metadata ------------------------------------------------------------------------


async def test_topic_lifecycle(client: httpx.AsyncClient) -> None:
    name = new_topic()
    # An absent topic: stats are zeros, GET and PATCH are 404
    stats = await client.get(topic(name, "stats"))
    assert (stats.status_code, stats.json()) == (
        200, {"messages": {"claimed": 0, "free": 0, "total": 0}})
    absent = await client.get(topic(name))
    assert absent.status_code == 404
    assert absent.json() == error_body(
        "Not found", f"Topic {name} does not exist for project demo-project")
    assert (await patch(client, topic(name), [])).status_code == 404
    # When created with metadata: 201 with its Location and no body, then 204
    created = await put_json(client, topic(name), {"messages": {"ttl": 600}})
    assert (created.status_code, created.headers["location"], created.content) == (
        201, topic(name), b"")
    assert (await put_json(client, topic(name), {"description": "again"})).status_code == 204
    # Then GET shows the metadata with the two defaults that apply to a topic
    got = await client.get(topic(name))
    assert (got.status_code, got.json()) == (200, {"description": "again", **DEFAULTS})
    # And a JSON patch changes it, reserved keys included
    changed = await patch(client, topic(name), [
        {"op": "add", "path": "/metadata/k", "value": 1},
        {"op": "replace", "path": "/metadata/_default_message_ttl", "value": 300},
        {"op": "remove", "path": "/metadata/_max_messages_post_size"},
        {"op": "remove", "path": "/metadata/description"},
    ])
    assert changed.status_code == 200
    assert changed.json() == {"k": 1, "_default_message_ttl": 300,
                              "_max_messages_post_size": 262144}
    assert (await client.get(topic(name))).json() == changed.json()
    # And an empty PUT body means no metadata
    assert (await client.put(topic(name))).status_code == 204
    assert (await client.get(topic(name))).json() == DEFAULTS
    # When deleted (twice), it is gone
    assert (await client.delete(topic(name))).status_code == 204
    assert (await client.delete(topic(name))).status_code == 204
    assert (await client.get(topic(name))).status_code == 404


async def test_reserved_metadata(client: httpx.AsyncClient) -> None:
    name = new_topic()
    # The keys that apply are checked with the queue ranges
    policy = {"retries_with_no_delay": 1, "minimum_delay": 5, "maximum_delay": 20}
    resp = await put_json(client, topic(name), {
        "_max_messages_post_size": 1000, "_default_message_ttl": 120, "_retry_policy": policy})
    assert resp.status_code == 201
    assert (await client.get(topic(name))).json() == {
        "_max_messages_post_size": 1000, "_default_message_ttl": 120, "_retry_policy": policy}
    # Other keys starting with "_" are free metadata, as on queues
    assert (await put_json(client, topic(name), {"_mine": 1})).status_code == 204


@pytest.mark.parametrize(
    ("doc", "description"),
    [
        ({"_max_messages_post_size": 0},
         "_max_messages_post_size can not exceed 262144, and must be at least greater than 0."),
        ({"_default_message_ttl": 59},
         "_default_message_ttl can not exceed 1209600 seconds, and must be at least 60 seconds "
         "long."),
        ({"_default_message_ttl": "60"}, "_default_message_ttl must be integer."),
        ({"_retry_policy": []}, "retry_policy must be a dict."),
        *(({key: value}, f"{key} does not apply to topics: a topic keeps no messages, it "
                         "delivers them to its subscribers.")
          for key, value in [
              ("_default_message_delay", 0), ("_dead_letter_queue", "dlq"),
              ("_dead_letter_queue_messages_ttl", 60), ("_max_claim_count", 2),
              ("_enable_encrypt_messages", False), ("_flavor", "f"), ("_fifo", True),
              ("_dedup_window", 60), ("_filters", []), ("_message_schema", {}),
          ]),
    ],
)
async def test_reserved_metadata_refused(
    client: httpx.AsyncClient, doc: dict[str, Any], description: str
) -> None:
    name = new_topic()
    # PUT: 400, and nothing is created
    resp = await put_json(client, topic(name), doc)
    assert (resp.status_code, resp.json()) == (400, error_body(BAD_API, description))
    assert (await client.get(topic(name))).status_code == 404
    # PATCH: 400 (a body error), and nothing is changed
    assert (await client.put(topic(name))).status_code == 201
    ((key, value),) = doc.items()
    resp = await patch(client, topic(name), [{"op": "add", "path": f"/metadata/{key}",
                                              "value": value}])
    assert (resp.status_code, resp.json()) == (400, error_body(BAD_BODY, description))
    assert (await client.get(topic(name))).json() == DEFAULTS


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"[]", error_body(BAD_BODY, "Document type not supported.")),
        (b"{", error_body(BAD_BODY, "Request body could not be parsed.")),
        (orjson.dumps({"pad": "x" * 65536}), None),
    ],
)
async def test_put_refuses_bad_documents(
    client: httpx.AsyncClient, content: bytes, expected: dict[str, str] | None
) -> None:
    name = new_topic()
    resp = await client.put(topic(name), content=content)
    assert resp.status_code == 400
    if expected is not None:
        assert resp.json() == expected
    assert (await client.get(topic(name))).status_code == 404


@pytest.mark.parametrize("name", ["bad!name", "x" * 65, "a%20b"])
async def test_bad_topic_names(client: httpx.AsyncClient, name: str) -> None:
    title = "Invalid topic identification"
    description = "The format of the submitted topic name or project id is not valid."
    for resp in [
        await client.put(topic(name)),
        await client.get(topic(name)),
        await client.delete(topic(name)),
        await client.get(topic(name, "stats")),
        await client.post(topic(name, "purge")),
        await patch(client, topic(name), []),
        await post_json(client, topic(name, "messages"), {"messages": [{"body": 1}]}),
    ]:
        assert (resp.status_code, resp.json()) == (400, error_body(title, description))
    resp = await post_json(client, topic(name, "subscriptions"), {"subscriber": DEAD_HOOK})
    assert (resp.status_code, resp.json()["title"]) == (400, title)


async def test_patch_errors(client: httpx.AsyncClient) -> None:
    name = new_topic()
    await put_json(client, topic(name), {"k": 1})
    # 415 without the JSON-patch media type, naming it
    resp = await client.patch(topic(name), content=b"[]")
    assert resp.status_code == 415
    assert resp.headers["accept-patch"] == PATCH_TYPE
    # 409 replacing or removing a key that is not there
    for op in ("replace", "remove"):
        resp = await patch(client, topic(name), [{"op": op, "path": "/metadata/nope", "value": 1}])
        assert resp.status_code == 409
        assert resp.json() == error_body(
            "Resource conflict", f"Can't {op} non-existent object nope.")
    # 400 for a malformed patch
    for ops, description in [
        ({"op": "add"}, "Request body must be a JSON array of operation objects."),
        ([{"op": "move", "path": "/metadata/k"}], "Invalid operation: `move`. It must be one "
         "of the following: add, remove, replace."),
        ([{"op": "add", "path": "/other/k", "value": 1}],
         "The root of path must be metadata, e.g /metadata/key."),
    ]:
        resp = await patch(client, topic(name), ops)
        assert resp.status_code == 400
        assert resp.json()["description"] == description
    # 404 on an absent topic
    resp = await patch(client, topic(new_topic()), [{"op": "add", "path": "/metadata/k",
                                                     "value": 1}])
    assert resp.status_code == 404
    assert (await client.get(topic(name))).json() == {"k": 1, **DEFAULTS}


# Listing ---------------------------------------------------------------------------------------


async def test_list_pages_details_counts_and_filters(client: httpx.AsyncClient) -> None:
    headers = own_project()
    for i in range(3):
        await put_json(client, topic(f"top{i}"), {"node": 30 + i}, headers=headers)
    # Empty in another project
    other = await client.get("/v2/topics", headers=own_project())
    assert other.json() == {"topics": [], "links": []}
    # A page, with a next link keeping the parameters
    page = await client.get("/v2/topics?limit=2&with_count=true", headers=headers)
    assert page.status_code == 200
    assert page.json() == {
        "topics": [{"name": "top0", "href": "/v2/topics/top0"},
                   {"name": "top1", "href": "/v2/topics/top1"}],
        "links": [{"rel": "next",
                   "href": "/v2/topics?limit=2&with_count=true&marker=top1"}],
        "count": 3,
    }
    rest = await client.get(page.json()["links"][0]["href"], headers=headers)
    assert [t["name"] for t in rest.json()["topics"]] == ["top2"]
    # Detailed: the metadata with defaults; filters by name and metadata
    detailed = await client.get("/v2/topics?detailed=true&name=1", headers=headers)
    assert detailed.json()["topics"] == [
        {"name": "top1", "href": "/v2/topics/top1", "metadata": {"node": 31, **DEFAULTS}}]
    filtered = await client.get("/v2/topics?node=32", headers=headers)
    assert [t["name"] for t in filtered.json()["topics"]] == ["top2"]
    # A name filter that no name can contain finds nothing, on every store
    for name in ("-" * 4096, "top" + "0" * 62, "top*"):
        none = await client.get("/v2/topics", params={"name": name, "with_count": "true"},
                                headers=headers)
        assert none.status_code == 200
        assert none.json() == {"topics": [], "links": [], "count": 0}
    # 400 for a limit out of range
    for limit in (0, 21):
        resp = await client.get(f"/v2/topics?limit={limit}", headers=headers)
        assert resp.status_code == 400
        assert resp.json() == error_body(
            BAD_API, "Limit must be at least 1 and may not be greater than 20.")


async def test_topics_and_queues_of_one_name_are_apart(client: httpx.AsyncClient) -> None:
    headers = own_project()
    name = "shared-" + uuid.uuid4().hex[:8]
    # Given a queue and a topic of one name, each with a subscription
    await put_json(client, f"/v2/queues/{name}", {"kind": "queue"}, headers=headers)
    await put_json(client, topic(name), {"kind": "topic"}, headers=headers)
    queue_sub = await post_json(client, f"/v2/queues/{name}/subscriptions",
                                {"subscriber": DEAD_HOOK + "/q"}, headers=headers)
    topic_sub = await post_json(client, topic(name, "subscriptions"),
                                {"subscriber": DEAD_HOOK + "/t"}, headers=headers)
    qid, tid = queue_sub.json()["subscription_id"], topic_sub.json()["subscription_id"]
    # Then each listing shows its own kind only
    assert [q["name"] for q in (await client.get("/v2/queues", headers=headers)).json()[
        "queues"]] == [name]
    assert [t["name"] for t in (await client.get("/v2/topics", headers=headers)).json()[
        "topics"]] == [name]
    assert (await client.get(f"/v2/queues/{name}", headers=headers)).json()["kind"] == "queue"
    assert (await client.get(topic(name), headers=headers)).json()["kind"] == "topic"
    # And each source lists its own subscription, and cannot reach the other's
    queue_subs = await client.get(f"/v2/queues/{name}/subscriptions", headers=headers)
    topic_subs = await client.get(topic(name, "subscriptions"), headers=headers)
    assert [s["id"] for s in queue_subs.json()["subscriptions"]] == [qid]
    assert [(s["id"], s["source"]) for s in topic_subs.json()["subscriptions"]] == [(tid, name)]
    assert (await client.get(topic(name, "subscriptions", qid), headers=headers)
            ).status_code == 404
    assert (await client.get(f"/v2/queues/{name}/subscriptions/{tid}", headers=headers)
            ).status_code == 404
    # And a post to the topic puts nothing in the queue
    await post_json(client, topic(name, "messages"), {"messages": [{"body": 1}]},
                    headers=headers)
    listed = await client.get(f"/v2/queues/{name}/messages?echo=true", headers=headers)
    assert listed.json() == {"messages": [], "links": []}
    # And deleting the topic leaves the queue and its subscription
    assert (await client.delete(topic(name), headers=headers)).status_code == 204
    assert (await client.get(f"/v2/queues/{name}/subscriptions/{qid}", headers=headers)
            ).status_code == 200
    assert (await client.get(topic(name, "subscriptions", tid), headers=headers)
            ).status_code == 404


async def test_topics_are_isolated_per_project(client: httpx.AsyncClient) -> None:
    name = new_topic()
    a, b = own_project(), own_project()
    await put_json(client, topic(name), {"owner": "a"}, headers=a)
    sid = (await post_json(client, topic(name, "subscriptions"), {"subscriber": DEAD_HOOK},
                           headers=a)).json()["subscription_id"]
    assert (await client.get(topic(name), headers=b)).status_code == 404
    assert (await client.get(topic(name, "subscriptions", sid), headers=b)).status_code == 404
    assert (await client.delete(topic(name), headers=b)).status_code == 204
    assert (await client.get(topic(name), headers=a)).json()["owner"] == "a"
    assert (await client.get(topic(name, "subscriptions", sid), headers=a)).status_code == 200


# Posts and deliveries --------------------------------------------------------------------------


async def test_post_delivers_to_every_subscriber(
    client: httpx.AsyncClient, receiver_factory: Callable[..., Awaitable[Receiver]]
) -> None:
    name, target = new_topic(), new_queue()
    hooks = [await receiver_factory(), await receiver_factory()]
    await put_json(client, topic(name), {"_default_message_ttl": 300})
    for hook in hooks:
        await subscribe(client, name, hook.url())
    await subscribe(client, name, f"queue://{target}")
    # When a batch is posted
    resp = await post_json(client, topic(name, "messages"), {"messages": [
        {"body": {"n": 1}}, {"body": "two", "ttl": 120, "delay": 30}]})
    # Then 201 names each message, as a queue post does
    assert resp.status_code == 201
    hrefs = resp.json()["resources"]
    ids = [href.rsplit("/", 1)[1] for href in hrefs]
    assert hrefs == [topic(name, "messages", mid) for mid in ids]
    assert resp.headers["location"] == topic(name, "messages") + "?ids=" + ",".join(ids)
    # And every webhook gets each message, with its id and topic, the topic's ttl by default
    expected = [
        {"body": {"n": 1}, "ttl": 300, "Message_Type": "Notification", "topic_name": name,
         "message_id": ids[0]},
        {"body": "two", "ttl": 120, "Message_Type": "Notification", "topic_name": name,
         "message_id": ids[1]},
    ]
    for hook in hooks:
        hits = await hook.wait_for(2, within=30)
        assert sorted((h.json() for h in hits), key=lambda d: d["message_id"]) == sorted(
            expected, key=lambda d: d["message_id"])
    # And the queue subscriber gets each message once, at once (a topic delays nothing)
    await eventually(lambda: _has(client, target, 2), f"{target} got the messages")
    assert sorted(map(str, await queue_bodies(client, target))) == ["two", "{'n': 1}"]


async def _has(client: httpx.AsyncClient, queue: str, count: int) -> bool:
    return len(await queue_bodies(client, queue)) >= count


async def test_post_to_an_absent_topic_creates_it(client: httpx.AsyncClient) -> None:
    name = new_topic()
    assert len(await publish(client, name, 1, 2)) == 2
    assert (await client.get(topic(name))).json() == DEFAULTS


async def test_filter_policies_apply_to_topic_subscriptions(
    client: httpx.AsyncClient, receiver_factory: Callable[..., Awaitable[Receiver]]
) -> None:
    name, target = new_topic(), new_queue()
    everything, eu_only = await receiver_factory(), await receiver_factory()
    policy = {"region": [{"prefix": "eu-"}], "total": [{"numeric": [">", 10]}]}
    await subscribe(client, name, everything.url())
    await subscribe(client, name, eu_only.url(), options={"filter_policy": policy})
    await subscribe(client, name, f"queue://{target}", options={"filter_policy": policy})
    bodies = [{"region": "eu-west", "total": 50, "n": 0}, {"region": "us-east", "total": 50},
              {"region": "eu-north", "total": 5}, "not an object",
              {"region": "eu-south", "total": 11, "n": 1}]
    await publish(client, name, *bodies)
    await everything.wait_for(len(bodies), within=30)
    hits = await eu_only.wait_for(2, within=30)
    await eventually(lambda: _has(client, target, 2), f"{target} got the matching messages")
    # Only the matching messages reached the filtered subscribers: the others were never
    # stored for them (the policy is applied before the outbox write)
    assert sorted(h.json()["body"]["n"] for h in hits) == [0, 1]
    assert sorted(b["n"] for b in await queue_bodies(client, target)) == [0, 1]
    assert len(eu_only.hits) == 2
    # A bad policy is refused as on a queue
    resp = await post_json(client, topic(name, "subscriptions"), {
        "subscriber": DEAD_HOOK, "options": {"filter_policy": {"k": "not a list"}}})
    assert resp.status_code == 400
    assert resp.json()["description"].startswith("options.filter_policy.k")


async def test_stats_count_pending_deliveries_and_purge_drops_them(
    client: httpx.AsyncClient,
) -> None:
    name = new_topic()
    # Given two subscribers nobody answers, retried far apart
    subs = [await subscribe(client, name, f"{DEAD_HOOK}/{n}",
                            options={"_retry_policy": SLOW_RETRIES}) for n in range(2)]
    # When three messages are posted: the 201 comes once the six deliveries are stored
    await publish(client, name, 1, 2, 3)
    stats = (await client.get(topic(name, "stats"))).json()
    assert stats == {"messages": {"claimed": 0, "free": 6, "total": 6}}
    # When the messages are purged, the deliveries go and the subscriptions stay
    resp = await post_json(client, topic(name, "purge"), {"resource_types": ["messages"]})
    assert resp.status_code == 204
    assert (await client.get(topic(name, "stats"))).json() == {
        "messages": {"claimed": 0, "free": 0, "total": 0}}
    listed = (await client.get(topic(name, "subscriptions"))).json()["subscriptions"]
    assert sorted(s["id"] for s in listed) == sorted(subs)
    # When the subscriptions are purged, they go, and the topic stays
    await publish(client, name, 4)
    resp = await post_json(client, topic(name, "purge"), {"resource_types": ["subscriptions"]})
    assert resp.status_code == 204
    assert (await client.get(topic(name, "subscriptions"))).json() == {
        "subscriptions": [], "links": []}
    assert (await client.get(topic(name, "stats"))).json()["messages"]["total"] == 0
    assert (await client.get(topic(name))).status_code == 200
    # An empty purge removes both
    sid = await subscribe(client, name, DEAD_HOOK, options={"_retry_policy": SLOW_RETRIES})
    await publish(client, name, 5)
    assert (await client.post(topic(name, "purge"))).status_code == 204
    assert (await client.get(topic(name, "subscriptions", sid))).status_code == 404


async def test_delete_removes_subscriptions_and_their_deliveries(
    client: httpx.AsyncClient,
) -> None:
    name = new_topic()
    sid = await subscribe(client, name, DEAD_HOOK, options={"_retry_policy": SLOW_RETRIES})
    await publish(client, name, 1)
    assert (await client.get(topic(name, "stats"))).json()["messages"]["total"] == 1
    assert (await client.delete(topic(name))).status_code == 204
    assert (await client.get(topic(name, "subscriptions", sid))).status_code == 404
    assert (await client.get(topic(name, "stats"))).json()["messages"]["total"] == 0
    # A topic made again starts without them
    assert (await client.put(topic(name))).status_code == 201
    assert (await client.get(topic(name, "subscriptions"))).json()["subscriptions"] == []


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({}, error_body(BAD_API, "No messages were found in the request body.")),
        ({"messages": []}, error_body(BAD_API, "No messages to enqueu.")),
        ({"messages": {"body": 1}}, error_body(BAD_BODY, "Document type not supported.")),
        ({"messages": [1]}, error_body(BAD_BODY, "Document type not supported.")),
        ({"messages": [{"ttl": 60}]}, error_body(BAD_BODY, 'Missing "body" field.')),
        ({"messages": [{"body": 1, "ttl": 59}]}, error_body(
            BAD_API, "The TTL for a message may not exceed 1209600 seconds, and must be at "
            "least 60 seconds long.")),
        ({"messages": [{"body": 1, "ttl": "60"}]},
         error_body(BAD_BODY, 'The value of the "ttl" field must be a int.')),
        ({"messages": [{"body": 1, "delay": 901}]}, error_body(
            BAD_API, "The delay for a message may not exceed 900 seconds, and must be at "
            "least 0 seconds long.")),
        ({"messages": [{"body": 1, "group_id": "g"}]}, error_body(
            BAD_API, "group_id and dedup_id are not supported on topics (a topic keeps no "
            "order).")),
        ({"messages": [{"body": 1, "dedup_id": "d"}]}, error_body(
            BAD_API, "group_id and dedup_id are not supported on topics (a topic keeps no "
            "order).")),
    ],
)
async def test_post_refusals(
    client: httpx.AsyncClient, doc: dict[str, Any], expected: dict[str, str]
) -> None:
    name = new_topic()
    resp = await post_json(client, topic(name, "messages"), doc)
    assert (resp.status_code, resp.json()) == (400, expected)
    # A refused post creates no topic
    assert (await client.get(topic(name))).status_code == 404


async def test_post_size_follows_the_topic(client: httpx.AsyncClient) -> None:
    name = new_topic()
    await put_json(client, topic(name), {"_max_messages_post_size": 20})
    resp = await post_json(client, topic(name, "messages"),
                           {"messages": [{"body": "x" * 10}, {"body": "y" * 10}]})
    assert (resp.status_code, resp.json()) == (400, error_body(
        BAD_API, "Message collection size is too large. Max size 20"))
    assert len(await publish(client, name, "x" * 8)) == 1
    # And the body of the request itself is bounded as a queue post's
    resp = await client.post(topic(name, "messages"), content=b'{"messages": [{"body": "'
                             + b"z" * 262144 + b'"}]}')
    assert resp.status_code == 400


# Subscriptions ---------------------------------------------------------------------------------


async def test_subscription_lifecycle(client: httpx.AsyncClient) -> None:
    name = new_topic()
    sid = await subscribe(client, name, DEAD_HOOK, ttl=600)
    got = await client.get(topic(name, "subscriptions", sid))
    assert got.status_code == 200
    doc = got.json()
    assert (doc["id"], doc["source"], doc["subscriber"], doc["ttl"]) == (sid, name, DEAD_HOOK, 600)
    listed = (await client.get(topic(name, "subscriptions"))).json()
    assert listed == {"subscriptions": [doc], "links": [
        {"rel": "next", "href": f"{topic(name, 'subscriptions')}?marker={sid}"}]}
    # The same unconfirmed subscriber again: the same id
    again = await post_json(client, topic(name, "subscriptions"), {"subscriber": DEAD_HOOK})
    assert (again.status_code, again.json()) == (201, {"subscription_id": sid})
    assert (await client.patch(topic(name, "subscriptions", sid),
                               content=b'{"ttl": 7200}')).status_code == 204
    assert (await client.get(topic(name, "subscriptions", sid))).json()["ttl"] == 7200
    confirm = await client.put(topic(name, "subscriptions", sid, "confirm"),
                               content=b'{"confirmed": true}')
    assert confirm.status_code == 204
    assert (await client.get(topic(name, "subscriptions", sid))).json()["confirmed"] is True
    # A confirmed subscriber again: 409
    conflict = await post_json(client, topic(name, "subscriptions"), {"subscriber": DEAD_HOOK})
    assert conflict.status_code == 409
    assert conflict.json()["title"] == "Resource conflict"
    other = await subscribe(client, name, DEAD_HOOK + "/2")
    moved = await client.patch(topic(name, "subscriptions", other),
                               content=orjson.dumps({"subscriber": DEAD_HOOK}))
    assert moved.status_code == 409
    assert (await client.delete(topic(name, "subscriptions", sid))).status_code == 204
    assert (await client.delete(topic(name, "subscriptions", sid))).status_code == 204
    assert (await client.get(topic(name, "subscriptions", sid))).status_code == 404


@pytest.mark.parametrize(
    ("method", "rest", "content", "status", "expected"),
    [
        ("POST", (), b"{}", 400, error_body(BAD_API, "Missing parameter subscriber in body.")),
        ("POST", (), b'{"subscriber": "ftp://x"}', 400, None),
        ("POST", (), b'{"subscriber": "queue://bad!"}', 400, None),
        ("POST", (), b'{"subscriber": "trust+http://h/"}', 400, None),  # no-auth mode
        ("POST", (), b'{"subscriber": "http://h/", "ttl": 59}', 400, error_body(
            BAD_API, "The TTL for a subscription must be at least 60 seconds long.")),
        ("POST", (), b'{"subscriber": "http://h/", "options": []}', 400,
         error_body(BAD_API, "Options must be a dict.")),
        ("POST", (), b"not json", 400, error_body(BAD_BODY, "Request body could not be parsed.")),
        ("GET", ("?limit=21",), None, 400, error_body(
            BAD_API, "Limit must be at least 1 and may not be greater than 20.")),
        ("GET", ("00000000-0000-0000-0000-000000000000",), None, 404, None),
        ("PATCH", ("00000000-0000-0000-0000-000000000000",), b'{"ttl": 600}', 404, None),
        ("PUT", ("00000000-0000-0000-0000-000000000000", "confirm"), b'{"confirmed": true}',
         404, None),
        ("PUT", ("00000000-0000-0000-0000-000000000000", "confirm"), b'{}', 400, error_body(
            BAD_BODY, 'The request body must hold "confirmed": true or false.')),
    ],
)
async def test_subscription_refusals(
    client: httpx.AsyncClient, method: str, rest: tuple[str, ...], content: bytes | None,
    status: int, expected: dict[str, str] | None,
) -> None:
    name = new_topic()
    path = topic(name, "subscriptions")
    if rest and rest[0].startswith("?"):
        path += rest[0]
    elif rest:
        path = topic(name, "subscriptions", *rest)
    resp = await client.request(method, path, content=content)
    assert resp.status_code == status, resp.text
    if expected is not None:
        assert resp.json() == expected
    else:
        assert set(resp.json()) == {"title", "description"}


async def test_purge_refusals(client: httpx.AsyncClient) -> None:
    name = new_topic()
    for content, description in [
        (b'{"resource_types": ["claims"]}',
         "Resource types must be a sub set of {'messages', 'subscriptions'}."),
    ]:
        resp = await client.post(topic(name, "purge"), content=content)
        assert (resp.status_code, resp.json()) == (400, error_body(BAD_API, description))
    resp = await client.post(topic(name, "purge"), content=b'{"resource_types": "messages"}')
    assert (resp.status_code, resp.json()) == (400, error_body(
        BAD_BODY, 'The value of the "resource_types" field must be a list of strings.'))
    resp = await client.post(topic(name, "purge"), content=b"[1]")
    assert (resp.status_code, resp.json()) == (400, error_body(
        BAD_BODY, "Document type not supported."))


async def test_topic_routes_answer_json_only(client: httpx.AsyncClient) -> None:
    name = new_topic()
    for resp in [await client.get("/v2/topics", headers={"Accept": "text/plain"}),
                 await client.get(topic(name, "stats"), headers={"Accept": "text/plain"})]:
        assert (resp.status_code, resp.content) == (406, b"")
    resp = await client.put(topic(name), content=b"a=1",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 400


async def test_no_route_reads_a_topic_message(client: httpx.AsyncClient) -> None:
    name = new_topic()
    (mid,) = await publish(client, name, 1)
    assert (await client.get(topic(name, "messages", mid))).status_code == 404
    assert (await client.get(topic(name, "messages"))).status_code == 405
    assert (await client.post(topic(name, "claims"))).status_code == 404


# Confirmation ----------------------------------------------------------------------------------


async def test_topic_subscriptions_are_confirmed_through_their_own_signed_url(
    make_settings: Callable[..., Any],
    gateway_factory: Callable[..., Awaitable[httpx.AsyncClient]],
    receiver: Receiver,
) -> None:
    settings = make_settings(pooling=True, require_confirmation=True,
                             signed_url_secret="s3cret", public_url="https://zq.example/")
    async with running_services(settings):
        client = await gateway_factory(settings)
        name, target = new_topic(), new_queue()
        # When a webhook subscribes to a topic, it is asked to confirm on the topic's route
        sid = await subscribe(client, name, receiver.url())
        [hit] = await receiver.wait_for(1, within=30)
        doc = hit.json()
        path = f"/v2/topics/{name}/subscriptions/{sid}/confirm"
        assert (doc["Message_Type"], doc["URL-Paths"], doc["URL-Methods"]) == (
            "SubscriptionConfirmation", path, "PUT")
        assert doc["Message"] == f"You have chosen to subscribe to the topic: {name}"
        assert (doc["topic_name"], doc["WSGISubscribeURL"]) == (name, "https://zq.example" + path)
        assert "queue_name" not in doc
        # And a queue subscriber needs no confirmation
        await subscribe(client, name, f"queue://{target}")
        # Then a post reaches the queue, and nothing is stored for the unconfirmed webhook
        await publish(client, name, "early")
        await eventually(lambda: _has(client, target, 1), f"{target} got the message")
        assert (await client.get(topic(name, "stats"))).json()["messages"]["total"] == 0
        # When the pre-signed request confirms it (no other credentials)
        signed = {"Client-ID": CLIENT_ID, "X-Project-ID": doc["X-Project-ID"],
                  "URL-Signature": doc["URL-Signature"], "URL-Methods": doc["URL-Methods"],
                  "URL-Paths": doc["URL-Paths"], "URL-Expires": doc["URL-Expires"],
                  "Content-Type": "application/json"}
        anonymous = await gateway_factory(settings, headers=signed)
        resp = await anonymous.put(path, content=orjson.dumps(doc["SubscribeBody"]))
        assert resp.status_code == 204
        # The signature is good for that path only
        other = await anonymous.put(f"/v2/queues/{name}/subscriptions/{sid}/confirm",
                                    content=b'{"confirmed": true}')
        assert other.status_code == 404
        # Then later posts reach the webhook
        (mid,) = await publish(client, name, "late")
        hits = await receiver.wait_for(2, within=30)
        assert hits[1].json()["message_id"] == mid
        # And revoking sends an UnsubscribeConfirmation naming the topic
        resp = await client.put(path, content=b'{"confirmed": false}')
        assert resp.status_code == 204
        hits = await receiver.wait_for(3, within=30)
        assert hits[2].json()["Message"].startswith(
            f"You have unsubscribed successfully to the topic: {name}")
