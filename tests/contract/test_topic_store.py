"""The topic records of the queue store (``services/testing/topic_store.py``) over every built-in
backend, a Redis Cluster included."""

from __future__ import annotations

from services.testing.topic_store import TopicStoreContract
from tests.contract.conftest import IN_CLEAR

STORE_BACKENDS = IN_CLEAR  # over TLS: see IN_CLEAR


class TestTopicStore(TopicStoreContract):
    """The contract suite over every backend of ``STORE_BACKENDS``."""
