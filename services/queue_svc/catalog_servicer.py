"""``zaqar.v2.Pools`` and ``zaqar.v2.Flavors`` over gRPC: unpacks requests, packs replies.

Domain errors are raised as :class:`services.common.errors.ServiceError` by the catalog
service and turned into statuses by the server's error interceptor.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import orjson
from google.protobuf import empty_pb2
from zaqar_grpc.v2 import admin_pb2, admin_pb2_grpc

from services.common.grpc_types import Context
from services.queue_svc.catalog import CatalogService, capabilities
from services.queue_svc.storage.catalog import FlavorRecord, PoolRecord

POOLS_SERVICE = "zaqar.v2.Pools"
FLAVORS_SERVICE = "zaqar.v2.Flavors"


def pack_pool(pool: PoolRecord) -> admin_pb2.Pool:
    return admin_pb2.Pool(
        name=pool.name, uri=pool.uri, weight=pool.weight, flavor=pool.flavor or "",
        options=orjson.dumps(pool.options),
    )


def pack_flavor(flavor: FlavorRecord) -> admin_pb2.Flavor:
    return admin_pb2.Flavor(
        project=flavor.project,
        name=flavor.name,
        pool_list=[pool.name for pool in flavor.pools],
        capabilities=capabilities(flavor.pools),
    )


class PoolsServicer(admin_pb2_grpc.PoolsServicer):
    def __init__(self, service: CatalogService) -> None:
        self._service = service

    async def PutPool(
        self, request: admin_pb2.PutPoolRequest, context: Context
    ) -> admin_pb2.PutPoolResponse:
        created = await self._service.put_pool(
            request.name, request.uri, request.weight, request.flavor, request.options
        )
        return admin_pb2.PutPoolResponse(created=created)

    async def GetPool(self, request: admin_pb2.GetPoolRequest, context: Context) -> admin_pb2.Pool:
        return pack_pool(await self._service.get_pool(request.name))

    async def UpdatePool(
        self, request: admin_pb2.UpdatePoolRequest, context: Context
    ) -> admin_pb2.Pool:
        pool = await self._service.update_pool(
            request.name,
            uri=request.uri if request.HasField("uri") else None,
            weight=request.weight if request.HasField("weight") else None,
            flavor=request.flavor if request.HasField("flavor") else None,
            options=request.options if request.HasField("options") else None,
        )
        return pack_pool(pool)

    async def DeletePool(
        self, request: admin_pb2.DeletePoolRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.delete_pool(request.name)
        return empty_pb2.Empty()

    async def ListPools(
        self, request: admin_pb2.ListPoolsRequest, context: Context
    ) -> admin_pb2.ListPoolsResponse:
        pools = await self._service.list_pools(
            limit=request.limit if request.HasField("limit") else None, marker=request.marker
        )
        return admin_pb2.ListPoolsResponse(
            pools=[pack_pool(pool) for pool in pools],
            next_marker=pools[-1].name if pools else "",
        )


class FlavorsServicer(admin_pb2_grpc.FlavorsServicer):
    def __init__(self, service: CatalogService) -> None:
        self._service = service

    async def PutFlavor(
        self, request: admin_pb2.PutFlavorRequest, context: Context
    ) -> admin_pb2.PutFlavorResponse:
        created = await self._service.put_flavor(
            request.project, request.name, request.pool_list
        )
        return admin_pb2.PutFlavorResponse(created=created)

    async def GetFlavor(
        self, request: admin_pb2.GetFlavorRequest, context: Context
    ) -> admin_pb2.Flavor:
        return pack_flavor(await self._service.get_flavor(request.project, request.name))

    async def UpdateFlavor(
        self, request: admin_pb2.PutFlavorRequest, context: Context
    ) -> admin_pb2.Flavor:
        flavor = await self._service.update_flavor(
            request.project, request.name, request.pool_list
        )
        return pack_flavor(flavor)

    async def DeleteFlavor(
        self, request: admin_pb2.GetFlavorRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.delete_flavor(request.project, request.name)
        return empty_pb2.Empty()

    async def ListFlavors(
        self, request: admin_pb2.ListFlavorsRequest, context: Context
    ) -> admin_pb2.ListFlavorsResponse:
        flavors = await self._service.list_flavors(
            request.project,
            limit=request.limit if request.HasField("limit") else None,
            marker=request.marker,
        )
        return admin_pb2.ListFlavorsResponse(
            flavors=[pack_flavor(flavor) for flavor in flavors],
            next_marker=flavors[-1].name if flavors else "",
        )


def registrar(service: CatalogService) -> Callable[[grpc.aio.Server], None]:
    def register(server: grpc.aio.Server) -> None:
        admin_pb2_grpc.add_PoolsServicer_to_server(PoolsServicer(service), server)
        admin_pb2_grpc.add_FlavorsServicer_to_server(FlavorsServicer(service), server)

    return register
