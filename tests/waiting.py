"""Waiting on a condition in tests, instead of sleeping a fixed time before an assertion.

A test waits for what it needs (a count reached, a state entered) and fails with a message
only after a bound long enough for a loaded machine: the bound is a safety net, never a
measurement, so a slow run is slower but not red.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

WITHIN = 10.0


async def until(
    condition: Callable[[], object] | Callable[[], Awaitable[object]],
    within: float = WITHIN,
    what: str | Callable[[], str] = "condition",
    every: float = 0.01,
) -> None:
    """Return as soon as ``condition()`` is true (awaited, when it is a coroutine function);
    fail after ``within`` seconds, saying ``what`` (a string, or a callable that describes the
    state at that moment)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within

    async def holds() -> bool:
        value = condition()
        return bool(await value if inspect.isawaitable(value) else value)

    while not await holds():
        if loop.time() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"not after {within} s: {described}")
        await asyncio.sleep(every)
