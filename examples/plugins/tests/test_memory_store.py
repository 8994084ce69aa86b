"""The memory message store against zaqar-grpc's message store contract suite."""

from __future__ import annotations

from services.testing.message_store import MessageStoreContract


class TestMemoryMessageStore(MessageStoreContract):
    pass
