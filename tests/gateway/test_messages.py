"""Message routes against real queue_svc and message_svc (contract §2, §4; transcripts)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable

import httpx
import orjson
import pytest

from services.common.config import Settings
from tests.gateway.conftest import (
    CLIENT_ID,
    PROJECT,
    GatewayFactory,
    error_body,
    new_queue,
    running_services,
)

LIMIT_ERROR = error_body(
    "Invalid API request", "Limit must be at least 1 and may not be greater than 20."
)
OTHER_CLIENT = {"Client-ID": str(uuid.uuid4())}


async def post(client: httpx.AsyncClient, queue: str, *messages: object) -> list[str]:
    resp = await client.post(
        f"/v2/queues/{queue}/messages", content=orjson.dumps({"messages": list(messages)})
    )
    assert resp.status_code == 201, resp.text
    return [href.rsplit("/", 1)[1] for href in resp.json()["resources"]]


async def test_post_answers_hrefs_and_location(client: httpx.AsyncClient) -> None:
    # Given a queue that does not exist yet
    queue = new_queue()
    # When three messages are posted
    resp = await client.post(
        f"/v2/queues/{queue}/messages",
        content=b'{"messages":[{"ttl":300,"body":{"event":"BackupStarted","n":1}},'
        b'{"ttl":60,"body":"hello"},{"body":[1,2,3]}]}',
    )
    # Then 201 lists their hrefs, and Location names them all
    assert resp.status_code == 201
    hrefs = resp.json()["resources"]
    assert len(hrefs) == 3
    ids = [h.rsplit("/", 1)[1] for h in hrefs]
    assert hrefs == [f"/v2/queues/{queue}/messages/{i}" for i in ids]
    assert resp.headers["location"] == f"/v2/queues/{queue}/messages?ids=" + ",".join(ids)
    # And the queue now exists
    listed = await client.get("/v2/queues?limit=20&name=" + queue)
    assert [q["name"] for q in listed.json()["queues"]] == [queue]


async def test_listing_with_echo(client: httpx.AsyncClient) -> None:
    # Given three messages of this client
    queue = new_queue()
    ids = await post(
        client,
        queue,
        {"ttl": 300, "body": {"event": "BackupStarted", "n": 1}},
        {"ttl": 60, "body": "hello"},
        {"body": [1, 2, 3]},
    )
    # When listed with echo
    resp = await client.get(f"/v2/queues/{queue}/messages?echo=true")
    # Then they come in order with the queue's default ttl where none was given
    assert resp.status_code == 200
    doc = resp.json()
    assert [(m["id"], m["ttl"], m["body"]) for m in doc["messages"]] == [
        (ids[0], 300, {"event": "BackupStarted", "n": 1}),
        (ids[1], 60, "hello"),
        (ids[2], 3600, [1, 2, 3]),
    ]
    for message in doc["messages"]:
        assert set(message) == {"id", "href", "ttl", "age", "body"}
        assert message["href"] == f"/v2/queues/{queue}/messages/{message['id']}"
        assert isinstance(message["age"], int)
    assert doc["links"][0]["rel"] == "next"
    assert doc["links"][0]["href"].startswith(f"/v2/queues/{queue}/messages?echo=true&marker=")


async def test_own_messages_are_hidden_without_echo(client: httpx.AsyncClient) -> None:
    queue = new_queue()
    await post(client, queue, {"body": 1})
    own = await client.get(f"/v2/queues/{queue}/messages")
    assert own.status_code == 200
    assert own.json() == {"messages": [], "links": []}
    # The undashed spelling of the same Client-ID is the same client
    undashed = await client.get(
        f"/v2/queues/{queue}/messages", headers={"Client-ID": uuid.UUID(CLIENT_ID).hex}
    )
    assert undashed.json() == {"messages": [], "links": []}
    other = await client.get(f"/v2/queues/{queue}/messages", headers=OTHER_CLIENT)
    assert len(other.json()["messages"]) == 1


async def test_listing_pages_follow_next_links(client: httpx.AsyncClient) -> None:
    queue = new_queue()
    ids = await post(client, queue, *({"body": n} for n in range(5)))
    seen: list[str] = []
    href: str | None = f"/v2/queues/{queue}/messages?limit=2&echo=true"
    pages = 0
    while href:
        doc = (await client.get(href)).json()
        pages += 1
        seen += [m["id"] for m in doc["messages"]]
        href = doc["links"][0]["href"] if doc["links"] else None
        if href:
            assert "limit=2" in href
    assert seen == ids
    assert pages == 4  # 2 + 2 + 1 + the empty page that ends it


@pytest.mark.parametrize("marker", [str(2**63 - 1), str(2**63), "9" * 19])
async def test_a_marker_past_every_seq_gives_an_empty_page(
    client: httpx.AsyncClient, marker: str
) -> None:
    # Given a queue with messages
    queue = new_queue()
    await post(client, queue, {"body": 1})
    # When it is listed after a marker as large as a seq can be, or larger
    resp = await client.get(f"/v2/queues/{queue}/messages?echo=true&marker={marker}")
    # Then the page is empty on every store
    assert resp.status_code == 200
    assert resp.json() == {"messages": [], "links": []}


async def test_absent_queue_lists_empty(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v2/queues/nope-nothing/messages")
    assert resp.json() == {"messages": [], "links": []}


@pytest.mark.parametrize("limit", ["0", "21"])
async def test_list_limit_range(client: httpx.AsyncClient, limit: str) -> None:
    resp = await client.get(f"/v2/queues/{new_queue()}/messages?limit={limit}")
    assert resp.status_code == 400
    assert resp.json() == LIMIT_ERROR


async def test_bodies_round_trip_exactly(client: httpx.AsyncClient) -> None:
    body = {"big": 9007199254740993, "f": 1.5, "u": "žluťoučký ☃", "n": None, "l": [True, {}]}
    queue = new_queue()
    [mid] = await post(client, queue, {"body": body})
    resp = await client.get(f"/v2/queues/{queue}/messages/{mid}")
    assert orjson.loads(resp.content)["body"] == body
    assert b"9007199254740993" in resp.content


async def test_get_one_and_absent(client: httpx.AsyncClient) -> None:
    queue = new_queue()
    [mid] = await post(client, queue, {"ttl": 120, "body": {"n": 1}})
    resp = await client.get(f"/v2/queues/{queue}/messages/{mid}")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["id"] == mid
    assert doc["href"] == f"/v2/queues/{queue}/messages/{mid}"
    assert (doc["ttl"], doc["body"]) == (120, {"n": 1})
    missing = await client.get(f"/v2/queues/{queue}/messages/bogus-id")
    assert missing.status_code == 404
    assert missing.json() == error_body(
        "Not found", f"Message bogus-id does not exist in queue {queue} for project {PROJECT}"
    )


async def test_get_set_by_ids(client: httpx.AsyncClient) -> None:
    queue = new_queue()
    ids = await post(client, queue, {"body": 1}, {"body": 2}, {"body": 3})
    resp = await client.get(f"/v2/queues/{queue}/messages?ids={ids[0]},{ids[2]},nope")
    assert resp.status_code == 200
    doc = resp.json()
    assert set(doc) == {"messages"}
    assert sorted(m["body"] for m in doc["messages"]) == [1, 3]
    none = await client.get(f"/v2/queues/{queue}/messages?ids=nope,nada")
    assert none.status_code == 404
    assert none.json()["title"] == "Not found"


async def test_bulk_delete_by_ids(client: httpx.AsyncClient) -> None:
    queue = new_queue()
    ids = await post(client, queue, {"body": 1}, {"body": 2}, {"body": 3})
    resp = await client.delete(f"/v2/queues/{queue}/messages?ids={ids[0]},{ids[1]}")
    assert resp.status_code == 204
    assert resp.headers["content-length"] == "0"
    left = await client.get(f"/v2/queues/{queue}/messages?echo=true")
    assert [m["id"] for m in left.json()["messages"]] == [ids[2]]


async def test_bulk_delete_includes_claimed_messages(client: httpx.AsyncClient) -> None:
    queue = new_queue()
    ids = await post(client, queue, {"body": 1}, {"body": 2})
    await client.post(f"/v2/queues/{queue}/claims?limit=1", content=b"{}")
    resp = await client.delete(f"/v2/queues/{queue}/messages?ids={','.join(ids)}")
    assert resp.status_code == 204
    stats = (await client.get(f"/v2/queues/{queue}/stats")).json()
    assert stats["messages"]["total"] == 0


async def test_pop(client: httpx.AsyncClient) -> None:
    # Given three messages, the first claimed
    queue = new_queue()
    ids = await post(client, queue, *({"ttl": 300, "body": {"n": n}} for n in (1, 2, 3)))
    await client.post(f"/v2/queues/{queue}/claims?limit=1", content=b"{}")
    # When one is popped
    resp = await client.delete(f"/v2/queues/{queue}/messages?pop=1")
    # Then the oldest unclaimed comes back in pop's own shape, and is gone
    assert resp.status_code == 200
    [popped] = resp.json()["messages"]
    assert set(popped) == {"id", "age", "ttl", "body", "claim_id", "claim_count"}
    assert (popped["id"], popped["body"], popped["ttl"]) == (ids[1], {"n": 2}, 300)
    gone = await client.get(f"/v2/queues/{queue}/messages/{ids[1]}")
    assert gone.status_code == 404


async def test_pop_of_empty_queue(client: httpx.AsyncClient) -> None:
    resp = await client.delete(f"/v2/queues/{new_queue()}/messages?pop=5")
    assert resp.status_code == 200
    assert resp.json() == {"messages": []}


@pytest.mark.parametrize("pop", ["0", "21"])
async def test_pop_range(client: httpx.AsyncClient, pop: str) -> None:
    resp = await client.delete(f"/v2/queues/{new_queue()}/messages?pop={pop}")
    assert resp.status_code == 400


async def test_delete_one_is_idempotent(client: httpx.AsyncClient) -> None:
    queue = new_queue()
    [mid] = await post(client, queue, {"body": 1})
    for _ in range(2):
        resp = await client.delete(f"/v2/queues/{queue}/messages/{mid}")
        assert resp.status_code == 204
        assert resp.headers["content-length"] == "0"


async def test_claimed_message_delete_rules(client: httpx.AsyncClient) -> None:
    # Given a claimed message and an unclaimed one
    queue = new_queue()
    claimed_id, free_id = await post(client, queue, {"body": 1}, {"body": 2})
    claim = await client.post(f"/v2/queues/{queue}/claims?limit=1", content=b"{}")
    claim_id = claim.headers["location"].rsplit("/", 1)[1]
    path = f"/v2/queues/{queue}/messages/{claimed_id}"
    # Then deleting the claimed one without its claim is 403
    no_claim = await client.delete(path)
    assert no_claim.status_code == 403
    assert no_claim.json() == error_body(
        "Unable to delete",
        "This message is claimed; it cannot be deleted without a valid claim ID.",
    )
    # And with another claim's id it is 403 too
    wrong = await client.delete(path + "?claim_id=" + str(uuid.uuid4()))
    assert wrong.status_code == 403
    assert wrong.json()["title"] == "Unable to delete"
    # And a claim id given for an unclaimed message is 400
    unclaimed = await client.delete(f"/v2/queues/{queue}/messages/{free_id}?claim_id={claim_id}")
    assert unclaimed.status_code == 400
    assert unclaimed.json()["title"] == "Unable to delete"
    # And with its own claim id the delete succeeds
    ok = await client.delete(path + "?claim_id=" + claim_id)
    assert ok.status_code == 204
    assert (await client.get(path)).status_code == 404


@pytest.mark.parametrize(
    ("message", "description"),
    [
        (
            {"ttl": 10, "body": 1},
            "The TTL for a message may not exceed 1209600 seconds, "
            "and must be at least 60 seconds long.",
        ),
        (
            {"ttl": 1209601, "body": 1},
            "The TTL for a message may not exceed 1209600 seconds, "
            "and must be at least 60 seconds long.",
        ),
        (
            {"ttl": 2**40, "body": 1},
            "The TTL for a message may not exceed 1209600 seconds, "
            "and must be at least 60 seconds long.",
        ),
    ],
)
async def test_message_ttl_range(
    client: httpx.AsyncClient, message: object, description: str
) -> None:
    resp = await client.post(
        f"/v2/queues/{new_queue()}/messages", content=orjson.dumps({"messages": [message]})
    )
    assert resp.status_code == 400
    assert resp.json() == error_body("Invalid API request", description)


@pytest.mark.parametrize("delay", [-1, 901])
async def test_message_delay_range(client: httpx.AsyncClient, delay: int) -> None:
    resp = await client.post(
        f"/v2/queues/{new_queue()}/messages",
        content=orjson.dumps({"messages": [{"body": 1, "delay": delay}]}),
    )
    assert resp.status_code == 400
    assert resp.json()["title"] == "Invalid API request"


async def test_empty_message_list(client: httpx.AsyncClient) -> None:
    resp = await client.post(f"/v2/queues/{new_queue()}/messages", content=b'{"messages":[]}')
    assert resp.status_code == 400
    assert resp.json() == error_body("Invalid API request", "No messages to enqueu.")


async def test_queue_post_size_limit(client: httpx.AsyncClient) -> None:
    # Given a queue that takes at most 100 bytes per post
    queue = new_queue()
    await client.put(f"/v2/queues/{queue}", content=b'{"_max_messages_post_size": 100}')
    # When a bigger batch is posted
    resp = await client.post(
        f"/v2/queues/{queue}/messages",
        content=orjson.dumps({"messages": [{"body": "x" * 200}]}),
    )
    # Then it is refused
    assert resp.status_code == 400
    assert resp.json()["title"] == "Invalid API request"


async def test_post_to_bad_queue_name(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v2/queues/bad%20name/messages", content=b'{"messages":[{"body":1}]}')
    assert resp.status_code == 400
    assert resp.json()["title"] == "Invalid queue identification"


async def test_ids_may_be_repeated_parameters(client: httpx.AsyncClient) -> None:
    # Given messages addressed as python-zaqarclient does: ids=a&ids=b
    queue = new_queue()
    ids = await post(client, queue, {"body": 1}, {"body": 2}, {"body": 3})
    query = "&".join(f"ids={i}" for i in ids[:2])
    # Then the set read and the bulk delete see every id
    got = await client.get(f"/v2/queues/{queue}/messages?{query}")
    assert sorted(m["body"] for m in got.json()["messages"]) == [1, 2]
    deleted = await client.delete(f"/v2/queues/{queue}/messages?{query}&ids={ids[2]}")
    assert deleted.status_code == 204
    assert (await client.get(f"/v2/queues/{queue}/messages?{query}")).status_code == 404


async def test_checksums_when_enabled(
    make_settings: Callable[..., Settings], gateway_factory: GatewayFactory
) -> None:
    # Given services that add checksums
    async with running_services(make_settings(message_checksum=True)) as settings:
        client = await gateway_factory(settings)
        queue = new_queue()
        [mid] = await post(client, queue, {"body": {"n": 1}})
        # Then every message rendering carries the MD5 of its JSON body
        one = (await client.get(f"/v2/queues/{queue}/messages/{mid}")).json()
        assert one["checksum"] == "MD5:" + hashlib.md5(b'{"n":1}').hexdigest()
        listed = (await client.get(f"/v2/queues/{queue}/messages?echo=true")).json()
        assert listed["messages"][0]["checksum"] == one["checksum"]
        await client.aclose()
