"""Long polling (``wait``) in the gateway: the held call to message_svc goes past the
coalescer, with a deadline of the wait plus ``rpc_timeout``, and is cancelled as soon as the
client goes away, so that message_svc drops the waiter. When the gateway begins to stop, the
held calls end as at their deadline: each is cancelled and made once more without waiting, and
its answer (most often nothing, 204 or an empty page) goes out at once, instead of the request
being cut off when the shutdown grace runs out (docs/architecture.md, "Long polling")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from zaqar_grpc.v2 import messages_pb2

from services.api_gateway.errors import ApiError, bad_request
from services.api_gateway.limits import FULL_RETRY_AFTER

T = TypeVar("T")
# The message_svc calls that can wait.
WaitingRequest = messages_pb2.CreateClaimRequest | messages_pb2.ListMessagesRequest

WAIT_MAX: Final = 20
WAIT_ERROR: Final = f"Wait must be at least 0 and may not be greater than {WAIT_MAX}."
# Returns when the client has gone away (HTTP disconnect, WebSocket closed).
Gone = Callable[[], Awaitable[None]]


def checked_wait(wait: int | None) -> int:
    """A ``wait`` value: absent is 0; 0..20, else 400 with Zaqar's error body."""
    if wait is None:
        return 0
    if isinstance(wait, bool) or not isinstance(wait, int) or not 0 <= wait <= WAIT_MAX:
        raise bad_request(WAIT_ERROR)
    return wait


class Waits:
    """The long polls one gateway process holds, over HTTP and WebSocket (``max_waiting``;
    0: no limit), and whether the process is stopping (set on SIGTERM: they end at once)."""

    __slots__ = ("held", "most", "stopping")

    def __init__(self, most: int) -> None:
        self.most = most
        self.held = 0
        self.stopping = asyncio.Event()

    def full(self) -> ApiError:
        return ApiError(
            503, "Service Unavailable",
            f"This gateway holds {self.most} long polls at once (max_waiting). Please retry "
            f"in {FULL_RETRY_AFTER} seconds, or at another replica.",
            {"Retry-After": str(FULL_RETRY_AFTER)},
        )


class ClientGone(ApiError):
    """The client went away while its request waited: nobody reads this answer."""

    def __init__(self) -> None:
        super().__init__(499, "Client closed request", "The client went away while waiting.")


async def held(
    method: Callable[..., Awaitable[T]], request: WaitingRequest, seconds: int,
    rpc_timeout: float, gone: Gone | None, waits: Waits,
) -> T:
    """``method(request)`` waiting up to ``seconds`` (with ``rpc_timeout`` more for the call),
    one of ``waits``: 503 when they are all taken. Cancelled, and :class:`ClientGone` raised,
    when ``gone`` returns first; cancelled and made once more without waiting when the process
    begins to stop first (or already has)."""
    stopping = waits.stopping
    if stopping.is_set():
        return await method(request, timeout=rpc_timeout)
    if waits.most and waits.held >= waits.most:
        raise waits.full()
    waits.held += 1
    try:
        return await _held(method, request, seconds, rpc_timeout, gone, stopping)
    finally:
        waits.held -= 1


async def _held(
    method: Callable[..., Awaitable[T]], request: WaitingRequest, seconds: int,
    rpc_timeout: float, gone: Gone | None, stopping: asyncio.Event,
) -> T:
    request.wait_seconds = seconds
    task = asyncio.ensure_future(method(request, timeout=seconds + rpc_timeout))
    stopped = asyncio.ensure_future(stopping.wait())
    watchers = [stopped] if gone is None else [stopped, asyncio.ensure_future(gone())]
    try:
        await asyncio.wait((task, *watchers), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        if not stopped.done():
            raise ClientGone()
    finally:
        for pending in (task, *watchers):
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
    # This gateway stops: the wait is over. (A claim the cancelled call was making in the
    # store is released by message_svc, so nothing is held for this caller.)
    request.wait_seconds = 0
    return await method(request, timeout=rpc_timeout)
