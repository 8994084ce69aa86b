"""Which CPUs a service process runs on: the ``<service>_cpus`` settings.

A service does its work on one asyncio event loop plus gRPC's poller thread, and each hop
between processes wakes one of them. Left to the scheduler on a machine with few cores, the
threads of the gateway, message_svc and the store move between cores and preempt each other;
kept apart (the gateway on one core, message_svc and its Redis on another) they keep their
caches and run side by side. docs/benchmarks.md has the measurements; docs/operations.md
("CPU placement") says when to use it.

The value is a Linux CPU list, as ``taskset -c`` and Redis's ``server_cpulist`` take it:
``"1"``, ``"0-3"``, ``"0,2-3"``. Empty (the default) leaves the process where the system puts
it. Every thread of the process is placed (:func:`apply` runs before the service starts its
own threads, which inherit the placement; threads already there are moved too).
"""

from __future__ import annotations

import os
import re
from typing import Final

from services.common.config import ENV_PREFIX, ConfigurationError, Settings

# process name (run_service's) -> its setting; the short names are up's.
SETTINGS: Final = {
    "api_gateway": "gateway_cpus",
    "gateway": "gateway_cpus",
    "queue_svc": "queue_cpus",
    "queue": "queue_cpus",
    "message_svc": "message_cpus",
    "message": "message_cpus",
    "notifier_svc": "notifier_cpus",
    "notifier": "notifier_cpus",
}
# The highest CPU number a list may name (the kernel's own bound is lower on any real machine).
CPU_MAX: Final = 4095
_PART: Final = re.compile(r"(\d+)(?:-(\d+))?", re.ASCII)


def parse_cpus(text: str) -> frozenset[int]:
    """The CPUs of a Linux CPU list (``"0,2-3"`` -> {0, 2, 3}); empty for an empty list.

    Raises:
        ValueError: not a CPU list (the message says which part).
    """
    cpus: set[int] = set()
    text = text.strip()
    if not text:
        return frozenset()
    for part in text.split(","):
        part = part.strip()
        match = _PART.fullmatch(part)
        if match is None:
            raise ValueError(f"{part!r} is not a CPU number or a range like 0-3")
        low = int(match[1])
        high = int(match[2]) if match[2] is not None else low
        if high < low:
            raise ValueError(f"{part!r} is a range that ends before it starts")
        if high > CPU_MAX:
            raise ValueError(f"{part!r} names a CPU above {CPU_MAX}")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def _available() -> frozenset[int]:
    return frozenset(os.sched_getaffinity(0))


def _spelled(cpus: frozenset[int]) -> str:
    """``{0, 1, 2, 5}`` -> ``0-2,5``."""
    parts: list[str] = []
    ordered = sorted(cpus)
    start = prev = ordered[0]
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(parts)


def cpus_of(process: str, settings: Settings) -> frozenset[int]:
    """The CPUs ``process`` (``message_svc`` or ``message``) is to run on; empty = anywhere.

    Raises:
        ConfigurationError: the setting is not a CPU list, names a CPU this process may not
            use, or is set where placement is not supported (not Linux).
    """
    setting = SETTINGS.get(process)
    if setting is None:
        return frozenset()
    value = str(getattr(settings, setting))
    variable = ENV_PREFIX + setting.upper()
    try:
        cpus = parse_cpus(value)
    except ValueError as exc:
        raise ConfigurationError(f"{setting} ({variable}={value!r}): {exc}.") from None
    if not cpus:
        return cpus
    if not hasattr(os, "sched_setaffinity"):
        raise ConfigurationError(
            f"{setting} ({variable}={value!r}): CPU placement needs Linux; leave it empty here."
        )
    available = _available()
    missing = cpus - available
    if missing:
        raise ConfigurationError(
            f"{setting} ({variable}={value!r}): CPU {_spelled(frozenset(missing))} is not "
            f"available to this process (it may use {_spelled(available)})."
        )
    return cpus


def apply(process: str, settings: Settings) -> frozenset[int]:
    """Place every thread of this process on the CPUs its setting names (nothing when it is
    empty); the CPUs, empty when nothing was done.

    Raises:
        ConfigurationError: as :func:`cpus_of`.
    """
    cpus = cpus_of(process, settings)
    if not cpus:
        return cpus
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for thread in threads:
        try:
            os.sched_setaffinity(thread, cpus)
        except ProcessLookupError:
            continue  # a thread that ended meanwhile
    return cpus
