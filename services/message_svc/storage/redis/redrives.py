"""Redrive job records in Redis (``storage/redrives.py``), on a client of their own.

A job is a hash ``<prefix>:rd:{<project/queue>}`` (``v`` its version, ``d`` its JSON
document), changed by one compare-and-set script (``redrives.lua``). The set
``<prefix>:rd:jobs`` names the jobs that may be active (running, or finishing a batch), so
runners find them without a ``SCAN``; it is another key (another slot on a cluster), to
which a job is added before it is written active and from which
:meth:`RedisRedriveStore.running` prunes the jobs found stopped.
"""

from __future__ import annotations

from importlib import resources

import orjson
import redis.asyncio

from services.common.redis_store import (
    RedisClusterClient,
    check_tls_files,
    open_with_scripts,
)
from services.message_svc.storage.redis._codec import queue_tag
from services.message_svc.storage.redis._connection import STORE, connect, edge, parse
from services.message_svc.storage.redrives import RedriveJob

SCRIPT = resources.files(__package__).joinpath("redrives.lua").read_text("utf-8")


class RedisRedriveStore:
    """:class:`~services.message_svc.storage.redrives.RedriveStore` in Redis or a Redis
    Cluster."""

    def __init__(self, uri: str, cluster: bool = False) -> None:
        self.options = parse(uri, cluster)
        self.address = self.options.address
        self._client: redis.asyncio.Redis | RedisClusterClient | None = None
        self._jobs = f"{self.options.prefix}:rd:jobs"

    async def open(self) -> None:
        await check_tls_files(self.options)
        client = connect(self.options)
        self._scripts = await open_with_scripts(client, {"cas": SCRIPT}, STORE, self.address)
        self._client = client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _redis(self) -> redis.asyncio.Redis | RedisClusterClient:
        if self._client is None:
            raise RuntimeError("the redrive store is not open")
        return self._client

    def _key(self, project: str, queue: str) -> str:
        return f"{self.options.prefix}:rd:{{{queue_tag(project, queue)}}}"

    @edge("read a redrive job")
    async def read(self, project: str, queue: str) -> RedriveJob | None:
        version, doc = await self._redis().hmget(self._key(project, queue), ["v", "d"])
        return None if version is None or doc is None else RedriveJob.decode(doc, int(version))

    @edge("store a redrive job")
    async def write(self, job: RedriveJob) -> bool:
        if job.active:
            await self._redis().sadd(self._jobs, orjson.dumps([job.project, job.queue]))
        stored = await self._scripts["cas"](
            keys=[self._key(job.project, job.queue)],
            args=[job.version, job.encode()],
            client=self._redis(),
        )
        if stored and job.active:
            # Again: running() may have pruned it between the first add and the write.
            await self._redis().sadd(self._jobs, orjson.dumps([job.project, job.queue]))
        return bool(stored)

    @edge("list redrive jobs")
    async def running(self) -> list[tuple[str, str]]:
        found = []
        for member in await self._redis().smembers(self._jobs):
            project, queue = orjson.loads(member)
            job = await self.read(project, queue)
            if job is not None and job.active:
                found.append((str(project), str(queue)))
            else:
                await self._redis().srem(self._jobs, member)
        return found
