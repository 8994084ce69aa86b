"""Choose the message store backend by the scheme of its URI, and open it.

The backends are the entry points of its group in installed packages' metadata (zaqar-grpc's
own included; ``docs/plugins.md``). A backend is imported only when its scheme is used, so an
optional dependency (a driver) is needed only by the deployments that use it
(``services/common/store_registry.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from services.common import store_registry
from services.message_svc.storage.base import MessageStore


def backend_class(uri: str) -> Any:
    """The backend class for ``uri``'s scheme.

    Raises:
        ConfigurationError: the scheme is unknown, or its driver is not installed.
    """
    return store_registry.backend_class("message store", uri)


async def open_store(uri: str, now: Callable[[], float] = time.time) -> MessageStore:
    """Build the backend for ``uri`` and open it; ``now`` is its clock (Unix seconds).

    Raises:
        ConfigurationError: the URI is unknown or malformed.
        Unavailable: the store cannot be reached or opened.
    """
    opened = await store_registry.open_store("message store", uri, now=now)
    return cast(MessageStore, opened)
