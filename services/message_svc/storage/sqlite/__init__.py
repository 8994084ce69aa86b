"""SQLite backend of the message store (embedded default)."""

from services.message_svc.storage.sqlite.store import SqliteMessageStore

__all__ = ["SqliteMessageStore"]
