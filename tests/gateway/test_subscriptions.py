"""Subscription routes against real notifier_svc (contract §2, §4, §5), every route and 4xx."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.gateway.conftest import error_body, new_queue

# Nothing listens there: these tests post no messages, so nothing is delivered.
HOOK = "http://127.0.0.1:9/hook"
KEYS = {"id", "source", "subscriber", "ttl", "age", "options", "confirmed"}


def path(queue: str, *rest: str) -> str:
    return "/".join([f"/v2/queues/{queue}/subscriptions", *rest])


async def subscribe(client: httpx.AsyncClient, queue: str, **doc: Any) -> httpx.Response:
    return await client.post(path(queue), content=orjson.dumps({"subscriber": HOOK, **doc}))


async def test_subscription_lifecycle(client: httpx.AsyncClient) -> None:
    queue = new_queue()
    # Given a subscription with a ttl and options
    created = await subscribe(client, queue, ttl=600, options={"post_data": "$zaqar_message$"})
    # Then 201 answers its id, and only that
    assert created.status_code == 201
    sid = created.json()["subscription_id"]
    assert created.json() == {"subscription_id": sid}
    # And it reads back with every field
    got = await client.get(path(queue, sid))
    assert got.status_code == 200
    doc = got.json()
    assert set(doc) == KEYS
    assert (doc["id"], doc["source"], doc["subscriber"], doc["ttl"]) == (sid, queue, HOOK, 600)
    assert doc["options"] == {"post_data": "$zaqar_message$"}
    assert isinstance(doc["age"], int) and isinstance(doc["confirmed"], bool)
    # And it is listed, with a next link
    listed = await client.get(path(queue))
    assert listed.status_code == 200
    (entry,) = listed.json()["subscriptions"]
    # (its age, in whole seconds, may have grown since it was read on a busy machine)
    assert entry["age"] >= doc["age"]
    assert listed.json() == {
        "subscriptions": [{**doc, "age": entry["age"]}],
        "links": [{"rel": "next", "href": f"{path(queue)}?marker={sid}"}],
    }
    # When updated
    patched = await client.patch(path(queue, sid), content=orjson.dumps({"ttl": 7200}))
    # Then 204, and the change shows
    assert patched.status_code == 204
    assert patched.headers["content-length"] == "0"
    assert (await client.get(path(queue, sid))).json()["ttl"] == 7200
    # When confirmed, it says so, and subscribing the same endpoint again is a conflict
    confirm = await client.put(path(queue, sid, "confirm"), content=b'{"confirmed": true}')
    assert confirm.status_code == 204
    assert (await client.get(path(queue, sid))).json()["confirmed"] is True
    again = await subscribe(client, queue)
    assert again.status_code == 409
    assert again.json()["title"] == "Resource conflict"
    # When deleted, it is gone, and deleting again is still 204
    assert (await client.delete(path(queue, sid))).status_code == 204
    assert (await client.get(path(queue, sid))).status_code == 404
    assert (await client.delete(path(queue, sid))).status_code == 204
    assert (await client.get(path(queue))).json() == {"subscriptions": [], "links": []}


async def test_unconfirmed_subscriber_again_gets_the_same_id(client: httpx.AsyncClient) -> None:
    queue = new_queue()
    first = await subscribe(client, queue)
    again = await subscribe(client, queue)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()


async def test_list_pages_follow_next_links(client: httpx.AsyncClient) -> None:
    queue = new_queue()
    ids = []
    for n in range(3):
        resp = await client.post(path(queue), content=orjson.dumps({"subscriber": f"{HOOK}/{n}"}))
        ids.append(resp.json()["subscription_id"])
    seen: list[str] = []
    href = path(queue) + "?limit=2"
    pages = 0
    while True:
        page = (await client.get(href)).json()
        pages += 1
        if not page["subscriptions"]:
            assert page["links"] == []
            break
        seen += [s["id"] for s in page["subscriptions"]]
        href = page["links"][0]["href"]
        assert "limit=2" in href
    assert (sorted(seen), pages) == (sorted(ids), 3)


async def test_absent_subscription(client: httpx.AsyncClient) -> None:
    queue = new_queue()
    sid = "00000000-0000-0000-0000-000000000000"
    for resp in [
        await client.get(path(queue, sid)),
        await client.patch(path(queue, sid), content=b'{"ttl": 600}'),
        await client.put(path(queue, sid, "confirm"), content=b'{"confirmed": true}'),
    ]:
        assert resp.status_code == 404
        assert resp.json()["title"] == "Not found"


BAD_BODY = "Invalid request body"
NO_SUBSCRIBER = error_body("Invalid API request", "Missing parameter subscriber in body.")
NOT_CONFIRMED = error_body(BAD_BODY, 'The request body must hold "confirmed": true or false.')
NOT_OBJECT = error_body(BAD_BODY, "Document type not supported.")
TTL_NOT_INT = error_body(BAD_BODY, 'The value of the "ttl" field must be a int.')


@pytest.mark.parametrize(
    ("method", "rest", "content", "expected"),
    [
        ("POST", (), b"not json", error_body(BAD_BODY, "Request body could not be parsed.")),
        ("POST", (), b"[1]", NOT_OBJECT),
        ("POST", (), b"{}", NO_SUBSCRIBER),
        ("POST", (), b"", NO_SUBSCRIBER),
        (
            "POST",
            (),
            b'{"subscriber": 5}',
            error_body(BAD_BODY, 'The value of the "subscriber" field must be a str.'),
        ),
        ("POST", (), b'{"subscriber": "http://h", "ttl": "x"}', TTL_NOT_INT),
        ("PATCH", ("sid",), b"[1]", NOT_OBJECT),
        ("PATCH", ("sid",), b'{"ttl": 1.5}', TTL_NOT_INT),
        ("PUT", ("sid", "confirm"), b"", NOT_CONFIRMED),
        ("PUT", ("sid", "confirm"), b'{"confirmed": "yes"}', NOT_CONFIRMED),
    ],
)
async def test_bodies_are_checked_by_the_gateway(
    client: httpx.AsyncClient,
    method: str,
    rest: tuple[str, ...],
    content: bytes,
    expected: dict[str, str],
) -> None:
    resp = await client.request(method, path(new_queue(), *rest), content=content)
    assert resp.status_code == 400
    assert resp.json() == expected


@pytest.mark.parametrize(
    ("doc", "description"),
    [
        ({"subscriber": "ftp://h/x"}, "The subscriber type of subscription must be supported"),
        ({"subscriber": "http://"}, "The subscriber http:// has no host."),
        ({"subscriber": HOOK, "ttl": 10}, "The TTL for a subscription must be at least 60"),
        ({"subscriber": HOOK, "options": [1]}, "Options must be a dict."),
    ],
)
async def test_subscriptions_are_checked_by_the_service(
    client: httpx.AsyncClient, doc: dict[str, Any], description: str
) -> None:
    resp = await client.post(path(new_queue()), content=orjson.dumps(doc))
    assert resp.status_code == 400
    assert resp.json()["title"] == "Invalid API request"
    assert resp.json()["description"].startswith(description)


async def test_other_service_checks(client: httpx.AsyncClient) -> None:
    queue = new_queue()
    sid = (await subscribe(client, queue)).json()["subscription_id"]
    # Nothing to change
    empty = await client.patch(path(queue, sid), content=b"{}")
    assert (empty.status_code, empty.json()["title"]) == (400, "Invalid API request")
    # Page limits
    for limit in (0, 21):
        resp = await client.get(path(queue) + f"?limit={limit}")
        assert resp.status_code == 400
        assert resp.json()["description"].startswith("Limit must be at least 1")
    # Queue names
    bad = await client.get(path("bad%20name"))
    assert (bad.status_code, bad.json()["title"]) == (400, "Invalid queue identification")
