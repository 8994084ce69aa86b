"""Choose a store backend by the scheme of its URI, importing it only when used, so that an
optional driver is needed only by the deployments that use it, and open it.

Every store of every service (queue_svc's queues and catalog, message_svc's messages, the
message stores of pools, notifier_svc's subscriptions and outbox) has one lifecycle:
``Backend.from_uri(uri, **options)`` parses the URI and builds the store without any I/O
(a bad URI fails here, with a :class:`ConfigurationError`), ``await store.open()`` connects and
sets up the schema, ``await store.close()`` releases it. :func:`open_store` does the first two,
and has every operation of the store recorded (``metrics.instrument_store``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from services.common import metrics
from services.common.config import ConfigurationError
from services.common.store_uri import redact

# scheme -> (module, class, distribution to install when the import fails)
Backends = Mapping[str, tuple[str, str, str]]


def backend_class(store: str, uri: str, backends: Backends) -> Any:
    """The backend class for ``uri``'s scheme among ``backends`` of ``store`` ("queue store").

    Raises:
        ConfigurationError: the scheme is unknown, or its driver is not installed.
    """
    scheme = uri.partition(":")[0].lower() if ":" in uri else ""
    if scheme not in backends:
        supported = ", ".join(f"{name}://" for name in backends)
        raise ConfigurationError(
            f"{store} URI {redact(uri)!r}: unsupported scheme {scheme!r} (supported: {supported})"
        )
    module_name, class_name, distribution = backends[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"{store} URI {redact(uri)!r} needs the {distribution!r} package, which cannot "
            f"be imported ({exc}); install it, e.g. pip install {distribution}"
        ) from exc
    return getattr(module, class_name)


async def open_store(store: str, uri: str, backends: Backends, **options: Any) -> Any:
    """The backend of ``uri`` among ``backends`` of ``store``, built by its ``from_uri(uri,
    **options)`` and opened.

    Raises:
        ConfigurationError: the URI is unknown or malformed, or its driver is missing.
        Unavailable: the store cannot be reached or opened.
    """
    opened = backend_class(store, uri, backends).from_uri(uri, **options)
    await opened.open()
    scheme = uri.partition(":")[0].lower()
    return metrics.instrument_store(opened, store.removesuffix(" store"), scheme)
