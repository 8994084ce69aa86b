"""MongoDB backend of the message store."""

from services.message_svc.storage.mongodb.store import MongoMessageStore

__all__ = ["MongoMessageStore"]
