"""The embedded SQLite backend of notifier_svc (``sqlite:///path/to/notifier.db``)."""

from services.notifier_svc.storage.sqlite.store import SqliteNotifierStore

__all__ = ["SqliteNotifierStore"]
