"""Hostile input: header size and count, query-string length, JSON nesting, id counts.

Each limit is answered 400 with a Zaqar error body, quickly: a 5xx, a hang or a dropped
connection fails these tests (every request has a short timeout). The cases run in-process and
over real HTTP against ``zaqar-grpc up`` (``client`` / ``down_client``).
"""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from services.api_gateway.limits import (
    HEADERS_BYTES_MAX,
    HEADERS_COUNT_MAX,
    JSON_DEPTH_MAX,
    QUERY_STRING_MAX,
    json_depth,
)
from tests.gateway.conftest import new_queue

QUICK = 10.0  # seconds: any answer slower than this is a hang


def nested(depth: int, leaf: object = 1) -> bytes:
    """A JSON array nesting ``depth`` levels around ``leaf``."""
    return b"[" * depth + orjson.dumps(leaf) + b"]" * depth


def post_body(message_depth: int) -> bytes:
    """A message post whose whole document nests ``3 + message_depth`` levels."""
    return b'{"messages":[{"body":' + nested(message_depth) + b"}]}"


def assert_refused(resp: httpx.Response, title: str) -> None:
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["title"] == title
    assert resp.headers["x-openstack-request-id"].startswith("req-")


# Headers ---------------------------------------------------------------------------------------


async def test_oversized_header_is_refused(down_client: httpx.AsyncClient) -> None:
    resp = await down_client.get(
        "/v2/queues", headers={"X-Big": "a" * (HEADERS_BYTES_MAX + 1)}, timeout=QUICK
    )
    assert_refused(resp, "Request header fields too large")


async def test_too_many_headers_are_refused(down_client: httpx.AsyncClient) -> None:
    many = {f"X-Extra-{i}": "v" for i in range(HEADERS_COUNT_MAX + 1)}
    resp = await down_client.get("/v2/queues", headers=many, timeout=QUICK)
    assert_refused(resp, "Request header fields too large")


async def test_header_limits_apply_outside_v2_too(down_client: httpx.AsyncClient) -> None:
    resp = await down_client.get("/", headers={"X-Big": "a" * HEADERS_BYTES_MAX}, timeout=QUICK)
    assert_refused(resp, "Request header fields too large")


async def test_headers_under_the_limits_are_served(client: httpx.AsyncClient) -> None:
    headers = {f"X-Extra-{i}": "v" * 100 for i in range(80)}
    resp = await client.get("/v2/queues", headers=headers, timeout=QUICK)
    assert resp.status_code == 200


# Query string ----------------------------------------------------------------------------------


async def test_long_query_string_is_refused(down_client: httpx.AsyncClient) -> None:
    resp = await down_client.get(
        "/v2/queues", params={"name": "a" * QUERY_STRING_MAX}, timeout=QUICK
    )
    assert_refused(resp, "Query string too long")


async def test_huge_query_string_is_refused_not_failed(down_client: httpx.AsyncClient) -> None:
    # Near the longest URL a client sends (httpx: 64 KiB).
    resp = await down_client.get("/v2/queues?name=" + "a" * 60_000, timeout=QUICK)
    assert resp.status_code == 400


async def test_query_string_under_the_limit_is_served(client: httpx.AsyncClient) -> None:
    resp = await client.get(
        "/v2/queues", params={"marker": "m" * (QUERY_STRING_MAX // 2)}, timeout=QUICK
    )
    assert resp.status_code == 200


# Id lists --------------------------------------------------------------------------------------


@pytest.mark.parametrize("param", ["ids", "claim_ids"])
async def test_more_than_twenty_ids_are_refused(down_client: httpx.AsyncClient, param: str) -> None:
    params = {"ids": "a", param: ",".join(f"{i:024x}" for i in range(21))}
    resp = await down_client.delete("/v2/queues/q/messages", params=params, timeout=QUICK)
    assert_refused(resp, "Invalid API request")


async def test_thousands_of_ids_are_refused_quickly(down_client: httpx.AsyncClient) -> None:
    ids = ",".join("x" for _ in range(QUERY_STRING_MAX // 2 - 10))
    resp = await down_client.get(f"/v2/queues/q/messages?ids={ids}", timeout=QUICK)
    assert_refused(resp, "Invalid API request")


async def test_twenty_claim_ids_are_accepted(client: httpx.AsyncClient) -> None:
    params = {"ids": "a", "claim_ids": ",".join(f"{i:024x}" for i in range(20))}
    resp = await client.delete(f"/v2/queues/{new_queue()}/messages", params=params)
    assert resp.status_code == 204


# JSON nesting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [JSON_DEPTH_MAX, 300, 1000, 100_000])
@pytest.mark.parametrize(
    ("method", "path", "wrap"),
    [
        ("POST", "/v2/queues/{q}/messages", b'{"messages":[{"body":%s}]}'),
        ("PUT", "/v2/queues/{q}", b'{"deep":%s}'),
        ("POST", "/v2/queues/{q}/subscriptions", b'{"subscriber":"http://h/","options":%s}'),
        ("POST", "/v2/queues/{q}/claims", b'{"ttl":%s}'),
        ("PATCH", "/v2/queues/{q}/claims/c", b'{"ttl":%s}'),
        ("POST", "/v2/queues/{q}/purge", b'{"resource_types":%s}'),
        ("POST", "/v2/queues/{q}/share", b'{"paths":%s}'),
    ],
)
async def test_deeply_nested_bodies_are_refused_before_parsing(
    down_client: httpx.AsyncClient, method: str, path: str, wrap: bytes, depth: int
) -> None:
    # Given a body nesting past the limit once wrapped (orjson parses up to 1024 levels but
    # serialises only ~255: a body in between used to fail with 503)
    body = wrap % nested(depth)
    if len(body) > 65_536:
        body = wrap % nested(JSON_DEPTH_MAX)
    started = time.monotonic()
    resp = await down_client.request(
        method, path.format(q=new_queue()), content=body, timeout=QUICK
    )
    assert_refused(resp, "Invalid request body")
    assert "nests too deeply" in resp.json()["description"]
    assert time.monotonic() - started < QUICK


async def test_deeply_nested_message_post_of_max_size_is_refused(
    down_client: httpx.AsyncClient,
) -> None:
    depth = (262_144 - 30) // 2
    resp = await down_client.post("/v2/queues/q/messages", content=post_body(depth), timeout=QUICK)
    assert_refused(resp, "Invalid request body")


async def test_nesting_up_to_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    queue = new_queue()
    body = post_body(JSON_DEPTH_MAX - 3)
    assert json_depth(body) == JSON_DEPTH_MAX
    resp = await client.post(f"/v2/queues/{queue}/messages", content=body, timeout=QUICK)
    assert resp.status_code == 201, resp.text
    listed = await client.get(f"/v2/queues/{queue}/messages", params={"echo": "true"})
    assert listed.json()["messages"][0]["body"] == orjson.loads(nested(JSON_DEPTH_MAX - 3))


async def test_brackets_inside_strings_do_not_count(client: httpx.AsyncClient) -> None:
    text = '[{\\"' * 500 + '"[[[' * 100
    body = orjson.dumps({"messages": [{"body": {"text": text, "quoted": '\\"[[[['}}]})
    resp = await client.post(f"/v2/queues/{new_queue()}/messages", content=body, timeout=QUICK)
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"1", 0),
        (b'"[[[["', 0),
        (b"[]", 1),
        (b'{"a":[1,{"b":[]}]}', 4),
        (b'["\\"[", "]", [["\\\\"]]]', 3),
        (b'"unterminated [[[[', 0),
        (b"[[[", 3),
    ],
)
def test_json_depth(text: bytes, depth: int) -> None:
    assert json_depth(text) == depth


def test_json_depth_is_linear_on_hostile_text() -> None:
    # Unterminated strings full of escaped quotes: a backtracking scanner would be quadratic.
    for text in (b'"' + b'\\"[' * 100_000, b"[" * 200_000, b'["' * 100_000):
        started = time.monotonic()
        json_depth(text)
        assert time.monotonic() - started < 10.0  # quadratic would take minutes
