"""The MongoDB backend of notifier_svc (``mongodb://host:port/database``)."""

from services.notifier_svc.storage.mongodb.store import MongoNotifierStore

__all__ = ["MongoNotifierStore"]
