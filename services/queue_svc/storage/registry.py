"""Choose the queue store backend by the scheme of its URI.

The backends are the entry points of its group in installed packages' metadata (zaqar-grpc's
own included; ``docs/plugins.md``). A backend is imported only when its scheme is used, so an
optional dependency (a driver) is needed only by the deployments that use it.
"""

from __future__ import annotations

from typing import Protocol, cast

from services.common import metrics, store_registry
from services.common.store_uri import redact
from services.queue_svc.storage.base import QueueStore

__all__ = ["backend_class", "open_queue_store", "redact"]


class QueueStoreClass(Protocol):
    def from_uri(self, uri: str) -> QueueStore: ...


def backend_class(uri: str) -> QueueStoreClass:
    """The backend class for ``uri``'s scheme.

    Raises:
        ConfigurationError: the scheme is unknown, or its driver is not installed.
    """
    return cast(QueueStoreClass, store_registry.backend_class("queue store", uri))


async def open_queue_store(uri: str) -> QueueStore:
    """Build the backend for ``uri`` and open it.

    Raises:
        ConfigurationError: the URI is unknown or malformed.
        Unavailable: the store cannot be reached or opened.
    """
    store = cast(QueueStore, await store_registry.open_store("queue store", uri))
    scheme = uri.partition(":")[0].lower()
    metrics.instrument_store(store.catalog, "catalog", scheme)
    metrics.instrument_store(store.topics, "topic", scheme)
    return store
