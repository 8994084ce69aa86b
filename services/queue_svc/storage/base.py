"""The storage contract of queue_svc: queues and their metadata, scoped by project.

Every backend (``sqlite``, ``redis``, ``mongodb``) implements :class:`QueueStore` and is
checked by one contract suite (``tests/contract/test_queue_store.py``). Methods return the
frozen dataclasses below, never dicts or protobuf messages. The same store keeps the pool
catalog (``catalog.py``), reached through :attr:`QueueStore.catalog`, and the topics
(:class:`TopicStore`), reached through :attr:`QueueStore.topics`.

Tenancy is strict: a queue is identified by ``(project, name)``; no method ever reads or
changes a queue of another project.

Errors: a backend raises :class:`services.common.errors.QueueNotFound` and
:class:`services.common.errors.PatchConflict` where documented, and turns its own driver
failures (connection lost, disk I/O, locked database) into
:class:`services.common.errors.Unavailable` at its edge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from services.common.errors import PatchConflict, QuotaExceeded, quota_exceeded
from services.queue_svc.storage.catalog import CatalogStore

PatchOp = Literal["add", "replace", "remove"]
MetadataCheck = Callable[[Mapping[str, Any]], None]
RecordKind = Literal["queues", "topics"]
# The setting that sets the quota of each kind of record.
QUOTA_SETTINGS: dict[RecordKind, str] = {
    "queues": "ZAQAR_PROJECT_MAX_QUEUES", "topics": "ZAQAR_PROJECT_MAX_TOPICS",
}


def over_quota(kind: RecordKind, project: str, quota: int) -> QuotaExceeded:
    """The error of a new record that ``quota`` does not allow."""
    return quota_exceeded(f"Project {project}", quota, kind, QUOTA_SETTINGS[kind])


@dataclass(frozen=True, slots=True)
class QueueRecord:
    """A stored queue. ``metadata`` is the JSON object as stored, key order preserved."""

    project: str
    name: str
    metadata: Mapping[str, Any]
    pool: str | None = None
    """The pool the queue's messages are on (set once, when the queue is created with
    pooling on); None: message_svc's own store."""


@dataclass(frozen=True, slots=True)
class QueuePage:
    """One page of a listing, sorted by name; ``count`` is set only when it was asked for."""

    queues: Sequence[QueueRecord]
    count: int | None = None


@dataclass(frozen=True, slots=True)
class MetadataPatch:
    """One change of :meth:`QueueStore.update_metadata`, a JSON-Patch operation on a top key.

    ``add`` sets ``key`` to ``value``. ``replace`` sets it too, and ``remove`` deletes it; with
    ``strict`` both fail with :class:`PatchConflict` when ``key`` is not stored. Without
    ``strict``, ``replace`` of an absent key sets it and ``remove`` of an absent key does
    nothing (used for reserved keys, which always exist through their defaults).
    """

    op: PatchOp
    key: str
    value: Any = None
    strict: bool = True


def apply_patches(
    metadata: Mapping[str, Any], patches: Sequence[MetadataPatch]
) -> dict[str, Any]:
    """The metadata after ``patches``, applied in order; ``metadata`` itself is not changed.

    Written once for every backend: a backend reads the stored metadata, calls this and
    writes the result back inside one atomic step. An added key goes last, a replaced key
    keeps its place.

    Raises:
        PatchConflict: a strict ``replace``/``remove`` names a key that is not there.
    """
    result = dict(metadata)
    for patch in patches:
        present = patch.key in result
        if patch.op == "add" or (patch.op == "replace" and (present or not patch.strict)):
            result[patch.key] = patch.value
        elif patch.op == "remove" and present:
            del result[patch.key]
        elif patch.strict:
            verb = "replace" if patch.op == "replace" else "remove"
            raise PatchConflict(f"Can't {verb} non-existent object {patch.key}.")
    return result


class TopicStore(Protocol):
    """Topics and their metadata, per project: a namespace of records beside the queues, with
    the same contract as the queue methods of the same names (atomicity, durability, patches,
    listing order and filters). A topic has no pool (``pool`` is always None), and a topic and
    a queue of one name are two records that never see each other.

    ``update_metadata`` raises :class:`services.common.errors.QueueNotFound` for an absent
    topic (the caller names it a topic).
    """

    async def create(
        self, project: str, name: str, metadata: Mapping[str, Any], *, quota: int = 0
    ) -> bool:
        """As :meth:`QueueStore.create` (the quota counts topics)."""
        ...

    async def ensure(self, project: str, name: str, *, quota: int = 0) -> QueueRecord:
        """As :meth:`QueueStore.ensure` (the quota counts topics)."""
        ...

    async def get(self, project: str, name: str) -> QueueRecord | None:
        """As :meth:`QueueStore.get`."""
        ...

    async def update_metadata(
        self,
        project: str,
        name: str,
        patches: Sequence[MetadataPatch],
        check: MetadataCheck | None = None,
    ) -> QueueRecord:
        """As :meth:`QueueStore.update_metadata`."""
        ...

    async def delete(self, project: str, name: str) -> bool:
        """As :meth:`QueueStore.delete`."""
        ...

    async def list(
        self,
        project: str,
        *,
        limit: int,
        marker: str = "",
        name_contains: str = "",
        metadata_filters: Mapping[str, Any] | None = None,
        with_count: bool = False,
    ) -> QueuePage:
        """As :meth:`QueueStore.list`."""
        ...


class QueueStore(Protocol):
    """Queues and their metadata, per project.

    Every method is atomic on its own: a concurrent caller sees a queue either before or
    after a change, never half of it, and no change is lost to a concurrent one. Changes are
    durable once the method returns.
    """

    catalog: CatalogStore
    """The pool catalog, in the same store (same connection); usable once :meth:`open`
    returned."""

    topics: TopicStore
    """The topics, in the same store (same connection); usable once :meth:`open` returned."""

    async def open(self) -> None:
        """Connect, create the schema when needed. Called once before any other method."""

    async def close(self) -> None:
        """Release connections. Idempotent; the store is not used afterwards."""

    async def create(
        self, project: str, name: str, metadata: Mapping[str, Any], pool: str | None = None,
        *, quota: int = 0,
    ) -> bool:
        """Create the queue, or replace the whole metadata of an existing one.

        Atomic: of concurrent creates of one absent queue exactly one returns True. ``pool``
        is stored with a new queue, in the same record and step; an existing queue keeps the
        pool it has.

        ``quota`` (0: none) is the most queues the project may have: a new queue beyond it
        is not made. Checked in the same atomic step as the insert, so concurrent creates
        never go beyond it (on MongoDB, the project's lease makes the count and the insert one
        step, ``services/common/mongo_lease.py``).

        Returns:
            True when the queue did not exist before, False when its metadata was replaced.

        Raises:
            QuotaExceeded: the queue is new and the project has ``quota`` queues already.
        """
        ...

    async def ensure(
        self, project: str, name: str, pool: str | None = None, *, quota: int = 0
    ) -> QueueRecord:
        """The queue, created with empty metadata (and ``pool``) first when it does not exist.

        Atomic: an existing queue's metadata and pool are never touched, even by a concurrent
        create. ``quota`` as for :meth:`create`.

        Raises:
            QuotaExceeded: the queue is new and the project has ``quota`` queues already.
        """
        ...

    async def get(self, project: str, name: str) -> QueueRecord | None:
        """The queue with its stored metadata, or None when it does not exist."""
        ...

    async def exists(self, project: str, name: str) -> bool:
        """Whether the queue exists."""
        ...

    async def update_metadata(
        self,
        project: str,
        name: str,
        patches: Sequence[MetadataPatch],
        check: MetadataCheck | None = None,
    ) -> QueueRecord:
        """Apply ``patches`` in order (see :func:`apply_patches`) as one atomic step.

        ``check`` is called with the resulting metadata before it is written; an exception it
        raises aborts the update and propagates. Either every patch is stored or none is.

        Returns:
            The queue with its new metadata.

        Raises:
            QueueNotFound: the queue does not exist.
            PatchConflict: a strict ``replace``/``remove`` names an absent key.
        """
        ...

    async def count_on_pool(self, pool: str) -> int:
        """How many queues, of every project, are placed on ``pool``.

        Not atomic with placements: a queue created meanwhile may or may not be counted.
        """
        ...

    async def delete(self, project: str, name: str) -> bool:
        """Delete the queue. Idempotent.

        Returns:
            True when it existed.
        """
        ...

    async def list(
        self,
        project: str,
        *,
        limit: int,
        marker: str = "",
        name_contains: str = "",
        metadata_filters: Mapping[str, Any] | None = None,
        with_count: bool = False,
    ) -> QueuePage:
        """Up to ``limit`` queues of ``project`` sorted by name (code point order), without
        their pools (``pool`` is None).

        Args:
            limit: at most this many queues (>= 1).
            marker: only names sorting strictly after it (exclusive; it need not exist).
            name_contains: only names containing this substring (case-sensitive, literal).
            metadata_filters: only queues whose stored metadata has every key with an equal
                value: numbers compare by value (``5`` equals ``5.0``), booleans are not
                numbers, ``None`` matches a stored null but not an absent key, objects and
                arrays compare by their compact JSON text (key order matters, as in MongoDB).
            with_count: also count every queue matching ``name_contains`` and
                ``metadata_filters``, whatever ``marker`` and ``limit``.
        """
        ...
