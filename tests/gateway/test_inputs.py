"""Bodies and query parameters the gateway refuses before calling any service, and integers
past every range, refused by the gateway or by the services."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from tests.gateway.conftest import PATCH_TYPE, error_body, new_queue

UNPARSEABLE = error_body("Invalid request body", "Request body could not be parsed.")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v2/queues/q2"),
        ("POST", "/v2/queues/q2/messages"),
        ("POST", "/v2/queues/q2/claims"),
        ("PATCH", "/v2/queues/q2/claims/c"),
        ("POST", "/v2/queues/q2/purge"),
    ],
)
async def test_malformed_json_is_refused(
    down_client: httpx.AsyncClient, method: str, path: str
) -> None:
    resp = await down_client.request(method, path, content=b"not json")
    assert resp.status_code == 400
    assert resp.json() == UNPARSEABLE


async def test_malformed_json_patch_is_refused(down_client: httpx.AsyncClient) -> None:
    resp = await down_client.patch(
        "/v2/queues/q2", content=b"[{", headers={"Content-Type": PATCH_TYPE}
    )
    assert resp.status_code == 400
    assert resp.json() == UNPARSEABLE


@pytest.mark.parametrize(
    ("method", "path", "limit", "what"),
    [
        ("POST", "/v2/queues/q/messages", 262_144, "Message collection size"),
        ("PUT", "/v2/queues/q", 65_536, "Queue metadata"),
        ("POST", "/v2/queues/q/claims", 65_536, "Request body"),
        ("POST", "/v2/queues/q/purge", 65_536, "Request body"),
    ],
)
async def test_oversize_bodies_are_refused_before_parsing(
    down_client: httpx.AsyncClient, method: str, path: str, limit: int, what: str
) -> None:
    # Given a body one byte over the limit (and not even JSON: it is never parsed)
    body = b"x" * (limit + 1)
    # When it is sent with a Content-Length, and then chunked
    declared = await down_client.request(method, path, content=body)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    chunked = await down_client.request(method, path, content=chunks())
    # Then both are refused with the limit in the description
    for resp in (declared, chunked):
        assert resp.status_code == 400
        assert resp.json() == error_body(
            "Invalid API request", f"{what} is too large. Max size: {limit} bytes."
        )


async def test_oversize_patch_is_refused(down_client: httpx.AsyncClient) -> None:
    resp = await down_client.patch(
        "/v2/queues/q", content=b"x" * 131_073, headers={"Content-Type": PATCH_TYPE}
    )
    assert resp.status_code == 400
    assert "131072" in resp.json()["description"]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            [{"ttl": 300, "body": 1}],
            error_body("Invalid API request", "No messages were found in the request body."),
        ),
        (
            {"nope": []},
            error_body("Invalid API request", "No messages were found in the request body."),
        ),
        (
            {"messages": [{"ttl": 300}]},
            error_body("Invalid request body", 'Missing "body" field.'),
        ),
        (
            {"messages": {"body": 1}},
            error_body("Invalid request body", "Document type not supported."),
        ),
        ({"messages": [1]}, error_body("Invalid request body", "Document type not supported.")),
        (
            {"messages": [{"body": 1, "ttl": "60"}]},
            error_body("Invalid request body", 'The value of the "ttl" field must be a int.'),
        ),
        (
            {"messages": [{"body": 1, "delay": 1.5}]},
            error_body("Invalid request body", 'The value of the "delay" field must be a int.'),
        ),
        (
            {"messages": [{"body": 1, "ttl": True}]},
            error_body("Invalid request body", 'The value of the "ttl" field must be a int.'),
        ),
    ],
)
async def test_message_post_shapes(
    down_client: httpx.AsyncClient, doc: object, expected: dict[str, str]
) -> None:
    resp = await down_client.post("/v2/queues/q/messages", content=orjson.dumps(doc))
    assert resp.status_code == 400
    assert resp.json() == expected


@pytest.mark.parametrize(
    ("path", "doc"),
    [
        ("/v2/queues/q/claims", [1]),
        ("/v2/queues/q/claims", {"ttl": "300"}),
        ("/v2/queues/q/claims", {"grace": 6.5}),
        ("/v2/queues/q/purge", ["messages"]),
        ("/v2/queues/q/purge", {"resource_types": "messages"}),
        ("/v2/queues/q/purge", {"resource_types": [1]}),
    ],
)
async def test_claim_and_purge_shapes(
    down_client: httpx.AsyncClient, path: str, doc: object
) -> None:
    resp = await down_client.post(path, content=orjson.dumps(doc))
    assert resp.status_code == 400
    assert resp.json()["title"] == "Invalid request body"


@pytest.mark.parametrize("doc", [{"ttl": 1.0}, "x"])
async def test_claim_renew_shapes(down_client: httpx.AsyncClient, doc: object) -> None:
    resp = await down_client.patch("/v2/queues/q/claims/c", content=orjson.dumps(doc))
    assert resp.status_code == 400
    assert resp.json()["title"] == "Invalid request body"


@pytest.mark.parametrize(
    ("doc", "description"),
    [
        ({"op": "add"}, "Request body must be a JSON array of operation objects."),
        (["add"], "Operations must be JSON objects."),
    ],
)
async def test_queue_patch_shapes(
    down_client: httpx.AsyncClient, doc: object, description: str
) -> None:
    resp = await down_client.patch(
        "/v2/queues/q", content=orjson.dumps(doc), headers={"Content-Type": PATCH_TYPE}
    )
    assert resp.status_code == 400
    assert resp.json() == error_body("Invalid API request", description)


async def test_queue_metadata_must_be_an_object(down_client: httpx.AsyncClient) -> None:
    resp = await down_client.put("/v2/queues/q", content=b"[1, 2]")
    assert resp.status_code == 400
    assert resp.json() == error_body("Invalid request body", "Document type not supported.")


@pytest.mark.parametrize(
    "path",
    [
        "/v2/queues?limit=ten",
        "/v2/queues/q/messages?limit=1.5",
        "/v2/queues/q/claims?limit=x",
        "/v2/queues/q/messages?pop=one",
    ],
)
async def test_integer_parameters_must_be_integers(
    down_client: httpx.AsyncClient, path: str
) -> None:
    method = "POST" if "claims" in path else "DELETE" if "pop" in path else "GET"
    resp = await down_client.request(method, path)
    assert resp.status_code == 400
    name = "pop" if "pop" in path else "limit"
    assert resp.json() == error_body(
        "Invalid parameter",
        f'The "{name}" parameter is invalid. The value must be an integer.',
    )


BIG = "99999999999999999999"  # past 64 bits: an int in a query string, a float in JSON
U64_MAX = str(2**64 - 1)  # the largest integer JSON carries between the services
ADMIN = {"X-Roles": "admin"}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("GET", f"/v2/queues?x={BIG}", None, {}),
        ("GET", f"/v2/queues?x=-{2**63 + 1}", None, {}),
        ("GET", f"/v2/queues?x={2**64}", None, {}),
        ("GET", f"/v2/queues?limit={BIG}", None, {}),
        ("GET", f"/v2/queues/{{q}}/messages?limit={BIG}", None, {}),
        ("DELETE", f"/v2/queues/{{q}}/messages?pop={BIG}", None, {}),
        ("POST", f"/v2/queues/{{q}}/claims?limit={BIG}", None, {}),
        ("GET", f"/v2/queues/{{q}}/subscriptions?limit={BIG}", None, {}),
        ("GET", f"/v2/pools?limit={BIG}", None, ADMIN),
        ("GET", f"/v2/flavors?limit={BIG}", None, ADMIN),
        ("POST", "/v2/queues/{q}/messages", f'{{"messages": [{{"body": 1, "ttl": {BIG}}}]}}', {}),
        ("POST", "/v2/queues/{q}/messages", f'{{"messages": [{{"body": 1, "ttl": {U64_MAX}}}]}}',
         {}),
        ("POST", "/v2/queues/{q}/messages", '{"messages": [{"body": 1, "ttl": 1e30}]}', {}),
        ("POST", "/v2/queues/{q}/messages", f'{{"messages": [{{"body": 1, "delay": {U64_MAX}}}]}}',
         {}),
        ("POST", "/v2/queues/{q}/claims", f'{{"ttl": {U64_MAX}}}', {}),
        ("POST", "/v2/queues/{q}/claims", f'{{"grace": -{U64_MAX}}}', {}),
        ("PUT", "/v2/queues/{q}", f'{{"_default_message_ttl": {U64_MAX}}}', {}),
        ("PUT", "/v2/pools/{q}", f'{{"uri": "sqlite:////tmp/x.db", "weight": {U64_MAX}}}', ADMIN),
        ("PUT", "/v2/pools/{q}", f'{{"uri": "sqlite:////tmp/x.db", "weight": {BIG}}}', ADMIN),
    ],
)
async def test_integers_past_their_range_are_400(
    client: httpx.AsyncClient, method: str, path: str, body: str | None,
    headers: dict[str, str],
) -> None:
    # When an integer of a query string or a body is larger than its field, or than 64 bits
    resp = await client.request(
        method, path.format(q=new_queue()), content=body, headers=headers
    )
    # Then the request is refused with a Zaqar error body, never a server error
    assert resp.status_code == 400, resp.text
    assert list(resp.json()) == ["title", "description"]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/queues?detailed=maybe",
        "/v2/queues?with_count=2",
        "/v2/queues/q/messages?echo=yes-please",
        "/v2/queues/q/messages?include_claimed=nope",
        "/v2/queues/q/messages?include_delayed=x",
    ],
)
async def test_boolean_parameters_must_be_booleans(
    down_client: httpx.AsyncClient, path: str
) -> None:
    resp = await down_client.get(path)
    assert resp.status_code == 400
    assert resp.json()["title"] == "Invalid parameter"
    assert 'must be "true" or "false"' in resp.json()["description"]


async def test_ids_and_pop_together_are_refused(down_client: httpx.AsyncClient) -> None:
    resp = await down_client.delete("/v2/queues/q/messages?ids=a,b&pop=2")
    assert resp.status_code == 400
    assert resp.json() == error_body(
        "Invalid API request",
        "pop and id params cannot be present together in the delete request.",
    )


async def test_bulk_delete_needs_ids_or_pop(down_client: httpx.AsyncClient) -> None:
    resp = await down_client.delete("/v2/queues/q/messages")
    assert resp.status_code == 400
    assert resp.json() == error_body(
        "Invalid API request",
        'The request should have either "ids" or "pop" parameter in the request, '
        "to be able to delete.",
    )


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_at_most_twenty_ids(down_client: httpx.AsyncClient, method: str) -> None:
    ids = ",".join(f"id{i}" for i in range(21))
    resp = await down_client.request(method, f"/v2/queues/q/messages?ids={ids}")
    assert resp.status_code == 400
    assert resp.json() == error_body(
        "Invalid API request",
        "ids parameter should have at least 1 and not greater than 20 values.",
    )
