"""Dead-letter redrive jobs: start, report, cancel, and run them under a lease
(docs/architecture.md, "Dead-letter redrive").

The rules live here, once, over the compare-and-set primitives of the job store
(``storage/redrives.py``); the move itself is :mod:`services.message_svc.redrive_move`. Every
replica of message_svc runs a :class:`Redrives`: the one that accepts a start runs its job at
once, and each looks every :data:`SCAN_EVERY` seconds for running jobs whose lease ran out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Final

import grpc
import orjson
from zaqar_grpc.v2 import queues_pb2, queues_pb2_grpc

from services.common.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    QueueNotFound,
    ServiceError,
    Unavailable,
    upstream_call,
)
from services.common.metrics import instrumented
from services.message_svc import validation
from services.message_svc.redrive_move import FaultHook, Hint, Target, post_batch
from services.message_svc.service import MessageService
from services.message_svc.storage.base import MessageStore, StaleQueue, StoredMessage
from services.message_svc.storage.redrives import (
    CANCELLED,
    DONE,
    FAILED,
    RUNNING,
    RedriveJob,
    RedriveStore,
)

log = logging.getLogger(__name__)

MAX_PER_SECOND_MAX: Final = 1000
BATCH: Final = 20
LEASE: Final = 30.0
SCAN_EVERY: Final = 5.0
RETRY_FIRST, RETRY_MAX = 1.0, 30.0
# Compare-and-set attempts of a start or a cancel racing with the runner's writes.
CAS_ATTEMPTS: Final = 10

MAX_PER_SECOND: Final = (
    f"max_per_second must be an integer from 1 to {MAX_PER_SECOND_MAX}."
)
NOT_SUPPORTED: Final = "Dead-letter redrive is not supported by this message store."

SourcesOf = Callable[[str, str], Awaitable[list[str]]]
"""``sources_of(project, dlq)``: queues whose ``_dead_letter_queue`` is ``dlq`` (at most 2)."""


class RedriveNotFound(NotFound):
    reason = "REDRIVE_NOT_FOUND"
    msg_format = "Queue {queue} has no redrive job for project {project}"


class RedriveRunning(Conflict):
    reason = "REDRIVE_RUNNING"
    msg_format = "A redrive of queue {queue} is already running."


class RedriveFinishing(RedriveRunning):
    msg_format = (
        "The cancelled redrive of queue {queue} is finishing the batch it had begun. "
        "Please try again in a moment."
    )


def queue_sources(channel: grpc.aio.Channel, timeout: float) -> SourcesOf:
    """:data:`SourcesOf` through ``zaqar.v2.Queues.ListQueues`` (a metadata filter)."""
    stub = instrumented(queues_pb2_grpc.QueuesStub(channel))

    async def sources_of(project: str, queue: str) -> list[str]:
        request = queues_pb2.ListQueuesRequest(
            project=project, limit=2,
            metadata_filters={"_dead_letter_queue": orjson.dumps(queue)},
        )
        answer: queues_pb2.ListQueuesResponse = await upstream_call(
            stub.ListQueues(request, timeout=timeout),
            f"queue_svc (ListQueues {project}, dead-letter sources of {queue})",
            f"The queues that move messages into queue {queue} could not be listed.",
        )
        return [q.name for q in answer.queues]

    return sources_of


def check_max_per_second(value: int | None) -> None:
    if value is not None and not 1 <= value <= MAX_PER_SECOND_MAX:
        raise InvalidArgument(MAX_PER_SECOND)


class Redrives:
    """Redrive jobs of every queue; runs the jobs this replica holds the lease of."""

    def __init__(
        self,
        service: MessageService,
        jobs: RedriveStore | None,
        sources_of: SourcesOf,
        *,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        hint: Hint | None = None,
        batch: int = BATCH,
        lease: float = LEASE,
        after_post: FaultHook | None = None,
        after_delete: FaultHook | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``now`` and ``sleep`` pace the jobs (rate, retries, leases; tests move them);
        ``wall`` is the stores' clock, which a moved message's remaining ttl is read on;
        ``hint`` wakes a destination's long-polling waiters; ``after_post`` runs between a
        batch's posts and its delete, ``after_delete`` between its delete and its record
        (tests stop a job there)."""
        self.service = service
        self.jobs = jobs
        self.owner = str(uuid.uuid4())
        self._sources_of = sources_of
        self._now = now
        self._sleep = sleep
        self._hint = hint
        self._batch = batch
        self._lease = lease
        self._after_post = after_post
        self._after_delete = after_delete
        self._wall = wall
        self.tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._scanner: asyncio.Task[None] | None = None

    def _store(self) -> RedriveStore:
        if self.jobs is None:
            raise InvalidArgument(NOT_SUPPORTED)
        return self.jobs

    # The API ------------------------------------------------------------------------------

    async def start(
        self, project: str, queue: str, destination: str | None, max_per_second: int | None
    ) -> RedriveJob:
        """Start moving ``queue``'s messages to ``destination`` (None: its one source queue).

        Raises:
            InvalidArgument: a bad argument; no single source queue; a destination that does
                not exist or is the queue itself; no redrive on this store.
            QueueNotFound: ``queue`` does not exist.
            RedriveRunning: a job of ``queue`` is running, or was cancelled and is finishing
                its batch (``RedriveFinishing``).
        """
        validation.queue_ref(project, queue)
        check_max_per_second(max_per_second)
        if destination is not None:
            validation.queue_ref(project, destination)
            if destination == queue:
                raise InvalidArgument("A queue cannot be redriven into itself.")
        jobs = self._store()
        policy = await self.service.metadata.get(project, queue)
        if not policy.exists:
            raise QueueNotFound(queue=queue, project=project)
        if destination is None:
            destination = await self._source(project, queue)
        await self._check_destination(project, destination)
        store = await self.service.stores.get(policy.pool_uri)
        for _ in range(CAS_ATTEMPTS):
            existing = await jobs.read(project, queue)
            if existing is not None and existing.status == RUNNING:
                raise RedriveRunning(queue=queue)
            if existing is not None and existing.active:
                raise RedriveFinishing(queue=queue)
            stats = await store.stats(project, queue)
            mark = stats.newest.seq if stats.newest is not None else 0
            now = self._now()
            job = RedriveJob(
                project=project, queue=queue, id=str(uuid.uuid4()), destination=destination,
                max_per_second=max_per_second, status=RUNNING if mark else DONE,
                started=now, updated=now, mark=mark, remaining=stats.total,
                owner=self.owner if mark else "", lease_until=now + self._lease if mark else 0,
                version=0 if existing is None else existing.version,
            )
            if await jobs.write(job):
                job = job.next(version=job.version + 1)
                if job.status == RUNNING:
                    self._launch(job)
                return job
        raise RedriveRunning(queue=queue)

    async def _check_destination(self, project: str, destination: str) -> Target:
        """The destination as a batch posts into it.

        Raises:
            InvalidArgument: it does not exist, or is a FIFO queue on a store without them.
        """
        policy = await self.service.metadata.get(project, destination)
        if not policy.exists:
            raise InvalidArgument(f"The destination queue {destination} does not exist.")
        target_store = await self.service.stores.get(policy.pool_uri)
        if policy.fifo and not target_store.capabilities.fifo:
            raise InvalidArgument(validation.FIFO_UNSUPPORTED)
        return Target(destination, policy, target_store)

    async def _source(self, project: str, queue: str) -> str:
        sources = await self._sources_of(project, queue)
        if len(sources) == 1:
            return sources[0]
        if not sources:
            raise InvalidArgument(
                f"No queue names {queue} as its _dead_letter_queue: give a destination."
            )
        raise InvalidArgument(
            f"Several queues name {queue} as their _dead_letter_queue: give a destination."
        )

    async def get(self, project: str, queue: str) -> RedriveJob:
        """Raises: RedriveNotFound: the queue never had a job."""
        validation.queue_ref(project, queue)
        job = await self._store().read(project, queue)
        if job is None:
            raise RedriveNotFound(queue=queue, project=project)
        return job

    async def cancel(self, project: str, queue: str) -> RedriveJob:
        """Cancel the queue's running job (a finished one stays as it is). The batch under
        way, if any, is finished first by the runner holding the lease (or, should it die,
        by the one taking it over); its messages are counted.

        Raises: RedriveNotFound: the queue never had a job.
        """
        validation.queue_ref(project, queue)
        jobs = self._store()
        for _ in range(CAS_ATTEMPTS):
            job = await self.get(project, queue)
            if job.status != RUNNING:
                return job
            cancelled = job.next(status=CANCELLED, updated=self._now())
            if not job.batch:
                cancelled = cancelled.next(owner="", lease_until=0.0)
            if await jobs.write(cancelled):
                return cancelled.next(version=cancelled.version + 1)
        raise Unavailable(f"The redrive of queue {queue} kept changing. Please try again.")

    # Running ------------------------------------------------------------------------------

    def _launch(self, job: RedriveJob) -> None:
        key = (job.project, job.queue)
        task = asyncio.ensure_future(self._run(job))
        self.tasks[key] = task
        task.add_done_callback(lambda done: self._ended(key, done))

    def _ended(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self.tasks.get(key) is task:
            del self.tasks[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("redrive of %s/%s stopped", *key, exc_info=task.exception())

    async def run_due(self) -> int:
        """Take over the active jobs (running, or finishing a batch) whose lease ran out and
        run them here.

        Returns:
            How many were taken.
        """
        jobs = self._store()
        taken = 0
        for project, queue in await jobs.running():
            if (project, queue) in self.tasks:
                continue
            job = await jobs.read(project, queue)
            now = self._now()
            if job is None or not job.active or job.lease_until > now:
                continue
            held = job.next(owner=self.owner, lease_until=now + self._lease, updated=now)
            if await jobs.write(held):
                log.info("redrive of %s/%s taken over (%d moved so far)", project, queue,
                         job.moved)
                self._launch(held.next(version=held.version + 1))
                taken += 1
        return taken

    async def wait(self, project: str, queue: str) -> None:
        """Until this replica's run of the queue's job ends (at once when it runs none)."""
        task = self.tasks.get((project, queue))
        if task is not None:
            await asyncio.wait([task])

    async def _run(self, job: RedriveJob) -> None:
        started, moved_here = self._now(), 0
        backoff = RETRY_FIRST
        current = job
        began = False  # whether this run began the batch under way
        while current.active:
            try:
                if current.batch:
                    # Tried again after a failure, a batch counts as resumed (its delete
                    # may have been applied).
                    resumed, began = not began, False
                    after, moved = await self._finish(current, resumed=resumed)
                else:
                    after, moved = await self._begin(current), 0
                    began = True
            except StaleQueue:
                self.service.metadata.invalidate(current.project, current.destination)
                continue
            except Unavailable as exc:
                log.warning("redrive of %s/%s: %s", job.project, job.queue, exc)
                await self._sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX)
                after, moved = await self._renewed(current), 0
            except ServiceError as exc:
                # The batch is dropped: its messages are still in the dead-letter queue (none
                # is deleted before every one of them is posted).
                status = FAILED if current.status == RUNNING else current.status
                await self._record(current, current.next(
                    status=status, error=exc.description, batch=(), batch_end=0,
                ))
                return
            else:
                backoff = RETRY_FIRST
            if after is None:
                return
            current, moved_here = after, moved_here + moved
            rate = job.max_per_second
            if current.status == RUNNING and rate and moved:
                ahead = started + moved_here / rate - self._now()
                if ahead > 0:
                    await self._sleep(ahead)

    async def _begin(self, job: RedriveJob) -> RedriveJob | None:
        """The next batch, recorded (its ids, ``batch``) before any of it is posted; or the job
        recorded ``done`` when nothing is left. Returns the record written, or None when the
        job is not this runner's any more (or was cancelled: it begins no new batch)."""
        store = await self._source_store(job)
        size = min(self._batch, job.max_per_second or self._batch)
        page = [
            m for m in await store.list_messages(
                job.project, job.queue, limit=size, after=job.cursor or None,
                include_claimed=True, include_delayed=True,
            )
            if m.seq <= job.mark
        ]
        if not page:
            stats = await store.stats(job.project, job.queue)
            return await self._record(job, job.next(status=DONE, remaining=stats.total))
        return await self._record(
            job, job.next(batch=tuple(m.id for m in page), batch_end=page[-1].seq)
        )

    async def _finish(
        self, job: RedriveJob, *, resumed: bool
    ) -> tuple[RedriveJob | None, int]:
        """Moves the batch under way, and records it moved with the cursor after it: the job
        as recorded (None: no longer this runner's), and how many messages it moved.

        The batch is counted once, by the record that ends it: the messages posted, which
        are those still in the dead-letter queue. A ``resumed`` batch was begun by a runner
        that stopped anywhere after recording it: what is still in the dead-letter queue is
        posted again (the keys make the posts made before no-ops) and deleted, and the
        batch's messages no longer there count as moved too (that runner deleted nothing
        before all of them were posted). A job cancelled during a batch finishes it the same
        way.
        """
        store = await self._source_store(job)
        page = await self._still_there(store, job)
        if page:
            target = await self._check_destination(job.project, job.destination)
            await post_batch(
                self.service, job.project, job.queue, target, job.id, page, self._wall(),
                self._hint, resumed=resumed,
            )
            if self._after_post is not None:
                await self._after_post(page)
            await store.delete_many(job.project, job.queue, list(job.batch))
            if self._after_delete is not None:
                await self._after_delete(page)
        stats = await store.stats(job.project, job.queue)
        count = len(job.batch) if resumed else len(page)
        after = job.next(cursor=max(job.cursor, job.batch_end), batch=(), batch_end=0,
                         moved=job.moved + count, remaining=stats.total)
        return await self._record(job, after), count

    async def _source_store(self, job: RedriveJob) -> MessageStore:
        source = await self.service.metadata.get(job.project, job.queue)
        return await self.service.stores.get(source.pool_uri)

    async def _still_there(self, store: MessageStore, job: RedriveJob) -> list[StoredMessage]:
        """The messages of the job's batch still in the dead-letter queue, by seq (read as a
        listing reads, from the primary on MongoDB: never a stale copy, which would leave a
        message out of the posts and in the delete)."""
        wanted, found = set(job.batch), []
        after = job.cursor
        while True:
            page = await store.list_messages(
                job.project, job.queue, limit=self._batch, after=after or None,
                include_claimed=True, include_delayed=True,
            )
            found += [m for m in page if m.id in wanted and m.seq <= job.batch_end]
            if len(page) < self._batch or page[-1].seq >= job.batch_end:
                return found
            after = page[-1].seq

    async def _record(self, job: RedriveJob, after: RedriveJob) -> RedriveJob | None:
        """Write ``after`` over ``job`` with a fresh lease (or none, once it is not active).
        When the job was cancelled meanwhile and this runner still holds its lease (a batch
        was under way), the batch's progress is written onto the cancelled record; a
        cancelled job begins no new batch. Returns the record written, or None when the job
        is not this runner's any more."""
        jobs = self._store()
        now = self._now()
        after = self._leased(after, now)
        if await jobs.write(after):
            return after.next(version=after.version + 1)
        if after.batch and not job.batch:
            return None
        for _ in range(CAS_ATTEMPTS):
            stored = await jobs.read(job.project, job.queue)
            if (stored is None or stored.id != job.id or stored.status != CANCELLED
                    or stored.owner != self.owner):
                return None
            counted = self._leased(stored.next(
                moved=stored.moved + after.moved - job.moved, cursor=after.cursor,
                batch=after.batch, batch_end=after.batch_end, remaining=after.remaining,
                error=after.error or stored.error,
            ), now)
            if await jobs.write(counted):
                return counted.next(version=counted.version + 1)
        return None

    def _leased(self, job: RedriveJob, now: float) -> RedriveJob:
        """``job`` updated now, with this runner's lease renewed while it is active."""
        active = job.active
        return job.next(updated=now, owner=self.owner if active else "",
                        lease_until=now + self._lease if active else 0.0)

    async def _renewed(self, job: RedriveJob) -> RedriveJob | None:
        """The job with its lease renewed, or None when it is not this runner's any more;
        the job as it was when the store does not answer (the lease may run out)."""
        try:
            return await self._record(job, job)
        except Unavailable:
            return job

    # Lifecycle ----------------------------------------------------------------------------

    def start_scanning(self, every: float = SCAN_EVERY) -> None:
        """Look for jobs to take over every ``every`` seconds until :meth:`close`."""
        if self.jobs is not None and self._scanner is None:
            self._scanner = asyncio.ensure_future(self._scan(every))

    async def _scan(self, every: float) -> None:
        while True:
            try:
                await self.run_due()
            except ServiceError as exc:
                log.warning("redrive jobs not scanned: %s", exc)
            await asyncio.sleep(every)

    async def close(self) -> None:
        """Stop scanning and running; the jobs run here are let go (their lease ends now), so
        another replica takes them over at its next scan."""
        if self._scanner is not None:
            self._scanner.cancel()
            await asyncio.gather(self._scanner, return_exceptions=True)
            self._scanner = None
        tasks = list(self.tasks.items())
        for _, task in tasks:
            task.cancel()
        await asyncio.gather(*(task for _, task in tasks), return_exceptions=True)
        if self.jobs is None:
            return
        for (project, queue), _ in tasks:
            with contextlib.suppress(ServiceError):
                job = await self.jobs.read(project, queue)
                if job is not None and job.active and job.owner == self.owner:
                    await self.jobs.write(job.next(owner="", lease_until=0.0))
