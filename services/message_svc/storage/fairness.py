"""The choice a fair claim makes among the claimable messages it reads, shared by the
backends that choose in Python (SQLite, MongoDB); Redis does the same in ``take_fair``
(``scripts/lib.lua``).

The claim offers the claimable messages by seq, its *window*. A message without a group, or of
a group that is not noisy (:meth:`FairPolicy.noisy`, counting what this claim took so far), is
taken at once; one of a noisy group is put aside. When the claim has read ``limit +
lookahead`` messages (the window is :attr:`FairChoice.cut`) and is still short of ``limit``,
the backend looks in its group index for the oldest claimable messages past the window of the
groups that are not noisy (:meth:`FairChoice.quiet`), and offers them by seq across groups
(:meth:`FairChoice.offer_indexed`); so a noisy backlog deeper than the window does not hide the
quiet groups' messages, and the index is read for O(limit + groups) messages, never the
backlog. Then what was put aside fills what is left of ``limit``, oldest first: a claim is
never left short while there are claimable messages. A claim that was cut, found nothing in
the group index and still needed those put aside is futile (:attr:`FairChoice.futile`): past
its window only the noisy groups had claimable messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from services.message_svc.storage.base import FairPolicy

T = TypeVar("T")


class FairChoice(Generic[T]):
    """One claim's choice. ``in_flight`` has counts before the claim of the groups known so
    far (:meth:`know` adds others; a group never known has none) and ``total`` the sum over
    every group of the queue."""

    def __init__(
        self, policy: FairPolicy, limit: int, in_flight: dict[str, int], total: int
    ) -> None:
        self.policy, self.limit = policy, limit
        self.in_flight, self.total = dict(in_flight), total
        self.taken: list[T] = []
        self.aside: list[tuple[T, str]] = []
        self.read = 0
        self.indexed = 0
        """Messages taken from the group index."""
        self.futile = False
        """Set by :meth:`finish`: the claim read its whole window (``limit + lookahead``)
        without finding ``limit`` messages that are not put aside, the group index had none
        past it, and messages put aside fill the rest (``ClaimResult.futile``). Not when it
        read every claimable message: the next claim may find messages of other groups that
        arrive meanwhile."""

    def know(self, in_flight: dict[str, int]) -> None:
        """Counts before the claim of groups met on the way (those already known stay)."""
        for group, count in in_flight.items():
            self.in_flight.setdefault(group, count)

    @property
    def done(self) -> bool:
        """Nothing more to read: ``limit`` taken, or the lookahead used up."""
        return (len(self.taken) >= self.limit
                or self.read >= self.limit + self.policy.lookahead)

    @property
    def cut(self) -> bool:
        """The window was read to its end and the claim is still short of ``limit``: the
        groups that are not noisy may have claimable messages past it (the group index)."""
        return (len(self.taken) < self.limit
                and self.read >= self.limit + self.policy.lookahead)

    @property
    def full(self) -> bool:
        return len(self.taken) >= self.limit

    def quiet(self, group: str) -> bool:
        """Whether ``group`` is not noisy now (counting what this claim took so far)."""
        return not self.policy.noisy(self.in_flight.get(group, 0), self.total)

    def offer_indexed(self, item: T, group: str) -> bool:
        """A claimable message past the window of a group that was :meth:`quiet`, from the
        group index, in seq order across groups (only while the claim is :attr:`cut` and not
        :attr:`full`). Returns whether it was taken: not when its group turned noisy."""
        if not self.quiet(group):
            return False
        self._take(item, group)
        self.indexed += 1
        return True

    def offer(self, item: T, group: str | None) -> None:
        """A claimable message, in seq order (only while not :attr:`done`)."""
        self.read += 1
        if group is None:
            self.taken.append(item)
        elif self.policy.noisy(self.in_flight.get(group, 0), self.total):
            self.aside.append((item, group))
        else:
            self._take(item, group)

    def _take(self, item: T, group: str) -> None:
        self.taken.append(item)
        self.in_flight[group] = self.in_flight.get(group, 0) + 1
        self.total += 1

    def finish(self) -> list[T]:
        """What the claim takes: the messages taken, then the oldest put aside up to
        ``limit`` (the claim is then :attr:`futile`)."""
        self.futile = (bool(self.aside) and len(self.taken) < self.limit
                       and self.read >= self.limit + self.policy.lookahead
                       and not self.indexed)
        for item, group in self.aside[: max(0, self.limit - len(self.taken))]:
            self._take(item, group)
        return self.taken

    def added(self, group_of: Callable[[T], str | None]) -> dict[str, int]:
        """Per group, how many of the messages taken have it."""
        counts: dict[str, int] = {}
        for item in self.taken:
            group = group_of(item)
            if group is not None:
                counts[group] = counts.get(group, 0) + 1
        return counts
