"""The notifier store contract (``services/testing/notifier_store.py``) over every built-in
backend, and what only some backends have.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.common.config import ConfigurationError
from services.common.errors import Unavailable
from services.notifier_svc.storage.base import (
    ClaimShares,
    new_id,
)
from services.notifier_svc.storage.registry import open_notifier_store
from services.testing.notifier_store import HOOK, NotifierStoreContract, delivery, subscribe
from tests.conftest import FAIL_FAST
from tests.contract.conftest import IN_CLEAR, Clock
from tests.servers import ServerProcess, free_port, redis_process

# The store_uri fixture's backends: this store runs on a Redis Cluster too. Over TLS on one
# Redis: its watch feed's second client, blocking in XREAD (a Sentinel's and a cluster's TLS
# connections are covered by the message store's suite, made by the same code).
STORE_BACKENDS = [*IN_CLEAR, "redis_tls"]


class TestNotifierStore(NotifierStoreContract):
    """The contract suite over every backend of ``STORE_BACKENDS``."""


def test_claim_shares_bound_each_subscriber_and_the_total() -> None:
    shares = ClaimShares(limit=5, per_subscriber=3, busy={"a": 2, "b": 3})
    assert (shares.room("a"), shares.room("b"), shares.room("c")) == (1, 0, 3)
    assert shares.saturated() == ["b"]
    shares.took("c", 3)
    assert (shares.left, shares.room("a"), shares.room("c")) == (2, 1, 0)
    assert shares.saturated() == ["b", "c"]
    shares.took("a", 1)
    shares.took("d", 1)
    assert (shares.left, shares.room("e")) == (0, 0)


def test_ids_sort_by_creation() -> None:
    ids = [new_id(1_700_000_000 + i / 1000) for i in range(50)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 50
    assert uuid.UUID(ids[0]).version == 7


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("postgres://db/notifier", "unsupported scheme 'postgres'"),
        ("notifier.db", "unsupported scheme ''"),
        ("sqlite://", "expected sqlite:///"),
        ("sqlite:///", "the path is empty"),
        ("sqlite:///n.db?mode=ro", "unknown option(s) mode"),
        ("redis://:secret@127.0.0.1:notaport/0", "bad port"),
        ("redis://127.0.0.1/0?dbid=1", "unknown option 'dbid'"),
        ("mongodb://u:secret@127.0.0.1/zaqar.subs", "names the database only"),
    ],
)
async def test_bad_store_uri_is_a_configuration_error(uri: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        await open_notifier_store(uri)
    assert message in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("scheme", ["mongodb", "redis"])
async def test_unreachable_server_is_unavailable_within_seconds(scheme: str) -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        await open_notifier_store(f"{scheme}://127.0.0.1:{port}/0")
    assert time.monotonic() - started < FAIL_FAST
    assert f"127.0.0.1:{port}" in caught.value.description


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[ServerProcess]:
    server = redis_process(tmp_path / "redis", durable=True)
    server.start()
    yield server
    server.stop()


async def test_redis_crash_fails_fast_and_the_same_store_recovers(
    durable_redis: ServerProcess, clock: Clock
) -> None:
    store = await open_notifier_store(f"redis://127.0.0.1:{durable_redis.port}/0", now=clock)
    try:
        sub = await subscribe(store)
        await store.enqueue([delivery(sub)])
        # When Redis crashes, every call fails fast as Unavailable
        durable_redis.kill()
        started = time.monotonic()
        calls: list[Callable[[], Any]] = [
            lambda: store.get("p", "q", sub.id),
            lambda: store.create("p", "q", "http://new.example/", 60, {}),
            lambda: store.claim_due(limit=1, lease=1, per_subscriber=1),
            lambda: store.enqueue([delivery(sub)]),
        ]
        for call in calls:
            with pytest.raises(Unavailable):
                await call()
        assert time.monotonic() - started < FAIL_FAST
        # And once it is back, the same store has every acknowledged change
        durable_redis.start()
        assert await store.get("p", "q", sub.id) == sub
        assert await store.count_deliveries(sub.id) == 1
        assert (await store.create("p", "q", "http://new.example/", 60, {}))[1]
    finally:
        await store.close()


async def test_redis_deliveries_stored_without_lanes_are_indexed_at_open(
    redis_uri: str, clock: Clock
) -> None:
    store = await open_notifier_store(redis_uri, now=clock)
    try:
        sub = await subscribe(store)
        await store.enqueue([delivery(sub, "old")])
        # Given an outbox written before deliveries had lanes (only the B:due index)
        client = store._redis()  # type: ignore[attr-defined]
        keys = store._keys  # type: ignore[attr-defined]
        await client.delete(keys.lanes, keys.lane(HOOK))
        assert await store.claim_due(limit=5, lease=30, per_subscriber=5) == []
    finally:
        await store.close()
    # When the store is opened again, the delivery is found and delivered
    reopened = await open_notifier_store(redis_uri, now=clock)
    try:
        [taken] = await reopened.claim_due(limit=5, lease=30, per_subscriber=5)
        assert taken.document == b'{"body":"old","Message_Type":"Notification"}'
    finally:
        await reopened.close()
