"""Choose the notifier store backend by the scheme of its URI.

The backends are the entry points of its group in installed packages' metadata (zaqar-grpc's
own included; ``docs/plugins.md``). A backend is imported only when its scheme is used, so an
optional dependency (a driver) is needed only by the deployments that use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, cast

from services.common import store_registry
from services.notifier_svc.storage.base import NotifierStore


class NotifierStoreClass(Protocol):
    def from_uri(self, uri: str, now: Callable[[], float] = ...) -> NotifierStore: ...


def backend_class(uri: str) -> NotifierStoreClass:
    """The backend class for ``uri``'s scheme.

    Raises:
        ConfigurationError: the scheme is unknown, or its driver is not installed.
    """
    return cast(NotifierStoreClass, store_registry.backend_class("notifier store", uri))


async def open_notifier_store(uri: str, now: Callable[[], float] = time.time) -> NotifierStore:
    """Build the backend for ``uri`` and open it; ``now`` is its clock (Unix seconds).

    Raises:
        ConfigurationError: the URI is unknown or malformed.
        Unavailable: the store cannot be reached or opened.
    """
    opened = await store_registry.open_store("notifier store", uri, now=now)
    return cast(NotifierStore, opened)
