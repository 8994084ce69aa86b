"""After a store restart, every service serves without errors within a second of the store
accepting connections again: no request goes down a connection the old server closed.

A real ``zaqar-grpc up`` on one redis-server (queues, messages and subscriptions all on it),
under concurrent HTTP load (posts, claims, deletes, listings, queue reads), with the gateway's
coalescing on and off. redis-server is killed (SIGKILL) and started again on the same port;
once it accepts connections and one second has passed, the load goes on and every answer must
be a success.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from services.common.config import Settings
from tests.e2e.harness import start_stack
from tests.servers import redis_process

pytestmark = pytest.mark.e2e

WORKERS = 8
ROUNDS_AFTER = 25  # rounds per worker measured after recovery
RECOVERY = 1.0  # seconds the services get once the store accepts connections


FAILURES: list[str] = []


def note(r: httpx.Response) -> int:
    if r.status_code >= 500:
        FAILURES.append(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}")
    return r.status_code


async def one_round(http: httpx.AsyncClient, queue: str) -> list[int]:
    """Post, claim and delete, list, read the queue: the statuses of each request."""
    statuses = []
    r = await http.post(f"/v2/queues/{queue}/messages",
                        json={"messages": [{"body": {"n": 1}, "ttl": 300}]})
    statuses.append(note(r))
    r = await http.post(f"/v2/queues/{queue}/claims?limit=2", json={"ttl": 60, "grace": 60})
    statuses.append(note(r))
    if r.status_code == 201:
        for message in r.json()["messages"]:
            d = await http.delete(message["href"])
            statuses.append(note(d))
    r = await http.get(f"/v2/queues/{queue}/messages", params={"echo": "true"})
    statuses.append(note(r))
    r = await http.get(f"/v2/queues/{queue}/stats")
    statuses.append(note(r))
    r = await http.get("/v2/queues")
    statuses.append(note(r))
    return statuses


@pytest.mark.parametrize("message_batch", [True, False], ids=["coalescing", "no-coalescing"])
async def test_no_error_after_a_redis_restart(
    tmp_path: Path, make_settings: Callable[..., Settings], message_batch: bool
) -> None:
    redis = redis_process(tmp_path / "redis")
    redis.start()
    uri = f"redis://127.0.0.1:{redis.port}/0"
    stack = start_stack(make_settings(
        queue_store=uri, message_store=uri, notifier_store=uri, message_batch=message_batch,
    ))
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": f"rs-{uuid.uuid4().hex[:8]}"}
    limits = httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)
    try:
        async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=30,
                                     limits=limits) as http:
            queues = [f"rs-{i}" for i in range(WORKERS)]
            # Given every service busy on Redis (each pooled connection used)
            for statuses in await asyncio.gather(*(one_round(http, q) for q in queues)):
                assert set(statuses) <= {200, 201, 204}, statuses
            # When redis-server dies and comes back on the same port
            redis.kill()
            down = await asyncio.gather(*(one_round(http, q) for q in queues))
            assert all(s in (200, 201, 204, 503) for statuses in down for s in statuses)
            await asyncio.to_thread(redis.start)
            await asyncio.sleep(RECOVERY)
            FAILURES.clear()

            # Then, a second later, not one request fails
            async def worker(queue: str) -> Counter[int]:
                seen: Counter[int] = Counter()
                for _ in range(ROUNDS_AFTER):
                    seen.update(await one_round(http, queue))
                return seen

            total: Counter[int] = Counter()
            for seen in await asyncio.gather(*(worker(q) for q in queues)):
                total.update(seen)
            assert set(total) <= {200, 201, 204}, (total, FAILURES)
            assert total[201] >= WORKERS * ROUNDS_AFTER  # every post went through
    finally:
        assert stack.stop() == 0, "".join(stack.output[-40:])
        redis.stop()
