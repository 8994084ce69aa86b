from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.config import Settings
from tests.conftest import free_port
from tests.e2e.harness import Stack, start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One ``zaqar-grpc up`` process tree for the whole session, on the embedded store."""
    data: Path = tmp_path_factory.mktemp("e2e-data")
    settings = Settings.load(environ={}, overrides={
        "data_dir": str(data),
        "queue_port": free_port(), "message_port": free_port(), "notifier_port": free_port(),
        "http_port": free_port(), "ws_port": free_port(), "gc_interval": 1.0,
    })
    running = start_stack(settings)
    yield running
    code = running.stop()
    assert code == 0, "zaqar-grpc up did not stop cleanly:\n" + "".join(running.output)


@pytest.fixture
def project() -> str:
    """A fresh project per test, so tests never see each other's queues."""
    return f"e2e-{uuid.uuid4().hex[:12]}"
