"""Queue routes against real queue_svc and message_svc (contract §2, §3; transcripts)."""

from __future__ import annotations

import re

import httpx
import orjson
import pytest

from tests.gateway.conftest import PATCH_TYPE, error_body, new_queue

DEFAULTS = {
    "_max_messages_post_size": 262144,
    "_default_message_ttl": 3600,
    "_default_message_delay": 0,
    "_dead_letter_queue": None,
    "_dead_letter_queue_messages_ttl": None,
    "_max_claim_count": None,
    "_enable_encrypt_messages": False,
}
LIMIT_ERROR = error_body(
    "Invalid API request", "Limit must be at least 1 and may not be greater than 20."
)


async def patch(client: httpx.AsyncClient, path: str, ops: object) -> httpx.Response:
    return await client.patch(path, content=orjson.dumps(ops), headers={"Content-Type": PATCH_TYPE})


async def test_create_then_recreate(client: httpx.AsyncClient) -> None:
    # Given a queue name never used
    name = new_queue()
    # When it is created with metadata
    created = await client.put(
        f"/v2/queues/{name}",
        content=b'{"_max_messages_post_size": 262144, "_default_message_ttl": 3600, '
        b'"description": "demo"}',
    )
    # Then 201 with an empty JSON answer and its Location
    assert created.status_code == 201
    assert created.headers["location"] == f"/v2/queues/{name}"
    assert created.headers["content-length"] == "0"
    assert created.headers["content-type"] == "application/json"
    assert created.content == b""
    # And creating it again is 204 with the same Location
    again = await client.put(f"/v2/queues/{name}", content=b"{}")
    assert again.status_code == 204
    assert again.headers["location"] == f"/v2/queues/{name}"
    assert again.headers["content-length"] == "0"


async def test_create_without_body(client: httpx.AsyncClient) -> None:
    resp = await client.put(f"/v2/queues/{new_queue()}")
    assert resp.status_code == 201


async def test_get_fills_reserved_defaults(client: httpx.AsyncClient) -> None:
    name = new_queue()
    await client.put(f"/v2/queues/{name}", content=b'{"description": "demo"}')
    resp = await client.get(f"/v2/queues/{name}")
    assert resp.status_code == 200
    assert resp.json() == {**DEFAULTS, "description": "demo"}


async def test_absent_queue_answers_defaults(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v2/queues/nope")
    assert resp.status_code == 200
    assert resp.json() == DEFAULTS


@pytest.mark.parametrize("name", ["bad%20name", "x" * 65, "caf%C3%A9", "a:b"])
async def test_bad_queue_names(client: httpx.AsyncClient, name: str) -> None:
    resp = await client.put(f"/v2/queues/{name}", content=b"{}")
    assert resp.status_code == 400
    assert resp.json() == error_body(
        "Invalid queue identification",
        "The format of the submitted queue name or project id is not valid.",
    )


async def test_a_name_ending_in_a_newline_is_refused(client: httpx.AsyncClient) -> None:
    # Given a project of its own
    headers = {"X-Project-ID": "newline-" + new_queue()}
    # When a queue is created with an escaped newline at the end of its name
    resp = await client.put("/v2/queues/abc%0A", headers=headers, content=b"{}")
    # Then it is refused, and nothing is listed
    assert resp.status_code == 400
    assert resp.json() == error_body(
        "Invalid queue identification",
        "The format of the submitted queue name or project id is not valid.",
    )
    listed = await client.get("/v2/queues", headers=headers)
    assert listed.json()["queues"] == []


@pytest.mark.parametrize(
    "metadata",
    [
        {"_default_message_ttl": 10},
        {"_max_messages_post_size": 262145},
        {"_default_message_delay": 901},
    ],
)
async def test_reserved_metadata_out_of_range(
    client: httpx.AsyncClient, metadata: dict[str, int]
) -> None:
    resp = await client.put(f"/v2/queues/{new_queue()}", content=orjson.dumps(metadata))
    assert resp.status_code == 400
    assert resp.json()["title"] == "Invalid API request"


async def test_metadata_over_64k_is_refused(client: httpx.AsyncClient) -> None:
    big = orjson.dumps({"k": "x" * 65_600})
    resp = await client.put(f"/v2/queues/{new_queue()}", content=big)
    assert resp.status_code == 400


async def test_list_pages_with_next_links(client: httpx.AsyncClient) -> None:
    # Given three queues in a fresh project
    headers = {"X-Project-ID": "list-" + new_queue()}
    for name in ("qa", "qb", "qc"):
        await client.put(f"/v2/queues/{name}", headers=headers)
    # When they are listed two at a time
    first = (await client.get("/v2/queues?limit=2", headers=headers)).json()
    # Then each non-empty page links to the next with the original parameters
    assert first == {
        "queues": [
            {"name": "qa", "href": "/v2/queues/qa"},
            {"name": "qb", "href": "/v2/queues/qb"},
        ],
        "links": [{"rel": "next", "href": "/v2/queues?limit=2&marker=qb"}],
    }
    second = (await client.get(first["links"][0]["href"], headers=headers)).json()
    assert second == {
        "queues": [{"name": "qc", "href": "/v2/queues/qc"}],
        "links": [{"rel": "next", "href": "/v2/queues?limit=2&marker=qc"}],
    }
    # And the page after the last is empty without links
    third = (await client.get(second["links"][0]["href"], headers=headers)).json()
    assert third == {"queues": [], "links": []}


async def test_list_detailed_and_count(client: httpx.AsyncClient) -> None:
    headers = {"X-Project-ID": "detail-" + new_queue()}
    await client.put("/v2/queues/demoq", headers=headers, content=b'{"description": "demo"}')
    await client.put("/v2/queues/other", headers=headers)
    detailed = (await client.get("/v2/queues?detailed=true&limit=1", headers=headers)).json()
    assert detailed == {
        "queues": [
            {
                "name": "demoq",
                "metadata": {**DEFAULTS, "description": "demo"},
                "href": "/v2/queues/demoq",
            }
        ],
        "links": [{"rel": "next", "href": "/v2/queues?detailed=true&limit=1&marker=demoq"}],
    }
    counted = (await client.get("/v2/queues?limit=1&with_count=true", headers=headers)).json()
    assert counted["count"] == 2
    assert len(counted["queues"]) == 1


async def test_list_filters(client: httpx.AsyncClient) -> None:
    # Given queues with different metadata
    headers = {"X-Project-ID": "filter-" + new_queue()}
    await client.put("/v2/queues/red1", headers=headers, content=b'{"color": "red", "n": 5}')
    await client.put("/v2/queues/blue1", headers=headers, content=b'{"color": "blue", "n": 5}')
    await client.put("/v2/queues/red2", headers=headers, content=b'{"color": "red", "n": "5"}')

    async def names(query: str) -> list[str]:
        resp = await client.get("/v2/queues?" + query, headers=headers)
        assert resp.status_code == 200
        return [q["name"] for q in resp.json()["queues"]]

    # Then unknown keys filter on metadata, ints compared as ints, and name is a substring
    assert await names("color=red") == ["red1", "red2"]
    assert await names("n=5") == ["blue1", "red1"]
    assert await names("color=red&n=5") == ["red1"]
    assert await names("name=ed") == ["red1", "red2"]


async def test_list_name_filter_that_no_name_can_contain(client: httpx.AsyncClient) -> None:
    # Given queues, one with the longest name there may be
    headers = {"X-Project-ID": "name-filter-" + new_queue()}
    longest = "a-" * 32
    for name in ("short", longest):
        assert (await client.put(f"/v2/queues/{name}", headers=headers)).status_code == 201

    async def listed(name: str) -> tuple[list[str], int]:
        resp = await client.get("/v2/queues", params={"name": name, "with_count": "true"},
                                headers=headers)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        return [q["name"] for q in body["queues"]], body["count"]

    # Then a filter as long as a name finds it, and one a character longer finds nothing
    assert await listed(longest) == ([longest], 1)
    assert await listed(longest + "a") == ([], 0)
    # And no store is handed a filter it may refuse: thousands of characters that a MongoDB
    # regular expression would have to escape, or characters that no name has, find nothing
    assert await listed("-" * 4096) == ([], 0)
    for name in ("sh*", "short\n", "é", "short "):
        assert await listed(name) == ([], 0)


@pytest.mark.parametrize("limit", ["0", "21", "-1"])
async def test_list_limit_range(client: httpx.AsyncClient, limit: str) -> None:
    resp = await client.get(f"/v2/queues?limit={limit}")
    assert resp.status_code == 400
    assert resp.json() == LIMIT_ERROR


async def test_projects_are_isolated(client: httpx.AsyncClient) -> None:
    name = new_queue()
    await client.put(f"/v2/queues/{name}", headers={"X-Project-ID": "p-one"}, content=b'{"a": 1}')
    other = await client.get(f"/v2/queues/{name}", headers={"X-Project-ID": "p-two"})
    assert other.json() == DEFAULTS
    listed = await client.get("/v2/queues", headers={"X-Project-ID": "p-two"})
    assert name not in [q["name"] for q in listed.json()["queues"]]


async def test_patch_add_replace_remove(client: httpx.AsyncClient) -> None:
    # Given a queue
    name = new_queue()
    await client.put(f"/v2/queues/{name}", content=b'{"description": "demo"}')
    path = f"/v2/queues/{name}"
    # When a key is added, replaced and another removed
    added = await patch(client, path, [{"op": "add", "path": "/metadata/color", "value": "red"}])
    # Then each answer is the full metadata
    assert added.status_code == 200
    assert added.json() == {**DEFAULTS, "description": "demo", "color": "red"}
    replaced = await patch(
        client, path, [{"op": "replace", "path": "/metadata/color", "value": {"rgb": [255, 0, 0]}}]
    )
    assert replaced.json()["color"] == {"rgb": [255, 0, 0]}
    removed = await patch(client, path, [{"op": "remove", "path": "/metadata/description"}])
    assert "description" not in removed.json()
    assert (await client.get(path)).json() == removed.json()


async def test_patch_conflicts_and_absent_queue(client: httpx.AsyncClient) -> None:
    name = new_queue()
    await client.put(f"/v2/queues/{name}")
    conflict = await patch(
        client, f"/v2/queues/{name}", [{"op": "replace", "path": "/metadata/nope", "value": 1}]
    )
    assert conflict.status_code == 409
    assert conflict.json()["title"] == "Resource conflict"
    absent = await patch(
        client, f"/v2/queues/{new_queue()}", [{"op": "add", "path": "/metadata/a", "value": 1}]
    )
    assert absent.status_code == 404
    assert absent.json()["title"] == "Not found"


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "move", "path": "/metadata/a", "value": 1}],
        [{"op": "add", "path": "/nope/a", "value": 1}],
        [{"path": "/metadata/a", "value": 1}],
    ],
)
async def test_patch_bad_operations(client: httpx.AsyncClient, ops: object) -> None:
    name = new_queue()
    await client.put(f"/v2/queues/{name}")
    resp = await patch(client, f"/v2/queues/{name}", ops)
    assert resp.status_code == 400


async def test_delete_is_idempotent(client: httpx.AsyncClient) -> None:
    name = new_queue()
    await client.put(f"/v2/queues/{name}", content=b'{"a": 1}')
    for _ in range(2):
        resp = await client.delete(f"/v2/queues/{name}")
        assert resp.status_code == 204
        assert resp.headers["content-length"] == "0"
        assert resp.content == b""
    assert (await client.get(f"/v2/queues/{name}")).json() == DEFAULTS


async def test_stats_of_absent_and_busy_queues(client: httpx.AsyncClient) -> None:
    # Given an absent queue
    absent = await client.get(f"/v2/queues/{new_queue()}/stats")
    # Then its stats are zeros
    assert absent.status_code == 200
    assert absent.json() == {"messages": {"claimed": 0, "free": 0, "total": 0}}
    # Given a queue with two messages, one claimed
    name = new_queue()
    posted = await client.post(
        f"/v2/queues/{name}/messages",
        content=b'{"messages": [{"body": 1}, {"body": 2}]}',
    )
    first, second = (href.rsplit("/", 1)[1] for href in posted.json()["resources"])
    await client.post(f"/v2/queues/{name}/claims?limit=1", content=b"{}")
    # Then counts, and the oldest and newest with ISO creation times and hrefs
    stats = (await client.get(f"/v2/queues/{name}/stats")).json()["messages"]
    assert (stats["claimed"], stats["free"], stats["total"]) == (1, 1, 2)
    assert stats["oldest"]["href"] == f"/v2/queues/{name}/messages/{first}"
    assert stats["newest"]["href"] == f"/v2/queues/{name}/messages/{second}"
    for end in ("oldest", "newest"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stats[end]["created"])
        assert isinstance(stats[end]["age"], int)


async def test_purge_messages(client: httpx.AsyncClient) -> None:
    name = new_queue()
    await client.put(f"/v2/queues/{name}", content=b'{"keep": true}')
    await client.post(f"/v2/queues/{name}/messages", content=b'{"messages": [{"body": 1}]}')
    resp = await client.post(
        f"/v2/queues/{name}/purge", content=b'{"resource_types": ["messages"]}'
    )
    assert resp.status_code == 204
    assert resp.headers["content-length"] == "0"
    stats = (await client.get(f"/v2/queues/{name}/stats")).json()
    assert stats == {"messages": {"claimed": 0, "free": 0, "total": 0}}
    assert (await client.get(f"/v2/queues/{name}")).json()["keep"] is True


async def test_purge_unknown_resource_type(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        f"/v2/queues/{new_queue()}/purge", content=b'{"resource_types": ["bogus"]}'
    )
    assert resp.status_code == 400
    assert resp.json() == error_body(
        "Invalid API request",
        "Resource types must be a sub set of {'messages', 'subscriptions'}.",
    )


async def test_ping_and_health_with_services_up(client: httpx.AsyncClient) -> None:
    ping = await client.get("/v2/ping")
    assert ping.status_code == 204
    assert ping.headers["content-length"] == "0"
    assert (await client.head("/v2/ping")).status_code == 204
    health = await client.get("/v2/health", headers={"X-Roles": "admin"})
    assert health.status_code == 200
    assert health.json()["storage_reachable"] is True


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v2/queues/bad%20name", None),
        ("DELETE", "/v2/queues/bad%20name", None),
        ("GET", "/v2/queues/bad%20name/stats", None),
        ("POST", "/v2/queues/bad%20name/purge", b"{}"),
        ("GET", "/v2/queues/bad%20name/messages", None),
        ("POST", "/v2/queues/bad%20name/messages", b'{"messages": [{"body": 1}]}'),
        ("DELETE", "/v2/queues/bad%20name/messages?pop=1", None),
        ("POST", "/v2/queues/bad%20name/claims", b"{}"),
        # Long polls: refused before the wait's first look-up (of the queue's placement)
        ("GET", "/v2/queues/bad%20name/messages?wait=1", None),
        ("POST", "/v2/queues/bad%20name/claims?wait=1", b"{}"),
        ("GET", "/v2/queues/" + "x" * 65 + "/messages", None),
    ],
)
async def test_bad_queue_names_on_every_route(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None
) -> None:
    resp = await client.request(method, path, content=body)
    assert resp.status_code == 400
    assert resp.json()["title"] == "Invalid queue identification"
