"""The notifier store on a Redis Cluster (``redis+cluster://``), beyond its contract suite
(which runs on the cluster too): the URI, every key in one hash slot, leases between replicas,
and a master killed under load (docs/redis-cluster.md, "The notifier store").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError

from services.common import redis_store
from services.common.config import ConfigurationError
from services.common.errors import Unavailable
from services.notifier_svc import health as notifier_health
from services.notifier_svc.storage.base import (
    DeliveryKind,
    NewDelivery,
    NotifierStore,
    Subscription,
    WatchEvent,
)
from services.notifier_svc.storage.redis import RedisClusterNotifierStore, RedisNotifierStore
from services.notifier_svc.storage.redis.store import SCRIPTS
from services.notifier_svc.storage.registry import backend_class, open_notifier_store
from tests.contract.conftest import Clock
from tests.servers import (
    RedisClusterProcesses,
    ServerProcess,
    start_redis_cluster,
)

HOOK = "http://127.0.0.1:9/hook"


def delivery(sub: Subscription, text: str = "m") -> NewDelivery:
    return NewDelivery(
        subscription_id=sub.id, project=sub.project, queue=sub.queue,
        subscriber=sub.subscriber, options=sub.options, kind=DeliveryKind.NOTIFICATION,
        document=f'{{"body":"{text}"}}'.encode(),
    )


@pytest.fixture
async def store(redis_cluster_uri: str, clock: Clock) -> AsyncIterator[NotifierStore]:
    opened = await open_notifier_store(redis_cluster_uri, now=clock)
    yield opened
    await opened.close()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterProcesses]:
    """A cluster of the test's own, which it may kill nodes of."""
    with start_redis_cluster(tmp_path / "cluster") as cluster:
        yield cluster


def test_the_scheme_opens_the_cluster_store_and_each_class_refuses_the_other_uri() -> None:
    uri = "redis+cluster://:s3cret@h1:7000,h2:7001?wait=1"
    opened = backend_class(uri).from_uri(uri)
    assert isinstance(opened, RedisClusterNotifierStore)
    assert opened.address == "redis+cluster://h1:7000,h2:7001"
    for backend, other in [
        (backend_class("redis://h"), uri),
        (backend_class(uri), "redis://:s3cret@h:1/0"),
    ]:
        with pytest.raises(ConfigurationError, match="expected redis") as raised:
            backend.from_uri(other)
        assert "s3cret" not in str(raised.value)
    with pytest.raises(ConfigurationError, match="has only database 0"):
        backend_class(uri).from_uri("redis+cluster://h1:7000/0")


async def _exercise(store: NotifierStore, clock: Clock) -> None:
    """Run every script of the store at least once."""
    sub, _ = await store.create("p", "q", HOOK, 60, {})  # create
    other, _ = await store.create("p", "q", "http://127.0.0.1:9/other", 60, {})
    await store.update("p", "q", sub.id, subscriber="http://127.0.0.1:9/new", ttl=30)  # update
    sub = await store.update("p", "q", sub.id, subscriber=HOOK)
    assert await store.enqueue([delivery(sub, "a"), delivery(sub, "b"), delivery(other)]) == 3
    first, second, third = await store.claim_due(limit=5, lease=30, per_subscriber=5)  # claim
    assert await store.reschedule(first.id, due=clock.now + 5, attempts=1,  # reschedule
                                  leased_until=first.due)
    await store.complete(second.id)  # complete
    assert await store.delete("p", "q", other.id)  # delete
    await store.keep_watching("r1", [("p", "q"), ("p", "q2")], 30)  # watch
    await store.stop_watching("r1", [("p", "q2")])  # unwatch (given queues)
    await store.stop_watching("r1")  # unwatch (every queue)
    clock.advance(120)
    await store.collect_garbage()  # collect_garbage, collect_watches
    await store.create("p", "gone", HOOK, 60, {})
    assert await store.purge_deliveries("p", "gone") == 0  # purge_deliveries
    assert await store.delete_queue("p", "gone") == 1  # delete_queue
    del third


async def test_every_script_is_given_keys_of_one_slot_and_the_store_keeps_to_it(
    redis_cluster_uri: str, clock: Clock, monkeypatch: pytest.MonkeyPatch,
    redis_cluster: RedisClusterProcesses,
) -> None:
    # Given every script call recorded on its way to the cluster
    calls: list[tuple[Any, ...]] = []
    run = redis_store.run

    async def recording(client: Any, batch: Any, *args: Any, **kwargs: Any) -> list[Any]:
        calls.extend(call.args for call in batch if call.args[0] == "EVALSHA")
        return await run(client, batch, *args, **kwargs)

    monkeypatch.setattr(redis_store, "run", recording)
    store = await open_notifier_store(redis_cluster_uri, now=clock)  # index_lanes
    try:
        # When every script runs, and the store is left holding one of each kind of key
        await _exercise(store, clock)
        names = {sha: name for name, sha in store._shas.items()}  # type: ignore[attr-defined]
        sub, _ = await store.create("p", "q", HOOK, 60, {})
        await store.enqueue([delivery(sub)])
        await store.keep_watching("r1", [("p", "q")], 30)
        await store.publish_watch_event(WatchEvent(origin="r1", project="p", queue="q",
                                                   payload=b"{}"))
    finally:
        await store.close()

    # Then each was given keys (the store's four common ones first) of one slot, every call
    assert {names[args[1]] for args in calls} == set(SCRIPTS)
    slots = set()
    for args in calls:
        keys = args[3:3 + int(args[2])]
        assert len(keys) >= 4 and len({key_slot(key.encode()) for key in keys}) == 1, keys
        slots.add(key_slot(keys[0].encode()))
    # And every key the store wrote, read from every master, is in that one slot
    prefix = redis_cluster_uri.rpartition("prefix=")[2]
    (slot,) = slots
    found: list[str] = []
    for port, role in redis_cluster.roles().items():
        if role == "master":
            found += redis_cluster.cli(port, "--scan", "--pattern", f"{prefix}*").split()
    kinds = {key.removeprefix(f"{prefix}:{{{prefix}}}:").partition(":")[0] for key in found}
    assert kinds == {"s", "qs", "qu", "exp", "d", "due", "ld", "lanes", "ds", "w", "wq", "wf"}
    assert {key_slot(key.encode()) for key in found} == {slot}
    assert all(key.startswith(f"{prefix}:{{{prefix}}}:") for key in found)


async def test_a_script_touching_a_key_of_another_slot_is_refused(
    store: NotifierStore, redis_cluster: RedisClusterProcesses,
) -> None:
    # Given the store's own scripts run on the cluster with their #!lua header
    assert isinstance(store, RedisClusterNotifierStore)
    client = RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    try:
        base = store._keys.base
        # When a script with that header reads a key of another slot (same node or not)
        stray = next(f"k{i}" for i in range(100)
                     if key_slot(f"k{i}".encode()) != key_slot(base.encode()))
        script = store.script_header + "return redis.call('GET', ARGV[1])"
        # Then Redis refuses it, where the same script without the header would run
        with pytest.raises(ResponseError, match=r"not hash to the same slot|non local key"):
            await client.eval(script, 1, f"{base}:exp", stray)
        assert await client.eval(script, 1, f"{base}:exp", f"{base}:undeclared") is None
    finally:
        await client.aclose()


async def test_replicas_sharing_the_cluster_lease_each_delivery_once(
    redis_cluster_uri: str, clock: Clock,
) -> None:
    # Given two replicas' stores on one cluster, and deliveries for several subscribers
    one = await open_notifier_store(redis_cluster_uri, now=clock)
    two = await open_notifier_store(redis_cluster_uri, now=clock)
    try:
        subs = [(await one.create("p", f"q{i}", f"{HOOK}/{i % 3}", 600, {}))[0]
                for i in range(6)]
        stored = await one.enqueue([delivery(s, str(n)) for s in subs for n in range(10)])
        assert stored == 60

        # When both claim concurrently until nothing is due
        async def drain(replica: NotifierStore) -> list[str]:
            taken: list[str] = []
            while batch := await replica.claim_due(limit=7, lease=30, per_subscriber=3):
                taken += [d.id for d in batch]
            return taken

        first_lease_ends = clock.now + 30
        taken_one, taken_two = await asyncio.gather(drain(one), drain(two))

        # Then every delivery was leased once, by one of them
        assert len(taken_one) + len(taken_two) == 60
        assert len(set(taken_one) | set(taken_two)) == 60
        # And a lease is fenced: once it ended and another replica leased the delivery again,
        # the first lease cannot reschedule it
        assert await one.claim_due(limit=1, lease=30, per_subscriber=1) == []
        clock.advance(31)
        [again] = await two.claim_due(limit=1, lease=30, per_subscriber=1)
        assert not await one.reschedule(again.id, due=clock.now, attempts=1,
                                        leased_until=first_lease_ends)
        assert await two.reschedule(again.id, due=clock.now + 60, attempts=1,
                                    leased_until=again.due)
    finally:
        await one.close()
        await two.close()


async def test_the_health_check_reaches_the_cluster_store(store: NotifierStore) -> None:
    (report,) = (await notifier_health.check_stores(store, 5.0)).stores
    assert report.store == "subscription" and report.reachable


async def _until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not after {seconds} s: {what}"
        await asyncio.sleep(0.05)


async def _master_of(cluster: RedisClusterProcesses, key: str) -> ServerProcess:
    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in cluster.nodes])
    try:
        await client.initialize()
        node = client.get_node_from_key(key)
        assert node is not None
        return cluster.node(node.port)
    finally:
        await client.aclose()


async def test_with_wait_an_acknowledged_delivery_survives_the_failover_of_its_master(
    own_cluster: RedisClusterProcesses,
) -> None:
    # Given a store that waits for one replica to confirm every write, busy storing deliveries
    store = await open_notifier_store(f"redis+cluster://{own_cluster.uri_hosts}?wait=1")
    assert isinstance(store, RedisClusterNotifierStore)
    acked: list[int] = []
    failures: list[Exception] = []
    stop = asyncio.Event()
    try:
        sub, _ = await store.create("p", "q", HOOK, 3600, {})
        master = await _master_of(own_cluster, store._keys.due)

        async def load() -> None:
            n = 0
            while not stop.is_set():
                try:
                    if await store.enqueue([delivery(sub, str(n))]) == 1:
                        acked.append(n)
                except Unavailable as exc:
                    failures.append(exc)
                n += 1

        task = asyncio.create_task(load())
        try:
            await _until(lambda: len(acked) >= 20, 60, "the load runs")
            # When the master of the store's slot is killed, and comes back as a replica
            master.kill()
            await asyncio.to_thread(own_cluster.wait_healthy, 60)
            master.start()
            await asyncio.to_thread(own_cluster.wait_healthy, 60)
            settled = len(acked)
            await _until(lambda: len(acked) >= settled + 20, 60, "the store recovers")
        finally:
            stop.set()
            await task

        # Then every acknowledged delivery is stored, and each is leased once
        taken: list[bytes] = []
        while batch := await store.claim_due(limit=100, lease=60, per_subscriber=100):
            taken += [d.document for d in batch]
        documents = {delivery(sub, str(n)).document for n in acked}
        assert documents <= set(taken)
        assert len(taken) == len(set(taken))
        assert all(isinstance(f, Unavailable) for f in failures)
    finally:
        await store.close()


def test_a_one_server_store_keeps_its_key_names() -> None:
    store = RedisNotifierStore.from_uri("redis://h:1/0?prefix=zn")
    assert store._keys.base == "zn" and store._keys.due == "zn:due"
    assert store._keys.subscription("s1") == "zn:s:s1"
    clustered = RedisClusterNotifierStore.from_uri("redis+cluster://h:1?prefix=zn")
    assert clustered._keys.due == "zn:{zn}:due"
