"""The Redis message store on a Redis Cluster (``redis+cluster://``).

The same store, scripts and key layout as on one server (``store.py``); a Lua script may only
touch the keys of one hash slot, and every key of a queue shares the queue's hash tag, so what
differs is what reached beyond one queue (docs/redis-cluster.md has the reasons):

* The registry of queues that hold something is one set per hash slot,
  ``<prefix>:queues:{<s>}`` where ``<s>`` hashes to that slot, so a queue's scripts add and
  remove it atomically as on one server. An index, ``<prefix>:slots``, names the slots whose
  sets may hold something: a post that put the first queue in its slot's set adds the slot
  (after the script: a step that is safe to repeat), and :meth:`collect_garbage` drops a slot
  whose set it read empty, checks the set again and adds it back if it was filled meanwhile.
  A slot that a crash left out of the index is found by a slow repair walk.
* A claim stages the messages it dead-letters in its own slot (out of every index, kept as
  ``d:<id>`` in ``moving``); then they are copied to the dead-letter queue under their ids,
  once per move (its slot remembers the move), and then dropped from the source. Each step is
  idempotent; a move interrupted between steps (a crash, an unreachable node) is resumed by
  :meth:`collect_garbage` after :data:`~services.message_svc.storage.redis.store.MOVE_LEASE`.
  Meanwhile the message is claimable nowhere (staged) or only in the dead-letter queue (copied).
* Durable (:attr:`capabilities`) only with ``wait=1`` or more: replication is asynchronous, so
  without ``WAIT`` a write acknowledged just before its master fails may be lost in the
  failover.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
import time
from binascii import crc_hqx
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from services.common import redis_store
from services.common.redis_store import ServerSettings
from services.message_svc.storage.base import Capabilities
from services.message_svc.storage.redis._codec import prefix_of_tag, timestamp
from services.message_svc.storage.redis._connection import edge, parse
from services.message_svc.storage.redis.store import (
    GC_QUEUES_PER_TRIP,
    DeadLetters,
    RedisMessageStore,
)

log = logging.getLogger(__name__)

SLOTS = 16384
_TAG_LETTERS = "@ABCDEFGHIJKLMNO"
# Registry sets (hash slots) that each collect_garbage call reads besides those the index
# names, round the 16384 slots, to find a set the index lacks (its process died between a post
# and indexing the set): within 256 calls, 21 minutes at the default 5 s interval.
GC_REPAIR_SLOTS = 64


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """For each hash slot, a text of four letters ``@A-O`` whose hash tag falls in that slot.

    The 65536 such texts cover every slot (CRC16 is linear and these letters differ only in
    their low four bits), so this takes one pass of 65536 CRCs.
    """
    found: list[str | None] = [None] * SLOTS
    for letters in itertools.product(_TAG_LETTERS, repeat=4):
        text = "".join(letters)
        slot = crc_hqx(text.encode(), 0) % SLOTS
        if found[slot] is None:
            found[slot] = text
    tags = tuple(text for text in found if text is not None)
    assert len(tags) == SLOTS
    return tags


def _slot(tag: str) -> int:
    # The slot of every key of a queue: its tag never contains braces (see _codec.queue_tag).
    return crc_hqx(tag.encode(), 0) % SLOTS


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisClusterMessageStore(RedisMessageStore):
    """:class:`RedisMessageStore` on a Redis Cluster (see the module's docstring)."""

    stages_dead_letters = True

    def __init__(self, options: redis_store.RedisOptions,
                 now: Callable[[], float] = time.time) -> None:
        super().__init__(options, now)
        self._tags = slot_tags()
        self._slots_key = f"{options.prefix}:slots"
        # Replicas of message_svc start their repair walks at different slots.
        self._gc_next = random.randrange(SLOTS)

    @classmethod
    def from_uri(cls, uri: str, now: Callable[[], float] = time.time) -> RedisClusterMessageStore:
        """Raises: ConfigurationError, naming what is wrong with ``uri``."""
        return cls(parse(uri, cluster=True), now=now)

    def _bucket(self, slot: int) -> str:
        return f"{self.options.prefix}:queues:{{{self._tags[slot]}}}"

    def _registry_of(self, tag: str) -> str:
        return self._bucket(_slot(tag))

    def _capabilities(self, settings: ServerSettings | None) -> Capabilities:
        # Durable when each write waits for a replica to confirm it (wait=N).
        return Capabilities(durable=self.options.wait >= 1, shared=True, fifo=True, fair=True)

    # Dead-letter moves ----------------------------------------------------------------------

    async def _dead_lettered(
        self, prefix: str, dead: DeadLetters, move: tuple[str, str, str, str]
    ) -> tuple[str, ...]:
        if not dead:
            return ()
        dlq, ttl, expires, claim_id = move
        await self._finish_moves(prefix, [(dlq, ttl, expires, claim_id, row) for row in dead])
        return tuple(_text(row[0]) for row in dead)

    async def _resume_moves(self, prefix: str, stalled: Sequence[Any]) -> None:
        # Each: id, dead-letter queue tag, its ttl, its expires, the move's claim id, then the
        # message's fields (s, b, t, c, e, v, i, k, x, n, g).
        # In the source queue's seq order, as a claim moves them: a group's messages keep
        # their order in the dead-letter queue.
        await self._finish_moves(prefix, [
            (_text(dlq), _text(ttl), _text(expires), _text(claim_id), [mid, *fields])
            for mid, dlq, ttl, expires, claim_id, *fields in sorted(
                stalled, key=lambda move: int(move[5])
            )
        ])

    async def _finish_moves(
        self, prefix: str, moves: Sequence[tuple[str, str, str, str, Sequence[Any]]]
    ) -> None:
        """Copy staged messages of queue ``prefix`` to their dead-letter queues, then drop
        those copied. A step that fails is logged: the move stays staged, and
        :meth:`collect_garbage` resumes it."""
        by_queue: dict[str, list[Any]] = {}
        for dlq, ttl, expires, claim_id, row in moves:
            # row: id, seq, body, ttl, created, expires, visible_at, client id, claim id,
            # claim expiry, claim count, group, fair-queue group (None = none); in seq order,
            # so a group's messages keep their order in the dead-letter queue.
            by_queue.setdefault(dlq, []).extend((
                row[0], claim_id, row[2], ttl or row[3], row[4], expires or row[5], row[6],
                row[7], row[5], row[11] if len(row) > 11 and row[11] is not None else "",
                row[12] if len(row) > 12 and row[12] is not None else "",
            ))
        now = timestamp(self._now())
        copies = await asyncio.gather(*(
            self._run("dead_letter_copy",
                      (prefix_of_tag(self.options.prefix, dlq), self._registry_of(dlq)),
                      (dlq, now, *values))
            for dlq, values in by_queue.items()
        ), return_exceptions=True)
        copied: list[Any] = []
        for (dlq, values), outcome in zip(by_queue.items(), copies, strict=True):
            if isinstance(outcome, Exception):
                log.warning(
                    "dead-letter move of %d messages to %s not finished, to be resumed: %s",
                    len(values) // 11, dlq, outcome,
                )
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                copied += values[::11]
                if int(outcome[1]):
                    await self._registry_started(dlq)
        if copied:
            try:
                await self._run("dead_letter_done", (prefix,), copied)
            except Exception as exc:  # the copies are made: dropping the source can wait
                log.warning("dead-letter move of %d messages not finished, to be resumed: %s",
                            len(copied), exc)

    # Garbage --------------------------------------------------------------------------------

    async def _registry_started(self, tag: str) -> None:
        await self._index([_slot(tag)])

    async def _index(self, slots: Sequence[int]) -> None:
        """Add ``slots`` to the index of registry sets that may hold something. A failure is
        logged: the repair walk of :meth:`collect_garbage` finds the sets it missed."""
        try:
            await self._redis().sadd(self._slots_key, *slots)
        except (RedisError, RedisClusterException) as exc:
            log.warning("%d registry sets not indexed, to be found by the repair walk: %s",
                        len(slots), exc)

    @edge("collect expired messages and claims")
    async def collect_garbage(self) -> int:
        """Collect the garbage of every queue in the registry sets the index names, and of
        those in the next :data:`GC_REPAIR_SLOTS` slots of the repair walk; drop from the
        index the sets found empty, and add to it the sets the repair walk found that it
        lacked."""
        client = self._redis()
        indexed = {int(slot) for slot in await client.smembers(self._slots_key)}
        walk = [(self._gc_next + i) % SLOTS for i in range(GC_REPAIR_SLOTS)]
        self._gc_next = (self._gc_next + GC_REPAIR_SLOTS) % SLOTS
        slots = sorted(indexed.union(walk))
        found = await self._registered(slots)
        if missed := [slot for slot in slots if found.get(slot) and slot not in indexed]:
            await self._index(missed)
        if emptied := [slot for slot in slots if slot in indexed and found.get(slot) == []]:
            await self._unindex(emptied)
        return await self._collect([tag for tags in found.values() for tag in tags])

    async def _unindex(self, slots: Sequence[int]) -> None:
        """Drop ``slots``, whose registry sets were read empty, from the index; then add back
        those that a post filled meanwhile (a post adds its slot to the index after it
        filled the set, so one that filled it after the check below indexes it itself)."""
        client = self._redis()
        await client.srem(self._slots_key, *slots)
        replies = await redis_store.run(client, [
            redis_store.Call(("EXISTS", self._bucket(slot)), self._bucket(slot), writes=False,
                             idempotent=True)
            for slot in slots
        ])
        if refilled := [slot for slot, reply in zip(slots, replies, strict=True) if reply != 0]:
            await self._index(refilled)

    async def _registered(self, slots: Sequence[int]) -> dict[int, list[str]]:
        """The queue tags in the registry sets of ``slots``, read one pipeline per node. A set
        whose node cannot be read now is left out (logged), unless all are."""
        found: dict[int, list[str]] = {}
        failures: list[Exception] = []
        pending = [(slot, 0) for slot in slots]
        while pending:
            replies = await redis_store.run(self._redis(), [
                redis_store.Call(
                    ("SSCAN", self._bucket(slot), cursor, "COUNT", GC_QUEUES_PER_TRIP),
                    self._bucket(slot), writes=False, idempotent=True,
                )
                for slot, cursor in pending
            ])
            follow: list[tuple[int, int]] = []
            for (slot, _), reply in zip(pending, replies, strict=True):
                if isinstance(reply, Exception):
                    failures.append(reply)
                    continue
                cursor, members = reply
                found.setdefault(slot, []).extend(_text(member) for member in members)
                if int(cursor):
                    follow.append((slot, int(cursor)))
            pending = follow
        if failures and not found:
            raise failures[0]
        if failures:
            log.warning("expiry sweep skipped %d registry sets it could not read: %s",
                        len(failures), failures[0])
        return found
