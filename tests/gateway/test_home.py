"""Versions, JSON-home, routing errors, health, and subscriptions when notifier_svc is down."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.gateway.conftest import request_without


async def test_versions_document_needs_no_headers(down_client: httpx.AsyncClient) -> None:
    # Given no Zaqar headers at all
    # When the root is fetched
    resp = await request_without(
        down_client, "GET", "/", "Client-ID", "X-Project-ID", "Accept", "Content-Type"
    )
    # Then it answers 300 with the one v2 version
    assert resp.status_code == 300
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {
        "versions": [
            {
                "id": "2",
                "status": "CURRENT",
                "links": [{"href": "/v2/", "rel": "self"}],
                "media-types": [
                    {
                        "base": "application/json",
                        "type": "application/vnd.openstack.messaging-v2+json",
                    }
                ],
            }
        ]
    }


async def test_home_document_is_json_home(down_client: httpx.AsyncClient) -> None:
    # When the v2 root (trailing slash) is fetched
    resp = await down_client.get("/v2/")
    # Then it is a cacheable JSON-home document listing the v2 resources
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json-home"
    assert resp.headers["cache-control"] == "max-age=86400"
    resources = resp.json()["resources"]
    for rel in (
        "rel/queues",
        "rel/queue",
        "rel/queue_stats",
        "rel/queue_purge",
        "rel/messages",
        "rel/post_messages",
        "rel/messages_delete",
        "rel/message_get",
        "rel/message_delete",
        "rel/post_claim",
        "rel/claim",
        "rel/patch_claim",
        "rel/delete_claim",
        "rel/ping",
    ):
        assert rel in resources
    for resource in resources.values():
        assert resource["href-template"].startswith("/v2/")
        assert resource["hints"]["allow"]
        assert resource["hints"]["formats"] == {"application/json": {}}


async def test_home_document_accepts_json_home_clients(down_client: httpx.AsyncClient) -> None:
    resp = await down_client.get("/v2/", headers={"Accept": "application/json-home"})
    assert resp.status_code == 200


async def test_v2_without_trailing_slash_is_not_found(down_client: httpx.AsyncClient) -> None:
    resp = await down_client.get("/v2")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"title": "404 Not Found"}


@pytest.mark.parametrize("path", ["/nope", "/v2/nope", "/v2/queues/q/nope", "/v1.1/queues"])
async def test_unknown_paths_are_not_found(down_client: httpx.AsyncClient, path: str) -> None:
    resp = await down_client.get(path)
    assert resp.status_code == 404
    assert resp.json() == {"title": "404 Not Found"}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v2/queues", "GET"),
        ("DELETE", "/v2/queues", "GET"),
        ("POST", "/v2/queues/q", "DELETE, GET, PATCH, PUT"),
        ("PUT", "/v2/queues/q/messages", "DELETE, GET, POST"),
        ("GET", "/v2/queues/q/claims", "POST"),
        ("POST", "/v2/queues/q/stats", "GET"),
        ("GET", "/v2/queues/q/purge", "POST"),
        ("HEAD", "/v2/health", "GET"),
    ],
)
async def test_wrong_method_is_405_with_allow(
    down_client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    resp = await down_client.request(method, path)
    assert resp.status_code == 405
    allow = {m.strip() for m in resp.headers["allow"].split(",")}
    assert allow - {"OPTIONS"} == set(allowed.split(", "))


async def test_health_is_admin_only(down_client: httpx.AsyncClient) -> None:
    # Given a caller without the admin role
    resp = await down_client.get("/v2/health", headers={"X-Roles": "member"})
    # Then health is refused with Zaqar's body
    assert resp.status_code == 403
    assert resp.json() == {
        "title": "Not authorized",
        "description": "You are not authorized to complete this action.",
    }


async def test_ping_is_503_when_services_are_down(dead_client: httpx.AsyncClient) -> None:
    for method in ("GET", "HEAD"):
        resp = await dead_client.request(method, "/v2/ping")
        assert resp.status_code == 503
    resp = await dead_client.get("/v2/ping")
    assert resp.json()["title"] == "Service temporarily unavailable"


# Accepted by every subscription route's transport checks.
BODY = {"subscriber": "http://127.0.0.1:1/hook", "confirmed": True}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/queues/q/subscriptions"),
        ("POST", "/v2/queues/q/subscriptions"),
        ("GET", "/v2/queues/q/subscriptions/abc"),
        ("PATCH", "/v2/queues/q/subscriptions/abc"),
        ("DELETE", "/v2/queues/q/subscriptions/abc"),
        ("PUT", "/v2/queues/q/subscriptions/abc/confirm"),
    ],
)
async def test_subscriptions_are_503_when_notifier_is_down(
    dead_client: httpx.AsyncClient, method: str, path: str
) -> None:
    resp = await dead_client.request(method, path, content=orjson.dumps(BODY))
    assert resp.status_code == 503
    assert resp.json()["title"] == "Service temporarily unavailable"
    assert "try again" in resp.json()["description"]


async def test_subscriptions_still_check_headers(down_client: httpx.AsyncClient) -> None:
    resp = await request_without(down_client, "GET", "/v2/queues/q/subscriptions", "Client-ID")
    assert resp.status_code == 400
