"""A Redis store tells the operator, once per server, when that server would lose what it
acknowledged in a restart (``appendonly no``) or evict it when full (``maxmemory-policy
allkeys-*``), against real redis-servers set up each way; and a full server that does not
evict refuses new writes with a 503 and loses nothing it took."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.common import metrics, redis_store
from services.common.errors import Unavailable
from services.message_svc.storage.base import DeleteOutcome, NewMessage
from services.message_svc.storage.redis.cluster import RedisClusterMessageStore
from services.message_svc.storage.redis.store import RedisMessageStore
from services.queue_svc.storage.redis.queues import RedisQueueStore
from tests.servers import RedisClusterProcesses, ServerProcess, redis_process

pytestmark = pytest.mark.asyncio

LOGGER = "services.common.redis_store"


@pytest.fixture(autouse=True)
def _nothing_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_store, "_PERSISTENCE_TOLD", set())
    metrics.STORE_PERSISTENT.clear()
    metrics.STORE_EVICTS.clear()


def persistent(store: str) -> float | None:
    """``zaqar_store_persistent{store=...}`` as this process exports it; None if absent."""
    return REGISTRY.get_sample_value("zaqar_store_persistent", {"store": store})


def evicts(store: str) -> float | None:
    """``zaqar_store_evicts{store=...}``; None if absent."""
    return REGISTRY.get_sample_value("zaqar_store_evicts", {"store": store})


def started(workdir: Path, *extra: str, durable: bool = False) -> ServerProcess:
    server = redis_process(workdir, durable=durable)
    server.argv += list(extra)
    server.start()
    return server


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, ServerProcess]]:
    made = {
        "memory only": started(tmp_path / "a"),
        "snapshots": started(tmp_path / "b", "--save", "3600 1 300 100"),
        "append-only": started(tmp_path / "c", durable=True),
        "append-only, every second": started(
            tmp_path / "d", "--appendonly", "yes", "--appendfsync", "everysec"
        ),
        "no CONFIG": started(tmp_path / "e", "--rename-command", "CONFIG", ""),
    }
    yield made
    for server in made.values():
        server.stop()


def told(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


async def open_message_store(port: int) -> RedisMessageStore:
    store = RedisMessageStore.from_uri(f"redis://127.0.0.1:{port}/0")
    await store.open()
    return store


async def test_each_kind_of_server(
    servers: dict[str, ServerProcess], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    said, gauge, durable = {}, {}, {}
    for kind, server in servers.items():
        caplog.clear()
        metrics.STORE_PERSISTENT.clear()
        store = await open_message_store(server.port)
        try:
            said[kind] = told(caplog)
            gauge[kind] = persistent("message")
            durable[kind] = store.capabilities.durable
        finally:
            await store.close()
    # Durable as the contract kit means it (every write fsynced before the answer) only with
    # appendfsync always.
    assert [kind for kind, yes in durable.items() if yes] == ["append-only"]
    assert gauge == {"memory only": 0, "snapshots": 0, "append-only": 1,
                     "append-only, every second": 1, "no CONFIG": None}
    address = "redis://127.0.0.1:{}/0".format
    advice = ("; run it with appendonly yes (docs/operations.md, \"Redis persistence\")")
    assert said["memory only"] == [(logging.WARNING, (
        f"the Redis of the message store at {address(servers['memory only'].port)} would "
        "lose acknowledged writes in a restart (appendonly no: a restart of it loses everything "
        f"(no save points either)){advice}"
    ))]
    assert said["snapshots"] == [(logging.WARNING, (
        f"the Redis of the message store at {address(servers['snapshots'].port)} would "
        "lose acknowledged writes in a restart (appendonly no: a restart of it loses what it was "
        f"sent since its last snapshot (save 3600 1 300 100)){advice}"
    ))]
    # A server that appends every write to its file loses nothing of it when it restarts,
    # however often it syncs the file.
    assert said["append-only"] == []
    assert said["append-only, every second"] == []
    # Where CONFIG is not to be had (managed services), a line says so, and the store works.
    [(level, text)] = said["no CONFIG"]
    assert level == logging.INFO
    assert "does not let us read its persistence settings" in text


async def test_once_per_server(
    servers: dict[str, ServerProcess], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    port = servers["memory only"].port
    # Another message store, a queue store (which opens through the shared helper) and the
    # first store opened again, all on the one server: one warning.
    message = await open_message_store(port)
    queues = RedisQueueStore.from_uri(f"redis://127.0.0.1:{port}/0")
    await queues.open()
    await message.close()
    again = await open_message_store(port)
    try:
        assert [level for level, _ in told(caplog)] == [logging.WARNING]
        # Each store's gauge is set all the same.
        assert (persistent("message"), persistent("queue")) == (0, 0)
    finally:
        await again.close()
        await queues.close()


async def test_a_cluster_names_each_master(
    redis_cluster: RedisClusterProcesses, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    store = RedisClusterMessageStore.from_uri(f"redis+cluster://{redis_cluster.uri_hosts}")
    await store.open()
    try:
        [(level, text)] = told(caplog)
    finally:
        await store.close()
    assert level == logging.WARNING
    masters = [port for port in (node.port for node in redis_cluster.nodes)
               if f"127.0.0.1:{port}: everything" in text]
    assert len(masters) == 3, text


async def opened_once(tmp_path: Path, policy: str, store: str) -> int:
    """Open and close a ``store`` ("message" or "queue") store on a server that appends every
    write to its file and has ``maxmemory-policy`` ``policy``; the server's port."""
    server = started(tmp_path, "--maxmemory", "64mb", "--maxmemory-policy", policy,
                     durable=True)
    try:
        uri = f"redis://127.0.0.1:{server.port}/0"
        opened = (RedisMessageStore.from_uri(uri) if store == "message"
                  else RedisQueueStore.from_uri(uri))
        await opened.open()
        await opened.close()
    finally:
        server.stop()
    return server.port


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random"])
async def test_a_server_that_evicts_any_key_is_told(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, policy: str
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    port = await opened_once(tmp_path, policy, "message")
    # Then one warning names the policy, and the gauges tell eviction apart from persistence
    assert told(caplog) == [(logging.WARNING, (
        f"the Redis of the message store at redis://127.0.0.1:{port}/0 would drop "
        f"acknowledged writes when its memory is full (maxmemory-policy {policy} evicts any "
        "key); run it with maxmemory-policy noeviction, which refuses new writes instead "
        "(docs/operations.md, \"Redis persistence\")"
    ))]
    assert (evicts("message"), persistent("message")) == (1, 1)


@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru", "volatile-ttl"])
async def test_a_server_that_evicts_no_stored_record_is_not_told(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, policy: str
) -> None:
    # (volatile-* evicts only keys with an expiry: no message, queue or subscription has one)
    caplog.set_level(logging.INFO, LOGGER)
    await opened_once(tmp_path, policy, "queue")
    assert told(caplog) == []
    assert (evicts("queue"), persistent("queue")) == (0, 1)


async def test_a_full_server_refuses_posts_and_keeps_what_it_took(tmp_path: Path) -> None:
    # Given a message store on a server with little memory, which does not evict
    server = started(tmp_path, "--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
    store = await open_message_store(server.port)
    try:
        # When messages are posted until the server is full
        taken: list[str] = []
        body = b'"' + b"x" * 4000 + b'"'
        with pytest.raises(Unavailable) as refused:
            for _ in range(2000):
                taken += await store.post("p", "q", "c", [NewMessage(body=body, ttl=3600)] * 10)
        # Then the post that did not fit is refused as unavailable (a 503), saying why
        assert "Redis is out of memory" in refused.value.description
        assert taken
        # And every message taken before is there, readable and claimable
        stored = await store.list_messages("p", "q", limit=10_000, include_claimed=True)
        assert sorted(m.id for m in stored) == sorted(taken)
        claimed = await store.claim("p", "q", limit=5, ttl=60, grace=60)
        assert claimed.claim is not None and len(claimed.claim.messages) == 5
        # And deletes still work on the full server, and make room for new posts
        for message in claimed.claim.messages:
            outcome = await store.delete("p", "q", message.id, claim_id=claimed.claim.id)
            assert outcome is DeleteOutcome.DELETED
        unclaimed = [m.id for m in stored if m.id not in {c.id for c in claimed.claim.messages}]
        assert await store.delete_many("p", "q", unclaimed[:200]) == 200
        assert await store.post("p", "q", "c", [NewMessage(body=b"1", ttl=60)])
    finally:
        await store.close()
        server.stop()
