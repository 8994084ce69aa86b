"""The gateway's connection limits fitted to the files its process may open.

Every connection, HTTP or WebSocket, holds an open file; a process that runs out of them can
accept no connection at all, on either port, and opens no channel. So at start the gateway
raises its soft open-files limit (``ulimit -n``) toward the hard one as far as
``http_max_connections`` + ``ws_max_connections`` + :data:`OTHER_FILES` need. When the hard
limit is lower, both connection limits are lowered in proportion to fit, and the log says so.
A limit of 0 (none) is left as it is, and takes no part in the sum.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import resource
from typing import Final

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
    fitted = {name: max(1, value * room // total) for name, value in wanted.items()}
    log.warning(
        "lowered %s to fit this process's open-files limit of %d (ulimit -n); raise that limit "
        "for more", " and ".join(f"{name} from {wanted[name]} to {fitted[name]}"
                                 for name in wanted), soft)
    return dataclasses.replace(settings, **fitted)
