"""A long-polling claim and a delayed message that frees up between the claim's empty try and
its look-up of when something frees up next (``services/message_svc/polling.py``), on a real
SQLite store whose clock the test moves."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from services.message_svc.polling import Polling
from services.message_svc.storage.base import Claim, NewMessage
from services.message_svc.storage.sqlite.store import SqliteMessageStore
from services.message_svc.waiters import WaitRoom


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ClaimsThenTicks:
    """The part of ``MessageService`` that :class:`Polling` uses, over a real store: each
    claim runs on the store, and when it finds nothing the clock moves on by ``tick``
    seconds before anything else runs, as a busy process may be late to its next step."""

    pooled = False

    def __init__(self, store: SqliteMessageStore, clock: Clock, tick: float) -> None:
        self.store = store
        self.clock = clock
        self.tick = tick
        self.empty_tries = 0

    async def claim(self, project: str, queue: str, *, limit: int, ttl: int | None,
                    grace: int | None) -> Claim | None:
        result = await self.store.claim(project, queue, limit=limit, ttl=ttl or 60,
                                        grace=grace or 60)
        if result.claim is None:
            self.empty_tries += 1
            self.clock.now += self.tick
        return result.claim

    async def release_claim(self, project: str, queue: str, claim_id: str) -> None:
        await self.store.release_claim(project, queue, claim_id)


async def test_a_message_freed_between_an_empty_try_and_the_look_up_wakes_the_waiter(
    tmp_path: Path,
) -> None:
    clock = Clock(1_000_000.0)
    store = SqliteMessageStore.from_uri(f"sqlite:///{tmp_path / 'm.db'}", now=clock)
    await store.open()
    try:
        # Given a message that frees up in 1 s
        await store.post("p", "q", "producer", [NewMessage(body=b'{"n":1}', ttl=300, delay=1)])
        # and a claim waiting up to 20 s whose first try finds nothing, after which the
        # clock passes the message's time before the waiter looks up when to try again
        service: Any = ClaimsThenTicks(store, clock, tick=1.5)
        polling = Polling(service, WaitRoom(clock=clock))
        # When it waits (on the loop's real time: the store's clock already says the
        # message is free, so only a lost wake-up could make it wait for its deadline)
        claim = await asyncio.wait_for(
            polling.claim("p", "q", wait=20, limit=1, ttl=60, grace=60), timeout=10)
        # Then it gets the message at once, not at its deadline
        assert claim is not None and len(claim.messages) == 1
        assert service.empty_tries == 1
        await polling.room.close()
    finally:
        await store.close()
