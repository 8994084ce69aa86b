"""The Redis backend of notifier_svc (``redis://host:port/db``), on one server or a cluster
(``redis+cluster://host:port,...``)."""

from services.notifier_svc.storage.redis.cluster import RedisClusterNotifierStore
from services.notifier_svc.storage.redis.store import RedisNotifierStore

__all__ = ["RedisClusterNotifierStore", "RedisNotifierStore"]
