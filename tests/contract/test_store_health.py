"""The detailed health check's timed operations (``services/*/health.py``) on every backend of
every store: what they report, that they leave nothing behind, and how they fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from zaqar_grpc.v2 import admin_pb2

from services.common.health import HEALTH_PROJECT, budget
from services.common.limits import PROJECT_ID_MAX
from services.message_svc import health as message_health
from services.message_svc.storage.base import MessageStore
from services.message_svc.storage.registry import open_store
from services.notifier_svc import health as notifier_health
from services.notifier_svc.storage.registry import open_notifier_store
from services.queue_svc import health as queue_health
from services.queue_svc.storage.catalog import PoolRecord
from services.queue_svc.storage.registry import open_queue_store
from tests.servers import free_port, redis_process

MESSAGE_OPERATIONS = [
    "post_messages", "claim_messages", "list_messages", "delete_messages", "delete_claim",
    "bulk_delete_messages", "delete_queue",
]


@pytest.fixture
async def message_store(store_uri: str) -> AsyncIterator[MessageStore]:
    store = await open_store(store_uri)
    yield store
    await store.close()


def operations(report: admin_pb2.StoreReport) -> dict[str, bool]:
    return {op.name: op.succeeded for op in report.operations}


class Recording:
    """A store that remembers the queues it deleted (the check's queue name is random)."""

    def __init__(self, store: MessageStore) -> None:
        self.store = store
        self.deleted: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def delete_queue(self, project: str, queue: str) -> None:
        self.deleted.append(queue)
        await self.store.delete_queue(project, queue)


def test_health_project_is_out_of_every_callers_reach() -> None:
    assert len(HEALTH_PROJECT) > PROJECT_ID_MAX


def test_budget_keeps_time_to_answer() -> None:
    assert budget(None) == 10.0
    assert budget(5.0) == pytest.approx(4.75)
    assert budget(0.1) == 0.0


# message_svc ----------------------------------------------------------------------------------


async def test_message_store_operations_all_succeed_and_clean_up(
    message_store: MessageStore,
) -> None:
    # When the message store is checked
    store = Recording(message_store)
    report = (await message_health.check_store(store, "message", 10.0)).report()  # type: ignore[arg-type]
    # Then it answers, and every operation of Zaqar's list ran, in order, and succeeded
    assert report.store == "message" and report.reachable and report.problem == ""
    assert [op.name for op in report.operations] == MESSAGE_OPERATIONS
    assert all(op.succeeded and op.ref == "" for op in report.operations)
    assert all(0 <= op.seconds < 10 for op in report.operations)
    # And the throwaway queue of the health project is empty again
    (queue,) = store.deleted
    assert (await message_store.stats(HEALTH_PROJECT, queue)).total == 0


class FailingClaims(Recording):
    """A store whose claims fail (a bug, not an outage), to see the clean-up still runs."""

    async def claim(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("claims are broken")


async def test_failed_operation_is_reported_with_a_ref_and_the_rest_cleans_up(
    message_store: MessageStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a store whose claims fail
    store = FailingClaims(message_store)
    # When it is checked
    report = (await message_health.check_store(store, "message", 10.0)).report()  # type: ignore[arg-type]
    # Then the claim is reported failed with the ref of the log line saying why
    ops = {op.name: op for op in report.operations}
    assert ops["claim_messages"].succeeded is False
    assert ops["claim_messages"].ref in caplog.text and "claims are broken" in caplog.text
    # And the store still answers; the steps that need no claim ran, and the queue is gone
    assert report.reachable
    assert [name for name, op in ops.items() if op.succeeded] == [
        "post_messages", "list_messages", "bulk_delete_messages", "delete_queue",
    ]
    (queue,) = store.deleted
    assert (await message_store.stats(HEALTH_PROJECT, queue)).total == 0


class HangingPosts(Recording):
    async def post(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(30)


async def test_check_ends_within_its_budget(message_store: MessageStore) -> None:
    # Given a store that never answers a post
    store = HangingPosts(message_store)
    loop = asyncio.get_running_loop()
    started = loop.time()
    # When it is checked with half a second to spare
    report = (await message_health.check_store(store, "message", 0.5)).report()  # type: ignore[arg-type]
    # Then the check gives up in time, reporting the store unreachable
    assert loop.time() - started < 2
    assert not report.reachable and "deadline" in report.problem
    assert operations(report) == {"post_messages": False}


async def test_unreachable_message_store_is_reported_fast(tmp_path: Path) -> None:
    # Given a store whose Redis went away
    server = redis_process(tmp_path / "redis")
    server.start()
    try:
        store = await open_store(f"redis://127.0.0.1:{server.port}/0")
        server.kill()
        loop = asyncio.get_running_loop()
        started = loop.time()
        # When it is checked
        report = (await message_health.check_store(store, "message", 5.0)).report()
        # Then it is unreachable, saying why, after the first operation only
        assert loop.time() - started < 2
        assert not report.reachable and "Redis cannot be reached" in report.problem
        assert operations(report) == {"post_messages": False}
        await store.close()
    finally:
        server.stop()


async def test_pools_are_opened_checked_and_closed(
    message_store: MessageStore, store_uri: str, tmp_path: Path
) -> None:
    # Given one pool on a store of the backend under test and one that cannot be reached
    pools = [
        admin_pb2.PoolStore(name="good", uri=store_uri),
        admin_pb2.PoolStore(name="gone", uri=f"redis://127.0.0.1:{free_port()}/0"),
    ]
    # When message_svc's stores are checked
    health = await message_health.check_stores(message_store, pools, open_store, 5.0)
    # Then its own store and each pool are reported
    reports = {r.store: r for r in health.stores}
    assert list(reports) == ["message", "pool:good", "pool:gone"]
    assert reports["pool:good"].reachable
    assert [op.name for op in reports["pool:good"].operations] == MESSAGE_OPERATIONS
    assert not reports["pool:gone"].reachable
    assert "Redis cannot be reached" in reports["pool:gone"].problem
    # And the pool's store is closed once the answer is given
    await asyncio.gather(*message_health._CLOSING)
    assert not message_health._CLOSING


async def test_a_pool_uri_that_is_not_a_store_is_reported_not_logged_as_a_crash(
    message_store: MessageStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Given pools whose URIs no store of this process can open (the caller named them)
    pools = [admin_pb2.PoolStore(name="odd", uri="../../../../"),
             admin_pb2.PoolStore(name="secret", uri="redis://u:hunter2@127.0.0.1:1/0?bogus=1")]
    # When they are checked
    health = await message_health.check_stores(message_store, pools, open_store, 5.0)
    # Then each is unreachable with the reason, its secret redacted, and nothing is logged as
    # an unexpected failure with a traceback
    reports = {r.store: r for r in health.stores}
    assert "unsupported scheme" in reports["pool:odd"].problem
    assert "unknown option" in reports["pool:secret"].problem
    assert not reports["pool:odd"].reachable and not reports["pool:secret"].reachable
    assert "hunter2" not in reports["pool:secret"].problem + caplog.text
    assert [r for r in caplog.records if r.exc_info] == []


# queue_svc and notifier_svc -------------------------------------------------------------------


async def test_queue_store_times_create_and_delete(store_uri: str) -> None:
    store = await open_queue_store(store_uri)
    try:
        # Given a throwaway queue an earlier check could not delete
        await store.create(HEALTH_PROJECT, "health-left-over", {})
        # When the queue store is checked, without pooling
        health = await queue_health.check_stores(store, False, 5.0)
        # Then creating and deleting a queue is timed, and nothing is left behind
        (report,) = health.stores
        assert report.store == "queue" and report.reachable
        assert operations(report) == {"create_queue": True, "delete_queue": True}
        assert (await store.list(HEALTH_PROJECT, limit=10)).queues == []
        assert list(health.pools) == []
    finally:
        await store.close()


async def test_queue_store_with_pooling_reads_the_catalog(store_uri: str) -> None:
    store = await open_queue_store(store_uri)
    try:
        await store.catalog.put_pool(PoolRecord("p2", "redis://h:2/0", 1))
        await store.catalog.put_pool(PoolRecord("p1", "redis://h:1/0", 1))
        health = await queue_health.check_stores(store, True, 5.0)
        reports = {r.store: r for r in health.stores}
        assert reports["catalog"].reachable and list(reports["catalog"].operations) == []
        assert [(p.name, p.uri) for p in health.pools] == [
            ("p1", "redis://h:1/0"), ("p2", "redis://h:2/0"),
        ]
    finally:
        await store.close()


async def test_subscription_store_is_reached(store_uri: str) -> None:
    store = await open_notifier_store(store_uri)
    try:
        (report,) = (await notifier_health.check_stores(store, 5.0)).stores
        assert report.store == "subscription" and report.reachable
    finally:
        await store.close()


async def test_a_pool_write_waiting_for_a_lock_does_not_hold_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check gives up on a pool's write at its deadline, and closing that pool's store
    waits for the write: the answer must not wait for the close."""
    import sqlite3

    from services.common import sqlite_store

    # Given a SQLite pool whose file another connection locks once the check has opened it,
    # and writes that would wait a minute for the lock
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_MS", 60_000)
    pool_uri = f"sqlite:///{tmp_path / 'pool.db'}"
    main = await open_store(f"sqlite:///{tmp_path / 'main.db'}")
    lock = sqlite3.connect(tmp_path / "pool.db", isolation_level=None)

    async def open_then_lock(uri: str) -> MessageStore:
        store = await open_store(uri)
        lock.execute("BEGIN IMMEDIATE")
        return store

    try:
        # When message_svc's stores are checked with a second to spare
        check = asyncio.create_task(message_health.check_stores(
            main, [admin_pb2.PoolStore(name="locked", uri=pool_uri)], open_then_lock, 1.0))
        done, _ = await asyncio.wait({check}, timeout=30)
        # Then the answer comes while the pool's write still waits, saying it timed out
        assert check in done, "the check waited for the pool's write"
        reports = {r.store: r for r in check.result().stores}
        assert reports["message"].reachable
        assert operations(reports["pool:locked"]) == {"post_messages": False}
        assert "deadline" in reports["pool:locked"].problem
    finally:
        if lock.in_transaction:
            lock.rollback()
        lock.close()
        await asyncio.gather(*message_health._CLOSING)
        await main.close()


async def test_a_pool_store_opened_after_the_check_gave_up_is_closed(tmp_path: Path) -> None:
    """A pool's open that outlasts the check goes on after it; the store it opens is closed,
    not left open (each such check would leak one)."""
    from services.common.errors import Unavailable

    go_on = asyncio.Event()
    opened: list[MessageStore] = []

    async def open_after(uri: str) -> MessageStore:
        await go_on.wait()
        store = await open_store(uri)
        opened.append(store)
        return store

    async def slow_open(uri: str) -> MessageStore:
        # as a driver whose open, once begun, completes even when its caller gives up
        return await asyncio.shield(asyncio.ensure_future(open_after(uri)))

    main = await open_store(f"sqlite:///{tmp_path / 'main.db'}")
    try:
        # Given a pool whose store opens only after the check's deadline
        pool = admin_pb2.PoolStore(name="slow", uri=f"sqlite:///{tmp_path / 'pool.db'}")
        health = await message_health.check_stores(main, [pool], slow_open, 0.5)
        report = {r.store: r for r in health.stores}["pool:slow"]
        assert not report.reachable and "deadline" in report.problem
        # When the open then ends
        go_on.set()

        async def closed() -> bool:
            try:
                await opened[0].list_messages("p", "q", limit=1)
            except Unavailable as exc:
                assert "closed" in exc.description
                return True
            return False

        # Then the store it opened is closed
        deadline = asyncio.get_running_loop().time() + 30
        while not (opened and await closed()):
            assert asyncio.get_running_loop().time() < deadline, "the store was left open"
            await asyncio.sleep(0.02)
    finally:
        await main.close()
