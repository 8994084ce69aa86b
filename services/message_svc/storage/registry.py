"""Chooses the message store backend by URI scheme; backends are imported only when used."""

from __future__ import annotations

import importlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from services.common.config import ConfigurationError
from services.message_svc.storage.base import MessageStore

# scheme -> ("module:Class", the extra that provides its dependencies)
BACKENDS: dict[str, tuple[str, str]] = {
    "sqlite": ("services.message_svc.storage.sqlite:SqliteMessageStore", ""),
    "redis": ("services.message_svc.storage.redis:RedisMessageStore", ""),
    "mongodb": ("services.message_svc.storage.mongodb:MongoMessageStore", ""),
}


class _Opener(Protocol):
    open: Callable[..., Awaitable[MessageStore]]


def scheme_of(uri: str) -> str:
    scheme, sep, _ = uri.partition("://")
    if not sep or not scheme:
        raise ConfigurationError(f"invalid message store URI {uri!r}: expected <scheme>://...")
    return scheme.lower()


def backend_class(uri: str) -> _Opener:
    """The backend class for ``uri``'s scheme, imported on first use."""
    scheme = scheme_of(uri)
    try:
        target, extra = BACKENDS[scheme]
    except KeyError:
        raise ConfigurationError(
            f"unsupported message store {scheme!r} in {uri!r}; "
            f"supported: {', '.join(sorted(BACKENDS))}"
        ) from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f" (install the {extra!r} extra)" if extra else ""
        raise ConfigurationError(
            f"the {scheme} message store cannot be loaded: {exc}{hint}"
        ) from exc
    return cast(_Opener, getattr(module, class_name))


async def open_store(uri: str, now: Callable[[], float] = time.time) -> MessageStore:
    """Open the store ``uri`` names; ``now`` is its clock (Unix seconds)."""
    return await backend_class(uri).open(uri, now=now)
