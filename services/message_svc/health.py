"""message_svc's part of the detailed health check: its own store and, with pooling, the
store of every pool queue_svc lists.

Each store is timed as Zaqar times a data store (``DataDriverBase._get_operation_status``):
post a batch to a throwaway queue of the internal health project, claim some, list them,
delete the claimed ones with their claim, release the claim, bulk-delete the batch and delete
the queue. The operations call the store directly, never the service: no queue metadata is
read and nothing is handed to notifier_svc. The last step always runs; whatever a failed check
leaves behind expires with the messages' TTL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from zaqar_grpc.v2 import admin_pb2

from services.common.health import HEALTH_PROJECT, StoreCheck, new_check, throwaway_queue
from services.common.logs import detached
from services.message_svc.storage.base import Claim, DeleteOutcome, MessageStore, NewMessage

MESSAGES = 20
CLAIM_LIMIT = 10
MESSAGE_TTL = 600
CLAIM_TTL, CLAIM_GRACE = 60, 300
CLIENT_ID = "00000000-0000-4000-8000-000000000000"

Opener = Callable[[str], Awaitable[MessageStore]]

log = logging.getLogger(__name__)


async def check_store(store: MessageStore, name: str, seconds: float) -> StoreCheck:
    """The timed operations on one message store."""
    check = new_check(name, seconds)
    project, queue = HEALTH_PROJECT, throwaway_queue()
    batch = [NewMessage(body=b'{"event": "p_%d"}' % i, ttl=MESSAGE_TTL) for i in range(MESSAGES)]
    ids = await check.run("post_messages", lambda: store.post(project, queue, CLIENT_ID, batch))
    if ids:
        claimed = await check.run("claim_messages", lambda: store.claim(
            project, queue, limit=CLAIM_LIMIT, ttl=CLAIM_TTL, grace=CLAIM_GRACE
        ))
        await check.run("list_messages", lambda: store.list_messages(
            project, queue, limit=MESSAGES, client_id=CLIENT_ID, include_claimed=True
        ))
        claim = claimed.claim if claimed is not None else None
        if claim is not None:
            await check.run("delete_messages", lambda: _delete_claimed(store, queue, claim))
            await check.run("delete_claim", lambda: store.release_claim(project, queue, claim.id))
        await check.run("bulk_delete_messages", lambda: store.delete_many(project, queue, ids))
    await check.clean_up("delete_queue", lambda: store.delete_queue(project, queue))
    return check


async def _delete_claimed(store: MessageStore, queue: str, claim: Claim) -> None:
    """Delete each claimed message with its claim id, one call each (Zaqar does the same)."""
    for message in claim.messages:
        outcome = await store.delete(HEALTH_PROJECT, queue, message.id, claim.id)
        if outcome is not DeleteOutcome.DELETED:
            raise RuntimeError(f"deleting claimed message {message.id} gave {outcome.value}")


async def check_pool(pool: admin_pb2.PoolStore, opener: Opener, seconds: float) -> StoreCheck:
    """Open a pool's store for the check and close it afterwards, without holding the answer
    for the close: a store closes once the writes under way end, and a write the check gave
    up on at its deadline may still wait (a SQLite write for another connection's lock, up to
    its busy timeout)."""
    name = f"pool:{pool.name}"
    opening = new_check(name, seconds)
    # An open the check gives up on at its deadline goes on, and its store is closed once
    # opened, rather than left open.
    loop = asyncio.get_running_loop()
    open_task: asyncio.Task[MessageStore] = loop.create_task(
        _open(opener, pool.uri), context=detached()
    )
    store = await opening.reach(lambda: asyncio.shield(open_task))
    if store is None:
        _CLOSING.add(open_task)  # held until it ends (the loop holds tasks weakly)
        open_task.add_done_callback(_CLOSING.discard)
        open_task.add_done_callback(lambda task: _opened_too_late(task, name))
        return opening
    try:
        return await check_store(store, name, max(0.0, opening.deadline - _now()))
    finally:
        _close_later(store, name)


# Pool stores the checks are closing, or still opening after their check gave up.
_CLOSING: set[asyncio.Task[Any]] = set()


async def _open(opener: Opener, uri: str) -> MessageStore:
    return await opener(uri)


def _close_later(store: MessageStore, name: str) -> None:
    task = asyncio.get_running_loop().create_task(_close(store, name), context=detached())
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


def _opened_too_late(task: asyncio.Task[MessageStore], name: str) -> None:
    """Closes the store of an open that ended after the check gave up on it (a failed open
    was reported already)."""
    if not task.cancelled() and task.exception() is None:
        _close_later(task.result(), name)


async def _close(store: MessageStore, name: str) -> None:
    try:
        await store.close()
    except Exception:
        log.warning("health check: closing the store of %s failed", name, exc_info=True)


async def check_stores(
    store: MessageStore, pools: Sequence[admin_pb2.PoolStore], opener: Opener, seconds: float
) -> admin_pb2.StoresHealth:
    """The message store and the given pools' stores, checked at the same time."""
    checks = await asyncio.gather(
        check_store(store, "message", seconds),
        *(check_pool(pool, opener, seconds) for pool in pools),
    )
    return admin_pb2.StoresHealth(stores=[check.report() for check in checks])


def _now() -> float:
    return asyncio.get_running_loop().time()
