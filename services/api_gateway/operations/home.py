"""Node operations: ping, health (admin), the JSON-home document; and the admin check."""

from __future__ import annotations

import asyncio
from typing import Any, Final

import grpc
import orjson
from zaqar_grpc.v2 import admin_pb2

from services.api_gateway import translate_admin
from services.api_gateway.errors import ApiError, unavailable
from services.api_gateway.operations import Outcome
from services.api_gateway.routes._homedoc import HOME_DOC_BYTES
from services.api_gateway.upstream import Upstreams
from services.common.errors import decode_rpc_error

ADMIN_ROLE: Final = "admin"
# Zaqar's answer to a caller without the role a policy asks for.
NOT_AUTHORIZED: Final = (403, "Not authorized", "You are not authorized to complete this action.")
RETRY_LATER: Final = "Please try again in a few seconds."


async def ping(up: Upstreams) -> Outcome:
    """204 when every upstream service reports SERVING on its gRPC health service."""
    serving = await up.serving()
    if not all(serving.values()):
        down = ", ".join(sorted(name for name, ok in serving.items() if not ok))
        raise unavailable(f"Not serving: {down}.")
    return Outcome(204)


def is_admin(roles: str | None) -> bool:
    """The caller's roles (``X-Roles``: the header in no-auth mode, the token's roles with
    Keystone) include ``admin``."""
    return ADMIN_ROLE in (role.strip().lower() for role in (roles or "").split(","))


def require_admin(roles: str | None) -> None:
    """403 with Zaqar's body unless the caller is an admin."""
    if not is_admin(roles):
        raise ApiError(*NOT_AUTHORIZED)


async def _check(up: Upstreams, service: str, pools: Any = ()) -> admin_pb2.StoresHealth:
    """One service's report on its stores; 503 naming the service when it does not answer."""
    request = admin_pb2.CheckStoresRequest(pools=pools)
    try:
        answer: admin_pb2.StoresHealth = await up.store_health(service).CheckStores(
            request, timeout=up.timeout
        )
    except grpc.RpcError as exc:
        info = decode_rpc_error(exc)
        raise unavailable(
            f"Health status could not be read: {service} did not answer ({info.code.name}). "
            + RETRY_LATER
        ) from None
    return answer


async def health(up: Upstreams, roles: str | None) -> Outcome:
    """Admin only. Every service times operations on the stores it owns (in parallel; with
    pooling, message_svc and notifier_svc then check the pools queue_svc listed); 200 with
    Zaqar's document
    when every store answers, 503 naming the stores that do not."""
    require_admin(roles)
    if up.pooling:
        queues = await _check(up, "queue_svc")
        messages, subscriptions = await asyncio.gather(
            _check(up, "message_svc", queues.pools), _check(up, "notifier_svc", queues.pools)
        )
    else:
        queues, messages, subscriptions = await asyncio.gather(
            _check(up, "queue_svc"), _check(up, "message_svc"), _check(up, "notifier_svc")
        )
    reports = [*queues.stores, *messages.stores, *subscriptions.stores]
    problems = translate_admin.unreachable(reports)
    if problems:
        raise unavailable(f"Health status could not be read: {'; '.join(problems)}. {RETRY_LATER}")
    return Outcome(200, translate_admin.health_doc(reports, up.pooling))


def home_doc() -> Outcome:
    return Outcome(200, orjson.Fragment(HOME_DOC_BYTES))
