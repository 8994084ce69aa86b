"""Streaming pull: a server stream of claims with flow control (docs/architecture.md,
"Streaming pull (gRPC)").

A stream claims through the long-poll claim (:meth:`Polling.claim`), so posts wake it and it
queues first come, first served with the queue's other claim waiters. It holds at most
``max_outstanding`` messages claimed and not yet deleted, released or expired. While full it
sleeps until this process serves a delete or a release in the queue (:meth:`Streams.acked`)
or its earliest claim expires, then counts again from the store. When the stream ends, its
claims are released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Final

from services.common import limits
from services.common.errors import ClaimNotFound, InvalidArgument, Stopping
from services.message_svc import validation
from services.message_svc.storage.base import Claim
from services.message_svc.waiters import WAIT_MAX

if TYPE_CHECKING:
    from services.message_svc.polling import Polling

MAX_OUTSTANDING_DEFAULT: Final = 10
MAX_OUTSTANDING_MAX: Final = 100
MAX_OUTSTANDING_ERROR: Final = (
    f"Max outstanding must be at least 1 and may not be greater than {MAX_OUTSTANDING_MAX}."
)
STOPPING: Final = ("This message_svc process is stopping: its streaming pulls end, and their "
                   "claims are released. Open the stream again.")
# A claim is counted again this long after the time it expires at, so that the store surely
# sees it expired (and a clock that disagrees with the store's never makes a busy loop).
EXPIRY_SLACK: Final = 0.25

Key = tuple[str, str]

log = logging.getLogger(__name__)


def max_outstanding(value: int | None) -> int:
    """A request's ``max_outstanding``: unset means 10; otherwise 1..100."""
    if value is None:
        return MAX_OUTSTANDING_DEFAULT
    if not 1 <= value <= MAX_OUTSTANDING_MAX:
        raise InvalidArgument(MAX_OUTSTANDING_ERROR)
    return value


class Streams:
    """The streaming pulls of this process."""

    def __init__(self, polling: Polling, clock: Callable[[], float] = time.time) -> None:
        self._polling = polling
        self._clock = clock
        self._followers: dict[Key, set[asyncio.Event]] = {}
        self._releasing: set[asyncio.Task[None]] = set()
        self._ending = False

    def end(self) -> None:
        """This process is stopping: every pull ends now with :class:`Stopping` (its caller
        opens it again, on another replica), and its claims are released."""
        self._ending = True
        for events in self._followers.values():
            for event in events:
                event.set()

    def acked(self, project: str, queue: str) -> None:
        """This process deleted messages or released a claim of the queue: the queue's full
        streams count their outstanding messages again."""
        for event in self._followers.get((project, queue), ()):
            event.set()

    async def pull(
        self,
        project: str,
        queue: str,
        *,
        max_outstanding: int,
        ttl: int | None,
        grace: int | None,
    ) -> AsyncIterator[Claim]:
        """Claims of the queue as messages arrive, never more than ``max_outstanding`` of
        their messages outstanding; the claims still held are released when it ends."""
        validation.queue_ref(project, queue)
        validation.claim_ttl(ttl)
        validation.claim_grace(grace)
        held: dict[str, set[str]] = {}
        due: dict[str, float] = {}
        try:
            with self._follow(project, queue) as acked:
                while True:
                    if self._ending:
                        raise Stopping(STOPPING)
                    if acked.is_set() or (due and min(due.values()) <= self._clock()):
                        acked.clear()
                        await self._count(project, queue, held, due)
                    outstanding = sum(len(ids) for ids in held.values())
                    if outstanding >= max_outstanding:
                        await self._sleep(acked, min(due.values()))
                        continue
                    claim = await self._polling.claim(
                        project, queue, wait=WAIT_MAX, ttl=ttl, grace=grace,
                        limit=min(limits.PAGE_LIMIT_MAX, max_outstanding - outstanding),
                    )
                    if claim is None or not claim.messages:
                        continue
                    held[claim.id] = {m.id for m in claim.messages}
                    due[claim.id] = claim.expires + EXPIRY_SLACK
                    if self._ending:  # not sent: released below with the others
                        raise Stopping(STOPPING)
                    yield claim
        finally:
            if held:
                self._release(project, queue, list(held))

    # internals --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _follow(self, project: str, queue: str) -> Iterator[asyncio.Event]:
        key = (project, queue)
        event = asyncio.Event()
        self._followers.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            followers = self._followers[key]
            followers.discard(event)
            if not followers:
                del self._followers[key]

    async def _count(
        self, project: str, queue: str, held: dict[str, set[str]], due: dict[str, float]
    ) -> None:
        """What the store says each claim still holds: its live messages (deleted ones are
        gone); nothing when it was released or expired."""
        service = self._polling.service
        for claim_id in list(held):
            try:
                claim = await service.get_claim(project, queue, claim_id)
            except ClaimNotFound:
                claim = None
            ids = held[claim_id]
            if claim is not None:
                ids &= {m.id for m in claim.messages}
            if claim is None or not ids:
                del held[claim_id], due[claim_id]
            else:
                due[claim_id] = max(claim.expires, self._clock()) + EXPIRY_SLACK

    async def _sleep(self, acked: asyncio.Event, until: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, until - self._clock())):
                await acked.wait()

    def _release(self, project: str, queue: str, claim_ids: list[str]) -> None:
        """Released in a task of its own: the stream's task may be cancelled already."""

        async def release() -> None:
            try:
                for claim_id in claim_ids:
                    await self._polling.service.release_claim(project, queue, claim_id)
            except Exception as exc:  # the claims expire by themselves then
                log.warning("streaming pull of %s/%s: releasing claims failed: %s",
                            project, queue, exc)
            self._polling.room.hint(project, queue)

        task = asyncio.get_running_loop().create_task(release())
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
