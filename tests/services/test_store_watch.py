"""A service's gRPC health follows its store: NOT_SERVING while the store cannot be reached,
SERVING again once it answers, while the "liveness" name stays SERVING (what Kubernetes'
readiness and liveness probes ask)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import Settings
from services.common.grpc_server import LIVENESS, Running
from services.message_svc import server as message_server
from services.notifier_svc import server as notifier_server
from services.queue_svc import server as queue_server
from tests.servers import redis_process

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Generous: the watch turns a service NOT_SERVING within STORE_CHECK_INTERVAL +
# STORE_CHECK_TIMEOUT (3.5 s); the tests must pass on a loaded machine too.
DEADLINE = 30.0

Start = Callable[[Settings], Awaitable[Running]]


async def status(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def wait_status(channel: grpc.aio.Channel, wanted: int) -> float:
    """Seconds until the overall status is ``wanted``."""
    started = time.monotonic()
    while True:
        if await status(channel) == wanted:
            return time.monotonic() - started
        assert time.monotonic() - started < DEADLINE, f"status not {wanted} in {DEADLINE} s"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    "start", [message_server.start, queue_server.start, notifier_server.start],
    ids=["message_svc", "queue_svc", "notifier_svc"],
)
async def test_health_follows_the_store(
    start: Start, make_settings: Callable[..., Settings], tmp_path: Path,
) -> None:
    redis = redis_process(tmp_path / "redis")
    redis.start()
    try:
        uri = f"redis://127.0.0.1:{redis.port}/0"
        running = await start(
            make_settings(queue_store=uri, message_store=uri, notifier_store=uri)
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                assert await status(channel) == SERVING
                # When the store goes away
                redis.kill()
                # Then the service says it cannot serve, but is alive
                took = await wait_status(channel, NOT_SERVING)
                print(f"NOT_SERVING {took:.1f} s after the store was killed")
                for name in running.service_names:
                    assert await status(channel, name) == NOT_SERVING
                assert await status(channel, LIVENESS) == SERVING
                # And when the store is back, it serves again
                redis.start()
                await wait_status(channel, SERVING)
                assert await status(channel, LIVENESS) == SERVING
        finally:
            await running.stop()
    finally:
        redis.stop()
