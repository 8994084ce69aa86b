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

A driver that waits for its server before it gives up (pymongo's server selection, 2 s by
default; redis-py's connect and reply timeouts, 2 s and 5 s) names those errors with
``unreachable``. Once a call ends with one, the server is taken as down: while it is, one call
at a time still goes to the driver (and so finds out when the server is back), and the others
fail at once with the same :class:`Unavailable`, instead of each waiting out the driver's
timeout. The first call to succeed (or to be refused by the service itself) takes the server
as up again; a call that failed otherwise (a connection lost) changes nothing. The state is
kept per store address (the servers and the database the store's ``address`` names), for
every store object of the process at that address; while no server is down, the check is a
test of an empty dict.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
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


@dataclass(slots=True)
class _Down:
    """A server that its last call could not reach: why, and whether a call is trying it."""

    reason: str
    trying: bool = False


# Store addresses whose servers the last call of this process could not reach.
_DOWN: dict[str, _Down] = {}


def driver_edge(
    store: str,
    errors: tuple[type[Exception], ...],
    describe: Callable[[Exception], str],
    driver_fault: Callable[[Exception], bool] | None = None,
    unreachable: Callable[[Exception], bool] | None = None,
) -> Callable[[str], Callable[[Method[S, P, R]], Wrapped[S, P, R]]]:
    """A decorator factory translating ``errors`` into :class:`Unavailable`.

    Args:
        store: what the store is, for descriptions and logs, e.g. "message store".
        errors: the driver's exception classes.
        describe: a short, caller-safe reason for one of them, e.g. "Redis cannot be reached".
        driver_fault: whether another exception is the driver failing on a lost connection
            (raised inside the driver's own code), translated as well.
        unreachable: whether one of ``errors`` says that the driver waited for its server and
            found none: while the server is down, other calls then fail at once (module
            docstring).
    """
    caught: tuple[type[Exception], ...] = errors if driver_fault is None else (Exception,)

    def for_action(action: str) -> Callable[[Method[S, P, R]], Wrapped[S, P, R]]:
        def decorate(method: Method[S, P, R]) -> Wrapped[S, P, R]:
            @functools.wraps(method)
            async def translated(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
                down = None
                if _DOWN and unreachable is not None:  # some server of this process is down
                    down = _DOWN.get(self.address)
                    if down is not None:
                        if down.trying:
                            raise Unavailable(
                                f"The {store} could not {action}: {down.reason}. "
                                "Please try again in a few seconds."
                            )
                        down.trying = True
                task = asyncio.current_task()
                cancels = task.cancelling() if task is not None else 0
                try:
                    result = await method(self, *args, **kwargs)
                except caught as exc:
                    if not isinstance(exc, errors) and (
                        driver_fault is None or not driver_fault(exc)
                    ):
                        _reached(self)  # the service's own error: the server answered
                        raise
                    reason = describe(exc)
                    log.warning(
                        "%s at %s failed to %s: %s (%s: %s)",
                        store, self.address, action, reason, type(exc).__name__, exc,
                    )
                    if unreachable is not None and unreachable(exc):
                        _went_down(store, self.address, reason)
                    # (another driver error, a connection lost say, is no news either way)
                    raise Unavailable(
                        f"The {store} could not {action}: {reason}. "
                        "Please try again in a few seconds."
                    ) from exc
                except Exception:
                    _reached(self)  # the service's own error: the server answered
                    raise
                finally:
                    if down is not None:
                        down.trying = False
                if task is not None and task.cancelling() > cancels:
                    # The caller was cancelled but the driver returned instead of raising: on
                    # Python 3.11 asyncio.wait_for (used inside pymongo) drops a cancellation
                    # that arrives as its awaitable completes. The work is done; the caller
                    # still learns that it was cancelled.
                    raise asyncio.CancelledError
                _reached(self)
                return result

            def _reached(self: S) -> None:
                if _DOWN and unreachable is not None:
                    address = self.address
                    if address in _DOWN:
                        del _DOWN[address]
                        log.warning("%s at %s is reachable again", store, address)

            return translated

        return decorate

    return for_action


def _went_down(store: str, address: str, reason: str) -> None:
    if address not in _DOWN:
        _DOWN[address] = _Down(reason)
        log.warning(
            "%s at %s cannot be reached: until it can, one call at a time waits for it and "
            "the others fail at once", store, address,
        )


def contended(store: str, action: str) -> Unavailable:
    """The error of a compare-and-set loop that lost too many races in a row.

    Each lost race means another writer succeeded, so this only bounds a pathological pile-up.
    """
    return Unavailable(
        f"The {store} could not {action}: too many concurrent changes to the same item. "
        "Please try again in a few seconds."
    )
