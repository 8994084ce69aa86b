"""Contract of FIFO queues in the message store (``post_fifo``, ``claim_fifo``, ``pop_fifo`` of
``services/message_svc/storage/base.py``): message groups and deduplication, for any backend.

A backend whose ``capabilities.fifo`` is false must refuse every FIFO call with
``FifoUnsupported``; the rest of the suite is skipped for it.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest

from services.message_svc.storage.base import (
    DeadLetterPolicy,
    FifoUnsupported,
    MessageStore,
    NewMessage,
)
from services.message_svc.storage.registry import open_store
from services.testing.fixtures import Clock

P, Q, DLQ = "project-a", "fifo-1", "fifo-dlq"
CLIENT = "client-1"
WINDOW = 300

Opener = Callable[[], Awaitable[MessageStore]]


def fmsg(n: int, group: str | None = None, dedup: str | None = None, delay: int = 0) -> NewMessage:
    return NewMessage(body=b'{"n": %d}' % n, ttl=600, delay=delay, group_id=group, dedup_id=dedup)


def numbers(messages: object) -> list[int]:
    return [int(m.body[6:-1]) for m in messages]  # type: ignore[attr-defined]


class FifoMessageStoreContract:
    """The FIFO suite: subclass it in a test module and provide the ``store_uri`` fixture."""

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    async def any_store(self, store_uri: str, clock: Clock) -> AsyncIterator[MessageStore]:
        store = await open_store(store_uri, now=clock)
        yield store
        await store.close()

    @pytest.fixture
    def fifo_store(self, any_store: MessageStore) -> MessageStore:
        if not any_store.capabilities.fifo:
            pytest.skip("the backend does not implement FIFO queues (capabilities.fifo)")
        return any_store

    async def post(self, store: MessageStore, *messages: NewMessage) -> tuple[str, ...]:
        return (await store.post_fifo(P, Q, CLIENT, messages, dedup_window=WINDOW)).ids

    async def test_a_backend_without_fifo_refuses_every_fifo_call(
        self, any_store: MessageStore
    ) -> None:
        if any_store.capabilities.fifo:
            pytest.skip("the backend implements FIFO queues")
        with pytest.raises(FifoUnsupported):
            await any_store.post_fifo(P, Q, CLIENT, [fmsg(1, "g")], dedup_window=WINDOW)
        with pytest.raises(FifoUnsupported):
            await any_store.claim_fifo(P, Q, limit=1, ttl=60, grace=60)
        with pytest.raises(FifoUnsupported):
            await any_store.pop_fifo(P, Q, 1)

    async def test_a_group_is_claimed_in_order_several_at_once(
        self, fifo_store: MessageStore
    ) -> None:
        # Given two interleaved groups and a message without group
        await self.post(fifo_store, fmsg(1, "a"), fmsg(2, "b"), fmsg(3, "a"), fmsg(4),
                        fmsg(5, "a"))

        # When one claim takes everything
        result = await fifo_store.claim_fifo(P, Q, limit=10, ttl=60, grace=60)

        # Then it holds every message in seq order, each with its group
        assert result.claim is not None
        assert numbers(result.claim.messages) == [1, 2, 3, 4, 5]
        assert [m.group_id for m in result.claim.messages] == ["a", "b", "a", None, "a"]

    async def test_a_claimed_group_gives_nothing_to_other_claims_until_deleted(
        self, fifo_store: MessageStore
    ) -> None:
        # Given a group whose head is claimed
        await self.post(fifo_store, fmsg(1, "a"), fmsg(2, "a"), fmsg(3, "b"), fmsg(4))
        first = await fifo_store.claim_fifo(P, Q, limit=1, ttl=60, grace=60)
        assert first.claim is not None and numbers(first.claim.messages) == [1]

        # When others claim, the rest of the group is held back; other messages are not
        second = await fifo_store.claim_fifo(P, Q, limit=10, ttl=60, grace=60)
        assert second.claim is not None and numbers(second.claim.messages) == [3, 4]
        assert (await fifo_store.claim_fifo(P, Q, limit=10, ttl=60, grace=60)).claim is None

        # Then deleting the claimed head frees the group for the next claim
        await fifo_store.delete(P, Q, first.claim.messages[0].id, first.claim.id)
        third = await fifo_store.claim_fifo(P, Q, limit=10, ttl=60, grace=60)
        assert third.claim is not None and numbers(third.claim.messages) == [2]

    async def test_a_group_is_locked_while_any_of_its_messages_is_claimed(
        self, fifo_store: MessageStore
    ) -> None:
        # Given a group of which a later message is claimed and an earlier one is free (the
        # earlier one's claim was released after the later one was taken by another claim)
        await self.post(fifo_store, fmsg(1, "a"), fmsg(2, "a"))
        both = await fifo_store.claim_fifo(P, Q, limit=1, ttl=60, grace=60)
        assert both.claim is not None
        await fifo_store.delete(P, Q, both.claim.messages[0].id, both.claim.id)
        await self.post(fifo_store, fmsg(3, "a"))
        held = await fifo_store.claim_fifo(P, Q, limit=2, ttl=60, grace=60)
        assert held.claim is not None and numbers(held.claim.messages) == [2, 3]
        await fifo_store.delete(P, Q, held.claim.messages[0].id, held.claim.id)

        # When another claim comes while message 3 is held, then once the claim is released
        assert (await fifo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)).claim is None
        await fifo_store.release_claim(P, Q, held.claim.id)

        # Then the group comes back in order
        again = await fifo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)
        assert again.claim is not None and numbers(again.claim.messages) == [3]

    async def test_an_expired_claim_unlocks_its_group(
        self, fifo_store: MessageStore, clock: Clock
    ) -> None:
        await self.post(fifo_store, fmsg(1, "a"), fmsg(2, "a"))
        first = await fifo_store.claim_fifo(P, Q, limit=1, ttl=60, grace=60)
        assert first.claim is not None
        assert (await fifo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)).claim is None

        clock.advance(61)

        again = await fifo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)
        assert again.claim is not None and numbers(again.claim.messages) == [1, 2]

    async def test_a_delayed_head_holds_its_group_back(
        self, fifo_store: MessageStore, clock: Clock
    ) -> None:
        await self.post(fifo_store, fmsg(1, "a", delay=30), fmsg(2, "a"), fmsg(3, "b"))

        result = await fifo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)
        assert result.claim is not None and numbers(result.claim.messages) == [3]

        clock.advance(31)
        later = await fifo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)
        assert later.claim is not None and numbers(later.claim.messages) == [1, 2]

    async def test_pop_follows_the_group_rules(self, fifo_store: MessageStore) -> None:
        await self.post(fifo_store, fmsg(1, "a"), fmsg(2, "a"), fmsg(3, "b"))
        held = await fifo_store.claim_fifo(P, Q, limit=1, ttl=60, grace=60)
        assert held.claim is not None and numbers(held.claim.messages) == [1]

        assert numbers(await fifo_store.pop_fifo(P, Q, 5)) == [3]
        await fifo_store.delete(P, Q, held.claim.messages[0].id, held.claim.id)
        assert numbers(await fifo_store.pop_fifo(P, Q, 5)) == [2]

    async def test_a_duplicate_within_the_window_returns_the_first_id_and_stores_nothing(
        self, fifo_store: MessageStore, clock: Clock
    ) -> None:
        # Given a message accepted with a dedup id
        posted = await fifo_store.post_fifo(P, Q, CLIENT, [fmsg(1, dedup="d1")],
                                            dedup_window=WINDOW)
        assert posted.stored == (True,)

        # When the same dedup id comes again within the window, even after the first message
        # was deleted
        clock.advance(WINDOW - 1)
        await fifo_store.delete(P, Q, posted.ids[0])
        again = await fifo_store.post_fifo(P, Q, CLIENT, [fmsg(2, dedup="d1")],
                                           dedup_window=WINDOW)

        # Then it gets the first id and nothing is stored
        assert again.ids == posted.ids and again.stored == (False,)
        assert await fifo_store.list_messages(P, Q, limit=10) == []

        # And after the window the dedup id is accepted again
        clock.advance(1)
        late = await fifo_store.post_fifo(P, Q, CLIENT, [fmsg(3, dedup="d1")],
                                          dedup_window=WINDOW)
        assert late.stored == (True,) and late.ids != posted.ids

    async def test_duplicates_within_a_batch_are_checked_per_message(
        self, fifo_store: MessageStore
    ) -> None:
        await fifo_store.post_fifo(P, Q, CLIENT, [fmsg(0, dedup="old")], dedup_window=WINDOW)

        posted = await fifo_store.post_fifo(
            P, Q, CLIENT,
            [fmsg(1, dedup="x"), fmsg(2, dedup="x"), fmsg(3), fmsg(4, dedup="old"),
             fmsg(5, dedup="y")],
            dedup_window=WINDOW,
        )

        assert posted.stored == (True, False, True, False, True)
        assert posted.ids[1] == posted.ids[0]
        assert len(set(posted.ids)) == 4
        listed = await fifo_store.list_messages(P, Q, limit=10)
        assert numbers(listed) == [0, 1, 3, 5]

    async def test_concurrent_posts_of_one_dedup_id_store_it_once(
        self, fifo_store: MessageStore
    ) -> None:
        posts = await asyncio.gather(*(
            fifo_store.post_fifo(P, Q, CLIENT, [fmsg(n, "a", dedup="once")],
                                 dedup_window=WINDOW)
            for n in range(10)
        ))

        assert sum(p.stored.count(True) for p in posts) == 1
        assert len({p.ids[0] for p in posts}) == 1
        listed = await fifo_store.list_messages(P, Q, limit=20)
        assert [m.id for m in listed] == [posts[0].ids[0]]

    async def test_dedup_ids_are_per_queue(self, fifo_store: MessageStore) -> None:
        first = await fifo_store.post_fifo(P, Q, CLIENT, [fmsg(1, dedup="d")],
                                           dedup_window=WINDOW)
        other = await fifo_store.post_fifo(P, "fifo-2", CLIENT, [fmsg(1, dedup="d")],
                                           dedup_window=WINDOW)
        assert other.stored == (True,) and other.ids != first.ids

    async def test_a_dead_letter_move_keeps_the_groups_order(
        self, fifo_store: MessageStore, clock: Clock
    ) -> None:
        # Given a group claimed once and its claim expired
        policy = DeadLetterPolicy(max_claim_count=1, queue=DLQ)
        await self.post(fifo_store, fmsg(1, "a"), fmsg(2, "a"), fmsg(3, "a"))
        first = await fifo_store.claim_fifo(P, Q, limit=2, ttl=60, grace=60,
                                            dead_letter=policy)
        assert first.claim is not None and numbers(first.claim.messages) == [1, 2]
        clock.advance(61)

        # When the next claim moves the over-claimed messages
        second = await fifo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60,
                                             dead_letter=policy)

        # Then they arrive in the dead-letter queue in order, with their group, and the claim
        # goes on with the group's next message
        assert second.claim is not None and numbers(second.claim.messages) == [3]
        moved = await fifo_store.list_messages(P, DLQ, limit=10)
        assert numbers(moved) == [1, 2] and {m.group_id for m in moved} == {"a"}
        assert len(second.dead_lettered) == 2

    async def test_messages_without_group_behave_as_in_a_standard_queue(
        self, fifo_store: MessageStore
    ) -> None:
        await self.post(fifo_store, fmsg(1), fmsg(2), fmsg(3))
        one = await fifo_store.claim_fifo(P, Q, limit=1, ttl=60, grace=60)
        two = await fifo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)
        assert one.claim is not None and two.claim is not None
        assert numbers(one.claim.messages) == [1] and numbers(two.claim.messages) == [2, 3]
        listed = await fifo_store.list_messages(P, Q, limit=10, include_claimed=True)
        assert [m.group_id for m in listed] == [None, None, None]

    async def test_a_dead_letter_queue_gives_moved_groups_to_any_claim(
        self, fifo_store: MessageStore, clock: Clock
    ) -> None:
        # Given messages of two groups moved to a dead-letter queue
        policy = DeadLetterPolicy(max_claim_count=1, queue=DLQ)
        await self.post(fifo_store, fmsg(1, "a"), fmsg(2, "a"), fmsg(3, "b"))
        await fifo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60, dead_letter=policy)
        clock.advance(61)
        moved = await fifo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60, dead_letter=policy)
        assert moved.claim is None and len(moved.dead_lettered) == 3

        # When the dead-letter queue (not a FIFO queue) is claimed as a standard queue
        result = await fifo_store.claim(P, DLQ, limit=5, ttl=60, grace=60)

        # Then every moved message is claimable there, in order, with its group
        assert result.claim is not None and numbers(result.claim.messages) == [1, 2, 3]
        assert [m.group_id for m in result.claim.messages] == ["a", "a", "b"]

    async def test_renewing_a_claim_keeps_its_group_locked(
        self, fifo_store: MessageStore, clock: Clock
    ) -> None:
        await self.post(fifo_store, fmsg(1, "a"), fmsg(2, "a"))
        first = await fifo_store.claim_fifo(P, Q, limit=1, ttl=60, grace=60)
        assert first.claim is not None

        clock.advance(50)
        assert await fifo_store.renew_claim(P, Q, first.claim.id, ttl=60, grace=60)
        clock.advance(20)  # past the first expiry, before the renewed one
        assert (await fifo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)).claim is None

        clock.advance(41)
        again = await fifo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)
        assert again.claim is not None and numbers(again.claim.messages) == [1, 2]

    async def test_bulk_deletes_and_pops_free_a_group(self, fifo_store: MessageStore) -> None:
        await self.post(fifo_store, fmsg(1, "a"), fmsg(2, "a"), fmsg(3, "a"))
        held = await fifo_store.claim_fifo(P, Q, limit=1, ttl=60, grace=60)
        assert held.claim is not None
        assert await fifo_store.pop_fifo(P, Q, 5) == []

        await fifo_store.delete_many(P, Q, [held.claim.messages[0].id], [held.claim.id])

        assert numbers(await fifo_store.pop_fifo(P, Q, 1)) == [2]
        assert numbers(await fifo_store.pop_fifo(P, Q, 5)) == [3]

    async def test_an_expired_head_lets_the_next_message_of_its_group_be_claimed(
        self, fifo_store: MessageStore, clock: Clock
    ) -> None:
        await self.post(fifo_store, NewMessage(body=b'{"n": 1}', ttl=10, group_id="a"),
                        fmsg(2, "a"))

        clock.advance(11)

        result = await fifo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)
        assert result.claim is not None and numbers(result.claim.messages) == [2]
        assert await fifo_store.collect_garbage() >= 1

    async def test_stats_listings_and_hints_see_the_messages_of_groups(
        self, fifo_store: MessageStore, clock: Clock
    ) -> None:
        # Given a claimed head, free messages with and without a group and a delayed one
        await self.post(fifo_store, fmsg(1, "a"), fmsg(2, "a"), fmsg(3, "b"), fmsg(4),
                        fmsg(5, "c", delay=30))
        held = await fifo_store.claim_fifo(P, Q, limit=1, ttl=60, grace=60)
        assert held.claim is not None

        stats = await fifo_store.stats(P, Q)
        assert (stats.total, stats.claimed, stats.free) == (5, 1, 4)
        assert stats.oldest is not None and stats.oldest.group_id == "a"
        assert numbers(await fifo_store.list_messages(P, Q, limit=10)) == [2, 3, 4]
        listed = await fifo_store.list_messages(P, Q, limit=10, include_claimed=True,
                                                include_delayed=True)
        assert [m.group_id for m in listed] == ["a", "a", "b", None, "c"]
        page = await fifo_store.list_messages(P, Q, limit=2, after=listed[1].seq)
        assert numbers(page) == [3, 4]
        got = await fifo_store.get(P, Q, listed[4].id)
        assert got is not None and got.group_id == "c"
        claim = await fifo_store.get_claim(P, Q, held.claim.id)
        assert claim is not None and [m.group_id for m in claim.messages] == ["a"]
        assert await fifo_store.next_free_at(P, Q) == pytest.approx(clock.now + 30)

    async def test_deleting_a_queue_forgets_its_groups_and_dedup_ids(
        self, fifo_store: MessageStore
    ) -> None:
        first = await fifo_store.post_fifo(P, Q, CLIENT, [fmsg(1, "a", dedup="d")],
                                           dedup_window=WINDOW)
        assert (await fifo_store.claim_fifo(P, Q, limit=1, ttl=60, grace=60)).claim is not None

        await fifo_store.delete_queue(P, Q)

        again = await fifo_store.post_fifo(P, Q, CLIENT, [fmsg(2, "a", dedup="d")],
                                           dedup_window=WINDOW)
        assert again.stored == (True,) and again.ids != first.ids
        result = await fifo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)
        assert result.claim is not None and numbers(result.claim.messages) == [2]

    async def test_concurrent_consumers_never_share_a_group_or_break_its_order(
        self, fifo_store: MessageStore
    ) -> None:
        # Given 20 groups of 8 messages each, interleaved, and 16 messages without a group
        groups, per_group = 20, 8
        order: list[tuple[int, int]] = []
        for i in range(per_group):
            order += [(g, i) for g in range(groups)] + [(-1, 2 * i), (-1, 2 * i + 1)]
        for start in range(0, len(order), 20):
            await self.post(fifo_store, *(
                NewMessage(body=b'{"g": %d, "i": %d}' % (g, i), ttl=600,
                           group_id=None if g < 0 else f"g{g}")
                for g, i in order[start:start + 20]
            ))
        # Recorded as served, on one counter of events in the event loop's order: each
        # message (when its claim returned, group, seq, i), and each claim's hold on a group
        # (group, when the claim returned, when the delete of its last message of the group
        # was sent: the store frees the group after that).
        events = itertools.count()
        served: list[tuple[int, str, int, int]] = []
        holds: list[tuple[str, int, int]] = []
        rng = random.Random(7)

        async def consumer() -> None:
            idle = 0
            while idle < 3:
                result = await fifo_store.claim_fifo(P, Q, limit=rng.randint(1, 4), ttl=600,
                                                     grace=60)
                got = next(events)
                if result.claim is None:
                    idle += 1
                    await asyncio.sleep(0)
                    continue
                idle = 0
                for _ in range(rng.randint(0, 3)):  # others run while this claim holds
                    await asyncio.sleep(0)
                messages = result.claim.messages
                last = {m.group_id: n for n, m in enumerate(messages)}
                for n, m in enumerate(messages):
                    served.append((got, m.group_id or "", m.seq, orjson.loads(m.body)["i"]))
                    if m.group_id is not None and last[m.group_id] == n:
                        holds.append((m.group_id, got, next(events)))
                    await fifo_store.delete(P, Q, m.id, result.claim.id)

        # When 50 consumers claim and delete until the queue is empty
        await asyncio.gather(*(consumer() for _ in range(50)))

        # Then every message was served once, each group in the order it was posted (seqs
        # strictly increasing), and no two claims ever held one group at once
        assert sorted(i for _, group, _, i in served if not group) == list(range(2 * per_group))
        by_group: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for got, group, seq, i in served:
            if group:
                by_group[group].append((got, seq, i))
        assert sorted(by_group) == sorted(f"g{g}" for g in range(groups))
        for group, rows in by_group.items():
            rows.sort()
            assert [i for *_, i in rows] == list(range(per_group)), group
            seqs = [seq for _, seq, _ in rows]
            assert seqs == sorted(set(seqs)), group
            spans = sorted((start, end) for g, start, end in holds if g == group)
            for (_, end), (start, _) in itertools.pairwise(spans):
                assert end < start, f"{group} held by two claims at once"
