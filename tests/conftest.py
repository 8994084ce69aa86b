"""Fixtures shared by every test: free ports, settings, in-process services."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from services.common.config import Settings
from tests.certs import pki  # noqa: F401 - shared fixture
from tests.keystone import keystone, keystone_settings  # noqa: F401 - shared fixtures
from tests.receivers import receiver, receiver_factory  # noqa: F401 - shared fixtures
from tests.servers import (  # noqa: F401 - shared fixtures
    free_port,
    free_ports,
    mongodb_server,
    redis_cluster,
    redis_server,
    service_ports,
)
from tests.stacks import up_stacks  # noqa: F401 - shared fixture

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for one test: its own data folder and free ports for every service."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": str(tmp_path / "data"),
            **service_ports(),
            "gc_interval": 0.5,
        }
        values.update(overrides)
        (tmp_path / "data").mkdir(exist_ok=True)
        return Settings.load(environ={}, overrides=values)

    return make


@pytest.fixture
async def settings(make_settings: Callable[..., Settings]) -> AsyncIterator[Settings]:
    yield make_settings()
