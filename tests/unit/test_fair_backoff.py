"""message_svc's back-off from fair claims (``fair_backoff``): after a futile fair claim of a
queue (``ClaimResult.futile``) its claims are plain until the back-off has passed, then fair
again; other queues keep fair claims; the memory of queues in a back-off is bounded."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.message_svc.fair_backoff import FairBackoff
from services.message_svc.metadata import QueuePolicy
from services.message_svc.service import MessageService
from services.message_svc.storage.base import (
    ClaimResult,
    FairPolicy,
    MessageStore,
    NewMessage,
)
from services.message_svc.storage.registry import open_store

P, Q, OTHER = "project-a", "fair-1", "fair-2"
# Noisy from 3 in-flight messages holding more than half; a window of limit + 10 messages.
POLICY = FairPolicy(share_percent=50, min_in_flight=3, lookahead=10, backoff=1.0)


class Tick:
    """The service's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recording:
    """The store, recording the ``fair`` of every claim and what it answered."""

    def __init__(self, store: MessageStore) -> None:
        self.store = store
        self.capabilities = store.capabilities
        self.fair: list[FairPolicy | None] = []
        self.futile: list[bool] = []

    async def claim(self, project: str, queue: str, **kwargs: Any) -> ClaimResult:
        self.fair.append(kwargs.get("fair"))
        result = await self.store.claim(project, queue, **kwargs)
        self.futile.append(result.futile)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class Metadata:
    async def get(self, project: str, queue: str) -> QueuePolicy:
        return QueuePolicy(exists=True)

    def invalidate(self, project: str, queue: str) -> None:
        pass


@pytest.fixture
async def store(tmp_path: os.PathLike[str]) -> AsyncIterator[Recording]:
    opened = await open_store(f"sqlite:///{os.path.join(tmp_path, 'm.db')}")
    yield Recording(opened)
    await opened.close()


async def flood(store: Recording, queue: str) -> None:
    """Group "a" noisy (3 in flight from a fair claim) with 30 more of it waiting, deeper
    than the window, and no other group (the group index has nothing past the window)."""
    def msg(group: str) -> NewMessage:
        return NewMessage(body=b'{"g": "%s"}' % group.encode(), ttl=600, group_id=group)

    await store.store.post(P, queue, "c", [msg("a") for _ in range(3)])
    first = await store.store.claim(P, queue, limit=3, ttl=600, grace=60, fair=POLICY)
    assert first.claim is not None and not first.futile
    await store.store.post(P, queue, "c", [msg("a") for _ in range(30)])


def service(store: Recording, tick: Tick, policy: FairPolicy = POLICY) -> MessageService:
    return MessageService(store, Metadata(), fair=policy, clock=tick)  # type: ignore[arg-type]


async def test_after_a_futile_claim_the_queue_is_claimed_plain_until_the_back_off_passes(
    store: Recording,
) -> None:
    # Given a queue whose fair claims read only the noisy group's messages
    tick = Tick()
    svc = service(store, tick)
    await flood(store, Q)

    # When a fair claim is futile, the next claims within the back-off are plain
    await svc.claim(P, Q, limit=2, ttl=60)
    tick.now += 0.5
    await svc.claim(P, Q, limit=2, ttl=60)
    tick.now += 0.49
    await svc.claim(P, Q, limit=2, ttl=60)
    assert store.fair == [POLICY, None, None]
    assert store.futile == [True, False, False]

    # Then once it has passed the queue's claims are fair again (and this one futile again)
    tick.now += 0.01
    await svc.claim(P, Q, limit=2, ttl=60)
    await svc.claim(P, Q, limit=2, ttl=60)
    assert store.fair[3:] == [POLICY, None]
    assert store.futile[3] is True


async def test_a_claim_that_is_not_futile_keeps_claims_fair(store: Recording) -> None:
    # Given a noisy group within the window and a message of another group behind it
    tick = Tick()
    svc = service(store, tick)
    await store.store.post(P, Q, "c", [
        NewMessage(body=b"{}", ttl=600, group_id=g) for g in "aaaaaab"
    ])
    await svc.claim(P, Q, limit=3, ttl=60)

    # When fair claims find other messages, or read every claimable message
    await svc.claim(P, Q, limit=2, ttl=60)
    await svc.claim(P, Q, limit=2, ttl=60)

    # Then every claim is fair and none futile
    assert store.fair == [POLICY, POLICY, POLICY]
    assert store.futile == [False, False, False]


async def test_the_back_off_is_per_queue(store: Recording) -> None:
    tick = Tick()
    svc = service(store, tick)
    await flood(store, Q)
    await flood(store, OTHER)

    # A futile claim of one queue leaves the other's claims fair
    await svc.claim(P, Q, limit=2, ttl=60)
    await svc.claim(P, OTHER, limit=2, ttl=60)
    await svc.claim(P, Q, limit=2, ttl=60)
    assert store.fair == [POLICY, POLICY, None]


async def test_a_back_off_of_0_never_makes_claims_plain(store: Recording) -> None:
    tick = Tick()
    svc = service(store, tick, FairPolicy(share_percent=50, min_in_flight=3, lookahead=10,
                                          backoff=0.0))
    await flood(store, Q)
    await svc.claim(P, Q, limit=2, ttl=60)
    await svc.claim(P, Q, limit=2, ttl=60)
    assert store.futile == [True, True]
    assert all(fair is not None for fair in store.fair)


def test_expired_back_offs_are_dropped_and_the_memory_is_bounded() -> None:
    tick = Tick()
    backoff = FairBackoff(1.0, tick, size=100)

    # 100,000 queues with a futile claim within one back-off: at most size are remembered,
    # the newest
    for n in range(100_000):
        backoff.futile(P, f"q{n}")
    assert len(backoff) == 100
    assert backoff.plain(P, "q99999") and not backoff.plain(P, "q0")

    # Once they have expired, the next futile claim drops them
    tick.now += 1.0
    assert not backoff.plain(P, "q99998")
    backoff.futile(P, "new")
    assert len(backoff) == 1 and backoff.plain(P, "new")
