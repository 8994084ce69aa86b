"""Where a queue's messages live when pooling is on (Zaqar's ``Catalog.register``).

A new queue is placed once, when it is created: on a pool of its ``_flavor`` or, without one,
on a pool that belongs to no flavor, drawn at random in proportion to the pools' weights
(weight 0: never drawn), or in message_svc's own store when no pool can be drawn. The pool's
name is stored in the queue's record by the queue store, in the same atomic step as the
queue, and never changes while the queue exists: its messages stay where they are, so
metadata changes that would need them elsewhere are refused (:func:`check_change`).

A pool is never deleted while a queue is placed on it, even when the deletion and the
placement race. The two sides each write, then read what the other wrote
(``CatalogService.delete_pool`` and ``CatalogService.keep_placed``): the deletion marks the
pool (no new queue is placed on a marked pool), counts its queues, and deletes it only if its
mark is still there; a placement stores the queue, then removes any mark of its pool, or
registers the pool again if the deletion got there first.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from services.common.errors import InvalidArgument, Unavailable
from services.queue_svc.storage.catalog import Catalog, PoolRecord


def draw(pools: Sequence[PoolRecord], rng: random.Random) -> PoolRecord | None:
    """One of ``pools`` with probability weight / total weight; None when all weigh 0."""
    total = sum(pool.weight for pool in pools)
    if total <= 0:
        return None
    point = rng.randrange(total)
    for pool in pools:
        if point < pool.weight:
            return pool
        point -= pool.weight
    raise AssertionError("unreachable: the point lies below the total weight")


def choose(
    catalog: Catalog, flavor: str | None, rng: random.Random, now: float
) -> str | None:
    """The pool a new queue goes on; None: message_svc's own store. A pool being deleted
    (``Catalog.retiring``, until ``now`` passes its mark) takes no new queue.

    Raises:
        Unavailable: the queue names a flavor none of whose pools takes new queues (every
            one weighs 0, or it has none left); Zaqar's ``NoPoolFound``, a 503 too.
    """
    if flavor is not None:
        pool = draw(
            [pool for pool in catalog.pools_of(flavor)
             if catalog.takes_new_queues(pool.name, now)],
            rng,
        )
        if pool is None:
            raise Unavailable(
                f"No pool of flavor {flavor} takes new queues (it has none, or each has "
                "weight 0). Please try again later."
            )
        return pool.name
    free = sorted(
        (pool for pool in catalog.pools.values()
         if pool.flavor is None and catalog.takes_new_queues(pool.name, now)),
        key=lambda p: p.name,
    )
    chosen = draw(free, rng)
    return None if chosen is None else chosen.name


def pool_uri(catalog: Catalog, pool: str | None) -> str:
    """The message store URI of ``pool``: "" for message_svc's own store, and for a pool that
    is not in the catalog any more (message_svc refuses the queue's operations then)."""
    if pool is None:
        return ""
    record = catalog.pools.get(pool)
    return "" if record is None else record.uri


def check_change(
    catalog: Catalog, pool: str | None, old: Mapping[str, Any], new: Mapping[str, Any]
) -> None:
    """A new ``_flavor`` of a queue placed on ``pool`` must be a flavor of that pool.

    Removing ``_flavor``, or leaving it as it was, is always accepted.

    Raises:
        InvalidArgument: the new flavor does not include the queue's pool.
    """
    flavor = new.get("_flavor")
    if not isinstance(flavor, str) or flavor == old.get("_flavor"):
        return
    record = catalog.pools.get(pool) if pool is not None else None
    if record is None or record.flavor != flavor:
        where = f"pool {pool}" if pool is not None else "the default message store"
        raise InvalidArgument(
            f"The queue's messages are on {where}, which is not a pool of flavor {flavor}: a "
            "queue stays on the pool it was created on, so its _flavor can only name a flavor "
            "of that pool. Create a new queue with this flavor instead."
        )


def check_dead_letter(
    queue: str, pool: str | None, dead_letter: str, dead_letter_pool: str | None
) -> None:
    """A queue's dead-letter queue, when it exists, must be on the queue's own pool: a
    message is moved into it inside one atomic step of one store.

    Raises:
        InvalidArgument: it is on another pool (or store).
    """
    if dead_letter == queue or dead_letter_pool == pool:
        return
    raise InvalidArgument(
        f"_dead_letter_queue {dead_letter} is on {_where(dead_letter_pool)} and this queue on "
        f"{_where(pool)}: a dead-letter queue must be on the same pool as the queues that "
        "move messages into it."
    )


def _where(pool: str | None) -> str:
    return f"pool {pool}" if pool is not None else "the default message store"
