"""Fixtures of the store contract suites: one URI of a fresh, empty store per backend, and a
settable clock.

``store_uri`` is parametrized over SQLite, Redis and MongoDB. Each backend's URI is of the
test's own (a file in its temporary folder, a Redis key prefix, a MongoDB database), so
nothing needs flushing first and nothing else is disturbed; its data is removed afterwards.
The same URI works for every service's store (queues and catalog, messages, subscriptions).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from pymongo import AsyncMongoClient

from tests.servers import ServerProcess

BACKENDS = ["sqlite", "redis", "mongodb"]


def unique_name() -> str:
    return f"t{uuid.uuid4().hex[:16]}"


class Clock:
    """A settable clock (Unix seconds), for the stores' ``now``: TTLs are tested by moving it
    rather than by sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.25

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
async def redis_uri(redis_server: ServerProcess) -> AsyncIterator[str]:
    prefix = unique_name()
    yield f"redis://127.0.0.1:{redis_server.port}/0?prefix={prefix}"
    client = redis.asyncio.Redis(port=redis_server.port)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def mongodb_uri(mongodb_server: ServerProcess) -> AsyncIterator[str]:
    database = unique_name()
    yield f"mongodb://127.0.0.1:{mongodb_server.port}/{database}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        port=mongodb_server.port, serverSelectionTimeoutMS=2000
    )
    try:
        await client.drop_database(database)
    finally:
        await client.close()


@pytest.fixture(params=BACKENDS)
def store_uri(request: pytest.FixtureRequest) -> str:
    """The URI of a fresh, empty store of the backend under test."""
    uri: str = request.getfixturevalue(f"{request.param}_uri")
    return uri
