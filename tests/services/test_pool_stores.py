"""message_svc's pool stores (``services/message_svc/pools.py``) on real SQLite files: opened
once on first use, shared, swept, closed once unused; a pool that cannot be opened fails its
callers and is tried again by the next one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.common import pool_stores
from services.common.errors import InvalidArgument, Unavailable
from services.message_svc.pools import PoolStores
from services.message_svc.storage.base import MessageStore, NewMessage
from services.message_svc.storage.registry import open_store
from tests.servers import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_pool_store_is_opened_once_shared_and_closed_when_unused(
    tmp_path: Path,
) -> None:
    own = await open_store(f"sqlite:///{tmp_path / 'own.db'}")
    opened: list[str] = []

    async def opener(uri: str) -> MessageStore:
        opened.append(uri)
        return await open_store(uri)

    clock = Clock()
    pools = PoolStores(own, opener, idle=60, clock=clock)
    uri = f"sqlite:///{tmp_path / 'a.db'}"
    try:
        # Concurrent first uses open the store once; "" is the own store
        stores = await asyncio.gather(*(pools.get(uri) for _ in range(5)))
        assert len({id(store) for store in stores}) == 1 and opened == [uri]
        assert await pools.get("") is own
        await stores[0].post("p", "q", "c", [NewMessage(body=b"1", ttl=60)])

        # A sweep within the idle time keeps it; one after closes it, and a use reopens it
        clock.now = 59
        await pools.collect_garbage()
        assert pools.open_uris == [uri]
        clock.now = 120
        await pools.collect_garbage()
        assert pools.open_uris == []
        reopened = await pools.get(uri)
        assert opened == [uri, uri]
        assert (await reopened.stats("p", "q")).total == 1
    finally:
        await pools.close()
        await own.close()


async def test_a_store_taken_out_of_service_serves_whoever_holds_it_until_the_grace_ends(
    tmp_path: Path,
) -> None:
    own = await open_store(f"sqlite:///{tmp_path / 'own.db'}")
    clock = Clock()
    pools = PoolStores(own, open_store, idle=600, clock=clock)
    uri = f"sqlite:///{tmp_path / 'a.db'}"
    try:
        # Given an operation that took the pool's store (a delivery claim, a sweep)
        held = await pools.get(uri)
        # When the store is taken out of service (its pool was deleted, or it was idle)
        await pools.drop(uri, "deleted")
        assert pools.open_uris == [] and pools.retired == 1
        # Then that operation still completes on it, and a new use opens another one
        await held.post("p", "q", "c", [NewMessage(body=b"1", ttl=60)])
        assert (await pools.get(uri)) is not held
        # A sweep before the grace ends leaves it open; the first after closes it
        clock.now = pool_stores.RETIRE_GRACE - 1
        await pools.collect_garbage()
        assert pools.retired == 1
        assert (await held.stats("p", "q")).total == 1
        clock.now = pool_stores.RETIRE_GRACE
        await pools.collect_garbage()
        assert pools.retired == 0
        with pytest.raises(Exception, match="closed"):
            await held.stats("p", "q")
    finally:
        await pools.close()
        await own.close()


async def test_closing_waits_for_a_store_being_opened_and_closes_it(tmp_path: Path) -> None:
    own = await open_store(f"sqlite:///{tmp_path / 'own.db'}")
    go = asyncio.Event()
    opened: list[MessageStore] = []

    async def opener(uri: str) -> MessageStore:
        await go.wait()
        store = await open_store(uri)
        opened.append(store)
        return store

    pools = PoolStores(own, opener, idle=600)
    try:
        # Given a pool store halfway through opening when the service stops
        first_use = asyncio.ensure_future(pools.get(f"sqlite:///{tmp_path / 'a.db'}"))
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(pools.close())
        await asyncio.sleep(0)
        assert not closing.done()
        # When the open completes, then close() closes what it opened, and ends
        go.set()
        await closing
        assert len(opened) == 1
        with pytest.raises(Exception, match="closed"):
            await opened[0].stats("p", "q")
        await first_use
    finally:
        await own.close()


async def test_a_pool_that_cannot_be_opened_fails_each_caller_until_it_can(
    tmp_path: Path,
) -> None:
    own = await open_store(f"sqlite:///{tmp_path / 'own.db'}")
    pools = PoolStores(own, open_store, idle=60)
    uri = f"redis://127.0.0.1:{free_port()}/0"
    try:
        for _ in range(2):
            with pytest.raises(Unavailable):
                await pools.get(uri)
        assert pools.open_uris == []
        assert await pools.get("") is own
    finally:
        await pools.close()
        await own.close()


async def test_a_uri_that_is_not_a_store_is_the_callers_error(tmp_path: Path) -> None:
    own = await open_store(f"sqlite:///{tmp_path / 'own.db'}")
    pools = PoolStores(own, open_store, idle=60)
    try:
        for uri, reason in (("../../../../", "unsupported scheme"),
                            ("redis://user:secret@127.0.0.1:1/0?bogus=1", "unknown option")):
            with pytest.raises(InvalidArgument) as refused:
                await pools.get(uri)
            assert reason in refused.value.description
            assert "secret" not in refused.value.description
    finally:
        await pools.close()
        await own.close()
