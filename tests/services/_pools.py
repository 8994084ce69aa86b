"""What the tests of queues placed on pools share (test_pool_placement.py: messages,
test_notifier_pools.py: subscriptions): two redis-servers as pools, the three services with
pooling on, and the calls that register pools, create queues and post to them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import redis.asyncio
from zaqar_grpc.v2 import admin_pb2, admin_pb2_grpc, messages_pb2, queues_pb2

from services.common.config import Settings
from tests.servers import ServerProcess, redis_process
from tests.services._grpc import Stubs, serving_stubs

CLIENT = "6d6a3b3e-0c7f-4b0a-9b1e-2f6c1d7a9e10"


@pytest.fixture(scope="module")
def redis_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    """Two redis-servers: two pools that fail independently (and keep their data across a
    restart: AOF, fsync on every write)."""
    servers = [
        redis_process(tmp_path_factory.mktemp(f"pool-redis-{i}"), durable=True)
        for i in range(2)
    ]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


async def redis_pools(
    pair: list[ServerProcess], names: str = "ab"
) -> tuple[dict[str, str], dict[str, ServerProcess]]:
    """Pools ``names`` on the redis-servers of :func:`redis_pair`, started again if a test
    killed them, and emptied: (pool name -> URI, pool name -> server)."""
    uris: dict[str, str] = {}
    servers: dict[str, ServerProcess] = {}
    for name, server in zip(names, pair, strict=True):
        if server.proc is None or server.proc.poll() is not None:
            server.start()
        client = redis.asyncio.Redis(port=server.port)
        await client.flushall()
        await client.aclose()
        servers[name] = server
        uris[name] = f"redis://127.0.0.1:{server.port}/0"
    return uris, servers


def sqlite_pools(folder: Path, names: str) -> dict[str, str]:
    """Pools ``names`` as SQLite files in ``folder``: pool name -> URI."""
    return {name: f"sqlite:///{folder / name}.db" for name in names}


@dataclass
class PooledServices:
    """The three services with pooling on, stubs to call them, and the pools' URIs (and
    redis-servers, when the pools are on Redis), not registered yet."""

    project: ClassVar[str]

    settings: Settings
    stubs: Stubs
    uris: dict[str, str]
    servers: dict[str, ServerProcess]

    @property
    def pools(self) -> Any:
        return admin_pb2_grpc.PoolsStub(self.stubs.channels[0])  # type: ignore[no-untyped-call]

    @property
    def flavors(self) -> Any:
        return admin_pb2_grpc.FlavorsStub(self.stubs.channels[0])  # type: ignore[no-untyped-call]

    async def put_pool(self, name: str, weight: int, flavor: str = "") -> None:
        await self.pools.PutPool(admin_pb2.PutPoolRequest(
            name=name, uri=self.uris[name], weight=weight, flavor=flavor
        ))

    async def create(self, queue: str, **metadata: Any) -> None:
        await self.stubs.queues.CreateQueue(queues_pb2.CreateQueueRequest(
            project=self.project, queue=queue, metadata=orjson.dumps(metadata)
        ))

    async def post(self, queue: str, count: int = 1) -> list[str]:
        reply = await self.stubs.messages.PostMessages(messages_pb2.PostMessagesRequest(
            project=self.project, queue=queue, client_id=CLIENT,
            messages=[messages_pb2.NewMessage(body=b'{"n": %d}' % i) for i in range(count)],
        ))
        return list(reply.ids)


pooled_services = serving_stubs
"""The three services running with ``settings`` (pooling on), and stubs to call them."""

