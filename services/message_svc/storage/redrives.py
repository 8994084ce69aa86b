"""The storage contract of dead-letter redrive jobs (docs/architecture.md, "Dead-letter redrive").

One job record per (project, dead-letter queue), kept as one versioned document that changes
only by compare-and-set: :meth:`RedriveStore.read` returns it with its version, and
:meth:`RedriveStore.write` stores a new one only when the stored version is still the one read.
Every rule (one running job per queue, leases, cancelling, progress) is written once above
these primitives, in :mod:`services.message_svc.redrive`, so it holds the same on every
backend, MongoDB without transactions included.

The records live in message_svc's own store, beside (not inside) its messages: the backends
open their own connections from the message store's URI (:func:`open_redrive_store`), so the
message store's modules are untouched. The built-in schemes are served; another package's
message store has no redrive (``None``).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, replace
from typing import Any, Final, Protocol

import orjson

from services.common.store_probe import REDIS_SCHEMES
from services.common.store_registry import scheme_of

RUNNING: Final = "running"
CANCELLED: Final = "cancelled"
DONE: Final = "done"
FAILED: Final = "failed"
STATUSES: Final = (RUNNING, CANCELLED, DONE, FAILED)


@dataclass(frozen=True, slots=True)
class RedriveJob:
    """A redrive job as stored; ``version`` is the record's version when it was read."""

    project: str
    queue: str
    """The dead-letter queue the job empties."""
    id: str
    """A uuid4, part of every idempotency key the job posts with."""
    destination: str
    max_per_second: int | None
    status: str
    """One of :data:`STATUSES`."""
    started: float
    updated: float
    mark: int
    """The dead-letter queue's newest seq when the job started (0: it was empty): messages
    with a higher seq are left where they are."""
    cursor: int = 0
    """The seq of the last message handled (0: none yet)."""
    batch: tuple[str, ...] = ()
    """The ids of the batch under way (the messages listed after ``cursor``), recorded
    before any of them is posted; () between batches. Whoever holds the lease finishes it
    (posts, deletes, counts) before anything else, a cancelled job's included."""
    batch_end: int = 0
    """The seq of the batch's last message: ``cursor`` once the batch is finished."""
    moved: int = 0
    remaining: int = 0
    """The dead-letter queue's message count after the last batch."""
    owner: str = ""
    """The runner holding the lease ("" when none)."""
    lease_until: float = 0.0
    error: str = ""
    """Why a ``failed`` job failed."""
    version: int = 0

    def encode(self) -> bytes:
        doc = asdict(self)
        del doc["version"]
        return orjson.dumps(doc)

    @classmethod
    def decode(cls, raw: bytes | str, version: int) -> RedriveJob:
        doc: dict[str, Any] = orjson.loads(raw)
        doc["batch"] = tuple(doc.get("batch", ()))
        return cls(**doc, version=version)

    @property
    def active(self) -> bool:
        """A runner must carry on with it: running, or a batch under way (a job cancelled
        during a batch finishes that batch)."""
        return self.status == RUNNING or bool(self.batch)

    def next(self, **changes: Any) -> RedriveJob:
        """This job with ``changes``, as the next version to write."""
        return replace(self, **changes)


def indexed_status(job: RedriveJob) -> str:
    """The status a store indexes the job under: :data:`RUNNING` for every active job, so
    :meth:`RedriveStore.running` finds a cancelled job's batch under way too."""
    return RUNNING if job.active else job.status


class RedriveStore(Protocol):
    """Redrive job records of every project."""

    address: str

    async def open(self) -> None:
        """Connect and put the table, index or collection in place; once, before any call.

        Raises:
            Unavailable: the store cannot be reached or set up.
        """

    async def close(self) -> None:
        """Release connections. The store is unusable afterwards."""

    async def read(self, project: str, queue: str) -> RedriveJob | None:
        """The queue's job record with its version, or ``None`` when it never had one."""
        ...

    async def write(self, job: RedriveJob) -> bool:
        """Store ``job`` (its project and queue name the record) as version
        ``job.version + 1``, only when the stored version is ``job.version`` (0: no record),
        atomically.

        A write sent again after its connection failed finds itself stored and answers True.

        Returns:
            False when the record changed since it was read (nothing written).
        """
        ...

    async def running(self) -> list[tuple[str, str]]:
        """(project, queue) of every :attr:`~RedriveJob.active` job (running, or finishing
        a batch), in no order. A job that stops may still be listed by a call made meanwhile
        (callers read it)."""
        ...


_REDIS: Final = ("services.message_svc.storage.redis.redrives", "RedisRedriveStore")
_BACKENDS: Final = {
    "sqlite": ("services.message_svc.storage.sqlite.redrives", "SqliteRedriveStore", {}),
    **{scheme: (*_REDIS, {"cluster": True} if scheme.endswith("+cluster") else {})
       for scheme in REDIS_SCHEMES},
    "mongodb": ("services.message_svc.storage.mongodb.redrives", "MongoRedriveStore", {}),
    "mongodb+srv": ("services.message_svc.storage.mongodb.redrives", "MongoRedriveStore", {}),
}


def redrive_store_for(uri: str) -> RedriveStore | None:
    """The redrive job store over the message store at ``uri``, built without I/O; ``None``
    for a scheme without one (another package's backend).

    Raises:
        ConfigurationError: the URI is malformed.
    """
    backend = _BACKENDS.get(scheme_of(uri))
    if backend is None:
        return None
    module, name, options = backend
    cls = getattr(importlib.import_module(module), name)
    store: RedriveStore = cls(uri, **options)
    return store


async def open_redrive_store(uri: str) -> RedriveStore | None:
    """:func:`redrive_store_for`, opened."""
    store = redrive_store_for(uri)
    if store is not None:
        await store.open()
    return store
