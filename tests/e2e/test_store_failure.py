"""A store that goes away mid-run: 503 with a Zaqar body, never a 500 or a hang; recovery
without a restart; no acknowledged message lost (Redis with AOF ``appendfsync always``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from services.common.config import Settings
from tests.e2e.harness import Stack, start_stack
from tests.servers import ServerProcess, mongodb_process, redis_process

pytestmark = pytest.mark.e2e

HEADERS = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "failover",
           "Content-Type": "application/json"}


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[ServerProcess]:
    server = redis_process(tmp_path / "redis", durable=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_stack(
    durable_redis: ServerProcess, make_settings: Callable[..., Settings]
) -> Iterator[Stack]:
    uri = f"redis://127.0.0.1:{durable_redis.port}/0"
    stack = start_stack(make_settings(queue_store=uri, message_store=uri, rpc_timeout=5.0))
    yield stack
    assert stack.stop() == 0


def all_message_ids(http: httpx.Client, queue: str) -> list[str]:
    ids: list[str] = []
    params = {"limit": "20", "echo": "true", "include_claimed": "true"}
    while True:
        r = http.get(f"/v2/queues/{queue}/messages", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        if not page["messages"]:
            return ids
        ids += [m["id"] for m in page["messages"]]
        params["marker"] = page["links"][0]["href"].rsplit("marker=", 1)[1]


def test_redis_killed_and_restarted(durable_redis: ServerProcess, redis_stack: Stack) -> None:
    with httpx.Client(base_url=redis_stack.url, headers=HEADERS, timeout=30) as http:
        # Given 100 messages, each acknowledged with a 201
        acked: list[str] = []
        for i in range(100):
            r = http.post("/v2/queues/fo/messages", json={"messages": [{"body": {"i": i}}]})
            assert r.status_code == 201, r.text
            acked += [href.rsplit("/", 1)[1] for href in r.json()["resources"]]

        # When redis-server is killed (SIGKILL, as in a crash)
        durable_redis.kill()
        # Then requests answer 503 with a Zaqar body, quickly, and never 500
        for method, path, body in [
            ("POST", "/v2/queues/fo/messages", {"messages": [{"body": "x"}]}),
            ("GET", "/v2/queues/fo/messages", None),
            ("POST", "/v2/queues/fo/claims", {"ttl": 60}),
            ("GET", "/v2/queues", None),
        ]:
            started = time.monotonic()
            r = http.request(method, path, json=body)
            assert r.status_code == 503, (method, path, r.status_code, r.text)
            assert r.json()["title"] == "Service temporarily unavailable"
            assert time.monotonic() - started < 8

        # When it comes back on the same data
        durable_redis.start()
        # Then the running services recover without a restart
        deadline = time.monotonic() + 20
        while True:
            r = http.post("/v2/queues/fo/messages", json={"messages": [{"body": "after"}]})
            if r.status_code == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 201, r.text
        # And every acknowledged message is still there, in order
        ids = all_message_ids(http, "fo")
        assert ids[: len(acked)] == acked
        assert len(ids) == len(acked) + 1


# Seconds the services' MongoDB client waits in server selection before a call fails.
SELECTION = 4


def test_an_unreachable_mongodb_answers_concurrent_requests_at_once(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    # Given a stack on a MongoDB server (calls wait SELECTION seconds for it), and a queue
    server = mongodb_process(tmp_path / "mongodb")
    server.start()
    try:
        def uri(service: str) -> str:
            return (f"mongodb://127.0.0.1:{server.port}/down_{service}"
                    f"?serverSelectionTimeoutMS={SELECTION * 1000}")

        stack = start_stack(make_settings(
            queue_store=uri("queue"), message_store=uri("message"),
            notifier_store=uri("notifier"), rpc_timeout=30.0,
        ))
        try:
            with httpx.Client(base_url=stack.url, headers=HEADERS, timeout=60) as http:
                r = http.post("/v2/queues/down/messages", json={"messages": [{"body": 1}]})
                assert r.status_code == 201, r.text
                # When the server goes away, and message_svc has waited out a server selection
                server.kill()
                found = (f"message store at mongodb://127.0.0.1:{server.port}/down_message "
                         "cannot be reached")
                for _ in range(10):
                    r = http.post("/v2/queues/down/messages", json={"messages": [{"body": 2}]})
                    assert r.status_code == 503, r.text
                    if any(found in line for line in stack.output):
                        break
                assert any(found in line for line in stack.output), "".join(stack.output[-20:])

            # Then of 16 concurrent requests, one waits for the server in its turn and the
            # others answer 503 at once: before any call could have waited out a selection
            async def burst() -> list[tuple[int, str, float]]:
                async with httpx.AsyncClient(base_url=stack.url, headers=HEADERS,
                                             timeout=60) as client:
                    started = time.monotonic()

                    async def one(n: int) -> tuple[int, str, float]:
                        r = await client.post("/v2/queues/down/messages",
                                              json={"messages": [{"body": n}]})
                        return r.status_code, r.json()["title"], time.monotonic() - started

                    return await asyncio.gather(*(one(n) for n in range(16)))

            answers = asyncio.run(burst())
            assert {(status, title) for status, title, _ in answers} == {
                (503, "Service temporarily unavailable")}
            at_once = [took for _, _, took in answers if took < SELECTION]
            assert len(at_once) >= 15, sorted(took for _, _, took in answers)
        finally:
            assert stack.stop() == 0
    finally:
        server.stop()
