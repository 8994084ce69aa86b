"""The one fixture the conformance kit asks for: the URI of a fresh, empty store."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def store_uri() -> str:
    return f"memory://t{uuid.uuid4().hex}"
