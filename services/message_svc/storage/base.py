"""The storage contract of message_svc: messages and claims of every queue, in one store.

Every backend (``sqlite`` now, ``redis`` and ``mongodb`` next) implements :class:`MessageStore`.
Each method is one atomic operation of the backend: a single SQLite transaction, a single Redis
Lua script, a single MongoDB document update (or a retry loop of them that never lets two
writers win the same message). What is the same for every backend (validation, defaults from
queue metadata, checksums, ages, marker encoding, error descriptions) lives above the store,
in :mod:`services.message_svc.service`.

Conventions shared by every method:

* Tenancy: every method takes ``project`` and ``queue``; nothing of another project or queue is
  ever read, changed or reported, even when asked for by id.
* Time: the store reads the time from the ``now`` function it was built with (Unix seconds,
  float), once per operation, so tests can move the clock. A message is *expired* once
  ``now >= expires``; a claim is *live* while ``now < claim expires``. Expired messages and
  claims are never returned, counted or claimed, whether or not :meth:`collect_garbage` has
  removed them yet.
* Order: each message gets a ``seq`` when accepted, strictly increasing within its queue (a
  per-queue monotonic counter or a store-wide one). Listing, claiming and popping go by
  ``seq`` ascending. A ``seq`` is a signed 64-bit integer (SQLite's ``INTEGER``, BSON's
  ``long``), at most :data:`SEQ_MAX`.
* Ids: message and claim ids are uuid4 strings made by the store. An id that does not exist,
  or is not even a uuid, is simply not found.
* Queue versions: each queue has a version, a counter in the store that starts at 0 and is
  raised by :meth:`MessageStore.bump_queue_version` whenever the queue's metadata or listeners
  change (whichever message_svc replica is told of the change raises it). A caller that read
  the metadata after reading the version passes that version to :meth:`MessageStore.post` and
  :meth:`MessageStore.claim`; the store checks it in the same atomic step (MongoDB: in a read
  just before the write, so a change acknowledged while the call is under way may be ordered
  either side of it, as two concurrent calls may) and refuses with :class:`StaleQueue` when it
  is no longer current. So every replica of message_svc applies a
  change from the moment it is acknowledged, without knowing of the other replicas. Versions
  outlive the queue's messages: deleting a queue never resets its version.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

SEQ_MAX: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to post, with every default already resolved."""

    body: bytes
    """UTF-8 JSON, stored and returned byte for byte."""
    ttl: int
    """Seconds the message lives after acceptance."""
    delay: int = 0
    """Seconds after acceptance before the message may be claimed (or listed without
    ``include_delayed``); 0 = at once."""
    group_id: str | None = None
    """The message group, 1-128 characters: kept in order in a FIFO queue
    (:meth:`MessageStore.post_fifo`), a fair-queue tenant in a standard one
    (:meth:`MessageStore.post` stores it, :meth:`MessageStore.claim` with ``fair`` uses it)."""
    dedup_id: str | None = None
    """FIFO queues only: the deduplication id, 1-128 characters."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as stored, seen at the time of the operation that returned it."""

    id: str
    seq: int
    body: bytes
    ttl: int
    """Current TTL in seconds (a claim may have extended it)."""
    created: float
    expires: float
    visible_at: float
    """When the message stops being delayed (``created`` when it never was)."""
    client_id: str
    claim_id: str | None
    """The live claim holding the message; ``None`` when unclaimed or the claim expired."""
    claim_count: int
    """How many claims have taken the message so far."""
    group_id: str | None = None
    """The message group (FIFO or fair queues); ``None`` for a message posted without one."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A live claim with the live messages it holds, in ``seq`` order."""

    id: str
    ttl: int
    grace: int
    created: float
    expires: float
    messages: tuple[StoredMessage, ...]


@dataclass(frozen=True, slots=True)
class DeadLetterPolicy:
    """Where a claim sends messages that were claimed too often (queue metadata)."""

    max_claim_count: int
    queue: str
    """The dead-letter queue, in the same project."""
    ttl: int | None = None
    """TTL the moved message gets (from the move), or ``None`` to keep its own."""


@dataclass(frozen=True, slots=True)
class FairPolicy:
    """Fair claims in a standard queue (docs/architecture.md, "Fair queues").

    A group is *noisy* when the queue's messages of that group held by live claims (its
    in-flight count, counted by the claim as it takes messages) are at least
    ``min_in_flight`` and more than ``share_percent`` per cent of the queue's in-flight
    messages that have a group. With ``share_percent`` at 25 at most three groups are noisy
    at once.
    """

    share_percent: int = 25
    min_in_flight: int = 8
    lookahead: int = 100
    """Claimable messages a claim reads at most by seq, past those it takes (its window:
    ``limit + lookahead``), before it turns to the group index for the oldest messages of the
    groups that are not noisy past the window. Messages without a group are found in the
    window only."""
    backoff: float = 0.0
    """Seconds message_svc claims a queue without fairness after a futile fair claim of it
    (:attr:`ClaimResult.futile`; 0: never); stores do not read it."""

    def noisy(self, in_flight: int, total: int) -> bool:
        """Whether a group with ``in_flight`` of the queue's ``total`` in-flight messages with
        a group is noisy."""
        return in_flight >= self.min_in_flight and in_flight * 100 > self.share_percent * total


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """What :meth:`MessageStore.claim` did."""

    claim: Claim | None
    """The new claim, or ``None`` when no message was claimable."""
    dead_lettered: tuple[str, ...] = ()
    """Ids of the messages moved to the dead-letter queue instead of being claimed."""
    futile: bool = False
    """A fair claim (``fair`` given) whose fairness bought nothing: it put messages of noisy
    groups aside, read its whole window (``limit + fair.lookahead`` claimable messages),
    found neither there nor in the group index ``limit`` messages of the others, and filled
    the rest from those put aside: only noisy groups had claimable messages.
    Not when the claim read every claimable message (fewer than the window): messages of
    other groups posted meanwhile are then within reach of the next fair claim. Always false
    for a claim without ``fair``. message_svc then claims the queue without ``fair`` for a
    while (``fair_backoff``)."""


class DeleteOutcome(enum.Enum):
    """Result of :meth:`MessageStore.delete`; only ``DELETED`` removed anything."""

    DELETED = "deleted"
    ABSENT = "absent"
    CLAIMED = "claimed"
    """Held by a live claim and no claim id was given."""
    NOT_CLAIMED = "not_claimed"
    """A claim id was given but no live claim holds the message."""
    CLAIMED_BY_OTHER = "claimed_by_other"
    """A claim id was given but a different live claim holds the message."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts of a queue's unexpired messages."""

    claimed: int
    """Held by a live claim."""
    free: int
    """Not held by a live claim (delayed ones included)."""
    total: int
    oldest: StoredMessage | None
    newest: StoredMessage | None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend guarantees beyond the contract, for tests and operators."""

    durable: bool
    """Acknowledged writes survive a process crash."""
    shared: bool
    """Several message_svc replicas may use the same store at once."""
    fifo: bool = False
    """Implements :meth:`MessageStore.post_fifo`, :meth:`MessageStore.claim_fifo` and
    :meth:`MessageStore.pop_fifo` (queues with ``_fifo``)."""
    fair: bool = False
    """Stores ``group_id`` in :meth:`MessageStore.post` and takes ``fair`` in
    :meth:`MessageStore.claim` (fair queues)."""


@dataclass(frozen=True, slots=True)
class FifoPosted:
    """What :meth:`MessageStore.post_fifo` did."""

    ids: tuple[str, ...]
    """One id per message given, in order: the new message's, or for a duplicate the id of
    the message first accepted with its ``dedup_id``."""
    stored: tuple[bool, ...]
    """Per message given: whether it was stored (False: a duplicate, nothing stored)."""


class FifoUnsupported(Exception):
    """The store does not implement FIFO queues (``capabilities.fifo`` is false)."""


class StaleQueue(Exception):
    """The queue's version is not the one the caller passed: its metadata changed since the
    caller read it. Nothing was done; reload the metadata and try again."""

    def __init__(self, version: int) -> None:
        super().__init__(f"the queue is at version {version}")
        self.version = version
        """The queue's current version."""


class MessageStore(Protocol):
    """Messages and claims of every queue of every project."""

    capabilities: Capabilities

    async def open(self) -> None:
        """Connect (or open the file) and put the schema, indexes or scripts in place; once,
        before any other call. A store is built by ``from_uri`` and opened by the registry
        (``services/common/store_registry.py``), like every store of every service.

        Raises:
            Unavailable: the store cannot be reached or set up.
        """

    async def close(self) -> None:
        """Release connections and threads. The store is unusable afterwards."""

    async def queue_version(self, project: str, queue: str) -> int:
        """The queue's version: 0 until its first :meth:`bump_queue_version`."""
        ...

    async def bump_queue_version(self, project: str, queue: str) -> int:
        """Raise the queue's version by one, atomically (concurrent bumps each count).

        Returns:
            The new version.
        """
        ...

    async def post(
        self,
        project: str,
        queue: str,
        client_id: str,
        messages: Sequence[NewMessage],
        version: int | None = None,
    ) -> tuple[str, ...]:
        """Store a batch of messages, all or nothing.

        With ``version``, the queue's version is checked in the same atomic step: when it is
        not ``version``, nothing is stored and :class:`StaleQueue` is raised.

        Atomicity: either every message is stored or none is. Ordering: the messages get
        consecutive-in-order ``seq`` values greater than every earlier message of the queue,
        in the order given, so that readers never see a later message of the batch without
        the earlier ones. ``created`` is now, ``expires`` is now + ttl, ``visible_at`` is
        now + delay.

        Returns:
            The new message ids, in the order given.
        """
        ...

    async def post_once(
        self,
        project: str,
        queue: str,
        client_id: str,
        key: str,
        message: NewMessage,
        *,
        remember: int,
        version: int | None = None,
    ) -> tuple[str, bool]:
        """Store one message unless ``key`` was posted to the queue before: an idempotent post.

        The key and the new message's id are stored in the same atomic step as the message
        (MongoDB: the message's id is derived from the key, so a second writer's insert
        fails on it, and the message stays hidden from every claim, pop and listing until
        its key is stored; see ``storage/mongodb/once.py``), and are remembered ``remember``
        seconds, whatever becomes of the message (deleted, claimed, expired). A message
        keeps its ``group_id`` (a fair-queue group). With ``version``, as :meth:`post`
        (checked only when something is to be stored).

        Returns:
            The message's id and True when it was stored now (MongoDB: shown now, which may
            finish the post of an earlier call of the key that stopped before it answered);
            the id the key was first posted with and False when the key was known (nothing
            stored).
        """
        ...

    async def list_messages(
        self,
        project: str,
        queue: str,
        *,
        limit: int,
        after: int | None = None,
        client_id: str = "",
        echo: bool = True,
        include_claimed: bool = False,
        include_delayed: bool = False,
    ) -> list[StoredMessage]:
        """Up to ``limit`` unexpired messages with ``seq > after``, by ``seq`` ascending.

        Args:
            after: the ``seq`` of the last message of the previous page (0 to
                :data:`SEQ_MAX`), or ``None``.
            echo: when false and ``client_id`` is not empty, messages posted with that
                ``client_id`` are left out.
            include_claimed: include messages held by a live claim.
            include_delayed: include messages whose ``visible_at`` is still ahead.

        A page is filtered before it is cut, so paging with any combination of filters
        neither repeats nor skips a message. A queue that holds nothing gives ``[]``.
        """
        ...

    async def get(self, project: str, queue: str, message_id: str) -> StoredMessage | None:
        """The unexpired message with that id in that queue, or ``None``."""
        ...

    async def get_many(
        self, project: str, queue: str, message_ids: Sequence[str]
    ) -> list[StoredMessage]:
        """The unexpired messages among ``message_ids`` (each at most once), by ``seq``."""
        ...

    async def delete(
        self, project: str, queue: str, message_id: str, claim_id: str | None = None
    ) -> DeleteOutcome:
        """Delete one message, honouring claims, as one atomic check-and-delete.

        Without ``claim_id`` an unclaimed message is deleted and a message held by a live
        claim is kept (``CLAIMED``). With ``claim_id`` the message is deleted only when that
        live claim holds it; when no live claim holds it the answer is ``NOT_CLAIMED``, when
        another does ``CLAIMED_BY_OTHER``. An absent or expired message is ``ABSENT``.
        """
        ...

    async def delete_many(
        self,
        project: str,
        queue: str,
        message_ids: Sequence[str],
        claim_ids: Sequence[str] | None = None,
    ) -> int:
        """Delete the given messages atomically, claimed ones included.

        When ``claim_ids`` is given, a message held by a live claim is deleted only when that
        claim is one of ``claim_ids``; unclaimed messages are deleted either way.

        Returns:
            How many messages were deleted.
        """
        ...

    async def pop(self, project: str, queue: str, limit: int) -> list[StoredMessage]:
        """Claim and delete up to ``limit`` of the oldest claimable messages in one step.

        Claimable = unexpired, not delayed, not held by a live claim. Atomicity: a popped
        message was in no live claim and no other pop or claim can return it. The returned
        messages carry a fresh ``claim_id`` (the same for the whole pop) and the
        ``claim_count`` they had before the pop.
        """
        ...

    async def claim(
        self,
        project: str,
        queue: str,
        *,
        limit: int,
        ttl: int,
        grace: int,
        dead_letter: DeadLetterPolicy | None = None,
        version: int | None = None,
        fair: FairPolicy | None = None,
    ) -> ClaimResult:
        """Claim up to ``limit`` of the oldest claimable messages, atomically.

        With ``version``, the queue's version is checked in the same atomic step: when it is
        not ``version``, nothing is claimed or moved and :class:`StaleQueue` is raised.

        Claimable = unexpired, not delayed, not held by a live claim (an expired claim holds
        nothing). Atomicity: no message is ever held by two live claims; concurrent claims
        get disjoint sets. Each claimed message gets ``claim_count + 1`` and, when it would
        expire before ``now + ttl + grace``, ``ttl = ttl + grace`` and
        ``expires = now + ttl + grace``. The claim lives until ``now + ttl``.

        Dead letter: with a policy, a claimable message whose ``claim_count`` is already at
        least ``max_claim_count`` is moved, in the same atomic step, to the end of the
        dead-letter queue (same id; a new ``seq`` there; unclaimed; ``claim_count`` 0; ttl
        replaced by ``dead_letter.ttl`` from now when set; its ``group_id`` kept) instead of
        being claimed, and the claim keeps looking for messages to fill ``limit``.

        Messages with a group (posted to a FIFO queue, or moved from one into this queue) are
        claimable here too; a backend may apply the group rules of :meth:`claim_fifo` to them
        (Redis does: it indexes them apart), which never makes one unclaimable for good.
        On a Redis Cluster, where the dead-letter queue may live in another slot, the move is
        finished in idempotent steps (docs/redis-cluster.md): once ``claim`` returns, the
        message is no longer claimable in its queue, and it appears in the dead-letter queue at
        once or, after a crash between the steps, when the sweeper resumes the move.

        Fair queues (``fair`` given; only when ``capabilities.fair``): the claim counts, in the
        same atomic step, the messages with a group it takes as in flight for their group
        until they are deleted, their claim is released or expires (a renewal keeps them
        counted). A group is noisy as :meth:`FairPolicy.noisy` says, from those counts and
        the messages this claim took before. Reading claimable messages by ``seq``, at most
        ``limit + fair.lookahead`` of them (the window), the claim takes those without a
        group or of a group that is not noisy (then) first; when it read the whole window and
        is still short, the oldest claimable messages past the window of the groups that are
        not noisy, wherever they sit, by ``seq`` across groups (from a per-group index, at a
        cost that does not grow with the noisy groups' backlogs); and only when that leaves
        it short of ``limit`` the oldest of the noisy groups' (work-conserving). Messages
        without a group are never passed over within the window (they are not in the group
        index), and a queue where no message has a group is claimed exactly as without
        ``fair``. Whether messages claimed without ``fair`` count is the backend's (SQLite
        and Redis keep counters that only fair claims raise; MongoDB counts held messages).
        The result says whether the claim was :attr:`ClaimResult.futile`.

        Returns:
            The claim (``None`` when nothing was claimed) and the ids moved to the
            dead-letter queue.
        """
        ...

    async def post_fifo(
        self,
        project: str,
        queue: str,
        client_id: str,
        messages: Sequence[NewMessage],
        *,
        dedup_window: int,
        version: int | None = None,
    ) -> FifoPosted:
        """:meth:`post` for a FIFO queue: messages may carry ``group_id`` and ``dedup_id``.

        Deduplication, in the same atomic step as the post: a message whose ``dedup_id`` was
        accepted in this queue less than ``dedup_window`` seconds ago (by an earlier post, or
        earlier in this batch) is not stored; its id is the first message's. An accepted
        ``dedup_id`` is remembered until ``now + dedup_window`` (a duplicate does not extend
        it), whether or not its message still exists. Stored messages get ``seq`` values as
        :meth:`post` gives them, in the order given, and keep their ``group_id``.

        Raises:
            FifoUnsupported: ``capabilities.fifo`` is false.
            StaleQueue: as :meth:`post`.
        """
        raise FifoUnsupported()

    async def claim_fifo(
        self,
        project: str,
        queue: str,
        *,
        limit: int,
        ttl: int,
        grace: int,
        dead_letter: DeadLetterPolicy | None = None,
        version: int | None = None,
    ) -> ClaimResult:
        """:meth:`claim` for a FIFO queue, with the same atomicity, TTL and dead-letter rules,
        and message groups:

        * A group is *locked* while any of its unexpired messages is held by a live claim. A
          locked group gives nothing to any claim.
        * Of an unlocked group only its head may be taken: its unexpired message of lowest
          ``seq``, when it is claimable (a delayed head holds the rest of the group back);
          once taken (or moved to the dead-letter queue) the next one is the head, so one
          claim may take several messages of one group, in ``seq`` order.
        * Messages without a group are claimable as in :meth:`claim`.

        The claim still takes messages by ``seq`` ascending among those rules allow. A
        dead-letter move keeps ``group_id``, and moves a group's messages in ``seq`` order.

        Raises:
            FifoUnsupported: ``capabilities.fifo`` is false.
            StaleQueue: as :meth:`claim`.
        """
        raise FifoUnsupported()

    async def pop_fifo(self, project: str, queue: str, limit: int) -> list[StoredMessage]:
        """:meth:`pop` for a FIFO queue: the messages :meth:`claim_fifo` would take (without
        dead-letter moves), deleted in the same atomic step.

        Raises:
            FifoUnsupported: ``capabilities.fifo`` is false.
        """
        raise FifoUnsupported()

    async def get_claim(self, project: str, queue: str, claim_id: str) -> Claim | None:
        """The live claim with its live messages, or ``None`` (absent or expired)."""
        ...

    async def renew_claim(
        self, project: str, queue: str, claim_id: str, *, ttl: int, grace: int
    ) -> bool:
        """Restart a live claim's TTL from now, atomically with its messages.

        The claim then expires at ``now + ttl``; each message it holds is extended as
        :meth:`claim` does (to at least ``now + ttl + grace``).

        Returns:
            False when the claim is absent or expired (nothing changes).
        """
        ...

    async def release_claim(self, project: str, queue: str, claim_id: str) -> None:
        """End a claim; its messages become claimable at once. Idempotent."""
        ...

    async def stats(self, project: str, queue: str) -> QueueStats:
        """Counts of the queue's unexpired messages with the oldest and newest by ``seq``.

        Computed in one consistent read: ``claimed + free == total``.
        """
        ...

    async def next_free_at(self, project: str, queue: str) -> float | None:
        """When the queue's next hidden message may become claimable: the earliest time,
        after now, at which an unexpired delayed message becomes visible or a live claim
        expires; ``None`` when there is neither.

        A hint for long polling (a waiter re-checks then), read without locks: a claim
        renewed or released, or a message deleted, meanwhile makes it early or late.
        """
        ...

    async def delete_queue(self, project: str, queue: str) -> None:
        """Remove every message and claim of the queue, atomically. Idempotent."""
        ...

    async def collect_garbage(self) -> int:
        """Physically remove expired messages and claims of every queue.

        Only a space matter: expired items are already invisible. May work in bounded steps;
        call it periodically.

        Returns:
            How many items were removed.
        """
        ...
