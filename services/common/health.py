"""Timed store operations of the detailed health check (``GET /v2/health``, admin only).

Each service checks the stores it owns (``zaqar.v2.StoreHealth.CheckStores``) the way Zaqar's
storage drivers do (``DataDriverBase._get_operation_status``): it times a fixed sequence of
operations on a throwaway queue and reports, per operation, ``succeeded``, ``seconds`` and a
``ref`` that names the log line of a failure.

The throwaway queue belongs to :data:`HEALTH_PROJECT`, a project id longer than any id the API
accepts (``PROJECT_ID_MAX``), so no caller can ever read, list or change it, and its name is
new on every check, so concurrent checks never meet. Operations are skipped once a store has
proved unreachable (each would only wait for the same timeout); clean-up steps are always
tried, and whatever they could not remove expires (messages and claims have a TTL) or is
swept by the next check.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from zaqar_grpc.v2 import admin_pb2, admin_pb2_grpc

from services.common.config import ConfigurationError
from services.common.errors import Unavailable
from services.common.limits import PROJECT_ID_MAX

log = logging.getLogger(__name__)

T = TypeVar("T")

HEALTH_PROJECT: Final = "zaqar.health." + "_" * PROJECT_ID_MAX
# Time kept back from the caller's deadline to answer it.
ANSWER_MARGIN: Final = 0.25
# The whole check when the caller set no deadline.
DEFAULT_BUDGET: Final = 10.0


def throwaway_queue() -> str:
    return "health-" + uuid.uuid4().hex


def budget(time_remaining: float | None) -> float:
    """Seconds a check may take, from the seconds its caller still waits (``None``: no
    deadline)."""
    if time_remaining is None:
        return DEFAULT_BUDGET
    return max(0.0, time_remaining - ANSWER_MARGIN)


@dataclass(frozen=True, slots=True)
class OperationStatus:
    name: str
    succeeded: bool
    seconds: float
    ref: str | None = None


@dataclass(slots=True)
class StoreCheck:
    """The timed operations on one store, in the order they ran, and whether it answers.

    Every operation runs inside ``deadline`` (a ``loop.time()``); one that does not finish by
    then, or fails with :class:`Unavailable` (a store edge's "cannot be reached"), makes the
    store unreachable, and later operations are skipped.
    """

    store: str
    deadline: float
    reachable: bool = True
    problem: str = ""
    operations: list[OperationStatus] = field(default_factory=list)

    async def run(self, name: str, operation: Callable[[], Awaitable[T]]) -> T | None:
        """Run and time one operation; its result, or ``None`` when it failed or was
        skipped (not reported)."""
        if not self.reachable:
            return None
        return await self._timed(name, operation)

    async def reach(self, operation: Callable[[], Awaitable[T]]) -> T | None:
        """Run an operation that only shows whether the store answers (not reported); its
        result, or ``None`` when it failed or was skipped."""
        if not self.reachable:
            return None
        try:
            async with asyncio.timeout_at(self.deadline):
                return await operation()
        except TimeoutError:
            self.unreachable("it did not answer within the health check's deadline")
        except Unavailable as exc:
            self.unreachable(exc.description)
        except ConfigurationError as exc:
            # A pool URI this process cannot open (the caller named it): its reason, redacted.
            log.warning("health check of the %s: %s", self.store, exc)
            self.unreachable(str(exc))
        except Exception as exc:
            log.exception("health check of the %s failed", self.store)
            self.unreachable(f"it failed: {type(exc).__name__}")
        return None

    async def clean_up(self, name: str, operation: Callable[[], Awaitable[Any]]) -> None:
        """An operation that removes what earlier ones made: tried even when the store has
        proved unreachable (then not reported; its failure is only logged)."""
        if self.reachable:
            await self._timed(name, operation)
            return
        try:
            async with asyncio.timeout_at(self.deadline):
                await operation()
        except Exception as exc:
            log.warning("health check of the %s could not %s: %s", self.store, name, exc)

    async def _timed(self, name: str, operation: Callable[[], Awaitable[T]]) -> T | None:
        start = time.perf_counter()
        ref: str | None = None
        result: T | None = None
        try:
            async with asyncio.timeout_at(self.deadline):
                result = await operation()
        except TimeoutError:
            ref = self._failed(name, "it did not answer within the health check's deadline")
        except Unavailable as exc:
            ref = self._failed(name, exc.description)
        except Exception:
            ref = str(uuid.uuid4())
            log.exception("health check of the %s: %s failed (ref %s)", self.store, name, ref)
        self.operations.append(
            OperationStatus(name, ref is None, time.perf_counter() - start, ref)
        )
        return result

    def _failed(self, name: str, problem: str) -> str:
        ref = str(uuid.uuid4())
        log.warning("health check of the %s: %s failed (ref %s): %s", self.store, name, ref,
                    problem)
        self.reachable = False
        self.problem = problem
        return ref

    def unreachable(self, problem: str) -> None:
        """Mark the store unreachable for a reason found outside a timed operation."""
        self.reachable = False
        self.problem = problem

    def report(self) -> admin_pb2.StoreReport:
        return admin_pb2.StoreReport(
            store=self.store,
            reachable=self.reachable,
            problem=self.problem,
            operations=[
                admin_pb2.OperationStatus(
                    name=op.name, succeeded=op.succeeded, seconds=op.seconds, ref=op.ref or ""
                )
                for op in self.operations
            ],
        )


def new_check(store: str, seconds: float) -> StoreCheck:
    """A check of ``store`` that must finish within ``seconds`` from now."""
    return StoreCheck(store, asyncio.get_running_loop().time() + seconds)


SERVICE_NAME: Final = "zaqar.v2.StoreHealth"

# (the request, the seconds the check may take) -> the reports
Check = Callable[[admin_pb2.CheckStoresRequest, float], Awaitable[admin_pb2.StoresHealth]]


class StoreHealthServicer(admin_pb2_grpc.StoreHealthServicer):
    """``zaqar.v2.StoreHealth`` of one service: its ``check`` within the call's deadline."""

    def __init__(self, check: Check) -> None:
        self._check = check

    async def CheckStores(
        self, request: admin_pb2.CheckStoresRequest, context: Any
    ) -> admin_pb2.StoresHealth:
        return await self._check(request, budget(context.time_remaining()))


def registrar(check: Check) -> Callable[[Any], None]:
    def register(server: Any) -> None:
        admin_pb2_grpc.add_StoreHealthServicer_to_server(StoreHealthServicer(check), server)

    return register
