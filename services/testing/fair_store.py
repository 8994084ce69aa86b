"""Contract of fair queues in the message store (``claim(..., fair=...)`` and ``group_id`` in
``post`` of ``services/message_svc/storage/base.py``), for any backend.

A backend whose ``capabilities.fair`` is false is skipped. The counts of in-flight messages
are never read directly: each test shows them through what the next fair claim prefers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.message_svc.storage.base import (
    DeadLetterPolicy,
    FairPolicy,
    MessageStore,
    NewMessage,
)
from services.message_svc.storage.registry import open_store
from services.testing.fixtures import Clock

P, Q, DLQ = "project-a", "fair-1", "fair-dlq"
CLIENT = "client-1"
# Noisy from 3 in-flight messages holding more than half of the queue's.
POLICY = FairPolicy(share_percent=50, min_in_flight=3, lookahead=100)


def gmsg(n: int, group: str | None = None, ttl: int = 600) -> NewMessage:
    return NewMessage(body=b'{"n": %d}' % n, ttl=ttl, group_id=group)


def numbers(messages: object) -> list[int]:
    return [int(m.body[6:-1]) for m in messages]  # type: ignore[attr-defined]


class FairMessageStoreContract:
    """The fair-queue suite: subclass it in a test module and provide ``store_uri``."""

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    async def store(self, store_uri: str, clock: Clock) -> AsyncIterator[MessageStore]:
        opened = await open_store(store_uri, now=clock)
        if not opened.capabilities.fair:
            await opened.close()
            pytest.skip("the backend does not implement fair queues (capabilities.fair)")
        yield opened
        await opened.close()

    async def post(self, store: MessageStore, *messages: NewMessage) -> tuple[str, ...]:
        return await store.post(P, Q, CLIENT, messages)

    async def claim(self, store: MessageStore, limit: int, ttl: int = 60) -> list[int]:
        result = await store.claim(P, Q, limit=limit, ttl=ttl, grace=60, fair=POLICY)
        return [] if result.claim is None else numbers(result.claim.messages)

    async def noisy_first(self, store: MessageStore) -> None:
        """Makes group "a" noisy: 3 of its messages claimed (1, 2, 3), with 4-6 of it behind
        them and then 7 of "b", 8 without a group."""
        await self.post(store, *(gmsg(n, "a") for n in range(1, 7)), gmsg(7, "b"), gmsg(8))
        assert await self.claim(store, 3) == [1, 2, 3]

    async def test_a_standard_queue_keeps_the_group_of_a_message(
        self, store: MessageStore
    ) -> None:
        # Given a message posted with a group to a standard queue
        [mid] = await self.post(store, gmsg(1, "tenant-1"))

        # Then listing, getting and claiming it show the group
        [listed] = await store.list_messages(P, Q, limit=10)
        got = await store.get(P, Q, mid)
        result = await store.claim(P, Q, limit=1, ttl=60, grace=60, fair=POLICY)
        assert result.claim is not None
        assert listed.group_id == "tenant-1"
        assert got is not None and got.group_id == "tenant-1"
        assert [m.group_id for m in result.claim.messages] == ["tenant-1"]

    async def test_a_noisy_group_yields_to_the_other_groups(self, store: MessageStore) -> None:
        # Given group "a" holding every in-flight message, more of it waiting, then others
        await self.noisy_first(store)

        # When a claim takes two
        taken = await self.claim(store, 2)

        # Then it takes the newer messages of the other group and without group first
        assert taken == [7, 8]

    async def test_a_group_becomes_noisy_within_one_claim(self, store: MessageStore) -> None:
        # Given six messages of "a" then two of "b", nothing in flight
        await self.post(store, *(gmsg(n, "a") for n in range(1, 7)), gmsg(7, "b"), gmsg(8, "b"))

        # When one claim takes five, "a" turns noisy after its third
        taken = await self.claim(store, 5)

        # Then the claim takes "b" before the rest of "a"
        assert taken == [1, 2, 3, 7, 8]

    async def test_noisy_messages_are_claimed_when_nothing_else_is_claimable(
        self, store: MessageStore
    ) -> None:
        # Given a noisy group and only its messages left
        await self.post(store, *(gmsg(n, "a") for n in range(1, 7)))
        assert await self.claim(store, 3) == [1, 2, 3]

        # When a claim asks for more than there is of anything else, it is still served
        assert await self.claim(store, 10) == [4, 5, 6]

    async def test_the_rest_of_a_claim_is_filled_with_the_oldest_noisy_messages(
        self, store: MessageStore
    ) -> None:
        # Given a noisy group and two other messages behind it
        await self.noisy_first(store)

        # When a claim asks for four, it takes the two others and the two oldest noisy ones
        assert await self.claim(store, 4) == [4, 5, 7, 8]

    async def test_messages_without_a_group_are_never_passed_over(
        self, store: MessageStore
    ) -> None:
        # Given a queue where no message has a group
        await self.post(store, *(gmsg(n) for n in range(1, 8)))

        # Then fair claims take them in order, as plain claims do
        assert await self.claim(store, 3) == [1, 2, 3]
        assert await self.claim(store, 3) == [4, 5, 6]
        assert await self.claim(store, 3) == [7]

    async def test_deleting_claimed_messages_makes_a_group_quiet_again(
        self, store: MessageStore
    ) -> None:
        # Given group "a" noisy through one claim
        await self.noisy_first(store)
        result = await store.claim(P, Q, limit=1, ttl=60, grace=60, fair=POLICY)
        assert result.claim is not None and numbers(result.claim.messages) == [7]
        held = await store.list_messages(P, Q, limit=3, include_claimed=True)

        # When its consumer deletes two of its three messages (one alone, one in bulk)
        first = await store.get_claim(P, Q, _claim_of(held[0]))
        assert first is not None
        await store.delete(P, Q, held[0].id, first.id)
        await store.delete_many(P, Q, [held[1].id], [first.id])

        # Then "a" (1 of 2 in flight) is no longer noisy: the oldest message is claimed first
        assert await self.claim(store, 1) == [4]

    async def test_releasing_a_claim_makes_a_group_quiet_again(
        self, store: MessageStore
    ) -> None:
        # Given group "a" noisy through one claim
        await self.noisy_first(store)
        [message] = await store.list_messages(P, Q, limit=1, include_claimed=True)

        # When the claim is released
        await store.release_claim(P, Q, _claim_of(message))

        # Then the oldest messages of "a" come first again (not noisy: nothing in flight)
        assert await self.claim(store, 2) == [1, 2]

    async def test_an_expired_claim_no_longer_counts(
        self, store: MessageStore, clock: Clock
    ) -> None:
        # Given group "a" noisy through a claim of 30 s
        await self.post(store, *(gmsg(n, "a") for n in range(1, 7)), gmsg(7, "b"))
        assert await self.claim(store, 3, ttl=30) == [1, 2, 3]

        # When the claim expires
        clock.advance(31)

        # Then "a" is quiet: its oldest messages come first
        assert await self.claim(store, 2) == [1, 2]

    async def test_a_renewed_claim_keeps_counting(
        self, store: MessageStore, clock: Clock
    ) -> None:
        # Given group "a" noisy through a claim of 30 s, renewed for 120 s after 20 s
        await self.post(store, *(gmsg(n, "a") for n in range(1, 7)), gmsg(7, "b"))
        assert await self.claim(store, 3, ttl=30) == [1, 2, 3]
        [message] = await store.list_messages(P, Q, limit=1, include_claimed=True)
        clock.advance(20)
        assert await store.renew_claim(P, Q, _claim_of(message), ttl=120, grace=60)

        # When the claim's first expiry passes
        clock.advance(20)

        # Then "a" is still noisy
        assert await self.claim(store, 1) == [7]

    async def test_popped_and_dead_lettered_messages_do_not_count(
        self, store: MessageStore, clock: Clock
    ) -> None:
        # Given messages of "a" claimed once and their claim expired, and more of "a"
        await self.post(store, *(gmsg(n, "a") for n in range(1, 4)))
        assert await self.claim(store, 3, ttl=30) == [1, 2, 3]
        clock.advance(31)
        await self.post(store, *(gmsg(n, "a") for n in range(4, 7)), gmsg(7, "b"))

        # When a claim moves the worn ones to the dead-letter queue and a pop takes two
        policy = DeadLetterPolicy(max_claim_count=1, queue=DLQ)
        moved = await store.claim(P, Q, limit=1, ttl=60, grace=60, dead_letter=policy,
                                  fair=POLICY)
        assert moved.claim is not None and numbers(moved.claim.messages) == [4]
        assert len(moved.dead_lettered) == 3
        assert numbers(await store.pop(P, Q, 1)) == [5]

        # Then "a" has one message in flight, quiet: its oldest comes first; the moved
        # messages keep their group
        assert await self.claim(store, 1) == [6]
        assert {m.group_id for m in await store.list_messages(P, DLQ, limit=10)} == {"a"}

    async def test_deleting_the_queue_forgets_its_counts(self, store: MessageStore) -> None:
        # Given group "a" noisy
        await self.noisy_first(store)

        # When the queue is deleted and filled again
        await store.delete_queue(P, Q)
        await self.post(store, *(gmsg(n, "a") for n in range(1, 4)), gmsg(4, "b"))

        # Then "a" starts quiet
        assert await self.claim(store, 3) == [1, 2, 3]

    async def test_concurrent_claims_count_every_message_once(
        self, store: MessageStore
    ) -> None:
        # Given 60 messages of three groups claimed by 30 concurrent fair claims, all deleted
        await self.post(store, *(gmsg(n, "abc"[n % 3]) for n in range(60)))
        results = await asyncio.gather(*(
            store.claim(P, Q, limit=2, ttl=60, grace=60, fair=POLICY) for _ in range(30)
        ))
        claims = [r.claim for r in results if r.claim is not None]
        ids = [m.id for c in claims for m in c.messages]
        assert len(ids) == len(set(ids)) == 60
        for claim in claims:
            await store.delete_many(P, Q, [m.id for m in claim.messages], [claim.id])

        # Then nothing is left in flight: a new group's first three come first
        await self.post(store, *(gmsg(n, "a") for n in range(100, 104)), gmsg(104, "b"))
        assert await self.claim(store, 3) == [100, 101, 102]

    async def test_the_lookahead_bounds_how_far_a_claim_looks(
        self, store: MessageStore
    ) -> None:
        # Given a noisy group with more of it waiting than the lookahead, then another group
        await self.post(store, *(gmsg(n, "a") for n in range(1, 4)))
        assert await self.claim(store, 3) == [1, 2, 3]
        await self.post(store, *(gmsg(n, "a") for n in range(4, 4 + POLICY.lookahead + 5)))
        await self.post(store, gmsg(9999, "b"))

        # When a claim looks for quiet messages, it reads at most limit + lookahead messages
        # and then takes the oldest noisy ones
        assert await self.claim(store, 2) == [4, 5]


    async def flood(self, store: MessageStore) -> None:
        """Group "a" noisy, more of it waiting than the lookahead, then one message of "b"."""
        await self.post(store, *(gmsg(n, "a") for n in range(1, 4)))
        assert await self.claim(store, 3) == [1, 2, 3]
        await self.post(store, *(gmsg(n, "a") for n in range(4, 4 + POLICY.lookahead + 5)))
        await self.post(store, gmsg(9999, "b"))

    async def test_a_claim_that_reads_its_window_for_nothing_is_futile(
        self, store: MessageStore
    ) -> None:
        # Given a noisy group deeper than the lookahead in front of another group
        await self.flood(store)

        # When a fair claim reads limit + lookahead messages, all put aside
        result = await store.claim(P, Q, limit=2, ttl=60, grace=60, fair=POLICY)

        # Then it takes the oldest put aside and says it was futile
        assert result.claim is not None and numbers(result.claim.messages) == [4, 5]
        assert result.futile is True

    async def test_a_plain_claim_is_never_futile(self, store: MessageStore) -> None:
        await self.flood(store)
        result = await store.claim(P, Q, limit=2, ttl=60, grace=60)
        assert result.claim is not None and numbers(result.claim.messages) == [4, 5]
        assert result.futile is False

    async def test_a_claim_that_finds_other_groups_is_not_futile(
        self, store: MessageStore
    ) -> None:
        # Given a noisy group with another group's message within the lookahead
        await self.noisy_first(store)

        # When a fair claim fills its limit past the noisy group, or partly (4 of 2 + 2)
        quiet = await store.claim(P, Q, limit=1, ttl=60, grace=60, fair=POLICY)
        mixed = await store.claim(P, Q, limit=3, ttl=60, grace=60, fair=POLICY)

        # Then neither is futile: the second read every claimable message, fewer than its
        # window, and took messages put aside only after the other one
        assert quiet.claim is not None and numbers(quiet.claim.messages) == [7]
        assert mixed.claim is not None and numbers(mixed.claim.messages) == [4, 5, 8]
        assert (quiet.futile, mixed.futile) == (False, False)

    async def test_a_claim_of_only_noisy_messages_within_the_window_is_not_futile(
        self, store: MessageStore
    ) -> None:
        # Given a noisy group and nothing else claimable, fewer than the window
        await self.post(store, *(gmsg(n, "a") for n in range(1, 7)))
        assert await self.claim(store, 3) == [1, 2, 3]

        # When a claim takes them (every claimable message read), it is not futile
        result = await store.claim(P, Q, limit=2, ttl=60, grace=60, fair=POLICY)
        assert result.claim is not None and numbers(result.claim.messages) == [4, 5]
        assert result.futile is False

    async def test_a_claim_without_groups_is_not_futile(self, store: MessageStore) -> None:
        # Given more messages without a group than the window
        await self.post(store, *(gmsg(n) for n in range(POLICY.lookahead + 10)))
        result = await store.claim(P, Q, limit=2, ttl=60, grace=60, fair=POLICY)
        assert result.claim is not None and numbers(result.claim.messages) == [0, 1]
        assert result.futile is False

    async def test_a_futile_claim_with_nothing_claimed_in_the_window_from_others(
        self, store: MessageStore
    ) -> None:
        # Given the window holds one message of "b" and then only the noisy group's
        await self.post(store, *(gmsg(n, "a") for n in range(1, 4)))
        assert await self.claim(store, 3) == [1, 2, 3]
        await self.post(store, gmsg(4, "b"))
        await self.post(store, *(gmsg(n, "a") for n in range(5, 5 + POLICY.lookahead + 5)))

        # When a claim of 3 reads its whole window and finds only that one
        result = await store.claim(P, Q, limit=3, ttl=60, grace=60, fair=POLICY)

        # Then the noisy group's oldest fill the rest: futile
        assert result.claim is not None and numbers(result.claim.messages) == [4, 5, 6]
        assert result.futile is True


def _claim_of(message: object) -> str:
    claim_id = getattr(message, "claim_id", None)
    assert isinstance(claim_id, str)
    return claim_id
