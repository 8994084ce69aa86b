"""Subscriptions of queues placed on pools, through the real services: notifier_svc keeps a
pooled queue's subscriptions and deliveries in a notifier store on the pool's server
(``services/notifier_svc/pools.py``), on SQLite files and on two real Redis servers. Where
subscriptions are is checked in the stores themselves, not through the services."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from zaqar_grpc.v2 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    notifier_pb2,
    queues_pb2,
)

from services.common.config import Settings
from services.common.errors import Unavailable
from services.notifier_svc.delivery.dispatcher import Dispatcher
from services.notifier_svc.pools import NotifierStores, notifier_uri
from services.notifier_svc.storage.base import DeliveryKind, NewDelivery, NotifierStore
from services.notifier_svc.storage.registry import open_notifier_store
from tests.receivers import Receiver
from tests.servers import ServerProcess
from tests.services._pools import (  # noqa: F401 - redis_pair is a fixture
    CLIENT,
    PooledServices,
    pooled_services,
    redis_pair,
    redis_pools,
    sqlite_pools,
)
from tests.services.test_notifier_replicas import Recorder, fill, no_queue_policy, until
from tests.services.test_queue_svc import rpc_error

PROJECT = "notifier-pools"
WITHIN = 120.0  # only how long a broken test waits before it fails

ReceiverFactory = Callable[..., Awaitable[Receiver]]


@dataclass
class Pooled(PooledServices):
    project = PROJECT

    async def subscribe(self, queue: str, subscriber: str) -> str:
        answer = await self.stubs.subscriptions.CreateSubscription(
            notifier_pb2.CreateSubscriptionRequest(
                project=PROJECT, queue=queue, subscriber=subscriber, ttl=3600, options=b"{}"
            )
        )
        return str(answer.subscription_id)

    async def listed(self, queue: str) -> list[str]:
        page = await self.stubs.subscriptions.ListSubscriptions(
            notifier_pb2.ListSubscriptionsRequest(project=PROJECT, queue=queue)
        )
        return [s.id for s in page.subscriptions]

    async def raw(self, name: str) -> NotifierStore:
        """The notifier store of a pool ("own": notifier_svc's own), opened on its own."""
        if name == "own":
            return await open_notifier_store(self.settings.store_uri("notifier"))
        uri = notifier_uri(self.uris[name])
        assert uri is not None
        return await open_notifier_store(uri)

    async def where(self, queue: str) -> dict[str, int]:
        """How many subscriptions of the queue each notifier store holds, read directly."""
        found = {}
        for name in [*self.uris, "own"]:
            store = await self.raw(name)
            try:
                found[name] = len(await store.subscribers(PROJECT, queue))
            finally:
                await store.close()
        return found


@pytest.fixture(params=["sqlite", "redis", "cluster", "mongodb"])
async def pooled(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Pooled]:
    """The three services with pooling on (own stores on SQLite) and pools a and b (not
    registered yet): SQLite files, two redis-servers, two key prefixes on the Redis Cluster,
    or two databases of the MongoDB server."""
    servers: dict[str, ServerProcess] = {}
    uris = sqlite_pools(tmp_path, "ab")
    unique = uuid.uuid4().hex[:8]
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        uris = {name: f"redis+cluster://{cluster.uri_hosts}?prefix=np{unique}{name}"
                for name in ("a", "b")}
    if request.param == "mongodb":
        port = request.getfixturevalue("mongodb_server").port
        uris = {name: f"mongodb://127.0.0.1:{port}/np{unique}{name}" for name in ("a", "b")}
    if request.param == "redis":
        uris, servers = await redis_pools(request.getfixturevalue("redis_pair"))
    # (a new pool is probed for rpc_timeout / 2: a Redis Cluster may take seconds to answer on
    # a busy machine)
    settings = make_settings(pooling=True, rpc_timeout=10.0, gc_interval=0.2)
    async with pooled_services(settings) as s:
        yield Pooled(settings, s, uris, servers)


async def test_a_pooled_queues_subscriptions_are_in_its_pool_only(
    pooled: Pooled, receiver: Receiver
) -> None:
    # Given pool a takes new queues and pool b none, and a queue placed on a
    await pooled.put_pool("a", weight=1)
    await pooled.put_pool("b", weight=0)
    await pooled.create("orders")

    # When it gets a webhook subscription
    sid = await pooled.subscribe("orders", receiver.url())

    # Then the subscription is in a's notifier store and nowhere else
    assert await pooled.where("orders") == {"a": 1, "b": 0, "own": 0}
    assert await pooled.listed("orders") == [sid]
    got = await pooled.stubs.subscriptions.GetSubscription(notifier_pb2.SubscriptionRef(
        project=PROJECT, queue="orders", subscription_id=sid
    ))
    assert got.subscriber == receiver.url()

    # And a posted message is delivered to it, from a's outbox
    [mid] = await pooled.post("orders")
    [hit] = await receiver.wait_for(1, within=WITHIN)
    assert hit.json()["queue_name"] == "orders" and hit.json()["body"] == {"n": 0}
    assert mid

    # And it is updated and deleted where it is
    await pooled.stubs.subscriptions.UpdateSubscription(notifier_pb2.UpdateSubscriptionRequest(
        project=PROJECT, queue="orders", subscription_id=sid, ttl=600
    ))
    await pooled.stubs.subscriptions.DeleteSubscription(notifier_pb2.SubscriptionRef(
        project=PROJECT, queue="orders", subscription_id=sid
    ))
    assert await pooled.where("orders") == {"a": 0, "b": 0, "own": 0}


async def test_deleting_a_pooled_queue_removes_its_subscriptions_from_the_pool(
    pooled: Pooled,
) -> None:
    await pooled.put_pool("b", weight=1)
    await pooled.create("gone")
    await pooled.subscribe("gone", "http://127.0.0.1:9/never")
    assert await pooled.where("gone") == {"a": 0, "b": 1, "own": 0}

    await pooled.stubs.queues.DeleteQueue(queues_pb2.DeleteQueueRequest(
        project=PROJECT, queue="gone"
    ))

    assert await pooled.where("gone") == {"a": 0, "b": 0, "own": 0}


async def test_a_queue_subscriber_of_a_pooled_queue_gets_its_messages(pooled: Pooled) -> None:
    # Given a queue on pool a whose subscriber is another queue (also placed on a)
    await pooled.put_pool("a", weight=1)
    await pooled.create("source")
    await pooled.create("sink")
    await pooled.subscribe("source", "queue://sink")
    assert await pooled.where("source") == {"a": 1, "b": 0, "own": 0}

    # When messages are posted to the source
    await pooled.post("source", 2)

    # Then they arrive in the sink
    async def arrived() -> bool:
        stats = await pooled.stubs.messages.GetStats(
            common_pb2.QueueRef(project=PROJECT, queue="sink")
        )
        return int(stats.total) == 2

    await until(arrived, within=WITHIN)


async def test_subscriptions_made_in_the_own_store_before_keep_working(
    pooled: Pooled, receiver: Receiver
) -> None:
    # Given a queue on pool a with a subscription in notifier_svc's own store (made before
    # subscriptions followed the pool)
    await pooled.put_pool("a", weight=1)
    await pooled.create("legacy")
    own = await pooled.raw("own")
    try:
        old, _ = await own.create(PROJECT, "legacy", receiver.url("/old"), 3600, {})
    finally:
        await own.close()

    # When the queue gets a new subscription and a message
    new = await pooled.subscribe("legacy", receiver.url("/new"))
    await pooled.post("legacy")

    # Then both are listed, each stays where it is, and both get the message
    assert sorted(await pooled.listed("legacy")) == sorted([old.id, new])
    assert await pooled.where("legacy") == {"a": 1, "b": 0, "own": 1}
    hits = await receiver.wait_for(2, within=WITHIN)
    assert sorted(hit.path for hit in hits) == ["/new", "/old"]

    # And the same subscriber again is the old subscription, not a second one
    again = await pooled.stubs.subscriptions.CreateSubscription(
        notifier_pb2.CreateSubscriptionRequest(
            project=PROJECT, queue="legacy", subscriber=receiver.url("/old"), ttl=3600,
            options=b"{}",
        )
    )
    assert again.subscription_id == old.id and not again.created

    # And the old one is deleted from the own store
    await pooled.stubs.subscriptions.DeleteSubscription(notifier_pb2.SubscriptionRef(
        project=PROJECT, queue="legacy", subscription_id=old.id
    ))
    assert await pooled.where("legacy") == {"a": 1, "b": 0, "own": 0}


async def test_pending_deliveries_in_a_pool_nobody_opened_are_made(
    pooled: Pooled, receiver: Receiver
) -> None:
    # Given a pool whose notifier store holds a pending delivery that this notifier_svc
    # never saw (left by a replica that stopped, or by an earlier run)
    await pooled.put_pool("b", weight=1)
    store = await pooled.raw("b")
    try:
        sub, _ = await store.create(PROJECT, "left", receiver.url(), 3600, {})
        await store.enqueue([NewDelivery(
            subscription_id=sub.id, project=PROJECT, queue="left", subscriber=sub.subscriber,
            options={}, kind=DeliveryKind.NOTIFICATION, document=b'{"body": "left"}',
        )])
    finally:
        await store.close()

    # Then the sweeper finds the pool in the catalog and the delivery is made
    [hit] = await receiver.wait_for(1, within=WITHIN)
    assert hit.json() == {"body": "left"}


async def test_a_pool_that_is_down_fails_its_subscriptions_only(
    pooled: Pooled, receiver_factory: ReceiverFactory
) -> None:
    if not pooled.servers:
        pytest.skip("a SQLite pool does not go down")
    on_a, on_b = await receiver_factory(), await receiver_factory()
    # Given a queue on each pool, each with a webhook subscriber
    await pooled.put_pool("a", weight=1)
    await pooled.create("on-a")
    await pooled.subscribe("on-a", on_a.url())
    await pooled.pools.UpdatePool(admin_pb2.UpdatePoolRequest(name="a", weight=0))
    await pooled.put_pool("b", weight=1)
    await pooled.create("on-b")
    await pooled.subscribe("on-b", on_b.url())

    # When pool a's server dies
    pooled.servers["a"].kill()
    try:
        # Then its queue's subscription calls fail with UNAVAILABLE
        for call in (
            pooled.listed("on-a"),
            pooled.subscribe("on-a", "http://127.0.0.1:9/other"),
        ):
            failed = await rpc_error(call)
            assert failed.code == grpc.StatusCode.UNAVAILABLE
        # And b's queue keeps getting its notifications
        await pooled.post("on-b", 2)
        await on_b.wait_for(2, within=WITHIN)
        assert len(await pooled.listed("on-b")) == 1
        # And a hand-over carrying both queues' posts stores b's, and answers that a's
        # could not be stored, for message_svc to hand it over again
        answer = await pooled.stubs.notifier_internal.NotifyMany(
            notifier_pb2.NotifyManyRequest(batches=[
                notifier_pb2.NotifyRequest(project=PROJECT, queue=queue, messages=[
                    common_pb2.Message(id=f"m-{queue}", body=b'{"mixed": true}', ttl=60)
                ])
                for queue in ("on-a", "on-b")
            ])
        )
        assert list(answer.failed) == [True, False]
        assert list(answer.listened)[1] is True
        hits = await on_b.wait_for(3, within=WITHIN)
        assert hits[2].json()["body"] == {"mixed": True}
    finally:
        pooled.servers["a"].start()

    # And once a is back, its queue is served again and gets its notifications
    async def served() -> bool:
        try:
            return len(await pooled.listed("on-a")) == 1
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            return False

    await until(served, within=WITHIN)
    await pooled.post("on-a")
    await on_a.wait_for(1, within=WITHIN)


async def test_a_hand_over_naming_its_pool_is_delivered_from_that_pool(
    pooled: Pooled, receiver_factory: ReceiverFactory
) -> None:
    on_a, on_b = await receiver_factory(), await receiver_factory()
    await pooled.put_pool("a", weight=1)
    await pooled.put_pool("b", weight=0)
    # Given a queue on pool a with a subscriber, which this replica now places on a
    await pooled.create("moved")
    await pooled.subscribe("moved", on_a.url())
    # And the queue deleted and made again on pool b through another replica, with a
    # subscriber of its own (written to b's notifier store, as that replica would)
    store = await pooled.raw("b")
    try:
        await store.create(PROJECT, "moved", on_b.url(), 3600, {})
    finally:
        await store.close()
    # When message_svc hands over a post it stored on pool b
    answer = await pooled.stubs.notifier_internal.NotifyMany(
        notifier_pb2.NotifyManyRequest(batches=[notifier_pb2.NotifyRequest(
            project=PROJECT, queue="moved", pool_uri=pooled.uris["b"],
            messages=[common_pb2.Message(id="m-1", body=b'{"on": "b"}', ttl=60)],
        )])
    )
    # Then it is delivered to the subscriber on b, whatever the cached placement said
    assert list(answer.failed) == [False]
    [hit] = await on_b.wait_for(1, within=WITHIN)
    assert hit.json()["body"] == {"on": "b"}


async def test_health_reports_each_pools_notifier_store(pooled: Pooled) -> None:
    await pooled.put_pool("a", weight=1)
    await pooled.put_pool("b", weight=1)
    health = admin_pb2_grpc.StoreHealthStub(pooled.stubs.channels[2])  # type: ignore[no-untyped-call]
    report = await health.CheckStores(admin_pb2.CheckStoresRequest(pools=[
        admin_pb2.PoolStore(name=name, uri=uri) for name, uri in pooled.uris.items()
    ]))
    assert {(r.store, r.reachable) for r in report.stores} == {
        ("subscription", True), ("pool-subscription:a", True), ("pool-subscription:b", True),
    }


# dispatchers of replicas over the same pool store -------------------------------------------


async def test_replicas_make_each_delivery_of_a_pool_once(tmp_path: Path) -> None:
    # Given two replicas, each with its own store, sharing a pool's notifier store
    pool_uri = f"sqlite:///{tmp_path / 'pool.db'}"
    owns = [await open_notifier_store(f"sqlite:///{tmp_path / f'own{i}.db'}") for i in (0, 1)]

    async def opener(uri: str) -> NotifierStore:
        derived = notifier_uri(uri)
        assert derived is not None
        return await open_notifier_store(derived)

    replicas = [NotifierStores(own, opener, idle=600) for own in owns]
    senders = [Recorder(), Recorder()]
    pools = [await replica.of_pool(pool_uri) for replica in replicas]
    dispatchers = [
        Dispatcher(own, {"http": sender}, no_queue_policy, concurrency=4, timeout=5,
                   stores=lambda replica=replica: [s for _, s in replica.every()])
        for own, sender, replica in zip(owns, senders, replicas, strict=True)
    ]
    try:
        total = await fill(pools[0], subscribers=4, each=12)
        # When both dispatchers run
        for dispatcher in dispatchers:
            dispatcher.start()

        async def done() -> bool:
            return await pools[0].count_deliveries() == 0

        await until(done, within=WITHIN)
    finally:
        for dispatcher in dispatchers:
            await dispatcher.stop()
        for replica in replicas:
            await replica.close()
        for own in owns:
            await own.close()
    # Then each delivery was delivered exactly once
    delivered = senders[0].delivered() + senders[1].delivered()
    assert sorted(delivered.values()) == [1] * total


async def test_a_pool_store_that_fails_does_not_stop_the_others(tmp_path: Path) -> None:
    # Given the own store with pending deliveries, and a pool store that fails every call
    own = await open_notifier_store(f"sqlite:///{tmp_path / 'own.db'}")
    broken = await open_notifier_store(f"sqlite:///{tmp_path / 'broken.db'}")

    async def unavailable(**kwargs: Any) -> Any:
        raise Unavailable("the pool is down")

    broken.claim_due = unavailable  # type: ignore[method-assign]
    broken.next_due = unavailable  # type: ignore[method-assign]
    sender = Recorder()
    dispatcher = Dispatcher(own, {"http": sender}, no_queue_policy, concurrency=4, timeout=5,
                            stores=lambda: [own, broken])
    try:
        total = await fill(own, subscribers=2, each=5)
        dispatcher.start()

        async def done() -> bool:
            return await own.count_deliveries() == 0

        await until(done, within=WITHIN)
    finally:
        await dispatcher.stop()
        await broken.close()
        await own.close()
    assert sum(sender.delivered().values()) == total


def test_a_pools_notifier_store_uri_is_derived_from_its_message_store_uri() -> None:
    assert notifier_uri("sqlite:////srv/pools/a.db?synchronous=NORMAL") == (
        "sqlite:////srv/pools/a-notifier.db?synchronous=NORMAL"
    )
    assert notifier_uri("redis://h:6379/2") == "redis://h:6379/2?prefix=zm-notifier"
    assert notifier_uri("redis+cluster://h:1,g:2?prefix=p&wait=1") == (
        "redis+cluster://h:1,g:2?wait=1&prefix=p-notifier"
    )
    assert notifier_uri("mongodb://u:p@h:1,g:2/?replicaSet=rs") == (
        "mongodb://u:p@h:1,g:2/zaqar-notifier?replicaSet=rs"
    )
    assert notifier_uri("mongodb+srv://c.example/msgs") == "mongodb+srv://c.example/msgs-notifier"
    assert notifier_uri("other://x") is None
    # Over TLS and through Sentinels: the same server, files and options, keys of its own
    from services.common.redis_store import RedisOptions

    for uri in ("rediss://h:6380/1?ssl_ca_certs=/etc/zaqar/redis-tls/ca.crt&prefix=p",
                "redis+sentinel://s1,s2:26380/mymaster/3?sentinel_password=x&prefix=p",
                "rediss+sentinel://s1/mymaster?ssl_certfile=/etc/c.pem"):
        derived = notifier_uri(uri)
        assert derived is not None
        mine = RedisOptions.parse(derived, "notifier store", "zn", 4)
        theirs = RedisOptions.parse(uri, "message store", "zm", 4)
        assert mine.prefix == f"{theirs.prefix}-notifier"
        assert dataclasses.replace(mine, store="", prefix="", max_connections=0) == (
            dataclasses.replace(theirs, store="", prefix="", max_connections=0)
        )


async def test_a_pool_store_with_pending_deliveries_is_not_closed_when_idle(
    tmp_path: Path,
) -> None:
    now = [0.0]
    own = await open_notifier_store(f"sqlite:///{tmp_path / 'own.db'}")

    async def opener(uri: str) -> NotifierStore:
        derived = notifier_uri(uri)
        assert derived is not None
        return await open_notifier_store(derived)

    stores = NotifierStores(own, opener, idle=60, clock=lambda: now[0])
    busy, idle = f"sqlite:///{tmp_path / 'busy.db'}", f"sqlite:///{tmp_path / 'idle.db'}"
    try:
        await fill(await stores.of_pool(busy), subscribers=1, each=1)
        await stores.of_pool(idle)
        now[0] = 120
        await stores.collect_garbage()
        assert stores.open_uris == [busy]
    finally:
        await stores.close()
        await own.close()


async def test_the_scan_opens_pools_with_pending_work_and_drops_deleted_ones(
    tmp_path: Path,
) -> None:
    own = await open_notifier_store(f"sqlite:///{tmp_path / 'own.db'}")
    pending, empty = f"sqlite:///{tmp_path / 'p.db'}", f"sqlite:///{tmp_path / 'e.db'}"
    listed = [pending, empty]

    async def opener(uri: str) -> NotifierStore:
        derived = notifier_uri(uri)
        assert derived is not None
        return await open_notifier_store(derived)

    async def catalog() -> list[str]:
        return list(listed)

    seed = await opener(pending)
    await fill(seed, subscribers=1, each=1)
    await seed.close()
    stores = NotifierStores(own, opener, idle=600, pools=catalog)
    try:
        await stores.scan()
        assert stores.open_uris == [pending]
        listed.remove(pending)
        await stores.scan()
        assert stores.open_uris == []
    finally:
        await stores.close()
        await own.close()

