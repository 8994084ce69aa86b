"""The data plane's rules over the message store: what every backend shares.

Validation, defaults from queue metadata, the marker format, dead-letter bookkeeping and the
translation of store outcomes into errors live here; atomic work is the store's
(``storage/base.py``). Raised errors are ``services.common.errors`` classes, which the server's
error interceptor turns into statuses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import NamedTuple

from services.common import bodies, limits
from services.common.errors import (
    ClaimNotFound,
    InvalidArgument,
    MessageIsClaimed,
    MessageNotClaimed,
    MessageNotClaimedBy,
    MessageNotFound,
    ServiceError,
    Unavailable,
)
from services.message_svc import validation
from services.message_svc.encryption import Bodies, Sealer, is_sealed
from services.message_svc.fair_backoff import FairBackoff
from services.message_svc.filters import FilterContext, Operation
from services.message_svc.filters.pipeline import Filters, Pipeline
from services.message_svc.handoff import Handoff
from services.message_svc.metadata import QueueMetadata, QueuePolicy
from services.message_svc.pools import PoolStores
from services.message_svc.storage.base import (
    SEQ_MAX,
    Claim,
    DeleteOutcome,
    FairPolicy,
    MessageStore,
    NewMessage,
    QueueStats,
    StaleQueue,
    StoredMessage,
)

log = logging.getLogger(__name__)

_DELETE_ERRORS: dict[DeleteOutcome, type[ServiceError]] = {
    DeleteOutcome.CLAIMED: MessageIsClaimed,
    DeleteOutcome.NOT_CLAIMED: MessageNotClaimed,
    DeleteOutcome.CLAIMED_BY_OTHER: MessageNotClaimedBy,
}

# Times a post or claim loads the queue's metadata again after the store said it changed
# (StaleQueue); only a queue changed that often while the call is under way runs out.
STALE_ATTEMPTS = 5
# How long a key of post_once is remembered: the longest a message lives, longer than any
# retry of the delivery that posts it.
POST_KEY_MEMORY = limits.MESSAGE_TTL_MAX
POST_KEY_MAX = 256

# Markers are the decimal seq of the last message of a page: opaque to clients, stable across
# deletions, and meaningful to every backend (all order a queue by seq).
_MARKER_DIGITS_MAX = len(str(SEQ_MAX))


def encode_marker(seq: int) -> str:
    return str(seq)


def decode_marker(marker: str) -> int | None:
    """The seq a marker stands for; ``None`` for a malformed one or one past
    :data:`SEQ_MAX`, which no message can follow (both match nothing)."""
    if marker.isdigit() and marker.isascii() and len(marker) <= _MARKER_DIGITS_MAX:
        seq = int(marker)
        return seq if seq <= SEQ_MAX else None
    return None


class Posted(NamedTuple):
    """A message as a caller posts it: unset ttl/delay mean the queue's defaults."""

    body: bytes
    ttl: int | None = None
    delay: int | None = None
    group_id: str | None = None
    """The message group: ordered in a FIFO queue, a fair-queue tenant in a standard one."""
    dedup_id: str | None = None
    """FIFO queues only."""


class Page(NamedTuple):
    messages: list[StoredMessage]
    next_marker: str


class MessageService:
    """Messages and claims of every queue, with Zaqar v2 semantics."""

    def __init__(
        self,
        store: MessageStore,
        metadata: QueueMetadata,
        handoff: Handoff | None = None,
        pools: PoolStores | None = None,
        filters: Filters | None = None,
        sealer: Sealer | None = None,
        fair: FairPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``pools``: given when pooling is on; each queue's operations then go to the store
        of the pool it is placed on (``metadata`` says which), else all go to ``store``.
        ``filters``: the deployment's message filters, the same ``metadata`` makes each
        queue's pipeline with; reads look up a queue's pipeline only when some installed
        filter acts on reads. ``sealer``: the message encryption keys, which seal the bodies
        of queues with ``_enable_encrypt_messages`` and open sealed bodies on every read
        (None: such queues' posts are refused, sealed bodies unreadable). ``fair``: the fair
        claims of standard queues on stores that implement them (None: plain claims); after a
        futile one a queue's claims are plain for ``fair.backoff`` seconds of ``clock``."""
        self.fair = fair
        self.fair_backoff = FairBackoff(0.0 if fair is None else fair.backoff, clock)
        self.store = store
        self.filters = filters or Filters.none()
        self.metadata = metadata
        self.handoff = handoff
        self.pooled = pools is not None
        self.stores = pools if pools is not None else PoolStores(store, _no_pools, 0)
        self.bodies = Bodies(sealer, self._dead_letter_of)

    async def _store(self, project: str, queue: str) -> MessageStore:
        """The store of the queue: its pool's, through the cached placement (no version
        check: a read may see the old pool of a queue deleted and created again elsewhere
        until the entry is loaded again)."""
        if not self.pooled:
            return self.store
        policy = await self.metadata.get(project, queue)
        return await self.stores.get(policy.pool_uri)

    async def _reading(
        self, project: str, queue: str
    ) -> tuple[MessageStore, Pipeline | None]:
        """The store of the queue (as :meth:`_store`) and its pipeline when it has filters
        that act on reads."""
        if not self.filters.reads:
            return await self._store(project, queue), None
        policy = await self.metadata.get(project, queue)
        store = await self.stores.get(policy.pool_uri) if self.pooled else self.store
        pipeline = policy.filters
        return store, pipeline if pipeline is not None and pipeline.reads else None

    async def _announced_store(
        self, project: str, queue: str, pool_uri: str | None
    ) -> MessageStore:
        """The store queue_svc named for a change (``pool_uri``), else the queue's current
        placement, read afresh."""
        if not self.pooled:
            return self.store
        if pool_uri is None:
            self._forget(project, queue)
            pool_uri = (await self.metadata.get(project, queue)).pool_uri
        return await self.stores.get(pool_uri)

    async def post(
        self, project: str, queue: str, client_id: str, messages: Sequence[Posted]
    ) -> tuple[str, ...]:
        """Store a batch in order, all or nothing; creates the queue when it is absent.

        The stored messages are then offered to notifier_svc without waiting (``handoff``).
        """
        validation.queue_ref(project, queue)
        if not messages:
            raise InvalidArgument(validation.NO_MESSAGES)
        size = 0
        for m in messages:
            bodies.check_json(m.body)
            validation.message_ttl(m.ttl)
            validation.message_delay(m.delay)
            validation.fifo_id("group_id", m.group_id)
            validation.fifo_id("dedup_id", m.dedup_id)
            size += len(m.body)
        dedup_ids = any(m.dedup_id is not None for m in messages)
        groups = any(m.group_id is not None for m in messages)
        for _ in range(STALE_ATTEMPTS):
            policy = await self.metadata.ensure(project, queue)
            validation.post_size(size, policy.max_post_size)
            if dedup_ids and not policy.fifo:
                raise InvalidArgument(validation.DEDUP_NEEDS_FIFO)
            # Delays exist only on delayed queues (contract §4); elsewhere a message's own
            # delay is ignored, as Zaqar lists and hands such messages out at once.
            delayed = policy.default_delay > 0
            batch = [
                NewMessage(
                    body=m.body,
                    ttl=policy.default_ttl if m.ttl is None else m.ttl,
                    delay=(policy.default_delay if m.delay is None else m.delay)
                    if delayed else 0,
                    group_id=m.group_id,
                    dedup_id=m.dedup_id,
                )
                for m in messages
            ]
            pipeline = policy.filters
            if pipeline is not None:
                batch = pipeline.on_post(FilterContext(project, queue, "post", client_id), batch)
            # Sealed after the post filters (they see the plaintext), checked and sized on the
            # plaintext above.
            stored = self._sealed(project, queue, batch) if policy.encrypt else batch
            store = await self.stores.get(policy.pool_uri)
            if groups and not policy.fifo and not store.capabilities.fair:
                raise InvalidArgument(validation.GROUPS_UNSUPPORTED)
            try:
                if policy.fifo:
                    posted = await _fifo(store).post_fifo(
                        project, queue, client_id, stored, dedup_window=policy.dedup_window,
                        version=policy.version,
                    )
                else:
                    ids = await store.post(
                        project, queue, client_id, stored, version=policy.version
                    )
            except StaleQueue:
                self._forget(project, queue)
                continue
            if policy.fifo:
                # Duplicates were stored before: they are not handed over again.
                new = [i for i, fresh in enumerate(posted.stored) if fresh]
                self._hand_off(project, queue, policy, [posted.ids[i] for i in new],
                               [batch[i] for i in new], [stored[i] for i in new])
                return posted.ids
            self._hand_off(project, queue, policy, ids, batch, stored)
            return ids
        raise _changing(queue)

    async def post_once(
        self, project: str, queue: str, client_id: str, key: str, body: bytes, ttl: int
    ) -> tuple[str, bool]:
        """Post one message unless ``key`` was posted to the queue before (a queue
        subscriber's delivery made again): the id and whether it was stored now.

        As :meth:`post` for one message without a delay, its ttl capped by the queue's
        ``_default_message_ttl``; the key is remembered :data:`POST_KEY_MEMORY` seconds. A
        message posted again is not handed to notifier_svc again.
        """
        validation.queue_ref(project, queue)
        if not 1 <= len(key) <= POST_KEY_MAX:
            raise InvalidArgument(f"A post key has 1 to {POST_KEY_MAX} characters.")
        bodies.check_json(body)
        validation.message_ttl(ttl)
        for _ in range(STALE_ATTEMPTS):
            policy = await self.metadata.ensure(project, queue)
            validation.post_size(len(body), policy.max_post_size)
            batch = [NewMessage(body=body, ttl=min(ttl, policy.default_ttl))]
            if policy.filters is not None:
                batch = policy.filters.on_post(
                    FilterContext(project, queue, "post", client_id), batch
                )
            stored = self._sealed(project, queue, batch) if policy.encrypt else batch
            store = await self.stores.get(policy.pool_uri)
            try:
                mid, fresh = await store.post_once(
                    project, queue, client_id, key, stored[0], remember=POST_KEY_MEMORY,
                    version=policy.version,
                )
            except StaleQueue:
                self._forget(project, queue)
                continue
            if fresh:
                self._hand_off(project, queue, policy, (mid,), batch, stored)
            return mid, fresh
        raise _changing(queue)

    def _hand_off(
        self, project: str, queue: str, policy: QueuePolicy, ids: Sequence[str],
        batch: Sequence[NewMessage], stored: Sequence[NewMessage],
    ) -> None:
        """Offer stored messages to notifier_svc, without waiting (``handoff``)."""
        if self.handoff is None:
            return
        pipeline = policy.filters
        handed = stored
        if pipeline is not None and pipeline.reads and not self.handoff.skips(project, queue):
            delivered = pipeline.on_deliver(
                FilterContext(project, queue, "deliver"), ids, batch
            )
            handed = self._sealed(project, queue, delivered) if policy.encrypt else delivered
        # notifier_svc gets sealed bodies of an encrypted queue, and asks for them to be
        # opened when it delivers (open_bodies).
        self.handoff.offer(project, queue, ids, handed, policy.pool_uri)

    async def list_messages(
        self,
        project: str,
        queue: str,
        client_id: str,
        *,
        limit: int | None = None,
        marker: str = "",
        echo: bool = False,
        include_claimed: bool = False,
        include_delayed: bool = False,
    ) -> Page:
        """A page in acceptance order; the next marker is empty when the page is."""
        validation.queue_ref(project, queue)
        size = limits.page_limit(limit)
        after = decode_marker(marker) if marker else None
        if marker and after is None:
            return Page([], "")
        store, pipeline = await self._reading(project, queue)
        messages = await store.list_messages(
            project, queue, limit=size, after=after, client_id=client_id, echo=echo,
            include_claimed=include_claimed, include_delayed=include_delayed,
        )
        messages = await self._opened(project, queue, messages)
        if pipeline is not None:
            messages = _out(pipeline, project, queue, "list", messages)
        return Page(messages, encode_marker(messages[-1].seq) if messages else "")

    async def get(self, project: str, queue: str, message_id: str) -> StoredMessage:
        validation.queue_ref(project, queue)
        store, pipeline = await self._reading(project, queue)
        message = await store.get(project, queue, message_id)
        if message is None:
            raise MessageNotFound(message_id=message_id, queue=queue, project=project)
        [message] = await self._opened(project, queue, [message])
        if pipeline is not None:
            return _out(pipeline, project, queue, "get", [message])[0]
        return message

    async def get_many(
        self, project: str, queue: str, message_ids: Sequence[str]
    ) -> list[StoredMessage]:
        validation.queue_ref(project, queue)
        validation.ids_to_get(message_ids)
        store, pipeline = await self._reading(project, queue)
        found = await self._opened(
            project, queue, await store.get_many(project, queue, message_ids)
        )
        if pipeline is not None:
            return _out(pipeline, project, queue, "get", found)
        return found

    async def delete(self, project: str, queue: str, message_id: str, claim_id: str) -> None:
        """Delete one message; a claimed one needs its live claim's id. Absent: no error."""
        validation.queue_ref(project, queue)
        store = await self._store(project, queue)
        outcome = await store.delete(project, queue, message_id, claim_id or None)
        error = _DELETE_ERRORS.get(outcome)
        if error is not None:
            raise error()

    async def delete_many(
        self, project: str, queue: str, message_ids: Sequence[str], claim_ids: Sequence[str]
    ) -> None:
        validation.queue_ref(project, queue)
        validation.ids_to_delete(message_ids)
        store = await self._store(project, queue)
        await store.delete_many(project, queue, message_ids, list(claim_ids) or None)

    async def pop(self, project: str, queue: str, limit: int) -> list[StoredMessage]:
        validation.queue_ref(project, queue)
        size = validation.pop_limit(limit)
        store, pipeline = await self._reading(project, queue)
        fifo = (await self.metadata.get(project, queue)).fifo
        popped = await self._opened(
            project, queue,
            await (_fifo(store).pop_fifo(project, queue, size) if fifo
                   else store.pop(project, queue, size)),
        )
        if pipeline is not None:
            return _out(pipeline, project, queue, "pop", popped)
        return popped

    async def claim(
        self,
        project: str,
        queue: str,
        *,
        limit: int | None = None,
        ttl: int | None = None,
        grace: int | None = None,
    ) -> Claim | None:
        """Claim the oldest claimable messages; ``None`` when there was nothing to claim."""
        validation.queue_ref(project, queue)
        size = limits.page_limit(limit)
        claim_ttl, claim_grace = validation.claim_ttl(ttl), validation.claim_grace(grace)
        for _ in range(STALE_ATTEMPTS):
            policy = await self.metadata.get(project, queue)
            store = await self.stores.get(policy.pool_uri)
            try:
                if policy.fifo:
                    result = await _fifo(store).claim_fifo(
                        project, queue, limit=size, ttl=claim_ttl, grace=claim_grace,
                        dead_letter=policy.dead_letter, version=policy.version,
                    )
                elif (self.fair is not None and store.capabilities.fair
                      and not self.fair_backoff.plain(project, queue)):
                    result = await store.claim(
                        project, queue, limit=size, ttl=claim_ttl, grace=claim_grace,
                        dead_letter=policy.dead_letter, version=policy.version, fair=self.fair,
                    )
                    if result.futile:
                        self.fair_backoff.futile(project, queue)
                else:
                    result = await store.claim(
                        project, queue, limit=size, ttl=claim_ttl, grace=claim_grace,
                        dead_letter=policy.dead_letter, version=policy.version,
                    )
            except StaleQueue:
                self._forget(project, queue)
                continue
            if result.dead_lettered and policy.dead_letter is not None:
                await self._ensure_dead_letter_queue(
                    project, policy.dead_letter.queue, policy.pool
                )
            if result.claim is None:
                return None
            claim = await self._opened_claim(project, queue, result.claim)
            pipeline = policy.filters
            if pipeline is not None and pipeline.reads:
                return _claim_out(pipeline, project, queue, claim)
            return claim
        raise _changing(queue)

    async def _ensure_dead_letter_queue(self, project: str, queue: str, pool: str) -> None:
        # The move is already committed, and the claim must still be answered: a failure here
        # is logged, and the next move tries again. The moved messages are in the store of the
        # source queue's pool, so a new dead-letter queue is placed there.
        try:
            await self.metadata.ensure(project, queue, place_on=pool)
        except ServiceError as exc:
            log.warning("dead-letter queue %s/%s not ensured: %s", project, queue, exc)

    async def get_claim(self, project: str, queue: str, claim_id: str) -> Claim:
        validation.queue_ref(project, queue)
        store, pipeline = await self._reading(project, queue)
        claim = await store.get_claim(project, queue, claim_id)
        if claim is None:
            raise ClaimNotFound(claim_id=claim_id, queue=queue, project=project)
        claim = await self._opened_claim(project, queue, claim)
        if pipeline is not None:
            return _claim_out(pipeline, project, queue, claim)
        return claim

    async def renew_claim(
        self,
        project: str,
        queue: str,
        claim_id: str,
        *,
        ttl: int | None = None,
        grace: int | None = None,
    ) -> None:
        validation.queue_ref(project, queue)
        claim_ttl, claim_grace = validation.claim_ttl(ttl), validation.claim_grace(grace)
        store = await self._store(project, queue)
        if not await store.renew_claim(
            project, queue, claim_id, ttl=claim_ttl, grace=claim_grace
        ):
            raise ClaimNotFound(claim_id=claim_id, queue=queue, project=project)

    async def release_claim(self, project: str, queue: str, claim_id: str) -> None:
        validation.queue_ref(project, queue)
        store = await self._store(project, queue)
        await store.release_claim(project, queue, claim_id)

    async def stats(self, project: str, queue: str) -> QueueStats:
        validation.queue_ref(project, queue)
        return await (await self._store(project, queue)).stats(project, queue)

    async def delete_queue_messages(
        self, project: str, queue: str, pool_uri: str | None = None
    ) -> None:
        """Everything of the queue goes, then its cached metadata. ``pool_uri`` (pooling):
        the store of the pool queue_svc had the queue on; None: its current placement."""
        store = await self._announced_store(project, queue, pool_uri)
        await store.delete_queue(project, queue)
        self.metadata.invalidate(project, queue)

    async def queue_changed(
        self, project: str, queue: str, pool_uri: str | None = None
    ) -> int:
        """The queue's metadata or listeners changed: raise its version in the store (with
        pooling, of ``pool_uri``, else of the queue's current placement), so that every
        replica's next post or claim loads them again, and drop them here.

        Returns:
            The queue's new version.
        """
        validation.queue_ref(project, queue)
        store = await self._announced_store(project, queue, pool_uri)
        version = await store.bump_queue_version(project, queue)
        self._forget(project, queue)
        return version

    async def open_bodies(
        self, project: str, queue: str, bodies: Sequence[bytes]
    ) -> list[bytes]:
        """The plaintext of bodies handed over sealed (notifier_svc delivering them); bodies
        that are not sealed come back as they are.

        Raises:
            MessageUnreadable: a body cannot be opened (``encryption.Bodies.open``).
        """
        validation.queue_ref(project, queue)
        return [await self.bodies.open(project, queue, body) for body in bodies]

    def _sealed(
        self, project: str, queue: str, batch: Sequence[NewMessage]
    ) -> list[NewMessage]:
        return [replace(m, body=self.bodies.seal(project, queue, m.body)) for m in batch]

    async def _opened(
        self, project: str, queue: str, messages: Sequence[StoredMessage]
    ) -> list[StoredMessage]:
        """``messages`` with every sealed body opened, whatever the queue's flag says now
        (bodies sealed before it was turned off stay readable)."""
        if not any(is_sealed(m.body) for m in messages):
            return list(messages)
        return [
            replace(m, body=await self.bodies.open(project, queue, m.body))
            if is_sealed(m.body) else m
            for m in messages
        ]

    async def _opened_claim(self, project: str, queue: str, claim: Claim) -> Claim:
        if not any(is_sealed(m.body) for m in claim.messages):
            return claim
        return replace(
            claim, messages=tuple(await self._opened(project, queue, claim.messages))
        )

    async def _dead_letter_of(self, project: str, queue: str) -> str | None:
        policy = await self.metadata.get(project, queue)
        return None if policy.dead_letter is None else policy.dead_letter.queue

    def _forget(self, project: str, queue: str) -> None:
        """Drop the queue's cached metadata and whether it is listened to."""
        self.metadata.invalidate(project, queue)
        if self.handoff is not None:
            self.handoff.invalidate(project, queue)


def _out(
    pipeline: Pipeline, project: str, queue: str, operation: Operation,
    messages: Sequence[StoredMessage],
) -> list[StoredMessage]:
    return pipeline.on_read(FilterContext(project, queue, operation), messages)


def _claim_out(pipeline: Pipeline, project: str, queue: str, claim: Claim) -> Claim:
    messages = _out(pipeline, project, queue, "claim", claim.messages)
    return replace(claim, messages=tuple(messages))


def _fifo(store: MessageStore) -> MessageStore:
    """``store``, for a FIFO queue's operation.

    Raises:
        InvalidArgument: the store does not implement FIFO queues.
    """
    if not store.capabilities.fifo:
        raise InvalidArgument(validation.FIFO_UNSUPPORTED)
    return store


async def _no_pools(uri: str) -> MessageStore:
    raise Unavailable(f"Pooling is off: no pool store is opened ({uri!r}).")


def _changing(queue: str) -> Unavailable:
    return Unavailable(
        f"The metadata of queue {queue} changed {STALE_ATTEMPTS} times while this request was "
        "under way. Please try again."
    )
