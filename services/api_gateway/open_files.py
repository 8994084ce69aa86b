"""The gateway's bounds fitted to the files and the memory its process may use.

Every connection, HTTP or WebSocket, holds an open file; a process that runs out of them can
accept no connection at all, on either port, and opens no channel. So at start the gateway
raises its soft open-files limit (``ulimit -n``) toward the hard one as far as
``http_max_connections`` + ``ws_max_connections`` + :data:`OTHER_FILES` need. When the hard
limit is lower, both connection limits are lowered in proportion to fit, and the log says so.
A limit of 0 (none) is left as it is, and takes no part in the sum.

Likewise with a cgroup memory limit (a container's): what clients can make the process hold,
idle connections (:data:`WS_CONNECTION_BYTES`, :data:`HTTP_CONNECTION_BYTES` each) and
``http_max_receiving_bytes``, must fit the limit less :data:`OWN_BYTES`; if not, the three
are lowered in proportion, and the log says so.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import resource
from pathlib import Path
from typing import Any, Final

from services.common.config import Settings

log = logging.getLogger(__name__)

# Files kept for other than client connections: channels to the services, stores, logs, and
# connections in their handshake or refused.
OTHER_FILES: Final = 1024
LIMITS: Final = ("http_max_connections", "ws_max_connections")


def raise_soft_limit(need: int) -> float:
    """The soft open-files limit, raised toward ``need`` as far as the hard limit allows
    (``math.inf`` when unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return math.inf
    if soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, raised, exc)
    return soft


def fit(settings: Settings) -> Settings:
    """``settings`` with its connection limits lowered, if need be, to fit the open-files
    limit (module docstring)."""
    wanted = {name: getattr(settings, name) for name in LIMITS if getattr(settings, name)}
    if not wanted:
        return settings
    total = sum(wanted.values())
    soft = raise_soft_limit(total + OTHER_FILES)
    if soft >= total + OTHER_FILES:
        return settings
    room = int(soft - OTHER_FILES if soft > 2 * OTHER_FILES else soft // 2)
    return _lowered(settings, wanted, room, total,
                    f"this process's open-files limit of {int(soft)} (ulimit -n)")


def _lowered(settings: Settings, wanted: dict[str, Any], room: int, held: int,
             limit: str) -> Settings:
    """``settings`` with each bound of ``wanted`` lowered by ``room / held`` (each at least 1),
    said in the log once."""
    fitted = {name: max(1, value * room // held) for name, value in wanted.items()}
    log.warning(
        "lowered %s to fit %s; raise that limit for more",
        " and ".join(f"{name} from {wanted[name]} to {fitted[name]}" for name in wanted), limit)
    return dataclasses.replace(settings, **fitted)


# What a client can make the gateway hold, per connection or byte, for fitting the bounds to a
# memory limit (docs/operations.md, "HTTP connections": an idle WebSocket connection measured
# 18 KiB, an idle HTTP one 7 KiB; a byte of requests counted by http_max_receiving_bytes up to
# about 3 bytes of memory, with the decoded request and its answer, which echoes it over
# WebSocket: 100 connections flooding 900 KB frames took 188 MiB under a 64 MiB bound).
WS_CONNECTION_BYTES: Final = 24 * 1024
HTTP_CONNECTION_BYTES: Final = 8 * 1024
RECEIVING_FACTOR: Final = 3
# A long poll held (max_waiting): 3,000 HTTP long polls took a gateway from 69 to 215 MiB.
WAIT_BYTES: Final = 64 * 1024
# Memory kept for the process itself (about 70 MiB idle) and its work under load.
OWN_BYTES: Final = 128 * 1024 * 1024
# A cgroup limit at or above this is no limit (cgroup v1 shows "none" as about 2**63).
NO_LIMIT: Final = 1 << 60


def memory_limit(root: Path = Path("/sys/fs/cgroup"),
                 membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """This process's cgroup memory limit in bytes (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``), or None when there is none or it cannot be read."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates.append(root / path.lstrip("/") / "memory.max")
        elif "memory" in controllers.split(","):
            candidates.append(root / "memory" / path.lstrip("/") / "memory.limit_in_bytes")
    candidates += [root / "memory.max", root / "memory" / "memory.limit_in_bytes"]
    for candidate in candidates:
        try:
            text = candidate.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            limit = int(text)
        except ValueError:
            continue
        return None if limit >= NO_LIMIT else limit
    return None


def fit_memory(settings: Settings, limit: int | None) -> Settings:
    """``settings`` with the connection and bytes bounds lowered in proportion, if need be, so
    that what clients can make the process hold fits ``limit`` (bytes; None: no limit) less
    :data:`OWN_BYTES`. A bound of 0 (none) is left as it is."""
    sizes = {"ws_max_connections": WS_CONNECTION_BYTES,
             "http_max_connections": HTTP_CONNECTION_BYTES,
             "http_max_receiving_bytes": RECEIVING_FACTOR, "max_waiting": WAIT_BYTES}
    wanted = {name: getattr(settings, name) for name in sizes if getattr(settings, name)}
    if limit is None or not wanted:
        return settings
    room = max(limit - OWN_BYTES, limit // 4)
    held = sum(value * sizes[name] for name, value in wanted.items())
    if held <= room:
        return settings
    return _lowered(settings, wanted, room, held,
                    f"this process's memory limit of {limit // (1024 * 1024)} MiB")
