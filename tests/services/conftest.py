"""Fixtures shared by the service tests: queue_svc and message_svc on each built-in message
store, and the three services against the real Keystone."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from services.common.config import Settings
from tests.keystone import Keystone, keystone_overrides
from tests.servers import service_ports
from tests.services._grpc import Stubs, serving_stubs
from tests.services.test_message_svc import Services, message_svc_factory  # noqa: F401 - fixture


@pytest.fixture(params=["sqlite", "redis", "mongodb"])
async def svc(
    request: pytest.FixtureRequest,
    message_svc_factory: Callable[..., Awaitable[Services]],  # noqa: F811 - fixture
) -> Services:
    """queue_svc and message_svc on the message store of each built-in backend (a fresh
    SQLite file, or a key prefix / database of its own on the session's server)."""
    if request.param == "sqlite":
        return await message_svc_factory()
    name = "svc" + uuid.uuid4().hex[:8]
    if request.param == "redis":
        redis = request.getfixturevalue("redis_server")
        uri = f"redis://127.0.0.1:{redis.port}/0?prefix={name}"
    else:
        mongodb = request.getfixturevalue("mongodb_server")
        uri = f"mongodb://127.0.0.1:{mongodb.port}/{name}"
    return await message_svc_factory(message_store=uri)


@pytest.fixture(scope="module")
async def keystone_stack(
    keystone: Keystone, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Settings, Stubs]]:
    """queue_svc, message_svc and notifier_svc in keystone mode, and stubs to call them: one
    stack for a module's tests (each works on queues and topics of its own, none stops or
    reconfigures a service)."""
    settings = Settings.load(environ={}, overrides={
        "data_dir": str(tmp_path_factory.mktemp("keystone-stack")), **service_ports(),
        "gc_interval": 0.5, **keystone_overrides(keystone),
    })
    async with serving_stubs(settings) as s:
        yield settings, s
