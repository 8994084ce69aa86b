"""Long polling (``wait``) in the gateway: the held call to message_svc goes past the
coalescer, with a deadline of the wait plus ``rpc_timeout``, and is cancelled as soon as the
client goes away, so that message_svc drops the waiter (docs/architecture.md, "Long
polling")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from services.api_gateway.errors import ApiError, bad_request

T = TypeVar("T")

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


class ClientGone(ApiError):
    """The client went away while its request waited: nobody reads this answer."""

    def __init__(self) -> None:
        super().__init__(499, "Client closed request", "The client went away while waiting.")


async def unless_gone(call: Awaitable[T], gone: Gone | None) -> T:
    """The call's result; the call is cancelled, and :class:`ClientGone` raised, when ``gone``
    returns first."""
    if gone is None:
        return await call
    task = asyncio.ensure_future(call)
    watcher = asyncio.ensure_future(gone())
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ClientGone()
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
