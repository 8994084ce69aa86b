"""Node operations: ping, health (admin), the JSON-home document."""

from __future__ import annotations

import orjson

from services.api_gateway.errors import ApiError, unavailable
from services.api_gateway.operations import Outcome
from services.api_gateway.routes._homedoc import HOME_DOC_BYTES
from services.api_gateway.upstream import Upstreams


async def ping(up: Upstreams) -> Outcome:
    """204 when every upstream service reports SERVING on its gRPC health service."""
    serving = await up.serving()
    if not all(serving.values()):
        down = ", ".join(sorted(name for name, ok in serving.items() if not ok))
        raise unavailable(f"Not serving: {down}.")
    return Outcome(204)


def is_admin(roles: str | None) -> bool:
    """No-auth mode: the ``X-Roles`` header lists ``admin``."""
    return "admin" in (role.strip().lower() for role in (roles or "").split(","))


async def health(up: Upstreams, roles: str | None) -> Outcome:
    """Admin only: whether the stores behind the services are reachable."""
    if not is_admin(roles):
        raise ApiError(403, "Not authorized", "This operation requires the admin role.")
    serving = await up.serving()
    return Outcome(200, {"storage_reachable": all(serving.values()), "operation_status": {}})


def home_doc() -> Outcome:
    return Outcome(200, orjson.Fragment(HOME_DOC_BYTES))
