"""The Redis backend of queue_svc (``redis://host:port/db``, or a Redis Cluster with
``redis+cluster://host:port,...``)."""

from services.queue_svc.storage.redis.cluster import RedisClusterQueueStore
from services.queue_svc.storage.redis.queues import RedisQueueStore

__all__ = ["RedisClusterQueueStore", "RedisQueueStore"]
