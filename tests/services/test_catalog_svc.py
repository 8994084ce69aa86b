"""queue_svc's ``zaqar.v2.Pools``, ``zaqar.v2.Flavors`` and ``zaqar.v2.StoreHealth`` over real
gRPC: gRPC callers get the same rules, codes and reasons as REST callers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from zaqar_grpc.v2 import admin_pb2, admin_pb2_grpc, queues_pb2

from services.common.config import Settings
from services.queue_svc.server import start
from tests.services.test_queue_svc import assert_error, queues_stub, rpc_error


@dataclass
class Catalog:
    pools: Any
    flavors: Any
    health: Any
    channel: grpc.aio.Channel
    folder: Path
    pooling: bool

    def uri(self, name: str) -> str:
        return f"sqlite:///{self.folder / name}.db"

    async def put_pool(self, name: str, **fields: Any) -> admin_pb2.PutPoolResponse:
        fields.setdefault("uri", self.uri(name))
        fields.setdefault("weight", 10)
        return await self.pools.PutPool(admin_pb2.PutPoolRequest(name=name, **fields))


@pytest.fixture(params=[True, False], ids=["pooling", "no-pooling"])
async def catalog(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Catalog]:
    """queue_svc alone (no message_svc behind it), with or without pooling: the catalog is
    served either way over gRPC; pooling decides only what queues and the health check do."""
    settings = make_settings(rpc_timeout=2.0, pooling=request.param)
    running = await start(settings)
    try:
        async with grpc.aio.insecure_channel(f"{settings.host}:{running.port}") as channel:
            yield Catalog(
                admin_pb2_grpc.PoolsStub(channel),  # type: ignore[no-untyped-call]
                admin_pb2_grpc.FlavorsStub(channel),  # type: ignore[no-untyped-call]
                admin_pb2_grpc.StoreHealthStub(channel),  # type: ignore[no-untyped-call]
                channel,
                tmp_path,
                settings.pooling,
            )
    finally:
        await running.stop()


async def test_pool_round_trip(catalog: Catalog) -> None:
    reply = await catalog.put_pool("p1", flavor="gold", options=b'{"b": 1, "a": [2]}')
    assert reply.created is True
    assert (await catalog.put_pool("p1")).created is False
    pool = await catalog.pools.GetPool(admin_pb2.GetPoolRequest(name="p1"))
    assert (pool.name, pool.uri, pool.weight, pool.flavor) == ("p1", catalog.uri("p1"), 10, "")
    assert pool.options == b"{}"
    updated = await catalog.pools.UpdatePool(
        admin_pb2.UpdatePoolRequest(name="p1", weight=3, options=b'{"x": true}')
    )
    assert (updated.weight, orjson.loads(updated.options)) == (3, {"x": True})
    listed = await catalog.pools.ListPools(admin_pb2.ListPoolsRequest(limit=1))
    assert [p.name for p in listed.pools] == ["p1"] and listed.next_marker == "p1"


async def test_pool_errors_carry_codes_and_reasons(catalog: Catalog) -> None:
    assert_error(
        await rpc_error(catalog.pools.GetPool(admin_pb2.GetPoolRequest(name="nope"))),
        grpc.StatusCode.NOT_FOUND, "POOL_NOT_FOUND", "Not found", "Pool nope does not exist",
    )
    info = await rpc_error(catalog.put_pool("bad", uri="redis://127.0.0.1:1/0"))
    assert (info.code, info.reason, info.title) == (
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_BODY", "Invalid request body"
    )
    assert info.description.startswith("cannot connect to redis://127.0.0.1:1/0: ")
    await catalog.put_pool("p1")
    assert_error(
        await rpc_error(catalog.put_pool("p2", uri=catalog.uri("p1"))),
        grpc.StatusCode.ALREADY_EXISTS, "POOL_URI_IN_USE", "Resource conflict",
        f"Pool p1 already uses the store {catalog.uri('p1')}.",
    )
    info = await rpc_error(catalog.pools.UpdatePool(admin_pb2.UpdatePoolRequest(name="p1")))
    assert info.description == (
        "One of `uri`, `weight`, `flavor`, or `options` needs to be specified"
    )
    info = await rpc_error(catalog.put_pool("p3", options=b"[1]"))
    assert info.description == "options must be a JSON object."
    info = await rpc_error(catalog.pools.ListPools(admin_pb2.ListPoolsRequest(limit=21)))
    assert info.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("character", ["\x00", "\n", "\x1b", "\x85"])
async def test_pool_uris_with_a_control_character_are_refused(
    catalog: Catalog, character: str
) -> None:
    # Given a SQLite store URI in a writable folder, with a control character in its file name
    uri = f"sqlite:///{catalog.folder}/a{character}b.db"
    await catalog.put_pool("p1")
    # When a pool is registered on it, or moved to it
    calls = [
        catalog.put_pool("p2", uri=uri),
        catalog.pools.UpdatePool(admin_pb2.UpdatePoolRequest(name="p1", uri=uri)),
    ]
    # Then both are refused, saying why, and nothing changed
    for call in calls:
        info = await rpc_error(call)
        assert (info.code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_BODY")
        assert f"control character {character!r} at position" in info.description
    listed = await catalog.pools.ListPools(admin_pb2.ListPoolsRequest())
    assert [(p.name, p.uri) for p in listed.pools] == [("p1", catalog.uri("p1"))]


async def test_flavors_over_grpc(catalog: Catalog) -> None:
    await catalog.put_pool("p1")
    request = admin_pb2.PutFlavorRequest(project="proj", name="gold", pool_list=["p1"])
    assert (await catalog.flavors.PutFlavor(request)).created is True
    flavor = await catalog.flavors.GetFlavor(admin_pb2.GetFlavorRequest(project="proj",
                                                                        name="gold"))
    assert list(flavor.pool_list) == ["p1"]
    assert list(flavor.capabilities) == ["FIFO", "CLAIMS", "DURABILITY", "AOD"]
    assert_error(
        await rpc_error(catalog.pools.DeletePool(admin_pb2.DeletePoolRequest(name="p1"))),
        grpc.StatusCode.PERMISSION_DENIED, "POOL_IN_USE_BY_FLAVOR", "Unable to delete",
        "This pool is used by flavors gold; It cannot be deleted.",
    )
    info = await rpc_error(catalog.flavors.PutFlavor(
        admin_pb2.PutFlavorRequest(project="proj", name="gold", pool_list=["ghost"])
    ))
    assert (info.code, info.reason, info.title) == (
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FLAVOR", "Unable to create"
    )
    info = await rpc_error(catalog.flavors.GetFlavor(
        admin_pb2.GetFlavorRequest(project="other", name="gold")
    ))
    assert (info.code, info.reason) == (grpc.StatusCode.NOT_FOUND, "FLAVOR_NOT_FOUND")


async def test_queue_flavor_is_checked_only_with_pooling(catalog: Catalog) -> None:
    create = queues_pb2.CreateQueueRequest(project="proj", queue="q", metadata=b'{"_flavor": "x"}')
    call = queues_stub(catalog.channel).CreateQueue(create)
    if not catalog.pooling:
        # Without pooling, _flavor is plain metadata (message_svc is not there to invalidate)
        info = await rpc_error(call)
        assert info.code == grpc.StatusCode.UNAVAILABLE
        return
    info = await rpc_error(call)
    assert (info.code, info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert info.description.startswith("Flavor x does not exist for project proj")


async def test_store_health_of_queue_svc(catalog: Catalog) -> None:
    await catalog.put_pool("p1")
    health = await catalog.health.CheckStores(admin_pb2.CheckStoresRequest(), timeout=5)
    reports = {r.store: r for r in health.stores}
    assert [op.name for op in reports["queue"].operations] == ["create_queue", "delete_queue"]
    if catalog.pooling:
        assert reports["catalog"].reachable
        assert [(p.name, p.uri) for p in health.pools] == [("p1", catalog.uri("p1"))]
    else:
        assert "catalog" not in reports and list(health.pools) == []


@pytest.mark.parametrize("scheme", [
    "redis", "redis+cluster", "rediss", "rediss+cluster", "redis+sentinel", "rediss+sentinel"
])
def test_a_flavor_on_redis_pools_has_redis_capabilities(scheme: str) -> None:
    from services.queue_svc.catalog import capabilities
    from services.queue_svc.storage.catalog import PoolRecord

    # Whatever form the Redis URI takes (one server or a cluster, with TLS or not)
    pools = [PoolRecord("r", f"{scheme}://h:1", 1, "f", None),
             PoolRecord("m", "mongodb://h:2/z", 1, "f", None)]
    # Then the flavor guarantees what Redis and MongoDB both do
    assert capabilities(pools) == ["FIFO", "CLAIMS", "AOD", "HIGH_THROUGHPUT"]
    assert capabilities(pools[:1]) == ["FIFO", "CLAIMS", "AOD", "HIGH_THROUGHPUT"]
