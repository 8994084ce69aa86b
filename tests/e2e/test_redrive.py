"""Dead-letter redrive end to end over HTTP and WebSocket: ``zaqar-grpc up`` on each store
(the session's stacks): messages dead-lettered by real claims go back to their source queue
(or a destination), progress and cancel, and every 4xx the route answers."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.e2e.harness import Stack

pytestmark = pytest.mark.e2e


def headers(project: str) -> dict[str, str]:
    return {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}


async def ws_call(ws: ClientConnection, project: str, action: str, **body: Any) -> Any:
    frame = {"action": action, "headers": headers(project), "body": body}
    await ws.send(orjson.dumps(frame).decode())
    return orjson.loads(await ws.recv())


async def dead_letter(http: httpx.AsyncClient, source: str, count: int) -> None:
    """``count`` messages of ``source`` moved to its dead-letter queue ``dlq`` by claims."""
    assert (await http.put("/v2/queues/dlq", json={})).status_code == 201
    meta = {"_max_claim_count": 1, "_dead_letter_queue": "dlq"}
    assert (await http.put(f"/v2/queues/{source}", json=meta)).status_code == 201
    posted = await http.post(f"/v2/queues/{source}/messages", json={"messages": [
        {"body": n, "ttl": 600} for n in range(count)]})
    assert posted.status_code == 201, posted.text
    while True:
        claim = await http.post(f"/v2/queues/{source}/claims?limit=20", json={"ttl": 60})
        if claim.status_code == 204:
            return
        assert (await http.delete(claim.headers["location"])).status_code == 204


async def finished(http: httpx.AsyncClient, queue: str = "dlq") -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = (await http.get(f"/v2/queues/{queue}/redrive")).json()
        if job["status"] != "running" or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.05)


async def bodies(http: httpx.AsyncClient, queue: str) -> list[Any]:
    found: list[Any] = []
    url = f"/v2/queues/{queue}/messages?echo=true&include_claimed=true&limit=20"
    while True:
        page = await http.get(url)
        if page.status_code == 204 or not page.json()["messages"]:
            return found
        found += [m["body"] for m in page.json()["messages"]]
        url = next(link["href"] for link in page.json()["links"] if link["rel"] == "next")


async def test_redrive_over_http(stack: Stack, project: str) -> None:
    async with httpx.AsyncClient(base_url=stack.url, headers=headers(project)) as http:
        # Given 5 messages dead-lettered from "src"
        await dead_letter(http, "src", 5)
        assert await bodies(http, "dlq") == [0, 1, 2, 3, 4]

        # When the dead-letter queue is redriven
        started = await http.post("/v2/queues/dlq/redrive", json={"max_per_second": 100})

        # Then the job is accepted, names its source and ends having moved them all back
        assert started.status_code == 202, started.text
        assert started.headers["location"] == "/v2/queues/dlq/redrive"
        job = started.json()
        assert (job["queue"], job["destination"], job["max_per_second"]) == ("dlq", "src", 100)
        done = await finished(http)
        assert (done["status"], done["moved"], done["remaining"]) == ("done", 5, 0)
        assert await bodies(http, "src") == [0, 1, 2, 3, 4]
        assert await bodies(http, "dlq") == []

        # And DELETE of a finished job is 204 and changes nothing
        assert (await http.delete("/v2/queues/dlq/redrive")).status_code == 204
        assert (await http.get("/v2/queues/dlq/redrive")).json()["status"] == "done"


async def test_http_refusals(stack: Stack, project: str) -> None:
    async with httpx.AsyncClient(base_url=stack.url, headers=headers(project)) as http:
        await http.put("/v2/queues/dlq", json={})
        await http.put("/v2/queues/to", json={})

        async def refused(status: int, body: Any, queue: str = "dlq") -> str:
            answer = await http.post(f"/v2/queues/{queue}/redrive", json=body)
            assert answer.status_code == status, answer.text
            assert set(answer.json()) == {"title", "description"}
            description: str = answer.json()["description"]
            return description

        # Bad shapes and values: 400 with Zaqar's body
        assert "max_per_second" in await refused(400, {"max_per_second": "fast"})
        assert "max_per_second" in await refused(400, {"max_per_second": 0})
        assert "max_per_second" in await refused(400, {"max_per_second": 1001})
        assert "destination" in await refused(400, {"destination": 7})
        assert "Unknown" in await refused(400, {"speed": 1})
        assert "does not exist" in await refused(400, {"destination": "absent"})
        assert "itself" in await refused(400, {"destination": "dlq"})
        assert "give a destination" in await refused(400, {})
        # An absent dead-letter queue: 404
        await refused(404, {"destination": "to"}, queue="never-made")
        # No job yet: GET and DELETE 404
        assert (await http.get("/v2/queues/dlq/redrive")).status_code == 404
        assert (await http.delete("/v2/queues/dlq/redrive")).status_code == 404

        # A job running (one message a second): a second POST is 409, DELETE cancels it
        await http.post("/v2/queues/dlq/messages", json={"messages": [
            {"body": n} for n in range(20)]})
        assert (await http.post("/v2/queues/dlq/redrive", json={
            "destination": "to", "max_per_second": 1})).status_code == 202
        await refused(409, {"destination": "to"})
        assert (await http.delete("/v2/queues/dlq/redrive")).status_code == 204
        assert (await http.get("/v2/queues/dlq/redrive")).json()["status"] == "cancelled"


async def test_redrive_over_websocket(stack: Stack, project: str) -> None:
    async with httpx.AsyncClient(base_url=stack.url, headers=headers(project)) as http:
        await dead_letter(http, "src", 3)
    async with connect(f"ws://{stack.settings.host}:{stack.settings.ws_port}") as ws:
        # No job yet: 404 for get and delete
        for action in ("queue_redrive_get", "queue_redrive_delete"):
            answer = await ws_call(ws, project, action, queue_name="dlq")
            assert answer["headers"]["status"] == 404, answer
        # A bad rate: 400
        bad = await ws_call(ws, project, "queue_redrive", queue_name="dlq", max_per_second=0)
        assert bad["headers"]["status"] == 400

        # When redriven over the socket, the job runs and ends
        started = await ws_call(ws, project, "queue_redrive", queue_name="dlq")
        assert started["headers"]["status"] == 202, started
        assert started["body"]["destination"] == "src"
        deadline = time.monotonic() + 60
        while True:
            got = await ws_call(ws, project, "queue_redrive_get", queue_name="dlq")
            if got["body"]["status"] != "running" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert (got["body"]["status"], got["body"]["moved"]) == ("done", 3)
        cancelled = await ws_call(ws, project, "queue_redrive_delete", queue_name="dlq")
        assert cancelled["headers"]["status"] == 204
    async with httpx.AsyncClient(base_url=stack.url, headers=headers(project)) as http:
        assert await bodies(http, "src") == [0, 1, 2]
