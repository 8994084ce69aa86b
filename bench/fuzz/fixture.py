"""Real resources that fuzz cases start from, and the webhook sink their subscriptions point to.

A :class:`Fixture` is one project's set of live resources: a queue with messages, a claim on
two of them, a subscription, the signed-URL headers of a ``share``, and with pooling a pool
and a flavor. Fuzz cases fill their path fields, query and body from it, so that mutations
start from requests that reach the services.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from bench.fuzz.wire import Answer, Connection, call

ADMIN = {"X-Roles": "admin"}


class SetupFailed(Exception):
    """A set-up request (valid by construction) was not answered as it should be."""

    def __init__(self, what: str, answer: Answer) -> None:
        super().__init__(f"{what}: {answer.describe()}")
        self.what = what
        self.answer = answer


@dataclass
class Fixture:
    project: str
    client_id: str
    queue: str
    message_ids: list[str] = field(default_factory=list)
    claim_id: str = ""
    claimed_ids: list[str] = field(default_factory=list)
    subscription_id: str = ""
    pool: str = ""
    pool_uri: str = ""
    flavor: str = ""
    sink: str = ""
    signed: dict[str, str] = field(default_factory=dict)
    # Parts to make again before the next case: "queue" (queue, messages, claim,
    # subscription) and "catalog" (pool, flavor).
    stale: set[str] = field(default_factory=set)

    @property
    def headers(self) -> dict[str, str]:
        return {"Client-ID": self.client_id, "X-Project-ID": self.project}

    def field(self, name: str, pick: int = 0) -> str:
        """A value for a URI template field (or a body key) of that name."""
        if name in ("queue_name", "topic_name"):
            return self.queue
        if name == "message_id":
            ids = self.message_ids + self.claimed_ids
            return ids[pick % len(ids)] if ids else "5b2a8f1e9c3d4e5f6a7b8c9d"
        if name == "claim_id":
            return self.claim_id or "5b2a8f1e9c3d4e5f6a7b8c9e"
        if name == "subscription_id":
            return self.subscription_id or "5b2a8f1e9c3d4e5f6a7b8c9f"
        if name == "pool_name":
            return self.pool or "fzpool"
        if name == "flavor_name":
            return self.flavor or "fzflavor"
        return "fz"


async def expect(conn: Connection, what: str, statuses: tuple[int, ...], method: str,
                 path: str, headers: dict[str, str], doc: Any = None) -> Answer:
    answer = await call(conn, method, path, headers, doc)
    if answer.status not in statuses:
        raise SetupFailed(f"{method} {path} ({what})", answer)
    return answer


async def make(conn: Connection, what: str, kind: str, path: str, headers: dict[str, str],
               doc: Any) -> Answer:
    """PUT a queue or topic (``kind``: "queues" or "topics"); when the project's quota is
    reached (a stack run with ``project_max_queues`` / ``project_max_topics``, which the
    fuzzed requests fill with names of their own), delete the project's records of that kind
    and try once more."""
    answer = await call(conn, "PUT", path, headers, doc)
    if answer.status == 403 and b"Quota exceeded" in answer.body:
        while True:
            listed = await expect(conn, f"{kind} to make room", (200,), "GET",
                                  f"/v2/{kind}?limit=20", headers)
            names = [item["name"] for item in listed.json()[kind]]
            if not names:
                break
            for name in names:
                await expect(conn, f"{kind} to make room", (204,), "DELETE",
                             f"/v2/{kind}/{name}", headers)
        answer = await call(conn, "PUT", path, headers, doc)
    if answer.status not in (201, 204):
        raise SetupFailed(f"PUT {path} ({what})", answer)
    return answer


def _last_segment(href: str) -> str:
    return href.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


async def build(conn: Connection, *, project: str, queue: str, sink_url: str,
                pool: str = "", pool_uri: str = "", messages: int = 6,
                body: Any = None, metadata: dict[str, Any] | None = None) -> Fixture:
    """Create the resources of one fixture over HTTP; raises :class:`SetupFailed`."""
    fx = Fixture(project=project, client_id=str(uuid.uuid4()), queue=queue, sink=sink_url,
                 pool=pool, pool_uri=pool_uri)
    await build_queue(conn, fx, messages=messages, body=body, metadata=metadata)
    await share(conn, fx)
    if pool:
        await build_catalog(conn, fx)
    return fx


async def build_queue(conn: Connection, fx: Fixture, *, messages: int = 6, body: Any = None,
                      metadata: dict[str, Any] | None = None) -> None:
    """The queue of ``fx.queue`` with ``messages`` messages, a claim on two of them and a
    subscription, and a topic of the same name."""
    h = fx.headers
    q = f"/v2/queues/{fx.queue}"
    meta = metadata if metadata is not None else {"description": "fz", "_max_claim_count": 100}
    await make(conn, "queue", "queues", q, h, meta)
    # Posted by another client, so that listing without echo shows them.
    poster = {**h, "Client-ID": str(uuid.uuid4())}
    docs = [{"body": body if body is not None else {"n": i, "fz": True}, "ttl": 3600}
            for i in range(messages)]
    posted = await expect(conn, "messages", (201,), "POST", f"{q}/messages", poster,
                          {"messages": docs})
    ids = [_last_segment(href) for href in posted.json()["resources"]]
    claim = await expect(conn, "claim", (201,), "POST", f"{q}/claims?limit=2", h,
                         {"ttl": 600, "grace": 60})
    fx.claim_id = _last_segment(claim.headers["location"])
    fx.claimed_ids = [m["id"] for m in claim.json()["messages"]]
    fx.message_ids = [i for i in ids if i not in fx.claimed_ids]
    sub = await expect(conn, "subscription", (201,), "POST", f"{q}/subscriptions", h,
                       {"subscriber": f"{fx.sink}/{fx.project}", "ttl": 3600,
                        "options": {"fz": fx.project}})
    fx.subscription_id = sub.json()["subscription_id"]
    # And a topic of the queue's name, for the topic routes (which name it {queue_name})
    await make(conn, "topic", "topics", f"/v2/topics/{fx.queue}", h, {"description": "fz"})


async def share(conn: Connection, fx: Fixture) -> None:
    """The signed-URL headers of a share of the queue's resources (none without a secret): a
    signature that verifies for the fixture's queue, for mutations to start from."""
    answer = await call(conn, "POST", f"/v2/queues/{fx.queue}/share", fx.headers,
                        {"paths": ["messages", "claims", "subscriptions"],
                         "methods": ["GET", "POST", "DELETE", "PATCH"]})
    if answer.status == 200:
        grant = answer.json()
        fx.signed = {
            "URL-Signature": grant["signature"],
            "URL-Expires": grant["expires"],
            "URL-Methods": ",".join(grant["methods"]),
            "URL-Paths": ",".join(grant["paths"]),
        }


async def build_catalog(conn: Connection, fx: Fixture) -> None:
    """The pool ``fx.pool`` on ``fx.pool_uri`` and the project's flavor of that pool."""
    admin = {**fx.headers, **ADMIN}
    await expect(conn, "pool", (201,), "PUT", f"/v2/pools/{fx.pool}", admin,
                 {"uri": fx.pool_uri, "weight": 10})
    fx.flavor = f"fzf-{fx.pool}"
    await expect(conn, "flavor", (201,), "PUT", f"/v2/flavors/{fx.flavor}", admin,
                 {"pool_list": [fx.pool]})


class Sink:
    """A webhook receiver on a loopback port: answers 204 to every request, counts them."""

    def __init__(self) -> None:
        self.hits = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.hits += 1
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                ValueError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

