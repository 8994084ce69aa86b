"""Choose a store backend by the scheme of its URI, importing it only when used, so that an
optional driver is needed only by the deployments that use it."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

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
