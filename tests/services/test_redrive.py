"""Dead-letter redrive (``Messages.StartRedrive`` / ``GetRedrive`` / ``CancelRedrive``) on
every built-in store: over gRPC against real queue_svc and message_svc, and through a
:class:`~services.message_svc.redrive.Redrives` of the test's own, with a clock the test moves
and a fault hook between a batch's posts and its delete (a crash there, then the resume)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import orjson
import pytest
from zaqar_grpc.v2 import common_pb2, messages_pb2

from services.common.errors import decode_rpc_error
from services.common.grpc_server import open_channel
from services.message_svc.metadata import QueueMetadata
from services.message_svc.redrive import MAX_PER_SECOND, Redrives, queue_sources
from services.message_svc.redrive_move import FaultHook
from services.message_svc.service import MessageService
from services.message_svc.storage.base import MessageStore, StoredMessage
from services.message_svc.storage.mongodb import fifo, once
from services.message_svc.storage.redrives import open_redrive_store
from services.message_svc.storage.registry import open_store
from tests.services.test_message_svc import (  # noqa: F401 - fixtures
    CLIENT,
    PROJECT,
    Services,
    invalid,
    message_svc_factory,
    rpc_error,
)

Code = grpc.StatusCode




def _start(queue: str = "dlq", **kw: Any) -> messages_pb2.StartRedriveRequest:
    return messages_pb2.StartRedriveRequest(project=PROJECT, queue=queue, **kw)


def _ref(queue: str = "dlq") -> common_pb2.QueueRef:
    return common_pb2.QueueRef(project=PROJECT, queue=queue)


async def _finished(svc: Services, queue: str = "dlq") -> messages_pb2.Redrive:
    """The queue's job once it stopped running (polled: it runs in the background)."""
    deadline = time.monotonic() + 60
    while True:
        job: messages_pb2.Redrive = await svc.messages.GetRedrive(_ref(queue))
        if job.status != "running" or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.05)


async def _all(svc: Services, queue: str) -> list[common_pb2.Message]:
    found: list[common_pb2.Message] = []
    marker = ""
    while True:
        page = await svc.messages.ListMessages(messages_pb2.ListMessagesRequest(
            project=PROJECT, queue=queue, client_id=CLIENT, echo=True, include_claimed=True,
            include_delayed=True, limit=20, marker=marker,
        ))
        if not page.messages:
            return found
        found += page.messages
        marker = page.next_marker


async def _numbers(svc: Services, queue: str) -> list[int]:
    return [orjson.loads(m.body) for m in await _all(svc, queue)]


async def _dead_letter(svc: Services, source: str, count: int, **source_meta: Any) -> None:
    """``count`` messages posted to ``source`` and moved to its dead-letter queue "dlq" by
    real claims (claimed once, released, then moved by the next claim)."""
    await svc.create_queue("dlq")
    await svc.create_queue(source, _max_claim_count=1, _dead_letter_queue="dlq", **source_meta)
    for start in range(0, count, 20):
        await svc.post(*range(start, min(count, start + 20)), queue=source, ttl=600)
    while True:
        claim = await svc.claim(queue=source, limit=20)
        if not claim.id:
            break
        await svc.messages.DeleteClaim(messages_pb2.DeleteClaimRequest(
            project=PROJECT, queue=source, claim_id=claim.id
        ))
    assert await _numbers(svc, source) == []


async def test_redrive_moves_dead_letters_back_to_their_source(svc: Services) -> None:
    # Given 25 messages dead-lettered from "src" into "dlq"
    await _dead_letter(svc, "src", 25)
    before = {m.id: m for m in await _all(svc, "dlq")}

    # When the dead-letter queue is redriven without a destination
    job = await svc.messages.StartRedrive(_start())

    # Then the job names the one source queue and runs to the end
    assert (job.queue, job.destination, job.status) == ("dlq", "src", "running")
    assert job.remaining == 25 and job.started > 0
    done = await _finished(svc)
    assert (done.status, done.moved, done.remaining, done.id) == ("done", 25, 0, job.id)

    # And every message is back in its source once, in order, with its body, a fresh claim
    # state and at most its remaining ttl, under a new id
    assert await _numbers(svc, "dlq") == []
    moved = await _all(svc, "src")
    assert [orjson.loads(m.body) for m in moved] == list(range(25))
    assert all(m.claim_count == 0 and not m.claim_id for m in moved)
    assert all(0 < m.ttl <= 600 for m in moved)
    assert not set(before) & {m.id for m in moved}


async def test_a_fifo_source_gets_its_groups_back_in_order(svc: Services) -> None:
    # Given a FIFO queue whose grouped messages were dead-lettered
    await svc.create_queue("dlq")
    await svc.create_queue("f", _fifo=True, _max_claim_count=1, _dead_letter_queue="dlq")
    await svc.messages.PostMessages(messages_pb2.PostMessagesRequest(
        project=PROJECT, queue="f", client_id=CLIENT, messages=[
            messages_pb2.NewMessage(body=orjson.dumps(n), group_id=g)
            for n, g in [(1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "a")]
        ],
    ))
    for _ in range(10):
        claim = await svc.claim(queue="f", limit=20)
        if claim.id:
            await svc.messages.DeleteClaim(messages_pb2.DeleteClaimRequest(
                project=PROJECT, queue="f", claim_id=claim.id))
    assert await _numbers(svc, "dlq") == [1, 2, 3, 4, 5]

    # When it is redriven back
    await svc.messages.StartRedrive(_start())
    assert (await _finished(svc)).moved == 5

    # Then the groups are back, in order: a claim takes group a's head first
    back = await _all(svc, "f")
    assert [(orjson.loads(m.body), m.group_id) for m in back] == [
        (1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "a")
    ]
    first = await svc.claim(queue="f", limit=1)
    assert [orjson.loads(m.body) for m in first.messages] == [1]


async def test_redrive_to_a_destination_and_an_empty_queue(svc: Services) -> None:
    # Given a dead-letter queue of nobody's, with messages, and another queue
    await svc.create_queue("dlq")
    await svc.create_queue("elsewhere")
    await svc.post(1, 2, 3, queue="dlq")

    # When it is redriven to that queue at 100 a second
    job = await svc.messages.StartRedrive(_start(destination="elsewhere", max_per_second=100))
    assert (job.destination, job.max_per_second) == ("elsewhere", 100)
    assert (await _finished(svc)).moved == 3
    assert await _numbers(svc, "elsewhere") == [1, 2, 3]

    # Then redriving it again, now empty, is done at once
    again = await svc.messages.StartRedrive(_start(destination="elsewhere"))
    assert (again.status, again.moved, again.remaining) == ("done", 0, 0)
    assert again.id != job.id


async def test_refusals(svc: Services) -> None:
    await svc.create_queue("dlq")
    await svc.create_queue("a", _max_claim_count=1, _dead_letter_queue="dlq")

    # An absent dead-letter queue
    info = await rpc_error(svc.messages.StartRedrive(_start("nothing-here")))
    assert (info.code, info.reason) == (Code.NOT_FOUND, "QUEUE_NOT_FOUND")

    # An absent destination, the queue itself, a bad name, rates out of range
    invalid(await rpc_error(svc.messages.StartRedrive(_start(destination="absent"))),
            "The destination queue absent does not exist.")
    invalid(await rpc_error(svc.messages.StartRedrive(_start(destination="dlq"))),
            "A queue cannot be redriven into itself.")
    bad = await rpc_error(svc.messages.StartRedrive(_start(destination="a b")))
    assert (bad.code, bad.reason) == (Code.INVALID_ARGUMENT, "INVALID_QUEUE_NAME")
    for rate in (0, -1, 1001):
        invalid(await rpc_error(svc.messages.StartRedrive(_start(max_per_second=rate))),
                MAX_PER_SECOND)

    # Several sources: a destination is needed; none: too
    await svc.create_queue("b", _max_claim_count=1, _dead_letter_queue="dlq")
    invalid(await rpc_error(svc.messages.StartRedrive(_start())),
            "Several queues name dlq as their _dead_letter_queue: give a destination.")
    await svc.create_queue("lonely")
    invalid(await rpc_error(svc.messages.StartRedrive(_start("lonely"))),
            "No queue names lonely as its _dead_letter_queue: give a destination.")

    # No job yet: GET and DELETE are 404
    for call in (svc.messages.GetRedrive, svc.messages.CancelRedrive):
        info = await rpc_error(call(_ref()))
        assert (info.code, info.reason) == (Code.NOT_FOUND, "REDRIVE_NOT_FOUND")


async def test_a_second_start_while_one_runs_conflicts_and_cancel_stops_it(
    svc: Services,
) -> None:
    # Given a slow job (one message a second)
    await svc.create_queue("dlq")
    await svc.create_queue("to")
    await svc.post(*range(30), queue="dlq")
    await svc.messages.StartRedrive(_start(destination="to", max_per_second=1))

    # When another start comes, it is refused with 409's code
    info = await rpc_error(svc.messages.StartRedrive(_start(destination="to")))
    assert (info.code, info.reason) == (Code.ALREADY_EXISTS, "REDRIVE_RUNNING")

    # And a cancel stops it, keeping what was not moved yet
    cancelled = await svc.messages.CancelRedrive(_ref())
    assert cancelled.status == "cancelled"
    # (the batch under way, at most one message, ends first: its delete is awaited)
    deadline = time.monotonic() + 30
    while True:
        left, there = await _numbers(svc, "dlq"), await _numbers(svc, "to")
        if len(left) + len(there) == 30 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert (await svc.messages.GetRedrive(_ref())).status == "cancelled"
    assert sorted(left + there) == list(range(30))
    assert left == list(range(30 - len(left), 30))

    # And a cancelled job may be followed by a new one, once its runner recorded the batch
    # it had begun (until then a start is refused, saying so)
    deadline = time.monotonic() + 30
    while True:
        try:
            again = await svc.messages.StartRedrive(_start(destination="to"))
            break
        except grpc.aio.AioRpcError as exc:
            info = decode_rpc_error(exc)
            assert info.reason == "REDRIVE_RUNNING" and "finishing" in info.description
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    assert again.status == "running"
    assert (await _finished(svc)).status == "done"
    assert sorted(await _numbers(svc, "to")) == list(range(30))


# A Redrives of the test's own over the same stores -----------------------------------------


class Clock:
    """Leases and pacing run on this clock, an hour ahead of the servers' (whose runners then
    never see these jobs' leases run out); only :meth:`sleep` moves it."""

    def __init__(self) -> None:
        self.t = time.time() + 3600
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


@pytest.fixture
async def local(svc: Services) -> AsyncIterator[Callable[..., Awaitable[Redrives]]]:
    """Makes runners over the servers' stores and queue_svc, each with its own owner id."""
    settings = svc.settings
    store: MessageStore = await open_store(settings.store_uri("message"))
    channel = open_channel(settings.target("queue"), None)
    made: list[Redrives] = []

    async def version_of(uri: str, project: str, queue: str) -> int:
        return await store.queue_version(project, queue)

    async def make(
        clock: Clock, after_post: FaultHook | None = None, batch: int = 20,
        after_delete: FaultHook | None = None,
    ) -> Redrives:
        metadata = QueueMetadata(channel, 5.0, 0.0, version_of=version_of)
        jobs = await open_redrive_store(settings.store_uri("message"))
        redrives = Redrives(
            MessageService(store, metadata), jobs, queue_sources(channel, 5.0),
            now=clock.now, sleep=clock.sleep, batch=batch, after_post=after_post,
            after_delete=after_delete,
        )
        made.append(redrives)
        return redrives

    yield make
    for redrives in made:
        await redrives.close()
        if redrives.jobs is not None:
            await redrives.jobs.close()
    await channel.close()
    await store.close()


class Crash(Exception):
    """Stands for message_svc dying at a point of a batch."""


async def fifty_dead_letters(svc: Services) -> None:
    """Queues ``dlq`` (with the numbers 0-49, posted in tens) and ``to``."""
    await svc.create_queue("dlq")
    await svc.create_queue("to")
    for start in range(0, 50, 10):
        await svc.post(*range(start, start + 10), queue="dlq")


def crash_on_batch(
    n: int, batches: list[int]
) -> Callable[[Sequence[StoredMessage]], Awaitable[None]]:
    """A batch hook that notes each batch's size in ``batches`` and crashes on the n-th."""

    async def hook(page: Sequence[StoredMessage]) -> None:
        batches.append(len(page))
        if len(batches) == n:
            raise Crash()

    return hook


async def test_a_crash_between_post_and_delete_neither_loses_nor_duplicates(
    svc: Services, local: Callable[..., Awaitable[Redrives]],
) -> None:
    # Given 50 dead letters and a runner that dies after posting its second batch
    await fifty_dead_letters(svc)
    clock = Clock()
    batches: list[int] = []
    crash_on_second = crash_on_batch(2, batches)

    first = await local(clock, crash_on_second)
    job = await first.start(PROJECT, "dlq", "to", None)
    await first.wait(PROJECT, "dlq")

    # Then the second batch is in both queues, and the job still runs under the dead lease
    assert len(await _numbers(svc, "to")) == 40
    assert len(await _numbers(svc, "dlq")) == 30
    stalled = await svc.messages.GetRedrive(_ref())
    assert (stalled.status, stalled.moved) == ("running", 20)

    # When another runner looks before the lease ran out, it takes nothing
    second = await local(clock)
    assert await second.run_due() == 0

    # And once it ran out, the job is resumed there and ends
    clock.t += 31
    assert await second.run_due() == 1
    await second.wait(PROJECT, "dlq")

    # Then every message is in the destination exactly once, and none is left behind
    assert sorted(await _numbers(svc, "to")) == list(range(50))
    assert await _numbers(svc, "dlq") == []
    done = await svc.messages.GetRedrive(_ref())
    assert (done.id, done.status, done.moved, done.remaining) == (job.id, "done", 50, 0)


async def test_max_per_second_paces_the_batches(
    svc: Services, local: Callable[..., Awaitable[Redrives]],
) -> None:
    # Given 45 dead letters and a job limited to 10 a second
    await svc.create_queue("dlq")
    await svc.create_queue("to")
    for start in range(0, 45, 15):
        await svc.post(*range(start, start + 15), queue="dlq")
    clock = Clock()
    seen: list[tuple[float, int]] = []

    async def record(page: Sequence[StoredMessage]) -> None:
        seen.append((clock.now(), len(page)))

    runner = await local(clock, record)
    began = clock.now()
    await runner.start(PROJECT, "dlq", "to", 10)
    await runner.wait(PROJECT, "dlq")

    # Then batches hold at most 10, and the job never runs ahead of 10 a second
    assert [n for _, n in seen] == [10, 10, 10, 10, 5]
    moved = 0
    for at, n in seen:
        assert moved <= 10 * (at - began)
        moved += n
    assert sum(clock.slept) == pytest.approx(4.5)
    assert sorted(await _numbers(svc, "to")) == list(range(45))


async def test_a_cancel_during_a_batch_counts_the_batch_and_stops(
    svc: Services, local: Callable[..., Awaitable[Redrives]],
) -> None:
    # Given a job whose first batch is under way when it is cancelled
    await svc.create_queue("dlq")
    await svc.create_queue("to")
    await svc.post(*range(15), queue="dlq")
    clock = Clock()
    runner: Redrives | None = None

    async def cancel_now(page: Sequence[StoredMessage]) -> None:
        assert runner is not None
        await runner.cancel(PROJECT, "dlq")

    runner = await local(clock, cancel_now, batch=5)
    await runner.start(PROJECT, "dlq", "to", None)
    await runner.wait(PROJECT, "dlq")

    # Then the batch was finished and counted, and nothing more moved
    job = await svc.messages.GetRedrive(_ref())
    assert (job.status, job.moved, job.remaining) == ("cancelled", 5, 10)
    assert await _numbers(svc, "to") == [0, 1, 2, 3, 4]
    assert await _numbers(svc, "dlq") == list(range(5, 15))


async def test_another_project_neither_sees_nor_touches_a_job(svc: Services) -> None:
    # Given a job of PROJECT's dead-letter queue (a project owns its queues; in keystone
    # mode the token decides the project of every Messages request: test_grpc_auth.py)
    await svc.create_queue("dlq")
    await svc.create_queue("to")
    await svc.post(*range(3), queue="dlq")
    job = await svc.messages.StartRedrive(_start(destination="to"))
    other = "other-project"

    # When another project asks for, cancels or starts a redrive of a queue of that name
    for call in (svc.messages.GetRedrive, svc.messages.CancelRedrive):
        info = await rpc_error(call(common_pb2.QueueRef(project=other, queue="dlq")))
        assert (info.code, info.reason) == (Code.NOT_FOUND, "REDRIVE_NOT_FOUND")
    info = await rpc_error(svc.messages.StartRedrive(messages_pb2.StartRedriveRequest(
        project=other, queue="dlq", destination="to")))
    assert (info.code, info.reason) == (Code.NOT_FOUND, "QUEUE_NOT_FOUND")

    # Then the owner's job ran as it would have
    done = await _finished(svc)
    assert (done.id, done.status, done.moved) == (job.id, "done", 3)


async def test_a_crash_between_delete_and_record_still_counts_every_message_once(
    svc: Services, local: Callable[..., Awaitable[Redrives]],
) -> None:
    # Given 50 dead letters and a runner that dies after deleting its second batch from the
    # dead-letter queue, before recording it
    await fifty_dead_letters(svc)
    clock = Clock()
    batches: list[int] = []
    crash_on_second = crash_on_batch(2, batches)

    first = await local(clock, after_delete=crash_on_second)
    job = await first.start(PROJECT, "dlq", "to", None)
    await first.wait(PROJECT, "dlq")
    assert len(await _numbers(svc, "to")) == 40
    assert len(await _numbers(svc, "dlq")) == 10

    # When another runner takes the job over once the lease ran out
    clock.t += 31
    second = await local(clock)
    assert await second.run_due() == 1
    await second.wait(PROJECT, "dlq")

    # Then the count is exact: the interrupted batch is counted once, as every message is
    # in the destination once
    assert sorted(await _numbers(svc, "to")) == list(range(50))
    done = await svc.messages.GetRedrive(_ref())
    assert (done.id, done.status, done.moved, done.remaining) == (job.id, "done", 50, 0)


async def test_a_job_cancelled_while_its_runner_is_dead_mid_batch_finishes_that_batch(
    svc: Services, local: Callable[..., Awaitable[Redrives]],
) -> None:
    # Given a runner that dies between its first batch's posts and its delete
    await svc.create_queue("dlq")
    await svc.create_queue("to")
    await svc.post(*range(15), queue="dlq")
    clock = Clock()

    async def crash(page: Sequence[StoredMessage]) -> None:
        raise Crash()

    first = await local(clock, crash, batch=5)
    await first.start(PROJECT, "dlq", "to", None)
    await first.wait(PROJECT, "dlq")
    assert sorted(await _numbers(svc, "to")) == [0, 1, 2, 3, 4]
    assert await _numbers(svc, "dlq") == list(range(15))

    # When the job is cancelled before another runner took it over
    cancelled = await svc.messages.CancelRedrive(_ref())
    assert cancelled.status == "cancelled"

    # Then a new job is refused until the batch is finished, saying so
    info = await rpc_error(svc.messages.StartRedrive(_start(destination="to")))
    assert (info.code, info.reason) == (Code.ALREADY_EXISTS, "REDRIVE_RUNNING")
    assert "finishing the batch it had begun" in info.description

    # And once the lease ran out another runner finishes that batch only, and counts it
    clock.t += 31
    second = await local(clock, batch=5)
    assert await second.run_due() == 1
    await second.wait(PROJECT, "dlq")
    job = await svc.messages.GetRedrive(_ref())
    assert (job.status, job.moved, job.remaining) == ("cancelled", 5, 10)
    assert sorted(await _numbers(svc, "to")) == [0, 1, 2, 3, 4]
    assert await _numbers(svc, "dlq") == list(range(5, 15))

    # And a new job moves the rest: every message is in the destination once
    await svc.messages.StartRedrive(_start(destination="to"))
    assert (await _finished(svc)).moved == 10
    assert sorted(await _numbers(svc, "to")) == list(range(15))


async def test_a_standard_destination_keeps_group_id(svc: Services) -> None:
    # Given messages with fair-queue groups dead-lettered from a standard queue
    await svc.create_queue("dlq")
    await svc.create_queue("src", _max_claim_count=1, _dead_letter_queue="dlq")
    await svc.messages.PostMessages(messages_pb2.PostMessagesRequest(
        project=PROJECT, queue="src", client_id=CLIENT, messages=[
            messages_pb2.NewMessage(body=orjson.dumps(n), ttl=600, **group)
            for n, group in [(1, {"group_id": "a"}), (2, {"group_id": "b"}), (3, {})]
        ],
    ))
    for _ in range(5):
        claim = await svc.claim(queue="src", limit=20)
        if claim.id:
            await svc.messages.DeleteClaim(messages_pb2.DeleteClaimRequest(
                project=PROJECT, queue="src", claim_id=claim.id))
    assert await _numbers(svc, "dlq") == [1, 2, 3]

    # When the dead-letter queue is redriven back into it
    await svc.messages.StartRedrive(_start())
    assert (await _finished(svc)).moved == 3

    # Then each message is back with its group (or none)
    back = await _all(svc, "src")
    assert [(orjson.loads(m.body), m.group_id) for m in back] == [(1, "a"), (2, "b"), (3, "")]


@pytest.mark.parametrize("svc", ["mongodb"], indirect=True)
async def test_mongodb_a_crash_between_message_and_key_with_the_message_consumed_posts_once(
    svc: Services, local: Callable[..., Awaitable[Redrives]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a runner that dies in post_once after the first message's insert, before its key
    # is stored (MongoDB writes the two separately; the other stores in one atomic step)
    await svc.create_queue("dlq")
    await svc.create_queue("to")
    await svc.post(0, 1, 2, queue="dlq", ttl=600)
    real = once._remember
    calls: list[str] = []

    async def crash_once(*args: Any) -> None:
        calls.append("remember")
        if len(calls) == 1:
            raise Crash()
        await real(*args)

    monkeypatch.setattr(once, "_remember", crash_once)
    clock = Clock()
    first = await local(clock)
    job = await first.start(PROJECT, "dlq", "to", None)
    await first.wait(PROJECT, "dlq")
    assert await _numbers(svc, "dlq") == [0, 1, 2]

    # When a consumer of the destination claims and deletes whatever it can meanwhile
    consumed: list[int] = []
    claim = await svc.claim(queue="to", limit=20)
    for m in claim.messages:
        consumed.append(orjson.loads(m.body))
        await svc.messages.DeleteMessage(messages_pb2.DeleteMessageRequest(
            project=PROJECT, queue="to", message_id=m.id, claim_id=claim.id))

    # And another runner resumes the job once the lease ran out
    clock.t += 31
    second = await local(clock)
    assert await second.run_due() == 1
    await second.wait(PROJECT, "dlq")

    # Then every message reached the destination exactly once: none was consumed before
    # its key was stored, so none is posted twice
    assert sorted(consumed + await _numbers(svc, "to")) == [0, 1, 2]
    assert await _numbers(svc, "dlq") == []
    done = await svc.messages.GetRedrive(_ref())
    assert (done.id, done.status, done.moved) == (job.id, "done", 3)


async def _drain(svc: Services, queue: str) -> list[tuple[int, str]]:
    """(body, group) of every message claims take from ``queue``, deleting each."""
    taken: list[tuple[int, str]] = []
    while True:
        claim = await svc.claim(queue=queue, limit=20)
        if not claim.id:
            return taken
        for m in claim.messages:
            taken.append((orjson.loads(m.body), m.group_id))
            await svc.messages.DeleteMessage(messages_pb2.DeleteMessageRequest(
                project=PROJECT, queue=queue, message_id=m.id, claim_id=claim.id))


@pytest.mark.parametrize("svc", ["mongodb"], indirect=True)
async def test_mongodb_a_crash_between_fifo_message_and_dedup_record_with_consumers_posts_once(
    svc: Services, local: Callable[..., Awaitable[Redrives]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a runner that dies in post_fifo into a FIFO destination after the batch's
    # messages are inserted, before their dedup documents are stored (MongoDB writes them
    # separately), taking nothing back (the process is gone)
    await svc.create_queue("dlq")
    await svc.create_queue("to", _fifo=True)
    await svc.messages.PostMessages(messages_pb2.PostMessagesRequest(
        project=PROJECT, queue="dlq", client_id=CLIENT, messages=[
            messages_pb2.NewMessage(body=orjson.dumps(n), group_id=g or None, ttl=600)
            for n, g in [(0, "a"), (1, ""), (2, "a"), (3, "")]
        ],
    ))
    real_remember, real_take_back = fifo._remember, fifo._take_back
    calls: list[str] = []

    async def crash_once(*args: Any) -> None:
        calls.append("remember")
        if len(calls) == 1:
            raise Crash()
        await real_remember(*args)

    async def died(*args: Any) -> None:
        if len(calls) > 1:
            await real_take_back(*args)

    monkeypatch.setattr(fifo, "_remember", crash_once)
    monkeypatch.setattr(fifo, "_take_back", died)
    clock = Clock()
    first = await local(clock)
    job = await first.start(PROJECT, "dlq", "to", None)
    await first.wait(PROJECT, "dlq")
    assert await _numbers(svc, "dlq") == [0, 1, 2, 3]

    # When a consumer of the destination claims and deletes whatever it can meanwhile
    consumed = await _drain(svc, "to")

    # And another runner resumes the job once the lease ran out
    clock.t += 31
    second = await local(clock)
    assert await second.run_due() == 1
    await second.wait(PROJECT, "dlq")

    # Then every message reached the destination exactly once (none was consumed before its
    # dedup document was stored), and its groups are claimable at once, in order
    rest = await _drain(svc, "to")
    assert sorted(consumed + rest) == [(0, "a"), (1, ""), (2, "a"), (3, "")]
    assert [n for n, g in consumed + rest if g == "a"] == [0, 2]
    assert await _numbers(svc, "dlq") == []
    done = await svc.messages.GetRedrive(_ref())
    assert (done.id, done.status, done.moved) == (job.id, "done", 4)


@pytest.mark.parametrize("svc", ["sqlite", "redis"], indirect=True)
async def test_a_batch_resumed_after_a_crash_before_the_hand_over_hands_its_messages_over(
    svc: Services, local: Callable[..., Awaitable[Redrives]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a runner that dies after a batch's posts, before handing them to notifier_svc
    await svc.create_queue("dlq")
    await svc.create_queue("to")
    await svc.post(0, 1, 2, queue="dlq", ttl=600)
    real = MessageService._hand_off
    handed: list[list[int]] = []

    def crash_once(self: MessageService, *args: Any) -> None:
        handed.append([orjson.loads(m.body) for m in args[4]])
        if len(handed) == 1:
            raise Crash()
        real(self, *args)

    monkeypatch.setattr(MessageService, "_hand_off", crash_once)
    clock = Clock()
    first = await local(clock)
    job = await first.start(PROJECT, "dlq", "to", None)
    await first.wait(PROJECT, "dlq")
    assert await _numbers(svc, "to") == [0, 1, 2]
    assert await _numbers(svc, "dlq") == [0, 1, 2]

    # When another runner resumes the job once the lease ran out (its posts are no-ops)
    clock.t += 31
    second = await local(clock)
    assert await second.run_due() == 1
    await second.wait(PROJECT, "dlq")

    # Then it hands the messages over (at least once), each message in the destination once
    assert handed == [[0, 1, 2], [0, 1, 2]]
    assert await _numbers(svc, "to") == [0, 1, 2]
    done = await svc.messages.GetRedrive(_ref())
    assert (done.id, done.status, done.moved) == (job.id, "done", 3)
