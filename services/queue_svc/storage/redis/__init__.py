"""The Redis backend of queue_svc (``redis://host:port/db``)."""

from services.queue_svc.storage.redis.queues import RedisQueueStore

__all__ = ["RedisQueueStore"]
