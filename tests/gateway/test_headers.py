"""Transport headers (contract §1): checked once, before any upstream call.

These run against a gateway whose upstreams are down: every answer here must come from the
gateway itself.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.gateway.conftest import HEADERS, error_body, request_without

REQUEST_ID = re.compile(
    r"^req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)

# Parameters are fixed values, so that every test run collects the same test ids.
UUID = uuid.UUID("7f2c1b9e-4d3a-4f6b-9c8d-0e1f2a3b4c5d")


@pytest.mark.parametrize("path", ["/v2/queues", "/v2/ping", "/v2/", "/v2/queues/q/messages"])
async def test_client_id_is_required_on_v2_paths(down_client: httpx.AsyncClient, path: str) -> None:
    # Given a request without Client-ID
    resp = await request_without(down_client, "GET", path, "Client-ID")
    # Then it is refused with Zaqar's exact answer
    assert resp.status_code == 400
    assert resp.json() == error_body("Missing header value", 'The "Client-Id" header is required.')


async def test_ping_head_requires_client_id(down_client: httpx.AsyncClient) -> None:
    resp = await request_without(down_client, "HEAD", "/v2/ping", "Client-ID")
    assert resp.status_code == 400


@pytest.mark.parametrize(
    "client_id",
    [
        "not-a-uuid",
        "",
        "3381af92-2b9e-11e3-b191-71861300734",
        "3381af922b9e-11e3-b191-71861300734c",
    ],
)
async def test_client_id_must_be_a_uuid(down_client: httpx.AsyncClient, client_id: str) -> None:
    resp = await down_client.get("/v2/queues", headers={**HEADERS, "Client-ID": client_id})
    assert resp.status_code == 400
    assert resp.json() == error_body("Wrong UUID value", "Malformed hexadecimal UUID.")


@pytest.mark.parametrize(
    "client_id",
    [str(UUID), UUID.hex, str(UUID).upper(), UUID.hex.upper()],
)
async def test_dashed_and_undashed_uuids_are_accepted(
    down_client: httpx.AsyncClient, client_id: str
) -> None:
    resp = await down_client.get("/v2/", headers={**HEADERS, "Client-ID": client_id})
    assert resp.status_code == 200


async def test_project_id_is_required(down_client: httpx.AsyncClient) -> None:
    resp = await request_without(down_client, "GET", "/v2/queues", "X-Project-ID")
    assert resp.status_code == 400
    assert resp.json() == error_body("Project-Id Missing", "The header X-PROJECT-ID was missing")


async def test_project_id_may_not_be_empty(down_client: httpx.AsyncClient) -> None:
    resp = await down_client.get("/v2/queues", headers={**HEADERS, "X-Project-ID": ""})
    assert resp.status_code == 400
    assert resp.json()["title"] == "Empty project header not allowed"


async def test_project_id_is_at_most_256_characters(down_client: httpx.AsyncClient) -> None:
    ok = await down_client.get("/v2/", headers={**HEADERS, "X-Project-ID": "p" * 256})
    too_long = await down_client.get("/v2/", headers={**HEADERS, "X-Project-ID": "p" * 257})
    assert ok.status_code == 200
    assert too_long.status_code == 400
    assert "256" in too_long.json()["description"]


@pytest.mark.parametrize("accept", ["text/plain", "application/xml", "text/html;q=1"])
async def test_accept_must_allow_json(down_client: httpx.AsyncClient, accept: str) -> None:
    resp = await down_client.get("/v2/queues", headers={**HEADERS, "Accept": accept})
    assert resp.status_code == 406
    assert resp.content == b""
    assert resp.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "accept", ["*/*", "application/*", "text/plain, application/json;q=0.5", "application/json"]
)
async def test_accept_variants_allowing_json(down_client: httpx.AsyncClient, accept: str) -> None:
    resp = await down_client.get("/v2/", headers={**HEADERS, "Accept": accept})
    assert resp.status_code == 200


async def test_form_encoded_bodies_are_refused(down_client: httpx.AsyncClient) -> None:
    # Given a body sent as curl does by default
    headers = {**HEADERS, "Content-Type": "application/x-www-form-urlencoded"}
    resp = await down_client.post(
        "/v2/queues/q/messages", headers=headers, content=b'{"messages":[{"body":1}]}'
    )
    # Then Zaqar's exact answer
    assert resp.status_code == 400
    assert resp.json() == error_body(
        "Invalid Content-Type",
        "Endpoint does not accept `application/x-www-form-urlencoded` content; currently"
        " supported media type is `application/json`; specify proper client-side media type"
        ' with the "Content-Type" header.',
    )


async def test_every_answer_carries_a_fresh_request_id(down_client: httpx.AsyncClient) -> None:
    answers = [
        await down_client.get("/"),
        await down_client.get("/v2/"),
        await down_client.get("/v2"),
        await request_without(down_client, "GET", "/v2/queues", "Client-ID"),
        await down_client.get("/v2/queues", headers={**HEADERS, "Accept": "text/plain"}),
        await down_client.post("/v2/queues"),
        await down_client.get("/v2/queues"),
    ]
    ids = [resp.headers["x-openstack-request-id"] for resp in answers]
    assert all(REQUEST_ID.match(rid) for rid in ids), ids
    assert len(set(ids)) == len(ids)


async def test_queue_patch_needs_the_json_patch_media_type(
    down_client: httpx.AsyncClient,
) -> None:
    # Given a PATCH sent as plain JSON
    resp = await down_client.patch(
        "/v2/queues/q2", content=b'[{"op":"add","path":"/metadata/color","value":"red"}]'
    )
    # Then 415 with Zaqar's body and the accepted type in Accept-Patch
    assert resp.status_code == 415
    assert resp.json() == error_body(
        "415 Unsupported Media Type",
        "Accepted media type for PATCH: "
        "{'Accept-Patch': 'application/openstack-messaging-v2.0-json-patch'}.",
    )
    assert resp.headers["accept-patch"] == "application/openstack-messaging-v2.0-json-patch"
