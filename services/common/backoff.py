"""Pauses between the attempts of a step that another party holds up for a while (a store
failing over, a file another process has locked, a lease another holder keeps): doubling from
``first`` to ``last``, for ``seconds`` in all."""

from __future__ import annotations

import asyncio
import time


class Backoff:
    """Pauses between attempts, doubling from ``first`` to ``last``, until ``seconds`` have
    passed."""

    def __init__(self, seconds: float, first: float = 0.02, last: float = 0.5) -> None:
        self._deadline = time.monotonic() + seconds
        self._pause = first
        self._last = last

    async def pause(self) -> bool:
        """Sleep before the next attempt; False (at once) when the time is up."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(self._pause, left))
        self._pause = min(self._pause * 2, self._last)
        return True
