"""One writer at a time per scope on MongoDB: what makes a quota's count and the insert it
allows one step there.

MongoDB changes one document atomically, and the stores write without multi-document
transactions (a single server has none). A quota ("a project has at most N queues") needs its
count and the insert that follows to be one step, or creates racing at the quota each count
N - 1 and each insert. So a quota-checked create first takes the scope's lease: a document
whose ``_id`` is the scope, inserted (the unique ``_id`` lets one writer in) and deleted when
the create is done. The others wait for it, a few milliseconds. A lease whose holder died
(the process killed between the two) runs out after :data:`LEASE_SECONDS` and is then taken
over, so a scope is never locked for good.

A holder stalled for longer than that (a process paused, a partition) may wake to insert after
another writer took its lease over and counted without it. So a holder checks, after its
insert, that the lease is still its own (:meth:`Lease.lost`): when it is not, it counts again
and, beyond the quota, deletes what it inserted and refuses the create. The writer that took
the lease over counted after anything inserted before the check, so the quota holds; two
stalled holders at once may both undo theirs (a refusal too many, never a record too many).

Only creates that may add to the count take the lease: deletes only lower it, and the stores
take no lease for a record that already exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import orjson
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.common.backoff import Backoff
from services.common.mongo_store import Document, describe
from services.common.store_edge import contended

log = logging.getLogger(__name__)

COLLECTION = "leases"
# How long a lease holds without its holder: far above the two or three round trips a
# create takes with it.
LEASE_SECONDS = 10.0
# Back-off while another writer holds the lease: from the first to the last, doubling.
FIRST_WAIT = 0.002
LAST_WAIT = 0.05


@dataclass(frozen=True)
class Lease:
    """A lease held (:meth:`Leases.held`)."""

    collection: AsyncCollection[Document]
    scope_id: str
    token: str
    """This holder's, unique: what it inserts may carry it, to be found again and undone."""

    async def lost(self) -> bool:
        """Whether another writer took the lease over since it was taken (it ran out while
        its holder stalled): then that writer may have counted without what the holder
        inserted, and the holder must count again."""
        found = await self.collection.find_one({"_id": self.scope_id, "h": self.token},
                                               {"_id": True})
        return found is None

    async def overrun(
        self, records: AsyncCollection[Document], counted: Document, quota: int
    ) -> bool:
        """Whether, after the insert the lease guarded, the lease was :meth:`lost` and the
        ``counted`` records are now more than ``quota``: then the holder must undo its insert
        and refuse it."""
        if not await self.lost():
            return False
        return await records.count_documents(counted, limit=quota + 1) > quota


@dataclass
class Leases:
    """The leases of one store, in the collection :data:`COLLECTION` of the database that
    ``database`` gives (called at each use: the store's client may be reopened)."""

    database: Callable[[], AsyncDatabase[Document]]
    store: str
    seconds: float = LEASE_SECONDS
    clock: Callable[[], float] = field(default=time.time)  # one clock for every process

    @contextlib.asynccontextmanager
    async def held(self, scope: Sequence[str], action: str) -> AsyncIterator[Lease]:
        """Hold the lease of ``scope`` (what is counted, and whose: ``("queues", project)``)
        for the block; check :meth:`Lease.lost` after the insert it guards.

        Raises:
            Unavailable: another holder kept it for longer than a lease lasts (``action``
                names what waited).
        """
        leases = self.database()[COLLECTION]
        scope_id = orjson.dumps(list(scope)).decode()  # unambiguous whatever the names hold
        token = uuid.uuid4().hex
        # A lease left by a dead holder is over well within this.
        backoff = Backoff(self.seconds * 1.5, first=FIRST_WAIT, last=LAST_WAIT)
        while True:
            now = self.clock()
            try:
                await leases.insert_one({"_id": scope_id, "h": token, "u": now + self.seconds})
                break
            except DuplicateKeyError:
                # Held: taken over once its holder let it run out.
                await leases.delete_one({"_id": scope_id, "u": {"$lt": now}})
            if not await backoff.pause():
                raise contended(self.store, action)
        try:
            yield Lease(leases, scope_id, token)
        finally:
            # Given back even when the caller is cancelled: the next writer need not wait for
            # it to run out. A store that does not answer now leaves it to run out, and the
            # caller its outcome (the create is done, or failed on its own).
            try:
                await asyncio.shield(leases.delete_one({"_id": scope_id, "h": token}))
            except PyMongoError as exc:
                log.warning("could not give back the lease %s of the %s (%s); it runs out in "
                            "%g s", scope_id, self.store, describe(exc), self.seconds)
