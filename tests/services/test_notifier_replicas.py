"""notifier_svc as several replicas on one store (a shared SQLite file, one Redis, one MongoDB),
as behind one balanced target: a watcher held by one replica gets what is handed to another,
every replica answers "listened" for a queue watched anywhere and stops once nobody watches
it (or its replica died and the entry expired), and two replicas' dispatchers never make a
delivery twice while both live, and make those of a replica that died once its lease ends.

Replicas run in-process (``notifier_server.start``), except the one killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from zaqar_grpc.v2 import (
    common_pb2,
    messages_pb2,
    messages_pb2_grpc,
    notifier_pb2,
    notifier_pb2_grpc,
)

from services.common.config import Settings
from services.common.grpc_server import Running
from services.message_svc import server as message_server
from services.notifier_svc import server as notifier_server
from services.notifier_svc.delivery.dispatcher import LEASE_MARGIN, Dispatcher
from services.notifier_svc.storage.base import (
    Delivery,
    DeliveryKind,
    NewDelivery,
    NotifierStore,
)
from services.notifier_svc.storage.registry import open_notifier_store
from services.notifier_svc.watch_sharing import WATCH_TTL, WatchSharing
from services.notifier_svc.watchers import WatchHub
from services.queue_svc import server as queue_server
from tests import waiting
from tests.contract.conftest import (  # noqa: F401 - fixtures
    Clock,
    mongodb_uri,
    redis_uri,
    sqlite_uri,
)
from tests.servers import ServerProcess, free_port

PROJECT = "replicas-project"
WITHIN = 20.0


@pytest.fixture(params=["sqlite", "redis"])
def shared_uri(request: pytest.FixtureRequest) -> str:
    """The URI of one store that every replica of the test opens."""
    uri: str = request.getfixturevalue(f"{request.param}_uri")
    return uri


@pytest.fixture(params=["sqlite", "redis", "mongodb"])
def any_uri(request: pytest.FixtureRequest) -> str:
    uri: str = request.getfixturevalue(f"{request.param}_uri")
    return uri


# replicas -------------------------------------------------------------------------------------


@dataclass
class Replica:
    """A replica as its callers see it: its ``NotifierInternal`` service."""

    internal: notifier_pb2_grpc.NotifierInternalAsyncStub

    async def watch(self, queue: str, ttl: int = 120) -> Any:
        """A Watch stream, once the replica has registered it."""
        stream = self.internal.Watch(
            notifier_pb2.WatchRequest(project=PROJECT, queue=queue, ttl=ttl)
        )
        await stream.initial_metadata()
        return stream

    async def notify(self, queue: str, *bodies: str) -> bool:
        """Hand one post's messages over as message_svc does; whether the answer says
        listened."""
        [listened] = await self.notify_many((queue, bodies))
        return listened

    async def notify_many(self, *posts: tuple[str, Sequence[str]]) -> list[bool]:
        """Hand several posts over in one call: (queue, bodies) each."""
        reply = await self.internal.NotifyMany(notifier_pb2.NotifyManyRequest(batches=[
            notifier_pb2.NotifyRequest(
                project=PROJECT, queue=queue, accepted_at=time.time(),
                messages=[common_pb2.Message(id=uuid.uuid4().hex, body=orjson.dumps(b))
                          for b in bodies],
            )
            for queue, bodies in posts
        ]), timeout=10)
        return list(reply.listened)


def stub(address: str) -> tuple[grpc.aio.Channel, notifier_pb2_grpc.NotifierInternalAsyncStub]:
    channel = grpc.aio.insecure_channel(address)
    return channel, notifier_pb2_grpc.NotifierInternalStub(channel)


@pytest.fixture
async def start_replica(
    make_settings: Callable[..., Settings], shared_uri: str
) -> AsyncIterator[Callable[..., Awaitable[Replica]]]:
    started: list[Running] = []
    channels: list[grpc.aio.Channel] = []

    async def start(clock: Callable[[], float] = time.time) -> Replica:
        settings = make_settings(notifier_store=shared_uri)
        running = await notifier_server.start(settings, clock=clock)
        started.append(running)
        channel, internal = stub(f"{settings.host}:{running.port}")
        channels.append(channel)
        return Replica(internal)

    yield start
    for channel in channels:
        await channel.close()
    for running in started:
        await running.stop()


async def bodies(stream: Any, count: int) -> list[str]:
    """The bodies of the next ``count`` notifications of a Watch stream."""
    found: list[str] = []
    async with asyncio.timeout(WITHIN):
        while len(found) < count:
            notification = await stream.read()
            assert notification is not grpc.aio.EOF, f"the watch ended after {found}"
            found.append(orjson.loads(notification.message.body))
    return found


async def until(condition: Callable[[], Awaitable[bool]], within: float = WITHIN) -> None:
    await waiting.until(condition, within, every=0.05)

# watchers across replicas ---------------------------------------------------------------------


async def test_a_watch_on_one_replica_gets_what_is_handed_to_another(
    start_replica: Callable[..., Awaitable[Replica]],
) -> None:
    a, b = await start_replica(), await start_replica()
    # Given a watcher on replica A
    stream = await a.watch("watched")
    # When replica B gets the queue's messages, it answers that the queue is listened to
    assert await b.notify("watched", "1", "2") is True
    assert await b.notify("watched", "3") is True
    # Then A's watcher gets them, in order
    assert await bodies(stream, 3) == ["1", "2", "3"]
    # And a queue watched nowhere is not listened to on either replica
    assert await b.notify("other", "x") is False
    assert await a.notify("other", "x") is False
    # When one call hands over posts of several queues, each gets its own answer, and the
    # watcher gets its queue's messages in the order of the posts
    assert await b.notify_many(
        ("watched", ["4"]), ("other", ["y"]), ("watched", ["5", "6"]), ("watched", [])
    ) == [True, False, True, True]
    assert await bodies(stream, 3) == ["4", "5", "6"]
    stream.cancel()


async def test_each_watcher_gets_each_message_once(
    start_replica: Callable[..., Awaitable[Replica]],
) -> None:
    a, b = await start_replica(), await start_replica()
    # Given a watcher of the queue on each replica
    streams = {"a": await a.watch("both"), "b": await b.watch("both")}
    got: dict[str, list[str]] = {"a": [], "b": []}

    async def everyone_got(body: str) -> None:
        for name, stream in streams.items():
            while body not in got[name]:
                got[name] += await bodies(stream, 1)

    # When messages are handed to one replica and the other in turn (each one's own watcher
    # gets its messages at once, the other's through the feed)
    for n, replica in enumerate([a, b, a, b]):
        assert await replica.notify("both", f"m{n}") is True
        await everyone_got(f"m{n}")
    # Then each watcher got each message once: a copy through the feed of what a replica
    # handed to its own watcher would come before the next event of the other replica
    await a.notify("both", "end-a")
    await everyone_got("end-a")
    await b.notify("both", "end-b")
    await everyone_got("end-b")
    for name in streams:
        assert sorted(got[name]) == ["end-a", "end-b", "m0", "m1", "m2", "m3"], name
        streams[name].cancel()


async def test_listened_follows_the_watchers_of_every_replica(
    start_replica: Callable[..., Awaitable[Replica]],
) -> None:
    a, b = await start_replica(), await start_replica()
    assert await b.notify("q") is False
    # Given two watchers of the queue on A only
    first, second = await a.watch("q"), await a.watch("q")
    # Then B counts the queue as listened to
    assert await b.notify("q") is True
    # While one of A's watchers is left, it still does
    first.cancel()
    assert await b.notify("q", "still") is True
    assert await bodies(second, 1) == ["still"]
    # And once A's last watcher ends, B stops (its entry is removed, not left to expire)
    second.cancel()
    await until(lambda: not_listened(b, "q"))
    assert await a.notify("q") is False


async def not_listened(replica: Replica, queue: str) -> bool:
    return not await replica.notify(queue)


async def test_a_killed_replica_is_forgotten_once_its_entries_expire(
    make_settings: Callable[..., Settings],
    start_replica: Callable[..., Awaitable[Replica]],
    shared_uri: str,
    tmp_path: Path,
) -> None:
    # Given replica A in its own process, and B whose clock the test moves
    offset = [0.0]
    b = await start_replica(clock=lambda: time.time() + offset[0])
    settings = make_settings(notifier_store=shared_uri)
    a = notifier_process(settings, tmp_path / "replica-a")
    a.start()
    channel, internal = stub(f"127.0.0.1:{a.port}")
    try:
        stream = await Replica(internal).watch("orphan")
        assert await b.notify("orphan") is True
        # When A is killed, with no chance to remove its entry
        a.kill()
        stream.cancel()
        # Then B still counts the queue as listened to while the entry lives
        assert await b.notify("orphan") is True
        # And not once the entry has expired, A's heartbeat being gone
        offset[0] = WATCH_TTL + 1
        assert await b.notify("orphan") is False
    finally:
        await channel.close()
        a.stop()


def notifier_process(settings: Settings, workdir: Path) -> ServerProcess:
    """notifier_svc as its own OS process (``python -m services.notifier_svc.server``)."""
    env = {
        "ZAQAR_NOTIFIER_STORE": settings.notifier_store,
        "ZAQAR_NOTIFIER_PORT": str(settings.notifier_port),
        "ZAQAR_NOTIFIER_METRICS_PORT": str(settings.notifier_metrics_port),
        "ZAQAR_MESSAGE_PORT": str(settings.message_port),
        "ZAQAR_QUEUE_PORT": str(settings.queue_port),
        "ZAQAR_DATA_DIR": str(workdir / "data"),
    }
    argv = ["env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m",
            "services.notifier_svc.server"]
    return ServerProcess(argv, settings.notifier_port, workdir)


async def test_posts_reach_a_watcher_whichever_replica_they_are_handed_to(
    make_settings: Callable[..., Settings], shared_uri: str,
) -> None:
    # Given message_svc balancing its hand-overs over two notifier_svc replicas
    ports = free_port(), free_port()
    base = make_settings(
        notifier_store=shared_uri,
        notifier_target=",".join(f"127.0.0.1:{port}" for port in ports),
    )
    started = [await queue_server.start(base), await message_server.start(base)]
    for port in ports:
        started.append(await notifier_server.start(dataclasses.replace(base, notifier_port=port)))
    channels = []
    try:
        channel, internal = stub(f"127.0.0.1:{ports[0]}")
        channels.append(channel)
        messages_channel = grpc.aio.insecure_channel(base.target("message"))
        channels.append(messages_channel)
        messages = messages_pb2_grpc.MessagesStub(messages_channel)
        # And a watcher on the first replica
        stream = internal.Watch(notifier_pb2.WatchRequest(project=PROJECT, queue="posted", ttl=60))
        await stream.initial_metadata()
        # When messages are posted one by one
        posted = [f"p{n}" for n in range(10)]
        for body in posted:
            await messages.PostMessages(messages_pb2.PostMessagesRequest(
                project=PROJECT, queue="posted", client_id=str(uuid.uuid4()),
                messages=[messages_pb2.NewMessage(body=f'"{body}"'.encode(), ttl=300)],
            ), timeout=10)
        # Then the watcher gets every one of them (the replica each was handed to decides
        # only how soon)
        got = await bodies(stream, len(posted))
        assert sorted(got) == sorted(posted)
        stream.cancel()
    finally:
        for channel in channels:
            await channel.close()
        for running in reversed(started):
            await running.stop()


async def test_a_heartbeat_keeps_the_entries_and_announces_a_lapsed_one(
    shared_uri: str,
) -> None:
    clock = Clock()
    store = await open_notifier_store(shared_uri, now=clock)
    announced: list[tuple[str, str]] = []
    beats = [0]
    keep_watching = store.keep_watching

    async def counted(*args: Any) -> list[tuple[str, str]]:
        beats[0] += 1
        return await keep_watching(*args)

    async def announce(project: str, queue: str) -> None:
        announced.append((project, queue))

    store.keep_watching = counted  # type: ignore[method-assign,assignment]
    sharing = WatchSharing(store, WatchHub(), announce, heartbeat=0.05, ttl=30)

    async def beats_after(seen: int) -> None:
        async def beaten() -> bool:
            return beats[0] > seen + 1  # a whole heartbeat after ``seen``

        await until(beaten)

    try:
        # Given a watcher, registered in the store
        watcher = await sharing.watch(PROJECT, "q")
        assert await store.watchers(PROJECT, "q") == [sharing.replica]
        # When more time than the entry's ttl passes, heartbeats keep it alive
        for _ in range(3):
            clock.advance(20)
            await beats_after(beats[0])
            assert await store.watchers(PROJECT, "q") == [sharing.replica]
        assert announced == []
        # And when the entry went anyway (the store was out of reach for its ttl), the next
        # heartbeat writes it again and tells message_svc that the queue is listened to
        await store.stop_watching(sharing.replica)
        await beats_after(beats[0])
        assert await store.watchers(PROJECT, "q") == [sharing.replica]
        assert announced == [(PROJECT, "q")]
        # Once the last watcher has left, the entry is removed
        sharing.unwatch(PROJECT, "q", watcher)

        async def gone() -> bool:
            return await store.watchers(PROJECT, "q") == []

        await until(gone)
    finally:
        await sharing.close()
        await store.close()


# deliveries across replicas -------------------------------------------------------------------


class Recorder:
    """A sender that records every attempt (delivery id, start, end); the first attempt of
    every third document fails, and each attempt takes ``seconds``."""

    def __init__(self, seconds: float = 0.005, hang: bool = False) -> None:
        self.attempts: list[tuple[str, bytes, float, float, bool]] = []
        self.running: Counter[str] = Counter()
        self.overlapped: list[str] = []
        self.cancelled: list[float] = []
        self.started = asyncio.Event()
        self._seconds = seconds
        self._hang = hang
        self._failed: set[bytes] = set()

    async def send(self, delivery: Delivery) -> bool:
        started = time.monotonic()
        self.running[delivery.id] += 1
        if self.running[delivery.id] > 1:
            self.overlapped.append(delivery.id)
        self.started.set()
        try:
            if self._hang:
                await asyncio.Event().wait()
            await asyncio.sleep(self._seconds)
        except asyncio.CancelledError:
            self.cancelled.append(time.monotonic() - started)
            raise
        finally:
            self.running[delivery.id] -= 1
        document = delivery.document
        ok = int(document.split(b":")[-1].rstrip(b"}")) % 3 != 0 or document in self._failed
        self._failed.add(document)
        self.attempts.append((delivery.id, document, started, time.monotonic(), ok))
        return ok

    def delivered(self) -> Counter[bytes]:
        return Counter(document for _, document, _, _, ok in self.attempts if ok)


async def no_queue_policy(project: str, queue: str) -> Any:
    return None


async def fill(store: NotifierStore, subscribers: int, each: int) -> int:
    for s in range(subscribers):
        sub, _ = await store.create(PROJECT, "q", f"http://127.0.0.1:9/s{s}", 3600, {})
        await store.enqueue([
            NewDelivery(
                subscription_id=sub.id, project=PROJECT, queue="q", subscriber=sub.subscriber,
                options={}, kind=DeliveryKind.NOTIFICATION,
                document=b'{"n":%d}' % (s * each + n),
            )
            for n in range(each)
        ])
    return subscribers * each


async def test_two_replicas_never_make_a_delivery_twice_while_both_live(any_uri: str) -> None:
    stores = [await open_notifier_store(any_uri) for _ in range(2)]
    senders = [Recorder(), Recorder()]
    dispatchers = [
        Dispatcher(store, {"http": sender}, no_queue_policy, concurrency=4, timeout=5)
        for store, sender in zip(stores, senders, strict=True)
    ]
    try:
        # Given pending deliveries to several subscribers, a third failing at first
        total = await fill(stores[0], subscribers=5, each=24)
        # When two replicas' dispatchers make them
        for dispatcher in dispatchers:
            dispatcher.start()

        async def done() -> bool:
            return await stores[0].count_deliveries() == 0

        await until(done, within=60)
    finally:
        for dispatcher in dispatchers:
            await dispatcher.stop()
        for store in stores:
            await store.close()
    # Then every delivery was delivered once, both replicas took part, and no two attempts
    # at one delivery ever ran at once
    delivered = senders[0].delivered() + senders[1].delivered()
    assert sorted(delivered.values()) == [1] * total
    assert all(sender.delivered() for sender in senders)
    assert senders[0].overlapped == senders[1].overlapped == []
    spans: dict[str, list[tuple[float, float]]] = {}
    for sender in senders:
        for delivery_id, _, start, end, _ in sender.attempts:
            spans.setdefault(delivery_id, []).append((start, end))
    for delivery_id, attempts in spans.items():
        attempts.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(attempts)), delivery_id


async def test_what_a_dead_replica_leased_is_made_by_another_once_the_lease_ends(
    shared_uri: str,
) -> None:
    clock = Clock()
    timeout = 5.0
    dead = await open_notifier_store(shared_uri, now=clock)
    live = await open_notifier_store(shared_uri, now=clock)
    claims = []
    claim_due = live.claim_due

    async def counted(**kwargs: Any) -> list[Delivery]:
        taken = await claim_due(**kwargs)
        claims.append(len(taken))
        return taken

    live.claim_due = counted  # type: ignore[method-assign]
    sender = Recorder()
    dispatcher = Dispatcher(
        live, {"http": sender}, no_queue_policy, concurrency=8, timeout=timeout, clock=clock
    )
    try:
        # Given deliveries that a replica leased (as its dispatcher does) before it died
        total = await fill(dead, subscribers=2, each=3)
        leased = await dead.claim_due(
            limit=10, lease=timeout + LEASE_MARGIN, per_subscriber=10
        )
        assert len(leased) == total
        await dead.close()
        # When the other replica looks for work while the lease runs, it takes nothing
        dispatcher.start()
        for _ in range(3):
            seen = len(claims)
            dispatcher.wake()

            async def looked(seen: int = seen) -> bool:
                return len(claims) > seen

            await until(looked)
        assert sum(claims) == 0 and sender.attempts == []
        # Then once the lease has ended, it makes each of them once
        clock.advance(timeout + LEASE_MARGIN)
        dispatcher.wake()

        async def done() -> bool:
            return await live.count_deliveries() == 0

        await until(done)
        assert sorted(sender.delivered().values()) == [1] * total
        assert {d for d, *_ in sender.attempts} == {d.id for d in leased}
    finally:
        await dispatcher.stop()
        await live.close()


async def test_an_attempt_is_abandoned_before_its_lease_ends(
    sqlite_uri: str,  # noqa: F811 - the fixture
) -> None:
    store = await open_notifier_store(sqlite_uri)
    sender = Recorder(hang=True)
    timeout = 0.5
    dispatcher = Dispatcher(store, {"http": sender}, no_queue_policy, concurrency=4,
                            timeout=timeout)
    try:
        # Given a delivery to a subscriber that never answers
        await fill(store, subscribers=1, each=1)
        dispatcher.start()
        # When the attempt has taken the delivery timeout, it is abandoned (and retried)

        async def abandoned() -> bool:
            return len(sender.cancelled) >= 2

        await until(abandoned)
        # Then each attempt ended after about the timeout, far within its lease, and the
        # attempts never ran at once
        assert all(timeout * 0.9 <= took < timeout + LEASE_MARGIN for took in sender.cancelled)
        assert sender.overlapped == []
    finally:
        await dispatcher.stop()
        await store.close()

