"""Fixtures of the service tests that run against the real Keystone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from services.common.config import Settings
from tests.gateway.conftest import running_services
from tests.services._grpc import Stubs, stubs


@pytest.fixture
async def keystone_stack(
    keystone_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[Settings, Stubs]]:
    """queue_svc, message_svc and notifier_svc in keystone mode, and stubs to call them."""
    async with running_services(keystone_settings()) as settings:
        s = stubs(settings)
        try:
            yield settings, s
        finally:
            await s.close()
