"""The message and queue stores on a Redis Cluster (``redis+cluster://``), beyond the contract
suites (which run on the cluster too): the URI, the steps that leave one hash slot (the
registry index, dead-letter moves), what is resent and what is not, and a master killed under
load (docs/redis-cluster.md).

Tests that stop or kill nodes start a cluster of their own; the others share the session's.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    ResponseError,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.common import store_probe
from services.common.config import ConfigurationError
from services.common.errors import Unavailable
from services.common.redis_store import NotReplicated, RedisOptions, may_resend
from services.message_svc.storage import registry as message_registry
from services.message_svc.storage.base import DeadLetterPolicy, MessageStore, NewMessage
from services.message_svc.storage.redis import cluster as message_cluster
from services.message_svc.storage.redis.cluster import RedisClusterMessageStore
from services.message_svc.storage.redis.store import MOVE_LEASE
from services.queue_svc.storage import registry as queue_registry
from services.queue_svc.storage.base import QueueStore
from tests.contract.conftest import Clock
from tests.servers import (
    RedisClusterProcesses,
    ServerProcess,
    free_port,
    start_redis_cluster,
)

P, Q, DLQ = "project-a", "queue-1", "dead-letters"

log = logging.getLogger(__name__)


def msg(n: int, ttl: int = 300) -> NewMessage:
    return NewMessage(body=b'{"n": %d}' % n, ttl=ttl)


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterProcesses]:
    """A cluster of the test's own, which it may stop or kill nodes of."""
    with start_redis_cluster(tmp_path / "cluster") as cluster:
        yield cluster


@pytest.fixture
async def message_store(redis_cluster_uri: str, clock: Clock) -> AsyncIterator[MessageStore]:
    store = await message_registry.open_store(redis_cluster_uri, now=clock)
    yield store
    await store.close()


async def master_of(cluster: RedisClusterProcesses, key: str) -> ServerProcess:
    """The node serving ``key``'s slot now."""
    live = [n for n in cluster.nodes if n.proc is not None and n.proc.poll() is None]
    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in live])
    try:
        await client.initialize()
        node = client.get_node_from_key(key)
        assert node is not None
        return cluster.node(int(node.port))
    finally:
        await client.aclose()


async def live_ids(store: MessageStore, project: str = P, queue: str = Q) -> list[str]:
    page = await store.list_messages(project, queue, limit=10_000, include_claimed=True,
                                     include_delayed=True)
    return [m.id for m in page]


# The URI ---------------------------------------------------------------------------------------


def test_a_cluster_uri_names_its_nodes_and_options() -> None:
    options = RedisOptions.parse(
        "redis+cluster://:pw@h1:7000,h2,[::1]:7002/?prefix=zc&wait=1&wait_timeout=0.5"
        "&retry_for=2&socket_timeout=3&max_connections=8",
        store="message store", prefix="zm", max_connections=64,
    )
    assert options.cluster and options.nodes == (("h1", 7000), ("h2", 6379), ("::1", 7002))
    assert (options.prefix, options.wait, options.wait_timeout, options.retry_for) == (
        "zc", 1, 0.5, 2.0
    )
    assert (options.password, options.socket_timeout, options.max_connections) == ("pw", 3, 8)
    assert options.address == "redis+cluster://h1:7000,h2:6379,::1:7002"
    defaults = RedisOptions.parse("redis+cluster://h1:7000", "message store", "zm", 64)
    assert (defaults.db, defaults.wait, defaults.retry_for, defaults.prefix) == (0, 0, 4.0, "zm")


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("redis+cluster://h1:7000/0", "has only database 0"),
        ("redis+cluster://h1:7000/3?prefix=x", "has only database 0"),
        ("redis+cluster://h1:7000,,h2:7001", "host 2 of the list is empty"),
        ("redis+cluster://h1:7000,h2:port", "bad port"),
        ("redis+cluster://h1:7000,:7001", "the host is missing"),
        ("redis+cluster://h1:7000?dbid=1", "unknown option 'dbid'"),
        ("redis+cluster://h1:7000?wait=-1", "option wait='-1'"),
        ("redis+cluster://h1:7000?wait=1&wait_timeout=5", "must be less than socket_timeout"),
        ("redis+cluster://h1:7000?retry_for=-2", "option retry_for='-2'"),
        ("redis://h1:7000/0?retry_for=1", "unknown option 'retry_for'"),
        ("redis+cluster:h1:7000", "expected redis+cluster://"),
    ],
)
def test_a_bad_cluster_uri_is_a_precise_configuration_error(uri: str, problem: str) -> None:
    for backend in (message_registry.backend_class(uri), queue_registry.backend_class(uri)):
        with pytest.raises(ConfigurationError, match=r"invalid .* store URI") as raised:
            backend.from_uri(uri)
        assert problem in str(raised.value)


def test_each_scheme_opens_its_own_store() -> None:
    uri = "redis+cluster://:s3cret@h1:7000"
    assert isinstance(message_registry.backend_class(uri).from_uri(uri),
                      RedisClusterMessageStore)
    # A cluster URI given to the one-server class (or the reverse) is refused, password hidden
    for backend, other in [
        (message_registry.backend_class("redis://h"), uri),
        (message_registry.backend_class(uri), "redis://:s3cret@h:1/0"),
        (queue_registry.backend_class("redis://h"), uri),
    ]:
        with pytest.raises(ConfigurationError, match="expected redis") as raised:
            backend.from_uri(other)
        assert "s3cret" not in str(raised.value)


# What is resent --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "idempotent", "resent"),
    [
        (RedisConnectionError("Connection closed by server."), False, True),
        (ClusterDownError("CLUSTERDOWN The cluster is down"), False, True),
        (ReadOnlyError("READONLY You can't write against a read only replica."), False, True),
        (SlotNotCoveredError("Slot 7 is not covered"), False, True),
        (RedisTimeoutError("Timeout connecting to server"), False, True),
        (RedisTimeoutError("Timeout reading from 127.0.0.1:7000"), True, True),
        (RedisTimeoutError("Timeout reading from 127.0.0.1:7000"), False, False),
        (RedisTimeoutError("Timeout writing to socket"), False, False),
        (NotReplicated("0 of 1 replicas confirmed the write in time"), False, False),
        (ResponseError("ERR something"), True, False),
    ],
)
def test_only_what_cannot_have_been_applied_or_changes_nothing_is_resent(
    error: Exception, idempotent: bool, resent: bool
) -> None:
    assert may_resend(error, idempotent) is resent


async def test_a_write_that_timed_out_is_not_resent_but_a_read_is(
    own_cluster: RedisClusterProcesses, clock: Clock
) -> None:
    # Given a store whose calls time out after 0.5 s, but may be resent for 20 s
    uri = f"redis+cluster://{own_cluster.uri_hosts}?socket_timeout=0.5&retry_for=20"
    store = await message_registry.open_store(uri, now=clock)
    try:
        await store.post(P, Q, "c", [msg(0)])
        master = await master_of(own_cluster, f"zm:{{{P}/{Q}}}:")
        assert master.proc is not None
        # When the queue's master stops answering (but is not failed over: it is back well
        # within the cluster's node timeout)
        master.proc.send_signal(signal.SIGSTOP)
        try:
            read = asyncio.ensure_future(live_ids(store))
            started = time.monotonic()
            # Then a post times out once, is not resent, and fails
            with pytest.raises(Unavailable, match="did not answer in time"):
                await store.post(P, Q, "c", [msg(1)])
            assert time.monotonic() - started < 10
        finally:
            master.proc.send_signal(signal.SIGCONT)
        # And the listing started meanwhile was resent until it got its answer
        assert len(await read) >= 1
        # And the post reached the server once: it was applied when the server woke up (the
        # caller could not know), and never twice
        deadline = time.monotonic() + 30
        while True:
            stored = await live_ids(store)
            if len(stored) >= 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert len(stored) == 2
    finally:
        await store.close()


async def test_a_post_or_claim_sent_again_is_applied_once(
    message_store: MessageStore, clock: Clock
) -> None:
    # (A batch or claim whose connection broke is resent: it must recognise itself.)
    assert isinstance(message_store, RedisClusterMessageStore)
    ids = await message_store.post(P, Q, "c", [msg(i) for i in range(3)])
    prefix = f"{message_store.options.prefix}:{{{P}/{Q}}}:"
    registry = message_store._registry_of(f"{P}/{Q}")
    # When the same batch (same ids) is sent again
    now = repr(clock.now)
    args: list[Any] = [f"{P}/{Q}", "c", now, ""]
    for i, mid in enumerate(ids):
        args += [mid, b'{"n": %d}' % i, 300, repr(clock.now + 300), now]
    await message_store._run("post", (prefix, registry), args)
    # Then it is stored once
    assert await live_ids(message_store) == list(ids)
    # And a claim sent again answers the same messages and takes no more
    claim = await message_store.claim(P, Q, limit=2, ttl=60, grace=60)
    assert claim.claim is not None
    replay = await message_store._run("claim", (prefix, prefix, registry), (
        now, 2, claim.claim.id, 60, 60, repr(clock.now + 60), 120, repr(clock.now + 120), "",
        "", "", "", "", "1",
    ))
    assert [row[0].decode() for row in replay[0]] == list(ids[:2])
    assert (await message_store.stats(P, Q)).claimed == 2


async def test_wait_on_one_server_without_replicas_refuses_writes_as_unconfirmed(
    redis_uri: str, clock: Clock
) -> None:
    # Given stores on one Redis server, which has no replica, asked to wait for one
    uri = f"{redis_uri}&wait=1&wait_timeout=0.2"
    messages, queues = await _open_both(uri)
    try:
        # Then every write is applied but refused as unconfirmed, and reads work
        with pytest.raises(Unavailable, match="replicas did not confirm"):
            await messages.post(P, Q, "c", [msg(0)])
        with pytest.raises(Unavailable, match="replicas did not confirm"):
            await messages.bump_queue_version(P, Q)
        with pytest.raises(Unavailable, match="replicas did not confirm"):
            await queues.create("p", "q", {})
        assert len(await live_ids(messages)) == 1
        assert await messages.queue_version(P, Q) == 1
        assert await queues.exists("p", "q")
    finally:
        await messages.close()
        await queues.close()


# The registry index ----------------------------------------------------------------------------


async def test_the_sweep_collects_every_queue_and_repairs_a_missed_index(
    message_store: MessageStore, clock: Clock, monkeypatch: pytest.MonkeyPatch,
    redis_cluster: RedisClusterProcesses,
) -> None:
    assert isinstance(message_store, RedisClusterMessageStore)
    # Given short-lived messages in queues spread over many slots
    queues = [f"q{i}" for i in range(40)]
    for name in queues:
        await message_store.post(P, name, "c", [msg(0, ttl=60), msg(1, ttl=60)])
    index = message_store._slots_key
    client = RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    try:
        slots = {q: message_cluster._slot(f"{P}/{q}") for q in queues}
        assert {int(s) for s in await client.smembers(index)} == set(slots.values())
        # And one slot left out of the index, as by a crash between a post and indexing it
        lost = slots["q0"]
        await client.srem(index, lost)
        left_out = [q for q in queues if slots[q] == lost]

        # When everything expires and the sweep runs once (its repair walk elsewhere)
        clock.advance(120)
        monkeypatch.setattr(message_cluster, "GC_REPAIR_SLOTS", 0)
        removed = await message_store.collect_garbage()

        # Then every indexed queue is collected at once, the one left out not yet
        assert removed == 2 * (len(queues) - len(left_out))
        # And a repair walk that reaches its slot collects it
        monkeypatch.setattr(message_cluster, "GC_REPAIR_SLOTS", message_cluster.SLOTS)
        assert await message_store.collect_garbage() == 2 * len(left_out)
        # And once their sets are found empty, the index forgets them all
        await message_store.collect_garbage()
        assert await client.smembers(index) == set()
        # And a new post indexes its slot again
        await message_store.post(P, "q0", "c", [msg(2)])
        assert {int(s) for s in await client.smembers(index)} == {lost}
    finally:
        await client.aclose()


# Dead-letter moves -----------------------------------------------------------------------------


POLICY = DeadLetterPolicy(max_claim_count=1, queue=DLQ)


async def _claim_twice(store: MessageStore) -> str:
    """Posts one message and claims it twice, the second claim dead-lettering it."""
    (mid,) = await store.post(P, Q, "c", [msg(0)])
    first = await store.claim(P, Q, limit=1, ttl=30, grace=0, dead_letter=POLICY)
    assert first.claim is not None
    await store.release_claim(P, Q, first.claim.id)
    second = await store.claim(P, Q, limit=1, ttl=30, grace=0, dead_letter=POLICY)
    assert second.claim is None and second.dead_lettered == (mid,)
    return mid


async def test_a_dead_letter_move_interrupted_after_staging_is_resumed_once(
    message_store: MessageStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a claim whose process dies right after staging the message it dead-letters
    async def crash(*args: Any) -> None:
        pass

    with monkeypatch.context() as patch:
        patch.setattr(RedisClusterMessageStore, "_finish_moves", crash)
        mid = await _claim_twice(message_store)

    # Then the message is in neither queue meanwhile: claimable nowhere
    assert await live_ids(message_store) == []
    assert await live_ids(message_store, queue=DLQ) == []
    assert (await message_store.claim(P, Q, limit=5, ttl=30, grace=0)).claim is None
    # And a sweep before the move's lease ran out leaves it alone
    await message_store.collect_garbage()
    assert await live_ids(message_store, queue=DLQ) == []

    # When a sweep runs once the lease ran out
    clock.advance(MOVE_LEASE + 1)
    await message_store.collect_garbage()

    # Then the move is finished: in the dead-letter queue once, and gone from the source
    moved = await message_store.get(P, DLQ, mid)
    assert moved is not None and moved.claim_count == 0 and moved.body == b'{"n": 0}'
    clock.advance(MOVE_LEASE + 1)
    await message_store.collect_garbage()
    assert await live_ids(message_store, queue=DLQ) == [mid]
    assert await message_store.get(P, Q, mid) is None


async def test_a_dead_letter_move_interrupted_after_copying_never_copies_twice(
    message_store: MessageStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(message_store, RedisClusterMessageStore)
    # Given a move whose last step (dropping the staged source) failed
    run = message_store._run

    async def failing_done(name: str, keys: Any, args: Any) -> Any:
        if name == "dead_letter_done":
            raise ConnectionError("lost")
        return await run(name, keys, args)

    with monkeypatch.context() as patch:
        patch.setattr(message_store, "_run", failing_done)
        mid = await _claim_twice(message_store)

    # And the copy already claimed and deleted in the dead-letter queue
    claim = await message_store.claim(P, DLQ, limit=5, ttl=30, grace=0)
    assert claim.claim is not None and [m.id for m in claim.claim.messages] == [mid]
    await message_store.delete(P, DLQ, mid, claim.claim.id)

    # When the sweep resumes the move
    clock.advance(MOVE_LEASE + 1)
    await message_store.collect_garbage()

    # Then the message does not come back: each move copies once
    assert await live_ids(message_store, queue=DLQ) == []
    assert await live_ids(message_store) == []
    # And nothing of the move is left once the message would have expired
    clock.advance(400)
    await message_store.collect_garbage()
    await message_store.collect_garbage()
    client = message_store._redis()
    assert await client.exists(f"{message_store.options.prefix}:{{{P}/{DLQ}}}:in") == 0
    assert await client.exists(f"{message_store.options.prefix}:{{{P}/{Q}}}:moving") == 0


async def test_a_message_dead_lettered_back_and_forth_is_never_lost(
    message_store: MessageStore,
) -> None:
    # Given queues that are each other's dead-letter queue
    back = DeadLetterPolicy(max_claim_count=1, queue=Q)
    mid = await _claim_twice(message_store)
    for _ in range(2):
        # When the message goes to the dead-letter queue, and back, and there again
        first = await message_store.claim(P, DLQ, limit=1, ttl=30, grace=0, dead_letter=back)
        assert first.claim is not None
        await message_store.release_claim(P, DLQ, first.claim.id)
        moved = await message_store.claim(P, DLQ, limit=1, ttl=30, grace=0, dead_letter=back)
        assert moved.dead_lettered == (mid,)
        assert await live_ids(message_store) == [mid]
        first = await message_store.claim(P, Q, limit=1, ttl=30, grace=0, dead_letter=POLICY)
        assert first.claim is not None
        await message_store.release_claim(P, Q, first.claim.id)
        moved = await message_store.claim(P, Q, limit=1, ttl=30, grace=0, dead_letter=POLICY)
        # Then it arrives every time (a move is remembered per claim, not per id)
        assert moved.dead_lettered == (mid,)
        assert await live_ids(message_store, queue=DLQ) == [mid]


# A master killed under load --------------------------------------------------------------------


async def _queue_store_project_on(cluster: RedisClusterProcesses, master: ServerProcess) -> str:
    """A project whose queue store keys are on ``master`` too."""
    for n in range(1000):
        project = f"p{n}"
        if (await master_of(cluster, f"zq:q:{{{project}/}}")).port == master.port:
            return project
    raise AssertionError("no project found on that master")


class Load:
    """Posts, claims and deletes on one queue, and creates queues, until stopped; records what
    was acknowledged and every failure."""

    def __init__(self, messages: MessageStore, queues: QueueStore, project: str) -> None:
        self.messages, self.queues, self.project = messages, queues, project
        self.acked: list[str] = []
        self.created: list[str] = []  # queues whose creation was acknowledged
        self.claimed: dict[str, str] = {}  # message id -> claim id of its live claim
        self.twice: list[str] = []
        self.failures: list[BaseException] = []
        self.slowest = 0.0
        self.streak = 0  # rounds that succeeded in a row
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, workers: int = 4) -> None:
        self._tasks = [asyncio.ensure_future(self._work(w)) for w in range(workers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _timed(self, call: Any) -> Any:
        started = time.monotonic()
        try:
            return await call
        finally:
            self.slowest = max(self.slowest, time.monotonic() - started)

    async def _work(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                self.acked += await self._timed(
                    self.messages.post(P, Q, "c", [msg(n), msg(n + 1)])
                )
                result = await self._timed(self.messages.claim(P, Q, limit=1, ttl=300, grace=0))
                if result.claim is not None:
                    for m in result.claim.messages:
                        if self.claimed.get(m.id, result.claim.id) != result.claim.id:
                            self.twice.append(m.id)
                        self.claimed[m.id] = result.claim.id
                await self._timed(self.queues.create(self.project, f"q{worker}-{n}", {}))
                self.created.append(f"q{worker}-{n}")
            except Exception as exc:
                self.failures.append(exc)
                self.streak = 0
            else:
                self.streak += 1
            await asyncio.sleep(0.005)


async def _open_both(uri: str) -> tuple[MessageStore, QueueStore]:
    messages = await message_registry.open_store(uri)
    try:
        return messages, await queue_registry.open_queue_store(uri)
    except BaseException:
        await messages.close()
        raise


async def _until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not after {seconds} s: {what}"
        await asyncio.sleep(0.05)


async def test_a_master_killed_under_load_fails_over_and_the_stores_recover(
    own_cluster: RedisClusterProcesses,
) -> None:
    # Given stores on the cluster (no WAIT), busy with one queue and one project
    uri = f"redis+cluster://{own_cluster.uri_hosts}"
    messages, queues = await _open_both(uri)
    master = await master_of(own_cluster, f"zm:{{{P}/{Q}}}:")
    project = await _queue_store_project_on(own_cluster, master)
    load = Load(messages, queues, project)
    load.start()
    try:
        await _until(lambda: load.streak >= 20, 60, "the load runs")
        # (what a replica has confirmed cannot be lost in a failover: replication is
        # asynchronous, and on a busy machine a replica may lag by more than the load has run)
        created_synced, acked_synced = len(load.created), len(load.acked)
        await asyncio.to_thread(own_cluster.wait_replicated, master.port)

        # When the master of their slots is killed, as in a crash
        acked_before = len(load.acked)
        master.kill()
        killed_at = time.monotonic()

        # Then its replica takes over
        await asyncio.to_thread(own_cluster.wait_healthy, 60)
        took_over = time.monotonic() - killed_at
        acked_by_new_master = len(load.acked)
        # And the same store objects serve again, without being reopened
        load.streak = 0
        await _until(lambda: load.streak >= 50, 60, "the stores recover")
    finally:
        await load.stop()
    try:
        # And every call that failed meanwhile failed as Unavailable (a 503), each within
        # its bounds (retry_for, then a last attempt's connect and socket timeouts)
        assert all(isinstance(f, Unavailable) for f in load.failures), load.failures[:3]
        assert load.slowest < 4 + 2 + 5 + 9
        # And every message acknowledged by the new master is there, and so is every message
        # and queue its replica had confirmed; some acknowledged by the old one just before
        # the kill may be lost (asynchronous replication: see the next test)
        stored = set(await live_ids(messages))
        assert set(load.acked[acked_by_new_master:]) <= stored
        assert set(load.acked[:acked_synced]) <= stored
        assert created_synced > 0
        for name in load.created[:created_synced]:
            assert await queues.get(project, name) is not None, name
        log.info(
            "failover: replica in charge %.1f s after the kill; %d failed calls; slowest call "
            "%.1f s; %d of %d messages acknowledged before the kill lost", took_over,
            len(load.failures), load.slowest, len(set(load.acked[:acked_before]) - stored),
            acked_before,
        )
    finally:
        await messages.close()
        await queues.close()


async def test_with_wait_a_message_acknowledged_before_the_kill_survives_failover(
    own_cluster: RedisClusterProcesses,
) -> None:
    # Given stores that wait for one replica to confirm every write
    uri = f"redis+cluster://{own_cluster.uri_hosts}?wait=1"
    messages, queues = await _open_both(uri)
    try:
        assert messages.capabilities.durable
        master = await master_of(own_cluster, f"zm:{{{P}/{Q}}}:")
        project = await _queue_store_project_on(own_cluster, master)
        await queues.create(project, "kept", {"a": 1})
        load = Load(messages, queues, project)
        load.start()
        try:
            await _until(lambda: load.streak >= 20, 60, "the load runs")

            # When the master is killed under load
            master.kill()
            await asyncio.to_thread(own_cluster.wait_healthy, 60)
            # Then, once its replica took over, writes fail (no replica is left to confirm
            # them, although the new master applied them)
            with pytest.raises(Unavailable, match="replicas did not confirm"):
                await messages.post(P, Q, "c", [msg(-1)])
            # Until the killed node is back, as the new master's replica
            master.start()
            await asyncio.to_thread(own_cluster.wait_healthy, 60)
            load.streak = 0
            await _until(lambda: load.streak >= 30, 60, "the stores recover")
        finally:
            await load.stop()

        # And every message acknowledged before the kill or after is still there
        assert all(isinstance(f, Unavailable) for f in load.failures), load.failures[:3]
        stored = set(await live_ids(messages))
        assert set(load.acked) <= stored
        # And no message was ever held by two live claims
        assert load.twice == []
        record = await queues.get(project, "kept")
        assert record is not None and dict(record.metadata) == {"a": 1}
        refused = [f for f in load.failures if "replicas did not confirm" in str(f)]
        log.info("wait=1: %d acknowledged messages, none lost; %d failed calls (%d writes "
                 "not confirmed): %s", len(load.acked), len(load.failures), len(refused),
                 sorted({str(f) for f in load.failures}))
    finally:
        await messages.close()
        await queues.close()


async def test_a_store_opened_while_a_node_is_down_works(
    own_cluster: RedisClusterProcesses,
) -> None:
    # Given a cluster whose first named node is dead (its replica took over)
    first = own_cluster.nodes[0]
    first.kill()
    await asyncio.to_thread(own_cluster.wait_healthy, 60)
    uri = f"redis+cluster://{own_cluster.uri_hosts}"
    # Then the stores open through the other nodes and work
    messages, queues = await _open_both(uri)
    try:
        assert len(await messages.post(P, Q, "c", [msg(0)])) == 1
        assert await queues.create("p", "q", {}) is True
    finally:
        await messages.close()
        await queues.close()


async def test_a_cluster_uri_is_probed_on_every_master(redis_cluster_uri: str) -> None:
    # A cluster answers: a pool may be registered on it, and a service's health watch sees it
    await store_probe.probe(redis_cluster_uri, "message store", 5)
    await store_probe.answers(redis_cluster_uri, "message store", 5)
    # A cluster URI naming no live node is unreachable, said in one line
    dead = f"redis+cluster://127.0.0.1:{free_port()}"
    with pytest.raises(store_probe.StoreUnreachable):
        await store_probe.answers(dead, "message store", 2)
