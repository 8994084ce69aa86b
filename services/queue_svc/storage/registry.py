"""Choose the queue store backend by the scheme of its URI.

A backend is imported only when its scheme is used, so an optional dependency (a driver) is
needed only by the deployments that use it.
"""

from __future__ import annotations

import importlib
from typing import Protocol, cast
from urllib.parse import urlsplit, urlunsplit

from services.common.config import ConfigurationError
from services.queue_svc.storage.base import QueueStore

# scheme -> (module, class, distribution to install when the import fails)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "sqlite": ("services.queue_svc.storage.sqlite", "SqliteQueueStore", "aiosqlite"),
    "redis": ("services.queue_svc.storage.redis", "RedisQueueStore", "redis[hiredis]"),
    "mongodb": ("services.queue_svc.storage.mongodb", "MongoQueueStore", "pymongo"),
}


class QueueStoreClass(Protocol):
    def from_uri(self, uri: str) -> QueueStore: ...


def redact(uri: str) -> str:
    """The URI without its password, for messages and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def backend_class(uri: str) -> QueueStoreClass:
    """The backend class for ``uri``'s scheme.

    Raises:
        ConfigurationError: the scheme is unknown, or its driver is not installed.
    """
    scheme = uri.partition(":")[0].lower() if ":" in uri else ""
    if scheme not in BACKENDS:
        supported = ", ".join(f"{name}://" for name in BACKENDS)
        raise ConfigurationError(
            f"queue store URI {redact(uri)!r}: unsupported scheme {scheme!r} "
            f"(supported: {supported})"
        )
    module_name, class_name, distribution = BACKENDS[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"queue store URI {redact(uri)!r} needs the {distribution!r} package, which cannot "
            f"be imported ({exc}); install it, e.g. pip install {distribution}"
        ) from exc
    return cast(QueueStoreClass, getattr(module, class_name))


async def open_queue_store(uri: str) -> QueueStore:
    """Build the backend for ``uri`` and open it.

    Raises:
        ConfigurationError: the URI is unknown or malformed.
        Unavailable: the store cannot be reached or opened.
    """
    store = backend_class(uri).from_uri(uri)
    await store.open()
    return store
