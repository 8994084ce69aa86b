"""The one place where a networked store backend's driver errors become :class:`Unavailable`.

A backend builds its decorator once with :func:`driver_edge`, naming its store, the exceptions
of its driver and how to describe them, and marks every store method with the action it
performs::

    edge = driver_edge("message store", (RedisError,), describe)

    class RedisMessageStore:
        @edge("claim messages")
        async def claim(self, ...) -> ClaimResult: ...

Errors of the service's own (``ServiceError``) pass through untouched. A cancelled caller
always sees ``CancelledError``, even where the driver lost the cancellation.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from services.common.errors import Unavailable

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class Located(Protocol):
    """A store that can say where its server is (for logs, never for callers)."""

    @property
    def address(self) -> str: ...


S = TypeVar("S", bound=Located)
Method = Callable[Concatenate[S, P], Awaitable[R]]
Wrapped = Callable[Concatenate[S, P], Coroutine[Any, Any, R]]


def driver_edge(
    store: str,
    errors: tuple[type[Exception], ...],
    describe: Callable[[Exception], str],
    driver_fault: Callable[[Exception], bool] | None = None,
) -> Callable[[str], Callable[[Method[S, P, R]], Wrapped[S, P, R]]]:
    """A decorator factory translating ``errors`` into :class:`Unavailable`.

    Args:
        store: what the store is, for descriptions and logs, e.g. "message store".
        errors: the driver's exception classes.
        describe: a short, caller-safe reason for one of them, e.g. "Redis cannot be reached".
        driver_fault: whether another exception is the driver failing on a lost connection
            (raised inside the driver's own code), translated as well.
    """
    caught: tuple[type[Exception], ...] = errors if driver_fault is None else (Exception,)

    def for_action(action: str) -> Callable[[Method[S, P, R]], Wrapped[S, P, R]]:
        def decorate(method: Method[S, P, R]) -> Wrapped[S, P, R]:
            @functools.wraps(method)
            async def translated(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
                task = asyncio.current_task()
                cancels = task.cancelling() if task is not None else 0
                try:
                    result = await method(self, *args, **kwargs)
                except caught as exc:
                    if not isinstance(exc, errors) and (
                        driver_fault is None or not driver_fault(exc)
                    ):
                        raise
                    reason = describe(exc)
                    log.warning(
                        "%s at %s failed to %s: %s (%s: %s)",
                        store, self.address, action, reason, type(exc).__name__, exc,
                    )
                    raise Unavailable(
                        f"The {store} could not {action}: {reason}. "
                        "Please try again in a few seconds."
                    ) from exc
                if task is not None and task.cancelling() > cancels:
                    # The caller was cancelled but the driver returned instead of raising: on
                    # Python 3.11 asyncio.wait_for (used inside pymongo) drops a cancellation
                    # that arrives as its awaitable completes. The work is done; the caller
                    # still learns that it was cancelled.
                    raise asyncio.CancelledError
                return result

            return translated

        return decorate

    return for_action


def contended(store: str, action: str) -> Unavailable:
    """The error of a compare-and-set loop that lost too many races in a row.

    Each lost race means another writer succeeded, so this only bounds a pathological pile-up.
    """
    return Unavailable(
        f"The {store} could not {action}: too many concurrent changes to the same item. "
        "Please try again in a few seconds."
    )
