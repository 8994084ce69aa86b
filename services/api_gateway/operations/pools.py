"""Pool operations (admin only): list, get, register or replace, update, deregister."""

from __future__ import annotations

from typing import Any

from zaqar_grpc.v2 import admin_pb2

from services.api_gateway import translate, translate_admin
from services.api_gateway.operations import NextLink, Outcome
from services.api_gateway.operations.home import require_admin
from services.api_gateway.upstream import Upstreams

POOLS = "/v2/pools"


def pool_href(name: str) -> str:
    return f"{POOLS}/{name}"


async def list_pools(
    up: Upstreams,
    roles: str | None,
    *,
    limit: int | None,
    marker: str | None,
    detailed: bool,
    next_link: NextLink,
) -> Outcome:
    require_admin(roles)
    request = admin_pb2.ListPoolsRequest(marker=marker or "")
    if limit is not None:
        request.limit = translate.int32(limit)
    response = await up.pools.ListPools(request, timeout=up.timeout)
    pools = [translate_admin.pool_doc(p, pool_href(p.name), detailed) for p in response.pools]
    links = [{"rel": "next", "href": next_link(response.next_marker)}] if pools else []
    return Outcome(200, {"pools": pools, "links": links})


async def get_pool(up: Upstreams, roles: str | None, name: str, detailed: bool) -> Outcome:
    require_admin(roles)
    pool = await up.pools.GetPool(admin_pb2.GetPoolRequest(name=name), timeout=up.timeout)
    return Outcome(200, translate_admin.pool_doc(pool, pool_href(name), detailed))


async def put_pool(up: Upstreams, roles: str | None, name: str, doc: Any) -> Outcome:
    """201 whether the pool is new or replaced (as Zaqar answers)."""
    require_admin(roles)
    request = translate_admin.put_pool_request(name, doc)
    await up.pools.PutPool(request, timeout=up.timeout)
    return Outcome(201, location=pool_href(name))


async def update_pool(up: Upstreams, roles: str | None, name: str, doc: Any) -> Outcome:
    require_admin(roles)
    request = translate_admin.update_pool_request(name, doc)
    pool = await up.pools.UpdatePool(request, timeout=up.timeout)
    return Outcome(200, translate_admin.pool_doc(pool, pool_href(name), detailed=False))


async def delete_pool(up: Upstreams, roles: str | None, name: str) -> Outcome:
    require_admin(roles)
    await up.pools.DeletePool(admin_pb2.DeletePoolRequest(name=name), timeout=up.timeout)
    return Outcome(204)
