"""Queues placed on pools, through the real services: queue_svc places a new queue on a pool of
the catalog and message_svc keeps its messages in that pool's store, on SQLite files and on
two real Redis servers. Where messages are is checked in the stores themselves, not through
the services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from zaqar_grpc.v2 import admin_pb2, common_pb2, messages_pb2, queues_pb2

from services.common.config import Settings
from services.message_svc.storage.registry import open_store
from tests.servers import ServerProcess
from tests.services._pools import (  # noqa: F401 - redis_pair is a fixture
    CLIENT,
    PooledServices,
    pooled_services,
    redis_pair,
    redis_pools,
    sqlite_pools,
)
from tests.services.test_queue_svc import patch, rpc_error

PROJECT = "placement-project"


@dataclass
class Pooled(PooledServices):
    project = PROJECT

    async def placed(self, queue: str) -> tuple[str, str]:
        answer = await self.stubs.queues.GetQueue(queues_pb2.GetQueueRequest(
            project=PROJECT, queue=queue, with_placement=True
        ))
        return answer.pool, answer.pool_uri

    async def totals(self, queue: str) -> dict[str, int]:
        """The queue's messages in each pool's store and in message_svc's own, read from the
        stores directly."""
        found = {}
        for name, uri in [*self.uris.items(), ("own", self.settings.store_uri("message"))]:
            store = await open_store(uri)
            try:
                found[name] = (await store.stats(PROJECT, queue)).total
            finally:
                await store.close()
        return found


@pytest.fixture(params=["sqlite", "redis"])
async def pooled(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Pooled]:
    """The three services with pooling on (own stores on SQLite) and three pool stores, a, b
    and c (not registered yet): SQLite files, or a and b on two redis-servers (c on SQLite)."""
    servers: dict[str, ServerProcess] = {}
    uris = sqlite_pools(tmp_path, "abc")
    if request.param == "redis":
        on_redis, servers = await redis_pools(request.getfixturevalue("redis_pair"))
        uris.update(on_redis)
    settings = make_settings(pooling=True, rpc_timeout=3.0)
    async with pooled_services(settings) as s:
        yield Pooled(settings, s, uris, servers)


async def test_messages_of_a_placed_queue_are_in_its_pool_only(pooled: Pooled) -> None:
    # Given pool a takes new queues and pool b (weight 0) takes none
    await pooled.put_pool("a", weight=1)
    await pooled.put_pool("b", weight=0)

    # When a queue is created and messages are posted to it
    await pooled.create("orders")
    assert await pooled.placed("orders") == ("a", pooled.uris["a"])
    ids = await pooled.post("orders", 3)

    # Then they are in a's store and nowhere else, and every operation finds them there
    assert await pooled.totals("orders") == {"a": 3, "b": 0, "c": 0, "own": 0}
    listed = await pooled.stubs.messages.ListMessages(messages_pb2.ListMessagesRequest(
        project=PROJECT, queue="orders", client_id=CLIENT, echo=True
    ))
    assert [m.id for m in listed.messages] == ids
    claim = await pooled.stubs.messages.CreateClaim(messages_pb2.CreateClaimRequest(
        project=PROJECT, queue="orders", limit=2
    ))
    assert [m.id for m in claim.messages] == ids[:2]
    stats = await pooled.stubs.messages.GetStats(
        common_pb2.QueueRef(project=PROJECT, queue="orders")
    )
    assert (stats.claimed, stats.free) == (2, 1)
    await pooled.stubs.messages.DeleteMessage(messages_pb2.DeleteMessageRequest(
        project=PROJECT, queue="orders", message_id=ids[0], claim_id=claim.id
    ))
    assert (await pooled.totals("orders"))["a"] == 2

    # And a metadata change reaches the next post (the version is kept in a's store)
    await pooled.stubs.queues.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project=PROJECT, queue="orders",
        operations=[patch("add", "/metadata/_max_messages_post_size", 5)],
    ))
    too_big = await rpc_error(pooled.post("orders"))
    assert too_big.code == grpc.StatusCode.INVALID_ARGUMENT

    # And deleting the queue cleans pool a
    await pooled.stubs.queues.DeleteQueue(queues_pb2.DeleteQueueRequest(
        project=PROJECT, queue="orders"
    ))
    assert await pooled.totals("orders") == {"a": 0, "b": 0, "c": 0, "own": 0}


async def test_a_post_to_an_absent_queue_places_it(pooled: Pooled) -> None:
    await pooled.put_pool("b", weight=7)
    await pooled.post("lazy", 2)
    assert await pooled.placed("lazy") == ("b", pooled.uris["b"])
    assert await pooled.totals("lazy") == {"a": 0, "b": 2, "c": 0, "own": 0}


async def test_weight_zero_is_never_drawn_and_no_pool_means_the_own_store(
    pooled: Pooled,
) -> None:
    await pooled.create("before")
    assert await pooled.placed("before") == ("", "")
    await pooled.put_pool("a", weight=0)
    await pooled.put_pool("b", weight=3)
    await pooled.put_pool("c", weight=1)
    await asyncio.gather(*(pooled.create(f"q{i}") for i in range(40)))
    placed = {(await pooled.placed(f"q{i}"))[0] for i in range(40)}
    assert "a" not in placed and placed <= {"b", "c"}


async def test_a_flavor_routes_to_its_pools_and_a_queue_keeps_its_pool(pooled: Pooled) -> None:
    # Given pool a in flavor gold, pool c in flavor silver, pool b without a flavor
    await pooled.put_pool("a", weight=1)
    await pooled.put_pool("b", weight=1)
    await pooled.put_pool("c", weight=1)
    for flavor, pool in (("gold", "a"), ("silver", "c")):
        await pooled.flavors.PutFlavor(admin_pb2.PutFlavorRequest(
            project=PROJECT, name=flavor, pool_list=[pool]
        ))

    # When queues are created with and without a flavor
    await pooled.create("golden", _flavor="gold")
    await pooled.create("plain")

    # Then each is on a pool of its flavor, or on a pool without one
    assert (await pooled.placed("golden"))[0] == "a"
    assert (await pooled.placed("plain"))[0] == "b"
    await pooled.post("golden")
    assert await pooled.totals("golden") == {"a": 1, "b": 0, "c": 0, "own": 0}

    # And its _flavor cannot name a flavor its pool is not in, by PATCH or by PUT
    moved = await rpc_error(pooled.stubs.queues.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project=PROJECT, queue="golden", operations=[patch("replace", "/metadata/_flavor",
                                                            "silver")],
    )))
    assert moved.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "pool a, which is not a pool of flavor silver" in moved.description
    replaced = await rpc_error(pooled.create("golden", _flavor="silver"))
    assert replaced.code == grpc.StatusCode.INVALID_ARGUMENT
    await pooled.create("golden", _flavor="gold", note="kept")
    assert (await pooled.placed("golden"))[0] == "a"


async def test_a_new_queue_goes_on_the_pool_of_its_dead_letter_queue(pooled: Pooled) -> None:
    # Given three pools that take new queues alike, and dead-letter queues drawn onto them
    for name in "abc":
        await pooled.put_pool(name, weight=1)
    for n in range(6):
        await pooled.create(f"dlq{n}")
        dlq_pool = (await pooled.placed(f"dlq{n}"))[0]
        assert dlq_pool in "abc"
        # When a new queue without a _flavor names one as its dead-letter queue
        await pooled.create(f"source{n}", _dead_letter_queue=f"dlq{n}", _max_claim_count=1)
        # Then it is created on that queue's pool (a draw would be refused 2 times in 3)
        assert (await pooled.placed(f"source{n}"))[0] == dlq_pool


async def test_a_dead_letter_queue_on_another_pool_is_refused(pooled: Pooled) -> None:
    await pooled.put_pool("a", weight=1)
    await pooled.put_pool("c", weight=1)
    await pooled.flavors.PutFlavor(admin_pb2.PutFlavorRequest(
        project=PROJECT, name="gold", pool_list=["a"]
    ))
    await pooled.flavors.PutFlavor(admin_pb2.PutFlavorRequest(
        project=PROJECT, name="silver", pool_list=["c"]
    ))
    await pooled.create("source", _flavor="gold")
    await pooled.create("elsewhere", _flavor="silver")
    await pooled.create("nearby", _flavor="gold")

    refused = await rpc_error(pooled.stubs.queues.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project=PROJECT, queue="source",
        operations=[patch("add", "/metadata/_dead_letter_queue", "elsewhere")],
    )))
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "must be on the same pool" in refused.description
    refused = await rpc_error(pooled.create(
        "source", _flavor="gold", _dead_letter_queue="elsewhere", _max_claim_count=1
    ))
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT

    # A dead-letter queue on the same pool, or one that does not exist yet, is accepted; the
    # latter is created on the source's pool by the first move
    await pooled.create("source", _flavor="gold", _dead_letter_queue="nearby",
                        _max_claim_count=1)
    await pooled.create("source", _flavor="gold", _dead_letter_queue="graveyard",
                        _max_claim_count=1, _dead_letter_queue_messages_ttl=3600)
    await pooled.post("source")
    claim = messages_pb2.CreateClaimRequest(project=PROJECT, queue="source", ttl=60, grace=60)
    for _ in range(3):
        claimed = await pooled.stubs.messages.CreateClaim(claim)
        if not claimed.id:
            break
        await pooled.stubs.messages.DeleteClaim(messages_pb2.DeleteClaimRequest(
            project=PROJECT, queue="source", claim_id=claimed.id
        ))
    assert await pooled.placed("graveyard") == ("a", pooled.uris["a"])
    assert await pooled.totals("graveyard") == {"a": 1, "b": 0, "c": 0, "own": 0}


async def test_a_pool_holding_queues_is_not_deleted_or_moved(pooled: Pooled) -> None:
    await pooled.put_pool("a", weight=1)
    await pooled.create("q1")
    await pooled.post("q2")

    held = await rpc_error(pooled.pools.DeletePool(admin_pb2.DeletePoolRequest(name="a")))
    assert (held.code, held.reason) == (grpc.StatusCode.ALREADY_EXISTS, "POOL_HOLDS_QUEUES")
    assert held.description.startswith("Pool a holds 2 queue(s); it cannot be deleted")
    moved = await rpc_error(pooled.pools.UpdatePool(admin_pb2.UpdatePoolRequest(
        name="a", uri=pooled.uris["c"]
    )))
    assert moved.reason == "POOL_HOLDS_QUEUES"
    await pooled.pools.UpdatePool(admin_pb2.UpdatePoolRequest(name="a", weight=0))

    for queue in ("q1", "q2"):
        await pooled.stubs.queues.DeleteQueue(queues_pb2.DeleteQueueRequest(
            project=PROJECT, queue=queue
        ))
    await pooled.pools.DeletePool(admin_pb2.DeletePoolRequest(name="a"))


async def test_a_pool_that_is_down_fails_its_queues_only(pooled: Pooled) -> None:
    if not pooled.servers:
        pytest.skip("a SQLite pool does not go down")
    await pooled.put_pool("a", weight=1)
    await pooled.create("on-a")
    await pooled.post("on-a")
    await pooled.pools.UpdatePool(admin_pb2.UpdatePoolRequest(name="a", weight=0))
    await pooled.put_pool("b", weight=1)
    await pooled.create("on-b")

    pooled.servers["a"].kill()
    try:
        down = await rpc_error(pooled.post("on-a"))
        assert down.code == grpc.StatusCode.UNAVAILABLE
        listed = await rpc_error(pooled.stubs.messages.ListMessages(
            messages_pb2.ListMessagesRequest(project=PROJECT, queue="on-a", client_id=CLIENT)
        ))
        assert listed.code == grpc.StatusCode.UNAVAILABLE
        assert len(await pooled.post("on-b", 2)) == 2
    finally:
        pooled.servers["a"].start()
    assert len(await pooled.post("on-b")) == 1


async def test_placement_is_kept_for_our_services_only(pooled: Pooled) -> None:
    await pooled.put_pool("a", weight=1)
    await pooled.create("q")
    plain = await pooled.stubs.queues.GetQueue(queues_pb2.GetQueueRequest(
        project=PROJECT, queue="q"
    ))
    assert (plain.pool, plain.pool_uri) == ("", "")


async def test_a_queue_created_again_elsewhere_while_its_old_pool_is_down_works(
    pooled: Pooled,
) -> None:
    if not pooled.servers:
        pytest.skip("a SQLite pool does not go down")
    # Given a queue on pool a, known to message_svc
    await pooled.put_pool("a", weight=1)
    await pooled.post("moving")
    await pooled.pools.UpdatePool(admin_pb2.UpdatePoolRequest(name="a", weight=0))
    await pooled.put_pool("b", weight=1)

    # When pool a goes down, the queue is deleted (its messages cannot be removed: 503) and
    # created again, on pool b
    pooled.servers["a"].kill()
    try:
        failed = await rpc_error(pooled.stubs.queues.DeleteQueue(queues_pb2.DeleteQueueRequest(
            project=PROJECT, queue="moving"
        )))
        assert failed.code == grpc.StatusCode.UNAVAILABLE
        await pooled.create("moving")
        assert (await pooled.placed("moving"))[0] == "b"

        # Then posts reach it on b
        assert len(await pooled.post("moving", 2)) == 2
    finally:
        pooled.servers["a"].start()
    assert (await pooled.totals("moving"))["b"] == 2
