"""Long polling: requests that wait for a queue's next message (docs/architecture.md, "Long
polling").

A waiter tries its claim (or listing) and, when it gets nothing, sleeps until a hint or its
deadline. Hints come from this process's posts and claim releases (:meth:`WaitRoom.hint`),
from posts served by other replicas (one ``NotifierInternal.Watch`` per queue with waiters,
opened by ``watch``) and from a timer at the time the store says a delayed message becomes
visible or a claim expires. A hint is only a hint: the woken waiter tries again and, when it
loses the race, sleeps for what is left. Nothing polls.

Claim waiters of a queue are served first come, first served: a hint wakes the head only; a
head that claimed a full ``limit``, or saw another hint while it claimed, wakes the next.
List waiters consume nothing, so a hint wakes all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from services.common.errors import WaitsFull

log = logging.getLogger(__name__)

T = TypeVar("T")
Key = tuple[str, str]
# Opens the cross-replica hint stream of a queue: yields once when registered, then once per
# post seen. None: this process's own hints only.
Watch = Callable[[str, str], AsyncIterator[None]]

WAIT_MAX = 20
WATCH_LINGER = 10.0
WATCH_RETRY = 1.0
WATCH_RETRY_MAX = 30.0


@dataclass(frozen=True, slots=True)
class Attempt(Generic[T]):
    """One try: ``result`` when it got something (else ``None``); ``full`` when there may be
    more for the next waiter; ``next_free_at`` when the store says something frees up then."""

    result: T | None
    full: bool = False
    next_free_at: float | None = None


class _Waiter:
    __slots__ = ("woken",)

    def __init__(self) -> None:
        self.woken = asyncio.Event()


class _Queue:
    """The waiters of one queue in this process."""

    def __init__(self) -> None:
        self.claimers: deque[_Waiter] = deque()
        self.readers: set[_Waiter] = set()
        self.hints = 0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.watch: asyncio.Task[None] | None = None
        self.idle: asyncio.TimerHandle | None = None

    def empty(self) -> bool:
        return not self.claimers and not self.readers

    def hint(self) -> None:
        self.hints += 1
        if self.claimers:
            self.claimers[0].woken.set()
        for reader in self.readers:
            reader.woken.set()


class WaitRoom:
    """The waiting requests of every queue of this process."""

    def __init__(self, watch: Watch | None = None, clock: Callable[[], float] = time.time,
                 most: int = 0) -> None:
        """``most``: waits held at once (``message_max_waiting``); one more is refused with
        :class:`WaitsFull`. 0: no limit."""
        self._watch = watch
        self._clock = clock
        self._queues: dict[Key, _Queue] = {}
        self._ending = False
        self._most = most
        self._count = 0

    @property
    def ending(self) -> bool:
        """Whether :meth:`end` was called: waits end at once."""
        return self._ending

    def end(self) -> None:
        """This process is stopping: every wait ends now as at its deadline (the head of each
        queue's claims, and each listing, tries once more), and a new one tries once without
        waiting. Its callers are answered at once instead of being cut off when the server's
        grace runs out."""
        self._ending = True
        for entry in self._queues.values():
            for waiter in (*entry.claimers, *entry.readers):
                waiter.woken.set()

    def waiting(self) -> int:
        """How many requests wait now."""
        return self._count

    def hint(self, project: str, queue: str) -> None:
        """Something may have become available in the queue: wake its next waiter(s)."""
        entry = self._queues.get((project, queue))
        if entry is not None:
            entry.hint()

    async def wait(
        self,
        project: str,
        queue: str,
        seconds: float,
        attempt: Callable[[], Awaitable[Attempt[T]]],
        *,
        exclusive: bool,
        undo: Callable[[T], Awaitable[None]] | None = None,
    ) -> T | None:
        """Try ``attempt`` now and again on each hint until it gets something or ``seconds``
        pass; ``None`` then. ``exclusive`` (claims): first come, first served with the
        queue's other exclusive waiters. ``undo`` is given a result obtained by an attempt
        that was running when the caller went away (cancelled), so that nothing is kept for
        a caller that is gone."""
        if self._ending:
            return (await self._try(attempt, undo)).result
        if self._most and self._count >= self._most:
            raise WaitsFull(
                f"This message_svc process holds {self._most} waiting requests "
                "(message_max_waiting). Retry later, or at another replica.")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        key = (project, queue)
        entry = self._queues.get(key)
        if entry is None:
            entry = self._queues[key] = _Queue()
        if entry.idle is not None:
            entry.idle.cancel()
            entry.idle = None
        me = _Waiter()
        if exclusive:
            entry.claimers.append(me)
            # A newcomer behind others lets the head try first (first come, first served).
            entry.claimers[0].woken.set()
        else:
            entry.readers.add(me)
            me.woken.set()
        self._ensure_watch(key, entry)
        seen = entry.hints
        self._count += 1
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0 or self._ending:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        await me.woken.wait()
                except TimeoutError:
                    break
                if self._ending:
                    break
                me.woken.clear()
                seen = entry.hints
                got = await self._try(attempt, undo)
                if got.result is not None:
                    if got.full:
                        seen = -1
                    return got.result
                self._schedule(entry, got.next_free_at)
                if entry.hints != seen:
                    me.woken.set()
            # The deadline: the head (or a reader) tries once more, for what sends no hint.
            if not exclusive or entry.claimers[0] is me:
                got = await self._try(attempt, undo)
                return got.result
            return None
        finally:
            self._count -= 1
            self._leave(key, entry, me, exclusive, passed=me.woken.is_set() or seen != entry.hints)

    async def close(self) -> None:
        for entry in self._queues.values():
            if entry.watch is not None:
                entry.watch.cancel()
            if entry.timer is not None:
                entry.timer.cancel()
            if entry.idle is not None:
                entry.idle.cancel()
        tasks = [e.watch for e in self._queues.values() if e.watch is not None]
        self._queues.clear()
        await asyncio.gather(*tasks, return_exceptions=True)

    # internals --------------------------------------------------------------------------

    @staticmethod
    async def _try(
        attempt: Callable[[], Awaitable[Attempt[T]]],
        undo: Callable[[T], Awaitable[None]] | None,
    ) -> Attempt[T]:
        task = asyncio.ensure_future(attempt())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if undo is not None:
                task.add_done_callback(lambda done: _undo_later(done, undo))
            raise

    def _leave(self, key: Key, entry: _Queue, me: _Waiter, exclusive: bool, passed: bool) -> None:
        if exclusive:
            was_head = bool(entry.claimers) and entry.claimers[0] is me
            with contextlib.suppress(ValueError):
                entry.claimers.remove(me)
            if was_head and passed and entry.claimers:
                entry.claimers[0].woken.set()
        else:
            entry.readers.discard(me)
        if entry.empty():
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None
            loop = asyncio.get_running_loop()
            entry.idle = loop.call_later(WATCH_LINGER, self._drop, key, entry)

    def _drop(self, key: Key, entry: _Queue) -> None:
        if not entry.empty() or self._queues.get(key) is not entry:
            return
        del self._queues[key]
        if entry.watch is not None:
            entry.watch.cancel()

    def _schedule(self, entry: _Queue, at: float | None) -> None:
        """One timer per queue, at the earliest time the store said something frees up."""
        if at is None:
            return
        if entry.timer is not None and entry.timer_at <= at:
            return
        if entry.timer is not None:
            entry.timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, at - self._clock())

        def fire() -> None:
            entry.timer = None
            entry.hint()

        entry.timer = loop.call_later(delay, fire)
        entry.timer_at = at

    def _ensure_watch(self, key: Key, entry: _Queue) -> None:
        if self._watch is None or entry.watch is not None:
            return
        entry.watch = asyncio.get_running_loop().create_task(self._follow(key, entry))

    async def _follow(self, key: Key, entry: _Queue) -> None:
        """Hints from the queue's watch while the queue has waiters; opened again when it
        ends (a notifier_svc restart), a hint each time in case posts were missed."""
        assert self._watch is not None
        project, queue = key
        backoff = WATCH_RETRY
        while self._queues.get(key) is entry:
            try:
                # The first item says the watch is registered: posts on other replicas reach
                # us from then on, and the hint makes the waiters look once more for what was
                # posted before.
                async for _ in self._watch(project, queue):
                    backoff = WATCH_RETRY
                    entry.hint()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: log, wait, open again
                log.info("long-poll watch of %s/%s ended: %s", project, queue, exc)
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, WATCH_RETRY_MAX)


def _undo_later(done: asyncio.Future[Attempt[T]], undo: Callable[[T], Awaitable[None]]) -> None:
    if done.cancelled() or done.exception() is not None:
        return
    result = done.result().result
    if result is not None:
        task = asyncio.ensure_future(undo(result))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[asyncio.Future[None]] = set()
