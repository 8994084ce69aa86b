"""``WaitRoom``: when message_svc begins to stop (``end``), every wait ends at once as at its
deadline (the head of a queue's claims and each listing try once more), and a wait begun
afterwards tries once and does not wait; and the waits held at once are bounded."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.common.errors import WaitsFull
from services.message_svc.waiters import Attempt, WaitRoom
from tests.waiting import until

# Only how long a broken test waits before it fails; the waits are far longer, so a wait that
# end() did not end fails the test instead of ending by itself.
WITHIN = 30.0
LONG = 3600.0


class Tries:
    """An attempt that finds nothing until ``found`` is set, counting its tries."""

    def __init__(self) -> None:
        self.count = 0
        self.found: str | None = None

    async def __call__(self) -> Attempt[str]:
        self.count += 1
        return Attempt(self.found)


async def test_end_answers_every_wait_and_the_head_tries_once_more() -> None:
    room = WaitRoom()
    claims, reads = Tries(), Tries()
    # Given three claims and two listings waiting on one queue, each having tried once
    waits = [asyncio.ensure_future(room.wait("p", "q", LONG, claims, exclusive=True))
             for _ in range(3)]
    waits += [asyncio.ensure_future(room.wait("p", "q", LONG, reads, exclusive=False))
              for _ in range(2)]
    await until(lambda: room.waiting() == 5 and claims.count >= 1 and reads.count == 2,
                WITHIN, "five waits")
    tried = claims.count
    # When the room ends, with a message claimable by then
    claims.found = "claimed"
    room.end()
    async with asyncio.timeout(WITHIN):
        results = await asyncio.gather(*waits)
    # Then the head's last try claims it, the other claims get nothing, and each listing tried
    # once more
    assert results[:3] == ["claimed", None, None]
    assert claims.count == tried + 1
    assert results[3:] == [None, None] and reads.count == 4
    assert room.ending and room.waiting() == 0


async def test_a_wait_begun_after_end_tries_once_without_waiting() -> None:
    room = WaitRoom()
    room.end()
    tries = Tries()
    async with asyncio.timeout(WITHIN):
        assert await room.wait("p", "q", LONG, tries, exclusive=True) is None
        tries.found = "later"
        assert await room.wait("p", "q", LONG, tries, exclusive=False) == "later"
    assert tries.count == 2 and room.waiting() == 0


async def test_waits_past_the_rooms_bound_are_refused_and_room_made_is_used() -> None:
    # message_max_waiting: one more wait than the room holds is refused WAITS_FULL (gRPC
    # UNAVAILABLE, 503 through the gateway), and a wait that ends makes room
    room = WaitRoom(most=2)
    tries = Tries()
    waits = [asyncio.ensure_future(room.wait("p", q, LONG, tries, exclusive=True))
             for q in ("a", "b")]
    await until(lambda: room.waiting() == 2 and tries.count == 2, WITHIN, "two waits")
    with pytest.raises(WaitsFull) as refused:
        await room.wait("p", "c", LONG, tries, exclusive=False)
    assert refused.value.code is grpc.StatusCode.UNAVAILABLE
    assert refused.value.reason == "WAITS_FULL"
    assert "(message_max_waiting)" in refused.value.description
    assert tries.count == 2  # refused before any try
    waits[0].cancel()
    await asyncio.gather(waits[0], return_exceptions=True)
    assert room.waiting() == 1
    tries.found = "got"
    async with asyncio.timeout(WITHIN):
        assert await room.wait("p", "c", LONG, tries, exclusive=False) == "got"
    room.end()
    async with asyncio.timeout(WITHIN):
        await waits[1]
    assert room.waiting() == 0
