"""Requests per project counted in Redis by every gateway replica (``project_rate_store``):
two limiters on one Redis give a project one budget; projects are apart; Retry-After says when
the next request conforms; a Redis that does not answer lets requests through, said once, and
limits again once back; a Redis Cluster serves it as well. Real redis-servers."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from services.api_gateway.rate_limit import (
    SharedProjectRateLimit,
    TooManyRequests,
    from_settings,
)
from services.common.config import ConfigurationError, Settings
from tests.servers import (
    RedisClusterProcesses,
    RedisSentinelProcesses,
    ServerProcess,
    free_port,
    redis_process,
)

# Tests that expect a limit enforced give Redis time to answer on a loaded machine: past the
# default 0.25 s a request goes through unlimited, and the test would see no 429.
PATIENT = "socket_timeout=30&socket_connect_timeout=30"


def shared(uri: str, rate: float, burst: int = 0) -> SharedProjectRateLimit:
    limit = from_settings(Settings(project_rate_limit=rate, project_rate_burst=burst,
                                   project_rate_store=uri))
    assert isinstance(limit, SharedProjectRateLimit)
    return limit


@pytest.fixture
async def replicas(redis_server: ServerProcess) -> AsyncIterator[list[SharedProjectRateLimit]]:
    """Two gateway replicas' limits (1 request per 100 s, bursts of 3) on one Redis."""
    uri = f"redis://127.0.0.1:{redis_server.port}/0?prefix=zr-{uuid.uuid4().hex[:8]}&{PATIENT}"
    limits = [shared(uri, 0.01, 3), shared(uri, 0.01, 3)]
    yield limits
    for limit in limits:
        await limit.close()


async def test_replicas_share_one_budget_per_project(
    replicas: list[SharedProjectRateLimit],
) -> None:
    a, b = replicas
    # A burst of 3, taken through either replica, is the project's whole burst
    await a.take("p")
    await b.take("p")
    await a.take("p")
    for limit in (a, b):
        with pytest.raises(TooManyRequests) as refused:
            await limit.take("p")
        assert refused.value.status == 429
        # The next request conforms 100 s after the first, less the time these calls took
        assert 90 <= refused.value.retry_after <= 100
        assert dict(refused.value.headers or {}) == {
            "Retry-After": str(refused.value.retry_after)}
    # Another project has its own
    for limit in (b, b, a):
        await limit.take("q")
    with pytest.raises(TooManyRequests):
        await b.take("q")


async def test_retry_after_is_the_wait_for_the_next_request(redis_server: ServerProcess) -> None:
    uri = f"redis://127.0.0.1:{redis_server.port}/0?prefix=zr-{uuid.uuid4().hex[:8]}&{PATIENT}"
    limit = shared(uri, 0.1)  # one request per 10 s, a burst of 1
    try:
        await limit.take("slow")
        with pytest.raises(TooManyRequests) as refused:
            await limit.take("slow")
        assert refused.value.retry_after in (9, 10)  # whole seconds, by Redis's clock
        assert refused.value.description == (
            "This project makes requests faster than the 0.1 per second allowed. Please retry "
            f"in {refused.value.retry_after} s."
        )
        # The project's key expires once its bucket would be full again: no key is kept longer
        async with redis.asyncio.Redis(port=redis_server.port) as client:
            ttl = await client.pttl(limit.key("slow"))
        assert 0 < ttl <= 10_000
    finally:
        await limit.close()


def errors(kind: str) -> float:
    return REGISTRY.get_sample_value("zaqar_rate_limit_store_errors_total", {"error": kind}) or 0


async def test_without_redis_requests_go_through_and_it_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    server = redis_process(tmp_path / "redis")
    server.start()
    uri = f"redis://127.0.0.1:{server.port}/0?socket_connect_timeout=0.2&socket_timeout=30"
    limit = shared(uri, 0.01, 1)
    try:
        await limit.take("p")
        with pytest.raises(TooManyRequests):
            await limit.take("p")
        # When Redis is gone, every request goes through, counted; the log says it once
        server.stop()
        before = errors("ConnectionError")
        caplog.set_level(logging.INFO, "services.common.rate_limit")
        for _ in range(5):
            await limit.take("p")
        assert errors("ConnectionError") == before + 5
        failures = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(failures) == 1, failures
        assert failures[0].startswith(
            f"the rate limit store at redis://127.0.0.1:{server.port}/0 failed: Redis cannot be "
            "reached (ConnectionError: ")
        assert failures[0].endswith(
            "requests per project go through unlimited until it answers")
        # Back (empty, as after a restart without persistence): limited again, and said so
        server.start()
        await limit.take("q")  # "p" may have outlived the restart in Redis's dump
        with pytest.raises(TooManyRequests):
            await limit.take("q")
        assert "answers again: requests per project are limited again" in caplog.text
    finally:
        await limit.close()
        server.stop()


async def test_a_redis_cluster_serves_it(redis_cluster: RedisClusterProcesses) -> None:
    uri = f"redis+cluster://{redis_cluster.uri_hosts}?prefix=zr-{uuid.uuid4().hex[:8]}&{PATIENT}"
    limits = [shared(uri, 0.01, 2), shared(uri, 0.01, 2)]
    try:
        projects = [f"p{i}" for i in range(8)]  # on several slots
        for project in projects:
            await limits[0].take(project)
            await limits[1].take(project)
            with pytest.raises(TooManyRequests):
                await limits[0].take(project)
    finally:
        for limit in limits:
            await limit.close()


@pytest.mark.parametrize(("changes", "message"), [
    ({"project_rate_store": "redis://127.0.0.1:6379/0"},
     "project_rate_store (ZAQAR_PROJECT_RATE_STORE) is set without project_rate_limit "
     "(ZAQAR_PROJECT_RATE_LIMIT)"),
    ({"project_rate_limit": 1.0, "project_rate_store": "mongodb://127.0.0.1:27017/x"},
     "rate limit store"),
])
def test_bad_store_settings_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        from_settings(Settings(**changes))  # type: ignore[arg-type]
    assert message in str(refused.value)


async def test_a_gateway_starts_when_redis_is_not_there_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens there
    limit = shared(f"redis://127.0.0.1:{port}/0?socket_connect_timeout=0.2", 1.0, 1)
    try:
        await limit.check()
        assert f"the rate limit store at redis://127.0.0.1:{port}/0 failed" in caplog.text
        # and requests go through meanwhile
        for _ in range(3):
            await limit.take("p")
    finally:
        await limit.close()


async def test_a_master_named_by_sentinels_serves_it(
    redis_sentinel: RedisSentinelProcesses,
) -> None:
    uri = redis_sentinel.uri() + f"?prefix=zr-{uuid.uuid4().hex[:8]}&{PATIENT}"
    limits = [shared(uri, 0.01, 2), shared(uri, 0.01, 2)]
    try:
        await limits[0].take("p")
        await limits[1].take("p")
        with pytest.raises(TooManyRequests):
            await limits[1].take("p")
    finally:
        for limit in limits:
            await limit.close()
