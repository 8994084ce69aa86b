"""Claims under contention: many consumers, each on its own channel, against real services.

Claims here live 60 s, longer than any test, so a message handed out twice would have been in
two live claims at once: the tests assert that never happens and that nothing is lost.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import pytest
from zaqar_grpc.v2 import common_pb2, messages_pb2, messages_pb2_grpc

from services.common.config import Settings
from services.common.grpc_server import Running
from services.message_svc import server as message_server
from services.queue_svc import server as queue_server

PROJECT = "load-project"
QUEUE = "work"
CONSUMERS = 8
CLAIM_LIMIT = 5


@dataclass
class Ledger:
    """What consumers were handed, claim by claim, and what they deleted."""

    claims: dict[str, list[str]] = field(default_factory=dict)
    popped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def handed_out(self) -> Counter[str]:
        return Counter([m for ids in self.claims.values() for m in ids] + self.popped)


@pytest.fixture
async def message_svc_target(make_settings: Callable[..., Settings]) -> AsyncIterator[str]:
    """queue_svc and message_svc running; the message_svc target."""
    settings = make_settings()
    started: list[Running] = [await queue_server.start(settings)]
    try:
        started.append(await message_server.start(settings))
        yield f"{settings.host}:{started[-1].port}"
    finally:
        for running in reversed(started):
            await running.stop()


def _stub(channel: grpc.aio.Channel) -> messages_pb2_grpc.MessagesStub:
    return messages_pb2_grpc.MessagesStub(channel)  # type: ignore[no-untyped-call]


async def _produce(target: str, count: int, batch: int, tag: str) -> list[str]:
    ids: list[str] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = _stub(channel)
        for start in range(0, count, batch):
            answer = await stub.PostMessages(messages_pb2.PostMessagesRequest(
                project=PROJECT, queue=QUEUE, client_id=tag,
                messages=[messages_pb2.NewMessage(body=b'"%s-%d"' % (tag.encode(), n))
                          for n in range(start, min(start + batch, count))],
            ))
            ids += answer.ids
    return ids


async def _queue_is_empty(stub: messages_pb2_grpc.MessagesStub) -> bool:
    stats = await stub.GetStats(common_pb2.QueueRef(project=PROJECT, queue=QUEUE))
    return bool(stats.total == 0)


async def _claim_and_delete(target: str, ledger: Ledger, producing: asyncio.Event) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = _stub(channel)
        while True:
            claim = await stub.CreateClaim(messages_pb2.CreateClaimRequest(
                project=PROJECT, queue=QUEUE, limit=CLAIM_LIMIT, ttl=60, grace=60
            ))
            if not claim.id:
                if not producing.is_set() and await _queue_is_empty(stub):
                    return
                await asyncio.sleep(0.005)
                continue
            assert 1 <= len(claim.messages) <= CLAIM_LIMIT
            assert all(m.claim_id == claim.id and m.claim_count == 1 for m in claim.messages)
            ledger.claims[claim.id] = [m.id for m in claim.messages]
            for m in claim.messages:
                # Raises (and fails the test) unless this claim still holds the message.
                await stub.DeleteMessage(messages_pb2.DeleteMessageRequest(
                    project=PROJECT, queue=QUEUE, message_id=m.id, claim_id=claim.id
                ))
                ledger.deleted.append(m.id)


async def _pop(target: str, ledger: Ledger) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = _stub(channel)
        while True:
            answer = await stub.PopMessages(
                messages_pb2.PopMessagesRequest(project=PROJECT, queue=QUEUE, limit=CLAIM_LIMIT)
            )
            if not answer.messages:
                if await _queue_is_empty(stub):
                    return
                await asyncio.sleep(0.005)
                continue
            ledger.popped += [m.id for m in answer.messages]


def _assert_each_exactly_once(ledger: Ledger, posted: list[str]) -> None:
    handed = ledger.handed_out()
    twice = [m for m, n in handed.items() if n > 1]
    assert twice == [], f"{len(twice)} messages were handed to two live claims/pops"
    assert set(handed) == set(posted), "some posted messages were never handed out"
    assert len(posted) == len(set(posted))


async def test_concurrent_consumers_never_share_a_message_and_lose_none(
    message_svc_target: str,
) -> None:
    # Given 300 messages in the queue
    posted = await _produce(message_svc_target, 300, batch=10, tag="p")
    order = {mid: n for n, mid in enumerate(posted)}
    ledger = Ledger()

    # When 8 consumers claim 5 at a time and delete with their claim id, until it is empty
    await asyncio.wait_for(asyncio.gather(*[
        _claim_and_delete(message_svc_target, ledger, asyncio.Event())
        for _ in range(CONSUMERS)
    ]), timeout=60)

    # Then every message went to exactly one claim, oldest first, and was deleted once
    _assert_each_exactly_once(ledger, posted)
    assert sorted(Counter(ledger.deleted).values()) == [1] * len(posted)
    for ids in ledger.claims.values():
        assert [order[m] for m in ids] == sorted(order[m] for m in ids)
    async with grpc.aio.insecure_channel(message_svc_target) as channel:
        assert await _queue_is_empty(_stub(channel))


async def test_consumers_racing_producers_get_every_message_once(
    message_svc_target: str,
) -> None:
    # Given consumers already waiting while two producers post
    ledger = Ledger()
    producing = asyncio.Event()
    producing.set()
    consumers = [
        asyncio.ensure_future(_claim_and_delete(message_svc_target, ledger, producing))
        for _ in range(CONSUMERS)
    ]

    # When 2 x 150 messages arrive in batches of 3
    batches = await asyncio.gather(
        _produce(message_svc_target, 150, batch=3, tag="a"),
        _produce(message_svc_target, 150, batch=3, tag="b"),
    )
    producing.clear()
    await asyncio.wait_for(asyncio.gather(*consumers), timeout=60)

    # Then each was claimed by exactly one consumer and deleted once
    posted = batches[0] + batches[1]
    _assert_each_exactly_once(ledger, posted)
    assert Counter(ledger.deleted) == Counter(posted)


async def test_pops_and_claims_racing_never_share_a_message(message_svc_target: str) -> None:
    # Given 300 messages
    posted = await _produce(message_svc_target, 300, batch=20, tag="p")
    ledger = Ledger()

    # When 4 poppers and 4 claiming consumers drain the queue together
    await asyncio.wait_for(asyncio.gather(
        *[_pop(message_svc_target, ledger) for _ in range(CONSUMERS // 2)],
        *[_claim_and_delete(message_svc_target, ledger, asyncio.Event())
          for _ in range(CONSUMERS // 2)],
    ), timeout=60)

    # Then no message was both popped and claimed, or popped twice, and none is left
    _assert_each_exactly_once(ledger, posted)
    assert ledger.popped and ledger.claims
    assert Counter(ledger.deleted) + Counter(ledger.popped) == Counter(posted)
