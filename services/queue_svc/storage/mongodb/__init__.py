"""The MongoDB backend of queue_svc (``mongodb://host:port/database``)."""

from services.queue_svc.storage.mongodb.queues import MongoQueueStore

__all__ = ["MongoQueueStore"]
