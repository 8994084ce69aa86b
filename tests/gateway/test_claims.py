"""Claim routes against real queue_svc and message_svc (contract §2, §4; transcripts)."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest

from tests.gateway.conftest import PROJECT, error_body, new_queue

TTL_ERROR = (
    "The TTL for a claim may not exceed 43200 seconds, and must be at least 60 seconds long."
)
GRACE_ERROR = (
    "The grace for a claim may not exceed 43200 seconds, and must be at least 60 seconds long."
)


async def queue_with(client: httpx.AsyncClient, *bodies: object, ttl: int = 300) -> str:
    queue = new_queue()
    doc = {"messages": [{"ttl": ttl, "body": b} for b in bodies]}
    resp = await client.post(f"/v2/queues/{queue}/messages", content=orjson.dumps(doc))
    assert resp.status_code == 201
    return queue


async def claim(
    client: httpx.AsyncClient, queue: str, query: str = "", body: object = None
) -> httpx.Response:
    content = b"" if body is None else orjson.dumps(body)
    return await client.post(f"/v2/queues/{queue}/claims{query}", content=content)


async def test_claim_lifecycle(client: httpx.AsyncClient) -> None:
    # Given four messages
    queue = await queue_with(client, {"n": 1}, {"n": 2}, {"n": 3}, {"n": 4})
    # When two are claimed
    created = await claim(client, queue, "?limit=2", {"ttl": 120, "grace": 60})
    # Then 201 returns them with claim hrefs, and Location names the claim
    assert created.status_code == 201
    location = created.headers["location"]
    claim_id = location.rsplit("/", 1)[1]
    assert location == f"/v2/queues/{queue}/claims/{claim_id}"
    messages = created.json()["messages"]
    assert [m["body"] for m in messages] == [{"n": 1}, {"n": 2}]
    for m in messages:
        assert m["href"] == f"/v2/queues/{queue}/messages/{m['id']}?claim_id={claim_id}"
        assert set(m) == {"id", "href", "ttl", "age", "body"}
    # And the claim can be read back
    got = await client.get(location)
    assert got.status_code == 200
    doc = got.json()
    assert list(doc) == ["age", "ttl", "messages", "href"]
    assert (doc["ttl"], doc["href"]) == (120, location)
    assert doc["messages"] == messages
    # And a claimed message's own href carries the claim
    one = await client.get(f"/v2/queues/{queue}/messages/{messages[0]['id']}")
    assert one.json()["href"].endswith(f"?claim_id={claim_id}")
    # When it is renewed
    renewed = await client.patch(location, content=b'{"ttl": 200, "grace": 60}')
    assert renewed.status_code == 204
    assert renewed.headers["content-length"] == "0"
    assert (await client.get(location)).json()["ttl"] == 200
    # When it is released
    released = await client.delete(location)
    assert released.status_code == 204
    assert released.headers["content-length"] == "0"
    # Then it is gone and its messages are claimable again
    gone = await client.get(location)
    assert gone.status_code == 404
    assert gone.json() == error_body(
        "Not found",
        f"Claim {claim_id} does not exist in queue {queue} for project {PROJECT}",
    )
    again = await claim(client, queue, "?limit=1")
    assert again.json()["messages"][0]["body"] == {"n": 1}


async def test_claimed_messages_are_hidden_from_listing(client: httpx.AsyncClient) -> None:
    queue = await queue_with(client, 1, 2)
    claimed = (await claim(client, queue, "?limit=1")).json()["messages"][0]
    listed = await client.get(f"/v2/queues/{queue}/messages?echo=true")
    assert [m["body"] for m in listed.json()["messages"]] == [2]
    with_claimed = await client.get(f"/v2/queues/{queue}/messages?echo=true&include_claimed=true")
    hrefs = {m["id"]: m["href"] for m in with_claimed.json()["messages"]}
    assert hrefs[claimed["id"]] == claimed["href"]


async def test_no_message_is_in_two_live_claims(client: httpx.AsyncClient) -> None:
    queue = await queue_with(client, 1, 2, 3)
    first = (await claim(client, queue, "?limit=2")).json()["messages"]
    second = (await claim(client, queue, "?limit=2")).json()["messages"]
    assert [m["body"] for m in first] == [1, 2]
    assert [m["body"] for m in second] == [3]


async def test_nothing_claimable_is_204_without_body(client: httpx.AsyncClient) -> None:
    resp = await claim(client, new_queue(), "?limit=1", {"ttl": 120})
    assert resp.status_code == 204
    assert resp.headers["content-length"] == "0"
    assert resp.content == b""
    assert "location" not in resp.headers


async def test_claim_defaults_with_empty_body(client: httpx.AsyncClient) -> None:
    queue = await queue_with(client, 1)
    created = await claim(client, queue)
    assert created.status_code == 201
    doc = (await client.get(created.headers["location"])).json()
    assert doc["ttl"] == 300


async def test_claim_extends_short_message_ttl(client: httpx.AsyncClient) -> None:
    queue = await queue_with(client, "hello", ttl=60)
    created = await claim(client, queue, body={"ttl": 300, "grace": 60})
    assert created.json()["messages"][0]["ttl"] == 360


@pytest.mark.parametrize(
    ("body", "description"),
    [
        ({"ttl": 10}, TTL_ERROR),
        ({"ttl": 43201}, TTL_ERROR),
        ({"ttl": 120, "grace": 30}, GRACE_ERROR),
        ({"ttl": 120, "grace": 43201}, GRACE_ERROR),
    ],
)
async def test_claim_ranges(client: httpx.AsyncClient, body: object, description: str) -> None:
    queue = await queue_with(client, 1)
    resp = await claim(client, queue, "?limit=2", body)
    assert resp.status_code == 400
    assert resp.json() == error_body("Invalid API request", description)


@pytest.mark.parametrize("limit", ["0", "21"])
async def test_claim_limit_range(client: httpx.AsyncClient, limit: str) -> None:
    resp = await claim(client, new_queue(), f"?limit={limit}")
    assert resp.status_code == 400
    assert resp.json() == error_body(
        "Invalid API request", "Limit must be at least 1 and may not be greater than 20."
    )


async def test_renew_ranges(client: httpx.AsyncClient) -> None:
    queue = await queue_with(client, 1)
    location = (await claim(client, queue)).headers["location"]
    resp = await client.patch(location, content=b'{"ttl": 10}')
    assert resp.status_code == 400
    assert resp.json() == error_body("Invalid API request", TTL_ERROR)


async def test_unknown_claims(client: httpx.AsyncClient) -> None:
    queue = await queue_with(client, 1)
    path = f"/v2/queues/{queue}/claims/{uuid.uuid4()}"
    assert (await client.get(path)).status_code == 404
    renew = await client.patch(path, content=b'{"ttl": 120}')
    assert renew.status_code == 404
    assert renew.json()["title"] == "Not found"
    assert (await client.delete(path)).status_code == 204
