"""Redis backend of the message store (the performance backend)."""

from services.message_svc.storage.redis.store import RedisMessageStore

__all__ = ["RedisMessageStore"]
