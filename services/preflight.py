"""What ``zaqar-grpc up`` checks before it starts any process.

A mistake found here is one line (``services/common/startup.py``) and nothing to stop or clean
up: the settings of auth, of CPU placement (``services/common/affinity.py``) and of the
gateway's coalescing; every port the services will bind
(free, and no two the same); the data folder of the embedded stores (``serve`` checks it too);
every store URI, parsed by its service's own registry and parsers, and whether its store
answers (``services/common/store_probe.py``); and that message_svc's filters
(``message_filters``) load. Each service still checks all of it when it starts; ``up`` repeats
a child's line when a start fails anyway (a port taken in between, a store gone).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import Any, Final

from services.common import affinity, store_probe
from services.common.config import ENV_PREFIX, Settings, check_limits
from services.common.keystone import check_settings
from services.common.secret_files import check_interval
from services.common.sqlite_store import MEMORY
from services.common.startup import (
    PORTS,
    STORE_DOWN,
    CannotListen,
    StartupError,
    check_port,
    os_reason,
)
from services.common.store_uri import redact
from services.replicas import port_settings

# service -> name of its store in messages, as its backends name it
STORE_NAMES: Final = {"queue": "queue store", "message": "message store",
                      "notifier": "notifier store"}


def _backend_class(service: str) -> Callable[[str], Any]:
    """The registry function of ``service`` that finds a backend by URI scheme."""
    if service == "queue":
        from services.queue_svc.storage import registry as queues
        return queues.backend_class
    if service == "message":
        from services.message_svc.storage import registry as messages
        return messages.backend_class
    from services.notifier_svc.storage import registry as notifier
    return notifier.backend_class


async def check(settings: Settings, services: Sequence[str]) -> None:
    """Everything ``services`` need that can be checked without starting them.

    Raises:
        ConfigurationError: bad auth, CPU placement, coalescing, signing, rate-limit, quota or
            connection-limit settings,
            a store URI that is unknown or malformed, a message filter that is not installed or
            cannot be loaded, or a malformed message encryption key.
        StartupError: a port cannot be bound or is named twice (:class:`CannotListen`), the
            data folder cannot be used, or a store does not answer (status 3).
    """
    check_settings(settings)
    check_interval(settings)
    for service in services:
        affinity.cpus_of(service, settings)
        check_limits(settings, service)
    if "message" in services or "queue" in services:
        from services.common.message_keys import parse_keys

        parse_keys(settings.message_encryption_keys)
    if "gateway" in services:
        from services.api_gateway.coalesce import check_batch_settings
        from services.api_gateway.rate_limit import from_settings
        from services.common.signing import Keys

        check_batch_settings(settings.message_batch_max, settings.message_batch_in_flight,
                             settings.message_batch_wait)
        Keys.from_settings(settings)
        from_settings(settings)
    if "message" in services:
        from services.message_svc.filters.pipeline import Filters

        Filters.load(settings.message_filters)
    check_ports(settings, services)
    use_data_dir(settings, services)
    await check_stores(settings, services)


def check_ports(settings: Settings, services: Sequence[str]) -> None:
    """Each port of ``services`` can be bound now, and none is the port of another setting.

    Raises:
        CannotListen: naming the setting of the first port that cannot be used.
    """
    taken: dict[int, str] = {}
    for service in services:
        for setting in port_settings(settings, service):
            port = getattr(settings, setting)
            if port in taken:
                kind, process, _ = PORTS[taken[port]]
                also = f"it is also the {kind} of {process} ({ENV_PREFIX}{taken[port].upper()})"
                raise CannotListen(settings.host, port, also, setting)
            if port:
                taken[port] = setting
            check_port(settings.host, port, setting)


def use_data_dir(settings: Settings, services: Sequence[str]) -> None:
    """Create the data folder if a store of ``services`` is in it (no store URI given), and
    check that files can be made there.

    Raises:
        StartupError: it cannot be made, or is not a writable folder.
    """
    if not any(service in STORE_NAMES and not _explicit_store(settings, service)
               for service in services):
        return
    folder = settings.data_dir
    what = (f"cannot use the data folder {folder} "
            f"(change it with {ENV_PREFIX}DATA_DIR or --data-dir)")
    try:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:
        raise StartupError(f"{what}: it is a file, not a folder") from None
    except NotADirectoryError:
        raise StartupError(f"{what}: a part of its path is a file, not a folder") from None
    except OSError as exc:
        raise StartupError(f"{what}: {os_reason(exc)}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StartupError(f"{what}: permission denied (files cannot be made in it)")


def _explicit_store(settings: Settings, service: str) -> str:
    return str(getattr(settings, f"{service}_store"))


async def check_stores(settings: Settings, services: Sequence[str]) -> None:
    """The store URI of each of ``services`` is one its service can open, and the store
    answers within ``rpc_timeout`` (all asked at once; the first failure in ``services``'
    order is raised).

    Raises:
        ConfigurationError: the URI is unknown or malformed, or its driver is not installed.
        StartupError: the store does not answer (status 3).
    """
    stores = [service for service in services if service in STORE_NAMES]
    results = await asyncio.gather(*(_check_store(settings, service) for service in stores),
                                    return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _check_store(settings: Settings, service: str) -> None:
    store, uri = STORE_NAMES[service], settings.store_uri(service)
    _backend_class(service)(uri)
    probed = uri
    relative = "sqlite:///"
    if uri.startswith(relative) and not uri.startswith(relative + "/"):
        if uri[len(relative):].startswith(MEMORY):
            return  # private to the process that opens it: nothing to find out here
        # Every process of up has up's working directory: a relative path means one file.
        probed = relative + os.path.join(os.getcwd(), uri[len(relative):])
    try:
        await store_probe.probe(probed, store, settings.rpc_timeout)
    except store_probe.StoreUnreachable as exc:
        setting = f"{ENV_PREFIX}{service.upper()}_STORE"
        raise StartupError(
            f"{service}_svc: cannot use the {store} {redact(uri)} ({setting}): {exc}", STORE_DOWN
        ) from None
