"""Contract of the message store (``services/message_svc/storage/base.py``): messages and claims,
for any backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from services.common.errors import Unavailable
from services.message_svc.storage.base import (
    SEQ_MAX,
    DeadLetterPolicy,
    DeleteOutcome,
    MessageStore,
    NewMessage,
    StaleQueue,
    StoredMessage,
)
from services.message_svc.storage.registry import open_store
from services.testing.fixtures import Clock

P, Q = "project-a", "queue-1"

OTHER_PROJECT = "project-b"

CLIENT, OTHER_CLIENT = "client-1", "client-2"

Opener = Callable[[], Awaitable[MessageStore]]


def msg(n: int, ttl: int = 300, delay: int = 0) -> NewMessage:
    return NewMessage(body=b'{"n": %d}' % n, ttl=ttl, delay=delay)


def bodies(messages: list[StoredMessage] | tuple[StoredMessage, ...]) -> list[bytes]:
    return [m.body for m in messages]


async def post_n(
    store: MessageStore, n: int, project: str = P, queue: str = Q, client: str = CLIENT,
    ttl: int = 300,
) -> tuple[str, ...]:
    return await store.post(project, queue, client, [msg(i, ttl=ttl) for i in range(n)])


async def list_all(store: MessageStore, project: str = P, queue: str = Q, **kw: object) -> list[
    StoredMessage
]:
    """Every page, following markers until an empty page."""
    out: list[StoredMessage] = []
    after: int | None = None
    while True:
        page = await store.list_messages(project, queue, limit=3, after=after, **kw)  # type: ignore[arg-type]
        if not page:
            return out
        out += page
        after = page[-1].seq


class MessageStoreContract:
    """The contract suite: subclass it in a test module and provide the ``store_uri``
    fixture (``services/testing/__init__.py``)."""

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    def message_store_opener(self, store_uri: str, clock: Clock) -> Opener:
        """Opens a store of the backend under test; every call opens the same data."""
        return lambda: open_store(store_uri, now=clock)

    @pytest.fixture
    async def message_store(self, message_store_opener: Opener) -> AsyncIterator[MessageStore]:
        store = await message_store_opener()
        yield store
        await store.close()

    async def test_next_free_at_is_when_a_delay_ends_or_a_claim_expires(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        """Long polling's hint: when a hidden message may next become claimable."""
        # An empty queue, and one with only visible messages, have nothing coming
        assert await message_store.next_free_at(P, Q) is None
        await message_store.post(P, Q, CLIENT, [msg(0)])
        assert await message_store.next_free_at(P, Q) is None
        # A claim frees its message when it expires
        start = clock.now
        claimed = await message_store.claim(P, Q, limit=1, ttl=60, grace=60)
        assert claimed.claim is not None
        assert await message_store.next_free_at(P, Q) == pytest.approx(start + 60, abs=1)
        # A delayed message becomes visible earlier, so that comes first
        await message_store.post(P, Q, CLIENT, [msg(1, delay=30)])
        assert await message_store.next_free_at(P, Q) == pytest.approx(start + 30, abs=1)
        # Once its delay is over, the claim's expiry is next
        clock.advance(31)
        assert await message_store.next_free_at(P, Q) == pytest.approx(start + 60, abs=1)
        # Released, nothing hidden is left; other queues never count
        await message_store.release_claim(P, Q, claimed.claim.id)
        assert await message_store.next_free_at(P, Q) is None
        await message_store.post(P, "other", CLIENT, [msg(2, delay=10)])
        assert await message_store.next_free_at(P, Q) is None

    async def test_post_once_stores_a_key_once_and_remembers_it_after_the_message(
        self, message_store: MessageStore
    ) -> None:
        """Idempotent posts (queue subscribers): a key is posted once per queue."""
        # A key posts a message; the same key again stores nothing and answers its id
        first, stored = await message_store.post_once(
            P, Q, CLIENT, "delivery-1", NewMessage(body=b'{"n":1}', ttl=300), remember=3600
        )
        assert stored
        again = await message_store.post_once(
            P, Q, CLIENT, "delivery-1", NewMessage(body=b'{"n":1}', ttl=300), remember=3600
        )
        assert again == (first, False)
        assert [m.id for m in await list_all(message_store)] == [first]
        # Deleted (consumed), the message is still not posted again
        await message_store.delete(P, Q, first)
        again = await message_store.post_once(
            P, Q, CLIENT, "delivery-1", NewMessage(body=b'{"n":1}', ttl=300), remember=3600
        )
        assert again == (first, False)
        assert await list_all(message_store) == []
        # Another key, or the same key on another queue, posts
        other, stored = await message_store.post_once(
            P, Q, CLIENT, "delivery-2", NewMessage(body=b'{"n":2}', ttl=120), remember=3600
        )
        assert stored and other != first
        (message,) = await list_all(message_store)
        assert (message.id, message.body, message.ttl) == (other, b'{"n":2}', 120)
        _, stored = await message_store.post_once(
            P, "queue-2", CLIENT, "delivery-1", NewMessage(body=b"1", ttl=300), remember=3600
        )
        assert stored

    async def test_post_once_keeps_a_fair_group(self, message_store: MessageStore) -> None:
        # A standard queue's message posted once with a group (a fair-queue group) keeps it
        mid, stored = await message_store.post_once(
            P, Q, CLIENT, "delivery-g", NewMessage(body=b"1", ttl=300, group_id="g1"),
            remember=3600,
        )
        assert stored
        (message,) = await list_all(message_store)
        assert (message.id, message.group_id) == (mid, "g1")

    async def test_post_once_of_one_key_at_once_stores_one_message(
        self, message_store: MessageStore
    ) -> None:
        results = await asyncio.gather(*(
            message_store.post_once(
                P, Q, CLIENT, "delivery-1", NewMessage(body=b"1", ttl=300), remember=3600
            )
            for _ in range(5)
        ))
        assert len({mid for mid, _ in results}) == 1
        assert [stored for _, stored in results].count(True) == 1
        assert len(await list_all(message_store)) == 1

    async def test_post_returns_ids_in_order_and_list_keeps_acceptance_order(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        # Given two batches posted one after the other
        first = await message_store.post(P, Q, CLIENT, [msg(0), msg(1, ttl=60), msg(2)])
        second = await message_store.post(P, Q, CLIENT, [msg(3)])

        # When listing
        listed = await message_store.list_messages(P, Q, limit=10)

        # Then ids come back in the order given and the list follows acceptance order
        assert len(set(first + second)) == 4
        assert [m.id for m in listed] == [*first, *second]
        assert bodies(listed) == [b'{"n": %d}' % i for i in range(4)]
        assert [m.seq for m in listed] == sorted(m.seq for m in listed)
        assert len({m.seq for m in listed}) == 4
        one = listed[1]
        assert one.ttl == 60
        assert one.created == clock.now
        assert one.expires == clock.now + 60
        assert one.client_id == CLIENT
        assert one.claim_id is None and one.claim_count == 0

    async def test_body_bytes_round_trip_exactly(self, message_store: MessageStore) -> None:
        # Given bodies whose exact bytes matter (key order, big ints, unicode, spacing)
        raw = [b'{"b":1,"a":2}', b"12345678901234567890", '"h\u00e9llo \u2603"'.encode(),
               b"[1, 2.50, null]"]
        ids = await message_store.post(P, Q, CLIENT, [NewMessage(body=b, ttl=60) for b in raw])

        # Then they come back byte for byte
        assert [m.body for m in await message_store.get_many(P, Q, ids)] == raw

    async def test_a_failing_batch_stores_nothing_and_does_not_harm_its_neighbours(
        self,
        message_store: MessageStore,
    ) -> None:
        # Given a batch whose second message cannot be stored, posted together with a good one
        broken = [msg(1), NewMessage(body=None, ttl=60)]  # type: ignore[arg-type]
        results = await asyncio.gather(
            message_store.post(P, Q, CLIENT, broken),
            message_store.post(P, Q, CLIENT, [msg(2)]),
            return_exceptions=True,
        )

        # Then the broken batch failed as a whole and the good one was stored
        assert isinstance(results[0], Exception)
        assert isinstance(results[1], tuple)
        assert bodies(await message_store.list_messages(P, Q, limit=10)) == [b'{"n": 2}']

        # And alone it fails the same way, leaving the store usable
        with pytest.raises(Exception):  # noqa: B017 - each backend has its own driver error
            await message_store.post(P, Q, CLIENT, broken)
        await message_store.post(P, Q, CLIENT, [msg(3)])
        assert len(await message_store.list_messages(P, Q, limit=10)) == 2

    async def test_paging_with_markers_neither_repeats_nor_skips(
        self, message_store: MessageStore
    ) -> None:
        # Given 25 messages
        ids = await post_n(message_store, 25)

        # When reading pages of 10 following the last seq of each page
        pages = []
        after: int | None = None
        while True:
            page = await message_store.list_messages(P, Q, limit=10, after=after)
            if not page:
                break
            pages.append(page)
            after = page[-1].seq

        # Then 10 + 10 + 5, every message once, in order
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [m.id for p in pages for m in p] == list(ids)

    async def test_a_marker_of_a_deleted_newest_message_still_finds_later_posts(
        self,
        message_store: MessageStore,
    ) -> None:
        # Given a reader that saw up to the newest message, which is then deleted
        await post_n(message_store, 3)
        page = await message_store.list_messages(P, Q, limit=10)
        marker = page[-1].seq
        await message_store.delete(P, Q, page[-1].id)

        # When a new message arrives
        (new_id,) = await message_store.post(P, Q, CLIENT, [msg(9)])

        # Then reading after the marker returns it (a seq is never reused)
        assert [m.id for m in await message_store.list_messages(P, Q, limit=10, after=marker)] == [
            new_id
        ]

    async def test_the_largest_seq_as_marker_gives_an_empty_page(
        self, message_store: MessageStore
    ) -> None:
        # Given messages in the queue
        await post_n(message_store, 2)
        # When reading after the largest seq there can be
        page = await message_store.list_messages(P, Q, limit=10, after=SEQ_MAX)
        # Then nothing follows it
        assert page == []

    async def test_echo_false_hides_the_callers_own_messages(
        self, message_store: MessageStore
    ) -> None:
        # Given messages from two clients
        mine = await message_store.post(P, Q, CLIENT, [msg(1)])
        theirs = await message_store.post(P, Q, OTHER_CLIENT, [msg(2)])

        # Then echo=False hides the caller's own, echo=True shows both
        hidden = await message_store.list_messages(P, Q, limit=10, client_id=CLIENT, echo=False)
        shown = await message_store.list_messages(P, Q, limit=10, client_id=CLIENT, echo=True)
        assert [m.id for m in hidden] == list(theirs)
        assert [m.id for m in shown] == [*mine, *theirs]

    async def test_echo_filtering_pages_correctly(self, message_store: MessageStore) -> None:
        # Given interleaved messages of two clients
        expected: list[str] = []
        for i in range(8):
            client = CLIENT if i % 2 else OTHER_CLIENT
            ids = await message_store.post(P, Q, client, [msg(i)])
            if client == OTHER_CLIENT:
                expected += ids

        # Then pages of 3 of the other client's messages cover exactly those
        listed = await list_all(message_store, client_id=CLIENT, echo=False)
        assert [m.id for m in listed] == expected

    async def test_claimed_messages_are_listed_only_with_include_claimed_and_page_correctly(
        self,
        message_store: MessageStore,
    ) -> None:
        # Given 7 messages of which the first 4 are claimed
        ids = await post_n(message_store, 7)
        result = await message_store.claim(P, Q, limit=4, ttl=60, grace=60)
        assert result.claim is not None

        # When listing with and without include_claimed, pages of 3
        without = await list_all(message_store)
        with_claimed = await list_all(message_store, include_claimed=True)

        # Then only the unclaimed ones, or all 7 once each in order with their claim id
        assert [m.id for m in without] == list(ids[4:])
        assert [m.id for m in with_claimed] == list(ids)
        assert {m.claim_id for m in with_claimed[:4]} == {result.claim.id}
        assert {m.claim_id for m in with_claimed[4:]} == {None}

    async def test_delayed_messages_are_hidden_until_due(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        # Given a delayed message behind an immediate one
        (now_id,) = await message_store.post(P, Q, CLIENT, [msg(1)])
        (later_id,) = await message_store.post(P, Q, CLIENT, [msg(2, delay=30)])

        # Then it is listed only with include_delayed, and neither claimed nor popped
        assert [m.id for m in await message_store.list_messages(P, Q, limit=10)] == [now_id]
        delayed = await message_store.list_messages(P, Q, limit=10, include_delayed=True)
        assert [m.id for m in delayed] == [now_id, later_id]
        assert delayed[1].visible_at == clock.now + 30
        claimed = await message_store.claim(P, Q, limit=10, ttl=60, grace=60)
        assert claimed.claim is not None and [m.id for m in claimed.claim.messages] == [now_id]
        assert await message_store.pop(P, Q, 10) == []

        # When its delay has passed, it is listed and claimable
        clock.advance(30)
        assert [m.id for m in await message_store.list_messages(P, Q, limit=10)] == [later_id]
        again = await message_store.claim(P, Q, limit=10, ttl=60, grace=60)
        assert again.claim is not None and [m.id for m in again.claim.messages] == [later_id]

    async def test_get_finds_a_message_only_in_its_own_queue(
        self, message_store: MessageStore
    ) -> None:
        (mid,) = await message_store.post(P, Q, CLIENT, [msg(1)])

        found = await message_store.get(P, Q, mid)
        assert found is not None and found.id == mid and found.body == b'{"n": 1}'
        assert await message_store.get(P, "other-queue", mid) is None
        assert await message_store.get(OTHER_PROJECT, Q, mid) is None
        assert await message_store.get(P, Q, "not-a-uuid") is None
        assert await message_store.get(P, Q, "") is None

    async def test_get_many_returns_the_existing_ones_once_in_order(
        self,
        message_store: MessageStore,
    ) -> None:
        ids = await post_n(message_store, 4)
        (elsewhere,) = await message_store.post(P, "other-queue", CLIENT, [msg(9)])

        found = await message_store.get_many(P, Q, [ids[2], "nope", ids[0], ids[2], elsewhere])

        assert [m.id for m in found] == [ids[0], ids[2]]
        assert await message_store.get_many(P, Q, []) == []

    async def test_get_shows_the_live_claim_only(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        (mid,) = await message_store.post(P, Q, CLIENT, [msg(1)])
        result = await message_store.claim(P, Q, limit=1, ttl=60, grace=60)
        assert result.claim is not None

        held = await message_store.get(P, Q, mid)
        assert held is not None and held.claim_id == result.claim.id and held.claim_count == 1

        clock.advance(60)
        after_expiry = await message_store.get(P, Q, mid)
        assert after_expiry is not None and after_expiry.claim_id is None
        assert after_expiry.claim_count == 1

    async def test_expired_messages_are_invisible_everywhere_and_then_collected(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        # Given a short-lived and a long-lived message
        (short,) = await message_store.post(P, Q, CLIENT, [msg(1, ttl=60)])
        (long,) = await message_store.post(P, Q, CLIENT, [msg(2, ttl=120)])

        # When the first one's TTL has passed
        clock.advance(60)

        # Then it is gone from every read, claim and pop, before any collection
        assert [m.id for m in await message_store.list_messages(P, Q, limit=10)] == [long]
        assert await message_store.get(P, Q, short) is None
        assert [m.id for m in await message_store.get_many(P, Q, [short, long])] == [long]
        assert (await message_store.stats(P, Q)).total == 1
        assert await message_store.delete(P, Q, short) is DeleteOutcome.ABSENT
        popped = await message_store.pop(P, Q, 5)
        assert [m.id for m in popped] == [long]

        # And garbage collection removes it physically
        assert await message_store.collect_garbage() >= 1
        assert await message_store.collect_garbage() == 0

    async def test_expired_claims_are_collected_and_their_messages_stay(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        await post_n(message_store, 2, ttl=3600)
        result = await message_store.claim(P, Q, limit=2, ttl=60, grace=60)
        assert result.claim is not None

        clock.advance(61)
        assert await message_store.collect_garbage() == 1

        assert await message_store.get_claim(P, Q, result.claim.id) is None
        assert (await message_store.stats(P, Q)).free == 2

    async def test_claim_takes_the_oldest_messages_in_order_and_claims_are_disjoint(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        ids = await post_n(message_store, 5)

        first = await message_store.claim(P, Q, limit=2, ttl=120, grace=60)
        second = await message_store.claim(P, Q, limit=2, ttl=120, grace=60)
        third = await message_store.claim(P, Q, limit=2, ttl=120, grace=60)
        fourth = await message_store.claim(P, Q, limit=2, ttl=120, grace=60)

        assert first.claim and second.claim and third.claim
        assert [m.id for m in first.claim.messages] == list(ids[0:2])
        assert [m.id for m in second.claim.messages] == list(ids[2:4])
        assert [m.id for m in third.claim.messages] == [ids[4]]
        assert fourth.claim is None and fourth.dead_lettered == ()
        assert len({first.claim.id, second.claim.id, third.claim.id}) == 3
        c = first.claim
        assert c.ttl == 120 and c.grace == 60
        assert c.created == clock.now and c.expires == clock.now + 120
        assert all(m.claim_id == c.id and m.claim_count == 1 for m in c.messages)

    async def test_claim_on_an_empty_or_absent_queue_claims_nothing(
        self,
        message_store: MessageStore,
    ) -> None:
        result = await message_store.claim(P, "never-used", limit=10, ttl=60, grace=60)
        assert result.claim is None and result.dead_lettered == ()

    async def test_claim_extends_short_lived_messages_to_ttl_plus_grace(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        # Given a 60 s message and a 3600 s one, 10 s old
        short, long = await message_store.post(P, Q, CLIENT, [msg(1, ttl=60), msg(2, ttl=3600)])
        clock.advance(10)
        now = clock.now

        # When claimed for 300 s with 60 s grace
        result = await message_store.claim(P, Q, limit=2, ttl=300, grace=60)

        # Then the short one lives 360 s from now; the long one is unchanged
        assert result.claim is not None
        got = {m.id: m for m in result.claim.messages}
        assert (got[short].ttl, got[short].expires) == (360, now + 360)
        assert (got[long].ttl, got[long].expires) == (3600, now - 10 + 3600)
        stored = await message_store.get(P, Q, short)
        assert stored is not None and (stored.ttl, stored.expires) == (360, now + 360)

        # And it does not expire at its original TTL
        clock.advance(100)
        assert await message_store.get(P, Q, short) is not None

    async def test_an_expired_claim_frees_its_messages_for_the_next_claim(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        ids = await post_n(message_store, 2, ttl=3600)
        first = await message_store.claim(P, Q, limit=2, ttl=60, grace=60)
        assert first.claim is not None
        assert (await message_store.claim(P, Q, limit=2, ttl=60, grace=60)).claim is None

        clock.advance(59.5)
        assert (await message_store.claim(P, Q, limit=2, ttl=60, grace=60)).claim is None
        clock.advance(0.5)

        second = await message_store.claim(P, Q, limit=2, ttl=60, grace=60)
        assert second.claim is not None and second.claim.id != first.claim.id
        assert [m.id for m in second.claim.messages] == list(ids)
        assert [m.claim_count for m in second.claim.messages] == [2, 2]
        assert await message_store.get_claim(P, Q, first.claim.id) is None

    async def test_get_claim_returns_its_live_messages(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        ids = await post_n(message_store, 3)
        result = await message_store.claim(P, Q, limit=3, ttl=100, grace=60)
        assert result.claim is not None
        await message_store.delete(P, Q, ids[1], claim_id=result.claim.id)
        clock.advance(20)

        claim = await message_store.get_claim(P, Q, result.claim.id)

        assert claim is not None
        assert claim.id == result.claim.id and claim.ttl == 100
        assert claim.created == clock.now - 20
        assert [m.id for m in claim.messages] == [ids[0], ids[2]]
        assert all(m.claim_id == claim.id for m in claim.messages)
        assert await message_store.get_claim(P, Q, "not-a-claim") is None
        assert await message_store.get_claim(P, "other-queue", claim.id) is None

    async def test_renew_restarts_the_claim_ttl_from_now_and_extends_messages(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        (mid,) = await message_store.post(P, Q, CLIENT, [msg(1, ttl=120)])
        result = await message_store.claim(P, Q, limit=1, ttl=60, grace=60)
        assert result.claim is not None
        cid = result.claim.id

        # When renewed 50 s later for 200 s with 100 s grace
        clock.advance(50)
        now = clock.now
        assert await message_store.renew_claim(P, Q, cid, ttl=200, grace=100) is True

        # Then the claim runs 200 s from now and the message lives until then plus grace
        claim = await message_store.get_claim(P, Q, cid)
        assert claim is not None and claim.ttl == 200 and claim.expires == now + 200
        held = await message_store.get(P, Q, mid)
        assert held is not None and held.claim_id == cid
        assert (held.ttl, held.expires) == (300, now + 300)

        # And it holds past its first expiry, and not past the renewed one
        clock.advance(199)
        assert (await message_store.claim(P, Q, limit=1, ttl=60, grace=60)).claim is None
        clock.advance(1)
        assert await message_store.get_claim(P, Q, cid) is None
        again = await message_store.claim(P, Q, limit=1, ttl=60, grace=60)
        assert again.claim is not None and [m.id for m in again.claim.messages] == [mid]

    async def test_renew_of_an_absent_or_expired_claim_changes_nothing(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        await post_n(message_store, 1)
        result = await message_store.claim(P, Q, limit=1, ttl=60, grace=60)
        assert result.claim is not None

        assert await message_store.renew_claim(P, Q, "nope", ttl=60, grace=60) is False
        assert await message_store.renew_claim(OTHER_PROJECT, Q, result.claim.id, ttl=60,
                                               grace=60) is False
        clock.advance(60)
        assert await message_store.renew_claim(P, Q, result.claim.id, ttl=60, grace=60) is False
        assert (await message_store.claim(P, Q, limit=1, ttl=60, grace=60)).claim is not None

    async def test_release_frees_the_messages_at_once_and_is_idempotent(
        self,
        message_store: MessageStore,
    ) -> None:
        ids = await post_n(message_store, 2)
        result = await message_store.claim(P, Q, limit=2, ttl=60, grace=60)
        assert result.claim is not None

        await message_store.release_claim(P, Q, result.claim.id)
        await message_store.release_claim(P, Q, result.claim.id)
        await message_store.release_claim(P, Q, "never-existed")

        assert await message_store.get_claim(P, Q, result.claim.id) is None
        listed = await message_store.list_messages(P, Q, limit=10)
        assert [m.id for m in listed] == list(ids) and {m.claim_id for m in listed} == {None}
        again = await message_store.claim(P, Q, limit=2, ttl=60, grace=60)
        assert again.claim is not None and [m.claim_count for m in again.claim.messages] == [2, 2]

    async def test_releasing_an_expired_claim_does_not_free_a_newer_claims_messages(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        await post_n(message_store, 1)
        old = await message_store.claim(P, Q, limit=1, ttl=60, grace=60)
        clock.advance(60)
        new = await message_store.claim(P, Q, limit=1, ttl=60, grace=60)
        assert old.claim is not None and new.claim is not None

        await message_store.release_claim(P, Q, old.claim.id)

        assert (await message_store.claim(P, Q, limit=1, ttl=60, grace=60)).claim is None
        held = await message_store.get_claim(P, Q, new.claim.id)
        assert held is not None and len(held.messages) == 1

    async def test_pop_skips_claimed_messages_and_deletes_what_it_returns(
        self,
        message_store: MessageStore,
    ) -> None:
        ids = await post_n(message_store, 4)
        held = await message_store.claim(P, Q, limit=1, ttl=60, grace=60)
        assert held.claim is not None

        popped = await message_store.pop(P, Q, 2)

        assert [m.id for m in popped] == list(ids[1:3])
        assert len({m.claim_id for m in popped}) == 1
        assert popped[0].claim_id not in (None, held.claim.id)
        assert [m.claim_count for m in popped] == [0, 0]
        remaining = await message_store.list_messages(P, Q, limit=10, include_claimed=True)
        assert [m.id for m in remaining] == [ids[0], ids[3]]
        assert [m.id for m in await message_store.pop(P, Q, 20)] == [ids[3]]
        assert await message_store.pop(P, Q, 20) == []

    async def test_delete_of_an_unclaimed_message(self, message_store: MessageStore) -> None:
        (mid,) = await message_store.post(P, Q, CLIENT, [msg(1)])

        assert await message_store.delete(P, Q, mid) is DeleteOutcome.DELETED
        assert await message_store.get(P, Q, mid) is None
        assert await message_store.delete(P, Q, mid) is DeleteOutcome.ABSENT
        assert await message_store.delete(P, Q, "not-a-uuid", claim_id="x") is DeleteOutcome.ABSENT

    async def test_delete_of_a_claimed_message_needs_its_live_claim(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        a, b = await post_n(message_store, 2)
        first = await message_store.claim(P, Q, limit=1, ttl=60, grace=60)
        second = await message_store.claim(P, Q, limit=1, ttl=60, grace=60)
        assert first.claim is not None and second.claim is not None

        # Without a claim id, or with another live claim's id, it stays
        assert await message_store.delete(P, Q, a) is DeleteOutcome.CLAIMED
        assert (
            await message_store.delete(P, Q, a, claim_id=second.claim.id)
            is DeleteOutcome.CLAIMED_BY_OTHER
        )
        assert (
            await message_store.delete(P, Q, a, claim_id="unknown-claim")
            is DeleteOutcome.CLAIMED_BY_OTHER
        )
        assert await message_store.get(P, Q, a) is not None

        # With its own claim id it goes
        assert await message_store.delete(P, Q, a, claim_id=first.claim.id) is DeleteOutcome.DELETED
        assert await message_store.get(P, Q, a) is None

        # Once the claim has expired, a claim id is refused and none is needed
        clock.advance(60)
        assert (
            await message_store.delete(P, Q, b, claim_id=second.claim.id)
            is DeleteOutcome.NOT_CLAIMED
        )
        assert await message_store.delete(P, Q, b) is DeleteOutcome.DELETED

    async def test_a_claim_id_on_an_unclaimed_message_is_refused(
        self,
        message_store: MessageStore,
    ) -> None:
        (mid,) = await message_store.post(P, Q, CLIENT, [msg(1)])
        result = await message_store.claim(P, Q, limit=1, ttl=60, grace=60)
        assert result.claim is not None
        await message_store.release_claim(P, Q, result.claim.id)

        assert await message_store.delete(P, Q, mid, claim_id=result.claim.id) is (
            DeleteOutcome.NOT_CLAIMED
        )
        assert await message_store.get(P, Q, mid) is not None

    async def test_delete_many_deletes_claimed_ones_too(self, message_store: MessageStore) -> None:
        ids = await post_n(message_store, 4)
        assert (await message_store.claim(P, Q, limit=2, ttl=60, grace=60)).claim is not None

        deleted = await message_store.delete_many(P, Q, [ids[0], ids[2], ids[2], "nope"])

        assert deleted == 2
        remaining = await message_store.list_messages(P, Q, limit=10, include_claimed=True)
        assert [m.id for m in remaining] == [ids[1], ids[3]]
        assert await message_store.delete_many(P, Q, []) == 0

    async def test_delete_many_with_claim_ids_spares_messages_of_other_claims(
        self,
        message_store: MessageStore,
    ) -> None:
        ids = await post_n(message_store, 5)
        mine = await message_store.claim(P, Q, limit=2, ttl=60, grace=60)
        theirs = await message_store.claim(P, Q, limit=2, ttl=60, grace=60)
        assert mine.claim is not None and theirs.claim is not None

        deleted = await message_store.delete_many(P, Q, ids, claim_ids=[mine.claim.id])

        assert deleted == 3  # mine (2) and the unclaimed one
        remaining = await message_store.list_messages(P, Q, limit=10, include_claimed=True)
        assert [m.id for m in remaining] == list(ids[2:4])

    async def test_a_message_claimed_max_times_moves_to_the_dead_letter_queue(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        # Given a queue with max 2 claims, its dead-letter queue taking 900 s messages
        policy = DeadLetterPolicy(max_claim_count=2, queue="dlq", ttl=900)
        (mid,) = await message_store.post(P, Q, CLIENT, [msg(1, ttl=3600)])
        (already_there,) = await message_store.post(P, "dlq", CLIENT, [msg(0)])

        # When claimed twice (each claim released) and then a third time
        for expected_count in (1, 2):
            result = await message_store.claim(P, Q, limit=5, ttl=60, grace=60, dead_letter=policy)
            assert result.claim is not None
            assert [(m.id, m.claim_count) for m in result.claim.messages] == [(mid, expected_count)]
            await message_store.release_claim(P, Q, result.claim.id)
        clock.advance(5)
        third = await message_store.claim(P, Q, limit=5, ttl=60, grace=60, dead_letter=policy)

        # Then the third claim gets nothing and reports the move
        assert third.claim is None and third.dead_lettered == (mid,)
        assert await message_store.get(P, Q, mid) is None
        assert (await message_store.stats(P, Q)).total == 0

        # And the dead-letter queue holds it at its end, unclaimed, with the new TTL
        in_dlq = await message_store.list_messages(P, "dlq", limit=10)
        assert [m.id for m in in_dlq] == [already_there, mid]
        moved = in_dlq[1]
        assert moved.body == b'{"n": 1}' and moved.claim_id is None and moved.claim_count == 0
        assert (moved.ttl, moved.expires) == (900, clock.now + 900)
        assert moved.client_id == CLIENT

    async def test_dead_lettering_keeps_filling_the_claim_and_keeps_ttl_when_unset(
        self,
        message_store: MessageStore,
    ) -> None:
        policy = DeadLetterPolicy(max_claim_count=1, queue="dlq")
        ids = await post_n(message_store, 3, ttl=3600)
        first = await message_store.claim(P, Q, limit=2, ttl=60, grace=60, dead_letter=policy)
        assert first.claim is not None
        await message_store.release_claim(P, Q, first.claim.id)

        # When the two claimed-once messages are dead-lettered on the next claim of 2
        second = await message_store.claim(P, Q, limit=2, ttl=60, grace=60, dead_letter=policy)

        # Then the claim still gets the third message
        assert second.dead_lettered == ids[:2]
        assert second.claim is not None and [m.id for m in second.claim.messages] == [ids[2]]
        moved = await message_store.list_messages(P, "dlq", limit=10)
        assert [m.id for m in moved] == list(ids[:2])
        assert [m.ttl for m in moved] == [3600, 3600]

    async def test_without_a_policy_claim_counts_grow_freely(
        self, message_store: MessageStore
    ) -> None:
        (mid,) = await message_store.post(P, Q, CLIENT, [msg(1)])
        for n in range(1, 5):
            result = await message_store.claim(P, Q, limit=1, ttl=60, grace=60)
            assert result.claim is not None and result.dead_lettered == ()
            assert [(m.id, m.claim_count) for m in result.claim.messages] == [(mid, n)]
            await message_store.release_claim(P, Q, result.claim.id)

    async def test_stats_count_claimed_and_free_with_oldest_and_newest(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        assert await message_store.stats(P, Q) == type(await message_store.stats(P, Q))(
            claimed=0, free=0, total=0, oldest=None, newest=None
        )
        first = await post_n(message_store, 3)
        clock.advance(10)
        (last,) = await message_store.post(P, Q, CLIENT, [msg(9, delay=30)])
        assert (await message_store.claim(P, Q, limit=2, ttl=60, grace=60)).claim is not None

        stats = await message_store.stats(P, Q)

        assert (stats.claimed, stats.free, stats.total) == (2, 2, 4)
        assert stats.oldest is not None and stats.oldest.id == first[0]
        assert stats.newest is not None and stats.newest.id == last
        assert stats.newest.created == clock.now
        assert stats.oldest.created == clock.now - 10

    async def test_another_project_never_sees_or_touches_a_projects_messages(
        self,
        message_store: MessageStore,
    ) -> None:
        # Given project A's messages, one of them claimed
        ids = await post_n(message_store, 3, project=P)
        held = await message_store.claim(P, Q, limit=1, ttl=60, grace=60)
        assert held.claim is not None
        b = OTHER_PROJECT

        # Then project B, using the same queue name and A's ids, sees and changes nothing
        assert await message_store.list_messages(b, Q, limit=10, include_claimed=True) == []
        assert await message_store.get(b, Q, ids[1]) is None
        assert await message_store.get_many(b, Q, ids) == []
        assert await message_store.delete(b, Q, ids[1]) is DeleteOutcome.ABSENT
        assert await message_store.delete(b, Q, ids[0], claim_id=held.claim.id) is (
            DeleteOutcome.ABSENT
        )
        assert await message_store.delete_many(b, Q, ids) == 0
        assert (await message_store.claim(b, Q, limit=10, ttl=60, grace=60)).claim is None
        assert await message_store.pop(b, Q, 10) == []
        assert (await message_store.stats(b, Q)).total == 0
        assert await message_store.get_claim(b, Q, held.claim.id) is None
        await message_store.release_claim(b, Q, held.claim.id)
        await message_store.delete_queue(b, Q)

        # And A's messages and claim are intact
        assert (await message_store.stats(P, Q)).total == 3
        claim = await message_store.get_claim(P, Q, held.claim.id)
        assert claim is not None and [m.id for m in claim.messages] == [ids[0]]

    async def test_queues_of_a_project_are_separate(self, message_store: MessageStore) -> None:
        await post_n(message_store, 2, queue="q-a")
        (other,) = await message_store.post(P, "q-b", CLIENT, [msg(1)])

        result = await message_store.claim(P, "q-b", limit=10, ttl=60, grace=60)
        assert result.claim is not None and [m.id for m in result.claim.messages] == [other]
        assert len(await message_store.list_messages(P, "q-a", limit=10)) == 2

    async def test_delete_queue_removes_its_messages_and_claims_only(
        self,
        message_store: MessageStore,
    ) -> None:
        await post_n(message_store, 3)
        keep = await post_n(message_store, 1, queue="keep")
        result = await message_store.claim(P, Q, limit=1, ttl=60, grace=60)
        assert result.claim is not None

        await message_store.delete_queue(P, Q)
        await message_store.delete_queue(P, Q)

        assert (await message_store.stats(P, Q)).total == 0
        assert await message_store.get_claim(P, Q, result.claim.id) is None
        assert [m.id for m in await message_store.list_messages(P, "keep", limit=10)] == list(keep)

    async def test_a_queue_version_starts_at_zero_and_each_bump_raises_it_by_one(
        self,
        message_store: MessageStore,
    ) -> None:
        # Given a queue never bumped
        assert await message_store.queue_version(P, Q) == 0

        # When bumped three times
        bumped = [await message_store.bump_queue_version(P, Q) for _ in range(3)]

        # Then each bump returned the new version, and the queue is at the last one
        assert bumped == [1, 2, 3]
        assert await message_store.queue_version(P, Q) == 3

    async def test_concurrent_bumps_each_count(
        self,
        message_store: MessageStore, message_store_opener: Opener
    ) -> None:
        # Given 20 bumps at once, spread over three store objects where the backend is shared
        stores = [message_store]
        if message_store.capabilities.shared:
            stores += [await message_store_opener(), await message_store_opener()]
        try:
            bumped = await asyncio.gather(
                *[stores[i % len(stores)].bump_queue_version(P, Q) for i in range(20)]
            )
        finally:
            for store in stores[1:]:
                await store.close()

        # Then every bump counted and each got a version of its own
        assert sorted(bumped) == list(range(1, 21))
        assert await message_store.queue_version(P, Q) == 20

    async def test_post_and_claim_at_the_current_version_go_ahead(
        self,
        message_store: MessageStore,
    ) -> None:
        # Given a queue never bumped, then posted to and claimed at version 0
        (first,) = await message_store.post(P, Q, CLIENT, [msg(0)], version=0)
        claimed = await message_store.claim(P, Q, limit=5, ttl=60, grace=60, version=0)
        assert claimed.claim is not None and [m.id for m in claimed.claim.messages] == [first]

        # When the queue is bumped twice and used at its new version
        await message_store.bump_queue_version(P, Q)
        version = await message_store.bump_queue_version(P, Q)
        ids = await message_store.post(P, Q, CLIENT, [msg(1), msg(2)], version=version)
        result = await message_store.claim(P, Q, limit=5, ttl=60, grace=60, version=version)

        # Then both went ahead as without a version
        assert result.claim is not None and [m.id for m in result.claim.messages] == list(ids)
        assert (await message_store.stats(P, Q)).claimed == 3

    @pytest.mark.parametrize("stale", [0, 1, 3])
    async def test_a_post_at_a_stale_version_stores_nothing(
        self,
        message_store: MessageStore, stale: int
    ) -> None:
        # Given a queue at version 2
        await message_store.bump_queue_version(P, Q)
        await message_store.bump_queue_version(P, Q)

        # When posting at another version (older, or ahead of it)
        with pytest.raises(StaleQueue) as raised:
            await message_store.post(P, Q, CLIENT, [msg(0), msg(1)], version=stale)

        # Then the refusal carries the current version and nothing was stored
        assert raised.value.version == 2
        assert await message_store.list_messages(
            P, Q, limit=10, include_claimed=True, include_delayed=True
        ) == []
        assert (await message_store.stats(P, Q)).total == 0

        # And an empty batch is refused alike
        with pytest.raises(StaleQueue):
            await message_store.post(P, Q, CLIENT, [], version=stale)

    async def test_a_stale_post_fails_alone_among_concurrent_posts(
        self,
        message_store: MessageStore,
    ) -> None:
        # Given a queue at version 1
        await message_store.bump_queue_version(P, Q)

        # When a stale post runs together with a current one and one without a version
        stale, current, unchecked = await asyncio.gather(
            message_store.post(P, Q, CLIENT, [msg(0)], version=0),
            message_store.post(P, Q, CLIENT, [msg(1)], version=1),
            message_store.post(P, Q, CLIENT, [msg(2)]),
            return_exceptions=True,
        )

        # Then only the stale one was refused
        assert isinstance(stale, StaleQueue) and stale.version == 1
        assert isinstance(current, tuple) and isinstance(unchecked, tuple)
        listed = await message_store.list_messages(P, Q, limit=10)
        assert sorted(m.id for m in listed) == sorted([*current, *unchecked])

    async def test_a_claim_at_a_stale_version_claims_nothing(
        self, message_store: MessageStore
    ) -> None:
        # Given three messages in a queue that was bumped since version 0
        ids = await post_n(message_store, 3)
        await message_store.bump_queue_version(P, Q)

        # When claiming at version 0
        with pytest.raises(StaleQueue) as raised:
            await message_store.claim(P, Q, limit=5, ttl=60, grace=60, version=0)

        # Then the refusal carries the current version and no message was claimed or counted
        assert raised.value.version == 1
        stats = await message_store.stats(P, Q)
        assert (stats.claimed, stats.free, stats.total) == (0, 3, 3)
        listed = await message_store.list_messages(P, Q, limit=10, include_claimed=True)
        assert [(m.id, m.claim_id, m.claim_count) for m in listed] == [(i, None, 0) for i in ids]

    async def test_a_claim_at_a_stale_version_moves_nothing_to_the_dead_letter_queue(
        self,
        message_store: MessageStore,
    ) -> None:
        # Given a message claimed once already, under a policy of at most one claim
        policy = DeadLetterPolicy(max_claim_count=1, queue="dlq", ttl=900)
        (mid,) = await message_store.post(P, Q, CLIENT, [msg(1, ttl=3600)])
        first = await message_store.claim(P, Q, limit=5, ttl=60, grace=60, dead_letter=policy)
        assert first.claim is not None
        await message_store.release_claim(P, Q, first.claim.id)
        version = await message_store.bump_queue_version(P, Q)

        # When a claim that would dead-letter it comes at a stale version
        with pytest.raises(StaleQueue):
            await message_store.claim(
                P, Q, limit=5, ttl=60, grace=60, dead_letter=policy, version=version - 1
            )

        # Then the message stayed where it was, as it was
        kept = await message_store.get(P, Q, mid)
        assert kept is not None and kept.claim_count == 1 and kept.ttl == 3600
        assert await message_store.list_messages(P, "dlq", limit=10) == []

        # And at the current version the claim moves it
        moved = await message_store.claim(
            P, Q, limit=5, ttl=60, grace=60, dead_letter=policy, version=version
        )
        assert moved.claim is None and moved.dead_lettered == (mid,)
        assert [m.id for m in await message_store.list_messages(P, "dlq", limit=10)] == [mid]

    async def test_versions_are_per_queue_and_per_project(
        self, message_store: MessageStore
    ) -> None:
        # Given project A's queue bumped twice
        await message_store.bump_queue_version(P, Q)
        await message_store.bump_queue_version(P, Q)

        # Then B's queue of the same name and A's other queue are still at version 0
        assert await message_store.queue_version(OTHER_PROJECT, Q) == 0
        assert await message_store.queue_version(P, "queue-2") == 0
        await message_store.post(OTHER_PROJECT, Q, CLIENT, [msg(0)], version=0)
        await message_store.post(P, "queue-2", CLIENT, [msg(0)], version=0)
        with pytest.raises(StaleQueue):
            await message_store.post(P, Q, CLIENT, [msg(0)], version=0)

        # And bumping those leaves A's queue alone
        assert await message_store.bump_queue_version(OTHER_PROJECT, Q) == 1
        assert await message_store.bump_queue_version(P, "queue-2") == 1
        assert await message_store.queue_version(P, Q) == 2

    async def test_deleting_a_queue_or_collecting_its_garbage_keeps_its_version(
        self,
        message_store: MessageStore, clock: Clock
    ) -> None:
        # Given a queue at version 2 with messages, one of them claimed
        await message_store.bump_queue_version(P, Q)
        version = await message_store.bump_queue_version(P, Q)
        await post_n(message_store, 3, ttl=60)
        assert (await message_store.claim(P, Q, limit=1, ttl=30, grace=0)).claim is not None

        # When the queue is deleted
        await message_store.delete_queue(P, Q)

        # Then its version stays, and only that version is accepted
        assert await message_store.queue_version(P, Q) == version
        with pytest.raises(StaleQueue):
            await message_store.post(P, Q, CLIENT, [msg(0)], version=0)
        await message_store.post(P, Q, CLIENT, [msg(0, ttl=60), msg(1, ttl=60)], version=version)
        assert (await message_store.claim(P, Q, limit=1, ttl=30, grace=0)).claim is not None

        # When everything in it expires and the garbage is collected
        clock.advance(120)
        assert await message_store.collect_garbage() == 3  # two messages and a claim
        assert (await message_store.stats(P, Q)).total == 0

        # Then its version still stays, and the next bump goes on from it
        assert await message_store.queue_version(P, Q) == version
        assert await message_store.bump_queue_version(P, Q) == version + 1

    async def test_without_a_version_post_and_claim_ignore_versions(
        self,
        message_store: MessageStore,
    ) -> None:
        # Given a queue bumped a few times
        for _ in range(3):
            await message_store.bump_queue_version(P, Q)

        # Then posting and claiming without a version work as ever, and leave the version alone
        ids = await post_n(message_store, 2)
        result = await message_store.claim(P, Q, limit=5, ttl=60, grace=60)
        assert result.claim is not None and [m.id for m in result.claim.messages] == list(ids)
        assert await message_store.queue_version(P, Q) == 3

    async def test_a_version_survives_a_reopen(
        self,
        message_store: MessageStore, message_store_opener: Opener
    ) -> None:
        await message_store.bump_queue_version(P, Q)
        await message_store.bump_queue_version(P, Q)
        await message_store.close()

        reopened = await message_store_opener()
        try:
            assert await reopened.queue_version(P, Q) == 2
            assert await reopened.bump_queue_version(P, Q) == 3
        finally:
            await reopened.close()

    async def test_concurrent_claims_and_pops_never_share_a_message(
        self,
        message_store: MessageStore,
    ) -> None:
        # Given 200 messages
        ids = await post_n(message_store, 200)

        # When 30 claims and 30 pops of up to 5 run at once
        claims, pops = await asyncio.gather(
            asyncio.gather(
                *[message_store.claim(P, Q, limit=5, ttl=60, grace=60) for _ in range(30)]
            ),
            asyncio.gather(*[message_store.pop(P, Q, 5) for _ in range(30)]),
        )

        # Then every message went to exactly one of them
        handed = [m.id for popped in pops for m in popped]
        handed += [m.id for r in claims if r.claim is not None for m in r.claim.messages]
        assert len(handed) == len(set(handed)) == 200
        assert set(handed) == set(ids)

    async def test_many_claimers_claim_and_delete_each_message_exactly_once(
        self,
        message_store: MessageStore, message_store_opener: Opener
    ) -> None:
        # Given producers posting while 12 consumers claim 5 at a time and delete what they got,
        # spread over three store objects (own connections) where the backend may be shared
        stores = [message_store]
        if message_store.capabilities.shared:
            stores += [await message_store_opener(), await message_store_opener()]
        claims: dict[str, list[str]] = {}
        deleted: list[str] = []
        producing = asyncio.Event()

        async def produce(n: int) -> list[str]:
            ids: list[str] = []
            for start in range(0, 80, 8):
                ids += await stores[n % len(stores)].post(
                    P, Q, CLIENT, [msg(start + i) for i in range(8)]
                )
            return ids

        async def consume(store: MessageStore) -> None:
            while True:
                result = await store.claim(P, Q, limit=5, ttl=60, grace=60)
                if result.claim is None:
                    if not producing.is_set():
                        return
                    await asyncio.sleep(0.01)
                    continue
                claims[result.claim.id] = [m.id for m in result.claim.messages]
                for m in result.claim.messages:
                    outcome = await store.delete(P, Q, m.id, claim_id=result.claim.id)
                    assert outcome is DeleteOutcome.DELETED
                    deleted.append(m.id)

        try:
            producing.set()
            consumers = [asyncio.ensure_future(consume(stores[i % len(stores)])) for i in range(12)]
            posted = [mid for ids in await asyncio.gather(produce(0), produce(1)) for mid in ids]
            producing.clear()
            await asyncio.gather(*consumers)

            # Then (claims live 60 s and the clock stands still, so every claim was live
            # throughout) no message was in two claims, and every one was claimed and deleted once
            handed = [mid for ids in claims.values() for mid in ids]
            assert len(handed) == len(set(handed)) == len(posted) == 160
            assert set(handed) == set(posted)
            assert sorted(deleted) == sorted(posted)
            assert (await message_store.stats(P, Q)).total == 0
        finally:
            for store in stores[1:]:
                await store.close()

    async def test_acknowledged_writes_survive_a_reopen(
        self,
        message_store: MessageStore, message_store_opener: Opener
    ) -> None:
        if not message_store.capabilities.durable:
            pytest.skip("backend is not durable")
        ids = await post_n(message_store, 2)
        result = await message_store.claim(P, Q, limit=1, ttl=60, grace=60)
        assert result.claim is not None
        await message_store.close()

        reopened = await message_store_opener()
        try:
            assert [m.id for m in await reopened.list_messages(P, Q, limit=10)] == [ids[1]]
            claim = await reopened.get_claim(P, Q, result.claim.id)
            assert claim is not None and [m.id for m in claim.messages] == [ids[0]]
        finally:
            await reopened.close()

    async def test_a_closed_store_answers_unavailable(self, message_store_opener: Opener) -> None:
        store = await message_store_opener()
        await store.close()
        with pytest.raises(Unavailable):
            await store.post(P, Q, CLIENT, [msg(1)])
        with pytest.raises(Unavailable):
            await store.list_messages(P, Q, limit=1)

    async def test_projects_and_queues_with_separator_characters_stay_apart(
        self,
        message_store: MessageStore,
    ) -> None:
        # Given look-alike project/queue pairs (projects are free text)
        pairs = [("a/b", "c"), ("a", "b/c"), ("{a", "b}"), ("a}", "{b"), ("a%2Fb", "c"),
                 ("a:b", "c")]
        ids = {pair: await message_store.post(*pair, CLIENT, [msg(i)])
               for i, pair in enumerate(pairs)}

        # Then each pair sees its own message only
        for pair, (mid,) in ids.items():
            assert [m.id for m in await message_store.list_messages(*pair, limit=10)] == [mid]
            result = await message_store.claim(*pair, limit=10, ttl=60, grace=60)
            assert result.claim is not None and [m.id for m in result.claim.messages] == [mid]
