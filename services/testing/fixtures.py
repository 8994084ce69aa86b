"""What every contract suite of the kit shares."""

from __future__ import annotations


class Clock:
    """A settable clock (Unix seconds), for the stores' ``now``: TTLs are tested by moving it
    rather than by sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.25

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
