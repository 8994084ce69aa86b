"""notifier_svc's part of the detailed health check: whether the subscription store answers
(a read of a throwaway queue of the internal health project; nothing is written)."""

from __future__ import annotations

from zaqar_grpc.v2 import admin_pb2

from services.common.health import HEALTH_PROJECT, new_check, throwaway_queue
from services.notifier_svc.storage.base import NotifierStore


async def check_stores(store: NotifierStore, seconds: float) -> admin_pb2.StoresHealth:
    check = new_check("subscription", seconds)
    await check.reach(lambda: store.list(HEALTH_PROJECT, throwaway_queue(), limit=1))
    return admin_pb2.StoresHealth(stores=[check.report()])
