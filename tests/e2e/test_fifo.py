"""FIFO queues (``_fifo``) end to end over HTTP and WebSocket: ``zaqar-grpc up`` on each
store (the session's stacks, ``stack`` of ``conftest.py``), message groups kept in order
across claims, a group locked while claimed, duplicates answered with the first ids, and a
Zaqar client's view of a standard queue unchanged."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.e2e.harness import Stack

pytestmark = pytest.mark.e2e

NEED_FIFO = "dedup_id needs a FIFO queue (_fifo)."


def headers(project: str) -> dict[str, str]:
    return {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}


def numbers(messages: list[dict[str, Any]]) -> list[Any]:
    return [m["body"] for m in messages]


async def ws_call(ws: ClientConnection, project: str, action: str, **body: Any) -> Any:
    frame = {"action": action, "headers": headers(project), "body": body}
    await ws.send(orjson.dumps(frame).decode())
    return orjson.loads(await ws.recv())


async def test_groups_over_http(stack: Stack, project: str) -> None:
    async with httpx.AsyncClient(base_url=stack.url, headers=headers(project)) as http:
        # Given a FIFO queue with groups a and b and a message without a group
        assert (await http.put("/v2/queues/f", json={"_fifo": True})).status_code == 201
        posted = await http.post("/v2/queues/f/messages", json={"messages": [
            {"body": 1, "group_id": "a"}, {"body": 2, "group_id": "a"},
            {"body": 3, "group_id": "b"}, {"body": 4}, {"body": 5, "group_id": "a"},
        ]})
        assert posted.status_code == 201, posted.text

        # When a claim takes two messages, they are group a's first two, in order
        first = await http.post("/v2/queues/f/claims?limit=2", json={"ttl": 60})
        assert first.status_code == 201
        assert numbers(first.json()["messages"]) == [1, 2]
        assert [m["group_id"] for m in first.json()["messages"]] == ["a", "a"]

        # And while that claim lives, group a is passed over
        second = await http.post("/v2/queues/f/claims", json={"ttl": 60})
        assert numbers(second.json()["messages"]) == [3, 4]
        assert [m.get("group_id") for m in second.json()["messages"]] == ["b", None]
        assert (await http.post("/v2/queues/f/claims", json={"ttl": 60})).status_code == 204

        # When the first claim's messages are deleted, a's last message is next
        for message in first.json()["messages"]:
            assert (await http.delete(message["href"])).status_code == 204
        third = await http.post("/v2/queues/f/claims", json={"ttl": 60})
        assert numbers(third.json()["messages"]) == [5]

        # And a listed or got message shows its group
        listed = await http.get("/v2/queues/f/messages?echo=true&include_claimed=true")
        assert [m.get("group_id") for m in listed.json()["messages"]] == ["b", None, "a"]
        got = await http.get(third.json()["messages"][0]["href"])
        assert got.json()["group_id"] == "a"


async def test_duplicates_over_http_answer_with_the_first_ids(
    stack: Stack, project: str
) -> None:
    async with httpx.AsyncClient(base_url=stack.url, headers=headers(project)) as http:
        await http.put("/v2/queues/f", json={"_fifo": True, "_dedup_window": 60})
        first = await http.post("/v2/queues/f/messages", json={"messages": [
            {"body": 1, "dedup_id": "x"}, {"body": 2, "dedup_id": "y"}]})
        again = await http.post("/v2/queues/f/messages", json={"messages": [
            {"body": 3, "dedup_id": "y"}, {"body": 4, "dedup_id": "x"}]})
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json()["resources"] == first.json()["resources"][::-1]
        listed = await http.get("/v2/queues/f/messages?echo=true")
        assert numbers(listed.json()["messages"]) == [1, 2]


async def test_bad_fifo_ids_over_http(stack: Stack, project: str) -> None:
    async with httpx.AsyncClient(base_url=stack.url, headers=headers(project)) as http:
        await http.put("/v2/queues/f", json={"_fifo": True})
        cases = [
            ("plain", {"body": 1, "dedup_id": "a"}, "Invalid API request", NEED_FIFO),
            ("f", {"body": 1, "group_id": 7}, "Invalid request body",
             'The value of the "group_id" field must be a str.'),
            ("f", {"body": 1, "dedup_id": "d" * 129}, "Invalid API request",
             "dedup_id must be a string of 1 to 128 characters."),
            ("f", {"body": 1, "group_id": ""}, "Invalid API request",
             "group_id must be a string of 1 to 128 characters."),
        ]
        for queue, message, title, description in cases:
            answer = await http.post(f"/v2/queues/{queue}/messages",
                                     json={"messages": [message]})
            assert (answer.status_code, answer.json()) == (
                400, {"title": title, "description": description}
            )


async def test_a_standard_queue_looks_as_it_always_did(stack: Stack, project: str) -> None:
    async with httpx.AsyncClient(base_url=stack.url, headers=headers(project)) as http:
        # Unknown keys are ignored, as by Zaqar; no message shows a group_id key
        posted = await http.post("/v2/queues/plain/messages", json={"messages": [
            {"body": 1, "ttl": 300, "colour": "red"}, {"body": 2}]})
        assert posted.status_code == 201
        listed = (await http.get("/v2/queues/plain/messages?echo=true")).json()["messages"]
        claimed = (await http.post("/v2/queues/plain/claims?limit=1", json={"ttl": 60})).json()
        got = (await http.get(listed[0]["href"])).json()
        popped = (await http.delete("/v2/queues/plain/messages?pop=1")).json()["messages"]
        for doc in (listed[0], claimed["messages"][0], got):
            assert set(doc) == {"id", "href", "ttl", "age", "body"}
        assert set(popped[0]) == {"id", "age", "ttl", "body", "claim_id", "claim_count"}
        metadata = (await http.get("/v2/queues/plain")).json()
        assert not {"_fifo", "_dedup_window"} & set(metadata)


async def test_groups_and_duplicates_over_websocket(stack: Stack, project: str) -> None:
    async with connect(f"ws://{stack.settings.host}:{stack.settings.ws_port}") as ws:
        created = await ws_call(ws, project, "queue_create", queue_name="f",
                                metadata={"_fifo": True})
        assert created["headers"]["status"] == 201, created
        posted = await ws_call(ws, project, "message_post", queue_name="f", messages=[
            {"body": 1, "group_id": "a", "dedup_id": "x"}, {"body": 2, "group_id": "a"},
            {"body": 3, "dedup_id": "x"}])
        assert posted["headers"]["status"] == 201
        ids = posted["body"]["message_ids"]
        assert ids[2] == ids[0] != ids[1]

        claim = await ws_call(ws, project, "claim_create", queue_name="f", limit=1)
        assert [(m["body"], m["group_id"]) for m in claim["body"]["messages"]] == [(1, "a")]
        locked = await ws_call(ws, project, "claim_create", queue_name="f")
        assert locked["headers"]["status"] == 204

        released = await ws_call(ws, project, "claim_delete", queue_name="f",
                                 claim_id=claim["body"]["claim_id"])
        assert released["headers"]["status"] == 204
        both = await ws_call(ws, project, "claim_create", queue_name="f")
        assert numbers(both["body"]["messages"]) == [1, 2]

        refused = await ws_call(ws, project, "message_post", queue_name="plain",
                                messages=[{"body": 1, "dedup_id": "a"}])
        assert (refused["headers"]["status"], refused["body"]) == (
            400, {"title": "Invalid API request", "error": NEED_FIFO}
        )
