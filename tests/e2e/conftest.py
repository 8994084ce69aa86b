from __future__ import annotations

import uuid

import pytest

from tests.e2e.harness import Stack
from tests.stacks import UP_STORES, up_stack


@pytest.fixture(params=UP_STORES)
def stack(request: pytest.FixtureRequest) -> Stack:
    """``zaqar-grpc up`` as real processes on each store, shared by the session."""
    return up_stack(request, request.param)


@pytest.fixture
def project() -> str:
    """A fresh project per test, so tests never see each other's queues."""
    return f"e2e-{uuid.uuid4().hex[:12]}"
