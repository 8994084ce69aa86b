"""The embedded SQLite backend of queue_svc (``sqlite:///path/to/queues.db``)."""

from services.queue_svc.storage.sqlite.queues import SqliteQueueStore

__all__ = ["SqliteQueueStore"]
