"""Redis backend of the message store (the performance backend), on one server or a cluster."""

from services.message_svc.storage.redis.cluster import RedisClusterMessageStore
from services.message_svc.storage.redis.store import RedisMessageStore

__all__ = ["RedisClusterMessageStore", "RedisMessageStore"]
