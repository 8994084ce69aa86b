"""The FIFO contract (``services/testing/fifo_store.py``) over every built-in message store
backend; backends without ``capabilities.fifo`` are checked to refuse FIFO calls. Then what
concerns one backend only: on Redis what a claim costs with a long group behind a held head,
and a batch sent again; on a Redis Cluster a dead-letter move resumed by the sweeper; on
MongoDB a post sent again after a crash, the groups of a post that died midway, a group
freed by its consumer, and a group locked by a claim that died."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from bson import Binary
from pymongo import AsyncMongoClient

from services.message_svc.storage.base import DeadLetterPolicy
from services.message_svc.storage.mongodb import groups
from services.message_svc.storage.mongodb._documents import PENDING_WINDOW, as_date
from services.message_svc.storage.mongodb.store import MongoMessageStore
from services.message_svc.storage.redis.cluster import RedisClusterMessageStore
from services.message_svc.storage.redis.store import MOVE_LEASE, RedisMessageStore
from services.message_svc.storage.registry import open_store
from services.testing.fifo_store import FifoMessageStoreContract, fmsg, numbers
from services.testing.fixtures import Clock
from tests.contract.conftest import IN_CLEAR
from tests.servers import ServerProcess, redis_process

STORE_BACKENDS = IN_CLEAR  # over TLS: see IN_CLEAR
P, Q, DLQ = "project-a", "fifo-1", "fifo-dlq"


class TestFifoMessageStore(FifoMessageStoreContract):
    """The FIFO suite over every backend of ``STORE_BACKENDS``."""


@pytest.fixture
async def redis_store(redis_uri: str, clock: Clock) -> AsyncIterator[RedisMessageStore]:
    store = await open_store(redis_uri, now=clock)
    assert isinstance(store, RedisMessageStore)
    yield store
    await store.close()


@pytest.fixture
async def mongo_store(mongodb_uri: str, clock: Clock) -> AsyncIterator[MongoMessageStore]:
    store = await open_store(mongodb_uri, now=clock)
    assert isinstance(store, MongoMessageStore)
    yield store
    await store.close()


@pytest.fixture
def quiet_redis(tmp_path: Path) -> Iterator[ServerProcess]:
    """A redis-server of this test alone: the session's serves ``up`` stacks too, whose
    collectors' commands would be counted with the test's."""
    with redis_process(tmp_path / "redis") as server:
        yield server


async def _commands(client: redis.asyncio.Redis) -> int:
    """Commands the server ran since its statistics were reset, scripts' calls included."""
    stats = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items()
               if k not in ("cmdstat_info", "cmdstat_config", "cmdstat_evalsha"))


async def test_redis_a_claim_costs_what_it_takes_not_what_waits_behind_a_group(
    quiet_redis: ServerProcess, clock: Clock
) -> None:
    store = await open_store(f"redis://127.0.0.1:{quiet_redis.port}/0", now=clock)
    assert isinstance(store, RedisMessageStore)
    try:
        await _claims_behind_a_held_group(store, quiet_redis.port)
    finally:
        await store.close()


async def _claims_behind_a_held_group(redis_store: RedisMessageStore, port: int) -> None:
    # Given a group of 2000 messages whose head is claimed, and a message of another group
    for start in range(0, 2000, 200):
        await redis_store.post_fifo(P, Q, "c", [fmsg(n, "a") for n in range(start, start + 200)],
                                    dedup_window=300)
    await redis_store.post_fifo(P, Q, "c", [fmsg(9999, "b")], dedup_window=300)
    head = await redis_store.claim_fifo(P, Q, limit=1, ttl=60, grace=60)
    assert head.claim is not None and numbers(head.claim.messages) == [0]
    client = redis.asyncio.Redis(port=port)
    try:
        # When the next claims run
        await client.config_resetstat()
        other = await redis_store.claim_fifo(P, Q, limit=10, ttl=60, grace=60)
        none = await redis_store.claim_fifo(P, Q, limit=10, ttl=60, grace=60)
        blocked = await _commands(client)
        await redis_store.delete(P, Q, head.claim.messages[0].id, head.claim.id)
        await client.config_resetstat()
        run = await redis_store.claim_fifo(P, Q, limit=10, ttl=60, grace=60)
        freed = await _commands(client)
    finally:
        await client.aclose()

    # Then they take what the rules allow, with a few dozen commands, not thousands
    assert other.claim is not None and numbers(other.claim.messages) == [9999]
    assert none.claim is None
    assert run.claim is not None and numbers(run.claim.messages) == list(range(1, 11))
    assert blocked < 80, blocked
    assert freed < 200, freed


async def test_redis_a_fifo_batch_sent_again_answers_as_the_first_time(
    redis_store: RedisMessageStore, clock: Clock
) -> None:
    # (A batch whose connection broke is resent with the same ids: it must find itself.)
    tag = f"{P}/{Q}"
    prefix = f"{redis_store.options.prefix}:{{{tag}}}:"
    keys = (prefix, redis_store._registry_of(tag))
    await redis_store.post_fifo(P, Q, "c", [fmsg(0, dedup="old")], dedup_window=300)
    now, until = repr(clock.now), repr(clock.now + 300)
    args: list[Any] = [tag, "c", now, "", until]
    ids = [str(uuid.uuid4()) for _ in range(4)]
    for mid, (group, dedup) in zip(ids, [("a", "x"), ("a", "x"), ("", ""), ("b", "old")],
                                   strict=True):
        args += [mid, b'{"n": 1}', 300, repr(clock.now + 300), now, group, dedup]

    first = await redis_store._run("post_fifo", keys, args)
    again = await redis_store._run("post_fifo", keys, args)

    assert again[1:] == first[1:]
    assert first[2] == [1, 0, 1, 0] and first[1][:3] == [ids[0].encode()] * 2 + [ids[2].encode()]
    assert len(await redis_store.list_messages(P, Q, limit=10)) == 3


async def test_redis_cluster_a_stalled_dead_letter_move_keeps_the_groups_order(
    redis_cluster_uri: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store(redis_cluster_uri, now=clock)
    assert isinstance(store, RedisClusterMessageStore)
    try:
        # Given a group claimed once, whose dead-letter move dies right after staging
        policy = DeadLetterPolicy(max_claim_count=1, queue=DLQ)
        await store.post_fifo(P, Q, "c", [fmsg(n, "a") for n in range(1, 4)],
                              dedup_window=300)
        await store.claim_fifo(P, Q, limit=5, ttl=30, grace=0, dead_letter=policy)
        clock.advance(31)

        async def crash(*args: Any) -> None:
            pass

        with monkeypatch.context() as patch:
            patch.setattr(RedisClusterMessageStore, "_finish_moves", crash)
            moved = await store.claim_fifo(P, Q, limit=5, ttl=30, grace=0, dead_letter=policy)
        assert moved.claim is None and len(moved.dead_lettered) == 3
        assert await store.list_messages(P, DLQ, limit=10) == []

        # When the sweep resumes the move
        clock.advance(MOVE_LEASE + 1)
        await store.collect_garbage()

        # Then the group is in the dead-letter queue, in order, and claimed by its rules
        listed = await store.list_messages(P, DLQ, limit=10)
        assert numbers(listed) == [1, 2, 3] and {m.group_id for m in listed} == {"a"}
        first = await store.claim_fifo(P, DLQ, limit=1, ttl=30, grace=0)
        assert first.claim is not None and numbers(first.claim.messages) == [1]
        assert (await store.claim_fifo(P, DLQ, limit=5, ttl=30, grace=0)).claim is None
    finally:
        await store.close()


def _message(mid: str, seq: int, now: float, **fields: Any) -> dict[str, Any]:
    """A message document as the MongoDB store writes it."""
    return {"_id": mid, "p": P, "q": Q, "s": seq, "b": Binary(b'{"n": %d}' % seq), "t": 600,
            "c": now, "e": now + 600, "ea": as_date(now + 600), "v": now, "i": "c",
            "k": None, "x": 0.0, "n": 0, **fields}


async def test_mongodb_a_post_sent_again_after_a_crash_finds_its_message(
    mongo_store: MongoMessageStore, mongodb_uri: str, clock: Clock
) -> None:
    # Given messages written by posts that died before they wrote their dedup ids: one just
    # now, one of an acceptance whose window ended long ago (its dedup id swept meanwhile)
    db = mongo_store._db()
    first, token = await db.reserve(P, Q, 2, clock.now)
    await db.messages.insert_many([
        _message("m-recent", first, clock.now, d="recent", dg=0),
        _message("m-old", first + 1, clock.now - 1000, d="old", dg=0),
    ])
    await db.settle(P, Q, token)

    # When the same dedup ids are posted again
    recent = await mongo_store.post_fifo(P, Q, "c", [fmsg(1, dedup="recent")], dedup_window=300)
    old = await mongo_store.post_fifo(P, Q, "c", [fmsg(2, dedup="old")], dedup_window=300)

    # Then the recent one is a duplicate of the message stored, the old one is stored anew
    assert recent.ids == ("m-recent",) and recent.stored == (False,)
    assert old.stored == (True,) and old.ids != ("m-old",)
    again = await mongo_store.post_fifo(P, Q, "c", [fmsg(3, dedup="recent")], dedup_window=300)
    assert again.ids == ("m-recent",) and again.stored == (False,)


async def test_mongodb_the_groups_of_a_post_that_died_midway_are_settled_by_the_sweeper(
    mongo_store: MongoMessageStore, clock: Clock
) -> None:
    # Given a post that wrote its message of a new group and died before noting the group
    # (its seq range still pending)
    db = mongo_store._db()
    first, _ = await db.reserve(P, Q, 1, clock.now)
    await db.messages.insert_one(_message("m-lost", first, clock.now, g="a"))
    assert (await mongo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)).claim is None

    # When the sweeper runs once the range is abandoned
    clock.advance(PENDING_WINDOW + 1)
    await mongo_store.collect_garbage()

    # Then the group gives its message
    result = await mongo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)
    assert result.claim is not None and [m.id for m in result.claim.messages] == ["m-lost"]


async def test_mongodb_a_hidden_head_holds_its_group_until_the_sweeper_finishes_its_post(
    mongo_store: MongoMessageStore, clock: Clock
) -> None:
    # Given a post that wrote its message of group "a" hidden (before its dedup document) and
    # died, and a later post's message of the same group
    db = mongo_store._db()
    first, _ = await db.reserve(P, Q, 1, clock.now)
    await db.messages.insert_one(_message(
        "m-hidden", first, clock.now, g="a", d="x", dg=0, v=clock.now + 600, h=clock.now,
        hd=clock.now + 300,
    ))
    later = await mongo_store.post_fifo(P, Q, "c", [fmsg(2, "a")], dedup_window=300)

    # Then no claim takes the later message past the hidden head, and a settle does not find
    # the group empty
    assert (await mongo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)).claim is None
    await groups.settle(db, P, Q, "a", clock.now)
    assert await db.groups.find_one({"p": P, "q": Q, "g": "a"}) is not None
    assert (await mongo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)).claim is None

    # When the sweeper runs once the range is abandoned
    clock.advance(PENDING_WINDOW + 1)
    await mongo_store.collect_garbage()

    # Then the group gives both in order, and the dedup id is remembered for the message
    result = await mongo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)
    assert result.claim is not None
    assert [m.id for m in result.claim.messages] == ["m-hidden", later.ids[0]]
    again = await mongo_store.post_fifo(P, Q, "c", [fmsg(3, dedup="x")], dedup_window=300)
    assert again.ids == ("m-hidden",) and again.stored == (False,)


async def test_mongodb_a_group_freed_by_its_consumer_is_ready_at_once(
    mongo_store: MongoMessageStore, mongodb_uri: str
) -> None:
    # (Its document says so right after the delete: no claim has to look for it.)
    await mongo_store.post_fifo(P, Q, "c", [fmsg(1, "a"), fmsg(2, "a")], dedup_window=300)
    held = await mongo_store.claim_fifo(P, Q, limit=1, ttl=60, grace=60)
    assert held.claim is not None
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
    try:
        groups = client.get_default_database()["message_groups"]
        waiting = await groups.find_one({"p": P, "q": Q, "g": "a"})
        assert waiting is not None and waiting["r"] is None and waiting["k"] == held.claim.id

        await mongo_store.delete(P, Q, held.claim.messages[0].id, held.claim.id)

        ready = await groups.find_one({"p": P, "q": Q, "g": "a"})
        assert ready is not None and ready["r"] == held.claim.messages[0].seq + 1
        assert ready["w"] is None
    finally:
        await client.close()


async def test_mongodb_a_group_locked_by_a_claim_that_died_comes_back_after_the_lease(
    mongo_store: MongoMessageStore, clock: Clock
) -> None:
    # Given a claim that locked a group and died before taking anything or settling it
    await mongo_store.post_fifo(P, Q, "c", [fmsg(1, "a"), fmsg(2, "b")], dedup_window=300)
    assert await groups.lock(mongo_store._db(), P, Q, "a", "dead-claim", clock.now) is not None
    result = await mongo_store.claim_fifo(P, Q, limit=5, ttl=600, grace=60)
    assert result.claim is not None and numbers(result.claim.messages) == [2]

    # When the lock's lease runs out, Then the group is served again
    clock.advance(groups.LOCK_LEASE + 1)
    again = await mongo_store.claim_fifo(P, Q, limit=5, ttl=60, grace=60)
    assert again.claim is not None and numbers(again.claim.messages) == [1]
