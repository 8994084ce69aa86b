"""Choose a store backend by the scheme of its URI, importing it only when used, so that an
optional driver is needed only by the deployments that use it, and open it.

The backends are the entry points of the store's group (``zaqar_grpc.queue_stores``,
``zaqar_grpc.message_stores``, ``zaqar_grpc.notifier_stores``; ``services/common/plugins.py``):
a scheme names a class. The built-in ones are declared in zaqar-grpc's ``pyproject.toml``, other
packages declare theirs the same way (``docs/plugins.md``).

Every store of every service (queue_svc's queues and catalog, message_svc's messages, the
message stores of pools, notifier_svc's subscriptions and outbox) has one lifecycle:
``Backend.from_uri(uri, **options)`` parses the URI and builds the store without any I/O
(a bad URI fails here, with a :class:`ConfigurationError`), ``await store.open()`` connects and
sets up the schema, ``await store.close()`` releases it. :func:`open_store` does the first two,
and has every operation of the store recorded (``metrics.instrument_store``).
"""

from __future__ import annotations

from typing import Any

from services.common import metrics, plugins
from services.common.config import ConfigurationError
from services.common.store_uri import redact


def scheme_of(uri: str) -> str:
    """The lower-case scheme of ``uri`` ("" when it has none)."""
    return uri.partition(":")[0].lower() if ":" in uri else ""


def schemes(store: str) -> list[str]:
    """The schemes of the installed backends of ``store`` ("queue store", "message store",
    "notifier store"), sorted."""
    return sorted(plugins.entry_points(store))


def backend_class(store: str, uri: str) -> Any:
    """The backend class for ``uri``'s scheme among the installed backends of ``store``
    ("queue store", "message store", "notifier store").

    Raises:
        ConfigurationError: the scheme is unknown (the message names the installed ones), or
            its backend cannot be imported (naming its package; for a missing driver that the
            package requires, how to install it).
    """
    scheme = scheme_of(uri)
    installed = schemes(store)
    if scheme not in installed:
        supported = ", ".join(f"{name}://" for name in installed) or "none"
        raise ConfigurationError(
            f"{store} URI {redact(uri)!r}: unsupported scheme {scheme!r} (installed: {supported})"
        )
    try:
        return plugins.load(store, scheme)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{store} URI {redact(uri)!r}: {exc}") from exc.__cause__


async def open_store(store: str, uri: str, **options: Any) -> Any:
    """The installed backend of ``uri`` for ``store``, built by its ``from_uri(uri,
    **options)`` and opened.

    Raises:
        ConfigurationError: the URI is unknown or malformed, or its driver is missing.
        Unavailable: the store cannot be reached or opened.
    """
    opened = backend_class(store, uri).from_uri(uri, **options)
    await opened.open()
    return metrics.instrument_store(opened, store.removesuffix(" store"), scheme_of(uri))
