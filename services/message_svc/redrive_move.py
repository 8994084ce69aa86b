"""One batch of a dead-letter redrive: post into the destination with a key per message,
then delete from the dead-letter queue (docs/architecture.md, "Dead-letter redrive").

Each message is posted under ``redrive/<job id>/<message id>``, so a batch made again after
a crash between its posts and its delete posts nothing twice: into a standard queue with
``post_once``, into a FIFO queue with ``post_fifo`` and the key as ``dedup_id`` (one post per
run of messages of one client, in seq order, so a group keeps its order). A message keeps its
``group_id`` in either (a standard queue's is a fair-queue group).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from services.message_svc.metadata import QueuePolicy
from services.message_svc.service import MessageService
from services.message_svc.storage.base import MessageStore, NewMessage, StoredMessage

# Kept beyond a moved message's remaining life: how long its key outlives it.
KEY_MEMORY_EXTRA = 600

Hint = Callable[[str, str], None]
"""``hint(project, queue)``: messages arrived in the queue (long-polling waiters look)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a batch goes: the destination's policy and store."""

    queue: str
    policy: QueuePolicy
    store: MessageStore


def key_of(job_id: str, message_id: str) -> str:
    return f"redrive/{job_id}/{message_id}"


async def post_batch(
    service: MessageService,
    project: str,
    source: str,
    target: Target,
    job_id: str,
    messages: Sequence[StoredMessage],
    now: float,
    hint: Hint | None = None,
    *,
    resumed: bool = False,
) -> int:
    """Post ``messages`` (of the dead-letter queue ``source``) into the target, each under its
    key; the messages already posted under their key are left as they are.

    The messages stored now are handed to notifier_svc. In a ``resumed`` batch (begun by a
    runner that stopped), so are those already posted under their key that are still in the
    destination: the runner that stopped may have died before handing them over, and a
    subscriber is better notified twice than never (at least once).

    Returns:
        How many were stored now (the others were posted by an earlier attempt).

    Raises:
        StaleQueue: the destination's metadata changed since ``target.policy`` was read.
        ServiceError: a body cannot be opened or sealed; a store failed (``Unavailable``).
    """
    plain: list[NewMessage] = []
    stored: list[NewMessage] = []
    for m in messages:
        body = await service.bodies.open(project, source, m.body)
        ttl = max(1, math.ceil(m.expires - now))
        # A FIFO queue's message group, or a standard (fair) queue's group: kept either way.
        message = NewMessage(body=body, ttl=ttl, group_id=m.group_id,
                             dedup_id=key_of(job_id, m.id) if target.policy.fifo else None)
        plain.append(message)
        if target.policy.encrypt:
            body = service.bodies.seal(project, target.queue, body)
            message = NewMessage(body=body, ttl=ttl, group_id=message.group_id,
                                 dedup_id=message.dedup_id)
        stored.append(message)
    post = _post_fifo if target.policy.fifo else _post_once
    posted = await post(project, target, job_id, messages, stored)
    fresh = [(index, mid) for index, mid, new in posted if new]
    handed = list(fresh)
    if resumed:
        before = {mid: index for index, mid, new in posted if not new}
        if before:
            still = await target.store.get_many(project, target.queue, list(before))
            handed += sorted((before[m.id], m.id) for m in still if m.id in before)
    if handed:
        service._hand_off(project, target.queue, target.policy, [mid for _, mid in handed],
                          [plain[i] for i, _ in handed], [stored[i] for i, _ in handed])
        if hint is not None:
            hint(project, target.queue)
    return len(fresh)


async def _post_once(
    project: str, target: Target, job_id: str, messages: Sequence[StoredMessage],
    stored: Sequence[NewMessage],
) -> list[tuple[int, str, bool]]:
    """(index, new id, whether stored now) of each message."""
    fresh = []
    for index, (m, message) in enumerate(zip(messages, stored, strict=True)):
        mid, new = await target.store.post_once(
            project, target.queue, m.client_id, key_of(job_id, m.id), message,
            remember=message.ttl + KEY_MEMORY_EXTRA, version=target.policy.version,
        )
        fresh.append((index, mid, new))
    return fresh


async def _post_fifo(
    project: str, target: Target, job_id: str, messages: Sequence[StoredMessage],
    stored: Sequence[NewMessage],
) -> list[tuple[int, str, bool]]:
    fresh = []
    start = 0
    while start < len(messages):
        end = start
        while end < len(messages) and messages[end].client_id == messages[start].client_id:
            end += 1
        run = stored[start:end]
        posted = await target.store.post_fifo(
            project, target.queue, messages[start].client_id, run,
            dedup_window=max(m.ttl for m in run) + KEY_MEMORY_EXTRA,
            version=target.policy.version,
        )
        fresh += [(start + i, mid, new) for i, (mid, new)
                  in enumerate(zip(posted.ids, posted.stored, strict=True))]
        start = end
    return fresh


FaultHook = Callable[[Sequence[StoredMessage]], Awaitable[None]]
"""Called at a point of a batch (between its posts and its delete, or its delete and its
record) with the batch's messages: tests stop a job there."""
