"""Fair queues end to end over HTTP and WebSocket: ``zaqar-grpc up`` on each store (the
session's stacks, with the default thresholds: a group is noisy from 8 in-flight messages
holding more than 25 % of the queue's), a standard queue keeping messages' groups, a noisy
group's backlog passed over for the quiet groups' newer messages, and the noisy messages
still claimed when nothing else is left."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.e2e.harness import Stack

pytestmark = pytest.mark.e2e


def headers(project: str) -> dict[str, str]:
    return {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}


def numbers(messages: list[dict[str, Any]]) -> list[Any]:
    return [m["body"] for m in messages]


async def test_a_noisy_group_yields_over_http_and_websocket(stack: Stack, project: str) -> None:
    async with httpx.AsyncClient(base_url=stack.url, headers=headers(project)) as http:
        # Given a standard queue with 20 messages of a noisy tenant, then two quiet tenants'
        # and one without a group
        assert (await http.put("/v2/queues/fair", json={})).status_code == 201
        posted = await http.post("/v2/queues/fair/messages", json={"messages": [
            *({"body": n, "group_id": "noisy"} for n in range(1, 21)),
            {"body": 21, "group_id": "quiet-1"}, {"body": 22, "group_id": "quiet-2"},
            {"body": 23},
        ]})
        assert posted.status_code == 201, posted.text

        # When a claim takes ten over HTTP, "noisy" turns noisy after its eighth
        first = await http.post("/v2/queues/fair/claims?limit=10", json={"ttl": 60})
        assert first.status_code == 201
        assert numbers(first.json()["messages"]) == [*range(1, 9), 21, 22]
        assert [m["group_id"] for m in first.json()["messages"]][-2:] == ["quiet-1", "quiet-2"]

        # And a listed message shows its group; one without shows none
        listed = await http.get("/v2/queues/fair/messages?echo=true&limit=20")
        assert [m.get("group_id") for m in listed.json()["messages"]][-2:] == ["noisy", None]

    async with connect(f"ws://{stack.settings.host}:{stack.settings.ws_port}") as ws:
        # When a claim over WebSocket asks for five, the message without a group comes with
        # the oldest noisy ones (nothing else is left)
        frame = {"action": "claim_create", "headers": headers(project),
                 "body": {"queue_name": "fair", "limit": 5, "ttl": 60}}
        await ws.send(orjson.dumps(frame).decode())
        claim = orjson.loads(await ws.recv())
        assert claim["headers"]["status"] == 201
        assert numbers(claim["body"]["messages"]) == [9, 10, 11, 12, 23]
        assert [m.get("group_id") for m in claim["body"]["messages"]] == [
            "noisy", "noisy", "noisy", "noisy", None
        ]
