"""Redrive job records in MongoDB (``storage/redrives.py``), on a client of their own.

Collection ``redrive_jobs``: one document per job, ``_id`` "<project>/<queue>" (``/`` is in
no queue name), ``ver`` its version, ``st`` its status (indexed, for the runners: ``running``
for every active job, a cancelled one finishing its batch too), ``d`` the JSON document. A
write is an ``update_one`` filtered on the version read, or an insert when there was none (a
duplicate key: someone else inserted first).
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from services.message_svc.storage.mongodb._connection import connect, edge, parse
from services.message_svc.storage.redrives import RUNNING, RedriveJob, indexed_status


class MongoRedriveStore:
    """:class:`~services.message_svc.storage.redrives.RedriveStore` in MongoDB."""

    def __init__(self, uri: str) -> None:
        self.options = parse(uri)
        self.address = self.options.address
        self._client: Any = None
        self._jobs: Any = None

    @edge("open the redrive jobs")
    async def open(self) -> None:
        client = connect(self.options)
        try:
            jobs = self.options.database_on(client)["redrive_jobs"]
            await jobs.create_index([("st", ASCENDING)], name="status")
        except BaseException:
            await client.close()
            raise
        self._client, self._jobs = client, jobs

    async def close(self) -> None:
        if self._client is not None:
            client, self._client, self._jobs = self._client, None, None
            await client.close()

    @edge("read a redrive job")
    async def read(self, project: str, queue: str) -> RedriveJob | None:
        found = await self._jobs.find_one({"_id": f"{project}/{queue}"})
        return None if found is None else RedriveJob.decode(found["d"], int(found["ver"]))

    @edge("store a redrive job")
    async def write(self, job: RedriveJob) -> bool:
        key, doc = f"{job.project}/{job.queue}", job.encode().decode()
        new = {"ver": job.version + 1, "st": indexed_status(job), "d": doc}
        if job.version == 0:
            try:
                await self._jobs.insert_one({"_id": key, **new})
                return True
            except DuplicateKeyError:
                pass
        else:
            result = await self._jobs.update_one({"_id": key, "ver": job.version}, {"$set": new})
            if result.matched_count:
                return True
        # Sent again after a failed connection: already stored as this version.
        again = await self._jobs.find_one({"_id": key, "ver": job.version + 1, "d": doc})
        return again is not None

    @edge("list redrive jobs")
    async def running(self) -> list[tuple[str, str]]:
        found = []
        async for document in self._jobs.find({"st": RUNNING}, {"_id": 1}):
            project, _, queue = str(document["_id"]).rpartition("/")
            found.append((project, queue))
        return found
