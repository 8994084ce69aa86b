"""The Redis backend of notifier_svc (``redis://host:port/db``)."""

from services.notifier_svc.storage.redis.store import RedisNotifierStore

__all__ = ["RedisNotifierStore"]
