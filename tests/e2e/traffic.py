"""Load for the failover tests of ``zaqar-grpc up`` (a Redis Cluster master killed, a Sentinel
group's master killed): a producer posting pairs of messages and a consumer claiming and
deleting them over HTTP, keeping the id of every message acknowledged with a 201 and of every
message whose delete answered 204, so that a test can tell which acknowledged message is lost.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx


def headers(project: str) -> dict[str, str]:
    return {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}


def message_id(href: str) -> str:
    return href.rsplit("/", 1)[1].split("?", 1)[0]


async def all_message_ids(http: httpx.AsyncClient, queue: str) -> list[str]:
    """Every message of the queue, claimed ones included, page by page."""
    ids: list[str] = []
    params = {"limit": "20", "echo": "true", "include_claimed": "true"}
    while True:
        r = await http.get(f"/v2/queues/{queue}/messages", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        if not page["messages"]:
            return ids
        ids += [m["id"] for m in page["messages"]]
        params["marker"] = page["links"][0]["href"].rsplit("marker=", 1)[1]


PROJECT, QUEUE = "failover", "load"


@dataclass
class Traffic:
    """A producer posting pairs of messages and a consumer claiming and deleting them, over
    HTTP against one stack; what each answer was, and the ids of every message acknowledged
    with a 201 and of every message whose delete answered 204."""

    name: str
    http: httpx.AsyncClient
    acked: list[str] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)
    posted: list[tuple[float, float]] = field(default_factory=list)  # (sent, answered) of 201s
    streak: int = 0  # posts answered 201 in a row
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __repr__(self) -> str:
        return (f"<{self.name}: {len(self.acked)} acknowledged, {len(self.deleted)} deleted, "
                f"streak {self.streak}, {dict(self.statuses)}>")

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._produce()),
                       asyncio.ensure_future(self._consume())]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _produce(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            sent = time.monotonic()
            r = await self.http.post(f"/v2/queues/{QUEUE}/messages", json={"messages": [
                {"body": {"n": n, "i": i}, "ttl": 600} for i in range(2)
            ]})
            self.statuses[f"post {r.status_code}"] += 1
            if r.status_code == 201:
                self.acked += [message_id(href) for href in r.json()["resources"]]
                self.posted.append((sent, time.monotonic()))
                self.streak += 1
            else:
                self.streak = 0
            await asyncio.sleep(0.01)

    async def _consume(self) -> None:
        while not self._stop.is_set():
            r = await self.http.post(f"/v2/queues/{QUEUE}/claims?limit=5",
                                     json={"ttl": 60, "grace": 60})
            self.statuses[f"claim {r.status_code}"] += 1
            if r.status_code != 201:
                await asyncio.sleep(0.02)
                continue
            for message in r.json()["messages"]:
                await self._delete(message["href"])

    async def _delete(self, href: str) -> None:
        """Sent again while it answers 503, so that a 204 is known for each deleted message."""
        deadline = time.monotonic() + 60
        while True:
            r = await self.http.delete(href)
            self.statuses[f"delete {r.status_code}"] += 1
            if r.status_code == 204:
                self.deleted.add(message_id(href))
                return
            if r.status_code != 503 or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.05)
