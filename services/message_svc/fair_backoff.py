"""Which queues message_svc claims without fairness for a while (``fair_backoff``).

A fair claim that was futile (``ClaimResult.futile``: it read its whole window, put the noisy
groups' messages aside, found no message of another group past the window in the group index,
and still filled its limit with the noisy ones) cost far more than a plain claim for the same
messages: that happens while a noisy group's backlog is deeper than the lookahead and no other
group has a claimable message, and would happen again on the next claims. So after one, the
queue's claims are plain for ``seconds``, and the next claim after that tries fairness again
(docs/architecture.md, "Fair queues").

Kept per replica in memory (an optimisation: another replica finds out on its own), for at most
``size`` queues: every entry lasts the same time, so the oldest entry is the first to expire;
expired ones are dropped as they are met, and past ``size`` the oldest goes, which only makes
its queue try fairness again sooner.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

SIZE = 10_000


class FairBackoff:
    def __init__(
        self, seconds: float, clock: Callable[[], float] = time.monotonic, size: int = SIZE
    ) -> None:
        self.seconds, self.clock, self.size = seconds, clock, size
        self._until: OrderedDict[tuple[str, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def plain(self, project: str, queue: str) -> bool:
        """Whether the queue's claims are plain now (a futile fair claim less than
        ``seconds`` ago)."""
        until = self._until.get((project, queue))
        if until is None:
            return False
        if self.clock() < until:
            return True
        del self._until[(project, queue)]
        return False

    def futile(self, project: str, queue: str) -> None:
        """A fair claim of the queue was futile: plain claims from now for ``seconds``."""
        if self.seconds <= 0:
            return
        now = self.clock()
        key = (project, queue)
        self._until[key] = now + self.seconds
        self._until.move_to_end(key)
        while self._until:
            oldest, until = next(iter(self._until.items()))
            if until > now and len(self._until) <= self.size:
                break
            del self._until[oldest]
