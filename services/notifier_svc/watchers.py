"""Watchers: callers streaming a queue's new messages (``NotifierInternal.Watch``), those of
this process (``watch_sharing.py`` joins every replica's).

Every message handed over by Notify is put on each watcher's own bounded buffer, without
waiting, so that a slow watcher never holds up the hand-over or the other watchers. A watcher
whose buffer is full has fallen too far behind: it is dropped (its stream ends with
RESOURCE_EXHAUSTED) rather than silently missing messages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from zaqar_grpc.v2 import common_pb2, notifier_pb2

Key = tuple[str, str]
BUFFER = 1000


class Watcher:
    """One stream's buffer of notifications, and when it was registered (Unix seconds)."""

    def __init__(self, buffer: int, since: float) -> None:
        self.queue: asyncio.Queue[notifier_pb2.Notification] = asyncio.Queue(buffer)
        # Set when the stream must end: the watcher fell behind, or (``stopping``) the process
        # is stopping.
        self.overflowed = asyncio.Event()
        self.stopping = False
        self.since = since


class WatchHub:
    """The watchers of every queue in this process."""

    def __init__(self, buffer: int = BUFFER, clock: Callable[[], float] = time.time) -> None:
        self._buffer = buffer
        self._clock = clock
        self._watchers: dict[Key, set[Watcher]] = {}

    def end(self) -> None:
        """This process is stopping: every watcher's stream ends now (UNAVAILABLE, reason
        STOPPING), for its caller to watch again on another replica, rather than at the end
        of the server's grace."""
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.stopping = True
                watcher.overflowed.set()

    def listened(self, project: str, queue: str) -> bool:
        return bool(self._watchers.get((project, queue)))

    def watching(self) -> bool:
        """Whether this process has any watcher."""
        return bool(self._watchers)

    def register(self, project: str, queue: str) -> Watcher:
        watcher = Watcher(self._buffer, self._clock())
        self._watchers.setdefault((project, queue), set()).add(watcher)
        return watcher

    def unregister(self, project: str, queue: str, watcher: Watcher) -> None:
        watchers = self._watchers.get((project, queue))
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[(project, queue)]

    def publish(
        self,
        project: str,
        queue: str,
        messages: Sequence[common_pb2.Message],
        accepted_at: float = 0.0,
    ) -> None:
        """Hand the messages to every watcher of the queue; never waits. Watchers registered
        after ``accepted_at`` (when non-zero) do not get them: they were posted before."""
        watchers = self._watchers.get((project, queue))
        if not watchers:
            return
        for watcher in list(watchers):
            if accepted_at and watcher.since > accepted_at:
                continue
            for message in messages:
                try:
                    watcher.queue.put_nowait(
                        notifier_pb2.Notification(queue=queue, message=message)
                    )
                except asyncio.QueueFull:
                    watcher.overflowed.set()
                    self.unregister(project, queue, watcher)
                    break
