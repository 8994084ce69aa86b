"""The fair-queue contract (``services/testing/fair_store.py``) over every built-in message
store backend, a Redis Cluster included."""

from __future__ import annotations

from services.testing.fair_store import FairMessageStoreContract
from tests.contract.conftest import IN_CLEAR

STORE_BACKENDS = IN_CLEAR  # over TLS: see IN_CLEAR


class TestFairMessageStore(FairMessageStoreContract):
    """The fair-queue suite over every backend of ``STORE_BACKENDS``."""
