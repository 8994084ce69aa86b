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
# Noisy messages waiting behind the head in the deep-backlog tests: far past the window.
DEEP = 3000


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

    async def deep(self, store: MessageStore, behind: int = POLICY.lookahead + 50) -> None:
        """Group "a" noisy (1-3 claimed) with ``behind`` more of it waiting (4 on), more than
        the claim's window (limit + lookahead)."""
        await self.post(store, *(gmsg(n, "a") for n in range(1, 4)))
        assert await self.claim(store, 3, ttl=3600) == [1, 2, 3]
        for start in range(4, 4 + behind, 50):
            await self.post(store, *(gmsg(n, "a") for n in range(start, min(4 + behind,
                                                                           start + 50))))

    async def test_a_quiet_message_behind_a_deep_noisy_backlog_is_claimed_first(
        self, store: MessageStore
    ) -> None:
        # Given a noisy group with 3,000 messages waiting, then one message of "b"
        await self.deep(store, behind=DEEP)
        await self.post(store, gmsg(9999, "b"))

        # When fair claims of one message and of two are made
        result = await store.claim(P, Q, limit=1, ttl=60, grace=60, fair=POLICY)
        await store.post(P, Q, CLIENT, [gmsg(9998, "c")])
        mixed = await store.claim(P, Q, limit=2, ttl=60, grace=60, fair=POLICY)

        # Then the quiet message comes first, from past the window, and a claim short of
        # quiet ones fills the rest with the oldest noisy message; neither is futile (the
        # group index gave each a quiet message)
        assert result.claim is not None and numbers(result.claim.messages) == [9999]
        assert mixed.claim is not None and numbers(mixed.claim.messages) == [4, 9998]
        assert (result.futile, mixed.futile) == (False, False)

    async def test_a_quiet_message_posted_once_behind_the_backlog_is_found(
        self, store: MessageStore
    ) -> None:
        # Given a deep noisy backlog and a message of "b" posted with a key (post_once)
        await self.deep(store)
        await store.post_once(P, Q, CLIENT, "key-1", gmsg(9999, "b"), remember=600)

        # Then the next fair claim takes it first
        assert await self.claim(store, 1) == [9999]

    async def test_quiet_groups_behind_the_backlog_come_in_seq_order(
        self, store: MessageStore
    ) -> None:
        # Given a deep noisy backlog, then messages of "b" and "c" interleaved
        await self.deep(store)
        await self.post(store, gmsg(9001, "b"), gmsg(9002, "c"), gmsg(9003, "b"),
                        gmsg(9004, "c"))

        # When claims take them one and then two at a time
        first = await self.claim(store, 1)
        rest = await self.claim(store, 2)

        # Then they come oldest first, whatever their group
        assert (first, rest) == ([9001], [9002, 9003])

    async def test_the_group_index_follows_claim_expiry_and_release(
        self, store: MessageStore, clock: Clock
    ) -> None:
        # Given a quiet message behind the backlog taken by a fair claim of 30 s
        await self.deep(store)
        await self.post(store, gmsg(9999, "b"))
        assert await self.claim(store, 1, ttl=30) == [9999]

        # Then while it is held the next claim finds no quiet message
        assert await self.claim(store, 1, ttl=300) == [4]

        # When its claim expires, the next fair claim finds it again
        clock.advance(31)
        again = await store.claim(P, Q, limit=1, ttl=60, grace=60, fair=POLICY)
        assert again.claim is not None and numbers(again.claim.messages) == [9999]

        # And when that claim is released, the next one finds it once more
        await store.release_claim(P, Q, again.claim.id)
        assert await self.claim(store, 1) == [9999]

    async def test_the_group_index_follows_deletes_and_ttl(
        self, store: MessageStore, clock: Clock
    ) -> None:
        # Given behind the backlog: a quiet message deleted unclaimed, one deleted in bulk,
        # one whose ttl runs out, then one that stays
        await self.deep(store)
        gone, bulk, _ = await self.post(store, gmsg(9001, "b"), gmsg(9002, "c"),
                                        gmsg(9003, "d", ttl=100))
        await self.post(store, gmsg(9004, "e", ttl=600))
        await store.delete(P, Q, gone)
        await store.delete_many(P, Q, [bulk])
        clock.advance(101)

        # Then a fair claim takes the one left, and after it only noisy ones
        assert await self.claim(store, 1) == [9004]
        assert await self.claim(store, 1) == [4]

    async def test_a_delayed_quiet_message_is_claimed_first_once_it_shows(
        self, store: MessageStore, clock: Clock
    ) -> None:
        # Given a deep noisy backlog and a message of "b" delayed 30 s behind it
        await self.deep(store)
        await self.post(store, NewMessage(body=b'{"n": 9999}', ttl=600, delay=30,
                                          group_id="b"))

        # Then it is not claimed while delayed, and first once it shows
        assert await self.claim(store, 1) == [4]
        clock.advance(31)
        assert await self.claim(store, 1) == [9999]

    async def test_a_worn_quiet_message_found_by_the_index_is_dead_lettered(
        self, store: MessageStore, clock: Clock
    ) -> None:
        # Given a quiet message behind the backlog claimed once, its claim expired
        await self.deep(store)
        await self.post(store, gmsg(9998, "b"), gmsg(9999, "b"))
        assert await self.claim(store, 1, ttl=30) == [9998]
        clock.advance(31)

        # When a fair claim with a dead-letter policy of one claim meets it
        policy = DeadLetterPolicy(max_claim_count=1, queue=DLQ)
        result = await store.claim(P, Q, limit=1, ttl=60, grace=60, dead_letter=policy,
                                   fair=POLICY)

        # Then it is moved, the next quiet message is claimed, and the moved one keeps its
        # group; nothing quiet is left in the queue
        assert result.claim is not None and numbers(result.claim.messages) == [9999]
        assert len(result.dead_lettered) == 1
        [moved] = await store.list_messages(P, DLQ, limit=10)
        assert (numbers([moved]), moved.group_id) == ([9998], "b")
        assert await self.claim(store, 1) == [4]

    async def test_a_queue_deleted_behind_a_backlog_forgets_its_index(
        self, store: MessageStore
    ) -> None:
        # Given a quiet message behind a deep backlog
        await self.deep(store)
        await self.post(store, gmsg(9999, "b"))

        # When the queue is deleted and a deep backlog of "a" is made again
        await store.delete_queue(P, Q)
        await self.deep(store)

        # Then no message of the deleted queue is found: only noisy ones are left
        result = await store.claim(P, Q, limit=1, ttl=60, grace=60, fair=POLICY)
        assert result.claim is not None and numbers(result.claim.messages) == [4]
        assert result.futile is True

    async def test_concurrent_claims_behind_a_backlog_take_each_message_once(
        self, store: MessageStore
    ) -> None:
        # Given 40 quiet messages of four groups behind a deep noisy backlog
        await self.deep(store)
        await self.post(store, *(gmsg(n, "bcde"[n % 4]) for n in range(9000, 9040)))

        # When 20 fair claims of two run at once
        results = await asyncio.gather(*(
            store.claim(P, Q, limit=2, ttl=60, grace=60, fair=POLICY) for _ in range(20)
        ))

        # Then each claim is served and no message is claimed twice
        ids = [m.id for r in results if r.claim is not None for m in r.claim.messages]
        assert len(ids) == len(set(ids)) == 40

    async def flood(self, store: MessageStore) -> None:
        """Group "a" noisy, more of it waiting than the lookahead, and nothing else."""
        await self.deep(store)

    async def test_a_claim_that_reads_its_window_for_nothing_is_futile(
        self, store: MessageStore
    ) -> None:
        # Given a noisy group deeper than the lookahead, and no other message
        await self.flood(store)

        # When a fair claim reads limit + lookahead messages, all put aside, and the group
        # index has no message of another group
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
