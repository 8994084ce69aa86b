"""Fixtures of the store contract suites (``services/testing/``, run here over the built-in
backends): one URI of a fresh, empty store per backend, and a
settable clock.

``store_uri`` is parametrized over SQLite, Redis (in clear, over TLS, and the master that
Sentinels name, in clear and over TLS) and MongoDB, and
over a Redis Cluster (in clear and over TLS) in the modules whose stores run on one (a module
lists its backends in ``STORE_BACKENDS``). The TLS servers check the client certificate that
the URIs give. Each
backend's URI is of the test's own (a file in its temporary folder, a Redis key prefix, a
MongoDB database), so nothing needs flushing first and nothing else is disturbed; its data is
removed afterwards; the MongoDB URI names the replica set and asks for majority reads. The
same URI works for every service's store (queues and catalog, messages, subscriptions).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from pymongo import AsyncMongoClient

from services.testing.fixtures import Clock
from tests.certs import Pki
from tests.servers import (
    RedisClusterProcesses,
    RedisSentinelProcesses,
    ServerProcess,
    redis_tls_client,
    redis_tls_query,
)
from tests.servers import mongodb_uri as replica_set_uri

BACKENDS = ["sqlite", "redis", "redis_tls", "redis_sentinel", "redis_sentinel_tls", "mongodb"]
# The stores that also run on a Redis Cluster (redis+cluster://, rediss+cluster://).
WITH_CLUSTER = [*BACKENDS, "redis_cluster", "redis_cluster_tls"]
# The same without TLS: for suites whose stores reach Redis through the same connection code
# as one whose suite runs over TLS too. Every store's client is made by ``RedisOptions`` in
# services/common/redis_store.py: the message store's suite covers it, and the store's own
# pipelined link, over TLS on every topology; the subscription store's covers its watch feed
# (a second client, blocking in XREAD) over TLS on one Redis. A store with a connection of
# its own runs over TLS.
IN_CLEAR = [backend for backend in WITH_CLUSTER if not backend.endswith("_tls")]


def unique_name() -> str:
    return f"t{uuid.uuid4().hex[:16]}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


async def _remove_keys(port: int, prefix: str, **client: Any) -> None:
    redis_client = redis.asyncio.Redis(port=port, **client)
    try:
        keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis_client.delete(*keys)
    finally:
        await redis_client.aclose()


@pytest.fixture
async def redis_uri(redis_server: ServerProcess) -> AsyncIterator[str]:
    prefix = unique_name()
    yield f"redis://127.0.0.1:{redis_server.port}/0?prefix={prefix}"
    await _remove_keys(redis_server.port, prefix)


@pytest.fixture
async def redis_tls_uri(redis_tls_server: ServerProcess, pki: Pki) -> AsyncIterator[str]:
    prefix = unique_name()
    yield f"rediss://127.0.0.1:{redis_tls_server.port}/0?prefix={prefix}&{redis_tls_query(pki)}"
    await _remove_keys(redis_tls_server.port, prefix, **redis_tls_client(pki))


@pytest.fixture
async def redis_sentinel_uri(redis_sentinel: RedisSentinelProcesses) -> AsyncIterator[str]:
    prefix = unique_name()
    yield f"{redis_sentinel.uri()}?prefix={prefix}"
    master = redis_sentinel.master_port()
    assert master is not None, "the session's Sentinels name no master"
    await _remove_keys(master, prefix)


@pytest.fixture
async def redis_sentinel_tls_uri(
    redis_tls_sentinel: RedisSentinelProcesses, pki: Pki
) -> AsyncIterator[str]:
    prefix = unique_name()
    yield f"{redis_tls_sentinel.uri()}?prefix={prefix}&{redis_tls_query(pki)}"
    master = redis_tls_sentinel.master_port()
    assert master is not None, "the session's Sentinels name no master"
    await _remove_keys(master, prefix, **redis_tls_client(pki))


async def _cluster_uri(cluster: RedisClusterProcesses, scheme: str) -> AsyncIterator[str]:
    prefix = unique_name()
    tls = f"&{redis_tls_query(cluster.tls)}" if cluster.tls is not None else ""
    yield f"{scheme}://{cluster.uri_hosts}?prefix={prefix}{tls}"
    masters = [port for port, role in cluster.roles().items() if role == "master"]
    for port in masters:
        client = redis.asyncio.Redis(port=port, **cluster.client_arguments)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:  # one by one: a node refuses keys of several slots at once
                    pipe.unlink(key)
                await pipe.execute()
        finally:
            await client.aclose()


@pytest.fixture
async def redis_cluster_uri(redis_cluster: RedisClusterProcesses) -> AsyncIterator[str]:
    async for uri in _cluster_uri(redis_cluster, "redis+cluster"):
        yield uri


@pytest.fixture
async def redis_cluster_tls_uri(redis_tls_cluster: RedisClusterProcesses) -> AsyncIterator[str]:
    async for uri in _cluster_uri(redis_tls_cluster, "rediss+cluster"):
        yield uri


@pytest.fixture
async def mongodb_uri(mongodb_server: ServerProcess) -> AsyncIterator[str]:
    database = unique_name()
    yield replica_set_uri(mongodb_server, database)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        port=mongodb_server.port, serverSelectionTimeoutMS=2000
    )
    try:
        await client.drop_database(database)
    finally:
        await client.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``store_uri`` over the test module's ``STORE_BACKENDS`` (default
    :data:`BACKENDS`)."""
    if "store_uri" in metafunc.fixturenames:
        backends = getattr(metafunc.module, "STORE_BACKENDS", BACKENDS)
        metafunc.parametrize("store_uri", backends, indirect=True)


@pytest.fixture
def store_uri(request: pytest.FixtureRequest) -> str:
    """The URI of a fresh, empty store of the backend under test."""
    uri: str = request.getfixturevalue(f"{request.param}_uri")
    return uri
