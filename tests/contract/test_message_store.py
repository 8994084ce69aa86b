"""The message store contract (``services/testing/message_store.py``) over every built-in backend,
and what only some backends have.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from services.common.config import ConfigurationError
from services.common.errors import Unavailable
from services.message_svc.storage import registry
from services.message_svc.storage.base import DeleteOutcome, MessageStore
from services.message_svc.storage.registry import open_store
from services.testing.message_store import CLIENT, MessageStoreContract, P, Q, list_all, msg, post_n
from tests.certs import Pki
from tests.conftest import FAIL_FAST
from tests.contract.conftest import WITH_CLUSTER, Clock
from tests.servers import (
    ServerProcess,
    free_port,
    mongodb_process,
    redis_process,
    redis_tls_query,
)

# The store_uri fixture's backends: these stores run on a Redis Cluster too.
STORE_BACKENDS = WITH_CLUSTER


class TestMessageStore(MessageStoreContract):
    """The contract suite over every backend of ``STORE_BACKENDS``."""


async def test_an_sqlite_database_from_before_queue_versions_gets_them_at_open(
    tmp_path: Path, clock: Clock
) -> None:
    # Given a database file whose schema has no queue versions yet, holding a message
    uri = f"sqlite:///{tmp_path / 'old.db'}"
    store = await open_store(uri, now=clock)
    (mid,) = await post_n(store, 1)
    await store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "old.db")) as conn:
        conn.execute("DROP TABLE queue_versions")
        conn.commit()

    # When it is opened again
    store = await open_store(uri, now=clock)
    try:
        # Then its queues are at version 0, can be bumped, and its messages are intact
        assert await store.queue_version(P, Q) == 0
        assert await store.bump_queue_version(P, Q) == 1
        result = await store.claim(P, Q, limit=5, ttl=60, grace=60, version=1)
        assert result.claim is not None and [m.id for m in result.claim.messages] == [mid]
    finally:
        await store.close()


@pytest.mark.parametrize(
    "uri",
    ["redis-ish://x", "nonsense", "sqlite://relative-without-third-slash",
     "sqlite:///m.db?synchronous=SOMETIMES", "sqlite:///m.db?cache=shared"],
)
async def test_bad_store_uris_fail_with_a_configuration_error(uri: str) -> None:
    with pytest.raises(ConfigurationError):
        await open_store(uri)


async def test_the_in_memory_sqlite_store_works(clock: Clock) -> None:
    store = await open_store("sqlite:///:memory:", now=clock)
    try:
        ids = await post_n(store, 2)
        assert [m.id for m in await store.list_messages(P, Q, limit=5)] == list(ids)
    finally:
        await store.close()


@pytest.mark.parametrize(
    "uri",
    ["redis://", "redis://:6379/0", "redis://h:port/0", "redis://h:6379/zero",
     "redis://h:6379/0?prefix=has%20space", "redis://h:6379/0?socket_timeout=-1",
     "redis://h:6379/0?nonsense=1", "redis://h:6379/0#frag",
     "mongodb://", "mongodb://h:27017/bad.name", "mongodb://h:27017/db?notAnOption=1",
     "mongodb://h:99999/db"],
)
async def test_bad_networked_store_uris_fail_with_a_precise_configuration_error(
    uri: str,
) -> None:
    with pytest.raises(ConfigurationError, match="invalid message store URI"):
        await open_store(uri)


def test_a_uri_error_never_shows_the_password() -> None:
    with pytest.raises(ConfigurationError) as raised:
        uri = "redis://:s3cret@h:6379/zero"
        registry.backend_class(uri).from_uri(uri)
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize("scheme", ["redis", "mongodb"])
async def test_an_unreachable_server_is_unavailable_within_seconds(scheme: str) -> None:
    # Given nothing listening on the port
    uri = f"{scheme}://127.0.0.1:{free_port()}/" + ("0" if scheme == "redis" else "db")

    # Then opening fails with Unavailable, fast
    started = time.monotonic()
    with pytest.raises(Unavailable, match="message store"):
        await open_store(uri)
    assert time.monotonic() - started < FAIL_FAST
    if scheme == "mongodb":
        # NOTE: pymongo's monitor leaks its socket when the client is closed during a connect
        # attempt (pool_shared._async_create_connection closes it on OSError only, not on
        # CancelledError); collect it here rather than in whichever test runs next.
        await asyncio.sleep(0.05)


async def _outage_and_recovery(store: MessageStore, server: ServerProcess) -> None:
    """Posts acknowledged messages, kills the server, restarts it: nothing may be lost."""
    # Given 200 acknowledged messages, one of them claimed
    ids: list[str] = []
    for start in range(0, 200, 10):
        ids += await store.post(P, Q, CLIENT, [msg(start + i) for i in range(10)])
    held = await store.claim(P, Q, limit=1, ttl=60, grace=60)
    assert held.claim is not None

    # When the server dies as in a crash
    server.kill()

    # Then a call fails with Unavailable within seconds, not after a hang
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await store.post(P, Q, CLIENT, [msg(999)])
    assert time.monotonic() - started < FAIL_FAST

    # And once it is back on the same data, the same store object works and lost nothing
    server.start()
    listed = await list_all(store, include_claimed=True)
    assert [m.id for m in listed] == ids
    claim = await store.get_claim(P, Q, held.claim.id)
    assert claim is not None and [m.id for m in claim.messages] == [ids[0]]
    (new_id,) = await store.post(P, Q, CLIENT, [msg(1000)])
    again = await store.claim(P, Q, limit=20, ttl=60, grace=60)
    assert again.claim is not None and [m.id for m in again.claim.messages] == list(ids[1:21])
    assert (await store.stats(P, Q)).total == 201
    assert new_id not in ids


async def test_redis_reloads_its_scripts_when_the_server_forgot_them(
    redis_uri: str, redis_server: ServerProcess, clock: Clock
) -> None:
    import redis.asyncio

    store = await open_store(redis_uri, now=clock)
    client = redis.asyncio.Redis(port=redis_server.port)
    try:
        # Given a server that lost its script cache (as after a restart)
        await post_n(store, 2)
        await client.script_flush()

        # Then single and pipelined (concurrent) calls still work
        assert len(await store.list_messages(P, Q, limit=10)) == 2
        await client.script_flush()
        posted = await asyncio.gather(*[store.post(P, Q, CLIENT, [msg(i)]) for i in range(5)])
        assert len(posted) == 5 and (await store.stats(P, Q)).total == 7
    finally:
        await client.aclose()
        await store.close()


async def test_redis_loses_no_acknowledged_message_when_killed(
    tmp_path: Path, clock: Clock
) -> None:
    server = redis_process(tmp_path, durable=True)
    server.start()
    try:
        store = await open_store(f"redis://127.0.0.1:{server.port}/0", now=clock)
        try:
            assert store.capabilities.durable
            await _outage_and_recovery(store, server)
        finally:
            await store.close()
    finally:
        server.stop()


async def test_redis_over_tls_loses_no_acknowledged_message_when_killed(
    tmp_path: Path, clock: Clock, pki: Pki
) -> None:
    # The store's one pipelined connection makes its TLS connection again after the crash
    server = redis_process(tmp_path, durable=True, tls=pki)
    with server:
        store = await open_store(
            f"rediss://127.0.0.1:{server.port}/0?{redis_tls_query(pki)}", now=clock
        )
        try:
            assert store.capabilities.durable
            await _outage_and_recovery(store, server)
        finally:
            await store.close()


async def test_mongodb_loses_no_acknowledged_message_when_killed(
    tmp_path: Path, clock: Clock
) -> None:
    server = mongodb_process(tmp_path)
    server.start()
    try:
        store = await open_store(
            f"mongodb://127.0.0.1:{server.port}/outage", now=clock
        )
        try:
            await _outage_and_recovery(store, server)
        finally:
            await store.close()
    finally:
        server.stop()


async def test_redis_leaves_no_index_entry_of_a_deleted_message(
    redis_uri: str, redis_server: ServerProcess, clock: Clock
) -> None:
    """A message deleted under its live claim is taken out of the indexes it can be in (held,
    not free or delayed): whichever way a message is deleted, no index keeps its id."""
    import redis.asyncio

    from services.message_svc.storage.redis._codec import queue_prefix

    store = await open_store(redis_uri, now=clock)
    client = redis.asyncio.Redis(port=redis_server.port, decode_responses=True)
    prefix = redis_uri.rsplit("prefix=", 1)[1]
    _, base = queue_prefix(prefix, P, Q)
    try:
        # Given messages deleted every way: under a live claim, one by one and together; never
        # claimed; delayed; held by a claim that has expired since
        ids = await post_n(store, 8)
        delayed = await store.post(P, Q, CLIENT, [msg(99, delay=60)])
        first = await store.claim(P, Q, limit=3, ttl=30, grace=30)
        assert first.claim is not None
        under = [m.id for m in first.claim.messages]
        assert await store.delete(P, Q, under[0], first.claim.id) is DeleteOutcome.DELETED
        assert await store.delete_many(P, Q, under[1:], [first.claim.id]) == 2
        assert await store.delete(P, Q, ids[3]) is DeleteOutcome.DELETED
        assert await store.delete(P, Q, delayed[0]) is DeleteOutcome.DELETED
        second = await store.claim(P, Q, limit=2, ttl=30, grace=30)
        assert second.claim is not None
        clock.advance(31)
        lapsed = [m.id for m in second.claim.messages]
        assert await store.delete(P, Q, lapsed[0]) is DeleteOutcome.DELETED
        assert await store.delete_many(P, Q, lapsed[1:]) == 1
        # Then only the messages left are indexed, each in free
        left = set(ids) - set(under) - {ids[3]} - set(lapsed)
        assert len(left) == 2
        for index in ("all", "free", "exp"):
            assert set(await client.zrange(base + index, 0, -1)) == left, index
        for index in ("delayed", "held"):
            assert await client.zrange(base + index, 0, -1) == [], index
        claimed = await store.claim(P, Q, limit=10, ttl=30, grace=30)
        assert claimed.claim is not None
        assert {m.id for m in claimed.claim.messages} == left
    finally:
        await client.aclose()
        await store.close()


async def test_mongodb_a_post_whose_range_the_server_did_not_settle_is_stored_and_listed_soon(
    mongodb_uri: str, mongodb_server: ServerProcess, clock: Clock
) -> None:
    """A post's seq range stays pending until the post settles it, and listings stop below a
    pending range. Should the server not answer that settle (it went away right after the
    messages were written), the post is still answered, and the next sweep settles the range
    rather than leaving listings held back for PENDING_WINDOW."""
    from pymongo import AsyncMongoClient

    store = await open_store(mongodb_uri, now=clock)
    admin: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        port=mongodb_server.port, directConnection=True)
    try:
        first = await store.post(P, Q, CLIENT, [msg(1)])
        # Given a server that drops the connection of the post's settle, and of its one retry
        await admin.admin.command(
            "configureFailPoint", "failCommand", mode={"times": 2},
            data={"failCommands": ["update"], "closeConnection": True})
        try:
            # When a post writes its message and cannot settle its range
            second = await store.post(P, Q, CLIENT, [msg(2)])
        finally:
            await admin.admin.command("configureFailPoint", "failCommand", mode="off")

        # Then the post is answered; its message waits behind the pending range in listings
        assert [m.id for m in await store.list_messages(P, Q, limit=10)] == list(first)
        assert (await store.stats(P, Q)).total == 2
        # and the next sweep settles the range, well within PENDING_WINDOW (the clock stands)
        await store.collect_garbage()
        listed = [m.id for m in await store.list_messages(P, Q, limit=10)]
        assert listed == [*first, *second]
        assert store._db().unsettled == {}
    finally:
        await admin.close()
        await store.close()


def settled_ranges(why: str) -> float:
    """``zaqar_store_pending_ranges_settled{why}`` as this process counts it."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("zaqar_store_pending_ranges_settled_total",
                                     {"why": why}) or 0.0


async def test_mongodb_a_range_left_by_a_writer_that_died_is_settled_once_it_is_not_heard_from(
    mongodb_uri: str, clock: Clock
) -> None:
    """A message_svc killed in the middle of a post leaves its seq range pending, and listings
    stop below it. Each writer notes every few seconds that it is alive; the next sweep of any
    replica settles the ranges of a writer not heard from for WRITER_GONE, rather than leaving
    listings held back for PENDING_WINDOW. A live writer's range is left to it."""
    from services.message_svc.storage.mongodb import MongoMessageStore
    from services.message_svc.storage.mongodb._documents import PENDING_WINDOW, WRITER_GONE

    dead = await open_store(mongodb_uri, now=clock)
    alive = await open_store(mongodb_uri, now=clock)
    other = await open_store(mongodb_uri, now=clock)
    try:
        assert isinstance(dead, MongoMessageStore) and isinstance(alive, MongoMessageStore)
        assert isinstance(other, MongoMessageStore)
        first = await other.post(P, Q, CLIENT, [msg(1)])
        # Given two writers that each took a range and wrote nothing yet (one in another
        # queue), and one of them killed: it notes nothing more
        await dead._db().reserve(P, Q, 2, clock())
        await alive._db().reserve(P, Q + "-2", 1, clock())
        assert dead._beating is not None
        dead._beating.cancel()
        later = await other.post(P, Q, CLIENT, [msg(2)])
        other_later = await other.post(P, Q + "-2", CLIENT, [msg(3)])
        assert [m.id for m in await other.list_messages(P, Q, limit=10)] == list(first)
        assert await other.list_messages(P, Q + "-2", limit=10) == []
        # When a sweep runs before WRITER_GONE has passed, it settles nothing
        clock.advance(WRITER_GONE - 1)
        await alive._db().beat(clock())
        await other.collect_garbage()
        assert [m.id for m in await other.list_messages(P, Q, limit=10)] == list(first)
        # Then once it has, with the live writer heard from meanwhile, the dead writer's range
        # is settled (its queue lists what was posted after it) and the live one's is not
        gone, expired = settled_ranges("writer_gone"), settled_ranges("expired")
        clock.advance(2)
        await alive._db().beat(clock())
        await other.collect_garbage()
        assert [m.id for m in await other.list_messages(P, Q, limit=10)] == [*first, *later]
        assert await other.list_messages(P, Q + "-2", limit=10) == []
        assert settled_ranges("writer_gone") == gone + 1
        # and the live writer's too once PENDING_WINDOW has passed, heard from or not
        clock.advance(PENDING_WINDOW)
        await alive._db().beat(clock())
        await other.collect_garbage()
        listed = [m.id for m in await other.list_messages(P, Q + "-2", limit=10)]
        assert listed == list(other_later)
        assert settled_ranges("expired") == expired + 1
    finally:
        for store in (dead, alive, other):
            await store.close()


async def test_mongodb_a_writer_that_stops_cleanly_leaves_its_ranges_to_the_next_sweep(
    mongodb_uri: str, clock: Clock
) -> None:
    """A writer that closes takes its note away: a range it could not settle (the server did
    not answer) is settled by another replica's next sweep once two beats old, without
    waiting WRITER_GONE."""
    from services.message_svc.storage.mongodb import MongoMessageStore
    from services.message_svc.storage.mongodb._documents import WRITER_BEAT, WRITER_GONE

    leaving = await open_store(mongodb_uri, now=clock)
    other = await open_store(mongodb_uri, now=clock)
    try:
        assert isinstance(leaving, MongoMessageStore) and isinstance(other, MongoMessageStore)
        await leaving._db().reserve(P, Q, 1, clock())
        posted = await other.post(P, Q, CLIENT, [msg(1)])
        await leaving.close()
        clock.advance(2 * WRITER_BEAT + 1)
        assert 2 * WRITER_BEAT + 1 < WRITER_GONE
        await other.collect_garbage()
        assert [m.id for m in await other.list_messages(P, Q, limit=10)] == list(posted)
    finally:
        await other.close()


async def test_mongodb_a_post_held_up_past_writer_gone_moves_its_messages_past_the_listings(
    mongodb_uri: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that stalls in the middle of a post for longer than WRITER_GONE has its range
    settled by another replica's sweep, and listings go past its seqs. When it goes on, its
    post finds its range no longer pending and gives the messages new seqs at the end of the
    queue, so a reader paging by marker still lists them."""
    from services.message_svc.storage.mongodb import MongoMessageStore
    from services.message_svc.storage.mongodb._documents import WRITER_GONE

    stalled = await open_store(mongodb_uri, now=clock)
    other = await open_store(mongodb_uri, now=clock)
    try:
        assert isinstance(stalled, MongoMessageStore) and isinstance(other, MongoMessageStore)
        assert stalled._beating is not None
        stalled._beating.cancel()  # it notes nothing while it stalls
        collection = stalled._db().messages
        insert_many = collection.insert_many
        reached, go_on = asyncio.Event(), asyncio.Event()

        async def held_up(*args: object, **kwargs: object) -> object:
            reached.set()
            await go_on.wait()
            return await insert_many(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(collection, "insert_many", held_up)
        # Given a post that took its range and stalls before it writes
        post = asyncio.create_task(stalled.post(P, Q, CLIENT, [msg(1)]))
        await reached.wait()
        after = await other.post(P, Q, CLIENT, [msg(2)])
        assert await other.list_messages(P, Q, limit=10) == []
        # When another replica's sweep takes the stalled writer for gone and a reader pages
        # past what was listed
        clock.advance(WRITER_GONE + 1)
        await other.collect_garbage()
        page = await other.list_messages(P, Q, limit=10)
        assert [m.id for m in page] == list(after)
        # And the post then goes on
        moved = settled_ranges("moved")
        go_on.set()
        late = await post
        assert settled_ranges("moved") == moved + 1
        # Then its message is listed past that page, at the end of the queue
        rest = await other.list_messages(P, Q, limit=10, after=page[-1].seq)
        assert [m.id for m in rest] == list(late)
        listed = [m.id for m in await other.list_messages(P, Q, limit=10)]
        assert listed == [*after, *late]
    finally:
        for store in (stalled, other):
            await store.close()
