"""Flavor operations: any project reads its own flavors; writes are admin only."""

from __future__ import annotations

from typing import Any

from zaqar_grpc.v2 import admin_pb2

from services.api_gateway import translate, translate_admin
from services.api_gateway.operations import Caller, NextLink, Outcome
from services.api_gateway.operations.home import require_admin
from services.api_gateway.upstream import Upstreams

FLAVORS = "/v2/flavors"


def flavor_href(name: str) -> str:
    return f"{FLAVORS}/{name}"


async def list_flavors(
    up: Upstreams,
    caller: Caller,
    *,
    limit: int | None,
    marker: str | None,
    detailed: bool,
    next_link: NextLink,
) -> Outcome:
    """``detailed`` adds each flavor's capabilities."""
    request = admin_pb2.ListFlavorsRequest(project=caller.project, marker=marker or "")
    if limit is not None:
        request.limit = translate.int32(limit)
    response = await up.flavors.ListFlavors(request, timeout=up.timeout)
    flavors = [
        translate_admin.flavor_doc(f, flavor_href(f.name), capabilities=detailed)
        for f in response.flavors
    ]
    links = [{"rel": "next", "href": next_link(response.next_marker)}] if flavors else []
    return Outcome(200, {"flavors": flavors, "links": links})


async def get_flavor(up: Upstreams, caller: Caller, name: str) -> Outcome:
    request = admin_pb2.GetFlavorRequest(project=caller.project, name=name)
    flavor = await up.flavors.GetFlavor(request, timeout=up.timeout)
    return Outcome(200, translate_admin.flavor_doc(flavor, flavor_href(name)))


async def put_flavor(
    up: Upstreams, caller: Caller, roles: str | None, name: str, doc: Any
) -> Outcome:
    """201 whether the flavor is new or redefined (as Zaqar answers)."""
    require_admin(roles)
    request = admin_pb2.PutFlavorRequest(
        project=caller.project, name=name, pool_list=translate_admin.flavor_pools(doc)
    )
    await up.flavors.PutFlavor(request, timeout=up.timeout)
    return Outcome(201, location=flavor_href(name))


async def update_flavor(
    up: Upstreams, caller: Caller, roles: str | None, name: str, doc: Any
) -> Outcome:
    require_admin(roles)
    request = admin_pb2.PutFlavorRequest(
        project=caller.project, name=name, pool_list=translate_admin.flavor_pools(doc)
    )
    flavor = await up.flavors.UpdateFlavor(request, timeout=up.timeout)
    return Outcome(200, translate_admin.flavor_doc(flavor, flavor_href(name)))


async def delete_flavor(up: Upstreams, caller: Caller, roles: str | None, name: str) -> Outcome:
    require_admin(roles)
    request = admin_pb2.GetFlavorRequest(project=caller.project, name=name)
    await up.flavors.DeleteFlavor(request, timeout=up.timeout)
    return Outcome(204)
