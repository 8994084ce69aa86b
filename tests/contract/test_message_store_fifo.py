"""The FIFO contract (``services/testing/fifo_store.py``) over every built-in message store
backend; backends without ``capabilities.fifo`` are checked to refuse FIFO calls."""

from __future__ import annotations

from services.testing.fifo_store import FifoMessageStoreContract
from tests.contract.conftest import WITH_CLUSTER

STORE_BACKENDS = WITH_CLUSTER


class TestFifoMessageStore(FifoMessageStoreContract):
    """The FIFO suite over every backend of ``STORE_BACKENDS``."""
